"""Model-based test: Hypothesis drives boxes and messages over HTTP and compares every
answer, and every listing, with an in-memory model of the voicemail API.

The app runs on a real port of 127.0.0.1 (its own event loop in a thread, since a
``RuleBasedStateMachine`` is synchronous) over the test store; every example (one
sequence of steps) gets a fresh account, logged in with ``PUT /v2/api_auth``, and its
databases are dropped afterwards.

What the model holds: boxes (public fields as the API stores them: schema defaults,
POST replaces, PATCH merges and ``null`` removes; soft or hard deleted) and messages
(box, full metadata, soft-deleted flag, audio bytes, history of boxes; moved-away ids).
Steps: create / replace / patch / delete a box; create a message (JSON, or multipart
with audio, now, back-dated over several months or in the future), upload audio,
change its folder, move it, copy it, delete it, bulk folder change / move / copy /
delete (listed ids, a folder, everything); reads: a box, a message's metadata and
audio, the box listing, a box's messages and the account's messages, unpaginated and
walked page by page. After every step that may change something, the box listing
(names, counts, folders) and the account-wide message listing are compared with the
model too. Any difference is a divergence and fails the test (Hypothesis then shrinks
the sequence).

Bounded for CI (``MODEL_EXAMPLES`` = 20 sequences of at most ``MODEL_STEPS`` = 10
steps, about 40 s on pouchdb-server); a longer run:
``KAZOO_VM_MODEL_EXAMPLES=1000 pytest tests/test_model.py`` (``tox -e model``), and
``KAZOO_VM_MODEL_STEPS`` for longer sequences.
The figures of the run (sequences, steps, requests, comparisons, divergences) are
printed and written to ``KAZOO_VM_MODEL_REPORT`` (default
``/tmp/kazoo_vm_model_report.json``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from conftest import Reply, build_multipart, make_account
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from kazoo_vm.app import create_app
from kazoo_vm.config import Config
from kazoo_vm.kazoo import naming
from kazoo_vm.services import Services

MODEL_EXAMPLES = 20
MODEL_STEPS = 10
EXAMPLES = int(os.environ.get("KAZOO_VM_MODEL_EXAMPLES") or MODEL_EXAMPLES)
STEPS = int(os.environ.get("KAZOO_VM_MODEL_STEPS") or MODEL_STEPS)
REPORT = os.environ.get("KAZOO_VM_MODEL_REPORT") or "/tmp/kazoo_vm_model_report.json"

GREGORIAN_UNIX_OFFSET = 62167219200
DAY = 86400
RETENTION_SECONDS = 93 * DAY + 3600
MESSAGE_ID = re.compile(r"^\d{6}-[0-9a-f]{32}$")
SUMMARY_KEYS = ("timestamp", "from", "to", "caller_id_number", "caller_id_name", "call_id", "folder", "length",
                "media_id")
NO_AUDIO = "voicemail message does not have any audio file"
SCHEMA_DEFAULTS: dict[str, Any] = {
    "announcement_only": False, "check_if_owner": True, "delete_after_notify": False,
    "include_message_on_notify": True, "include_transcription_on_notify": True, "is_setup": False,
    "is_voicemail_ff_rw_enabled": False, "media": {}, "media_extension": "mp3", "not_configurable": False,
    "notify_email_addresses": [], "oldest_message_first": False, "require_pin": False,
    "save_after_notify": False, "seek_duration_ms": 10000, "skip_envelope": False, "skip_greeting": False,
    "skip_instructions": False, "transcribe": False,
}
# Lower-case ASCII only: ICU (CouchDB) and code-unit (pouchdb) collation agree on them.
NAMES = ("alpha", "beta", "gamma", "delta")
# "3001" and "03001" are the same mailbox number (Kazoo's integer cast).
MAILBOXES = ("3000", "3001", "03001", "3002", "3003", "3004")
CHOSEN_IDS = ("boxa", "boxb")
FOLDERS = ("new", "saved", "deleted")
# Offsets of a message timestamp from the start of the sequence: now, same second
# (ties), back-dated across months (several MODBs), and in the future (not listed yet).
OFFSETS = (0, 0, -1, -3600, -40 * DAY, -70 * DAY, 5 * DAY)
MAX_BOXES = 5
MAX_MESSAGES = 14
T = TypeVar("T")

STATS: Counter[str] = Counter()


def gregorian_now() -> int:
    return int(time.time()) + GREGORIAN_UNIX_OFFSET


def yyyymm(gregorian: int) -> str:
    moment = datetime.fromtimestamp(gregorian - GREGORIAN_UNIX_OFFSET, tz=UTC)
    return f"{moment.year:04d}{moment.month:02d}"


def mailbox_number(mailbox: str) -> int:
    return int(mailbox)


def with_realm(value: str, realm: str) -> str:
    return value if "@" in value else f"{value}@{realm}"


def summary(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: metadata[key] for key in SUMMARY_KEYS if key in metadata}


def multipart(metadata: dict[str, Any], audio: bytes) -> tuple[bytes, str]:
    boundary = "kazoo-vm-model-" + uuid.uuid4().hex
    parts = [({"Content-Disposition": 'form-data; name="content"; filename="message.json"',
               "Content-Type": "application/json"}, json.dumps({"data": metadata}).encode()),
             ({"Content-Disposition": 'form-data; name="content"; filename="voice.mp3"',
               "Content-Type": "audio/mpeg"}, audio)]
    return build_multipart(parts, boundary=boundary)


# -- the running app --------------------------------------------------------------------


@dataclass
class Live:
    """The app on a real port, served by its own event loop in a thread."""

    loop: asyncio.AbstractEventLoop
    base_url: str
    services: Services
    http: aiohttp.ClientSession  # lives on ``loop``

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=120)

    def request(self, method: str, path: str, *, body: bytes | None, headers: dict[str, str],
                params: dict[str, str] | None) -> Reply:
        """One HTTP request to the app (sent by a client on the app's loop)."""
        async def send() -> Reply:
            async with self.http.request(method, self.base_url + path, data=body, headers=headers,
                                         params=params) as response:
                return Reply(response.status, response.headers.copy(), await response.read())

        return self.run(send())

    def new_account(self) -> tuple[str, str, str]:
        """(account id, token, realm) of a fresh account."""
        account = self.run(make_account(self.services, name="Model Account"))
        login = self.request("PUT", "/v2/api_auth", body=json.dumps({"data": {"api_key": account["pvt_api_key"]}})
                             .encode(), headers={"Content-Type": "application/json"}, params=None)
        assert login.status == 201, login.body
        return account["_id"], login.json["auth_token"], account["realm"]

    def drop(self, account_id: str, months: set[str]) -> None:
        """The account's databases (account DB and the MODBs of ``months``)."""
        base = naming.account_db(account_id)
        for db in [base] + [f"{base}-{month}" for month in sorted(months)]:
            self.run(self.services.store.couch.delete_db(db))

    def stored(self, account_id: str, message_id: str) -> dict[str, Any]:
        db = naming.modb_of_message(account_id, message_id)
        assert db is not None
        return self.run(self.services.store.couch.get_doc(db, message_id))


@pytest.fixture(scope="module")
def live(couch_url: str) -> Iterator[Live]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="model-app", daemon=True)
    thread.start()
    config = replace(Config(), couch_url=couch_url, jwt_secret=None)
    runner = web.AppRunner(create_app(config, couch_url), access_log=None)

    async def start() -> tuple[int, Services, aiohttp.ClientSession]:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return (runner.addresses[0][1], Services.connect(couch_url, timeout=config.couch_timeout),
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)))

    port, services, http = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=120)
    state = Live(loop, f"http://127.0.0.1:{port}", services, http)
    try:
        yield state
    finally:
        state.run(http.close())
        state.run(services.close())
        state.run(runner.cleanup())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


