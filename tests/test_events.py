"""The events kazoo_vm publishes for its changes (what the AMQP publisher and webhooks
hear): document events for every write, MWI after the requests after which crossbar
sends one, and voicemail notifications."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Api, with_audio

from kazoo_vm import appkeys
from kazoo_vm.events import BoxesChanged, DocChanged, Event, Events, VoicemailNotice
from kazoo_vm.kazoo import naming

AUDIO = b"ID3-events" * 20


@pytest.fixture
def heard(api: Api) -> list[Event]:
    events: list[Event] = []
    api.client.app[appkeys.SERVICES].events.subscribe(events.append)
    return events


def doc_events(events: list[Event], doc_type: str) -> list[tuple[str, str]]:
    return [(event.action, event.doc_id) for event in events
            if isinstance(event, DocChanged) and event.doc_type == doc_type]


def mwi(events: list[Event]) -> list[tuple[str, ...]]:
    return [event.box_ids for event in events if isinstance(event, BoxesChanged)]


def notices(events: list[Event]) -> list[tuple[str, str]]:
    return [(event.name, str(event.message.get("_id"))) for event in events if isinstance(event, VoicemailNotice)]


async def new_box(api: Api, mailbox: str) -> str:
    reply = await api.put("/vmboxes", {"name": f"Box {mailbox}", "mailbox": mailbox})
    assert reply.status == 201, reply.body
    return str(reply.data["id"])


async def test_box_create_and_change_are_doc_created_then_doc_edited(api: Api, heard: list[Event]) -> None:
    box_id = await new_box(api, "4100")
    assert (await api.patch(f"/vmboxes/{box_id}", {"name": "Renamed"})).status == 200
    assert doc_events(heard, "vmbox") == [("created", box_id), ("edited", box_id)]
    assert mwi(heard) == []  # crossbar sends no MWI for box changes


async def test_doc_event_names_the_account_and_its_database(api: Api, heard: list[Event]) -> None:
    box_id = await new_box(api, "4101")
    (event,) = [event for event in heard if isinstance(event, DocChanged) and event.doc_id == box_id]
    assert (event.account_id, event.database) == (api.account_id, naming.account_db(api.account_id))
    assert event.rev.startswith("1-") and not event.soft_deleted


async def test_message_without_audio_is_doc_created_without_mwi(api: Api, heard: list[Event]) -> None:
    box_id = await new_box(api, "4102")
    created = await api.put(f"/vmboxes/{box_id}/messages", {"caller_id_number": "6001"})
    assert doc_events(heard, "mailbox_message") == [("created", created.data["media_id"])]
    assert mwi(heard) == [] and notices(heard) == []


async def test_message_with_audio_is_voicemail_new_and_mwi_of_its_box(api: Api, heard: list[Event]) -> None:
    box_id = await new_box(api, "4103")
    message_id = await with_audio(api, box_id)
    # no email is due (no relay): kvm's after-notify action is ``nothing``, so saved at once
    assert notices(heard) == [("voicemail_new", message_id), ("voicemail_saved", message_id)]
    assert mwi(heard) == [(box_id,)]


async def test_first_audio_upload_is_voicemail_new_and_mwi(api: Api, heard: list[Event]) -> None:
    box_id = await new_box(api, "4104")
    message_id = (await api.put(f"/vmboxes/{box_id}/messages", {"caller_id_number": "6001"})).data["media_id"]
    for _ in range(2):
        uploaded = await api.call("PUT", f"/vmboxes/{box_id}/messages/{message_id}/raw", body=AUDIO,
                                  headers={"Content-Type": "audio/mpeg"})
        assert uploaded.status == 201, uploaded.body
    # no email is due (no relay): kvm's after-notify action is ``nothing``, so saved at once
    assert notices(heard) == [("voicemail_new", message_id), ("voicemail_saved", message_id)]
    assert mwi(heard) == [(box_id,), (box_id,)]


async def test_move_is_doc_created_new_id_doc_deleted_old_id_and_mwi_of_both_boxes(api: Api,
                                                                                   heard: list[Event]) -> None:
    home, other = await new_box(api, "4105"), await new_box(api, "4106")
    message_id = await with_audio(api, home)
    heard.clear()
    moved = await api.post(f"/vmboxes/{home}/messages/{message_id}", {"source_id": other})
    assert moved.status == 200, moved.body
    new_id = moved.data["media_id"]
    events = doc_events(heard, "mailbox_message")
    assert ("created", new_id) in events and ("deleted", message_id) in events
    assert mwi(heard) == [(home, other)]


async def test_folder_change_is_doc_edited_and_mwi(api: Api, heard: list[Event]) -> None:
    box_id = await new_box(api, "4107")
    message_id = await with_audio(api, box_id)
    heard.clear()
    assert (await api.post(f"/vmboxes/{box_id}/messages/{message_id}", {"folder": "saved"})).status == 200
    assert doc_events(heard, "mailbox_message") == [("edited", message_id)]
    assert mwi(heard) == [(box_id,)]


async def test_bulk_delete_is_voicemail_deleted_and_soft_deleted_doc_event_per_message(api: Api,
                                                                                     heard: list[Event]) -> None:
    box_id = await new_box(api, "4108")
    ids = [await with_audio(api, box_id), await with_audio(api, box_id)]
    heard.clear()
    assert (await api.delete(f"/vmboxes/{box_id}/messages", {"messages": ids})).status == 200
    assert sorted(notices(heard)) == sorted(("voicemail_deleted", message_id) for message_id in ids)
    deleted = [event for event in heard if isinstance(event, DocChanged) and event.doc_type == "mailbox_message"]
    assert sorted(event.doc_id for event in deleted) == sorted(ids)
    assert all(event.action == "deleted" and event.soft_deleted for event in deleted)
    assert all(event.reason == "crossbar_action" for event in heard if isinstance(event, VoicemailNotice))
    assert mwi(heard) == [(box_id,)]


async def test_box_delete_is_voicemail_deleted_per_message_then_mwi(api: Api, heard: list[Event]) -> None:
    box_id = await new_box(api, "4109")
    message_id = await with_audio(api, box_id)
    heard.clear()
    assert (await api.delete(f"/vmboxes/{box_id}")).status == 200
    assert notices(heard) == [("voicemail_deleted", message_id)]
    assert ("deleted", box_id) in doc_events(heard, "vmbox")
    assert mwi(heard) == [(box_id,)]


async def test_a_failing_listener_does_not_fail_the_request(api: Api) -> None:
    def broken(_event: Event) -> None:
        raise RuntimeError("listener down")

    api.client.app[appkeys.SERVICES].events.subscribe(broken)
    reply = await api.put("/vmboxes", {"name": "Still made", "mailbox": "4110"})
    assert reply.status == 201, reply.body


def test_publish_reaches_every_subscriber_until_it_unsubscribes() -> None:
    first: list[Any] = []
    second: list[Any] = []
    events = Events()
    events.subscribe(first.append)
    events.subscribe(second.append)
    events.publish(BoxesChanged("a" * 32, ("b",)))
    events.unsubscribe(first.append)
    events.publish(BoxesChanged("a" * 32, ("c",)))
    assert (first, second) == ([BoxesChanged("a" * 32, ("b",))],
                               [BoxesChanged("a" * 32, ("b",)), BoxesChanged("a" * 32, ("c",))])


def test_without_an_amqp_url_no_amqp_library_is_loaded() -> None:
    import subprocess
    import sys

    code = ("import sys; from kazoo_vm.app import create_app; from kazoo_vm.config import Config; "
            "create_app(Config(), 'http://127.0.0.1:1'); print('aio_pika' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "False"
