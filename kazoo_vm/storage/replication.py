"""An account's voicemail data replicated to another CouchDB, including future MODBs.

``replicate`` writes one ``_replicator`` document per database (the account database and
every monthly database; with ``both_ways`` one more per database for the way back) on
the source server, named from what it copies where so that running it again changes
nothing, and records the target in ``system_config/kazoo_vm.replication.<account>``.
One pair is run the other way round: from Apache CouchDB to a pouchdb-server the
documents go to the target's ``_replicator`` (pouchdb-server pulls). CouchDB's replicator
writes a document with attachments by a multipart ``PUT ?new_edits=false``, which
pouchdb-server stores but answers with a JSON list instead of an object; the replicator
then crashes and retries with a growing back-off, so such documents arrived minutes late.
Every kazoo_vm instance reads that record when it creates a new monthly database and adds
the replication for it. The account's doc in the ``accounts`` database is replicated too
(``doc_ids``), so the other side can authenticate the account.

Conflicts that replication brings in are settled by CouchDB's own deterministic rule (the
same winner on every node); the next kazoo_vm write of the document deletes the losing
revisions (``Couch.put_doc``).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..kazoo import documents, naming
from .couch import Couch, quote_db
from .errors import Conflict, NotFound, StorageError, StoreFault
from .store import Store

REPLICATOR_DB = "_replicator"
CONFIG_PREFIX = "kazoo_vm.replication."
MONTH = 31 * 86400


@dataclass(frozen=True)
class Target:
    url: str
    continuous: bool = True
    both_ways: bool = False
    #: The target's own replicator runs the replications (Apache CouchDB → pouchdb-server).
    pulled: bool = False

    @property
    def safe_url(self) -> str:
        """The target without credentials (for names and display)."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _db_url(server: str, db: str) -> str:
    return f"{server.rstrip('/')}/{quote_db(db)}"


def replication_id(db: str, target: Target, direction: str) -> str:
    digest = hashlib.sha1(f"{db}|{target.safe_url}|{direction}".encode()).hexdigest()[:24]
    return f"kazoo_vm-{direction}-{digest}"


