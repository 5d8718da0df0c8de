"""Voicemail messages: ``/vmboxes/{B}/messages…`` and ``/vmboxes/messages`` (Kazoo E7–E17)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from aiohttp import web

from .. import appkeys
from ..auth.access import ACCOUNT
from ..errors import BadIdentifier, DatastoreConflict, ValidationError, from_storage, validation_error
from ..events import CROSSBAR_ACTION, BoxesChanged, NoticeName, VoicemailNotice
from ..http import envelope
from ..http.listing import listing_params, page_envelope
from ..http.payload import Payload, UploadedFile, read_upload
from ..http.sending import send_body
from ..kazoo import audio_length, box_message, filters, naming
from ..kazoo.documents import as_dict, gregorian_now, stamp
from ..kazoo.start_key import StartKey
from ..notify.worker import notify_of, schedule_if_wanted
from ..storage import legacy
from ..storage.errors import Conflict, NotFound, StorageError, Unavailable
from ..storage.messages import Audio, AudioStream, Located, window
from ..storage.paging import page_in_memory
from .common import MAX_GREGORIAN, MIN_GREGORIAN, author, config, location, payload, services, time_window

SCHEMA = "vm_message_metadata"
EMPTY_SOURCE = "empty source_id is specified. please set a single or a list of source_ids."
NO_MESSAGES = "No array of message ids are specified"
NO_AUDIO = "voicemail message does not have any audio file"
RETENTION_ERROR = "cannot make changes to messages prior to retention duration"
TRANSFER_CONCURRENCY = 8


# -- request pieces --------------------------------------------------------------------

def _ids(request: web.Request) -> tuple[str, str]:
    account_id, box_id = request.match_info["account_id"], request.match_info["vmbox_id"]
    if not naming.is_vmbox_id(box_id):
        raise BadIdentifier(box_id)
    return account_id, box_id


def _message_id(request: web.Request) -> str:
    """A MODB message id (``YYYYMM-<32 hex>``) or a legacy one (32 hex)."""
    message_id = request.match_info["message_id"]
    if is_legacy(message_id):
        return message_id
    if not naming.MODB_MESSAGE_ID.match(message_id):
        raise BadIdentifier(message_id)
    return message_id


def is_legacy(message_id: str) -> bool:
    return bool(naming.LEGACY_MESSAGE_ID.match(message_id))


def _realm(request: web.Request) -> str:
    realm = request[ACCOUNT].get("realm")
    return realm if isinstance(realm, str) and realm else "nodomain"


def _timezone(request: web.Request, box: dict[str, Any]) -> Any:
    tz = box.get("timezone")
    if box_message.zone(tz) is not None:
        return tz
    return request[ACCOUNT].get("timezone") or box_message.DEFAULT_TIMEZONE


def _cutoff(request: web.Request, now: int) -> int:
    return now - config(request).retention_seconds


def _folder_choice(request: web.Request, body: Payload) -> str | None:
    """The first of data.folder, ?folder=, envelope folder that is given. A value given
    that names no folder is a 400 (Kazoo ignores it: a typo then files a message as
    ``saved``, or deletes every message of the box)."""
    given = [value for value in (body.data.get("folder") if isinstance(body.data, dict) else None,
                                 request.query.get("folder"), body.envelope.get("folder")) if value is not None]
    for value in given:
        if value not in box_message.FOLDERS:
            raise validation_error("folder", "enum", "Value not found in enumerated list of values",
                                   target=list(box_message.FOLDERS), value=value)
    return str(given[0]) if given else None


def _result(succeeded: list[str], failed: dict[str, str]) -> dict[str, Any]:
    """Kazoo's bulk result; empty keys omitted."""
    result: dict[str, Any] = {}
    if succeeded:
        result["succeeded"] = succeeded
    if failed:
        result["failed"] = failed
    return result


def _retention_error(message_id: str, cutoff: int) -> ValidationError:
    return validation_error(message_id, "date_range", RETENTION_ERROR, cause=cutoff)


async def _box(request: web.Request, account_id: str, box_id: str, *, deleted_ok: bool = False,
               cached: bool = False) -> dict[str, Any]:
    try:
        return await services(request).vmboxes.fetch(account_id, box_id, deleted_ok=deleted_ok, cached=cached)
    except NotFound:
        raise BadIdentifier(box_id) from None