# -- the model ----------------------------------------------------------------------------


@dataclass
class Box:
    id: str
    fields: dict[str, Any]
    deleted: bool = False  # soft-deleted (the document stays)


@dataclass
class Message:
    id: str
    box: str
    metadata: dict[str, Any]
    audio: bytes | None
    deleted: bool = False  # pvt_deleted
    history: list[str] = field(default_factory=list)

    @property
    def timestamp(self) -> int:
        return int(self.metadata["timestamp"])

    @property
    def folder(self) -> str:
        return str(self.metadata["folder"])


class Divergence(AssertionError):
    pass


def expect(condition: bool, what: str, observed: Any = None, expected: Any = None) -> None:
    STATS["comparisons"] += 1
    if not condition:
        raise Divergence(f"{what}\n  observed: {observed!r}\n  expected: {expected!r}")


def expect_equal(observed: Any, expected: Any, what: str) -> None:
    expect(observed == expected, what, observed, expected)


class VoicemailMachine(RuleBasedStateMachine):
    live: Live

    def __init__(self) -> None:
        super().__init__()
        self.account_id, self.token, self.realm = self.live.new_account()
        self.started = gregorian_now()
        self.boxes: dict[str, Box] = {}
        self.hard_deleted: set[str] = set()  # box ids whose document is gone
        self.messages: dict[str, Message] = {}
        # Ids of moved messages. Every collection the steps draw from keeps insertion
        # order (never sorted by the random ids), so that Hypothesis can replay a sequence.
        self.gone: dict[str, None] = {}
        self.months: set[str] = {yyyymm(self.started)}
        self.dirty = False  # the last step may have changed something
        self.messages_dirty = False  # ... messages in particular
        self.steps = 0

    def teardown(self) -> None:
        if self.steps:
            STATS["sequences"] += 1
        with contextlib.suppress(Exception):
            self.live.drop(self.account_id, self.months | {yyyymm(gregorian_now())})

    # -- HTTP ---------------------------------------------------------------------------

    def call(self, method: str, path: str, *, data: Any = None, body: bytes | None = None,
             headers: dict[str, str] | None = None, params: dict[str, str] | None = None) -> Reply:
        url = path if path.startswith("/v2") else f"/v2/accounts/{self.account_id}{path}"
        all_headers = {"X-Auth-Token": self.token, "Content-Type": "application/json", **(headers or {})}
        payload = body if body is not None else (None if data is None else json.dumps({"data": data}).encode())
        reply = self.live.request(method, url, body=payload, headers=all_headers, params=params)
        STATS["requests"] += 1
        expect(reply.status < 500, f"{method} {path}: no 5xx", (reply.status, reply.body[:500]), "< 500")
        return reply

    def expect_status(self, reply: Reply, status: int, what: str) -> None:
        expect(reply.status == status, f"{what}: status", (reply.status, reply.body[:800]), status)

    def expect_error(self, reply: Reply, status: int, message: str, what: str,
                     cause: str | None = None) -> dict[str, Any]:
        self.expect_status(reply, status, what)
        body = reply.json
        expect_equal((body.get("status"), body.get("error"), body.get("message")), ("error", str(status), message),
                     f"{what}: error envelope")
        if cause is not None:
            expect_equal(body["data"].get("cause"), cause, f"{what}: error cause")
        return dict(body["data"])

    # -- model views ----------------------------------------------------------------------

    def live_boxes(self) -> list[Box]:
        return [box for box in self.boxes.values() if not box.deleted]

    def visible(self, message: Message, now: int) -> bool:
        return not message.deleted and now - RETENTION_SECONDS <= message.timestamp <= now

    def box_rows(self, now: int) -> list[dict[str, Any]]:
        """The box listing as the model has it, ascending by (name, id)."""
        rows = []
        for box in self.live_boxes():
            row: dict[str, Any] = {"id": box.id, "name": box.fields["name"], "mailbox": box.fields["mailbox"],
                                   "flags": box.fields.get("flags", [])}
            if "owner_id" in box.fields:
                row["owner_id"] = box.fields["owner_id"]
            listed = [message for message in self.messages.values()
                      if message.box == box.id and self.visible(message, now)]
            counts = Counter(message.folder for message in listed)
            row["messages"] = counts["new"] + counts["saved"]
            if listed:
                row["folders"] = {"new": counts["new"], "saved": counts["saved"]}
            rows.append(row)
        return sorted(rows, key=lambda row: (row["name"], row["id"]))

    def message_rows(self, box_id: str | None, now: int) -> list[Message]:
        """Visible messages of a box (or of the account), newest first as the views
        order them: (timestamp[, box], id) descending."""
        chosen = [message for message in self.messages.values()
                  if self.visible(message, now) and (box_id is None or message.box == box_id)]
        if box_id is None:
            return sorted(chosen, key=lambda message: (message.timestamp, message.box, message.id), reverse=True)
        return sorted(chosen, key=lambda message: (message.timestamp, message.id), reverse=True)

    def mailbox_taken(self, mailbox: str, by_other_than: str | None) -> bool:
        number = mailbox_number(mailbox)
        return any(mailbox_number(box.fields["mailbox"]) == number and box.id != by_other_than
                   for box in self.live_boxes())

    def box_choice(self, data: st.DataObject) -> str:
        """A box id: mostly a live box, sometimes a deleted or an unknown one."""
        live = [box.id for box in self.live_boxes()]
        others = [box_id for box_id in self.boxes if box_id not in live] + ["0" * 32]
        if live and data.draw(st.integers(0, 9), label="live box") > 0:
            return data.draw(st.sampled_from(live), label="box")
        return data.draw(st.sampled_from(others), label="missing box")

    def message_choice(self, data: st.DataObject) -> str:
        """A message id: mostly a known one, sometimes moved away or never existing."""
        known = list(self.messages)
        if known and data.draw(st.integers(0, 9), label="known message") > 0:
            return data.draw(st.sampled_from(known), label="message")
        gone = list(self.gone) + [f"{yyyymm(self.started)}-{'0' * 32}"]
        return data.draw(st.sampled_from(gone), label="unknown message")

    def url_box_for(self, data: st.DataObject, message_id: str) -> str:
        """Mostly the message's own box, sometimes another one (a 404)."""
        message = self.messages.get(message_id)
        if message is not None and data.draw(st.integers(0, 7), label="own box") > 0:
            return message.box
        return self.box_choice(data)

    def owns(self, box_id: str, message_id: str) -> Message | None:
        """The box's message, unless it was deleted: a deleted message is gone for every
        request about it."""
        message = self.messages.get(message_id)
        return message if message is not None and message.box == box_id and not message.deleted else None

    def step(self, name: str, *, mutates: bool = True, messages: bool = True) -> None:
        """Count a step; ``mutates``: it may change something (the listings are compared
        after it); ``messages``: it may change messages (the account listing too)."""
        STATS["steps"] += 1
        STATS[f"step:{name}"] += 1
        self.steps += 1
        self.dirty = mutates
        self.messages_dirty = mutates and messages

    # -- box fields -------------------------------------------------------------------------

    @staticmethod
    def box_fields(data: st.DataObject, *, with_required: bool = True) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if with_required or data.draw(st.booleans(), label="name"):
            fields["name"] = data.draw(st.sampled_from(NAMES), label="name value")
        if with_required or data.draw(st.booleans(), label="mailbox"):
            fields["mailbox"] = data.draw(st.sampled_from(MAILBOXES), label="mailbox value")
        extras = data.draw(st.fixed_dictionaries({}, optional={
            "pin": st.sampled_from(["1234", "0000", "123456789012345"]),
            "require_pin": st.booleans(),
            "timezone": st.sampled_from(["Europe/Paris", "America/New_York"]),
            "owner_id": st.sampled_from(["a" * 32, "b" * 32]),
            "flags": st.lists(st.sampled_from(["vip", "night"]), max_size=2),
            "seek_duration_ms": st.integers(0, 20000),
            "custom_key": st.one_of(st.text("xyz", max_size=3), st.integers(-5, 5)),
            "skip_greeting": st.booleans(),
        }), label="extra fields")
        fields.update(extras)
        return fields

    def expected_box_errors(self, fields: dict[str, Any], box_id: str | None) -> set[str]:
        errors = {key for key in ("name", "mailbox") if key not in fields}
        if "mailbox" in fields and self.mailbox_taken(fields["mailbox"], box_id):
            errors.add("mailbox")
        return errors

    def check_validation_error(self, reply: Reply, errors: set[str], fields: dict[str, Any], what: str) -> None:
        data = self.expect_error(reply, 400, "validation error", what)
        expect_equal(set(data), errors, f"{what}: fields in error")
        if "mailbox" in errors and "mailbox" in fields:
            expect("unique" in data["mailbox"], f"{what}: mailbox unique error", data, "mailbox.unique")

    def check_box_reply(self, reply: Reply, box: Box, status: int, what: str) -> None:
        self.expect_status(reply, status, what)
        expect_equal(reply.data, {**box.fields, "id": box.id}, f"{what}: box")

    # -- box rules --------------------------------------------------------------------------

    @initialize(data=st.data())
    def seed(self, data: st.DataObject) -> None:
        """Every sequence starts with two boxes and a few messages (through the API,
        checked like any step), so that message steps have something to act on."""
        self.step("seed")
        for _ in range(2):
            self.put_box(data, valid=True)
        for _ in range(data.draw(st.integers(1, 4), label="seed messages")):
            self.put_message(data)

    @precondition(lambda self: len(self.live_boxes()) < MAX_BOXES)
    @rule(data=st.data())
    def create_box(self, data: st.DataObject) -> None:
        self.step("create_box", messages=False)
        self.put_box(data, valid=data.draw(st.integers(0, 9), label="valid") > 0)

    def put_box(self, data: st.DataObject, *, valid: bool) -> None:
        fields = self.box_fields(data, with_required=valid)
        chosen = data.draw(st.sampled_from(CHOSEN_IDS), label="chosen id") if data.draw(
            st.integers(0, 5), label="choose id") == 0 else None
        body = {**fields, **({"id": chosen} if chosen else {})}
        reply = self.call("PUT", "/vmboxes", data=body)
        errors = self.expected_box_errors(fields, None)
        if errors:
            self.check_validation_error(reply, errors, fields, "PUT /vmboxes (invalid)")
            return
        if chosen is not None and chosen in self.boxes and chosen not in self.hard_deleted:
            self.expect_error(reply, 409, "datastore_conflict", "PUT /vmboxes with a taken id")
            return
        self.expect_status(reply, 201, "PUT /vmboxes")
        box_id = reply.data["id"]
        expect(chosen is None or box_id == chosen, "PUT /vmboxes: chosen id", box_id, chosen)
        expect(box_id not in self.boxes or box_id in self.hard_deleted, "PUT /vmboxes: new id", box_id)
        box = Box(box_id, {**SCHEMA_DEFAULTS, **fields})
        self.boxes[box_id] = box
        self.hard_deleted.discard(box_id)
        self.check_box_reply(reply, box, 201, "PUT /vmboxes")
        expect(reply.headers.get("Location", "").endswith(f"/vmboxes/{box_id}"), "PUT /vmboxes: Location",
               reply.headers.get("Location"))

    @precondition(lambda self: bool(self.boxes))
    @rule(data=st.data())
    def replace_box(self, data: st.DataObject) -> None:
        self.step("replace_box", messages=False)
        box_id = self.box_choice(data)
        fields = self.box_fields(data, with_required=data.draw(st.integers(0, 9), label="valid") > 0)
        reply = self.call("POST", f"/vmboxes/{box_id}", data=fields)
        errors = self.expected_box_errors(fields, box_id)
        if errors:  # validated before the box is loaded
            self.check_validation_error(reply, errors, fields, "POST box (invalid)")
            return
        box = self.boxes.get(box_id)
        if box is None or box.deleted:
            self.expect_error(reply, 404, "bad_identifier", "POST missing box", cause=box_id)
            return
        box.fields = {**SCHEMA_DEFAULTS, **fields}
        self.check_box_reply(reply, box, 200, "POST box")

    @precondition(lambda self: bool(self.boxes))
    @rule(data=st.data())
    def patch_box(self, data: st.DataObject) -> None:
        self.step("patch_box", messages=False)
        box_id = self.box_choice(data)
        changes = self.box_fields(data, with_required=False)
        removable = ["pin", "require_pin", "owner_id", "flags", "custom_key", "timezone", "name", "mailbox"]
        for key in data.draw(st.lists(st.sampled_from(removable), max_size=2, unique=True), label="nulls"):
            if key in ("name", "mailbox") and data.draw(st.integers(0, 4), label="null required") > 0:
                continue
            changes[key] = None
        reply = self.call("PATCH", f"/vmboxes/{box_id}", data=changes)
        box = self.boxes.get(box_id)
        if box is None or box.deleted:  # loaded before anything else
            self.expect_error(reply, 404, "bad_identifier", "PATCH missing box", cause=box_id)
            return
        merged = {key: value for key, value in {**box.fields, **changes}.items() if value is not None}
        errors = self.expected_box_errors(merged, box_id)
        if errors:
            self.check_validation_error(reply, errors, merged, "PATCH box (invalid)")
            return
        box.fields = {**SCHEMA_DEFAULTS, **merged}
        self.check_box_reply(reply, box, 200, "PATCH box")

    @precondition(lambda self: bool(self.boxes))
    @rule(data=st.data(), hard=st.integers(0, 5))
    def delete_box(self, data: st.DataObject, hard: int) -> None:
        self.step("delete_box")
        box_id = self.box_choice(data)
        hard_delete = hard == 0
        params = {"should_soft_delete": "false"} if hard_delete else None
        reply = self.call("DELETE", f"/vmboxes/{box_id}", params=params)
        now = gregorian_now()
        box = self.boxes.get(box_id)
        if box is None or box.deleted:
            self.expect_error(reply, 404, "bad_identifier", "DELETE missing box", cause=box_id)
            return
        self.expect_status(reply, 200, "DELETE box")
        expect_equal(reply.data, {**box.fields, "id": box_id, "_read_only": {"deleted": True}}, "DELETE box: answer")
        box.deleted = True
        if hard_delete:
            self.hard_deleted.add(box_id)
        for message in self.messages.values():
            if message.box == box_id and self.visible(message, now):
                message.deleted = True
                message.metadata["folder"] = "deleted"

    @precondition(lambda self: bool(self.boxes))
    @rule(data=st.data())
    def get_box(self, data: st.DataObject) -> None:
        self.step("get_box", mutates=False)
        box_id = self.box_choice(data)
        reply = self.call("GET", f"/vmboxes/{box_id}")
        box = self.boxes.get(box_id)
        if box is None or box.deleted:
            self.expect_error(reply, 404, "bad_identifier", "GET missing box", cause=box_id)
            return
        self.check_box_reply(reply, box, 200, "GET box")

    # -- message rules ------------------------------------------------------------------------

    @precondition(lambda self: bool(self.boxes) and len(self.messages) < MAX_MESSAGES)
    @rule(data=st.data())
    def create_message(self, data: st.DataObject) -> None:
        self.step("create_message")
        self.put_message(data)

    def put_message(self, data: st.DataObject) -> None:
        with_audio = data.draw(st.booleans(), label="with audio")
        audio = data.draw(st.binary(min_size=1, max_size=48), label="audio")
        offset = data.draw(st.sampled_from(OFFSETS), label="timestamp offset")
        folder = data.draw(st.sampled_from([None, None, "new", "saved", "deleted"]), label="folder")
        caller_name = data.draw(st.sampled_from([None, "Alice", "Bob"]), label="caller_id_name")
        sender = data.draw(st.sampled_from([None, "someone@far.example"]), label="from")
        length = data.draw(st.sampled_from([None, 4200]), label="length")
        STATS["messages_created_with_audio" if with_audio else "messages_created_json"] += 1
        box_id = self.box_choice(data)
        number = data.draw(st.sampled_from(["6001", "6002", "+15550100"]), label="caller_id_number")
        request: dict[str, Any] = {"caller_id_number": number, "call_id": uuid.uuid4().hex[:24]}
        explicit = offset != 0 or data.draw(st.booleans(), label="explicit timestamp now")
        if explicit:
            request["timestamp"] = self.started + offset
        optional = {"folder": folder, "caller_id_name": caller_name, "from": sender, "length": length}
        request.update({key: value for key, value in optional.items() if value is not None})
        before = gregorian_now()
        if with_audio:
            body, content_type = multipart(request, audio)
            reply = self.call("PUT", f"/vmboxes/{box_id}/messages", body=body, headers={"Content-Type": content_type})
        else:
            reply = self.call("PUT", f"/vmboxes/{box_id}/messages", data=request)
        after = gregorian_now()
        box = self.boxes.get(box_id)
        if box is None or box.deleted:
            self.expect_error(reply, 404, "bad_identifier", "PUT message in missing box", cause=box_id)
            return
        self.expect_status(reply, 201, "PUT message")
        got = reply.data
        message_id = got.get("media_id", "")
        expect(bool(MESSAGE_ID.match(message_id)), "PUT message: id pattern", message_id)
        expect(message_id not in self.messages and message_id not in self.gone, "PUT message: new id", message_id)
        timestamp = got.get("timestamp")
        if explicit:
            expect_equal(timestamp, request["timestamp"], "PUT message: timestamp")
        else:
            expect(isinstance(timestamp, int) and before <= timestamp <= after, "PUT message: timestamp is now",
                   timestamp, (before, after))
        expect_equal(message_id[:6], yyyymm(int(timestamp)), "PUT message: MODB month of the id")
        sender_value = with_realm(sender or number, self.realm)
        to_value = with_realm(box.fields["mailbox"], self.realm)
        expected = {
            "media_id": message_id, "call_id": request["call_id"], "caller_id_number": number,
            "caller_id_name": caller_name or number, "from": sender_value,
            "from_user": sender_value.partition("@")[0], "from_realm": sender_value.partition("@")[2],
            "to": to_value, "to_user": to_value.partition("@")[0], "to_realm": to_value.partition("@")[2],
            "length": length or 1, "timestamp": timestamp, "folder": folder or "new",
        }
        expect_equal(got, expected, "PUT message: metadata")
        expect(reply.headers.get("Location", "").endswith(f"/messages/{message_id}"), "PUT message: Location",
               reply.headers.get("Location"))
        self.messages[message_id] = Message(message_id, box_id, expected, audio if with_audio else None)
        self.months.add(message_id[:6])

    @precondition(lambda self: bool(self.messages))
    @rule(data=st.data(), audio=st.binary(min_size=1, max_size=48))
    def upload_audio(self, data: st.DataObject, audio: bytes) -> None:
        self.step("upload_audio")
        message_id = self.message_choice(data)
        box_id = self.url_box_for(data, message_id)
        reply = self.call("PUT", f"/vmboxes/{box_id}/messages/{message_id}/raw", body=audio,
                          headers={"Content-Type": "audio/mpeg"})
        message = self.owns(box_id, message_id)
        if message is None:
            self.expect_error(reply, 404, "bad_identifier", "PUT raw of a foreign or missing message",
                              cause=message_id)
            return
        if message.audio is None and box_id in self.hard_deleted:
            self.expect_error(reply, 404, "bad_identifier", "PUT raw in a removed box", cause=box_id)
            return
        self.expect_status(reply, 201, "PUT raw")
        expect_equal(reply.data, message.metadata, "PUT raw: metadata")
        message.audio = audio

    @precondition(lambda self: bool(self.messages))
    @rule(data=st.data(), saved=st.booleans())
    def get_audio(self, data: st.DataObject, saved: bool) -> None:
        self.step("get_audio", mutates=saved)
        message_id = self.message_choice(data)
        box_id = self.url_box_for(data, message_id)
        params = {"folder": "saved"} if saved else None
        reply = self.call("GET", f"/vmboxes/{box_id}/messages/{message_id}/raw", params=params)
        message = self.owns(box_id, message_id)
        if message is None:
            self.expect_error(reply, 404, "bad_identifier", "GET raw of a foreign or missing message",
                              cause=message_id)
            return
        if box_id in self.hard_deleted:
            self.expect_error(reply, 404, "bad_identifier", "GET raw in a removed box", cause=box_id)
            return
        if message.audio is None:
            self.expect_error(reply, 404, "bad_identifier", "GET raw without audio", cause=NO_AUDIO)
            return
        self.expect_status(reply, 200, "GET raw")
        expect_equal(reply.body, message.audio, "GET raw: bytes")
        if saved:
            message.metadata["folder"] = "saved"

    @precondition(lambda self: bool(self.messages) or bool(self.gone))
    @rule(data=st.data())
    def get_message(self, data: st.DataObject) -> None:
        self.step("get_message", mutates=False)
        message_id = self.message_choice(data)
        box_id = self.url_box_for(data, message_id)
        reply = self.call("GET", f"/vmboxes/{box_id}/messages/{message_id}")
        message = self.owns(box_id, message_id)
        if message is None:
            self.expect_error(reply, 404, "bad_identifier", "GET foreign or missing message", cause=message_id)
            return
        self.expect_status(reply, 200, "GET message")
        expect_equal(reply.data, message.metadata, "GET message: metadata")

    @precondition(lambda self: bool(self.messages))
    @rule(data=st.data(), folder=st.sampled_from([None, "new", "saved", "deleted"]), via_query=st.booleans())
    def change_folder(self, data: st.DataObject, folder: str | None, via_query: bool) -> None:
        self.step("change_folder")
        message_id = self.message_choice(data)
        box_id = self.url_box_for(data, message_id)
        path = f"/vmboxes/{box_id}/messages/{message_id}"
        if folder is not None and via_query:
            reply = self.call("POST", path, data={}, params={"folder": folder})
        else:
            reply = self.call("POST", path, data={} if folder is None else {"folder": folder})
        message = self.owns(box_id, message_id)
        if message is None:
            self.expect_error(reply, 404, "bad_identifier", "POST folder of foreign or missing message",
                              cause=message_id)
            return
        message.metadata["folder"] = folder or "saved"
        self.expect_status(reply, 200, "POST folder")
        expect_equal(reply.data, message.metadata, "POST folder: metadata")

    def transferred(self, message: Message, new_id: str, destination: str, timestamp: int) -> Message:
        """The message a move or copy writes into ``destination`` (folder new, live)."""
        to_value = with_realm(self.boxes[destination].fields["mailbox"], self.realm)
        metadata = {**message.metadata, "media_id": new_id, "folder": "new", "timestamp": timestamp,
                    "to": to_value, "to_user": to_value.partition("@")[0], "to_realm": to_value.partition("@")[2]}
        return Message(new_id, destination, metadata, message.audio, False, [*message.history, message.box])

    def adopt(self, source: Message, new_id: str, destination: str, timestamp: int, what: str) -> None:
        expect(bool(MESSAGE_ID.match(new_id)), f"{what}: new id pattern", new_id)
        expect(new_id not in self.messages and new_id not in self.gone, f"{what}: new id is new", new_id)
        expect_equal(new_id[:6], yyyymm(timestamp), f"{what}: MODB month of the new id")
        copy = self.transferred(source, new_id, destination, timestamp)
        self.messages[new_id] = copy
        self.months.add(new_id[:6])
        stored = self.live.stored(self.account_id, new_id)
        expect_equal((stored.get("source_id"), stored.get("history"), stored.get("pvt_deleted")),
                     (destination, copy.history, None), f"{what}: stored copy (box, history, not deleted)")

    def learn_new(self, new_ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """Box and listing row of messages just made by a move or copy (stamped now):
        read from the account-wide listing."""
        reply = self.call("GET", "/vmboxes/messages", params={"paginate": "false"})
        self.expect_status(reply, 200, "GET account messages")
        found: dict[str, tuple[str, dict[str, Any]]] = {}
        for row in reply.data:
            ((box_id, item),) = row.items()
            if item.get("media_id") in new_ids:
                found[item["media_id"]] = (box_id, item)
        expect_equal(sorted(found), sorted(new_ids), "new messages are listed")
        return found

    @precondition(lambda self: bool(self.messages))
    @rule(data=st.data())
    def move_message(self, data: st.DataObject) -> None:
        self.step("move_message")
        message_id = self.message_choice(data)
        box_id = self.url_box_for(data, message_id)
        destination = self.box_choice(data)
        before = gregorian_now()
        reply = self.call("POST", f"/vmboxes/{box_id}/messages/{message_id}", data={"source_id": destination})
        after = gregorian_now()
        target = self.boxes.get(destination)
        if target is None or target.deleted:
            self.expect_error(reply, 404, "bad_identifier", "move to a missing box", cause=destination)
            return
        message = self.owns(box_id, message_id)
        if message is None:
            self.expect_error(reply, 404, "bad_identifier", "move of a foreign or missing message", cause=message_id)
            return
        self.expect_status(reply, 200, "move")
        got = reply.data
        timestamp = got.get("timestamp")
        expect(isinstance(timestamp, int) and before <= timestamp <= after, "move: timestamp is now", timestamp,
               (before, after))
        new_id = got.get("media_id", "")
        expect(new_id != message_id, "move: a new id", new_id)
        del self.messages[message_id]
        self.gone[message_id] = None
        self.adopt(message, new_id, destination, int(timestamp), "move")
        expect_equal(got, self.messages[new_id].metadata, "move: metadata")

    @precondition(lambda self: bool(self.messages) and bool(self.boxes))
    @rule(data=st.data())
    def copy_message(self, data: st.DataObject) -> None:
        self.step("copy_message")
        message_id = self.message_choice(data)
        box_id = self.url_box_for(data, message_id)
        destinations = data.draw(st.lists(st.sampled_from([*self.boxes, "0" * 32]), min_size=1, max_size=3),
                                 label="destinations")
        reply = self.call("POST", f"/vmboxes/{box_id}/messages/{message_id}", data={"source_id": destinations})
        wanted = list(dict.fromkeys(destinations))
        missing = [dest for dest in wanted if dest not in self.boxes or self.boxes[dest].deleted]
        if missing:
            self.expect_error(reply, 404, "bad_identifier", "copy to a missing box", cause=missing[0])
            return
        message = self.owns(box_id, message_id)
        if message is None:
            self.expect_error(reply, 404, "bad_identifier", "copy of a foreign or missing message", cause=message_id)
            return
        self.expect_status(reply, 200, "copy")
        expect_equal(set(reply.data), {"succeeded"}, "copy: result keys")
        new_ids = reply.data["succeeded"]
        expect(len(new_ids) == len(wanted) and len(set(new_ids)) == len(wanted), "copy: one id per destination",
               new_ids, wanted)
        found = self.learn_new(new_ids)
        expect_equal(sorted(found[new_id][0] for new_id in new_ids), sorted(wanted), "copy: destinations")
        for new_id in new_ids:
            dest, row = found[new_id]
            self.adopt(message, new_id, dest, int(row["timestamp"]), "copy")
            expect_equal(row, summary(self.messages[new_id].metadata), "copy: listed copy")

    @precondition(lambda self: bool(self.messages))
    @rule(data=st.data())
    def delete_message(self, data: st.DataObject) -> None:
        self.step("delete_message")
        message_id = self.message_choice(data)
        box_id = self.url_box_for(data, message_id)
        reply = self.call("DELETE", f"/vmboxes/{box_id}/messages/{message_id}")
        message = self.owns(box_id, message_id)
        if message is None:
            self.expect_error(reply, 404, "bad_identifier", "DELETE foreign or missing message", cause=message_id)
            return
        message.metadata["folder"] = "deleted"
        message.deleted = True
        self.expect_status(reply, 200, "DELETE message")
        expect_equal(reply.data, message.metadata, "DELETE message: metadata")

    # -- bulk rules -----------------------------------------------------------------------------

    def bulk_ids(self, data: st.DataObject, box_id: str) -> list[str]:
        mine = [message.id for message in self.messages.values() if message.box == box_id]
        pool = mine * 3 + list(self.messages) + list(self.gone) + [f"{yyyymm(self.started)}-{'f' * 32}",
                                                                         "nonsense"]
        return data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=5), label="message ids")

    @precondition(lambda self: bool(self.messages))
    @rule(data=st.data(), action=st.sampled_from(["folder", "folder", "move", "copy"]),
          folder=st.sampled_from([None, "new", "saved", "deleted"]), via_query=st.booleans())
    def bulk_change(self, data: st.DataObject, action: str, folder: str | None, via_query: bool) -> None:
        self.step(f"bulk_{action}")
        box_id = self.box_choice(data)
        ids = self.bulk_ids(data, box_id)
        body: dict[str, Any] = {"messages": ids}
        params = None
        destinations: list[str] = []
        if action == "folder" and folder is not None:
            if via_query:
                params = {"folder": folder}
            else:
                body["folder"] = folder
        elif action == "move":
            destinations = [self.box_choice(data)]
            body["source_id"] = destinations[0]
        elif action == "copy":
            destinations = data.draw(st.lists(st.sampled_from([*self.boxes, "0" * 32]), max_size=2),
                                     label="destinations")
            body["source_id"] = destinations
        before = gregorian_now()
        reply = self.call("POST", f"/vmboxes/{box_id}/messages", data=body, params=params)
        box = self.boxes.get(box_id)
        if box is None or box.deleted:
            self.expect_error(reply, 404, "bad_identifier", "bulk change in a missing box", cause=box_id)
            return
        wanted = list(dict.fromkeys(destinations))
        missing = [dest for dest in wanted if dest not in self.boxes or self.boxes[dest].deleted]
        if missing:
            self.expect_error(reply, 404, "bad_identifier", "bulk move/copy to a missing box", cause=missing[0])
            return
        self.expect_status(reply, 200, f"bulk {action}")
        unique = list(dict.fromkeys(ids))
        chosen = [self.messages[message_id] for message_id in unique if self.owns(box_id, message_id)]
        failed = {message_id: "not_found" for message_id in unique if not self.owns(box_id, message_id)}
        result = reply.data
        expect_equal(result.get("failed", {}), failed, f"bulk {action}: failed")
        expect("failed" in result or not failed, f"bulk {action}: empty keys omitted", result)
        succeeded = result.get("succeeded", [])
        expect("succeeded" in result or not succeeded, f"bulk {action}: empty keys omitted", result)
        expect(set(result) <= {"succeeded", "failed"}, f"bulk {action}: result keys", result)
        if action == "folder":
            expect_equal(sorted(succeeded), sorted(message.id for message in chosen), "bulk folder: succeeded")
            for message in chosen:
                message.metadata["folder"] = folder or "saved"
            return
        expected_pairs = sorted((message.metadata["call_id"], dest) for message in chosen for dest in wanted)
        expect_equal(len(succeeded), len(expected_pairs), f"bulk {action}: one new id per message and box")
        found = self.learn_new(succeeded)
        # by the copy's pvt_previous_id: a message and its own copy share their call id
        sources = {message.id: message for message in chosen}
        observed_pairs = sorted((row["call_id"], dest) for dest, row in found.values())
        expect_equal(observed_pairs, expected_pairs, f"bulk {action}: (message, box) of the new ids")
        if action == "move":
            for message in chosen:
                del self.messages[message.id]
                self.gone[message.id] = None
        for new_id in succeeded:
            dest, row = found[new_id]
            expect(before <= row["timestamp"] <= gregorian_now(), f"bulk {action}: timestamp is now", row["timestamp"])
            source = sources[self.live.stored(self.account_id, new_id).get("pvt_previous_id")]
            self.adopt(source, new_id, dest, int(row["timestamp"]), f"bulk {action}")
            expect_equal(row, summary(self.messages[new_id].metadata), f"bulk {action}: listed copy")

    @precondition(lambda self: bool(self.boxes))
    @rule(data=st.data(), mode=st.sampled_from(["listed", "listed", "folder", "all", "empty"]),
          folder=st.sampled_from(FOLDERS), via_query=st.booleans())
    def bulk_delete(self, data: st.DataObject, mode: str, folder: str, via_query: bool) -> None:
        self.step(f"bulk_delete_{mode}")
        box_id = self.box_choice(data)
        params = None
        body: dict[str, Any] | None = None
        ids: list[str] = []
        if mode == "listed":
            ids = self.bulk_ids(data, box_id)
            body = {"messages": ids}
        elif mode == "empty":
            body = {"messages": []}
        elif mode == "folder":
            if via_query:
                params = {"folder": folder}
            else:
                body = {"folder": folder}
        reply = self.call("DELETE", f"/vmboxes/{box_id}/messages", data=body, params=params)
        now = gregorian_now()
        self.expect_status(reply, 200, f"bulk delete ({mode})")
        listed = {message.id: message for message in self.messages.values()
                  if message.box == box_id and self.visible(message, now)}
        if mode in ("listed", "empty"):
            unique = list(dict.fromkeys(ids))
            selected = [message_id for message_id in unique if message_id in listed]
            failed = {message_id: "not_found" for message_id in unique if message_id not in listed}
        else:
            selected = [message_id for message_id, message in listed.items()
                        if mode == "all" or message.folder == folder]
            failed = {}
        expected: dict[str, Any] = {}
        if selected:
            expected["succeeded"] = sorted(selected)
        if failed:
            expected["failed"] = failed
        result = dict(reply.data)
        if "succeeded" in result:
            result["succeeded"] = sorted(result["succeeded"])
        expect_equal(result, expected, f"bulk delete ({mode}): result")
        for message_id in selected:
            listed[message_id].deleted = True
            listed[message_id].metadata["folder"] = "deleted"

    # -- listings ---------------------------------------------------------------------------------

    def check_box_listing(self, reply: Reply, what: str) -> None:
        self.expect_status(reply, 200, what)
        expect_equal(reply.data, self.box_rows(gregorian_now()), f"{what}: rows")

    def check_message_rows(self, rows: list[Any], box_id: str | None, what: str) -> None:
        now = gregorian_now()
        model = self.message_rows(box_id, now)
        if box_id is None:
            expected = [{message.box: summary(message.metadata)} for message in model]
        else:
            expected = [summary(message.metadata) for message in model]
        expect_equal(rows, expected, f"{what}: rows")

    @invariant()
    def listings_match(self) -> None:
        """After every step that may change something: the box listing (names, counts,
        folders) and, after message steps, every visible message of the account."""
        if not self.dirty:
            return
        STATS["invariant_checks"] += 1
        self.check_box_listing(self.call("GET", "/vmboxes", params={"paginate": "false"}), "GET /vmboxes")
        if not self.messages_dirty:
            return
        reply = self.call("GET", "/vmboxes/messages", params={"paginate": "false"})
        self.expect_status(reply, 200, "GET account messages")
        self.check_message_rows(reply.data, None, "GET account messages")

    def walk(self, path: str, page_size: int, what: str) -> list[list[Any]]:
        pages: list[list[Any]] = []
        start: str | None = None
        while True:
            params = {"page_size": str(page_size), **({"start_key": start} if start is not None else {})}
            reply = self.call("GET", path, params=params)
            self.expect_status(reply, 200, f"{what} page {len(pages) + 1}")
            body = reply.json
            expect_equal(body.get("page_size"), len(reply.data), f"{what}: page_size is the rows returned")
            expect(len(reply.data) <= page_size, f"{what}: page not larger than asked", len(reply.data), page_size)
            if start is not None:
                expect_equal(body.get("start_key"), start, f"{what}: start_key echoed")
            pages.append(reply.data)
            start = body.get("next_start_key")
            if start is None:
                return pages
            expect(len(reply.data) == page_size, f"{what}: a page before the last is full", len(reply.data),
                   page_size)
            expect(len(pages) <= 2 * MAX_MESSAGES * 4 + 5, f"{what}: pagination ends", len(pages))

    @rule(data=st.data(), page_size=st.integers(1, 5), paginated=st.booleans())
    def list_box_messages(self, data: st.DataObject, page_size: int, paginated: bool) -> None:
        self.step("list_box_messages_paged" if paginated else "list_box_messages", mutates=False)
        box_id = self.box_choice(data) if self.boxes else "0" * 32
        path = f"/vmboxes/{box_id}/messages"
        if box_id not in self.boxes or self.boxes[box_id].deleted:
            params = {"page_size": str(page_size)} if paginated else {"paginate": "false"}
            reply = self.call("GET", path, params=params)
            self.expect_error(reply, 404, "bad_identifier", "GET messages of a missing box", cause=box_id)
            return
        if not paginated:
            reply = self.call("GET", path, params={"paginate": "false"})
            self.expect_status(reply, 200, "GET box messages")
            self.check_message_rows(reply.data, box_id, "GET box messages")
            return
        pages = self.walk(path, page_size, "GET box messages (paged)")
        self.check_message_rows([row for page in pages for row in page], box_id, "GET box messages (paged)")

    @rule(page_size=st.integers(1, 5))
    def list_account_messages_paged(self, page_size: int) -> None:
        self.step("list_account_messages_paged", mutates=False)
        pages = self.walk("/vmboxes/messages", page_size, "GET account messages (paged)")
        self.check_message_rows([row for page in pages for row in page], None, "GET account messages (paged)")

    @rule(page_size=st.integers(1, 5))
    def list_boxes_paged(self, page_size: int) -> None:
        """Pages come newest key first, each page in ascending order (Kazoo reverses
        every page): reversed pages, concatenated, are the listing reversed."""
        self.step("list_boxes_paged", mutates=False)
        pages = self.walk("/vmboxes", page_size, "GET /vmboxes (paged)")
        rows = [row for page in pages for row in reversed(page)]
        expect_equal(rows, list(reversed(self.box_rows(gregorian_now()))), "GET /vmboxes (paged): rows")


