"""Webhooks (crossbar ``cb_webhooks`` and Kazoo's webhooks app): the resource, the
``object`` and ``notifications`` hooks, and their delivery to a real HTTP receiver
(an aiohttp server of the test), through a receiver outage, the SIGKILL of an instance
with deliveries pending, and two instances."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import Api, Reply, assert_error, login, machine_lock, make_account
from test_events import new_box, with_audio

from kazoo_vm.app import create_app, server_options
from kazoo_vm.config import PROJECT_ROOT, Config
from kazoo_vm.embedded_store import free_port
from kazoo_vm.services import Services
from kazoo_vm.storage import webhooks as webhook_storage
from kazoo_vm.storage.errors import NotFound

OUTAGE = float(os.environ.get("KAZOO_VM_WEBHOOK_OUTAGE", "60"))  # seconds the receiver is down


@pytest.fixture(autouse=True)
def one_webhooks_test_at_a_time() -> Iterator[None]:
    """Every instance serves every hook of its store: on a store the xdist workers share
    (``KAZOO_VM_COUCH_URL``), the apps of two tests would send each other's deliveries,
    and one shutting down in the middle of a send would send it twice."""
    if not os.environ.get("KAZOO_VM_COUCH_URL"):
        yield
        return
    with machine_lock("kazoo_vm-webhooks-tests.lock"):
        yield


@pytest.fixture
def config(couch_url: str) -> Config:
    """Kazoo's delivery rules with short pauses, so the tests run in seconds."""
    return replace(Config(), couch_url=couch_url, jwt_secret=None, move_recovery=False, webhook_retry_pause=0.05,
                   webhook_backoff=0.2, webhook_poll=0.2, webhook_lease=5.0, webhook_connect_timeout=1.0,
                   webhook_request_timeout=2.0)


@dataclass
class Hit:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def payload(self) -> dict[str, Any]:
        if self.method == "GET":
            return dict(self.query)
        if self.headers.get("Content-Type", "").startswith("application/json"):
            return dict(json.loads(self.body))
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))


class Receiver:
    """The other system: records every request; ``status`` is what it answers."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hits: list[Hit] = []
        self.status = 200
        self._runner: web.AppRunner | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits.append(Hit(request.method, request.path, dict(request.query), dict(request.headers),
                             await request.read(), time.monotonic()))
        return web.Response(status=self.status, text="ok")

    def at(self, path: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.path == path]

    async def wait_for(self, count: int, path: str | None = None, timeout: float = 15.0) -> list[Hit]:
        deadline = time.monotonic() + timeout
        while True:
            hits = self.hits if path is None else self.at(path)
            if len(hits) >= count or time.monotonic() > deadline:
                return list(hits)
            await asyncio.sleep(0.05)


@pytest.fixture
async def receiver(services: Services) -> AsyncIterator[Receiver]:
    running = Receiver()
    await running.start()
    try:
        yield running
    finally:
        await running.stop()
        await _delete_hooks(services)


async def _delete_hooks(services: Services) -> None:
    """The test's hooks go (their pending deliveries are then dropped, not retried forever)."""
    accounts = list(getattr(services, "created_accounts", []))
    if not accounts:
        return
    for hook in await services.webhooks.of_accounts(accounts, fresh=True):
        hook["pvt_deleted"] = True
        with contextlib.suppress(Exception):
            await services.webhooks.save(hook)


async def new_hook(api: Api, **fields: Any) -> dict[str, Any]:
    reply = await api.put("/webhooks", {"name": "Hook", **fields})
    assert reply.status == 201, reply.body
    return dict(reply.data)


def object_hook(receiver: Receiver, doc_type: str, action: str, **extra: Any) -> dict[str, Any]:
    return {"hook": "object", "uri": receiver.url(f"/{doc_type}/{action}"),
            "custom_data": {"type": doc_type, "action": action}, **extra}


# -- the resource -------------------------------------------------------------------------

