"""Tokens and account scope.

kazoo_vm signs its own JWTs (HS256) with a secret shared by every instance through
CouchDB (``system_config/kazoo_vm.auth``) unless ``KAZOO_VM_JWT_SECRET`` gives one. A
token acts on its own account and on the accounts below it (``pvt_tree``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web

from ..config import Config
from ..errors import BadIdentifier, Forbidden, InvalidAccountId, InvalidCredentials
from ..kazoo import naming
from ..services import Services
from ..storage.accounts import signing_secret
from ..storage.errors import NotFound
from ..storage.ttl_cache import TtlCache
from .kazoo_tokens import KazooCredentials, split_basic
from .throttle import LoginThrottle, client_address

ISSUER_NAME = "kazoo_vm"
ALGORITHM = "HS256"
# Tokens this process verified, kept so a client's next requests skip PyJWT's
# decode/HMAC (a visible share of a single-document request's CPU); ``exp`` is still
# checked on every use. Pure computation: nothing another instance does changes it.
VERIFIED_TTL = 60.0


@dataclass(frozen=True)
class AuthContext:
    account_id: str
    owner_id: str | None
    token: str


AUTH: web.RequestKey[AuthContext] = web.RequestKey("auth", AuthContext)


class TokenIssuer:
    def __init__(self, config: Config, services: Services) -> None:
        self._configured = config.jwt_secret
        self._lifetime = config.token_lifetime
        self._services = services
        self._secret: str | None = config.jwt_secret
        self._lock = asyncio.Lock()
        # Kazoo's own tokens and Basic credentials, accepted beside ours.
        self.kazoo = KazooCredentials(services)
        self._verified: TtlCache[str, tuple[float, AuthContext]] = TtlCache(VERIFIED_TTL)

    async def secret(self) -> str:
        if self._secret is None:
            async with self._lock:
                if self._secret is None:
                    self._secret = await signing_secret(self._services.store)
        return self._secret

    async def issue(self, account_id: str, owner_id: str | None, method: str) -> str:
        now = int(time.time())
        claims: dict[str, object] = {"account_id": account_id, "iss": ISSUER_NAME, "method": method,
                                     "iat": now, "exp": now + self._lifetime}
        if owner_id is not None:
            claims["owner_id"] = owner_id
        return jwt.encode(claims, await self.secret(), algorithm=ALGORITHM)

    async def verify(self, token: str) -> AuthContext:
        """The context of a valid token; InvalidCredentials otherwise."""
        known = self._verified.get(token)
        if known is not None:
            expires, context = known
            if time.time() < expires:
                return context
            self._verified.forget(token)
        if token.count(".") != 2 or len(token) > 8192:
            raise InvalidCredentials()
        try:
            claims = jwt.decode(token, await self.secret(), algorithms=[ALGORITHM],
                                options={"require": ["exp", "account_id"]}, issuer=ISSUER_NAME)
        except jwt.ExpiredSignatureError:  # checked once the signature is
            raise InvalidCredentials(expired=True) from None
        except jwt.PyJWTError:
            raise InvalidCredentials() from None
        account_id, owner_id = claims.get("account_id"), claims.get("owner_id")
        if not isinstance(account_id, str) or not naming.is_account_id(account_id):
            raise InvalidCredentials()
        if owner_id is not None and not isinstance(owner_id, str):
            raise InvalidCredentials()
        context = AuthContext(account_id=account_id, owner_id=owner_id, token=token)
        exp = claims.get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            self._verified.put(token, (float(exp), context))
        return context


def token_from(request: web.Request) -> str | None:
    """Kazoo's order: ``X-Auth-Token``, then ``?auth_token=``, then ``Authorization``."""
    header = request.headers.get("X-Auth-Token", "").strip()
    if header:
        return header
    query = request.query.get("auth_token", "").strip()
    if query:
        return query
    authorization = request.headers.get("Authorization", "").strip()
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    if authorization and " " not in authorization:
        return authorization
    return None


def basic_from(request: web.Request) -> str | None:
    """The base64 part of ``Authorization: Basic …`` (Kazoo's basic auth)."""
    authorization = request.headers.get("Authorization", "").strip()
    if authorization[:6].lower() == "basic ":
        return authorization[6:].strip() or None
    return None


def _basic_names(encoded: str) -> list[tuple[str, str]]:
    """What Basic credentials are counted under when they fail (auth/throttle.py): their account."""
    try:
        return [("account", split_basic(encoded)[0])]
    except InvalidCredentials:
        return []


async def authenticate(request: web.Request, issuer: TokenIssuer, throttle: LoginThrottle) -> AuthContext:
    """kazoo_vm's own token, else Kazoo's token, else Kazoo's Basic credentials (their
    failures slowed down by ``throttle``; a token cannot be guessed)."""
    token = token_from(request)
    if token is None:
        basic = basic_from(request)
        if basic is None:
            raise InvalidCredentials()
        with throttle.attempt(client_address(request), _basic_names(basic)):
            identity = await issuer.kazoo.verify_basic(basic)
        return AuthContext(account_id=identity.account_id, owner_id=identity.owner_id, token="")
    try:
        return await issuer.verify(token)
    except InvalidCredentials as refused:
        if refused.expired:  # ours, and expired: not Kazoo's
            raise
        identity = await issuer.kazoo.verify_token(token)
    return AuthContext(account_id=identity.account_id, owner_id=identity.owner_id, token=token)


ACCOUNT: web.RequestKey[dict[str, Any]] = web.RequestKey("account", dict)


async def authorize_account(services: Services, context: AuthContext, account_id: str) -> dict[str, Any]:
    """The account doc, once the account is well formed (else 404), exists (404) and is
    the token's account or one of its descendants (403). The doc may be this process's
    copy of up to ``KAZOO_VM_CACHE_TTL`` seconds ago: a deleted account is refused
    within that time."""
    if not naming.is_account_id(account_id):
        raise InvalidAccountId(account_id)
    try:
        account = await services.accounts.fetch(account_id, cached=True)
    except NotFound:
        raise BadIdentifier(account_id) from None
    tree = account.get("pvt_tree")
    if account_id == context.account_id or (isinstance(tree, list) and context.account_id in tree):
        return account
    raise Forbidden()