async def _message(request: web.Request, account_id: str, box_id: str, message_id: str) -> Located:
    """The message, if it is a voicemail message of this box (one without
    ``source_id`` belongs to every box, as in Kazoo) that was not deleted."""
    try:
        db, doc = await services(request).messages.fetch(account_id, message_id)
    except NotFound:
        raise BadIdentifier(message_id) from None
    if not box_message.is_in_box(doc, box_id):
        raise BadIdentifier(message_id)
    return db, doc


async def _legacy_item(request: web.Request, account_id: str, box_id: str,
                       media_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    box = await _box(request, account_id, box_id)
    item = legacy.find(box, media_id)
    if item is None:
        raise BadIdentifier(media_id)
    return box, item


async def _changeable(request: web.Request, account_id: str, box_id: str, message_id: str, now: int) -> Located:
    """The message a change request acts on: a legacy one is first migrated into its
    MODB (refused with 400 ``date_range`` when older than the retention window)."""
    if not is_legacy(message_id):
        located = await _message(request, account_id, box_id, message_id)
        cutoff = _cutoff(request, now)
        if box_message.is_prior_to_retention(located[1], cutoff):
            raise _retention_error(message_id, cutoff)
        return located
    box, item = await _legacy_item(request, account_id, box_id, message_id)
    cutoff = _cutoff(request, now)
    if legacy.item_time(item, box) < cutoff:
        raise _retention_error(message_id, cutoff)
    return await services(request).legacy.migrate_one(account_id, box, message_id, _realm(request),
                                                      _timezone(request, box))


def _stamped(request: web.Request, doc: dict[str, Any], account_id: str, db: str, now: int) -> dict[str, Any]:
    return stamp(doc, account_id=account_id, account_db=naming.encoded_db(db), pvt_type=box_message.PVT_TYPE,
                 author=author(request), now=now)


async def _save(request: web.Request, db: str, doc: dict[str, Any]) -> dict[str, Any]:
    try:
        return await services(request).messages.save(db, doc)
    except Conflict:
        raise DatastoreConflict() from None


# -- listings --------------------------------------------------------------------------

async def _list(request: web.Request, box_id: str | None) -> web.Response:
    account_id = request.match_info["account_id"]
    body = await payload(request)
    now = gregorian_now()
    start, end = time_window(request, body, now, default_range=config(request).retention_seconds)
    params = listing_params(request.query, body, config(request).page_size)
    keep = filters.build(request.query, prefix="metadata.", with_ranges=False)
    storage = services(request)
    legacy_rows = [row for row in await storage.legacy.rows(account_id, start, end)
                   if box_id is None or (row.get("value") or {}).get("source_id") == box_id]
    if not legacy_rows:
        page = await storage.messages.listing(account_id, box_id, start, end, page_size=params.page_size,
                                              start=params.start, descending=params.descending, keep_doc=keep)
    else:
        every = await storage.messages.listing(account_id, box_id, start, end, page_size=None,
                                               descending=params.descending, keep_doc=keep)
        migrated = {row["id"].partition("-")[2] for row in every.rows}
        rows = every.rows + [row for row in _legacy_view_rows(legacy_rows, box_id, keep) if row["id"] not in migrated]
        page = page_in_memory(rows, page_size=params.page_size, start=params.start, descending=params.descending)
    cutoff = _cutoff(request, now)
    data: list[Any] = []
    for row in page.rows:
        summary = dict(row["value"]) if isinstance(row.get("value"), dict) else {}
        stamp_ = summary.get("timestamp")
        if isinstance(stamp_, int | float) and stamp_ < cutoff:
            summary = box_message.enforce_retention(summary)
        if box_id is None:
            key = row.get("key")
            owner = key[1] if isinstance(key, list) and len(key) > 1 else None
            data.append({str(owner): summary})
        else:
            data.append(summary)
    computed = StartKey(key=[end, {}] if box_id is None else [box_id, end, {}])
    extra = page_envelope(params, len(data), page.next_start, always_start_key=True, computed_start=computed)
    return envelope.success(request, data, extra=extra)


def _legacy_view_rows(rows: list[dict[str, Any]], box_id: str | None,
                      keep: filters.Predicate | None) -> list[dict[str, Any]]:
    """Legacy items as rows of the MODB listing views."""
    converted = []
    for row in rows:
        value = as_dict(row.get("value"))
        metadata = as_dict(value.get("metadata"))
        if keep is not None and not keep({"metadata": metadata}):
            continue
        owner, stamp_ = value.get("source_id"), row.get("key")
        summary = {key: metadata[key] for key in box_message.SUMMARY_KEYS if key in metadata}
        summary.setdefault("folder", "new")
        converted.append({"id": row["id"] if "media_id" not in metadata else metadata["media_id"],
                          "key": [owner, stamp_] if box_id is not None else [stamp_, owner], "value": summary})
    return converted


async def list_box_messages(request: web.Request) -> web.Response:
    """E8. An unknown (or deleted) box is a 404 ``bad_identifier``, as for the box itself
    (Kazoo lists nothing: a mistyped id would look like an empty box)."""
    account_id, box_id = _ids(request)
    await _box(request, account_id, box_id)
    return await _list(request, box_id)


async def list_account_messages(request: web.Request) -> web.Response:
    """E7: every box's messages, rows ``{box_id: summary}``."""
    return await _list(request, None)


# -- create and audio ------------------------------------------------------------------

def _one_file(files: list[UploadedFile], *, required: bool) -> UploadedFile | None:
    if len(files) > 1:
        raise validation_error("file", "maxItems", "Please provide a single media file", target=1)
    if not files and required:
        raise validation_error("file", "required", "Please provide a media file")
    return files[0] if files else None


def _audio(request: web.Request, body: Payload, upload: UploadedFile, now: int) -> Audio:
    filename = body.setting(request, "filename")
    return Audio(box_message.attachment_name(filename, upload.content_type, now), upload.content_type, upload.data)


async def _with_audio_length(doc: dict[str, Any], audio: Audio) -> dict[str, Any]:
    """``doc`` with the length of its new audio (parsed on a thread: a forged file can
    take mutagen tens of milliseconds)."""
    measured = await asyncio.to_thread(audio_length.duration_ms, audio.data, audio.content_type)
    return box_message.with_audio_length(doc, measured)


async def create_message(request: web.Request) -> web.Response:
    """E9: JSON metadata, multipart (JSON part + audio part) or a raw audio body."""
    account_id, box_id = _ids(request)
    body, files = await read_upload(request, config(request).max_upload_size)
    upload = _one_file(files, required=False)
    if not isinstance(body.data, dict):
        raise validation_error("data", "type", "Value did not match type(s): object", target="object",
                               value=body.data)
    metadata, errors = request.app[appkeys.SCHEMAS].validate(SCHEMA, body.data)
    timestamp = metadata.get("timestamp")
    if isinstance(timestamp, int) and not MIN_GREGORIAN <= timestamp <= MAX_GREGORIAN:
        errors.setdefault("timestamp", {})["minimum" if timestamp < MIN_GREGORIAN else "maximum"] = {
            "message": "Value is out of range", "target": MIN_GREGORIAN if timestamp < MIN_GREGORIAN else MAX_GREGORIAN,
            "value": timestamp}
    if errors:
        raise ValidationError(errors)
    box = await _box(request, account_id, box_id, cached=True)
    now = gregorian_now()
    named = _named(request)
    doc = box_message.new_message(box=box, request=metadata, realm=_realm(request),
                                  timezone_name=_timezone(request, box),
                                  privacy_number=config(request).default_privacy_number, now=now, named=named)
    audio = None if upload is None else _audio(request, body, upload, now)
    if audio is not None and "length" not in metadata:  # a length the client gives wins
        doc = await _with_audio_length(doc, audio)
    _stamped(request, doc, account_id, naming.modb_of_message(account_id, doc["_id"]) or "", now)
    if audio is not None:
        await schedule_if_wanted(config(request), services(request), account_id, box, doc)
    try:
        db, doc = await services(request).messages.create(account_id, doc, audio)
    except Conflict:
        if named is None:
            raise DatastoreConflict() from None
        doc = await _made_before(request, account_id, box_id, doc["_id"])
    else:
        if audio is not None:
            _new_voicemail(request, account_id, box, doc)
    if audio is not None:  # crossbar sends no MWI for a message without audio
        _mwi(request, account_id, box_id)
    return envelope.success(request, box_message.metadata_of(doc), status=201, revision=doc.get("_rev"),
                            headers={"Location": location(request, doc["_id"])})


def _named(request: web.Request) -> str | None:
    """The client's own id for this request (``X-Request-ID``, when kazoo_vm took it as
    the request id): a resend of the request carries it again."""
    given = request.headers.get("X-Request-ID")
    return given if given is not None and given == request[envelope.REQUEST_ID] else None


async def _made_before(request: web.Request, account_id: str, box_id: str, message_id: str) -> dict[str, Any]:
    """The message a resent create (same ``X-Request-ID``) made the first time."""
    try:
        _db, doc = await services(request).messages.fetch(account_id, message_id)
    except NotFound:  # deleted since (or never a message): the id stays taken
        raise DatastoreConflict() from None
    if doc.get("source_id") != box_id:
        raise DatastoreConflict()
    return doc


async def get_audio(request: web.Request) -> web.StreamResponse:
    """E16: the audio bytes, with Range support done here (whatever the store does)."""
    account_id, box_id = _ids(request)
    message_id = _message_id(request)
    if is_legacy(message_id):
        box, item = await _legacy_item(request, account_id, box_id, message_id)
        audio = await services(request).legacy.audio(account_id, message_id)
        if audio is None:
            raise BadIdentifier(NO_AUDIO)
        pseudo = {"metadata": {**item, "timestamp": legacy.item_time(item, box)}}
        return await _send_ranged(request, AudioStream.of(audio),
                                  box_message.download_name(pseudo, audio.name, _timezone(request, box)))
    # Independent reads: the message and its box (for the file name's time zone) at once;
    # a missing message is reported before a missing box, as when read one after the other.
    located, box = await asyncio.gather(_message(request, account_id, box_id, message_id),
                                        _box(request, account_id, box_id, deleted_ok=True),
                                        return_exceptions=True)
    if isinstance(located, BaseException):
        raise located
    if isinstance(box, BaseException):
        raise box
    db, doc = located
    storage = services(request).messages
    async with storage.open_audio(db, doc) as audio:
        if audio is None:
            raise BadIdentifier(NO_AUDIO)
        wanted = "saved" if request.query.get("folder") == "saved" else None
        current = box_message.metadata_of(doc).get("folder")
        if wanted is not None and current != wanted or current is None:
            changed = box_message.apply_folder(doc, wanted or "new", soft_delete=False, now=gregorian_now())
            await _save(request, db, changed)
        filename = box_message.download_name(doc, audio.name, _timezone(request, box))
        return await _send_ranged(request, audio, filename)


async def _slice(first: bytes, rest: AsyncIterator[bytes], start: int, end: int) -> AsyncGenerator[bytes, None]:
    """Bytes ``start``…``end`` (inclusive) of the file whose chunks are ``first`` and ``rest``."""
    offset = 0  # of the next chunk in the file
    chunk = first
    while True:
        piece = chunk[max(start - offset, 0):max(end + 1 - offset, 0)]
        offset += len(chunk)
        if piece:
            yield piece
        if offset > end:
            return
        next_chunk = await anext(rest, None)
        if next_chunk is None:
            return
        chunk = next_chunk


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end) of a single ``bytes=S-E`` or ``bytes=S-`` range inside the file;
    None for anything else (the whole file is sent, as Kazoo does)."""
    if not header.startswith("bytes=") or "," in header or size == 0:
        return None
    first, _, last = header[len("bytes="):].strip().partition("-")
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    end = int(last) if last else size - 1
    if start > end or end >= size:
        return None
    return start, end


async def _send_ranged(request: web.Request, audio: AudioStream, filename: str) -> web.StreamResponse:
    """The audio (or the one byte range asked for) passed on as the store sends it."""
    size = audio.size
    headers = {"Content-Disposition": envelope.attachment_disposition(filename), "Accept-Ranges": "bytes"}
    span = _byte_range(request.headers.get("Range", ""), size)
    if span is None:
        status, start, end = 200, 0, size - 1
    else:  # also the whole file asked as a range (browsers' ``bytes=0-``): 206, as RFC 9110 says
        status, (start, end) = 206, span
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    # The first bytes are read before the answer starts: a store that fails now is a 503
    # envelope, not a broken download.
    chunks = aiter(audio.chunks)
    first = await anext(chunks, b"")
    response = web.StreamResponse(status=status, headers=headers)
    response.content_type = audio.content_type
    response.content_length = end + 1 - start
    response.headers["X-Request-ID"] = request[envelope.REQUEST_ID]
    envelope.add_cors(request, response)
    await response.prepare(request)
    return await send_body(request, response, _slice(first, chunks, start, end), "audio download")


async def put_audio(request: web.Request) -> web.Response:
    """E17: the upload replaces the message's audio."""
    account_id, box_id = _ids(request)
    message_id = _message_id(request)
    body, files = await read_upload(request, config(request).max_upload_size)
    upload = _one_file(files, required=True)
    assert upload is not None
    now = gregorian_now()
    db, doc = await _changeable(request, account_id, box_id, message_id, now)
    audio = _audio(request, body, upload, now)
    doc = await _with_audio_length(doc, audio)
    _stamped(request, doc, account_id, db, now)
    had_audio = bool(doc.get("_attachments") or doc.get("pvt_attachments"))
    box = None
    if not had_audio and "notify" not in as_dict(doc.get("metadata")):
        box = await _box(request, account_id, box_id, deleted_ok=True)
        await schedule_if_wanted(config(request), services(request), account_id, box, doc)
    try:
        await services(request).messages.put_audio(db, doc, audio)
    except Conflict:
        raise DatastoreConflict() from None
    if not had_audio:
        box = box or await _box(request, account_id, box_id, deleted_ok=True)
        _new_voicemail(request, account_id, box, doc)
    _mwi(request, account_id, box_id)
    return envelope.success(request, box_message.metadata_of(doc), status=201)


