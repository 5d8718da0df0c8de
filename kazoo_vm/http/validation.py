"""JSON-Schema validation over ``schemas/``, the way crossbar validates.

Defaults are applied (also inside objects that are present), wrong-typed strings are
coerced where the schema wants an integer, number or boolean (Kazoo's non-strict mode),
and every failure is reported at once as ``{path: {code: details}}``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator, FormatChecker
from jsonschema.exceptions import ValidationError as SchemaError
from referencing import Registry
from referencing.jsonschema import DRAFT4

from ..config import SCHEMAS_DIR
from ..errors import ValidationErrors

Json = Any


def error_key(path: Iterable[Any]) -> str:
    """Kazoo's error key: the JSON path joined with ``.``, dots inside keys as ``%2E``."""
    return ".".join(str(part).replace(".", "%2E") if isinstance(part, str) else str(part) for part in path)


def add_error(errors: ValidationErrors, key: str, code: str, details: dict[str, Any]) -> None:
    errors.setdefault(key, {})[code] = details


def _types(value: Any) -> str:
    return ",".join(value) if isinstance(value, list) else str(value)


def _details(error: SchemaError) -> tuple[str, dict[str, Any]]:
    """Kazoo's code and detail object for one jsonschema error."""
    rule, target, value = str(error.validator), error.validator_value, error.instance
    if rule == "type":
        types = _types(target)
        return "type", {"message": f"Value did not match type(s): {types}", "target": types, "value": value}
    if rule == "minLength":
        return rule, {"message": f"String must be at least {target} characters", "target": target,
                      "cause": value, "value": value}
    if rule == "maxLength":
        return rule, {"message": f"String must not be more than {target} characters", "target": target,
                      "cause": value, "value": value}
    if rule == "enum":
        return rule, {"message": "Value not found in enumerated list of values", "target": target, "value": value}
    if rule == "minimum":
        return rule, {"message": f"Value must be at least {target}", "target": target, "value": value}
    if rule == "maximum":
        return rule, {"message": f"Value must be at most {target}", "target": target, "value": value}
    if rule == "minItems":
        return rule, {"message": f"The list must have at least {target} items", "target": target, "value": value}
    if rule == "maxItems":
        return rule, {"message": f"The list is more than {target} items", "target": target, "value": value}
    if rule == "uniqueItems":
        return rule, {"message": "List of items is not unique", "value": value}
    if rule == "pattern":
        return rule, {"message": f"Failed to match pattern '{target}'", "target": target, "value": value}
    if rule == "format":
        return "format", {"message": "Field is not in the correct format", "value": value, "format": target}
    if rule == "additionalProperties":
        return rule, {"message": "Strict checking of data is enabled; only include schema-defined properties",
                      "value": value}
    if rule == "oneOf":
        return "not_one_schema_valid", {"message": "failed to validate", "value": value}
    return rule, {"message": "failed to validate", "value": value}


def _coerce(value: Any, wanted: Any) -> Any:
    """A string turned into the integer, number or boolean the schema asks for, or
    the value unchanged."""
    if not isinstance(value, str):
        return value
    types = wanted if isinstance(wanted, list) else [wanted]
    text = value.strip()
    if "boolean" in types and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if "integer" in types:
        try:
            return int(text)
        except ValueError:
            pass
    if "number" in types:
        try:
            number = float(text)
        except ValueError:
            return value
        if number == number and abs(number) != float("inf"):
            return int(number) if number.is_integer() and "." not in text else number
    return value


def _set_at(document: Json, path: list[Any], value: Any) -> None:
    target = document
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


class SchemaStore:
    """The schemas of a folder, each known by its file name (``vmboxes`` for
    ``vmboxes.json``, whose ``id`` is ``vmboxes.json``; ``$ref``s name sibling files)."""

    def __init__(self, directory: Path = SCHEMAS_DIR) -> None:
        self.directory = directory
        self.schemas: dict[str, dict[str, Any]] = {}
        resources = []
        for path in sorted(directory.glob("*.json")):
            schema = json.loads(path.read_text())
            self.schemas[path.name[: -len(".json")]] = schema
            resources.append((schema.get("id", path.name), DRAFT4.create_resource(schema)))
        self.registry: Registry[Any] = Registry().with_resources(resources)
        self._validators = {
            name: Draft4Validator(schema, registry=self.registry, format_checker=FormatChecker())
            for name, schema in self.schemas.items()
        }

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        if isinstance(ref, str):
            resolved = self.registry.resolver().lookup(ref).contents
            return resolved if isinstance(resolved, dict) else {}
        return schema

    def apply_defaults(self, schema: dict[str, Any], instance: Json) -> None:
        """Fill missing keys that have a default, recursively into present objects."""
        schema = self._resolve(schema)
        for part in schema.get("allOf", []):
            if isinstance(part, dict):
                self.apply_defaults(part, instance)
        if not isinstance(instance, dict):
            return
        for key, sub in (schema.get("properties") or {}).items():
            if not isinstance(sub, dict):
                continue
            sub = self._resolve(sub)
            if key not in instance and "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])
            if key in instance:
                self.apply_defaults(sub, instance[key])

    def validate(self, name: str, data: Json) -> tuple[Json, ValidationErrors]:
        """``data`` with defaults applied and strings coerced, and the errors (empty
        when valid). ``data`` itself is not modified."""
        document = copy.deepcopy(data)
        validator = self._validators[name]
        self.apply_defaults(self.schemas[name], document)
        errors = list(validator.iter_errors(document))
        coerced = False
        for error in errors:
            if error.validator == "type" and error.path:
                value = _coerce(error.instance, error.validator_value)
                if value is not error.instance:
                    _set_at(document, list(error.path), value)
                    coerced = True
        if coerced:
            errors = list(validator.iter_errors(document))
        return document, self._format(errors)

    def _format(self, errors: list[SchemaError]) -> ValidationErrors:
        formatted: ValidationErrors = {}
        for error in errors:
            if error.validator == "required":
                instance = error.instance if isinstance(error.instance, dict) else {}
                for missing in error.validator_value if isinstance(error.validator_value, list) else []:
                    if missing not in instance:
                        key = error_key([*error.absolute_path, missing])
                        add_error(formatted, key, "required",
                                  {"message": "Field is required but missing", "value": missing})
                continue
            code, details = _details(error)
            add_error(formatted, error_key(error.absolute_path), code, details)
        return formatted
