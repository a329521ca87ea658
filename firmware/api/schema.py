"""A small JSON-schema checker for request bodies and query strings: the subset spec.py
uses (no $ref). `check(value, schema, path)` raises BadInput naming the field and the rule;
booleans are not numbers and 1.0 is not an integer, as OpenAPI tools have it."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from foundation.errors import BranchlineError

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}
_WORDS = {"object": "an object", "array": "a list", "string": "a string",
          "integer": "an integer", "number": "a number", "boolean": "true or false"}


class BadInput(BranchlineError):
    """A request the API refuses (400): `field` names what was wrong."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, dict | list) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _is(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, _TYPES[kind])


def check(value: Any, schema: dict, path: str = "") -> None:
    """Raise BadInput when `value` breaks `schema`; see the module docstring."""
    where, field = path or "request body", path or None
    if value is None:
        if schema.get("nullable"):
            return
        raise BadInput(f"{where}: must not be null", field)
    kind = schema.get("type")
    if kind and not _is(value, kind):
        raise BadInput(f"{where}: {_show(value)} must be {_WORDS[kind]}", field)
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(str(c) for c in schema["enum"])
        raise BadInput(f"{where}: {_show(value)} is not allowed; choose one of: {choices}", field)
    if isinstance(value, int | float) and not isinstance(value, bool):
        _range(value, schema, where, field)
    elif isinstance(value, str):
        _text(value, schema, where, field)
    elif isinstance(value, dict):
        _object(value, schema, path)
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            check(item, schema["items"], f"{path}[{i}]")


def _range(value: float, schema: dict, where: str, field: str | None) -> None:
    low, high = schema.get("minimum"), schema.get("maximum")
    if (low is not None and value < low) or (high is not None and value > high):
        raise BadInput(f"{where}: {_show(value)} is out of range; allowed {low}..{high}", field)


def _text(value: str, schema: dict, where: str, field: str | None) -> None:
    if len(value) > schema.get("maxLength", len(value)):
        raise BadInput(f"{where}: longer than {schema['maxLength']} characters", field)
    if len(value) < schema.get("minLength", 0):
        raise BadInput(f"{where}: shorter than {schema['minLength']} characters", field)
    if "pattern" in schema and not re.search(schema["pattern"], value):
        raise BadInput(f"{where}: {_show(value)} does not match {schema['pattern']}", field)


def _object(value: dict, schema: dict, path: str) -> None:
    where, field, props = path or "request body", path or None, schema.get("properties", {})
    if len(value) < schema.get("minProperties", 0):
        raise BadInput(f"{where}: must hold at least {schema['minProperties']} entry", field)
    if len(value) > schema.get("maxProperties", len(value)):
        raise BadInput(f"{where}: must hold at most {schema['maxProperties']} entries", field)
    for name in schema.get("required", ()):
        if name not in value:
            raise BadInput(f"{_join(path, name)}: missing; this field is required",
                           _join(path, name))
    for name, item in value.items():
        sub = _join(path, str(name))
        if name in props:
            check(item, props[name], sub)
        elif schema.get("additionalProperties", True) is False:
            known = ", ".join(props) or "none"
            raise BadInput(f"{sub}: unknown field; known: {known}", sub)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def query_value(text: str, schema: dict, name: str) -> Any:
    """A query-string value converted to its schema type, then checked."""
    kind = schema.get("type", "string")
    try:
        value: Any = {"integer": int, "number": float}.get(kind, str)(text)
    except ValueError:
        raise BadInput(f"{name}: {_show(text)} must be {_WORDS[kind]}", name) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise BadInput(f"{name}: {_show(text)} must be a finite number", name)
    check(value, schema, name)
    return value
