"""Kazoo's own credentials, accepted beside kazoo_vm's tokens (kazoo_vm behind the same
reverse proxy as a Kazoo cluster, same CouchDB).

The Kazoo side is built here the way Kazoo builds it: ``system_config/auth`` with
``default.system_key`` and ``default.secret_for_user_signature``, the key document
``system_auth/<kid>`` with the attachment ``private_key.pem`` (PKCS#1 RSA, 2048 bits,
public exponent 2049), a ``pvt_signature_secret`` on the user (or account) document, and
tokens signed RS256 with ``kid``, ``iss: kazoo`` and ``identity_sig`` =
base64url(HMAC-SHA256(user secret + server secret, owner id)).

``system_auth`` and ``system_config`` are global: every test uses its own key ids, deletes
the key documents it made and puts ``system_config/auth`` back as it found it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import Api, assert_error, login, make_account, stored_doc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kazoo_vm.kazoo import naming
from kazoo_vm.services import Services
from kazoo_vm.storage.errors import NotFound

Client = TestClient[web.Request, web.Application]
KAZOO_EXPONENT = 2049
PEM_CONTENT_TYPE = "application/x-pem-file"


# -- Kazoo's keys ------------------------------------------------------------------------

def _probable_prime(candidate: int) -> bool:
    for small in (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47):
        if candidate % small == 0:
            return candidate == small
    odd, twos = candidate - 1, 0
    while odd % 2 == 0:
        odd, twos = odd // 2, twos + 1
    for _ in range(40):
        witness = pow(secrets.randbelow(candidate - 3) + 2, odd, candidate)
        if witness in (1, candidate - 1):
            continue
        for _ in range(twos - 1):
            witness = pow(witness, 2, candidate)
            if witness == candidate - 1:
                break
        else:
            return False
    return True


def _prime(bits: int, exponent: int) -> int:
    while True:
        candidate = secrets.randbits(bits) | (3 << (bits - 2)) | 1
        if math.gcd(exponent, candidate - 1) == 1 and _probable_prime(candidate):
            return candidate


def python_rsa_key(exponent: int) -> rsa.RSAPrivateKey:
    """An RSA-2048 key with any public exponent (cryptography only generates 3 and 65537)."""
    while True:
        p, q = _prime(1024, exponent), _prime(1024, exponent)
        if p != q and (p * q).bit_length() == 2048:
            break
    d = pow(exponent, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q),
                                    rsa.RSAPublicNumbers(exponent, p * q))
    return numbers.private_key()


def kazoo_rsa_key() -> rsa.RSAPrivateKey:
    """What Kazoo's ``public_key:generate_key({rsa, 2048, 2049})`` makes: OpenSSL when
    it is installed (fast), else plain Python."""
    openssl = shutil.which("openssl")
    if openssl:
        done = subprocess.run([openssl, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                               "-pkeyopt", f"rsa_keygen_pubexp:{KAZOO_EXPONENT}"], capture_output=True, timeout=60)
        if done.returncode == 0:
            key = serialization.load_pem_private_key(done.stdout, password=None)
            assert isinstance(key, rsa.RSAPrivateKey)
            return key
    return python_rsa_key(KAZOO_EXPONENT)


def pkcs1_pem(key: rsa.RSAPrivateKey) -> bytes:
    """Kazoo's ``public_key:pem_encode`` of an ``RSAPrivateKey``: PKCS#1."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


@pytest.fixture(scope="session")
def kazoo_keys() -> list[rsa.RSAPrivateKey]:
    return [kazoo_rsa_key() for _ in range(2)]


# -- Kazoo's documents ----------------------------------------------------------------------

