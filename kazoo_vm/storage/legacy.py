"""Pre-MODB ("legacy") voicemail messages and their migration into the MODBs.

Before Kazoo 4.0 a box kept its messages as a ``messages`` array inside the vmbox doc,
each recording in a ``private_media`` doc of the account database whose id is the item's
``media_id``. kazoo_vm lists them with the box's messages and, on the first change
request (or the ``migrate`` command), writes them into the MODB of their timestamp with
id ``YYYYMM-<old id>``: the new document first, the array entry removed only after, so
a stop half way leaves the message where it was, and a rerun finishes the job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..kazoo import box_message, naming
from . import design
from .errors import Conflict, NotFound
from .messages import Located, Messages
from .store import Store
from .ttl_cache import TtlCache

MAX_BOX_SAVE_RETRIES = 5


def items(box: dict[str, Any]) -> list[dict[str, Any]]:
    """The box's legacy items that have a usable ``media_id``."""
    raw = box.get("messages")
    if not isinstance(raw, list):
        return []
    return [item for item in raw if isinstance(item, dict) and isinstance(item.get("media_id"), str)
            and naming.LEGACY_MESSAGE_ID.match(item["media_id"])]


def find(box: dict[str, Any], media_id: str) -> dict[str, Any] | None:
    for item in items(box):
        if item["media_id"] == media_id:
            return item
    return None


def item_time(item: dict[str, Any], box: dict[str, Any]) -> int:
    for value in (item.get("timestamp"), box.get("pvt_modified"), box.get("pvt_created")):
        try:
            number = int(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if number > naming.GREGORIAN_UNIX_OFFSET:
            return number
    return naming.GREGORIAN_UNIX_OFFSET


def summary(item: dict[str, Any], box: dict[str, Any]) -> dict[str, Any]:
    """A listing row for a legacy item (same keys as the MODB views emit)."""
    row = {key: item[key] for key in box_message.SUMMARY_KEYS if key in item}
    row["timestamp"] = item_time(item, box)
    row.setdefault("folder", "new")
    return row


@dataclass
class MigrationReport:
    migrated: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class Legacy:
    def __init__(self, store: Store, messages: Messages, *, cache_ttl: float = 0.0) -> None:
        self._store = store
        self._couch = store.couch
        self._messages = messages
        # Accounts found without any legacy item: listings skip the view for ``cache_ttl``
        # seconds. kazoo_vm never adds legacy items (only Kazoo 3.x or a replication of
        # its data does), so only such an outside write can make this stale, for at most
        # the TTL.
        self._none: TtlCache[str, bool] = TtlCache(cache_ttl)

    def forget(self, account_id: str) -> None:
        """Look for legacy items again next time (a box changed elsewhere)."""
        self._none.forget(account_id)

    async def rows(self, account_id: str, from_gregorian: int, to_gregorian: int) -> list[dict[str, Any]]:
        """``vmboxes/legacy_msg_by_timestamp`` rows in the window (all boxes)."""
        if self._none.get(account_id):
            return []
        mark = self._none.mark()
        db = await self._store.account_db(account_id)
        rows = await self._couch.view(db, design.VMBOXES, "legacy_msg_by_timestamp",
                                      startkey=from_gregorian, endkey=to_gregorian)
        if not rows and not await self._couch.view(db, design.VMBOXES, "legacy_msg_by_timestamp", limit=1):
            self._none.put(account_id, True, since=mark)
        return rows

    async def audio(self, account_id: str, media_id: str) -> Any:
        return await self._messages.first_attachment(naming.account_db(account_id), media_id)

    def _document(self, account_id: str, box: dict[str, Any], item: dict[str, Any], realm: str,
                  timezone_name: Any) -> dict[str, Any]:
        stamp = item_time(item, box)
        new_id = box_message.message_id(stamp, item["media_id"])
        metadata = {key: value for key, value in item.items() if key not in ("migration_error", "migration_tries")}
        metadata.update({"media_id": new_id, "timestamp": stamp})
        metadata.setdefault("folder", "new")
        for key in ("from", "to"):
            if isinstance(metadata.get(key), str):
                user, _, domain = metadata[key].partition("@")
                metadata.setdefault(f"{key}_user", user)
                metadata.setdefault(f"{key}_realm", domain or realm)
        return {
            "_id": new_id,
            "name": box_message.message_name(box.get("mailbox", ""), stamp, timezone_name),
            "description": "voicemail message with media",
            "source_type": "voicemail",
            "source_id": box["_id"],
            "media_source": "recording",
            "streamable": True,
            "utc_seconds": stamp,
            "metadata": metadata,
            "pvt_type": box_message.PVT_TYPE,
            "pvt_vsn": "1",
            "pvt_account_id": account_id,
            "pvt_created": stamp,
            "pvt_modified": stamp,
            "pvt_moved_to_modb": "true",
            "pvt_previous_id": item["media_id"],
        }

    async def _copy(self, account_id: str, box: dict[str, Any], item: dict[str, Any], realm: str,
                    timezone_name: Any) -> Located:
        doc = self._document(account_id, box, item, realm, timezone_name)
        audio = await self.audio(account_id, item["media_id"])
        try:
            return await self._messages.create(account_id, doc, audio)
        except Conflict:  # migrated before, array not yet cleaned: finish the job
            return await self._messages.fetch(account_id, doc["_id"])

    async def _drop_items(self, account_id: str, box_id: str, media_ids: set[str]) -> None:
        """Remove migrated items from the box's array (re-reading on conflicts)."""
        db = await self._store.account_db(account_id)
        for _attempt in range(MAX_BOX_SAVE_RETRIES):
            box = await self._couch.get_doc(db, box_id)
            kept = [item for item in box.get("messages") or []
                    if not (isinstance(item, dict) and item.get("media_id") in media_ids)]
            if len(kept) == len(box.get("messages") or []):
                return
            box["messages"] = kept
            try:
                await self._couch.put_doc(db, box)
                return
            except Conflict:
                continue
        raise Conflict(box_id)

    async def migrate_one(self, account_id: str, box: dict[str, Any], media_id: str, realm: str,
                          timezone_name: Any) -> Located:
        """Migrate one item; returns the MODB message. NotFound when not in the box."""
        item = find(box, media_id)
        if item is None:
            raise NotFound(media_id)
        located = await self._copy(account_id, box, item, realm, timezone_name)
        await self._messages._fault("migrate:after_copy")
        await self._drop_items(account_id, box["_id"], {media_id})
        return located

    async def migrate_box(self, account_id: str, box: dict[str, Any], realm: str,
                          timezone_name: Any) -> MigrationReport:
        """Migrate every item of a box, whatever its age: copies first, then one save
        of the box without them."""
        report = MigrationReport()
        for item in items(box):
            try:
                await self._copy(account_id, box, item, realm, timezone_name)
            except (NotFound, Conflict) as error:
                report.failed[item["media_id"]] = type(error).__name__.lower()
                continue
            report.migrated.append(item["media_id"])
        if report.migrated:
            await self._drop_items(account_id, box["_id"], set(report.migrated))
        return report
