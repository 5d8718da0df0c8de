"""Kazoo's own credentials, accepted beside kazoo_vm's tokens.

When kazoo_vm answers only ``/v2/accounts/*/vmboxes*`` behind the same reverse proxy as a
Kazoo cluster (same CouchDB), Monster UI logs in against Kazoo and sends Kazoo's token.
This module checks such credentials the way crossbar does, reading Kazoo's documents and
never writing them:

* **Tokens**: JWTs signed RS256/RS384/RS512 with ``kid`` naming a document of the
  ``system_auth`` database whose attachment ``private_key.pem`` (PKCS#1 RSA) is Kazoo's
  signing key; the public key is derived from it. ``iss`` must be ``kazoo``; ``exp``,
  when present, must be later than now (``exp - now > 0``); ``identity_sig``, when
  present, must be ``base64url(HMAC-SHA256(secret, identity))`` where the identity is the
  ``device_id``, else the ``owner_id``, else the ``account_id`` claim, and the secret is
  that document's ``pvt_signature_secret`` (user/device doc, or the account doc, in the
  account database) followed by ``default.secret_for_user_signature`` of
  ``system_config/auth``.
* **Basic**: ``Authorization: Basic base64(account_id:credentials)`` where credentials
  are md5 (or sha1, per ``basic_auth_type`` of ``crossbar.auth``) of
  ``lower(username):password``, matching exactly one enabled user of that account.

Keys and the server secret are cached; a token that fails with a cached value makes
one fresh read (Kazoo may rotate its key under the same ``kid``), at most once a second
per key so forged tokens cannot turn every request into a database read.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from ..errors import InvalidCredentials
from ..kazoo import naming
from ..services import Services
from ..storage.accounts import system_config, system_key_pem
from ..storage.errors import NotFound

KAZOO_ISSUER = "kazoo"
ALGORITHMS = ("RS256", "RS384", "RS512")
AUTH_CATEGORY = "auth"  # system_config/auth
KEY_ATTACHMENT = "private_key.pem"
SERVER_SECRET_KEY = "secret_for_user_signature"
SYSTEM_KEY = "system_key"
PVT_SIGNATURE_SECRET = "pvt_signature_secret"
CROSSBAR_AUTH_CATEGORY = "crossbar.auth"
BASIC_AUTH_TYPE = "basic_auth_type"
# A key id becomes a document id: no design/local documents, nothing unbounded.
KEY_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._@-]{0,127}\Z")
IDENTITY_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}\Z")
HEX_CREDENTIALS = re.compile(r"^[0-9a-fA-F]{32}\Z|^[0-9a-fA-F]{40}\Z")
MAX_TOKEN = 8192
REREAD_INTERVAL = 1.0
MAX_KEYS = 32
SECRET_TTL = 60.0


@dataclass(frozen=True)
class KazooIdentity:
    """Who a valid Kazoo credential speaks for."""

    account_id: str
    owner_id: str | None


@dataclass
class _CachedKey:
    key: RSAPublicKey
    read_at: float


@dataclass
class _CachedSecret:
    secret: str | None
    read_at: float


def b64url_decode(text: str) -> bytes:
    """Kazoo's base64url (padding optional); ValueError when malformed."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise ValueError("not base64url")
    stripped = text.rstrip("=")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def identity_signature(identity: str, identity_secret: str, server_secret: str) -> str:
    """What Kazoo puts in ``identity_sig``: base64url (unpadded) of
    HMAC-SHA256(key = identity secret + server secret, message = identity)."""
    key = (identity_secret + server_secret).encode()
    return b64url_encode(hmac.new(key, identity.encode(), hashlib.sha256).digest())


def public_key_from_pem(pem: bytes) -> RSAPublicKey | None:
    """The public half of Kazoo's PEM private key (PKCS#1 or PKCS#8), or None."""
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        return None
    if not isinstance(private, RSAPrivateKey):
        return None
    return private.public_key()


def split_basic(encoded: str) -> tuple[str, str]:
    """``(account_id, credentials)`` of ``base64(account_id:credentials)``;
    InvalidCredentials when it is not that."""
    if len(encoded) > 1024:
        raise InvalidCredentials()
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, ValueError):
        raise InvalidCredentials() from None
    account_id, colon, credentials = decoded.partition(":")
    if not colon or not naming.is_account_id(account_id) or not credentials:
        raise InvalidCredentials()
    return account_id, credentials


