"""An account replicated to a second store server, served there by a second kazoo_vm."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import Api, login

from kazoo_vm.app import create_app
from kazoo_vm.config import PROJECT_ROOT, Config
from kazoo_vm.embedded_store import EmbeddedStore
from kazoo_vm.kazoo import naming
from kazoo_vm.kazoo.documents import GREGORIAN_UNIX_OFFSET, gregorian_now
from kazoo_vm.services import Services
from kazoo_vm.storage.errors import StoreFault
from kazoo_vm.storage.replication import Target

AUDIO = b"ID3-replicated" * 100
WAIT = 60.0


SECOND = os.environ.get("KAZOO_VM_SECOND_COUCH_URL")
ON_COUCHDB = bool(os.environ.get("KAZOO_VM_COUCH_URL"))
# Apache CouchDB here, pouchdb-server there: the pouchdb-server runs the replications.
MIXED_PAIR = ON_COUCHDB and not SECOND


@pytest.fixture
def second_store() -> Iterator[str]:
    """The other node: ``KAZOO_VM_SECOND_COUCH_URL`` (a second Apache CouchDB) when set,
    else a pouchdb-server of its own. The first server's replicator pushes to it (and
    pulls from it with --both-ways)."""
    if SECOND:
        yield SECOND
        return
    store = EmbeddedStore()
    url = store.start()
    yield url
    store.stop()


@pytest.fixture(autouse=True)
async def stop_replications(services: Services, account: dict[str, Any], second_store: str) -> AsyncIterator[None]:
    """Remove the test's replications while both servers still run (CouchDB: a shared
    server; pouchdb-server cannot stop them and is thrown away after the test)."""
    yield
    if ON_COUCHDB and not MIXED_PAIR:
        await services.replication.stop(account["_id"])


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = WAIT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "replication did not arrive in time"
        await asyncio.sleep(0.2)


def months_ago(count: int) -> int:
    """A gregorian time ``count`` months before now, mid-month."""
    now = datetime.now(UTC)
    year, month = now.year, now.month - count
    while month < 1:
        year, month = year - 1, month + 12
    return int(datetime(year, month, 10, 12, tzinfo=UTC).timestamp()) + GREGORIAN_UNIX_OFFSET


async def leave(api: Api, box_id: str, timestamp: int | None = None) -> str:
    metadata = {"caller_id_number": "6001"} if timestamp is None else {"caller_id_number": "6001",
                                                                       "timestamp": timestamp}
    created = await api.put(f"/vmboxes/{box_id}/messages", metadata)
    assert created.status == 201, created.body
    media_id = str(created.data["media_id"])
    uploaded = await api.call("PUT", f"/vmboxes/{box_id}/messages/{media_id}/raw", body=AUDIO + media_id.encode(),
                              headers={"Content-Type": "audio/mpeg"})
    assert uploaded.status == 201
    return media_id


@pytest.fixture
async def remote_api(aiohttp_client: Any, config: Config, second_store: str) -> Callable[[str, str], Awaitable[Api]]:
    async def connect(account_id: str, api_key: str) -> Api:
        client: TestClient[web.Request, web.Application] = await aiohttp_client(
            create_app(replace(config, couch_url=second_store), second_store))

        async def account_arrived() -> bool:
            async with client.put("/v2/api_auth", json={"data": {"api_key": api_key}}) as response:
                return response.status == 201

        await until(account_arrived)
        return Api(client, account_id, await login(client, api_key))

    return connect


async def listing_of(api: Api, box_id: str) -> list[str]:
    reply = await api.get(f"/vmboxes/{box_id}/messages", params={"paginate": "false"})
    return sorted(row["media_id"] for row in reply.data) if reply.status == 200 else []


async def test_replicated_account_is_served_by_a_second_instance(api: Api, account: dict[str, Any],
                                                                 services: Services, second_store: str,
                                                                 remote_api: Callable[[str, str], Awaitable[Api]],
                                                                 couch_url: str) -> None:
    box = (await api.put("/vmboxes", {"name": "Replicated", "mailbox": "8100"})).data
    ids = [await leave(api, box["id"]), await leave(api, box["id"], months_ago(2))]
    result = subprocess.run(
        [sys.executable, "-m", "kazoo_vm", "replicate", "--account", api.account_id, "--target", second_store,
         "--continuous"], env={**os.environ, "KAZOO_VM_COUCH_URL": couch_url}, cwd=PROJECT_ROOT,
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["replications"]) == 4  # account db, 2 MODBs, accounts doc

    remote = await remote_api(api.account_id, account["pvt_api_key"])

    async def all_there() -> bool:
        return await listing_of(remote, box["id"]) == sorted(ids)

    await until(all_there)
    local_boxes = (await api.get("/vmboxes")).data

    async def boxes_there() -> bool:
        return bool((await remote.get("/vmboxes")).data == local_boxes)

    await until(boxes_there)
    for media_id in ids:
        reply = await remote.get(f"/vmboxes/{box['id']}/messages/{media_id}/raw")
        assert reply.body == AUDIO + media_id.encode()

    later = await leave(api, box["id"], months_ago(1))  # a month that had no database yet

    async def later_arrived() -> bool:
        return later in await listing_of(remote, box["id"])

    await until(later_arrived)


async def test_replicate_twice_changes_nothing(api: Api, services: Services, second_store: str) -> None:
    target = Target(second_store, continuous=False)
    first = await services.replication.replicate(api.account_id, target)
    second = await services.replication.replicate(api.account_id, target)
    assert first == second
    assert len(first) == len(set(first))


async def test_status_lists_each_replication(api: Api, services: Services, second_store: str) -> None:
    await services.replication.replicate(api.account_id, Target(second_store, continuous=True))
    status = await services.replication.status(api.account_id)
    assert {entry["database"] for entry in status} >= {naming.account_db(api.account_id)}
    assert all(entry["state"] for entry in status)


async def test_both_ways_folder_changes_converge(api: Api, account: dict[str, Any], services: Services,
                                                 second_store: str,
                                                 remote_api: Callable[[str, str], Awaitable[Api]]) -> None:
    box = (await api.put("/vmboxes", {"name": "Both", "mailbox": "8200"})).data
    here, there = await leave(api, box["id"]), await leave(api, box["id"])
    await services.replication.replicate(api.account_id, Target(second_store, continuous=True, both_ways=True))
    remote = await remote_api(api.account_id, account["pvt_api_key"])

    async def arrived() -> bool:
        return await listing_of(remote, box["id"]) == sorted([here, there])

    await until(arrived)
    assert (await api.post(f"/vmboxes/{box['id']}/messages/{here}", {"folder": "saved"})).status == 200
    assert (await remote.post(f"/vmboxes/{box['id']}/messages/{there}", {"folder": "deleted"})).status == 200

    async def converged() -> bool:
        local = {row["media_id"]: row["folder"] for row in (await api.get(f"/vmboxes/{box['id']}/messages")).data}
        far = {row["media_id"]: row["folder"] for row in (await remote.get(f"/vmboxes/{box['id']}/messages")).data}
        return local == far == {here: "saved", there: "deleted"}

    await until(converged)


@pytest.mark.skipif(not ON_COUCHDB or MIXED_PAIR, reason="stopping replication needs Apache CouchDB on both "
                    "sides (KAZOO_VM_COUCH_URL and KAZOO_VM_SECOND_COUCH_URL)")
async def test_change_on_both_sides_while_stopped_converges_once_replication_runs(
        api: Api, account: dict[str, Any], services: Services, second_store: str,
        remote_api: Callable[[str, str], Awaitable[Api]]) -> None:
    box = (await api.put("/vmboxes", {"name": "Split", "mailbox": "8400"})).data
    media_id = await leave(api, box["id"])
    target = Target(second_store, continuous=True, both_ways=True)
    await services.replication.replicate(api.account_id, target)
    remote = await remote_api(api.account_id, account["pvt_api_key"])

    async def arrived() -> bool:
        return await listing_of(remote, box["id"]) == [media_id]

    await until(arrived)
    await services.replication.stop(api.account_id)
    assert (await api.post(f"/vmboxes/{box['id']}/messages/{media_id}", {"folder": "saved"})).status == 200
    assert (await remote.post(f"/vmboxes/{box['id']}/messages/{media_id}", {"folder": "deleted"})).status == 200
    await services.replication.replicate(api.account_id, target)

    async def converged() -> bool:
        here = (await api.get(f"/vmboxes/{box['id']}/messages/{media_id}")).data.get("folder")
        there = (await remote.get(f"/vmboxes/{box['id']}/messages/{media_id}")).data.get("folder")
        return bool(here == there)

    await until(converged)


@pytest.mark.skipif(ON_COUCHDB and not MIXED_PAIR, reason="needs pouchdb-server on one side")
async def test_stop_is_refused_when_pouchdb_server_runs_the_replications(api: Api, services: Services,
                                                                         second_store: str) -> None:
    await services.replication.replicate(api.account_id, Target(second_store, continuous=True))
    with pytest.raises(StoreFault):
        await services.replication.stop(api.account_id)


async def test_conflicting_changes_converge_to_couchdbs_winner(api: Api, services: Services) -> None:
    """Two revisions of one message (as replication of concurrent changes leaves them):
    reads serve CouchDB's winner, and the next kazoo_vm write removes the loser."""
    box = (await api.put("/vmboxes", {"name": "Conflicts", "mailbox": "8300"})).data
    media_id = await leave(api, box["id"])
    db = naming.modb_of_message(api.account_id, media_id) or ""
    couch = services.store.couch
    doc = await couch.get_doc(db, media_id)
    base = doc["_rev"]
    variants = []
    for folder in ("saved", "deleted"):
        variant = {**doc, "metadata": {**doc["metadata"], "folder": folder}}
        generation = int(base.split("-")[0]) + 1
        variant["_rev"] = f"{generation}-{'a' if folder == 'saved' else 'b'}{'0' * 31}"
        variant["_revisions"] = {"start": generation, "ids": [variant["_rev"].split("-")[1], base.split("-")[1]]}
        variant.pop("_attachments", None)
        variants.append(variant)
    await couch.request("POST", f"/{naming.encoded_db(db)}/_bulk_docs",
                        json_body={"docs": variants, "new_edits": False})
    winner = (await api.get(f"/vmboxes/{box['id']}/messages/{media_id}")).data["folder"]
    assert winner == "deleted"  # the greater revision id wins, on every node
    assert (await api.post(f"/vmboxes/{box['id']}/messages/{media_id}", {"folder": "new"})).status == 200
    stored = await couch.get_doc(db, media_id, conflicts=True)
    assert "_conflicts" not in stored and stored["metadata"]["folder"] == "new"
    assert gregorian_now() > 0
