"""The OpenAPI 3.0 document of the API, generated, never written by hand.

Where each part comes from:

* paths, methods, path parameters and which operations need a token: the app's router
  (``app.router``, the trailing-slash twins left out) and ``PUBLIC_HANDLERS``;
* request and response bodies: the JSON Schemas of ``schemas/`` (draft-04, converted to
  OpenAPI schema objects by :func:`convert`) inside Kazoo's envelopes;
* what a router cannot know — a summary, the request body, the shape of ``data``, the
  error statuses beyond those a path implies — one row per route in :data:`OPERATIONS`.

A route without a row is still listed (as :data:`UNDOCUMENTED`, so the served document
never fails), and ``tests/test_openapi.py`` refuses it, as it refuses a row without a
route: the document and the URL table cannot drift apart. The document is built once per
application (:func:`document`).
"""

from __future__ import annotations

import copy
import re
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .. import __version__, appkeys
from ..kazoo import naming
from . import envelope

Json = dict[str, Any]
OPENAPI_VERSION = "3.0.3"
REF = "#/components/schemas/"
REQUEST_ID = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}


@dataclass(frozen=True)
class Op:
    """One operation. ``data``: the component schema of the success envelope's ``data``,
    ``@audio``/``@zip``/``@json`` for answers without envelope, ``@none`` for an
    operation that only ever answers 404. ``body``: a key of
    :data:`BODIES`. ``query``: keys of :data:`QUERY`. ``errors``: statuses besides those
    the path implies (401 and 429 unless public; 403, 404 under an account; 404 for any id; 405
    where a box or message id can collide with a literal segment; 503 with storage)."""

    summary: str
    data: str
    status: int = 200
    body: str | None = None
    query: str = ""
    errors: str = ""