async def test_hook_types_are_listed_without_a_token(api: Api) -> None:
    reply = await api.get("/v2/webhooks", token="")
    assert reply.status == 200, reply.body
    by_id = {hook["id"]: hook for hook in reply.data}
    assert sorted(by_id) == ["notifications", "object"]
    assert by_id["object"]["modifiers"]["type"]["items"] == ["vmbox", "mailbox_message"]
    assert by_id["object"]["modifiers"]["action"]["items"] == ["doc_created", "doc_edited", "doc_deleted"]
    assert sorted(by_id["notifications"]["modifiers"]["type"]["items"]) == [
        "all", "voicemail_deleted", "voicemail_new", "voicemail_saved"]


async def test_monster_ui_lists_creates_edits_and_deletes_a_hook(api: Api, services: Services,
                                                                 receiver: Receiver) -> None:
    """The calls monster-ui-webhooks makes, with the bodies its form sends."""
    assert (await api.get("/webhooks")).data == []
    created = await new_hook(api, name="CRM", uri=receiver.url(), http_verb="post", format="json", hook="object",
                             custom_data={"type": "vmbox", "action": "doc_created", "crm": "acme"},
                             custom_request_headers={}, include_subaccounts=False, group="CRM")
    hook_id = created["id"]
    assert {key: created[key] for key in ("enabled", "retries", "http_verb", "format", "include_internal_legs")} \
        == {"enabled": True, "retries": 2, "http_verb": "post", "format": "json", "include_internal_legs": True}
    stored = await services.store.couch.get_doc(webhook_storage.DB, hook_id)  # Kazoo's ``webhooks`` database
    assert (stored["pvt_type"], stored["pvt_account_id"]) == ("webhook", api.account_id)
    listed = (await api.get("/webhooks")).data
    assert listed == [{"id": hook_id, "hook": "object", "name": "CRM", "uri": receiver.url(), "group": "CRM",
                       "enabled": True}]
    fetched = await api.get(f"/webhooks/{hook_id}")
    assert fetched.status == 200 and fetched.data == created
    edited = await api.post(f"/webhooks/{hook_id}", {**created, "name": "CRM 2", "http_verb": "get"})
    assert edited.status == 200, edited.body
    assert (edited.data["name"], edited.data["http_verb"]) == ("CRM 2", "get")
    patched = await api.patch(f"/webhooks/{hook_id}", {"enabled": False})
    assert patched.status == 200 and patched.data["enabled"] is False and patched.data["name"] == "CRM 2"
    assert (await api.get("/webhooks")).data[0]["enabled"] is False
    deleted = await api.delete(f"/webhooks/{hook_id}", {})
    assert deleted.status == 200 and deleted.data["_read_only"] == {"deleted": True}
    assert_error(await api.get(f"/webhooks/{hook_id}"), 404, "bad_identifier")
    assert (await api.get("/webhooks")).data == []


async def test_validation_errors_are_kazoo_s(api: Api, services: Services, receiver: Receiver) -> None:
    errors = assert_error(await api.put("/webhooks", {}), 400, "validation error")
    assert sorted(errors) == ["hook", "name", "uri"] and all("required" in errors[key] for key in errors)
    errors = assert_error(await api.put("/webhooks", {"name": "N", "hook": "object", "uri": receiver.url()}),
                          400, "validation error")
    assert errors == {"type": {"required": {"message": "missing required modifier"}},
                      "action": {"required": {"message": "missing required modifier"}}}
    errors = assert_error(await api.put("/webhooks", {"name": "N", "hook": "notifications", "uri": receiver.url(),
                                                     "custom_data": {"type": "channel_create"}}),
                          400, "validation error")
    assert errors["type"]["enum"]["cause"] == "channel_create"
    assert "voicemail_new" in errors["type"]["enum"]["target"]
    errors = assert_error(await api.put("/webhooks", {"name": "N", "hook": "all", "uri": "ftp://x/", "retries": 9}),
                          400, "validation error")
    assert set(errors) == {"uri", "retries"}
    other = await make_account(services, name="Other")
    other_api = Api(api.client, other["_id"], await login(api.client, other["pvt_api_key"]))
    hook = await new_hook(api, hook="all", uri=receiver.url())
    assert_error(await other_api.get(f"/v2/accounts/{api.account_id}/webhooks/{hook['id']}"), 403, "forbidden")
    assert_error(await other_api.get(f"/webhooks/{hook['id']}"), 404, "bad_identifier")  # not its hook


