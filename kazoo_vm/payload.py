"""Reading a request body into Kazoo's request envelope.

JSON bodies must be an object with ``data`` (an object or a list); an empty body is
``data: {}``. curl's default form content type carrying JSON text is read as JSON, as
Kazoo does. Top-level keys are normalised (lower case, ``-`` → ``_``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from .errors import UnsupportedMediaType, ValidationError, max_size_error, validation_error

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
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise max_size_error(limit) from None
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
    raise UnsupportedMediaType()