@dataclass
class KazooAuth:
    """The Kazoo side of one test: keys in ``system_auth`` and the server secret."""

    services: Services
    server_secret: str
    kids: list[str]

    @property
    def couch(self) -> Any:
        return self.services.store.couch

    async def install_key(self, key: rsa.RSAPrivateKey, kid: str | None = None) -> str:
        """Store ``key`` as Kazoo does (``new_private_key`` + ``save_private_key``), or
        replace the attachment when ``kid`` exists (a rotation under the same kid)."""
        kid = kid or uuid.uuid4().hex
        await self.couch.create_db(naming.SYSTEM_AUTH_DB)
        try:
            doc = await self.couch.get_doc(naming.SYSTEM_AUTH_DB, kid)
        except NotFound:
            doc = {"_id": kid, "pvt_type": "system_key", "pvt_created": int(time.time()) + 62167219200}
            await self.couch.put_doc(naming.SYSTEM_AUTH_DB, doc)
            self.kids.append(kid)
        await self.couch.put_attachment(naming.SYSTEM_AUTH_DB, kid, doc["_rev"], "private_key.pem", pkcs1_pem(key),
                                        PEM_CONTENT_TYPE)
        return kid

    async def key_doc(self, kid: str) -> dict[str, Any]:
        return await self.couch.get_doc(naming.SYSTEM_AUTH_DB, kid)

    async def set_signature_secret(self, account_id: str, doc_id: str, secret: str | None = None) -> str:
        """Kazoo's ``pvt_signature_secret`` (16 random bytes, hex) on a doc of the account DB."""
        secret = secret or secrets.token_hex(16)
        db = naming.account_db(account_id)
        doc = await self.couch.get_doc(db, doc_id)
        doc["pvt_signature_secret"] = secret
        await self.couch.put_doc(db, doc)
        return secret


async def _cleanup(auth: KazooAuth, original: dict[str, Any] | None) -> None:
    couch = auth.couch
    for kid in auth.kids:
        try:
            doc = await couch.get_doc(naming.SYSTEM_AUTH_DB, kid)
            await couch.delete_doc(naming.SYSTEM_AUTH_DB, kid, doc["_rev"])
        except NotFound:
            pass
    if original is None:
        try:
            doc = await couch.get_doc(naming.SYSTEM_CONFIG_DB, "auth")
            await couch.delete_doc(naming.SYSTEM_CONFIG_DB, "auth", doc["_rev"])
        except NotFound:
            pass


@pytest.fixture
async def kazoo(services: Services) -> AsyncIterator[KazooAuth]:
    """``system_config/auth`` with a server secret (the existing one if there is one,
    else ours, removed afterwards), and the key documents this test makes."""
    await services.store.setup()
    couch = services.store.couch
    try:
        original: dict[str, Any] | None = await couch.get_doc(naming.SYSTEM_CONFIG_DB, "auth")
    except NotFound:
        original = None
    default = (original or {}).get("default") or {}
    secret = default.get("secret_for_user_signature")
    if not isinstance(secret, str) or not secret:
        secret = secrets.token_hex(16)
        doc = dict(original or {"_id": "auth"})
        doc["default"] = {**default, "secret_for_user_signature": secret}
        await couch.put_doc(naming.SYSTEM_CONFIG_DB, doc)
    auth = KazooAuth(services, secret, [])
    try:
        yield auth
    finally:
        await _cleanup(auth, original)
        if original is not None and original.get("default", {}).get("secret_for_user_signature") != secret:
            current = await couch.get_doc(naming.SYSTEM_CONFIG_DB, "auth")
            await couch.put_doc(naming.SYSTEM_CONFIG_DB, {**original, "_rev": current["_rev"]})


# -- minting tokens like Kazoo ----------------------------------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def identity_sig(identity: str, identity_secret: str, server_secret: str) -> str:
    """``kz_auth_identity:sign``: HMAC-SHA256 keyed with the identity's secret followed
    by the server's, over the identity (owner id, or account id), base64url."""
    return b64url(hmac.new((identity_secret + server_secret).encode(), identity.encode(), hashlib.sha256).digest())


