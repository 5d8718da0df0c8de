"""Pending voicemail-to-email deliveries.

The truth is in the message document: ``metadata.notify`` (``status``, ``attempts``,
``last_error``, ``sent_at``) and ``pvt_notify_claim`` (which instance sends it, until
when). So that any instance can find pending work without scanning every MODB, a pointer
document per pending message lives in ``kazoo_vm_notifications`` (written before the
message is marked pending, removed once the delivery ends); claiming goes through the
message document's revision, so only one instance sends a message.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from ..kazoo import naming
from . import design
from .errors import Conflict, NotFound
from .store import OwnDatabase

DB = "kazoo_vm_notifications"
DESIGN = design.NOTIFICATIONS
PVT_TYPE = "voicemail_notification"


def pointer_id(account_id: str, message_id: str) -> str:
    return f"{account_id}-{message_id}"


class Notifications(OwnDatabase):
    DB, DESIGN = DB, DESIGN

    async def schedule(self, account_id: str, message_id: str, due: float | None = None) -> None:
        """Record that ``message_id`` has a notification due (idempotent)."""
        await self._setup()
        now = time.time()
        doc = {"_id": pointer_id(account_id, message_id), "pvt_type": PVT_TYPE, "account_id": account_id,
               "message_id": message_id, "created": now, "due": now if due is None else due}
        with contextlib.suppress(Conflict):
            await self._couch.put_doc(DB, doc)

    async def due(self, limit: int) -> list[dict[str, Any]]:
        """Pointers whose time has come, oldest first."""
        await self._setup()
        rows = await self._couch.view(DB, DESIGN, "by_due", endkey=time.time(), include_docs=True, limit=limit)
        return [row["doc"] for row in rows if isinstance(row.get("doc"), dict)]

    async def postpone(self, pointer: dict[str, Any], due: float) -> None:
        pointer["due"] = due
        with contextlib.suppress(Conflict, NotFound):
            await self._couch.put_doc(DB, pointer)

    async def done(self, pointer: dict[str, Any]) -> None:
        with contextlib.suppress(Conflict, NotFound):
            await self._couch.delete_doc(DB, pointer["_id"], pointer["_rev"])

    def is_valid(self, pointer: dict[str, Any]) -> bool:
        return (isinstance(pointer.get("account_id"), str) and naming.is_account_id(pointer["account_id"])
                and isinstance(pointer.get("message_id"), str)
                and naming.MODB_MESSAGE_ID.match(pointer["message_id"]) is not None)
