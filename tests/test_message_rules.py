"""Kazoo's rules for message documents and ids as a client meets them: message ids of
every month (January and December included), the box id ``messages``, the retention age
of documents Kazoo wrote without ``utc_seconds``, the history of a message moved twice,
message names in an unknown time zone, and the names given to uploaded audio."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import Api, assert_error

from kazoo_vm.kazoo import naming
from kazoo_vm.services import Services
from kazoo_vm.storage.couch import Attachment

GREGORIAN_UNIX_OFFSET = 62167219200
DAY = 86400
RETENTION_MESSAGE = "this message is prior to retention policy, no update operation is permitted"
AUDIO = b"ID3\x04\x00\x00" + bytes(range(256))


def gregorian_now() -> int:
    return int(time.time()) + GREGORIAN_UNIX_OFFSET


def gregorian(moment: datetime) -> int:
    return int(moment.timestamp()) + GREGORIAN_UNIX_OFFSET


async def create(api: Api, box: str, **metadata: Any) -> dict[str, Any]:
    reply = await api.put(f"/vmboxes/{box}/messages", metadata)
    assert reply.status == 201, reply.body
    return dict(reply.data)


async def stored(services: Services, account_id: str, message_id: str) -> dict[str, Any]:
    db = naming.modb_of_message(account_id, message_id)
    assert db is not None, message_id
    return await services.store.couch.get_doc(db, message_id)


async def rewrite(services: Services, account_id: str, message_id: str, **changes: Any) -> None:
    """Change a stored message behind the API's back (``None`` removes a field)."""
    doc = await stored(services, account_id, message_id)
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    await services.store.couch.put_doc(naming.modb_of_message(account_id, message_id) or "", doc)


# -- message ids of every month --------------------------------------------------------


@pytest.mark.parametrize("month", [1, 12])
async def test_message_of_january_and_december_is_found_by_its_id(api: Api, vmbox: dict[str, Any],
                                                                   services: Services, month: int) -> None:
    year = datetime.now(UTC).year - 1
    stamp = gregorian(datetime(year, month, 15, 12, tzinfo=UTC))
    created = await create(api, vmbox["id"], timestamp=stamp, caller_id_number="6001")
    message_id = created["media_id"]
    assert message_id.startswith(f"{year}{month:02d}-")
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{message_id}")
    assert reply.status == 200, reply.body
    assert (reply.data["media_id"], reply.data["timestamp"]) == (message_id, stamp)
    doc = await services.store.couch.get_doc(naming.modb(api.account_id, year, month), message_id)
    assert doc["metadata"]["caller_id_number"] == "6001"


async def test_listing_across_new_year_finds_december_and_january(api: Api, vmbox: dict[str, Any]) -> None:
    year = datetime.now(UTC).year - 1
    stamps = [gregorian(datetime(year, 12, 20, tzinfo=UTC)), gregorian(datetime(year + 1, 1, 10, tzinfo=UTC))]
    ids = [(await create(api, vmbox["id"], timestamp=stamp))["media_id"] for stamp in stamps]
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages", params={
        "created_from": str(gregorian(datetime(year, 12, 15, tzinfo=UTC))),
        "created_to": str(gregorian(datetime(year + 1, 1, 14, tzinfo=UTC))), "ascending": "true"})
    assert reply.status == 200, reply.body
    assert [row["media_id"] for row in reply.data] == ids


@pytest.mark.parametrize("day, hour", [(4, 12), (31, 23)])  # 31st 23:00 UTC: April already east of UTC
async def test_message_names_its_monthly_database_as_kazoo_does(api: Api, vmbox: dict[str, Any],
                                                                services: Services, day: int, hour: int) -> None:
    """``pvt_account_db`` is ``account%2Fab%2Fcd%2F<rest>-YYYYMM`` of the UTC month (the
    suite runs in UTC+14), ``/`` sent as ``%2F``."""
    stamp = gregorian(datetime(2026, 3, day, hour, tzinfo=UTC))
    created = await create(api, vmbox["id"], timestamp=stamp)
    doc = await stored(services, api.account_id, created["media_id"])
    account_id = api.account_id
    assert doc["pvt_account_db"] == f"account%2F{account_id[:2]}%2F{account_id[2:4]}%2F{account_id[4:]}-202603"


