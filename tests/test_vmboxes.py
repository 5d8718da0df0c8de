"""Voicemail boxes (Kazoo crossbar ``vmboxes``, endpoints E1–E6): the behaviour rules
1–36 of kazoo-voicemail.md section 6 as adjusted by decisions.md, box listing
pagination and filters, and boxes written by Kazoo itself."""

from __future__ import annotations

import base64
import struct
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import Api, Reply, assert_error, stored_doc

from kazoo_vm.kazoo import naming
from kazoo_vm.services import Services
from kazoo_vm.storage.errors import NotFound

GREGORIAN_UNIX_OFFSET = 62167219200
RETENTION_SECONDS = 93 * 86400 + 3600
MIGRATE_MESSAGE = "Please migrate your voicemail box messages to MODB"
NOTIFY_WARNING = "214 Transformation applied: attribute notify_email_address replaced"
SCHEMA_DEFAULTS: dict[str, Any] = {
    "announcement_only": False,
    "check_if_owner": True,
    "delete_after_notify": False,
    "include_message_on_notify": True,
    "include_transcription_on_notify": True,
    "is_setup": False,
    "is_voicemail_ff_rw_enabled": False,
    "media": {},
    "media_extension": "mp3",
    "not_configurable": False,
    "notify_email_addresses": [],
    "oldest_message_first": False,
    "require_pin": False,
    "save_after_notify": False,
    "seek_duration_ms": 10000,
    "skip_envelope": False,
    "skip_greeting": False,
    "skip_instructions": False,
    "transcribe": False,
}
OWNER_A = "a" * 32
OWNER_B = "b" * 32


# -- helpers ------------------------------------------------------------------------


def gregorian_now() -> int:
    return int(time.time()) + GREGORIAN_UNIX_OFFSET


def hex_id() -> str:
    return uuid.uuid4().hex


def encoded_account_db(account_id: str) -> str:
    return f"account%2F{account_id[0:2]}%2F{account_id[2:4]}%2F{account_id[4:]}"


def kazoo_start_key(name: str) -> str:
    """A ``next_start_key`` as Kazoo mints it for the box listing: base64url of
    ``term_to_binary(<<Name/binary>>)`` (view key only, no document id)."""
    raw = name.encode()
    term = bytes((131, 109)) + struct.pack(">I", len(raw)) + raw
    return base64.urlsafe_b64encode(term).rstrip(b"=").decode()


async def make_box(api: Api, name: str, mailbox: str, **fields: Any) -> dict[str, Any]:
    reply = await api.put("/vmboxes", {"name": name, "mailbox": mailbox, **fields})
    assert reply.status == 201, reply.body
    return dict(reply.data)


async def put_raw_box(services: Services, account_id: str, **fields: Any) -> dict[str, Any]:
    """A vmbox document written straight into the account DB, shaped as Kazoo writes it."""
    now = gregorian_now() - 86400 * 400
    doc: dict[str, Any] = {
        "_id": hex_id(),
        "name": "Kazoo Box",
        "mailbox": "5000",
        "check_if_owner": True,
        "delete_after_notify": False,
        "is_setup": False,
        "media": {},
        "media_extension": "mp3",
        "not_configurable": False,
        "notify_email_addresses": [],
        "require_pin": False,
        "save_after_notify": False,
        "skip_greeting": False,
        "skip_instructions": False,
        "pvt_type": "vmbox",
        "pvt_vsn": "1",
        "pvt_account_id": account_id,
        "pvt_account_db": encoded_account_db(account_id),
        "pvt_created": now,
        "pvt_modified": now,
        "pvt_request_id": hex_id(),
        "pvt_is_authenticated": True,
        "pvt_auth_account_id": account_id,
        "pvt_document_hash": "0f" * 16,
    }
    doc.update(fields)
    doc["pvt_alphanum_name"] = "".join(ch for ch in str(doc.get("name", "")).lower() if ch.isalnum() and ch.isascii())
    await services.store.couch.put_doc(naming.account_db(account_id), doc)
    return doc


def legacy_message(timestamp: int, folder: str = "new") -> dict[str, Any]:
    """One item of a pre-4.0 vmbox ``messages`` array (audio in a private_media doc)."""
    return {
        "timestamp": timestamp,
        "from": "1000@legacy.example.com",
        "to": "5000@legacy.example.com",
        "caller_id_number": "1000",
        "caller_id_name": "Legacy Caller",
        "call_id": hex_id()[:24],
        "folder": folder,
        "length": 4200,
        "media_id": hex_id(),
    }


async def put_message(services: Services, account_id: str, box_id: str, *, timestamp: int | None = None,
                      folder: str = "new", deleted: bool = False) -> tuple[str, str]:
    """A ``mailbox_message`` document in the MODB of its timestamp, shaped as the
    callflow writes it. Returns (raw MODB name, message id)."""
    stamp = gregorian_now() if timestamp is None else timestamp
    moment = datetime.fromtimestamp(stamp - GREGORIAN_UNIX_OFFSET, tz=UTC)
    db = await services.store.modb(account_id, moment.year, moment.month)
    message_id = f"{moment.year:04d}{moment.month:02d}-{hex_id()}"
    doc: dict[str, Any] = {
        "_id": message_id,
        "name": f"mailbox 3000 message {moment.year}-{moment.month:02d}-{moment.day:02d} 1:2:3",
        "description": "voicemail message with media",
        "source_type": "voicemail",
        "source_id": box_id,
        "media_source": "recording",
        "media_filename": f"{hex_id()}.mp3",
        "streamable": True,
        "utc_seconds": stamp,
        "metadata": {
            "media_id": message_id,
            "call_id": hex_id()[:24],
            "caller_id_number": "1000",
            "caller_id_name": "Alice",
            "from": "1000@test.example.com",
            "from_user": "1000",
            "from_realm": "test.example.com",
            "to": "3000@test.example.com",
            "to_user": "3000",
            "to_realm": "test.example.com",
            "length": 3000,
            "timestamp": stamp,
            "folder": folder,
        },
        "pvt_type": "mailbox_message",
        "pvt_account_id": account_id,
        "pvt_account_db": db.replace("/", "%2F"),
        "pvt_created": stamp,
        "pvt_modified": stamp,
    }
    if deleted:
        doc["metadata"]["folder"] = "deleted"
        doc["pvt_deleted"] = True
    await services.store.couch.put_doc(db, doc)
    return db, message_id


def rows_by_id(reply: Reply) -> dict[str, dict[str, Any]]:
    assert reply.status == 200, reply.body
    return {row["id"]: row for row in reply.data}


async def walk(api: Api, page_size: int, **params: str) -> list[Reply]:
    """Every page of the box listing, following ``next_start_key``."""
    pages: list[Reply] = []
    start: str | None = None
    while True:
        query = {"page_size": str(page_size), **params}
        if start is not None:
            query["start_key"] = start
        reply = await api.get("/vmboxes", params=query)
        assert reply.status == 200, reply.body
        pages.append(reply)
        start = reply.json.get("next_start_key")
        if start is None:
            return pages
        assert len(pages) < 20, "pagination does not end"


# -- rule 1 -------------------------------------------------------------------------


async def test_put_answers_201_with_location_of_the_new_box(api: Api) -> None:
    reply = await api.put("/vmboxes", {"name": "A", "mailbox": "3000"})
    assert reply.status == 201, reply.body
    box_id = reply.data["id"]
    assert reply.headers["Location"] == f"/v2/accounts/{api.account_id}/vmboxes/{box_id}"


async def test_put_returns_every_schema_default_plus_id(api: Api) -> None:
    reply = await api.put("/vmboxes", {"name": "A", "mailbox": "3000"})
    assert reply.status == 201, reply.body
    data = dict(reply.data)
    box_id = data.pop("id")
    assert data == {"name": "A", "mailbox": "3000", **SCHEMA_DEFAULTS}
    assert isinstance(box_id, str) and len(box_id) == 32


async def test_put_revision_is_the_stored_rev(api: Api, services: Services, account: dict[str, Any]) -> None:
    reply = await api.put("/vmboxes", {"name": "A", "mailbox": "3000"})
    stored = await stored_doc(services, naming.account_db(account["_id"]), reply.data["id"])
    assert reply.json["revision"] == stored["_rev"]


async def test_put_stores_the_schema_defaults(api: Api, services: Services, account: dict[str, Any]) -> None:
    box = await make_box(api, "A", "3000")
    stored = await stored_doc(services, naming.account_db(account["_id"]), box["id"])
    for key, value in SCHEMA_DEFAULTS.items():
        assert stored[key] == value, key