# -- hook ``object`` -----------------------------------------------------------------------

async def test_object_hook_fires_once_per_api_change_with_kazoo_s_body(api: Api, receiver: Receiver) -> None:
    for doc_type in ("vmbox", "mailbox_message"):
        for action in ("doc_created", "doc_edited", "doc_deleted"):
            await new_hook(api, **object_hook(receiver, doc_type, action))
    box_id = await new_box(api, "5100")
    assert (await api.patch(f"/vmboxes/{box_id}", {"name": "Renamed"})).status == 200
    message_id = await with_audio(api, box_id)
    assert (await api.post(f"/vmboxes/{box_id}/messages/{message_id}", {"folder": "saved"})).status == 200
    assert (await api.delete(f"/vmboxes/{box_id}/messages/{message_id}")).status == 200
    assert (await api.delete(f"/vmboxes/{box_id}")).status == 200
    expected = {"/vmbox/doc_created": [box_id], "/vmbox/doc_edited": [box_id], "/vmbox/doc_deleted": [box_id],
                "/mailbox_message/doc_created": [message_id], "/mailbox_message/doc_edited": [message_id],
                "/mailbox_message/doc_deleted": [message_id]}
    await receiver.wait_for(6)
    await asyncio.sleep(0.5)  # nothing more comes
    got = {path: [hit.payload["id"] for hit in receiver.at(path)] for path in expected}
    assert got == expected
    assert len(receiver.hits) == 6
    hit = receiver.at("/mailbox_message/doc_edited")[0]
    assert hit.method == "POST" and hit.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert hit.payload == {"id": message_id, "account_id": api.account_id, "action": "doc_edited",
                           "type": "mailbox_message"}
    assert hit.headers["X-Account-ID"] == api.account_id and len(hit.headers["X-Hook-ID"]) == 32


async def test_verbs_formats_headers_and_custom_data(api: Api, receiver: Receiver) -> None:
    shapes = {"get": ("get", "form-data"), "put_json": ("put", "json"), "post_form": ("post", "form-data")}
    ids = {}
    for name, (verb, body_format) in shapes.items():
        hook = await new_hook(api, hook="object", uri=receiver.url(f"/{name}"), http_verb=verb, format=body_format,
                              custom_data={"type": "vmbox", "action": "doc_created", "crm": "acme"})
        ids[name] = hook["id"]
    box_id = await new_box(api, "5200")
    await receiver.wait_for(3)
    body = {"id": box_id, "account_id": api.account_id, "action": "doc_created", "type": "vmbox", "crm": "acme"}
    for name, (verb, _format) in shapes.items():
        (hit,) = receiver.at(f"/{name}")
        assert hit.method == verb.upper() and hit.payload == body
        assert (hit.headers["X-Hook-ID"], hit.headers["X-Account-ID"]) == (ids[name], api.account_id)
    assert receiver.at("/get")[0].body == b""
    assert receiver.at("/put_json")[0].headers["Content-Type"] == "application/json"


# -- hook ``notifications`` ----------------------------------------------------------------

