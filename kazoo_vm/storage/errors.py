"""Errors the storage layer raises; the HTTP layer maps each to one Kazoo error."""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error raised by :mod:`kazoo_vm.storage`."""


class NotFound(StorageError):
    """The database, document, view or attachment does not exist (or is deleted)."""

    def __init__(self, what: str, reason: str = "not_found") -> None:
        super().__init__(what, reason)
        self.what = what
        self.reason = reason


class Conflict(StorageError):
    """A write lost a revision race (CouchDB 409) or the target already exists (412)."""

    def __init__(self, what: str, reason: str = "conflict") -> None:
        super().__init__(what, reason)
        self.what = what
        self.reason = reason


class Unavailable(StorageError):
    """CouchDB did not answer (refused, reset or timed out)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail


class StoreFault(StorageError):
    """CouchDB answered with an error that is neither of the above."""

    def __init__(self, cause: str, detail: str = "") -> None:
        super().__init__(cause, detail)
        self.cause = cause
        self.detail = detail
