"""The fixture ladder: store → app/client → account → token → api → vmbox.

The store is a real CouchDB-protocol server: the one at ``KAZOO_VM_COUCH_URL`` when set
(Apache CouchDB in production tests), else a pouchdb-server started in memory for the
session. Every test gets its own account, hence its own databases.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiosmtpd.controller import Controller

from kazoo_vm.app import create_app, server_options
from kazoo_vm.config import Config
from kazoo_vm.embedded_store import EmbeddedStore, free_port
from kazoo_vm.kazoo import naming
from kazoo_vm.services import Services
from kazoo_vm.storage.couch import quote_db

# The suite runs 14 hours ahead of UTC: kazoo_vm keeps every date in UTC (gregorian
# seconds, MODB months), so a use of the machine's own zone shows as a wrong month.
os.environ["TZ"] = "Pacific/Kiritimati"
time.tzset()

NODE_LOSS_LOCK = "node-loss.lock"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "node_loss: the test kills CouchDB nodes; it runs alone")


@pytest.fixture(autouse=True)
def node_loss_apart(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that kills nodes of the cluster ``scripts/couch-cluster`` started runs
    while no other test runs (the xdist workers share the cluster): the others hold the
    lock shared, it holds it alone. A dying node is what that test is about, not what
    the others measure (a raw CouchDB baseline in ``bench`` has no failover)."""
    cluster_dir = Path(os.environ.get("KAZOO_VM_CLUSTER_DIR") or Path(__file__).resolve().parent.parent
                       / ".couch-cluster")
    if not os.environ.get("KAZOO_VM_COUCH_CLUSTER") or not cluster_dir.is_dir():
        yield
        return
    alone = request.node.get_closest_marker("node_loss") is not None
    with open(cluster_dir / NODE_LOSS_LOCK, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def couch_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("KAZOO_VM_COUCH_URL")
    if configured:
        yield configured
        return
    # on disk, as ``kazoo_vm`` runs it (in memory it behaves differently: see test_coalesce)
    store = EmbeddedStore(data_dir=tmp_path_factory.mktemp("store"))
    url = store.start()
    try:
        yield url
    finally:
        store.stop()


@pytest.fixture
def config(couch_url: str) -> Config:
    # No move recovery in the in-process apps: each test's app would otherwise settle the
    # half-done moves other tests leave on purpose (tests/test_crash.py runs it for real).
    # No webhooks either: every instance serves every hook of its store, so an app of
    # another test (on a store the xdist workers share) would take the leases of
    # tests/test_webhooks.py's hooks and send them with the default, slow, pauses.
    # ``KAZOO_VM_AMQP_URL`` runs the whole suite beside a broker (every change publishes).
    return replace(Config(), couch_url=couch_url, jwt_secret=None, move_recovery=False, webhooks=False,
                   amqp_url=os.environ.get("KAZOO_VM_AMQP_URL") or None)


@pytest.fixture
async def services(config: Config, couch_url: str) -> AsyncIterator[Services]:
    """Direct storage access, for building fixtures the way Kazoo would store them
    and for checking stored documents."""
    connected = Services.connect(couch_url, timeout=config.couch_timeout)
    created: list[str] = []
    connected.created_accounts = created  # type: ignore[attr-defined]
    try:
        yield connected
    finally:
        await _drop_accounts(connected, created)
        await connected.close()


async def _drop_accounts(services: Services, account_ids: list[str]) -> None:
    """Delete what the test created (keeps a shared Apache CouchDB tidy)."""
    if not os.environ.get("KAZOO_VM_COUCH_URL"):
        return
    couch = services.store.couch
    for account_id in account_ids:
        base = naming.account_db(account_id)
        for suffix in [""] + [f"-{y:04d}{m:02d}" for y in range(2024, 2028) for m in range(1, 13)]:
            if await couch.db_exists(base + suffix):
                await couch.delete_db(base + suffix)


@pytest.fixture
async def client(aiohttp_client: Any, config: Config, couch_url: str) -> TestClient[web.Request, web.Application]:
    server = TestServer(create_app(config, couch_url))
    await server.start_server(**server_options(config))  # TestServer(**kwargs) would drop them
    result: TestClient[web.Request, web.Application] = await aiohttp_client(server)
    return result


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def data(self) -> Any:
        return self.json["data"]


@dataclass
class Api:
    """HTTP calls on behalf of one account. Paths are relative to the account
    (``/vmboxes``), or absolute when they start with ``/v2``."""

    client: TestClient[web.Request, web.Application]
    account_id: str
    token: str | None

    def url(self, path: str) -> str:
        return path if path.startswith("/v2") else f"/v2/accounts/{self.account_id}{path}"

    async def call(self, method: str, path: str, *, data: Any = None, body: bytes | str | None = None,
                   headers: dict[str, str] | None = None, token: str | None = None,
                   params: dict[str, str] | None = None) -> Reply:
        all_headers = {"Content-Type": "application/json"}
        use_token = token if token is not None else self.token
        if use_token:
            all_headers["X-Auth-Token"] = use_token
        all_headers.update(headers or {})
        payload: Any = body if body is not None else (None if data is None else json.dumps({"data": data}))
        if isinstance(payload, str):
            payload = payload.encode()
        if isinstance(payload, bytes) and len(payload) > 512 * 1024:
            payload = io.BytesIO(payload)
        async with self.client.request(method, self.url(path), data=payload, headers=all_headers,
                                       params=params) as response:
            return Reply(response.status, response.headers, await response.read())

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.call("GET", path, **kwargs)

    async def put(self, path: str, data: Any = None, **kwargs: Any) -> Reply:
        return await self.call("PUT", path, data=data, **kwargs)

    async def post(self, path: str, data: Any = None, **kwargs: Any) -> Reply:
        return await self.call("POST", path, data=data, **kwargs)

    async def patch(self, path: str, data: Any = None, **kwargs: Any) -> Reply:
        return await self.call("PATCH", path, data=data, **kwargs)

    async def delete(self, path: str, data: Any = None, **kwargs: Any) -> Reply:
        return await self.call("DELETE", path, data=data, **kwargs)


async def make_account(services: Services, *, name: str = "Test Account", parent_id: str | None = None,
                       realm: str | None = None) -> dict[str, Any]:
    doc = await services.accounts.create(name=name, realm=realm, parent_id=parent_id)
    created = getattr(services, "created_accounts", None)
    if created is not None:
        created.append(doc["_id"])
    return doc


async def login(client: TestClient[web.Request, web.Application], api_key: str) -> str:
    async with client.put("/v2/api_auth", json={"data": {"api_key": api_key}}) as response:
        assert response.status == 201, await response.text()
        return str((await response.json())["auth_token"])


@pytest.fixture
async def account(services: Services) -> dict[str, Any]:
    return await make_account(services)


@pytest.fixture
async def api(client: TestClient[web.Request, web.Application], account: dict[str, Any]) -> Api:
    return Api(client, account["_id"], await login(client, account["pvt_api_key"]))


@pytest.fixture
async def vmbox(api: Api) -> dict[str, Any]:
    reply = await api.put("/vmboxes", {"name": "VMBox 0", "mailbox": "3000"})
    assert reply.status == 201, reply.body
    return dict(reply.data)


async def with_audio(api: Api, box_id: str, audio: bytes = b"ID3-audio" * 20) -> str:
    """A message with metadata and audio in one multipart create; its id."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Type: application/json\r\n\r\n"
            + json.dumps({"data": {"caller_id_number": "6001"}})
            + f"\r\n--{boundary}\r\nContent-Type: audio/mpeg\r\n"
            + 'Content-Disposition: form-data; name="file"; filename="m.mp3"\r\n\r\n').encode() \
        + audio + f"\r\n--{boundary}--\r\n".encode()
    reply = await api.call("PUT", f"/vmboxes/{box_id}/messages", body=body,
                           headers={"Content-Type": f"multipart/mixed; boundary={boundary}"})
    assert reply.status == 201, reply.body
    return str(reply.data["media_id"])


def assert_error(reply: Reply, status: int, message: str) -> dict[str, Any]:
    """The Kazoo error envelope with this status and message; returns its ``data``."""
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"] == "application/json"
    body = reply.json
    assert body["status"] == "error"
    assert body["error"] == str(status)
    assert body["message"] == message
    assert isinstance(body["data"], dict)
    return dict(body["data"])


async def stored_doc(services: Services, db: str, doc_id: str) -> dict[str, Any]:
    return await services.store.couch.get_doc(db, doc_id)


def build_multipart(parts: list[tuple[dict[str, str], bytes]], subtype: str = "mixed",
                    boundary: str = "------------------------d74496d66958873e") -> tuple[bytes, str]:
    """A multipart body built by hand (headers per part), and its Content-Type."""
    out = bytearray()
    for headers, body in parts:
        out += f"--{boundary}\r\n".encode()
        for name, value in headers.items():
            out += f"{name}: {value}\r\n".encode()
        out += b"\r\n" + body + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/{subtype}; boundary={boundary}"


class LoopbackSmtp:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 and a free port, whose ``handler``
    gets aiosmtpd's hooks (``handle_DATA`` …)."""

    def __init__(self, handler: Any) -> None:
        self.port = free_port()
        self._handler = handler
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self._handler, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@contextlib.contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """Held by one test at a time on this machine (across the xdist workers)."""
    with (Path(tempfile.gettempdir()) / name).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def smtp_tests_lock() -> Iterator[None]:
    """One test with a voicemail-to-email worker at a time on this machine: a worker
    sends the due emails of every account of its store, so two such tests on one CouchDB
    (the xdist workers share ``KAZOO_VM_COUCH_URL``) would send each other's emails."""
    with machine_lock("kazoo_vm-smtp-tests.lock"):
        yield


__all__ = ["Api", "Reply", "assert_error", "build_multipart", "LoopbackSmtp", "machine_lock", "make_account", "login",
           "smtp_tests_lock", "stored_doc", "quote_db", "with_audio"]