async def test_notifications_hook_bodies_and_filter(api: Api, receiver: Receiver) -> None:
    await new_hook(api, hook="notifications", uri=receiver.url("/new"), custom_data={"type": "voicemail_new"})
    await new_hook(api, hook="notifications", uri=receiver.url("/all"), custom_data={"type": "all"}, format="json")
    box_id = await new_box(api, "5300")
    message_id = await with_audio(api, box_id)
    assert (await api.delete(f"/vmboxes/{box_id}/messages/{message_id}")).status == 200
    await receiver.wait_for(1, "/new")
    await receiver.wait_for(3, "/all")
    await asyncio.sleep(0.5)
    (new,) = receiver.at("/new")
    assert [hit.payload["event_name"] for hit in receiver.at("/all")] == [
        "voicemail_new", "voicemail_saved", "voicemail_deleted"]  # no email: saved at once, as kvm does
    body = new.payload
    assert body["voicemail_id"] == message_id and body["voicemail_box"] == box_id
    assert (body["account_id"], body["caller_id_number"]) == (api.account_id, "6001")
    assert (body["event_category"], body["app_name"], body["type"]) == ("notification", "callflow", "voicemail_new")
    assert {"account_db", "voicemail_timestamp", "from_user", "to_user", "msg_id", "node"} <= set(body)
    deleted = receiver.at("/all")[2].payload
    assert (deleted["reason"], deleted["type"]) == ("crossbar_action", "all")  # custom_data wins


# -- include_subaccounts -------------------------------------------------------------------

async def test_parent_hooks_with_include_subaccounts_fire_for_descendants(api: Api, services: Services,
                                                                          receiver: Receiver) -> None:
    await new_hook(api, **object_hook(receiver, "vmbox", "doc_created"), include_subaccounts=True)
    await new_hook(api, **{**object_hook(receiver, "vmbox", "doc_created"), "uri": receiver.url("/own")})
    child = await make_account(services, name="Child", parent_id=api.account_id)
    grandchild = await make_account(services, name="Grandchild", parent_id=child["_id"])
    child_api = Api(api.client, grandchild["_id"], await login(api.client, grandchild["pvt_api_key"]))
    box_id = await new_box(child_api, "5400")
    (hit,) = await receiver.wait_for(1, "/vmbox/doc_created")
    assert (hit.payload["id"], hit.payload["account_id"]) == (box_id, grandchild["_id"])
    assert hit.headers["X-Account-ID"] == api.account_id  # the hook's account, as Kazoo sends
    await asyncio.sleep(0.5)
    assert receiver.at("/own") == []


# -- failures --------------------------------------------------------------------------------

async def test_retries_only_after_transport_errors_and_disabling(api: Api, receiver: Receiver) -> None:
    receiver.status = 500
    refused = await new_hook(api, **object_hook(receiver, "vmbox", "doc_created"), retries=4)
    box_ids = [await new_box(api, f"55{index:02d}") for index in range(6)]
    hits = await receiver.wait_for(6)
    await asyncio.sleep(0.5)
    assert [hit.payload["id"] for hit in receiver.hits] == box_ids  # each answered once: no retry
    stored = (await api.get(f"/webhooks/{refused['id']}")).data
    assert (stored["enabled"], stored["disable_reason"]) == (False, "too many failed attempts")
    assert (await api.get("/webhooks")).data[0]["disable_reason"] == "too many failed attempts"
    assert len(hits) == 6
    await new_box(api, "5510")
    await asyncio.sleep(0.5)
    assert len(receiver.hits) == 6  # a disabled hook fires no more
    receiver.status = 200
    reply = await api.patch("/webhooks", {"re-enable": True})
    assert (reply.status, reply.data) == (200, "hooks updated")
    assert (await api.get(f"/webhooks/{refused['id']}")).data["enabled"] is True
    assert_error(await api.patch("/webhooks", {}), 400, "validation error")

    await receiver.stop()  # unreachable: ``retries`` 4 is 4 attempts per round (kzd_webhook clamps to 1..5)
    unreachable = await new_hook(api, **{**object_hook(receiver, "vmbox", "doc_created"),
                                          "uri": "http://127.0.0.1:9/x", "retries": 3})
    started = time.monotonic()
    await new_box(api, "5520")
    box_id = await new_box(api, "5521")
    assert (await api.patch(f"/vmboxes/{box_id}", {"name": "x"})).status == 200
    deadline = time.monotonic() + 30
    while (await api.get(f"/webhooks/{unreachable['id']}")).data["enabled"] and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert (await api.get(f"/webhooks/{unreachable['id']}")).data["disable_reason"] == "too many failed attempts"
    # 6 rounds of 3 attempts, 0.05 s apart, with backoff 0.2 s doubling in between
    assert time.monotonic() - started > 0.2 * (1 + 2 + 4 + 8 + 16)


