"""Voicemail messages (Kazoo crossbar ``vmboxes`` E7–E17): behaviour rules 37–90 of
kazoo-voicemail.md section 6 as adjusted by decisions.md, pagination across monthly
databases, messages written by Kazoo itself, crash safety of moves, and the seed page's
curl requests."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import struct
import time
import uuid
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import Api, Reply, assert_error, build_multipart, login

import kazoo_vm.appkeys
from kazoo_vm.app import create_app
from kazoo_vm.config import Config
from kazoo_vm.kazoo import naming
from kazoo_vm.services import Services

GREGORIAN_UNIX_OFFSET = 62167219200
DAY = 86400
RETENTION_SECONDS = 93 * DAY + 3600
MAX_RANGE = 2682000
MESSAGE_ID = re.compile(r"^\d{6}-[0-9a-f]{32}$")
METADATA_KEYS = {"media_id", "call_id", "caller_id_name", "caller_id_number", "from", "from_user", "from_realm",
                 "to", "to_user", "to_realm", "length", "timestamp", "folder"}
SUMMARY_KEYS = {"timestamp", "from", "to", "caller_id_number", "caller_id_name", "call_id", "folder", "length",
                "media_id"}
RETENTION_MESSAGE = "this message is prior to retention policy, no update operation is permitted"
RETENTION_ERROR = "cannot make changes to messages prior to retention duration"
EMPTY_SOURCE = "empty source_id is specified. please set a single or a list of source_ids."
NO_MESSAGES = "No array of message ids are specified"
NO_AUDIO = "voicemail message does not have any audio file"
AUDIO = b"ID3\x04\x00\x00" + bytes(range(256)) * 3
WAV = b"RIFF\x24\x08\x00\x00WAVEfmt " + bytes(range(200))


# -- helpers ------------------------------------------------------------------------


def gregorian_now() -> int:
    return int(time.time()) + GREGORIAN_UNIX_OFFSET


def to_gregorian(moment: datetime) -> int:
    return int(moment.timestamp()) + GREGORIAN_UNIX_OFFSET


def utc(gregorian: int) -> datetime:
    return datetime.fromtimestamp(gregorian - GREGORIAN_UNIX_OFFSET, tz=UTC)


def yyyymm(gregorian: int) -> str:
    moment = utc(gregorian)
    return f"{moment.year:04d}{moment.month:02d}"


def local(gregorian: int, tz: str) -> datetime:
    return utc(gregorian).astimezone(ZoneInfo(tz))


def download_name(caller: str, gregorian: int, tz: str, ext: str) -> str:
    moment = local(gregorian, tz)
    return f"{caller}_{moment:%Y-%m-%d}_{moment:%H:%M:%S}.{ext}"


def disposition(name: str) -> str:
    """The ``Content-Disposition`` of a download named ``name`` (ASCII, as Kazoo builds it)."""
    return f'attachment; filename="{name.replace(":", "-")}"; filename*=UTF-8\'\'{name.replace(":", "%3A")}'


def hex_id() -> str:
    return uuid.uuid4().hex


multipart = build_multipart


def json_part(data: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    return ({"Content-Disposition": 'form-data; name="content"; filename="message.json"',
             "Content-Type": "application/json"}, json.dumps({"data": data}).encode())


def audio_part(audio: bytes = AUDIO, content_type: str = "audio/mpeg") -> tuple[dict[str, str], bytes]:
    return ({"Content-Disposition": 'form-data; name="content"; filename="voice.mp3"',
             "Content-Type": content_type}, audio)


async def new_box(api: Api, name: str, mailbox: str, **fields: Any) -> str:
    reply = await api.put("/vmboxes", {"name": name, "mailbox": mailbox, **fields})
    assert reply.status == 201, reply.body
    return str(reply.data["id"])


async def create(api: Api, box: str, **metadata: Any) -> dict[str, Any]:
    """A message without audio (JSON create); its metadata."""
    reply = await api.put(f"/vmboxes/{box}/messages", metadata)
    assert reply.status == 201, reply.body
    return dict(reply.data)


async def create_with_audio(api: Api, box: str, audio: bytes = AUDIO, content_type: str = "audio/mpeg",
                            **metadata: Any) -> dict[str, Any]:
    """A message with audio, in one multipart request; its metadata."""
    body, content = multipart([json_part(metadata), audio_part(audio, content_type)])
    reply = await api.call("PUT", f"/vmboxes/{box}/messages", body=body, headers={"Content-Type": content})
    assert reply.status == 201, reply.body
    return dict(reply.data)


async def listing(api: Api, box: str, **params: Any) -> Reply:
    reply = await api.get(f"/vmboxes/{box}/messages", params={k: str(v) for k, v in params.items()})
    assert reply.status == 200, reply.body
    return reply


async def listed_ids(api: Api, box: str, **params: Any) -> list[str]:
    return [row["media_id"] for row in (await listing(api, box, paginate="false", **params)).data]


async def stored(services: Services, account_id: str, message_id: str) -> dict[str, Any]:
    db = naming.modb_of_message(account_id, message_id)
    assert db is not None
    return await services.store.couch.get_doc(db, message_id)


async def restore(services: Services, account_id: str, message_id: str,
                  change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Edit a stored message behind the API's back."""
    db = naming.modb_of_message(account_id, message_id)
    assert db is not None
    doc = await services.store.couch.get_doc(db, message_id)
    change(doc)
    await services.store.couch.put_doc(db, doc)
    return doc


async def box_summary(api: Api, box: str) -> dict[str, Any]:
    reply = await api.get("/vmboxes", params={"paginate": "false"})
    assert reply.status == 200, reply.body
    (row,) = [row for row in reply.data if row["id"] == box]
    return dict(row)


async def walk(api: Api, box: str, page_size: int = 5, **params: Any) -> tuple[list[dict[str, Any]], list[int]]:
    """Every page of a listing, following ``next_start_key``; (rows, rows per page)."""
    rows: list[dict[str, Any]] = []
    sizes: list[int] = []
    start: str | None = None
    for _ in range(100):
        query = {"page_size": str(page_size), **{k: str(v) for k, v in params.items()}}
        if start is not None:
            query["start_key"] = start
        reply = await api.get(f"/vmboxes/{box}/messages", params=query)
        assert reply.status == 200, reply.body
        body = reply.json
        assert body["page_size"] == len(body["data"]), body
        if start is not None:
            assert body["start_key"] == start
        rows.extend(body["data"])
        sizes.append(len(body["data"]))
        start = body.get("next_start_key")
        if start is None:
            return rows, sizes
        assert body["data"], "an empty page with a next_start_key"
    raise AssertionError("pagination never ends")


def kazoo_start_key(key: list[Any]) -> str:
    """A start key as Kazoo mints it: base64url(term_to_binary(Key)), view key only."""
    out = bytearray([131, 108]) + struct.pack(">I", len(key))
    for item in key:
        if isinstance(item, str):
            raw = item.encode()
            out += bytes([109]) + struct.pack(">I", len(raw)) + raw
        else:
            size = (item.bit_length() + 7) // 8
            out += bytes([110, size, 0]) + item.to_bytes(size, "little")
    out.append(106)
    return base64.urlsafe_b64encode(bytes(out)).decode().rstrip("=")


async def zip_of(api: Api, box: str, ids: list[str], request_id: str = "zip-request-0001") -> Reply:
    return await api.call("POST", f"/vmboxes/{box}/messages/raw", data={"messages": ids},
                          headers={"Accept": "application/zip", "X-Request-ID": request_id})


async def curl(api: Api, method: str, path: str, *, headers: dict[str, str] | None = None,
               body: bytes | None = None) -> Reply:
    """A request shaped like the seed page's curl line: only the headers curl sends."""
    all_headers = {"User-Agent": "curl/8.5.0", "Accept": "*/*", "X-Auth-Token": str(api.token)}
    if body is not None:
        all_headers["Content-Type"] = "application/x-www-form-urlencoded"  # curl -d
    all_headers.update(headers or {})
    async with api.client.request(method, api.url(path), data=body, headers=all_headers) as response:
        return Reply(response.status, response.headers, await response.read())


def assert_success(reply: Reply, status: int = 200) -> dict[str, Any]:
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"] == "application/json"
    body = reply.json
    assert body["status"] == "success"
    assert isinstance(body["request_id"], str) and body["request_id"]
    assert "data" in body
    return dict(body)


# -- rule 37: JSON-only create ---------------------------------------------------------


# rule 37
async def test_json_create_answers_201_with_a_modb_id_of_the_current_month(api: Api, vmbox: dict[str, Any]) -> None:
    before = gregorian_now()
    reply = await api.put(f"/vmboxes/{vmbox['id']}/messages", {"caller_id_number": "6001"})
    after = gregorian_now()
    assert reply.status == 201, reply.body
    message_id = reply.data["media_id"]
    assert MESSAGE_ID.match(message_id)
    assert message_id[:6] in {yyyymm(before), yyyymm(after)}


# rule 37
async def test_create_sends_location_of_the_new_message(api: Api, vmbox: dict[str, Any]) -> None:
    reply = await api.put(f"/vmboxes/{vmbox['id']}/messages", {})
    assert reply.status == 201, reply.body
    assert reply.headers["Location"].endswith(f"/vmboxes/{vmbox['id']}/messages/{reply.data['media_id']}")


# rule 37
async def test_created_message_is_stored_as_kazoo_mailbox_message(api: Api, vmbox: dict[str, Any],
                                                                  services: Services) -> None:
    metadata = await create(api, vmbox["id"])
    doc = await stored(services, api.account_id, metadata["media_id"])
    assert doc["pvt_type"] == "mailbox_message"
    assert doc["source_id"] == vmbox["id"]
    assert doc["source_type"] == "voicemail"
    assert doc["media_source"] == "recording"
    assert doc["description"] == "voicemail message with media"
    assert doc["streamable"] is True
    assert doc["pvt_account_id"] == api.account_id
    assert doc["pvt_account_db"] == naming.encoded_db(naming.modb_of_message(api.account_id, doc["_id"]) or "")
    assert doc["metadata"]["media_id"] == doc["_id"]


# -- rule 38 ---------------------------------------------------------------------------


# rule 38
async def test_create_in_unknown_box_is_404_with_box_as_cause(api: Api) -> None:
    missing = hex_id()
    reply = await api.put(f"/vmboxes/{missing}/messages", {"caller_id_number": "6001"})
    assert assert_error(reply, 404, "bad_identifier") == {"cause": missing, "message": "bad identifier"}


# -- rule 39: timestamp --------------------------------------------------------------


# rule 39
async def test_back_dated_timestamp_creates_and_uses_that_months_modb(api: Api, vmbox: dict[str, Any],
                                                                    services: Services) -> None:
    stamp = gregorian_now() - 60 * DAY
    moment = utc(stamp)
    modb = naming.modb(api.account_id, moment.year, moment.month)
    assert not await services.store.couch.db_exists(modb)
    reply = await api.put(f"/vmboxes/{vmbox['id']}/messages", {"timestamp": stamp})
    assert reply.status == 201, reply.body
    message_id = reply.data["media_id"]
    assert message_id.startswith(yyyymm(stamp) + "-")
    doc = await services.store.couch.get_doc(modb, message_id)
    assert doc["metadata"]["timestamp"] == stamp
    assert doc["utc_seconds"] == stamp
    assert doc["pvt_account_db"] == naming.encoded_db(modb)


# rule 39
async def test_back_dated_message_is_listed_and_fetchable(api: Api, vmbox: dict[str, Any]) -> None:
    stamp = gregorian_now() - 45 * DAY
    metadata = await create(api, vmbox["id"], timestamp=stamp)
    assert await listed_ids(api, vmbox["id"]) == [metadata["media_id"]]
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{metadata['media_id']}")
    assert reply.status == 200, reply.body
    assert reply.data["timestamp"] == stamp


# rule 39 (decisions: a future timestamp is accepted; listed once inside the window)
async def test_future_timestamp_is_accepted_but_not_listed_yet(api: Api, vmbox: dict[str, Any]) -> None:
    stamp = gregorian_now() + 10 * DAY
    reply = await api.put(f"/vmboxes/{vmbox['id']}/messages", {"timestamp": stamp})
    assert reply.status == 201, reply.body
    assert reply.data["timestamp"] == stamp
    assert reply.data["media_id"].startswith(yyyymm(stamp))
    assert await listed_ids(api, vmbox["id"]) == []


# -- rule 40: defaults ---------------------------------------------------------------


# rule 40
async def test_create_defaults(api: Api, vmbox: dict[str, Any], account: dict[str, Any]) -> None:
    realm = account["realm"]
    before = gregorian_now()
    data = await create(api, vmbox["id"])
    after = gregorian_now()
    assert data["folder"] == "new"
    assert data["length"] == 1
    assert data["caller_id_number"] == "anonymous"
    assert data["caller_id_name"] == "anonymous"
    assert re.fullmatch(r"[0-9a-f]{24}", data["call_id"])
    assert data["from"] == f"anonymous@{realm}"
    assert (data["from_user"], data["from_realm"]) == ("anonymous", realm)
    assert data["to"] == f"3000@{realm}"
    assert (data["to_user"], data["to_realm"]) == ("3000", realm)
    assert before <= data["timestamp"] <= after


# rule 40
async def test_create_keeps_the_values_given(api: Api, vmbox: dict[str, Any], account: dict[str, Any]) -> None:
    data = await create(api, vmbox["id"], caller_id_number="6001", caller_id_name="Alice", call_id="call-1",
                        length=4200, folder="saved")
    assert (data["caller_id_number"], data["caller_id_name"], data["call_id"]) == ("6001", "Alice", "call-1")
    assert (data["length"], data["folder"]) == (4200, "saved")
    assert data["from"] == f"6001@{account['realm']}"


# -- rule 41: from/to realm ------------------------------------------------------------


# rule 41 (decisions: @realm only when there is no @)
async def test_from_and_to_with_at_are_kept(api: Api, vmbox: dict[str, Any]) -> None:
    data = await create(api, vmbox["id"], **{"from": "someone@farfaraway.com", "to": "1000@sip.somewhere.com"})
    assert data["from"] == "someone@farfaraway.com"
    assert (data["from_user"], data["from_realm"]) == ("someone", "farfaraway.com")
    assert data["to"] == "1000@sip.somewhere.com"
    assert (data["to_user"], data["to_realm"]) == ("1000", "sip.somewhere.com")


# rule 41
async def test_from_and_to_without_at_get_the_account_realm(api: Api, vmbox: dict[str, Any],
                                                           account: dict[str, Any]) -> None:
    realm = account["realm"]
    data = await create(api, vmbox["id"], **{"from": "6001", "to": "4000"})
    assert data["from"] == f"6001@{realm}"
    assert data["to"] == f"4000@{realm}"
    assert (data["to_user"], data["to_realm"]) == ("4000", realm)