@pytest.mark.parametrize("month", ["00", "13"])
async def test_message_id_of_no_month_is_unknown(api: Api, vmbox: dict[str, Any], month: str) -> None:
    message_id = f"2024{month}-{uuid.uuid4().hex}"
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{message_id}")
    assert assert_error(reply, 404, "bad_identifier")["cause"] == message_id


async def test_box_id_messages_is_refused(api: Api) -> None:
    reply = await api.put("/vmboxes", {"id": "messages", "name": "Clash", "mailbox": "3999"})
    data = assert_error(reply, 400, "validation error")
    assert data["id"]["pattern"]["value"] == "messages"
    listing = await api.get("/vmboxes/messages")
    assert (listing.status, listing.data) == (200, [])


# -- retention age of documents without utc_seconds ------------------------------------


@pytest.mark.parametrize("kept", ["timestamp", "metadata", "pvt_created"])
async def test_retention_age_of_a_message_without_utc_seconds(api: Api, vmbox: dict[str, Any],
                                                              services: Services, kept: str) -> None:
    """Kazoo's age of a message is the first of utc_seconds, timestamp,
    metadata.timestamp and pvt_created that is set."""
    old = gregorian_now() - 200 * DAY
    created = await create(api, vmbox["id"], timestamp=old)
    message_id = created["media_id"]
    doc = await stored(services, api.account_id, message_id)
    metadata = {key: value for key, value in doc["metadata"].items() if key != "timestamp" or kept == "metadata"}
    await rewrite(services, api.account_id, message_id, utc_seconds=None, metadata=metadata,
                  timestamp=old if kept == "timestamp" else None,
                  pvt_created=old if kept == "pvt_created" else gregorian_now())
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{message_id}")
    assert reply.status == 200, reply.body
    assert (reply.data["folder"], reply.data["retention"], reply.data["retention_message"]) == (
        "deleted", "enforced", RETENTION_MESSAGE)
    refused = await api.post(f"/vmboxes/{vmbox['id']}/messages/{message_id}", {"folder": "saved"})
    assert refused.status == 400, refused.body


@pytest.mark.parametrize("stamps", [{}, {"utc_seconds": 0, "pvt_created": None}, {"utc_seconds": True}],
                         ids=["recent", "no-time", "boolean"])
async def test_message_without_an_old_time_is_not_prior_to_retention(api: Api, vmbox: dict[str, Any],
                                                                      services: Services,
                                                                      stamps: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"])
    message_id = created["media_id"]
    doc = await stored(services, api.account_id, message_id)
    metadata = {key: value for key, value in doc["metadata"].items() if key != "timestamp"}
    await rewrite(services, api.account_id, message_id, metadata=metadata,
                  **{"utc_seconds": None, "pvt_created": gregorian_now(), **stamps})
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{message_id}")
    assert reply.status == 200, reply.body
    assert "retention" not in reply.data
    changed = await api.post(f"/vmboxes/{vmbox['id']}/messages/{message_id}", {"folder": "saved"})
    assert changed.status == 200, changed.body
    assert changed.data["folder"] == "saved"


# -- moves ---------------------------------------------------------------------------------


async def test_history_of_a_message_moved_twice(api: Api, vmbox: dict[str, Any], services: Services) -> None:
    first = vmbox["id"]
    second = (await api.put("/vmboxes", {"name": "Second", "mailbox": "3001"})).data["id"]
    third = (await api.put("/vmboxes", {"name": "Third", "mailbox": "3002", "timezone": "Europe/Paris"})).data["id"]
    message_id = (await create(api, first, caller_id_number="6001"))["media_id"]
    for source, destination in ((first, second), (second, third)):
        reply = await api.post(f"/vmboxes/{source}/messages/{message_id}", {"source_id": destination})
        assert reply.status == 200, reply.body
        message_id = reply.data["media_id"]
    doc = await stored(services, api.account_id, message_id)
    assert doc["history"] == [first, second]
    assert doc["source_id"] == third
    assert doc["metadata"]["to"].startswith("3002@")
    assert doc["metadata"]["caller_id_number"] == "6001"
    assert re.fullmatch(r"mailbox 3002 message \d{4}-\d{2}-\d{2} \d{1,2}:\d{1,2}:\d{1,2}", doc["name"]), doc["name"]


# -- message names -------------------------------------------------------------------------


async def test_message_name_in_an_unknown_time_zone_is_utc(api: Api, services: Services) -> None:
    fetched = (await api.get("")).data
    changed = await api.post("", {**fetched, "timezone": "Mars/Olympus_Mons"})
    assert (changed.status, changed.data["timezone"]) == (200, "Mars/Olympus_Mons"), changed.body
    box = (await api.put("/vmboxes", {"name": "Nowhere", "mailbox": "3100"})).data["id"]
    stamp = gregorian(datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC))
    created = await create(api, box, timestamp=stamp)
    doc = await stored(services, api.account_id, created["media_id"])
    assert doc["name"] == "mailbox 3100 message 2026-03-04 5:6:7 UTC"


