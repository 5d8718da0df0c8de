"""Kazoo's database names and the id patterns checked before an id becomes a name.

Account ``0123456789abcdef0123456789abcdef`` lives in
``account/01/23/456789abcdef0123456789abcdef``; its March 2024 MODB is the same name
plus ``-202403``. CouchDB receives them with ``/`` sent as ``%2F`` (see ``couch.quote_db``),
which is also the form Kazoo stores in ``pvt_account_db``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

ACCOUNTS_DB = "accounts"
SYSTEM_CONFIG_DB = "system_config"
SYSTEM_AUTH_DB = "system_auth"

ACCOUNT_ID = re.compile(r"^[0-9a-f]{32}\Z")
MODB_MESSAGE_ID = re.compile(r"^(\d{4})(0[1-9]|1[0-2])-[0-9a-f]{32}\Z")  # YYYYMM-<32 hex>
LEGACY_MESSAGE_ID = re.compile(r"^[0-9a-f]{32}\Z")
# Kazoo generates 32-hex box ids; a client may choose its own (crossbar copies
# ``data.id``). Anything that could escape a URL segment or a database path is refused.
# (Patterns end in ``\Z``: ``$`` would also match before a final newline.)
VMBOX_ID_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z_\-.]{0,127}$"  # as JSON Schema and error messages give it
VMBOX_ID = re.compile(VMBOX_ID_PATTERN[:-1] + r"\Z")
ACCOUNT_DB = re.compile(r"^account/[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{28}\Z")
GREGORIAN_UNIX_OFFSET = 62167219200


def is_account_id(value: str) -> bool:
    return bool(ACCOUNT_ID.match(value))


def is_vmbox_id(value: str) -> bool:
    return bool(VMBOX_ID.match(value)) and ".." not in value and value != "messages"


def is_account_db(name: str) -> bool:
    return bool(ACCOUNT_DB.match(name))


def account_db(account_id: str) -> str:
    """Raw (unencoded) account database name; ``account_id`` must be validated."""
    if not is_account_id(account_id):
        raise ValueError(f"invalid account id {account_id!r}")
    return f"account/{account_id[0:2]}/{account_id[2:4]}/{account_id[4:]}"


ACCOUNT_OR_MODB = re.compile(r"^account/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{28})(?:-\d{6})?\Z")


def account_id_of_db(name: str) -> str | None:
    """The account whose database (account db or MODB) ``name`` is; None for others."""
    match = ACCOUNT_OR_MODB.match(name)
    return "".join(match.groups()) if match else None


def encoded_db(name: str) -> str:
    """The ``%2F`` form Kazoo stores in ``pvt_account_db``."""
    return name.replace("/", "%2F")


def modb(account_id: str, year: int, month: int) -> str:
    return f"{account_db(account_id)}-{year:04d}{month:02d}"


def modb_of_message(account_id: str, message_id: str) -> str | None:
    """The MODB holding ``message_id`` (``YYYYMM-…``), or None for other ids."""
    match = MODB_MESSAGE_ID.match(message_id)
    if not match:
        return None
    return modb(account_id, int(match.group(1)), int(match.group(2)))


def year_month(gregorian_seconds: int) -> tuple[int, int]:
    moment = datetime.fromtimestamp(gregorian_seconds - GREGORIAN_UNIX_OFFSET, tz=UTC)
    return moment.year, moment.month


def months_between(from_gregorian: int, to_gregorian: int) -> Iterator[tuple[int, int]]:
    """Every (year, month) from the month of ``from`` to the month of ``to``, oldest first."""
    year, month = year_month(max(from_gregorian, GREGORIAN_UNIX_OFFSET))
    last = year_month(max(to_gregorian, GREGORIAN_UNIX_OFFSET))
    while (year, month) <= last:
        yield year, month
        month += 1
        if month == 13:
            year, month = year + 1, 1


def modbs_between(account_id: str, from_gregorian: int, to_gregorian: int) -> list[str]:
    """MODB names covering the window, newest first (the order listings read them)."""
    months = list(months_between(from_gregorian, to_gregorian))
    return [modb(account_id, year, month) for year, month in reversed(months)]