class Replication:
    def __init__(self, store: Store, source_url: str) -> None:
        self._store = store
        self._couch: Couch = store.couch
        self._source = source_url
        store.modb_created.append(self.modb_created)

    async def _setup(self) -> None:
        await self._store.setup()
        if not await self._couch.db_exists(REPLICATOR_DB):
            await self._couch.create_db(REPLICATOR_DB)

    async def targets(self, account_id: str) -> list[Target]:
        try:
            config = await self._couch.get_doc(naming.SYSTEM_CONFIG_DB, CONFIG_PREFIX + account_id)
        except NotFound:
            return []
        found = []
        for entry in config.get("targets") or []:
            if isinstance(entry, dict) and isinstance(entry.get("url"), str):
                found.append(Target(entry["url"], bool(entry.get("continuous", True)),
                                    bool(entry.get("both_ways", False)), bool(entry.get("pulled", False))))
        return found

    async def _pulled(self, target: Target) -> Target:
        """The target, marked ``pulled`` when this server is Apache CouchDB and the target
        a pouchdb-server (see the module's docstring)."""
        if "express-pouchdb" in await self._couch.info():
            return replace(target, pulled=False)
        runner = Couch(target.url, timeout=10.0)
        try:
            welcome = await runner.info()
        except StorageError as error:
            raise StoreFault("replication_target_unreachable", f"the target does not answer: {error}") from error
        finally:
            await runner.close()
        return replace(target, pulled="express-pouchdb" in welcome)

    @asynccontextmanager
    async def _runner(self, target: Target) -> AsyncIterator[Couch]:
        """The server whose ``_replicator`` holds the target's replications."""
        if not target.pulled:
            yield self._couch
            return
        runner = Couch(target.url, timeout=10.0)
        try:
            if not await runner.db_exists(REPLICATOR_DB):
                with suppress(Conflict):
                    await runner.create_db(REPLICATOR_DB)
            yield runner
        finally:
            await runner.close()

    async def _remember(self, account_id: str, target: Target) -> None:
        doc_id = CONFIG_PREFIX + account_id
        for _attempt in range(5):
            try:
                config = await self._couch.get_doc(naming.SYSTEM_CONFIG_DB, doc_id)
            except NotFound:
                config = {"_id": doc_id, "pvt_type": "config"}
            entries = [entry for entry in config.get("targets") or []
                       if isinstance(entry, dict) and Target(str(entry.get("url"))).safe_url != target.safe_url]
            config["targets"] = [*entries, {"url": target.url, "continuous": target.continuous,
                                            "both_ways": target.both_ways, "pulled": target.pulled}]
            try:
                await self._couch.put_doc(naming.SYSTEM_CONFIG_DB, config)
                return
            except Conflict:
                continue

    async def databases(self, account_id: str) -> list[str]:
        """The account database and every monthly database that exists, probed month by
        month (never through ``_all_dbs``, which pouchdb-server gets wrong)."""
        account = await self._couch.get_doc(naming.ACCOUNTS_DB, account_id)
        now = documents.gregorian_now()
        created = documents.as_int(account.get("pvt_created")) or now
        start = min(created, now) - 12 * MONTH
        found = [naming.account_db(account_id)]
        for db in reversed(naming.modbs_between(account_id, start, now + MONTH)):
            if await self._couch.db_exists(db):
                found.append(db)
        return found

    def _documents(self, account_id: str, db: str, target: Target) -> list[dict[str, Any]]:
        docs = [{"_id": replication_id(db, target, "push"), "source": _db_url(self._source, db),
                 "target": _db_url(target.url, db), "create_target": True, "continuous": target.continuous}]
        if target.both_ways:
            docs.append({"_id": replication_id(db, target, "pull"), "source": _db_url(target.url, db),
                         "target": _db_url(self._source, db), "continuous": target.continuous})
        for doc in docs:
            doc["kazoo_vm"] = {"account_id": account_id, "database": db, "target": target.safe_url}
        return docs

    async def _ensure(self, runner: Couch, wanted: dict[str, Any]) -> str:
        """Write one ``_replicator`` doc unless an identical one exists; returns its id."""
        for _attempt in range(5):
            try:
                current = await runner.get_doc(REPLICATOR_DB, wanted["_id"])
            except NotFound:
                current = None
            if current is not None and all(current.get(key) == value for key, value in wanted.items()):
                return str(wanted["_id"])
            doc = dict(wanted)
            if current is not None:
                doc["_rev"] = current["_rev"]
            try:
                await runner.put_doc(REPLICATOR_DB, doc)
                return str(wanted["_id"])
            except Conflict:
                continue
        raise Conflict(wanted["_id"])

    async def replicate(self, account_id: str, target: Target) -> list[str]:
        """Set up the replications of the account to ``target``; returns their ids."""
        await self._setup()
        target = await self._pulled(target)
        await self._remember(account_id, target)
        ids = []
        async with self._runner(target) as runner:
            for db in await self.databases(account_id):
                for doc in self._documents(account_id, db, target):
                    ids.append(await self._ensure(runner, doc))
            accounts_doc = {"_id": replication_id(f"{naming.ACCOUNTS_DB}/{account_id}", target, "push"),
                            "source": _db_url(self._source, naming.ACCOUNTS_DB),
                            "target": _db_url(target.url, naming.ACCOUNTS_DB), "create_target": True,
                            "continuous": target.continuous, "doc_ids": [account_id],
                            "kazoo_vm": {"account_id": account_id, "database": naming.ACCOUNTS_DB,
                                         "target": target.safe_url}}
            ids.append(await self._ensure(runner, accounts_doc))
        return ids

    async def stop(self, account_id: str) -> list[str]:
        """End the account's replications and forget its targets; returns the ids.
        Data already copied stays on both sides. Apache CouchDB only: pouchdb-server
        crashes when a ``_replicator`` doc is deleted and refuses to change a running
        one, so there this raises StoreFault(``replication_stop_unsupported``)."""
        targets = await self.targets(account_id)
        if "express-pouchdb" in (await self._couch.info()) or any(target.pulled for target in targets):
            raise StoreFault("replication_stop_unsupported", "pouchdb-server cannot stop a running replication")
        removed = []
        for target in targets:
            wanted = [doc["_id"] for db in await self.databases(account_id)
                      for doc in self._documents(account_id, db, target)]
            wanted.append(replication_id(f"{naming.ACCOUNTS_DB}/{account_id}", target, "push"))
            for doc_id in wanted:
                if await self._end(doc_id):
                    removed.append(doc_id)
        try:
            config = await self._couch.get_doc(naming.SYSTEM_CONFIG_DB, CONFIG_PREFIX + account_id)
            await self._couch.delete_doc(naming.SYSTEM_CONFIG_DB, config["_id"], config["_rev"])
        except (NotFound, Conflict):
            pass
        return removed

    async def _end(self, doc_id: str) -> bool:
        for _attempt in range(5):
            try:
                current = await self._couch.get_doc(REPLICATOR_DB, doc_id)
                await self._couch.delete_doc(REPLICATOR_DB, doc_id, current["_rev"])
                return True
            except NotFound:
                return False
            except Conflict:
                continue
        return False

    async def modb_created(self, account_id: str, db: str) -> None:
        """Hook of :class:`Store`: replicate a new MODB wherever the account goes."""
        for target in await self.targets(account_id):
            await self._setup()
            async with self._runner(target) as runner:
                for doc in self._documents(account_id, db, target):
                    await self._ensure(runner, doc)

    async def status(self, account_id: str) -> list[dict[str, Any]]:
        """Each replication of the account: id, database, direction, target, state."""
        result = []
        for target in await self.targets(account_id):
            async with self._runner(target) as runner:
                for db in await self.databases(account_id):
                    for doc in self._documents(account_id, db, target):
                        result.append({"id": doc["_id"], "database": db, "target": target.safe_url,
                                       "state": await self._state(runner, doc["_id"])})
        return result

    @staticmethod
    async def _state(runner: Couch, doc_id: str) -> str:
        try:
            scheduled = await runner.get_json(f"/_scheduler/docs/{REPLICATOR_DB}/{doc_id}")
            if isinstance(scheduled, dict) and scheduled.get("state"):
                return str(scheduled["state"])
        except StorageError:  # pouchdb-server has no scheduler API: the doc tells
            pass
        try:
            doc = await runner.get_doc(REPLICATOR_DB, doc_id)
        except NotFound:
            return "missing"
        return str(doc.get("_replication_state") or "pending")