async def test_message_name_in_a_known_time_zone_has_no_suffix(api: Api, services: Services) -> None:
    box = (await api.put("/vmboxes", {"name": "Tokyo", "mailbox": "3101", "timezone": "Asia/Tokyo"})).data["id"]
    stamp = gregorian(datetime(2026, 1, 31, 15, 0, 9, tzinfo=UTC))
    created = await create(api, box, timestamp=stamp)
    doc = await stored(services, api.account_id, created["media_id"])
    assert doc["name"] == "mailbox 3101 message 2026-02-01 0:0:9"


# -- names of uploaded audio ---------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "filename", "expected"), [
    ("audio/flac", None, r"uploaded_file_\d+\."),
    ("application/octet-stream", None, r"uploaded_file_\d+\.bin"),
    ("audio/ogg", None, r"uploaded_file_\d+\.oga"),
    ("audio/mpeg", "   ", r"uploaded_file_\d+\.mp3"),
    ("audio/mpeg", "greeting.WAV", r"greeting\.WAV"),
    ("audio/x-wav", "a/b c", r"a_bc\.wav"),
    ("audio/mpeg", "x" * 300, "x{200}\\.mp3"),
])
async def test_upload_names(api: Api, vmbox: dict[str, Any], services: Services, content_type: str,
                            filename: str | None, expected: str) -> None:
    created = await create(api, vmbox["id"])
    params = {} if filename is None else {"filename": filename}
    reply = await api.call("PUT", f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw", body=AUDIO,
                           headers={"Content-Type": content_type}, params=params)
    assert reply.status == 201, reply.body
    doc = await stored(services, api.account_id, created["media_id"])
    (name,) = doc["_attachments"]
    assert re.fullmatch(expected, name), name
    assert doc["_attachments"][name]["content_type"] == content_type


async def test_moved_copy_is_stamped_as_new(api: Api, vmbox: dict[str, Any], services: Services,
                                            account: dict[str, Any]) -> None:
    other = (await api.put("/vmboxes", {"name": "Other", "mailbox": "3001"})).data["id"]
    old = gregorian_now() - 5 * DAY
    source_id = (await create(api, vmbox["id"], timestamp=old, caller_id_number="6001"))["media_id"]
    before = gregorian_now()
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages/{source_id}", {"source_id": other})
    after = gregorian_now()
    assert reply.status == 200, reply.body
    copy = await stored(services, api.account_id, reply.data["media_id"])
    assert before <= copy["pvt_created"] <= after
    assert copy["pvt_created"] == copy["pvt_modified"] == copy["utc_seconds"] == copy["metadata"]["timestamp"]
    assert copy["pvt_account_db"] == naming.encoded_db(naming.modb_of_message(api.account_id, copy["_id"]) or "")
    assert "pvt_deleted" not in copy
    realm = account["realm"]
    assert {key: copy["metadata"][key] for key in ("to", "to_user", "to_realm", "folder", "media_id")} == {
        "to": f"3001@{realm}", "to_user": "3001", "to_realm": realm, "folder": "new", "media_id": copy["_id"]}


