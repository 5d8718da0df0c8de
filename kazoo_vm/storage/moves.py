"""Moving a message to another box without ever losing or doubling it.

A move writes a copy (new id, new box, same audio) into a MODB and removes the source.
Three things make that safe when requests race or a process dies half way:

* a **pointer** in ``kazoo_vm_moves`` (one per source message, written first) holds the
  whole plan: the source, the destination box and the copy document. Whoever finds it
  (a second request for the same move, the startup recovery of any instance) can finish
  the move exactly as planned, in any month, as often as it likes;
* a **claim** on the source (``pvt_moving``: the copy's id and a random nonce, so that
  two claims are never byte-identical edits: pouchdb-server crashes on an edit identical
  to a revision of a since-deleted document), written through the source's revision:
  of two moves of one message to different boxes only one owns the source, the other
  gets a conflict before it has written anything; and a change read with the claim
  (folder, audio upload, delete) is refused, since the move copies the message as it
  was when claimed;
* the source is removed through the claim's revision, and only after the copy is stored.
  A copy whose source was taken over meanwhile is removed again (rolled back).

Every step is idempotent, so finishing a move twice (its own request and a recovery, or
two requests for the same destination) yields the same single copy.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from typing import Any

from ..kazoo import naming
from ..kazoo.box_message import MOVE_CLAIM
from ..kazoo.documents import as_dict
from .couch import Couch
from .errors import Conflict, NotFound, StorageError
from .messages import PVT_TYPE as MESSAGE_TYPE
from .messages import Located, Messages, is_message
from .store import Store

log = logging.getLogger(__name__)

DB = "kazoo_vm_moves"
PVT_TYPE = "voicemail_move"
CLAIM = MOVE_CLAIM
# Revision races a move retries before answering 409 datastore_conflict.
ATTEMPTS = 4
# A pointer older than this whose source was never claimed is a move that died before
# its claim: forgotten by the periodic recovery (at startup every pointer is looked at).
STALE_AFTER = 60.0
RECOVER_BATCH = 200


def pointer_id(account_id: str, message_id: str) -> str:
    return f"{account_id}-{message_id}"


def claim_of(doc: dict[str, Any]) -> Any:
    """The id of the copy the move that claimed ``doc`` writes (None when unclaimed)."""
    return as_dict(doc.get(CLAIM)).get("id")


class Moves:
    def __init__(self, store: Store, messages: Messages) -> None:
        self._store = store
        self._couch: Couch = store.couch
        self._messages = messages
        self._ready = False

    async def _setup(self) -> None:
        if not self._ready:
            if not await self._couch.db_exists(DB):
                await self._couch.create_db(DB)
            self._ready = True

    async def move(self, account_id: str, source_db: str, source: dict[str, Any],
                   copy: dict[str, Any]) -> Located:
        """Move ``source`` (read from ``source_db``) to ``copy`` (its ``source_id`` is the
        destination box). A move of the same message to the same box already under way
        or half done is joined: it yields the copy that move planned. Raises Conflict
        when another move or change wins the message, NotFound when it is gone."""
        await self._setup()
        pointer = await self._pointer(account_id, source_db, source, copy)
        return await self._finish(pointer, source)

    async def _pointer(self, account_id: str, source_db: str, source: dict[str, Any],
                       copy: dict[str, Any]) -> dict[str, Any]:
        doc = {"_id": pointer_id(account_id, source["_id"]), "pvt_type": PVT_TYPE, "account_id": account_id,
               "source_db": source_db, "source_id": source["_id"], "box": copy["source_id"], "copy": copy,
               "created": time.time()}
        for _ in range(ATTEMPTS):
            try:
                await self._couch.put_doc(DB, doc)
                return doc
            except Conflict:
                doc.pop("_rev", None)
            try:
                existing = await self._couch.get_doc(DB, doc["_id"])
            except NotFound:
                continue  # finished meanwhile: write ours
            if existing.get("box") == doc["box"] and isinstance(existing.get("copy"), dict):
                return existing  # the same move, under way or half done: join it
            if existing.get("created", 0) > time.time() - STALE_AFTER or await self._claimed_source(existing):
                raise Conflict(source["_id"], "move_in_progress")
            doc["_rev"] = existing["_rev"]  # a move that died before claiming: replace it
        raise Conflict(source["_id"])

    async def _claimed_source(self, pointer: dict[str, Any]) -> dict[str, Any] | None:
        """The pointer's source when it carries the pointer's claim, else None."""
        try:
            source = await self._couch.get_doc(str(pointer["source_db"]), str(pointer["source_id"]))
        except NotFound:
            return None
        return source if claim_of(source) == as_dict(pointer.get("copy")).get("_id") else None

    async def _finish(self, pointer: dict[str, Any], source: dict[str, Any] | None) -> Located:
        """Claim the source, write the copy, remove the source, drop the pointer."""
        source_db, source_id = str(pointer["source_db"]), str(pointer["source_id"])
        copy = dict(as_dict(pointer.get("copy")))
        copy_id = str(copy["_id"])
        account_id = str(pointer["account_id"])
        claimed = await self._claim(source_db, source_id, source, copy_id)
        if claimed is None:  # the source is gone: finished by someone else, or removed
            await self._drop(pointer)
            return await self._finished_copy(account_id, copy_id, source_id)
        await self._messages._fault("transfer:before_copy")
        try:
            audio = await self._messages.audio(source_db, claimed)
        except NotFound:  # finished meanwhile by another request or instance's recovery
            await self._drop(pointer)
            return await self._finished_copy(account_id, copy_id, source_id)
        try:
            located = await self._messages.create(account_id, copy, audio)
        except Conflict:
            located = await self._finished_copy(account_id, copy_id, source_id)
        await self._messages._fault("transfer:after_copy")
        try:
            await self._remove_source(source_db, claimed, copy_id)
        except Conflict:
            if await self._couch.live_leaves(source_db, source_id):
                with contextlib.suppress(NotFound, Conflict):  # the source was won by another change
                    await self._couch.delete_doc(located[0], copy_id, str(located[1]["_rev"]),
                                                 doc_type=MESSAGE_TYPE)
                await self._unclaim(source_db, source_id, copy_id)
                await self._drop(pointer)
                raise
            # no version of the source is left: the copy is the message now
        await self._no_source_left(source_db, source_id)
        await self._drop(pointer)
        return located

    async def _claim(self, db: str, source_id: str, source: dict[str, Any] | None,
                     copy_id: str) -> dict[str, Any] | None:
        """The source with this move's claim written (None when it no longer exists)."""
        for _ in range(ATTEMPTS):
            if source is None:
                try:
                    source = await self._couch.get_doc(db, source_id)
                except NotFound:
                    return None
            if not is_message(source):
                return None
            if claim_of(source) == copy_id:
                return source
            # Unclaimed, or claimed by a move whose pointer this one replaced.
            claimed = {**source, CLAIM: {"id": copy_id, "nonce": secrets.token_hex(8)}}
            try:
                await self._couch.put_doc(db, claimed)
                return claimed
            except Conflict:
                source = None
            except NotFound:
                return None
        raise Conflict(source_id)

    async def _remove_source(self, db: str, claimed: dict[str, Any], copy_id: str) -> None:
        """Delete the source through revisions that carry this move's claim."""
        doc: dict[str, Any] | None = claimed
        for _ in range(ATTEMPTS):
            if doc is None:
                try:
                    doc = await self._couch.get_doc(db, claimed["_id"])
                except NotFound:
                    return  # removed by whoever finished the move alongside
            if claim_of(doc) != copy_id:
                raise Conflict(claimed["_id"], "move_taken_over")
            try:
                await self._couch.delete_doc(db, doc["_id"], str(doc["_rev"]), doc_type=MESSAGE_TYPE)
                return
            except NotFound:
                return
            except Conflict:
                doc = None
        raise Conflict(claimed["_id"])

    async def _unclaim(self, db: str, source_id: str, copy_id: str) -> None:
        """Take this move's claim off a source it gave up (a claimed message refuses
        changes); best effort: a claim left behind is one no pointer finishes."""
        with contextlib.suppress(NotFound, Conflict):
            source = await self._couch.get_doc(db, source_id)
            if claim_of(source) == copy_id:
                source.pop(CLAIM, None)
                await self._couch.put_doc(db, source)

    async def _no_source_left(self, db: str, source_id: str) -> None:
        """Delete every version of the source still live once the copy is stored. On a
        CouchDB cluster a change of the message racing the move (a folder change, a
        soft delete) can stand on a copy as a branch of its own beside the deleted one:
        CouchDB would make it the winner, and the message would be in two boxes."""
        if await self._couch.copies(db) <= 1:
            return  # one copy: every write was decided against the others at once
        for _ in range(ATTEMPTS):
            left = await self._couch.live_leaves(db, source_id)
            if not left:
                return
            log.info("deleting %d version(s) of moved message %s left beside the move", len(left), source_id)
            with contextlib.suppress(Conflict):
                await self._couch.delete_leaves(db, source_id, [str(leaf["_rev"]) for leaf in left],
                                                doc_type=MESSAGE_TYPE)

    async def _finished_copy(self, account_id: str, copy_id: str, source_id: str) -> Located:
        """The copy of ``source_id`` stored as ``copy_id``; NotFound when there is none."""
        db, doc = await self._messages.fetch(account_id, copy_id)
        if doc.get("pvt_previous_id") != source_id:
            raise Conflict(copy_id)
        return db, doc

    async def _drop(self, pointer: dict[str, Any]) -> None:
        with contextlib.suppress(NotFound, Conflict):
            await self._couch.delete_doc(DB, pointer["_id"], str(pointer["_rev"]))

    # -- recovery --------------------------------------------------------------------

    async def recover(self, *, older_than: float = 0.0) -> dict[str, int]:
        """Finish the claimed moves whose request died (or is still running: finishing
        twice is harmless) and forget the pointers of moves that never claimed their
        source. Returns ``{"finished": n, "dropped": n}``."""
        await self._setup()
        figures = {"finished": 0, "dropped": 0}
        rows = (await self._couch.get_json(f"/{DB}/_all_docs", include_docs=True, limit=RECOVER_BATCH))
        cutoff = time.time() - older_than
        for row in as_dict(rows).get("rows") or []:
            pointer = as_dict(as_dict(row).get("doc"))
            if pointer.get("pvt_type") != PVT_TYPE or not self._is_valid(pointer):
                continue
            if not isinstance(pointer.get("created"), int | float) or pointer["created"] > cutoff:
                continue
            try:
                source = await self._claimed_source(pointer)
                if source is not None:
                    await self._finish(pointer, source)
                    figures["finished"] += 1
                else:  # died before claiming (the message stayed put) or finished (source gone)
                    await self._drop(pointer)
                    figures["dropped"] += 1
            except StorageError as error:
                log.warning("could not settle move %s: %r", pointer.get("_id"), error)
        return figures

    def _is_valid(self, pointer: dict[str, Any]) -> bool:
        account_id, source_db = pointer.get("account_id"), pointer.get("source_db")
        copy = as_dict(pointer.get("copy"))
        return (isinstance(account_id, str) and naming.is_account_id(account_id)
                and isinstance(source_db, str) and isinstance(pointer.get("source_id"), str)
                and naming.modb_of_message(account_id, str(pointer["source_id"])) == source_db
                and isinstance(copy.get("_id"), str)
                and naming.modb_of_message(account_id, copy["_id"]) is not None)
