"""Timed request loops over one shared aiohttp session, and their statistics.

A measurement runs ``concurrency`` workers that repeat one operation until a deadline
or a request budget is reached (whichever comes first). Every request still in flight
at the deadline is awaited and counted, so a run lasts at least one request per worker.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

# One operation of worker ``n``: raises on any failure, returns the bytes it received.
Operation = Callable[[int], Awaitable[int]]
# CPU seconds a process has used so far.
CpuClock = Callable[[], float]
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=300, sock_connect=10)
MAX_ERROR_EXAMPLES = 3
SLOW_ROUND = 2.0


class UnexpectedStatus(RuntimeError):
    """A response whose status is not the expected one."""

    def __init__(self, method: str, url: URL, status: int, body: bytes) -> None:
        super().__init__(f"{method} {url.path} -> {status}: {_gist(body)}")
        self.status = status


def _gist(body: bytes) -> str:
    """The telling part of an error body: a Kazoo envelope's message and data."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return repr(body[:300])
    if isinstance(decoded, dict) and ("message" in decoded or "data" in decoded):
        return json.dumps({"message": decoded.get("message"), "data": decoded.get("data")})[:300]
    return repr(body[:300])


@dataclass(frozen=True)
class Endpoint:
    """A server and the headers every request to it carries."""

    base: str
    headers: Mapping[str, str]

    def url(self, path: str) -> URL:
        """``path`` must already be percent-encoded (database names with ``%2F``)."""
        return URL(self.base.rstrip("/") + path, encoded=True)


@dataclass(frozen=True)
class Spread:
    """Servers that do the same work (service instances, or CouchDB nodes): worker ``w``
    of a measurement sends all its requests to ``members[w % len(members)]``, so that
    each member gets the same share of the workers and a worker keeps its connections."""

    members: tuple[Endpoint, ...]

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("a spread of no server")

    def at(self, worker: int) -> Endpoint:
        return self.members[worker % len(self.members)]

    @property
    def first(self) -> Endpoint:
        """The member of worker 0 (also used for the unmeasured checks)."""
        return self.members[0]

    def with_headers(self, headers: Mapping[str, str]) -> Spread:
        """Every member with ``headers`` added to its own."""
        return Spread(tuple(Endpoint(member.base, {**member.headers, **headers}) for member in self.members))


async def call(session: aiohttp.ClientSession, endpoint: Endpoint, method: str, path: str, *,
               params: Mapping[str, str] | None = None, data: Any = None,
               headers: Mapping[str, str] | None = None, expect: Iterable[int] = (200,)) -> bytes:
    """One request; returns the body read to the end. Raises UnexpectedStatus when the
    status is not in ``expect``."""
    url = endpoint.url(path)
    if params:
        url = url.with_query(params)
    all_headers = {**endpoint.headers, **(headers or {})}
    async with session.request(method, url, data=data, headers=all_headers) as response:
        body = await response.read()
        if response.status not in tuple(expect):
            raise UnexpectedStatus(method, url, response.status, body)
        return body


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Sample:
    """What a measurement saw: the latency of every successful request (seconds), the
    wall time of the measured phase, failures, and the bytes received."""

    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    received: int = 0
    cpu_seconds: float | None = None  # of the measured server process, when probed

    @property
    def cpu_ms_per_request(self) -> float | None:
        if self.cpu_seconds is None or not self.requests:
            return None
        return self.cpu_seconds * 1000 / self.requests

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def p50(self) -> float:
        return percentile(sorted(self.latencies), 0.50)

    @property
    def p99(self) -> float:
        return percentile(sorted(self.latencies), 0.99)

    @property
    def bytes_per_second(self) -> float:
        return self.received / self.elapsed if self.elapsed > 0 else 0.0

    def merge(self, other: Sample) -> Sample:
        """Both samples as one (times and counts added)."""
        cpu = None if self.cpu_seconds is None and other.cpu_seconds is None else \
            (self.cpu_seconds or 0.0) + (other.cpu_seconds or 0.0)
        return Sample(latencies=self.latencies + other.latencies, elapsed=self.elapsed + other.elapsed,
                      errors=self.errors + other.errors,
                      error_examples=(self.error_examples + other.error_examples)[:MAX_ERROR_EXAMPLES],
                      received=self.received + other.received, cpu_seconds=cpu)

    def summary(self) -> dict[str, Any]:
        return {"requests": self.requests, "elapsed_s": round(self.elapsed, 4), "rps": round(self.rps, 2),
                "p50_ms": round(self.p50 * 1000, 3), "p99_ms": round(self.p99 * 1000, 3),
                "errors": self.errors, "error_examples": self.error_examples,
                "received_bytes": self.received, "mb_per_s": round(self.bytes_per_second / 1e6, 2),
                "cpu_ms_per_request": None if self.cpu_ms_per_request is None else round(self.cpu_ms_per_request, 3)}