async def test_message_stored_without_metadata_can_be_moved_and_filed(api: Api, vmbox: dict[str, Any],
                                                                      services: Services) -> None:
    other = (await api.put("/vmboxes", {"name": "Other", "mailbox": "3001"})).data["id"]
    first = (await create(api, vmbox["id"]))["media_id"]
    second = (await create(api, vmbox["id"]))["media_id"]
    for message_id in (first, second):
        await rewrite(services, api.account_id, message_id, metadata={})
    filed = await api.post(f"/vmboxes/{vmbox['id']}/messages/{first}", {"folder": "saved"})
    assert filed.status == 200, filed.body
    assert (await stored(services, api.account_id, first))["metadata"] == {"folder": "saved"}
    moved = await api.post(f"/vmboxes/{vmbox['id']}/messages/{second}", {"source_id": other})
    assert moved.status == 200, moved.body
    copy = await stored(services, api.account_id, moved.data["media_id"])
    assert (copy["metadata"]["folder"], copy["metadata"]["to_user"]) == ("new", "3001")


async def test_message_stored_without_a_metadata_key_is_filed_with_metadata(api: Api, vmbox: dict[str, Any],
                                                                            services: Services) -> None:
    message_id = (await create(api, vmbox["id"]))["media_id"]
    await rewrite(services, api.account_id, message_id, metadata=None)
    filed = await api.post(f"/vmboxes/{vmbox['id']}/messages/{message_id}", {"folder": "saved"})
    assert filed.status == 200, filed.body
    assert (await stored(services, api.account_id, message_id))["metadata"] == {"folder": "saved"}


async def test_message_stored_without_a_metadata_key_is_moved_with_metadata(api: Api, vmbox: dict[str, Any],
                                                                            services: Services) -> None:
    other = (await api.put("/vmboxes", {"name": "Other", "mailbox": "3001"})).data["id"]
    message_id = (await create(api, vmbox["id"]))["media_id"]
    await rewrite(services, api.account_id, message_id, metadata=None)
    moved = await api.post(f"/vmboxes/{vmbox['id']}/messages/{message_id}", {"source_id": other})
    assert moved.status == 200, moved.body
    copy = await stored(services, api.account_id, moved.data["media_id"])
    assert (copy["metadata"]["folder"], copy["metadata"]["to_user"]) == ("new", "3001")


async def test_reading_a_message_without_folder_files_it_as_new_now(api: Api, vmbox: dict[str, Any],
                                                                    services: Services) -> None:
    created = await create(api, vmbox["id"])
    doc = await stored(services, api.account_id, created["media_id"])
    old = gregorian_now() - 3 * DAY
    await rewrite(services, api.account_id, created["media_id"], pvt_modified=old,
                  metadata={key: value for key, value in doc["metadata"].items() if key != "folder"})
    before = gregorian_now()
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}")
    assert (reply.status, reply.data["folder"]) == (200, "new")
    again = await stored(services, api.account_id, created["media_id"])
    assert again["metadata"]["folder"] == "new"
    assert again["pvt_modified"] >= before


@pytest.mark.parametrize(("caller", "prefix"), [("(415) 555-0100", "415555-0100"), ("***", "unknown"),
                                                ("+1.2_3", "+1.2_3")])
async def test_download_name_keeps_safe_caller_characters(api: Api, services: Services, caller: str,
                                                          prefix: str) -> None:
    box = (await api.put("/vmboxes", {"name": "UTC", "mailbox": "3200", "timezone": "Etc/UTC"})).data["id"]
    stamp = gregorian_now() - DAY
    moment = datetime.fromtimestamp(stamp - GREGORIAN_UNIX_OFFSET, tz=UTC)
    created = await create(api, box, caller_id_number=caller, timestamp=stamp)
    upload = await api.call("PUT", f"/vmboxes/{box}/messages/{created['media_id']}/raw", body=AUDIO,
                            headers={"Content-Type": "audio/mpeg"})
    assert upload.status == 201, upload.body
    # a Kazoo document without metadata.timestamp: its utc_seconds
    doc = await stored(services, api.account_id, created["media_id"])
    await rewrite(services, api.account_id, created["media_id"],
                  metadata={key: value for key, value in doc["metadata"].items() if key != "timestamp"})
    reply = await api.get(f"/vmboxes/{box}/messages/{created['media_id']}/raw")
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Disposition"].startswith(
        f'attachment; filename="{prefix}_{moment:%Y-%m-%d_%H-%M-%S}.mp3"')


async def _utc_box_message(api: Api, caller: str, stamp: int) -> tuple[str, str]:
    box = (await api.put("/vmboxes", {"name": "UTC", "mailbox": "3210", "timezone": "Etc/UTC"})).data["id"]
    return box, (await create(api, box, caller_id_number=caller, timestamp=stamp))["media_id"]


