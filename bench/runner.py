"""A whole run: store, service instances, scenarios in order, report, cleanup.

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
from .client import REQUEST_TIMEOUT, Endpoint, Spread
from .context import Context
from .load import Loader
from .processes import Instances, ProcessError, store
from .results import ScenarioResult
from .scenarios import SCENARIOS, run_scenario


def couch_nodes(url: str) -> list[Endpoint]:
    """Raw CouchDB as the benchmark calls it, one endpoint per node of
    ``KAZOO_VM_COUCH_URL`` (one URL, or several separated by commas): JSON accepted,
    credentials of the node's URL (or of the first node's, as kazoo_vm does)."""
    endpoints = []
    for node in CouchEndpoint.parse_nodes(url):
        headers = dict(JSON_HEADERS)
        if node.user is not None:
            token = base64.b64encode(f"{node.user}:{node.password or ''}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        endpoints.append(Endpoint(node.url, headers))
    return endpoints


def raw_spread(url: str, instances: int) -> Spread:
    """Raw CouchDB spread like the service: member ``i`` is the node service instance
    ``i`` puts first (node ``i`` modulo the node count, see :func:`processes.node_orders`),
    so worker ``w``'s raw requests go to the node its service requests end up on."""
    nodes = couch_nodes(url)
    return Spread(tuple(nodes[index % len(nodes)] for index in range(max(instances, 1))))


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


async def run_scenarios(config: settings.Settings, couch_url: str, instances: Instances) -> Outcome:
    """Every selected scenario, in order, over one HTTP session."""
    couch = raw_spread(couch_url, len(instances))
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT, connector=connector) as session:
        info = await welcome(session, couch.first)
        outcome = Outcome(config, info)
        results = outcome.results
        loader = Loader(couch_url, config.seed)
        try:
            ctx = Context(settings=config, session=session, couch=couch, instances=instances, loader=loader)
            for scenario in SCENARIOS:
                if scenario.key not in config.scenarios:
                    continue
                print(f"-- scenario {scenario.key}: {scenario.title} ...", file=sys.stderr, flush=True)
                # Not when profiling (one profile file per run) nor in --quick (its figures mean little).
                fresh = scenario.fresh_service and config.profile is None and not config.quick
                if fresh:
                    await asyncio.to_thread(instances.restart)
                result = await run_scenario(scenario, ctx)
                result.extra["fresh_service"] = fresh
                results.append(result)
                print(f"   load {result.load_seconds:.1f}s, measure {result.measure_seconds:.1f}s"
                      + (f", FAILED: {result.error}" if result.error else ""), file=sys.stderr, flush=True)
                stopped = instances.stopped()
                if stopped is not None:
                    print(f"the service on port {stopped.port} stopped:\n{stopped.log_tail()}", file=sys.stderr)
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


def _public_urls(url: str) -> list[str]:
    """The store's nodes without their credentials."""
    return [node.url for node in CouchEndpoint.parse_nodes(url)]


def spread_note(instances: int) -> str:
    """How the requests were spread over the instances (the JSON file and the table say it)."""
    if instances <= 1:
        return "one service instance"
    return (f"worker w of a measurement sends its service requests to instance w mod {instances} and its raw "
            "requests to the CouchDB node that instance puts first")


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
        "instances": config.instances,
        "spread": spread_note(config.instances),
        "store": {"kind": kind, "url": ",".join(_public_urls(couch_url)), "nodes": len(_public_urls(couch_url)),
                  "welcome": info},
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
            instances = Instances.of_store(couch_url, config.instances, profile=config.profile)
            instances.start()
            try:
                outcome = asyncio.run(run_scenarios(config, couch_url, instances))
            finally:
                instances.stop()
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
