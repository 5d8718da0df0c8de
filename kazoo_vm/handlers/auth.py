"""``PUT /v2/api_auth`` and ``PUT /v2/user_auth``: credentials in, a token out."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from .. import appkeys
from ..auth.throttle import client_address
from ..errors import InvalidCredentials, validation_error
from ..http import envelope
from ..kazoo.documents import alphanum_name
from ..storage.errors import NotFound
from .common import payload, services

CREDENTIALS = re.compile(r"^[0-9a-fA-F]{32}\Z|^[0-9a-fA-F]{40}\Z")


async def _auth_data(request: web.Request, account_id: str, owner_id: str | None) -> dict[str, Any]:
    account = await services(request).accounts.fetch(account_id)
    tree = account.get("pvt_tree") if isinstance(account.get("pvt_tree"), list) else []
    return {
        "account_id": account_id,
        "owner_id": owner_id,
        "account_name": account.get("name"),
        "is_reseller": bool(account.get("pvt_reseller")),
        "reseller_id": tree[0] if tree else account_id,
        "language": account.get("language", "en-us"),
        "apps": [],
    }


async def _respond(request: web.Request, account_id: str, owner_id: str | None, method: str) -> web.Response:
    token = await request.app[appkeys.ISSUER].issue(account_id, owner_id, method)
    request[envelope.AUTH_TOKEN] = token
    data = await _auth_data(request, account_id, owner_id)
    if owner_id is None:
        del data["owner_id"]
    return envelope.success(request, data, status=201)


async def api_auth(request: web.Request) -> web.Response:
    body = await payload(request)
    api_key = body.data.get("api_key") if isinstance(body.data, dict) else None
    if not isinstance(api_key, str) or not api_key:
        raise validation_error("api_key", "required", "Field is required but missing", value="api_key")
    with request.app[appkeys.THROTTLE].attempt(client_address(request), [("api_key", "*")]):
        if len(api_key) > 256:
            raise InvalidCredentials()
        for account_id in await services(request).accounts.by_api_key(api_key):
            try:
                return await _respond(request, account_id, None, "cb_api_auth")
            except NotFound:
                continue
        raise InvalidCredentials()


async def user_auth(request: web.Request) -> web.Response:
    body = await payload(request)
    data = body.data if isinstance(body.data, dict) else {}
    credentials = data.get("credentials")
    if not isinstance(credentials, str) or not CREDENTIALS.match(credentials):
        raise validation_error("credentials", "required", "Field is required but missing", value="credentials")
    method = "sha" if data.get("method") in ("sha", "sha1") or len(credentials) == 40 else "md5"
    given: dict[str, str] = {}  # the account, by its name or realm
    for field in ("account_name", "account_realm", "realm"):
        value = data.get(field)
        if isinstance(value, str) and value and len(value) <= 256:
            given[field] = value
    # Failures count under each account named, as the lookups read it.
    names = [("name", alphanum_name(value)) if field == "account_name" else ("realm", value.lower())
             for field, value in given.items()]
    with request.app[appkeys.THROTTLE].attempt(client_address(request), names):
        return await _user_auth(request, given, credentials.lower(), method)


async def _user_auth(request: web.Request, given: dict[str, str], credentials: str, method: str) -> web.Response:
    storage = services(request)
    candidates: list[str] = []
    for field, value in given.items():
        lookup = storage.accounts.by_name if field == "account_name" else storage.accounts.by_realm
        candidates.extend(await lookup(value))
    if not candidates:
        raise InvalidCredentials()
    for account_id in dict.fromkeys(candidates):
        try:
            owner_id = await storage.users.by_credentials(account_id, credentials, method)
        except NotFound:  # an account left in the index whose database is gone
            continue
        if owner_id is not None:
            try:
                return await _respond(request, account_id, owner_id, "cb_user_auth")
            except NotFound:
                continue
    raise InvalidCredentials()
