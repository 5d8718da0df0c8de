"""Crash safety: the service is killed with SIGKILL in the middle of a move, a copy, a
legacy migration and a voicemail-to-email delivery; afterwards every message exists
exactly once, with its audio, and a restarted service (plus the client's retry of the
request that got no answer, or the resumable ``migrate`` command) finishes the job.

Each trial runs real processes against the session's store (``couch_url``):

* a service ``kazoo_vm.cli.main(["serve", "--port", P])`` — forked from a pre-imported
  interpreter (a "zygote") so that a start costs a fraction of a second instead of a
  fresh interpreter's import; the same code path as ``python -m kazoo_vm serve`` (which
  ``test_real_cli_serve_killed_at_fault_point_then_restarted`` runs as is);
* killed either by the test-only fault switch (``KAZOO_VM_FAULT_POINT`` /
  ``KAZOO_VM_FAULT_SKIP``: the process SIGKILLs itself at the n-th pass of a named
  step) or by the test with ``os.kill(pid, SIGKILL)`` after a random delay while the
  request runs; for voicemail-to-email the SMTP relay of the test kills the service
  when it receives the email, when it has accepted it (QUIT after the 250) or a few
  milliseconds later — i.e. between "the relay accepted" and "the message is deleted".

``KAZOO_VM_CRASH_TRIALS`` trials per scenario (default 3; ``tox -e crash`` runs 100),
``KAZOO_VM_CRASH_SEED`` fixes the random choices. With ``KAZOO_VM_RELIABILITY_REPORT``
set to a file, each scenario appends its figures there as a JSON line.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import email.policy
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import LoopbackSmtp, Reply, build_multipart, make_account, smtp_tests_lock

from kazoo_vm.config import PROJECT_ROOT, Config
from kazoo_vm.embedded_store import free_port
from kazoo_vm.kazoo import box_message, naming
from kazoo_vm.kazoo.documents import Author, gregorian_now, stamp
from kazoo_vm.notify.worker import schedule_if_wanted
from kazoo_vm.services import Services
from kazoo_vm.storage.couch import quote_db
from kazoo_vm.storage.errors import NotFound
from kazoo_vm.storage.messages import Audio
from kazoo_vm.storage.notifications import DB as NOTIFICATIONS_DB
from kazoo_vm.storage.notifications import pointer_id

TRIALS = int(os.environ.get("KAZOO_VM_CRASH_TRIALS") or 3)
SEED = int(os.environ.get("KAZOO_VM_CRASH_SEED") or random.SystemRandom().randrange(1 << 30))
DAY = 86400
START_TIMEOUT = 60.0
EXIT_TIMEOUT = 60.0
SETTLE_TIMEOUT = 60.0
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=60)

# The zygote: imports kazoo_vm once, then forks one child per request line; each child
# runs ``kazoo_vm.cli.main(argv)`` with the given environment, output to a log file.
# Children are reaped on SIGCHLD and reported ({"exited": pid, "status": wait status}).
ZYGOTE = r"""
import json, os, signal, sys
import kazoo_vm.cli as cli

def emit(event):
    os.write(1, (json.dumps(event) + "\n").encode())

def reap(signum, frame):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        emit({"exited": pid, "status": status})