# -- one message -----------------------------------------------------------------------

async def get_message(request: web.Request) -> web.Response:
    """E13: metadata (+ transcription); a message without folder is filed as new."""
    account_id, box_id = _ids(request)
    message_id = _message_id(request)
    now = gregorian_now()
    if is_legacy(message_id):
        box, item = await _legacy_item(request, account_id, box_id, message_id)
        metadata = {**item, "timestamp": legacy.item_time(item, box)}
        metadata.setdefault("folder", "new")
        if metadata["timestamp"] < _cutoff(request, now):
            metadata = box_message.enforce_retention(metadata)
        return envelope.success(request, metadata)
    db, doc = await _message(request, account_id, box_id, message_id)
    if box_message.metadata_of(doc).get("folder") is None:
        doc = await _save(request, db, box_message.apply_folder(doc, "new", soft_delete=False, now=now))
    metadata = box_message.metadata_of(doc)
    if box_message.is_prior_to_retention(doc, _cutoff(request, now)):
        metadata = box_message.enforce_retention(metadata)
    return envelope.success(request, metadata)


def _source_ids(value: Any, *, bulk: bool = False) -> list[str] | str | None:
    """``source_id`` of a change: None (folder change), a box id (move) or a list (copy).
    An empty list is a no-op copy in the bulk form (Kazoo) and an error for one message."""
    if value is None:
        return None
    if bulk and value == []:
        return []
    if value == "" or value == [] or (isinstance(value, list) and "" in value):
        raise validation_error("source_id", "required", EMPTY_SOURCE)
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(dict.fromkeys(value))
    raise validation_error("source_id", "type", "Value did not match type(s): string,array",
                           target="string,array", value=value)


