"""Kazoo's error catalogue: each API error is a status, a ``message`` and ``data``.

Handlers raise these; one middleware renders them (``envelope.error_response``), and
:func:`from_storage` is the one table from storage errors to API errors.
"""

from __future__ import annotations

from typing import Any

from .storage.errors import Conflict, NotFound, StorageError, StoreFault, Unavailable

ValidationErrors = dict[str, dict[str, dict[str, Any]]]


class ApiError(Exception):
    status: int = 500
    message: str = "unspecified_fault"

    def __init__(self, data: Any = None, *, message: str | None = None, status: int | None = None) -> None:
        super().__init__(message or self.message)
        self.data: Any = {"message": "unspecified fault"} if data is None else data
        if message is not None:
            self.message = message
        if status is not None:
            self.status = status
        self.headers: dict[str, str] = {}


class ValidationError(ApiError):
    """400 ``validation error``; ``data`` is ``{path: {code: details}}``."""

    status = 400
    message = "validation error"

    def __init__(self, errors: ValidationErrors) -> None:
        super().__init__(errors)


class BodyTimeout(ApiError):
    """408: the client did not send its whole body within ``KAZOO_VM_BODY_TIMEOUT``."""

    status = 408
    message = "request_timeout"

    def __init__(self, seconds: float) -> None:
        super().__init__({"message": f"the request body was not received within {seconds:g} seconds"})
        self.headers["Connection"] = "close"


class BadIdentifier(ApiError):
    status = 404
    message = "bad_identifier"

    def __init__(self, cause: str) -> None:
        super().__init__({"cause": cause, "message": "bad identifier"})


class InvalidAccountId(ApiError):
    status = 404
    message = "bad identifier"

    def __init__(self, value: str) -> None:
        super().__init__({"message": f"invalid account_id '{value}'"})


class NotFoundPath(ApiError):
    status = 404
    message = "not_found"

    def __init__(self) -> None:
        super().__init__({"message": "not found"})


class FaultyRequest(ApiError):
    status = 404
    message = "faulty_request"

    def __init__(self, reason: str) -> None:
        super().__init__({"message": reason})


class HeaderTooLarge(ApiError):
    """400: a request header longer than kazoo_vm reads."""

    status = 400
    message = "bad_request"

    def __init__(self, name: str, limit: int) -> None:
        super().__init__({"message": "request header too large", "header": name, "target": limit})


class InvalidMethod(ApiError):
    status = 405
    message = "invalid_method"

    def __init__(self) -> None:
        super().__init__({"message": "method not allowed"})


class InvalidCredentials(ApiError):
    """401, one shape whatever the cause (no credentials, a bad or expired token, a wrong
    password): Kazoo's ``invalid_credentials``, and whether the token expired (the one
    cause a client acts on, by logging in again)."""

    status = 401
    message = "invalid_credentials"

    def __init__(self, *, expired: bool = False) -> None:
        super().__init__({"message": "invalid credentials", "expired": expired})
        self.expired = expired


class TooManyRequests(ApiError):
    """429: too many failed logins from this address lately (kazoo_vm's own; crossbar has
    no such limit). ``Retry-After`` and ``data.retry_after`` say in how many seconds to
    try again; until then credentials from there are not checked."""

    status = 429
    message = "too_many_requests"

    def __init__(self, retry_after: int) -> None:
        super().__init__({"message": "too many failed logins", "retry_after": retry_after})
        self.headers["Retry-After"] = str(retry_after)


class Forbidden(ApiError):
    status = 403
    message = "forbidden"

    def __init__(self) -> None:
        super().__init__({"message": "forbidden"})


class NotAcceptable(ApiError):
    status = 406
    message = "not_acceptable"

    def __init__(self) -> None:
        super().__init__({"message": "not acceptable"})


class UnsupportedMediaType(ApiError):
    """415: the body (or a multipart part) is of a type the endpoint does not read;
    ``data`` names the type given and the types accepted."""

    status = 415
    message = "unsupported_media_type"

    def __init__(self, content_type: str, accepted: list[str]) -> None:
        super().__init__({"message": "unsupported media type", "content_type": content_type, "accepted": accepted})


class DatastoreConflict(ApiError):
    status = 409
    message = "datastore_conflict"

    def __init__(self) -> None:
        super().__init__({"message": "conflicting documents"})


class DatastoreFault(ApiError):
    status = 500
    message = "datastore_fault"

    def __init__(self, cause: str) -> None:
        super().__init__({"cause": cause, "message": "unknown failure"})


class DatastoreUnreachable(ApiError):
    status = 503
    message = "datastore_unreachable"

    def __init__(self) -> None:
        super().__init__({"message": "datastore timeout"})


class UnspecifiedFault(ApiError):
    status = 500
    message = "unspecified_fault"

    def __init__(self) -> None:
        super().__init__({"message": "unspecified fault"})


def validation_error(path: str, code: str, message: str, **details: Any) -> ValidationError:
    return ValidationError({path: {code: {"message": message, **details}}})


def max_size_error(limit: int) -> ValidationError:
    return validation_error(
        "file", "maxSize", f"Payload or Files must not be more than {limit} bytes", target=limit
    )


def from_storage(error: StorageError, *, cause: str | None = None) -> ApiError:
    """The API error for a storage error that a handler did not handle itself."""
    if isinstance(error, NotFound):
        return BadIdentifier(cause or error.what)
    if isinstance(error, Conflict):
        return DatastoreConflict()
    if isinstance(error, Unavailable):
        return DatastoreUnreachable()
    if isinstance(error, StoreFault):
        return DatastoreFault(error.cause)
    return UnspecifiedFault()