# rule 41
async def test_realm_is_nodomain_when_the_account_has_none(api: Api, vmbox: dict[str, Any],
                                                          services: Services) -> None:
    doc = await services.store.couch.get_doc(naming.ACCOUNTS_DB, api.account_id)
    doc.pop("realm", None)
    await services.store.couch.put_doc(naming.ACCOUNTS_DB, doc)
    # A change made beside the service (another node) counts after KAZOO_VM_CACHE_TTL; skip the wait.
    api.client.app[kazoo_vm.appkeys.SERVICES].accounts.forget(api.account_id)
    data = await create(api, vmbox["id"], **{"from": "6001"})
    assert data["from"] == "6001@nodomain"
    assert data["to"] == "3000@nodomain"


# -- rule 42: metadata validation ------------------------------------------------------


# rule 42
async def test_caller_id_name_longer_than_35_is_rejected(api: Api, vmbox: dict[str, Any]) -> None:
    reply = await api.put(f"/vmboxes/{vmbox['id']}/messages", {"caller_id_name": "x" * 36})
    data = assert_error(reply, 400, "validation error")
    detail = data["caller_id_name"]["maxLength"]
    assert detail["message"] == "String must not be more than 35 characters"
    assert detail["target"] == 35


# rule 42
async def test_unknown_folder_is_rejected(api: Api, vmbox: dict[str, Any]) -> None:
    reply = await api.put(f"/vmboxes/{vmbox['id']}/messages", {"folder": "trash"})
    data = assert_error(reply, 400, "validation error")
    assert data["folder"]["enum"]["message"] == "Value not found in enumerated list of values"


# rule 42
async def test_length_as_string_is_coerced(api: Api, vmbox: dict[str, Any]) -> None:
    data = await create(api, vmbox["id"], length="12")
    assert data["length"] == 12


# rule 42
async def test_create_resent_with_the_same_request_id_makes_one_message(api: Api, vmbox: dict[str, Any]) -> None:
    named = {"X-Request-ID": f"create-{uuid.uuid4().hex}"}
    path = f"/vmboxes/{vmbox['id']}/messages"
    answers = [await api.call("PUT", path, data={"caller_id_number": "6001"}, headers=named) for _ in range(2)]
    assert [reply.status for reply in answers] == [201, 201]
    assert answers[0].data == answers[1].data
    assert await listed_ids(api, vmbox["id"]) == [answers[0].data["media_id"]]


async def test_one_request_id_creates_one_message_in_each_box(api: Api, vmbox: dict[str, Any]) -> None:
    other = await new_box(api, "Other", "3002")
    named = {"X-Request-ID": f"create-{uuid.uuid4().hex}"}
    made = [await api.call("PUT", f"/vmboxes/{box}/messages", data={}, headers=named) for box in (vmbox["id"], other)]
    assert [reply.status for reply in made] == [201, 201]
    assert await listed_ids(api, vmbox["id"]) == [made[0].data["media_id"]]
    assert await listed_ids(api, other) == [made[1].data["media_id"]]


async def test_rejected_create_stores_nothing(api: Api, vmbox: dict[str, Any]) -> None:
    reply = await api.put(f"/vmboxes/{vmbox['id']}/messages", {"folder": "trash"})
    assert reply.status == 400
    assert await listed_ids(api, vmbox["id"]) == []


# -- rule 43: create responses (decisions: always the metadata shape, 201) -------------


# rule 43
async def test_json_create_answers_the_metadata_shape(api: Api, vmbox: dict[str, Any]) -> None:
    reply = await api.put(f"/vmboxes/{vmbox['id']}/messages", {"caller_id_number": "6001"})
    assert reply.status == 201, reply.body
    assert set(reply.data) == METADATA_KEYS


# rule 43
async def test_multipart_create_answers_the_metadata_shape(api: Api, vmbox: dict[str, Any]) -> None:
    body, content_type = multipart([json_part({"caller_id_number": "6001"}), audio_part()])
    reply = await api.call("PUT", f"/vmboxes/{vmbox['id']}/messages", body=body,
                           headers={"Content-Type": content_type})
    assert reply.status == 201, reply.body
    assert set(reply.data) == METADATA_KEYS
    assert reply.data["caller_id_number"] == "6001"


# rule 43
async def test_raw_audio_create_answers_the_metadata_shape_with_defaults(api: Api, vmbox: dict[str, Any]) -> None:
    reply = await api.call("PUT", f"/vmboxes/{vmbox['id']}/messages", body=AUDIO,
                           headers={"Content-Type": "audio/mpeg"})
    assert reply.status == 201, reply.body
    assert set(reply.data) == METADATA_KEYS
    assert reply.data["caller_id_number"] == "anonymous"
    audio = await api.get(f"/vmboxes/{vmbox['id']}/messages/{reply.data['media_id']}/raw")
    assert audio.status == 200 and audio.body == AUDIO


# -- rules 44, 45: multipart -----------------------------------------------------------


# rule 44
async def test_multipart_create_stores_message_and_audio(api: Api, vmbox: dict[str, Any]) -> None:
    body, content_type = multipart([json_part({"caller_id_number": "6001", "length": 3140}), audio_part()])
    reply = await api.call("PUT", f"/vmboxes/{vmbox['id']}/messages", body=body,
                           headers={"Content-Type": content_type})
    assert reply.status == 201, reply.body
    message_id = reply.data["media_id"]
    audio = await api.get(f"/vmboxes/{vmbox['id']}/messages/{message_id}/raw")
    assert audio.status == 200 and audio.body == AUDIO
    assert (await listing(api, vmbox["id"])).data[0]["length"] == 3140


# rule 44
async def test_multipart_form_data_with_audio_first_works(api: Api, vmbox: dict[str, Any]) -> None:
    body, content_type = multipart([audio_part(), json_part({"caller_id_number": "6002"})], subtype="form-data")
    reply = await api.call("PUT", f"/vmboxes/{vmbox['id']}/messages", body=body,
                           headers={"Content-Type": content_type})
    assert reply.status == 201, reply.body
    assert reply.data["caller_id_number"] == "6002"
    audio = await api.get(f"/vmboxes/{vmbox['id']}/messages/{reply.data['media_id']}/raw")
    assert audio.body == AUDIO


# rule 44
async def test_multipart_base64_part_is_decoded(api: Api, vmbox: dict[str, Any]) -> None:
    headers, _ = audio_part()
    encoded = ({**headers, "Content-Transfer-Encoding": "base64"}, base64.b64encode(AUDIO))
    body, content_type = multipart([json_part({}), encoded])
    reply = await api.call("PUT", f"/vmboxes/{vmbox['id']}/messages", body=body,
                           headers={"Content-Type": content_type})
    assert reply.status == 201, reply.body
    audio = await api.get(f"/vmboxes/{vmbox['id']}/messages/{reply.data['media_id']}/raw")
    assert audio.body == AUDIO


# rule 45
async def test_multipart_with_two_audio_parts_is_rejected(api: Api, vmbox: dict[str, Any]) -> None:
    body, content_type = multipart([json_part({}), audio_part(), audio_part(WAV, "audio/wav")])
    reply = await api.call("PUT", f"/vmboxes/{vmbox['id']}/messages", body=body,
                           headers={"Content-Type": content_type})
    data = assert_error(reply, 400, "validation error")
    assert data["file"]["maxItems"]["message"] == "Please provide a single media file"
    assert await listed_ids(api, vmbox["id"]) == []


# -- rule 46: attachment name and content type -----------------------------------------


# rule 46
@pytest.mark.parametrize(("content_type", "ext"), [("audio/mpeg", "mp3"), ("audio/mp3", "mp3"),
                                                   ("audio/wav", "wav"), ("audio/x-wav", "wav")])
async def test_uploaded_attachment_name_and_stored_content_type(api: Api, vmbox: dict[str, Any],
                                                                services: Services, content_type: str,
                                                                ext: str) -> None:
    before = gregorian_now()
    metadata = await create_with_audio(api, vmbox["id"], content_type=content_type)
    after = gregorian_now()
    doc = await stored(services, api.account_id, metadata["media_id"])
    (name,) = doc["_attachments"]
    match = re.fullmatch(rf"uploaded_file_(\d+)\.{ext}", name)
    assert match, name
    assert before <= int(match.group(1)) <= after
    assert doc["_attachments"][name]["content_type"] == content_type


# rule 46
async def test_raw_upload_attachment_name_and_content_type(api: Api, vmbox: dict[str, Any],
                                                           services: Services) -> None:
    metadata = await create(api, vmbox["id"])
    reply = await api.call("PUT", f"/vmboxes/{vmbox['id']}/messages/{metadata['media_id']}/raw", body=WAV,
                           headers={"Content-Type": "audio/x-wav"})
    assert reply.status == 201, reply.body
    doc = await stored(services, api.account_id, metadata["media_id"])
    (name,) = doc["_attachments"]
    assert re.fullmatch(r"uploaded_file_\d+\.wav", name), name
    assert doc["_attachments"][name]["content_type"] == "audio/x-wav"


# -- rule 47: message name -------------------------------------------------------------


# rule 47
async def test_message_name_in_box_timezone_unpadded(api: Api, services: Services) -> None:
    tz = "Asia/Kolkata"
    box = await new_box(api, "Kolkata", "3100", timezone=tz)
    day = local(gregorian_now() - 3 * DAY, tz)
    moment = day.replace(hour=3, minute=4, second=5, microsecond=0)
    stamp = to_gregorian(moment)
    metadata = await create(api, box, timestamp=stamp)
    doc = await stored(services, api.account_id, metadata["media_id"])
    assert doc["name"] == f"mailbox 3100 message {moment:%Y-%m-%d} 3:4:5"


# -- rules 48–51: listing --------------------------------------------------------------


# rule 48
async def test_listing_is_newest_first(api: Api, vmbox: dict[str, Any]) -> None:
    now = gregorian_now()
    ids = [(await create(api, vmbox["id"], timestamp=now - offset))["media_id"] for offset in (300, 100, 200)]
    assert await listed_ids(api, vmbox["id"]) == [ids[1], ids[2], ids[0]]


# rule 48
async def test_listing_ascending_is_oldest_first(api: Api, vmbox: dict[str, Any]) -> None:
    now = gregorian_now()
    ids = [(await create(api, vmbox["id"], timestamp=now - offset))["media_id"] for offset in (300, 100, 200)]
    assert await listed_ids(api, vmbox["id"], ascending="true") == [ids[0], ids[2], ids[1]]


# rule 49
async def test_listing_rows_are_exactly_the_summary(api: Api, vmbox: dict[str, Any]) -> None:
    metadata = await create(api, vmbox["id"], caller_id_number="6001", caller_id_name="Alice")
    (row,) = (await listing(api, vmbox["id"])).data
    assert set(row) == SUMMARY_KEYS
    assert row == {key: metadata[key] for key in SUMMARY_KEYS}


# rule 49
async def test_listing_rows_say_transcribed(api: Api, vmbox: dict[str, Any], services: Services) -> None:
    good = await create(api, vmbox["id"], timestamp=gregorian_now() - 10)
    bad = await create(api, vmbox["id"], timestamp=gregorian_now() - 20)
    await restore(services, api.account_id, good["media_id"],
                  lambda doc: doc.update(transcription={"result": "success", "text": "call me back"}))
    await restore(services, api.account_id, bad["media_id"],
                  lambda doc: doc.update(transcription={"result": "error", "text": ""}))
    rows = {row["media_id"]: row for row in (await listing(api, vmbox["id"])).data}
    assert rows[good["media_id"]]["transcribed"] is True
    assert rows[bad["media_id"]]["transcribed"] is False
    assert set(rows[good["media_id"]]) == SUMMARY_KEYS | {"transcribed"}


# rule 50 (a deliberate difference: Kazoo lists nothing)
async def test_listing_unknown_box_is_404_with_box_as_cause(api: Api) -> None:
    missing = hex_id()
    reply = await api.get(f"/vmboxes/{missing}/messages")
    assert assert_error(reply, 404, "bad_identifier") == {"cause": missing, "message": "bad identifier"}


async def test_listing_a_deleted_box_is_404(api: Api, vmbox: dict[str, Any]) -> None:
    assert (await api.delete(f"/vmboxes/{vmbox['id']}")).status == 200
    assert_error(await api.get(f"/vmboxes/{vmbox['id']}/messages"), 404, "bad_identifier")


# rule 51
async def test_messages_older_than_retention_are_not_listed(api: Api, vmbox: dict[str, Any]) -> None:
    await create(api, vmbox["id"], timestamp=gregorian_now() - 100 * DAY)
    recent = await create(api, vmbox["id"])
    assert await listed_ids(api, vmbox["id"]) == [recent["media_id"]]
    everything = await api.get("/vmboxes/messages", params={"paginate": "false"})
    assert [list(row.values())[0]["media_id"] for row in everything.data] == [recent["media_id"]]


# rule 51
async def test_old_messages_listed_by_created_from_carry_enforced_retention(api: Api,
                                                                           vmbox: dict[str, Any]) -> None:
    stamp = gregorian_now() - 100 * DAY
    old = await create(api, vmbox["id"], timestamp=stamp)
    reply = await listing(api, vmbox["id"], created_from=stamp - 100, created_to=stamp + 100)
    (row,) = reply.data
    assert row["media_id"] == old["media_id"]
    assert row["folder"] == "deleted"
    assert row["retention"] == "enforced"
    assert row["retention_message"] == RETENTION_MESSAGE


# rule 51
async def test_old_message_get_carries_enforced_retention(api: Api, vmbox: dict[str, Any]) -> None:
    old = await create(api, vmbox["id"], timestamp=gregorian_now() - 100 * DAY)
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{old['media_id']}")
    assert reply.status == 200, reply.body
    assert reply.data["folder"] == "deleted"
    assert reply.data["retention"] == "enforced"
    assert reply.data["retention_message"] == RETENTION_MESSAGE


# rule 51
async def test_created_from_and_to_select_the_window(api: Api, vmbox: dict[str, Any]) -> None:
    now = gregorian_now()
    inside = await create(api, vmbox["id"], timestamp=now - 5 * DAY)
    await create(api, vmbox["id"], timestamp=now - 2 * DAY)
    await create(api, vmbox["id"], timestamp=now - 8 * DAY)
    ids = await listed_ids(api, vmbox["id"], created_from=now - 6 * DAY, created_to=now - 4 * DAY)
    assert ids == [inside["media_id"]]


# -- rule 52: created_from / created_to errors -----------------------------------------


# rule 52
async def test_created_range_too_wide_is_rejected(api: Api, vmbox: dict[str, Any]) -> None:
    start = gregorian_now() - 40 * DAY
    end = start + MAX_RANGE + 1
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages",
                          params={"created_from": str(start), "created_to": str(end)})
    data = assert_error(reply, 400, "validation error")
    assert data == {"created_from": {"date_range": {
        "message": f"created_to {end} is more than {MAX_RANGE} seconds from created_from {start}", "cause": end}}}


