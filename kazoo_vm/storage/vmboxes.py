"""Voicemail boxes (``pvt_type: vmbox``) in the account database."""

from __future__ import annotations

import decimal
import re
from typing import Any

from ..kazoo.documents import as_int
from ..kazoo.start_key import StartKey
from . import design
from .errors import Conflict, NotFound
from .paging import Page, RowFilter, ViewRange, read_page
from .store import Store
from .ttl_cache import TtlCache

PVT_TYPE = "vmbox"
CLAIM_TYPE = "kazoo_vm_mailbox_claim"
# A claim whose box is not stored with the number yet (a create or a change in flight)
# holds the number this long; after that an unfinished claim is taken over.
CLAIM_GRACE = 60
INTEGER = re.compile(r"^\s*[+-]?\d+\s*$")
DECIMAL = re.compile(r"^\s*[+-]?\d+\.\d+\s*$")


def mailbox_number(mailbox: Any) -> int | None:
    """Kazoo's non-strict integer cast of ``mailbox`` ("0123" → 123, "12.7" → 13)."""
    if not isinstance(mailbox, str) or len(mailbox) > 64:
        return None
    if INTEGER.match(mailbox):
        return int(mailbox)
    if DECIMAL.match(mailbox):
        return int(decimal.Decimal(mailbox.strip()).quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP))
    return None


def claim_id(number: int) -> str:
    """The id of the document that claims a mailbox number in the account database."""
    return f"kazoo_vm_mailbox_{number}"