# -- rule 2 -------------------------------------------------------------------------


async def test_put_stores_kazoo_private_fields(api: Api, services: Services, account: dict[str, Any]) -> None:
    before = gregorian_now()
    box = await make_box(api, "My Box #1!", "3000")
    after = gregorian_now()
    stored = await stored_doc(services, naming.account_db(account["_id"]), box["id"])
    assert stored["pvt_type"] == "vmbox"
    assert stored["pvt_vsn"] == "1"
    assert stored["pvt_account_id"] == account["_id"]
    assert stored["pvt_account_db"] == encoded_account_db(account["_id"])
    assert before <= stored["pvt_created"] <= after
    assert stored["pvt_created"] == stored["pvt_modified"]
    assert stored["pvt_alphanum_name"] == "mybox1"


async def test_put_stores_crossbar_audit_fields(api: Api, services: Services, account: dict[str, Any]) -> None:
    reply = await api.put("/vmboxes", {"name": "A", "mailbox": "3000"})
    stored = await stored_doc(services, naming.account_db(account["_id"]), reply.data["id"])
    assert stored["pvt_request_id"] == reply.json["request_id"]
    assert stored["pvt_is_authenticated"] is True
    assert stored["pvt_auth_account_id"] == account["_id"]


async def test_stored_box_keeps_no_separate_id_key(api: Api, services: Services, account: dict[str, Any]) -> None:
    box = await make_box(api, "A", "3000")
    stored = await stored_doc(services, naming.account_db(account["_id"]), box["id"])
    assert stored["_id"] == box["id"]
    assert "id" not in stored


async def test_post_keeps_pvt_created_and_refreshes_pvt_modified(api: Api, services: Services,
                                                                  account: dict[str, Any]) -> None:
    raw = await put_raw_box(services, account["_id"], name="Old", mailbox="5000")
    reply = await api.post(f"/vmboxes/{raw['_id']}", {"name": "New Name", "mailbox": "5000"})
    assert reply.status == 200, reply.body
    stored = await stored_doc(services, naming.account_db(account["_id"]), raw["_id"])
    assert stored["pvt_created"] == raw["pvt_created"]
    assert stored["pvt_modified"] > raw["pvt_modified"]
    assert stored["pvt_alphanum_name"] == "newname"
    assert stored["pvt_document_hash"] == raw["pvt_document_hash"]


# -- rule 3 -------------------------------------------------------------------------


async def test_put_without_name_is_validation_error_on_name_required(api: Api) -> None:
    data = assert_error(await api.put("/vmboxes", {"mailbox": "3000"}), 400, "validation error")
    assert data["name"]["required"]["message"] == "Field is required but missing"
    assert list(data) == ["name"]


# -- rule 4 -------------------------------------------------------------------------


async def test_put_without_mailbox_is_validation_error_on_mailbox_required(api: Api) -> None:
    data = assert_error(await api.put("/vmboxes", {"name": "A"}), 400, "validation error")
    assert data["mailbox"]["required"]["message"] == "Field is required but missing"
    assert list(data) == ["mailbox"]


async def test_failed_put_stores_nothing(api: Api) -> None:
    await api.put("/vmboxes", {"name": "A"})
    assert (await api.get("/vmboxes")).data == []


# -- rule 5 -------------------------------------------------------------------------


async def test_put_with_mailbox_of_existing_box_is_unique_error(api: Api, vmbox: dict[str, Any]) -> None:
    data = assert_error(await api.put("/vmboxes", {"name": "B", "mailbox": "3000"}), 400, "validation error")
    assert data == {"mailbox": {"unique": {"message": "Invalid mailbox number or already exists"}}}


async def test_put_with_other_mailbox_is_accepted(api: Api, vmbox: dict[str, Any]) -> None:
    await make_box(api, "B", "3001")
    assert len((await api.get("/vmboxes")).data) == 2


# -- rule 6 -------------------------------------------------------------------------


async def test_mailbox_uniqueness_is_numeric_leading_zero_conflicts(api: Api) -> None:
    await make_box(api, "A", "123")
    data = assert_error(await api.put("/vmboxes", {"name": "B", "mailbox": "0123"}), 400, "validation error")
    assert data["mailbox"]["unique"]["message"] == "Invalid mailbox number or already exists"


async def test_mailbox_uniqueness_is_numeric_in_both_directions(api: Api) -> None:
    await make_box(api, "A", "0123")
    data = assert_error(await api.put("/vmboxes", {"name": "B", "mailbox": "123"}), 400, "validation error")
    assert "unique" in data["mailbox"]


async def test_mailbox_uniqueness_sees_kazoo_written_boxes(api: Api, services: Services,
                                                           account: dict[str, Any]) -> None:
    await put_raw_box(services, account["_id"], mailbox="5000")
    data = assert_error(await api.put("/vmboxes", {"name": "B", "mailbox": "5000"}), 400, "validation error")
    assert "unique" in data["mailbox"]


# -- rule 7 -------------------------------------------------------------------------


async def test_mailbox_of_a_deleted_box_may_be_reused(api: Api, vmbox: dict[str, Any]) -> None:
    assert (await api.delete(f"/vmboxes/{vmbox['id']}")).status == 200
    reply = await api.put("/vmboxes", {"name": "Again", "mailbox": "3000"})
    assert reply.status == 201, reply.body


async def test_mailbox_of_a_kazoo_soft_deleted_box_may_be_reused(api: Api, services: Services,
                                                                  account: dict[str, Any]) -> None:
    await put_raw_box(services, account["_id"], mailbox="5000", pvt_deleted=True)
    reply = await api.put("/vmboxes", {"name": "Again", "mailbox": "5000"})
    assert reply.status == 201, reply.body


# -- rule 8 -------------------------------------------------------------------------


async def test_post_keeping_own_mailbox_is_not_a_uniqueness_error(api: Api, vmbox: dict[str, Any]) -> None:
    reply = await api.post(f"/vmboxes/{vmbox['id']}", {"name": "Renamed", "mailbox": "3000"})
    assert reply.status == 200, reply.body
    assert reply.data["name"] == "Renamed"


async def test_patch_keeping_own_mailbox_is_not_a_uniqueness_error(api: Api, vmbox: dict[str, Any]) -> None:
    reply = await api.patch(f"/vmboxes/{vmbox['id']}", {"name": "Renamed"})
    assert reply.status == 200, reply.body
    assert reply.data["mailbox"] == "3000"


async def test_post_taking_another_box_mailbox_is_unique_error(api: Api, vmbox: dict[str, Any]) -> None:
    other = await make_box(api, "B", "3001")
    reply = await api.post(f"/vmboxes/{other['id']}", {"name": "B", "mailbox": "3000"})
    data = assert_error(reply, 400, "validation error")
    assert data == {"mailbox": {"unique": {"message": "Invalid mailbox number or already exists"}}}


async def test_patch_taking_another_box_mailbox_is_unique_error(api: Api, vmbox: dict[str, Any]) -> None:
    other = await make_box(api, "B", "3001")
    data = assert_error(await api.patch(f"/vmboxes/{other['id']}", {"mailbox": "03000"}), 400, "validation error")
    assert "unique" in data["mailbox"]


# -- rule 9 -------------------------------------------------------------------------


async def test_uniqueness_and_schema_errors_come_in_one_reply(api: Api, vmbox: dict[str, Any]) -> None:
    data = assert_error(await api.put("/vmboxes", {"mailbox": "3000", "pin": "123"}), 400, "validation error")
    assert data["mailbox"] == {"unique": {"message": "Invalid mailbox number or already exists"}}
    assert data["name"]["required"]["message"] == "Field is required but missing"
    assert data["pin"]["minLength"] == {"message": "String must be at least 4 characters", "target": 4,
                                        "cause": "123", "value": "123"}
    assert set(data) == {"mailbox", "name", "pin"}


# -- rule 10 ------------------------------------------------------------------------


async def test_numeric_mailbox_is_type_error_not_coerced(api: Api) -> None:
    data = assert_error(await api.put("/vmboxes", {"name": "A", "mailbox": 3000}), 400, "validation error")
    assert data["mailbox"]["type"]["message"] == "Value did not match type(s): string"
    assert data["mailbox"]["type"]["value"] == 3000


# -- rule 11 (pin 4..15 characters per decisions.md) --------------------------------