# rule 52
async def test_created_to_before_created_from_is_rejected(api: Api, vmbox: dict[str, Any]) -> None:
    start = gregorian_now() - DAY
    end = start - 3600
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages",
                          params={"created_from": str(start), "created_to": str(end)})
    data = assert_error(reply, 400, "validation error")
    assert data == {"created_from": {"date_range": {
        "message": f"created_to {end} is prior to created_from {start}", "cause": start}}}


# rule 52
async def test_created_range_of_exactly_the_maximum_is_accepted(api: Api, vmbox: dict[str, Any]) -> None:
    end = gregorian_now()
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages",
                          params={"created_from": str(end - MAX_RANGE), "created_to": str(end)})
    assert reply.status == 200, reply.body
    assert reply.data == []


# Found by schemathesis: a created_to past the year 9999 gave a window whose start lay
# after its clamped end, and the store's 400 for that reversed range was a 500.
@pytest.mark.parametrize("path", ["/vmboxes/{box}/messages", "/vmboxes/messages"])
@pytest.mark.parametrize("created_to", ["93194900040688410282362387080151040", "315537897599", "5"])
async def test_created_to_beyond_the_years_of_modbs_lists_nothing(api: Api, vmbox: dict[str, Any], path: str,
                                                                  created_to: str) -> None:
    await create(api, vmbox["id"])
    reply = await api.get(path.format(box=vmbox["id"]), params={"created_to": created_to})
    assert reply.status == 200, reply.body
    assert reply.data == []


# -- rules 53–56: filters and pagination -----------------------------------------------


async def _six_new_two_saved(api: Api, box: str) -> tuple[list[str], list[str]]:
    now = gregorian_now()
    new = [(await create(api, box, timestamp=now - 10 * i))["media_id"] for i in range(1, 7)]
    saved = [(await create(api, box, timestamp=now - 5 - 10 * i, folder="saved"))["media_id"] for i in (1, 4)]
    return new, saved


# rule 53
async def test_filter_folder_new_fills_pages(api: Api, vmbox: dict[str, Any]) -> None:
    new, _saved = await _six_new_two_saved(api, vmbox["id"])
    rows, sizes = await walk(api, vmbox["id"], page_size=5, filter_folder="new")
    assert [row["media_id"] for row in rows] == new
    assert sizes == [5, 1]


# rule 53
async def test_filter_not_folder_saved_fills_pages(api: Api, vmbox: dict[str, Any]) -> None:
    new, _saved = await _six_new_two_saved(api, vmbox["id"])
    rows, sizes = await walk(api, vmbox["id"], page_size=5, filter_not_folder="saved")
    assert [row["media_id"] for row in rows] == new
    assert sizes == [5, 1]


# rule 54
async def test_page_size_in_envelope_is_rows_returned_and_last_page_has_no_next_key(
        api: Api, vmbox: dict[str, Any]) -> None:
    now = gregorian_now()
    for i in range(3):
        await create(api, vmbox["id"], timestamp=now - i)
    first = await listing(api, vmbox["id"], page_size=2)
    assert first.json["page_size"] == 2 and len(first.data) == 2
    assert "next_start_key" in first.json
    last = await listing(api, vmbox["id"], page_size=2, start_key=first.json["next_start_key"])
    assert last.json["page_size"] == 1 and len(last.data) == 1
    assert "next_start_key" not in last.json
    whole = await listing(api, vmbox["id"], page_size=10)
    assert whole.json["page_size"] == 3
    assert "next_start_key" not in whole.json


# rule 54 (E8: an empty page says page_size 0 and always carries start_key)
async def test_empty_listing_envelope(api: Api, vmbox: dict[str, Any]) -> None:
    reply = await listing(api, vmbox["id"])
    assert reply.data == []
    assert reply.json["page_size"] == 0
    assert "start_key" in reply.json
    assert "next_start_key" not in reply.json


# rule 55
async def test_paginate_false_returns_everything_without_page_keys(api: Api, vmbox: dict[str, Any]) -> None:
    now = gregorian_now()
    for i in range(3):
        await create(api, vmbox["id"], timestamp=now - i)
    reply = await listing(api, vmbox["id"], paginate="false", page_size=1)
    assert len(reply.data) == 3
    for key in ("page_size", "start_key", "next_start_key"):
        assert key not in reply.json


# rule 56
@pytest.mark.parametrize(("page_size", "reason"), [("0", "page size must be at least 1"),
                                                   ("-3", "page size must be at least 1"),
                                                   ("abc", "invalid page size")])
async def test_bad_page_size_is_faulty_request(api: Api, vmbox: dict[str, Any], page_size: str,
                                               reason: str) -> None:
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages", params={"page_size": page_size})
    assert assert_error(reply, 404, "faulty_request") == {"message": reason}


# rule 54 / decisions: a start key minted by Kazoo (view key only) is accepted
async def test_kazoo_minted_start_key_is_accepted(api: Api, vmbox: dict[str, Any]) -> None:
    now = gregorian_now()
    ids = [(await create(api, vmbox["id"], timestamp=now - 100 * i))["media_id"] for i in range(1, 5)]
    key = kazoo_start_key([vmbox["id"], now - 200])
    reply = await listing(api, vmbox["id"], page_size=2, start_key=key)
    assert [row["media_id"] for row in reply.data] == ids[1:3]
    assert "next_start_key" in reply.json


# Found by schemathesis: CouchDB (and pouchdb-server) refuse with 400 a range whose
# start lies past its end in reading order; that was a 500 datastore_fault.
@pytest.mark.parametrize("path", ["/vmboxes/{box}/messages", "/vmboxes/messages"])
@pytest.mark.parametrize("ascending", ["false", "true"])
async def test_start_key_past_the_end_of_the_listing_is_an_empty_page(api: Api, vmbox: dict[str, Any], path: str,
                                                                      ascending: str) -> None:
    await create(api, vmbox["id"])
    # A string sorts before every array key, an array of strings after every [timestamp, …].
    past_the_end = {"false": "~q", "true": kazoo_start_key([vmbox["id"] + "~", 0])}[ascending]
    reply = await api.get(path.format(box=vmbox["id"]), params={"start_key": past_the_end, "ascending": ascending})
    assert reply.status == 200, reply.body
    assert reply.data == []
    assert reply.json["page_size"] == 0
    assert reply.json["start_key"] == past_the_end
    assert "next_start_key" not in reply.json


# A start key before the listing's range (another box's key, a time outside the window)
# made CouchDB read from there: another box's messages came in this box's listing.
@pytest.mark.parametrize("ascending", [False, True])
async def test_start_key_of_another_box_lists_only_this_box(api: Api, ascending: bool) -> None:
    boxes = sorted([await new_box(api, "One", "3001"), await new_box(api, "Two", "3002")])
    ids = {box: (await create(api, box))["media_id"] for box in boxes}
    # Reading from the other box's key crosses it before reaching this box's rows.
    box, other = (boxes[0], boxes[1]) if not ascending else (boxes[1], boxes[0])
    far = gregorian_now() + 100 * DAY if not ascending else 0
    params = {"start_key": kazoo_start_key([other, far]), "ascending": str(ascending).lower()}
    reply = await api.get(f"/vmboxes/{box}/messages", params=params)
    assert reply.status == 200, reply.body
    assert [row["media_id"] for row in reply.data] == [ids[box]]


async def test_start_key_outside_the_window_lists_only_the_window(api: Api, vmbox: dict[str, Any]) -> None:
    now = gregorian_now()
    inside = await create(api, vmbox["id"], timestamp=now - 5 * DAY)
    await create(api, vmbox["id"], timestamp=now - 8 * DAY)  # same MODB or the one before, outside the window
    params = {"created_from": now - 6 * DAY, "created_to": now - 4 * DAY, "ascending": "true",
              "start_key": kazoo_start_key([vmbox["id"], 1])}
    assert [row["media_id"] for row in (await listing(api, vmbox["id"], **params)).data] == [inside["media_id"]]


# -- rule 57: account-wide listing ---------------------------------------------------


# rule 57
async def test_account_listing_rows_are_keyed_by_box(api: Api, vmbox: dict[str, Any]) -> None:
    other = await new_box(api, "Other", "3001")
    now = gregorian_now()
    first = await create(api, vmbox["id"], timestamp=now - 100)
    second = await create(api, other, timestamp=now - 50)
    reply = await api.get("/vmboxes/messages")
    assert reply.status == 200, reply.body
    assert [list(row) for row in reply.data] == [[other], [vmbox["id"]]]
    assert reply.data[0][other]["media_id"] == second["media_id"]
    assert reply.data[1][vmbox["id"]]["media_id"] == first["media_id"]
    assert set(reply.data[0][other]) == SUMMARY_KEYS


# rule 57
async def test_account_listing_paginates(api: Api, vmbox: dict[str, Any]) -> None:
    now = gregorian_now()
    ids = [(await create(api, vmbox["id"], timestamp=now - 10 * i))["media_id"] for i in range(3)]
    first = await api.get("/vmboxes/messages", params={"page_size": "2"})
    assert first.json["page_size"] == 2
    second = await api.get("/vmboxes/messages",
                           params={"page_size": "2", "start_key": first.json["next_start_key"]})
    rows = first.data + second.data
    assert [row[vmbox["id"]]["media_id"] for row in rows] == ids
    assert "next_start_key" not in second.json


# -- rules 58–62: one message ----------------------------------------------------------


# rule 58
async def test_get_message_returns_metadata_without_revision(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"], caller_id_number="6001", **{"from": "6001"})
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}")
    assert reply.status == 200, reply.body
    assert reply.data == created
    assert {"from_user", "from_realm", "to_user", "to_realm"} <= set(reply.data)
    assert "revision" not in reply.json


# rule 58
async def test_get_message_includes_transcription(api: Api, vmbox: dict[str, Any], services: Services) -> None:
    created = await create(api, vmbox["id"])
    transcription = {"result": "success", "text": "please call me back"}
    await restore(services, api.account_id, created["media_id"], lambda doc: doc.update(transcription=transcription))
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}")
    assert reply.data["transcription"] == transcription


# rule 59
async def test_get_message_of_another_box_is_404(api: Api, vmbox: dict[str, Any]) -> None:
    other = await new_box(api, "Other", "3001")
    created = await create(api, other)
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}")
    assert assert_error(reply, 404, "bad_identifier") == {"cause": created["media_id"], "message": "bad identifier"}


# rule 59
async def test_message_without_source_id_is_visible_under_any_box(api: Api, vmbox: dict[str, Any],
                                                                  services: Services) -> None:
    other = await new_box(api, "Other", "3001")
    created = await create(api, vmbox["id"])
    await restore(services, api.account_id, created["media_id"], lambda doc: doc.pop("source_id"))
    reply = await api.get(f"/vmboxes/{other}/messages/{created['media_id']}")
    assert reply.status == 200, reply.body
    assert reply.data["media_id"] == created["media_id"]


# rule 59
async def test_unknown_message_is_404(api: Api, vmbox: dict[str, Any]) -> None:
    missing = f"{yyyymm(gregorian_now())}-{hex_id()}"
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{missing}")
    assert assert_error(reply, 404, "bad_identifier")["cause"] == missing


# decisions: message ids are checked against ^\d{6}-[0-9a-f]{32}$ (or legacy 32 hex) first
@pytest.mark.parametrize("bad_id", ["abcdef-x", "202413-" + "a" * 32, "2024-01-" + "a" * 32, "..%2F..%2Fx"])
async def test_malformed_message_id_is_404_bad_identifier(api: Api, vmbox: dict[str, Any], bad_id: str) -> None:
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{bad_id}")
    assert_error(reply, 404, "bad_identifier")


# rule 60
async def test_get_of_a_cdr_document_in_the_modb_is_404(api: Api, vmbox: dict[str, Any],
                                                        services: Services) -> None:
    now = utc(gregorian_now())
    modb = await services.store.modb(api.account_id, now.year, now.month)
    cdr_id = f"{now.year:04d}{now.month:02d}-{hex_id()}"
    await services.store.couch.put_doc(modb, {"_id": cdr_id, "pvt_type": "cdr", "call_id": "abc",
                                              "source_id": vmbox["id"], "metadata": {"folder": "new"}})
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{cdr_id}")
    assert assert_error(reply, 404, "bad_identifier")["cause"] == cdr_id


# rule 61
async def test_soft_deleted_message_is_gone_for_a_get(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"])
    assert (await api.delete(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}")).status == 200
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}")
    assert assert_error(reply, 404, "bad_identifier")["cause"] == created["media_id"]


@pytest.mark.parametrize("change", [{"source_id": "OTHER"}, {"source_id": ["OTHER"]}, {"folder": "saved"}])
async def test_a_deleted_message_cannot_be_moved_copied_or_refiled(api: Api, vmbox: dict[str, Any],
                                                                   services: Services, change: dict[str, Any]) -> None:
    other = await new_box(api, "Elsewhere", "3999")
    created = await create(api, vmbox["id"])
    path = f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}"
    assert (await api.delete(path)).status == 200
    body = {key: ([other] if value == ["OTHER"] else other if value == "OTHER" else value)
            for key, value in change.items()}
    assert_error(await api.post(path, body), 404, "bad_identifier")
    assert await listed_ids(api, other) == []
    assert (await stored(services, api.account_id, created["media_id"]))["pvt_deleted"] is True


async def test_a_deleted_message_takes_no_audio_and_gives_none(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"])
    path = f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}"
    assert (await api.delete(path)).status == 200
    uploaded = await api.call("PUT", f"{path}/raw", body=b"ID3late", headers={"Content-Type": "audio/mpeg"})
    assert_error(uploaded, 404, "bad_identifier")
    assert_error(await api.get(f"{path}/raw"), 404, "bad_identifier")


async def test_bulk_change_reports_a_deleted_message_not_found(api: Api, vmbox: dict[str, Any]) -> None:
    gone, kept = await create(api, vmbox["id"]), await create(api, vmbox["id"])
    assert (await api.delete(f"/vmboxes/{vmbox['id']}/messages/{gone['media_id']}")).status == 200
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages",
                           {"messages": [gone["media_id"], kept["media_id"]], "folder": "saved"})
    assert reply.status == 200, reply.body
    assert reply.data == {"succeeded": [kept["media_id"]], "failed": {gone["media_id"]: "not_found"}}


# rule 62 (decisions: a message without folder is reported and stored as new)
async def test_get_message_without_folder_reports_and_stores_new(api: Api, vmbox: dict[str, Any],
                                                                 services: Services) -> None:
    created = await create(api, vmbox["id"])
    await restore(services, api.account_id, created["media_id"], lambda doc: doc["metadata"].pop("folder"))
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}")
    assert reply.status == 200, reply.body
    assert reply.data["folder"] == "new"
    assert (await stored(services, api.account_id, created["media_id"]))["metadata"]["folder"] == "new"