_ACC = "/v2/accounts/{account_id}"
_VM = _ACC + "/vmboxes"
_BOX = _VM + "/{vmbox_id}"
_MSG = _BOX + "/messages/{message_id}"
_HOOKS = _ACC + "/webhooks"
_HOOK = _HOOKS + "/{webhook_id}"
_GONE = Op("Kazoo's 404 `not_found`: kazoo_vm has no such resource", "@none")
OPERATIONS: dict[tuple[str, str], Op] = {
    ("PUT", "/v2/api_auth"): Op("A token for an account API key", "auth", 201, "api_key",
                                errors="400 401 415 429 503"),
    ("PUT", "/v2/user_auth"): Op("A token for user credentials", "auth", 201, "user_auth",
                                 errors="400 401 415 429 503"),
    ("GET", "/v2/auth/tokeninfo"): Op("What a token stands for", "auth", query="token", errors="401 404 503"),
    ("POST", "/v2/auth/tokeninfo"): Op("What a token stands for", "auth", body="token", errors="400 401 404 415 503"),
    ("GET", _ACC): Op("Fetch the account", "account"),
    ("POST", _ACC): Op("Replace the account's fields", "account", body="account", errors="400 409 415"),
    ("GET", _ACC + "/users"): Op("List the users of the account", "user_list"),
    ("GET", _ACC + "/users/{user_id}"): Op("Fetch a user", "user"),
    ("POST", _ACC + "/users/{user_id}"): Op("Replace a user's fields", "user", body="user", errors="400 409 415"),
    ("PATCH", _ACC + "/users/{user_id}"): Op("Merge fields into a user (null removes one)", "user", body="user_patch",
                                             errors="400 409 415"),
    ("GET", _ACC + "/apps_store"): Op("The apps of the account (Voicemails)", "app_list"),
    ("GET", _ACC + "/apps_store/{app_id}/icon"): _GONE,
    ("GET", "/v2/whitelabel/{domain}"): _GONE,
    ("GET", "/v2/whitelabel/{domain}/{file}"): _GONE,
    ("GET", _ACC + "/external_numbers"): _GONE,
    ("GET", _ACC + "/alerts"): _GONE,
    ("GET", _ACC + "/storage"): _GONE,
    ("GET", _ACC + "/cdrs/{cdr_id}"): _GONE,
    ("GET", _ACC + "/ledgers/total"): Op("The account's balance (always 0)", "ledger_total"),
    ("GET", _ACC + "/limits"): Op("The account's trunk limits (Kazoo's defaults unless stored)", "limits"),
    ("GET", _VM): Op("List the boxes, with message counts", "vmbox_list", query="paging box_filters",
                     errors="400 415"),
    ("PUT", _VM): Op("Create a box", "vmbox", 201, "vmbox", errors="400 409 415"),
    ("GET", _BOX): Op("Fetch a box", "vmbox"),
    ("POST", _BOX): Op("Replace a box (full replacement of its fields)", "vmbox", body="vmbox", errors="400 409 415"),
    ("PATCH", _BOX): Op("Merge fields into a box (null removes one)", "vmbox", body="vmbox_patch",
                        errors="400 409 415"),
    ("DELETE", _BOX): Op("Delete a box and its messages (soft)", "vmbox_deleted", body="vmbox_delete",
                         query="soft", errors="400 409 415"),
    ("GET", _VM + "/messages"): Op("List every message of the account", "account_message_list",
                                   query="paging window message_filters", errors="400 415"),
    ("GET", _BOX + "/messages"): Op("List the messages of a box", "message_list",
                                    query="paging window message_filters", errors="400 415"),
    ("PUT", _BOX + "/messages"): Op("Create a message: metadata, audio, or both", "message", 201, "message",
                                    errors="400 409 415"),
    ("POST", _BOX + "/messages"): Op("Change the folder of, move or copy messages", "bulk_result",
                                     body="bulk_change", query="folder", errors="400 409 415"),
    ("DELETE", _BOX + "/messages"): Op("Delete messages (soft): listed, of a folder, or all", "bulk_result",
                                       body="bulk_delete", query="folder", errors="400 415"),
    ("POST", _BOX + "/messages/raw"): Op("The audio of several messages as one ZIP", "@zip", body="zip",
                                         errors="400 415"),
    ("GET", _MSG): Op("Fetch the metadata of a message", "message", errors="409"),
    ("POST", _MSG): Op("Change the folder of, move or copy a message", "message_change", body="message_change",
                       query="folder", errors="400 409 415"),
    ("DELETE", _MSG): Op("Delete a message (soft)", "message", errors="400 409"),
    ("GET", _MSG + "/raw"): Op("Download the audio of a message", "@audio", query="saved range", errors="409"),
    ("PUT", _MSG + "/raw"): Op("Upload or replace the audio of a message", "message", 201, "audio",
                               errors="400 409 415"),
    ("GET", "/v2/webhooks"): Op("The hook types kazoo_vm fires, with their modifiers", "webhook_type_list"),
    ("GET", _HOOKS): Op("List the account's webhooks", "webhook_list", query="paging", errors="400 415"),
    ("PUT", _HOOKS): Op("Create a webhook", "webhook", 201, "webhook", errors="400 409 415"),
    ("PATCH", _HOOKS): Op("Re-enable the account's auto-disabled webhooks", "webhooks_updated", body="reenable",
                          errors="400 415"),
    ("GET", _HOOKS + "/attempts"): Op("The account's recorded webhook attempts, newest first",
                                      "webhook_attempt_list", query="paging window", errors="400 415"),
    ("GET", _HOOK + "/attempts"): Op("A webhook's recorded attempts, newest first", "webhook_attempt_list",
                                     query="paging window", errors="400 415"),
    ("GET", _HOOK): Op("Fetch a webhook", "webhook"),
    ("POST", _HOOK): Op("Replace a webhook's fields", "webhook", body="webhook", errors="400 409 415"),
    ("PATCH", _HOOK): Op("Merge fields into a webhook", "webhook", body="webhook_patch", errors="400 409 415"),
    ("DELETE", _HOOK): Op("Delete a webhook (soft)", "webhook_deleted", errors="409"),
    ("GET", "/v2/schemas"): Op("The names of the JSON Schemas", "schema_names"),
    ("GET", "/v2/schemas/{name}"): Op("A JSON Schema file, byte for byte", "@json"),
    ("POST", "/v2/schemas/{name}/validation"): Op("Validate a document as a write would", "document",
                                                  body="document", errors="400 415"),
    ("GET", "/v2/openapi.json"): Op("This document", "@json"),
}
# A route without a row still appears (tests/test_openapi.py insists on a row).
UNDOCUMENTED = Op("Not described yet", "@any")

