"""Accounts, users and the token signing secret, stored the way Kazoo stores them.

An account doc (``pvt_type: account``) lives both in the ``accounts`` database and in
its own account database; users (``pvt_type: user``) live in the account database with
``pvt_md5_auth``/``pvt_sha1_auth`` = md5/sha1 of ``lower(username):password``.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from .. import documents
from . import design, naming
from .errors import Conflict, NotFound
from .store import Store

SIGNING_CONFIG_ID = "kazoo_vm.auth"


def credentials_hashes(username: str, password: str) -> tuple[str, str]:
    """(md5, sha1) hex of ``lower(username):password``, as Kazoo stores them."""
    text = f"{username.lower()}:{password}".encode()
    return hashlib.md5(text).hexdigest(), hashlib.sha1(text).hexdigest()


class Accounts:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._couch = store.couch

    async def fetch(self, account_id: str) -> dict[str, Any]:
        """The account doc from the ``accounts`` database; NotFound if missing/deleted."""
        doc = await self._couch.get_doc(naming.ACCOUNTS_DB, account_id)
        if doc.get("pvt_deleted") or doc.get("pvt_type", "account") != "account":
            raise NotFound(account_id)
        return doc

    async def create(self, *, name: str, realm: str | None, parent_id: str | None,
                     timezone: str | None = None) -> dict[str, Any]:
        """Create the account database, its doc in both databases and an API key."""
        await self._store.setup()
        tree: list[str] = []
        if parent_id is not None:
            parent = await self.fetch(parent_id)
            tree = [*parent.get("pvt_tree", []), parent_id]
        account_id = documents.new_id()
        db = await self._store.create_account_db(account_id)
        now = documents.gregorian_now()
        doc: dict[str, Any] = {
            "_id": account_id,
            "name": name,
            "realm": realm or f"{documents.alphanum_name(name) or 'account'}.{account_id[:6]}.sip.local",
            "timezone": timezone or "America/Los_Angeles",
            "pvt_type": "account",
            "pvt_vsn": "1",
            "pvt_account_id": account_id,
            "pvt_account_db": naming.encoded_db(db),
            "pvt_tree": tree,
            "pvt_api_key": secrets.token_hex(32),
            "pvt_enabled": True,
            "pvt_created": now,
            "pvt_modified": now,
        }
        await self._couch.put_doc(db, dict(doc))
        await self._couch.put_doc(naming.ACCOUNTS_DB, dict(doc))
        return doc

    async def _lookup(self, view: str, key: str) -> list[str]:
        await self._store.setup()
        rows = await self._couch.view(naming.ACCOUNTS_DB, design.ACCOUNTS, view, key=key)
        ids = []
        for row in rows:
            value = row.get("value") or {}
            account_id = value.get("account_id") if isinstance(value, dict) else None
            if isinstance(account_id, str) and naming.is_account_id(account_id):
                ids.append(account_id)
        return ids

    async def by_api_key(self, api_key: str) -> list[str]:
        return await self._lookup("listing_by_api", api_key)

    async def by_name(self, name: str) -> list[str]:
        return await self._lookup("listing_by_name", documents.alphanum_name(name))

    async def by_realm(self, realm: str) -> list[str]:
        return await self._lookup("listing_by_realm", realm.lower())


class Users:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._couch = store.couch

    async def create(self, account_id: str, *, username: str, password: str,
                     email: str | None = None, first_name: str | None = None,
                     last_name: str | None = None, priv_level: str = "admin") -> dict[str, Any]:
        db = await self._store.account_db(account_id)
        md5, sha1 = credentials_hashes(username, password)
        now = documents.gregorian_now()
        doc: dict[str, Any] = {
            "_id": documents.new_id(),
            "username": username.lower(),
            "first_name": first_name or username,
            "last_name": last_name or "",
            "enabled": True,
            "priv_level": priv_level,
            "pvt_type": "user",
            "pvt_vsn": "1",
            "pvt_account_id": account_id,
            "pvt_account_db": naming.encoded_db(db),
            "pvt_md5_auth": md5,
            "pvt_sha1_auth": sha1,
            "pvt_created": now,
            "pvt_modified": now,
        }
        if email:
            doc["email"] = email
        await self._couch.put_doc(db, doc)
        return doc

    async def fetch(self, account_id: str, user_id: str) -> dict[str, Any]:
        db = await self._store.account_db(account_id)
        doc = await self._couch.get_doc(db, user_id)
        if doc.get("pvt_deleted") or doc.get("pvt_type") != "user":
            raise NotFound(user_id)
        return doc

    async def by_credentials(self, account_id: str, credentials: str, method: str) -> str | None:
        """The id of the enabled user of ``account_id`` whose hash is ``credentials``."""
        view = "creds_by_sha" if method == "sha" else "creds_by_md5"
        try:
            db = await self._store.account_db(account_id)
        except NotFound:
            return None
        rows = await self._couch.view(db, design.USERS, view, key=credentials)
        for row in rows:
            value = row.get("value") or {}
            if isinstance(value, dict) and isinstance(value.get("owner_id"), str):
                return str(value["owner_id"])
        return None


async def signing_secret(store: Store) -> str:
    """The shared token signing secret (``system_config/kazoo_vm.auth``), created by
    whichever instance gets there first."""
    couch = store.couch
    await store.setup()
    while True:
        try:
            doc = await couch.get_doc(naming.SYSTEM_CONFIG_DB, SIGNING_CONFIG_ID)
            secret = (doc.get("default") or {}).get("signing_secret")
            if isinstance(secret, str) and secret:
                return secret
        except NotFound:
            doc = {"_id": SIGNING_CONFIG_ID, "pvt_type": "config"}
        doc.setdefault("default", {})["signing_secret"] = secrets.token_hex(32)
        try:
            await couch.put_doc(naming.SYSTEM_CONFIG_DB, doc)
        except Conflict:
            continue
        return str(doc["default"]["signing_secret"])