async def _destinations(request: web.Request, account_id: str, wanted: list[str]) -> list[dict[str, Any]]:
    """Every destination box, or 404 naming the first that does not exist."""
    for box_id in wanted:
        if not naming.is_vmbox_id(box_id):
            raise BadIdentifier(box_id)
    found = await services(request).vmboxes.fetch_many(account_id, wanted)
    for box_id in wanted:
        if box_id not in found:
            raise BadIdentifier(box_id)
    return [found[box_id] for box_id in wanted]


async def _transfer(request: web.Request, account_id: str, located: Located, destination: dict[str, Any],
                    *, move: bool, now: int) -> Located:
    db, doc = located
    if move:
        new_id = box_message.moved_id(now, doc["_id"], destination["_id"])
    elif (named := _named(request)) is not None:
        # A client that names its requests can resend a copy whose answer it lost.
        new_id = box_message.moved_id(now, f"{named}:{doc['_id']}", destination["_id"])
    else:
        new_id = box_message.message_id(now)
    modb = naming.modb_of_message(account_id, new_id) or ""
    copy = box_message.transferred(doc, new_id=new_id, destination=destination, realm=_realm(request),
                                   timezone_name=_timezone(request, destination), now=now)
    copy["pvt_previous_id"] = doc["_id"]
    _stamped(request, copy, account_id, modb, now)
    if move:
        return await services(request).moves.move(account_id, db, doc, copy)
    return await services(request).messages.copy(db, doc, copy, account_id)


