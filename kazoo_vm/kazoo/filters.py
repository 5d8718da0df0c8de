"""Kazoo's generic query filters (crossbar_filter), as a predicate over documents."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]
_MISSING = object()
# a range filter keeps the documents for which compare(field value, bound) holds
RANGE_FILTERS = {"created_from": ("pvt_created", operator.ge), "created_to": ("pvt_created", operator.le),
                 "modified_from": ("pvt_modified", operator.ge), "modified_to": ("pvt_modified", operator.le)}


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


def _equals(path: str, wanted: list[str], doc: dict[str, Any]) -> bool:
    return _as_text(_get(doc, path)) in wanted


def _differs(path: str, wanted: list[str], doc: dict[str, Any]) -> bool:
    return _as_text(_get(doc, path)) not in wanted


def _has_key(path: str, doc: dict[str, Any]) -> bool:
    return _get(doc, path) is not _MISSING


def _key_missing(path: str, doc: dict[str, Any]) -> bool:
    return _get(doc, path) is _MISSING


def _has_value(path: str, doc: dict[str, Any]) -> bool:
    return not _empty(_get(doc, path))


def _value_missing(path: str, doc: dict[str, Any]) -> bool:
    return _empty(_get(doc, path))


KEY_TESTS: dict[str, Callable[[str, dict[str, Any]], bool]] = {
    "has_key": _has_key, "key_missing": _key_missing, "has_value": _has_value, "value_missing": _value_missing,
}


def build(query: Mapping[str, str], *, prefix: str = "", with_ranges: bool = True) -> Predicate | None:
    """The AND of every filter in ``query`` (None when there is none). ``prefix`` is put
    before field paths (``metadata.`` for messages)."""
    tests: list[Predicate] = []
    for key, raw in query.items():
        if key.startswith("filter_not_"):
            tests.append(partial(_differs, prefix + key[len("filter_not_"):], _wanted(raw)))
        elif key.startswith("filter_") and len(key) > len("filter_"):
            tests.append(partial(_equals, prefix + key[len("filter_"):], _wanted(raw)))
        elif key in KEY_TESTS:
            tests.append(partial(KEY_TESTS[key], prefix + raw))
        elif with_ranges and key in RANGE_FILTERS:
            field, compare = RANGE_FILTERS[key]
            bound = _number(raw)
            if bound is not None:
                tests.append(partial(_in_range, field, compare, bound))
    if not tests:
        return None
    return lambda doc: all(test(doc) for test in tests)


def _in_range(field: str, compare: Callable[[Any, Any], bool], bound: int, doc: dict[str, Any]) -> bool:
    value = doc.get(field)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return compare(value, bound)