async def test_download_name_takes_the_metadata_timestamp_over_utc_seconds(api: Api, services: Services) -> None:
    """cb_vmboxes names the file after ``metadata.timestamp``, whatever ``utc_seconds`` says."""
    stamp = gregorian_now() - DAY
    box, message_id = await _utc_box_message(api, "6001", stamp)
    upload = await api.call("PUT", f"/vmboxes/{box}/messages/{message_id}/raw", body=AUDIO,
                            headers={"Content-Type": "audio/mpeg"})
    assert upload.status == 201, upload.body
    await rewrite(services, api.account_id, message_id, utc_seconds=stamp - 7200)
    reply = await api.get(f"/vmboxes/{box}/messages/{message_id}/raw")
    moment = datetime.fromtimestamp(stamp - naming.GREGORIAN_UNIX_OFFSET, tz=UTC)
    assert reply.headers["Content-Disposition"].startswith(
        f'attachment; filename="6001_{moment:%Y-%m-%d_%H-%M-%S}.mp3";')


@pytest.mark.parametrize(("attachment", "suffix"), [("voice.v2.wav", ".wav"), ("voice", "")])
async def test_download_name_takes_the_last_extension_of_the_attachment(api: Api, services: Services,
                                                                       attachment: str, suffix: str) -> None:
    """``filename:extension/1`` of the attachment (Kazoo documents name it as they like)."""
    stamp = gregorian_now() - DAY
    box, message_id = await _utc_box_message(api, "6001", stamp)
    doc = await stored(services, api.account_id, message_id)
    await services.store.couch.put_doc(naming.modb_of_message(api.account_id, message_id) or "", doc,
                                       attachment=Attachment(attachment, "audio/x-wav", AUDIO))
    reply = await api.get(f"/vmboxes/{box}/messages/{message_id}/raw")
    assert reply.status == 200, reply.body
    moment = datetime.fromtimestamp(stamp - naming.GREGORIAN_UNIX_OFFSET, tz=UTC)
    assert reply.headers["Content-Disposition"].startswith(
        f'attachment; filename="6001_{moment:%Y-%m-%d_%H-%M-%S}{suffix}";')


async def test_a_message_claimed_by_a_move_is_left_alone_by_folder_changes(api: Api, vmbox: dict[str, Any],
                                                                           services: Services) -> None:
    """While a move holds its claim (``pvt_moving``), a folder change of the source would
    be lost with it: one message answers 409, a bulk change reports it ``conflict``."""
    message_id = (await create(api, vmbox["id"]))["media_id"]
    await rewrite(services, api.account_id, message_id,
                  pvt_moving={"id": f"{message_id[:6]}-{uuid.uuid4().hex}", "nonce": uuid.uuid4().hex})
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages/{message_id}", {"folder": "saved"})
    assert_error(reply, 409, "datastore_conflict")
    bulk = await api.post(f"/vmboxes/{vmbox['id']}/messages", {"messages": [message_id], "folder": "saved"})
    assert (bulk.status, bulk.data) == (200, {"failed": {message_id: "conflict"}})
    assert (await stored(services, api.account_id, message_id))["metadata"]["folder"] == "new"


async def test_a_box_without_mailbox_number_names_none_in_its_messages(api: Api, vmbox: dict[str, Any],
                                                                       services: Services,
                                                                       account: dict[str, Any]) -> None:
    """Kazoo's schema requires ``mailbox``, but a box document made outside it may lack
    one: messages left in it or moved into it are named and addressed with an empty
    mailbox."""
    bare = uuid.uuid4().hex
    await services.store.couch.put_doc(naming.account_db(api.account_id), {
        "_id": bare, "pvt_type": "vmbox", "name": "Bare", "pvt_account_id": api.account_id})
    message_id = (await create(api, vmbox["id"]))["media_id"]
    moved = await api.post(f"/vmboxes/{vmbox['id']}/messages/{message_id}", {"source_id": bare})
    assert moved.status == 200, moved.body
    left = await create(api, bare)
    realm = account["realm"]
    for new_id in (moved.data["media_id"], left["media_id"]):
        doc = await stored(services, api.account_id, new_id)
        assert doc["name"].startswith("mailbox  message ")
        assert (doc["metadata"]["to"], doc["metadata"]["to_user"], doc["metadata"]["to_realm"]) == (
            f"@{realm}", "", realm)


