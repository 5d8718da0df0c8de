"""What every handler needs from a request: its services, author, account and time window."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import appkeys
from ..auth.access import AUTH
from ..config import Config
from ..errors import validation_error
from ..http import envelope
from ..http.payload import Payload, read_payload
from ..kazoo import naming
from ..kazoo.documents import Author
from ..services import Services

MIN_GREGORIAN = naming.GREGORIAN_UNIX_OFFSET
MAX_GREGORIAN = 315537897599  # 9999-12-31T23:59:59Z


def services(request: web.Request) -> Services:
    return request.app[appkeys.SERVICES]


def config(request: web.Request) -> Config:
    return request.app[appkeys.CONFIG]


def author(request: web.Request) -> Author:
    context = request.get(AUTH)
    return Author(
        request_id=request[envelope.REQUEST_ID],
        auth_account_id=context.account_id if context else None,
        auth_user_id=context.owner_id if context else None,
    )


async def payload(request: web.Request) -> Payload:
    return await read_payload(request, config(request).max_upload_size)


def location(request: web.Request, new_id: str) -> str:
    return f"{request.path.rstrip('/')}/{new_id}"


def _gregorian(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def time_window(request: web.Request, body: Payload, now: int, *, default_range: int | None = None) -> tuple[int, int]:
    """(From, To) from ``created_from``/``created_to`` (Kazoo's crossbar_view rules):
    without ``created_from`` the window is ``default_range`` (the maximum range unless
    given) long."""
    settings = config(request)
    created_to = _gregorian(body.setting(request, "created_to")) or now
    created_from = _gregorian(body.setting(request, "created_from"))
    max_range = settings.max_range if created_from is not None or default_range is None else default_range
    start = created_from if created_from is not None else created_to - max_range
    if created_to < start:
        raise validation_error("created_from", "date_range",
                               f"created_to {created_to} is prior to created_from {start}", cause=start)
    if created_to - start > max_range:
        raise validation_error("created_from", "date_range",
                               f"created_to {created_to} is more than {max_range} seconds from created_from {start}",
                               cause=created_to)
    return _clamp(start), _clamp(created_to)


def _clamp(gregorian: int) -> int:
    """Within the years a MODB name can hold (1970–9999): a window past either end
    lists nothing rather than asking the store for a reversed range."""
    return min(max(gregorian, MIN_GREGORIAN), MAX_GREGORIAN)