class Vmboxes:
    def __init__(self, store: Store, *, cache_ttl: float = 0.0) -> None:
        self._store = store
        self._couch = store.couch
        # Live boxes read for creating messages, kept ``cache_ttl`` seconds so that a
        # message create is one CouchDB write; this process's own box writes forget them.
        # A read during one of this process's box writes (each forgets the box when it
        # starts and when it ends) may hold the box as it was before: it is not kept.
        self._recent: TtlCache[tuple[str, str], dict[str, Any]] = TtlCache(cache_ttl)

    async def fetch(self, account_id: str, box_id: str, *, deleted_ok: bool = False,
                    cached: bool = False) -> dict[str, Any]:
        """The box document. NotFound when missing, soft-deleted (unless ``deleted_ok``)
        or of another ``pvt_type`` (a doc without ``pvt_type`` is accepted, as Kazoo does).
        With ``cached`` it may be a live box this process read up to the cache TTL ago
        (callers must not change it)."""
        key = (account_id, box_id)
        if cached:
            doc = self._recent.get(key)
            if doc is not None:
                return doc
        mark = self._recent.mark()
        db = await self._store.account_db(account_id)
        doc = await self._couch.get_doc(db, box_id, conflicts=True)
        if doc.get("pvt_type", PVT_TYPE) != PVT_TYPE or (doc.get("pvt_deleted") and not deleted_ok):
            self._recent.forget(key)
            raise NotFound(box_id)
        if doc.get("pvt_deleted"):
            self._recent.forget(key)
        else:
            self._recent.put(key, doc, since=mark)
        return doc

    def forget(self, account_id: str, box_id: str) -> None:
        """Drop this process's cached copy (before and after a write of the box); reads
        in flight meanwhile are not cached."""
        self._recent.forget((account_id, box_id))

    async def fetch_many(self, account_id: str, box_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Existing, non-deleted boxes among ``box_ids`` (one request)."""
        db = await self._store.account_db(account_id)
        found = {}
        for row in await self._couch.all_docs(db, box_ids):
            doc = row.get("doc")
            if isinstance(doc, dict) and doc.get("pvt_type", PVT_TYPE) == PVT_TYPE and not doc.get("pvt_deleted"):
                found[doc["_id"]] = doc
        return found

    async def save(self, account_id: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Create or update (``_rev`` decides); Conflict when the revision is stale or
        the id is taken."""
        db = await self._store.account_db(account_id)
        self.forget(account_id, str(doc["_id"]))
        try:
            await self._couch.put_doc(db, doc)
        finally:
            self.forget(account_id, str(doc["_id"]))
        return doc

    async def delete(self, account_id: str, doc: dict[str, Any]) -> None:
        """Remove the document for real (``should_soft_delete=false``)."""
        db = await self._store.account_db(account_id)
        self.forget(account_id, str(doc["_id"]))
        try:
            await self._couch.delete_doc(db, doc["_id"], doc["_rev"], doc_type=doc.get("pvt_type", PVT_TYPE))
        finally:
            self.forget(account_id, str(doc["_id"]))

    async def claim_mailbox(self, account_id: str, number: int, box_id: str, now: int) -> bool:
        """Make ``box_id`` the holder of mailbox ``number``; False when another box holds
        it. The claim is a document whose id is the number: of racing creates (through
        any instance or node) exactly one is stored. (Boxes written by Kazoo have no
        claim; the ``listing_by_mailbox`` check before covers them.)"""
        db = await self._store.account_db(account_id)
        claim = {"_id": claim_id(number), "pvt_type": CLAIM_TYPE, "vmbox_id": box_id, "mailbox": number,
                 "pvt_created": now}
        for _attempt in range(4):
            try:
                await self._couch.put_doc(db, dict(claim))
                return True
            except Conflict:
                pass
            try:
                current = await self._couch.get_doc(db, claim_id(number))
            except NotFound:
                continue  # released meanwhile
            if current.get("vmbox_id") == box_id:
                return True
            if await self._holds(db, current, number, now):
                return False
            try:
                await self._couch.put_doc(db, {**claim, "_rev": current["_rev"]})
                return True
            except Conflict:
                continue
        return False

    async def _holds(self, db: str, claim: dict[str, Any], number: int, now: int) -> bool:
        """Whether a claim still holds: its box is live with the number, or the claim is
        younger than ``CLAIM_GRACE`` and its box not deleted (a write in flight)."""
        young = now - (as_int(claim.get("pvt_created")) or 0) < CLAIM_GRACE
        try:
            box = await self._couch.get_doc(db, str(claim.get("vmbox_id")))
        except NotFound:
            return young
        if box.get("pvt_type", PVT_TYPE) != PVT_TYPE or box.get("pvt_deleted"):
            return False
        return mailbox_number(box.get("mailbox")) == number or young

    async def release_mailbox(self, account_id: str, number: int, box_id: str) -> None:
        """Give up ``box_id``'s claim on ``number`` (best effort: a claim left behind is
        taken over once its box no longer has the number)."""
        db = await self._store.account_db(account_id)
        try:
            current = await self._couch.get_doc(db, claim_id(number))
            if current.get("vmbox_id") == box_id:
                await self._couch.delete_doc(db, current["_id"], current["_rev"], doc_type=CLAIM_TYPE)
        except (NotFound, Conflict):
            pass

    async def ids_with_mailbox(self, account_id: str, number: int) -> list[str]:
        """Ids of non-deleted boxes whose ``parseInt(mailbox)`` is ``number``
        (view ``vmboxes/listing_by_mailbox``)."""
        db = await self._store.account_db(account_id)
        rows = await self._couch.view(db, design.VMBOXES, "listing_by_mailbox", key=number)
        return [row["id"] for row in rows]

    async def listing(self, account_id: str, *, page_size: int | None, start: StartKey | None,
                      descending: bool, keep_doc: RowFilter | None) -> Page:
        """Rows of ``vmboxes/crossbar_listing`` (keyed by box name): values are box
        summaries ``{id, name, mailbox, owner_id?, messages, flags}``. With ``keep_doc``
        the documents are read too and rows whose doc it refuses are skipped."""
        db = await self._store.account_db(account_id)
        view = ViewRange(
            design=design.VMBOXES,
            view="crossbar_listing",
            startkey={} if descending else None,
            endkey=None if descending else {},
            descending=descending,
            include_docs=keep_doc is not None,
        )
        keep = None if keep_doc is None else (lambda row: keep_doc(row.get("doc") or {}))
        return await read_page(self._couch, [db], view, page_size=page_size, start=start, keep=keep)