@pytest.mark.parametrize("odd", ["soon", True])
async def test_a_timestamp_that_is_no_integer_is_not_believed(api: Api, services: Services, odd: Any) -> None:
    """A hand-edited document whose ``metadata.timestamp`` is text or a boolean: the
    download is still named, after ``utc_seconds``."""
    stamp = gregorian_now() - DAY
    box, message_id = await _utc_box_message(api, "6001", stamp)
    upload = await api.call("PUT", f"/vmboxes/{box}/messages/{message_id}/raw", body=AUDIO,
                            headers={"Content-Type": "audio/mpeg"})
    assert upload.status == 201, upload.body
    doc = await stored(services, api.account_id, message_id)
    await rewrite(services, api.account_id, message_id, metadata={**doc["metadata"], "timestamp": odd})
    reply = await api.get(f"/vmboxes/{box}/messages/{message_id}/raw")
    assert reply.status == 200, reply.body
    moment = datetime.fromtimestamp(stamp - naming.GREGORIAN_UNIX_OFFSET, tz=UTC)
    assert reply.headers["Content-Disposition"].startswith(
        f'attachment; filename="6001_{moment:%Y-%m-%d_%H-%M-%S}.mp3";')


async def test_a_timestamp_before_1970_names_the_download_at_the_epoch(api: Api, services: Services) -> None:
    """A hand-edited ``metadata.timestamp`` of 1000 Gregorian seconds (year 0): the
    download is named after 1970-01-01 00:00:00 UTC, the earliest moment it names."""
    box, message_id = await _utc_box_message(api, "6001", gregorian_now() - DAY)
    upload = await api.call("PUT", f"/vmboxes/{box}/messages/{message_id}/raw", body=AUDIO,
                            headers={"Content-Type": "audio/mpeg"})
    assert upload.status == 201, upload.body
    doc = await stored(services, api.account_id, message_id)
    await rewrite(services, api.account_id, message_id, metadata={**doc["metadata"], "timestamp": 1000})
    reply = await api.get(f"/vmboxes/{box}/messages/{message_id}/raw")
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Disposition"].startswith('attachment; filename="6001_1970-01-01_00-00-00.mp3";')


async def test_a_box_timezone_that_is_no_text_gives_way_to_the_account_s(api: Api, services: Services,
                                                                         account: dict[str, Any]) -> None:
    """A hand-edited box whose ``timezone`` is a number: downloads are named in the
    account's zone."""
    stamp = gregorian_now() - DAY
    box, message_id = await _utc_box_message(api, "6001", stamp)
    upload = await api.call("PUT", f"/vmboxes/{box}/messages/{message_id}/raw", body=AUDIO,
                            headers={"Content-Type": "audio/mpeg"})
    assert upload.status == 201, upload.body
    db = naming.account_db(api.account_id)
    await services.store.couch.put_doc(db, {**await services.store.couch.get_doc(db, box), "timezone": 123})
    reply = await api.get(f"/vmboxes/{box}/messages/{message_id}/raw")
    assert reply.status == 200, reply.body
    moment = datetime.fromtimestamp(stamp - naming.GREGORIAN_UNIX_OFFSET, tz=ZoneInfo(account["timezone"]))
    assert reply.headers["Content-Disposition"].startswith(
        f'attachment; filename="6001_{moment:%Y-%m-%d_%H-%M-%S}.mp3";')


async def test_a_transcription_in_the_metadata_wins_over_the_top_level_one(api: Api, vmbox: dict[str, Any],
                                                                           services: Services) -> None:
    message_id = (await create(api, vmbox["id"]))["media_id"]
    doc = await stored(services, api.account_id, message_id)
    await rewrite(services, api.account_id, message_id, transcription={"text": "top", "result": "success"},
                  metadata={**doc["metadata"], "transcription": {"text": "inside", "result": "success"}})
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{message_id}")
    assert reply.data["transcription"] == {"text": "inside", "result": "success"}


async def test_a_from_address_splits_at_its_first_at_sign(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"], **{"from": "6001@a.example.com@b.example.com"})
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}")
    assert (reply.data["from_user"], reply.data["from_realm"]) == ("6001", "a.example.com@b.example.com")