DISPOSITION = "`attachment; filename=\"{name}\"; filename*=UTF-8''{name}` (RFC 6266: an ASCII fallback, the UTF-8 name)"
STATUS_TEXT = {
    200: "Success", 201: "Created", 206: "Partial content (a single `Range`)",
    400: "`validation error`: `data` is `{path: {code: details}}`",
    401: "No credentials, or bad or expired ones (`invalid_credentials`; `data.expired` says whether the token "
         "expired)",
    403: "The token may not act on this account (`forbidden`)",
    404: "Unknown or malformed id (`bad_identifier`, `bad identifier`), unknown path (`not_found`) "
         "or bad `page_size` (`faulty_request`)",
    405: "Method not allowed on this path (`invalid_method`), e.g. a box id `messages`",
    409: "The document changed meanwhile (`datastore_conflict`)",
    415: "The request body is neither JSON nor a form, nor audio or multipart for an upload "
         "(`unsupported_media_type`; `data.accepted` lists the types read)",
    429: "Too many failed logins (`user_auth`, `api_auth`, Basic) from this address lately "
         "(`too_many_requests`): the credentials were not checked; retry after `Retry-After` seconds",
    503: "CouchDB does not answer (`datastore_unreachable`)",
}


def _string(**extra: Any) -> Json:
    if isinstance(extra.get("pattern"), str):  # Python's end of input (``\Z``) is ECMA's ``$``
        extra["pattern"] = extra["pattern"].replace("\\Z", "$")
    return {"type": "string", **extra}


def _object(properties: Json, required: list[str] | None = None, **extra: Any) -> Json:
    schema: Json = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = required
    return schema


def _ref(name: str) -> Json:
    return {"$ref": REF + name}


def _all_of(name: str, extra: Json) -> Json:
    return {"allOf": [_ref(name), {"type": "object", **extra}]}