# rule 62 (decisions)
async def test_get_raw_without_folder_stores_new(api: Api, vmbox: dict[str, Any], services: Services) -> None:
    created = await create_with_audio(api, vmbox["id"])
    await restore(services, api.account_id, created["media_id"], lambda doc: doc["metadata"].pop("folder"))
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw")
    assert reply.status == 200 and reply.body == AUDIO
    assert (await stored(services, api.account_id, created["media_id"]))["metadata"]["folder"] == "new"


# -- rules 63–68: audio download -------------------------------------------------------


# rule 63
async def test_raw_returns_bytes_type_and_disposition_in_box_timezone(api: Api) -> None:
    tz = "America/New_York"
    box = await new_box(api, "NY", "3200", timezone=tz)
    stamp = gregorian_now() - 2 * DAY
    created = await create_with_audio(api, box, WAV, "audio/x-wav", caller_id_number="6001", timestamp=stamp)
    reply = await api.get(f"/vmboxes/{box}/messages/{created['media_id']}/raw")
    assert reply.status == 200
    assert reply.body == WAV
    assert reply.headers["Content-Type"] == "audio/x-wav"
    assert reply.headers["Content-Disposition"] == disposition(download_name('6001', stamp, tz, 'wav'))


# rule 63
async def test_raw_filename_uses_account_timezone_when_box_has_none(api: Api, vmbox: dict[str, Any],
                                                                    account: dict[str, Any]) -> None:
    stamp = gregorian_now() - DAY
    created = await create_with_audio(api, vmbox["id"], caller_id_number="6001", timestamp=stamp)
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw")
    expected = download_name("6001", stamp, account["timezone"], "mp3")
    assert reply.headers["Content-Disposition"] == disposition(expected)


# rule 64
async def test_raw_of_message_without_audio_is_404(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"])
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw")
    assert assert_error(reply, 404, "bad_identifier") == {"cause": NO_AUDIO, "message": "bad identifier"}


# rule 64
async def test_raw_of_message_of_another_box_is_404(api: Api, vmbox: dict[str, Any]) -> None:
    other = await new_box(api, "Other", "3001")
    created = await create_with_audio(api, other)
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw")
    assert assert_error(reply, 404, "bad_identifier")["cause"] == created["media_id"]


# rule 65
async def test_raw_filename_prefix_unknown_without_caller_id_number(api: Api, vmbox: dict[str, Any],
                                                                    services: Services,
                                                                    account: dict[str, Any]) -> None:
    stamp = gregorian_now() - 3600
    created = await create_with_audio(api, vmbox["id"], timestamp=stamp)
    await restore(services, api.account_id, created["media_id"],
                  lambda doc: doc["metadata"].pop("caller_id_number"))
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw")
    assert reply.status == 200
    expected = download_name("unknown", stamp, account["timezone"], "mp3")
    assert reply.headers["Content-Disposition"] == disposition(expected)


# issue 15.12: RFC 6266, a quoted ASCII fallback (no ``:``, ``_`` for what is not ASCII)
# and the name itself in UTF-8
@pytest.mark.parametrize(("caller", "fallback", "encoded"), [("+14155550100", "+14155550100", "+14155550100"),
                                                           ("Zoë", "Zo_", "Zo%C3%AB")], ids=["ascii", "utf8"])
async def test_raw_disposition_has_an_ascii_fallback_and_the_utf8_name(api: Api, caller: str, fallback: str,
                                                                        encoded: str) -> None:
    box = await new_box(api, "UTC", "3201", timezone="Etc/UTC")
    stamp = gregorian_now() - DAY
    day, time_ = f"{utc(stamp):%Y-%m-%d}", f"{utc(stamp):%H %M %S}".split()
    created = await create_with_audio(api, box, caller_id_number=caller, timestamp=stamp)
    reply = await api.get(f"/vmboxes/{box}/messages/{created['media_id']}/raw")
    assert reply.headers["Content-Disposition"] == (
        f'attachment; filename="{fallback}_{day}_{"-".join(time_)}.mp3"; '
        f"filename*=UTF-8''{encoded}_{day}_{'%3A'.join(time_)}.mp3")


# rule 66 (decisions: 206 on every store)
async def test_raw_range_is_206_with_content_range(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create_with_audio(api, vmbox["id"])
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw",
                          headers={"Range": "bytes=0-99"})
    assert reply.status == 206
    assert reply.body == AUDIO[:100]
    assert reply.headers["Content-Range"] == f"bytes 0-99/{len(AUDIO)}"
    assert reply.headers["Accept-Ranges"] == "bytes"


# rule 66
async def test_raw_open_ended_range_is_a_slice(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create_with_audio(api, vmbox["id"])
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw",
                          headers={"Range": "bytes=100-"})
    assert reply.status == 206
    assert reply.body == AUDIO[100:]
    assert reply.headers["Content-Range"] == f"bytes 100-{len(AUDIO) - 1}/{len(AUDIO)}"


# rule 66: the audio is passed on as the store sends it, in many chunks
async def test_raw_of_a_large_recording_is_every_byte_in_order(api: Api, vmbox: dict[str, Any]) -> None:
    large = bytes(range(251)) * 12_000  # 3 MB: many chunks from the store
    created = await create_with_audio(api, vmbox["id"], audio=large)
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw")
    assert reply.status == 200
    assert reply.headers["Content-Length"] == str(len(large))
    assert reply.body == large


# rule 66
async def test_raw_range_across_store_chunks_is_the_exact_slice(api: Api, vmbox: dict[str, Any]) -> None:
    large = bytes(range(251)) * 12_000
    created = await create_with_audio(api, vmbox["id"], audio=large)
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw",
                          headers={"Range": "bytes=1000003-2500006"})
    assert reply.status == 206
    assert reply.body == large[1000003:2500007]
    assert reply.headers["Content-Range"] == f"bytes 1000003-2500006/{len(large)}"


# rule 66 (clients: the browser's Range: bytes=0-; RFC 9110: a satisfiable range is a 206)
async def test_raw_range_from_zero_is_a_206_of_the_whole_file(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create_with_audio(api, vmbox["id"])
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw",
                          headers={"Range": "bytes=0-"})
    assert reply.status == 206
    assert reply.headers["Content-Range"] == f"bytes 0-{len(AUDIO) - 1}/{len(AUDIO)}"
    assert reply.body == AUDIO


# rule 66 (decisions: a malformed Range is ignored, 200)
@pytest.mark.parametrize("header", ["bytes", "bytes=abc", "bytes=0-99,200-299", f"bytes=0-{len(AUDIO) + 10}",
                                    "lines=1-2"])
async def test_raw_malformed_range_is_ignored(api: Api, vmbox: dict[str, Any], header: str) -> None:
    created = await create_with_audio(api, vmbox["id"])
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw",
                          headers={"Range": header})
    assert reply.status == 200
    assert "Content-Range" not in reply.headers
    assert reply.body == AUDIO


# rule 67
async def test_raw_with_auth_token_query_and_no_header(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create_with_audio(api, vmbox["id"])
    path = f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw"
    assert (await api.call("GET", path, token="")).status == 401
    reply = await api.call("GET", path, token="", params={"auth_token": str(api.token)},
                           headers={"Accept": "*/*", "Range": "bytes=0-"})
    assert reply.status == 206
    assert reply.headers["Content-Range"] == f"bytes 0-{len(AUDIO) - 1}/{len(AUDIO)}"
    assert reply.body == AUDIO


# rule 67 (clients: the legacy Kazoo UI marks a message listened with ?folder=saved)
async def test_raw_with_folder_saved_marks_the_message_saved(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create_with_audio(api, vmbox["id"])
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw",
                          params={"folder": "saved"})
    assert reply.status == 200 and reply.body == AUDIO
    message = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}")
    assert message.data["folder"] == "saved"


# rule 67
async def test_raw_without_folder_query_leaves_folder_alone(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create_with_audio(api, vmbox["id"])
    assert (await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw")).status == 200
    message = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}")
    assert message.data["folder"] == "new"


# rule 68 (decisions: any Accept is tolerated on /raw, no 406)
async def test_raw_tolerates_any_accept(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create_with_audio(api, vmbox["id"])
    path = f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw"
    for accept in ("application/json", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
                   "audio/*", "audio/mp3", "*/*"):
        reply = await api.get(path, headers={"Accept": accept})
        assert reply.status == 200, (accept, reply.status)
        assert reply.body == AUDIO
        assert reply.headers["Content-Type"] == "audio/mpeg"


# -- rules 69–75: changing one message -------------------------------------------------


# rule 69
async def test_post_without_body_moves_to_saved(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"])
    reply = await api.call("POST", f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}")
    assert reply.status == 200, reply.body
    assert reply.data == {**created, "folder": "saved"}
    assert (await listing(api, vmbox["id"])).data[0]["folder"] == "saved"


# rule 69
async def test_post_with_folder_new_moves_back_to_new(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"], folder="saved")
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}", {"folder": "new"})
    assert reply.status == 200, reply.body
    assert reply.data["folder"] == "new"


# rule 70
@pytest.mark.parametrize("where", ["query", "body"])
async def test_folder_deleted_is_not_a_soft_delete(api: Api, vmbox: dict[str, Any], services: Services,
                                                   where: str) -> None:
    created = await create(api, vmbox["id"])
    path = f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}"
    if where == "query":
        reply = await api.post(path, {}, params={"folder": "deleted"})
    else:
        reply = await api.post(path, {"folder": "deleted"})
    assert reply.status == 200, reply.body
    assert reply.data["folder"] == "deleted"
    (row,) = (await listing(api, vmbox["id"])).data
    assert (row["media_id"], row["folder"]) == (created["media_id"], "deleted")
    assert not (await stored(services, api.account_id, created["media_id"])).get("pvt_deleted")


# rule 70 / 1.4: deleted-folder messages are not counted as messages of the box
async def test_deleted_folder_messages_are_not_counted(api: Api, vmbox: dict[str, Any]) -> None:
    kept = await create(api, vmbox["id"])
    gone = await create(api, vmbox["id"])
    await api.post(f"/vmboxes/{vmbox['id']}/messages/{gone['media_id']}", {"folder": "deleted"})
    await api.post(f"/vmboxes/{vmbox['id']}/messages/{kept['media_id']}", {"folder": "saved"})
    summary = await box_summary(api, vmbox["id"])
    assert summary["messages"] == 1
    assert summary["folders"] == {"new": 0, "saved": 1}


# rule 71
async def test_body_folder_wins_over_query_folder(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"])
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}", {"folder": "deleted"},
                           params={"folder": "saved"})
    assert reply.status == 200, reply.body
    assert reply.data["folder"] == "deleted"


# rule 71
async def test_query_folder_is_used_without_body_folder(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"], folder="saved")
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}", {},
                           params={"folder": "new"})
    assert reply.data["folder"] == "new"


# rule 59 (2.3: every single-message operation checks membership)
async def test_change_of_message_of_another_box_is_404(api: Api, vmbox: dict[str, Any]) -> None:
    other = await new_box(api, "Other", "3001")
    theirs = await create(api, other)
    for data in ({"folder": "saved"}, {"source_id": other}, {"source_id": [other]}):
        reply = await api.post(f"/vmboxes/{vmbox['id']}/messages/{theirs['media_id']}", data)
        assert assert_error(reply, 404, "bad_identifier")["cause"] == theirs["media_id"], data
    assert (await listing(api, other)).data[0]["folder"] == "new"
    assert await listed_ids(api, other) == [theirs["media_id"]]


# rule 72
async def test_change_of_message_older_than_retention_is_rejected(api: Api, vmbox: dict[str, Any]) -> None:
    old = await create(api, vmbox["id"], timestamp=gregorian_now() - 100 * DAY)
    before = gregorian_now()
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages/{old['media_id']}", {"folder": "saved"})
    after = gregorian_now()
    data = assert_error(reply, 400, "validation error")
    detail = data[old["media_id"]]["date_range"]
    assert detail["message"] == RETENTION_ERROR
    assert before - RETENTION_SECONDS <= detail["cause"] <= after - RETENTION_SECONDS


# rule 72
async def test_move_of_message_older_than_retention_is_rejected(api: Api, vmbox: dict[str, Any]) -> None:
    other = await new_box(api, "Other", "3001")
    old = await create_with_audio(api, vmbox["id"], timestamp=gregorian_now() - 100 * DAY)
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages/{old['media_id']}", {"source_id": other})
    assert_error(reply, 400, "validation error")
    assert (await listed_ids(api, other)) == []


# rule 72 (E10: bulk changes of such messages fail prior_to_retention_duration)
async def test_bulk_change_of_message_older_than_retention_fails(api: Api, vmbox: dict[str, Any]) -> None:
    old = await create(api, vmbox["id"], timestamp=gregorian_now() - 100 * DAY)
    recent = await create(api, vmbox["id"])
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages",
                           {"messages": [old["media_id"], recent["media_id"]], "folder": "saved"})
    assert reply.status == 200, reply.body
    assert reply.data == {"succeeded": [recent["media_id"]],
                          "failed": {old["media_id"]: "prior_to_retention_duration"}}


# rule 73 (decisions: 200 with the moved message's metadata)
async def test_move_answers_metadata_with_a_new_id(api: Api, vmbox: dict[str, Any]) -> None:
    other = await new_box(api, "Other", "3001")
    created = await create_with_audio(api, vmbox["id"], caller_id_number="6001", folder="saved",
                                      timestamp=gregorian_now() - 40 * DAY)
    before = gregorian_now()
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}", {"source_id": other})
    after = gregorian_now()
    assert reply.status == 200, reply.body
    data = reply.data
    assert set(data) == METADATA_KEYS
    assert MESSAGE_ID.match(data["media_id"]) and data["media_id"] != created["media_id"]
    assert data["media_id"][:6] in {yyyymm(before), yyyymm(after)}
    assert data["folder"] == "new"
    assert before <= data["timestamp"] <= after
    assert data["caller_id_number"] == "6001"
    assert data["to_user"] == "3001"


# rule 73
async def test_moved_message_lives_in_destination_with_history(api: Api, vmbox: dict[str, Any],
                                                               services: Services) -> None:
    other = await new_box(api, "Other", "3001")
    created = await create_with_audio(api, vmbox["id"], timestamp=gregorian_now() - 40 * DAY)
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}", {"source_id": other})
    new_id = reply.data["media_id"]
    doc = await stored(services, api.account_id, new_id)
    assert doc["source_id"] == other
    assert vmbox["id"] in doc["history"]
    assert doc["utc_seconds"] == doc["metadata"]["timestamp"]
    assert doc["pvt_account_db"] == naming.encoded_db(naming.modb_of_message(api.account_id, new_id) or "")
    assert await listed_ids(api, other) == [new_id]
    assert await listed_ids(api, vmbox["id"]) == []
    audio = await api.get(f"/vmboxes/{other}/messages/{new_id}/raw")
    assert audio.body == AUDIO