async def test_pin_shorter_than_4_is_min_length_error(api: Api) -> None:
    data = assert_error(await api.put("/vmboxes", {"name": "A", "mailbox": "3000", "pin": "123"}),
                        400, "validation error")
    assert data == {"pin": {"minLength": {"message": "String must be at least 4 characters", "target": 4,
                                          "cause": "123", "value": "123"}}}


async def test_pin_longer_than_15_is_max_length_error(api: Api) -> None:
    pin = "1234567890123456"
    data = assert_error(await api.put("/vmboxes", {"name": "A", "mailbox": "3000", "pin": pin}),
                        400, "validation error")
    assert data == {"pin": {"maxLength": {"message": "String must not be more than 15 characters", "target": 15,
                                          "cause": pin, "value": pin}}}


@pytest.mark.parametrize("pin", ["1234", "1234567", "123456789012345"])
async def test_pin_of_4_to_15_characters_is_accepted(api: Api, pin: str) -> None:
    reply = await api.put("/vmboxes", {"name": "A", "mailbox": "3000", "pin": pin})
    assert reply.status == 201, reply.body
    assert reply.data["pin"] == pin


# -- rule 12 ------------------------------------------------------------------------


async def test_non_numeric_pin_is_accepted(api: Api) -> None:
    reply = await api.put("/vmboxes", {"name": "A", "mailbox": "3000", "pin": "abcd"})
    assert reply.status == 201, reply.body
    assert reply.data["pin"] == "abcd"


# -- rule 13 ------------------------------------------------------------------------


async def test_numeric_pin_is_type_error(api: Api) -> None:
    data = assert_error(await api.put("/vmboxes", {"name": "A", "mailbox": "3000", "pin": 1234}),
                        400, "validation error")
    assert data["pin"]["type"]["message"] == "Value did not match type(s): string"


# -- rule 14 ------------------------------------------------------------------------


async def test_timezone_shorter_than_5_is_min_length_error(api: Api) -> None:
    data = assert_error(await api.put("/vmboxes", {"name": "A", "mailbox": "3000", "timezone": "UTC"}),
                        400, "validation error")
    assert data["timezone"]["minLength"]["message"] == "String must be at least 5 characters"
    assert data["timezone"]["minLength"]["target"] == 5


async def test_timezone_name_is_accepted(api: Api) -> None:
    reply = await api.put("/vmboxes", {"name": "A", "mailbox": "3000", "timezone": "Europe/Paris"})
    assert reply.status == 201, reply.body


# -- rule 15 ------------------------------------------------------------------------


async def test_owner_id_of_31_chars_is_min_length_error(api: Api) -> None:
    data = assert_error(await api.put("/vmboxes", {"name": "A", "mailbox": "3000", "owner_id": "a" * 31}),
                        400, "validation error")
    assert data["owner_id"]["minLength"]["target"] == 32


async def test_owner_id_of_33_chars_is_max_length_error(api: Api) -> None:
    data = assert_error(await api.put("/vmboxes", {"name": "A", "mailbox": "3000", "owner_id": "a" * 33}),
                        400, "validation error")
    assert data["owner_id"]["maxLength"]["target"] == 32


async def test_owner_id_of_unknown_user_is_accepted(api: Api) -> None:
    owner = hex_id()
    reply = await api.put("/vmboxes", {"name": "A", "mailbox": "3000", "owner_id": owner})
    assert reply.status == 201, reply.body
    assert reply.data["owner_id"] == owner


# -- rule 16 ------------------------------------------------------------------------


async def test_unknown_media_extension_is_enum_error(api: Api) -> None:
    data = assert_error(await api.put("/vmboxes", {"name": "A", "mailbox": "3000", "media_extension": "ogg"}),
                        400, "validation error")
    assert data["media_extension"]["enum"] == {"message": "Value not found in enumerated list of values",
                                               "target": ["mp3", "mp4", "wav"], "value": "ogg"}


# -- rule 17 ------------------------------------------------------------------------


async def test_string_integer_and_boolean_values_are_coerced(api: Api, services: Services,
                                                             account: dict[str, Any]) -> None:
    reply = await api.put("/vmboxes", {"name": "A", "mailbox": "3000", "seek_duration_ms": "5000",
                                       "require_pin": "true"})
    assert reply.status == 201, reply.body
    assert reply.data["seek_duration_ms"] == 5000 and type(reply.data["seek_duration_ms"]) is int
    assert reply.data["require_pin"] is True
    stored = await stored_doc(services, naming.account_db(account["_id"]), reply.data["id"])
    assert stored["seek_duration_ms"] == 5000 and type(stored["seek_duration_ms"]) is int
    assert stored["require_pin"] is True


async def test_coercion_applies_on_patch_too(api: Api, vmbox: dict[str, Any]) -> None:
    reply = await api.patch(f"/vmboxes/{vmbox['id']}", {"skip_greeting": "true", "seek_duration_ms": "250"})
    assert reply.status == 200, reply.body
    assert reply.data["skip_greeting"] is True
    assert reply.data["seek_duration_ms"] == 250


# -- rule 18 ------------------------------------------------------------------------


async def test_negative_seek_duration_is_minimum_error(api: Api) -> None:
    data = assert_error(await api.put("/vmboxes", {"name": "A", "mailbox": "3000", "seek_duration_ms": -1}),
                        400, "validation error")
    assert data["seek_duration_ms"]["minimum"]["message"] == "Value must be at least 0"
    assert data["seek_duration_ms"]["minimum"]["target"] == 0


# -- rule 19 ------------------------------------------------------------------------


async def test_notify_email_addresses_as_string_is_type_error(api: Api) -> None:
    reply = await api.put("/vmboxes", {"name": "A", "mailbox": "3000", "notify_email_addresses": "a@b.com"})
    data = assert_error(reply, 400, "validation error")
    assert data["notify_email_addresses"]["type"]["message"] == "Value did not match type(s): array"


# -- rule 20 ------------------------------------------------------------------------


async def test_unknown_keys_are_stored_and_returned(api: Api, services: Services, account: dict[str, Any]) -> None:
    extra = {"some_key": "x", "ui_metadata": {"origin": "callflows", "version": 4}}
    created = await make_box(api, "A", "3000", **extra)
    assert created["some_key"] == "x" and created["ui_metadata"] == extra["ui_metadata"]
    fetched = (await api.get(f"/vmboxes/{created['id']}")).data
    assert fetched["some_key"] == "x" and fetched["ui_metadata"] == extra["ui_metadata"]
    stored = await stored_doc(services, naming.account_db(account["_id"]), created["id"])
    assert stored["some_key"] == "x" and stored["ui_metadata"] == extra["ui_metadata"]


# -- rule 21 ------------------------------------------------------------------------


async def test_private_keys_in_put_data_are_ignored(api: Api, services: Services, account: dict[str, Any]) -> None:
    reply = await api.put("/vmboxes", {"name": "A", "mailbox": "3000", "pvt_type": "user", "pvt_deleted": True,
                                       "pvt_account_id": "f" * 32, "pvt_vsn": "9", "_rev": "1-deadbeef",
                                       "_custom": "x"})
    assert reply.status == 201, reply.body
    assert not [key for key in reply.data if key.startswith(("pvt_", "_"))]
    stored = await stored_doc(services, naming.account_db(account["_id"]), reply.data["id"])
    assert stored["pvt_type"] == "vmbox"
    assert "pvt_deleted" not in stored
    assert stored["pvt_account_id"] == account["_id"]
    assert stored["pvt_vsn"] == "1"
    assert "_custom" not in stored
    assert (await api.get(f"/vmboxes/{reply.data['id']}")).status == 200


async def test_private_keys_in_post_data_are_ignored(api: Api, vmbox: dict[str, Any], services: Services,
                                                     account: dict[str, Any]) -> None:
    reply = await api.post(f"/vmboxes/{vmbox['id']}", {"name": "A", "mailbox": "3000", "pvt_deleted": True,
                                                       "pvt_type": "user", "pvt_created": 1})
    assert reply.status == 200, reply.body
    stored = await stored_doc(services, naming.account_db(account["_id"]), vmbox["id"])
    assert "pvt_deleted" not in stored
    assert stored["pvt_type"] == "vmbox"
    assert stored["pvt_created"] > 1
    fetched = await api.get(f"/vmboxes/{vmbox['id']}")
    assert fetched.status == 200, fetched.body
    assert (fetched.data["id"], fetched.data["name"]) == (vmbox["id"], "A")
    assert not [key for key in fetched.data if key.startswith("pvt_")]