_FOLDER = _string(enum=["new", "saved", "deleted"])
_BOOLEAN = {"type": "boolean"}
_IDS = {"type": "array", "items": _string()}
_BINARY = _string(format="binary")
# The schemas of the answers and bodies that are not in schemas/ (envelopes aside).
EXTRA_SCHEMAS: dict[str, Json] = {
    "auth": _object({"account_id": _string(pattern=naming.ACCOUNT_ID.pattern), "owner_id": _string(),
                     "account_name": _string(nullable=True), "is_reseller": {"type": "boolean"},
                     "reseller_id": _string(), "language": _string(), "apps": {"type": "array"}},
                    ["account_id", "is_reseller", "reseller_id", "apps"]),
    "vmbox": _all_of("vmboxes", {"required": ["id"], "properties": {"id": _string(minLength=1)}}),
    "vmbox_deleted": _all_of("vmbox", {"required": ["_read_only"], "properties": {
        "_read_only": _object({"deleted": {"type": "boolean", "enum": [True]}}, ["deleted"])}}),
    "vmbox_summary": _object({
        "id": _string(), "name": _string(), "mailbox": _string(), "owner_id": _string(),
        "messages": {"type": "integer", "minimum": 0}, "flags": _IDS,
        "folders": _object({"new": {"type": "integer", "minimum": 0}, "saved": {"type": "integer", "minimum": 0}},
                           ["new", "saved"], additionalProperties=False)},
        ["id", "messages", "flags"]),
    "vmbox_list": {"type": "array", "items": _ref("vmbox_summary")},
    "message": _all_of("vm_message_metadata", {"properties": {
        "media_id": _string(), "from_user": _string(), "from_realm": _string(), "to_user": _string(),
        "to_realm": _string(), "retention": _string(), "retention_message": _string(),
        "notify": {"type": "object"}, "transcription": {"type": "object"}}}),
    "message_summary": _all_of("message", {"properties": {"transcribed": {"type": "boolean"}}}),
    "message_list": {"type": "array", "items": _ref("message_summary")},
    "account_message_list": {"type": "array", "items": {
        "type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": _ref("message_summary")}},
    "bulk_result": _object({"succeeded": _IDS, "failed": {"type": "object", "additionalProperties": _string()}},
                           additionalProperties=False),
    "message_change": {"anyOf": [_ref("message"), _ref("bulk_result")]},
    "schema_names": _IDS,
    "webhook": _all_of("webhooks", {"required": ["id"], "properties": {
        "id": _string(minLength=1), "disable_reason": _string(description="Why the hook was auto-disabled")}}),
    "webhook_deleted": _all_of("webhook", {"required": ["_read_only"], "properties": {
        "_read_only": _object({"deleted": {"type": "boolean", "enum": [True]}}, ["deleted"])}}),
    "webhook_list": {"type": "array", "items": _object({
        "id": _string(), "hook": _string(), "name": _string(), "uri": _string(), "group": _string(),
        "enabled": _BOOLEAN, "disable_reason": _string()}, ["id", "enabled"])},
    "webhook_type_list": {"type": "array", "items": _object({
        "id": _string(), "name": _string(), "description": _string(), "modifiers": {"type": "object"}},
        ["id", "name", "description"])},
    "webhooks_updated": _string(enum=["hooks updated"]),
    "webhook_attempt_list": {"type": "array", "items": _object({
        "hook_id": _string(), "hook_event": _string(), "result": _string(enum=["success", "failure"]),
        "reason": _string(), "timestamp": {"type": "integer"}, "method": _string(), "uri": _string(),
        "resp_status_code": _string(), "client_error": _string(), "retries": {"type": "integer"},
        "try": {"type": "integer"}, "retries_left": {"oneOf": [{"type": "integer"}, _string()]}},
        ["hook_id", "result", "timestamp"])},
    "document": {"type": "object"},
    # Accounts and users come back as stored (Kazoo's documents keep keys the schemas
    # do not judge), with what crossbar adds.
    "account": _object({"id": _string(pattern=naming.ACCOUNT_ID.pattern), "created": {"type": "integer"},
                        "enabled": _BOOLEAN, "is_reseller": _BOOLEAN, "reseller_id": _string(),
                        "superduper_admin": _BOOLEAN, "wnm_allow_additions": _BOOLEAN},
                       ["id", "enabled", "is_reseller", "reseller_id"]),
    "user": _object({"id": _string(minLength=1)}, ["id"], description="The user's public fields"),
    "user_list": {"type": "array", "items": _object({"id": _string(minLength=1), "features": _IDS, "flags": _IDS},
                                                     ["id", "features", "flags"])},
    "ledger_total": _object({"amount": {"type": "number"}}, ["amount"]),
    "limits": _object({"id": _string(), "allow_prepay": _BOOLEAN, "inbound_trunks": {"type": "integer"},
                       "outbound_trunks": {"type": "integer"}, "twoway_trunks": {"type": "integer"}}, ["id"]),
    "app_list": {"type": "array", "items": _object({
        "id": _string(), "name": _string(), "api_url": _string(), "allowed_users": _string(),
        "users": {"type": "array"}, "i18n": {"type": "object"}, "tags": _IDS, "masqueradable": _BOOLEAN,
        "phase": _string()}, ["id", "name", "api_url"])},
}


def _request(data: Json) -> Json:
    """The request envelope around ``data`` (other top-level keys are allowed)."""
    return {"schema": _object({"data": data}, ["data"])}


def _json(data: Json) -> Json:
    return {"application/json": _request(data)}


_AUDIO_BODY = {"audio/mpeg": {"schema": _BINARY}, "audio/wav": {"schema": _BINARY},
               "application/octet-stream": {"schema": _BINARY}}