# rule 73
async def test_old_id_of_a_moved_message_is_404(api: Api, vmbox: dict[str, Any]) -> None:
    other = await new_box(api, "Other", "3001")
    created = await create_with_audio(api, vmbox["id"])
    assert (await api.post(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}",
                           {"source_id": other})).status == 200
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}")
    assert_error(reply, 404, "bad_identifier")
    reply = await api.get(f"/vmboxes/{other}/messages/{created['media_id']}")
    assert_error(reply, 404, "bad_identifier")


# rule 74
async def test_copy_to_two_boxes(api: Api, vmbox: dict[str, Any]) -> None:
    first = await new_box(api, "First", "3001")
    second = await new_box(api, "Second", "3002")
    created = await create_with_audio(api, vmbox["id"], folder="saved")
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}",
                           {"source_id": [first, second]})
    assert reply.status == 200, reply.body
    assert set(reply.data) == {"succeeded"}
    new_ids = reply.data["succeeded"]
    assert len(new_ids) == 2 and created["media_id"] not in new_ids
    assert all(MESSAGE_ID.match(new_id) for new_id in new_ids)
    assert sorted(await listed_ids(api, first) + await listed_ids(api, second)) == sorted(new_ids)
    for box, mailbox in ((first, "3001"), (second, "3002")):
        (new_id,) = await listed_ids(api, box)
        assert (await api.get(f"/vmboxes/{box}/messages/{new_id}/raw")).body == AUDIO
        metadata = (await api.get(f"/vmboxes/{box}/messages/{new_id}")).data  # each copy its own metadata
        assert (metadata["media_id"], metadata["to_user"], metadata["folder"]) == (new_id, mailbox, "new")


async def test_copy_resent_with_the_same_request_id_makes_no_second_copy(api: Api, vmbox: dict[str, Any]) -> None:
    first = await new_box(api, "First", "3001")
    created = await create_with_audio(api, vmbox["id"], folder="saved")
    path = f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}"
    named = {"X-Request-ID": "copy-once-1"}
    answers = [await api.call("POST", path, data={"source_id": [first]}, headers=named) for _ in range(2)]
    assert [reply.status for reply in answers] == [200, 200]
    assert answers[0].data == answers[1].data
    assert await listed_ids(api, first) == answers[0].data["succeeded"]


# rule 74
async def test_copy_leaves_the_original_unchanged(api: Api, vmbox: dict[str, Any]) -> None:
    first = await new_box(api, "First", "3001")
    created = await create_with_audio(api, vmbox["id"], folder="saved")
    await api.post(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}", {"source_id": [first]})
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}")
    assert reply.status == 200
    assert reply.data == created
    assert await listed_ids(api, vmbox["id"]) == [created["media_id"]]


# rule 75 (decisions: moving to a missing box is 404 with that id)
async def test_move_to_unknown_box_is_404(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"])
    missing = hex_id()
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}", {"source_id": missing})
    assert assert_error(reply, 404, "bad_identifier") == {"cause": missing, "message": "bad identifier"}
    assert await listed_ids(api, vmbox["id"]) == [created["media_id"]]


# rule 75
async def test_copy_to_a_list_with_an_unknown_box_is_404(api: Api, vmbox: dict[str, Any]) -> None:
    first = await new_box(api, "First", "3001")
    created = await create(api, vmbox["id"])
    missing = hex_id()
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}",
                           {"source_id": [first, missing]})
    assert assert_error(reply, 404, "bad_identifier")["cause"] == missing
    assert await listed_ids(api, first) == []


# rule 75
@pytest.mark.parametrize("source_id", ["", [], [""]])
async def test_single_change_with_empty_source_id_is_rejected(api: Api, vmbox: dict[str, Any],
                                                              source_id: Any) -> None:
    created = await create(api, vmbox["id"])
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}", {"source_id": source_id})
    data = assert_error(reply, 400, "validation error")
    assert data == {"source_id": {"required": {"message": EMPTY_SOURCE}}}


# rule 75
async def test_bulk_change_with_empty_string_in_source_id_list_is_rejected(api: Api,
                                                                           vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"])
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages",
                           {"messages": [created["media_id"]], "source_id": [""]})
    data = assert_error(reply, 400, "validation error")
    assert data == {"source_id": {"required": {"message": EMPTY_SOURCE}}}


# rule 75 (bulk form: an empty list passes validation and copies nothing)
async def test_bulk_change_with_empty_source_id_list_is_a_no_op(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"])
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages",
                           {"messages": [created["media_id"]], "source_id": []})
    assert reply.status == 200, reply.body
    assert reply.data == {}
    assert await listed_ids(api, vmbox["id"]) == [created["media_id"]]


# -- rules 76–79: bulk changes ---------------------------------------------------------


# rule 76
@pytest.mark.parametrize("data", [{}, {"messages": []}, {"messages": "202401-" + "a" * 32}, {"folder": "saved"}])
async def test_bulk_change_without_message_list_is_rejected(api: Api, vmbox: dict[str, Any],
                                                            data: dict[str, Any]) -> None:
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages", data)
    assert assert_error(reply, 400, "validation error") == {"messages": {"required": {"message": NO_MESSAGES}}}


# rule 77
async def test_bulk_change_reports_unknown_ids_failed(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"])
    missing = f"{yyyymm(gregorian_now())}-{hex_id()}"
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages",
                           {"messages": [created["media_id"], missing, "nonsense"], "folder": "saved"})
    assert reply.status == 200, reply.body
    assert reply.data == {"succeeded": [created["media_id"]], "failed": {missing: "not_found",
                                                                        "nonsense": "not_found"}}
    assert (await listing(api, vmbox["id"])).data[0]["folder"] == "saved"


# rule 77
async def test_bulk_change_omits_empty_failed(api: Api, vmbox: dict[str, Any]) -> None:
    ids = [(await create(api, vmbox["id"]))["media_id"] for _ in range(2)]
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages", {"messages": ids, "folder": "saved"})
    assert set(reply.data) == {"succeeded"}
    assert sorted(reply.data["succeeded"]) == sorted(ids)


# rule 77
async def test_bulk_change_omits_empty_succeeded(api: Api, vmbox: dict[str, Any]) -> None:
    missing = f"{yyyymm(gregorian_now())}-{hex_id()}"
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages", {"messages": [missing], "folder": "saved"})
    assert reply.status == 200, reply.body
    assert reply.data == {"failed": {missing: "not_found"}}


# rule 77
async def test_bulk_change_folder_defaults_to_saved_and_reads_the_query(api: Api, vmbox: dict[str, Any]) -> None:
    first = await create(api, vmbox["id"], timestamp=gregorian_now() - 10)
    second = await create(api, vmbox["id"], folder="saved", timestamp=gregorian_now() - 20)
    await api.post(f"/vmboxes/{vmbox['id']}/messages", {"messages": [first["media_id"]]})
    await api.post(f"/vmboxes/{vmbox['id']}/messages", {"messages": [second["media_id"]]},
                   params={"folder": "new"})
    rows = {row["media_id"]: row["folder"] for row in (await listing(api, vmbox["id"])).data}
    assert rows == {first["media_id"]: "saved", second["media_id"]: "new"}


# rule 78 (decisions: bulk folder change only touches the URL's box)
async def test_bulk_change_does_not_touch_other_boxes_messages(api: Api, vmbox: dict[str, Any]) -> None:
    other = await new_box(api, "Other", "3001")
    mine = await create(api, vmbox["id"])
    theirs = await create(api, other)
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages",
                           {"messages": [mine["media_id"], theirs["media_id"]], "folder": "saved"})
    assert reply.status == 200, reply.body
    assert reply.data == {"succeeded": [mine["media_id"]], "failed": {theirs["media_id"]: "not_found"}}
    assert (await listing(api, other)).data[0]["folder"] == "new"


# rule 78 (the bulk change also refuses non-message documents of the MODB)
async def test_bulk_change_does_not_touch_a_cdr(api: Api, vmbox: dict[str, Any], services: Services) -> None:
    now = utc(gregorian_now())
    modb = await services.store.modb(api.account_id, now.year, now.month)
    cdr_id = f"{now.year:04d}{now.month:02d}-{hex_id()}"
    await services.store.couch.put_doc(modb, {"_id": cdr_id, "pvt_type": "cdr", "metadata": {"folder": "new"}})
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages", {"messages": [cdr_id], "folder": "saved"})
    assert reply.data == {"failed": {cdr_id: "not_found"}}
    assert (await services.store.couch.get_doc(modb, cdr_id))["metadata"]["folder"] == "new"


# rule 79
async def test_bulk_move_returns_new_ids(api: Api, vmbox: dict[str, Any]) -> None:
    other = await new_box(api, "Other", "3001")
    created = [await create_with_audio(api, vmbox["id"], bytes([i]) * 50, caller_id_number=f"600{i}")
               for i in range(1, 3)]
    ids = [message["media_id"] for message in created]
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages", {"messages": ids, "source_id": other})
    assert reply.status == 200, reply.body
    assert set(reply.data) == {"succeeded"}
    new_ids = reply.data["succeeded"]
    assert len(new_ids) == 2 and not set(new_ids) & set(ids)
    assert sorted(await listed_ids(api, other)) == sorted(new_ids)
    assert await listed_ids(api, vmbox["id"]) == []
    for new_id in new_ids:
        message = await api.get(f"/vmboxes/{other}/messages/{new_id}")
        number = message.data["caller_id_number"]
        audio = await api.get(f"/vmboxes/{other}/messages/{new_id}/raw")
        assert audio.body == bytes([int(number[-1])]) * 50


# rule 79
async def test_bulk_move_reports_foreign_and_unknown_ids(api: Api, vmbox: dict[str, Any]) -> None:
    other = await new_box(api, "Other", "3001")
    third = await new_box(api, "Third", "3002")
    mine = await create(api, vmbox["id"])
    theirs = await create(api, third)
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages",
                           {"messages": [mine["media_id"], theirs["media_id"]], "source_id": other})
    assert reply.status == 200, reply.body
    assert len(reply.data["succeeded"]) == 1
    assert reply.data["failed"] == {theirs["media_id"]: "not_found"}
    assert await listed_ids(api, third) == [theirs["media_id"]]


# rule 79 (decisions: bulk move to a missing box is 404 with that id)
async def test_bulk_move_to_unknown_box_is_404(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"])
    missing = hex_id()
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages",
                           {"messages": [created["media_id"]], "source_id": missing})
    assert assert_error(reply, 404, "bad_identifier") == {"cause": missing, "message": "bad identifier"}
    assert await listed_ids(api, vmbox["id"]) == [created["media_id"]]


# rule 79
async def test_bulk_copy_returns_one_id_per_destination(api: Api, vmbox: dict[str, Any]) -> None:
    first = await new_box(api, "First", "3001")
    second = await new_box(api, "Second", "3002")
    ids = [(await create_with_audio(api, vmbox["id"]))["media_id"] for _ in range(2)]
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages", {"messages": ids, "source_id": [first, second]})
    assert reply.status == 200, reply.body
    new_ids = reply.data["succeeded"]
    assert len(new_ids) == 4 and len(set(new_ids)) == 4
    assert len(await listed_ids(api, first)) == 2
    assert len(await listed_ids(api, second)) == 2
    assert sorted(await listed_ids(api, vmbox["id"])) == sorted(ids)


# rule 79
async def test_bulk_change_in_unknown_box_is_404(api: Api) -> None:
    missing = hex_id()
    reply = await api.post(f"/vmboxes/{missing}/messages", {"messages": [f"202401-{hex_id()}"]})
    assert assert_error(reply, 404, "bad_identifier")["cause"] == missing


# -- rules 80–86: deleting ----------------------------------------------------------


# rule 80
async def test_bulk_delete_without_body_deletes_everything(api: Api, vmbox: dict[str, Any]) -> None:
    ids = [(await create(api, vmbox["id"], folder=folder))["media_id"] for folder in ("new", "saved", "deleted")]
    reply = await api.call("DELETE", f"/vmboxes/{vmbox['id']}/messages")
    assert reply.status == 200, reply.body
    assert set(reply.data) == {"succeeded"}
    assert sorted(reply.data["succeeded"]) == sorted(ids)
    assert await listed_ids(api, vmbox["id"]) == []


# rule 80
async def test_bulk_delete_leaves_messages_older_than_retention(api: Api, vmbox: dict[str, Any],
                                                                services: Services) -> None:
    old = await create(api, vmbox["id"], timestamp=gregorian_now() - 100 * DAY)
    recent = await create(api, vmbox["id"])
    reply = await api.delete(f"/vmboxes/{vmbox['id']}/messages")
    assert reply.data == {"succeeded": [recent["media_id"]]}
    assert not (await stored(services, api.account_id, old["media_id"])).get("pvt_deleted")


# rule 80
async def test_bulk_delete_leaves_other_boxes_alone(api: Api, vmbox: dict[str, Any]) -> None:
    other = await new_box(api, "Other", "3001")
    theirs = await create(api, other)
    await create(api, vmbox["id"])
    await api.delete(f"/vmboxes/{vmbox['id']}/messages")
    assert await listed_ids(api, other) == [theirs["media_id"]]


async def _three_folders(api: Api, box: str) -> dict[str, str]:
    now = gregorian_now()
    return {folder: (await create(api, box, folder=folder, timestamp=now - i))["media_id"]
            for i, folder in enumerate(("new", "saved", "deleted"))}


# rule 81
async def test_bulk_delete_folder_saved_by_query(api: Api, vmbox: dict[str, Any]) -> None:
    ids = await _three_folders(api, vmbox["id"])
    reply = await api.call("DELETE", f"/vmboxes/{vmbox['id']}/messages", params={"folder": "saved"})
    assert reply.data == {"succeeded": [ids["saved"]]}
    assert sorted(await listed_ids(api, vmbox["id"])) == sorted([ids["new"], ids["deleted"]])


# rule 81
async def test_bulk_delete_folder_saved_by_body(api: Api, vmbox: dict[str, Any]) -> None:
    ids = await _three_folders(api, vmbox["id"])
    reply = await api.delete(f"/vmboxes/{vmbox['id']}/messages", {"folder": "saved"})
    assert reply.data == {"succeeded": [ids["saved"]]}


# rule 81
async def test_bulk_delete_folder_deleted_only_deletes_the_deleted_folder(api: Api, vmbox: dict[str, Any]) -> None:
    ids = await _three_folders(api, vmbox["id"])
    reply = await api.delete(f"/vmboxes/{vmbox['id']}/messages", {"folder": "deleted"})
    assert reply.data == {"succeeded": [ids["deleted"]]}
    assert sorted(await listed_ids(api, vmbox["id"])) == sorted([ids["new"], ids["saved"]])


