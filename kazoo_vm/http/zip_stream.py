"""ZIP streaming on threads of its own.

stream-zip's ``async_stream_zip`` runs its (synchronous) ZIP generator on the event
loop's default executor, and each running ZIP holds one of its threads for its whole
length, blocked while the loop fetches the next recording from CouchDB. That executor
has ``min(32, CPUs + 4)`` threads (6 on 2 CPUs): the 7th concurrent ZIP waited for a
whole other download to finish, and aiohttp's host lookups for new CouchDB connections
(same executor) waited behind them. :func:`stream_zip_async` is the same adapter with an
executor reserved for ZIPs and sized for many concurrent downloads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from stream_zip import stream_zip

ZIP_THREADS = 64
_executor = ThreadPoolExecutor(max_workers=ZIP_THREADS, thread_name_prefix="kazoo_vm-zip")
T = TypeVar("T")


async def stream_zip_async(files: AsyncIterable[tuple[Any, ...]]) -> AsyncGenerator[bytes, None]:
    """The ZIP of ``files`` (stream-zip's member tuples, each with an async iterable of
    chunks last), chunk by chunk."""
    loop = asyncio.get_running_loop()

    def to_sync(iterable: AsyncIterable[T]) -> Iterable[T]:
        """Run on a ZIP thread: each item is awaited on the event loop."""
        iterator = iterable.__aiter__()

        async def next_item() -> T:
            return await iterator.__anext__()

        while True:
            try:
                item = asyncio.run_coroutine_threadsafe(next_item(), loop).result()
            except StopAsyncIteration:
                return
            yield item

    members = (member[0:4] + (to_sync(member[4]),) for member in to_sync(files))
    chunks = iter(stream_zip(members))

    def next_chunk() -> bytes | None:
        return next(chunks, None)

    while True:
        chunk = await loop.run_in_executor(_executor, next_chunk)
        if chunk is None:
            return
        yield chunk