_SOURCE = {"oneOf": [_string(minLength=1), {"type": "array", "items": _string(minLength=1)}]}
# Request bodies: name → (required, content).
BODIES: dict[str, tuple[bool, Json]] = {
    "api_key": (True, _json(_object({"api_key": _string(minLength=1, maxLength=256)}, ["api_key"]))),
    "user_auth": (True, _json(_object({
        "credentials": _string(pattern="^[0-9a-fA-F]{32}$|^[0-9a-fA-F]{40}$",
                               description="md5 (or sha1) hex of `lower(username):password`"),
        "method": _string(enum=["md5", "sha", "sha1"]), "account_name": _string(), "account_realm": _string(),
        "realm": _string()}, ["credentials"]))),
    "vmbox": (True, _json(_ref("vmboxes"))),
    "vmbox_patch": (True, _json(_ref("vmbox_patch"))),
    "vmbox_delete": (False, _json(_object({"should_soft_delete": {"type": "boolean"}}))),
    "message": (False, {
        **_json(_ref("vm_message_metadata")),
        "multipart/form-data": {
            "schema": _object({"metadata": _object({"data": _ref("vm_message_metadata")}, ["data"]),
                               "file": _BINARY}),
            "encoding": {"metadata": {"contentType": "application/json"}, "file": {"contentType": "audio/mpeg"}}},
        **_AUDIO_BODY}),
    "audio": (True, {**_AUDIO_BODY, "multipart/form-data": {
        "schema": _object({"file": _BINARY}, ["file"]), "encoding": {"file": {"contentType": "audio/mpeg"}}}}),
    "bulk_change": (True, _json(_object({"messages": {**_IDS, "minItems": 1}, "folder": _FOLDER,
                                         "source_id": _SOURCE}, ["messages"]))),
    "bulk_delete": (False, _json(_object({"messages": _IDS, "folder": _FOLDER}))),
    "zip": (True, _json(_object({"messages": {**_IDS, "minItems": 1, "maxItems": 1000}}, ["messages"]))),
    "message_change": (False, _json(_object({"folder": _FOLDER, "source_id": _SOURCE}))),
    "document": (True, _json({"type": "object"})),
    "token": (True, _json(_object({"token": _string(minLength=1)}, ["token"]))),
    "account": (True, _json(_ref("accounts"))),
    "user": (True, _json(_ref("users"))),
    "user_patch": (True, _json(_ref("user_patch"))),
    "webhook": (True, _json(_ref("webhooks"))),
    "webhook_patch": (True, _json(_ref("webhook_patch"))),
    "reenable": (True, _json(_object({"re-enable": _BOOLEAN}, ["re-enable"]))),
}


def _query(name: str, schema: Json, description: str) -> Json:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_GREGORIAN = {"type": "integer", "minimum": 1}
_KEY_TESTS = [_query(name, _string(), f"{what} (a dotted field path)") for name, what in (
    ("has_key", "Rows whose document has this key"), ("key_missing", "Rows whose document lacks this key"),
    ("has_value", "Rows where this key has a non-empty value"),
    ("value_missing", "Rows where this key is missing or empty"))]