# -- attempts (webhooks_util:save_attempt, cb_webhooks summary_attempts) ---------------------

async def _attempts(api: Api, path: str, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The attempts listed at ``path`` once there are ``count`` (recorded after the send)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = await api.get(path)
        assert reply.status == 200, reply.body
        if len(reply.data) >= count or time.monotonic() > deadline:
            return list(reply.data)
        await asyncio.sleep(0.1)


async def test_a_refused_delivery_is_listed_as_a_failed_attempt_with_kazoo_s_fields(
        api: Api, services: Services, receiver: Receiver) -> None:
    receiver.status = 500
    hook = await new_hook(api, **object_hook(receiver, "vmbox", "doc_created"), http_verb="post", retries=3)
    box_id = await new_box(api, "5600")
    await receiver.wait_for(1)
    (attempt,) = await _attempts(api, f"/webhooks/{hook['id']}/attempts", 1)
    assert {key: attempt[key] for key in ("hook_id", "hook_event", "result", "reason", "resp_status_code",
                                          "method", "uri", "try", "retries_left")} == {
        "hook_id": hook["id"], "hook_event": "object", "result": "failure", "reason": "bad response code",
        "resp_status_code": "500", "method": "post", "uri": receiver.url("/vmbox/doc_created"), "try": 3,
        "retries_left": 2}
    assert f"id={box_id}" in attempt["req_body"] and attempt["resp_body"] == "ok"
    assert attempt["req_headers"]["X-Hook-ID"] == hook["id"]
    assert isinstance(attempt["timestamp"], int) and attempt["timestamp"] > 63_000_000_000
    assert not any(key.startswith(("_", "pvt_")) or key == "id" for key in attempt)
    assert await _attempts(api, "/webhooks/attempts", 1) == [attempt]
    stored = await services.webhook_attempts.listing(api.account_id, hook["id"], attempt["timestamp"] - 60,
                                                     attempt["timestamp"] + 60,
                                                     page_size=None, start=None, descending=True)
    (doc,) = [row["doc"] for row in stored.rows]  # Kazoo's document, in the month's MODB
    assert (doc["pvt_type"], doc["pvt_account_id"], doc["pvt_created"]) == (
        "webhook_attempt", api.account_id, attempt["timestamp"])
    assert doc["pvt_account_db"].startswith("account%2F") and doc["pvt_account_db"][-7:-6] == "-"


async def test_each_unanswered_attempt_is_listed_until_retries_are_exceeded(api: Api, receiver: Receiver) -> None:
    hook = await new_hook(api, **{**object_hook(receiver, "vmbox", "doc_created"), "uri": "http://127.0.0.1:9/x",
                                  "retries": 2})
    await new_box(api, "5610")
    attempts = await _attempts(api, f"/webhooks/{hook['id']}/attempts", 2)
    assert len(attempts) == 2
    oldest_first = sorted(attempts, key=lambda attempt: -attempt["retries"])
    assert [(attempt["retries"], attempt["retries_left"]) for attempt in oldest_first] == [
        (2, 2), (1, "retries exceeded")]
    for attempt in attempts:
        assert (attempt["result"], attempt["reason"], attempt["client_error"]) == (
            "failure", "kazoo http client error", "econnrefused")
    assert len({attempt["event_id"] for attempt in attempts}) == 1  # one event, two attempts


async def test_attempts_page_with_next_start_key(api: Api, receiver: Receiver) -> None:
    hook = await new_hook(api, **{**object_hook(receiver, "vmbox", "doc_created"), "uri": "http://127.0.0.1:9/x",
                                  "retries": 3})
    await new_box(api, "5615")
    every = await _attempts(api, f"/webhooks/{hook['id']}/attempts", 3)
    first = await api.get(f"/webhooks/{hook['id']}/attempts", params={"page_size": "2"})
    assert (len(first.data), first.json["page_size"]) == (2, 2)
    rest = await api.get(f"/webhooks/{hook['id']}/attempts",
                         params={"page_size": "2", "start_key": first.json["next_start_key"]})
    assert len(rest.data) == 1 and "next_start_key" not in rest.json
    assert first.data + rest.data == every
    assert [attempt["timestamp"] for attempt in every] == sorted((attempt["timestamp"] for attempt in every),
                                                                 reverse=True)  # newest first


async def test_successes_are_not_listed_by_default(api: Api, receiver: Receiver) -> None:
    hook = await new_hook(api, **object_hook(receiver, "vmbox", "doc_created"))
    await new_box(api, "5620")
    await receiver.wait_for(1)
    await asyncio.sleep(0.5)
    assert (await api.get(f"/webhooks/{hook['id']}/attempts")).data == []  # Kazoo's default: failures only


async def _forget_system_config(couch: Any) -> None:
    with contextlib.suppress(NotFound):
        doc = await couch.get_doc("system_config", "webhooks")
        await couch.delete_doc("system_config", "webhooks", doc["_rev"])


async def test_successes_are_listed_when_system_config_asks(api: Api, services: Services,
                                                            receiver: Receiver) -> None:
    couch = services.store.couch
    if not await couch.db_exists("system_config"):
        await couch.create_db("system_config")
    await _forget_system_config(couch)
    await couch.put_doc("system_config", {"_id": "webhooks", "default": {"log_successful_attempts": True}})
    try:
        hook = await new_hook(api, **object_hook(receiver, "vmbox", "doc_created"))
        await new_box(api, "5625")
        await receiver.wait_for(1)
        (attempt,) = await _attempts(api, f"/webhooks/{hook['id']}/attempts", 1)
    finally:
        await _forget_system_config(couch)
    assert (attempt["result"], attempt["resp_status_code"], attempt["resp_body"]) == ("success", "200", "ok")
    assert "try" not in attempt and "retries_left" not in attempt and "reason" not in attempt


async def test_attempts_of_another_account_are_not_listed(api: Api, services: Services, receiver: Receiver) -> None:
    receiver.status = 404
    hook = await new_hook(api, **object_hook(receiver, "vmbox", "doc_created"))
    await new_box(api, "5630")
    assert len(await _attempts(api, "/webhooks/attempts", 1)) == 1
    other = await make_account(services, name="Other")
    other_api = Api(api.client, other["_id"], await login(api.client, other["pvt_api_key"]))
    assert (await other_api.get("/webhooks/attempts")).data == []
    assert (await other_api.get(f"/webhooks/{hook['id']}/attempts")).data == []
    assert_error(await other_api.get(f"/v2/accounts/{api.account_id}/webhooks/attempts"), 403, "forbidden")
    assert_error(await api.get("/webhooks/attempts", token=""), 401, "invalid_credentials")


# -- at least once: an outage, a killed instance, two instances ----------------------------

def _kazoo_order(hits: list[Hit]) -> dict[str, list[str]]:
    """What each message or box was told, in arrival order (object actions and
    notification names)."""
    told: dict[str, list[str]] = {}
    for hit in hits:
        body = hit.payload
        if "event_name" in body:
            told.setdefault(body["voicemail_id"], []).append(body["event_name"])
        else:
            told.setdefault(body["id"], []).append(body["action"])
    return told


async def _message_life(api: Any, box_id: str) -> str:
    """A message arrives, is saved, marked new again and deleted."""
    message_id = await with_audio(api, box_id)
    for folder in ("saved", "new"):
        reply = await api.post(f"/vmboxes/{box_id}/messages/{message_id}", {"folder": folder})
        assert reply.status == 200, reply.body
    assert (await api.delete(f"/vmboxes/{box_id}/messages/{message_id}")).status == 200
    return message_id


LIFE = ["doc_created", "voicemail_new", "voicemail_saved", "doc_edited", "doc_edited", "doc_deleted",
        "voicemail_deleted"]  # the order kazoo_vm publishes them


async def test_receiver_down_for_a_minute_then_back_gets_every_event_in_order(
        aiohttp_client: Any, config: Config, couch_url: str, account: dict[str, Any], receiver: Receiver) -> None:
    """With Kazoo's pace between rounds (KAZOO_VM_WEBHOOK_BACKOFF 5 s, doubling), an
    outage of OUTAGE seconds is not the six failures in a row that disable a hook."""
    server = TestServer(create_app(replace(config, webhook_backoff=5.0), couch_url))
    await server.start_server(**server_options(config))
    client: TestClient[web.Request, web.Application] = await aiohttp_client(server)
    api = Api(client, account["_id"], await login(client, account["pvt_api_key"]))
    hook = await new_hook(api, hook="all", uri=receiver.url(), format="json")
    box_id = await new_box(api, "5600")
    await receiver.wait_for(1)
    await receiver.stop()
    down = time.monotonic()
    messages = [await _message_life(api, box_id) for _ in range(5)]
    await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - down)))
    await receiver.start()
    hits = await receiver.wait_for(1 + 5 * len(LIFE), timeout=120)
    back = time.monotonic()
    await asyncio.sleep(1.0)
    told = _kazoo_order(receiver.hits)
    assert {message_id: told.get(message_id) for message_id in messages} == {m: LIFE for m in messages}
    assert len(receiver.hits) == len(hits) == 1 + 5 * len(LIFE)
    assert (await api.get(f"/webhooks/{hook['id']}")).data["enabled"] is True
    print(f"outage {OUTAGE:.0f} s: {len(hits)} events, all delivered {back - down - OUTAGE:.1f} s after the "
          "receiver came back")


