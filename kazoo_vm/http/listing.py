"""Listing parameters shared by every paginated endpoint (Kazoo's crossbar_view)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import FaultyRequest
from ..kazoo.start_key import StartKey, decode_start_key, encode_start_key
from .payload import Payload

MAX_PAGE_SIZE = 10_000


def _truthy(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


@dataclass(frozen=True)
class ListingParams:
    """``page_size`` is None when the client asked for ``paginate=false``."""

    page_size: int | None
    start: StartKey | None
    start_text: str | None
    descending: bool


def _page_size(value: Any, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise FaultyRequest("invalid page size") from None
    if size < 1:
        raise FaultyRequest("page size must be at least 1")
    return min(size, MAX_PAGE_SIZE)


def _start(text: Any) -> StartKey | None:
    if not isinstance(text, str) or text == "":
        return None
    start = decode_start_key(text)
    try:
        json.dumps(start.key)
    except (TypeError, ValueError):
        return StartKey(key=text)
    return start


def listing_params(request_query: Any, payload: Payload, default_page_size: int) -> ListingParams:
    def lookup(name: str) -> Any:
        if name in request_query:
            return request_query[name]
        if isinstance(payload.data, dict) and name in payload.data:
            return payload.data[name]
        return payload.envelope.get(name)

    paginate = _truthy(lookup("paginate"))
    page_size = None if paginate is False else _page_size(lookup("page_size"), default_page_size)
    start_text = lookup("start_key")
    ascending = _truthy(lookup("ascending")) is True or _truthy(lookup("descending")) is False
    return ListingParams(
        page_size=page_size,
        start=None if page_size is None else _start(start_text),
        start_text=start_text if isinstance(start_text, str) and start_text else None,
        descending=not ascending,
    )


def page_envelope(params: ListingParams, rows: int, next_start: StartKey | None,
                  *, always_start_key: bool, computed_start: StartKey | None = None) -> dict[str, Any]:
    """``page_size``/``start_key``/``next_start_key`` for a paginated answer."""
    if params.page_size is None:
        return {}
    extra: dict[str, Any] = {"page_size": rows}
    if params.start_text is not None:
        extra["start_key"] = params.start_text
    elif always_start_key and computed_start is not None:
        extra["start_key"] = encode_start_key(computed_start)
    if next_start is not None:
        extra["next_start_key"] = encode_start_key(next_start)
    return extra
