"""Accounts, users and the token signing secret, stored the way Kazoo stores them.

An account doc (``pvt_type: account``) lives both in the ``accounts`` database and in
its own account database; users (``pvt_type: user``) live in the account database with
``pvt_md5_auth``/``pvt_sha1_auth`` = md5/sha1 of ``lower(username):password``.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from ..kazoo import documents, naming
from . import design
from .couch import quote_db
from .errors import Conflict, NotFound
from .store import Store
from .ttl_cache import TtlCache

SIGNING_CONFIG_ID = "kazoo_vm.auth"
LISTING_BATCH = 500
MIRROR_RETRIES = 5


def credentials_hashes(username: str, password: str) -> tuple[str, str]:
    """(md5, sha1) hex of ``lower(username):password``, as Kazoo stores them."""
    text = f"{username.lower()}:{password}".encode()
    return hashlib.md5(text).hexdigest(), hashlib.sha1(text).hexdigest()


class Accounts:
    def __init__(self, store: Store, *, cache_ttl: float = 0.0) -> None:
        self._store = store
        self._couch = store.couch
        # Account docs read for authorization, kept ``cache_ttl`` seconds: every request
        # needs its account, and reading it each time doubled the round trips of a
        # single-document request. Only found, live accounts are kept.
        self._recent: TtlCache[str, dict[str, Any]] = TtlCache(cache_ttl)

    async def fetch(self, account_id: str, *, cached: bool = False) -> dict[str, Any]:
        """The account doc from the ``accounts`` database; NotFound if missing/deleted.
        With ``cached`` the doc may be one this process read up to the cache TTL ago
        (callers must not change it)."""
        if cached:
            doc = self._recent.get(account_id)
            if doc is not None:
                return doc
        mark = self._recent.mark()
        doc = await self._couch.get_doc(naming.ACCOUNTS_DB, account_id)
        if doc.get("pvt_deleted") or doc.get("pvt_type", "account") != "account":
            self._recent.forget(account_id)
            raise NotFound(account_id)
        self._recent.put(account_id, doc, since=mark)
        return doc

    def forget(self, account_id: str) -> None:
        """Drop this process's cached copy (after a write of the account doc)."""
        self._recent.forget(account_id)

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

    async def fetch_own_copy(self, account_id: str) -> dict[str, Any]:
        """The account doc as stored in the account's own database (the copy Kazoo's
        crossbar reads and writes first); NotFound if missing or deleted."""
        db = await self._store.account_db(account_id)
        doc = await self._couch.get_doc(db, account_id)
        if doc.get("pvt_deleted") or doc.get("pvt_type", "account") != "account":
            raise NotFound(account_id)
        return doc

    async def save(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Save an account doc the way Kazoo does: into the account database (``doc``'s
        ``_rev`` is that copy's revision; Conflict when stale), then the same content
        into ``accounts`` under that copy's own revision. Returns ``doc`` with the
        account database's new ``_rev``."""
        account_id = str(doc["_id"])
        db = await self._store.account_db(account_id)
        self.forget(account_id)
        await self._couch.put_doc(db, doc)
        mirror = {key: value for key, value in doc.items() if key != "_rev"}
        for _attempt in range(MIRROR_RETRIES):
            try:
                current = await self._couch.get_doc(naming.ACCOUNTS_DB, account_id)
            except NotFound:
                mirror.pop("_rev", None)
            else:
                mirror["_rev"] = current["_rev"]
            try:
                await self._couch.put_doc(naming.ACCOUNTS_DB, mirror)
            except Conflict:
                continue
            finally:
                self.forget(account_id)
            return doc
        raise Conflict(account_id)

    async def doc_in_account_db(self, account_id: str, doc_id: str) -> dict[str, Any]:
        """Any document of the account database (a user, a device, the account itself);
        NotFound when missing or soft-deleted."""
        db = naming.account_db(account_id)
        doc = await self._couch.get_doc(db, doc_id)
        if doc.get("pvt_deleted"):
            raise NotFound(doc_id)
        return doc

    async def config(self, account_id: str, category: str) -> dict[str, Any]:
        """The account's ``configs_<category>`` document (Kazoo's per-account settings), or {}."""
        try:
            return await self._couch.get_doc(naming.account_db(account_id), f"configs_{category}")
        except NotFound:
            return {}

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

    async def owned(self, account_id: str, owner_id: str, pvt_type: str) -> list[dict[str, Any]]:
        """Live documents of ``pvt_type`` (``device``, ``vmbox``) owned by ``owner_id``:
        its ``owner_id``, or a hotdesk user (view ``kazoo_vm_owned/owned``)."""
        db = await self._store.account_db(account_id)
        await self._store.designs.ensure(db, design.OWNED)
        rows = await self._couch.view(db, design.OWNED, "owned", key=[owner_id, pvt_type], include_docs=True)
        return [row["doc"] for row in rows if isinstance(row.get("doc"), dict)]

    async def listing(self, account_id: str) -> list[dict[str, Any]]:
        """Every non-deleted user of the account (whole documents), read from
        ``_all_docs`` in batches so no view beyond ours is needed."""
        db = await self._store.account_db(account_id)
        users: list[dict[str, Any]] = []
        start: str | None = None
        while True:
            params: dict[str, Any] = {"include_docs": True, "limit": LISTING_BATCH + 1}
            if start is not None:
                params["startkey"] = start
            body = await self._couch.get_json(f"/{quote_db(db)}/_all_docs", **params)
            rows = list(body.get("rows") or []) if isinstance(body, dict) else []
            for row in rows[:LISTING_BATCH]:
                doc = row.get("doc")
                if isinstance(doc, dict) and doc.get("pvt_type") == "user" and not doc.get("pvt_deleted"):
                    users.append(doc)
            if len(rows) <= LISTING_BATCH:
                return users
            start = str(rows[LISTING_BATCH]["id"])

    async def ids_by_username(self, account_id: str, username: str) -> list[str]:
        """Ids of the non-deleted users of the account with this (lower-case) username."""
        db = await self._store.account_db(account_id)
        rows = await self._couch.view(db, design.USERS, "list_by_username", key=username)
        return [str(row["id"]) for row in rows]

    async def save(self, account_id: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Create or update a user doc (``_rev`` decides); Conflict when stale."""
        db = await self._store.account_db(account_id)
        await self._couch.put_doc(db, doc)
        return doc

    async def owners_by_credentials(self, account_id: str, credentials: str, method: str) -> list[str]:
        """Ids of every enabled user of ``account_id`` whose md5 (or sha) hash is
        ``credentials`` (Kazoo's basic auth wants exactly one)."""
        view = "creds_by_sha" if method == "sha" else "creds_by_md5"
        try:
            db = await self._store.account_db(account_id)
        except NotFound:
            return []
        rows = await self._couch.view(db, design.USERS, view, key=credentials)
        owners = []
        for row in rows:
            value = row.get("value") or {}
            if isinstance(value, dict) and isinstance(value.get("owner_id"), str):
                owners.append(str(value["owner_id"]))
        return owners

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


async def system_config(store: Store, category: str) -> dict[str, Any]:
    """The ``system_config/<category>`` document, or {} when there is none."""
    try:
        return await store.couch.get_doc(naming.SYSTEM_CONFIG_DB, category)
    except NotFound:
        return {}


async def system_key_pem(store: Store, key_id: str, attachment: str) -> bytes | None:
    """The PEM attachment of Kazoo's key document ``system_auth/<key_id>``, or None when
    the database, the document or the attachment is missing. Only ever read: the keys
    belong to Kazoo."""
    try:
        body, _content_type = await store.couch.get_attachment(naming.SYSTEM_AUTH_DB, key_id, attachment)
    except NotFound:
        return None
    return body
