"""Store faults under load: the store slowed down, its connections dropped, stalled,
stopped and restarted while requests of every kind run. Every request ends in a 2xx
answer or a Kazoo error envelope (503 ``datastore_unreachable`` when the store cannot
be reached), none waits longer than the configured ``couch_timeout`` plus a margin, and
afterwards the same application instance (never restarted) serves everything again
with no message lost or duplicated.

The store sits behind a loopback TCP proxy (``ChaosProxy``: latency, random dropped
connections, stalls). On the embedded store the pouchdb-server process itself is
stopped and started again mid-run; with ``KAZOO_VM_COUCH_URL`` (a shared Apache
CouchDB that the test must not stop) the proxy is cut and restored instead.

``KAZOO_VM_FAULT_ROUNDS`` repeats the fault cycle (default 1). With
``KAZOO_VM_RELIABILITY_REPORT`` set to a file the figures are appended there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import make_account
from tcp_proxy import TcpProxy, first_node, through

from kazoo_vm import appkeys
from kazoo_vm.app import create_app
from kazoo_vm.config import Config
from kazoo_vm.embedded_store import EmbeddedStore
from kazoo_vm.handlers.messages import TRANSFER_CONCURRENCY
from kazoo_vm.services import Services
from kazoo_vm.storage.errors import Unavailable
from kazoo_vm.storage.messages import AudioStream

COUCH_TIMEOUT = 2.0
STREAM_CUT = "download cut short (store failed mid-stream)"
STREAMED = frozenset({"zip download", "get audio"})
# Beyond couch_timeout: one more round trip after the failing one, the proxy's own
# latency, a loaded test machine.
MARGIN = 2.5
BOUND = COUCH_TIMEOUT + MARGIN
ROUNDS = int(os.environ.get("KAZOO_VM_FAULT_ROUNDS") or 1)
# Bulk requests carry at most one concurrency wave of messages (TRANSFER_CONCURRENCY):
# beyond, a store that stops answering mid-request costs one couch_timeout per wave.
BULK = TRANSFER_CONCURRENCY
WORKERS = 4
SEED = int(os.environ.get("KAZOO_VM_FAULT_SEED") or random.SystemRandom().randrange(1 << 30))
RECOVERY_TIMEOUT = 60.0
# Phases of one fault round (seconds): the store slow, dropping connections, stalled
# (every byte held longer than couch_timeout), then down.
LATENCY, DROPS, STALL, DOWN = 2.0, 2.5, 2.5, 1.5


# -- the proxy ------------------------------------------------------------------------


class ChaosProxy(TcpProxy):
    """:class:`TcpProxy` plus dropped connections (``drop_rate``: chance per chunk that
    the connection is reset both ways), stalls (nothing is forwarded; the held
    connections are reset when the stall ends) and one lost answer on demand
    (:meth:`lose_next_answer`: the next request starting with a prefix reaches the store,
    its answer does not)."""

    def __init__(self, target_host: str, target_port: int, rng: random.Random) -> None:
        super().__init__(target_host, target_port)
        self.rng = rng
        self.drop_rate = 0.0
        self.dropped = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._held: set[asyncio.StreamWriter] = set()
        self._lose_prefix = b""
        self._losing: tuple[asyncio.StreamWriter, asyncio.StreamWriter] | None = None

    def lose_next_answer(self, request_prefix: bytes) -> None:
        self._lose_prefix = request_prefix

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        for writer in list(self._held):
            writer.transport.abort()
        self._held.clear()
        self._flowing.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            return
        self._writers.add(upstream_writer)
        pair = (writer, upstream_writer)
        tasks = [asyncio.ensure_future(self._forward(reader, upstream_writer, pair)),
                 asyncio.ensure_future(self._forward(upstream_reader, writer, pair))]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.difference_update(tasks)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        try:
            while chunk := await reader.read(65536):
                if not self._flowing.is_set():
                    self._held.update(pair)
                    await self._flowing.wait()
                    if pair[0] not in self._writers:
                        return
                if self.delay:
                    await asyncio.sleep(self.delay * self.rng.uniform(0.5, 1.5))
                if self._lose_prefix and writer is pair[1] and chunk.startswith(self._lose_prefix):
                    self._lose_prefix, self._losing = b"", pair
                elif self._losing is pair and writer is pair[0]:  # the store's answer: lost
                    self._losing = None
                    for side in pair:
                        side.transport.abort()
                    return
                if self.drop_rate and self.rng.random() < self.drop_rate:
                    self.dropped += 1
                    for side in pair:
                        side.transport.abort()
                    return
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


@dataclass
class Store:
    """The store behind the proxy, and how to take it away."""

    upstream: str
    proxy: ChaosProxy
    services: Services
    stop: Callable[[], Awaitable[None]]
    restart: Callable[[], Awaitable[None]]
    kind: str

    @property
    def url(self) -> str:
        return through(self.upstream, self.proxy.port)


@pytest.fixture
async def store(tmp_path: Path, services: Services) -> AsyncIterator[Store]:
    rng = random.Random(SEED)
    configured = os.environ.get("KAZOO_VM_COUCH_URL")
    if configured:
        parts = urlsplit(first_node(configured))
        proxy = ChaosProxy(parts.hostname or "127.0.0.1", parts.port or 5984, rng)
        await proxy.start()
        # A shared server is never stopped: the proxy refuses and cuts instead.
        yield Store(configured, proxy, services, proxy.stop, proxy.start, "proxy cut (Apache CouchDB kept running)")
        await proxy.stop()
        return
    embedded = EmbeddedStore(data_dir=tmp_path / "store")
    url = await embedded.astart()
    proxy = ChaosProxy("127.0.0.1", embedded.port, rng)
    await proxy.start()
    own = Services.connect(url, timeout=30.0)
    try:
        yield Store(url, proxy, own, embedded.astop, embedded.astart, "pouchdb-server process stopped and restarted")
    finally:
        await own.close()
        await proxy.stop()
        await embedded.astop()


# -- requests and their outcomes ---------------------------------------------------------


@dataclass
class Outcome:
    phase: str
    kind: str
    status: int
    verdict: str  # "ok", "<status> <message>" for a Kazoo error, or what went wrong
    seconds: float


def audio_of(call_id: str) -> bytes:
    seed = hashlib.sha256(call_id.encode()).digest()
    return b"ID3" + seed * (8 + seed[0] % 24)


def verdict_of(status: int, headers: Any, body: bytes) -> str:
    if 200 <= status < 300:
        return "ok"
    try:
        envelope = json.loads(body)
    except ValueError:
        return "no envelope"
    if (headers.get("Content-Type") != "application/json" or not isinstance(envelope, dict)
            or envelope.get("status") != "error" or envelope.get("error") != str(status)
            or not isinstance(envelope.get("message"), str) or not isinstance(envelope.get("data"), dict)):
        return "no envelope"
    return f"{status} {envelope['message']}"


@dataclass
class Reply:
    status: int
    verdict: str
    body: bytes

    @property
    def data(self) -> Any:
        return json.loads(self.body)["data"]


@dataclass
class Tracked:
    """A message whose place the client knows (or a move of it that got no answer)."""

    call_id: str
    box: str
    media_id: str | None
    pending_to: str | None = None


@dataclass
class Worker:
    """A client with its own boxes and messages, sending requests of every kind."""

    client: TestClient[web.Request, web.Application]
    account_id: str
    api_key: str
    token: str
    rng: random.Random
    log: list[Outcome]
    phase: list[str]
    boxes: list[tuple[str, str]] = field(default_factory=list)  # (id, mailbox)
    tracked: list[Tracked] = field(default_factory=list)
    maybe: set[str] = field(default_factory=set)  # created without an answer
    copy_sources: dict[str, str] = field(default_factory=dict)  # call id -> media id (first box)
    copies_sure: Counter[str] = field(default_factory=Counter)
    copies_maybe: Counter[str] = field(default_factory=Counter)
    scratch: list[str] = field(default_factory=list)  # messages of the first box nobody tracks
    fullest_box: bool = False  # pick the box with the most messages (the recovery probe)
    failures: list[str] = field(default_factory=list)  # what failed in the probe's rounds

    async def call(self, kind: str, method: str, path: str, *, data: Any = None, body: bytes | None = None,
                   headers: dict[str, str] | None = None, params: dict[str, str] | None = None,
                   token: bool = True) -> Reply:
        url = path if path.startswith("/v2") else f"/v2/accounts/{self.account_id}{path}"
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if token:
            all_headers["X-Auth-Token"] = self.token
        payload = body if body is not None else (None if data is None else json.dumps({"data": data}).encode())
        phase = self.phase[0]
        started = time.monotonic()
        status = 0
        try:
            async with asyncio.timeout(BOUND + 5):
                async with self.client.request(method, url, data=payload, headers=all_headers,
                                               params=params) as response:
                    status = response.status
                    content = await response.read()
                    verdict = verdict_of(response.status, response.headers, content)
        except TimeoutError:
            status, verdict, content = 0, "hang", b""
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as error:
            # ZIPs and audio are streamed: when the store fails after the first bytes, the
            # only way left to tell the client is to cut the answer short.
            cut = kind in STREAMED and status in (200, 206)
            verdict = STREAM_CUT if cut else f"broken answer ({type(error).__name__})"
            status, content = 0, b""
        self.log.append(Outcome(phase, kind, status, verdict, time.monotonic() - started))
        return Reply(status, verdict, content)

    # -- set-up (before the faults) --

    async def prepare(self) -> None:
        for _ in range(2):
            await self.new_box()
        for _ in range(3):
            await self.create_tracked()
        for _ in range(2):
            await self.create_copy_source()
        assert len(self.boxes) == 2 and len(self.tracked) == 3 and len(self.copy_sources) == 2, self.log[-3:]

    async def new_box(self) -> str | None:
        mailbox = str(self.rng.randrange(10**8, 10**9))
        reply = await self.call("create box", "PUT", "/vmboxes", data={"name": f"Box {mailbox}", "mailbox": mailbox})
        if reply.status != 201:
            return None
        box_id = str(reply.data["id"])
        if len(self.boxes) < 2:
            self.boxes.append((box_id, mailbox))
        return box_id

    def _multipart(self, call_id: str) -> tuple[bytes, str]:
        boundary = uuid.uuid4().hex
        meta = json.dumps({"data": {"call_id": call_id, "caller_id_number": "6001"}}).encode()
        body = (f"--{boundary}\r\nContent-Type: application/json\r\n\r\n".encode() + meta
                + f"\r\n--{boundary}\r\nContent-Type: audio/mpeg\r\n\r\n".encode() + audio_of(call_id)
                + f"\r\n--{boundary}--\r\n".encode())
        return body, f"multipart/mixed; boundary={boundary}"

    async def create_tracked(self) -> None:
        call_id = f"t-{uuid.uuid4().hex[:12]}"
        body, content_type = self._multipart(call_id)
        box = self.boxes[0][0]
        reply = await self.call("create message (multipart)", "PUT", f"/vmboxes/{box}/messages", body=body,
                                headers={"Content-Type": content_type})
        if reply.status == 201:
            self.tracked.append(Tracked(call_id, box, str(reply.data["media_id"])))
        else:  # 503, no answer, or a 409 for a write that happened (see the lost-answer test)
            self.maybe.add(call_id)

    async def create_copy_source(self) -> None:
        call_id = f"c-{uuid.uuid4().hex[:12]}"
        body, content_type = self._multipart(call_id)
        reply = await self.call("create message (multipart)", "PUT", f"/vmboxes/{self.boxes[0][0]}/messages",
                                body=body, headers={"Content-Type": content_type})
        if reply.status == 201:
            self.copy_sources[call_id] = str(reply.data["media_id"])
        else:
            self.maybe.add(call_id)

    # -- the request kinds --

    def _settled(self) -> list[Tracked]:
        return [item for item in self.tracked if item.pending_to is None and item.media_id is not None]

    def _box(self) -> str:
        if self.fullest_box:
            settled = Counter(item.box for item in self._settled())
            return max((box_id for box_id, _ in self.boxes), key=lambda box_id: settled[box_id])
        return self.rng.choice(self.boxes)[0]

    def _other(self, box: str) -> str:
        return next(box_id for box_id, _ in self.boxes if box_id != box)

    async def step(self) -> None:
        pending = [item for item in self.tracked if item.pending_to is not None]
        if pending and self.rng.random() < 0.5:
            await self.resend_move(self.rng.choice(pending))
            return
        await self.rng.choice(KINDS)(self)

    async def resend_move(self, item: Tracked) -> None:
        assert item.pending_to is not None and item.media_id is not None
        reply = await self.call("move message", "POST", f"/vmboxes/{item.box}/messages/{item.media_id}",
                                data={"source_id": item.pending_to})
        if reply.status == 200:
            item.box, item.media_id, item.pending_to = item.pending_to, str(reply.data["media_id"]), None
        elif reply.status == 404:  # the move had finished: the message is in the target, id unknown here
            item.box, item.media_id, item.pending_to = item.pending_to, None, None

    async def move(self) -> None:
        settled = self._settled()
        if not settled:
            return
        item = self.rng.choice(settled)
        assert item.media_id is not None
        item.pending_to = self._other(item.box)
        await self.resend_move(item)

    async def bulk_move(self) -> None:
        box = self._box()
        chosen = [item for item in self._settled() if item.box == box][:BULK]
        if not chosen:
            return
        target = self._other(box)
        for item in chosen:
            item.pending_to = target
        reply = await self.call("bulk move", "POST", f"/vmboxes/{box}/messages",
                                data={"messages": [item.media_id for item in chosen], "source_id": target})
        if reply.status != 200:
            return
        moved = {new_id.partition("-")[2]: new_id for new_id in reply.data.get("succeeded", [])}
        for item in chosen:
            suffix = hashlib.md5(f"{item.media_id}>{target}".encode()).hexdigest()
            if suffix in moved:
                item.box, item.media_id, item.pending_to = target, moved[suffix], None

    async def folder(self) -> None:
        settled = self._settled()
        if settled:
            item = self.rng.choice(settled)
            await self.call("change folder", "POST", f"/vmboxes/{item.box}/messages/{item.media_id}",
                            data={"folder": self.rng.choice(["saved", "new"])})

    async def bulk_folder(self) -> None:
        box = self._box()
        ids = [item.media_id for item in self._settled() if item.box == box][:BULK]
        if ids:
            await self.call("bulk change folder", "POST", f"/vmboxes/{box}/messages",
                            data={"messages": ids, "folder": self.rng.choice(["saved", "new"])})

    async def copy(self) -> None:
        call_id = self.rng.choice(sorted(self.copy_sources))
        reply = await self.call("copy message", "POST",
                                f"/vmboxes/{self.boxes[0][0]}/messages/{self.copy_sources[call_id]}",
                                data={"source_id": [self.boxes[1][0]]})
        self._count_copies(reply, [call_id])

    async def bulk_copy(self) -> None:
        calls = sorted(self.copy_sources)
        reply = await self.call("bulk copy", "POST", f"/vmboxes/{self.boxes[0][0]}/messages",
                                data={"messages": [self.copy_sources[c] for c in calls],
                                      "source_id": [self.boxes[1][0]]})
        self._count_copies(reply, calls)

    def _count_copies(self, reply: Reply, calls: list[str]) -> None:
        if reply.status == 200:
            failed = reply.data.get("failed", {})
            for call_id in calls:
                if self.copy_sources[call_id] in failed:
                    self.copies_maybe[call_id] += 1
                else:
                    self.copies_sure[call_id] += 1
        else:
            for call_id in calls:
                self.copies_maybe[call_id] += 1

    async def get_message(self) -> None:
        settled = self._settled()
        if settled:
            item = self.rng.choice(settled)
            await self.call("get message", "GET", f"/vmboxes/{item.box}/messages/{item.media_id}")

    async def get_audio(self) -> None:
        settled = self._settled()
        if settled:
            item = self.rng.choice(settled)
            reply = await self.call("get audio", "GET", f"/vmboxes/{item.box}/messages/{item.media_id}/raw")
            assert reply.status != 200 or reply.body == audio_of(item.call_id)

    async def zip(self) -> None:
        box = self._box()
        ids = [item.media_id for item in self._settled() if item.box == box][:BULK]
        if ids:
            await self.call("zip download", "POST", f"/vmboxes/{box}/messages/raw", data={"messages": ids},
                            headers={"Accept": "application/zip"})

    async def list_box(self) -> None:
        await self.call("list box messages", "GET", f"/vmboxes/{self.rng.choice(self.boxes)[0]}/messages")

    async def list_account(self) -> None:
        await self.call("list account messages", "GET", "/vmboxes/messages")

    async def list_boxes(self) -> None:
        await self.call("list boxes", "GET", "/vmboxes")

    async def get_box(self) -> None:
        await self.call("get box", "GET", f"/vmboxes/{self.rng.choice(self.boxes)[0]}")

    async def patch_box(self) -> None:
        await self.call("patch box", "PATCH", f"/vmboxes/{self.rng.choice(self.boxes)[0]}",
                        data={"some_key": uuid.uuid4().hex[:6]})

    async def replace_box(self) -> None:
        box_id, mailbox = self.rng.choice(self.boxes)
        await self.call("replace box", "POST", f"/vmboxes/{box_id}",
                        data={"name": f"Box {mailbox}", "mailbox": mailbox, "pin": "1234"})

    async def create_and_delete_box(self) -> None:
        box_id = await self.new_box()
        if box_id is not None:
            await self.call("delete box", "DELETE", f"/vmboxes/{box_id}")

    async def create_scratch(self, json_body: bool | None = None) -> None:
        box = self.boxes[0][0]
        if json_body if json_body is not None else self.rng.random() < 0.5:
            reply = await self.call("create message (json)", "PUT", f"/vmboxes/{box}/messages",
                                    data={"caller_id_number": "6002", "call_id": f"s-{uuid.uuid4().hex[:8]}"})
        else:
            reply = await self.call("create message (raw audio)", "PUT", f"/vmboxes/{box}/messages",
                                    body=b"ID3scratch" * 50, headers={"Content-Type": "audio/mpeg"})
        if reply.status == 201:
            self.scratch.append(str(reply.data["media_id"]))

    async def put_audio(self) -> None:
        if self.scratch:
            await self.call("upload audio", "PUT",
                            f"/vmboxes/{self.boxes[0][0]}/messages/{self.rng.choice(self.scratch)}/raw",
                            body=b"ID3replaced" * 40, headers={"Content-Type": "audio/mpeg"})

    async def delete_scratch(self) -> None:
        if self.scratch:
            await self.call("delete message", "DELETE", f"/vmboxes/{self.boxes[0][0]}/messages/{self.scratch.pop()}")

    async def bulk_delete_scratch(self) -> None:
        if self.scratch:
            chosen, self.scratch = self.scratch[:3], self.scratch[3:]
            await self.call("bulk delete", "DELETE", f"/vmboxes/{self.boxes[0][0]}/messages",
                            data={"messages": chosen})

    async def login(self) -> None:
        reply = await self.call("api_auth", "PUT", "/v2/api_auth", data={"api_key": self.api_key}, token=False)
        if reply.status == 201:
            self.token = str(json.loads(reply.body)["auth_token"])

    async def account(self) -> None:
        await self.call("get account", "GET", f"/v2/accounts/{self.account_id}")

    async def users(self) -> None:
        await self.call("list users", "GET", "/users")


KINDS: list[Callable[[Worker], Awaitable[None]]] = [
    Worker.move, Worker.bulk_move, Worker.folder, Worker.bulk_folder, Worker.copy, Worker.bulk_copy,
    Worker.get_message, Worker.get_audio, Worker.zip, Worker.list_box, Worker.list_account, Worker.list_boxes,
    Worker.get_box, Worker.patch_box, Worker.replace_box, Worker.create_and_delete_box, Worker.create_tracked,
    Worker.create_scratch, Worker.put_audio, Worker.delete_scratch, Worker.bulk_delete_scratch, Worker.login,
    Worker.account, Worker.users,
]


# -- the run ---------------------------------------------------------------------------


LABELS = {"create box", "create message (multipart)", "move message", "bulk move", "change folder",
          "bulk change folder", "copy message", "bulk copy", "get message", "get audio", "zip download",
          "list box messages", "list account messages", "list boxes", "get box", "patch box", "replace box",
          "delete box", "create message (json)", "create message (raw audio)", "upload audio", "delete message",
          "bulk delete", "api_auth", "get account", "list users"}


async def recovered(probe: Worker) -> bool:
    """One request of every kind, each answered with a 2xx."""
    before = len(probe.log)
    await probe.create_scratch(json_body=True)
    await probe.create_scratch(json_body=False)
    await probe.create_tracked()
    for kind in KINDS:
        if kind is not Worker.bulk_move:
            await kind(probe)
    await probe.bulk_move()  # last: it empties a box
    done = probe.log[before:]
    assert {o.kind for o in done} == LABELS or any(o.verdict != "ok" for o in done), LABELS - {o.kind for o in done}
    probe.failures.extend(f"{o.kind}: {o.verdict}" for o in done if o.verdict != "ok")
    return all(outcome.verdict == "ok" for outcome in done)


async def settle(worker: Worker) -> None:
    """After recovery: resend every move that got no answer until it is answered."""
    for item in worker.tracked:
        for _attempt in range(20):
            if item.pending_to is None:
                break
            await worker.resend_move(item)
        assert item.pending_to is None, f"move of {item.call_id} never answered"


async def check_messages(worker: Worker, services: Services) -> dict[str, int]:
    """No message lost or duplicated: every tracked message listed once, in the box the
    client knows, with its audio; copy sources once; copies between the sure and the
    possible count; messages created without an answer at most once."""
    listed: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for box_id, _mailbox in worker.boxes:
        reply = await worker.call("list box messages", "GET", f"/vmboxes/{box_id}/messages",
                                  params={"paginate": "false"})
        assert reply.status == 200, reply.body
        for row in reply.data:
            listed[str(row.get("call_id"))].append((box_id, str(row["media_id"])))
    figures = Counter[str]()
    for item in worker.tracked:
        places = listed.get(item.call_id, [])
        figures["lost"] += not places
        figures["duplicated"] += max(0, len(places) - 1)
        assert [box for box, _id in places] == [item.box], (item, places)
        box_id, media_id = places[0]
        audio = await worker.call("get audio", "GET", f"/vmboxes/{box_id}/messages/{media_id}/raw")
        assert audio.body == audio_of(item.call_id), item
        figures["tracked"] += 1
    first, second = worker.boxes[0][0], worker.boxes[1][0]
    for call_id in worker.copy_sources:
        boxes = Counter(box for box, _id in listed.get(call_id, []))
        figures["lost"] += boxes[first] == 0
        figures["duplicated"] += max(0, boxes[first] - 1)
        assert boxes[first] == 1, (call_id, boxes)
        assert worker.copies_sure[call_id] <= boxes[second] <= worker.copies_sure[call_id] + \
            worker.copies_maybe[call_id], (call_id, boxes, worker.copies_sure, worker.copies_maybe)
        figures["copies"] += boxes[second]
        for box_id, media_id in listed[call_id]:
            audio = await worker.call("get audio", "GET", f"/vmboxes/{box_id}/messages/{media_id}/raw")
            assert audio.body == audio_of(call_id)
    for call_id in worker.maybe:
        assert len(listed.get(call_id, [])) <= 1, (call_id, listed[call_id])
    figures["answerless creates found"] = sum(1 for call_id in worker.maybe if listed.get(call_id))
    return dict(figures)


async def test_store_faults_every_request_answered_in_time_and_recovered(aiohttp_client: Any, config: Config,
                                                                         store: Store) -> None:
    rng = random.Random(SEED)
    settings = replace(config, couch_url=store.url, couch_timeout=COUCH_TIMEOUT)
    client: TestClient[web.Request, web.Application] = await aiohttp_client(create_app(settings, store.url))
    account = await make_account(store.services, name="Fault Account")
    created = getattr(store.services, "created_accounts", None)
    log: list[Outcome] = []
    phase = ["setup"]
    async with client.put("/v2/api_auth", json={"data": {"api_key": account["pvt_api_key"]}}) as response:
        token = str((await response.json())["auth_token"])
    workers = [Worker(client, account["_id"], account["pvt_api_key"], token, random.Random(rng.random()), log, phase)
               for _ in range(WORKERS + 1)]
    for worker in workers:
        await worker.prepare()
    probe = workers.pop()  # sends one request of each kind after each outage, until all succeed
    probe.fullest_box = True

    running = True

    async def work(worker: Worker) -> None:
        while running:
            await worker.step()

    started = time.monotonic()
    tasks = [asyncio.ensure_future(work(worker)) for worker in workers]
    proxy = store.proxy
    recovery_seconds = []
    try:
        for _round in range(ROUNDS):
            phase[0] = "latency"
            proxy.delay = 0.02
            await asyncio.sleep(LATENCY)  # load runs meanwhile (a phase length, not a wait for a condition)
            phase[0] = "drops"
            proxy.delay, proxy.drop_rate = 0.005, 0.04
            await asyncio.sleep(DROPS)
            phase[0] = "stall"
            proxy.delay, proxy.drop_rate = 0.0, 0.0
            proxy.stall()
            await asyncio.sleep(STALL)
            proxy.resume()
            phase[0] = "store down"
            await store.stop()
            await asyncio.sleep(DOWN)
            phase[0] = "store restarting"
            await store.restart()
            phase[0] = "recovery"
            back = time.monotonic()
            while True:
                attempt = time.monotonic()
                if await recovered(probe):
                    break
                assert time.monotonic() - back < RECOVERY_TIMEOUT, ("no recovery without a restart", [
                    (o.kind, o.verdict) for o in log if o.phase == "recovery" and o.verdict != "ok"][-10:])
            # From the store's return to the start of the first probe round with every request a success.
            recovery_seconds.append(attempt - back)
            phase[0] = "normal"
    finally:
        running = False
        await asyncio.gather(*tasks)
    phase[0] = "check"
    workers.append(probe)
    for worker in workers:
        await settle(worker)
    figures = Counter[str]()
    for worker in workers:
        figures.update(await check_messages(worker, store.services))
    elapsed = time.monotonic() - started

    faulty = [o for o in log if o.phase not in ("setup", "check")]
    by_verdict = Counter(o.verdict for o in faulty)
    phases = list(dict.fromkeys(o.phase for o in faulty))
    by_phase = {p: dict(Counter(o.verdict for o in faulty if o.phase == p)) for p in phases}
    kinds = Counter(o.kind for o in faulty)
    slowest = max(faulty, key=lambda o: o.seconds)
    report = {"scenario": "store_faults", "seed": SEED, "store": store.kind, "rounds": ROUNDS,
              "couch_timeout": COUCH_TIMEOUT, "bound": BOUND, "requests": len(faulty), "kinds": len(kinds),
              "by_verdict": dict(by_verdict), "by_phase": by_phase,
              "max_seconds": round(slowest.seconds, 2),
              "slowest": f"{slowest.kind} ({slowest.phase}, {slowest.verdict})",
              "client_errors": dict(Counter(f"{o.kind}: {o.verdict}" for o in faulty if 400 <= o.status < 500)),
              "mean_seconds": {p: round(sum(o.seconds for o in faulty if o.phase == p)
                                        / max(1, sum(1 for o in faulty if o.phase == p)), 3) for p in phases},
              "recovery_seconds": [round(s, 2) for s in recovery_seconds], "probe_failures": probe.failures,
              "dropped_connections": proxy.dropped,
              "messages": dict(figures), "seconds": round(elapsed, 1)}
    print(f"\nRELIABILITY {json.dumps(report)}")
    if os.environ.get("KAZOO_VM_RELIABILITY_REPORT"):
        with open(os.environ["KAZOO_VM_RELIABILITY_REPORT"], "a") as out:
            out.write(json.dumps(report) + "\n")
    assert created is None or account["_id"] in created

    assert set(kinds) == LABELS, set(kinds) ^ LABELS
    bad = [o for o in faulty if o.verdict not in ("ok", STREAM_CUT) and not o.verdict[:3].isdigit()]
    assert not bad, Counter((o.kind, o.verdict) for o in bad)
    server_errors = [o for o in faulty if o.status >= 500 and o.verdict != "503 datastore_unreachable"]
    assert not server_errors, Counter((o.kind, o.verdict) for o in server_errors)
    too_slow = [o for o in faulty if o.seconds > BOUND]
    assert not too_slow, [(o.kind, o.phase, o.verdict, round(o.seconds, 2)) for o in too_slow]
    assert by_verdict["503 datastore_unreachable"] > 0 and by_verdict["ok"] > 0
    assert figures["lost"] == 0 and figures["duplicated"] == 0


async def test_zip_cut_by_the_store_ends_the_answer(api: Any, vmbox: dict[str, Any]) -> None:
    ids = []
    for index in range(2):
        body, content_type = Worker._multipart(None, f"zip-{index}")  # type: ignore[arg-type]
        reply = await api.call("PUT", f"/vmboxes/{vmbox['id']}/messages", body=body,
                               headers={"Content-Type": content_type})
        ids.append(reply.data["media_id"])
    messages = api.client.app[appkeys.SERVICES].messages
    original = messages.audio
    reads = []

    async def store_gone_at_second_read(db: str, doc: dict[str, Any]) -> Any:
        reads.append(doc["_id"])
        if len(reads) == 2:
            raise Unavailable("connection reset by the store")
        return await original(db, doc)

    messages.audio = store_gone_at_second_read
    try:
        async with asyncio.timeout(COUCH_TIMEOUT):
            async with api.client.post(api.url(f"/vmboxes/{vmbox['id']}/messages/raw"),
                                       json={"data": {"messages": ids}},
                                       headers={"X-Auth-Token": api.token}) as response:
                # ended one way or another: a truncated body the client can see, or an error envelope
                with contextlib.suppress(aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
                    await response.read()
    finally:
        messages.audio = original


async def test_audio_cut_by_the_store_ends_the_download(api: Any, vmbox: dict[str, Any]) -> None:
    body, content_type = Worker._multipart(None, "cut-audio")  # type: ignore[arg-type]
    reply = await api.call("PUT", f"/vmboxes/{vmbox['id']}/messages", body=body, headers={"Content-Type": content_type})
    messages = api.client.app[appkeys.SERVICES].messages
    original = messages.open_audio

    @contextlib.asynccontextmanager
    async def store_gone_after_the_first_bytes(db: str, doc: dict[str, Any]) -> AsyncIterator[AudioStream]:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"ID3"
            raise Unavailable("connection reset by the store")

        yield AudioStream("cut.mp3", "audio/mpeg", 1000, chunks())

    messages.open_audio = store_gone_after_the_first_bytes
    try:
        async with asyncio.timeout(COUCH_TIMEOUT):
            async with api.client.get(api.url(f"/vmboxes/{vmbox['id']}/messages/{reply.data['media_id']}/raw"),
                                      headers={"X-Auth-Token": api.token}) as response:
                assert response.status == 200
                with pytest.raises(aiohttp.ClientPayloadError):  # short of Content-Length: visibly truncated
                    await response.read()
    finally:
        messages.open_audio = original


async def test_a_write_whose_answer_is_lost_is_not_reported_as_a_conflict(aiohttp_client: Any, config: Config,
                                                                          couch_url: str, services: Services) -> None:
    parts = urlsplit(first_node(couch_url))
    proxy = ChaosProxy(parts.hostname or "127.0.0.1", parts.port or 5984, random.Random(SEED))
    await proxy.start()
    try:
        url = Store(couch_url, proxy, services, proxy.stop, proxy.start, "proxy").url
        client: TestClient[web.Request, web.Application] = await aiohttp_client(
            create_app(replace(config, couch_url=url, couch_timeout=COUCH_TIMEOUT), url))
        account = await make_account(services, name="Lost Answer")
        async with client.put("/v2/api_auth", json={"data": {"api_key": account["pvt_api_key"]}}) as response:
            headers = {"X-Auth-Token": str((await response.json())["auth_token"])}
        base = f"/v2/accounts/{account['_id']}/vmboxes"
        async with client.put(base, json={"data": {"name": "Box", "mailbox": "100"}}, headers=headers) as response:
            box = (await response.json())["data"]["id"]
        async with client.put(f"{base}/{box}/messages", json={"data": {}}, headers=headers) as response:
            assert response.status == 201  # the MODB and its views exist now
        proxy.lose_next_answer(b"PUT /account%2F")  # the next message write: stored, answer lost
        async with client.put(f"{base}/{box}/messages", json={"data": {"call_id": "lost-answer"}},
                              headers=headers) as response:
            status = response.status
        async with client.get(f"{base}/{box}/messages", headers=headers) as response:
            stored = [row for row in (await response.json())["data"] if row["call_id"] == "lost-answer"]
    finally:
        await proxy.stop()
    assert len(stored) == 1  # the write happened
    assert status in (201, 503), status  # success, or "unknown outcome" — never a conflict
