"""The schema files other services reuse: ``GET /v2/schemas``, ``GET /v2/schemas/{name}``,
``POST /v2/schemas/{name}/validation``, and the folder itself checked by two independent
validators (jsonschema here, ajv-draft-04 from npm in ``tests/js/validate.mjs``).

The samples in ``tests/schema_samples/<name>.json`` (one file per schema) are lists of
``{"description", "data", "valid"}``; an invalid sample also names the ``rule`` it breaks
(``<schema>#<JSON pointer to the keyword>``) and the ``errors`` the API answers for it
(``{key: [codes]}``, Kazoo's validation error keys and codes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yarl
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import Api, Reply, assert_error
from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError as SchemaError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from kazoo_vm.config import PROJECT_ROOT, SCHEMAS_DIR

SAMPLES_DIR = Path(__file__).parent / "schema_samples"
RUNNER = Path(__file__).parent / "js" / "validate.mjs"
SCHEMA_FILES = sorted(SCHEMAS_DIR.glob("*.json"))
SCHEMA_NAMES = [path.name[: -len(".json")] for path in SCHEMA_FILES]
# Keywords that reject a document. oneOf branches are covered through their oneOf.
CONSTRAINTS = ("type", "minLength", "maxLength", "enum", "minimum", "maximum", "exclusiveMinimum",
               "exclusiveMaximum", "multipleOf", "pattern", "format", "minItems", "maxItems", "uniqueItems",
               "minProperties", "maxProperties", "additionalProperties", "additionalItems", "dependencies",
               "oneOf", "anyOf", "not", "$ref")
SUBSCHEMA_MAPS = ("properties", "patternProperties")
SUBSCHEMA_LISTS = ("allOf", "anyOf")


# -- the folder, loaded the way another service would ----------------------------------

def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def folder_registry() -> Registry[Any]:
    """Every file of ``schemas/`` under its file name (which is its ``id``)."""
    return Registry().with_resources(
        (path.name, Resource.from_contents(load_json(path), default_specification=DRAFT4)) for path in SCHEMA_FILES
    )


REGISTRY = folder_registry()


def validator(name: str) -> Draft4Validator:
    return Draft4Validator(REGISTRY.contents(f"{name}.json"), registry=REGISTRY,
                           format_checker=Draft4Validator.FORMAT_CHECKER)


def samples() -> dict[str, list[dict[str, Any]]]:
    return {path.name[: -len(".json")]: load_json(path) for path in sorted(SAMPLES_DIR.glob("*.json"))}


SAMPLES = samples()


def all_samples() -> Iterator[tuple[str, int, dict[str, Any]]]:
    for name, listed in SAMPLES.items():
        for index, sample in enumerate(listed):
            yield name, index, sample


def label(name: str, index: int, sample: dict[str, Any]) -> str:
    return f"{name}[{index}] {sample['description']}"


def pointer(parts: Any) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


# -- the rules of a schema, and the rules a document breaks ----------------------------

def rules(name: str) -> set[str]:
    """Every constraint of schema ``name`` as ``name#/pointer/to/keyword`` (each entry of
    ``required`` as ``…/required/<index>``)."""
    found: set[str] = set()

    def walk(node: Any, at: list[Any]) -> None:
        if not isinstance(node, dict):
            return
        for keyword in CONSTRAINTS:
            if keyword in node and not (keyword == "additionalProperties" and isinstance(node[keyword], dict)):
                found.add(f"{name}#{pointer([*at, keyword])}")
        for index, _ in enumerate(node.get("required", [])):
            found.add(f"{name}#{pointer([*at, 'required', index])}")
        for keyword in SUBSCHEMA_MAPS:
            for key, sub in (node.get(keyword) or {}).items():
                walk(sub, [*at, keyword, key])
        for keyword in SUBSCHEMA_LISTS:
            for index, sub in enumerate(node.get(keyword) or []):
                walk(sub, [*at, keyword, index])
        for keyword in ("items", "additionalProperties"):  # a schema, not true/false
            if isinstance(node.get(keyword), dict):
                walk(node[keyword], [*at, keyword])

    walk(REGISTRY.contents(f"{name}.json"), [])
    return found


def broken_rules(name: str, error: SchemaError) -> list[str]:
    """The rules one jsonschema error comes from, outermost first: each ``$ref`` it went
    through, then the keyword that failed (jsonschema's schema path leaves ``$ref`` out,
    so it is followed here)."""
    chain: list[str] = []
    schema_name, node, at = name, REGISTRY.contents(f"{name}.json"), list[Any]()
    path = list(error.absolute_schema_path)
    keyword = path[-1]
    for position, part in enumerate(path):
        while isinstance(node, dict) and "$ref" in node and part not in node:  # draft 4: $ref replaces the node
            chain.append(f"{schema_name}#{pointer([*at, '$ref'])}")
            schema_name, node, at = node["$ref"][: -len(".json")], REGISTRY.contents(node["$ref"]), []
        if position < len(path) - 1:
            node, at = node[part], [*at, part]
    if keyword == "required":
        required = list(error.validator_value) if isinstance(error.validator_value, list) else []
        at = [*at, "required", next(index for index, field in enumerate(required)
                                    if error.message == f"{field!r} is a required property")]
    else:
        at = [*at, keyword]
    chain.append(f"{schema_name}#{pointer(at)}")
    return chain


# -- the second validator ---------------------------------------------------------------

@pytest.fixture(scope="module")
def ajv_results() -> dict[str, list[dict[str, Any]]]:
    if not (PROJECT_ROOT / "node_modules" / "ajv").is_dir():
        pytest.skip("node_modules/ajv is missing: run `npm ci` (./dev and .ci/run do) to run the ajv validator")
    node = shutil.which("node") or "/usr/bin/node"
    done = subprocess.run([node, str(RUNNER), str(SCHEMAS_DIR), str(SAMPLES_DIR)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    results: dict[str, list[dict[str, Any]]] = json.loads(done.stdout)
    return results


def test_every_schema_id_is_its_file_name() -> None:
    assert {path.name: load_json(path).get("id") for path in SCHEMA_FILES} == {
        path.name: path.name for path in SCHEMA_FILES
    }


def test_every_ref_names_a_sibling_file() -> None:
    refs: list[tuple[str, str]] = []

    def collect(file: str, node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append((file, node["$ref"]))
            for value in node.values():
                collect(file, value)
        elif isinstance(node, list):
            for value in node:
                collect(file, value)

    for path in SCHEMA_FILES:
        collect(path.name, load_json(path))
    assert refs, "no $ref to check"
    assert [(file, ref) for file, ref in refs if "/" in ref or "#" in ref or not (SCHEMAS_DIR / ref).is_file()] == []


def test_every_schema_is_a_valid_draft4_schema() -> None:
    for path in SCHEMA_FILES:
        schema = load_json(path)
        assert schema.get("$schema") == "http://json-schema.org/draft-04/schema#", path.name
        Draft4Validator.check_schema(schema)


def test_every_schema_has_valid_and_invalid_samples() -> None:
    assert sorted(SAMPLES) == SCHEMA_NAMES
    for name, listed in SAMPLES.items():
        assert any(sample["valid"] for sample in listed), name
        assert any(not sample["valid"] for sample in listed), name


def test_jsonschema_and_ajv_agree_with_every_sample(ajv_results: dict[str, list[dict[str, Any]]]) -> None:
    disagreements = []
    for name, index, sample in all_samples():
        by_jsonschema = validator(name).is_valid(sample["data"])
        by_ajv = ajv_results[name][index]["valid"]
        if not by_jsonschema == by_ajv == sample["valid"]:
            disagreements.append((label(name, index, sample), {"expected": sample["valid"],
                                                               "jsonschema": by_jsonschema, "ajv": by_ajv}))
    assert disagreements == []
    assert sum(len(listed) for listed in ajv_results.values()) == sum(len(listed) for listed in SAMPLES.values())


def test_jsonschema_and_ajv_find_errors_at_the_same_places(ajv_results: dict[str, list[dict[str, Any]]]) -> None:
    disagreements = []
    for name, index, sample in all_samples():
        by_jsonschema = {pointer(error.absolute_path) for error in validator(name).iter_errors(sample["data"])}
        by_ajv = {error["instancePath"] for error in ajv_results[name][index]["errors"]}
        if by_jsonschema != by_ajv:
            disagreements.append((label(name, index, sample), sorted(by_jsonschema), sorted(by_ajv)))
    assert disagreements == []


def test_every_invalid_sample_breaks_the_rule_it_names() -> None:
    wrong = []
    for name, index, sample in all_samples():
        if sample["valid"]:
            assert "rule" not in sample, label(name, index, sample)
            continue
        broken = {broken_rules(name, error)[0] for error in validator(name).iter_errors(sample["data"])}
        if sample["rule"] not in broken:
            wrong.append((label(name, index, sample), sample["rule"], sorted(broken)))
    assert wrong == []


def test_samples_cover_every_constraint_of_every_schema() -> None:
    named = {sample["rule"] for _, _, sample in all_samples() if not sample["valid"]}
    every = set().union(*(rules(name) for name in SCHEMA_NAMES))
    assert sorted(every - named) == [], "constraints without an invalid sample"
    assert sorted(named - every) == [], "samples naming a rule no schema has"


def test_samples_reach_every_referenced_schema_through_its_ref() -> None:
    reached: set[tuple[str, str]] = set()
    for name, _, sample in all_samples():
        for error in validator(name).iter_errors(sample["data"]):
            chain = broken_rules(name, error)
            reached.update(zip(chain, chain[1:], strict=False))
    refs = {rule for name in SCHEMA_NAMES for rule in rules(name) if rule.endswith("/$ref")}
    assert refs - {outer for outer, _ in reached} == set()


# -- the endpoints ---------------------------------------------------------------------

@pytest.fixture
def anonymous(client: TestClient[web.Request, web.Application]) -> Api:
    """Calls without a token."""
    return Api(client, "none", None)


def kazoo_codes(reply: Reply) -> dict[str, list[str]]:
    return {key: sorted(codes) for key, codes in assert_error(reply, 400, "validation error").items()}


async def test_list_is_every_schema_name_sorted_without_a_token(anonymous: Api) -> None:
    reply = await anonymous.get("/v2/schemas")
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json["status"] == "success"
    assert reply.data == SCHEMA_NAMES == [
        "accounts", "mailbox_message", "notify.callback", "users", "vm_message_metadata", "vmboxes", "webhooks"]


@pytest.mark.parametrize("file", SCHEMA_FILES, ids=lambda path: path.name)
async def test_each_schema_is_served_byte_for_byte_as_json_without_a_token(anonymous: Api, file: Path) -> None:
    reply = await anonymous.get(f"/v2/schemas/{file.name[: -len('.json')]}")
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.body == file.read_bytes()


async def test_a_schema_is_also_served_under_its_id(anonymous: Api) -> None:
    """``id`` and ``$ref`` are file names, so a validator that resolves a ``$ref``
    against the URL it fetched finds ``/v2/schemas/notify.callback.json``."""
    by_id = await anonymous.get("/v2/schemas/notify.callback.json")
    assert by_id.status == 200, by_id.body
    assert by_id.body == (SCHEMAS_DIR / "notify.callback.json").read_bytes()


async def test_unknown_schema_is_404_bad_identifier(anonymous: Api) -> None:
    data = assert_error(await anonymous.get("/v2/schemas/devices"), 404, "bad_identifier")
    assert data == {"cause": "devices", "message": "bad identifier"}


@pytest.mark.parametrize("raw", ["..%2Fsetup.cfg", "%2E%2E%2Fsetup.cfg", "..%5Csetup.cfg", "vmboxes%00",
                                 "..%2Fschemas%2Fvmboxes", "%2e%2e", ".%2E", "...json", "vmboxes.json.json"])
async def test_traversal_names_are_404(client: TestClient[web.Request, web.Application], raw: str) -> None:
    async with client.get(yarl.URL(f"/v2/schemas/{raw}", encoded=True)) as response:
        reply = Reply(response.status, response.headers, await response.read())
    data = assert_error(reply, 404, "bad_identifier")
    assert data["message"] == "bad identifier"


async def test_validation_of_a_valid_document_is_200_with_defaults(anonymous: Api) -> None:
    reply = await anonymous.post("/v2/schemas/vmboxes/validation", {"mailbox": "1001", "name": "Reception"})
    assert reply.status == 200, reply.body
    assert reply.json["status"] == "success"
    assert reply.data["mailbox"] == "1001"
    assert reply.data["media_extension"] == "mp3"
    assert reply.data["notify_email_addresses"] == []


async def test_validation_coerces_strings_as_a_write_does(anonymous: Api) -> None:
    reply = await anonymous.post("/v2/schemas/vmboxes/validation",
                                 {"mailbox": "1001", "name": "Reception", "seek_duration_ms": "2000",
                                  "require_pin": "true"})
    assert reply.status == 200, reply.body
    assert (reply.data["seek_duration_ms"], reply.data["require_pin"]) == (2000, True)


async def test_validation_accepts_every_valid_sample(anonymous: Api) -> None:
    refused = []
    for name, index, sample in all_samples():
        if sample["valid"]:
            reply = await anonymous.post(f"/v2/schemas/{name}/validation", sample["data"])
            if reply.status != 200:
                refused.append((label(name, index, sample), reply.status, reply.body))
    assert refused == []


async def test_validation_answers_400_with_the_kazoo_errors_of_every_invalid_sample(anonymous: Api) -> None:
    differences = []
    for name, index, sample in all_samples():
        if not sample["valid"]:
            reply = await anonymous.post(f"/v2/schemas/{name}/validation", sample["data"])
            got = kazoo_codes(reply)
            if got != sample["errors"]:
                differences.append((label(name, index, sample), sample["errors"], got))
    assert differences == []


async def test_validation_error_details_are_kazoo_messages(anonymous: Api) -> None:
    reply = await anonymous.post("/v2/schemas/vmboxes/validation", {"name": "Reception", "pin": "12"})
    assert assert_error(reply, 400, "validation error") == {
        "mailbox": {"required": {"message": "Field is required but missing", "value": "mailbox"}},
        "pin": {"minLength": {"message": "String must be at least 4 characters", "target": 4, "cause": "12",
                              "value": "12"}},
    }


async def test_validation_of_an_unknown_schema_is_404_bad_identifier(anonymous: Api) -> None:
    data = assert_error(await anonymous.post("/v2/schemas/devices/validation", {}), 404, "bad_identifier")
    assert data["cause"] == "devices"


async def test_validation_without_data_is_400(anonymous: Api) -> None:
    reply = await anonymous.call("POST", "/v2/schemas/vmboxes/validation", body=b'{"mailbox": "1001"}')
    assert assert_error(reply, 400, "validation error") == {
        "data": {"required": {"message": "Field is required but missing", "value": "data"}}
    }


async def test_validation_reports_the_same_errors_as_put_vmboxes(api: Api) -> None:
    """Every invalid vmbox sample (no box exists in the fresh account, so no mailbox
    collides): the validation endpoint's ``data`` is the PUT's ``data``."""
    differences = []
    for name, index, sample in all_samples():
        if name == "vmboxes" and not sample["valid"]:
            put = await api.put("/vmboxes", sample["data"])
            validated = await api.post("/v2/schemas/vmboxes/validation", sample["data"], token="")
            put_data = assert_error(put, 400, "validation error")
            if assert_error(validated, 400, "validation error") != put_data:
                differences.append((label(name, index, sample), put_data, validated.json["data"]))
    assert differences == []
    listing = await api.get("/vmboxes")
    assert listing.data == []


async def test_validation_reports_the_same_errors_as_put_message(api: Api, vmbox: dict[str, Any]) -> None:
    differences = []
    for name, index, sample in all_samples():
        if name == "vm_message_metadata" and not sample["valid"]:
            put = await api.put(f"/vmboxes/{vmbox['id']}/messages", sample["data"])
            validated = await api.post("/v2/schemas/vm_message_metadata/validation", sample["data"], token="")
            put_data = assert_error(put, 400, "validation error")
            if assert_error(validated, 400, "validation error") != put_data:
                differences.append((label(name, index, sample), put_data, validated.json["data"]))
    assert differences == []


async def test_validation_does_not_check_mailbox_uniqueness(api: Api, vmbox: dict[str, Any]) -> None:
    """Only the schema: a mailbox another box uses passes here and fails the PUT."""
    taken = {"name": "Second", "mailbox": vmbox["mailbox"]}
    assert (await api.post("/v2/schemas/vmboxes/validation", taken)).status == 200
    assert "unique" in assert_error(await api.put("/vmboxes", taken), 400, "validation error")["mailbox"]
