"""Concurrent single-document requests to one database, sent together.

Requests are grouped by a key (a database, say). While ``in_flight`` requests of a key
are out, later ones wait, and all that waited go out together as the next request
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
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
# Sends one group of items of a key; returns one result or error per item, in order.
Send = Callable[[Hashable, list[Item]], Awaitable[list[Result | Exception]]]


@dataclass
class _Lane(Generic[Item, Result]):
    out: int = 0
    waiting: list[tuple[Item, asyncio.Future[Result]]] = field(default_factory=list)


class Coalescer(Generic[Item, Result]):
    def __init__(self, send: Send[Item, Result], *, in_flight: int = 1, max_group: int = 100) -> None:
        self._send = send
        self._in_flight = in_flight
        self._max_group = max_group
        self._lanes: dict[Hashable, _Lane[Item, Result]] = {}
        self._groups: set[asyncio.Task[None]] = set()

    async def submit(self, key: Hashable, item: Item) -> Result:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        if lane.out < self._in_flight and not lane.waiting:
            lane.out += 1
            try:
                (result,) = await self._send(key, [item])
            finally:
                self._sent(key, lane)
            if isinstance(result, Exception):
                raise result
            return result
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        lane.waiting.append((item, future))
        return await future

    def _sent(self, key: Hashable, lane: _Lane[Item, Result]) -> None:
        """One request of ``key`` is back: the waiting items go out as the next one."""
        lane.out -= 1
        if lane.waiting and lane.out < self._in_flight:
            group, lane.waiting = lane.waiting[:self._max_group], lane.waiting[self._max_group:]
            lane.out += 1
            task = asyncio.get_running_loop().create_task(self._send_group(key, lane, group))
            self._groups.add(task)
            task.add_done_callback(self._groups.discard)
        elif lane.out == 0 and not lane.waiting:
            self._lanes.pop(key, None)

    async def _send_group(self, key: Hashable, lane: _Lane[Item, Result],
                          group: list[tuple[Item, asyncio.Future[Result]]]) -> None:
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
            self._sent(key, lane)
        for (_, future), result in zip(live, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def close(self) -> None:
        """Cancel the groups still out (their waiters see CancelledError)."""
        for task in list(self._groups):
            task.cancel()
        for task in list(self._groups):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for lane in self._lanes.values():
            for _, future in lane.waiting:
                future.cancel()
        self._lanes.clear()
