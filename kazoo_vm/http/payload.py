"""Reading a request body into Kazoo's request envelope.

JSON bodies must be an object with ``data`` (an object or a list); an empty body is
``data: {}``. curl's default form content type carrying JSON text is read as JSON, as
Kazoo does. Top-level keys are normalised (lower case, ``-`` → ``_``).
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .. import appkeys
from ..errors import BodyTimeout, UnsupportedMediaType, ValidationError, max_size_error, validation_error

JSON_TYPES = frozenset({"application/json", "application/x-json", "text/json", "text/plain", ""})
FORM_TYPE = "application/x-www-form-urlencoded"
BODY: web.RequestKey[bytes] = web.RequestKey("body", bytes)


@dataclass
class Payload:
    """``data`` and the other envelope keys of a request."""

    data: Any = field(default_factory=dict)
    envelope: dict[str, Any] = field(default_factory=dict)

    def setting(self, request: web.Request, name: str) -> Any:
        """A request option as Kazoo looks it up: ``data``, then query, then envelope."""
        if isinstance(self.data, dict) and name in self.data:
            return self.data[name]
        if name in request.query:
            return request.query[name]
        return self.envelope.get(name)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, at most ``limit`` bytes (400 ``maxSize`` beyond)."""
    if BODY in request:
        return request[BODY]
    if request.content_length is not None and request.content_length > limit:
        raise max_size_error(limit)
    seconds = request.app[appkeys.CONFIG].body_timeout
    try:
        async with asyncio.timeout(seconds):
            body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise max_size_error(limit) from None
    except TimeoutError:
        raise BodyTimeout(seconds) from None
    if len(body) > limit:
        raise max_size_error(limit)
    request[BODY] = body
    return body


def _json_error(error: json.JSONDecodeError) -> ValidationError:
    return validation_error("json", "invalid", f"{error.msg} around {error.pos}", target="body")


def parse_envelope(body: bytes) -> Payload:
    """Decode a JSON request body into a :class:`Payload` (400 on anything else)."""
    if not body.strip():
        return Payload()
    try:
        decoded = json.loads(body)
    except json.JSONDecodeError as error:
        raise _json_error(error) from None
    except (UnicodeDecodeError, RecursionError, ValueError):
        raise validation_error("json", "invalid", "invalid JSON body", target="body") from None
    if not isinstance(decoded, dict):
        raise validation_error("data", "required", "Field is required but missing", value=decoded)
    envelope = {str(key).lower().replace("-", "_"): value for key, value in decoded.items()}
    if "data" not in envelope:
        raise validation_error("data", "required", "Field is required but missing", value="data")
    data = envelope.pop("data")
    if not isinstance(data, dict | list):
        raise validation_error("data", "type", "Value did not match type(s): object,array",
                               target="object,array", value=data)
    return Payload(data=data, envelope=envelope)


async def read_payload(request: web.Request, limit: int) -> Payload:
    """The JSON envelope of a request whose body is JSON (or JSON sent as a form)."""
    body = await read_body(request, limit)
    content_type = request.content_type.lower() if request.headers.get("Content-Type") else ""
    if content_type in JSON_TYPES:
        return parse_envelope(body)
    if content_type == FORM_TYPE:
        text = body.lstrip()
        if not text or text.startswith((b"{", b"[")):
            return parse_envelope(body)
        try:
            form = dict(parse_qsl(body.decode(), keep_blank_values=True))
        except UnicodeDecodeError:
            raise validation_error("json", "invalid", "invalid form body", target="body") from None
        return Payload(data=form)
    if not body.strip():
        return Payload()
    raise UnsupportedMediaType(content_type, sorted(JSON_TYPES - {""} | {FORM_TYPE}))


AUDIO_TYPES = frozenset({"application/octet-stream", "audio/x-wav", "audio/wav", "audio/wave", "audio/x-wave",
                         "audio/mpeg", "audio/mp3", "audio/mpeg3", "audio/x-mpeg", "audio/ogg", "audio/mp4",
                         "audio/webm", "audio/x-m4a"})
