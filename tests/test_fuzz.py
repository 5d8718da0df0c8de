"""Schemathesis against the served OpenAPI document: every operation, authenticated.

The app runs in-process on a real port of 127.0.0.1 (its own event loop in a thread, so
schemathesis' blocking requests reach it), over the test store, with a fresh account
and a token from ``PUT /v2/api_auth``. Generated cases keep their fuzzed values, but a
Hypothesis draw puts real ids in most of them (the account, a live box, a message with
audio, the API key, a user's credentials) so they reach the handlers instead of
stopping at 403/404.

Checks: no 5xx; status code, content type, headers and body as documented; an
operation that needs a token refuses a request without one (``ignored_auth``).
``negative_data_rejection``/``positive_data_acceptance`` are left out on purpose: the API
is Kazoo-lenient (``"2000"`` passes where an integer is wanted, unknown keys are kept)
and answers depend on state (a valid id of a deleted box is a 404).

Bounded by default (``FUZZ_EXAMPLES`` per operation and generation mode); a longer run:
``KAZOO_VM_FUZZ_EXAMPLES=500 pytest tests/test_fuzz.py`` (``tox -e fuzz``). With
``KAZOO_VM_FUZZ_REPORT=file`` each process (each xdist worker) appends its figures as a
JSON line: cases, operations, statuses, seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import pytest
import requests
import schemathesis
from aiohttp import web
from conftest import Api, assert_error, make_account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from kazoo_vm.app import create_app
from kazoo_vm.config import Config
from kazoo_vm.http.openapi import routes
from kazoo_vm.kazoo import naming
from kazoo_vm.services import Services

FUZZ_EXAMPLES = 8  # per operation and mode: ~30 s for the module with -n 2 on a 2-core machine
EXAMPLES = int(os.environ.get("KAZOO_VM_FUZZ_EXAMPLES") or FUZZ_EXAMPLES)
REPORT = os.environ.get("KAZOO_VM_FUZZ_REPORT")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, ignored_auth]
USERNAME, PASSWORD = "fuzzer", "fuzz-password"
T = TypeVar("T")
# Every operation of the router (collected without a server).
ROUTES = sorted((method, path) for method, path, _handler in routes(create_app(Config(), "http://127.0.0.1:9")))


@dataclass
class Live:
    """The running app, its account, and the real ids cases may borrow."""

    base_url: str
    account_id: str
    api_key: str
    token: str
    realm: str
    user_id: str
    http: requests.Session = field(default_factory=requests.Session)
    box_id: str | None = None
    message_id: str | None = None
    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)

    def call(self, method: str, path: str, *, headers: dict[str, str] | None = None,
             **kwargs: Any) -> requests.Response:
        url = f"{self.base_url}/v2/accounts/{self.account_id}{path}"
        return self.http.request(method, url, headers={"X-Auth-Token": self.token, **(headers or {})}, timeout=30,
                                 **kwargs)

    def box(self) -> str:
        if self.box_id is None:
            mailbox = str(int.from_bytes(os.urandom(4), "big"))
            reply = self.call("PUT", "/vmboxes", json={"data": {"name": "Fuzzed box", "mailbox": mailbox}})
            assert reply.status_code == 201, reply.text
            self.box_id = reply.json()["data"]["id"]
        return self.box_id

    def message(self) -> str:
        if self.message_id is None:
            box = self.box()
            created = self.call("PUT", f"/vmboxes/{box}/messages", json={"data": {"caller_id_number": "6001"}})
            assert created.status_code == 201, created.text
            message_id = created.json()["data"]["media_id"]
            audio = self.call("PUT", f"/vmboxes/{box}/messages/{message_id}/raw", data=b"ID3 fuzz audio",
                              headers={"Content-Type": "audio/mpeg"})
            assert audio.status_code == 201, audio.text
            self.message_id = message_id
        return self.message_id


def _run(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=120)


async def _drop_databases(services: Services, account_id: str) -> None:
    """Every database of the account, whatever months the fuzzer's timestamps made."""
    if not os.environ.get("KAZOO_VM_COUCH_URL"):
        return
    couch = services.store.couch
    prefix = naming.account_db(account_id)
    for db in await couch.get_json("/_all_dbs"):
        if isinstance(db, str) and db.startswith(prefix):
            await couch.delete_db(db)


@pytest.fixture(scope="module")
def live(couch_url: str, request: pytest.FixtureRequest) -> Iterator[Live]:
    started = time.monotonic()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzzed-app", daemon=True)
    thread.start()
    config = replace(Config(), couch_url=couch_url, jwt_secret=None)
    runner = web.AppRunner(create_app(config, couch_url), access_log=None)

    async def start() -> tuple[int, Services, dict[str, Any], str]:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        services = Services.connect(couch_url, timeout=config.couch_timeout)
        account = await make_account(services, name="Fuzz Account")
        user = await services.users.create(account["_id"], username=USERNAME, password=PASSWORD,
                                           last_name="Fuzzer")
        return runner.addresses[0][1], services, account, user["_id"]

    port, services, account, user_id = _run(loop, start())
    base_url = f"http://127.0.0.1:{port}"
    login = requests.put(f"{base_url}/v2/api_auth", json={"data": {"api_key": account["pvt_api_key"]}}, timeout=30)
    assert login.status_code == 201, login.text
    state = Live(base_url, account["_id"], account["pvt_api_key"], login.json()["auth_token"], account["realm"],
                 user_id)
    try:
        yield state
    finally:
        state.http.close()
        _run(loop, _drop_databases(services, account["_id"]))
        _run(loop, services.close())
        _run(loop, runner.cleanup())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
        statuses = ", ".join(f"{status}: {count}" for status, count in sorted(state.statuses.items()))
        if REPORT:
            store = "CouchDB at KAZOO_VM_COUCH_URL" if os.environ.get("KAZOO_VM_COUCH_URL") else "pouchdb-server"
            figures = {"store": store, "examples": EXAMPLES, "cases": sum(state.cases.values()),
                       "operations": len(state.cases), "statuses": dict(sorted(state.statuses.items())),
                       "seconds": round(time.monotonic() - started, 1)}
            with open(REPORT, "a") as out:
                out.write(json.dumps(figures) + "\n")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            print(f"\nschemathesis: {sum(state.cases.values())} cases over {len(state.cases)} operations "
                  f"({EXAMPLES} examples per operation and mode); statuses {statuses}")