async def change_message(request: web.Request) -> web.Response:
    """E14: folder change (default ``saved``), move (``source_id`` string) or copy (list)."""
    account_id, box_id = _ids(request)
    message_id = _message_id(request)
    body = await payload(request)
    data = body.data if isinstance(body.data, dict) else {}
    sources = _source_ids(data.get("source_id")) if "source_id" in data else None
    now = gregorian_now()
    if isinstance(sources, list | str):
        await _destinations(request, account_id, [sources] if isinstance(sources, str) else sources)
    located = await _changeable(request, account_id, box_id, message_id, now)
    if sources is None:
        folder = _folder_choice(request, body) or "saved"
        changed = box_message.apply_folder(located[1], folder, soft_delete=False, now=now)
        doc = await _save(request, located[0], _stamped(request, changed, account_id, located[0], now))
        _mwi(request, account_id, box_id)
        return envelope.success(request, box_message.metadata_of(doc))
    if isinstance(sources, str):
        (destination,) = await _destinations(request, account_id, [sources])
        _db, moved = await _transfer(request, account_id, located, destination, move=True, now=now)
        _mwi(request, account_id, box_id, destination["_id"])
        return envelope.success(request, box_message.metadata_of(moved))
    destinations = await _destinations(request, account_id, sources)
    succeeded, failed = await _copies(request, account_id, [located], destinations, now)
    _mwi(request, account_id, box_id, *(destination["_id"] for destination in destinations))
    return envelope.success(request, _result(succeeded, failed))


