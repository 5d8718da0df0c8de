"""What Monster UI needs around the voicemail API when kazoo_vm is its whole backend.

Kept minimal on purpose: the account (GET/POST), its users (list, GET, PATCH), token
info, an apps store that lists only the Voicemails app, and Kazoo's 404 for the
resources Monster asks for but kazoo_vm does not have (whitelabel, external numbers,
alerts, storage plans, CDRs, app icons). The documents are Kazoo's own: the account doc
in both the ``accounts`` and the account database, users in the account database.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from aiohttp import web

from .. import appkeys
from ..errors import (
    ApiError,
    BadIdentifier,
    DatastoreConflict,
    InvalidCredentials,
    NotFoundPath,
    ValidationError,
    validation_error,
)
from ..http import envelope
from ..kazoo import naming
from ..kazoo.documents import as_int, gregorian_now, private_fields, public_fields, stamp, to_response
from ..storage.accounts import credentials_hashes
from ..storage.errors import Conflict, NotFound
from .auth import _auth_data
from .common import author, payload, services

SAVE_RETRIES = 3
USER_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]{0,127}\Z")
# What crossbar adds to an account from its private fields; never stored from a request.
ACCOUNT_READ_ONLY = ("id", "_read_only", "created", "enabled", "is_reseller", "reseller_id", "superduper_admin",
                     "wnm_allow_additions", "billing_mode", "api_key", "notification_preference", "trial_time_left")
USER_READ_ONLY = ("id", "_read_only")
# The one app of the store: its id is stable so Monster's appList keeps pointing at it.
VOICEMAILS_APP_ID = hashlib.md5(b"kazoo_vm/apps_store/voicemails").hexdigest()
VOICEMAILS_I18N = {
    "en-US": {"label": "Voicemails",
              "description": "Listen to, move and delete the messages of your voicemail boxes."},
}
WEBHOOKS_APP_ID = hashlib.md5(b"kazoo_vm/apps_store/webhooks").hexdigest()
WEBHOOKS_I18N = {
    "en-US": {"label": "Webhooks",
              "description": "Tell other systems over HTTP when voicemail boxes and messages change."},
}
FORWARDED_HOST = re.compile(r"^[0-9A-Za-z.\-:\[\]]{1,255}\Z")
FORWARDED_PREFIX = re.compile(r"^(/[0-9A-Za-z._~\-]+)*/?\Z")


def _object_data(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationError({"data": {"type": {"message": "Value did not match type(s): object",
                                                 "target": "object", "value": data}}})
    return data


# -- the account ------------------------------------------------------------------------

def account_response(doc: dict[str, Any]) -> dict[str, Any]:
    """The account as crossbar shows it: public fields, ``id`` and the private fields
    crossbar leaks (created, enabled, reseller flags)."""
    data = to_response(doc)
    tree = doc.get("pvt_tree") if isinstance(doc.get("pvt_tree"), list) else []
    created = as_int(doc.get("pvt_created"))
    if created is not None:
        data["created"] = created
    data["enabled"] = doc.get("pvt_enabled") is not False
    data["is_reseller"] = bool(doc.get("pvt_reseller"))
    data["reseller_id"] = tree[0] if tree else doc["_id"]
    data["superduper_admin"] = bool(doc.get("pvt_superduper_admin"))
    data["wnm_allow_additions"] = bool(doc.get("pvt_wnm_allow_additions"))
    return data


async def _own_account(request: web.Request, account_id: str) -> dict[str, Any]:
    try:
        return await services(request).accounts.fetch_own_copy(account_id)
    except NotFound:
        raise BadIdentifier(account_id) from None


async def get_account(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    doc = await _own_account(request, account_id)
    return envelope.success(request, account_response(doc), revision=doc["_rev"])


async def _check_realm(request: web.Request, account_id: str, fields: dict[str, Any],
                       stored: dict[str, Any]) -> None:
    realm = fields.get("realm")
    if not isinstance(realm, str) or realm.lower() == str(stored.get("realm", "")).lower():
        return
    others = [found for found in await services(request).accounts.by_realm(realm) if found != account_id]
    if others:
        raise validation_error("realm", "unique", "Realm is not unique for this system", cause=realm)


async def update_account(request: web.Request) -> web.Response:
    """POST: the account's public fields replaced by the request's (Monster's myaccount
    sends the whole account back with ``ui_restrictions`` added)."""
    account_id = request.match_info["account_id"]
    data = _object_data((await payload(request)).data)
    fields = {key: value for key, value in public_fields(data).items() if key not in ACCOUNT_READ_ONLY}
    validated, errors = request.app[appkeys.SCHEMAS].validate("accounts", fields)
    if errors:
        raise ValidationError(errors)
    for _attempt in range(SAVE_RETRIES):
        stored = await _own_account(request, account_id)
        await _check_realm(request, account_id, validated, stored)
        doc = {**private_fields(stored), **validated, "_id": account_id}
        stamp(doc, account_id=account_id, account_db=naming.encoded_db(naming.account_db(account_id)),
              pvt_type="account", author=author(request), now=gregorian_now())
        try:
            await services(request).accounts.save(doc)
        except Conflict:
            continue
        return envelope.success(request, account_response(doc), revision=doc["_rev"])
    raise DatastoreConflict()


# -- users ------------------------------------------------------------------------------

def user_summary(doc: dict[str, Any]) -> dict[str, Any]:
    """A row of the users listing (the keys Kazoo's ``users/crossbar_listing`` shows)."""
    row: dict[str, Any] = {"id": doc["_id"]}
    for key in ("username", "email", "first_name", "last_name", "priv_level", "feature_level", "presence_id",
                "timezone", "call_recording", "service"):
        if key in doc:
            row[key] = doc[key]
    row["features"] = doc["features"] if isinstance(doc.get("features"), list) else []
    row["flags"] = doc["flags"] if isinstance(doc.get("flags"), list) else []
    return row


async def list_users(request: web.Request) -> web.Response:
    """Every user of the account, ordered by "last first" name like Kazoo's listing."""
    account_id = request.match_info["account_id"]
    users = await services(request).users.listing(account_id)
    users.sort(key=lambda doc: (f"{doc.get('last_name')} {doc.get('first_name')}", doc["_id"]))
    data = [user_summary(doc) for doc in users]
    return envelope.success(request, data, revision=envelope.list_revision(data), extra={"page_size": len(data)})


def _user_id(request: web.Request) -> str:
    user_id = request.match_info["user_id"]
    if not USER_ID.match(user_id):
        raise BadIdentifier(user_id)
    return user_id


async def _user(request: web.Request, account_id: str, user_id: str) -> dict[str, Any]:
    try:
        return await services(request).users.fetch(account_id, user_id)
    except NotFound:
        raise BadIdentifier(user_id) from None


async def get_user(request: web.Request) -> web.Response:
    account_id, user_id = request.match_info["account_id"], _user_id(request)
    doc = await _user(request, account_id, user_id)
    return envelope.success(request, to_response(doc), revision=doc["_rev"])


async def _credentials(request: web.Request, account_id: str, user_id: str, changes: dict[str, Any],
                       validated: dict[str, Any], stored: dict[str, Any]) -> dict[str, str]:
    """The ``pvt_*_auth`` hashes for a new password or username (the password is never
    stored); a new username needs the password and must be unique in the account."""
    updates: dict[str, str] = {}
    username = validated.get("username")
    if "username" in changes and isinstance(username, str):
        username = validated["username"] = username.lower()
        if username != stored.get("username"):
            if "password" not in changes:
                raise validation_error("password", "required", "Field is required but missing", value="password")
            others = [found for found in await services(request).users.ids_by_username(account_id, username)
                      if found != user_id]
            if others:
                raise validation_error("username", "unique", "Username is not unique for this account",
                                       cause=username)
    password = validated.pop("password", None)
    if isinstance(password, str) and "password" in changes:
        if not isinstance(username, str) or not username:
            raise validation_error("username", "required", "Field is required but missing", value="username")
        updates["pvt_md5_auth"], updates["pvt_sha1_auth"] = credentials_hashes(username, password)
    return updates


async def _write_user(request: web.Request, *, replace: bool) -> web.Response:
    account_id, user_id = request.match_info["account_id"], _user_id(request)
    data = _object_data((await payload(request)).data)
    sent = {key: value for key, value in public_fields(data).items() if key not in USER_READ_ONLY}
    for _attempt in range(SAVE_RETRIES):
        stored = await _user(request, account_id, user_id)
        current = public_fields(stored)
        if replace:
            fields = dict(sent)
            judged = {key for key, value in sent.items() if current.get(key, ...) != value} | (set(current) - set(sent))
        else:
            fields = {**current, **sent}
            judged = set(sent)
        fields = {key: value for key, value in fields.items() if value is not None}
        validated, all_errors = request.app[appkeys.SCHEMAS].validate("users", fields)
        errors = {key: codes for key, codes in all_errors.items() if key.split(".")[0] in judged}
        if errors:
            raise ValidationError(errors)
        changes = {key: value for key, value in sent.items() if key in judged}
        credentials = await _credentials(request, account_id, user_id, changes, validated, stored)
        doc = {**private_fields(stored), **credentials, **validated, "_id": user_id}
        stamp(doc, account_id=account_id, account_db=naming.encoded_db(naming.account_db(account_id)),
              pvt_type="user", author=author(request), now=gregorian_now())
        try:
            await services(request).users.save(account_id, doc)
        except Conflict:
            continue
        return envelope.success(request, to_response(doc), revision=doc["_rev"])
    raise DatastoreConflict()


async def patch_user(request: web.Request) -> web.Response:
    """PATCH: the request's fields merged over the stored ones (``null`` removes a key).
    Only the keys the request changes are judged: a stored document Kazoo or an older
    tool wrote is not refused for a field the client did not touch."""
    return await _write_user(request, replace=False)


async def update_user(request: web.Request) -> web.Response:
    """POST: the user's public fields replaced by the request's (Monster sends the user it
    fetched with its changes, e.g. ``ui_flags`` after the first-use walkthrough). Values
    sent back unchanged are not judged again; changed, new and removed ones are."""
    return await _write_user(request, replace=True)


# -- token info -------------------------------------------------------------------------

async def token_info(request: web.Request) -> web.Response:
    """``POST /v2/auth/tokeninfo`` ``{"data": {"token": …}}`` (or ``GET ?token=``): what
    ``user_auth`` answered for that token, if it is still valid (ours or Kazoo's)."""
    if request.method == "GET":
        token: Any = request.query.get("token")
    else:
        body = await payload(request)
        token = body.data.get("token") if isinstance(body.data, dict) else None
    if not isinstance(token, str) or not token:
        raise ApiError({"message": "missing token in request"}, message="missing token in request", status=404)
    issuer = request.app[appkeys.ISSUER]
    try:
        context = await issuer.verify(token)
        account_id, owner_id = context.account_id, context.owner_id
    except InvalidCredentials as refused:
        if refused.expired:  # ours, and expired: not Kazoo's
            raise
        identity = await issuer.kazoo.verify_token(token)
        account_id, owner_id = identity.account_id, identity.owner_id
    try:
        data = await _auth_data(request, account_id, owner_id)
    except NotFound:
        raise InvalidCredentials() from None
    if owner_id is None:
        del data["owner_id"]
    request[envelope.AUTH_TOKEN] = token
    return envelope.success(request, data)


# -- apps store -------------------------------------------------------------------------

def api_url(request: web.Request) -> str:
    """The API root this request came to (``…/v2/``), as the browser sees it behind a
    reverse proxy that sets ``X-Forwarded-Proto``/``-Host``/``-Prefix``."""
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    if proto not in ("http", "https"):
        proto = request.scheme
    host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
    if not FORWARDED_HOST.match(host):
        host = request.host
    prefix = request.headers.get("X-Forwarded-Prefix", "").strip()
    if not FORWARDED_PREFIX.match(prefix):
        prefix = ""
    return f"{proto}://{host}{prefix.rstrip('/')}/v2/"


async def apps_store(request: web.Request) -> web.Response:
    """The apps of the account: Voicemails and Webhooks, allowed to every user."""
    data = [{
        "id": app_id,
        "name": name,
        "api_url": api_url(request),
        "allowed_users": "all",
        "users": [],
        "i18n": i18n,
        "tags": ["admin"],
        "masqueradable": True,
        "phase": "gold",
    } for app_id, name, i18n in ((VOICEMAILS_APP_ID, "voicemails", VOICEMAILS_I18N),
                                 (WEBHOOKS_APP_ID, "webhooks", WEBHOOKS_I18N))]
    return envelope.success(request, data, revision=envelope.list_revision(data))


# -- myaccount's badges ------------------------------------------------------------------------
# Monster's myaccount asks for these at every boot and opens an error dialog when they
# fail; kazoo_vm keeps no ledgers and enforces no trunk limits, so it answers read-only.

LIMITS_ID = "limits"
DEFAULT_LIMITS = {"allow_prepay": True, "inbound_trunks": 0, "outbound_trunks": 0, "twoway_trunks": 0}


async def ledgers_total(request: web.Request) -> web.Response:
    """The account's balance: kazoo_vm bills nothing, so 0."""
    return envelope.success(request, {"amount": 0})


async def limits(request: web.Request) -> web.Response:
    """Kazoo's ``limits`` document of the account database when there is one, else
    Kazoo's defaults (no flat-rate trunks)."""
    account_id = request.match_info["account_id"]
    try:
        doc = await services(request).accounts.doc_in_account_db(account_id, LIMITS_ID)
    except NotFound:
        return envelope.success(request, {**DEFAULT_LIMITS, "id": LIMITS_ID})
    return envelope.success(request, {**DEFAULT_LIMITS, **to_response(doc)}, revision=doc.get("_rev"))


# -- what kazoo_vm does not have ----------------------------------------------------------

async def not_found(request: web.Request) -> web.Response:
    """Kazoo's 404 ``not_found``, once the token may act on the account (as Kazoo
    authenticates these paths before finding nothing)."""
    raise NotFoundPath()


async def public_not_found(request: web.Request) -> web.Response:
    """Kazoo's 404 ``not_found`` for paths Kazoo answers without a token (whitelabel
    lookups before login, app icons in ``<img>``)."""
    raise NotFoundPath()