async def test_private_keys_in_patch_data_are_ignored(api: Api, vmbox: dict[str, Any], services: Services,
                                                      account: dict[str, Any]) -> None:
    reply = await api.patch(f"/vmboxes/{vmbox['id']}", {"pvt_deleted": True, "pvt_type": "user"})
    assert reply.status == 200, reply.body
    stored = await stored_doc(services, naming.account_db(account["_id"]), vmbox["id"])
    assert "pvt_deleted" not in stored
    assert stored["pvt_type"] == "vmbox"
    assert [row["id"] for row in (await api.get("/vmboxes")).data] == [vmbox["id"]]
    assert not [key for key in reply.data if key.startswith("pvt_")]


# -- rule 22 ------------------------------------------------------------------------


async def test_data_id_on_put_becomes_the_box_id(api: Api, services: Services, account: dict[str, Any]) -> None:
    chosen = hex_id()
    reply = await api.put("/vmboxes", {"id": chosen, "name": "A", "mailbox": "3000"})
    assert reply.status == 201, reply.body
    assert reply.data["id"] == chosen
    assert reply.headers["Location"].endswith(f"/vmboxes/{chosen}")
    stored = await stored_doc(services, naming.account_db(account["_id"]), chosen)
    assert stored["name"] == "A" and "id" not in stored
    assert (await api.get(f"/vmboxes/{chosen}")).data["id"] == chosen


async def test_put_with_id_of_existing_box_is_conflict_not_overwrite(api: Api, vmbox: dict[str, Any]) -> None:
    reply = await api.put("/vmboxes", {"id": vmbox["id"], "name": "Other", "mailbox": "3999"})
    assert_error(reply, 409, "datastore_conflict")
    assert (await api.get(f"/vmboxes/{vmbox['id']}")).data["name"] == "VMBox 0"


async def test_differing_id_in_post_data_is_ignored(api: Api, vmbox: dict[str, Any]) -> None:
    other = hex_id()
    reply = await api.post(f"/vmboxes/{vmbox['id']}", {"id": other, "name": "A", "mailbox": "3000"})
    assert reply.status == 200, reply.body
    assert reply.data["id"] == vmbox["id"]
    assert_error(await api.get(f"/vmboxes/{other}"), 404, "bad_identifier")


# -- rule 23 ------------------------------------------------------------------------


async def test_get_returns_public_fields_and_id(api: Api, vmbox: dict[str, Any]) -> None:
    reply = await api.get(f"/vmboxes/{vmbox['id']}")
    assert reply.status == 200, reply.body
    assert reply.data == vmbox
    assert not [key for key in reply.data if key.startswith(("pvt_", "_"))]


async def test_get_revision_and_etag_are_the_stored_rev(api: Api, vmbox: dict[str, Any], services: Services,
                                                        account: dict[str, Any]) -> None:
    stored = await stored_doc(services, naming.account_db(account["_id"]), vmbox["id"])
    reply = await api.get(f"/vmboxes/{vmbox['id']}")
    assert reply.json["revision"] == stored["_rev"]
    assert reply.headers["ETag"] == f'"{stored["_rev"]}"'


async def test_get_never_includes_legacy_messages_array(api: Api, services: Services,
                                                        account: dict[str, Any]) -> None:
    raw = await put_raw_box(services, account["_id"], messages=[legacy_message(gregorian_now() - 5000)])
    reply = await api.get(f"/vmboxes/{raw['_id']}")
    assert reply.status == 200, reply.body
    assert "messages" not in reply.data
    assert reply.data["id"] == raw["_id"]


# -- rule 24 ------------------------------------------------------------------------


async def test_get_unknown_box_is_404_bad_identifier_with_cause(api: Api) -> None:
    box_id = hex_id()
    data = assert_error(await api.get(f"/vmboxes/{box_id}"), 404, "bad_identifier")
    assert data == {"cause": box_id, "message": "bad identifier"}


async def test_get_soft_deleted_box_is_404(api: Api, services: Services, account: dict[str, Any]) -> None:
    raw = await put_raw_box(services, account["_id"], pvt_deleted=True)
    data = assert_error(await api.get(f"/vmboxes/{raw['_id']}"), 404, "bad_identifier")
    assert data == {"cause": raw["_id"], "message": "bad identifier"}


async def test_get_of_a_user_doc_id_is_404(api: Api, services: Services, account: dict[str, Any]) -> None:
    user_id = hex_id()
    await services.store.couch.put_doc(naming.account_db(account["_id"]), {
        "_id": user_id, "pvt_type": "user", "username": "alice", "first_name": "Alice", "last_name": "A",
        "pvt_account_id": account["_id"], "pvt_vsn": "1"})
    data = assert_error(await api.get(f"/vmboxes/{user_id}"), 404, "bad_identifier")
    assert data == {"cause": user_id, "message": "bad identifier"}


async def test_get_of_the_account_doc_id_is_404(api: Api, account: dict[str, Any]) -> None:
    assert_error(await api.get(f"/vmboxes/{account['_id']}"), 404, "bad_identifier")


async def test_get_of_a_doc_without_pvt_type_is_accepted(api: Api, services: Services,
                                                         account: dict[str, Any]) -> None:
    doc_id = hex_id()
    await services.store.couch.put_doc(naming.account_db(account["_id"]),
                                       {"_id": doc_id, "name": "Typeless", "mailbox": "7000"})
    reply = await api.get(f"/vmboxes/{doc_id}")
    assert reply.status == 200, reply.body
    assert reply.data == {"id": doc_id, "name": "Typeless", "mailbox": "7000"}


# -- rule 25 ------------------------------------------------------------------------


async def test_post_removes_public_keys_absent_from_the_body(api: Api, services: Services,
                                                             account: dict[str, Any]) -> None:
    box = await make_box(api, "A", "3000", pin="1234", some_key="x", timezone="Europe/Paris")
    reply = await api.post(f"/vmboxes/{box['id']}", {"name": "A", "mailbox": "3000"})
    assert reply.status == 200, reply.body
    for key in ("pin", "some_key", "timezone"):
        assert key not in reply.data
    stored = await stored_doc(services, naming.account_db(account["_id"]), box["id"])
    for key in ("pin", "some_key", "timezone"):
        assert key not in stored


async def test_post_reapplies_schema_defaults(api: Api) -> None:
    box = await make_box(api, "A", "3000", require_pin=True, seek_duration_ms=500, media_extension="wav")
    reply = await api.post(f"/vmboxes/{box['id']}", {"name": "A", "mailbox": "3000"})
    assert reply.status == 200, reply.body
    data = dict(reply.data)
    assert data.pop("id") == box["id"]
    assert data == {"name": "A", "mailbox": "3000", **SCHEMA_DEFAULTS}


async def test_post_revision_is_the_new_rev(api: Api, vmbox: dict[str, Any], services: Services,
                                            account: dict[str, Any]) -> None:
    reply = await api.post(f"/vmboxes/{vmbox['id']}", {"name": "B", "mailbox": "3000"})
    stored = await stored_doc(services, naming.account_db(account["_id"]), vmbox["id"])
    assert reply.json["revision"] == stored["_rev"]
    assert stored["_rev"].startswith("2-")


async def test_post_with_invalid_body_changes_nothing(api: Api, vmbox: dict[str, Any]) -> None:
    assert_error(await api.post(f"/vmboxes/{vmbox['id']}", {"name": "A"}), 400, "validation error")
    assert (await api.get(f"/vmboxes/{vmbox['id']}")).data == vmbox


# -- rule 26 ------------------------------------------------------------------------


async def test_patch_with_null_removes_the_key(api: Api, services: Services, account: dict[str, Any]) -> None:
    box = await make_box(api, "A", "3000", some_key="x", pin="1234")
    reply = await api.patch(f"/vmboxes/{box['id']}", {"some_key": None})
    assert reply.status == 200, reply.body
    assert "some_key" not in reply.data
    assert reply.data["pin"] == "1234"
    stored = await stored_doc(services, naming.account_db(account["_id"]), box["id"])
    assert "some_key" not in stored


async def test_patch_keeps_keys_not_sent(api: Api) -> None:
    box = await make_box(api, "A", "3000", pin="1234", some_key="x", owner_id=OWNER_A)
    reply = await api.patch(f"/vmboxes/{box['id']}", {"name": "B", "skip_greeting": True})
    assert reply.status == 200, reply.body
    expected = {**box, "name": "B", "skip_greeting": True}
    assert reply.data == expected
    assert (await api.get(f"/vmboxes/{box['id']}")).data == expected


