"""Test data written straight into CouchDB, in the shape the service writes it.

Accounts are created with ``Services.accounts.create``; boxes and messages are built
with the service's own rules (schema defaults, ``documents.stamp``,
``box_message.new_message``) and saved with ``_bulk_docs`` in batches. Messages go to
the MODB of their id's month, created with ``Store.modb`` so its design document is
installed, and are spread over the current month and the two before it, inside the
retention window. Views are queried once after loading so that timed requests never
pay for building them.
"""

from __future__ import annotations

import asyncio
import base64
import random
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kazoo_vm.http.validation import SchemaStore
from kazoo_vm.kazoo import box_message, documents, naming
from kazoo_vm.services import Services
from kazoo_vm.storage import design
from kazoo_vm.storage.errors import NotFound, StoreFault, Unavailable

BATCH_DOCS = 1_000
BATCH_BYTES = 4_000_000
PARALLEL_BATCHES = 3
LOAD_TIMEOUT = 900.0
WARM_TIMEOUT = 600.0
WINDOW_DAYS = 90  # inside the 93-day retention window whatever the day of the month
FOLDER_WEIGHTS = (("new", 7), ("saved", 3))
AUDIO_TYPE = "audio/mpeg"


class LoadError(RuntimeError):
    """The store refused some of the data."""


@dataclass(frozen=True)
class Account:
    account_id: str
    api_key: str
    realm: str
    timezone: str

    @property
    def db(self) -> str:
        """The raw (unencoded) account database name."""
        return naming.account_db(self.account_id)


@dataclass(frozen=True)
class Written:
    """A message as stored: its MODB (raw name), id, revision and attachment name."""

    db: str
    doc_id: str
    rev: str
    attachment: str | None = None


def gregorian(moment: datetime) -> int:
    return int(moment.timestamp()) + documents.GREGORIAN_UNIX_OFFSET


def window_start(now: int) -> int:
    """First second of the month two months before ``now`` (UTC), moved later if
    needed to stay within ``WINDOW_DAYS`` of ``now``."""
    today = datetime.fromtimestamp(now - documents.GREGORIAN_UNIX_OFFSET, tz=UTC)
    year, month = today.year, today.month - 2
    if month < 1:
        year, month = year - 1, month + 12
    first = gregorian(datetime(year, month, 1, tzinfo=UTC))
    return max(first, now - WINDOW_DAYS * 86400)


def spread(count: int, now: int, rng: random.Random) -> list[int]:
    """``count`` timestamps uniformly over the three months ending a minute before ``now``."""
    low, high = window_start(now), now - 60
    return [rng.randint(low, high) for _ in range(count)]


def months_of_window(now: int) -> list[tuple[int, int]]:
    return list(naming.months_between(window_start(now), now))


def _folder(rng: random.Random) -> str:
    names = [name for name, _weight in FOLDER_WEIGHTS]
    weights = [weight for _name, weight in FOLDER_WEIGHTS]
    return rng.choices(names, weights)[0]


