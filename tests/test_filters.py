"""Kazoo's generic query filters (crossbar_filter) as a client sees them on the box
listing (``GET /vmboxes``) and the message listings: ``filter_*`` / ``filter_not_*``
with JSON-array "any of" values, the presence filters, and the ``created_*`` /
``modified_*`` ranges of the box listing, over boxes stored as Kazoo stores them."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from conftest import Api

from kazoo_vm.kazoo import naming
from kazoo_vm.services import Services

GREGORIAN_UNIX_OFFSET = 62167219200
OWNER_A, OWNER_B = "a" * 32, "b" * 32


async def put_box(services: Services, account_id: str, name: str, **fields: Any) -> str:
    """A vmbox document written into the account DB as Kazoo writes it; returns its id."""
    now = int(time.time()) + GREGORIAN_UNIX_OFFSET
    doc: dict[str, Any] = {"_id": uuid.uuid4().hex, "name": name, "mailbox": str(4000 + len(name)),
                           "pvt_type": "vmbox", "pvt_vsn": "1", "pvt_account_id": account_id,
                           "pvt_account_db": naming.encoded_db(naming.account_db(account_id)),
                           "pvt_created": now, "pvt_modified": now, **fields}
    await services.store.couch.put_doc(naming.account_db(account_id), doc)
    return str(doc["_id"])


async def names(api: Api, **params: Any) -> list[str]:
    reply = await api.get("/vmboxes", params={key: str(value) for key, value in params.items()})
    assert reply.status == 200, reply.body
    return sorted(row["name"] for row in reply.data)


@pytest.fixture
async def boxes(api: Api, services: Services, account: dict[str, Any]) -> None:
    """Six boxes whose field ``x`` is absent, null, "", [], {} or a value, and whose
    other fields differ in type (boolean, integer, float, object)."""
    account_id = account["_id"]
    await put_box(services, account_id, "absent", owner_id=OWNER_A, require_pin=True, seek_duration_ms=5000)
    await put_box(services, account_id, "null", x=None, owner_id=OWNER_B, require_pin=False, seek_duration_ms=10000)
    await put_box(services, account_id, "empty text", x="", require_pin=False, weight=1.5)
    await put_box(services, account_id, "empty list", x=[], media={"unavailable": "m1", "temporary": "m2"})
    await put_box(services, account_id, "empty object", x={}, media={"unavailable": "m3"})
    await put_box(services, account_id, "valued", x="v", owner_id=OWNER_A, flags=["a", "b"])


ALL = ["absent", "empty list", "empty object", "empty text", "null", "valued"]


@pytest.mark.usefixtures("boxes")
@pytest.mark.parametrize(("params", "expected"), [
    ({"has_key": "x"}, ["empty list", "empty object", "empty text", "null", "valued"]),
    ({"key_missing": "x"}, ["absent"]),
    ({"has_value": "x"}, ["valued"]),
    ({"value_missing": "x"}, ["absent", "empty list", "empty object", "empty text", "null"]),
    ({"has_key": "media.temporary"}, ["empty list"]),
    ({"key_missing": "media.unavailable"}, ["absent", "empty text", "null", "valued"]),
    ({"has_value": "owner_id", "filter_not_owner_id": OWNER_B}, ["absent", "valued"]),
])
async def test_presence_filters(api: Api, params: dict[str, str], expected: list[str]) -> None:
    assert await names(api, **params) == expected


@pytest.mark.usefixtures("boxes")
@pytest.mark.parametrize(("params", "expected"), [
    # a JSON array is "any of"
    ({"filter_owner_id": f'["{OWNER_A}", "{OWNER_B}"]'}, ["absent", "null", "valued"]),
    ({"filter_not_owner_id": f'["{OWNER_A}", "{OWNER_B}"]'}, ["empty list", "empty object", "empty text"]),
    ({"filter_name": '["valued", "null", "nobody"]'}, ["null", "valued"]),
    ({"filter_name": "[]"}, []),
    # text that only looks like an array is one value
    ({"filter_name": "[oops"}, []),
    ({"filter_x": "[v]"}, []),
    # booleans, numbers and objects compare by their JSON text
    ({"filter_require_pin": "true"}, ["absent"]),
    ({"filter_require_pin": "false"}, ["empty text", "null"]),
    ({"filter_require_pin": "[true, false]"}, ["absent", "empty text", "null"]),
    ({"filter_seek_duration_ms": "5000"}, ["absent"]),
    ({"filter_seek_duration_ms": "[10000, 5000]"}, ["absent", "null"]),
    ({"filter_weight": "1.5"}, ["empty text"]),
    ({"filter_weight": "[1.5]"}, ["empty text"]),
    ({"filter_media": '{"unavailable":"m3"}'}, ["empty object"]),
    ({"filter_media": '{"unavailable":"m1","temporary":"m2"}'}, ["empty list"]),
    ({"filter_flags": '[["a","b"]]'}, ["valued"]),
    ({"filter_x": "{}"}, ["empty object"]),
    # a nested field; a missing or null field is the empty text
    ({"filter_media.unavailable": "m1"}, ["empty list"]),
    ({"filter_name.first": ""}, ALL),
    ({"filter_x": ""}, ["absent", "empty text", "null"]),
    ({"filter_x": '[null, "v"]'}, ["absent", "empty text", "null", "valued"]),
    ({"filter_not_x": ""}, ["empty list", "empty object", "valued"]),
    # ``filter_`` names no field: it is no filter
    ({"filter_": "nothing"}, ALL),
])
async def test_value_filters(api: Api, params: dict[str, str], expected: list[str]) -> None:
    assert await names(api, **params) == expected


async def test_created_and_modified_ranges_on_box_listing(api: Api, services: Services,
                                                          account: dict[str, Any]) -> None:
    account_id = account["_id"]
    base = int(time.time()) + GREGORIAN_UNIX_OFFSET - 10 * 86400
    for day, name in enumerate(["day 0", "day 1", "day 2"]):
        await put_box(services, account_id, name, pvt_created=base + day * 86400,
                      pvt_modified=base + (3 - day) * 86400)
    await put_box(services, account_id, "text stamps", pvt_created=str(base + 86400), pvt_modified=str(base + 86400))
    await put_box(services, account_id, "boolean stamps", pvt_created=True, pvt_modified=True)
    day1 = base + 86400
    assert await names(api, created_from=day1) == ["day 1", "day 2"]
    assert await names(api, created_to=day1) == ["day 0", "day 1"]
    assert await names(api, created_from=day1, created_to=day1) == ["day 1"]
    assert await names(api, created_from=day1 + 1) == ["day 2"]
    assert await names(api, modified_from=base + 2 * 86400) == ["day 0", "day 1"]
    assert await names(api, modified_to=base + 2 * 86400) == ["day 1", "day 2"]
    assert await names(api, modified_to=base + 2 * 86400 - 1) == ["day 2"]
    # a bound that is no integer is ignored, as by Kazoo
    assert await names(api, created_from="yesterday") == [
        "boolean stamps", "day 0", "day 1", "day 2", "text stamps"]


async def test_message_listing_filters_on_metadata(api: Api, vmbox: dict[str, Any]) -> None:
    box = vmbox["id"]
    for number, folder in (("1001", "new"), ("1002", "saved"), ("1003", "new")):
        reply = await api.put(f"/vmboxes/{box}/messages", {"caller_id_number": number, "folder": folder,
                                                           "length": int(number)})
        assert reply.status == 201, reply.body

    async def numbers(path: str, **params: str) -> list[str]:
        reply = await api.get(path, params=params)
        assert reply.status == 200, reply.body
        rows = [row if "caller_id_number" in row else next(iter(row.values())) for row in reply.data]
        return sorted(row["caller_id_number"] for row in rows)

    listing = f"/vmboxes/{box}/messages"
    assert await numbers(listing, filter_caller_id_number='["1001", "1003"]') == ["1001", "1003"]
    assert await numbers(listing, filter_not_folder='["new"]') == ["1002"]
    assert await numbers(listing, filter_length="1002") == ["1002"]
    assert await numbers(listing, has_key="folder") == ["1001", "1002", "1003"]
    assert await numbers(listing, key_missing="transcription") == ["1001", "1002", "1003"]
    assert await numbers(listing, has_value="transcription") == []
    assert await numbers("/vmboxes/messages", filter_folder="new") == ["1001", "1003"]
