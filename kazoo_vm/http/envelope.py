"""Kazoo's response envelope: success and error bodies, and their headers."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import socket
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web

from .. import __version__
from ..errors import ApiError

REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
AUTH_TOKEN: web.RequestKey[str] = web.RequestKey("auth_token", str)

VERSION = f"kazoo_vm-{__version__}"
NODE = base64.urlsafe_b64encode(hashlib.md5(f"kazoo_vm@{socket.gethostname()}".encode()).digest()).decode().rstrip("=")

CORS_ALLOW_HEADERS = (
    "content-type, depth, user-agent, x-http-method-override, x-file-size, x-requested-with, "
    "if-modified-since, x-file-name, cache-control, x-auth-token, x-kazoo-cluster-id, if-match"
)
CORS_EXPOSE_HEADERS = "content-type, x-auth-token, x-request-id, x-kazoo-cluster-id, location, etag, retry-after"
CORS_METHODS = "OPTIONS, GET, PUT, POST, PATCH, DELETE"


@functools.lru_cache(maxsize=1)
def _utc_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _timestamp() -> str:
    """The envelope's UTC time to the second (formatted once per second)."""
    return _utc_second(int(time.time()))


def json_bytes(value: Any, *, pretty: bool = False) -> bytes:
    if pretty:
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).encode()
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _base(request: web.Request, status: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": status,
        "request_id": request.get(REQUEST_ID, ""),
        "node": NODE,
        "timestamp": _timestamp(),
        "version": VERSION,
    }
    token = request.get(AUTH_TOKEN)
    if token:
        body["auth_token"] = token
    return body


def _pretty(request: web.Request) -> bool:
    return (request.headers.get("X-Pretty-Print", "").lower() == "true"
            or request.query.get("pretty_print", "").lower() == "true")


def json_response(request: web.Request, body: dict[str, Any], status: int,
                  headers: dict[str, str] | None = None) -> web.Response:
    """A JSON reply with ``Content-Type: application/json`` exactly (no charset):
    Monster UI parses error bodies only then."""
    response = web.Response(body=json_bytes(body, pretty=_pretty(request)), status=status,
                            content_type="application/json", headers=headers)
    return response


def success(request: web.Request, data: Any, *, status: int = 200, revision: str | None = None,
            extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> web.Response:
    """The success envelope around ``data``; ``extra`` adds envelope keys (pagination,
    module messages)."""
    body = _base(request, "success")
    body["data"] = data
    if revision is not None:
        body["revision"] = revision
    if extra:
        body.update(extra)
    all_headers = dict(headers or {})
    if revision is not None and request.method == "GET":
        all_headers["ETag"] = f'"{revision}"'
    return json_response(request, body, status, all_headers)


def list_revision(data: Any) -> str | None:
    """Kazoo's opaque revision of a listing: a hash of the rendered rows."""
    if not data:
        return None
    return hashlib.md5(json_bytes(data)).hexdigest()


def error(request: web.Request, failure: ApiError) -> web.Response:
    body = _base(request, "error")
    body["error"] = str(failure.status)
    body["message"] = failure.message
    body["data"] = failure.data
    return json_response(request, body, failure.status, failure.headers)


# RFC 5987 attr-char beyond letters, digits and ``-._~`` (which ``quote`` keeps anyway).
ATTR_CHARS = "!#$&+^`|"


def _ascii_fallback(name: str) -> str:
    """``name`` for a quoted-string: ``:`` as ``-``, other characters that are not
    printable ASCII, or need escaping (``"``, ``\\``), as ``_``."""
    return "".join("-" if ch == ":" else ch if " " <= ch <= "~" and ch not in '"\\' else "_" for ch in name)


def attachment_disposition(name: str) -> str:
    """``Content-Disposition`` of a download named ``name`` (RFC 6266): a quoted ASCII
    fallback for old clients, and the name itself in UTF-8 (``filename*``)."""
    return (f'attachment; filename="{_ascii_fallback(name)}"; '
            f"filename*=UTF-8''{quote(name, safe=ATTR_CHARS, encoding='utf-8')}")


def add_cors(request: web.Request, response: web.StreamResponse) -> None:
    """Kazoo adds CORS headers whenever the request looks cross-origin."""
    headers = request.headers
    if not ("Origin" in headers or "Access-Control-Request-Method" in headers
            or "Access-Control-Request-Headers" in headers):
        return
    methods = CORS_METHODS
    wanted = headers.get("Access-Control-Request-Method", "").upper()
    if wanted and wanted not in methods:
        methods += f", {wanted}"
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Allow-Methods"] = methods
    response.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
    response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
    response.headers["Access-Control-Max-Age"] = "86400"