class Loader:
    """Writes the data of a run and remembers what it created (for :meth:`cleanup`)."""

    def __init__(self, couch_url: str, seed: int) -> None:
        self.services = Services.connect(couch_url, timeout=LOAD_TIMEOUT)
        self.couch = self.services.store.couch
        self.rng = random.Random(seed)
        self.schemas = SchemaStore()
        self.accounts: list[Account] = []
        self.databases: set[str] = set()
        self.docs_written = 0
        self.seconds_loading = 0.0
        self.seconds_warming = 0.0
        self._metadata_checked = False

    async def close(self) -> None:
        await self.services.close()

    def _author(self, account: Account) -> documents.Author:
        return documents.Author(request_id=secrets.token_hex(16), auth_account_id=account.account_id)

    # -- accounts and boxes ----------------------------------------------------------

    async def account(self, name: str) -> Account:
        doc = await self.services.accounts.create(name=name, realm=None, parent_id=None)
        account = Account(account_id=doc["_id"], api_key=doc["pvt_api_key"], realm=doc["realm"],
                          timezone=doc.get("timezone") or box_message.DEFAULT_TIMEZONE)
        self.accounts.append(account)
        self.databases.add(account.db)
        return account

    def box_doc(self, account: Account, name: str, mailbox: int, now: int) -> dict[str, Any]:
        """A vmbox document as ``PUT /vmboxes`` stores it (schema defaults, stamps)."""
        box, errors = self.schemas.validate("vmboxes", {"name": name, "mailbox": str(mailbox)})
        if errors:
            raise LoadError(f"box {name}: {errors}")
        box = dict(box)
        box["_id"] = documents.new_id()
        documents.stamp(box, account_id=account.account_id,
                        account_db=naming.encoded_db(account.db), pvt_type="vmbox",
                        author=self._author(account), now=now)
        return box

    async def boxes(self, account: Account, count: int, *, prefix: str = "Box") -> list[dict[str, Any]]:
        """``count`` boxes (mailboxes 1000, 1001, …) saved into the account database."""
        now = documents.gregorian_now()
        docs = [self.box_doc(account, f"{prefix} {index:05d}", 1000 + index, now) for index in range(count)]
        by_id = {doc["_id"]: doc for doc in docs}
        pipeline = _Pipeline(self)
        for offset in range(0, len(docs), BATCH_DOCS):
            await pipeline.submit(account.db, docs[offset:offset + BATCH_DOCS])
        for written in await pipeline.finish():
            by_id[written.doc_id]["_rev"] = written.rev
        return docs

    # -- messages --------------------------------------------------------------------

    def message_doc(self, account: Account, box: dict[str, Any], timestamp: int, folder: str,
                    audio: bytes | None = None) -> dict[str, Any]:
        """A message as ``PUT /vmboxes/{B}/messages`` stores it (left at ``timestamp``)."""
        request = {"timestamp": timestamp, "folder": folder, "length": self.rng.randint(1_000, 120_000),
                   "caller_id_number": f"+1415{self.rng.randrange(10**7):07d}", "caller_id_name": "Bench Caller",
                   "call_id": secrets.token_hex(12)}
        if not self._metadata_checked:  # the schema neither changes nor refuses this shape: check once
            metadata, errors = self.schemas.validate("vm_message_metadata", request)
            if errors or metadata != request:
                raise LoadError(f"message metadata {request} is not stored as sent: {errors or metadata}")
            self._metadata_checked = True
        doc = box_message.new_message(box=box, request=request, realm=account.realm,
                                      timezone_name=box.get("timezone") or account.timezone,
                                      privacy_number="anonymous", now=timestamp)
        modb = naming.modb_of_message(account.account_id, doc["_id"])
        assert modb is not None
        documents.stamp(doc, account_id=account.account_id, account_db=naming.encoded_db(modb),
                        pvt_type=box_message.PVT_TYPE, author=self._author(account), now=timestamp)
        doc["pvt_account_db"] = naming.encoded_db(modb)
        if audio is not None:
            name = box_message.attachment_name(None, AUDIO_TYPE, timestamp)
            doc["_attachments"] = {name: {"content_type": AUDIO_TYPE, "data": base64.b64encode(audio).decode()}}
        return doc

    async def messages(self, account: Account, boxes: Sequence[dict[str, Any]], count: int, *,
                       box_for: Callable[[int], int] | None = None, timestamps: Iterable[int] | None = None,
                       audio_bytes: int = 0) -> list[Written]:
        """``count`` messages, message ``i`` in ``boxes[box_for(i)]`` (round robin by
        default), spread over three months unless ``timestamps`` are given, each with
        ``audio_bytes`` of random audio when not 0. Returned in the order written."""
        now = documents.gregorian_now()
        stamps = list(timestamps) if timestamps is not None else spread(count, now, self.rng)
        chooser = box_for or (lambda index: index % len(boxes))
        batches: dict[str, list[dict[str, Any]]] = defaultdict(list)
        sizes: dict[str, int] = defaultdict(int)
        pipeline = _Pipeline(self)
        for index, stamp in enumerate(stamps[:count]):
            audio = self.rng.randbytes(audio_bytes) if audio_bytes else None
            doc = self.message_doc(account, boxes[chooser(index)], stamp, _folder(self.rng), audio)
            db = await self.ensure_modb(account, doc["_id"])
            batches[db].append(doc)
            sizes[db] += _size(doc)
            if sizes[db] >= BATCH_BYTES or len(batches[db]) >= BATCH_DOCS:
                await pipeline.submit(db, batches.pop(db))
                sizes.pop(db)
        for db, docs in batches.items():
            await pipeline.submit(db, docs)
        return await pipeline.finish()

    async def ensure_modb(self, account: Account, message_id: str) -> str:
        year, month = int(message_id[0:4]), int(message_id[4:6])
        db = naming.modb(account.account_id, year, month)
        if db not in self.databases:
            await self.services.store.modb(account.account_id, year, month)
            self.databases.add(db)
        return db

    async def save(self, db: str, batch: list[dict[str, Any]]) -> list[Written]:
        """One ``_bulk_docs``; LoadError if any document is refused."""
        results = await self.couch.bulk_docs(db, batch)
        failed = [result for result in results if "error" in result]
        if failed:
            raise LoadError(f"{len(failed)} documents refused by {db}: {failed[:3]}")
        names = {doc["_id"]: next(iter(doc.get("_attachments") or {}), None) for doc in batch}
        self.docs_written += len(batch)
        return [Written(db, str(result["id"]), str(result["rev"]), names.get(str(result["id"])))
                for result in results]

    # -- views -----------------------------------------------------------------------

    async def warm(self, db: str, design_name: str, views: Iterable[str]) -> None:
        """Query each view (``limit=1``) until it answers, so the store builds its index
        now. CouchDB gives up on a long build with a 500 but goes on building: the query
        is repeated, for at most ``WARM_TIMEOUT`` seconds."""
        started = time.perf_counter()
        for view in views:
            while True:
                try:
                    await self.couch.view(db, design_name, view, limit=1)
                except NotFound:
                    break
                except (StoreFault, Unavailable):
                    if time.perf_counter() - started > WARM_TIMEOUT:
                        raise
                    await asyncio.sleep(1.0)
                    continue
                break
        self.seconds_warming += time.perf_counter() - started

    async def warm_modbs(self, account: Account, views: Iterable[str]) -> None:
        wanted = list(views)
        for db in sorted(self.databases):
            if db.startswith(account.db + "-"):
                await self.warm(db, design.MAILBOX_MESSAGES, wanted)

    # -- cleanup ---------------------------------------------------------------------

    async def cleanup(self) -> None:
        """Delete every database and account document this loader created."""
        for db in sorted(self.databases, reverse=True):
            await self.couch.delete_db(db)
        for account in self.accounts:
            try:
                doc = await self.couch.get_doc(naming.ACCOUNTS_DB, account.account_id)
                await self.couch.delete_doc(naming.ACCOUNTS_DB, account.account_id, doc["_rev"])
            except NotFound:
                continue
        self.databases.clear()
        self.accounts.clear()