async def delete_message(request: web.Request) -> web.Response:
    """E15: soft delete (folder ``deleted`` + ``pvt_deleted``)."""
    account_id, box_id = _ids(request)
    message_id = _message_id(request)
    now = gregorian_now()
    db, doc = await _changeable(request, account_id, box_id, message_id, now)
    revision = doc["_rev"]
    deleted = _stamped(request, box_message.apply_folder(doc, "deleted", soft_delete=True, now=now),
                       account_id, db, now)
    await _save(request, db, deleted)
    _notice(request, "voicemail_deleted", account_id, await _box(request, account_id, box_id, deleted_ok=True),
            deleted, reason=CROSSBAR_ACTION)
    _mwi(request, account_id, box_id)
    return envelope.success(request, box_message.metadata_of(deleted), revision=revision)


# -- several messages ------------------------------------------------------------------

def _requested_ids(data: Any) -> list[str]:
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list) or not messages:
        raise validation_error("messages", "required", NO_MESSAGES)
    return list(dict.fromkeys(str(item) for item in messages))


async def _bounded(jobs: list[Any]) -> list[Any]:
    """Run coroutines with at most TRANSFER_CONCURRENCY at once; results or exceptions.
    Once the store is unreachable, jobs not yet started fail at once with that error
    instead of waiting out one timeout each."""
    gate = asyncio.Semaphore(TRANSFER_CONCURRENCY)
    outage: list[Unavailable] = []

    async def run(job: Any) -> Any:
        async with gate:
            if outage:
                job.close()
                raise outage[0]
            try:
                return await job
            except Unavailable as error:
                outage.append(error)
                raise

    return await asyncio.gather(*(run(job) for job in jobs), return_exceptions=True)


def _reason(error: BaseException) -> str:
    """A bulk ``failed`` reason, in Kazoo's words (as ``_bulk_docs`` reports them)."""
    if isinstance(error, Conflict):
        return "conflict"
    if isinstance(error, NotFound):
        return "not_found"
    if isinstance(error, StorageError):
        return str(from_storage(error).message)
    raise error