QUERY: dict[str, list[Json]] = {
    "paging": [
        _query("page_size", {"type": "integer", "minimum": 1}, "Rows per page (default 50)"),
        _query("start_key", _string(), "The `next_start_key` of the previous page (opaque)"),
        _query("paginate", _BOOLEAN, "`false`: every row, no paging keys"),
        _query("ascending", _BOOLEAN, "`true`: oldest (or first) rows first"),
        _query("descending", _BOOLEAN, "`false`: same as `ascending=true`")],
    "window": [
        _query("created_from", _GREGORIAN, "Start of the time window (gregorian seconds)"),
        _query("created_to", _GREGORIAN, "End of the time window (gregorian seconds, default now)")],
    "box_filters": [
        _query("filter_name", _string(), "Boxes with this name; any `filter_<field>` works"),
        _query("filter_not_name", _string(), "Boxes without this name; any `filter_not_<field>` works"),
        _query("filter_mailbox", _string(), "Boxes with this mailbox (a JSON array means any of)"),
        *_KEY_TESTS,
        *(_query(name, _GREGORIAN, f"Boxes whose {field} is {side} (gregorian seconds)")
          for name, field, side in (("created_from", "pvt_created", "at or after"),
                                    ("created_to", "pvt_created", "at or before"),
                                    ("modified_from", "pvt_modified", "at or after"),
                                    ("modified_to", "pvt_modified", "at or before")))],
    "message_filters": [
        _query("filter_folder", _string(), "Messages in this folder; any `filter_<metadata field>` works"),
        _query("filter_not_folder", _string(), "Messages not in this folder; any `filter_not_<field>` works"),
        _query("filter_caller_id_number", _string(), "Messages from this caller id number"),
        *_KEY_TESTS],
    "folder": [_query("folder", _FOLDER, "The folder (when the body names none; default `saved`)")],
    "saved": [_query("folder", _FOLDER, "`saved`: file the message as saved (else a message without folder "
                                        "becomes `new`)")],
    "token": [_query("token", _string(minLength=1), "The token to look up")],
    "soft": [_query("should_soft_delete", _BOOLEAN, "`false`: remove the box document for real")],
    "range": [{"name": "Range", "in": "header", "required": False, "schema": _string(),
               "description": "A single `bytes=S-E` or `bytes=S-` (206); anything else: the whole file"}],
}
PATH_PARAMETERS: dict[str, Json] = {
    "account_id": _string(pattern=naming.ACCOUNT_ID.pattern),
    # The router gives `messages` after /vmboxes to the account-wide listing.
    "vmbox_id": _string(pattern=f"^(?!messages$)(?!.*[.][.]){naming.VMBOX_ID_PATTERN[1:]}"),
    "message_id": _string(pattern=rf"^(?:\d{{6}}-)?{naming.LEGACY_MESSAGE_ID.pattern[1:]}"),
    "name": _ref("schema_name"),
}


# -- draft-04 → OpenAPI 3.0 -----------------------------------------------------------

SUBSCHEMA_KEYS = ("items", "not", "additionalProperties")
SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
UNSUPPORTED = ("patternProperties", "dependencies", "additionalItems", "definitions")


def convert(schema: Any) -> Any:
    """A draft-04 schema as an OpenAPI 3.0 schema object: no ``id``/``$schema``,
    ``$ref: "x.json"`` → ``#/components/schemas/x``, a list ``type`` → ``nullable`` /
    ``anyOf``. Keywords OpenAPI 3.0 lacks are refused rather than dropped."""
    if not isinstance(schema, dict):
        return schema
    result: Json = {}
    for key, value in schema.items():
        if key in ("id", "$schema"):
            continue
        if key in UNSUPPORTED:
            raise ValueError(f"draft-04 keyword {key!r} has no OpenAPI 3.0 equivalent")
        if key == "$ref":
            result[key] = REF + value.removesuffix(".json")
        elif key == "properties":
            result[key] = {name: convert(sub) for name, sub in value.items()}
        elif key in SUBSCHEMA_LISTS or (key == "items" and isinstance(value, list)):
            result[key] = [convert(sub) for sub in value]
        elif key in SUBSCHEMA_KEYS:
            result[key] = convert(value)
        elif key == "type" and isinstance(value, list):
            types = [name for name in value if name != "null"]
            if len(types) != len(value):
                result["nullable"] = True
            if len(types) == 1:
                result["type"] = types[0]
            else:
                result["anyOf"] = [{"type": name} for name in types]
        else:
            result[key] = copy.deepcopy(value)
    return result


# -- assembling ----------------------------------------------------------------------

def _envelope(*, paged: bool) -> Json:
    properties: Json = {
        "status": _string(enum=["success"]), "request_id": _string(), "node": _string(),
        "timestamp": _string(format="date-time"), "version": _string(), "auth_token": _string(),
        "data": {}, "revision": _string(),
        "message": _string(description="A note from the module (a box with legacy messages)")}
    if paged:
        properties.update(page_size={"type": "integer", "minimum": 0}, start_key=_string(),
                          next_start_key=_string())
    return _object(properties, ["status", "request_id", "node", "timestamp", "version", "data"],
                   additionalProperties=False)


def _error_envelope() -> Json:
    return _object({"status": _string(enum=["error"]), "error": _string(pattern="^[1-5][0-9][0-9]$"),
                    "message": _string(), "data": {"type": "object"}, "request_id": _string(), "node": _string(),
                    "timestamp": _string(format="date-time"), "version": _string(), "auth_token": _string()},
                   ["status", "error", "message", "data", "request_id", "node", "timestamp", "version"],
                   additionalProperties=False)