# rule 81 (a deliberate difference: Kazoo deletes every message of the box)
@pytest.mark.parametrize("where", ["query", "data"])
async def test_bulk_delete_of_an_unknown_folder_is_400_and_deletes_nothing(api: Api, vmbox: dict[str, Any],
                                                                          where: str) -> None:
    ids = await _three_folders(api, vmbox["id"])
    reply = await api.call("DELETE", f"/vmboxes/{vmbox['id']}/messages", params={"folder": "savedd"}) \
        if where == "query" else await api.delete(f"/vmboxes/{vmbox['id']}/messages", {"folder": "savedd"})
    data = assert_error(reply, 400, "validation error")
    assert data["folder"]["enum"] == {"message": "Value not found in enumerated list of values",
                                      "target": ["new", "saved", "deleted"], "value": "savedd"}
    assert sorted(await listed_ids(api, vmbox["id"])) == sorted(ids.values())


async def test_bulk_delete_with_messages_not_a_list_is_400_and_deletes_nothing(api: Api,
                                                                              vmbox: dict[str, Any]) -> None:
    ids = await _three_folders(api, vmbox["id"])
    data = assert_error(await api.delete(f"/vmboxes/{vmbox['id']}/messages", {"messages": 5}), 400,
                        "validation error")
    assert "type" in data["messages"]
    assert sorted(await listed_ids(api, vmbox["id"])) == sorted(ids.values())


@pytest.mark.parametrize("where", ["query", "data"])
async def test_folder_change_to_an_unknown_folder_is_400_and_changes_nothing(api: Api, vmbox: dict[str, Any],
                                                                            where: str) -> None:
    created = await create(api, vmbox["id"])
    path = f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}"
    reply = await api.call("POST", path, data={}, params={"folder": "trash"}) if where == "query" \
        else await api.post(path, {"folder": "trash"})
    assert "enum" in assert_error(reply, 400, "validation error")["folder"]
    assert (await api.get(path)).data["folder"] == "new"


# rule 82 (decisions: listed ids not in the box fail not_found)
async def test_bulk_delete_of_listed_ids(api: Api, vmbox: dict[str, Any]) -> None:
    other = await new_box(api, "Other", "3001")
    mine = [(await create(api, vmbox["id"]))["media_id"] for _ in range(3)]
    theirs = (await create(api, other))["media_id"]
    missing = f"{yyyymm(gregorian_now())}-{hex_id()}"
    reply = await api.delete(f"/vmboxes/{vmbox['id']}/messages", {"messages": [mine[0], mine[1], theirs, missing]})
    assert reply.status == 200, reply.body
    assert sorted(reply.data["succeeded"]) == sorted(mine[:2])
    assert reply.data["failed"] == {theirs: "not_found", missing: "not_found"}
    assert await listed_ids(api, vmbox["id"]) == [mine[2]]
    assert await listed_ids(api, other) == [theirs]


# rule 82
async def test_bulk_delete_of_an_empty_list_deletes_nothing(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"])
    reply = await api.delete(f"/vmboxes/{vmbox['id']}/messages", {"messages": []})
    assert reply.status == 200, reply.body
    assert reply.data == {}
    assert await listed_ids(api, vmbox["id"]) == [created["media_id"]]


# rule 83
async def test_bulk_deleted_messages_are_soft_deleted(api: Api, vmbox: dict[str, Any], services: Services) -> None:
    created = await create(api, vmbox["id"])
    await api.delete(f"/vmboxes/{vmbox['id']}/messages", {"messages": [created["media_id"]]})
    doc = await stored(services, api.account_id, created["media_id"])
    assert doc["pvt_deleted"] is True
    assert doc["metadata"]["folder"] == "deleted"
    assert await listed_ids(api, vmbox["id"]) == []
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}")
    assert_error(reply, 404, "bad_identifier")


# rule 83
async def test_deleted_messages_leave_the_counts(api: Api, vmbox: dict[str, Any]) -> None:
    kept = await create(api, vmbox["id"])
    gone = await create(api, vmbox["id"], folder="saved")
    assert (await box_summary(api, vmbox["id"]))["messages"] == 2
    await api.delete(f"/vmboxes/{vmbox['id']}/messages/{gone['media_id']}")
    summary = await box_summary(api, vmbox["id"])
    assert summary["messages"] == 1
    assert summary["folders"] == {"new": 1, "saved": 0}
    await api.delete(f"/vmboxes/{vmbox['id']}/messages/{kept['media_id']}")
    assert (await box_summary(api, vmbox["id"]))["messages"] == 0


