"""``/v2/schemas``: the JSON schemas of ``schemas/``, for other services (no token).

``GET /v2/schemas`` lists the schema names, ``GET /v2/schemas/{name}`` serves one file
byte-for-byte, and ``POST /v2/schemas/{name}/validation`` validates a document the way
the API does before it writes one.

A name is the file name without ``.json``. ``GET /v2/schemas/{name}.json`` serves the
same file: a schema's ``id`` is its file name and its ``$ref``s name sibling files, so a
validator that resolves them against the URL it fetched the schema from (e.g.
``/v2/schemas/vmboxes`` → ``/v2/schemas/notify.callback.json``) finds them here too.
"""

from __future__ import annotations

import asyncio
import re

from aiohttp import web

from .. import appkeys
from ..errors import BadIdentifier, ValidationError
from ..http import envelope
from ..http.validation import SchemaStore
from .common import payload

NAME = re.compile(r"^[A-Za-z0-9_.\-]+\Z")
SUFFIX = ".json"


def _store(request: web.Request) -> SchemaStore:
    return request.app[appkeys.SCHEMAS]


def schema_name(request: web.Request) -> str:
    """The known schema named in the path (``name`` or ``name.json``), else 404
    ``bad_identifier``. Only names of loaded schemas get through, never a path."""
    given = request.match_info["name"]
    if not NAME.match(given) or ".." in given:
        raise BadIdentifier(given)
    schemas = _store(request).schemas
    if given in schemas:
        return given
    if given.endswith(SUFFIX) and given[: -len(SUFFIX)] in schemas:
        return given[: -len(SUFFIX)]
    raise BadIdentifier(given)


async def list_schemas(request: web.Request) -> web.Response:
    """The names of the schemas, sorted."""
    return envelope.success(request, sorted(_store(request).schemas))


async def get_schema(request: web.Request) -> web.Response:
    """The schema file as it is on disk: its bytes, ``Content-Type: application/json``
    (no envelope, so the body is the schema a validator loads)."""
    name = schema_name(request)
    path = _store(request).directory / f"{name}{SUFFIX}"
    try:
        body = await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:  # removed since the service started
        raise BadIdentifier(request.match_info["name"]) from None
    return web.Response(body=body, content_type="application/json")


async def validate_document(request: web.Request) -> web.Response:
    """Validate the request's ``data`` against the schema: 200 with the document as it
    would be stored (defaults applied, strings coerced as Kazoo does), else 400
    ``validation error`` with the same ``{path: {code: details}}`` a write answers.

    Only the schema is checked. Writes add checks of their own that are not reported
    here: ``PUT /vmboxes`` also rejects a mailbox number another box of the account
    uses (``mailbox.unique``, which needs the database) and a malformed chosen ``id``;
    ``PUT .../messages`` rejects a ``timestamp`` before 1970 or after 9999. A non-object
    ``data`` is reported at ``data``, as the writes do.
    """
    name = schema_name(request)
    body = await payload(request)
    document, errors = _store(request).validate(name, body.data)
    if "" in errors:  # the document itself is wrong: that is the request's `data`
        errors = {("data" if key == "" else key): value for key, value in errors.items()}
    if errors:
        raise ValidationError(errors)
    return envelope.success(request, document)
