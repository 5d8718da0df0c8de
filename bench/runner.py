"""A whole run: store, service, scenarios in order, report, cleanup.

Exit status 0 when every selected scenario ran to the end without a failed request;
1 otherwise (the table and the JSON file are written either way); 2 for bad options.
Goals (PASS/MISS) are reported, never turned into the exit status.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from kazoo_vm.embedded_store import EmbeddedStoreError
from kazoo_vm.storage.couch import JSON_HEADERS, CouchEndpoint

from . import report, settings
from .client import REQUEST_TIMEOUT, Endpoint
from .context import Context
from .load import Loader
from .processes import ProcessError, Service, store
from .results import ScenarioResult
from .scenarios import SCENARIOS, run_scenario


def couch_endpoint(url: str) -> Endpoint:
    """Raw CouchDB as the benchmark calls it: JSON accepted, credentials of the URL."""
    parsed = CouchEndpoint.parse(url)
    headers = dict(JSON_HEADERS)
    if parsed.user is not None:
        token = base64.b64encode(f"{parsed.user}:{parsed.password or ''}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    return Endpoint(parsed.url, headers)


async def welcome(session: aiohttp.ClientSession, couch: Endpoint) -> dict[str, Any]:
    """The store's ``GET /`` (its name and version)."""
    async with session.get(couch.url("/"), headers=dict(couch.headers)) as response:
        return dict(json.loads(await response.read()))


@dataclass
class Outcome:
    """What a run produced: the settings as resolved for the store, its ``GET /``,
    and the scenario results in order."""

    settings: settings.Settings
    welcome: dict[str, Any]
    results: list[ScenarioResult] = field(default_factory=list)
    loading: dict[str, Any] = field(default_factory=dict)


async def run_scenarios(config: settings.Settings, couch_url: str, service: Service) -> Outcome:
    """Every selected scenario, in order, over one HTTP session."""
    couch = couch_endpoint(couch_url)
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT, connector=connector) as session:
        info = await welcome(session, couch)
        outcome = Outcome(config, info)
        results = outcome.results
        loader = Loader(couch_url, config.seed)
        try:
            ctx = Context(settings=config, session=session, couch=couch, service_url=service.url,
                          service_pid=service.pid, loader=loader)
            for scenario in SCENARIOS:
                if scenario.key not in config.scenarios:
                    continue
                print(f"-- scenario {scenario.key}: {scenario.title} ...", file=sys.stderr, flush=True)
                # Not when profiling (one profile file per run) nor in --quick (its figures mean little).
                fresh = scenario.fresh_service and config.profile is None and not config.quick
                if fresh:
                    await asyncio.to_thread(service.restart)
                    ctx.service_url, ctx.service_pid = service.url, service.pid
                result = await run_scenario(scenario, ctx)
                result.extra["fresh_service"] = fresh
                results.append(result)
                print(f"   load {result.load_seconds:.1f}s, measure {result.measure_seconds:.1f}s"
                      + (f", FAILED: {result.error}" if result.error else ""), file=sys.stderr, flush=True)
                if service.process is None or service.process.poll() is not None:
                    print(f"the service stopped:\n{service.log_tail()}", file=sys.stderr)
                    break
        finally:
            outcome.loading = {"documents": loader.docs_written, "load_s": round(loader.seconds_loading, 1),
                               "index_s": round(loader.seconds_warming, 1)}
            if config.couch_url:  # a shared server: leave it as it was
                await loader.cleanup()
            await loader.close()
    return outcome


def chosen_sizes(results: list[ScenarioResult]) -> dict[str, Any]:
    """The sizes scenarios picked during the run (see :mod:`bench.sizing`)."""
    chosen: dict[str, Any] = {}
    for result in results:
        chosen.update(result.extra.get("sizes", {}))
    return chosen


def _public_url(url: str) -> str:
    return CouchEndpoint.parse(url).url


def document(outcome: Outcome, kind: str, couch_url: str, started: float, began: datetime.datetime,
             status: int) -> dict[str, Any]:
    """The JSON file's content."""
    config, results, info = outcome.settings, outcome.results, outcome.welcome
    return {
        "benchmark": "kazoo_vm vs raw CouchDB (same data, same concurrency, same client)",
        "started": began.isoformat(timespec="seconds"),
        "elapsed_s": round(time.perf_counter() - started, 1),
        "mode": "quick" if config.quick else "default",
        "exit_status": status,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "store": {"kind": kind, "url": _public_url(couch_url), "welcome": info},
        "sizes": {**config.sizes.describe(), **chosen_sizes(results)},
        "loading": outcome.loading,
        "profiled": str(config.profile) if config.profile else None,
        "scenarios": {result.key: report.scenario_json(result) for result in results},
        "goals": [goal.as_json() for goal in report.goals(results)],
        "slowest": report.slowest(results),
    }


def main(argv: list[str] | None = None) -> int:
    config = settings.from_args(argv)
    started, began = time.perf_counter(), datetime.datetime.now(datetime.UTC)
    try:
        with store(config.couch_url) as (couch_url, kind):
            service = Service(couch_url, profile=config.profile)
            service.start()
            try:
                outcome = asyncio.run(run_scenarios(config, couch_url, service))
            finally:
                service.stop()
    except (ProcessError, EmbeddedStoreError) as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    config, results, info = outcome.settings, outcome.results, outcome.welcome
    status = 0 if {result.key for result in results if result.ok} == set(config.scenarios) else 1
    if kind == "external":
        kind = f"{info.get('vendor', {}).get('name', 'CouchDB')} {info.get('version', '')}".strip()
    body = document(outcome, kind, couch_url, started, began, status)
    report.write_json(config.output, body)
    print(report.render(body, results, config.profile))
    print(f"\nResults written to {config.output}")
    for result in results:
        if not result.ok:
            print(f"scenario {result.key} did not run cleanly: {report.failure(result)}", file=sys.stderr)
    return status
