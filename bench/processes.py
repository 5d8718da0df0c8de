"""The processes of a run: the store, the service under test, and the service's memory.

The service runs as its own process (``python -m kazoo_vm serve``) so that its
resident memory can be read from ``/proc/<pid>/status``; every address is 127.0.0.1.
With ``--instances N`` it runs as N such processes on their own ports (:class:`Instances`),
instance ``i`` given the store's nodes starting at node ``i`` (:func:`node_orders`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kazoo_vm.config import PROJECT_ROOT
from kazoo_vm.embedded_store import EmbeddedStore, free_port
from kazoo_vm.storage.couch import CouchEndpoint

SERVICE_START_TIMEOUT = 60.0
SERVICE_STOP_TIMEOUT = 30.0
# The service waits for CouchDB as long as the benchmark's client does (client.REQUEST_TIMEOUT):
# at concurrency 64 the heaviest scenarios queue longer than the default 30 s on pouchdb-server.
COUCH_TIMEOUT = 300


class ProcessError(RuntimeError):
    """A child process did not start or answer as expected."""


@contextlib.contextmanager
def store(couch_url: str | None) -> Iterator[tuple[str, str]]:
    """(URL, kind) of the store: ``couch_url`` as given, else an in-memory
    pouchdb-server started here and stopped on exit."""
    if couch_url:
        yield couch_url, "external"
        return
    embedded = EmbeddedStore()
    url = embedded.start()
    try:
        yield url, "pouchdb-server (embedded, in memory)"
    finally:
        embedded.stop()


@dataclass
class Service:
    """``python -m kazoo_vm serve`` on a free port against ``couch_url`` (with its
    CouchDB timeout raised to ``COUCH_TIMEOUT``); with ``profile`` the process runs
    under cProfile, which writes the file when it stops."""

    couch_url: str
    profile: Path | None = None
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _workdir: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ProcessError("the service is not running")
        return self.process.pid

    @property
    def log_path(self) -> Path | None:
        return None if self._workdir is None else Path(self._workdir.name) / "service.log"

    def command(self) -> list[str]:
        prefix = [sys.executable]
        if self.profile is not None:
            prefix += ["-m", "cProfile", "-o", str(self.profile)]
        return [*prefix, "-m", "kazoo_vm", "serve", "--host", "127.0.0.1", "--port", str(self.port)]

    def start(self) -> str:
        """Start the service and wait until it answers HTTP; returns its URL."""
        self.port = self.port or free_port()
        self._workdir = tempfile.TemporaryDirectory(prefix="kazoo_vm_bench_")
        env = {**os.environ, "KAZOO_VM_COUCH_URL": self.couch_url, "KAZOO_VM_DATA_DIR": self._workdir.name,
               "KAZOO_VM_PORT": str(self.port), "KAZOO_VM_COUCH_TIMEOUT": str(COUCH_TIMEOUT)}
        assert self.log_path is not None
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), cwd=PROJECT_ROOT, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_ready()
        return self.url

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + SERVICE_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise ProcessError(f"the service exited at start:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/v2/", timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # any HTTP answer (the envelope's 404) means it listens
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise ProcessError(f"the service did not answer within {SERVICE_START_TIMEOUT}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def restart(self) -> str:
        """Stop, then start a new process on the same port; returns its URL."""
        self.stop()
        return self.start()

    def stop(self) -> None:
        """SIGTERM (a clean stop, so cProfile writes its file), SIGKILL if it hangs."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=SERVICE_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None


def node_orders(couch_url: str, count: int) -> list[str]:
    """``KAZOO_VM_COUCH_URL`` of each of ``count`` service instances. One URL: every
    instance gets it as is. Several nodes (separated by commas): instance ``i`` gets
    them rotated so that node ``i`` (modulo the node count) comes first, since kazoo_vm
    sends its requests to the first node that answers; a node given without credentials
    keeps those it had from the first node (``CouchEndpoint.parse_nodes``)."""
    nodes = CouchEndpoint.parse_nodes(couch_url)
    if len(nodes) == 1:
        return [couch_url] * count
    orders = []
    for index in range(count):
        first = index % len(nodes)
        orders.append(",".join(node.with_credentials() for node in nodes[first:] + nodes[:first]))
    return orders


@dataclass
class Instances:
    """``count`` services (:class:`Service`), each on its own port, against the same store;
    instance ``i``'s ``KAZOO_VM_COUCH_URL`` lists the nodes from node ``i`` on
    (:func:`node_orders`). With ``profile`` only the first instance runs under cProfile
    (one profile file per run)."""

    services: list[Service]

    @classmethod
    def of_store(cls, couch_url: str, count: int, profile: Path | None = None) -> Instances:
        return cls([Service(url, profile=profile if index == 0 else None)
                    for index, url in enumerate(node_orders(couch_url, max(count, 1)))])

    def __len__(self) -> int:
        return len(self.services)

    @property
    def first(self) -> Service:
        return self.services[0]

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(service.url for service in self.services)

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(service.pid for service in self.services)

    def start(self) -> tuple[str, ...]:
        """Start every instance in turn (each on a free port); if one fails, stop those started."""
        try:
            for service in self.services:
                service.start()
        except BaseException:
            self.stop()
            raise
        return self.urls

    def restart(self) -> tuple[str, ...]:
        """Stop every instance, then start new processes on the same ports."""
        self.stop()
        return self.start()

    def stop(self) -> None:
        for service in self.services:
            service.stop()

    def stopped(self) -> Service | None:
        """The first instance whose process is not running, if any."""
        for service in self.services:
            if service.process is None or service.process.poll() is not None:
                return service
        return None

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by every instance together."""
        return sum(cpu_seconds(pid) for pid in self.pids)


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak) of a process, in KiB."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0])
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak(pid: int) -> bool:
    """Reset ``VmHWM`` to the current RSS (``clear_refs`` 5); False when not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


@dataclass
class PeakMemory:
    """The highest RSS seen while a block ran: the kernel's ``VmHWM`` when it could be
    reset first, and at least the highest of the samples taken every ``interval`` s."""

    pid: int
    interval: float = 0.01
    start_kib: int = 0
    peak_kib: int = 0
    hwm_reset: bool = False
    samples: int = 0

    @contextlib.asynccontextmanager
    async def watch(self) -> AsyncIterator[PeakMemory]:
        self.hwm_reset = reset_peak(self.pid)
        self.start_kib = memory_kib(self.pid).get("VmRSS", 0)
        self.peak_kib = self.start_kib
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                self.peak_kib = max(self.peak_kib, memory_kib(self.pid).get("VmRSS", 0))
                self.samples += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)

        task = asyncio.create_task(sample())
        try:
            yield self
        finally:
            stop.set()
            await task
            current = memory_kib(self.pid)
            self.peak_kib = max(self.peak_kib, current.get("VmRSS", 0))
            if self.hwm_reset:
                self.peak_kib = max(self.peak_kib, current.get("VmHWM", 0))
