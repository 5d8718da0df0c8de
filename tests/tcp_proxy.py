"""A loopback TCP proxy a test can cut and restore, to take the store away from the
service (and add latency) without touching the store itself."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit


def first_node(url: str) -> str:
    """The first of the nodes ``KAZOO_VM_COUCH_URL`` may list (comma-separated)."""
    return url.split(",")[0].strip()


def through(url: str, port: int) -> str:
    """``url``'s first node (credentials kept) with its host and port replaced by a
    loopback proxy's: the service then sees that one node, through the proxy."""
    parts = urlsplit(first_node(url))
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit((parts.scheme, f"{auth}127.0.0.1:{port}", "", "", ""))


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, port: int = 0, delay: float = 0.0) -> None:
        self.target_host, self.target_port = target_host, target_port
        self.port = port
        self.delay = delay
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.add(upstream_writer)
        tasks = [asyncio.ensure_future(self._pipe(reader, upstream_writer)),
                 asyncio.ensure_future(self._pipe(upstream_reader, writer))]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.difference_update(tasks)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                if self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
