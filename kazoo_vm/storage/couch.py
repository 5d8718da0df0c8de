"""The one place that sends requests to CouchDB.

The connection (session, credentials, timeouts) is an ``aiocouch.CouchDB``. Its
request and document-level APIs are bypassed on purpose: it builds ``_all_docs``/``_bulk_docs``
URLs without quoting slash-named databases (``account/ab/cd/...``), decodes JSON only
when the server labels it ``application/json`` (pouchdb-server does not unless asked),
caches documents in a way that hides revisions, and decodes every answer twice. Every
request therefore goes straight through its aiohttp session with the database name
quoted here, ``Accept: application/json`` always sent, the body decoded once, and errors
translated once into :mod:`.errors`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import io
import json
import weakref
from collections.abc import AsyncIterator, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

import aiohttp
from aiocouch import CouchDB
from yarl import URL

from .coalesce import Coalescer
from .errors import Conflict, NotFound, StorageError, StoreFault, Unavailable

JSON_HEADERS = {"Accept": "application/json"}
# Requests resent once when a pooled connection turns out closed before any answer.
# Writes are not: a PUT or DELETE the store applied before the connection broke would
# be answered 409 on its replay, so a failed write is reported (503) for the client to
# resend instead.
REPLAYABLE = frozenset({"GET", "HEAD"})
LARGE_BODY = 256 * 1024
# What the client library raises when the store cannot be reached or stops answering.
UNREACHABLE = (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)
APACHE = "The Apache Software Foundation"  # the ``vendor`` of Apache CouchDB's welcome

Json = Any
QueryValue = str | int | bool | float | None | list[Any] | dict[str, Any]

# ``error`` of a ``_bulk_docs`` result → the status a lone PUT would have answered.
BULK_ERRORS = {"conflict": 409, "forbidden": 403, "unauthorized": 401, "not_found": 404}
# A ``_bulk_docs`` refused before anything was written (one illegal id or too large a
# body refuses the whole request on Apache CouchDB): its documents are sent one by one.
REFUSED_WHOLE = frozenset({"store_400", "store_413"})
# Seconds between looks for a database whose create was answered 500 (see create_db).
CREATE_RACE_PAUSES = (0.05, 0.1, 0.2, 0.3, 0.4)
# Documents written or read alone, never in a group: design documents (each is checked
# against the files in ``couch_views/``) and local documents (no ``_all_docs`` rows).
UNGROUPED = ("_design/", "_local/")

# View query parameters whose values CouchDB expects JSON-encoded.
JSON_PARAMS = frozenset({"key", "keys", "startkey", "endkey", "start_key", "end_key"})


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

    def follows(self) -> dict[str, Any]:
        """``_attachments`` announcing the bytes as the next multipart/related part."""
        return {self.name: {"content_type": self.content_type, "length": len(self.data), "follows": True}}

    def stub(self, *, digest: bool) -> dict[str, Any]:
        """``_attachments`` as the store keeps them once written (pouchdb-server matches a
        stub sent back by its digest, Apache CouchDB by name)."""
        kept: dict[str, Any] = {"content_type": self.content_type, "length": len(self.data), "stub": True}
        if digest:
            kept["digest"] = "md5-" + base64.b64encode(hashlib.md5(self.data).digest()).decode()
        return {self.name: kept}


@dataclass(frozen=True)
class CouchEndpoint:
    """A server URL split into the address and the credentials it carries."""

    url: str
    user: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> CouchEndpoint:
        parts = urlsplit(url.rstrip("/"))
        host = parts.hostname or "127.0.0.1"
        netloc = f"[{host}]" if ":" in host else host
        if parts.port:
            netloc += f":{parts.port}"
        clean = urlunsplit((parts.scheme or "http", netloc, parts.path, "", ""))
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        return cls(url=clean, user=user, password=password)


class Couch:
    """A CouchDB server. Methods raise :class:`NotFound`, :class:`Conflict`,
    :class:`Unavailable` or :class:`StoreFault`, never a client library error."""

    def __init__(self, url: str, *, timeout: float = 30.0, connect_timeout: float = 3.0) -> None:
        self.endpoint = CouchEndpoint.parse(url)
        # ``connect`` would also count the wait for a free pooled connection: under many
        # concurrent requests that wait is load, not an unreachable CouchDB, so only the
        # socket connect itself is bounded.
        client_timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=connect_timeout, sock_read=timeout
        )
        self._couchdb = CouchDB(
            self.endpoint.url,
            user=self.endpoint.user,
            password=self.endpoint.password,
            timeout=client_timeout,
        )
        # Its session (credentials, timeouts, connection pool) sends every request.
        self._session: aiohttp.ClientSession = self._couchdb._server._http_session
        # aiohttp replays PUT and DELETE too (HTTP calls them idempotent; with CouchDB's
        # revisions they are not): replays are decided in ``request``.
        self._session._retry_connection = False
        # One write at a time per document from this process: racing requests of one
        # process then meet as ordinary 409s (pouchdb-server can crash on two identical
        # concurrent edits of a document).
        self._writing: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()
        self._binary_parts: bool | None = None  # learnt from the server's welcome
        # Concurrent document reads of one database (keyed with ``conflicts``) and
        # document writes to one database go to CouchDB together (see .coalesce).
        self._reads: Coalescer[str, dict[str, Any]] = Coalescer(self._read_group)
        self._writes: Coalescer[dict[str, Any], str] = Coalescer(self._write_group)

    async def close(self) -> None:
        await self._reads.close()
        await self._writes.close()
        await self._couchdb.close()

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
        resent on a connection found closed (by default GET and HEAD are)."""
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
        target = self.endpoint.url + path
        query = encode_params(params) if params else None
        if query:
            target += "?" + urlencode(query, safe="", quote_via=quote)
        url = URL(target, encoded=True)
        try:
            try:
                status, response_headers, body, reason = await self._send(method, url, kwargs)
            except aiohttp.ServerDisconnectedError:
                # A pooled connection the store (or a proxy) had closed: drop the idle ones
                # so the next requests connect afresh; resend only what is safe to resend.
                self._drop_idle_connections()
                if self._session.closed or not (method in REPLAYABLE if replayable is None else replayable):
                    raise  # closed by close(), or not safe to resend
                status, response_headers, body, reason = await self._send(method, url, kwargs)
        except UNREACHABLE as error:
            raise Unavailable(str(error) or type(error).__name__) from None
        except (aiohttp.ClientError, ValueError) as error:
            raise StoreFault("unexpected_response", str(error)) from None
        if status >= 400:
            raise translate(status, _reason(body) or reason, path)
        if raw:
            return status, response_headers, body
        try:
            decoded = json.loads(body) if body.strip() else None
        except ValueError as error:
            raise StoreFault("unexpected_response", str(error)) from None
        return status, response_headers, decoded

    async def _send(self, method: str, url: URL,
                    kwargs: dict[str, Any]) -> tuple[int, Mapping[str, str], bytes, str]:
        if isinstance(kwargs.get("data"), io.BytesIO):
            kwargs["data"].seek(0)
        async with self._session.request(method, url, **kwargs) as response:
            return response.status, response.headers, await response.read(), response.reason or ""

    def _drop_idle_connections(self) -> None:
        """Close the pooled idle connections (aiohttp has no public call for it)."""
        connector = self._session.connector
        idle = getattr(connector, "_conns", None)
        if not isinstance(idle, dict):
            return
        for connections in list(idle.values()):
            for protocol, _since in list(connections):
                protocol.close()
        idle.clear()

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

    async def create_db(self, db: str) -> bool:
        """Create ``db``; returns False when it existed already.

        Concurrent creates of one name are answered 412 but the first, except that Apache
        CouchDB under load has answered 500 to some of them (17 of 25 first messages of a
        new month at once, once in the test suite's runs): a 500 counts as "existed"
        when the database is there within about a second."""
        try:
            await self.request("PUT", f"/{quote_db(db)}")
        except Conflict:  # 412 file_exists
            return False
        except StoreFault:
            for pause in CREATE_RACE_PAUSES:
                if await self.db_exists(db):
                    return False
                await asyncio.sleep(pause)
            raise
        return True

    async def delete_db(self, db: str) -> None:
        with contextlib.suppress(NotFound):
            await self.request("DELETE", f"/{quote_db(db)}")

    # -- documents -----------------------------------------------------------------

    async def get_doc(self, db: str, doc_id: str, *, conflicts: bool = False) -> dict[str, Any]:
        """The document (with ``_conflicts`` when asked). Concurrent reads of one
        database are sent together: see :meth:`_read_group`."""
        if doc_id.startswith(UNGROUPED):
            (doc,) = await self._read_group((db, conflicts), [doc_id])
        else:
            doc = await self._reads.submit((db, conflicts), doc_id)
        if isinstance(doc, Exception):
            raise doc
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
        with (``_conflicts``, brought in by replication) are deleted once the write is
        in: the revision CouchDB chose as winner, now updated, is the one that stays.

        With ``attachment``, it replaces the document's attachments in the same write
        (one revision, never a moment without audio): as a binary part of a
        multipart/related body on Apache CouchDB, base64 in the JSON elsewhere
        (pouchdb-server crashes on multipart/related). ``doc['_attachments']`` then
        holds its stub, whether the write succeeded or not."""
        losers = doc.pop("_conflicts", None)
        path = f"/{quote_db(db)}/{quote_doc(doc['_id'])}"
        binary = attachment is not None and await self._takes_binary_parts()
        try:
            async with self._write_lock(db, doc["_id"]):
                if attachment is None:
                    body = {"rev": await self._put_json(db, doc)}
                elif binary:
                    with aiohttp.MultipartWriter("related") as parts:
                        parts.append_json({**doc, "_attachments": attachment.follows()})
                        data = attachment.data
                        parts.append(io.BytesIO(data) if len(data) > LARGE_BODY else data,
                                     {"Content-Type": attachment.content_type})
                    _, _, body = await self.request("PUT", path, data=parts)
                else:
                    _, _, body = await self.request("PUT", path,
                                                    json_body={**doc, "_attachments": attachment.inline()})
        finally:
            if attachment is not None:
                doc["_attachments"] = attachment.stub(digest=not binary)
        doc["_rev"] = body["rev"]
        if isinstance(losers, list) and losers:
            await self._delete_revisions(db, [(doc["_id"], rev) for rev in losers if isinstance(rev, str)])
        return str(body["rev"])

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
        """Documents of one database: a lone one with ``PUT``, several with one
        ``_bulk_docs`` (each document still succeeds or fails on its own, with the error
        a ``PUT`` of it would have had). A group refused as a whole before any write
        (``REFUSED_WHOLE``) is sent again one document at a time."""
        db = str(key)
        if len(docs) == 1:
            doc = docs[0]
            try:
                _, _, body = await self.request("PUT", f"/{quote_db(db)}/{quote_doc(doc['_id'])}", json_body=doc)
                return [str(body["rev"])]
            except StorageError as error:
                return [error]
            except (KeyError, TypeError):
                return [StoreFault("unexpected_response", "a write answered without rev")]
        try:
            answers = await self.bulk_docs(db, docs)
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
            revs.append(translate(BULK_ERRORS.get(code, 500), reason,
                                  f"/{quote_db(db)}/{quote_doc(doc['_id'])}"))
        return revs

    async def _takes_binary_parts(self) -> bool:
        """Whether the server is Apache CouchDB (asked once)."""
        if self._binary_parts is None:
            welcome = await self.info()
            vendor = welcome.get("vendor") if isinstance(welcome, dict) else None
            self._binary_parts = isinstance(vendor, dict) and vendor.get("name") == APACHE
        return self._binary_parts

    async def _delete_revisions(self, db: str, revisions: list[tuple[str, str]]) -> None:
        """Delete losing revisions (best effort: a later write tries again)."""
        if not revisions:
            return
        deletions = [{"_id": doc_id, "_rev": rev, "_deleted": True} for doc_id, rev in revisions]
        with contextlib.suppress(NotFound, Conflict, StoreFault):
            await self.request("POST", f"/{quote_db(db)}/_bulk_docs", json_body={"docs": deletions})

    async def delete_doc(self, db: str, doc_id: str, rev: str) -> None:
        async with self._write_lock(db, doc_id):
            await self.request("DELETE", f"/{quote_db(db)}/{quote_doc(doc_id)}", params={"rev": rev})

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
        Conflicting revisions the documents were read with are deleted afterwards for
        the documents that were written (see :meth:`put_doc`)."""
        losers = [(doc.get("_id"), doc.pop("_conflicts", None)) for doc in docs]
        _, _, body = await self.request(
            "POST", f"/{quote_db(db)}/_bulk_docs", json_body={"docs": list(docs)}
        )
        if not isinstance(body, list) or not all(isinstance(result, dict) for result in body):
            raise StoreFault("unexpected_response", "_bulk_docs answered no list of results")
        written = {result.get("id") for result in body if "error" not in result}
        await self._delete_revisions(db, [(str(doc_id), rev) for doc_id, revs in losers
                                          if doc_id in written and isinstance(revs, list)
                                          for rev in revs if isinstance(rev, str)])
        return list(body)

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
        url = URL(self.endpoint.url + path, encoded=True)
        # identity: the bytes as stored, so their count is the stub's ``length``
        headers = {"Accept": "*/*", "Accept-Encoding": "identity"}
        async with contextlib.AsyncExitStack() as stack:
            try:
                try:
                    response = await stack.enter_async_context(self._session.get(url, headers=headers))
                except aiohttp.ServerDisconnectedError:
                    self._drop_idle_connections()
                    response = await stack.enter_async_context(self._session.get(url, headers=headers))
                if response.status >= 400:
                    raise translate(response.status, _reason(await response.read()) or response.reason or "", path)
            except UNREACHABLE as error:
                raise Unavailable(str(error) or type(error).__name__) from None

            async def chunks() -> AsyncIterator[bytes]:
                try:
                    async for chunk in response.content.iter_any():
                        yield chunk
                except UNREACHABLE as error:
                    raise Unavailable(str(error) or type(error).__name__) from None

            yield chunks()

    async def put_attachment(
        self, db: str, doc_id: str, rev: str, name: str, data: bytes, content_type: str
    ) -> str:
        """Store an attachment with the standalone attachment API; returns the new rev."""
        _, _, body = await self.request(
            "PUT",
            f"/{quote_db(db)}/{quote_doc(doc_id)}/{quote(name, safe='')}",
            params={"rev": rev},
            data=data,
            headers={"Content-Type": content_type},
        )
        return str(body["rev"])


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
