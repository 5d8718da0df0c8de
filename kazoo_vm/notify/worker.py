"""The delivery worker every instance runs when an SMTP relay is configured.

Each round it takes the due pointers, claims each message by writing the claim into the
message document (a revision conflict means another instance has it), sends, and then
applies the box's after-send rule: ``save_after_notify`` → folder ``saved``; else
``delete_after_notify`` → the message and its audio are removed; else nothing. A failed
send is retried with exponential backoff up to ``notify_attempts`` times, recording the
attempt count and last error; a message whose email never goes out is kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import aiosmtplib

from ..config import Config
from ..events import VoicemailNotice
from ..kazoo import box_message, naming
from ..kazoo.documents import as_dict, gregorian_now
from ..services import Services
from ..storage.errors import Conflict, NotFound, StorageError
from . import email
from .smtp import Relay

log = logging.getLogger(__name__)
BATCH = 20
ORPHAN_AGE = 60.0
MAX_BACKOFF = 600.0


def notify_of(doc: dict[str, Any]) -> dict[str, Any]:
    return as_dict(as_dict(doc.get("metadata")).get("notify"))


def mark_pending(doc: dict[str, Any]) -> None:
    """Set ``metadata.notify`` of a message that has a delivery due."""
    metadata = doc.setdefault("metadata", {})
    metadata["notify"] = {"status": "pending", "attempts": 0}


async def recipients(services: Services, account_id: str, box: dict[str, Any]) -> list[str]:
    """The owner's email and the box's ``notify_email_addresses``, deduplicated."""
    found: list[str] = []
    owner_id = box.get("owner_id")
    if isinstance(owner_id, str) and naming.LEGACY_MESSAGE_ID.match(owner_id):
        try:
            user = await services.users.fetch(account_id, owner_id)
        except NotFound:
            user = {}
        if isinstance(user.get("email"), str) and "@" in user["email"]:
            found.append(user["email"])
    extra = box.get("notify_email_addresses")
    for address in extra if isinstance(extra, list) else []:
        if isinstance(address, str) and "@" in address:
            found.append(address)
    unique: dict[str, str] = {}
    for address in found:
        unique.setdefault(address.strip().lower(), address.strip())
    return list(unique.values())


async def schedule_if_wanted(config: Config, services: Services, account_id: str, box: dict[str, Any],
                             doc: dict[str, Any]) -> bool:
    """Before a message with new audio is written: when a relay is configured and the
    box has recipients, record the pending delivery (pointer first, so a stop between
    the two writes leaves no pending message without a pointer) and mark ``doc``."""
    if config.smtp_url is None or not await recipients(services, account_id, box):
        return False
    await services.notifications.schedule(account_id, doc["_id"])
    mark_pending(doc)
    return True


class Notifier:
    def __init__(self, config: Config, services: Services) -> None:
        assert config.smtp_url is not None
        self._config = config
        self._services = services
        self._relay = Relay.from_url(config.smtp_url)
        self.instance = uuid.uuid4().hex

    async def run(self) -> None:
        """Deliver until cancelled; store or relay trouble only delays deliveries."""
        task = asyncio.current_task()
        while True:
            try:
                await self.round()
            except StorageError as error:
                log.warning("notification round failed: %r", error)
            if task is not None and task.cancelling():
                # A stop request swallowed on its way (Python 3.11's asyncio.wait_for, which
                # aiosmtplib uses, can lose a cancellation that races with a refused
                # connection: the send then fails as usual) still stops the worker, which
                # its instance's shutdown waits for.
                raise asyncio.CancelledError
            await asyncio.sleep(self._config.notify_poll)

    async def round(self) -> int:
        """One pass over the due pointers; returns how many were handled."""
        pointers = await self._services.notifications.due(BATCH)
        for pointer in pointers:
            await self._deliver(pointer)
        return len(pointers)

    async def _deliver(self, pointer: dict[str, Any]) -> None:
        notifications = self._services.notifications
        if not notifications.is_valid(pointer):
            await notifications.done(pointer)
            return
        account_id, message_id = pointer["account_id"], pointer["message_id"]
        messages = self._services.messages
        try:
            db, doc = await messages.fetch(account_id, message_id)
        except NotFound:
            await self._drop_or_wait(pointer)  # the message never came, is gone, or is on its way
            return
        state = notify_of(doc)
        if state.get("status") not in ("pending", "sending"):
            # Nothing due, or not yet: the pointer is written before the message is marked
            # pending, so a round between the two writes sees the message without it.
            await self._drop_or_wait(pointer)
            return
        claim = as_dict(doc.get("pvt_notify_claim"))
        if claim.get("by") not in (None, self.instance) and float(claim.get("until") or 0) > time.time():
            return
        attempts = int(state.get("attempts") or 0) + 1
        doc["pvt_notify_claim"] = {"by": self.instance, "until": time.time() + self._config.notify_lease}
        doc.setdefault("metadata", {})["notify"] = {**state, "status": "sending", "attempts": attempts}
        try:
            try:
                await messages.save(db, doc)
            except Conflict:
                return  # another instance claimed it first
            await self._send_claimed(pointer, db, doc, attempts)
        except asyncio.CancelledError:
            # a stopping instance hands its claim back, so the next one sends at once
            # instead of waiting for the lease to run out
            await self._release(db, doc["_id"])
            raise

    async def _drop_or_wait(self, pointer: dict[str, Any]) -> None:
        """A pointer whose message has nothing pending: dropped once older than
        ``ORPHAN_AGE``, looked at again next round until then."""
        notifications = self._services.notifications
        if time.time() - float(pointer.get("created") or 0) > ORPHAN_AGE:
            await notifications.done(pointer)
        else:
            await notifications.postpone(pointer, time.time() + self._config.notify_poll)

    async def _release(self, db: str, message_id: str) -> None:
        """Drop this instance's claim on a message it stopped sending (best effort: an
        unreachable store leaves the claim to expire with its lease)."""
        couch = self._services.store.couch
        try:
            async with asyncio.timeout(5):
                for _attempt in range(3):
                    doc = await couch.get_doc(db, message_id)
                    if as_dict(doc.get("pvt_notify_claim")).get("by") != self.instance:
                        return
                    doc.pop("pvt_notify_claim")
                    state = notify_of(doc)
                    if state.get("status") == "sending":
                        doc["metadata"]["notify"] = {**state, "status": "pending"}
                    try:
                        await self._services.messages.save(db, doc)
                        return
                    except Conflict:
                        continue
        except (StorageError, TimeoutError) as error:
            log.warning("could not release the notification claim on %s: %r", message_id, error)

    async def _send_claimed(self, pointer: dict[str, Any], db: str, doc: dict[str, Any], attempts: int) -> None:
        account_id = pointer["account_id"]
        messages = self._services.messages
        try:
            box = await self._services.vmboxes.fetch(account_id, str(doc.get("source_id")), deleted_ok=True)
            account = await self._services.accounts.fetch(account_id)
        except NotFound:
            await self._finish(pointer, db, doc, {"status": "failed", "last_error": "box or account missing"})
            return
        to = await recipients(self._services, account_id, box)
        if not to:
            await self._finish(pointer, db, doc, {"status": "no_recipients"})
            return
        tz = box.get("timezone") if box_message.zone(box.get("timezone")) else account.get("timezone")
        tz_name = str(tz or box_message.DEFAULT_TIMEZONE)
        audio = await messages.audio(db, doc) if box.get("include_message_on_notify", True) else None
        message = email.build(sender=self._config.smtp_from, recipients=to, box=box, doc=doc, tz_name=tz_name,
                              audio=audio)
        try:
            await self._relay.send(message, self._config.smtp_from, to)
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as error:
            await self._failed(pointer, db, doc, attempts, f"{type(error).__name__}: {error}"[:500])
            return
        await self._sent(pointer, db, doc, box)

    async def _failed(self, pointer: dict[str, Any], db: str, doc: dict[str, Any], attempts: int,
                      error: str) -> None:
        if attempts >= self._config.notify_attempts:
            await self._finish(pointer, db, doc, {"status": "failed", "last_error": error})
            return
        await self._update(db, doc, {"status": "pending", "last_error": error})
        backoff = min(self._config.notify_retry * 2 ** (attempts - 1), MAX_BACKOFF)
        await self._services.notifications.postpone(pointer, time.time() + backoff)

    async def _sent(self, pointer: dict[str, Any], db: str, doc: dict[str, Any], box: dict[str, Any]) -> None:
        change: dict[str, Any] = {"status": "sent", "sent_at": gregorian_now()}
        if box.get("save_after_notify"):
            change["folder"] = "saved"
        elif box.get("delete_after_notify"):
            await self._delete(db, doc)
            await self._services.notifications.done(pointer)
            return
        await self._finish(pointer, db, doc, change)

    async def _delete(self, db: str, doc: dict[str, Any]) -> None:
        """Remove the message for real (the box asked for it once the email went out)."""
        for _attempt in range(5):
            try:
                await self._services.store.couch.delete_doc(db, doc["_id"], doc["_rev"],
                                                            doc_type=doc.get("pvt_type"))
                return
            except NotFound:
                return
            except Conflict:
                doc = await self._services.store.couch.get_doc(db, doc["_id"])

    async def _finish(self, pointer: dict[str, Any], db: str, doc: dict[str, Any], change: dict[str, Any]) -> None:
        await self._update(db, doc, change)
        await self._services.notifications.done(pointer)
        if "folder" not in change:  # kvm's after-notify action ``nothing``: the message stays new
            await self._saved(pointer["account_id"], doc)

    async def _saved(self, account_id: str, doc: dict[str, Any]) -> None:
        """``voicemail_saved``, as kvm_message publishes it after the notification step."""
        try:
            box = await self._services.vmboxes.fetch(account_id, str(doc.get("source_id")), deleted_ok=True)
        except NotFound:
            box = {"_id": doc.get("source_id")}
        self._services.events.publish(VoicemailNotice("voicemail_saved", account_id, box, doc))

    async def _update(self, db: str, doc: dict[str, Any], change: dict[str, Any]) -> None:
        """Write the delivery outcome (re-reading the message when a client changed it
        meanwhile) and release the claim."""
        for _attempt in range(5):
            folder = change.get("folder")
            state = {**notify_of(doc), **{k: v for k, v in change.items() if k != "folder"}}
            metadata = doc.setdefault("metadata", {})
            metadata["notify"] = state
            if folder is not None:
                metadata["folder"] = folder
            doc.pop("pvt_notify_claim", None)
            try:
                await self._services.messages.save(db, doc)
                return
            except Conflict:
                doc = await self._services.store.couch.get_doc(db, doc["_id"])
            except NotFound:
                return