async def test_patch_result_is_validated(api: Api, vmbox: dict[str, Any]) -> None:
    data = assert_error(await api.patch(f"/vmboxes/{vmbox['id']}", {"pin": "12"}), 400, "validation error")
    assert "minLength" in data["pin"]
    assert "pin" not in (await api.get(f"/vmboxes/{vmbox['id']}")).data


async def test_patch_removing_a_required_key_is_validation_error(api: Api, vmbox: dict[str, Any]) -> None:
    data = assert_error(await api.patch(f"/vmboxes/{vmbox['id']}", {"name": None}), 400, "validation error")
    assert data["name"]["required"]["message"] == "Field is required but missing"


# -- rule 27 ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PATCH", "DELETE"])
async def test_change_of_unknown_box_is_404_bad_identifier(api: Api, method: str) -> None:
    box_id = hex_id()
    reply = await api.call(method, f"/vmboxes/{box_id}", data={"name": "A", "mailbox": "3000"})
    data = assert_error(reply, 404, "bad_identifier")
    assert data == {"cause": box_id, "message": "bad identifier"}


async def test_post_with_invalid_body_on_unknown_box_is_400_first(api: Api) -> None:
    data = assert_error(await api.post(f"/vmboxes/{hex_id()}", {"mailbox": "3000"}), 400, "validation error")
    assert "required" in data["name"]


@pytest.mark.parametrize("method", ["POST", "PATCH", "DELETE"])
async def test_change_of_soft_deleted_box_is_404(api: Api, services: Services, account: dict[str, Any],
                                                 method: str) -> None:
    raw = await put_raw_box(services, account["_id"], pvt_deleted=True)
    reply = await api.call(method, f"/vmboxes/{raw['_id']}", data={"name": "A", "mailbox": "5001"})
    assert_error(reply, 404, "bad_identifier")
    assert (await stored_doc(services, naming.account_db(account["_id"]), raw["_id"]))["_rev"] == raw["_rev"]


# -- rule 28 ------------------------------------------------------------------------


async def test_post_keeps_legacy_messages_array_and_asks_to_migrate(api: Api, services: Services,
                                                                    account: dict[str, Any]) -> None:
    legacy = [legacy_message(gregorian_now() - 7200), legacy_message(gregorian_now() - 3600, "saved")]
    raw = await put_raw_box(services, account["_id"], messages=legacy)
    reply = await api.post(f"/vmboxes/{raw['_id']}", {"name": "Renamed", "mailbox": "5000"})
    assert reply.status == 200, reply.body
    assert reply.json["status"] == "success"
    assert reply.json["message"] == MIGRATE_MESSAGE
    assert "messages" not in reply.data
    stored = await stored_doc(services, naming.account_db(account["_id"]), raw["_id"])
    assert stored["messages"] == legacy
    assert stored["name"] == "Renamed"


async def test_patch_keeps_legacy_messages_array_and_asks_to_migrate(api: Api, services: Services,
                                                                     account: dict[str, Any]) -> None:
    legacy = [legacy_message(gregorian_now() - 7200), legacy_message(gregorian_now() - 3600, "saved")]
    raw = await put_raw_box(services, account["_id"], messages=legacy)
    reply = await api.patch(f"/vmboxes/{raw['_id']}", {"pin": "4321"})
    assert reply.status == 200, reply.body
    assert reply.json["message"] == MIGRATE_MESSAGE
    assert "messages" not in reply.data
    stored = await stored_doc(services, naming.account_db(account["_id"]), raw["_id"])
    assert stored["messages"] == legacy
    assert stored["pin"] == "4321"


async def test_client_cannot_overwrite_legacy_messages_array(api: Api, services: Services,
                                                             account: dict[str, Any]) -> None:
    legacy = [legacy_message(gregorian_now() - 7200)]
    raw = await put_raw_box(services, account["_id"], messages=legacy)
    for reply in (await api.post(f"/vmboxes/{raw['_id']}", {"name": "A", "mailbox": "5000", "messages": []}),
                  await api.patch(f"/vmboxes/{raw['_id']}", {"messages": None})):
        assert reply.status == 200, reply.body
        stored = await stored_doc(services, naming.account_db(account["_id"]), raw["_id"])
        assert stored["messages"] == legacy


async def test_post_on_box_without_legacy_messages_has_no_migrate_message(api: Api, vmbox: dict[str, Any]) -> None:
    reply = await api.post(f"/vmboxes/{vmbox['id']}", {"name": "A", "mailbox": "3000"})
    assert reply.status == 200, reply.body
    assert "message" not in reply.json


async def test_patch_on_box_with_empty_legacy_array_has_no_migrate_message(api: Api, services: Services,
                                                                           account: dict[str, Any]) -> None:
    raw = await put_raw_box(services, account["_id"], messages=[])
    reply = await api.patch(f"/vmboxes/{raw['_id']}", {"name": "X"})
    assert reply.status == 200, reply.body
    assert "message" not in reply.json


# -- rule 29 ------------------------------------------------------------------------


async def test_put_with_notify_email_addresses_gets_warning_header(api: Api) -> None:
    reply = await api.put("/vmboxes", {"name": "A", "mailbox": "3000", "notify_email_addresses": ["a@example.com"]})
    assert reply.status == 201, reply.body
    assert reply.headers["Warning"] == NOTIFY_WARNING
    assert reply.data["notify_email_addresses"] == ["a@example.com"]


async def test_post_with_notify_email_addresses_gets_warning_header(api: Api, vmbox: dict[str, Any]) -> None:
    reply = await api.post(f"/vmboxes/{vmbox['id']}", {"name": "A", "mailbox": "3000",
                                                       "notify_email_addresses": ["a@example.com"]})
    assert reply.status == 200, reply.body
    assert reply.headers["Warning"] == NOTIFY_WARNING


async def test_patch_with_notify_email_addresses_gets_warning_header(api: Api, vmbox: dict[str, Any]) -> None:
    reply = await api.patch(f"/vmboxes/{vmbox['id']}", {"notify_email_addresses": ["a@example.com"]})
    assert reply.status == 200, reply.body
    assert reply.headers["Warning"] == NOTIFY_WARNING


async def test_empty_notify_email_addresses_gets_no_warning_header(api: Api) -> None:
    reply = await api.put("/vmboxes", {"name": "A", "mailbox": "3000", "notify_email_addresses": []})
    assert reply.status == 201, reply.body
    assert "Warning" not in reply.headers


# -- rule 30 ------------------------------------------------------------------------


async def test_delete_box_answers_200_with_read_only_deleted(api: Api, vmbox: dict[str, Any]) -> None:
    reply = await api.delete(f"/vmboxes/{vmbox['id']}")
    assert reply.status == 200, reply.body
    assert reply.data["id"] == vmbox["id"]
    assert reply.data["_read_only"] == {"deleted": True}
    assert reply.data["name"] == "VMBox 0" and reply.data["mailbox"] == "3000"


async def test_delete_box_revision_is_the_rev_before_deletion(api: Api, vmbox: dict[str, Any]) -> None:
    before = (await api.get(f"/vmboxes/{vmbox['id']}")).json["revision"]
    reply = await api.delete(f"/vmboxes/{vmbox['id']}")
    assert reply.json["revision"] == before


async def test_deleted_box_is_gone_from_get(api: Api, vmbox: dict[str, Any]) -> None:
    await api.delete(f"/vmboxes/{vmbox['id']}")
    data = assert_error(await api.get(f"/vmboxes/{vmbox['id']}"), 404, "bad_identifier")
    assert data == {"cause": vmbox["id"], "message": "bad identifier"}


async def test_delete_box_is_soft_by_default(api: Api, vmbox: dict[str, Any], services: Services,
                                             account: dict[str, Any]) -> None:
    await api.delete(f"/vmboxes/{vmbox['id']}")
    stored = await stored_doc(services, naming.account_db(account["_id"]), vmbox["id"])
    assert stored["pvt_deleted"] is True
    assert stored["pvt_type"] == "vmbox"
    assert stored["name"] == "VMBox 0"


async def test_second_delete_of_a_box_is_404(api: Api, vmbox: dict[str, Any]) -> None:
    assert (await api.delete(f"/vmboxes/{vmbox['id']}")).status == 200
    assert_error(await api.delete(f"/vmboxes/{vmbox['id']}"), 404, "bad_identifier")


# -- rule 31 ------------------------------------------------------------------------


