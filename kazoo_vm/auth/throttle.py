"""Failed logins slowed down (``user_auth``, ``api_auth``, Basic credentials).

Each instance counts, in memory, the failed logins of a client address for each account
it names (``account_name``, a realm, the account id of Basic credentials; ``api_auth``
names none and counts under ``api_key``) and of the address alone, which may fail
ADDRESS_FACTOR times as often. Counting starts at a key's first failure and lasts
``window`` seconds. The ``failures``-th failure of a key blocks it for one second, each
further one for twice as long, up to ``backoff_max``: while a key is blocked its logins
get 429 with ``Retry-After`` and their credentials are not checked at all.

* No lockout: the client address is part of every key, so failures from elsewhere never
  block a user's own address; a login that succeeds clears its address's count for the
  account it named (not the address's own count: a client that owns one account could
  otherwise reset it between guesses at others).
* The address is the TCP peer's; ``X-Forwarded-For`` is read only from the proxies
  ``KAZOO_VM_TRUSTED_PROXIES`` names (anyone else could name any address there). Behind
  a reverse proxy that is not named, every client has the proxy's address. IPv6 addresses count per /64 (what one host
  usually gets).
* Checks running at once count too: a key that has failed lets no more run together
  than the failures it has left (at least one), a fresh key BURST_FACTOR times its
  limit, so a burst of parallel guesses cannot all be checked before the first failure
  counts (the excess gets 429 with ``Retry-After: 1``).
* The table holds ``max_entries`` keys at the most, the least recently used (a refused
  request uses its keys too) evicted first. Instances count apart (a count shared through CouchDB would cost a write per
  failure): N instances behind a balancer allow up to N times these figures.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from aiohttp import web

from .. import appkeys
from ..config import Config
from ..errors import InvalidCredentials, TooManyRequests

ADDRESS_FACTOR = 10
BURST_FACTOR = 4
MAX_ENTRIES = 20_000
Key = tuple[str, str, str]  # (address, kind of name, name); kind and name empty: the address alone


@dataclass(slots=True)
class _Count:
    start: float = 0.0  # first failure of the window
    failures: int = 0
    running: int = 0
    blocked_until: float = 0.0


def client_address(request: web.Request) -> str:
    """Who sent ``request``, for counting (see :func:`address_key`): its TCP peer; when
    that is a trusted proxy (``KAZOO_VM_TRUSTED_PROXIES``), the last address of
    ``X-Forwarded-For`` that is not one (the one the first trusted proxy saw)."""
    trusted = [ipaddress.ip_network(network) for network in request.app[appkeys.CONFIG].trusted_proxies]
    peer = request.remote or ""
    if trusted and _within(peer, trusted):
        forwarded = ",".join(request.headers.getall("X-Forwarded-For", []))
        for hop in reversed([part.strip() for part in forwarded.split(",") if part.strip()]):
            if not _within(hop, trusted):
                return address_key(hop) if _is_address(hop) else address_key(peer)
            peer = hop
    return address_key(peer)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _within(text: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return any(address in network for network in networks)


def address_key(peer: str) -> str:
    """An IPv4 address as is, an IPv6 one as its /64 (an IPv4-mapped one as the IPv4
    address), anything else (a Unix socket's empty peer) unchanged."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address.packed, 64), strict=False))
    return str(address)


class LoginThrottle:
    """The failure counts of one instance (see the module docstring); ``failures`` 0
    turns it off."""

    def __init__(self, failures: int, window: float, backoff_max: float, *, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.window = window
        self.backoff_max = backoff_max
        self.max_entries = max_entries
        self._clock = clock
        self._counts: OrderedDict[Key, _Count] = OrderedDict()

    @classmethod
    def from_config(cls, config: Config, *, clock: Callable[[], float] = time.monotonic) -> LoginThrottle:
        return cls(config.auth_failures, config.auth_window, config.auth_backoff_max, clock=clock)

    def __len__(self) -> int:
        return len(self._counts)

    @contextmanager
    def attempt(self, address: str, names: Iterable[tuple[str, str]]) -> Iterator[None]:
        """Around one check of credentials from ``address`` naming ``names`` (``(kind,
        name)`` pairs): TooManyRequests at once while a key is blocked; else the check
        runs, an InvalidCredentials out of it is a failure of every key, a normal end a
        success, any other error neither."""
        if self.failures <= 0:
            yield
            return
        keys = [(address, "", "")] + [(address, kind, name) for kind, name in dict.fromkeys(names) if name]
        limits = [self.failures * ADDRESS_FACTOR] + [self.failures] * (len(keys) - 1)
        now = self._clock()
        wait = max(self._wait(key, limit, now) for key, limit in zip(keys, limits, strict=True))
        if wait > 0:
            raise TooManyRequests(max(1, math.ceil(wait)))
        counts = [self._running(key) for key in keys]
        try:
            yield
        except InvalidCredentials:
            now = self._clock()
            for count, limit in zip(counts, limits, strict=True):
                count.running -= 1
                self._failed(count, limit, now)
            raise
        except BaseException:
            for key, count in zip(keys, counts, strict=True):
                count.running -= 1
                self._forget_if_idle(key, count)
            raise
        for index, (key, count) in enumerate(zip(keys, counts, strict=True)):
            count.running -= 1
            if index > 0:  # the accounts named, not the address alone
                count.failures, count.blocked_until = 0, 0.0
            self._forget_if_idle(key, count)

    def _wait(self, key: Key, limit: int, now: float) -> float:
        """Seconds before ``key`` may be checked again (0: now)."""
        count = self._counts.get(key)
        if count is None:
            return 0.0
        self._counts.move_to_end(key)  # a client that keeps trying stays in the table
        self._expire(count, now)
        if count.blocked_until > now:
            return count.blocked_until - now
        room = max(limit - count.failures, 1) if count.failures else limit * BURST_FACTOR
        return 1.0 if count.running >= room else 0.0

    def _running(self, key: Key) -> _Count:
        count = self._counts.get(key)
        if count is None:
            count = self._counts[key] = _Count()
            while len(self._counts) > self.max_entries:
                self._counts.popitem(last=False)
        else:
            self._counts.move_to_end(key)
        count.running += 1
        return count

    def _expire(self, count: _Count, now: float) -> None:
        if count.failures and now - count.start >= self.window:
            count.failures = 0

    def _failed(self, count: _Count, limit: int, now: float) -> None:
        self._expire(count, now)
        if count.failures == 0:
            count.start = now
        count.failures += 1
        beyond = count.failures - limit
        if beyond >= 0:
            count.blocked_until = now + min(self.backoff_max, 2.0 ** min(beyond, 32))

    def _forget_if_idle(self, key: Key, count: _Count) -> None:
        if count.running == 0 and count.failures == 0 and self._counts.get(key) is count:
            del self._counts[key]
