"""What every scenario works with: the session, both servers, the loader, and the
helpers that turn a request into a timed operation.

Both servers are :class:`client.Spread` of the same length, the number of service
instances: worker ``w`` of a measurement sends its service requests to instance
``w % N`` and its raw requests to the CouchDB node that instance puts first, so each
side sees the same workers on the same nodes."""

from __future__ import annotations

import json
from dataclasses import dataclass

import aiohttp

from kazoo_vm.config import Config
from kazoo_vm.kazoo import documents
from kazoo_vm.storage.couch import quote_db

from . import client
from .client import Endpoint, Operation, Spread
from .load import Account, Loader
from .processes import Instances
from .results import Measurement, ScenarioResult
from .settings import Settings

PAGE_SIZE = Config().page_size
RETENTION_SECONDS = Config().retention_seconds
JSON_TYPE = {"Content-Type": "application/json"}


class ScenarioError(RuntimeError):
    """The service did not answer what the scenario is built on."""


@dataclass
class Context:
    """What every scenario uses: the run's settings, the one HTTP session, raw
    CouchDB (one member per service instance: the node it puts first), the service
    instances (their URLs and pids, read anew after a restart), and the data loader."""

    settings: Settings
    session: aiohttp.ClientSession
    couch: Spread
    instances: Instances
    loader: Loader

    @property
    def service_pid(self) -> int:
        """The first instance's process (whose memory scenario 6 reads)."""
        return self.instances.first.pid

    async def service_for(self, account: Account) -> Spread:
        """The service instances as ``account``: one token from ``PUT /v2/api_auth`` on
        the first instance, good on every instance (they share its signing secret
        through the store), as a client behind a load balancer logs in once."""
        urls = self.instances.urls
        body = await client.call(self.session, Endpoint(urls[0], {}), "PUT", "/v2/api_auth", headers=JSON_TYPE,
                                 data=json.dumps({"data": {"api_key": account.api_key}}), expect=(201,))
        token = json.loads(body)["auth_token"]
        return Spread(tuple(Endpoint(url, {"X-Auth-Token": token}) for url in urls))

    def openers(self, account: Account, service: Spread) -> tuple[Operation, Operation]:
        """Cheap requests that make each side open its connections (see
        :func:`client.measure`): CouchDB's ``GET /``, and a box that does not exist
        (the service reads the account and looks for the box: two store requests)."""
        return (sender(self.session, self.couch, "GET", "/"),
                sender(self.session, service, "GET", account_path(account, "/vmboxes/bench-no-such-box"),
                       expect=(404,)))

    async def pair(self, raw: Operation, service: Operation, concurrency: int, *, scale: float = 1.0,
                   openers: tuple[Operation, Operation] | None = None) -> client.Pair:
        sizes = self.settings.sizes
        return await client.paired(raw, service, concurrency, rounds=sizes.rounds, duration=sizes.duration * scale,
                                   max_requests=sizes.max_requests, warmup=sizes.warmup_seconds,
                                   service_cpu=self.instances.cpu_seconds, openers=openers)


def account_path(account: Account, tail: str = "") -> str:
    return f"/v2/accounts/{account.account_id}{tail}"


def db_path(db: str, tail: str = "") -> str:
    return f"/{quote_db(db)}{tail}"


def view_path(db: str, design_name: str, view: str) -> str:
    return db_path(db, f"/_design/{design_name}/_view/{view}")


def window_now() -> tuple[int, int]:
    """(From, To) of the listing window as the service computes it for a request now."""
    now = documents.gregorian_now()
    return now - RETENTION_SECONDS, now


def sender(session: aiohttp.ClientSession, servers: Spread, method: str, path: str, *,
           expect: tuple[int, ...] = (200,), body: bytes | None = None,
           headers: dict[str, str] | None = None) -> Operation:
    """An operation that sends the same request every time (worker ``w`` to
    ``servers.at(w)``); returns the bytes received."""

    async def operation(worker: int) -> int:
        return len(await client.call(session, servers.at(worker), method, path, data=body, headers=headers,
                                     expect=expect))

    return operation


async def measure_all(ctx: Context, result: ScenarioResult, variant: str, raw: Operation, service: Operation,
                      *, openers: tuple[Operation, Operation], scale: float = 1.0) -> list[Measurement]:
    """Measure one variant at every concurrency of the run."""
    measured = []
    for concurrency in ctx.settings.sizes.concurrency:
        pair = await ctx.pair(raw, service, concurrency, scale=scale, openers=openers)
        measured.append(Measurement(variant, concurrency, pair.raw, pair.service, {"rounds": pair.rounds}))
    result.measurements += measured
    return measured
