"""Dotted config paths for `set`: completion, help from the schema, typed values.

`lines.fxs1.flash_max_ms` names a leaf of the running document (fetched from the core).
Completion works segment by segment over the document's keys. Help for a leaf comes
from the schema in firmware.core.config.schema (type, unit, range or choices, default),
read only for help and typing: the core validates every change.

A typed value is converted to the leaf's type when it can be (`600` -> 600, `on` ->
true, `PCMU,PCMA` -> a list); when it cannot, it is sent as typed so the core's
validator names the field and the rule ("must be an integer (ms)").
"""

from __future__ import annotations

import copy
import json
from typing import Any

from firmware.core.config import schema

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def lookup(doc: Any, path: str) -> Any:
    """The value at a dotted path; KeyError when there is none."""
    node = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node


def completions(doc: dict, partial: str) -> list[str]:
    """Paths completing `partial` by one segment: tables end in '.', leaves do not."""
    parent_path, _, head = partial.rpartition(".")
    try:
        parent = lookup(doc, parent_path) if parent_path else doc
    except KeyError:
        return []
    if not isinstance(parent, dict):
        return []
    base = parent_path + "." if parent_path else ""
    return [base + key + ("." if isinstance(value, dict) and value else "")
            for key, value in parent.items() if str(key).startswith(head)]


def field_of(doc: dict, path: str) -> schema.Field | None:
    """The schema field of a leaf path, when the schema declares one."""
    parts = path.split(".")
    tables = {"system": schema.SYSTEM, "country": schema.COUNTRY, "sip": schema.SIP,
              "calls": schema.CALLS, "survive": schema.SURVIVE}
    if len(parts) == 2 and parts[0] in tables:
        return tables[parts[0]].get(parts[1])
    boards = {"headset": schema.HEADSET, "pcm": schema.PCM, "lifeline": schema.LIFELINE}
    if parts[0] == "board" and len(parts) == 3 and parts[1] in boards:
        return boards[parts[1]].get(parts[2])
    if parts[:2] == ["board", "chips"] and len(parts) == 4:
        return schema.CHIP.get(parts[3])
    if parts[0] == "lines" and len(parts) == 3:
        kind = (doc.get("lines", {}).get(parts[1]) or {}).get("kind")
        return {**schema.LINE, **schema.KIND_FIELDS.get(kind, {})}.get(parts[2])
    return None


def describe(doc: dict, path: str) -> str:
    """One line of help for a leaf: type, unit, range or choices, now, default."""
    field = field_of(doc, path)
    try:
        now = f"now {_show(lookup(doc, path))}"
    except KeyError:
        now = "not set"
    if field is None:
        return f"value ({now})"
    words = [_TYPE.get(field.type, "value")]
    if field.unit:
        words.append(field.unit)
    if field.minval is not None:
        words.append(f"{schema._num(field.minval)}..{schema._num(field.maxval)}")
    choices = field.choices() if callable(field.choices) else field.choices
    if choices and len(choices) <= 8:
        words.append("one of " + "|".join(map(str, choices)))
    if field.help:
        words.append(field.help)
    return ", ".join(words) + f" ({now})"


def choices(doc: dict, path: str) -> list[str]:
    field = field_of(doc, path)
    if field is None:
        return []
    if field.type is bool:
        return ["true", "false"]
    found = field.choices() if callable(field.choices) else field.choices
    return [str(c) for c in found or ()] if field.type is not list else []


_TYPE = {str: "text", int: "integer", float: "number", bool: "true|false",
         list: "list (a,b,c or [])"}


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else f'"{value}"'


def typed(doc: dict, path: str, text: str) -> Any:
    """The typed text as the leaf's type, or the text itself when it does not convert."""
    field = field_of(doc, path)
    kind = field.type if field else _kind_of(doc, path)
    try:
        return _convert(kind, text, field)
    except ValueError:
        return text


def _kind_of(doc: dict, path: str) -> type | None:
    try:
        value = lookup(doc, path)
    except KeyError:
        return None
    return type(value) if value is not None else None


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


def _list(text: str, item: schema.Field | None) -> list:
    stripped = text.strip()
    if stripped.startswith("["):
        return json.loads(stripped)
    words = [w.strip() for w in stripped.split(",") if w.strip()]
    return [_convert(item.type, w, None) if item else _guess(w) for w in words]


def _guess(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def applied(doc: dict, changes: dict[str, Any]) -> dict:
    """A copy of the document with the dotted changes made (tables made as needed)."""
    out = copy.deepcopy(doc)
    for path, value in changes.items():
        node = out
        *parents, leaf = path.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value
    return out
