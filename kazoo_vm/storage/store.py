"""Databases of an account: opened with their design documents, created on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..kazoo import naming
from . import design
from .couch import Couch
from .design import Designs
from .errors import NotFound
from .ttl_cache import TtlCache


class Store:
    """The CouchDB server as kazoo_vm uses it. Resource modules (``vmboxes``,
    ``messages``, ``accounts``) build on it; nothing above storage touches ``couch``."""

    def __init__(self, couch: Couch, *, cache_ttl: float = 0.0) -> None:
        self.couch = couch
        self.designs = Designs(couch)
        self._ready = False
        # MODBs of a listing's window found missing, not probed again for ``cache_ttl``
        # seconds (one made by another instance or a replication shows up after that;
        # one this process makes, at once). Present ones are remembered by ``designs``.
        self._missing: TtlCache[str, bool] = TtlCache(cache_ttl)
        # Awaited with (account id, database) after a MODB is created (replication).
        self.modb_created: list[Callable[[str, str], Awaitable[None]]] = []

    async def close(self) -> None:
        await self.couch.close()

    async def setup(self) -> None:
        """Create the global databases and their design documents (idempotent; after
        the first success of a process, free)."""
        if self._ready:
            return
        for db in (naming.ACCOUNTS_DB, naming.SYSTEM_CONFIG_DB):
            if not await self.couch.db_exists(db):
                await self.couch.create_db(db)
        await self.designs.ensure(naming.ACCOUNTS_DB, design.ACCOUNTS)
        self._ready = True

    async def account_db(self, account_id: str) -> str:
        """The account database, with ``vmboxes`` and ``users`` views current.
        Raises NotFound when it does not exist."""
        db = naming.account_db(account_id)
        await self.designs.ensure(db, design.VMBOXES)
        await self.designs.ensure(db, design.USERS)
        return db

    async def create_account_db(self, account_id: str) -> str:
        db = naming.account_db(account_id)
        await self.couch.create_db(db)
        self.designs.forget(db)
        return await self.account_db(account_id)

    async def existing_modbs(self, account_id: str, from_gregorian: int, to_gregorian: int) -> list[str]:
        """MODBs of the window that exist, newest first, with ``mailbox_messages`` current.
        Databases not known yet are probed at the same time."""
        candidates = [db for db in naming.modbs_between(account_id, from_gregorian, to_gregorian)
                      if not self._missing.get(db)]
        found = await asyncio.gather(*(self._opened(db) for db in candidates))
        return [db for db, exists in zip(candidates, found, strict=True) if exists]

    async def _opened(self, db: str) -> bool:
        mark = self._missing.mark()
        try:
            await self.designs.ensure(db, design.MAILBOX_MESSAGES)
        except NotFound:
            # not remembered when this process made a MODB meanwhile (the probe may
            # have been answered before it existed)
            self._missing.put(db, True, since=mark)
            return False
        return True

    def forget_missing(self, db: str) -> None:
        """Probe ``db`` again next time (another process wrote into it)."""
        self._missing.forget(db)

    async def modb(self, account_id: str, year: int, month: int) -> str:
        """The MODB of a month, created (with its design document) if missing."""
        db = naming.modb(account_id, year, month)
        try:
            if self._missing.get(db):
                raise NotFound(db)
            await self.designs.ensure(db, design.MAILBOX_MESSAGES)
        except NotFound:
            created = await self.couch.create_db(db)
            self._missing.forget(db)
            await self.designs.ensure(db, design.MAILBOX_MESSAGES)
            if created:
                for hook in self.modb_created:
                    await hook(account_id, db)
        return db


class OwnDatabase:
    """A resource kept in one global database of its own (``DB``, with the design
    document ``DESIGN``), which is created on first use."""

    DB = ""
    DESIGN = ""
    SHARDS: int | None = None  # CouchDB's q for the database; None: the cluster's default

    def __init__(self, store: Store) -> None:
        self._store = store
        self._couch: Couch = store.couch
        self._ready = False

    async def _setup(self) -> None:
        if not self._ready:
            if not await self._couch.db_exists(self.DB):
                await self._couch.create_db(self.DB, shards=self.SHARDS)
            await self._store.designs.ensure(self.DB, self.DESIGN)
            self._ready = True