def kazoo_token(key: rsa.RSAPrivateKey, kid: str, *, account_id: str, owner_id: str | None = None,
                sig: str | None = None, method: str = "cb_user_auth", lifetime: int | None = 3600,
                alg: str = "RS256", **extra: Any) -> str:
    """A token as ``crossbar_auth:create_auth_token`` → ``kz_auth_jwt:encode`` makes it."""
    claims: dict[str, Any] = {"account_id": account_id, "method": method, "iss": "kazoo"}
    if sig is not None:
        claims["identity_sig"] = sig
    if owner_id is not None:
        claims["owner_id"] = owner_id
    if lifetime is not None:
        claims["exp"] = int(time.time()) + lifetime
    claims.update(extra)
    return jwt.encode(claims, key, algorithm=alg, headers={"typ": "JWT", "kid": kid})


@dataclass
class Scene:
    """An account with a user as Kazoo would have them, and the token Kazoo gave the user."""

    api: Api
    account: dict[str, Any]
    user: dict[str, Any]
    user_secret: str
    kid: str
    key: rsa.RSAPrivateKey
    token: str

    def mint(self, **kwargs: Any) -> str:
        options: dict[str, Any] = {"account_id": self.account["_id"], "owner_id": self.user["_id"],
                                   "sig": self.sig()}
        options.update(kwargs)
        key = options.pop("key", self.key)
        kid = options.pop("kid", self.kid)
        return kazoo_token(key, kid, **options)

    def sig(self, identity: str | None = None, secret: str | None = None, server: str | None = None) -> str:
        return identity_sig(identity or self.user["_id"], secret or self.user_secret, server or self.server_secret)

    server_secret: str = ""


@pytest.fixture
async def scene(client: Client, services: Services, account: dict[str, Any], kazoo: KazooAuth,
                kazoo_keys: list[rsa.RSAPrivateKey]) -> Scene:
    user = await services.users.create(account["_id"], username="kazoouser", password="secret",
                                       first_name="Kay", last_name="Zoo")
    user_secret = await kazoo.set_signature_secret(account["_id"], user["_id"])
    kid = await kazoo.install_key(kazoo_keys[0])
    scene = Scene(api=Api(client, account["_id"], None), account=account, user=user, user_secret=user_secret,
                  kid=kid, key=kazoo_keys[0], token="", server_secret=kazoo.server_secret)
    scene.token = scene.mint()
    return scene




# -- the key as Kazoo makes it ----------------------------------------------------------------

def test_kazoo_keys_have_kazoos_shape(kazoo_keys: list[rsa.RSAPrivateKey]) -> None:
    for key in kazoo_keys:
        assert key.key_size == 2048
        assert key.public_key().public_numbers().e == KAZOO_EXPONENT
        assert pkcs1_pem(key).startswith(b"-----BEGIN RSA PRIVATE KEY-----\n")
    with pytest.raises(ValueError):  # why the tests make their own keys
        rsa.generate_private_key(public_exponent=KAZOO_EXPONENT, key_size=2048)


def test_python_fallback_makes_a_kazoo_shaped_key() -> None:
    key = python_rsa_key(KAZOO_EXPONENT)
    assert key.public_key().public_numbers().e == KAZOO_EXPONENT
    token = jwt.encode({"a": 1}, key, algorithm="RS256")
    loaded = serialization.load_pem_private_key(pkcs1_pem(key), password=None)
    assert jwt.decode(token, loaded.public_key(), algorithms=["RS256"]) == {"a": 1}  # type: ignore[arg-type]


# -- accepted ----------------------------------------------------------------------------

async def test_kazoo_user_token_is_accepted(scene: Scene) -> None:
    reply = await scene.api.get("/vmboxes", token=scene.token)
    assert reply.status == 200, reply.body
    assert reply.json["auth_token"] == scene.token
    created = await scene.api.put("/vmboxes", {"name": "From Kazoo's token", "mailbox": "4000"}, token=scene.token)
    assert created.status == 201, created.body


