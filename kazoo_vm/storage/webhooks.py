"""Webhooks (``pvt_type: webhook``) in Kazoo's ``webhooks`` database, and the pending
deliveries of their events.

The hook documents are Kazoo's own (crossbar ``cb_webhooks`` keeps every account's hooks
in the one ``webhooks`` database, ``pvt_account_id`` naming the account), so a Kazoo
beside kazoo_vm lists the same hooks.

A pending delivery is one event for one hook (``pvt_type: webhook_delivery`` in
``kazoo_vm_webhooks``), written before the API answers the request that caused it and
removed once sent or given up. Each hook's queue has one more document there
(``pvt_type: webhook_queue``, id ``queue-<hook id>``): the instance sending the hook's
deliveries and until when (the lease, taken by a revision-checked write, so one instance
sends a hook's events, in order), the failed rounds in a row, and when to try again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

from ..kazoo.start_key import StartKey
from . import design
from .errors import Conflict, NotFound
from .paging import Page, RowFilter, ViewRange, read_page
from .store import OwnDatabase, Store
from .ttl_cache import TtlCache

DB = "webhooks"  # Kazoo's ?KZ_WEBHOOKS_DB
PVT_TYPE = "webhook"
DELIVERIES_DB = "kazoo_vm_webhooks"
DELIVERY_TYPE = "webhook_delivery"
QUEUE_TYPE = "webhook_queue"


def queue_id(hook_id: str) -> str:
    return f"queue-{hook_id}"


class Webhooks(OwnDatabase):
    DB, DESIGN = DB, design.WEBHOOKS

    def __init__(self, store: Store, *, cache_ttl: float = 0.0) -> None:
        super().__init__(store)
        # Live hooks of an account (with its ancestors' subaccount hooks), as the event
        # path reads them on every write, kept ``cache_ttl`` seconds; this process's own
        # hook writes forget them all.
        self._recent: TtlCache[tuple[str, ...], list[dict[str, Any]]] = TtlCache(cache_ttl)

    async def fetch(self, account_id: str, hook_id: str) -> dict[str, Any]:
        """The hook of ``account_id``; NotFound when missing, deleted, of another type
        or of another account."""
        await self._setup()
        doc = await self._couch.get_doc(DB, hook_id)
        if doc.get("pvt_type") != PVT_TYPE or doc.get("pvt_deleted") or doc.get("pvt_account_id") != account_id:
            raise NotFound(hook_id)
        return doc

    async def fetch_any(self, hook_id: str) -> dict[str, Any] | None:
        """The hook whatever its account, None when missing or deleted."""
        await self._setup()
        try:
            doc = await self._couch.get_doc(DB, hook_id)
        except NotFound:
            return None
        if doc.get("pvt_type") != PVT_TYPE or doc.get("pvt_deleted"):
            return None
        return doc

    async def save(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Create or update (``_rev`` decides); Conflict on a stale revision."""
        await self._setup()
        self._recent.clear()
        try:
            await self._couch.put_doc(DB, doc)
        finally:
            self._recent.clear()
        return doc

    async def listing(self, account_id: str, *, page_size: int | None, start: StartKey | None,
                      keep: RowFilter | None = None) -> Page:
        await self._setup()
        view = ViewRange(design=design.WEBHOOKS, view="crossbar_listing", startkey=[account_id],
                         endkey=[account_id, {}], descending=False,
                         include_docs=keep is not None)
        return await read_page(self._couch, [DB], view, page_size=page_size, start=start, keep=keep)

    async def of_accounts(self, account_ids: Sequence[str], *, fresh: bool = False) -> list[dict[str, Any]]:
        """The live hooks (enabled or not) of these accounts, in one request; unless
        ``fresh``, possibly as read up to the cache TTL ago (callers must not change them)."""
        key = tuple(account_ids)
        cached = None if fresh else self._recent.get(key)
        if cached is not None:
            return cached
        await self._setup()
        mark = self._recent.mark()
        rows = await self._couch.view(DB, design.WEBHOOKS, "accounts_listing", keys=list(account_ids),
                                      reduce=False, include_docs=True)
        hooks = [row["doc"] for row in rows if isinstance(row.get("doc"), dict)
                 and row["doc"].get("pvt_type") == PVT_TYPE and not row["doc"].get("pvt_deleted")]
        self._recent.put(key, hooks, since=mark)
        return hooks