@dataclass
class _Budget:
    """Requests left to start and the deadline after which none starts."""

    left: int
    deadline: float

    def take(self) -> bool:
        if self.left <= 0 or time.perf_counter() >= self.deadline:
            return False
        self.left -= 1
        return True


async def _worker(index: int, operation: Operation, budget: _Budget, sample: Sample) -> None:
    while budget.take():
        started = time.perf_counter()
        try:
            received = await operation(index)
        except (aiohttp.ClientError, TimeoutError, UnexpectedStatus) as error:
            sample.errors += 1
            if len(sample.error_examples) < MAX_ERROR_EXAMPLES:
                sample.error_examples.append(f"{type(error).__name__}: {error}")
            continue
        sample.latencies.append(time.perf_counter() - started)
        sample.received += received


async def run(operation: Operation, concurrency: int, *, duration: float, max_requests: int) -> Sample:
    """Run ``operation`` from ``concurrency`` workers for at most ``duration`` seconds
    and ``max_requests`` requests (at least one per worker)."""
    sample = Sample()
    budget = _Budget(left=max(max_requests, concurrency), deadline=time.perf_counter() + duration)
    started = time.perf_counter()
    await asyncio.gather(*(_worker(index, operation, budget, sample) for index in range(concurrency)))
    sample.elapsed = time.perf_counter() - started
    return sample


async def measure(operation: Operation, concurrency: int, *, duration: float, max_requests: int,
                  warmup: float, cpu: CpuClock | None = None, opener: Operation | None = None) -> Sample:
    """An unmeasured warm-up, then :func:`run`. The warm-up is one request, then one
    per worker (connections opened, caches filled) unless that first request took
    ``warmup`` seconds or more: requests that slow gain nothing from it. ``opener``,
    a cheap request to the same server, is then sent from every worker at once, so
    that the measured part finds its connections open (also those the server opens
    to its store) rather than opening them while the store is busiest. ``cpu`` (a
    server's CPU seconds so far) is read around the measured part."""
    if warmup > 0:
        first = await run(operation, 1, duration=warmup, max_requests=1)
        if concurrency > 1 and first.latencies and first.latencies[0] < warmup:
            await run(operation, concurrency, duration=warmup, max_requests=concurrency)
    if opener is not None and concurrency > 1:
        await run(opener, concurrency, duration=warmup, max_requests=concurrency)
    before = None if cpu is None else cpu()
    sample = await run(operation, concurrency, duration=duration, max_requests=max_requests)
    if cpu is not None and before is not None:
        sample.cpu_seconds = cpu() - before
    return sample


@dataclass
class Pair:
    """Raw and service samples of one variant at one concurrency."""

    raw: Sample
    service: Sample
    rounds: int


async def paired(raw: Operation, service: Operation, concurrency: int, *, rounds: int, duration: float,
                 max_requests: int, warmup: float, service_cpu: CpuClock | None = None,
                 openers: tuple[Operation, Operation] | None = None) -> Pair:
    """Raw then service, ``rounds`` times, merged, so that a drift of the machine's
    speed falls on both sides. A round that lasted over ``SLOW_ROUND`` times its
    planned time (requests slower than the run) is not repeated."""
    total = Pair(Sample(), Sample(), 0)
    planned = 2 * (duration + warmup)
    for _round in range(rounds):
        started = time.perf_counter()
        total.raw = total.raw.merge(await measure(raw, concurrency, duration=duration,
                                                  max_requests=max_requests, warmup=warmup,
                                                  opener=openers and openers[0]))
        total.service = total.service.merge(await measure(service, concurrency, duration=duration,
                                                          max_requests=max_requests, warmup=warmup,
                                                          cpu=service_cpu, opener=openers and openers[1]))
        total.rounds += 1
        if time.perf_counter() - started > SLOW_ROUND * planned:
            break
    return total
