"""Voicemail-to-email with a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import Api, LoopbackSmtp, login, smtp_tests_lock

from kazoo_vm.app import create_app
from kazoo_vm.config import Config
from kazoo_vm.embedded_store import free_port
from kazoo_vm.kazoo import naming
from kazoo_vm.notify.worker import Notifier, mark_pending
from kazoo_vm.services import Services
from kazoo_vm.storage import notifications
from kazoo_vm.storage.errors import NotFound

AUDIO = b"ID3" + bytes(range(256)) * 40
WAIT = 60.0


@dataclass
class Inbox:
    """What the relay accepted."""

    messages: list[tuple[list[str], EmailMessage]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), parsed))
        return "250 OK"


class Relay(LoopbackSmtp):
    def __init__(self) -> None:
        self.inbox = Inbox()
        super().__init__(self.inbox)


@pytest.fixture
def relay() -> Iterator[Relay]:
    server = Relay()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
async def alone_and_no_email_left(services: Services) -> AsyncIterator[None]:
    """One such test at a time (see conftest.smtp_tests_lock); after it, once its
    instances are closed, its undelivered emails are dropped so that the next test's
    worker does not send them to the next test's relay."""
    with smtp_tests_lock():
        yield
        rows = await services.store.couch.view(notifications.DB, notifications.DESIGN, "by_due", include_docs=True)
        for row in rows:
            await services.notifications.done(row["doc"])


def notify_config(config: Config, relay: Relay) -> Config:
    return replace(config, smtp_url=f"smtp://127.0.0.1:{relay.port}", smtp_from="vm@kazoo-vm.test",
                   notify_poll=0.05, notify_retry=0.1, notify_attempts=50)


AppFactory = Callable[[], Awaitable[Api]]