async def test_kazoo_token_is_accepted_where_kazoo_accepts_tokens(scene: Scene) -> None:
    assert (await scene.api.get("/vmboxes", params={"auth_token": scene.token})).status == 200
    assert (await scene.api.get("/vmboxes", headers={"Authorization": f"Bearer {scene.token}"})).status == 200
    assert (await scene.api.get("/vmboxes", headers={"Authorization": scene.token})).status == 200


@pytest.mark.parametrize("alg", ["RS384", "RS512"])
async def test_rs384_and_rs512_are_accepted(scene: Scene, alg: str) -> None:
    assert (await scene.api.get("/vmboxes", token=scene.mint(alg=alg))).status == 200


async def test_api_auth_token_signs_the_account_id(scene: Scene, kazoo: KazooAuth) -> None:
    """``cb_api_auth`` tokens have no owner: the identity is the account, its secret on
    the account doc in the account database."""
    account_id = scene.account["_id"]
    account_secret = await kazoo.set_signature_secret(account_id, account_id)
    token = scene.mint(owner_id=None, method="cb_api_auth", sig=scene.sig(account_id, account_secret))
    assert (await scene.api.get("/vmboxes", token=token)).status == 200
    wrong = scene.mint(owner_id=None, method="cb_api_auth", sig=scene.sig(account_id, scene.user_secret))
    assert_error(await scene.api.get("/vmboxes", token=wrong), 401, "invalid_credentials")


async def test_device_tokens_sign_the_device_id(scene: Scene, kazoo: KazooAuth, services: Services) -> None:
    device_id = uuid.uuid4().hex
    db = naming.account_db(scene.account["_id"])
    await services.store.couch.put_doc(db, {"_id": device_id, "pvt_type": "device", "name": "desk phone"})
    device_secret = await kazoo.set_signature_secret(scene.account["_id"], device_id)
    token = scene.mint(device_id=device_id, sig=scene.sig(device_id, device_secret))
    assert (await scene.api.get("/vmboxes", token=token)).status == 200
    owner_signed = scene.mint(device_id=device_id)  # signed over the owner: not what Kazoo checks
    assert_error(await scene.api.get("/vmboxes", token=owner_signed), 401, "invalid_credentials")


async def test_without_identity_sig_or_exp_the_token_is_accepted(scene: Scene) -> None:
    """Kazoo checks ``identity_sig`` and ``exp`` only when present (no expiry when
    ``token_auth_expiry_s`` is disabled)."""
    assert (await scene.api.get("/vmboxes", token=scene.mint(sig=None))).status == 200
    assert (await scene.api.get("/vmboxes", token=scene.mint(lifetime=None))).status == 200


async def test_both_token_kinds_are_accepted_at_the_same_time(client: Client, scene: Scene) -> None:
    own = await login(client, scene.account["pvt_api_key"])
    for token in (own, scene.token, own, scene.token):
        reply = await scene.api.get("/vmboxes", token=token)
        assert reply.status == 200, reply.body
        assert reply.json["auth_token"] == token


async def test_kazoo_token_keeps_kazoo_vms_account_scope(scene: Scene, services: Services) -> None:
    child = await make_account(services, name="Kazoo child", parent_id=scene.account["_id"])
    assert (await scene.api.get(f"/v2/accounts/{child['_id']}/vmboxes", token=scene.token)).status == 200
    stranger = await make_account(services, name="Kazoo stranger")
    assert_error(await scene.api.get(f"/v2/accounts/{stranger['_id']}/vmboxes", token=scene.token), 403, "forbidden")


async def test_tokeninfo_accepts_kazoos_token(scene: Scene) -> None:
    reply = await scene.api.post("/v2/auth/tokeninfo", {"token": scene.token}, token="")
    assert reply.status == 200, reply.body
    assert (reply.data["account_id"], reply.data["owner_id"]) == (scene.account["_id"], scene.user["_id"])


