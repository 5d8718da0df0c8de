"""Legacy (pre-MODB) messages: listed, fetched by old id, migrated on change, and by CLI."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid

import pytest
from conftest import Api, assert_error, stored_doc

from kazoo_vm import appkeys
from kazoo_vm.config import PROJECT_ROOT
from kazoo_vm.kazoo import naming
from kazoo_vm.kazoo.documents import gregorian_now
from kazoo_vm.services import Services

DAY = 86400
AUDIO = b"ID3-legacy-audio" * 64


async def legacy_box(services: Services, account_id: str, ages_in_days: list[int]) -> tuple[str, list[str]]:
    """A box as Kazoo 3.x left it: a ``messages`` array, audio in private_media docs."""
    db = naming.account_db(account_id)
    box_id, now = uuid.uuid4().hex, gregorian_now()
    media_ids = [uuid.uuid4().hex for _ in ages_in_days]
    for media_id in media_ids:
        await services.store.couch.put_doc(db, {
            "_id": media_id, "pvt_type": "private_media", "source_id": box_id, "media_source": "recording",
            "_attachments": {f"{media_id}.mp3": {"content_type": "audio/mpeg",
                                                 "data": base64.b64encode(AUDIO).decode()}}})
    await services.store.couch.put_doc(db, {
        "_id": box_id, "name": "Old box", "mailbox": "5000", "pvt_type": "vmbox", "pvt_vsn": "1",
        "pvt_account_id": account_id, "pvt_created": now - 400 * DAY, "pvt_modified": now - 400 * DAY,
        "messages": [{"media_id": media_id, "timestamp": now - age * DAY, "folder": "new", "from": "1001@old.realm",
                      "to": "5000@old.realm", "caller_id_number": "1001", "caller_id_name": "Old Caller",
                      "call_id": f"call-{index}", "length": 2000}
                     for index, (media_id, age) in enumerate(zip(media_ids, ages_in_days, strict=True))]})
    return box_id, media_ids


async def test_legacy_messages_are_listed_with_the_box(api: Api, services: Services) -> None:
    box_id, media_ids = await legacy_box(services, api.account_id, [1, 2])
    listing = await api.get(f"/vmboxes/{box_id}/messages")
    assert [row["media_id"] for row in listing.data] == media_ids


async def test_legacy_messages_count_in_box_listing(api: Api, services: Services) -> None:
    await legacy_box(services, api.account_id, [1, 2])
    assert (await api.get("/vmboxes")).data[0]["messages"] == 2


async def test_legacy_message_is_fetched_by_old_id(api: Api, services: Services) -> None:
    box_id, media_ids = await legacy_box(services, api.account_id, [1])
    reply = await api.get(f"/vmboxes/{box_id}/messages/{media_ids[0]}")
    assert reply.status == 200
    assert reply.data["caller_id_name"] == "Old Caller"


async def test_legacy_audio_is_served_by_old_id(api: Api, services: Services) -> None:
    box_id, media_ids = await legacy_box(services, api.account_id, [1])
    reply = await api.get(f"/vmboxes/{box_id}/messages/{media_ids[0]}/raw")
    assert reply.status == 200 and reply.body == AUDIO


async def test_folder_change_migrates_legacy_message_into_its_modb(api: Api, services: Services) -> None:
    box_id, media_ids = await legacy_box(services, api.account_id, [1])
    reply = await api.post(f"/vmboxes/{box_id}/messages/{media_ids[0]}", {"folder": "saved"})
    assert reply.status == 200, reply.body
    new_id = reply.data["media_id"]
    assert new_id.endswith("-" + media_ids[0]) and reply.data["folder"] == "saved"
    doc = await stored_doc(services, naming.modb_of_message(api.account_id, new_id) or "", new_id)
    assert doc["pvt_previous_id"] == media_ids[0] and doc["pvt_moved_to_modb"] == "true"
    assert doc["_attachments"]
    box = await stored_doc(services, naming.account_db(api.account_id), box_id)
    assert box["messages"] == []


async def test_migrated_message_audio_is_a_real_attachment(api: Api, services: Services) -> None:
    box_id, media_ids = await legacy_box(services, api.account_id, [1])
    new_id = (await api.post(f"/vmboxes/{box_id}/messages/{media_ids[0]}", {"folder": "saved"})).data["media_id"]
    assert (await api.get(f"/vmboxes/{box_id}/messages/{new_id}/raw")).body == AUDIO


async def test_bulk_folder_change_reports_migrated_new_ids(api: Api, services: Services) -> None:
    box_id, media_ids = await legacy_box(services, api.account_id, [1, 2])
    reply = await api.post(f"/vmboxes/{box_id}/messages", {"messages": media_ids, "folder": "saved"})
    assert sorted(id_.split("-")[1] for id_ in reply.data["succeeded"]) == sorted(media_ids)


async def test_bulk_folder_change_resent_after_migration_reports_the_migrated_ids(api: Api,
                                                                                services: Services) -> None:
    box_id, media_ids = await legacy_box(services, api.account_id, [1, 2])
    first = await api.post(f"/vmboxes/{box_id}/messages", {"messages": media_ids, "folder": "saved"})
    again = await api.post(f"/vmboxes/{box_id}/messages", {"messages": media_ids, "folder": "saved"})
    assert again.status == 200
    assert sorted(again.data["succeeded"]) == sorted(first.data["succeeded"])
    assert "failed" not in again.data


async def test_bulk_delete_migrates_then_deletes_legacy_messages(api: Api, services: Services) -> None:
    box_id, media_ids = await legacy_box(services, api.account_id, [1])
    reply = await api.delete(f"/vmboxes/{box_id}/messages")
    assert [id_.split("-")[1] for id_ in reply.data["succeeded"]] == media_ids
    assert (await api.get(f"/vmboxes/{box_id}/messages")).data == []


async def test_legacy_message_older_than_retention_refuses_change(api: Api, services: Services) -> None:
    box_id, media_ids = await legacy_box(services, api.account_id, [200])
    data = assert_error(await api.post(f"/vmboxes/{box_id}/messages/{media_ids[0]}", {"folder": "saved"}),
                        400, "validation error")
    assert "date_range" in data[media_ids[0]]
    box = await stored_doc(services, naming.account_db(api.account_id), box_id)
    assert len(box["messages"]) == 1


async def test_migration_stopped_after_copy_loses_nothing_and_is_not_listed_twice(api: Api,
                                                                                 services: Services) -> None:
    box_id, media_ids = await legacy_box(services, api.account_id, [1])

    async def crash(point: str) -> None:
        if point == "migrate:after_copy":
            raise RuntimeError("simulated crash")

    storage = api.client.app[appkeys.SERVICES].messages
    storage.fault = crash
    assert (await api.post(f"/vmboxes/{box_id}/messages/{media_ids[0]}", {"folder": "saved"})).status == 500
    storage.fault = None
    listing = (await api.get(f"/vmboxes/{box_id}/messages")).data
    assert len(listing) == 1
    retried = await api.post(f"/vmboxes/{box_id}/messages/{media_ids[0]}", {"folder": "saved"})
    assert retried.status == 200
    assert [row["media_id"] for row in (await api.get(f"/vmboxes/{box_id}/messages")).data] == [
        retried.data["media_id"]]


def run_migrate(couch_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAZOO_VM_COUCH_URL": couch_url}
    return subprocess.run([sys.executable, "-m", "kazoo_vm", "migrate", *args], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)


async def test_migrate_command_moves_every_legacy_message_whatever_its_age(api: Api, services: Services,
                                                                           couch_url: str) -> None:
    box_id, media_ids = await legacy_box(services, api.account_id, [1, 200, 400])
    result = run_migrate(couch_url, "--account", api.account_id)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"boxes": 1, "migrated": 3, "failed": 0}
    assert f"box {box_id}: migrated 3" in result.stderr
    box = await stored_doc(services, naming.account_db(api.account_id), box_id)
    assert box["messages"] == []


async def test_migrate_command_run_again_has_nothing_left(api: Api, services: Services, couch_url: str) -> None:
    await legacy_box(services, api.account_id, [1])
    run_migrate(couch_url, "--account", api.account_id)
    assert json.loads(run_migrate(couch_url, "--account", api.account_id).stdout)["migrated"] == 0


@pytest.mark.parametrize("box", ["../x", "a/b"])
def test_migrate_command_rejects_bad_box_ids(couch_url: str, box: str) -> None:
    assert run_migrate(couch_url, "--account", "a" * 32, "--box", box).returncode == 2