@pytest.fixture
async def notify_api(aiohttp_client: Any, config: Config, couch_url: str, relay: Relay,
                     account: dict[str, Any]) -> Api:
    client: TestClient[web.Request, web.Application] = await aiohttp_client(
        create_app(notify_config(config, relay), couch_url))
    return Api(client, account["_id"], await login(client, account["pvt_api_key"]))


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = WAIT) -> None:
    """Wait for the background worker: poll ``condition`` until it holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def make_box(api: Api, services: Services, **settings: Any) -> dict[str, Any]:
    owner = await services.users.create(api.account_id, username=f"owner{free_port()}", password="pw",
                                        email="owner@example.com", first_name="Olive", last_name="Owner")
    data = {"name": "Sales", "mailbox": str(free_port()), "owner_id": owner["_id"], "timezone": "Europe/Dublin",
            "notify_email_addresses": ["team@example.com", "OWNER@example.com"], **settings}
    reply = await api.put("/vmboxes", data)
    assert reply.status == 201, reply.body
    return dict(reply.data)


async def leave_message(api: Api, box_id: str) -> str:
    reply = await api.call("PUT", f"/vmboxes/{box_id}/messages", body=AUDIO, headers={"Content-Type": "audio/mpeg"})
    assert reply.status == 201, reply.body
    return str(reply.data["media_id"])


async def message_doc(services: Services, account_id: str, message_id: str) -> dict[str, Any] | None:
    try:
        return (await services.messages.fetch(account_id, message_id))[1]
    except NotFound:  # gone is an answer here; any other store error is not
        return None


def status_of(doc: dict[str, Any] | None) -> str | None:
    return ((doc or {}).get("metadata") or {}).get("notify", {}).get("status")


async def test_email_goes_to_owner_and_box_addresses_once_each(notify_api: Api, services: Services,
                                                               relay: Relay) -> None:
    box = await make_box(notify_api, services)
    await leave_message(notify_api, box["id"])
    await until(lambda: _count(relay, 1))
    recipients, _message = relay.inbox.messages[0]
    assert sorted(address.lower() for address in recipients) == ["owner@example.com", "team@example.com"]


async def _count(relay: Relay, wanted: int) -> bool:
    return len(relay.inbox.messages) >= wanted


async def test_email_has_subject_text_html_and_the_audio(notify_api: Api, services: Services, relay: Relay) -> None:
    box = await make_box(notify_api, services)
    media_id = await leave_message(notify_api, box["id"])
    await until(lambda: _count(relay, 1))
    _to, message = relay.inbox.messages[0]
    assert message["Subject"].startswith("New voicemail from")
    assert message["From"] == "vm@kazoo-vm.test"
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and "Sales (" in text.get_content() and "0:00" in text.get_content()
    assert html is not None and "<h2>" in html.get_content()
    attachments = list(message.iter_attachments())
    assert len(attachments) == 1
    assert attachments[0].get_content() == AUDIO
    raw = await notify_api.get(f"/vmboxes/{box['id']}/messages/{media_id}/raw")
    assert attachments[0].get_filename() == unquote(raw.headers["Content-Disposition"].split("filename*=UTF-8''")[1])


async def test_no_attachment_when_include_message_on_notify_is_false(notify_api: Api, services: Services,
                                                                     relay: Relay) -> None:
    box = await make_box(notify_api, services, include_message_on_notify=False)
    await leave_message(notify_api, box["id"])
    await until(lambda: _count(relay, 1))
    assert list(relay.inbox.messages[0][1].iter_attachments()) == []


@pytest.mark.parametrize(("save", "delete", "expected"), [
    (False, False, "new"), (True, False, "saved"), (False, True, None), (True, True, "saved")])
async def test_after_send_flags(notify_api: Api, services: Services, relay: Relay, save: bool, delete: bool,
                                expected: str | None) -> None:
    box = await make_box(notify_api, services, save_after_notify=save, delete_after_notify=delete)
    media_id = await leave_message(notify_api, box["id"])

    async def settled() -> bool:
        doc = await message_doc(services, notify_api.account_id, media_id)
        return doc is None or status_of(doc) == "sent"

    await until(settled)
    doc = await message_doc(services, notify_api.account_id, media_id)
    if expected is None:
        assert doc is None
        db = naming.modb_of_message(notify_api.account_id, media_id) or ""
        assert not await services.store.couch.db_exists(db) or doc is None
    else:
        assert doc is not None and doc["metadata"]["folder"] == expected
    assert len(relay.inbox.messages) == 1


async def test_notification_status_is_visible_in_message_metadata(notify_api: Api, services: Services,
                                                                  relay: Relay) -> None:
    box = await make_box(notify_api, services)
    media_id = await leave_message(notify_api, box["id"])
    await until(lambda: _count(relay, 1))

    async def sent() -> bool:
        reply = await notify_api.get(f"/vmboxes/{box['id']}/messages/{media_id}")
        return bool(reply.data.get("notify", {}).get("status") == "sent")

    await until(sent)
    notify = (await notify_api.get(f"/vmboxes/{box['id']}/messages/{media_id}")).data["notify"]
    assert notify["attempts"] == 1 and isinstance(notify["sent_at"], int)


async def test_box_without_recipients_sends_nothing_and_keeps_message(notify_api: Api, relay: Relay) -> None:
    box = (await notify_api.put("/vmboxes", {"name": "Quiet", "mailbox": "7777", "delete_after_notify": True})).data
    media_id = await leave_message(notify_api, box["id"])
    reply = await notify_api.get(f"/vmboxes/{box['id']}/messages/{media_id}")
    assert reply.status == 200 and "notify" not in reply.data
    assert relay.inbox.messages == []


async def test_message_without_audio_is_not_notified_until_audio_comes(notify_api: Api, services: Services,
                                                                       relay: Relay) -> None:
    box = await make_box(notify_api, services)
    media_id = (await notify_api.put(f"/vmboxes/{box['id']}/messages", {"caller_id_number": "6001"})).data["media_id"]
    assert "notify" not in (await notify_api.get(f"/vmboxes/{box['id']}/messages/{media_id}")).data
    await notify_api.call("PUT", f"/vmboxes/{box['id']}/messages/{media_id}/raw", body=AUDIO,
                          headers={"Content-Type": "audio/mpeg"})
    await until(lambda: _count(relay, 1))


async def test_a_round_between_the_pointer_and_the_pending_mark_loses_no_email(
        api: Api, config: Config, services: Services, relay: Relay) -> None:
    # The upload handler writes the pointer, then marks the message pending: a worker's
    # round can fall between the two writes and see a message with nothing pending.
    box = await make_box(api, services)
    media_id = (await api.put(f"/vmboxes/{box['id']}/messages", {"caller_id_number": "6002"})).data["media_id"]
    await services.notifications.schedule(api.account_id, media_id)
    notifier = Notifier(notify_config(config, relay), services)
    await notifier.round()
    db, doc = await services.messages.fetch(api.account_id, media_id)
    mark_pending(doc)
    await services.messages.save(db, doc)

    async def delivered() -> bool:
        await notifier.round()
        return await _count(relay, 1)

    await until(delivered)


async def test_relay_down_keeps_message_and_delivers_when_back(notify_api: Api, services: Services,
                                                               relay: Relay) -> None:
    relay.stop()
    box = await make_box(notify_api, services, delete_after_notify=True)
    media_id = await leave_message(notify_api, box["id"])

    async def retried() -> bool:
        doc = await message_doc(services, notify_api.account_id, media_id)
        return int(((doc or {}).get("metadata") or {}).get("notify", {}).get("attempts", 0)) >= 2

    await until(retried)
    doc = await message_doc(services, notify_api.account_id, media_id)
    assert doc is not None and doc["metadata"]["notify"]["last_error"]
    assert doc["metadata"]["folder"] == "new"
    relay.start()
    await until(lambda: _count(relay, 1))

    async def deleted() -> bool:
        return await message_doc(services, notify_api.account_id, media_id) is None

    await until(deleted)


async def test_two_instances_email_each_message_exactly_once(aiohttp_client: Any, config: Config, couch_url: str,
                                                             relay: Relay, account: dict[str, Any],
                                                             services: Services) -> None:
    settings = notify_config(config, relay)
    first = await aiohttp_client(create_app(settings, couch_url))
    second = await aiohttp_client(create_app(settings, couch_url))
    api = Api(first, account["_id"], await login(first, account["pvt_api_key"]))
    box = await make_box(api, services)
    ids = [await leave_message(api, box["id"]) for _ in range(50)]
    await until(lambda: _count(relay, 50), timeout=120)

    async def all_sent() -> bool:
        docs = await services.messages.fetch_many(account["_id"], ids)
        return all(status_of(doc) == "sent" for _db, doc in docs.values())

    await until(all_sent, timeout=60)
    assert len(relay.inbox.messages) == 50
    assert second.app is not None


async def test_pending_notifications_are_delivered_after_a_restart(aiohttp_client: Any, config: Config,
                                                                   couch_url: str, relay: Relay,
                                                                   account: dict[str, Any],
                                                                   services: Services) -> None:
    relay.stop()
    settings = notify_config(config, relay)
    first = await aiohttp_client(create_app(settings, couch_url))
    api = Api(first, account["_id"], await login(first, account["pvt_api_key"]))
    box = await make_box(api, services)
    media_id = await leave_message(api, box["id"])
    await first.close()
    doc = await message_doc(services, account["_id"], media_id)
    assert status_of(doc) in ("pending", "sending")
    relay.start()
    restarted = await aiohttp_client(create_app(settings, couch_url))
    assert restarted.app is not None
    await until(lambda: _count(relay, 1))


async def test_a_stopping_instance_hands_back_its_claim(aiohttp_client: Any, config: Config, couch_url: str,
                                                        relay: Relay, account: dict[str, Any],
                                                        services: Services) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # a relay that accepts and never greets: the send hangs until the client leaves
        writer.close()

    hanging = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = hanging.sockets[0].getsockname()[1]
    settings = replace(notify_config(config, relay), smtp_url=f"smtp://127.0.0.1:{port}")
    first = await aiohttp_client(create_app(settings, couch_url))
    api = Api(first, account["_id"], await login(first, account["pvt_api_key"]))
    box = await make_box(api, services)
    media_id = await leave_message(api, box["id"])

    async def sending() -> bool:
        return status_of(await message_doc(services, account["_id"], media_id)) == "sending"

    await until(sending)
    await first.close()
    hanging.close()
    doc = await message_doc(services, account["_id"], media_id)
    assert doc is not None and "pvt_notify_claim" not in doc
    assert status_of(doc) == "pending"