def _size(doc: dict[str, Any]) -> int:
    """Rough JSON size of a document: its attachment data dominates."""
    return 1_000 + sum(len(spec.get("data", "")) for spec in (doc.get("_attachments") or {}).values())


class _Pipeline:
    """``_bulk_docs`` requests with at most ``PARALLEL_BATCHES`` in flight; results in
    submission order. The loader's ``seconds_loading`` counts the wall time."""

    def __init__(self, loader: Loader) -> None:
        self._loader = loader
        self._gate = asyncio.Semaphore(PARALLEL_BATCHES)
        self._tasks: list[asyncio.Task[list[Written]]] = []
        self._started = time.perf_counter()

    async def submit(self, db: str, batch: list[dict[str, Any]]) -> None:
        await self._gate.acquire()
        failed = [task for task in self._tasks if task.done() and task.exception() is not None]
        if failed:
            self._gate.release()
            await self.finish()
        task = asyncio.create_task(self._loader.save(db, batch))
        task.add_done_callback(lambda _task: self._gate.release())
        self._tasks.append(task)

    async def finish(self) -> list[Written]:
        """Every result, or the first failure (the other requests are cancelled)."""
        try:
            parts = await asyncio.gather(*self._tasks)
        except BaseException:
            for task in self._tasks:
                task.cancel()
            raise
        finally:
            self._loader.seconds_loading += time.perf_counter() - self._started
            self._started = time.perf_counter()
        self._tasks = []
        return [item for part in parts for item in part]
