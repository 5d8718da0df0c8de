"""The wire contract every route shares: success/error envelopes, headers, CORS, bodies."""

from __future__ import annotations

import re

from conftest import Api, assert_error

ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


async def test_success_envelope_has_kazoo_keys(api: Api) -> None:
    body = (await api.get("/vmboxes")).json
    assert body["status"] == "success"
    assert ISO_UTC.match(body["timestamp"])
    assert body["request_id"] and body["node"] and body["version"]
    assert body["data"] == []


async def test_success_envelope_echoes_the_auth_token(api: Api) -> None:
    assert (await api.get("/vmboxes")).json["auth_token"] == api.token


async def test_json_content_type_has_no_charset(api: Api) -> None:
    reply = await api.get("/vmboxes")
    assert reply.headers["Content-Type"] == "application/json"


async def test_error_content_type_has_no_charset(api: Api) -> None:
    reply = await api.get("/vmboxes/0123456789abcdef0123456789abcdef")
    assert reply.headers["Content-Type"] == "application/json"


async def test_error_envelope_has_string_error_code_and_data_object(api: Api) -> None:
    data = assert_error(await api.get("/vmboxes/0123456789abcdef0123456789abcdef"), 404, "bad_identifier")
    assert data == {"cause": "0123456789abcdef0123456789abcdef", "message": "bad identifier"}


async def test_client_request_id_is_echoed_in_header_and_body(api: Api) -> None:
    reply = await api.get("/vmboxes", headers={"X-Request-ID": "my-request-42"})
    assert reply.headers["X-Request-ID"] == "my-request-42"
    assert reply.json["request_id"] == "my-request-42"


async def test_every_reply_carries_a_request_id_header(api: Api) -> None:
    reply = await api.get("/nowhere")
    assert re.match(r"^[0-9a-f]{32}$", reply.headers["X-Request-ID"])


async def test_options_is_answered_without_auth_with_cors_headers(api: Api) -> None:
    reply = await api.call("OPTIONS", "/vmboxes", token="", headers={
        "Origin": "http://ui.example", "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "content-type,x-auth-token"})
    assert reply.status == 200
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    assert "PUT" in reply.headers["Access-Control-Allow-Methods"]
    assert "x-auth-token" in reply.headers["Access-Control-Allow-Headers"]
    assert "x-request-id" in reply.headers["Access-Control-Expose-Headers"]
    assert reply.headers["Access-Control-Max-Age"] == "86400"


async def test_cors_headers_are_on_errors_too(api: Api) -> None:
    reply = await api.get("/vmboxes", token="", headers={"Origin": "http://ui.example"})
    assert reply.status == 401
    assert reply.headers["Access-Control-Allow-Origin"] == "*"


async def test_unknown_query_keys_are_ignored(api: Api) -> None:
    box = await api.put("/vmboxes", {"name": "Kept", "mailbox": "3000"})
    reply = await api.get("/vmboxes", params={"_": "1700000000000", "whatever": "x"})
    assert reply.status == 200, reply.body
    assert [row["id"] for row in reply.data] == [box.data["id"]]


async def test_body_without_data_is_validation_error_on_data(api: Api) -> None:
    data = assert_error(await api.call("PUT", "/vmboxes", body='{"name":"x"}'), 400, "validation error")
    assert "required" in data["data"]


async def test_malformed_json_is_validation_error_json_invalid(api: Api) -> None:
    data = assert_error(await api.call("PUT", "/vmboxes", body='{"data": {'), 400, "validation error")
    assert data["json"]["invalid"]["target"] == "body"


async def test_json_that_is_not_an_object_is_a_validation_error(api: Api) -> None:
    assert_error(await api.call("PUT", "/vmboxes", body="[1,2]"), 400, "validation error")


async def test_body_over_the_limit_is_validation_error_max_size(api: Api) -> None:
    huge = '{"data":{"name":"' + "x" * 8_000_001 + '","mailbox":"1"}}'
    data = assert_error(await api.call("PUT", "/vmboxes", body=huge), 400, "validation error")
    assert data["file"]["maxSize"]["target"] == 8000000


async def test_body_just_under_the_limit_is_read(api: Api) -> None:
    big = '{"data":{"name":"big","mailbox":"1","blob":"' + "x" * 7_000_000 + '"}}'
    reply = await api.call("PUT", "/vmboxes", body=big)
    assert reply.status == 201


async def test_trailing_slash_is_tolerated(api: Api) -> None:
    reply = await api.put("/vmboxes/", {"name": "slash", "mailbox": "4000"})
    assert reply.status == 201


async def test_empty_body_with_json_content_type_is_tolerated_on_get(api: Api) -> None:
    reply = await api.call("GET", "/vmboxes", body="")
    assert (reply.status, reply.json["status"], reply.data) == (200, "success", [])


async def test_empty_body_with_json_content_type_is_tolerated_on_delete(api: Api, vmbox: dict[str, str]) -> None:
    reply = await api.call("DELETE", f"/vmboxes/{vmbox['id']}", body="")
    assert reply.status == 200
    assert reply.data["_read_only"] == {"deleted": True}


async def test_json_sent_as_form_is_read_as_json(api: Api) -> None:
    reply = await api.call("PUT", "/vmboxes", body='{"data":{"name":"curl","mailbox":"4001"}}',
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status == 201


async def test_unknown_path_is_not_found_envelope(api: Api) -> None:
    data = assert_error(await api.get("/nowhere"), 404, "not_found")
    assert data == {"message": "not found"}


async def test_unknown_method_is_invalid_method_envelope(api: Api) -> None:
    data = assert_error(await api.call("PATCH", "/vmboxes"), 405, "invalid_method")
    assert data == {"message": "method not allowed"}


async def test_delete_never_answers_204(api: Api, vmbox: dict[str, str]) -> None:
    reply = await api.delete(f"/vmboxes/{vmbox['id']}")
    assert reply.status == 200 and reply.body


async def test_pretty_print_header_indents_json(api: Api) -> None:
    reply = await api.get("/vmboxes", headers={"X-Pretty-Print": "true"})
    assert b"\n" in reply.body
