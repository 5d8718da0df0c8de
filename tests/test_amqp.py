"""Beside Kazoo, on a real RabbitMQ: what kazoo_vm publishes after each API change (MWI
as kvm_mwi, document events as kazoo_data), bound the way Kazoo's consumers bind
(omnipresence, ecallmgr, the kz_datamgr caches); Kazoo's document events dropping
kazoo_vm's caches; and the broker going away under load."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any

import aio_pika
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import Api, login, make_account, with_audio
from rabbitmq import RabbitMq, installed
from tcp_proxy import TcpProxy

from kazoo_vm import appkeys
from kazoo_vm.amqp.kapi import encode, fake_call_id
from kazoo_vm.app import create_app, server_options
from kazoo_vm.config import Config
from kazoo_vm.events import DocChanged, Event
from kazoo_vm.kazoo import naming
from kazoo_vm.kazoo.documents import new_id
from kazoo_vm.services import Services

pytestmark = pytest.mark.skipif(not installed(), reason="rabbitmq-server is not installed "
                                "(Debian: apt-get install rabbitmq-server; .ci/run installs it)")

AUDIO = b"ID3-amqp" * 32
WAIT = 10.0
BOX_MWI_FIELDS = {"App-Name", "App-Version", "Event-Category", "Event-Name", "Msg-ID", "Node", "To", "From",
                  "Message-Account", "From-User", "From-Realm", "To-User", "To-Realm", "Messages-New",
                  "Messages-Saved", "Messages-Urgent", "Messages-Urgent-Saved", "Messages-Waiting", "Presence-ID",
                  "Call-ID"}
DEVICE_MWI_FIELDS = {"App-Name", "App-Version", "Event-Category", "Event-Name", "Msg-ID", "Node", "To",
                     "Messages-New", "Messages-Saved"}
DOC_EVENT_FIELDS = {"App-Name", "App-Version", "Event-Category", "Event-Name", "Msg-ID", "Node", "ID", "Origin-Cache",
                    "Type", "Database", "Rev", "Account-ID", "Is-Soft-Deleted", "Date-Modified", "Date-Created"}


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMq]:
    rabbit = RabbitMq(tmp_path_factory.mktemp("rabbitmq"))
    try:
        rabbit.start()
    except RuntimeError as error:
        pytest.skip(f"RabbitMQ could not start: {error}")
    try:
        yield rabbit
    finally:
        rabbit.stop()


@dataclass
class Heard:
    routing_key: str
    body: dict[str, Any]


class Tap:
    """A queue bound as a Kazoo consumer binds it (exchange declared as Kazoo does)."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[Heard] = asyncio.Queue()
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def bind(self, url: str, exchange_name: str, *keys: str) -> Tap:
        self._connection = await aio_pika.connect(url)
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC, durable=False,
                                                  auto_delete=False)
        queue = await channel.declare_queue(f"test.{uuid.uuid4().hex}", exclusive=True, auto_delete=True)
        for key in keys:
            await queue.bind(exchange, key)
        await queue.consume(self._heard, no_ack=True)
        return self

    async def _heard(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        assert message.content_type == "application/json"
        await self.messages.put(Heard(str(message.routing_key), json.loads(message.body)))

    async def take(self, count: int, timeout: float = WAIT) -> list[Heard]:
        return [await asyncio.wait_for(self.messages.get(), timeout) for _ in range(count)]

    async def quiet(self, seconds: float) -> list[Heard]:
        """What arrives within ``seconds``."""
        got: list[Heard] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(await asyncio.wait_for(self.messages.get(), left))
            except TimeoutError:
                break
        return got

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


@pytest.fixture
async def taps() -> AsyncIterator[list[Tap]]:
    opened: list[Tap] = []
    yield opened
    for tap in opened:
        await tap.close()


async def tap(taps: list[Tap], url: str, exchange: str, *keys: str) -> Tap:
    opened = await Tap().bind(url, exchange, *keys)
    taps.append(opened)
    return opened


@pytest.fixture
async def kazoo_account(services: Services) -> dict[str, Any]:
    return await make_account(services, name="Acme", realm=f"acme-{uuid.uuid4().hex[:6]}.sip.example.com")


async def serve(aiohttp_client: Any, config: Config, couch_url: str, amqp_url: str,
                account: dict[str, Any]) -> Api:
    """kazoo_vm with ``KAZOO_VM_AMQP_URL``, connected; the API of ``account``."""
    app = create_app(replace(config, amqp_url=amqp_url), couch_url)
    server = TestServer(app)
    await server.start_server(**server_options(config))
    client = await aiohttp_client(server)
    api = Api(client, account["_id"], await login(client, account["pvt_api_key"]))
    await asyncio.wait_for(app[appkeys.AMQP].ready.wait(), WAIT)
    return api


@pytest.fixture
async def api(aiohttp_client: Any, config: Config, couch_url: str, broker: RabbitMq,
              kazoo_account: dict[str, Any]) -> Api:
    return await serve(aiohttp_client, config, couch_url, broker.url, kazoo_account)


def app_of(api: Api) -> web.Application:
    return api.client.app


async def new_box(api: Api, mailbox: str, **fields: Any) -> str:
    reply = await api.put("/vmboxes", {"name": f"Box {mailbox}", "mailbox": mailbox, **fields})
    assert reply.status == 201, reply.body
    return str(reply.data["id"])


async def counts(api: Api, box_id: str) -> tuple[int, int]:
    """(new, saved) of a box as the API lists it (0, 0 for a deleted box)."""
    reply = await api.get(f"/vmboxes/{box_id}/messages")
    if reply.status == 404:
        return 0, 0
    assert reply.status == 200, reply.body
    folders = [message.get("folder") for message in reply.data]
    return folders.count("new"), folders.count("saved")


async def put_doc(services: Services, account_id: str, doc: dict[str, Any]) -> dict[str, Any]:
    """A document written straight into the account database (as Kazoo writes it)."""
    await services.store.couch.put_doc(naming.account_db(account_id), doc)
    return doc


async def device(services: Services, account_id: str, **fields: Any) -> dict[str, Any]:
    """A Kazoo ``device`` document (kzd_devices' fields)."""
    return await put_doc(services, account_id, {"_id": new_id(), "pvt_type": "device", "device_type": "sip_device",
                                                "enabled": True, "pvt_account_id": account_id, **fields})


def mwi_keys(realm: str) -> tuple[str, str]:
    """omnipresence's and ecallmgr's bindings for a realm."""
    return f"mwi_updates.{encode(realm)}.*", f"mwi_unsolicited_updates.{encode(realm)}"


def by_to(heard: list[Heard]) -> dict[str, tuple[int, int]]:
    return {item.body["To"]: (item.body["Messages-New"], item.body["Messages-Saved"]) for item in heard}


# -- MWI ------------------------------------------------------------------------------


async def test_message_with_audio_publishes_the_owners_devices_then_the_box(
        api: Api, services: Services, broker: RabbitMq, kazoo_account: dict[str, Any], taps: list[Tap]) -> None:
    realm, account_id = kazoo_account["realm"], api.account_id
    owner = (await services.users.create(account_id, username=f"u{uuid.uuid4().hex[:6]}", password="pw"))["_id"]
    other_user = (await services.users.create(account_id, username=f"v{uuid.uuid4().hex[:6]}", password="pw"))["_id"]
    own_realm = f"phones-{uuid.uuid4().hex[:6]}.example.net"
    await device(services, account_id, owner_id=owner, sip={"username": "desk", "password": "x"})
    await device(services, account_id, owner_id=owner, sip={"username": "cell", "realm": own_realm,
                                                              "method": "password"})
    await device(services, account_id, hotdesk={"users": {owner: {}}}, sip={"username": "hot"})
    # not sent: unsolicited off, IP auth, no username, several hot-desked users, deleted, another owner
    await device(services, account_id, owner_id=owner, sip={"username": "off"}, mwi_unsolicited_updates=False)
    await device(services, account_id, owner_id=owner, sip={"username": "ip", "method": "ip"})
    await device(services, account_id, owner_id=owner, sip={})
    await device(services, account_id, owner_id=owner, hotdesk={"users": {owner: {}, other_user: {}}},
                 sip={"username": "shared"})
    await device(services, account_id, owner_id=owner, sip={"username": "gone"}, pvt_deleted=True)
    await device(services, account_id, owner_id=other_user, sip={"username": "theirs"})
    first, second = await new_box(api, "1001", owner_id=owner), await new_box(api, "1002", owner_id=owner)
    presence = await tap(taps, broker.url, "presence", *mwi_keys(realm), *mwi_keys(own_realm)[1:])
    await with_audio(api, second)
    earlier = await presence.take(4)
    assert [item.body["To"] for item in earlier[3:]] == [f"sip:1002@{realm}"]
    assert set(by_to(earlier[:3]).values()) == {(1, 0)}

    await with_audio(api, first)

    heard = await presence.take(4)
    devices, (box,) = heard[:3], heard[3:]
    assert by_to(devices) == {f"desk@{realm}": (2, 0), f"cell@{own_realm}": (2, 0), f"hot@{realm}": (2, 0)}
    for item in devices:
        assert set(item.body) == DEVICE_MWI_FIELDS
        assert item.body["Event-Name"] == "mwi_unsolicited_update" and item.body["Event-Category"] == "presence"
        assert item.routing_key == f"mwi_unsolicited_updates.{encode(item.body['To'].split('@')[1])}"
    to = f"1001@{realm}"
    assert box.routing_key == f"mwi_updates.{encode(realm)}.1001" and "%2E" in box.routing_key
    assert set(box.body) == BOX_MWI_FIELDS
    assert {key: value for key, value in box.body.items() if key not in ("Msg-ID", "Node")} == {
        "App-Name": "callflow", "App-Version": "4.0.0", "Event-Category": "presence", "Event-Name": "mwi_update",
        "To": f"sip:{to}", "From": f"sip:{to}", "Message-Account": f"sip:{to}", "From-User": "1001",
        "From-Realm": realm, "To-User": "1001", "To-Realm": realm, "Messages-New": 1, "Messages-Saved": 0,
        "Messages-Urgent": 0, "Messages-Urgent-Saved": 0, "Messages-Waiting": "yes", "Presence-ID": to,
        "Call-ID": fake_call_id(to)}
    assert len(box.body["Msg-ID"]) == 32
    assert await presence.quiet(0.3) == []


async def test_each_change_publishes_the_counts_after_it_and_box_changes_none(
        api: Api, broker: RabbitMq, kazoo_account: dict[str, Any], taps: list[Tap]) -> None:
    realm = kazoo_account["realm"]
    presence = await tap(taps, broker.url, "presence", *mwi_keys(realm))
    a, b, c = await new_box(api, "2001"), await new_box(api, "2002"), await new_box(api, "2003")
    numbers = {a: "2001", b: "2002", c: "2003"}

    async def expect(*boxes: str) -> None:
        heard = await presence.take(len(boxes))
        assert [item.routing_key for item in heard] == [f"mwi_updates.{encode(realm)}.{numbers[box]}"
                                                         for box in boxes]
        for item, box in zip(heard, boxes, strict=True):
            new, saved = await counts(api, box)
            assert (item.body["Messages-New"], item.body["Messages-Saved"]) == (new, saved), numbers[box]
            assert item.body["Messages-Waiting"] == ("yes" if new else "no")

    m1 = await with_audio(api, a)
    await expect(a)
    m2 = await with_audio(api, a)
    await expect(a)
    m3 = (await api.put(f"/vmboxes/{a}/messages", {"caller_id_number": "6002"})).data["media_id"]  # JSON only: none
    assert (await api.call("PUT", f"/vmboxes/{a}/messages/{m3}/raw", body=AUDIO,
                           headers={"Content-Type": "audio/mpeg"})).status == 201
    await expect(a)
    assert (await api.post(f"/vmboxes/{a}/messages/{m1}", {"folder": "saved"})).status == 200
    await expect(a)
    assert (await api.post(f"/vmboxes/{a}/messages", {"messages": [m2, m3], "folder": "saved"})).status == 200
    await expect(a)
    moved = await api.post(f"/vmboxes/{a}/messages/{m1}", {"source_id": b})
    assert moved.status == 200, moved.body
    await expect(a, b)
    copied = await api.post(f"/vmboxes/{a}/messages", {"messages": [m2], "source_id": [b, c]})
    assert copied.status == 200, copied.body
    await expect(a, b, c)
    assert (await api.delete(f"/vmboxes/{a}/messages/{m3}")).status == 200
    await expect(a)
    assert (await api.delete(f"/vmboxes/{b}/messages")).status == 200
    await expect(b)
    assert (await api.delete(f"/vmboxes/{c}")).status == 200
    await expect(c)
    assert await counts(api, b) == (0, 0)
    # none after box creation and changes
    assert (await api.post(f"/vmboxes/{a}", {"name": "A", "mailbox": "2001"})).status == 200
    assert (await api.patch(f"/vmboxes/{a}", {"name": "A2"})).status == 200
    await new_box(api, "2004")
    assert await presence.quiet(0.5) == []


# -- document events ------------------------------------------------------------------


async def test_every_vmbox_and_message_write_is_its_document_event(
        api: Api, services: Services, broker: RabbitMq, taps: list[Tap]) -> None:
    written: list[DocChanged] = []

    def note(event: Event) -> None:
        if isinstance(event, DocChanged) and event.doc_type in ("vmbox", "mailbox_message"):
            written.append(event)

    app_of(api)[appkeys.SERVICES].events.subscribe(note)
    # kz_datamgr's cache binds per type: doc_*.<db>.<type>.<id>
    conf = await tap(taps, broker.url, "configuration", "*.*.vmbox.*", "*.*.mailbox_message.*")
    box = await new_box(api, "3001")
    other = await new_box(api, "3002")
    assert (await api.patch(f"/vmboxes/{box}", {"name": "Renamed"})).status == 200
    message = await with_audio(api, box)
    assert (await api.post(f"/vmboxes/{box}/messages/{message}", {"folder": "saved"})).status == 200
    moved = (await api.post(f"/vmboxes/{box}/messages/{message}", {"source_id": other})).data["media_id"]
    assert (await api.delete(f"/vmboxes/{other}/messages/{moved}")).status == 200
    assert (await api.delete(f"/vmboxes/{box}")).status == 200

    heard = [item for item in await conf.take(len(written)) if item.body.get("Account-ID") == api.account_id]
    assert len(heard) == len(written) >= 8
    assert await conf.quiet(0.3) == []
    for event, item in zip(written, heard, strict=True):
        db = naming.encoded_db(event.database)
        assert item.routing_key == f"doc_{event.action}.{db}.{event.doc_type}.{encode(event.doc_id)}"
        # Kazoo 4.3 sends the two dates swapped, and none for a deletion stub; so does kazoo_vm
        dates = {"Date-Modified": event.created, "Date-Created": event.modified}
        dates = {key: value for key, value in dates.items() if value is not None}
        assert set(item.body) == DOC_EVENT_FIELDS - ({"Date-Modified", "Date-Created"} - set(dates))
        assert {key: value for key, value in item.body.items() if key not in ("Msg-ID", "Node")} == {
            "App-Name": "datamgr", "App-Version": "4.0.0", "Event-Category": "configuration",
            "Event-Name": f"doc_{event.action}", "ID": event.doc_id, "Origin-Cache": "kazoo_data_cache",
            "Type": event.doc_type, "Database": db, "Rev": event.rev, "Account-ID": api.account_id,
            "Is-Soft-Deleted": event.soft_deleted, **dates}
    summary = [(item.body["Event-Name"], item.body["Type"], item.body["ID"], item.body["Is-Soft-Deleted"])
               for item in heard]
    assert summary[:3] == [("doc_created", "vmbox", box, False), ("doc_created", "vmbox", other, False),
                           ("doc_edited", "vmbox", box, False)]
    assert ("doc_created", "mailbox_message", message, False) in summary
    assert ("doc_edited", "mailbox_message", message, False) in summary
    assert ("doc_created", "mailbox_message", moved, False) in summary
    assert ("doc_deleted", "mailbox_message", message, False) in summary  # the move: a hard delete
    assert ("doc_deleted", "mailbox_message", moved, True) in summary
    assert summary[-1] == ("doc_deleted", "vmbox", box, True)
    stored = await services.store.couch.get_doc(naming.account_db(api.account_id), box)
    assert heard[-1].body["Rev"] == stored["_rev"]


async def test_a_webhook_attempt_record_is_no_document_event(aiohttp_client: Any, config: Config, couch_url: str,
                                                             broker: RabbitMq, kazoo_account: dict[str, Any],
                                                             taps: list[Tap]) -> None:
    """Kazoo saves attempts with ``publish_change_notice`` false; so does kazoo_vm."""
    api = await serve(aiohttp_client, replace(config, webhooks=True, webhook_poll=0.2), couch_url, broker.url,
                      kazoo_account)
    conf = await tap(taps, broker.url, "configuration", "*.*.webhook_attempt.*", "*.*.vmbox.*")
    reply = await api.put("/webhooks", {"name": "Down", "hook": "object", "uri": "http://127.0.0.1:9/x",
                                        "retries": 1, "custom_data": {"type": "vmbox", "action": "doc_created"}})
    assert reply.status == 201, reply.body
    box = await new_box(api, "3100")
    deadline = time.monotonic() + WAIT
    while not (await api.get("/webhooks/attempts")).data and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert len((await api.get("/webhooks/attempts")).data) == 1
    heard = [item.routing_key for item in await conf.take(1)]
    assert heard == [f"doc_created.{naming.encoded_db(naming.account_db(api.account_id))}.vmbox.{box}"]
    assert await conf.quiet(0.5) == []
    # the hook goes: its deliveries would be retried by the next tests' instances on this store
    assert (await api.delete(f"/webhooks/{reply.data['id']}")).status == 200


# -- Kazoo's document events → kazoo_vm's caches --------------------------------------


async def kazoo_publishes(url: str, event_name: str, database: str, doc_type: str, doc_id: str, *,
                          node: str = "kazoo_apps@kazoo1.example.com", **fields: Any) -> None:
    """What kazoo_data publishes after a write of its own."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange("configuration", aio_pika.ExchangeType.TOPIC, durable=False)
        body = {"App-Name": "datamgr", "App-Version": "4.0.0", "Event-Category": "configuration",
                "Event-Name": event_name, "Msg-ID": uuid.uuid4().hex, "Node": node, "ID": doc_id,
                "Origin-Cache": "kazoo_data_cache", "Type": doc_type, "Database": database, **fields}
        await exchange.publish(aio_pika.Message(json.dumps(body).encode(), content_type="application/json"),
                               f"{event_name}.{database}.{doc_type}.{encode(doc_id)}")
    finally:
        await connection.close()


async def test_a_box_deleted_by_kazoo_takes_no_message_once_its_event_arrives(
        api: Api, services: Services, broker: RabbitMq, config: Config) -> None:
    assert config.cache_ttl == 3.0  # the default: without the event, the box would be served for 3 s
    box_id = await new_box(api, "4001")
    assert (await api.put(f"/vmboxes/{box_id}/messages", {"caller_id_number": "1"})).status == 201  # cached now
    db = naming.account_db(api.account_id)
    stored = await services.store.couch.get_doc(db, box_id)
    await services.store.couch.put_doc(db, {**stored, "pvt_deleted": True})  # Kazoo deletes it
    # kazoo_vm's own Node is ignored: the cached box still takes a message
    own = app_of(api)[appkeys.AMQP].origin.node
    await kazoo_publishes(broker.url, "doc_deleted", naming.encoded_db(db), "vmbox", box_id, node=own)
    await asyncio.sleep(0.2)
    assert (await api.put(f"/vmboxes/{box_id}/messages", {"caller_id_number": "2"})).status == 201

    started = time.monotonic()
    await kazoo_publishes(broker.url, "doc_deleted", naming.encoded_db(db), "vmbox", box_id,
                          **{"Is-Soft-Deleted": True})
    while (await api.put(f"/vmboxes/{box_id}/messages", {"caller_id_number": "3"})).status != 404:
        assert time.monotonic() - started < 0.5
        await asyncio.sleep(0.02)
    print(f"box deleted in CouchDB seen {time.monotonic() - started:.3f} s after Kazoo's event")


async def renumbered_by_kazoo(api: Api, services: Services, url: str, box_id: str, number: str) -> float:
    """Kazoo renumbers a box kazoo_vm has cached, then publishes its doc_edited: seconds
    until kazoo_vm's next message create sees the new number."""

    async def to_of_new_message() -> str:
        reply = await api.put(f"/vmboxes/{box_id}/messages", {"caller_id_number": "1"})
        assert reply.status == 201, reply.body
        return str(reply.data["to"]).split("@")[0]

    before = await to_of_new_message()  # the box is cached now
    db = naming.account_db(api.account_id)
    stored = await services.store.couch.get_doc(db, box_id)
    await services.store.couch.put_doc(db, {**stored, "mailbox": number})
    assert await to_of_new_message() == before  # served from the cache
    started = time.monotonic()
    await kazoo_publishes(url, "doc_edited", naming.encoded_db(db), "vmbox", box_id)
    while await to_of_new_message() != number:
        assert time.monotonic() - started < 0.5
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_a_box_changed_by_kazoo_is_read_again_once_its_event_arrives(
        api: Api, services: Services, broker: RabbitMq) -> None:
    seen = await renumbered_by_kazoo(api, services, broker.url, await new_box(api, "4002"), "4999")
    print(f"box changed in CouchDB seen {seen:.3f} s after Kazoo's event")


# -- the broker going away --------------------------------------------------------------


async def test_broker_stopped_under_load_fails_no_request_and_latest_counts_follow(
        aiohttp_client: Any, config: Config, couch_url: str, broker: RabbitMq, kazoo_account: dict[str, Any],
        services: Services, taps: list[Tap]) -> None:
    proxy = TcpProxy("127.0.0.1", broker.port)  # so that kazoo_vm comes back after the test's queue is bound
    await proxy.start()
    api = await serve(aiohttp_client, config, couch_url, f"amqp://guest:guest@127.0.0.1:{proxy.port}/",
                      kazoo_account)
    realm = kazoo_account["realm"]
    boxes = [await new_box(api, str(5001 + index)) for index in range(5)]
    messages = {box: [await with_audio(api, box)] for box in boxes}
    presence = await tap(taps, broker.url, "presence", *mwi_keys(realm))
    timings: list[float] = []

    async def timed(index: int) -> int:
        box = boxes[index % len(boxes)]
        started = time.monotonic()
        if index % 3 == 2:
            reply = await api.post(f"/vmboxes/{box}/messages/{messages[box][0]}",
                                   {"folder": "saved" if index % 2 else "new"})
            status = reply.status
        else:
            messages[box].append(await with_audio(api, box))
            status = 201
        timings.append(time.monotonic() - started)
        return status

    async def worker(offset: int) -> list[int]:  # one box each: 5 at a time, 8 requests each
        return [await timed(offset + len(boxes) * step) for step in range(8)]

    async def load() -> list[int]:
        done = await asyncio.gather(*(worker(offset) for offset in range(len(boxes))))
        return [status for statuses in done for status in statuses]

    publisher = app_of(api)[appkeys.AMQP]
    statuses = await load()
    before = sorted(timings)
    timings.clear()
    while publisher.pending != (0, 0):
        await asyncio.sleep(0.05)
    await presence.quiet(0.3)

    written: list[DocChanged] = []
    app_of(api)[appkeys.SERVICES].events.subscribe(
        lambda event: written.append(event) if isinstance(event, DocChanged)
        and event.doc_type == "mailbox_message" else None)
    broker.kill()
    await proxy.stop()
    statuses += await load()
    during = sorted(timings)
    assert all(status in (200, 201) for status in statuses), statuses
    assert publisher.pending[1] == len(boxes)

    await asyncio.to_thread(broker.start)
    presence = await tap(taps, broker.url, "presence", *mwi_keys(realm))
    conf = await tap(taps, broker.url, "configuration", "*.*.mailbox_message.*")
    proxy = TcpProxy("127.0.0.1", broker.port, port=proxy.port)
    await proxy.start()
    restarted = time.monotonic()
    heard = await presence.take(len(boxes), timeout=30)
    after = time.monotonic() - restarted
    heard += await presence.quiet(0.5)
    latest = {item.routing_key: (item.body["Messages-New"], item.body["Messages-Saved"]) for item in heard}
    assert len(heard) == len(boxes)  # one per box changed meanwhile: the state, not the history
    for box in boxes:
        number = str(5001 + boxes.index(box))
        assert latest[f"mwi_updates.{encode(realm)}.{number}"] == await counts(api, box)
    docs = [item for item in await conf.quiet(1.0) if item.body.get("Account-ID") == api.account_id]
    median = before[len(before) // 2], during[len(during) // 2]
    print(f"outage: {len(during)} requests, 0 failed; median {median[0] * 1000:.0f} ms with the broker,"
          f" {median[1] * 1000:.0f} ms without (5 at a time); the MWI of {len(boxes)} boxes {after:.2f} s after the"
          f" broker was back; {len(docs)} document events kept and published")
    assert [item.body["Rev"] for item in docs] == [event.rev for event in written]
    await renumbered_by_kazoo(api, services, broker.url, boxes[0], "5999")  # listening again too
    await proxy.stop()


async def test_no_broker_at_startup_changes_nothing_for_the_api_and_closing_is_bounded(
        config: Config, couch_url: str, kazoo_account: dict[str, Any]) -> None:
    from aiohttp.test_utils import TestClient

    from kazoo_vm.embedded_store import free_port

    app = create_app(replace(config, amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/"), couch_url)
    server = TestServer(app)
    await server.start_server(**server_options(config))
    client: TestClient[web.Request, web.Application] = TestClient(server)
    await client.start_server()
    api = Api(client, kazoo_account["_id"], await login(client, kazoo_account["pvt_api_key"]))
    box_id = await new_box(api, "6001")
    await with_audio(api, box_id)
    assert not app[appkeys.AMQP].ready.is_set() and app[appkeys.AMQP].pending[1] == 1
    started = time.monotonic()
    await client.close()
    assert time.monotonic() - started < 5.0