def _error_response(status: int) -> Json:
    refine: Json = {"error": _string(enum=[str(status)])}
    if status == 400:  # {path: {code: {message, ...}}}
        refine["data"] = {"type": "object", "additionalProperties": {
            "type": "object", "additionalProperties": _object({"message": _string()}, ["message"])}}
    schema = {"allOf": [_ref("error_envelope"), {"type": "object", "properties": refine}]}
    headers = dict(REQUEST_ID)
    if status == 429:
        headers["Retry-After"] = _header("Seconds to wait before the next login", required=True)
    return {"description": STATUS_TEXT[status], "headers": headers,
            "content": {"application/json": {"schema": schema}}}


def _header(description: str, *, required: bool = False) -> Json:
    return {"description": description, "required": required, "schema": _string()}


def _success(method: str, path: str, op: Op) -> Json:
    request_id = dict(REQUEST_ID)
    if op.data == "@audio":
        binary = {"schema": _BINARY}
        headers = {**request_id, "Content-Disposition": _header(DISPOSITION.format(name="…"), required=True),
                   "Accept-Ranges": _header("`bytes`", required=True),
                   "Content-Range": _header("`bytes S-E/size` when a `Range` was sent")}
        content = {"audio/*": binary, "application/octet-stream": binary}
        return {str(status): {"description": STATUS_TEXT[status], "headers": headers, "content": content}
                for status in (200, 206)}
    if op.data == "@zip":
        headers = {**request_id, "Content-Disposition": _header(DISPOSITION.format(name="<request id>.zip"),
                                                                required=True)}
        return {"200": {"description": "The ZIP, streamed", "headers": headers,
                        "content": {"application/zip": {"schema": _BINARY}}}}
    if op.data == "@none":
        return {}
    if op.data == "@any":
        return {"default": {"description": "Not described yet", "content": {"application/json": {"schema": {}}}}}
    if op.data == "@json":
        return {"200": {"description": "A JSON document (no envelope)", "headers": request_id,
                        "content": {"application/json": {"schema": {"type": "object"}}}}}
    paged = op.data.endswith("_list")
    schema = {"allOf": [_ref("paged_envelope" if paged else "success_envelope"),
                        {"type": "object", "properties": {"data": _ref(op.data)}}]}
    headers = dict(request_id)
    if op.status == 201 and op.data in ("vmbox", "message", "webhook") and "/raw" not in path:
        headers["Location"] = _header("The path of the new resource", required=True)
    if method == "GET" and op.data in ("vmbox", "webhook"):
        headers["ETag"] = _header("`\"<revision>\"`", required=True)
    return {str(op.status): {"description": STATUS_TEXT[op.status], "headers": headers,
                             "content": {"application/json": {"schema": schema}}}}


def _statuses(path: str, op: Op, public: bool) -> list[int]:
    implied = set() if public else {401, 429, 503}  # 429: Basic credentials
    if "{account_id}" in path:
        implied |= {403, 404}
    if "{vmbox_id}" in path or "{message_id}" in path:
        implied |= {404, 405}
    if "{webhook_id}" in path:
        implied.add(404)
    if "{name}" in path or op.data == "@none":
        implied.add(404)
    return sorted(implied | {int(code) for code in op.errors.split()})


def _tag(path: str) -> str:
    if path.startswith("/v2/accounts/"):
        return "messages" if "/messages" in path else "webhooks" if "/webhooks" in path else "vmboxes"
    return "auth" if path.endswith("_auth") else path.split("/")[2].removesuffix(".json")


def _operation_id(method: str, path: str, handler: Any, shared: bool) -> str:
    """The handler's name; for a handler of several routes, with the method and path."""
    if not shared:
        return str(handler.__name__)
    words = [part.strip("{}") for part in path.split("/")[2:] if part]
    return "_".join([handler.__name__, method.lower(), *words])


