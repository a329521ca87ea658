"""Dotted config paths for `set`: completion over the running document's keys, help from
the schema, and typed values (`600` -> 600, `on` -> true, `PCMU,PCMA` -> a list). A value
that does not convert is sent as typed, so the core's validator names the rule."""

from __future__ import annotations

import copy
import json
from typing import Any

from firmware.core.config import paths, schema

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_TYPE = {str: "text", int: "integer", float: "number", bool: "true|false",
         list: "list (a,b,c or [])"}

_UNSET = object()


def completions(doc: dict[str, Any], partial: str) -> list[str]:
    """Paths completing `partial` by one segment: tables end in '.', leaves do not."""
    parent_path, _, head = partial.rpartition(".")
    parent = paths.get(doc, parent_path, None) if parent_path else doc
    if not isinstance(parent, dict):
        return []
    base = parent_path + "." if parent_path else ""
    return [base + key + ("." if isinstance(value, dict) and value else "")
            for key, value in parent.items() if str(key).startswith(head)]


def describe(doc: dict[str, Any], path: str) -> str:
    """One line of help for a leaf: type, unit, range or choices, now, default."""
    field = schema.field_at(doc, path)
    value = paths.get(doc, path, _UNSET)
    now = "not set" if value is _UNSET else f"now {_show(value)}"
    if field is None:
        return f"value ({now})"
    choices = field.choice_list()
    words = [_TYPE.get(field.type, "value"), field.unit, field.range_text(),
             "one of " + "|".join(map(str, choices)) if 0 < len(choices) <= 8 else "",
             field.help]
    return ", ".join(w for w in words if w) + f" ({now})"


def choices(doc: dict[str, Any], path: str) -> list[str]:
    field = schema.field_at(doc, path)
    if field is None or field.type is list:
        return []
    if field.type is bool:
        return ["true", "false"]
    return [str(c) for c in field.choice_list()]


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else f'"{value}"'


def typed(doc: dict[str, Any], path: str, text: str) -> Any:
    """The typed text as the leaf's type, or the text itself when it does not convert."""
    field = schema.field_at(doc, path)
    value = paths.get(doc, path, None)
    kind = field.type if field else type(value) if value is not None else None
    try:
        return _convert(kind, text, field)
    except ValueError:
        return text


def _convert(kind: type | None, text: str, field: schema.Field | None) -> Any:
    if kind is bool:
        low = text.lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ValueError(text)
    if kind is int:
        return int(text)
    if kind is float:
        return float(text)
    if kind is list:
        return _list(text, field.item if field else None)
    if kind is None:
        return _guess(text)
    return text


def _list(text: str, item: schema.Field | None) -> list[Any]:
    stripped = text.strip()
    if stripped.startswith("["):
        return list(json.loads(stripped))
    words = [w.strip() for w in stripped.split(",") if w.strip()]
    return [_convert(item.type, w, None) if item else _guess(w) for w in words]


def _guess(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def applied(doc: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of the document with the dotted changes made (tables made as needed)."""
    out = copy.deepcopy(doc)
    for path, value in changes.items():
        paths.put(out, path, value)
    return out
