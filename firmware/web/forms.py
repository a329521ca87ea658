"""Configuration forms: one per section (system, country, sip, calls) and one per line,
built from the config schema (type, unit, range, choices, help), read back into typed
values, and the config store's problems mapped onto the inputs they name.

Input names are the config paths (`lines.fxs1.flash_max_ms`), so a ConfigError problem
"lines.fxs1.flash_max_ms: 5000 is out of range; allowed 50..2000 ms" lands next to that
input. Numbers are plain text inputs (inputmode numeric) so the server, not the
browser, judges them and says the rule. Password fields show empty; left empty they
keep the stored value. Lists are comma-separated. Only changed values are sent.

Assumes the schema tables of firmware.core.config.schema (read only: the core's
control API is what validates and stores).
"""

from __future__ import annotations

import re
from typing import Any

from firmware.core.config import schema
from firmware.web.html import esc, field_row, select, text_input

SECTIONS = {
    "system": ("System", schema.SYSTEM),
    "country": ("Country", schema.COUNTRY),
    "sip": ("SIP and cloud", schema.SIP),
    "calls": ("Calls", schema.CALLS),
}
SECRET = {"password", "sip_password"}
READ_ONLY_LINE = ("kind", "chip", "alsa_device", "timeslot")  # wiring: set in the file


def section_fields(doc: dict, section: str) -> dict[str, Any]:
    """path -> Field for a section name or `lines.<name>`."""
    if section.startswith("lines."):
        line = section.split(".", 1)[1]
        entry = doc.get("lines", {}).get(line)
        if entry is None:
            return {}
        kinds = schema.KIND_FIELDS.get(entry.get("kind"), {})
        fields = {k: f for k, f in {**schema.LINE, **kinds}.items() if k not in READ_ONLY_LINE}
        return {f"{section}.{k}": f for k, f in fields.items()}
    _title, fields = SECTIONS.get(section, ("", {}))
    return {f"{section}.{k}": f for k, f in fields.items()}


def current(doc: dict, path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def render_form(doc: dict, section: str, csrf: str, values: dict | None = None,
                errors: dict[str, str] | None = None) -> str:
    """The form of one section; `values` are what was typed (after a refused save)."""
    values, errors = values or {}, errors or {}
    rows = [_row(path, f, values.get(path, _shown(doc, path, f)), errors.get(path, ""))
            for path, f in section_fields(doc, section).items()]
    general = errors.get("", "")
    top = f'<div class="error form-error">{esc(general)}</div>' if general else ""
    return (f'<form method="post" action="/config/{esc(section)}" class="config" '
            f'id="form-{esc(section)}">{top}<input type="hidden" name="csrf" '
            f'value="{esc(csrf)}">{"".join(rows)}'
            '<button type="submit">Save</button></form>')


def _shown(doc: dict, path: str, f) -> str:
    value = current(doc, path)
    if path.rsplit(".", 1)[-1] in SECRET:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _row(path: str, f, value: str, error: str) -> str:
    key = path.rsplit(".", 1)[-1]
    label = key.replace("_", " ")
    hint = _hint(f)
    if key in SECRET:
        control = text_input(path, "", "password", ' autocomplete="new-password" '
                                                   'placeholder="(unchanged)"')
    elif f.type is bool:
        control = select(path, value, ("true", "false"))
    elif f.choices is not None and f.type is not list:
        choices = f.choices() if callable(f.choices) else f.choices
        control = select(path, value, ([""] if f.allow_empty else []) + list(choices))
    elif f.type in (int, float):
        control = text_input(path, value, "text", ' inputmode="decimal"')
    else:
        control = text_input(path, value)
    return field_row(path, label, control, error, hint)


def _hint(f) -> str:
    parts = []
    if f.minval is not None:
        parts.append(f"{_num(f.minval)}..{_num(f.maxval)}")
    if f.unit:
        parts.append(f.unit)
    if f.type is list:
        parts.append("comma-separated")
        if f.item is not None and f.item.choices is not None:
            parts.append("of " + ", ".join(map(str, f.item.choices)))
    if f.help:
        parts.append(f.help)
    return "; ".join(parts)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# ---- reading a submitted form ----

def parse_form(doc: dict, section: str, form: dict[str, str]) -> tuple[dict, dict[str, str]]:
    """(changed path -> typed value, path -> error) from a submitted form."""
    changes, errors = {}, {}
    for path, f in section_fields(doc, section).items():
        if path not in form:
            continue
        raw = form[path].strip()
        if path.rsplit(".", 1)[-1] in SECRET and raw == "":
            continue  # empty password field: keep the stored one
        try:
            value = typed(f, raw, path)
        except ValueError as exc:
            errors[path] = str(exc)
            continue
        if value != current(doc, path):
            changes[path] = value
    return changes, errors


def typed(f, raw: str, path: str) -> Any:
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


def _number(f, raw: str, path: str) -> int | float:
    unit = f" ({f.unit})" if f.unit else ""
    try:
        return f.type(raw)
    except ValueError:
        word = "a whole number" if f.type is int else "a number"
        raise ValueError(f"{path}: {raw!r} must be {word}{unit}") from None


_PATH = re.compile(r"^([A-Za-z0-9_.\-]+?)(\[\d+\])?: ")


def map_problems(problems: list[str], paths: list[str]) -> dict[str, str]:
    """Config problems keyed by the input they name ('' for the rest of the form)."""
    out: dict[str, str] = {}
    for problem in problems:
        m = _PATH.match(problem)
        key = m.group(1) if m and m.group(1) in paths else ""
        out[key] = (out[key] + "; " + problem) if key in out else problem
    return out
