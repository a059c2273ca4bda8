"""The project's copy of the OpenAPI contract, and request validation against its schemas.

The validator covers the JSON Schema subset the contract uses (type, required, properties,
additionalProperties, items, enum, minLength, maxLength, minimum, maximum, date-time format,
``$ref``). Errors name the field with a dotted path such as ``parameters[3].values.alpha``.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import yaml

from airavata_hpc.errors import validation_error


@cache
def spec_text() -> str:
    return resources.files("airavata_hpc").joinpath("openapi.yaml").read_text(encoding="utf-8")


@cache
def spec() -> dict[str, Any]:
    return yaml.safe_load(spec_text())


def schema(name: str) -> dict[str, Any]:
    return spec()["components"]["schemas"][name]


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def parse_datetime(value: str) -> datetime:
    """Parse an ISO 8601 date-time (``Z`` or an offset); raises ValueError otherwise."""
    if "T" not in value and " " not in value:
        raise ValueError("not a date-time")
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def validate(value: Any, schema_name: str) -> None:
    """Raise a 400 :class:`ApiError` naming the first field that breaks ``schema_name``."""
    problem = _check(value, schema(schema_name), "") or _find_nul(value, "")
    if problem:
        field, message = problem
        raise validation_error(field or "body", message)


def _check(value: Any, node: dict[str, Any], path: str) -> tuple[str, str] | None:
    if "$ref" in node:
        node = schema(node["$ref"].rsplit("/", 1)[1])

    expected = node.get("type")
    if expected:
        ok = isinstance(value, _TYPES[expected])
        if ok and expected in ("integer", "number") and isinstance(value, bool):
            ok = False
        if not ok:
            return path, f"must be of type {expected}"

    if "enum" in node and value not in node["enum"]:
        return path, "must be one of " + ", ".join(map(str, node["enum"]))

    if isinstance(value, str):
        if len(value) < node.get("minLength", 0):
            return path, f"must be at least {node['minLength']} characters long"
        if "maxLength" in node and len(value) > node["maxLength"]:
            return path, f"must be at most {node['maxLength']} characters long"
        if node.get("format") == "date-time":
            try:
                parse_datetime(value)
            except ValueError:
                return path, "must be an ISO 8601 date-time such as 2026-01-31T12:00:00Z"

    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in node and value < node["minimum"]:
            return path, f"must be at least {node['minimum']}"
        if "maximum" in node and value > node["maximum"]:
            return path, f"must be at most {node['maximum']}"

    if isinstance(value, dict):
        for name in node.get("required", ()):
            if name not in value:
                return _join(path, name), "is required"
        properties = node.get("properties", {})
        extra = node.get("additionalProperties")
        for name, item in value.items():
            if name in properties:
                sub = properties[name]
            elif isinstance(extra, dict):
                sub = extra
            else:
                continue
            problem = _check(item, sub, _join(path, name))
            if problem:
                return problem

    if isinstance(value, list) and "items" in node:
        for index, item in enumerate(value):
            problem = _check(item, node["items"], f"{path}[{index}]")
            if problem:
                return problem
    return None


def _find_nul(value: Any, path: str) -> tuple[str, str] | None:
    """NUL characters anywhere (keys included): PostgreSQL cannot store them in text, and no
    command, name or value needs one."""
    if isinstance(value, str):
        return (path, "must not contain NUL (\\u0000) characters") if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _find_nul(key, _join(path, "(key)")) or _find_nul(item, _join(path, key))
            if problem:
                return problem
    if isinstance(value, list):
        for index, item in enumerate(value):
            problem = _find_nul(item, f"{path}[{index}]")
            if problem:
                return problem
    return None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