signal.signal(signal.SIGCHLD, reap)
emit({"ready": True})
while True:
    line = sys.stdin.readline()
    if not line:
        break
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(request["env"])
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        code = 70
        try:
            code = cli.main(request["argv"])
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    emit({"spawned": pid, "id": request["id"]})
"""


# -- processes ----------------------------------------------------------------------


class Zygote:
    """The forking launcher (one per test session)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._process = subprocess.Popen([sys.executable, "-c", ZYGOTE], cwd=PROJECT_ROOT, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, env=_clean_env())
        self._lock = threading.Lock()
        self._events: dict[str, Any] = {}
        self._exits: dict[int, int] = {}
        self._children: set[int] = set()
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, name="zygote-reader", daemon=True)
        self._reader.start()
        if not self._ready.wait(START_TIMEOUT):
            self.close()
            raise RuntimeError("the zygote did not start")

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            event = json.loads(line)
            with self._lock:
                if "ready" in event:
                    self._ready.set()
                elif "spawned" in event:
                    self._events[event["id"]] = event["spawned"]
                elif "exited" in event:
                    self._exits[event["exited"]] = event["status"]

    async def spawn(self, argv: list[str], env: dict[str, str], log: Path) -> int:
        request_id = uuid.uuid4().hex
        assert self._process.stdin is not None
        self._process.stdin.write((json.dumps({"id": request_id, "argv": argv, "env": env,
                                               "log": str(log)}) + "\n").encode())
        self._process.stdin.flush()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with self._lock:
                pid = self._events.pop(request_id, None)
            if pid is not None:
                self._children.add(pid)
                return int(pid)
            assert time.monotonic() < deadline, "the zygote did not fork"
            await asyncio.sleep(0.005)

    def exit_status(self, pid: int) -> int | None:
        with self._lock:
            return self._exits.get(pid)

    async def wait(self, pid: int, timeout: float = EXIT_TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while (status := self.exit_status(pid)) is None:
            assert time.monotonic() < deadline, f"process {pid} did not exit within {timeout}s"
            await asyncio.sleep(0.01)
        self._children.discard(pid)
        return status

    def close(self) -> None:
        for pid in list(self._children):  # only the processes this zygote started
            if self.exit_status(pid) is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(timeout=10)
        if self._process.stdout is not None:
            self._process.stdout.close()


def _clean_env() -> dict[str, str]:
    # no webhook sender: see the ``config`` fixture in conftest.py
    return {**{key: value for key, value in os.environ.items() if not key.startswith("KAZOO_VM_")},
            "KAZOO_VM_WEBHOOKS": "false"}


def killed_by_sigkill(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


@pytest.fixture(scope="session")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    launcher = Zygote(tmp_path_factory.mktemp("crash"))
    try:
        yield launcher
    finally:
        launcher.close()


@dataclass
class Service:
    pid: int
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Lab:
    """What a scenario needs: the launcher, the store, an HTTP session, its account."""

    zygote: Zygote
    couch_url: str
    services: Services
    session: aiohttp.ClientSession
    account: dict[str, Any]
    workdir: Path
    rng: random.Random
    starts: int = 0

    def env(self, **extra: str) -> dict[str, str]:
        return {**_clean_env(), "KAZOO_VM_COUCH_URL": self.couch_url, "KAZOO_VM_DATA_DIR": str(self.workdir),
                "KAZOO_VM_COUCH_TIMEOUT": "10", **extra}

    async def start(self, **extra: str) -> Service:
        port = free_port()
        log = self.workdir / f"service-{port}.log"
        pid = await self.zygote.spawn(["serve", "--port", str(port)], self.env(**extra), log)
        self.starts += 1
        service = Service(pid, port, log)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            status = self.zygote.exit_status(pid)
            assert status is None, f"service exited ({status}) while starting: {_tail(log)}"
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with self.session.get(service.base + "/v2/schemas") as response:
                    if response.status == 200:
                        return service
            assert time.monotonic() < deadline, f"service not ready: {_tail(log)}"
            await asyncio.sleep(0.02)

    async def stop(self, service: Service) -> None:
        if self.zygote.exit_status(service.pid) is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(service.pid, signal.SIGTERM)
        await self.zygote.wait(service.pid)

    def kill(self, service: Service) -> None:
        """SIGKILL, from the test (the random-time kills)."""
        if self.zygote.exit_status(service.pid) is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(service.pid, signal.SIGKILL)

    async def client(self, service: Service) -> Client:
        async with self.session.put(service.base + "/v2/api_auth",
                                    json={"data": {"api_key": self.account["pvt_api_key"]}}) as response:
            assert response.status == 201, await response.text()
            token = str((await response.json())["auth_token"])
        return Client(self.session, service, self.account["_id"], token)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"


class Unanswered(Exception):
    """The request got no answer (the service died)."""


@dataclass
class Client:
    session: aiohttp.ClientSession
    service: Service
    account_id: str
    token: str

    async def call(self, method: str, path: str, *, data: Any = None, body: bytes | None = None,
                   headers: dict[str, str] | None = None, params: dict[str, str] | None = None) -> Reply:
        url = f"{self.service.base}/v2/accounts/{self.account_id}{path}"
        all_headers = {"Content-Type": "application/json", "X-Auth-Token": self.token, **(headers or {})}
        payload = body if body is not None else (None if data is None else json.dumps({"data": data}).encode())
        try:
            async with self.session.request(method, url, data=payload, headers=all_headers, params=params) as response:
                return Reply(response.status, response.headers, await response.read())
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
            raise Unanswered(repr(error)) from None

    async def box(self, **fields: Any) -> str:
        mailbox = str(10**9 + uuid.uuid4().int % 10**9)  # unique in the scenario's account
        reply = await self.call("PUT", "/vmboxes", data={"name": f"Box {mailbox}", "mailbox": mailbox, **fields})
        assert reply.status == 201, reply.body
        return str(reply.data["id"])

    async def message(self, box_id: str, call_id: str) -> str:
        """A message with its audio (multipart); its id."""
        body, content_type = multipart(call_id)
        reply = await self.call("PUT", f"/vmboxes/{box_id}/messages", body=body,
                                headers={"Content-Type": content_type})
        assert reply.status == 201, reply.body
        return str(reply.data["media_id"])

    async def rows(self, box_id: str) -> list[dict[str, Any]]:
        reply = await self.call("GET", f"/vmboxes/{box_id}/messages", params={"paginate": "false"})
        assert reply.status == 200, reply.body
        return list(reply.data)

    async def audio(self, box_id: str, message_id: str) -> bytes:
        reply = await self.call("GET", f"/vmboxes/{box_id}/messages/{message_id}/raw")
        assert reply.status == 200, reply.body
        return reply.body


@pytest.fixture
async def lab(zygote: Zygote, couch_url: str, services: Services, tmp_path: Path) -> AsyncIterator[Lab]:
    account = await make_account(services, name="Crash Account")
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session:
        yield Lab(zygote, couch_url, services, session, account, tmp_path, random.Random(SEED))


# -- messages and their audio -------------------------------------------------------


def audio_of(call_id: str) -> bytes:
    """Each message's own audio, so a mix-up or a truncation shows."""
    seed = hashlib.sha256(call_id.encode()).digest()
    return b"ID3" + seed * (16 + seed[0] % 48)


def multipart(call_id: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    metadata = json.dumps({"data": {"call_id": call_id, "caller_id_number": "6001"}}).encode()
    parts = [({"Content-Type": "application/json"}, metadata), ({"Content-Type": "audio/mpeg"}, audio_of(call_id))]
    return build_multipart(parts, boundary=boundary)


async def modb_messages(services: Services, account_id: str, box_ids: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """Every (non-deleted) message document of these boxes, read from the MODBs."""
    couch = services.store.couch
    now = gregorian_now()
    found = []
    for db in naming.modbs_between(account_id, now - 40 * DAY, now + DAY):
        try:
            _status, _headers, body = await couch.request("GET", f"/{quote_db(db)}/_all_docs",
                                                          params={"include_docs": True})
        except NotFound:
            continue
        for row in body["rows"]:
            doc = row.get("doc")
            if (isinstance(doc, dict) and doc.get("pvt_type") == "mailbox_message"
                    and doc.get("source_id") in box_ids and not doc.get("pvt_deleted")):
                found.append((db, doc))
    return found


async def stored_audio(services: Services, db: str, doc: dict[str, Any]) -> bytes | None:
    audio = await services.messages.audio(db, doc)
    return None if audio is None else audio.data


@dataclass
class Census:
    """Where each call id is: listing rows per box, MODB documents, audio checks."""

    listed: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    stored: dict[str, int] = field(default_factory=Counter)
    bad_audio: list[str] = field(default_factory=list)

    def boxes_of(self, call_id: str) -> list[str]:
        return [box for box, _id in self.listed.get(call_id, [])]


async def census(client: Client, services: Services, box_ids: list[str]) -> Census:
    result = Census()
    for box_id in box_ids:
        for row in await client.rows(box_id):
            call_id = str(row["call_id"])
            result.listed[call_id].append((box_id, str(row["media_id"])))
            if await client.audio(box_id, str(row["media_id"])) != audio_of(call_id):
                result.bad_audio.append(f"listed {call_id} in {box_id}")
    for _db, doc in await modb_messages(services, client.account_id, set(box_ids)):
        call_id = str((doc.get("metadata") or {}).get("call_id"))
        result.stored[call_id] += 1
        # The stored attachment is this message's audio (CouchDB's md5 digest of it).
        stubs = list((doc.get("_attachments") or {}).values())
        if [stub.get("digest") for stub in stubs] != [md5_digest(audio_of(call_id))]:
            result.bad_audio.append(f"stored {call_id} ({doc['_id']}): {stubs}")
    return result


def md5_digest(data: bytes) -> str:
    return "md5-" + base64.b64encode(hashlib.md5(data).digest()).decode()


# -- figures --------------------------------------------------------------------------


@dataclass
class Tally:
    scenario: str
    seed: int = SEED
    trials: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    sigkilled: int = 0
    mid_work: int = 0
    messages: int = 0
    lost: int = 0
    duplicated: int = 0
    half_done_after_restart: int = 0
    notes: Counter[str] = field(default_factory=Counter)
    service_starts: int = 0
    seconds: float = 0.0

    def report(self) -> dict[str, Any]:
        figures = {"scenario": self.scenario, "seed": self.seed, "trials": self.trials, "by_kind": dict(self.by_kind),
                   "sigkilled": self.sigkilled, "kills_mid_work": self.mid_work, "messages": self.messages,
                   "lost": self.lost, "duplicated": self.duplicated,
                   "half_done_after_restart": self.half_done_after_restart, "notes": dict(self.notes),
                   "service_starts": self.service_starts, "seconds": round(self.seconds, 1),
                   "store": "couchdb" if os.environ.get("KAZOO_VM_COUCH_URL") else "pouchdb-server"}
        print(f"\nRELIABILITY {json.dumps(figures)}")
        target = os.environ.get("KAZOO_VM_RELIABILITY_REPORT")
        if target:
            with open(target, "a") as out:
                out.write(json.dumps(figures) + "\n")
        return figures


async def run_and_kill(lab: Lab, service: Service, request: Any, *, kill_after: float | None) -> Any:
    """Run ``request``; with ``kill_after`` SIGKILL the service that many seconds after
    it was sent (else the fault switch must kill it). Returns the answer or Unanswered."""
    task = asyncio.ensure_future(request)
    if kill_after is not None:
        await asyncio.wait({task}, timeout=kill_after)
        lab.kill(service)
    outcome: Any
    try:
        outcome = await task
    except Unanswered as error:
        outcome = error
    status = await lab.zygote.wait(service.pid)
    assert killed_by_sigkill(status), f"service ended with status {status}, not SIGKILL: {_tail(service.log)}"
    return outcome


def pick(options: list[str], number: int) -> str:
    """Trial ``number``'s choice: every block of len(options) trials has each option
    once, in an order drawn from the seed (so even a few trials cover every kind)."""
    block = random.Random(f"{SEED}-{number // len(options)}-{len(options)}").sample(options, len(options))
    return block[number % len(options)]


class Window:
    """How long the operation of a scenario takes, so random kill times fall inside it."""

    def __init__(self, initial: float) -> None:
        self.longest = initial

    def seen(self, seconds: float) -> None:
        self.longest = max(self.longest * 0.9, seconds)

    def pick(self, rng: random.Random) -> float:
        return rng.uniform(0.0, self.longest * 1.1)


# -- move ---------------------------------------------------------------------------


async def move_trial(lab: Lab, tally: Tally, window: Window, number: int) -> None:
    rng = lab.rng
    count = rng.randint(2, 6)
    kind = pick(["point:transfer:before_copy", "point:transfer:after_copy", "random"], number)
    style = pick(["bulk", "singles"], number)
    tally.by_kind[f"{kind}/{style}"] += 1
    env = {}
    if kind.startswith("point:"):
        env = {"KAZOO_VM_FAULT_POINT": kind[6:], "KAZOO_VM_FAULT_SKIP": str(rng.randrange(count))}
    service = await lab.start(**env)
    client = await lab.client(service)
    source, target = await client.box(), await client.box()
    calls = [f"move-{number}-{index}-{uuid.uuid4().hex[:6]}" for index in range(count)]
    ids = {call_id: await client.message(source, call_id) for call_id in calls}
    answered: dict[str, Reply] = {}

    async def operate() -> None:
        started = time.monotonic()
        if style == "bulk":
            reply = await client.call("POST", f"/vmboxes/{source}/messages",
                                      data={"messages": list(ids.values()), "source_id": target})
            answered.update(dict.fromkeys(ids.values(), reply))
        else:
            for message_id in ids.values():
                answered[message_id] = await client.call("POST", f"/vmboxes/{source}/messages/{message_id}",
                                                         data={"source_id": target})
        window.seen(time.monotonic() - started)

    await run_and_kill(lab, service, operate(), kill_after=None if env else window.pick(rng))
    tally.sigkilled += 1

    restarted = await lab.start()
    client = await lab.client(restarted)
    before = await census(client, lab.services, [source, target])
    places = [before.boxes_of(call_id) for call_id in calls]
    if places not in ([[source]] * count, [[target]] * count):
        tally.mid_work += 1
    assert not before.bad_audio, before.bad_audio
    tally.half_done_after_restart += sum(1 for call_id in calls if len(before.listed.get(call_id, [])) != 1)
    for call_id in calls:
        assert before.listed.get(call_id), f"{call_id} lost by the crash"
        # the restart finished (or forgot) every half-done move before serving
        assert len(before.listed[call_id]) == 1 and before.stored[call_id] == 1, (call_id, before.listed[call_id])

    # The client resends what got no answer (a resent move finds the copy it made).
    unanswered = [message_id for message_id in ids.values() if message_id not in answered]
    if style == "bulk" and unanswered:
        reply = await client.call("POST", f"/vmboxes/{source}/messages",
                                  data={"messages": list(ids.values()), "source_id": target})
        assert reply.status == 200, reply.body
        assert set(reply.data.get("failed", {}).values()) <= {"not_found"}, reply.body
    elif unanswered:
        for message_id in unanswered:
            reply = await client.call("POST", f"/vmboxes/{source}/messages/{message_id}",
                                      data={"source_id": target})
            assert reply.status in (200, 404), reply.body
            if reply.status == 404:
                tally.notes["resent single move: already done (404)"] += 1

    after = await census(client, lab.services, [source, target])
    assert not after.bad_audio, after.bad_audio
    tally.messages += count
    tally.lost += sum(1 for call_id in calls if not after.listed.get(call_id))
    tally.duplicated += sum(max(0, len(after.listed.get(call_id, [])) - 1) for call_id in calls)
    assert {call_id: after.boxes_of(call_id) for call_id in calls} == {call_id: [target] for call_id in calls}
    assert all(after.stored[call_id] == 1 for call_id in calls), after.stored
    await lab.stop(restarted)


async def test_sigkill_during_moves(lab: Lab) -> None:
    tally = Tally("move")
    started = time.monotonic()
    window = Window(0.3)
    for number in range(TRIALS):
        tally.trials += 1
        await move_trial(lab, tally, window, number)
    tally.service_starts, tally.seconds = lab.starts, time.monotonic() - started
    figures = tally.report()
    assert figures["lost"] == 0 and figures["duplicated"] == 0


async def test_restart_alone_finishes_a_half_done_move(lab: Lab) -> None:
    service = await lab.start(KAZOO_VM_FAULT_POINT="transfer:after_copy")
    client = await lab.client(service)
    source, target = await client.box(), await client.box()
    message_id = await client.message(source, "half-done")
    await run_and_kill(lab, service, client.call("POST", f"/vmboxes/{source}/messages/{message_id}",
                                                 data={"source_id": target}), kill_after=None)
    restarted = await lab.start()
    client = await lab.client(restarted)
    try:
        places = (await census(client, lab.services, [source, target])).boxes_of("half-done")
    finally:
        await lab.stop(restarted)
    assert len(places) == 1, places


# -- copy -----------------------------------------------------------------------------


async def copy_trial(lab: Lab, tally: Tally, window: Window, number: int) -> None:
    rng = lab.rng
    count = rng.randint(2, 5)
    kind = pick(["point:transfer:before_copy", "point:transfer:after_copy", "random"], number)
    style = pick(["bulk", "singles"], number)
    tally.by_kind[f"{kind}/{style}"] += 1
    env = {}
    if kind.startswith("point:"):
        env = {"KAZOO_VM_FAULT_POINT": kind[6:], "KAZOO_VM_FAULT_SKIP": str(rng.randrange(2 * count))}
    service = await lab.start(**env)
    client = await lab.client(service)
    source, first, second = await client.box(), await client.box(), await client.box()
    destinations = [first, second]
    calls = [f"copy-{number}-{index}-{uuid.uuid4().hex[:6]}" for index in range(count)]
    ids = {call_id: await client.message(source, call_id) for call_id in calls}
    answered: set[str] = set()

    async def operate() -> None:
        started = time.monotonic()
        if style == "bulk":
            reply = await client.call("POST", f"/vmboxes/{source}/messages",
                                      data={"messages": list(ids.values()), "source_id": destinations})
            assert reply.status == 200, reply.body
            answered.update(ids.values())
        else:
            for message_id in ids.values():
                reply = await client.call("POST", f"/vmboxes/{source}/messages/{message_id}",
                                          data={"source_id": destinations})
                assert reply.status == 200, reply.body
                answered.add(message_id)
        window.seen(time.monotonic() - started)

    await run_and_kill(lab, service, operate(), kill_after=None if env else window.pick(rng))
    tally.sigkilled += 1

    restarted = await lab.start()
    client = await lab.client(restarted)
    before = await census(client, lab.services, [source, *destinations])
    assert not before.bad_audio, before.bad_audio
    copies = sum(1 for call_id in calls for box in destinations if box in before.boxes_of(call_id))
    if 0 < copies < 2 * count:
        tally.mid_work += 1
    for call_id in calls:
        boxes = Counter(before.boxes_of(call_id))
        assert boxes[source] == 1, f"source of {call_id}: {boxes}"
        assert all(boxes[box] <= 1 for box in destinations), boxes
        assert before.stored[call_id] == sum(boxes.values())
        # What a client that blindly resends the unanswered copy would duplicate.
        if ids[call_id] not in answered:
            tally.notes["copies a blind resend would duplicate"] += sum(boxes[box] for box in destinations)

    # The client completes what is missing (a copy is not idempotent: see the report).
    for call_id in calls:
        missing = [box for box in destinations if box not in before.boxes_of(call_id)]
        if missing:
            reply = await client.call("POST", f"/vmboxes/{source}/messages/{ids[call_id]}",
                                      data={"source_id": missing})
            assert reply.status == 200 and len(reply.data["succeeded"]) == len(missing), reply.body

    after = await census(client, lab.services, [source, *destinations])
    assert not after.bad_audio, after.bad_audio
    tally.messages += count
    for call_id in calls:
        boxes = Counter(after.boxes_of(call_id))
        tally.lost += sum(1 for box in (source, *destinations) if boxes[box] == 0)
        tally.duplicated += sum(max(0, boxes[box] - 1) for box in (source, *destinations))
        assert boxes == Counter({source: 1, first: 1, second: 1}), boxes
        assert after.stored[call_id] == 3
    await lab.stop(restarted)


async def test_sigkill_during_copies(lab: Lab) -> None:
    tally = Tally("copy")
    started = time.monotonic()
    window = Window(0.3)
    for number in range(TRIALS):
        tally.trials += 1
        await copy_trial(lab, tally, window, number)
    tally.service_starts, tally.seconds = lab.starts, time.monotonic() - started
    figures = tally.report()
    assert figures["lost"] == 0 and figures["duplicated"] == 0


async def test_resent_copy_with_its_request_id_after_a_crash_does_not_duplicate(lab: Lab) -> None:
    service = await lab.start(KAZOO_VM_FAULT_POINT="transfer:after_copy")
    client = await lab.client(service)
    source, target = await client.box(), await client.box()
    message_id = await client.message(source, "copy-resent")
    path = f"/vmboxes/{source}/messages/{message_id}"
    named = {"X-Request-ID": f"copy-{uuid.uuid4().hex}"}
    assert isinstance(await run_and_kill(lab, service, client.call("POST", path, data={"source_id": [target]},
                                                                   headers=named), kill_after=None), Unanswered)
    restarted = await lab.start()
    client = await lab.client(restarted)
    try:
        assert (await client.call("POST", path, data={"source_id": [target]}, headers=named)).status == 200
        assert len(await client.rows(target)) == 1
    finally:
        await lab.stop(restarted)


# -- legacy migration -----------------------------------------------------------------


async def legacy_box(services: Services, account_id: str, calls: list[str]) -> tuple[str, dict[str, str]]:
    """A box as Kazoo 3.x left it: a ``messages`` array, each recording in its own
    ``private_media`` document. Returns the box id and {call id: media id}."""
    db = naming.account_db(account_id)
    box_id, now = uuid.uuid4().hex, gregorian_now()
    media = {call_id: uuid.uuid4().hex for call_id in calls}
    for call_id, media_id in media.items():
        await services.store.couch.put_doc(db, {
            "_id": media_id, "pvt_type": "private_media", "source_id": box_id, "media_source": "recording",
            "_attachments": {f"{media_id}.mp3": {"content_type": "audio/mpeg",
                                                 "data": base64.b64encode(audio_of(call_id)).decode()}}})
    await services.store.couch.put_doc(db, {
        "_id": box_id, "name": f"Old box {box_id[:6]}", "mailbox": str(10**9 + uuid.uuid4().int % 10**9),
        "pvt_type": "vmbox",
        "pvt_vsn": "1", "pvt_account_id": account_id, "pvt_created": now - 400 * DAY,
        "pvt_modified": now - 400 * DAY,
        "messages": [{"media_id": media_id, "timestamp": now - (index + 1) * 3600, "folder": "new",
                      "from": "1001@old.realm", "to": "5000@old.realm", "caller_id_number": "1001",
                      "caller_id_name": "Old Caller", "call_id": call_id, "length": 2000}
                     for index, (call_id, media_id) in enumerate(media.items())]})
    return box_id, media


async def legacy_array(services: Services, account_id: str, box_id: str) -> list[str]:
    box = await services.store.couch.get_doc(naming.account_db(account_id), box_id)
    return [str(item.get("call_id")) for item in box.get("messages") or []]


async def legacy_trial(lab: Lab, tally: Tally, windows: dict[str, Window], number: int) -> None:
    rng = lab.rng
    count = rng.randint(2, 6)
    kind = pick(["point:migrate:after_copy", "random:api", "random:cli"], number)
    tally.by_kind[kind] += 1
    account_id = lab.account["_id"]
    calls = [f"legacy-{number}-{index}-{uuid.uuid4().hex[:6]}" for index in range(count)]
    box_id, media = await legacy_box(lab.services, account_id, calls)
    if kind == "random:cli":
        started = time.monotonic()
        pid = await lab.zygote.spawn(["migrate", "--account", account_id, "--box", box_id], lab.env(),
                                     lab.workdir / f"migrate-{number}.log")
        delay = windows[kind].pick(rng)
        deadline = started + delay
        while lab.zygote.exit_status(pid) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        if lab.zygote.exit_status(pid) is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        status = await lab.zygote.wait(pid)
        if killed_by_sigkill(status):
            tally.sigkilled += 1
        else:
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
            windows[kind].seen(time.monotonic() - started)
            tally.notes["migrate command finished before the kill"] += 1
    else:
        env = {}
        if kind.startswith("point:"):
            env = {"KAZOO_VM_FAULT_POINT": "migrate:after_copy", "KAZOO_VM_FAULT_SKIP": str(rng.randrange(count))}
        service = await lab.start(**env)
        client = await lab.client(service)

        async def operate() -> None:
            started = time.monotonic()
            reply = await client.call("POST", f"/vmboxes/{box_id}/messages",
                                      data={"messages": list(media.values()), "folder": "saved"})
            assert reply.status == 200, reply.body
            windows[kind].seen(time.monotonic() - started)

        await run_and_kill(lab, service, operate(), kill_after=None if env else windows[kind].pick(rng))
        tally.sigkilled += 1

    restarted = await lab.start()
    client = await lab.client(restarted)
    before = await census(client, lab.services, [box_id])
    assert not before.bad_audio, before.bad_audio
    remaining = await legacy_array(lab.services, account_id, box_id)
    migrated = [call_id for call_id in calls if before.stored[call_id]]
    if migrated and len(migrated) < count or set(migrated) & set(remaining):
        tally.mid_work += 1
    tally.half_done_after_restart += len(set(migrated) & set(remaining))
    for call_id in calls:
        assert len(before.listed.get(call_id, [])) == 1, f"{call_id} listed {before.listed.get(call_id)}"
        assert before.stored[call_id] <= 1
        assert before.stored[call_id] == 1 or call_id in remaining, f"{call_id} neither migrated nor legacy"
    await lab.stop(restarted)

    # The resumable migration finishes the job.
    pid = await lab.zygote.spawn(["migrate", "--account", account_id, "--box", box_id], lab.env(),
                                 lab.workdir / f"migrate-{number}-rerun.log")
    status = await lab.zygote.wait(pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, _tail(lab.workdir / f"migrate-{number}-rerun.log")
    restarted = await lab.start()
    client = await lab.client(restarted)
    after = await census(client, lab.services, [box_id])
    assert not after.bad_audio, after.bad_audio
    assert await legacy_array(lab.services, account_id, box_id) == []
    tally.messages += count
    tally.lost += sum(1 for call_id in calls if not after.listed.get(call_id))
    tally.duplicated += sum(max(0, len(after.listed.get(call_id, [])) - 1) + max(0, after.stored[call_id] - 1)
                            for call_id in calls)
    for call_id in calls:
        assert [message_id.partition("-")[2] for _box, message_id in after.listed[call_id]] == [media[call_id]]
        assert after.stored[call_id] == 1
    await lab.stop(restarted)


async def test_sigkill_during_legacy_migration(lab: Lab) -> None:
    tally = Tally("legacy_migration")
    started = time.monotonic()
    windows = {"random:api": Window(0.3), "random:cli": Window(1.0)}
    for number in range(TRIALS):
        tally.trials += 1
        await legacy_trial(lab, tally, windows, number)
    tally.service_starts, tally.seconds = lab.starts, time.monotonic() - started
    figures = tally.report()
    assert figures["lost"] == 0 and figures["duplicated"] == 0


# -- voicemail-to-email, then delete ---------------------------------------------------


class KillingRelay(LoopbackSmtp):
    """An SMTP relay that records each email (by caller id number) and kills the
    service at a chosen moment of the chosen email."""

    def __init__(self) -> None:
        super().__init__(self)
        self.received: list[str] = []
        self.expected: set[str] = set()  # this trial's callers; other emails never trigger a kill
        self.foreign = 0
        self.victim: int | None = None
        self.target = 0
        self.moment = ""
        self.delay = 0.0
        self.fired = False
        self._pending_quit = False

    def arm(self, victim: int, target: int, moment: str, delay: float) -> None:
        self.victim, self.target, self.moment, self.delay, self.fired = victim, target, moment, delay, False
        self._pending_quit = False

    def disarm(self) -> None:
        self.victim = None

    def _kill(self) -> None:
        if self.victim is not None and not self.fired:
            self.fired = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.victim, signal.SIGKILL)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        subject = str(email.message_from_bytes(envelope.content, policy=email.policy.default)["Subject"])
        caller = subject.rsplit("(", 1)[-1].rstrip(")").strip()
        if caller not in self.expected:  # another test's pending delivery on a shared store
            self.foreign += 1
            return "250 OK"
        self.received.append(caller)
        if self.victim is not None and len(self.received) == self.target and not self.fired:
            if self.moment == "on_data":  # the relay has it, the sender never hears 250
                self._kill()
            elif self.moment == "after_ack":
                asyncio.get_running_loop().call_later(self.delay, self._kill)
            else:
                self._pending_quit = True
        return "250 OK"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        if self._pending_quit:  # the sender has had the 250: it is about to delete
            self._pending_quit = False
            self._kill()
        return "221 Bye"



@pytest.fixture
def killing_relay() -> Iterator[KillingRelay]:
    with smtp_tests_lock():
        relay = KillingRelay()
        relay.start()
        yield relay
        relay.stop()


async def pending_messages(lab: Lab, config: Config, box: dict[str, Any], numbers: list[str]) -> dict[str, str]:
    """Messages with audio left in the box, each with a delivery due (as the API
    writes them); {caller id number: message id}."""
    ids = {}
    account_id = lab.account["_id"]
    for number in numbers:
        now = gregorian_now()
        doc = box_message.new_message(box=box, request={"caller_id_number": number, "call_id": f"call-{number}"},
                                      realm=str(lab.account.get("realm")), timezone_name="UTC",
                                      privacy_number="anonymous", now=now)
        modb = naming.modb_of_message(account_id, doc["_id"]) or ""
        stamp(doc, account_id=account_id, account_db=naming.encoded_db(modb), pvt_type="mailbox_message",
              author=Author(request_id="test-crash"), now=now)
        assert await schedule_if_wanted(config, lab.services, account_id, box, doc)
        await lab.services.messages.create(account_id, doc, Audio("voice.mp3", "audio/mpeg", audio_of(number)))
        ids[number] = doc["_id"]
    return ids


async def message_or_none(services: Services, account_id: str, message_id: str) -> tuple[str, dict[str, Any]] | None:
    try:
        return await services.messages.fetch(account_id, message_id)
    except NotFound:
        return None


async def pointer_exists(services: Services, account_id: str, message_id: str) -> bool:
    try:
        await services.store.couch.get_doc(NOTIFICATIONS_DB, pointer_id(account_id, message_id))
    except NotFound:
        return False
    return True


async def notify_trial(lab: Lab, tally: Tally, relay: KillingRelay, number: int) -> None:
    rng = lab.rng
    account_id = lab.account["_id"]
    smtp = {"KAZOO_VM_SMTP_URL": f"smtp://127.0.0.1:{relay.port}", "KAZOO_VM_NOTIFY_POLL": "0.05",
            "KAZOO_VM_NOTIFY_RETRY": "0.1"}
    config = replace(Config(), smtp_url=smtp["KAZOO_VM_SMTP_URL"])
    count = rng.randint(1, 4)
    moment = pick(["on_data", "at_quit", "after_ack"], number)
    delay = rng.uniform(0.0, 0.03)
    target = rng.randint(1, count)
    tally.by_kind[moment] += 1
    relay.received.clear()
    relay.disarm()
    numbers = [f"7{number:04d}{index}{rng.randrange(1000):03d}" for index in range(count)]
    relay.expected = set(numbers)
    service = await lab.start(**smtp)
    relay.arm(service.pid, target, moment, delay)
    client = await lab.client(service)
    box_id = await client.box(notify_email_addresses=["team@example.com"], delete_after_notify=True)
    box = await lab.services.vmboxes.fetch(account_id, box_id)
    ids = await pending_messages(lab, config, box, numbers)
    status = await lab.zygote.wait(service.pid)
    assert killed_by_sigkill(status), f"service ended with {status}: {_tail(service.log)}"
    relay.disarm()
    tally.sigkilled += 1

    # Right after the kill: every message is either still there (with its audio and its
    # delivery pointer, so it will be sent) or gone after the relay accepted its email.
    emailed = Counter(relay.received)
    gone = accepted_not_deleted = 0
    for caller, message_id in ids.items():
        located = await message_or_none(lab.services, account_id, message_id)
        if located is None:
            gone += 1
            if emailed[caller] == 0:
                tally.lost += 1
            continue
        db, doc = located
        assert await stored_audio(lab.services, db, doc) == audio_of(caller)
        if not await pointer_exists(lab.services, account_id, message_id):
            tally.lost += 1
            tally.notes["message kept without a delivery pointer"] += 1
        if emailed[caller] and doc["metadata"]["notify"]["status"] in ("pending", "sending"):
            accepted_not_deleted += 1  # the relay has it, the message is kept: it will be sent again
        if doc.get("pvt_notify_claim"):
            # The killed instance's claim would hold the message for notify_lease (120 s):
            # let it run out now instead of waiting.
            doc["pvt_notify_claim"]["until"] = 0
            await lab.services.messages.save(db, doc)
    tally.half_done_after_restart += accepted_not_deleted
    if 0 < gone < count or accepted_not_deleted:
        tally.mid_work += 1

    restarted = await lab.start(**smtp)
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        remaining = [m for m in ids.values() if await message_or_none(lab.services, account_id, m) is not None]
        if not remaining:
            break
        assert time.monotonic() < deadline, f"not delivered after the restart: {remaining} {_tail(restarted.log)}"
        await asyncio.sleep(0.05)
    await lab.stop(restarted)
    emailed = Counter(relay.received)
    tally.messages += count
    tally.lost += sum(1 for caller in ids if emailed[caller] == 0)
    tally.notes["emails sent twice (at-least-once delivery)"] += sum(max(0, n - 1) for n in emailed.values())
    for caller, message_id in ids.items():
        assert emailed[caller] >= 1, f"{message_id} deleted without an email"


async def test_sigkill_between_email_and_delete(lab: Lab, killing_relay: KillingRelay) -> None:
    tally = Tally("notify_then_delete")
    started = time.monotonic()
    for number in range(TRIALS):
        tally.trials += 1
        await notify_trial(lab, tally, killing_relay, number)
    tally.service_starts, tally.seconds = lab.starts, time.monotonic() - started
    figures = tally.report()
    assert figures["lost"] == 0


# -- the real command line -------------------------------------------------------------


async def test_real_cli_serve_killed_at_fault_point_then_restarted(lab: Lab) -> None:
    """``python -m kazoo_vm serve`` as an operator runs it, with the fault switch armed:
    the process dies by SIGKILL in the middle of a move; the restarted service finishes
    the move before serving: the message is in the destination box, once, with its audio."""
    port = free_port()

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kazoo_vm", "serve", "--port", str(port), cwd=PROJECT_ROOT,
        env=lab.env(KAZOO_VM_FAULT_POINT="transfer:after_copy", KAZOO_VM_FAULT_ACTION="kill"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.returncode is None, "serve exited while starting"
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with lab.session.get(f"http://127.0.0.1:{port}/v2/schemas") as response:
                    if response.status == 200:
                        break
            assert time.monotonic() < deadline, "serve did not start"
            await asyncio.sleep(0.05)
        service = Service(process.pid or 0, port, lab.workdir / "none.log")
        client = await lab.client(service)
        source, target = await client.box(), await client.box()
        message_id = await client.message(source, "real-cli")
        with pytest.raises(Unanswered):
            await client.call("POST", f"/vmboxes/{source}/messages/{message_id}", data={"source_id": target})
        assert await asyncio.wait_for(process.wait(), EXIT_TIMEOUT) == -signal.SIGKILL
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    restarted = await lab.start()
    client = await lab.client(restarted)
    after = await census(client, lab.services, [source, target])
    assert after.boxes_of("real-cli") == [target] and after.stored["real-cli"] == 1 and not after.bad_audio
    reply = await client.call("POST", f"/vmboxes/{source}/messages/{message_id}", data={"source_id": target})
    assert reply.status == 404, reply.body  # the restart finished the move: nothing left to move
    await lab.stop(restarted)