def test_voicemail_api_follows_the_model(live: Live, request: pytest.FixtureRequest) -> None:
    VoicemailMachine.live = live
    STATS.clear()
    started = time.monotonic()
    outcome = "0 divergences"
    try:
        run_state_machine_as_test(VoicemailMachine, settings=settings(
            max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=None,
            suppress_health_check=list(HealthCheck)))
    except BaseException as failure:
        outcome = f"divergence: {type(failure).__name__}: {str(failure)[:2000]}"
        raise
    finally:
        elapsed = time.monotonic() - started
        store = "CouchDB at KAZOO_VM_COUCH_URL" if os.environ.get("KAZOO_VM_COUCH_URL") else "pouchdb-server"
        report = {"store": store, "max_examples": EXAMPLES, "max_steps": STEPS, "sequences": STATS["sequences"],
                  "steps": STATS["steps"], "requests": STATS["requests"], "comparisons": STATS["comparisons"],
                  "invariant_checks": STATS["invariant_checks"],
                  "divergences": 0 if outcome == "0 divergences" else 1, "outcome": outcome,
                  "seconds": round(elapsed, 1),
                  "steps_by_rule": {key[5:]: value for key, value in sorted(STATS.items()) if key.startswith("step:")}}
        with contextlib.suppress(OSError), open(REPORT, "w") as out:
            json.dump(report, out, indent=1)
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        line = (f"\nmodel test ({store}): {report['sequences']} sequences, {report['steps']} steps, "
                f"{report['requests']} requests, {report['comparisons']} comparisons, {outcome} "
                f"in {elapsed:.1f} s")
        if reporter is not None:
            reporter.write_line(line)
        else:
            print(line)
