"""Kazoo's paginated view reading (crossbar_view), across one or several databases.

A page is filled across databases (newest MODB first) and past rows that a filter
drops; the row after the page becomes ``next_start_key`` together with its document id,
so rows with equal keys at a page boundary are neither repeated nor skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..kazoo.start_key import StartKey
from .couch import Couch, QueryValue
from .errors import NotFound, StoreFault

Row = dict[str, Any]
RowFilter = Callable[[Row], bool]
# CouchDB's and pouchdb-server's 400 for a start key past the end key in reading order.
NO_ROWS_CAN_MATCH = "No rows can match your key range"


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


@dataclass(frozen=True)
class _Cursor:
    """Where reading resumes: the first row with ``key`` whose id is not before
    ``docid`` (or after it, when not ``inclusive``), ``skip`` rows of that key on."""

    key: Any
    docid: str | None
    inclusive: bool
    skip: int = 0


def _params(view: ViewRange, cursor: _Cursor | None, limit: int | None) -> dict[str, QueryValue]:
    params: dict[str, QueryValue] = {
        "startkey": view.startkey if cursor is None else cursor.key,
        "endkey": view.endkey,
        "descending": view.descending,
    }
    if cursor is not None and cursor.skip:
        params["skip"] = cursor.skip
    if view.include_docs:
        params["include_docs"] = True
    if limit is not None:
        params["limit"] = limit
    return params


def _no_rows_can_match(error: StoreFault) -> bool:
    """Whether the store refused the range because no row can lie in it (a client's
    ``start_key`` beyond the end of the listing): an empty result, not a fault."""
    return error.cause == "store_400" and NO_ROWS_CAN_MATCH in str(error.detail)


def _passed(row: Row, cursor: _Cursor | None, descending: bool) -> bool:
    """True for a row of the cursor's key that comes before the cursor's document.

    Ties are broken here rather than with CouchDB's ``startkey_docid``, which
    pouchdb-server ignores; both servers order rows of equal keys by document id."""
    if cursor is None or cursor.docid is None or row.get("key") != cursor.key:
        return False
    row_id = str(row.get("id"))
    if row_id == cursor.docid:
        return not cursor.inclusive
    return row_id > cursor.docid if descending else row_id < cursor.docid


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
    contributes nothing, nor does one where ``start`` lies past the end of the range."""
    page = Page()
    for db in dbs:
        cursor = None if start is None else _Cursor(start.key, start.docid, inclusive=True)
        while True:
            limit = None if page_size is None else page_size - len(page.rows) + 1
            try:
                rows = await couch.view(db, view.design, view.view, **_params(view, cursor, limit))
            except NotFound:
                break
            except StoreFault as error:
                if not _no_rows_can_match(error):
                    raise
                break
            for row in rows:
                if _passed(row, cursor, view.descending) or (keep is not None and not keep(row)):
                    continue
                if page_size is not None and len(page.rows) == page_size:
                    page.next_start = StartKey(key=row["key"], docid=row["id"])
                    return page
                page.rows.append(row)
            if limit is None or len(rows) < limit:
                break
            last = rows[-1]
            if cursor is not None and last.get("key") == cursor.key:
                cursor = _Cursor(cursor.key, cursor.docid, cursor.inclusive, cursor.skip + len(rows))
            else:
                cursor = _Cursor(last["key"], last["id"], inclusive=False)
    return page


def _order(value: Any) -> tuple[int, Any]:
    """A Python sort key following CouchDB's collation for the keys used here
    (null < numbers < strings < arrays < objects)."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, int | float):
        return (2, value)
    if isinstance(value, str):
        return (3, value)
    if isinstance(value, list):
        return (4, tuple(_order(item) for item in value))
    return (5, 0)


def page_in_memory(rows: list[Row], *, page_size: int | None, start: StartKey | None, descending: bool) -> Page:
    """The same paging as :func:`read_page`, over rows already read (used when rows of
    several sources must be merged, e.g. legacy messages with MODB ones)."""
    ordered = sorted(rows, key=lambda row: (_order(row.get("key")), str(row.get("id"))), reverse=descending)
    if start is not None:
        bound = (_order(start.key), start.docid)

        def before_start(row: Row) -> bool:
            key = _order(row.get("key"))
            if bound[1] is None:
                return key > bound[0] if descending else key < bound[0]
            position = (key, str(row.get("id")))
            return position > bound if descending else position < bound

        ordered = [row for row in ordered if not before_start(row)]
    if page_size is None or len(ordered) <= page_size:
        return Page(rows=ordered)
    following = ordered[page_size]
    return Page(rows=ordered[:page_size], next_start=StartKey(key=following["key"], docid=following["id"]))
