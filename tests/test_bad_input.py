"""Hostile or broken requests get a Kazoo error, never a 500, and change nothing."""

from __future__ import annotations

import pytest
import yarl
from conftest import Api, Reply, assert_error

# A literal ".." never reaches a handler as a box id: aiohttp (like any proxy) resolves
# ".../vmboxes/.." to the account's own URL, which has routes of its own.
BAD_BOX_IDS = ["a%2Fb", "%25", "%2E%2E", "x" * 200, "_design", "_all_docs", "a%00b", "%C3%28"]


@pytest.mark.parametrize("box_id", BAD_BOX_IDS)
@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "DELETE"])
async def test_bad_box_id_is_kazoo_s_404_bad_identifier(api: Api, method: str, box_id: str) -> None:
    # Sent as written: the client would otherwise decode "%2E%2E" and resolve it.
    url = yarl.URL(api.url(f"/vmboxes/{box_id}"), encoded=True)
    async with api.client.request(method, url, data=b'{"data":{"name":"n","mailbox":"1"}}',
                                  headers={"Content-Type": "application/json", "X-Auth-Token": str(api.token)}) as r:
        reply = Reply(r.status, r.headers, await r.read())
    assert_error(reply, 404, "bad_identifier")


@pytest.mark.parametrize("account_id", ["..", "a%2Fb", "0123456789ABCDEF0123456789ABCDEF", "%25" * 11, "x" * 33])
async def test_bad_account_id_is_a_404_not_a_500(api: Api, account_id: str) -> None:
    reply = await api.get(f"/v2/accounts/{account_id}/vmboxes")
    assert reply.status == 404, reply.body


@pytest.mark.parametrize("body", ['{"data":"text"}', '{"data":5}', '{"data":null}', "null", '"x"', "[]",
                                  '{"data":{"name":["x"],"mailbox":{"a":1}}}', "\xff\xfe", '{"data":' * 5000])
async def test_malformed_box_bodies_are_400(api: Api, body: str) -> None:
    reply = await api.call("PUT", "/vmboxes", body=body)
    assert_error(reply, 400, "validation error")


async def test_list_body_for_a_box_is_400(api: Api) -> None:
    assert_error(await api.call("PUT", "/vmboxes", body='{"data":[1,2]}'), 400, "validation error")


async def test_bad_box_write_stores_nothing(api: Api) -> None:
    await api.call("PUT", "/vmboxes", body='{"data":{"name":5,"mailbox":"1"}}')
    assert (await api.get("/vmboxes")).data == []


@pytest.mark.parametrize("start_key", ["garbage", "g2", "g2wAAAAB", "%%%", "g3" * 300, "bgUAvn1W1A5"])
async def test_garbage_start_key_is_not_an_error(api: Api, start_key: str) -> None:
    reply = await api.get("/vmboxes", params={"start_key": start_key})
    assert reply.status == 200, reply.body
    assert (reply.data, reply.json["start_key"]) == ([], start_key)


async def test_unsupported_content_type_is_415_envelope(api: Api) -> None:
    reply = await api.call("PUT", "/vmboxes", body="<xml/>", headers={"Content-Type": "application/xml"})
    assert_error(reply, 415, "unsupported_media_type")


async def test_box_id_chosen_by_client_with_slash_is_refused(api: Api) -> None:
    reply = await api.put("/vmboxes", {"id": "a/b", "name": "n", "mailbox": "1"})
    data = assert_error(reply, 400, "validation error")
    assert "pattern" in data["id"]


async def test_box_id_chosen_by_client_ending_in_a_newline_is_refused(api: Api) -> None:
    reply = await api.put("/vmboxes", {"id": "box1\n", "name": "n", "mailbox": "1"})
    data = assert_error(reply, 400, "validation error")
    assert data["id"]["pattern"]["target"] == "^[0-9A-Za-z][0-9A-Za-z_\\-.]{0,127}$"
    assert (await api.get("/vmboxes")).data == []


@pytest.mark.parametrize("path", ["/vmboxes/box1%0A", "/vmboxes/box1%0A/messages"])
async def test_box_id_ending_in_a_newline_in_the_url_is_404(api: Api, path: str) -> None:
    await api.put("/vmboxes", {"id": "box1", "name": "n", "mailbox": "1"})
    url = yarl.URL(api.url(path), encoded=True)  # sent as written
    async with api.client.get(url, headers={"X-Auth-Token": str(api.token)}) as response:
        assert response.status == 404, await response.text()


async def test_box_id_chosen_by_client_with_two_dots_is_refused(api: Api) -> None:
    """``..`` inside an id is refused everywhere (a path segment of its own resolves)."""
    data = assert_error(await api.put("/vmboxes", {"id": "a..b", "name": "n", "mailbox": "1"}), 400,
                        "validation error")
    assert list(data) == ["id"]
    assert (await api.get("/vmboxes")).data == []
    assert_error(await api.get("/vmboxes/a..b"), 404, "bad_identifier")