async def test_delete_box_soft_deletes_its_messages(api: Api, vmbox: dict[str, Any], services: Services,
                                                    account: dict[str, Any]) -> None:
    db, new_id = await put_message(services, account["_id"], vmbox["id"], folder="new")
    _, saved_id = await put_message(services, account["_id"], vmbox["id"], folder="saved",
                                    timestamp=gregorian_now() - 40 * 86400)
    assert (await api.delete(f"/vmboxes/{vmbox['id']}")).status == 200
    for message_id in (new_id, saved_id):
        modb = naming.modb_of_message(account["_id"], message_id)
        assert modb is not None
        doc = await stored_doc(services, modb, message_id)
        assert doc["pvt_deleted"] is True, message_id
        assert doc["metadata"]["folder"] == "deleted", message_id
        assert doc["source_id"] == vmbox["id"]
    assert db == naming.modb_of_message(account["_id"], new_id)


async def test_delete_box_leaves_messages_of_other_boxes(api: Api, vmbox: dict[str, Any], services: Services,
                                                         account: dict[str, Any]) -> None:
    other = await make_box(api, "Other", "3001")
    db, message_id = await put_message(services, account["_id"], other["id"], folder="new")
    await api.delete(f"/vmboxes/{vmbox['id']}")
    doc = await stored_doc(services, db, message_id)
    assert "pvt_deleted" not in doc
    assert doc["metadata"]["folder"] == "new"
    assert rows_by_id(await api.get("/vmboxes"))[other["id"]]["messages"] == 1


async def test_delete_box_leaves_messages_older_than_retention(api: Api, vmbox: dict[str, Any],
                                                               services: Services, account: dict[str, Any]) -> None:
    db, message_id = await put_message(services, account["_id"], vmbox["id"], folder="saved",
                                       timestamp=gregorian_now() - RETENTION_SECONDS - 86400)
    await api.delete(f"/vmboxes/{vmbox['id']}")
    doc = await stored_doc(services, db, message_id)
    assert "pvt_deleted" not in doc
    assert doc["metadata"]["folder"] == "saved"


# -- rule 32 ------------------------------------------------------------------------


async def test_delete_with_should_soft_delete_false_removes_the_document(api: Api, vmbox: dict[str, Any],
                                                                         services: Services,
                                                                         account: dict[str, Any]) -> None:
    reply = await api.delete(f"/vmboxes/{vmbox['id']}", params={"should_soft_delete": "false"})
    assert reply.status == 200, reply.body
    assert reply.data["_read_only"] == {"deleted": True}
    with pytest.raises(NotFound):
        await stored_doc(services, naming.account_db(account["_id"]), vmbox["id"])
    assert_error(await api.get(f"/vmboxes/{vmbox['id']}"), 404, "bad_identifier")


async def test_should_soft_delete_false_in_body_removes_the_document(api: Api, vmbox: dict[str, Any],
                                                                     services: Services,
                                                                     account: dict[str, Any]) -> None:
    reply = await api.delete(f"/vmboxes/{vmbox['id']}", data={"should_soft_delete": False})
    assert reply.status == 200, reply.body
    with pytest.raises(NotFound):
        await stored_doc(services, naming.account_db(account["_id"]), vmbox["id"])


# -- rule 33 ------------------------------------------------------------------------


async def test_listing_rows_have_kazoo_summary_shape(api: Api) -> None:
    owned = await make_box(api, "Owned", "3001", owner_id=OWNER_A, flags=["vip"], pin="1234")
    plain = await make_box(api, "Plain", "3002", some_key="x")
    rows = rows_by_id(await api.get("/vmboxes"))
    assert rows[owned["id"]] == {"id": owned["id"], "name": "Owned", "mailbox": "3001", "owner_id": OWNER_A,
                                 "messages": 0, "flags": ["vip"]}
    assert rows[plain["id"]] == {"id": plain["id"], "name": "Plain", "mailbox": "3002", "messages": 0,
                                 "flags": []}


async def test_listing_excludes_soft_deleted_boxes(api: Api, vmbox: dict[str, Any]) -> None:
    other = await make_box(api, "Other", "3001")
    await api.delete(f"/vmboxes/{vmbox['id']}")
    assert list(rows_by_id(await api.get("/vmboxes"))) == [other["id"]]


async def test_listing_excludes_hard_deleted_boxes(api: Api, vmbox: dict[str, Any]) -> None:
    await api.delete(f"/vmboxes/{vmbox['id']}", params={"should_soft_delete": "false"})
    assert (await api.get("/vmboxes")).data == []


async def test_listing_shows_renamed_box_under_new_name(api: Api, vmbox: dict[str, Any]) -> None:
    await api.patch(f"/vmboxes/{vmbox['id']}", {"name": "Renamed", "flags": ["x"]})
    rows = rows_by_id(await api.get("/vmboxes"))
    assert rows[vmbox["id"]]["name"] == "Renamed"
    assert rows[vmbox["id"]]["flags"] == ["x"]


async def test_listing_of_boxes_ignores_non_vmbox_documents(api: Api, vmbox: dict[str, Any], services: Services,
                                                            account: dict[str, Any]) -> None:
    await services.store.couch.put_doc(naming.account_db(account["_id"]), {
        "_id": hex_id(), "pvt_type": "user", "name": "Not a box", "username": "bob"})
    assert list(rows_by_id(await api.get("/vmboxes"))) == [vmbox["id"]]


# -- rule 34 ------------------------------------------------------------------------


async def test_listing_counts_new_and_saved_messages_with_folders(api: Api, vmbox: dict[str, Any],
                                                                  services: Services,
                                                                  account: dict[str, Any]) -> None:
    empty = await make_box(api, "Empty", "3001")
    now = gregorian_now()
    await put_message(services, account["_id"], vmbox["id"], folder="new", timestamp=now - 60)
    await put_message(services, account["_id"], vmbox["id"], folder="new", timestamp=now - 3600)
    await put_message(services, account["_id"], vmbox["id"], folder="saved", timestamp=now - 40 * 86400)
    rows = rows_by_id(await api.get("/vmboxes"))
    assert rows[vmbox["id"]]["messages"] == 3
    assert rows[vmbox["id"]]["folders"] == {"new": 2, "saved": 1}
    assert rows[empty["id"]]["messages"] == 0
    assert "folders" not in rows[empty["id"]]


async def test_listing_counts_a_message_stamped_this_second(api: Api, vmbox: dict[str, Any], services: Services,
                                                            account: dict[str, Any]) -> None:
    await put_message(services, account["_id"], vmbox["id"], folder="new", timestamp=gregorian_now())
    row = rows_by_id(await api.get("/vmboxes"))[vmbox["id"]]
    assert row["messages"] == 1
    assert row["folders"] == {"new": 1, "saved": 0}


async def test_listing_does_not_count_deleted_folder_messages(api: Api, vmbox: dict[str, Any],
                                                              services: Services, account: dict[str, Any]) -> None:
    now = gregorian_now()
    await put_message(services, account["_id"], vmbox["id"], folder="deleted", timestamp=now - 100)
    await put_message(services, account["_id"], vmbox["id"], folder="saved", timestamp=now - 200)
    row = rows_by_id(await api.get("/vmboxes"))[vmbox["id"]]
    assert row["messages"] == 1
    assert row["folders"] == {"new": 0, "saved": 1}


async def test_listing_does_not_count_soft_deleted_messages(api: Api, vmbox: dict[str, Any],
                                                            services: Services, account: dict[str, Any]) -> None:
    now = gregorian_now()
    await put_message(services, account["_id"], vmbox["id"], folder="new", timestamp=now - 100, deleted=True)
    await put_message(services, account["_id"], vmbox["id"], folder="new", timestamp=now - 200)
    row = rows_by_id(await api.get("/vmboxes"))[vmbox["id"]]
    assert row["messages"] == 1
    assert row["folders"] == {"new": 1, "saved": 0}


async def test_box_with_only_soft_deleted_messages_has_no_folders(api: Api, vmbox: dict[str, Any],
                                                                  services: Services,
                                                                  account: dict[str, Any]) -> None:
    await put_message(services, account["_id"], vmbox["id"], folder="new", deleted=True)
    row = rows_by_id(await api.get("/vmboxes"))[vmbox["id"]]
    assert row["messages"] == 0
    assert "folders" not in row


async def test_listing_does_not_count_messages_older_than_retention(api: Api, vmbox: dict[str, Any],
                                                                    services: Services,
                                                                    account: dict[str, Any]) -> None:
    now = gregorian_now()
    await put_message(services, account["_id"], vmbox["id"], folder="new", timestamp=now - RETENTION_SECONDS - 120)
    await put_message(services, account["_id"], vmbox["id"], folder="saved",
                      timestamp=now - RETENTION_SECONDS - 40 * 86400)
    await put_message(services, account["_id"], vmbox["id"], folder="saved", timestamp=now - 93 * 86400)
    row = rows_by_id(await api.get("/vmboxes"))[vmbox["id"]]
    assert row["messages"] == 1
    assert row["folders"] == {"new": 0, "saved": 1}