@pytest.fixture(scope="module")
def api_schema(live: Live) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{live.base_url}/v2/openapi.json")
    schema.config.update(base_url=live.base_url)
    schema.config.output.sanitization.update(enabled=False)  # show the values that failed
    return schema


def _borrow_ids(case: schemathesis.Case[Any], live: Live, data: st.DataObject) -> set[str]:
    """Put real ids into the case where a draw says so; the names of those used."""
    used: set[str] = set()
    path = case.path_parameters if case.path_parameters is not None else {}
    if "account_id" in path and data.draw(st.integers(0, 9), label="real account") > 0:
        path["account_id"] = live.account_id
    if "user_id" in path and data.draw(st.booleans(), label="real user"):
        path["user_id"] = live.user_id
    if "vmbox_id" in path and data.draw(st.booleans(), label="real box"):
        path["vmbox_id"] = live.box()
        used.add("box")
    if "message_id" in path and data.draw(st.booleans(), label="real message"):
        path["vmbox_id"] = live.box()
        path["message_id"] = live.message()
        used |= {"box", "message"}
    body = case.body.get("data") if isinstance(case.body, dict) else None
    if isinstance(body, dict):
        if "messages" in body and data.draw(st.booleans(), label="real message ids"):
            body["messages"] = [live.message()]
            used.add("message")
        if "source_id" in body and data.draw(st.booleans(), label="real destination"):
            body["source_id"] = live.box() if isinstance(body["source_id"], str) else [live.box()]
            used.add("box")
        if "api_key" in body and data.draw(st.booleans(), label="real api key"):
            body["api_key"] = live.api_key
        if "credentials" in body and data.draw(st.booleans(), label="real credentials"):
            body["credentials"] = hashlib.md5(f"{USERNAME}:{PASSWORD}".encode()).hexdigest()
            body["account_realm"] = live.realm
    return used


def _breakable(operation: dict[str, Any]) -> bool:
    """Whether a request can break the documented input: a body, or a parameter whose
    schema is more than "any string" (negative generation finds nothing otherwise)."""
    return "requestBody" in operation or any(parameter["schema"] != {"type": "string"}
                                             for parameter in operation.get("parameters", []))


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=lambda value: str(value))
@pytest.mark.parametrize("mode", list(GenerationMode), ids=str)
def test_operation(method: str, path: str, mode: GenerationMode, api_schema: schemathesis.BaseSchema,
                   live: Live) -> None:
    if mode is GenerationMode.NEGATIVE and not _breakable(api_schema.raw_schema["paths"][path][method.lower()]):
        pytest.skip("no request breaks this operation's documented parameters")
    operation = api_schema[path][method]

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy(mode), data=st.data())
    def fuzz(case: schemathesis.Case[Any], data: st.DataObject) -> None:
        used = _borrow_ids(case, live, data)
        try:
            response = case.call_and_validate(session=live.http, headers={"X-Auth-Token": live.token},
                                              checks=CHECKS, timeout=30)
        except Exception as failure:
            failure.add_note(f"path {case.path_parameters!r} query {case.query!r} headers {case.headers!r} "
                             f"media type {case.media_type!r} body {case.body!r}")
            raise
        live.cases[case.operation.label] += 1
        live.statuses[response.status_code] += 1
        if 200 <= response.status_code < 300 and case.method != "GET":
            live.message_id = None  # moved, deleted or copied: use a fresh one next
            if case.method == "DELETE" and "box" in used and "/messages" not in case.path:
                live.box_id = None

    try:
        fuzz()
    except Unsatisfiable:
        if mode is GenerationMode.NEGATIVE:
            pytest.skip("no request breaks this operation's documented parameters")
        raise


# -- what the fuzzing found, pinned down -------------------------------------------------

@pytest.mark.parametrize("header", [b'Content-Disposition: form-data; name="\xc3\xa0\x03"',
                                    b"352529--76ee7013d52ab865e1fbc4f7bf424b23--"])
async def test_multipart_part_headers_aiohttp_cannot_parse_are_a_400(api: Api, vmbox: dict[str, Any],
                                                                     header: bytes) -> None:
    """A part header with control bytes (or no colon) made aiohttp's parser raise past
    the multipart reader: 500 instead of the client's 400."""
    body = b"--b\r\n" + header + b"\r\n\r\n{}\r\n--b--\r\n"
    for path in (f"/vmboxes/{vmbox['id']}/messages", f"/vmboxes/{vmbox['id']}/messages/{'0' * 32}/raw"):
        reply = await api.call("PUT", path, body=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert assert_error(reply, 400, "validation error") == {
            "multipart": {"invalid": {"message": "malformed multipart body", "target": "body"}}}
