"""Voicemail messages (``pvt_type: mailbox_message``) in the monthly databases."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from . import design
from .store import Store

PVT_TYPE = "mailbox_message"
FOLDERS = ("deleted", "new", "saved")


class Messages:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._couch = store.couch

    async def count_per_box(self, account_id: str, from_gregorian: int,
                            to_gregorian: int) -> dict[str, dict[str, int]]:
        """``{box_id: {folder: n}}`` for non-deleted messages stamped inside the window.

        One query of ``mailbox_messages/count_per_folder`` per MODB: keys run
        ``["deleted", From]`` .. ``["saved", To, {}]`` (deleted < new < saved) and rows
        outside the window are dropped here."""
        counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(FOLDERS, 0))
        for db in await self._store.existing_modbs(account_id, from_gregorian, to_gregorian):
            rows = await self._couch.view(
                db, design.MAILBOX_MESSAGES, "count_per_folder",
                startkey=[FOLDERS[0], from_gregorian], endkey=[FOLDERS[-1], to_gregorian, {}],
            )
            for row in rows:
                key = row.get("key")
                if not isinstance(key, list) or len(key) < 3:
                    continue
                folder, timestamp, box_id = key[0], key[1], key[2]
                if folder not in FOLDERS or not isinstance(box_id, str):
                    continue
                if not isinstance(timestamp, int | float) or not from_gregorian <= timestamp <= to_gregorian:
                    continue
                counts[box_id][folder] += 1
        return dict(counts)

    async def ids_of_box(self, account_id: str, box_id: str, from_gregorian: int,
                         to_gregorian: int) -> dict[str, list[str]]:
        """``{modb: [message ids]}`` of a box's non-deleted messages in the window."""
        found: dict[str, list[str]] = {}
        for db in await self._store.existing_modbs(account_id, from_gregorian, to_gregorian):
            rows = await self._couch.view(
                db, design.MAILBOX_MESSAGES, "listing_by_mailbox",
                startkey=[box_id, to_gregorian, {}], endkey=[box_id, from_gregorian], descending=True,
            )
            if rows:
                found[db] = [row["id"] for row in rows]
        return found

    async def soft_delete(self, by_db: dict[str, list[str]], now: int) -> tuple[list[str], dict[str, str]]:
        """Folder ``deleted`` + ``pvt_deleted: true`` for every id, one ``_all_docs``
        and one ``_bulk_docs`` per database. Returns (succeeded ids, {id: reason})."""
        succeeded: list[str] = []
        failed: dict[str, str] = {}
        for db, ids in by_db.items():
            docs = []
            for row in await self._couch.all_docs(db, ids):
                doc = row.get("doc")
                if not isinstance(doc, dict) or doc.get("pvt_type") != PVT_TYPE:
                    failed[str(row.get("key"))] = "not_found"
                    continue
                metadata = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
                doc["metadata"] = {**metadata, "folder": "deleted"}
                doc["pvt_deleted"] = True
                doc["pvt_modified"] = now
                docs.append(doc)
            if not docs:
                continue
            for result in await self._couch.bulk_docs(db, docs):
                if "error" in result:
                    failed[str(result.get("id"))] = "conflict" if result["error"] == "conflict" else str(result["error"])
                else:
                    succeeded.append(str(result["id"]))
        return succeeded, failed


def window(now: int, retention_seconds: int) -> tuple[int, int]:
    """(From, To) of the retention window ending now."""
    return now - retention_seconds, now