async def test_listing_counts_only_the_window_in_a_monthly_database_with_stray_timestamps(
        api: Api, vmbox: dict[str, Any], services: Services, account: dict[str, Any]) -> None:
    """Counts come from one grouped query per MODB unless a box's timestamps there cross
    the window's edges (a message stamped before the window, or missing its timestamp,
    in this month's database): that MODB is then counted row by row."""
    now = gregorian_now()
    other = await make_box(api, "Other", "3002")
    await put_message(services, account["_id"], vmbox["id"], folder="new", timestamp=now - 100)
    await put_message(services, account["_id"], other["id"], folder="saved", timestamp=now - 200)
    rows = rows_by_id(await api.get("/vmboxes"))
    assert (rows[vmbox["id"]]["folders"], rows[other["id"]]["folders"]) == ({"new": 1, "saved": 0},
                                                                          {"new": 0, "saved": 1})
    db, _ = await put_message(services, account["_id"], vmbox["id"], folder="new", timestamp=now - 50)
    for stray in ({"timestamp": now - RETENTION_SECONDS - 3600}, {"timestamp": now + 86400 * 400}, {}):
        message_id = db.rsplit("-", 1)[1] + "-" + hex_id()
        await services.store.couch.put_doc(db, {"_id": message_id, "pvt_type": "mailbox_message",
                                                "source_id": vmbox["id"], "metadata": {"folder": "new", **stray}})
    rows = rows_by_id(await api.get("/vmboxes"))
    assert rows[vmbox["id"]]["folders"] == {"new": 2, "saved": 0}
    assert rows[other["id"]]["folders"] == {"new": 0, "saved": 1}

async def test_box_with_only_expired_messages_has_no_folders(api: Api, vmbox: dict[str, Any],
                                                             services: Services, account: dict[str, Any]) -> None:
    await put_message(services, account["_id"], vmbox["id"], folder="new",
                      timestamp=gregorian_now() - RETENTION_SECONDS - 3600)
    row = rows_by_id(await api.get("/vmboxes"))[vmbox["id"]]
    assert row["messages"] == 0
    assert "folders" not in row


async def test_listing_counts_legacy_messages_without_folders(api: Api, services: Services,
                                                              account: dict[str, Any]) -> None:
    old = gregorian_now() - 400 * 86400
    raw = await put_raw_box(services, account["_id"], messages=[legacy_message(old), legacy_message(old, "saved")])
    row = rows_by_id(await api.get("/vmboxes"))[raw["_id"]]
    assert row["messages"] == 2
    assert "folders" not in row


async def test_listing_adds_legacy_count_to_modb_counts(api: Api, services: Services,
                                                        account: dict[str, Any]) -> None:
    now = gregorian_now()
    raw = await put_raw_box(services, account["_id"], messages=[legacy_message(now - 7200),
                                                                legacy_message(now - 3600, "saved")])
    await put_message(services, account["_id"], raw["_id"], folder="new", timestamp=now - 60)
    row = rows_by_id(await api.get("/vmboxes"))[raw["_id"]]
    assert row["messages"] == 3
    assert row["folders"] == {"new": 1, "saved": 0}


async def test_listing_counts_are_per_box(api: Api, vmbox: dict[str, Any], services: Services,
                                          account: dict[str, Any]) -> None:
    other = await make_box(api, "Other", "3001")
    await put_message(services, account["_id"], vmbox["id"], folder="new")
    await put_message(services, account["_id"], other["id"], folder="saved")
    await put_message(services, account["_id"], other["id"], folder="saved")
    rows = rows_by_id(await api.get("/vmboxes"))
    assert (rows[vmbox["id"]]["messages"], rows[vmbox["id"]]["folders"]) == (1, {"new": 1, "saved": 0})
    assert (rows[other["id"]]["messages"], rows[other["id"]]["folders"]) == (2, {"new": 0, "saved": 2})


async def test_messages_of_a_deleted_box_are_not_counted_for_a_box_reusing_its_id(
        api: Api, vmbox: dict[str, Any], services: Services, account: dict[str, Any]) -> None:
    await put_message(services, account["_id"], vmbox["id"], folder="new")
    await api.delete(f"/vmboxes/{vmbox['id']}", params={"should_soft_delete": "false"})
    again = await make_box(api, "Again", "3000", id=vmbox["id"])
    assert again["id"] == vmbox["id"]
    row = rows_by_id(await api.get("/vmboxes"))[vmbox["id"]]
    assert row["messages"] == 0
    assert "folders" not in row


# -- rule 35 ------------------------------------------------------------------------


async def test_put_on_a_box_is_405_invalid_method(api: Api, vmbox: dict[str, Any]) -> None:
    reply = await api.put(f"/vmboxes/{vmbox['id']}", {"name": "A", "mailbox": "3000"})
    assert assert_error(reply, 405, "invalid_method") == {"message": "method not allowed"}


async def test_put_on_vmboxes_messages_is_405_invalid_method(api: Api) -> None:
    reply = await api.put("/vmboxes/messages", {"name": "A", "mailbox": "3000"})
    assert assert_error(reply, 405, "invalid_method") == {"message": "method not allowed"}


async def test_get_on_box_messages_raw_is_405_invalid_method(api: Api, vmbox: dict[str, Any]) -> None:
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages/raw")
    assert assert_error(reply, 405, "invalid_method") == {"message": "method not allowed"}


# -- rule 36 ------------------------------------------------------------------------


async def test_get_unknown_path_under_a_box_is_404_not_found(api: Api, vmbox: dict[str, Any]) -> None:
    reply = await api.get(f"/vmboxes/{vmbox['id']}/foo")
    assert assert_error(reply, 404, "not_found") == {"message": "not found"}


# -- E1: listing pagination ---------------------------------------------------------


async def _five_boxes(api: Api) -> list[str]:
    return [(await make_box(api, f"box {letter}", str(4000 + index)))["id"]
            for index, letter in enumerate("abcde")]


async def test_listing_pages_walk_every_box_exactly_once(api: Api) -> None:
    ids = await _five_boxes(api)
    pages = await walk(api, 2)
    assert [len(page.data) for page in pages] == [2, 2, 1]
    seen = [row["id"] for page in pages for row in page.data]
    assert sorted(seen) == sorted(ids)


async def test_listing_ascending_pages_walk_every_box_exactly_once(api: Api) -> None:
    ids = await _five_boxes(api)
    pages = await walk(api, 2, ascending="true")
    assert [len(page.data) for page in pages] == [2, 2, 1]
    assert sorted(row["id"] for page in pages for row in page.data) == sorted(ids)


async def test_listing_page_size_in_envelope_is_rows_returned(api: Api) -> None:
    await _five_boxes(api)
    pages = await walk(api, 2)
    for page in pages:
        assert page.json["page_size"] == len(page.data)
    assert pages[-1].json["page_size"] == 1


async def test_listing_last_page_has_no_next_start_key(api: Api) -> None:
    await _five_boxes(api)
    pages = await walk(api, 2)
    assert all("next_start_key" in page.json for page in pages[:-1])
    assert "next_start_key" not in pages[-1].json


async def test_listing_start_key_is_echoed_only_when_sent(api: Api) -> None:
    await _five_boxes(api)
    first = await api.get("/vmboxes", params={"page_size": "2"})
    assert "start_key" not in first.json
    key = first.json["next_start_key"]
    second = await api.get("/vmboxes", params={"page_size": "2", "start_key": key})
    assert second.json["start_key"] == key


async def test_listing_page_holding_all_rows_has_no_next_start_key(api: Api) -> None:
    await _five_boxes(api)
    reply = await api.get("/vmboxes", params={"page_size": "5"})
    assert len(reply.data) == 5
    assert reply.json["page_size"] == 5
    assert "next_start_key" not in reply.json


async def test_listing_default_page_has_page_size_of_rows(api: Api) -> None:
    await _five_boxes(api)
    reply = await api.get("/vmboxes")
    assert len(reply.data) == 5
    assert reply.json["page_size"] == 5
    assert "next_start_key" not in reply.json and "start_key" not in reply.json


async def test_listing_paginate_false_returns_all_without_page_keys(api: Api) -> None:
    ids = await _five_boxes(api)
    reply = await api.get("/vmboxes", params={"paginate": "false"})
    assert reply.status == 200, reply.body
    assert sorted(row["id"] for row in reply.data) == sorted(ids)
    for key in ("page_size", "start_key", "next_start_key"):
        assert key not in reply.json


