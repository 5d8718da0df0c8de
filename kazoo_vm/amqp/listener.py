"""Kazoo's document events → kazoo_vm's caches dropped at once.

kazoo_vm keeps, for ``KAZOO_VM_CACHE_TTL`` seconds, the live boxes it read (message
creation), the accounts (authorization), the months found without a MODB (listings)
and the accounts without legacy messages. A change Kazoo (or another kazoo_vm) makes is
announced on the ``configuration`` exchange; the matching entry is dropped when it
arrives, so the next request reads CouchDB again. This process's own messages (its
``Node``) are skipped: its own writes already dropped what they changed.

Users and devices are not bound: kazoo_vm caches neither (the MWI reads devices when it
publishes).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel

from ..kazoo import naming
from ..services import Services
from . import kapi

log = logging.getLogger(__name__)

# ``doc_<action>.<db>.<type>.<id>`` for the types whose copies kazoo_vm keeps.
BOUND_TYPES = ("vmbox", "mailbox_message", "account")


class Listener:
    def __init__(self, services: Services, origin: kapi.Origin) -> None:
        self._services = services
        self._origin = origin

    async def listen(self, channel: AbstractRobustChannel) -> None:
        """A queue of this process (gone with its connection, declared again by aio-pika
        after a reconnection) bound to Kazoo's document events of those types."""
        exchange = await channel.declare_exchange(kapi.CONFIGURATION, kapi.EXCHANGE_TYPE, durable=False,
                                                  auto_delete=False)
        queue = await channel.declare_queue(f"kazoo_vm.doc_changes.{self._origin.node}", exclusive=True,
                                            auto_delete=True)
        for doc_type in BOUND_TYPES:
            await queue.bind(exchange, f"*.*.{doc_type}.*")
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            body = json.loads(message.body)
        except ValueError:
            return
        if isinstance(body, dict):
            self.heard(body)

    def heard(self, body: dict[str, Any]) -> None:
        """Drop what a ``doc_*`` event makes stale."""
        if body.get("Node") == self._origin.node:
            return
        doc_id, doc_type, database = body.get("ID"), body.get("Type"), body.get("Database")
        if not isinstance(doc_id, str) or not isinstance(database, str):
            return
        db = database.replace("%2F", "/").replace("%2f", "/")
        account_id = naming.account_id_of_db(db)
        services = self._services
        if doc_type == "vmbox" and account_id is not None:
            services.vmboxes.forget(account_id, doc_id)
            services.legacy.forget(account_id)
        elif doc_type == "account" and naming.is_account_id(doc_id):
            services.accounts.forget(doc_id)
        elif doc_type == "mailbox_message" and account_id is not None:
            services.store.forget_missing(db)
        else:
            return
        log.debug("AMQP: %s %s/%s: cached copy dropped", body.get("Event-Name"), database, doc_id)
