"""The request lifecycle around every handler.

Order (outermost first): ``envelope_middleware`` gives every answer a request id, CORS
headers and the Kazoo JSON envelope (also aiohttp's own 404/405 and any crash);
``auth_middleware`` then answers ``OPTIONS``, authenticates and checks the account in
the path before a handler runs.
"""

from __future__ import annotations

import logging
import re
import uuid

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from .. import appkeys
from ..auth.access import ACCOUNT, AUTH, authenticate, authorize_account
from ..errors import (
    ApiError,
    HeaderTooLarge,
    InvalidMethod,
    NotFoundPath,
    UnspecifiedFault,
    from_storage,
    max_size_error,
)
from ..storage.errors import StorageError
from . import envelope

log = logging.getLogger(__name__)
REQUEST_ID_PATTERN = re.compile(r"^[\x21-\x7e]{1,128}\Z")
# The longest request header read (room for Kazoo's RS256 JWTs of several KB). aiohttp's
# parser is given twice that, so a header up to there gets Kazoo's envelope; beyond, the
# parser answers itself (plain text) before any middleware runs.
MAX_HEADER_SIZE = 32 * 1024
PARSER_FIELD_SIZE = 2 * MAX_HEADER_SIZE


class ParserRefusals(logging.Filter):
    """aiohttp logs a request its parser refused (a header too long, bad framing) with a
    traceback, as if it were a server error: it is the client's fault, logged as one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.msg = "request refused by the HTTP parser (%s %s): %s"
            record.args = (error.code, type(error).__name__, error.message[:200])
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return True


http_log = logging.getLogger("kazoo_vm.http")
http_log.addFilter(ParserRefusals())


def _request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-ID", "")
    return given if REQUEST_ID_PATTERN.match(given) else uuid.uuid4().hex


def _http_error(error: web.HTTPException, request: web.Request) -> ApiError:
    if error.status == 405:
        return InvalidMethod()
    if error.status == 404:
        return NotFoundPath()
    if error.status == 413:
        return max_size_error(request.app[appkeys.CONFIG].max_upload_size)
    failure = ApiError({"message": error.reason.lower()}, message=error.reason.lower().replace(" ", "_"),
                       status=error.status)
    return failure


def _check_header_sizes(request: web.Request) -> None:
    for name, value in request.raw_headers:
        if len(name) + len(value) > MAX_HEADER_SIZE:
            raise HeaderTooLarge(name.decode("latin-1"), MAX_HEADER_SIZE)


@web.middleware
async def envelope_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[envelope.REQUEST_ID] = _request_id(request)
    try:
        _check_header_sizes(request)
        response = await handler(request)
    except ApiError as failure:
        response = envelope.error(request, failure)
    except StorageError as failure:
        response = envelope.error(request, from_storage(failure))
    except web.HTTPException as failure:
        response = envelope.error(request, _http_error(failure, request))
    except Exception:  # the last line of defence: log it, answer Kazoo's 500
        log.exception("unhandled error in %s %s", request.method, request.path)
        response = envelope.error(request, UnspecifiedFault())
    if not response.prepared:
        response.headers["X-Request-ID"] = request[envelope.REQUEST_ID]
        envelope.add_cors(request, response)
    return response


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    match_info = request.match_info
    if request.method == "OPTIONS":
        if match_info.http_exception is not None and match_info.http_exception.status == 404:
            raise NotFoundPath()
        return envelope.success(request, {})
    if match_info.http_exception is not None:
        raise match_info.http_exception
    if match_info.handler not in request.app[appkeys.PUBLIC_HANDLERS]:
        context = await authenticate(request, request.app[appkeys.ISSUER], request.app[appkeys.THROTTLE])
        request[AUTH] = context
        request[envelope.AUTH_TOKEN] = context.token
        account_id = match_info.get("account_id")
        if account_id is not None:
            request[ACCOUNT] = await authorize_account(request.app[appkeys.SERVICES], context, account_id)
    return await handler(request)