def _operation(method: str, path: str, handler: Any, op: Op, public: bool, shared: bool) -> Json:
    parameters = [{"name": name, "in": "path", "required": True, "schema": PATH_PARAMETERS.get(name, _string())}
                  for name in re.findall(r"\{(\w+)\}", path)]
    for group in op.query.split():
        parameters.extend(QUERY[group])
    operation: Json = {"operationId": _operation_id(method, path, handler, shared), "summary": op.summary,
                       "tags": [_tag(path)]}
    if handler.__doc__:
        operation["description"] = handler.__doc__.strip().split("\n\n")[0]
    if parameters:
        operation["parameters"] = parameters
    if op.body is not None:
        required, content = BODIES[op.body]
        operation["requestBody"] = {"required": required, "content": content}
    responses = _success(method, path, op)
    responses.update({str(status): {"$ref": f"#/components/responses/error_{status}"}
                      for status in _statuses(path, op, public)})
    operation["responses"] = responses
    if public:
        operation["security"] = []
    return operation


def routes(app: web.Application) -> list[tuple[str, str, Any]]:
    """(method, path template, handler) of every route, without the trailing-slash twins."""
    every = [(route.method, route.resource.canonical, route.handler) for route in app.router.routes()
             if route.resource is not None]
    registered = {(method, path) for method, path, _handler in every}
    return [(method, path, handler) for method, path, handler in every
            if not (path.endswith("/") and (method, path[:-1]) in registered)]


def build(app: web.Application) -> Json:
    """The document for ``app``'s routes (see the module docstring). A route without a
    row in :data:`OPERATIONS` is listed as :data:`UNDOCUMENTED` (the tests refuse it)."""
    public = app[appkeys.PUBLIC_HANDLERS]
    store = app[appkeys.SCHEMAS]
    paths: dict[str, Json] = {}
    every = routes(app)
    uses = Counter(handler for _method, _path, handler in every)
    for method, path, handler in every:
        op = OPERATIONS.get((method, path), UNDOCUMENTED)
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, handler, op, handler in public,
                                                                uses[handler] > 1)
    schemas: Json = {name: convert(schema) for name, schema in sorted(store.schemas.items())}
    for name, patched in (("vmboxes", "vmbox_patch"), ("users", "user_patch"), ("webhooks", "webhook_patch")):
        if name in schemas:
            schemas[patched] = {**schemas[name], "description": "Fields merged over the stored document; "
                                                                "`null` removes a key"}
            schemas[patched].pop("required", None)
    names = sorted(store.schemas)
    schemas["schema_name"] = _string(enum=names + [name + ".json" for name in names])
    schemas.update(copy.deepcopy(EXTRA_SCHEMAS))
    schemas["success_envelope"] = _envelope(paged=False)
    schemas["paged_envelope"] = _envelope(paged=True)
    schemas["error_envelope"] = _error_envelope()
    token_text = "A token from `PUT /v2/api_auth` or `PUT /v2/user_auth`"
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "kazoo_vm", "version": __version__,
                 "description": "Kazoo's voicemail REST API (crossbar `vmboxes` and messages) on CouchDB. "
                                "JSON answers use Kazoo's envelope; errors carry `error` (the status), "
                                "`message` (the error name) and `data`."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {f"error_{status}": _error_response(status) for status in STATUS_TEXT if status >= 400},
            "headers": {"X-Request-ID": {"description": "The request id (the client's `X-Request-ID` if valid)",
                                         "required": True, "schema": _string()}},
            "securitySchemes": {
                "X-Auth-Token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token", "description": token_text},
                "auth_token": {"type": "apiKey", "in": "query", "name": "auth_token", "description": token_text},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": token_text},
            },
        },
        "security": [{"X-Auth-Token": []}, {"auth_token": []}, {"bearer": []}],
    }


_DOCUMENTS: weakref.WeakKeyDictionary[web.Application, bytes] = weakref.WeakKeyDictionary()


def document(app: web.Application) -> bytes:
    """The serialized document of ``app``, built on first use and kept for the app's
    life (a running app is frozen, so the cache sits beside it, keyed weakly)."""
    cached = _DOCUMENTS.get(app)
    if cached is None:
        cached = _DOCUMENTS[app] = envelope.json_bytes(build(app))
    return cached


__all__ = ["OPERATIONS", "Op", "build", "convert", "document"]