# rule 83
async def test_deleted_messages_leave_the_account_listing(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"])
    await api.delete(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}")
    reply = await api.get("/vmboxes/messages")
    assert reply.data == []


# rule 84
async def test_delete_one_message_answers_metadata_folder_deleted(api: Api, vmbox: dict[str, Any],
                                                                  services: Services) -> None:
    created = await create(api, vmbox["id"])
    reply = await api.call("DELETE", f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}")
    assert reply.status == 200, reply.body
    assert reply.data == {**created, "folder": "deleted"}
    assert (await stored(services, api.account_id, created["media_id"]))["pvt_deleted"] is True
    assert await listed_ids(api, vmbox["id"]) == []


# rule 84
async def test_delete_of_unknown_or_foreign_message_is_404(api: Api, vmbox: dict[str, Any]) -> None:
    other = await new_box(api, "Other", "3001")
    theirs = await create(api, other)
    missing = f"{yyyymm(gregorian_now())}-{hex_id()}"
    for message_id in (theirs["media_id"], missing):
        reply = await api.delete(f"/vmboxes/{vmbox['id']}/messages/{message_id}")
        assert assert_error(reply, 404, "bad_identifier")["cause"] == message_id
    assert await listed_ids(api, other) == [theirs["media_id"]]


# rule 84 (E15: deleting an already deleted message succeeds again)
async def test_delete_twice_is_404_the_second_time(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"])
    path = f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}"
    assert (await api.delete(path)).status == 200
    assert_error(await api.delete(path), 404, "bad_identifier")


# rule 85 (decisions: 400 date_range like POST, not Kazoo's 500)
async def test_delete_of_message_older_than_retention_is_400(api: Api, vmbox: dict[str, Any],
                                                             services: Services) -> None:
    old = await create(api, vmbox["id"], timestamp=gregorian_now() - 100 * DAY)
    reply = await api.delete(f"/vmboxes/{vmbox['id']}/messages/{old['media_id']}")
    data = assert_error(reply, 400, "validation error")
    assert data[old["media_id"]]["date_range"]["message"] == RETENTION_ERROR
    assert not (await stored(services, api.account_id, old["media_id"])).get("pvt_deleted")


# rule 83 / E11 (decisions: messages whose from has two @ are deleted like any other)
async def test_messages_with_two_at_in_from_are_deleted(api: Api, vmbox: dict[str, Any]) -> None:
    first = await create(api, vmbox["id"], **{"from": "someone@far.com@elsewhere", "to": "a@b@c"})
    second = await create(api, vmbox["id"], **{"from": "x@y@z"})
    reply = await api.delete(f"/vmboxes/{vmbox['id']}/messages", {"messages": [first["media_id"]]})
    assert reply.data == {"succeeded": [first["media_id"]]}
    reply = await api.delete(f"/vmboxes/{vmbox['id']}/messages/{second['media_id']}")
    assert reply.status == 200 and reply.data["folder"] == "deleted"
    assert await listed_ids(api, vmbox["id"]) == []
    assert (await api.delete(f"/vmboxes/{vmbox['id']}")).status == 200


# rule 86
async def test_bulk_delete_in_unknown_box_deletes_nothing(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"])
    reply = await api.delete(f"/vmboxes/{hex_id()}/messages")
    assert reply.status == 200, reply.body
    assert reply.json["status"] == "success"
    assert not reply.data
    assert await listed_ids(api, vmbox["id"]) == [created["media_id"]]


# rule 86
async def test_bulk_delete_with_nothing_selected_answers_empty_object(api: Api, vmbox: dict[str, Any]) -> None:
    await create(api, vmbox["id"])
    reply = await api.delete(f"/vmboxes/{vmbox['id']}/messages", {"folder": "saved"})
    assert reply.status == 200, reply.body
    assert reply.data == {}


# issue 15.12: the request id names the ZIP; quotes, backslashes and ``:`` stay out of the fallback
async def test_zip_disposition_quotes_an_ascii_fallback_and_encodes_the_name(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create_with_audio(api, vmbox["id"])
    reply = await zip_of(api, vmbox["id"], [created["media_id"]], request_id='a"b\\c:d;e')
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Disposition"] == (
        'attachment; filename="a_b_c-d;e.zip"; '
        "filename*=UTF-8''a%22b%5Cc%3Ad%3Be.zip")


# -- rules 87–89: upload ---------------------------------------------------------------


# rule 87
async def test_upload_without_file_is_rejected(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"])
    path = f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw"
    for reply in (await api.put(path, {}),
                  await api.call("PUT", path, body=b"", headers={"Content-Type": "audio/mpeg"})):
        data = assert_error(reply, 400, "validation error")
        assert data == {"file": {"required": {"message": "Please provide a media file"}}}


# rule 88
async def test_upload_raw_audio_answers_201_metadata_and_is_downloadable(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"], caller_id_number="6001")
    path = f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw"
    reply = await api.call("PUT", path, body=AUDIO, headers={"Content-Type": "audio/mpeg"})
    assert reply.status == 201, reply.body
    assert reply.data == created
    audio = await api.get(path)
    assert audio.status == 200
    assert audio.body == AUDIO
    assert audio.headers["Content-Type"] == "audio/mpeg"


# rule 88
async def test_upload_again_replaces_the_audio(api: Api, vmbox: dict[str, Any], services: Services) -> None:
    created = await create_with_audio(api, vmbox["id"])
    path = f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw"
    reply = await api.call("PUT", path, body=WAV, headers={"Content-Type": "audio/x-wav"})
    assert reply.status == 201, reply.body
    audio = await api.get(path)
    assert audio.body == WAV
    assert audio.headers["Content-Type"] == "audio/x-wav"
    doc = await stored(services, api.account_id, created["media_id"])
    assert len(doc["_attachments"]) == 1


# rule 88
async def test_upload_multipart_audio(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"])
    body, content_type = multipart([audio_part(AUDIO, "audio/mp3")])
    path = f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw"
    reply = await api.call("PUT", path, body=body, headers={"Content-Type": content_type})
    assert reply.status == 201, reply.body
    assert set(reply.data) == METADATA_KEYS
    assert (await api.get(path)).body == AUDIO


# issue 15.8: an upload that is not audio is refused as such, not as bad JSON
async def test_upload_of_text_is_415_naming_the_accepted_types(api: Api, vmbox: dict[str, Any],
                                                               services: Services) -> None:
    created = await create(api, vmbox["id"])
    path = f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw"
    reply = await api.call("PUT", path, body=b"not a recording", headers={"Content-Type": "text/plain"})
    data = assert_error(reply, 415, "unsupported_media_type")
    assert data["content_type"] == "text/plain"
    assert {"audio/mpeg", "audio/x-wav", "audio/ogg", "multipart/form-data"} <= set(data["accepted"])
    assert "_attachments" not in await stored(services, api.account_id, created["media_id"])


# issue 15.8
async def test_create_with_a_part_that_is_not_audio_is_415(api: Api, vmbox: dict[str, Any]) -> None:
    body, content_type = multipart([json_part({"caller_id_number": "6001"}), audio_part(b"\x89PNG", "image/png")])
    reply = await api.call("PUT", f"/vmboxes/{vmbox['id']}/messages", body=body, headers={"Content-Type": content_type})
    assert assert_error(reply, 415, "unsupported_media_type")["content_type"] == "image/png"
    assert await listed_ids(api, vmbox["id"]) == []


# issue 15.8
async def test_create_with_a_text_body_is_415(api: Api, vmbox: dict[str, Any]) -> None:
    reply = await api.call("PUT", f"/vmboxes/{vmbox['id']}/messages", body=b"hello",
                           headers={"Content-Type": "text/plain"})
    assert assert_error(reply, 415, "unsupported_media_type")["content_type"] == "text/plain"
    assert await listed_ids(api, vmbox["id"]) == []


# rule 88 (2.5: a ``filename`` names the attachment, whitespace removed, extension added)
async def test_upload_with_filename_names_the_attachment(api: Api, vmbox: dict[str, Any],
                                                         services: Services) -> None:
    created = await create(api, vmbox["id"], caller_id_number="6001")
    reply = await api.call("PUT", f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw", body=AUDIO,
                           headers={"Content-Type": "audio/mpeg"}, params={"filename": "my voice"})
    assert reply.status == 201, reply.body
    doc = await stored(services, api.account_id, created["media_id"])
    assert list(doc["_attachments"]) == ["myvoice.mp3"]


# rule 89
async def test_upload_to_message_of_another_box_is_404(api: Api, vmbox: dict[str, Any]) -> None:
    other = await new_box(api, "Other", "3001")
    theirs = await create(api, other)
    reply = await api.call("PUT", f"/vmboxes/{vmbox['id']}/messages/{theirs['media_id']}/raw", body=AUDIO,
                           headers={"Content-Type": "audio/mpeg"})
    assert assert_error(reply, 404, "bad_identifier")["cause"] == theirs["media_id"]
    assert_error(await api.get(f"/vmboxes/{other}/messages/{theirs['media_id']}/raw"), 404, "bad_identifier")


# -- rule 90: ZIP ------------------------------------------------------------------------


# rule 90
async def test_zip_of_messages(api: Api) -> None:
    tz = "Europe/Dublin"
    box = await new_box(api, "Dublin", "3300", timezone=tz)
    now = gregorian_now()
    first = await create_with_audio(api, box, AUDIO, caller_id_number="6001", timestamp=now - 7200)
    second = await create_with_audio(api, box, WAV, "audio/x-wav", caller_id_number="6002", timestamp=now - 60)
    reply = await zip_of(api, box, [first["media_id"], second["media_id"]], request_id="zip-request-0001")
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "application/zip"
    assert reply.headers["Content-Disposition"] == disposition("zip-request-0001.zip")
    archive = zipfile.ZipFile(io.BytesIO(reply.body))
    assert archive.namelist() == [download_name("6001", now - 7200, tz, "mp3"),
                                  download_name("6002", now - 60, tz, "wav")]
    assert [archive.read(name) for name in archive.namelist()] == [AUDIO, WAV]


# rule 90 (decisions: equal names get " (1)", " (2)" before the extension)
async def test_zip_equal_names_are_numbered(api: Api, vmbox: dict[str, Any], account: dict[str, Any]) -> None:
    stamp = gregorian_now() - 600
    ids = [(await create_with_audio(api, vmbox["id"], bytes([i]) * 10, caller_id_number="6001",
                                    timestamp=stamp))["media_id"] for i in range(3)]
    reply = await zip_of(api, vmbox["id"], ids)
    assert reply.status == 200, reply.body
    archive = zipfile.ZipFile(io.BytesIO(reply.body))
    name = download_name("6001", stamp, account["timezone"], "mp3")
    stem = name[:-len(".mp3")]
    assert archive.namelist() == [name, f"{stem} (1).mp3", f"{stem} (2).mp3"]
    assert [archive.read(member) for member in archive.namelist()] == [bytes([i]) * 10 for i in range(3)]


# rule 90 (decisions: an unknown id is a 404 before anything is streamed)
async def test_zip_with_unknown_id_is_404(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create_with_audio(api, vmbox["id"])
    missing = f"{yyyymm(gregorian_now())}-{hex_id()}"
    reply = await zip_of(api, vmbox["id"], [created["media_id"], missing])
    assert assert_error(reply, 404, "bad_identifier")["cause"] == missing


# rule 90
async def test_zip_with_message_of_another_box_is_404(api: Api, vmbox: dict[str, Any]) -> None:
    other = await new_box(api, "Other", "3001")
    theirs = await create_with_audio(api, other)
    reply = await zip_of(api, vmbox["id"], [theirs["media_id"]])
    assert assert_error(reply, 404, "bad_identifier")["cause"] == theirs["media_id"]


# rule 90
async def test_zip_with_message_without_audio_is_404(api: Api, vmbox: dict[str, Any]) -> None:
    silent = await create(api, vmbox["id"])
    reply = await zip_of(api, vmbox["id"], [silent["media_id"]])
    assert assert_error(reply, 404, "bad_identifier")["cause"] == silent["media_id"]


# rule 90
@pytest.mark.parametrize("data", [{}, {"messages": []}])
async def test_zip_without_ids_is_rejected(api: Api, vmbox: dict[str, Any], data: dict[str, Any]) -> None:
    reply = await api.call("POST", f"/vmboxes/{vmbox['id']}/messages/raw", data=data,
                           headers={"Accept": "application/zip"})
    assert assert_error(reply, 400, "validation error") == {"messages": {"required": {"message": NO_MESSAGES}}}


async def test_zip_of_more_audio_than_max_zip_size_is_refused_before_a_byte_is_sent(
        aiohttp_client: Any, config: Config, couch_url: str, account: dict[str, Any]) -> None:
    client = await aiohttp_client(create_app(replace(config, max_zip_size=25), couch_url))
    small = Api(client, account["_id"], await login(client, account["pvt_api_key"]))
    box = await new_box(small, "Zip", "3400")
    ids = [(await create_with_audio(small, box, bytes([i]) * 10))["media_id"] for i in range(3)]
    reply = await zip_of(small, box, ids)
    assert assert_error(reply, 400, "validation error")["messages"]["maxSize"]["target"] == 25
    assert "30 bytes" in assert_error(reply, 400, "validation error")["messages"]["maxSize"]["message"]
    fewer = await zip_of(small, box, ids[:2])  # 20 bytes
    assert fewer.status == 200, fewer.body
    assert [zipfile.ZipFile(io.BytesIO(fewer.body)).read(name) for name in
            zipfile.ZipFile(io.BytesIO(fewer.body)).namelist()] == [bytes([0]) * 10, bytes([1]) * 10]


# rule 90
async def test_zip_in_unknown_box_is_404(api: Api) -> None:
    missing = hex_id()
    reply = await zip_of(api, missing, [f"202401-{hex_id()}"])
    assert assert_error(reply, 404, "bad_identifier")["cause"] == missing


# -- acceptance: paging across three months ------------------------------------------


async def _three_months(api: Api, box: str) -> list[tuple[int, str]]:
    """16 messages over three months inside the retention window, five of them sharing
    one timestamp; [(timestamp, id)] newest first (ties by id, descending)."""
    now = gregorian_now()
    newest = now - DAY
    stamps = [newest + 30, newest + 20, newest + 10] + [newest] * 5
    stamps += [now - 40 * DAY + 100 * i for i in range(4)]
    stamps += [now - 80 * DAY + 100 * i for i in range(4)]
    made = []
    for stamp in stamps:
        made.append((stamp, (await create(api, box, timestamp=stamp))["media_id"]))
    assert len({message_id[:6] for _stamp, message_id in made}) == 3
    return sorted(made, reverse=True)


async def test_acceptance_paging_walks_three_months_newest_first(api: Api, vmbox: dict[str, Any]) -> None:
    made = await _three_months(api, vmbox["id"])
    rows, sizes = await walk(api, vmbox["id"], page_size=5)
    assert sizes == [5, 5, 5, 1]
    assert [row["media_id"] for row in rows] == [message_id for _stamp, message_id in made]
    tied = [index for index, (stamp, _id) in enumerate(made) if stamp == made[3][0]]
    assert tied[0] < 5 <= tied[-1], "the equal timestamps straddle the first page boundary"


async def test_acceptance_paging_with_filter_not_folder_saved(api: Api, vmbox: dict[str, Any]) -> None:
    made = await _three_months(api, vmbox["id"])
    saved = {made[0][1], made[9][1], made[14][1]}
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages", {"messages": sorted(saved), "folder": "saved"})
    assert sorted(reply.data["succeeded"]) == sorted(saved)
    expected = [message_id for _stamp, message_id in made if message_id not in saved]
    rows, sizes = await walk(api, vmbox["id"], page_size=5, filter_not_folder="saved")
    assert sizes == [5, 5, 3]
    assert [row["media_id"] for row in rows] == expected
    assert all(row["folder"] == "new" for row in rows)


async def test_acceptance_paging_ascending_is_oldest_first(api: Api, vmbox: dict[str, Any]) -> None:
    made = await _three_months(api, vmbox["id"])
    rows, sizes = await walk(api, vmbox["id"], page_size=5, ascending="true")
    assert sizes == [5, 5, 5, 1]
    assert [row["media_id"] for row in rows] == [message_id for _stamp, message_id in reversed(made)]


async def test_acceptance_paginate_false_returns_all_three_months(api: Api, vmbox: dict[str, Any]) -> None:
    made = await _three_months(api, vmbox["id"])
    reply = await listing(api, vmbox["id"], paginate="false")
    assert [row["media_id"] for row in reply.data] == [message_id for _stamp, message_id in made]
    for key in ("page_size", "start_key", "next_start_key"):
        assert key not in reply.json
    summary = await box_summary(api, vmbox["id"])
    assert summary["messages"] == 16
    assert summary["folders"] == {"new": 16, "saved": 0}


async def test_acceptance_account_listing_walks_three_months(api: Api, vmbox: dict[str, Any]) -> None:
    made = await _three_months(api, vmbox["id"])
    seen: list[str] = []
    start: str | None = None
    for _ in range(10):
        params = {"page_size": "5", **({"start_key": start} if start else {})}
        reply = await api.get("/vmboxes/messages", params=params)
        assert reply.json["page_size"] == len(reply.data)
        seen += [row[vmbox["id"]]["media_id"] for row in reply.data]
        start = reply.json.get("next_start_key")
        if start is None:
            break
    assert seen == [message_id for _stamp, message_id in made]


async def _ties(api: Api, box: str, count: int = 9) -> tuple[list[str], set[str]]:
    """``count`` messages sharing one timestamp (every other one saved), between two
    others; ids newest first (ties by id, descending) and the saved ids."""
    stamp = gregorian_now() - 3600
    await create(api, box, timestamp=stamp + 1)
    tied = [(await create(api, box, timestamp=stamp))["media_id"] for _ in range(count)]
    await create(api, box, timestamp=stamp - 1)
    ordered = sorted(tied, reverse=True)
    saved = set(ordered[1::2])
    reply = await api.post(f"/vmboxes/{box}/messages", {"messages": sorted(saved), "folder": "saved"})
    assert sorted(reply.data["succeeded"]) == sorted(saved)
    return ordered, saved


# decisions: page keys carry the doc id, so equal timestamps are neither repeated nor skipped
@pytest.mark.parametrize("page_size", [1, 2, 4])
async def test_many_equal_timestamps_walk_exactly_once(api: Api, vmbox: dict[str, Any], page_size: int) -> None:
    ordered, _saved = await _ties(api, vmbox["id"])
    rows, _sizes = await walk(api, vmbox["id"], page_size=page_size)
    ids = [row["media_id"] for row in rows]
    assert len(ids) == len(set(ids)) == len(ordered) + 2
    assert ids[1:-1] == ordered


# decisions: ties at page boundaries, with a filter dropping rows inside the tie
@pytest.mark.parametrize("page_size", [1, 2, 3])
async def test_many_equal_timestamps_walk_exactly_once_with_filter(api: Api, vmbox: dict[str, Any],
                                                                   page_size: int) -> None:
    ordered, saved = await _ties(api, vmbox["id"])
    rows, _sizes = await walk(api, vmbox["id"], page_size=page_size, filter_not_folder="saved")
    ids = [row["media_id"] for row in rows]
    assert len(ids) == len(set(ids))
    assert ids[1:-1] == [message_id for message_id in ordered if message_id not in saved]


# decisions: the same, oldest first
@pytest.mark.parametrize("page_size", [1, 2])
async def test_many_equal_timestamps_walk_exactly_once_ascending(api: Api, vmbox: dict[str, Any],
                                                                 page_size: int) -> None:
    ordered, saved = await _ties(api, vmbox["id"])
    rows, _sizes = await walk(api, vmbox["id"], page_size=page_size, ascending="true")
    assert [row["media_id"] for row in rows][1:-1] == list(reversed(ordered))
    rows, _sizes = await walk(api, vmbox["id"], page_size=page_size, ascending="true", filter_folder="saved")
    assert [row["media_id"] for row in rows] == [m for m in reversed(ordered) if m in saved]


# decisions: equal timestamps in the account-wide listing
async def test_many_equal_timestamps_walk_exactly_once_account_wide(api: Api, vmbox: dict[str, Any]) -> None:
    ordered, _saved = await _ties(api, vmbox["id"])
    seen: list[str] = []
    start: str | None = None
    for _ in range(30):
        params = {"page_size": "2", **({"start_key": start} if start else {})}
        reply = await api.get("/vmboxes/messages", params=params)
        seen += [row[vmbox["id"]]["media_id"] for row in reply.data]
        start = reply.json.get("next_start_key")
        if start is None:
            break
    assert seen[1:-1] == ordered


# -- acceptance: documents written by Kazoo -----------------------------------------


def kazoo_recorded(account_id: str, box_id: str, message_id: str, stamp: int, realm: str, *,
                   folder: str = "new", caller: str = "+15551230001", audio: bytes | None = AUDIO,
                   **extra: Any) -> dict[str, Any]:
    """A ``mailbox_message`` as Kazoo's callflow stores it."""
    db = naming.modb_of_message(account_id, message_id) or ""
    media_name = f"{hex_id()}.mp3"
    doc: dict[str, Any] = {
        "_id": message_id,
        "name": f"mailbox 3000 message {utc(stamp):%m-%d-%Y %H:%M:%S}",
        "description": "voicemail message with media",
        "source_type": "voicemail",
        "source_id": box_id,
        "media_source": "recording",
        "media_filename": media_name,
        "streamable": True,
        "utc_seconds": stamp,
        "metadata": {
            "media_id": message_id, "call_id": f"{hex_id()[:20]}@10.0.0.1", "caller_id_number": caller,
            "caller_id_name": "Alice Caller", "from": f"{caller}@{realm}", "from_user": caller, "from_realm": realm,
            "to": f"3000@{realm}", "to_user": "3000", "to_realm": realm, "length": 4260, "timestamp": stamp,
            "folder": folder,
        },
        "pvt_type": "mailbox_message",
        "pvt_account_id": account_id,
        "pvt_account_db": naming.encoded_db(db),
        "pvt_created": stamp,
        "pvt_modified": stamp,
        "pvt_node": "kazoo_apps@fs1.example.net",
        "pvt_vsn": "1",
        "pvt_document_hash": hashlib.md5(message_id.encode()).hexdigest(),
        **extra,
    }
    if audio is not None:
        doc["_attachments"] = {media_name: {"content_type": "audio/mpeg",
                                            "data": base64.b64encode(audio).decode()}}
    return doc


async def _kazoo_written(api: Api, box: str, services: Services, realm: str) -> dict[str, Any]:
    """Recorded (new + saved), soft-deleted, CDR and Kazoo-migrated documents in the
    current MODB, and the legacy private_media doc in the account DB."""
    couch = services.store.couch
    account_id = api.account_id
    now = gregorian_now()
    month = utc(now)
    prefix = f"{month.year:04d}{month.month:02d}"
    modb = await services.store.modb(account_id, month.year, month.month)
    recorded = f"{prefix}-{hex_id()}"
    saved = f"{prefix}-{hex_id()}"
    soft_deleted = f"{prefix}-{hex_id()}"
    cdr = f"{prefix}-{hex_id()}"
    legacy = hex_id()
    migrated = f"{prefix}-{legacy}"
    saved_audio = b"ID3saved" + bytes(range(50))
    legacy_audio = b"ID3legacy" + bytes(reversed(range(256)))
    await couch.put_doc(modb, kazoo_recorded(account_id, box, recorded, now - 300, realm, caller="+15551230001"))
    await couch.put_doc(modb, kazoo_recorded(account_id, box, saved, now - 200, realm, folder="saved",
                                             caller="+15551230002", audio=saved_audio))
    await couch.put_doc(modb, kazoo_recorded(account_id, box, soft_deleted, now - 250, realm, folder="deleted",
                                             pvt_deleted=True))
    await couch.put_doc(modb, {"_id": cdr, "pvt_type": "cdr", "call_id": "abc@10.0.0.1", "direction": "inbound",
                               "caller_id_number": "+15551230001", "timestamp": now - 300,
                               "pvt_account_id": account_id, "pvt_account_db": naming.encoded_db(modb),
                               "pvt_created": now - 300, "pvt_modified": now - 300, "pvt_vsn": "2"})
    account_db = naming.account_db(account_id)
    await couch.put_doc(account_db, {
        "_id": legacy, "pvt_type": "private_media", "media_source": "recording", "source_type": "voicemail",
        "source_id": box, "name": "mailbox 3000 message 2016", "streamable": True,
        "pvt_account_id": account_id, "pvt_account_db": naming.encoded_db(account_db),
        "pvt_created": now - 100, "pvt_modified": now - 100,
        "_attachments": {f"{legacy}.mp3": {"content_type": "audio/mpeg",
                                           "data": base64.b64encode(legacy_audio).decode()}}})
    migrated_doc = kazoo_recorded(account_id, box, migrated, now - 100, realm, caller="+15551230003", audio=None,
                                  pvt_moved_to_modb="true", pvt_previous_id=legacy,
                                  pvt_attachments={f"{hex_id()}.mp3": {
                                      "content_type": "audio/mpeg", "length": 0, "stub": False,
                                      "handler": {"kz_att_link": {"att_dbname": naming.encoded_db(account_db),
                                                                  "att_docid": legacy}}}})
    migrated_doc.pop("media_filename")
    await couch.put_doc(modb, migrated_doc)
    return {"recorded": recorded, "saved": saved, "soft_deleted": soft_deleted, "cdr": cdr, "migrated": migrated,
            "saved_audio": saved_audio, "legacy_audio": legacy_audio}


async def test_acceptance_kazoo_documents_are_listed(api: Api, vmbox: dict[str, Any], services: Services,
                                                     account: dict[str, Any]) -> None:
    ids = await _kazoo_written(api, vmbox["id"], services, account["realm"])
    rows = (await listing(api, vmbox["id"])).data
    assert [row["media_id"] for row in rows] == [ids["migrated"], ids["saved"], ids["recorded"]]
    assert all(set(row) == SUMMARY_KEYS for row in rows)
    everything = await api.get("/vmboxes/messages", params={"paginate": "false"})
    assert [row[vmbox["id"]]["media_id"] for row in everything.data] == [ids["migrated"], ids["saved"],
                                                                         ids["recorded"]]


async def test_acceptance_kazoo_documents_are_counted(api: Api, vmbox: dict[str, Any], services: Services,
                                                      account: dict[str, Any]) -> None:
    await _kazoo_written(api, vmbox["id"], services, account["realm"])
    summary = await box_summary(api, vmbox["id"])
    assert summary["messages"] == 3
    assert summary["folders"] == {"new": 2, "saved": 1}


async def test_acceptance_kazoo_cdr_and_soft_deleted_by_id(api: Api, vmbox: dict[str, Any], services: Services,
                                                           account: dict[str, Any]) -> None:
    ids = await _kazoo_written(api, vmbox["id"], services, account["realm"])
    assert_error(await api.get(f"/vmboxes/{vmbox['id']}/messages/{ids['cdr']}"), 404, "bad_identifier")
    assert_error(await api.get(f"/vmboxes/{vmbox['id']}/messages/{ids['soft_deleted']}"), 404, "bad_identifier")
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{ids['recorded']}")
    assert reply.status == 200, reply.body
    assert reply.data["from_user"] == "+15551230001"
    assert reply.data["length"] == 4260


async def test_acceptance_kazoo_audio_recorded_and_linked(api: Api, vmbox: dict[str, Any], services: Services,
                                                          account: dict[str, Any]) -> None:
    ids = await _kazoo_written(api, vmbox["id"], services, account["realm"])
    for message_id, audio in ((ids["recorded"], AUDIO), (ids["saved"], ids["saved_audio"]),
                              (ids["migrated"], ids["legacy_audio"])):
        reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/{message_id}/raw")
        assert reply.status == 200, (message_id, reply.body[:200])
        assert reply.body == audio
        assert reply.headers["Content-Type"] == "audio/mpeg"
        assert reply.headers["Content-Disposition"].endswith(".mp3")


async def test_acceptance_kazoo_linked_audio_follows_a_move(api: Api, vmbox: dict[str, Any], services: Services,
                                                            account: dict[str, Any]) -> None:
    ids = await _kazoo_written(api, vmbox["id"], services, account["realm"])
    other = await new_box(api, "Other", "3001")
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages/{ids['migrated']}", {"source_id": other})
    assert reply.status == 200, reply.body
    audio = await api.get(f"/vmboxes/{other}/messages/{reply.data['media_id']}/raw")
    assert audio.body == ids["legacy_audio"]


async def test_acceptance_kazoo_documents_zip(api: Api, vmbox: dict[str, Any], services: Services,
                                              account: dict[str, Any]) -> None:
    ids = await _kazoo_written(api, vmbox["id"], services, account["realm"])
    reply = await zip_of(api, vmbox["id"], [ids["recorded"], ids["migrated"]])
    assert reply.status == 200, reply.body
    archive = zipfile.ZipFile(io.BytesIO(reply.body))
    assert [archive.read(name) for name in archive.namelist()] == [AUDIO, ids["legacy_audio"]]


async def test_acceptance_kazoo_document_folder_change_keeps_kazoo_fields(api: Api, vmbox: dict[str, Any],
                                                                          services: Services,
                                                                          account: dict[str, Any]) -> None:
    ids = await _kazoo_written(api, vmbox["id"], services, account["realm"])
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages/{ids['recorded']}", {"folder": "saved"})
    assert reply.status == 200, reply.body
    doc = await stored(services, api.account_id, ids["recorded"])
    assert doc["metadata"]["folder"] == "saved"
    assert doc["media_filename"] in doc["_attachments"]
    assert doc["pvt_node"] == "kazoo_apps@fs1.example.net"
    assert (await api.get(f"/vmboxes/{vmbox['id']}/messages/{ids['recorded']}/raw")).body == AUDIO


# -- acceptance: a crash in the middle of a move loses nothing --------------------------


def _crash_at(point: str) -> Callable[[str], Awaitable[None]]:
    async def fault(reached: str) -> None:
        if reached == point:
            raise RuntimeError(f"simulated crash at {reached}")
    return fault


async def _audio_somewhere(api: Api, boxes: list[str], call_id: str) -> list[bytes]:
    """The audio of every listed message (in these boxes) with this call id."""
    found = []
    for box in boxes:
        for row in (await listing(api, box, paginate="false")).data:
            if row["call_id"] == call_id:
                reply = await api.get(f"/vmboxes/{box}/messages/{row['media_id']}/raw")
                assert reply.status == 200, reply.body
                found.append(reply.body)
    return found


@pytest.mark.parametrize("point", ["transfer:after_copy", "transfer:before_copy"])
async def test_crash_during_single_move_loses_nothing_and_retry_does_not_duplicate(
        api: Api, vmbox: dict[str, Any], point: str) -> None:
    storage = api.client.app[kazoo_vm.appkeys.SERVICES].messages
    other = await new_box(api, "Other", "3001")
    created = await create_with_audio(api, vmbox["id"], call_id="crash-single")
    path = f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}"
    storage.fault = _crash_at(point)
    try:
        reply = await api.post(path, {"source_id": other})
    finally:
        storage.fault = None
    assert reply.status >= 500, reply.body
    copies = await _audio_somewhere(api, [vmbox["id"], other], "crash-single")
    assert copies and all(audio == AUDIO for audio in copies)
    source = await api.get(path + "/raw")
    assert source.status == 200 and source.body == AUDIO
    retry = await api.post(path, {"source_id": other})
    assert retry.status == 200, retry.body
    assert await listed_ids(api, vmbox["id"]) == []
    assert await listed_ids(api, other) == [retry.data["media_id"]]
    assert (await api.get(f"/vmboxes/{other}/messages/{retry.data['media_id']}/raw")).body == AUDIO


async def test_move_elsewhere_while_a_move_is_half_done_is_a_conflict(api: Api, vmbox: dict[str, Any]) -> None:
    storage = api.client.app[kazoo_vm.appkeys.SERVICES].messages
    first, second = await new_box(api, "First", "3001"), await new_box(api, "Second", "3002")
    created = await create_with_audio(api, vmbox["id"], call_id="half-done-elsewhere")
    path = f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}"
    storage.fault = _crash_at("transfer:before_copy")
    try:
        assert (await api.post(path, {"source_id": first})).status >= 500
    finally:
        storage.fault = None
    assert_error(await api.post(path, {"source_id": second}), 409, "datastore_conflict")
    assert await listed_ids(api, second) == []


@pytest.mark.parametrize("point", ["transfer:after_copy", "transfer:before_copy"])
async def test_crash_during_bulk_move_loses_nothing_and_retry_does_not_duplicate(
        api: Api, vmbox: dict[str, Any], point: str) -> None:
    storage = api.client.app[kazoo_vm.appkeys.SERVICES].messages
    other = await new_box(api, "Other", "3001")
    audio = {f"crash-{i}": bytes([i]) * 64 for i in range(1, 3)}
    ids = [(await create_with_audio(api, vmbox["id"], data, call_id=call_id))["media_id"]
           for call_id, data in audio.items()]
    storage.fault = _crash_at(point)
    try:
        reply = await api.post(f"/vmboxes/{vmbox['id']}/messages", {"messages": ids, "source_id": other})
    finally:
        storage.fault = None
    assert reply.status >= 500 or reply.data.get("failed"), reply.body
    for call_id, data in audio.items():
        copies = await _audio_somewhere(api, [vmbox["id"], other], call_id)
        assert copies and all(found == data for found in copies), call_id
    retry = await api.post(f"/vmboxes/{vmbox['id']}/messages", {"messages": ids, "source_id": other})
    assert retry.status == 200, retry.body
    assert set(retry.data) == {"succeeded"}
    assert await listed_ids(api, vmbox["id"]) == []
    rows = (await listing(api, other, paginate="false")).data
    assert sorted(row["call_id"] for row in rows) == sorted(audio)
    assert sorted(row["media_id"] for row in rows) == sorted(retry.data["succeeded"])
    for call_id, data in audio.items():
        assert await _audio_somewhere(api, [other], call_id) == [data]


# -- the seed page's curl requests -----------------------------------------------------


async def test_seed_get_voicemail_messages_of_the_account(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"], caller_id_number="1001")
    reply = await curl(api, "GET", "/vmboxes/messages")
    body = assert_success(reply)
    assert body["data"] == [{vmbox["id"]: {key: created[key] for key in SUMMARY_KEYS}}]
    assert body["auth_token"] == api.token
    # the page's curl line actually names a box URL with ?paginate=true
    reply = await curl(api, "GET", f"/vmboxes/{vmbox['id']}/messages?paginate=true")
    assert assert_success(reply)["data"] == [{key: created[key] for key in SUMMARY_KEYS}]


async def test_seed_create_message_json(api: Api, vmbox: dict[str, Any], account: dict[str, Any]) -> None:
    body = b'{"data":{"caller_id_name":"someone","caller_id_number":"6001","folder":"new",' \
           b'"from":"someone@farfaraway.com"}}'
    reply = await curl(api, "PUT", f"/vmboxes/{vmbox['id']}/messages", body=body)
    data = assert_success(reply, 201)["data"]
    assert set(data) == METADATA_KEYS
    assert (data["caller_id_name"], data["caller_id_number"], data["folder"]) == ("someone", "6001", "new")
    assert data["from"] == "someone@farfaraway.com"
    assert data["to"] == f"3000@{account['realm']}"
    assert MESSAGE_ID.match(data["media_id"])


async def test_seed_create_message_multipart(api: Api, vmbox: dict[str, Any]) -> None:
    message_json = json.dumps({"data": {"caller_id_name": "someone", "caller_id_number": "6001", "folder": "new",
                                        "from": "someone@farfaraway.com"}}).encode()
    body, content_type = multipart([
        ({"Content-Disposition": 'form-data; name="content"; filename="message.json"',
          "Content-Type": "application/json"}, message_json),
        ({"Content-Disposition": 'form-data; name="content"; filename="voice.mp3"',
          "Content-Type": "audio/mp3"}, AUDIO)])
    reply = await curl(api, "PUT", f"/vmboxes/{vmbox['id']}/messages", body=body,
                       headers={"Content-Type": content_type})
    data = assert_success(reply, 201)["data"]
    assert set(data) == METADATA_KEYS
    assert data["from"] == "someone@farfaraway.com"
    audio = await curl(api, "GET", f"/vmboxes/{vmbox['id']}/messages/{data['media_id']}/raw")
    assert audio.status == 200 and audio.body == AUDIO


async def test_seed_multipart_url_of_the_page_is_not_an_endpoint(api: Api) -> None:
    body, content_type = multipart([json_part({}), audio_part()])
    reply = await curl(api, "PUT", "/messages", body=body, headers={"Content-Type": content_type})
    assert_error(reply, 404, "not_found")


async def test_seed_delete_all_messages(api: Api, vmbox: dict[str, Any]) -> None:
    ids = [(await create(api, vmbox["id"]))["media_id"] for _ in range(2)]
    reply = await curl(api, "DELETE", f"/vmboxes/{vmbox['id']}/messages")
    data = assert_success(reply)["data"]
    assert set(data) == {"succeeded"}
    assert sorted(data["succeeded"]) == sorted(ids)


async def test_seed_get_messages_of_a_box(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"], caller_id_number="1001", caller_id_name="userb userb")
    reply = await curl(api, "GET", f"/vmboxes/{vmbox['id']}/messages")
    data = assert_success(reply)["data"]
    assert data == [{key: created[key] for key in SUMMARY_KEYS}]


async def test_seed_change_a_list_of_messages(api: Api, vmbox: dict[str, Any]) -> None:
    ids = [(await create(api, vmbox["id"]))["media_id"] for _ in range(2)]
    missing = f"{yyyymm(gregorian_now())}-{hex_id()}"
    body = json.dumps({"data": {"folder": "saved", "messages": [*ids, missing]}}).encode()
    reply = await curl(api, "POST", f"/vmboxes/{vmbox['id']}/messages", body=body,
                       headers={"Content-Type": "application/json"})
    data = assert_success(reply)["data"]
    assert sorted(data["succeeded"]) == sorted(ids)
    assert data["failed"] == {missing: "not_found"}
    assert "suceeded" not in data


async def test_seed_zip_of_messages(api: Api, vmbox: dict[str, Any]) -> None:
    ids = [(await create_with_audio(api, vmbox["id"], bytes([i]) * 20, caller_id_number=f"60{i}"))["media_id"]
           for i in range(1, 4)]
    body = json.dumps({"data": {"messages": ids}}).encode()
    reply = await curl(api, "POST", f"/vmboxes/{vmbox['id']}/messages/raw", body=body,
                       headers={"Content-Type": "application/json", "Accept": "application/zip"})
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(reply.body))
    assert [archive.read(name) for name in archive.namelist()] == [bytes([i]) * 20 for i in range(1, 4)]


async def test_seed_remove_a_message(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"])
    reply = await curl(api, "DELETE", f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}")
    data = assert_success(reply)["data"]
    assert data == {**created, "folder": "deleted"}


async def test_seed_get_a_message(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"], caller_id_number="1001")
    reply = await curl(api, "GET", f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}")
    assert assert_success(reply)["data"] == created


async def test_seed_change_a_message(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"])
    reply = await curl(api, "POST", f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}",
                       body=b'{"data": {"folder": "saved"}}')
    assert assert_success(reply)["data"] == {**created, "folder": "saved"}


async def test_seed_get_raw_audio(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create_with_audio(api, vmbox["id"], caller_id_number="1001")
    reply = await curl(api, "GET", f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw")
    assert reply.status == 200
    assert reply.body == AUDIO
    assert reply.headers["Content-Type"] == "audio/mpeg"
    assert reply.headers["Content-Disposition"].startswith('attachment; filename="1001_')


async def test_seed_add_media_to_a_message(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create(api, vmbox["id"], caller_id_name="someone", caller_id_number="6001",
                           **{"from": "someone@farfaraway.com"})
    body, content_type = multipart([({"Content-Disposition": 'form-data; name="content"; filename="voice.mp3"',
                                      "Content-Type": "audio/mp3"}, AUDIO)])
    reply = await curl(api, "PUT", f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw", body=body,
                       headers={"Content-Type": content_type})
    assert assert_success(reply, 201)["data"] == created
    audio = await curl(api, "GET", f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw")
    assert audio.body == AUDIO
    assert audio.headers["Content-Type"] == "audio/mp3"