@dataclass
class Instance:
    process: asyncio.subprocess.Process
    base: str

    async def api(self, session: aiohttp.ClientSession, account: dict[str, Any]) -> InstanceApi:
        async with session.put(self.base + "/v2/api_auth",
                               json={"data": {"api_key": account["pvt_api_key"]}}) as response:
            assert response.status == 201, await response.text()
            token = str((await response.json())["auth_token"])
        return InstanceApi(session, self.base, account["_id"], token)


@dataclass
class InstanceApi:
    """Api's calls, over HTTP to a ``serve`` process."""

    session: aiohttp.ClientSession
    base: str
    account_id: str
    token: str

    async def call(self, method: str, path: str, *, data: Any = None, body: bytes | None = None,
                   headers: dict[str, str] | None = None) -> Any:
        url = f"{self.base}/v2/accounts/{self.account_id}{path}"
        payload = body if body is not None else (None if data is None else json.dumps({"data": data}).encode())
        all_headers = {"Content-Type": "application/json", "X-Auth-Token": self.token, **(headers or {})}
        async with self.session.request(method, url, data=payload, headers=all_headers) as response:
            return Reply(response.status, response.headers, await response.read())

    async def put(self, path: str, data: Any = None) -> Any:
        return await self.call("PUT", path, data=data)

    async def post(self, path: str, data: Any = None) -> Any:
        return await self.call("POST", path, data=data)

    async def delete(self, path: str, data: Any = None) -> Any:
        return await self.call("DELETE", path, data=data)


