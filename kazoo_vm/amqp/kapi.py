"""Kazoo's AMQP vocabulary, as Kazoo 4.3 puts it on the wire (``kz_amqp_util``, ``kz_api``).

Every Kazoo message is a JSON object whose "headers" are top-level keys; this module
builds those objects and their routing keys, and names the exchanges. It does no I/O.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
from dataclasses import dataclass
from typing import Any

# Exchanges as Kazoo declares them (kz_amqp.hrl, ``kz_amqp_util:new_exchange/2``): topic,
# not durable, not auto-deleted. A declaration that differs would be refused by the broker.
PRESENCE = "presence"
CONFIGURATION = "configuration"
EXCHANGE_TYPE = "topic"
CONTENT_TYPE = "application/json"

# kvm_mwi's ``default_headers(?APP_NAME, ?APP_VERSION)`` (kz_voicemail.hrl) and
# kzs_publish's (kazoo_data): consumers see these names, so kazoo_vm uses them too.
VOICEMAIL_APP = ("callflow", "4.0.0")
DATAMGR_APP = ("datamgr", "4.0.0")


def _key_safe(byte: int) -> bool:
    return chr(byte).isascii() and (chr(byte).isalnum() or chr(byte) in "-~_")


def encode(value: str) -> str:
    """A routing-key word as ``kz_amqp_util:encode/1`` writes it: ``[A-Za-z0-9-~_]`` as is,
    space as ``+``, ``.`` and every other byte (of the UTF-8 form) as ``%XX``; ``*``
    and ``#`` alone are left for bindings."""
    if value in ("", "*", "#"):
        return value
    out = []
    for byte in value.encode():
        if _key_safe(byte):
            out.append(chr(byte))
        elif byte == 0x20:
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def fake_call_id(to: str) -> str:
    """``?FAKE_CALLID(To)``: the md5 hex of ``To``."""
    return hashlib.md5(to.encode()).hexdigest()


@dataclass(frozen=True)
class Origin:
    """Who publishes: the ``Node`` of every message of this process. It names this
    process alone (Kazoo's is the Erlang node), so that its own messages are known
    when they come back."""

    node: str

    @classmethod
    def of_this_process(cls) -> Origin:
        return cls(node=f"kazoo_vm_{secrets.token_hex(4)}@{socket.gethostname()}")

    def headers(self, app: tuple[str, str], category: str, name: str) -> dict[str, Any]:
        """``kz_api:default_headers/4``: ``Server-ID`` is left out as a plain cast does."""
        return {"App-Name": app[0], "App-Version": app[1], "Event-Category": category, "Event-Name": name,
                "Msg-ID": secrets.token_hex(16), "Node": self.node}


@dataclass(frozen=True)
class Outgoing:
    """One message to publish."""

    exchange: str
    routing_key: str
    body: dict[str, Any]


# -- presence: MWI (kapi_presence) ---------------------------------------------------


def mwi_update(origin: Origin, mailbox: str, realm: str, new: int, saved: int, *,
               extended_presence_id: str | None = None) -> Outgoing:
    """``kvm_mwi:send_mwi_update`` → ``kapi_presence:publish_mwi_update``: the box's state
    for ``<mailbox>@<realm>``, rewritten as ``mwi_extended_update/1`` does (``sip:``
    forms, the user and realm parts, ``Messages-Waiting``, urgent counts 0,
    ``Call-ID`` = md5 of the bare ``To``)."""
    to = f"{mailbox}@{realm}"
    body: dict[str, Any] = {
        **origin.headers(VOICEMAIL_APP, "presence", "mwi_update"),
        "To": f"sip:{to}",
        "From": f"sip:{to}",
        "Message-Account": f"sip:{to}",
        "From-User": mailbox, "From-Realm": realm, "To-User": mailbox, "To-Realm": realm,
        "Messages-New": new, "Messages-Saved": saved,
        "Messages-Urgent": 0, "Messages-Urgent-Saved": 0,
        "Messages-Waiting": "yes" if new > 0 else "no",
        "Presence-ID": to,
        "Call-ID": fake_call_id(to),
    }
    if extended_presence_id:
        body["Extended-Presence-ID"] = extended_presence_id
    return Outgoing(PRESENCE, f"mwi_updates.{encode(realm)}.{encode(mailbox)}", body)


def mwi_unsolicited_update(origin: Origin, username: str, realm: str, new: int, saved: int) -> Outgoing:
    """``kapi_presence:publish_unsolicited_mwi_update`` for one device: not rewritten
    (bare ``To``, no ``Call-ID``), routed by realm alone."""
    body = {**origin.headers(VOICEMAIL_APP, "presence", "mwi_unsolicited_update"),
            "To": f"{username}@{realm}", "Messages-New": new, "Messages-Saved": saved}
    return Outgoing(PRESENCE, f"mwi_unsolicited_updates.{encode(realm)}", body)


# -- configuration: document events (kapi_conf, kzs_publish) ----------------------------


def doc_event(origin: Origin, action: str, database: str, doc_id: str, doc_type: str | None, *, rev: str,
              account_id: str | None, soft_deleted: bool, created: int | None, modified: int | None) -> Outgoing:
    """``kzs_publish:publish/3``: ``doc_<action>.<db>.<type>.<encode(id)>`` with the
    database as Kazoo names it (``account%2Fxx%2Fyy%2F…``, not encoded again), and the
    fields of that function, ``Date-Created``/``Date-Modified`` swapped as Kazoo 4.3
    sends them (``Date-Modified`` holds ``pvt_created``)."""
    name = f"doc_{action}"
    body: dict[str, Any] = {**origin.headers(DATAMGR_APP, "configuration", name),
                            "ID": doc_id, "Origin-Cache": "kazoo_data_cache", "Database": database,
                            "Rev": rev, "Is-Soft-Deleted": soft_deleted}
    optional = {"Type": doc_type, "Account-ID": account_id, "Date-Modified": created, "Date-Created": modified}
    body.update({key: value for key, value in optional.items() if value is not None})
    return Outgoing(CONFIGURATION, f"{name}.{database}.{doc_type or 'undefined'}.{encode(doc_id)}", body)
