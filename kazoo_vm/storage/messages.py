"""Voicemail messages (``pvt_type: mailbox_message``) in the monthly databases.

A message lives in the MODB named by its id's ``YYYYMM`` prefix, its audio as the
document's one attachment. Reads and writes of several messages are grouped per MODB:
one ``_all_docs`` and one ``_bulk_docs`` each, whatever the count.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from ..kazoo import naming
from ..kazoo.box_message import is_moving
from ..kazoo.documents import as_dict, as_int
from ..kazoo.start_key import StartKey
from . import design
from .couch import Attachment, Couch
from .errors import Conflict, NotFound
from .paging import Page, RowFilter, ViewRange, read_page
from .store import Store

PVT_TYPE = "mailbox_message"
FOLDERS = ("deleted", "new", "saved")
DEFAULT_TYPE = "application/octet-stream"
FaultHook = Callable[[str], Awaitable[None]]
Located = tuple[str, dict[str, Any]]


# A message's audio is its one attachment (name, content type, bytes).
Audio = Attachment


@dataclass(frozen=True)
class AudioStream:
    """Audio read as it arrives: ``size`` bytes from ``chunks``."""

    name: str
    content_type: str
    size: int
    chunks: AsyncIterator[bytes]

    @classmethod
    def of(cls, audio: Audio) -> AudioStream:
        async def whole() -> AsyncIterator[bytes]:
            yield audio.data

        return cls(audio.name, audio.content_type, len(audio.data), whole())


def is_message(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("pvt_type") == PVT_TYPE


def _not_moving(doc: dict[str, Any]) -> None:
    if is_moving(doc):
        raise Conflict(str(doc.get("_id")), "move_in_progress")


class Messages:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._couch: Couch = store.couch
        # Test-only: awaited at named points of multi-step writes to simulate a crash.
        self.fault: FaultHook | None = None

    async def _fault(self, point: str) -> None:
        if self.fault is not None:
            await self.fault(point)

    # -- single messages -----------------------------------------------------------

    async def fetch(self, account_id: str, message_id: str) -> Located:
        """(MODB, document) of a ``YYYYMM-…`` message; NotFound for anything else
        (soft-deleted messages are returned, as Kazoo's single fetch does)."""
        db = naming.modb_of_message(account_id, message_id)
        if db is None:
            raise NotFound(message_id)
        try:
            doc = await self._couch.get_doc(db, message_id, conflicts=True)
        except NotFound:
            raise NotFound(message_id) from None
        if not is_message(doc):
            raise NotFound(message_id)
        return db, doc

    async def create(self, account_id: str, doc: dict[str, Any], audio: Audio | None) -> Located:
        """Write a new message (and its audio, in the same write) into the MODB of its
        id, creating that MODB when needed."""
        year, month = int(doc["_id"][0:4]), int(doc["_id"][4:6])
        db = await self._store.modb(account_id, year, month)
        doc["pvt_account_db"] = naming.encoded_db(db)
        await self._couch.put_doc(db, doc, attachment=audio)
        return db, doc

    async def save(self, db: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Write a change of a message read before; Conflict when it was read with a
        move's claim (the move copies what it read before the change, then removes the
        message: a change written now would be lost with it)."""
        _not_moving(doc)
        await self._couch.put_doc(db, doc)
        return doc

    async def put_audio(self, db: str, doc: dict[str, Any], audio: Audio) -> dict[str, Any]:
        """Replace the message's attachments by ``audio`` (one write, never a moment
        without audio); Conflict when the message is being moved (see :meth:`save`)."""
        _not_moving(doc)
        await self._couch.put_doc(db, doc, attachment=audio)
        return doc

    async def audio(self, db: str, doc: dict[str, Any]) -> Audio | None:
        """The message's audio: its attachment, or the one a Kazoo migration linked
        (``pvt_attachments`` with ``kz_att_link``). None when it has none."""
        attachments = doc.get("_attachments")
        if isinstance(attachments, dict) and attachments:
            name = sorted(attachments)[0]
            data, content_type = await self._couch.get_attachment(db, doc["_id"], name)
            stub = attachments[name] if isinstance(attachments[name], dict) else {}
            return Audio(name, str(stub.get("content_type") or content_type), data)
        linked = doc.get("pvt_attachments")
        if isinstance(linked, dict):
            for name, spec in sorted(linked.items()):
                link = ((spec or {}).get("handler") or {}).get("kz_att_link") if isinstance(spec, dict) else None
                if not isinstance(link, dict):
                    continue
                source_db, source_id = unquote(str(link.get("att_dbname", ""))), str(link.get("att_docid", ""))
                found = await self.first_attachment(source_db, source_id)
                if found is not None:
                    return Audio(name, found.content_type, found.data)
        return None

    @contextlib.asynccontextmanager
    async def open_audio(self, db: str, doc: dict[str, Any]) -> AsyncIterator[AudioStream | None]:
        """The message's audio as a stream: its attachment as it arrives from the store
        when the stub gives its length; linked (legacy) audio read whole. None when the
        message has none."""
        attachments = doc.get("_attachments")
        if isinstance(attachments, dict) and attachments:
            name = sorted(attachments)[0]
            stub = as_dict(attachments[name])
            length = as_int(stub.get("length"))
            if length is not None and length >= 0:
                async with self._couch.open_attachment(db, doc["_id"], name) as chunks:
                    yield AudioStream(name, str(stub.get("content_type") or DEFAULT_TYPE), length, chunks)
                return
        audio = await self.audio(db, doc)
        yield None if audio is None else AudioStream.of(audio)

    async def first_attachment(self, db: str, doc_id: str) -> Audio | None:
        """The first attachment of any document (legacy ``private_media``)."""
        if not (naming.is_account_db(db) and naming.LEGACY_MESSAGE_ID.match(doc_id)):
            return None
        try:
            doc = await self._couch.get_doc(db, doc_id)
        except NotFound:
            return None
        attachments = doc.get("_attachments")
        if not isinstance(attachments, dict) or not attachments:
            return None
        name = sorted(attachments)[0]
        data, content_type = await self._couch.get_attachment(db, doc_id, name)
        return Audio(name, content_type, data)

    async def copy(self, source_db: str, source: dict[str, Any], copy: dict[str, Any],
                   account_id: str) -> Located:
        """Write ``copy`` (a new message with the source's audio) into its MODB; a copy
        already stored under that id from the same source into the same box is the
        answer. Moves go through :class:`kazoo_vm.storage.moves.Moves`."""
        audio = await self.audio(source_db, source)
        await self._fault("transfer:before_copy")
        try:
            located = await self.create(account_id, copy, audio)
        except Conflict:  # a resent copy (same request id): the copy made the first time
            located = await self.fetch(account_id, copy["_id"])
            if (located[1].get("pvt_previous_id"), located[1].get("source_id")) != (source["_id"], copy["source_id"]):
                raise
        await self._fault("transfer:after_copy")
        return located

    # -- several messages ----------------------------------------------------------

    async def fetch_many(self, account_id: str, message_ids: Iterable[str]) -> dict[str, Located]:
        """``{id: (MODB, doc)}`` of the ids that are messages; one ``_all_docs`` per MODB."""
        by_db: dict[str, list[str]] = defaultdict(list)
        for message_id in message_ids:
            db = naming.modb_of_message(account_id, message_id)
            if db is not None:
                by_db[db].append(message_id)
        found: dict[str, Located] = {}
        for db, ids in by_db.items():
            try:
                rows = await self._couch.all_docs(db, ids)
            except NotFound:
                continue
            for row in rows:
                doc = as_dict(row.get("doc"))
                if is_message(doc):
                    found[doc["_id"]] = (db, doc)
        return found

    async def save_many(self, docs: Iterable[Located]) -> tuple[list[str], dict[str, str]]:
        """Write documents with one ``_bulk_docs`` per MODB; (saved ids, {id: reason})."""
        by_db: dict[str, list[dict[str, Any]]] = defaultdict(list)
        succeeded: list[str] = []
        failed: dict[str, str] = {}
        for db, doc in docs:
            if is_moving(doc):  # as in :meth:`save`
                failed[str(doc["_id"])] = "conflict"
            else:
                by_db[db].append(doc)
        for db, batch in by_db.items():
            for result in await self._couch.bulk_docs(db, batch):
                if "error" in result:
                    failed[str(result.get("id"))] = str(result["error"])
                else:
                    succeeded.append(str(result["id"]))
        return succeeded, failed

    async def soft_delete(self, by_db: dict[str, list[str]], now: int, *,
                          deleted: list[dict[str, Any]] | None = None) -> tuple[list[str], dict[str, str]]:
        """Folder ``deleted`` + ``pvt_deleted`` for the ids of each MODB; the documents
        soft-deleted are added to ``deleted`` when given."""
        changes: list[Located] = []
        failed: dict[str, str] = {}
        for db, ids in by_db.items():
            for row in await self._couch.all_docs(db, ids):
                doc = as_dict(row.get("doc"))
                if not is_message(doc):
                    failed[str(row.get("key"))] = "not_found"
                    continue
                metadata = as_dict(doc.get("metadata"))
                doc["metadata"] = {**metadata, "folder": "deleted"}
                doc["pvt_deleted"] = True
                doc["pvt_modified"] = now
                changes.append((db, doc))
        succeeded, save_failed = await self.save_many(changes)
        if deleted is not None:
            done = set(succeeded)
            deleted.extend(doc for _db, doc in changes if doc["_id"] in done)
        return succeeded, {**failed, **save_failed}

    # -- views ---------------------------------------------------------------------

    async def count_per_box(self, account_id: str, from_gregorian: int,
                            to_gregorian: int) -> dict[str, dict[str, int]]:
        """``{box_id: {folder: n}}`` for non-deleted messages stamped inside the window.

        Per MODB (all at once), one grouped query of ``kazoo_vm_counts/per_box_folder``
        (``_stats`` of the timestamps per box and folder): a group whose oldest and
        newest timestamps are inside the window is counted as it is. A MODB with a group
        that crosses the window's edges (the oldest month, usually) is counted row by
        row from ``mailbox_messages/count_per_folder`` instead."""
        counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(FOLDERS, 0))
        dbs = await self._store.existing_modbs(account_id, from_gregorian, to_gregorian)
        for found in await asyncio.gather(*(self._count_modb(db, from_gregorian, to_gregorian) for db in dbs)):
            for (box_id, folder), number in found.items():
                counts[box_id][folder] += number
        return dict(counts)

    async def _count_modb(self, db: str, from_gregorian: int, to_gregorian: int) -> dict[tuple[str, str], int]:
        await self._store.designs.ensure(db, design.COUNTS)
        grouped = await self._couch.view(db, design.COUNTS, "per_box_folder", group=True)
        found: dict[tuple[str, str], int] = {}
        for row in grouped:
            key, stats = row.get("key"), as_dict(row.get("value"))
            if not isinstance(key, list) or len(key) < 2 or key[1] not in FOLDERS or not isinstance(key[0], str):
                continue
            low, high, number = stats.get("min"), stats.get("max"), stats.get("count")
            if not (isinstance(low, int | float) and isinstance(high, int | float) and isinstance(number, int)
                    and from_gregorian <= low and high <= to_gregorian):
                return await self._count_modb_rows(db, from_gregorian, to_gregorian)
            found[(key[0], key[1])] = number
        return found

    async def _count_modb_rows(self, db: str, from_gregorian: int, to_gregorian: int) -> dict[tuple[str, str], int]:
        """``mailbox_messages/count_per_folder`` rows of the window: keys run
        ``["deleted", From]`` .. ``["saved", To, {}]`` (deleted < new < saved) and rows
        outside the window are dropped here."""
        rows = await self._couch.view(
            db, design.MAILBOX_MESSAGES, "count_per_folder",
            startkey=[FOLDERS[0], from_gregorian], endkey=[FOLDERS[-1], to_gregorian, {}],
        )
        found: dict[tuple[str, str], int] = defaultdict(int)
        for row in rows:
            key = row.get("key")
            if not isinstance(key, list) or len(key) < 3:
                continue
            folder, timestamp, box_id = key[0], key[1], key[2]
            if folder not in FOLDERS or not isinstance(box_id, str):
                continue
            if not isinstance(timestamp, int | float) or not from_gregorian <= timestamp <= to_gregorian:
                continue
            found[(box_id, folder)] += 1
        return dict(found)

    async def ids_of_box(self, account_id: str, box_id: str, from_gregorian: int,
                         to_gregorian: int) -> dict[str, list[str]]:
        """``{modb: [message ids]}`` of a box's non-deleted messages in the window."""
        page = await self.listing(account_id, box_id, from_gregorian, to_gregorian, page_size=None)
        found: dict[str, list[str]] = defaultdict(list)
        for row in page.rows:
            db = naming.modb_of_message(account_id, row["id"])
            if db is not None:
                found[db].append(row["id"])
        return dict(found)

    async def listing(self, account_id: str, box_id: str | None, from_gregorian: int, to_gregorian: int, *,
                      page_size: int | None, start: StartKey | None = None, descending: bool = True,
                      keep_doc: RowFilter | None = None) -> Page:
        """Listing rows (``listing_by_mailbox`` for a box, else ``listing_by_timestamp``)
        over the window's MODBs, newest first unless ``descending`` is False. Row
        values are message summaries; with ``keep_doc`` rows carry their ``doc``."""
        low: list[Any]
        high: list[Any]
        if box_id is None:
            view_name, low, high = "listing_by_timestamp", [from_gregorian], [to_gregorian, {}]
        else:
            view_name, low, high = "listing_by_mailbox", [box_id, from_gregorian], [box_id, to_gregorian, {}]
        dbs = await self._store.existing_modbs(account_id, from_gregorian, to_gregorian)
        if not descending:
            dbs.reverse()
        view = ViewRange(design=design.MAILBOX_MESSAGES, view=view_name,
                         startkey=high if descending else low, endkey=low if descending else high,
                         descending=descending, include_docs=keep_doc is not None)
        in_range = _in_range(box_id, from_gregorian, to_gregorian)
        keep = in_range if keep_doc is None else (lambda row: in_range(row) and keep_doc(row.get("doc") or {}))
        return await read_page(self._couch, dbs, view, page_size=page_size, start=start, keep=keep)


def _in_range(box_id: str | None, from_gregorian: int, to_gregorian: int) -> RowFilter:
    """Whether a listing row lies between the view range's ends: a client's
    ``start_key`` replaces the near end, and one before the range (another box's key,
    a time outside the window) would otherwise list other boxes' or expired rows."""
    def keep(row: dict[str, Any]) -> bool:
        key = row.get("key")
        if not isinstance(key, list) or len(key) != 2:
            return False
        stamp, owner = (key[0], None) if box_id is None else (key[1], key[0])
        return (box_id is None or owner == box_id) and isinstance(stamp, int | float) \
            and not isinstance(stamp, bool) and from_gregorian <= stamp <= to_gregorian
    return keep


def window(now: int, retention_seconds: int) -> tuple[int, int]:
    """(From, To) of the retention window ending now."""
    return now - retention_seconds, now