@contextlib.asynccontextmanager
async def serving(couch_url: str, workdir: Path) -> AsyncIterator[Instance]:
    """``python -m kazoo_vm serve`` as an operator runs it, with short webhook pauses."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("KAZOO_VM_")}
    env.update(KAZOO_VM_COUCH_URL=couch_url, KAZOO_VM_DATA_DIR=str(workdir), KAZOO_VM_MOVE_RECOVERY="false",
               KAZOO_VM_WEBHOOK_RETRY_PAUSE="0.05", KAZOO_VM_WEBHOOK_BACKOFF="0.3", KAZOO_VM_WEBHOOK_POLL="0.3",
               KAZOO_VM_WEBHOOK_LEASE="3", KAZOO_VM_WEBHOOK_CONNECT_TIMEOUT="1")
    with (workdir / f"serve-{port}.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kazoo_vm", "serve", "--port", str(port), cwd=PROJECT_ROOT, env=env,
            stdout=log, stderr=subprocess.STDOUT)
    instance = Instance(process, f"http://127.0.0.1:{port}")
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 60
            while True:
                assert process.returncode is None, "serve exited while starting"
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(instance.base + "/v2/schemas") as response:
                        if response.status == 200:
                            break
                assert time.monotonic() < deadline, "serve not ready"
                await asyncio.sleep(0.05)
        yield instance
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


async def test_instance_killed_with_deliveries_pending_then_another_delivers_each(
        couch_url: str, services: Services, receiver: Receiver, tmp_path: Path) -> None:
    account = await make_account(services, name="Killed")
    await receiver.stop()  # nothing can be delivered: every event stays pending
    async with aiohttp.ClientSession() as session:
        async with serving(couch_url, tmp_path) as first:
            api = await first.api(session, account)
            reply = await api.put("/webhooks", {"name": "All", "hook": "all", "uri": receiver.url()})
            assert reply.status == 201, reply.body
            box_reply = await api.put("/vmboxes", {"name": "Box", "mailbox": "5700"})
            box_id = box_reply.data["id"]
            messages = [await _message_life(api, box_id) for _ in range(3)]
            pending = (await services.webhook_deliveries.hooks_pending()).get(reply.data["id"], 0)
            first.process.kill()  # SIGKILL, the deliveries still pending
            assert await first.process.wait() == -signal.SIGKILL
        await receiver.start()
        async with serving(couch_url, tmp_path) as _second:
            hits = await receiver.wait_for(1 + 3 * len(LIFE), timeout=30)
            await asyncio.sleep(1.0)
    told = _kazoo_order(receiver.hits)
    assert pending == 1 + 3 * len(LIFE)
    assert {message_id: told.get(message_id) for message_id in messages} == {m: LIFE for m in messages}
    assert told[box_id] == ["doc_created"] and len(receiver.hits) == len(hits) == pending


async def test_two_instances_deliver_each_event_once(couch_url: str, services: Services, receiver: Receiver,
                                                     tmp_path: Path) -> None:
    account = await make_account(services, name="Two")
    async with aiohttp.ClientSession() as session, serving(couch_url, tmp_path) as one, \
            serving(couch_url, tmp_path) as two:
        apis = [await one.api(session, account), await two.api(session, account)]
        for index, path in enumerate(("/a", "/b", "/c")):
            reply = await apis[index % 2].put("/webhooks", {"name": path, "hook": "all", "uri": receiver.url(path)})
            assert reply.status == 201, reply.body
        box_id = (await apis[0].put("/vmboxes", {"name": "Box", "mailbox": "5800"})).data["id"]
        messages = []
        for index in range(12):  # the two instances take turns
            messages.append(await _message_life(apis[index % 2], box_id))
        expected = 3 * (1 + len(messages) * len(LIFE))
        await receiver.wait_for(expected, timeout=60)
        await asyncio.sleep(2.0)  # would a second copy come?
    keys = Counter((hit.path, hit.payload.get("msg_id") or (hit.payload["id"], hit.payload["action"], index))
                   for index, hit in enumerate(receiver.hits) if "event_name" in hit.payload)
    assert len(receiver.hits) == expected
    assert max(keys.values()) == 1
    for path in ("/a", "/b", "/c"):
        told = _kazoo_order(receiver.at(path))
        assert {message_id: told.get(message_id) for message_id in messages} == {m: LIFE for m in messages}