# -- refused ------------------------------------------------------------------------------

async def test_expired_token_is_refused_saying_it_expired(scene: Scene) -> None:
    data = assert_error(await scene.api.get("/vmboxes", token=scene.mint(lifetime=-1)), 401, "invalid_credentials")
    assert data == {"message": "invalid credentials", "expired": True}


async def test_exp_is_strict_a_token_is_dead_in_its_exp_second(scene: Scene) -> None:
    """Kazoo: ``Expiration - now > 0``; PyJWT's own check would still accept it."""
    assert_error(await scene.api.get("/vmboxes", token=scene.mint(lifetime=0)), 401, "invalid_credentials")


async def test_exp_that_is_not_a_number_is_refused(scene: Scene) -> None:
    token = scene.mint(lifetime=None, exp="tomorrow")
    assert_error(await scene.api.get("/vmboxes", token=token), 401, "invalid_credentials")


async def test_token_resigned_with_another_key_is_refused(scene: Scene, kazoo_keys: list[rsa.RSAPrivateKey]) -> None:
    assert (await scene.api.get("/vmboxes", token=scene.token)).status == 200  # the right key is cached
    forged = scene.mint(key=kazoo_keys[1])
    assert_error(await scene.api.get("/vmboxes", token=forged), 401, "invalid_credentials")
    assert (await scene.api.get("/vmboxes", token=scene.token)).status == 200


async def test_wrong_identity_sig_is_refused(scene: Scene) -> None:
    for sig in (scene.sig(secret="0" * 32),                                   # another user secret
                scene.sig(server="f" * 32),                                   # another server secret
                scene.sig(identity=uuid.uuid4().hex),                         # signed over someone else
                b64url(b"\x00" * 32), "", "not*base64"):
        token = scene.mint(sig=sig)
        assert_error(await scene.api.get("/vmboxes", token=token), 401, "invalid_credentials")


async def test_identity_sig_of_another_users_token_is_refused(scene: Scene, services: Services,
                                                              kazoo: KazooAuth) -> None:
    other = await services.users.create(scene.account["_id"], username="kazoo.other", password="pw")
    other_secret = await kazoo.set_signature_secret(scene.account["_id"], other["_id"])
    stolen_sig = scene.sig(other["_id"], other_secret)
    assert_error(await scene.api.get("/vmboxes", token=scene.mint(sig=stolen_sig)), 401, "invalid_credentials")
    assert (await scene.api.get("/vmboxes", token=scene.mint(owner_id=other["_id"], sig=stolen_sig))).status == 200


async def test_identity_sig_without_a_secret_on_the_user_is_refused_and_nothing_is_written(
        scene: Scene, services: Services) -> None:
    """Kazoo would generate a secret there; kazoo_vm only reads Kazoo's documents."""
    bare = await services.users.create(scene.account["_id"], username="kazoo.bare", password="pw")
    token = scene.mint(owner_id=bare["_id"], sig=scene.sig(bare["_id"], "anything"))
    assert_error(await scene.api.get("/vmboxes", token=token), 401, "invalid_credentials")
    stored = await stored_doc(services, naming.account_db(scene.account["_id"]), bare["_id"])
    assert stored["_rev"] == bare["_rev"]
    assert "pvt_signature_secret" not in stored
    ghost = scene.mint(owner_id=uuid.uuid4().hex, sig=scene.sig(identity=uuid.uuid4().hex))
    assert_error(await scene.api.get("/vmboxes", token=ghost), 401, "invalid_credentials")