def _is_time(expiry: Any) -> bool:
    return isinstance(expiry, int | float) and not isinstance(expiry, bool)


def _in_future(expiry: Any) -> bool:
    """Kazoo's strict check: ``exp - now > 0`` (a token is dead in its ``exp`` second)."""
    return _is_time(expiry) and bool(expiry - time.time() > 0)


def _same_key(left: RSAPublicKey | None, right: RSAPublicKey | None) -> bool:
    if left is None or right is None:
        return left is right
    return left.public_numbers() == right.public_numbers()


class KazooCredentials:
    """Checks Kazoo's tokens and Basic credentials against Kazoo's documents."""

    def __init__(self, services: Services, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._services = services
        self._clock = clock
        self._keys: OrderedDict[str, _CachedKey] = OrderedDict()
        self._rereads: dict[str, float] = {}
        self._server_secret: _CachedSecret | None = None
        self._lock = asyncio.Lock()

    # -- tokens -----------------------------------------------------------------------

    async def verify_token(self, token: str) -> KazooIdentity:
        """The identity of a valid Kazoo JWT; InvalidCredentials otherwise."""
        if token.count(".") != 2 or len(token) > MAX_TOKEN:
            raise InvalidCredentials()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidCredentials() from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS or not isinstance(kid, str) or not KEY_ID.match(kid):
            raise InvalidCredentials()
        claims = await self._verified_claims(token, str(alg), kid)
        if claims.get("iss") != KAZOO_ISSUER:
            raise InvalidCredentials()
        if "exp" in claims and not _in_future(claims["exp"]):
            raise InvalidCredentials(expired=_is_time(claims["exp"]))
        account_id, owner_id = claims.get("account_id"), claims.get("owner_id")
        if not isinstance(account_id, str) or not naming.is_account_id(account_id):
            raise InvalidCredentials()
        if owner_id is not None and (not isinstance(owner_id, str) or not IDENTITY_ID.match(owner_id)):
            raise InvalidCredentials()
        if "identity_sig" in claims:
            await self._check_identity(claims, account_id)
        return KazooIdentity(account_id=account_id, owner_id=owner_id)

    async def _verified_claims(self, token: str, alg: str, kid: str) -> dict[str, Any]:
        key, fresh = await self._key(kid)
        while True:
            if key is not None:
                try:
                    claims = jwt.decode(token, key, algorithms=[alg],
                                        options={"verify_exp": False, "verify_aud": False,
                                                 "verify_iat": False, "verify_nbf": False})
                except jwt.InvalidSignatureError:
                    pass
                except jwt.PyJWTError:
                    raise InvalidCredentials() from None
                else:
                    return dict(claims)
            if fresh:
                raise InvalidCredentials()
            # A cached key (or a cached absence) failed: Kazoo may have rotated it.
            reread = await self._reread_key(kid, key)
            if reread is None:
                raise InvalidCredentials()
            key, fresh = reread, True

    async def _key(self, kid: str) -> tuple[RSAPublicKey | None, bool]:
        """The public key of ``kid`` and whether it was read just now."""
        cached = self._keys.get(kid)
        if cached is not None:
            self._keys.move_to_end(kid)
            return cached.key, False
        key = await self._read_key(kid)
        return key, True

    async def _read_key(self, kid: str) -> RSAPublicKey | None:
        pem = await system_key_pem(self._services.store, kid, KEY_ATTACHMENT)
        key = public_key_from_pem(pem) if pem is not None else None
        now = self._clock()
        if key is None:
            self._keys.pop(kid, None)
        else:
            self._keys[kid] = _CachedKey(key, now)
            self._keys.move_to_end(kid)
            while len(self._keys) > MAX_KEYS:
                self._keys.popitem(last=False)
        return key

    async def _reread_key(self, kid: str, failed: RSAPublicKey | None) -> RSAPublicKey | None:
        """A fresh read of ``kid`` when the cached key failed, unless one was made less
        than REREAD_INTERVAL ago; None when that gives nothing new."""
        async with self._lock:
            current = self._keys.get(kid)
            if current is not None and not _same_key(current.key, failed):
                return current.key  # another request re-read it meanwhile
            last = self._rereads.get(kid)
            now = self._clock()
            if last is not None and now - last < REREAD_INTERVAL:
                return None
            self._rereads[kid] = now
            if len(self._rereads) > MAX_KEYS:
                self._rereads.pop(next(iter(self._rereads)))
            key = await self._read_key(kid)
        return None if key is None or _same_key(key, failed) else key

    # -- identity signature -----------------------------------------------------------

    async def _check_identity(self, claims: dict[str, Any], account_id: str) -> None:
        given = claims.get("identity_sig")
        if not isinstance(given, str) or not given:
            raise InvalidCredentials()
        try:
            signature = b64url_decode(given)
        except ValueError:
            raise InvalidCredentials() from None
        identity = account_id
        for claim in ("device_id", "owner_id"):
            value = claims.get(claim)
            if value is not None:
                if not isinstance(value, str) or not IDENTITY_ID.match(value):
                    raise InvalidCredentials()
                identity = value
                break
        try:
            doc = await self._services.accounts.doc_in_account_db(account_id, identity)
        except NotFound:
            raise InvalidCredentials() from None
        identity_secret = doc.get(PVT_SIGNATURE_SECRET)
        if not isinstance(identity_secret, str) or not identity_secret:
            raise InvalidCredentials()
        server_secret, fresh = await self._server_secret_value(force=False)
        while True:
            if server_secret is not None:
                expected = b64url_decode(identity_signature(identity, identity_secret, server_secret))
                if hmac.compare_digest(expected, signature):
                    return
            if fresh:
                raise InvalidCredentials()
            server_secret, fresh = await self._server_secret_value(force=True)

    async def _server_secret_value(self, *, force: bool) -> tuple[str | None, bool]:
        """``default.secret_for_user_signature`` of ``system_config/auth`` (cached for a
        minute, re-read on a mismatch at most once a second) and whether it is fresh."""
        cached = self._server_secret
        now = self._clock()
        if cached is not None and not force and now - cached.read_at < SECRET_TTL:
            return cached.secret, False
        if cached is not None and force and now - cached.read_at < REREAD_INTERVAL:
            return cached.secret, True
        doc = await system_config(self._services.store, AUTH_CATEGORY)
        default = doc.get("default")
        value = default.get(SERVER_SECRET_KEY) if isinstance(default, dict) else None
        secret = value if isinstance(value, str) and value else None
        self._server_secret = _CachedSecret(secret, now)
        return secret, True

    # -- Basic ------------------------------------------------------------------------

    async def verify_basic(self, encoded: str) -> KazooIdentity:
        """The user of ``base64(account_id:credentials)``; InvalidCredentials otherwise."""
        account_id, credentials = split_basic(encoded)
        method = await self._basic_type(account_id)
        if method in ("md5", "sha"):
            if not HEX_CREDENTIALS.match(credentials):
                raise InvalidCredentials()
            lookup = credentials.lower()
        else:  # Kazoo's third form: the plain "username:password" itself
            username, colon, password = credentials.partition(":")
            if not colon:
                raise InvalidCredentials()
            lookup, method = hashlib.md5(f"{username}:{password}".encode()).hexdigest(), "md5"
        owners = await self._services.users.owners_by_credentials(account_id, lookup, method)
        if len(owners) != 1:
            raise InvalidCredentials()
        return KazooIdentity(account_id=account_id, owner_id=owners[0])

    async def _basic_type(self, account_id: str) -> str:
        """``basic_auth_type`` of the account's ``configs_crossbar.auth``, else of
        ``system_config/crossbar.auth``, else ``md5``."""
        value = (await self._services.accounts.config(account_id, CROSSBAR_AUTH_CATEGORY)).get(BASIC_AUTH_TYPE)
        if not isinstance(value, str) or not value:
            default = (await system_config(self._services.store, CROSSBAR_AUTH_CATEGORY)).get("default")
            value = default.get(BASIC_AUTH_TYPE) if isinstance(default, dict) else None
        return value if isinstance(value, str) and value else "md5"
