"""``GET /v2/openapi.json``: generated from the router and ``schemas/``, valid OpenAPI 3.0."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import Api
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import OpenAPIV30SpecValidator

from kazoo_vm import appkeys
from kazoo_vm.app import create_app
from kazoo_vm.config import Config
from kazoo_vm.http import openapi

Client = TestClient[web.Request, web.Application]


async def _document(client: Client) -> dict[str, Any]:
    async with client.get("/v2/openapi.json") as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["X-Request-ID"]
        return dict(json.loads(await response.read()))


async def test_served_without_a_token_and_valid(client: Client) -> None:
    document = await _document(client)
    OpenAPIV30SpecValidator(document).validate()
    assert document["openapi"].startswith("3.0.")


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method.upper(), path): operation for path, item in document["paths"].items()
            for method, operation in item.items()}


async def test_every_route_is_documented_with_its_own_row(client: Client) -> None:
    documented = _operations(await _document(client))
    every = {(method, path) for method, path, _handler in openapi.routes(client.app)}
    assert every == set(documented)
    assert not any(path.endswith("/") for _method, path in every)  # the twins are left out
    assert sorted(every - set(openapi.OPERATIONS)) == [], "add a row to kazoo_vm.http.openapi.OPERATIONS"
    assert sorted(set(openapi.OPERATIONS) - every) == [], "an OPERATIONS row has no route"


async def test_token_needed_exactly_where_the_router_says(client: Client) -> None:
    document = await _document(client)
    operations = _operations(document)
    public = client.app[appkeys.PUBLIC_HANDLERS]
    assert {scheme for entry in document["security"] for scheme in entry} == {"X-Auth-Token", "auth_token", "bearer"}
    schemes = document["components"]["securitySchemes"]
    assert (schemes["X-Auth-Token"]["in"], schemes["X-Auth-Token"]["name"]) == ("header", "X-Auth-Token")
    assert (schemes["auth_token"]["in"], schemes["auth_token"]["name"]) == ("query", "auth_token")
    for method, path, handler in openapi.routes(client.app):
        operation = operations[(method, path)]
        if handler in public:
            assert operation["security"] == [], (method, path)
        else:
            assert "security" not in operation and "401" in operation["responses"], (method, path)


async def test_paths_parameters_and_bodies(client: Client) -> None:
    operations = _operations(await _document(client))
    box = "/v2/accounts/{account_id}/vmboxes/{vmbox_id}"
    get_box = operations[("GET", box)]
    patterns = {parameter["name"]: parameter["schema"].get("pattern") for parameter in get_box["parameters"]}
    assert patterns == {"account_id": "^[0-9a-f]{32}$",
                        "vmbox_id": "^(?!messages$)(?!.*[.][.])[0-9A-Za-z][0-9A-Za-z_\\-.]{0,127}$"}
    assert sorted(get_box["responses"]) == ["200", "401", "403", "404", "405", "429", "503"]
    assert get_box["responses"]["404"] == {"$ref": "#/components/responses/error_404"}
    body = operations[("PUT", "/v2/accounts/{account_id}/vmboxes")]["requestBody"]["content"]["application/json"]
    assert body["schema"]["properties"]["data"] == {"$ref": "#/components/schemas/vmboxes"}
    create = operations[("PUT", box + "/messages")]
    assert create["requestBody"]["content"]["application/json"]["schema"]["properties"]["data"] == {
        "$ref": "#/components/schemas/vm_message_metadata"}
    assert {"multipart/form-data", "audio/mpeg"} <= set(create["requestBody"]["content"])
    assert "201" in create["responses"] and "Location" in create["responses"]["201"]["headers"]
    listing = {parameter["name"] for parameter in operations[("GET", box + "/messages")]["parameters"]}
    assert {"page_size", "start_key", "paginate", "ascending", "created_from", "created_to",
            "filter_folder"} <= listing
    audio = operations[("GET", box + "/messages/{message_id}/raw")]["responses"]
    assert set(audio["200"]["content"]) == {"audio/*", "application/octet-stream"} and "206" in audio
    assert set(operations[("POST", box + "/messages/raw")]["responses"]["200"]["content"]) == {"application/zip"}


async def test_schemas_become_openapi_components(client: Client) -> None:
    schemas = (await _document(client))["components"]["schemas"]
    for name in client.app[appkeys.SCHEMAS].schemas:
        assert "id" not in schemas[name] and "$schema" not in schemas[name]
    callback = schemas["vmboxes"]["properties"]["notify"]["properties"]["callback"]
    assert callback == {"$ref": "#/components/schemas/notify.callback"}
    assert schemas["vmboxes"]["properties"]["notify_email_addresses"]["items"]["format"] == "email"
    assert "required" not in schemas["vmbox_patch"] and schemas["vmbox_patch"]["properties"] == schemas[
        "vmboxes"]["properties"]


def test_convert_draft04() -> None:
    converted = openapi.convert({
        "$schema": "http://json-schema.org/draft-04/schema#", "id": "x.json", "type": "object",
        "properties": {"id": {"type": ["string", "null"]}, "both": {"type": ["string", "integer"]},
                       "other": {"$ref": "y.json"}, "list": {"type": "array", "items": [{"$ref": "z.json"}]}},
        "default": {"id": "kept as is"}})
    assert converted == {
        "type": "object",
        "properties": {"id": {"type": "string", "nullable": True},
                       "both": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                       "other": {"$ref": "#/components/schemas/y"},
                       "list": {"type": "array", "items": [{"$ref": "#/components/schemas/z"}]}},
        "default": {"id": "kept as is"}}
    with pytest.raises(ValueError, match="patternProperties"):
        openapi.convert({"patternProperties": {"^x": {}}})


async def test_built_once_per_app(client: Client) -> None:
    async with client.get("/v2/openapi.json") as first, client.get("/v2/openapi.json/") as second:
        assert await first.read() == await second.read()
    assert openapi.document(client.app) is openapi.document(client.app)


def test_a_route_without_a_row_is_still_listed(config: Config, couch_url: str) -> None:
    app = create_app(config, couch_url)

    async def extra(request: web.Request) -> web.Response:
        """A route someone forgot to describe."""
        return web.Response()

    app.router.add_get("/v2/extra", extra)
    operation = openapi.build(app)["paths"]["/v2/extra"]["get"]
    assert operation["summary"] == openapi.UNDOCUMENTED.summary and "default" in operation["responses"]
    OpenAPIV30SpecValidator(openapi.build(app)).validate()


def _validator(document: dict[str, Any], method: str, path: str, status: int) -> OAS30Validator:
    response = document["paths"][path][method.lower()]["responses"][str(status)]
    if "$ref" in response:
        response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"]["application/json"]["schema"]
    return OAS30Validator({**schema, "components": document["components"]})


async def test_real_answers_have_the_documented_shapes(api: Api, vmbox: dict[str, Any]) -> None:
    document = await _document(api.client)
    boxes = "/v2/accounts/{account_id}/vmboxes"
    created = await api.put(f"/vmboxes/{vmbox['id']}/messages", {"caller_id_number": "6001"})
    checks = [
        ("GET", boxes, 200, await api.get("/vmboxes")),
        ("GET", boxes + "/{vmbox_id}", 200, await api.get(f"/vmboxes/{vmbox['id']}")),
        ("PUT", boxes + "/{vmbox_id}/messages", 201, created),
        ("GET", boxes + "/{vmbox_id}/messages", 200, await api.get(f"/vmboxes/{vmbox['id']}/messages")),
        ("GET", boxes + "/messages", 200, await api.get("/vmboxes/messages")),
        ("GET", boxes + "/{vmbox_id}", 404, await api.get("/vmboxes/nothere")),
        ("PUT", boxes, 400, await api.put("/vmboxes", {"name": ""})),
        ("GET", boxes, 401, await api.get("/vmboxes", token="not.a.token")),
    ]
    for _ in range(api.client.app[appkeys.CONFIG].auth_failures + 1):
        refused = await api.put("/v2/api_auth", {"api_key": "not-a-key"}, token="")
    checks.append(("PUT", "/v2/api_auth", 429, refused))
    assert refused.headers["Retry-After"].isdigit()
    for method, path, status, reply in checks:
        assert reply.status == status, reply.body
        _validator(document, method, path, status).validate(reply.json)
