"""The one place that sends requests to CouchDB.

Requests go through aiohttp client sessions of this module's own (one per CouchDB node),
with the database name quoted here (``account/ab/cd/...`` names need it),
``Accept: application/json`` always sent (pouchdb-server labels JSON ``text/plain``
otherwise), the body decoded once, and errors translated once into :mod:`.errors`.
(aiocouch, used before, was dropped: kazoo_vm needed none of its document API and had
to reach into its private session to send requests of its own.)

On a CouchDB cluster (every document on ``n`` nodes):

* **Writes ask for every copy** (``w`` = the database's ``n``). A write answered 201 is
  then on every copy, so the next read of any kind (a document, ``_all_docs``, a view),
  through any node and from any copy, sees it.
* **202** (fewer copies than asked) means a copy was not written: its node is down, or
  it had already taken another write of the same revision (two nodes accepted writes of
  one revision: a conflict). The write is *settled* at once (:meth:`Couch._settle`): the
  document's leaves are read from every copy, and the write stands only when its branch
  is the one CouchDB itself makes the winner; a losing write deletes its own branch and
  raises :class:`Conflict`, a winning one deletes the losers. So two racing writers never
  both succeed, whichever nodes they went through.
* **Conflicts found on reading** (``conflicts=True``) are resolved the same way: the
  winning revision stays, the others are deleted.
* **Several nodes** may be given (``KAZOO_VM_COUCH_URL`` with URLs separated by commas).
  A node that cannot be reached is skipped for ``NODE_RETRY`` seconds; a request that never
  reached it goes to the next node at once, and so does a read cut short. Requests are
  sent to the first node that is up, so one instance keeps to one node while it answers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import io
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

import aiohttp
from yarl import URL

from .coalesce import Coalescer
from .errors import Conflict, NotFound, StorageError, StoreFault, Unavailable

log = logging.getLogger(__name__)

JSON_HEADERS = {"Accept": "application/json"}
# Requests resent when their connection broke before any answer, to the same node (a
# pooled connection the server had closed) or the next one. Writes are not: one the
# store applied before the connection broke would be answered 409 on its replay, so a
# failed write is reported (503) for the client to resend instead.
REPLAYABLE = frozenset({"GET", "HEAD"})
LARGE_BODY = 256 * 1024
# What the client library raises when the store cannot be reached or stops answering.
UNREACHABLE = (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)
# ... and the part of it that means the request never reached the node (safe to send to another).
NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
# Answers after which a read is tried on the next node (the node answered, but for the
# cluster: e.g. a coordinator that lost the nodes of a shard range).
NODE_TROUBLE = frozenset({500, 502, 503, 504})
# Seconds a node that could not be reached is skipped (it is tried again after that).
NODE_RETRY = 1.0

Json = Any
QueryValue = str | int | bool | float | None | list[Any] | dict[str, Any]

# ``error`` of a ``_bulk_docs`` result → the status a lone write would have answered.
BULK_ERRORS = {"conflict": 409, "forbidden": 403, "unauthorized": 401, "not_found": 404}
# A ``_bulk_docs`` refused before anything was written (one illegal id or too large a
# body refuses the whole request on Apache CouchDB): its documents are sent one by one.
REFUSED_WHOLE = frozenset({"store_400", "store_413"})
# Seconds between looks for a database whose create was answered 500 (see create_db).
CREATE_RACE_PAUSES = (0.05, 0.1, 0.2, 0.3, 0.4)
# Documents written or read alone, never in a group: design documents (each is checked
# against the files in ``couch_views/``) and local documents (no ``_all_docs`` rows).
UNGROUPED = ("_design/", "_local/")
# Databases whose ``n`` this process remembers (beyond that the memory starts afresh).
COPIES_REMEMBERED = 10_000

# View query parameters whose values CouchDB expects JSON-encoded.
WriteListener = Callable[[str, dict[str, Any], bool], None]
JSON_PARAMS = frozenset({"key", "keys", "startkey", "endkey", "start_key", "end_key", "atts_since"})


@functools.lru_cache(maxsize=4096)
def quote_db(name: str) -> str:
    """``account/ab/cd/ef…`` → ``account%2Fab%2Fcd%2Fef…`` (CouchDB's path form)."""
    return quote(name, safe="")


def quote_doc(doc_id: str) -> str:
    """Path form of a document id; design documents keep their literal slash."""
    if doc_id.startswith("_design/"):
        return "_design/" + quote(doc_id[len("_design/"):], safe="")
    return quote(doc_id, safe="")


def encode_params(params: Mapping[str, QueryValue]) -> dict[str, str]:
    """Query parameters as CouchDB reads them (JSON for keys, lower-case booleans)."""
    encoded: dict[str, str] = {}
    for name, value in params.items():
        if value is None and name not in JSON_PARAMS:
            continue
        if name in JSON_PARAMS:
            encoded[name] = json.dumps(value, separators=(",", ":"))
        elif isinstance(value, bool):
            encoded[name] = "true" if value else "false"
        else:
            encoded[name] = str(value)
    return encoded


@dataclass(frozen=True)
class Attachment:
    """One attachment to write together with its document."""

    name: str
    content_type: str
    data: bytes

    def inline(self) -> dict[str, Any]:
        """``_attachments`` carrying the bytes in the JSON (base64)."""
        return {self.name: {"content_type": self.content_type, "data": base64.b64encode(self.data).decode()}}

    def stub(self) -> dict[str, Any]:
        """``_attachments`` as the store keeps them once written (pouchdb-server matches a
        stub sent back by its digest, Apache CouchDB by name)."""
        digest = "md5-" + base64.b64encode(hashlib.md5(self.data).digest()).decode()
        return {self.name: {"content_type": self.content_type, "length": len(self.data), "stub": True,
                            "digest": digest}}


@dataclass(frozen=True)
class CouchEndpoint:
    """A server URL split into the address and the credentials it carries."""

    url: str
    user: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> CouchEndpoint:
        parts = urlsplit(url.strip().rstrip("/"))
        host = parts.hostname or "127.0.0.1"
        netloc = f"[{host}]" if ":" in host else host
        if parts.port:
            netloc += f":{parts.port}"
        clean = urlunsplit((parts.scheme or "http", netloc, parts.path, "", ""))
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        return cls(url=clean, user=user, password=password)

    @classmethod
    def parse_nodes(cls, urls: str) -> list[CouchEndpoint]:
        """``KAZOO_VM_COUCH_URL``: one URL, or the nodes of one cluster separated by
        commas; a node given without credentials uses the first node's."""
        nodes = [cls.parse(part) for part in urls.split(",") if part.strip()]
        if not nodes:
            raise ValueError("no CouchDB URL")
        first = nodes[0]
        return [node if node.user is not None else replace(node, user=first.user, password=first.password)
                for node in nodes]

    def authorization(self) -> str:
        """The ``Authorization`` header of HTTP basic authentication with the URL's credentials."""
        pair = f"{self.user or ''}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def with_credentials(self) -> str:
        """The URL with its credentials (for CouchDB's own replicator)."""
        if self.user is None:
            return self.url
        parts = urlsplit(self.url)
        auth = quote(self.user, safe="") + ":" + quote(self.password or "", safe="")
        return urlunsplit((parts.scheme, f"{auth}@{parts.netloc}", parts.path, "", ""))


def _ancestry(leaf: dict[str, Any]) -> list[str]:
    """``pos-hash`` revisions of a leaf from ``open_revs`` with ``revs=true``, newest first."""
    revisions = leaf.get("_revisions")
    if not isinstance(revisions, dict):
        return [str(leaf.get("_rev"))]
    start, ids = revisions.get("start"), revisions.get("ids")
    if not isinstance(start, int) or not isinstance(ids, list):
        return [str(leaf.get("_rev"))]
    return [f"{start - index}-{rev_hash}" for index, rev_hash in enumerate(ids)]


def _branches(leaves: list[dict[str, Any]], rev: str) -> list[tuple[str, dict[str, Any]]] | None:
    """``(first revision, leaf)`` of every leaf grown from the parent of ``rev``: the
    first revision after that parent names the write that started the leaf's branch.
    None when no leaf descends from ``rev``."""
    ours = next((_ancestry(leaf) for leaf in leaves if rev in _ancestry(leaf)), None)
    if ours is None:
        return None
    below = ours[ours.index(rev) + 1:]
    parent = below[0] if below else None
    branches: list[tuple[str, dict[str, Any]]] = []
    for leaf in leaves:
        ancestry = _ancestry(leaf)
        if parent is None:  # a first revision: every history starts a branch
            if _generation(ancestry[-1]) == 1:
                branches.append((ancestry[-1], leaf))
        elif parent in ancestry and ancestry.index(parent) > 0:
            branches.append((ancestry[ancestry.index(parent) - 1], leaf))
    return branches


def _winning_order(leaf: dict[str, Any]) -> tuple[bool, int, str]:
    """CouchDB's choice of the winning revision: a live leaf before a deleted one, then
    the longer history, then the greater revision hash."""
    position, _, rev_hash = str(leaf.get("_rev")).partition("-")
    return (not leaf.get("_deleted"), int(position) if position.isdigit() else 0, rev_hash)


def _generation(rev: str | None) -> int:
    position = (rev or "0").partition("-")[0]
    return int(position) if position.isdigit() else 0


class Couch:
    """A CouchDB server or cluster. Methods raise :class:`NotFound`, :class:`Conflict`,
    :class:`Unavailable` or :class:`StoreFault`, never a client library error."""

    def __init__(self, url: str, *, timeout: float = 30.0, connect_timeout: float = 3.0) -> None:
        self.nodes = CouchEndpoint.parse_nodes(url)
        self.endpoint = self.nodes[0]
        # ``connect`` would also count the wait for a free pooled connection: under many
        # concurrent requests that wait is load, not an unreachable CouchDB, so only the
        # socket connect itself is bounded.
        self._timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=connect_timeout,
                                              sock_read=timeout)
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._skip_until: dict[str, float] = {}  # node URL → when it is tried first again
        self._copies: dict[str, int] = {}  # database → its ``n``
        self._closed = False
        #: Called after each document write CouchDB took (see :meth:`_wrote`).
        self.on_write: WriteListener | None = None
        # One write at a time per document from this process: racing requests of one
        # process then meet as ordinary 409s (pouchdb-server can crash on two identical
        # concurrent edits of a document).
        self._writing: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()
        # Concurrent document reads of one database (keyed with ``conflicts``) and
        # document writes to one database go to CouchDB together (see .coalesce).
        self._reads: Coalescer[str, dict[str, Any]] = Coalescer(self._read_group)
        self._writes: Coalescer[dict[str, Any], str] = Coalescer(self._write_group)

    async def close(self) -> None:
        self._closed = True
        await self._reads.close()
        await self._writes.close()
        for task in list(self._retiring):
            task.cancel()
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()
        for task in list(self._retiring):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- nodes and sessions --------------------------------------------------------

    def _session(self, node: CouchEndpoint) -> aiohttp.ClientSession:
        if self._closed:
            raise Unavailable("the CouchDB client is closed")
        session = self._sessions.get(node.url)
        if session is None:
            # the Authorization header itself: aiohttp 3.14 deprecates its BasicAuth helper
            headers = {} if node.user is None else {"Authorization": node.authorization()}
            session = self._sessions[node.url] = aiohttp.ClientSession(headers=headers, timeout=self._timeout)
        return session

    def _in_order(self) -> list[CouchEndpoint]:
        """The nodes to try, in order: those not being skipped as given, then the others
        (still worth a try when nothing else answers)."""
        if len(self.nodes) == 1:
            return self.nodes
        now = time.monotonic()
        up = [node for node in self.nodes if self._skip_until.get(node.url, 0.0) <= now]
        return up + [node for node in self.nodes if node not in up]

    def _unreachable(self, node: CouchEndpoint, session: aiohttp.ClientSession, error: BaseException) -> None:
        """``node`` failed a request: skip it for a while, and connect afresh when it is
        used again (its pooled connections may all be dead: a restarted node)."""
        if self._skip_until.get(node.url, 0.0) <= time.monotonic():
            log.warning("CouchDB node %s unreachable (%s): skipped for %.1f s",
                        node.url, str(error) or type(error).__name__, NODE_RETRY)
        self._skip_until[node.url] = time.monotonic() + NODE_RETRY
        if self._sessions.get(node.url) is session:
            del self._sessions[node.url]
            # requests still out on the old session finish on it; it is closed after them
            task = asyncio.get_running_loop().create_task(self._retire(session))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _retire(self, session: aiohttp.ClientSession) -> None:
        try:
            await asyncio.sleep(self._timeout.sock_read or 30.0)
        finally:
            await session.close()

    def _answered(self, node: CouchEndpoint) -> None:
        if node.url in self._skip_until:
            del self._skip_until[node.url]

    # -- requests ------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, QueryValue] | None = None,
        json_body: Json = None,
        data: bytes | aiohttp.MultipartWriter | None = None,
        headers: Mapping[str, str] | None = None,
        raw: bool = False,
        replayable: bool | None = None,
    ) -> tuple[int, Mapping[str, str], Any]:
        """Send one request; ``path`` is already quoted. Returns status, headers and the
        decoded JSON body (or the bytes when ``raw``). ``replayable``: whether it may be
        resent when its connection broke (by default GET and HEAD may); a request that
        never reached a node is always sent to the next."""
        all_headers = dict(JSON_HEADERS)
        if headers:
            all_headers.update(headers)
        kwargs: dict[str, Any] = {"headers": all_headers}
        if json_body is not None:
            data = json.dumps(json_body, separators=(",", ":")).encode()
            all_headers["Content-Type"] = "application/json"
        if data is not None:
            # aiohttp sends large bodies from a file-like object without blocking the loop.
            kwargs["data"] = io.BytesIO(data) if isinstance(data, bytes) and len(data) > LARGE_BODY else data
        target = path
        query = encode_params(params) if params else None
        if query:
            target += "?" + urlencode(query, safe="", quote_via=quote)
        resend = method in REPLAYABLE if replayable is None else replayable
        answer: tuple[int, Mapping[str, str], bytes, str] | None = None
        failure: BaseException | None = None
        nodes = self._in_order()
        for attempt, node in enumerate([nodes[0], *nodes] if resend else nodes):
            session = self._session(node)
            try:
                answer = await self._send(session, method, URL(node.url + target, encoded=True), kwargs)
            except NOT_SENT as error:
                self._unreachable(node, session, error)
                failure = error
                continue
            except UNREACHABLE as error:
                # the same node once more first: a pooled connection it had closed
                if attempt or len(nodes) > 1 or not isinstance(error, aiohttp.ServerDisconnectedError):
                    self._unreachable(node, session, error)
                failure = error
                if resend and not self._closed:
                    continue
                raise Unavailable(str(error) or type(error).__name__) from None
            except (aiohttp.ClientError, ValueError) as error:
                raise StoreFault("unexpected_response", str(error)) from None
            except RuntimeError as error:  # a session closed under the request by close()
                if not self._closed:
                    raise
                raise Unavailable(str(error)) from None
            self._answered(node)
            if answer[0] in NODE_TROUBLE and resend and node is not nodes[-1]:
                failure = translate(answer[0], _reason(answer[2]) or answer[3], path)
                continue
            break
        if answer is None:
            raise Unavailable(str(failure) or type(failure).__name__ if failure else "no CouchDB node answered")
        status, response_headers, body, reason = answer
        if status >= 400:
            raise translate(status, _reason(body) or reason, path)
        if raw:
            return status, response_headers, body
        try:
            decoded = json.loads(body) if body.strip() else None
        except ValueError as error:
            raise StoreFault("unexpected_response", str(error)) from None
        return status, response_headers, decoded

    async def _send(self, session: aiohttp.ClientSession, method: str, url: URL,
                    kwargs: dict[str, Any]) -> tuple[int, Mapping[str, str], bytes, str]:
        if isinstance(kwargs.get("data"), io.BytesIO):
            kwargs["data"].seek(0)
        async with session.request(method, url, **kwargs) as response:
            return response.status, response.headers, await response.read(), response.reason or ""

    async def get_json(self, path: str, **params: QueryValue) -> Json:
        return (await self.request("GET", path, params=params))[2]

    async def info(self) -> Json:
        """The server's welcome document (``GET /``)."""
        return await self.get_json("/")

    # -- databases -----------------------------------------------------------------

    async def db_exists(self, db: str) -> bool:
        try:
            await self.request("HEAD", f"/{quote_db(db)}", raw=True)
        except NotFound:
            return False
        return True

    async def create_db(self, db: str, *, shards: int | None = None) -> bool:
        """Create ``db``; returns False when it existed already.

        Concurrent creates of one name are answered 412 but the first, except that Apache
        CouchDB under load has answered 500 to some of them (17 of 25 first messages of a
        new month at once, once in the test suite's runs): a 500 counts as "existed"
        when the database is there within about a second. A node that drops the
        connection before answering may or may not have created it: the create is sent
        to the next node, and when that one finds the database, it counts as created
        here (so that the hooks of a new database run; they are idempotent).
        ``shards``: CouchDB's ``q`` for the new database (ignored by pouchdb-server)."""
        params: dict[str, QueryValue] = {"q": shards} if shards else {}
        try:
            await self.request("PUT", f"/{quote_db(db)}", params=params)
        except Conflict:  # 412 file_exists
            return False
        except Unavailable:
            if await self.db_exists(db):
                return True
            try:
                await self.request("PUT", f"/{quote_db(db)}", params=params)
            except Conflict:
                return True
        except StoreFault:
            for pause in CREATE_RACE_PAUSES:
                if await self.db_exists(db):
                    return False
                await asyncio.sleep(pause)
            raise
        return True

    async def delete_db(self, db: str) -> None:
        self._copies.pop(db, None)
        with contextlib.suppress(NotFound):
            await self.request("DELETE", f"/{quote_db(db)}")

    async def copies(self, db: str) -> int:
        """How many copies of each document of ``db`` CouchDB keeps (its ``n``: 1 on a
        single node and on pouchdb-server). Asked once per database."""
        known = self._copies.get(db)
        if known is None:
            info = await self.get_json(f"/{quote_db(db)}")
            cluster = info.get("cluster") if isinstance(info, dict) else None
            n = cluster.get("n") if isinstance(cluster, dict) else None
            known = n if isinstance(n, int) and n > 0 else 1
            if len(self._copies) >= COPIES_REMEMBERED:
                self._copies.clear()
            self._copies[db] = known
        return known

    async def _every_copy(self, db: str) -> dict[str, QueryValue]:
        """``w`` for a write to be answered 201 only once every copy has it."""
        n = await self.copies(db)
        return {"w": n} if n > 1 else {}

    # -- documents -----------------------------------------------------------------

    async def get_doc(self, db: str, doc_id: str, *, conflicts: bool = False) -> dict[str, Any]:
        """The document. Concurrent reads of one database are sent together: see
        :meth:`_read_group`. With ``conflicts``, conflicting revisions found are resolved
        (the winning revision stays, the others are deleted) and not returned."""
        if doc_id.startswith(UNGROUPED):
            (doc,) = await self._read_group((db, conflicts), [doc_id])
        else:
            doc = await self._reads.submit((db, conflicts), doc_id)
        if isinstance(doc, Exception):
            raise doc
        losers = doc.pop("_conflicts", None)
        if isinstance(losers, list) and losers:
            log.info("resolving %d conflicting revisions of %s in %s", len(losers), doc_id, db)
            await self._delete_revisions(db, [(doc_id, rev) for rev in losers if isinstance(rev, str)])
        return doc

    async def _read_group(self, key: Hashable, doc_ids: list[str]) -> list[dict[str, Any] | Exception]:
        """Documents of one database: one ``GET`` when all ask for the same document
        (decoded once per asker: each gets its own copy), one ``_all_docs`` otherwise."""
        db, conflicts = cast(tuple[str, bool], key)
        wanted = list(dict.fromkeys(doc_ids))
        params: dict[str, QueryValue] = {"conflicts": True} if conflicts else {}
        if len(wanted) == 1:
            try:
                _, _, body = await self.request("GET", f"/{quote_db(db)}/{quote_doc(wanted[0])}",
                                                params=params, raw=True)
            except StorageError as error:
                return [error] * len(doc_ids)
            return [_document(body) for _ in doc_ids]
        try:
            rows = {row.get("key"): row for row in await self.all_docs(db, wanted, conflicts=conflicts)
                    if isinstance(row, dict)}
        except StorageError as error:
            return [error] * len(doc_ids)
        except (KeyError, TypeError):
            return [StoreFault("unexpected_response", "_all_docs without rows")] * len(doc_ids)
        found: list[dict[str, Any] | Exception] = []
        given: set[str] = set()
        for doc_id in doc_ids:
            row = rows.get(doc_id) or {"error": "not_found"}
            doc = row.get("doc")
            path = f"/{quote_db(db)}/{quote_doc(doc_id)}"
            if "error" in row:
                found.append(NotFound(path, str(row["error"])))
            elif not isinstance(doc, dict):  # deleted
                found.append(NotFound(path, "deleted"))
            else:  # a second asker of the same document gets its own copy
                found.append(json.loads(json.dumps(doc)) if doc_id in given else doc)
                given.add(doc_id)
        return found

    async def put_doc(self, db: str, doc: dict[str, Any], *, attachment: Attachment | None = None) -> str:
        """Save ``doc`` (its ``_id`` in URL and body alike); returns the new revision
        and stores it in ``doc['_rev']``. Conflicting revisions the document was read
        with (``_conflicts``) are deleted once the write is in.

        With ``attachment``, it replaces the document's attachments in the same write
        (one revision, never a moment without audio), base64 in the JSON.
        ``doc['_attachments']`` then holds its stub, whether the write succeeded or not.
        (Not a multipart/related body: pouchdb-server crashes on it, and an Apache
        CouchDB cluster left such a write hanging until the client's timeout when a node
        holding a copy died during it; a JSON write is answered at once, 202.)"""
        losers = doc.pop("_conflicts", None)
        created = "_rev" not in doc
        try:
            async with self._write_lock(db, doc["_id"]):
                if attachment is None:
                    rev = await self._put_json(db, doc)
                else:
                    (written,) = await self._write_group(db, [{**doc, "_attachments": attachment.inline()}])
                    if isinstance(written, Exception):
                        raise written
                    rev = written
        finally:
            if attachment is not None:
                doc["_attachments"] = attachment.stub()
        doc["_rev"] = rev
        self._wrote(db, doc, created=created)
        if isinstance(losers, list) and losers:
            await self._delete_revisions(db, [(doc["_id"], rev) for rev in losers if isinstance(rev, str)])
        return rev

    def _wrote(self, db: str, doc: dict[str, Any], *, created: bool) -> None:
        """Tell ``on_write`` of a document CouchDB took (``doc`` as saved, with its new
        ``_rev``; ``created``: it was saved without a revision)."""
        if self.on_write is not None:
            self.on_write(db, doc, created)

    async def _put_json(self, db: str, doc: dict[str, Any]) -> str:
        """Write a document without attachments; returns its new revision. Concurrent
        writes to one database are sent together: see :meth:`_write_group`."""
        if doc["_id"].startswith(UNGROUPED):
            (rev,) = await self._write_group(db, [doc])
        else:
            rev = await self._writes.submit(db, doc)
        if isinstance(rev, Exception):
            raise rev
        return rev

    async def _write_group(self, key: Hashable, docs: list[dict[str, Any]]) -> list[str | Exception]:
        """Documents of one database: a lone one with ``POST /db``, several with one
        ``_bulk_docs`` (each document still succeeds or fails on its own, with the error
        a lone write of it would have had). A group refused as a whole before any write
        (``REFUSED_WHOLE``) is sent again one document at a time. (``POST``, not ``PUT``:
        aiohttp resends a ``PUT`` whose pooled connection broke, which CouchDB would
        answer 409 when the first one was applied.)"""
        db = str(key)
        if len(docs) == 1:
            doc = docs[0]
            try:
                status, _, body = await self.request("POST", f"/{quote_db(db)}",
                                                     params=await self._every_copy(db), json_body=doc)
                rev = str(body["rev"])
                if status == 202:
                    await self._settle(db, doc["_id"], rev)
                return [rev]
            except StorageError as error:
                return [error]
            except (KeyError, TypeError):
                return [StoreFault("unexpected_response", "a write answered without rev")]
        try:
            answers = await self._bulk_docs(db, docs)
        except StoreFault as error:
            if error.cause not in REFUSED_WHOLE:
                return [error] * len(docs)
            return [(await self._write_group(db, [doc]))[0] for doc in docs]
        except StorageError as error:
            return [error] * len(docs)
        if len(answers) != len(docs):
            return [StoreFault("unexpected_response", "_bulk_docs answered another count")] * len(docs)
        revs: list[str | Exception] = []
        for doc, answer in zip(docs, answers, strict=True):
            if isinstance(answer, dict) and "rev" in answer and "error" not in answer:
                revs.append(str(answer["rev"]))
                continue
            code = str(answer.get("error", "")) if isinstance(answer, dict) else ""
            reason = str(answer.get("reason") or code) if isinstance(answer, dict) else ""
            status = 503 if code == "unavailable" else BULK_ERRORS.get(code, 500)
            revs.append(translate(status, reason, f"/{quote_db(db)}/{quote_doc(doc['_id'])}"))
        return revs

    async def _settle(self, db: str, doc_id: str, rev: str) -> None:
        """Decide a write CouchDB accepted on fewer copies than asked (202).

        The document's leaves are read from every copy (``open_revs=all``, ``r`` = n).
        The leaves grown from the revision ``rev`` was written on (its parent, as the
        copies record it: a document re-created over a deletion has one) form branches,
        each started by one write; the write of ``rev`` stands when its branch holds the
        winner CouchDB picks among them (a deletion stands when the winner is deleted
        too). A standing write deletes the live leaves of the other branches; a losing
        one deletes its own and raises :class:`Conflict`. Racing writers read the same
        leaves (each was answered only after every copy had decided between them), so
        exactly one of them stands.

        Raises :class:`Unavailable` when no readable copy holds the write (the copies
        that took it are down): its outcome is unknown."""
        path = f"/{quote_db(db)}/{quote_doc(doc_id)}"
        _, _, body = await self.request("GET", path, params={"open_revs": "all", "revs": True,
                                                             "r": await self.copies(db)})
        leaves = [entry["ok"] for entry in body if isinstance(entry, dict) and isinstance(entry.get("ok"), dict)] \
            if isinstance(body, list) else []
        branches = _branches(leaves, rev)
        if branches is None:
            raise Unavailable(f"{path}: written on copies that cannot be read now")
        mine = [leaf for first, leaf in branches if first == rev]
        winner_first, winner = max(branches, key=lambda branch: _winning_order(branch[1]))
        deleting = bool(mine[0].get("_deleted")) and mine[0].get("_rev") == rev
        if winner_first == rev or (deleting and winner.get("_deleted")):
            if not winner.get("_deleted"):
                await self._spread(db, doc_id, winner)
            others = [leaf for first, leaf in branches if first != rev and not leaf.get("_deleted")]
            await self._delete_revisions(db, [(doc_id, str(leaf["_rev"])) for leaf in others])
            return
        log.info("write %s of %s in %s lost to %s on another copy", rev, doc_id, db, winner.get("_rev"))
        if not winner.get("_deleted"):
            await self._spread(db, doc_id, winner)
        await self._delete_revisions(db, [(doc_id, str(leaf["_rev"])) for leaf in mine if not leaf.get("_deleted")])
        raise Conflict(path, "conflict: another write of the same revision won on another copy")

    async def _spread(self, db: str, doc_id: str, leaf: dict[str, Any]) -> None:
        """Put the winning leaf of a settled write on every copy before answering.

        A copy that took the losing write first refused the winning one; once the loser
        is deleted, that copy holds the document as deleted (or as the loser, until the
        deletion reaches it) and a view read from it leaves the document out or lists it
        where it no longer is — until CouchDB's internal replication brings the winner,
        which can take seconds under load. Writing the winner's revision itself
        (``new_edits=false``, with its history and the attachments it added) to every
        copy closes that window; copies that have it change nothing. Best effort: a copy
        that is down gets it from internal replication when it is back."""
        ancestry = _ancestry(leaf)
        params: dict[str, QueryValue] = {"rev": str(leaf.get("_rev")), "revs": True, "attachments": True,
                                         "r": await self.copies(db)}
        if len(ancestry) > 1:
            params["atts_since"] = [ancestry[1]]
        path = f"/{quote_db(db)}/{quote_doc(doc_id)}"
        with contextlib.suppress(StorageError):
            _, _, body = await self.request("GET", path, params=params)
            if isinstance(body, dict) and body.get("_rev") == leaf.get("_rev"):
                await self.request("POST", f"/{quote_db(db)}/_bulk_docs", params=await self._every_copy(db),
                                   json_body={"new_edits": False, "docs": [body]})

    async def live_leaves(self, db: str, doc_id: str) -> list[dict[str, Any]]:
        """Every live leaf revision of the document, from every copy (``open_revs=all``,
        ``r`` = n): one when it has no conflicts, none when it is deleted or missing."""
        params: dict[str, QueryValue] = {"open_revs": "all"}
        copies = await self.copies(db)
        if copies > 1:
            params["r"] = copies
        try:
            _, _, body = await self.request("GET", f"/{quote_db(db)}/{quote_doc(doc_id)}", params=params)
        except NotFound:
            return []
        return [entry["ok"] for entry in body if isinstance(entry, dict) and isinstance(entry.get("ok"), dict)
                and not entry["ok"].get("_deleted")] if isinstance(body, list) else []

    async def delete_leaves(self, db: str, doc_id: str, revs: list[str], *, doc_type: str | None = None) -> None:
        """Delete these leaf revisions of the document (each its own branch);
        ``doc_type`` (its ``pvt_type``) for those who hear of the deletion."""
        deletions = [{"_id": doc_id, "_rev": rev, "_deleted": True} for rev in revs]
        if deletions:
            _, _, body = await self.request("POST", f"/{quote_db(db)}/_bulk_docs",
                                            params=await self._every_copy(db), json_body={"docs": deletions})
            for result in body if isinstance(body, list) else []:
                if isinstance(result, dict) and "rev" in result and "error" not in result:
                    deleted = {"_id": doc_id, "_rev": str(result["rev"]), "_deleted": True}
                    self._wrote(db, {**deleted, "pvt_type": doc_type} if doc_type else deleted, created=False)

    async def _delete_revisions(self, db: str, revisions: list[tuple[str, str]]) -> None:
        """Delete losing revisions (best effort: a later read or write tries again)."""
        if not revisions:
            return
        deletions = [{"_id": doc_id, "_rev": rev, "_deleted": True} for doc_id, rev in revisions]
        with contextlib.suppress(StorageError):
            await self.request("POST", f"/{quote_db(db)}/_bulk_docs", params=await self._every_copy(db),
                               json_body={"docs": deletions})

    async def delete_doc(self, db: str, doc_id: str, rev: str, *, doc_type: str | None = None) -> None:
        """Delete the document at revision ``rev`` (Conflict when it is not current);
        ``doc_type`` (its ``pvt_type``) for those who hear of the deletion."""
        deletion: dict[str, Any] = {"_id": doc_id, "_rev": rev, "_deleted": True}
        async with self._write_lock(db, doc_id):
            deletion["_rev"] = await self._put_json(db, deletion)
        self._wrote(db, {**deletion, "pvt_type": doc_type} if doc_type else deletion, created=False)

    def _write_lock(self, db: str, doc_id: str) -> asyncio.Lock:
        lock = self._writing.get((db, doc_id))
        if lock is None:
            lock = self._writing[(db, doc_id)] = asyncio.Lock()
        return lock

    async def all_docs(self, db: str, keys: Sequence[str], *, conflicts: bool = True) -> list[dict[str, Any]]:
        """``_all_docs?include_docs=true[&conflicts=true]`` for ``keys``; one row per
        key, in order."""
        _, _, body = await self.request(
            "POST",
            f"/{quote_db(db)}/_all_docs",
            params={"include_docs": True, "conflicts": conflicts},
            json_body={"keys": list(keys)},
            replayable=True,  # a read, though a POST
        )
        return list(body["rows"])

    async def bulk_docs(self, db: str, docs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """``_bulk_docs``; one result per document (``rev`` or ``error``), in order.
        Results accepted on fewer copies than asked are settled (see :meth:`_settle`):
        a losing one becomes ``error: conflict``. Conflicting revisions the documents
        were read with are deleted afterwards for the documents that were written."""
        created = ["_rev" not in doc for doc in docs]
        results = await self._bulk_docs(db, docs)
        for doc, new, result in zip(docs, created, results, strict=True):
            if "rev" in result and "error" not in result:
                self._wrote(db, {**doc, "_rev": str(result["rev"])}, created=new)
        return results

    async def _bulk_docs(self, db: str, docs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        losers = [(doc.get("_id"), doc.pop("_conflicts", None)) for doc in docs]
        status, _, body = await self.request(
            "POST", f"/{quote_db(db)}/_bulk_docs", params=await self._every_copy(db),
            json_body={"docs": list(docs)}
        )
        if not isinstance(body, list) or not all(isinstance(result, dict) for result in body):
            raise StoreFault("unexpected_response", "_bulk_docs answered no list of results")
        body = _in_order_of(docs, body)
        if status == 202:
            body = await asyncio.gather(*(self._settled(db, doc, result)
                                          for doc, result in zip(docs, body, strict=True)))
        written = {result.get("id") for result in body if "error" not in result}
        await self._delete_revisions(db, [(str(doc_id), rev) for doc_id, revs in losers
                                          if doc_id in written and isinstance(revs, list)
                                          for rev in revs if isinstance(rev, str)])
        return list(body)

    async def _settled(self, db: str, doc: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        """A ``_bulk_docs`` result once settled (results not ``accepted`` are final)."""
        if not result.get("accepted") or "rev" not in result:
            return result
        try:
            await self._settle(db, str(doc["_id"]), str(result["rev"]))
        except Conflict as error:
            return {"id": doc["_id"], "error": "conflict", "reason": error.reason}
        except Unavailable as error:
            return {"id": doc["_id"], "error": "unavailable", "reason": error.detail}
        return result

    async def view(
        self, db: str, design: str, view: str, **params: QueryValue
    ) -> list[dict[str, Any]]:
        """Rows of ``_design/<design>/_view/<view>`` (no reduce)."""
        body = await self.get_json(
            f"/{quote_db(db)}/_design/{quote(design, safe='')}/_view/{quote(view, safe='')}",
            **params,
        )
        return list(body["rows"])

    # -- attachments ---------------------------------------------------------------

    async def get_attachment(self, db: str, doc_id: str, name: str) -> tuple[bytes, str]:
        """The bytes and content type of one attachment."""
        _, headers, body = await self.request(
            "GET",
            f"/{quote_db(db)}/{quote_doc(doc_id)}/{quote(name, safe='')}",
            headers={"Accept": "*/*"},
            raw=True,
        )
        return bytes(body), headers.get("Content-Type", "application/octet-stream")

    @contextlib.asynccontextmanager
    async def open_attachment(self, db: str, doc_id: str, name: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """The bytes of one attachment as they arrive (not held in memory): the answer's
        status is checked on entry (NotFound, Unavailable …); a store failure while
        reading raises :class:`Unavailable` from the iteration."""
        path = f"/{quote_db(db)}/{quote_doc(doc_id)}/{quote(name, safe='')}"
        # identity: the bytes as stored, so their count is the stub's ``length``
        headers = {"Accept": "*/*", "Accept-Encoding": "identity"}
        async with contextlib.AsyncExitStack() as stack:
            response: aiohttp.ClientResponse | None = None
            failure: BaseException | None = None
            for node in self._in_order():
                session = self._session(node)
                try:
                    response = await stack.enter_async_context(
                        session.get(URL(node.url + path, encoded=True), headers=headers))
                except UNREACHABLE as error:
                    self._unreachable(node, session, error)
                    failure = error
                    continue
                except RuntimeError as error:
                    if not self._closed:
                        raise
                    raise Unavailable(str(error)) from None
                self._answered(node)
                break
            if response is None:
                raise Unavailable(str(failure) or type(failure).__name__ if failure else "no CouchDB node answered")
            try:
                if response.status >= 400:
                    raise translate(response.status, _reason(await response.read()) or response.reason or "", path)
            except UNREACHABLE as error:
                raise Unavailable(str(error) or type(error).__name__) from None
            answer = response

            async def chunks() -> AsyncIterator[bytes]:
                try:
                    async for chunk in answer.content.iter_any():
                        yield chunk
                except UNREACHABLE as error:
                    raise Unavailable(str(error) or type(error).__name__) from None

            yield chunks()

    async def put_attachment(
        self, db: str, doc_id: str, rev: str, name: str, data: bytes, content_type: str
    ) -> str:
        """Store an attachment with the standalone attachment API; returns the new rev."""
        params: dict[str, QueryValue] = {"rev": rev, **await self._every_copy(db)}
        status, _, body = await self.request(
            "PUT",
            f"/{quote_db(db)}/{quote_doc(doc_id)}/{quote(name, safe='')}",
            params=params,
            data=data,
            headers={"Content-Type": content_type},
        )
        if status == 202:
            await self._settle(db, doc_id, str(body["rev"]))
        return str(body["rev"])


def _in_order_of(docs: Sequence[dict[str, Any]], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``_bulk_docs`` results matched to ``docs`` by id, in the order of ``docs``.
    pouchdb-server answers updates of existing documents in the order it finished them,
    not in the order sent (Apache CouchDB keeps the order): taken by position, a document
    would get another one's revision."""
    by_id: dict[Any, list[dict[str, Any]]] = {}
    for result in results:
        by_id.setdefault(result.get("id"), []).append(result)
    ordered: list[dict[str, Any]] = []
    for doc in docs:
        same = by_id.get(doc.get("_id"))
        if not same:
            raise StoreFault("unexpected_response", f"_bulk_docs answered nothing for {doc.get('_id')!r}")
        ordered.append(same.pop(0))
    return ordered


def _document(body: bytes) -> dict[str, Any] | Exception:
    """A document answer, decoded."""
    try:
        doc = json.loads(body)
    except ValueError as error:
        return StoreFault("unexpected_response", str(error))
    return doc if isinstance(doc, dict) else StoreFault("unexpected_response", "document is not an object")


def _reason(body: bytes) -> str | None:
    """CouchDB's ``reason`` of an error answer, when it has one."""
    with contextlib.suppress(ValueError):
        decoded = json.loads(body)
        if isinstance(decoded, dict) and isinstance(decoded.get("reason"), str):
            return str(decoded["reason"])
    return None


def translate(status: int, reason: str, path: str) -> Exception:
    """One table from CouchDB's answer to the storage errors."""
    if status == 404:
        return NotFound(path, reason)
    if status in (409, 412):
        return Conflict(path, reason)
    if status in (401, 403):
        return StoreFault("store_unauthorized", reason)
    if status in (500, 502, 503, 504) and "timeout" in reason.lower():
        return Unavailable(reason)
    if status in (502, 503, 504):
        return Unavailable(reason)
    return StoreFault(f"store_{status}", reason)
