"""What every handler needs from a request: its services, author, and account."""

from __future__ import annotations

from aiohttp import web

from .. import appkeys
from ..auth.access import AUTH
from ..config import Config
from ..http import envelope
from ..http.payload import Payload, read_payload
from ..kazoo.documents import Author
from ..services import Services


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
