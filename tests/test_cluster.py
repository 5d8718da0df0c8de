"""On an Apache CouchDB cluster: two kazoo_vm instances, each talking to another node.

These tests need a cluster of two nodes or more: ``KAZOO_VM_COUCH_CLUSTER`` lists their
URLs, comma-separated (``scripts/couch-cluster start`` prints it). Without it they skip.
The node-loss tests also kill and revive nodes, through ``scripts/couch-cluster``; they
run only when the cluster is the one that script started (``.couch-cluster`` in the
project, or ``KAZOO_VM_CLUSTER_DIR``).

What they hold to:

* a write answered 2xx through one instance is seen by the next read, listing or count
  through the other instance (read-your-writes across nodes);
* an account made through one node gets a token through another at once;
* concurrent changes of one document through two nodes: every change answered 200 is in
  the document, and no document keeps ``_conflicts``;
* a node killed under load: nothing answered 201 is lost, nothing but 503 for requests
  caught on the dead node, no request waits more than ``BOUND`` seconds, and the service
  is whole again within ``RECOVERY`` seconds, without a restart.

Figures (counts, latencies) are printed and written to ``KAZOO_VM_CLUSTER_REPORT``
(default ``/tmp/kazoo_vm_cluster_report.json``).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import Api, build_multipart, login, make_account

from kazoo_vm.app import create_app, server_options
from kazoo_vm.config import Config
from kazoo_vm.kazoo import naming
from kazoo_vm.services import Services
from kazoo_vm.storage.couch import CouchEndpoint, quote_db

PROJECT = Path(__file__).resolve().parent.parent
NODES = [url for url in (os.environ.get("KAZOO_VM_COUCH_CLUSTER") or "").split(",") if url.strip()]
CLUSTER_DIR = Path(os.environ.get("KAZOO_VM_CLUSTER_DIR") or PROJECT / ".couch-cluster")
REPORT = os.environ.get("KAZOO_VM_CLUSTER_REPORT") or "/tmp/kazoo_vm_cluster_report.json"
TRIES = int(os.environ.get("KAZOO_VM_CLUSTER_TRIES") or 50)
LOAD_SECONDS = float(os.environ.get("KAZOO_VM_NODE_LOSS_SECONDS") or 15)
BOUND = 5.0  # seconds a request may take while a node dies
RECOVERY = 2.0  # seconds after which every kind of request succeeds again
ALL = {"paginate": "false"}

pytestmark = pytest.mark.skipif(len(NODES) < 2, reason="needs a CouchDB cluster: set KAZOO_VM_COUCH_CLUSTER "
                                                        "(scripts/couch-cluster start prints it)")

FIGURES: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module", autouse=True)
def report(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not FIGURES:
        return
    try:
        with open(REPORT, "w") as out:
            json.dump({"nodes": len(NODES), "figures": FIGURES}, out, indent=1)
    except OSError:
        pass
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"\ncluster ({len(NODES)} nodes):")
        for name, figures in FIGURES.items():
            reporter.write_line(f"  {name}: {json.dumps(figures, sort_keys=True)}")


def rotated(start: int) -> str:
    """All the nodes, ``start`` first: an instance that prefers that node."""
    index = start % len(NODES)
    return ",".join(NODES[index:] + NODES[:index])


@pytest.fixture
def config() -> Config:
    return replace(Config(), jwt_secret=None, move_recovery=False)


async def instance(aiohttp_client: Any, config: Config, start: int) -> TestClient[web.Request, web.Application]:
    url = rotated(start)
    server = TestServer(create_app(replace(config, couch_url=url), url))
    await server.start_server(**server_options(config))
    client: TestClient[web.Request, web.Application] = await aiohttp_client(server)
    return client


@pytest.fixture
async def services() -> AsyncIterator[Services]:
    connected = Services.connect(rotated(0), timeout=Config().couch_timeout)
    try:
        yield connected
    finally:
        await connected.close()


@dataclass
class Pair:
    """One account, seen through two instances (on node 1 and node 2)."""

    first: Api
    second: Api
    account_id: str


@pytest.fixture
async def pair(aiohttp_client: Any, config: Config, services: Services) -> Pair:
    account = await make_account(services)
    first = await instance(aiohttp_client, config, 0)
    second = await instance(aiohttp_client, config, 1)
    token = await login(first, account["pvt_api_key"])
    return Pair(Api(first, account["_id"], token), Api(second, account["_id"], token), account["_id"])


async def new_box(api: Api, mailbox: str) -> str:
    reply = await api.put("/vmboxes", {"name": f"Box {mailbox}", "mailbox": mailbox})
    assert reply.status == 201, reply.body
    return str(reply.data["id"])


def audio_of(seed: str) -> bytes:
    return b"ID3" + (seed.encode() * 64)[:2000]


async def create_message(api: Api, box: str, call_id: str, *, request_id: str | None = None) -> Any:
    body, content_type = build_multipart([
        ({"Content-Type": "application/json"}, json.dumps({"data": {"call_id": call_id}}).encode()),
        ({"Content-Type": "audio/mpeg"}, audio_of(call_id))])
    headers = {"Content-Type": content_type}
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    return await api.call("PUT", f"/vmboxes/{box}/messages", body=body, headers=headers)


def listed(reply: Any) -> list[str]:
    assert reply.status == 200, reply.body
    return [str(row["media_id"]) for row in reply.data]


@pytest.fixture
async def busy(pair: Pair) -> AsyncIterator[Counter[int]]:
    """Clients creating and listing messages of a box of their own through both
    instances while the test runs (the copies are busy); yields their statuses."""
    box = await new_box(pair.first, "4999")
    statuses: Counter[int] = Counter()

    async def client(api: Api) -> None:
        while True:
            statuses[(await create_message(api, box, f"busy-{uuid.uuid4().hex[:8]}")).status] += 1
            statuses[(await api.get(f"/vmboxes/{box}/messages")).status] += 1

    tasks = [asyncio.create_task(client(api)) for api in (pair.first, pair.second) * 2]
    yield statuses
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# -- read-your-writes across instances -------------------------------------------------


async def test_a_message_created_through_one_node_is_listed_and_read_through_another(
        pair: Pair, busy: Counter[int]) -> None:
    box = await new_box(pair.first, "4001")
    misses: Counter[str] = Counter()
    for n in range(TRIES):
        created = await create_message(pair.first, box, f"ryw-{n}")
        assert created.status == 201, created.body
        media_id = created.data["media_id"]
        # listings from the message's second on: each stays a few rows long, however many tries
        since = {**ALL, "created_from": str(created.data["timestamp"])}
        misses["read"] += (await pair.second.get(f"/vmboxes/{box}/messages/{media_id}")).status != 200
        misses["box listing"] += media_id not in listed(await pair.second.get(f"/vmboxes/{box}/messages",
                                                                              params=since))
        account_rows = (await pair.second.get("/vmboxes/messages", params=since)).data
        misses["account listing"] += media_id not in [m["media_id"] for row in account_rows for m in row.values()]
        counted = await pair.second.get("/vmboxes")
        misses["count"] += [row.get("messages") for row in counted.data if row["id"] == box] != [n + 1]
    kinds = ("read", "box listing", "account listing", "count")
    FIGURES["read your writes: create"] = {"tries": TRIES, **{kind: misses[kind] for kind in kinds},
                                           "background": dict(busy)}
    assert sum(misses.values()) == 0, misses


async def test_a_message_moved_or_deleted_through_one_node_is_seen_so_through_another(
        pair: Pair, busy: Counter[int]) -> None:
    here, there = await new_box(pair.first, "4002"), await new_box(pair.first, "4003")
    misses: Counter[str] = Counter()
    tries = max(TRIES // 2, 1)
    for n in range(tries):
        created = await create_message(pair.first, here, f"move-{n}")
        moved = await pair.first.post(f"/vmboxes/{here}/messages/{created.data['media_id']}", {"source_id": there})
        assert moved.status == 200, moved.body
        misses["source listing"] += created.data["media_id"] in listed(
            await pair.second.get(f"/vmboxes/{here}/messages", params=ALL))
        misses["target listing"] += moved.data["media_id"] not in listed(
            await pair.second.get(f"/vmboxes/{there}/messages", params=ALL))
        deleted = await pair.first.delete(f"/vmboxes/{there}/messages/{moved.data['media_id']}")
        assert deleted.status == 200, deleted.body
        after = await pair.second.get(f"/vmboxes/{there}/messages/{moved.data['media_id']}")
        misses["deleted read"] += after.status != 404  # a deleted message is gone for a single read
    FIGURES["read your writes: move, delete"] = {"tries": tries, **dict(misses), "background": dict(busy)}
    assert sum(misses.values()) == 0, misses


async def test_an_account_made_through_one_node_gets_a_token_through_another(
        pair: Pair, busy: Counter[int], services: Services) -> None:
    other = pair.second.client
    failures = 0
    for _ in range(TRIES):
        account = await make_account(services)
        async with other.put("/v2/api_auth", json={"data": {"api_key": account["pvt_api_key"]}}) as response:
            failures += response.status != 201
    FIGURES["token after account create"] = {"tries": TRIES, "failures": failures, "background": dict(busy)}
    assert failures == 0


# -- one document changed through two nodes at once ------------------------------------


async def raw_doc(node: str, db: str, doc_id: str) -> dict[str, Any]:
    """The document as CouchDB holds it, with ``_conflicts``, read without kazoo_vm."""
    endpoint = CouchEndpoint.parse(node)
    async with aiohttp.ClientSession(headers={"Authorization": endpoint.authorization()}) as session, \
            session.get(f"{endpoint.url}/{quote_db(db)}/{doc_id}",
                        params={"conflicts": "true", "r": str(len(NODES))}) as response:
        assert response.status == 200, await response.text()
        return dict(json.loads(await response.read()))


async def test_concurrent_patches_through_two_nodes_keep_every_change_answered_200(pair: Pair) -> None:
    box = await new_box(pair.first, "4004")
    statuses: Counter[int] = Counter()
    lost = 0
    for _round in range(3):
        keys = [f"k{uuid.uuid4().hex[:8]}" for _ in range(16)]
        replies = await asyncio.gather(*((pair.first if n % 2 else pair.second).patch(
            f"/vmboxes/{box}", {key: n}) for n, key in enumerate(keys)))
        statuses.update(reply.status for reply in replies)
        assert {reply.status for reply in replies} <= {200, 409}, [r.body for r in replies]
        db = naming.account_db(pair.account_id)
        for node in NODES:
            stored = await raw_doc(node, db, box)
            assert "_conflicts" not in stored, stored["_conflicts"]
            missing = [key for key, reply in zip(keys, replies, strict=True)
                       if reply.status == 200 and key not in stored]
            lost += len(missing)
            assert not missing
    FIGURES["16 concurrent PATCHes through 2 nodes"] = {"rounds": 3, "statuses": dict(statuses), "lost": lost}


# -- a node dies under load ------------------------------------------------------------


def cluster_script(*args: str) -> None:
    subprocess.run([sys.executable, str(PROJECT / "scripts" / "couch-cluster"), "--dir", str(CLUSTER_DIR), *args],
                   check=True, capture_output=True, timeout=90)


def started_by_script() -> bool:
    state = CLUSTER_DIR / "cluster.json"
    if not state.exists():
        return False
    ports = json.loads(state.read_text()).get("ports", [])
    return sorted(CouchEndpoint.parse(node).url.rsplit(":", 1)[-1] for node in NODES) == sorted(map(str, ports))


@dataclass
class Load:
    """Clients sending a mix of requests; what was answered, how, and how fast."""

    api: Api
    boxes: list[str]
    rng: random.Random
    created: dict[str, str] = field(default_factory=dict)  # call id → box, answered 201
    outcomes: list[tuple[float, str, int, float]] = field(default_factory=list)  # (start, kind, status, seconds)
    running: bool = True

    async def timed(self, kind: str, coroutine: Any) -> Any:
        started = time.monotonic()
        try:
            reply = await asyncio.wait_for(coroutine, BOUND * 4)
            status = reply.status
        except TimeoutError:
            reply, status = None, 0
        self.outcomes.append((started, kind, status, time.monotonic() - started))
        return reply

    async def create(self) -> None:
        """A create, resent with its request id until answered 201 (as a careful client does)."""
        call_id, request_id = f"load-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
        box = self.rng.choice(self.boxes)
        for _ in range(20):
            reply = await self.timed("create", create_message(self.api, box, call_id, request_id=request_id))
            if reply is not None and reply.status == 201:
                self.created[call_id] = box
                return
            await asyncio.sleep(0.2)

    async def step(self) -> None:
        kind = self.rng.choice(["create", "create", "list", "get box", "patch box", "list boxes"])
        box = self.rng.choice(self.boxes)
        if kind == "create":
            await self.create()
        elif kind == "list":
            await self.timed(kind, self.api.get(f"/vmboxes/{box}/messages"))
        elif kind == "get box":
            await self.timed(kind, self.api.get(f"/vmboxes/{box}"))
        elif kind == "patch box":
            await self.timed(kind, self.api.patch(f"/vmboxes/{box}", {"load": uuid.uuid4().hex[:6]}))
        else:
            await self.timed(kind, self.api.get("/vmboxes"))

    async def run(self) -> None:
        while self.running:
            await self.step()


@pytest.mark.skipif(not started_by_script(), reason="kills nodes: needs the cluster scripts/couch-cluster started")
@pytest.mark.node_loss
@pytest.mark.parametrize("victim", [1, len(NODES)], ids=["the node the instance talks to", "another node"])
async def test_a_node_killed_under_load_loses_nothing_and_the_service_goes_on(
        pair: Pair, victim: int) -> None:
    boxes = [await new_box(pair.first, str(4100 + n)) for n in range(3)]
    loads = [Load(pair.first, boxes, random.Random(n)) for n in range(6)]
    tasks = [asyncio.create_task(load.run()) for load in loads]
    third = LOAD_SECONDS / 3
    try:
        await asyncio.sleep(third)
        killed_at = time.monotonic()
        await asyncio.to_thread(cluster_script, "kill", str(victim))
        await asyncio.sleep(third)
        revived_at = time.monotonic()
        await asyncio.to_thread(cluster_script, "revive", str(victim))
        await asyncio.sleep(third)
    finally:
        for load in loads:
            load.running = False
        await asyncio.gather(*tasks)
        await asyncio.to_thread(cluster_script, "revive", str(victim))
    outcomes = sorted(outcome for load in loads for outcome in load.outcomes)
    statuses = Counter(status for _, _, status, _ in outcomes)
    slowest = max(seconds for _, _, _, seconds in outcomes)
    # after each event: when every later request of every kind succeeded
    slow = Counter(f"{kind} {status}" for _, kind, status, seconds in outcomes if seconds > BOUND)
    # after each event: how long until the last failure of a request sent after it
    recovery = {}
    for name, event in (("kill", killed_at), ("revive", revived_at)):
        ends = [start + seconds - event for start, _, status, seconds in outcomes
                if event <= start < event + third and status not in (200, 201, 409)]
        recovery[name] = round(max(ends), 2) if ends else 0.0
    created = {call_id: box for load in loads for call_id, box in load.created.items()}
    found: dict[str, list[str]] = defaultdict(list)
    for box in boxes:
        for row in (await pair.second.get(f"/vmboxes/{box}/messages", params={"paginate": "false"})).data:
            found[str(row["call_id"])].append(box)
            if str(row["call_id"]) in created:
                audio = await pair.second.get(f"/vmboxes/{box}/messages/{row['media_id']}/raw")
                assert audio.body == audio_of(str(row["call_id"])), row
    lost = [call_id for call_id in created if call_id not in found]
    duplicated = [call_id for call_id, places in found.items() if len(places) > 1]
    FIGURES[f"node {victim} killed under load"] = {
        "seconds": LOAD_SECONDS, "requests": len(outcomes), "statuses": dict(statuses),
        "created": len(created), "lost": len(lost), "duplicated": len(duplicated),
        "slowest_seconds": round(slowest, 2), "slow": dict(slow), "recovery_seconds": recovery}
    assert not lost and not duplicated
    assert set(statuses) <= {200, 201, 409, 503}, statuses
    assert slowest <= BOUND, slowest
    assert all(seconds <= RECOVERY for seconds in recovery.values()), recovery
