"""Configuration forms built from the config schema, one per section and one per line;
templates/macros.html (config_form) draws their rows. Each input is named by its config
path (`lines.fxs1.flash_max_ms`), so a problem the config store reports lands next to it.
Numbers are text inputs (the server judges them and says the rule); password fields show
empty and keep the stored value when left empty; lists are comma-separated; only changed
values are sent."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from firmware.core.config import paths, schema

Field = schema.Field
SECTIONS = {"system": "System", "country": "Country", "sip": "SIP", "cloud": "Cloud management",
            "calls": "Calls"}  # the forms of schema.SECTIONS, titled
LINE_KEYS = [k for k in {**schema.LINE, **schema.FXS_LINE, **schema.FXO_LINE}
             if k not in ("kind", "chip", "alsa_device", "timeslot")]  # wiring: set in the file
SECRET = {"password", "sip_password"}


class Control(StrEnum):
    TEXT = "text"
    NUMBER = "number"
    SECRET = "secret"
    CHOICE = "choice"


@dataclass(frozen=True)
class Row:
    """One input of a config form, as the template draws it."""

    path: str
    label: str
    value: str
    control: Control
    choices: tuple[str, ...] = ()
    hint: str = ""
    error: str = ""


def section_fields(doc: Mapping[str, Any], section: str) -> dict[str, Field]:
    """path -> Field for a section name or `lines.<name>`."""
    if not section.startswith("lines."):
        fields = schema.SECTIONS[section] if section in SECTIONS else {}
        return {f"{section}.{k}": f for k, f in fields.items()}
    if not isinstance(paths.get(doc, section, None), Mapping):
        return {}
    found = {f"{section}.{k}": schema.field_at(dict(doc), f"{section}.{k}") for k in LINE_KEYS}
    return {path: f for path, f in found.items() if f is not None}


def current(doc: Mapping[str, Any], path: str) -> Any:
    return paths.get(doc, path, None)


def is_secret(path: str) -> bool:
    return path.rsplit(".", 1)[-1] in SECRET


def rows(doc: Mapping[str, Any], section: str, values: Mapping[str, str] | None = None,
         errors: Mapping[str, str] | None = None) -> list[Row]:
    """The inputs of one section; `values` are what was typed (after a refused save)."""
    values, errors = values or {}, errors or {}
    out = []
    for path, f in section_fields(doc, section).items():
        control, choices = _control(path, f)
        value = values.get(path, _shown(doc, path))
        out.append(Row(path, path.rsplit(".", 1)[-1].replace("_", " "), value, control,
                       choices, _hint(f), errors.get(path, "")))
    return out


def _shown(doc: Mapping[str, Any], path: str) -> str:
    value = current(doc, path)
    if is_secret(path) or value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _control(path: str, f: Field) -> tuple[Control, tuple[str, ...]]:
    if is_secret(path):
        return Control.SECRET, ()
    if f.type is bool:
        return Control.CHOICE, ("true", "false")
    if f.choices is not None and f.type is not list:
        choices = [str(c) for c in f.choice_list()]
        return Control.CHOICE, tuple(([""] if f.allow_empty else []) + choices)
    return (Control.NUMBER if f.type in (int, float) else Control.TEXT), ()


def _hint(f: Field) -> str:
    parts = [p for p in (f.range_text(), f.unit) if p]
    if f.type is list:
        parts.append("comma-separated")
        if f.item is not None and f.item.choices is not None and not callable(f.item.choices):
            parts.append("of " + ", ".join(map(str, f.item.choices)))
    if f.help:
        parts.append(f.help)
    return "; ".join(parts)


# ---- reading a submitted form ----

def parse_form(doc: Mapping[str, Any], section: str,
               form: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(changed path -> typed value, path -> error) from a submitted form."""
    changes: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for path, f in section_fields(doc, section).items():
        if path not in form:
            continue
        raw = form[path].strip()
        if is_secret(path) and raw == "":
            continue  # empty password field: keep the stored one
        try:
            value = typed(f, raw, path)
        except ValueError as exc:
            errors[path] = str(exc)
            continue
        if value != current(doc, path):
            changes[path] = value
    return changes, errors


def typed(f: Field, raw: str, path: str) -> Any:
    """The text of an input as the field's type; ValueError says the rule."""
    if f.type is list:
        items = [s.strip() for s in raw.split(",") if s.strip()]
        return [typed(f.item, s, path) for s in items] if f.item else items
    if f.type is bool:
        if raw.lower() in ("true", "yes", "on", "1"):
            return True
        if raw.lower() in ("false", "no", "off", "0"):
            return False
        raise ValueError(f"{path}: {raw!r} must be true or false")
    if f.type in (int, float):
        return _number(f, raw, path)
    return raw


def _number(f: Field, raw: str, path: str) -> int | float:
    unit = f" ({f.unit})" if f.unit else ""
    try:
        return int(raw) if f.type is int else float(raw)
    except ValueError:
        word = "a whole number" if f.type is int else "a number"
        raise ValueError(f"{path}: {raw!r} must be {word}{unit}") from None


_PATH = re.compile(r"^([A-Za-z0-9_.\-]+?)(\[\d+\])?: ")


def map_problems(problems: list[str], paths_: list[str]) -> dict[str, str]:
    """Config problems keyed by the input they name ('' for the rest of the form)."""
    out: dict[str, str] = {}
    for problem in problems:
        m = _PATH.match(problem)
        key = m.group(1) if m and m.group(1) in paths_ else ""
        out[key] = (out[key] + "; " + problem) if key in out else problem
    return out