class WebhookDeliveries(OwnDatabase):
    """Pending deliveries. One shard range (``q=1``): a copy that lags behind (a node
    back from an outage) catches up in the order of writes, so a view read from it may
    miss the newest deliveries of a hook but never shows one without those before it,
    and a hook's events go out in order."""

    DB, DESIGN, SHARDS = DELIVERIES_DB, design.WEBHOOK_DELIVERIES, 1

    async def add(self, deliveries: list[dict[str, Any]]) -> None:
        """Record pending deliveries (one request); raises when any was not written."""
        if not deliveries:
            return
        await self._setup()
        results = await self._couch.bulk_docs(DELIVERIES_DB, deliveries)
        failed = [result for result in results if "error" in result and result.get("error") != "conflict"]
        if failed:
            raise Conflict(f"/{DELIVERIES_DB}", str(failed[0].get("reason") or failed[0].get("error")))

    async def hooks_pending(self) -> dict[str, int]:
        """Hook id → number of pending deliveries."""
        await self._setup()
        rows = await self._couch.view(DELIVERIES_DB, design.WEBHOOK_DELIVERIES, "by_hook", group_level=1)
        return {str(row["key"][0]): int(row["value"]) for row in rows
                if isinstance(row.get("key"), list) and row["key"]}

    async def of_hook(self, hook_id: str, limit: int) -> list[dict[str, Any]]:
        """The oldest pending deliveries of a hook, in order."""
        await self._setup()
        rows = await self._couch.view(DELIVERIES_DB, design.WEBHOOK_DELIVERIES, "by_hook", reduce=False,
                                      startkey=[hook_id], endkey=[hook_id, {}], include_docs=True, limit=limit)
        return [row["doc"] for row in rows if isinstance(row.get("doc"), dict)]

    async def still_pending(self, delivery: dict[str, Any]) -> bool:
        """Whether the delivery is still there (a read of the document itself, not of the
        view, which may lag behind its removal by another instance)."""
        try:
            stored = await self._couch.get_doc(DELIVERIES_DB, delivery["_id"])
        except NotFound:
            return False
        delivery["_rev"] = stored["_rev"]
        return True

    async def done(self, delivery: dict[str, Any]) -> None:
        with contextlib.suppress(Conflict, NotFound):
            await self._couch.delete_doc(DELIVERIES_DB, delivery["_id"], delivery["_rev"])

    async def drop_all(self, hook_id: str) -> int:
        """Remove every pending delivery of a hook (deleted or disabled)."""
        dropped = 0
        while True:
            batch = await self.of_hook(hook_id, 200)
            if not batch:
                return dropped
            await self._couch.bulk_docs(DELIVERIES_DB, [{"_id": doc["_id"], "_rev": doc["_rev"], "_deleted": True}
                                                        for doc in batch])
            dropped += len(batch)

    async def queue(self, hook_id: str) -> dict[str, Any]:
        """The hook's queue document (a fresh one when it has none)."""
        await self._setup()
        try:
            return await self._couch.get_doc(DELIVERIES_DB, queue_id(hook_id))
        except NotFound:
            return {"_id": queue_id(hook_id), "pvt_type": QUEUE_TYPE, "hook_id": hook_id, "failed_rounds": 0}

    async def save_queue(self, queue: dict[str, Any]) -> None:
        """Revision-checked write of the queue document (Conflict: someone else wrote it)."""
        queue["modified"] = time.time()
        await self._couch.put_doc(DELIVERIES_DB, queue)
