"""The store goes away and comes back: 503 ``datastore_unreachable`` meanwhile, normal
service after, no restart of kazoo_vm.

On the embedded store the real pouchdb-server (persisting to a folder) is stopped and
started again on the same port; with ``KAZOO_VM_COUCH_URL`` a loopback proxy in front of
that server is cut and restored, since the test cannot stop a shared server."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import Api, assert_error, login, make_account
from tcp_proxy import TcpProxy, first_node, through

from kazoo_vm.app import create_app
from kazoo_vm.config import Config
from kazoo_vm.embedded_store import EmbeddedStore
from kazoo_vm.services import Services


@dataclass
class Outage:
    url: str
    stop: Callable[[], Awaitable[None]]
    restart: Callable[[], Awaitable[None]]


@pytest.fixture
async def outage(tmp_path: Path) -> AsyncIterator[Outage]:
    configured = os.environ.get("KAZOO_VM_COUCH_URL")
    if configured:
        parts = urlsplit(first_node(configured))
        proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5984)
        await proxy.start()
        yield Outage(through(configured, proxy.port), proxy.stop, proxy.start)
        await proxy.stop()
        return
    store = EmbeddedStore(data_dir=tmp_path / "store")
    url = await store.astart()
    yield Outage(url, store.astop, store.astart)
    await store.astop()


async def test_store_outage_is_503_and_service_recovers(aiohttp_client: Any, outage: Outage) -> None:
    config = replace(Config(), couch_url=outage.url, couch_timeout=5.0)
    services = Services.connect(outage.url, timeout=5.0)
    try:
        account = await make_account(services)
    finally:
        await services.close()
    client = await aiohttp_client(create_app(config, outage.url))
    api = Api(client, account["_id"], await login(client, account["pvt_api_key"]))
    assert (await api.put("/vmboxes", {"name": "Before", "mailbox": "100"})).status == 201

    await outage.stop()
    for call in (api.get("/vmboxes"), api.put("/vmboxes", {"name": "During", "mailbox": "101"})):
        # An unreachable store must not hang a request: it is answered, and quickly.
        data = assert_error(await asyncio.wait_for(call, timeout=10), 503, "datastore_unreachable")
        assert data == {"message": "datastore timeout"}

    await outage.restart()
    reply = await api.get("/vmboxes")
    assert reply.status == 200
    assert [box["name"] for box in reply.data] == ["Before"]
    assert (await api.put("/vmboxes", {"name": "After", "mailbox": "102"})).status == 201