async def test_other_issuers_algorithms_and_kids_are_refused(scene: Scene, kazoo: KazooAuth) -> None:
    bad = [
        scene.mint(iss="someone-else"),
        scene.mint(kid=uuid.uuid4().hex),                       # no such key document
        scene.mint(kid="_design/whatever"),                     # not a key id
        scene.mint(account_id="not-an-account"),
        jwt.encode({"account_id": scene.account["_id"], "iss": "kazoo", "exp": int(time.time()) + 60},
                   "a-shared-secret-of-sufficient-length", algorithm="HS256", headers={"kid": scene.kid}),
        jwt.encode({"account_id": scene.account["_id"], "iss": "kazoo"}, None, algorithm="none",
                   headers={"kid": scene.kid}),
        scene.token + "x",
    ]
    for token in bad:
        assert_error(await scene.api.get("/vmboxes", token=token), 401, "invalid_credentials")
    no_pem = uuid.uuid4().hex
    await kazoo.couch.put_doc(naming.SYSTEM_AUTH_DB, {"_id": no_pem, "pvt_type": "system_key"})
    kazoo.kids.append(no_pem)
    assert_error(await scene.api.get("/vmboxes", token=scene.mint(kid=no_pem)), 401, "invalid_credentials")


async def test_server_secret_missing_refuses_signed_tokens(scene: Scene, services: Services) -> None:
    couch = services.store.couch
    config = await couch.get_doc(naming.SYSTEM_CONFIG_DB, "auth")
    saved = dict(config)
    config["default"] = {key: value for key, value in config["default"].items()
                         if key != "secret_for_user_signature"}
    await couch.put_doc(naming.SYSTEM_CONFIG_DB, config)
    try:
        assert_error(await scene.api.get("/vmboxes", token=scene.token), 401, "invalid_credentials")
        assert (await scene.api.get("/vmboxes", token=scene.mint(sig=None))).status == 200
    finally:
        current = await couch.get_doc(naming.SYSTEM_CONFIG_DB, "auth")
        await couch.put_doc(naming.SYSTEM_CONFIG_DB, {**saved, "_rev": current["_rev"]})


# -- Kazoo rotates its key ----------------------------------------------------------------------

async def test_key_rotated_under_the_same_kid_is_read_again(scene: Scene, kazoo: KazooAuth,
                                                            kazoo_keys: list[rsa.RSAPrivateKey]) -> None:
    assert (await scene.api.get("/vmboxes", token=scene.token)).status == 200  # old key now cached
    await kazoo.install_key(kazoo_keys[1], scene.kid)
    rotated = scene.mint(key=kazoo_keys[1])
    assert (await scene.api.get("/vmboxes", token=rotated)).status == 200
    assert_error(await scene.api.get("/vmboxes", token=scene.token), 401, "invalid_credentials")


async def test_kazoos_documents_are_never_written(scene: Scene, kazoo: KazooAuth, services: Services,
                                                  kazoo_keys: list[rsa.RSAPrivateKey]) -> None:
    before_key = await kazoo.key_doc(scene.kid)
    before_config = await services.store.couch.get_doc(naming.SYSTEM_CONFIG_DB, "auth")
    before_user = await stored_doc(services, naming.account_db(scene.account["_id"]), scene.user["_id"])
    for token in (scene.token, scene.mint(key=kazoo_keys[1]), scene.mint(sig="AAAA"), scene.mint(kid="k" * 20)):
        await scene.api.get("/vmboxes", token=token)
    assert (await kazoo.key_doc(scene.kid))["_rev"] == before_key["_rev"]
    assert (await services.store.couch.get_doc(naming.SYSTEM_CONFIG_DB, "auth"))["_rev"] == before_config["_rev"]
    after_user = await stored_doc(services, naming.account_db(scene.account["_id"]), scene.user["_id"])
    assert after_user["_rev"] == before_user["_rev"]
    with pytest.raises(NotFound):
        await kazoo.key_doc("k" * 20)


# -- Basic -----------------------------------------------------------------------------------

