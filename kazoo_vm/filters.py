"""Kazoo's generic query filters (crossbar_filter), as a predicate over documents."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]
_MISSING = object()
KEY_FILTERS = ("has_key", "key_missing", "has_value", "value_missing")
RANGE_FILTERS = {"created_from": ("pvt_created", 1), "created_to": ("pvt_created", -1),
                 "modified_from": ("pvt_modified", 1), "modified_to": ("pvt_modified", -1)}


def _get(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


def _as_text(value: Any) -> str:
    if value is _MISSING or value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def _wanted(text: str) -> list[str]:
    """A filter value; a JSON array means 'any of'."""
    if text.startswith("["):
        try:
            values = json.loads(text)
        except ValueError:
            return [text]
        if isinstance(values, list):
            return [_as_text(value) for value in values]
    return [text]


def _empty(value: Any) -> bool:
    return value is _MISSING or value is None or value == "" or value == [] or value == {}


def _number(value: Any) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def is_filter_key(key: str, *, with_ranges: bool) -> bool:
    return (key.startswith("filter_") or key in KEY_FILTERS
            or (with_ranges and key in RANGE_FILTERS))


def build(query: Mapping[str, str], *, prefix: str = "", with_ranges: bool = True) -> Predicate | None:
    """The AND of every filter in ``query`` (None when there is none). ``prefix`` is put
    before field paths (``metadata.`` for messages)."""
    tests: list[Predicate] = []
    for key, raw in query.items():
        if key.startswith("filter_not_"):
            path, wanted = prefix + key[len("filter_not_"):], _wanted(raw)
            tests.append(lambda doc, p=path, w=wanted: _as_text(_get(doc, p)) not in w)
        elif key.startswith("filter_") and len(key) > len("filter_"):
            path, wanted = prefix + key[len("filter_"):], _wanted(raw)
            tests.append(lambda doc, p=path, w=wanted: _as_text(_get(doc, p)) in w)
        elif key == "has_key":
            tests.append(lambda doc, p=prefix + raw: _get(doc, p) is not _MISSING)
        elif key == "key_missing":
            tests.append(lambda doc, p=prefix + raw: _get(doc, p) is _MISSING)
        elif key == "has_value":
            tests.append(lambda doc, p=prefix + raw: not _empty(_get(doc, p)))
        elif key == "value_missing":
            tests.append(lambda doc, p=prefix + raw: _empty(_get(doc, p)))
        elif with_ranges and key in RANGE_FILTERS:
            field, sign = RANGE_FILTERS[key]
            bound = _number(raw)
            if bound is not None:
                tests.append(lambda doc, f=field, s=sign, b=bound: _in_range(doc.get(f), s, b))
    if not tests:
        return None
    return lambda doc: all(test(doc) for test in tests)


def _in_range(value: Any, sign: int, bound: int) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return value >= bound if sign > 0 else value <= bound
