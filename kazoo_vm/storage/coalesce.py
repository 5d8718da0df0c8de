"""Concurrent single-document requests to one database, sent together.

Requests are grouped by a key (a database, say). While a request of a key is out, later
ones wait, and all that waited go out together as the next request
(``_all_docs`` for reads, ``_bulk_docs`` for writes, chosen by the caller's ``send``).
Nothing waits while nothing is out, so a lone request costs what it always did; under
load one CouchDB round trip serves many clients instead of one each.

A waiting request only ever joins a request sent after it arrived, so a read never
returns anything older than a read of its own would have; each item gets its own
result (or error), as if sent alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
# Sends one group of items of a key; returns one result or error per item, in order.
Send = Callable[[Hashable, list[Item]], Awaitable[list[Result | Exception]]]


# The items waiting behind the request out for a key; a key has a lane exactly while a
# request of it is out.
_Lane = list[tuple[Item, "asyncio.Future[Result]"]]


class Coalescer(Generic[Item, Result]):
    def __init__(self, send: Send[Item, Result], *, max_group: int = 100) -> None:
        self._send = send
        self._max_group = max_group
        self._lanes: dict[Hashable, _Lane[Item, Result]] = {}
        self._groups: set[asyncio.Task[None]] = set()
        self._closed = False

    async def submit(self, key: Hashable, item: Item) -> Result:
        lane = self._lanes.get(key)
        if lane is None:  # nothing out: go at once
            self._lanes[key] = []
            try:
                (result,) = await self._send(key, [item])
            finally:
                self._sent(key)
            if isinstance(result, Exception):
                raise result
            return result
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        lane.append((item, future))
        return await future

    def _sent(self, key: Hashable) -> None:
        """The request out for ``key`` is back: the waiting items go out as the next one."""
        lane = self._lanes.get(key)
        if not lane or self._closed:
            self._lanes.pop(key, None)
            for _, future in lane or ():
                future.cancel()
            return
        group, self._lanes[key] = lane[:self._max_group], lane[self._max_group:]
        task = asyncio.get_running_loop().create_task(self._send_group(key, group))
        self._groups.add(task)
        task.add_done_callback(self._groups.discard)

    async def _send_group(self, key: Hashable, group: _Lane[Item, Result]) -> None:
        live = [(item, future) for item, future in group if not future.done()]  # not given up
        try:
            results = await self._send(key, [item for item, _ in live]) if live else []
        except asyncio.CancelledError:
            for _, future in live:
                future.cancel()
            raise
        except Exception as error:  # the whole request failed: so did each item
            results = [error] * len(live)
        finally:
            self._sent(key)
        for (_, future), result in zip(live, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def close(self) -> None:
        """Cancel the groups still out and the items waiting (their callers see
        CancelledError)."""
        self._closed = True
        for task in list(self._groups):
            task.cancel()
        for task in list(self._groups):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for lane in self._lanes.values():
            for _, future in lane:
                future.cancel()
        self._lanes.clear()