async def test_listing_equal_names_across_page_boundary_are_neither_repeated_nor_skipped(api: Api) -> None:
    ids = [(await make_box(api, "same name", str(4000 + index)))["id"] for index in range(5)]
    pages = await walk(api, 2)
    seen = [row["id"] for page in pages for row in page.data]
    assert len(seen) == 5
    assert sorted(seen) == sorted(ids)


async def test_listing_equal_names_ascending_are_neither_repeated_nor_skipped(api: Api) -> None:
    ids = [(await make_box(api, "same name", str(4000 + index)))["id"] for index in range(5)]
    pages = await walk(api, 2, ascending="true")
    assert sorted(row["id"] for page in pages for row in page.data) == sorted(ids)


async def test_listing_accepts_a_kazoo_minted_start_key(api: Api) -> None:
    await _five_boxes(api)
    reply = await api.get("/vmboxes", params={"page_size": "2", "start_key": kazoo_start_key("box c")})
    assert reply.status == 200, reply.body
    assert sorted(row["name"] for row in reply.data) == ["box b", "box c"]
    assert "next_start_key" in reply.json


@pytest.mark.parametrize("size", ["0", "-1"])
async def test_listing_page_size_below_1_is_faulty_request(api: Api, size: str) -> None:
    data = assert_error(await api.get("/vmboxes", params={"page_size": size}), 404, "faulty_request")
    assert data == {"message": "page size must be at least 1"}


async def test_listing_non_numeric_page_size_is_faulty_request(api: Api) -> None:
    data = assert_error(await api.get("/vmboxes", params={"page_size": "abc"}), 404, "faulty_request")
    assert data == {"message": "invalid page size"}


# -- E1: listing filters ------------------------------------------------------------


async def test_listing_filter_owner_id_keeps_matching_boxes(api: Api) -> None:
    a1 = await make_box(api, "box a1", "4001", owner_id=OWNER_A)
    await make_box(api, "box b1", "4002", owner_id=OWNER_B)
    a2 = await make_box(api, "box a2", "4003", owner_id=OWNER_A)
    await make_box(api, "box none", "4004")
    reply = await api.get("/vmboxes", params={"filter_owner_id": OWNER_A})
    assert sorted(rows_by_id(reply)) == sorted([a1["id"], a2["id"]])


async def test_listing_filter_not_name_drops_matching_boxes(api: Api) -> None:
    ids = await _five_boxes(api)
    reply = await api.get("/vmboxes", params={"filter_not_name": "box b"})
    assert sorted(rows_by_id(reply)) == sorted(ids[:1] + ids[2:])


async def test_listing_has_key_keeps_boxes_with_the_key(api: Api) -> None:
    owned = await make_box(api, "owned", "4001", owner_id=OWNER_A)
    await make_box(api, "plain", "4002")
    reply = await api.get("/vmboxes", params={"has_key": "owner_id"})
    assert list(rows_by_id(reply)) == [owned["id"]]


async def test_listing_filters_are_and_combined(api: Api) -> None:
    await make_box(api, "box a1", "4001", owner_id=OWNER_A)
    a2 = await make_box(api, "box a2", "4002", owner_id=OWNER_A)
    await make_box(api, "box b1", "4003", owner_id=OWNER_B)
    reply = await api.get("/vmboxes", params={"filter_owner_id": OWNER_A, "filter_not_name": "box a1"})
    assert list(rows_by_id(reply)) == [a2["id"]]


async def test_listing_filtered_pages_are_filled_past_dropped_rows(api: Api) -> None:
    owned = []
    for index, letter in enumerate("abcdefg"):
        fields = {"owner_id": OWNER_A} if index % 2 == 0 else {}
        box = await make_box(api, f"box {letter}", str(4000 + index), **fields)
        if fields:
            owned.append(box["id"])
    pages = await walk(api, 3, filter_owner_id=OWNER_A)
    assert [len(page.data) for page in pages] == [3, 1]
    assert [page.json["page_size"] for page in pages] == [3, 1]
    assert sorted(row["id"] for page in pages for row in page.data) == sorted(owned)


# -- boxes written by Kazoo ---------------------------------------------------------


async def test_kazoo_written_boxes_are_listed_and_fetched(api: Api, services: Services,
                                                          account: dict[str, Any]) -> None:
    account_id = account["_id"]
    db = naming.account_db(account_id)
    old = gregorian_now() - 500 * 86400
    plain = await put_raw_box(services, account_id, name="Front Desk", mailbox="2000", pin="1234",
                              timezone="America/New_York", owner_id=OWNER_A, messages=[],
                              pvt_created=old, pvt_modified=old + 10, pvt_vsn="1")
    legacy = await put_raw_box(services, account_id, name="Legacy Box", mailbox="2001",
                               messages=[legacy_message(old + 100), legacy_message(old + 200, "saved")],
                               flags=["legacy"])
    deleted = await put_raw_box(services, account_id, name="Gone Box", mailbox="2002", pvt_deleted=True,
                                messages=[legacy_message(old + 300)])
    user_id = hex_id()
    await services.store.couch.put_doc(db, {
        "_id": user_id, "pvt_type": "user", "name": "Not A Box", "username": "alice", "first_name": "Alice",
        "last_name": "Smith", "pvt_account_id": account_id, "pvt_account_db": encoded_account_db(account_id),
        "pvt_vsn": "1", "pvt_created": old, "pvt_modified": old})

    rows = rows_by_id(await api.get("/vmboxes"))
    assert rows == {
        plain["_id"]: {"id": plain["_id"], "name": "Front Desk", "mailbox": "2000", "owner_id": OWNER_A,
                       "messages": 0, "flags": []},
        legacy["_id"]: {"id": legacy["_id"], "name": "Legacy Box", "mailbox": "2001", "messages": 2,
                        "flags": ["legacy"]},
    }

    fetched = await api.get(f"/vmboxes/{plain['_id']}")
    assert fetched.status == 200, fetched.body
    expected = {key: value for key, value in plain.items()
                if not key.startswith(("pvt_", "_")) and key != "messages"}
    assert fetched.data == {**expected, "id": plain["_id"]}
    assert fetched.json["revision"] == plain["_rev"]

    fetched_legacy = await api.get(f"/vmboxes/{legacy['_id']}")
    assert fetched_legacy.status == 200, fetched_legacy.body
    assert "messages" not in fetched_legacy.data
    assert fetched_legacy.data["name"] == "Legacy Box"

    assert_error(await api.get(f"/vmboxes/{deleted['_id']}"), 404, "bad_identifier")
    assert_error(await api.get(f"/vmboxes/{user_id}"), 404, "bad_identifier")


async def test_kazoo_written_box_survives_patch_with_private_fields_kept(api: Api, services: Services,
                                                                        account: dict[str, Any]) -> None:
    raw = await put_raw_box(services, account["_id"], name="Front Desk", mailbox="2000", pin="1234")
    reply = await api.patch(f"/vmboxes/{raw['_id']}", {"skip_greeting": True})
    assert reply.status == 200, reply.body
    stored = await stored_doc(services, naming.account_db(account["_id"]), raw["_id"])
    for key in ("pvt_type", "pvt_vsn", "pvt_account_id", "pvt_account_db", "pvt_created", "pvt_document_hash"):
        assert stored[key] == raw[key], key
    assert stored["skip_greeting"] is True
    assert stored["pin"] == "1234"
    assert stored["pvt_alphanum_name"] == "frontdesk"


async def test_box_deleted_through_this_instance_takes_no_new_message(api: Api) -> None:
    """Message creation may use a box read up to KAZOO_VM_CACHE_TTL ago, but not one this
    instance changed or deleted since."""
    box = (await api.put("/vmboxes", {"name": "Short lived", "mailbox": "3900"})).data
    assert (await api.put(f"/vmboxes/{box['id']}/messages", {"caller_id_number": "6001"})).status == 201
    assert (await api.post(f"/vmboxes/{box['id']}", {"name": "Short lived", "mailbox": "3901"})).status == 200
    created = await api.put(f"/vmboxes/{box['id']}/messages", {"caller_id_number": "6001"})
    assert created.data["to"].startswith("3901@")
    assert (await api.delete(f"/vmboxes/{box['id']}")).status == 200
    assert_error(await api.put(f"/vmboxes/{box['id']}/messages", {"caller_id_number": "6001"}), 404,
                 "bad_identifier")
