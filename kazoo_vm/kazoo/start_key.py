"""Kazoo-compatible pagination keys (``start_key`` / ``next_start_key``).

Kazoo 4.x mints ``next_start_key`` as base64url without padding of
``term_to_binary(Key)``, where ``Key`` is a CouchDB view key held as a kz_json
term.  This module converts between JSON values and that subset of the Erlang
External Term Format byte-for-byte as Kazoo does, and adds an optional CouchDB
document id (the ``{Key, DocId}`` 2-tuple form) so kazoo_vm can break ties.
"""

from __future__ import annotations

import base64
import math
import struct
from dataclasses import dataclass
from typing import TypeAlias

JSONValue: TypeAlias = (
    None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]
)

MAX_DEPTH = 64  # most arrays/objects nested inside one another, both ways
VERSION = 131
NEW_FLOAT_EXT, SMALL_INTEGER_EXT, INTEGER_EXT, FLOAT_EXT = 70, 97, 98, 99
ATOM_EXT, SMALL_TUPLE_EXT, LARGE_TUPLE_EXT, NIL_EXT = 100, 104, 105, 106
STRING_EXT, LIST_EXT, BINARY_EXT, SMALL_BIG_EXT, LARGE_BIG_EXT = 107, 108, 109, 110, 111
SMALL_ATOM_EXT, ATOM_UTF8_EXT, SMALL_ATOM_UTF8_EXT = 115, 118, 119
_B64URL_TO_STD = bytes.maketrans(b"-_", b"+/")


@dataclass(frozen=True)
class StartKey:
    """A page start: the CouchDB view ``key`` and, when known, the ``docid``
    (CouchDB ``startkey_docid``) of the first row of the page."""

    key: JSONValue
    docid: str | None = None


def _check_depth(depth: int) -> None:
    """Raise ValueError when a container would sit deeper than MAX_DEPTH."""
    if depth >= MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")


def _binary(value: str) -> bytes:
    """The BINARY_EXT term of a string (kz_json keeps strings as UTF-8 binaries)."""
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TypeError("string is not encodable as UTF-8") from exc
    return struct.pack(">BI", BINARY_EXT, len(raw)) + raw


def _encode(value: object, out: bytearray, depth: int) -> None:
    """Append the term for ``value`` (no version byte) to ``out``."""
    if value is None or isinstance(value, bool):  # bool before int: atoms
        name = b"null" if value is None else b"true" if value else b"false"
        out += struct.pack(">BH", ATOM_EXT, len(name)) + name
    elif isinstance(value, int):
        if 0 <= value <= 255:
            out += bytes((SMALL_INTEGER_EXT, value))
        elif -(2**31) <= value < 2**31:
            out += struct.pack(">Bi", INTEGER_EXT, value)
        else:
            size = (abs(value).bit_length() + 7) // 8
            head = (struct.pack(">BB", SMALL_BIG_EXT, size) if size <= 255
                    else struct.pack(">BI", LARGE_BIG_EXT, size))
            out += head + bytes((value < 0,)) + abs(value).to_bytes(size, "little")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"non-finite float {value!r} is not a JSON value")
        out += struct.pack(">Bd", NEW_FLOAT_EXT, value)
    elif isinstance(value, str):
        out += _binary(value)
    elif isinstance(value, dict):
        _check_depth(depth)
        out += bytes((SMALL_TUPLE_EXT, 1))
        if value:
            out += struct.pack(">BI", LIST_EXT, len(value))
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"object key {key!r} is not a str")
            out += bytes((SMALL_TUPLE_EXT, 2)) + _binary(key)
            _encode(item, out, depth + 1)
        out.append(NIL_EXT)
    elif isinstance(value, list):
        _check_depth(depth)
        if value and len(value) <= 0xFFFF and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value
        ):  # Erlang packs non-empty lists of bytes as STRING_EXT
            out += struct.pack(">BH", STRING_EXT, len(value)) + bytes(value)
            return
        if value:
            out += struct.pack(">BI", LIST_EXT, len(value))
        for item in value:
            _encode(item, out, depth + 1)
        out.append(NIL_EXT)
    else:
        raise TypeError(f"{type(value).__name__} is not a JSON value")


def term_to_binary(value: JSONValue) -> bytes:
    """Encode a JSON value exactly as Kazoo's ``term_to_binary`` of its kz_json
    form. Raises TypeError for non-JSON values (other types, non-str object
    keys, NaN/infinity, unencodable strings) and ValueError if nested deeper
    than MAX_DEPTH."""
    out = bytearray((VERSION,))
    _encode(value, out, 0)
    return bytes(out)