# Types that carry JSON only by convention (curl, no header): on an upload they must hold
# a JSON object, or the body is taken for what it is, neither JSON nor audio.
LOOSE_JSON_TYPES = frozenset({"text/plain", ""})
UPLOAD_TYPES = sorted(AUDIO_TYPES | {"audio/*", "multipart/form-data", "multipart/mixed", "application/json"})
MAX_PARTS = 8


def is_audio(content_type: str) -> bool:
    return content_type in AUDIO_TYPES or content_type.startswith("audio/")


def _not_an_upload(content_type: str) -> UnsupportedMediaType:
    return UnsupportedMediaType(content_type, UPLOAD_TYPES)


def _loose_json(content_type: str, body: bytes) -> Payload:
    """The envelope of a body sent as ``text/plain`` or with no type: JSON or 415."""
    text = body.lstrip()
    if text and not text.startswith(b"{"):
        raise _not_an_upload(content_type)
    return parse_envelope(body)


@dataclass(frozen=True)
class UploadedFile:
    content_type: str
    data: bytes


async def read_upload(request: web.Request, limit: int) -> tuple[Payload, list[UploadedFile]]:
    """The envelope and the uploaded files of a request that may carry audio: a JSON
    body, a raw audio body, or multipart (``mixed``/``form-data``) with one JSON part
    and file parts (their own Content-Type; ``Content-Transfer-Encoding: base64``
    decoded). Part file names are ignored, as in Kazoo."""
    content_type = request.content_type.lower() if request.headers.get("Content-Type") else ""
    if content_type.startswith("multipart/"):
        return await _read_multipart(request, limit)
    if is_audio(content_type):
        body = await read_body(request, limit)
        return Payload(), ([UploadedFile(content_type, body)] if body else [])
    if content_type in LOOSE_JSON_TYPES:
        return _loose_json(content_type, await read_body(request, limit)), []
    if content_type not in JSON_TYPES and content_type != FORM_TYPE:
        raise _not_an_upload(content_type)
    return await read_payload(request, limit), []


async def _read_multipart(request: web.Request, limit: int) -> tuple[Payload, list[UploadedFile]]:
    seconds = request.app[appkeys.CONFIG].body_timeout
    try:
        async with asyncio.timeout(seconds):
            return await _read_parts(request, limit)
    except TimeoutError:
        raise BodyTimeout(seconds) from None


async def _read_parts(request: web.Request, limit: int) -> tuple[Payload, list[UploadedFile]]:
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError):
        raise validation_error("multipart", "invalid", "malformed multipart body", target="body") from None
    envelope = Payload()
    files: list[UploadedFile] = []
    total = 0
    parts = 0
    try:
        while True:
            part = await reader.next()
            if part is None:
                break
            parts += 1
            if parts > MAX_PARTS:
                raise validation_error("file", "maxItems", "Please provide a single media file", target=1)
            data = await part.read(decode=False)  # type: ignore[union-attr]
            total += len(data)
            if total > limit:
                raise max_size_error(limit)
            headers = part.headers
            if headers.get("Content-Transfer-Encoding", "").lower() == "base64":
                try:
                    data = base64.b64decode(data, validate=False)
                except ValueError:
                    raise validation_error("file", "invalid", "invalid base64 part", target="body") from None
            part_type = headers.get("Content-Type", "application/octet-stream").split(";")[0].strip().lower()
            if part_type in LOOSE_JSON_TYPES:
                envelope = _loose_json(part_type, data)
            elif part_type in JSON_TYPES:
                envelope = parse_envelope(data)
            elif not is_audio(part_type):
                raise _not_an_upload(part_type)
            elif data:
                files.append(UploadedFile(part_type, data))
    except web.HTTPRequestEntityTooLarge:
        raise max_size_error(limit) from None
    except (ValueError, AssertionError, RuntimeError, HttpProcessingError) as error:
        # HttpProcessingError: a part's headers aiohttp cannot parse (control or
        # non-ASCII bytes, a line too long): the client's fault, not a crash.
        if isinstance(error, ValidationError):
            raise
        raise validation_error("multipart", "invalid", "malformed multipart body", target="body") from None
    return envelope, files
