"""The body of a download, once its answer has started: too late for an error envelope,
so what ends it early ends the connection, and is logged as one line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator

from aiohttp import web

from .. import appkeys
from ..storage.errors import StorageError
from . import envelope

log = logging.getLogger(__name__)


def _cut(request: web.Request) -> None:
    """Close the connection without the end of the body: the client sees a truncated
    download instead of waiting for bytes that will not come."""
    if request.transport is not None:
        request.transport.abort()


async def send_body(request: web.Request, response: web.StreamResponse, chunks: AsyncGenerator[bytes, None],
                    what: str) -> web.StreamResponse:
    """Write ``chunks`` after ``response.prepare``. A client that goes away (a browser
    seeking in a recording) is not a server error; a store that fails, or gives fewer
    bytes than ``Content-Length`` said, cuts the connection, and so does a client that
    reads nothing for ``KAZOO_VM_SEND_TIMEOUT`` seconds."""
    request_id = request[envelope.REQUEST_ID]
    seconds = request.app[appkeys.CONFIG].send_timeout
    sent = 0
    try:
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                async with asyncio.timeout(seconds):  # a reader that stops reading holds memory
                    await response.write(chunk)
                sent += len(chunk)
            expected = response.content_length
            if expected is not None and sent < expected:
                log.warning("%s %s cut: the store gave %d of %d bytes", what, request_id, sent, expected)
                _cut(request)
                return response
            async with asyncio.timeout(seconds):
                await response.write_eof()
    except StorageError as error:
        log.warning("%s %s cut after %d bytes: %r", what, request_id, sent, error)
        _cut(request)
    except ConnectionError:  # aiohttp's ClientConnectionResetError is one
        log.info("%s %s: the client went away after %d bytes", what, request_id, sent)
    except TimeoutError:
        log.info("%s %s cut after %d bytes: the client read nothing for %g seconds", what, request_id, sent, seconds)
        _cut(request)
    return response
