"""Pure rules for Kazoo documents: public and private fields, ``pvt_*`` stamps, ids."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

GREGORIAN_UNIX_OFFSET = 62167219200


def gregorian_now() -> int:
    return int(time.time()) + GREGORIAN_UNIX_OFFSET


def new_id() -> str:
    """A Kazoo-style document id: 32 lower-case hex characters."""
    return uuid.uuid4().hex


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (stored data is not trusted)."""
    return value if isinstance(value, dict) else {}


def as_int(value: Any) -> int | None:
    """``value`` when it is a JSON integer (not a boolean), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


PRIVATE_PREFIXES = ("_", "pvt_")


def public_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """The keys a client may see and set (no ``_*``, no ``pvt_*``)."""
    return {key: value for key, value in doc.items() if not key.startswith(PRIVATE_PREFIXES)}


def private_fields(doc: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in doc.items() if key.startswith(PRIVATE_PREFIXES)}


def to_response(doc: dict[str, Any], *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """A document as crossbar returns it: public keys plus ``id``."""
    data = {key: value for key, value in doc.items() if not key.startswith(PRIVATE_PREFIXES) and key not in drop}
    data["id"] = doc["_id"]
    return data


def alphanum_name(name: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


@dataclass(frozen=True)
class Author:
    """Who makes a change: stamped into ``pvt_*`` fields the way crossbar does."""

    request_id: str
    auth_account_id: str | None = None
    auth_user_id: str | None = None


def stamp(doc: dict[str, Any], *, account_id: str, account_db: str, pvt_type: str | None,
          author: Author, now: int) -> dict[str, Any]:
    """Apply crossbar's generic save stamps to ``doc`` (in place) and return it."""
    if pvt_type is not None:
        doc.setdefault("pvt_type", pvt_type)
    doc.setdefault("pvt_vsn", "1")
    doc.setdefault("pvt_account_id", account_id)
    doc.setdefault("pvt_account_db", account_db)
    if "_rev" not in doc:
        doc["pvt_created"] = now
    doc["pvt_modified"] = now
    doc["pvt_request_id"] = author.request_id
    doc["pvt_is_authenticated"] = author.auth_account_id is not None
    if author.auth_account_id is not None:
        doc["pvt_auth_account_id"] = author.auth_account_id
    if author.auth_user_id is not None:
        doc["pvt_auth_user_id"] = author.auth_user_id
    if "name" in doc:
        doc["pvt_alphanum_name"] = alphanum_name(doc["name"])
    return doc