class _Reader:
    """Cursor over an external-term buffer; every failure is a ValueError."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, size: int) -> bytes:
        if size > len(self.data) - self.pos:
            raise ValueError("truncated term or length beyond end of data")
        self.pos += size
        return self.data[self.pos - size:self.pos]

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def arity(self, tag: int) -> int:
        return self.uint(1 if tag == SMALL_TUPLE_EXT else 4)

    def binary(self) -> str:
        if self.uint(1) != BINARY_EXT:
            raise ValueError("expected a binary")
        return self.take(self.uint(4)).decode("utf-8")

    def count(self, tag: int) -> int:
        """Read the rest of a list header; return its length (0 for NIL_EXT)."""
        if tag == NIL_EXT:
            return 0
        if tag != LIST_EXT:
            raise ValueError("expected a list")
        return self.uint(4)  # each element takes a byte at least: a false length runs out of data

    def tail(self, length: int) -> None:
        if length and self.uint(1) != NIL_EXT:
            raise ValueError("improper list")

    def term(self, depth: int) -> JSONValue:
        tag = self.uint(1)
        if tag == SMALL_INTEGER_EXT:
            return self.uint(1)
        if tag == INTEGER_EXT:
            return int.from_bytes(self.take(4), "big", signed=True)
        if tag in (SMALL_BIG_EXT, LARGE_BIG_EXT):
            size = self.uint(1 if tag == SMALL_BIG_EXT else 4)
            sign = self.uint(1)
            if sign > 1:
                raise ValueError("bad bignum sign")
            magnitude = int.from_bytes(self.take(size), "little")
            return -magnitude if sign else magnitude
        if tag in (NEW_FLOAT_EXT, FLOAT_EXT):
            if tag == NEW_FLOAT_EXT:
                number: float = struct.unpack(">d", self.take(8))[0]
            else:
                text = self.take(31).partition(b"\0")[0]
                if not text or text.strip(b"0123456789+-.e"):
                    raise ValueError("bad FLOAT_EXT")
                number = float(text)
            if not math.isfinite(number):
                raise ValueError("non-finite float")
            return number
        if tag in (ATOM_EXT, SMALL_ATOM_EXT, ATOM_UTF8_EXT, SMALL_ATOM_UTF8_EXT):
            raw = self.take(self.uint(2 if tag in (ATOM_EXT, ATOM_UTF8_EXT) else 1))
            name = raw.decode("latin-1" if tag in (ATOM_EXT, SMALL_ATOM_EXT) else "utf-8")
            return {"null": None, "true": True, "false": False}.get(name, name)
        if tag == BINARY_EXT:
            return self.take(self.uint(4)).decode("utf-8")
        if tag == STRING_EXT:
            return list(self.take(self.uint(2)))
        if tag in (SMALL_TUPLE_EXT, LARGE_TUPLE_EXT) and self.arity(tag) == 1:
            return self.obj(depth)
        if tag in (NIL_EXT, LIST_EXT):
            _check_depth(depth)
            length = self.count(tag)
            items = [self.term(depth + 1) for _ in range(length)]
            self.tail(length)
            return items
        raise ValueError(f"unsupported term (tag {tag})")

    def obj(self, depth: int) -> dict[str, JSONValue]:
        """Read the proplist of a ``{PropList}`` kz_json object."""
        _check_depth(depth)
        result: dict[str, JSONValue] = {}
        length = self.count(self.uint(1))
        for _ in range(length):
            tag = self.uint(1)
            if tag not in (SMALL_TUPLE_EXT, LARGE_TUPLE_EXT) or self.arity(tag) != 2:
                raise ValueError("object member is not a 2-tuple")
            key = self.binary()
            result.setdefault(key, self.term(depth + 1))  # first wins, as in proplists
        self.tail(length)
        return result

    def top(self, allow_pair: bool) -> tuple[JSONValue, str | None]:
        """Read a whole buffer: version, one term (or ``{Key, DocId}`` when
        ``allow_pair``), and nothing after it."""
        if self.uint(1) != VERSION:
            raise ValueError("not an external term (bad version byte)")
        start, docid = self.pos, None
        tag = self.uint(1)
        if allow_pair and tag in (SMALL_TUPLE_EXT, LARGE_TUPLE_EXT) and self.arity(tag) == 2:
            key, docid = self.term(0), self.binary()
        else:
            self.pos = start
            key = self.term(0)
        if self.pos != len(self.data):
            raise ValueError("trailing bytes after term")
        return key, docid


def binary_to_term(data: bytes) -> JSONValue:
    """Decode an external term holding a kz_json value. Raises ValueError (and
    nothing else) for malformed, truncated, unsupported, too deeply nested
    (MAX_DEPTH) or trailing data. Atoms other than null/true/false -> str."""
    return _Reader(bytes(data)).top(allow_pair=False)[0]


def encode_start_key(start: StartKey) -> str:
    """Return the opaque ``next_start_key``: base64url (no padding) of the key
    term, byte-identical to Kazoo when ``docid`` is None, else of the 2-tuple
    ``{Key, DocId}``. Raises as term_to_binary does (TypeError for a non-str docid)."""
    data = term_to_binary(start.key)
    if start.docid is not None:
        if not isinstance(start.docid, str):
            raise TypeError("docid must be a str")
        data = bytes((VERSION, SMALL_TUPLE_EXT, 2)) + data[1:] + term_to_binary(start.docid)[1:]
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_start_key(text: str) -> StartKey:
    """Parse a client ``start_key``; never raises. As in Kazoo, text that is not
    a valid base64url-encoded JSON term is itself the key: ``StartKey(text)``.
    A top-level ``{Key, DocIdBinary}`` yields ``StartKey(key, docid)``."""
    try:
        raw = text.encode("ascii").translate(_B64URL_TO_STD)
        data = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
        key, docid = _Reader(data).top(allow_pair=True)
    except ValueError:
        return StartKey(key=text)
    return StartKey(key=key, docid=docid)
