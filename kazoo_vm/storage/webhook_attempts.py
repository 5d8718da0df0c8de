"""What happened when a hook was sent: Kazoo's ``webhook_attempt`` documents.

As Kazoo's ``webhooks_util:save_attempt``, each attempt is a document of the account's
MODB of the month it was made in (``pvt_type: webhook_attempt``, ``pvt_created`` its
time), listed by the MODB design document ``webhooks`` (``attempts_by_time_listing``
for the account, ``attempts_by_hook_listing`` for one hook) — the same documents and
views, so Kazoo's crossbar and kazoo_vm list each other's attempts.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..kazoo import naming
from ..kazoo.documents import new_id
from ..kazoo.start_key import StartKey
from . import design
from .errors import NotFound
from .paging import Page, ViewRange, read_page
from .store import Store

PVT_TYPE = "webhook_attempt"
BY_TIME = "attempts_by_time_listing"
BY_HOOK = "attempts_by_hook_listing"


class WebhookAttempts:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def record(self, account_id: str, attempt: dict[str, Any], now: int) -> dict[str, Any]:
        """Save one attempt (``now`` in gregorian seconds) in the month's MODB."""
        db = await self._store.modb(account_id, *naming.year_month(now))
        doc = {**attempt, "_id": new_id(), "pvt_account_db": naming.encoded_db(db), "pvt_account_id": account_id,
               "pvt_type": PVT_TYPE, "pvt_created": now, "pvt_modified": now}
        await self._store.couch.put_doc(db, doc)
        return doc

    async def _with_views(self, db: str) -> bool:
        try:
            await self._store.designs.ensure(db, design.MODB_WEBHOOKS)
        except NotFound:
            return False
        return True

    async def listing(self, account_id: str, hook_id: str | None, from_gregorian: int, to_gregorian: int, *,
                      page_size: int | None, start: StartKey | None, descending: bool) -> Page:
        """The attempts of the window (of one hook, or all the account's), newest first
        unless ``descending`` is False; rows carry their ``doc``."""
        dbs = await self._store.existing_modbs(account_id, from_gregorian, to_gregorian)
        ready = await asyncio.gather(*(self._with_views(db) for db in dbs))
        dbs = [db for db, ok in zip(dbs, ready, strict=True) if ok]
        if not descending:
            dbs.reverse()
        low: Any = from_gregorian if hook_id is None else [hook_id, from_gregorian]
        high: Any = to_gregorian if hook_id is None else [hook_id, to_gregorian]
        # the file modb_webhooks installs ``_design/webhooks``
        view = ViewRange(design=design.WEBHOOKS, view=BY_TIME if hook_id is None else BY_HOOK,
                         startkey=high if descending else low, endkey=low if descending else high,
                         descending=descending, include_docs=True)

        def in_range(row: dict[str, Any]) -> bool:
            """A client's ``start_key`` replaces the near end: rows of other hooks or
            outside the window stay out."""
            key = row.get("key")
            if hook_id is not None:
                if not isinstance(key, list) or len(key) != 2 or key[0] != hook_id:
                    return False
                key = key[1]
            return isinstance(key, int | float) and not isinstance(key, bool) \
                and from_gregorian <= key <= to_gregorian and isinstance(row.get("doc"), dict)

        return await read_page(self._store.couch, dbs, view, page_size=page_size, start=start, keep=in_range)