def basic(account_id: str, credentials: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{account_id}:{credentials}".encode()).decode()}


def md5_credentials(username: str, password: str) -> str:
    return hashlib.md5(f"{username.lower()}:{password}".encode()).hexdigest()


async def test_basic_auth_with_md5_credentials(scene: Scene) -> None:
    headers = basic(scene.account["_id"], md5_credentials("KazooUser", "secret"))
    reply = await scene.api.get("/vmboxes", headers=headers)
    assert reply.status == 200, reply.body
    assert "auth_token" not in reply.json


async def test_basic_auth_refusals(scene: Scene, services: Services) -> None:
    account_id = scene.account["_id"]
    refused = [
        basic(account_id, md5_credentials("kazoouser", "wrong")),
        basic(uuid.uuid4().hex, md5_credentials("kazoouser", "secret")),
        basic("not-an-account", md5_credentials("kazoouser", "secret")),
        basic(account_id, hashlib.sha1(b"kazoouser:secret").hexdigest()),   # sha when the type is md5
        basic(account_id, "kazoouser:secret"),                               # plain when the type is md5
        {"Authorization": "Basic !!!not-base64!!!"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon-here").decode()},
    ]
    for headers in refused:  # one shape, as with no credentials at all
        data = assert_error(await scene.api.get("/vmboxes", headers=headers), 401, "invalid_credentials")
        assert data == {"message": "invalid credentials", "expired": False}
    assert (await scene.api.get("/vmboxes", headers={"Authorization": "Basic "})).status == 401
    data = assert_error(await scene.api.get("/vmboxes"), 401, "invalid_credentials")  # no credentials at all
    assert data == {"message": "invalid credentials", "expired": False}
    stranger = await make_account(services, name="Basic stranger")
    await services.users.create(stranger["_id"], username="kazoo.s", password="pw")
    assert_error(await scene.api.get(f"/v2/accounts/{stranger['_id']}/vmboxes",
                                     headers=basic(account_id, md5_credentials("kazoouser", "secret"))),
                 403, "forbidden")


async def test_basic_auth_wants_exactly_one_user(scene: Scene, services: Services) -> None:
    await services.users.create(scene.account["_id"], username="KazooUser", password="secret")  # same hash
    headers = basic(scene.account["_id"], md5_credentials("kazoouser", "secret"))
    assert_error(await scene.api.get("/vmboxes", headers=headers), 401, "invalid_credentials")


async def test_basic_auth_type_sha_from_the_accounts_config(scene: Scene, services: Services) -> None:
    """``basic_auth_type`` of ``crossbar.auth``: the account's ``configs_crossbar.auth``
    first, then ``system_config/crossbar.auth``."""
    account_id = scene.account["_id"]
    await services.store.couch.put_doc(naming.account_db(account_id),
                                       {"_id": "configs_crossbar.auth", "basic_auth_type": "sha"})
    sha = hashlib.sha1(b"kazoouser:secret").hexdigest()
    assert (await scene.api.get("/vmboxes", headers=basic(account_id, sha))).status == 200
    assert_error(await scene.api.get("/vmboxes", headers=basic(account_id, md5_credentials("kazoouser", "secret"))),
                 401, "invalid_credentials")


async def test_basic_auth_type_plain_hashes_username_and_password(scene: Scene, services: Services) -> None:
    account_id = scene.account["_id"]
    await services.store.couch.put_doc(naming.account_db(account_id),
                                       {"_id": "configs_crossbar.auth", "basic_auth_type": "plain"})
    assert (await scene.api.get("/vmboxes", headers=basic(account_id, "kazoouser:secret"))).status == 200
    assert_error(await scene.api.get("/vmboxes", headers=basic(account_id, "kazoouser:nope")),
                 401, "invalid_credentials")


async def test_a_token_header_wins_over_basic(scene: Scene) -> None:
    headers = {**basic(scene.account["_id"], md5_credentials("kazoouser", "secret")), "X-Auth-Token": "garbage"}
    assert_error(await scene.api.get("/vmboxes", headers=headers), 401, "invalid_credentials")
