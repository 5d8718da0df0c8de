"""The pouchdb-server that kazoo_vm starts when no ``KAZOO_VM_COUCH_URL`` is given.

It is installed from the project's own ``package.json``/``package-lock.json`` (``npm
ci``) and listens on loopback only: persisted under a data folder for ``serve``, in
memory for the test run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .config import PROJECT_ROOT

POUCHDB_SERVER = PROJECT_ROOT / "node_modules" / ".bin" / "pouchdb-server"


class EmbeddedStoreError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedStore:
    """A pouchdb-server child process. ``data_dir=None`` keeps everything in memory."""

    data_dir: Path | None = None
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _workdir: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> str:
        """Start the server and wait until it answers; returns its URL."""
        if not POUCHDB_SERVER.exists():
            raise EmbeddedStoreError(
                f"{POUCHDB_SERVER} is missing: run `npm ci` in {PROJECT_ROOT} first"
            )
        if not self.port:
            self.port = free_port()
        if self.data_dir is None:
            self._workdir = tempfile.TemporaryDirectory(prefix="kazoo_vm_store_")
            workdir = Path(self._workdir.name)
            args = ["--in-memory"]
        else:
            workdir = self.data_dir
            workdir.mkdir(parents=True, exist_ok=True)
            args = ["--dir", str(workdir)]
        command = [str(POUCHDB_SERVER), "--port", str(self.port), "--host", "127.0.0.1",
                   "--config", str(workdir / "config.json"), "--no-stdout-logs", *args]
        log = open(workdir / "pouchdb-server.out", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self._wait_ready(timeout)
        return self.url

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise EmbeddedStoreError(f"pouchdb-server exited with {self.process.returncode}")
            try:
                request = urllib.request.Request(self.url + "/", headers={"Accept": "application/json"})
                with urllib.request.urlopen(request, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise EmbeddedStoreError(f"pouchdb-server did not answer on {self.url} within {timeout}s")

    def stop(self) -> None:
        """Stop the server (and its process group) and wait for it."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    async def astart(self) -> str:
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)