async def _copies(request: web.Request, account_id: str, sources: list[Located],
                  destinations: list[dict[str, Any]], now: int) -> tuple[list[str], dict[str, str]]:
    jobs = [(located, destination) for located in sources for destination in destinations]
    outcomes = await _bounded([_transfer(request, account_id, located, destination, move=False, now=now)
                               for located, destination in jobs])
    succeeded: list[str] = []
    failed: dict[str, str] = {}
    for (located, _destination), outcome in zip(jobs, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            failed[located[1]["_id"]] = _reason(outcome)
        else:
            succeeded.append(outcome[1]["_id"])
    return succeeded, failed


async def _box_messages(request: web.Request, account_id: str, box_id: str,
                        ids: list[str], now: int) -> tuple[list[Located], dict[str, str]]:
    """The requested ids that are this box's messages (others fail ``not_found``) and are
    inside retention (others fail ``prior_to_retention_duration``)."""
    valid = [message_id for message_id in ids if naming.MODB_MESSAGE_ID.match(message_id)]
    found = await services(request).messages.fetch_many(account_id, valid)
    cutoff = _cutoff(request, now)
    chosen: list[Located] = []
    failed: dict[str, str] = {}
    for message_id in ids:
        located = found.get(message_id)
        if located is None or not box_message.is_in_box(located[1], box_id):
            failed[message_id] = "not_found"
        elif box_message.is_prior_to_retention(located[1], cutoff):
            failed[message_id] = "prior_to_retention_duration"
        else:
            chosen.append(located)
    return chosen, failed


async def _migrate_listed(request: web.Request, account_id: str, box: dict[str, Any], ids: list[str],
                          now: int) -> tuple[list[str], dict[str, str]]:
    """``ids`` with the box's legacy messages migrated (their new ids in their place);
    legacy ids that cannot be migrated are reported failed."""
    result: list[str] = []
    failed: dict[str, str] = {}
    cutoff = _cutoff(request, now)
    migrated = await _migrated_before(request, account_id, box, [message_id for message_id in ids
                                                                 if is_legacy(message_id)], now)
    for message_id in ids:
        if not is_legacy(message_id):
            result.append(message_id)
            continue
        item = legacy.find(box, message_id)
        if item is None and message_id in migrated:
            result.append(migrated[message_id])  # a resent request: migrated the first time
        elif item is None:
            failed[message_id] = "not_found"
        elif legacy.item_time(item, box) < cutoff:
            failed[message_id] = "prior_to_retention_duration"
        else:
            _db, doc = await services(request).legacy.migrate_one(account_id, box, message_id, _realm(request),
                                                                 _timezone(request, box))
            box = await _box(request, account_id, box["_id"])
            result.append(doc["_id"])
    return result, failed


async def _migrated_before(request: web.Request, account_id: str, box: dict[str, Any], legacy_ids: list[str],
                           now: int) -> dict[str, str]:
    """``{legacy id: MODB id}`` of the legacy ids no longer in the box because they were
    migrated into it (``YYYYMM-<legacy id>`` in a MODB of the window)."""
    gone = [message_id for message_id in legacy_ids if legacy.find(box, message_id) is None]
    if not gone:
        return {}
    months = list(naming.months_between(*window(now, config(request).retention_seconds)))
    candidates = {f"{year:04d}{month:02d}-{message_id}": message_id for message_id in gone for year, month in months}
    found = await services(request).messages.fetch_many(account_id, candidates)
    return {candidates[new_id]: new_id for new_id, (_db, doc) in found.items() if doc.get("source_id") == box["_id"]}


async def bulk_change(request: web.Request) -> web.Response:
    """E10: folder change, move or copy of ``messages``; ``{succeeded, failed}``."""
    account_id, box_id = _ids(request)
    body = await payload(request)
    ids = _requested_ids(body.data)
    sources = _source_ids(body.data.get("source_id"), bulk=True) if "source_id" in body.data else None
    box = await _box(request, account_id, box_id)
    destinations = None
    if sources is not None:
        destinations = await _destinations(request, account_id, [sources] if isinstance(sources, str) else sources)
    now = gregorian_now()
    ids, legacy_failed = await _migrate_listed(request, account_id, box, ids, now)
    chosen, failed = await _box_messages(request, account_id, box_id, ids, now)
    failed.update(legacy_failed)
    if destinations is None:
        folder = _folder_choice(request, body) or "saved"
        changes = [(db, _stamped(request, box_message.apply_folder(doc, folder, soft_delete=False, now=now),
                                 account_id, db, now)) for db, doc in chosen]
        succeeded, save_failed = await services(request).messages.save_many(changes)
        _mwi(request, account_id, box_id)
        return envelope.success(request, _result(succeeded, {**failed, **save_failed}))
    if isinstance(sources, str):
        outcomes = await _bounded([_transfer(request, account_id, located, destinations[0], move=True, now=now)
                                   for located in chosen])
        succeeded = []
        for located, outcome in zip(chosen, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failed[located[1]["_id"]] = _reason(outcome)
            else:
                succeeded.append(outcome[1]["_id"])
        _mwi(request, account_id, box_id, destinations[0]["_id"])
        return envelope.success(request, _result(succeeded, failed))
    succeeded, copy_failed = await _copies(request, account_id, chosen, destinations, now)
    _mwi(request, account_id, box_id, *(destination["_id"] for destination in destinations))
    return envelope.success(request, _result(succeeded, {**failed, **copy_failed}))


async def bulk_delete(request: web.Request) -> web.Response:
    """E11: soft-delete the box's messages in the window: all, those of a folder, or the
    listed ids (listed ids that are not the box's are reported ``not_found``)."""
    account_id, box_id = _ids(request)
    body = await payload(request)
    now = gregorian_now()
    page = await services(request).messages.listing(account_id, box_id, *window(now, config(request).retention_seconds),
                                                    page_size=None)
    folders = {row["id"]: (row.get("value") or {}).get("folder") for row in page.rows}
    try:
        box: dict[str, Any] | None = await services(request).vmboxes.fetch(account_id, box_id)
    except NotFound:
        box = None
    cutoff = _cutoff(request, now)
    for item in legacy.items(box or {}):
        if legacy.item_time(item, box or {}) >= cutoff:
            folders[item["media_id"]] = item.get("folder") or "new"
    failed: dict[str, str] = {}
    listed = body.data.get("messages") if isinstance(body.data, dict) else None
    if listed is not None and not isinstance(listed, list):  # Kazoo: deletes every message
        raise validation_error("messages", "type", "Value did not match type(s): array", target="array",
                               value=listed)
    if isinstance(listed, list):
        wanted = list(dict.fromkeys(str(item) for item in listed))
        selected = [message_id for message_id in wanted if message_id in folders]
        failed = {message_id: "not_found" for message_id in wanted if message_id not in folders}
    else:
        folder = _folder_choice(request, body)
        selected = [message_id for message_id, current in folders.items() if folder is None or current == folder]
    if box is not None and any(is_legacy(message_id) for message_id in selected):
        selected, legacy_failed = await _migrate_listed(request, account_id, box, selected, now)
        failed.update(legacy_failed)
    by_db: dict[str, list[str]] = defaultdict(list)
    for message_id in selected:
        by_db[naming.modb_of_message(account_id, message_id) or ""].append(message_id)
    deleted: list[dict[str, Any]] = []
    succeeded, delete_failed = await services(request).messages.soft_delete(dict(by_db), now, deleted=deleted)
    for doc in deleted:
        _notice(request, "voicemail_deleted", account_id, box or {"_id": box_id}, doc, reason=CROSSBAR_ACTION)
    _mwi(request, account_id, box_id)
    return envelope.success(request, _result(succeeded, {**failed, **delete_failed}))


def _mwi(request: web.Request, account_id: str, *box_ids: str) -> None:
    """Crossbar would send these boxes' MWI now (once each, in this order)."""
    boxes = tuple(dict.fromkeys(str(box_id) for box_id in box_ids if box_id))
    if boxes:
        services(request).events.publish(BoxesChanged(account_id, boxes))


def _new_voicemail(request: web.Request, account_id: str, box: dict[str, Any], doc: dict[str, Any]) -> None:
    """``voicemail_new``; and ``voicemail_saved`` at once when no email is due (kvm's
    after-notify action is then ``nothing``; otherwise voicemail-to-email decides)."""
    _notice(request, "voicemail_new", account_id, box, doc)
    if notify_of(doc).get("status") != "pending":
        _notice(request, "voicemail_saved", account_id, box, doc)


def _notice(request: web.Request, name: NoticeName, account_id: str, box: dict[str, Any],
            message: dict[str, Any], *, reason: str | None = None) -> None:
    services(request).events.publish(VoicemailNotice(name, account_id, box, message, reason))
