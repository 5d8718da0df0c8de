"""Kazoo's paginated view reading (crossbar_view), across one or several databases.

A page is filled across databases (newest MODB first) and past rows that a filter
drops; the row after the page becomes ``next_start_key`` together with its document id,
so rows with equal keys at a page boundary are neither repeated nor skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..start_key import StartKey
from .couch import Couch, QueryValue
from .errors import NotFound

Row = dict[str, Any]
RowFilter = Callable[[Row], bool]


@dataclass(frozen=True)
class ViewRange:
    """Which rows of which view: ``startkey``/``endkey`` in reading order."""

    design: str
    view: str
    startkey: Any
    endkey: Any
    descending: bool = True
    include_docs: bool = False


@dataclass
class Page:
    rows: list[Row] = field(default_factory=list)
    next_start: StartKey | None = None


def _params(view: ViewRange, start: StartKey | None, limit: int | None) -> dict[str, QueryValue]:
    params: dict[str, QueryValue] = {
        "startkey": view.startkey if start is None else start.key,
        "endkey": view.endkey,
        "descending": view.descending,
    }
    if start is not None and start.docid is not None:
        params["startkey_docid"] = start.docid
    if view.include_docs:
        params["include_docs"] = True
    if limit is not None:
        params["limit"] = limit
    return params


async def read_page(
    couch: Couch,
    dbs: Sequence[str],
    view: ViewRange,
    *,
    page_size: int | None,
    start: StartKey | None = None,
    keep: RowFilter | None = None,
) -> Page:
    """Rows of ``view`` over ``dbs`` (in that order) that ``keep`` accepts.

    ``page_size=None`` reads everything (one request per database); otherwise at most
    ``page_size`` rows plus the start of the next page. A database that does not exist
    contributes nothing."""
    page = Page()
    for db in dbs:
        cursor = start
        skip_first = False
        while True:
            limit = None if page_size is None else page_size - len(page.rows) + 1
            params = _params(view, cursor, None if limit is None else limit + int(skip_first))
            try:
                rows = await couch.view(db, view.design, view.view, **params)
            except NotFound:
                break
            if skip_first:
                rows = rows[1:]
            for row in rows:
                if keep is not None and not keep(row):
                    continue
                if page_size is not None and len(page.rows) == page_size:
                    page.next_start = StartKey(key=row["key"], docid=row["id"])
                    return page
                page.rows.append(row)
            if limit is None or len(rows) < limit:
                break
            last = rows[-1]
            cursor = StartKey(key=last["key"], docid=last["id"])
            skip_first = True
    return page
