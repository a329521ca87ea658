"""Small HTML builders for the server-rendered pages: escaping, the page frame, tables,
form inputs with their error line.

Everything put into HTML goes through `esc` (or is built from already-escaped parts by
these helpers); pages hold no inline script or style, so the Content-Security-Policy
can say default-src 'self'. Assumes UTF-8 pages served to phone and desktop browsers.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

NAV = (("/", "Dashboard"), ("/config", "Configuration"), ("/diag", "Diagnostics"),
       ("/cdrs", "Calls"), ("/logs", "Logs"), ("/backup", "Backup"),
       ("/firmware", "Firmware"), ("/audit", "Audit"))


ON = ' class="on"'


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def page(title: str, body: str, *, session=None, box: str = "branchline",
         active: str = "", banner: str = "") -> str:
    """A whole page: head, navigation (for a logged-in admin), messages, body."""
    nav = _nav(session, active) if session is not None and session.stage == "admin" else ""
    flash = ""
    if session is not None and session.flash:
        flash = "".join(f'<p class="flash">{esc(m)}</p>' for m in session.flash)
        session.flash.clear()
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)} · {esc(box)}</title>"
            "<link rel=\"stylesheet\" href=\"/static/app.css\">"
            "<script src=\"/static/app.js\" defer></script></head><body>"
            f"<header><span class=\"brand\">branchline · {esc(box)}</span>{nav}</header>"
            f"{banner}<main><h1>{esc(title)}</h1>{flash}{body}</main></body></html>")


def _nav(session, active: str) -> str:
    links = "".join(f'<a href="{href}"{ON if href == active else ""}>{label}</a>'
                    for href, label in NAV)
    logout = (f'<form method="post" action="/logout" class="inline">{csrf_input(session)}'
              '<button type="submit" class="link">Log out</button></form>')
    return f"<nav>{links}{logout}</nav>"


def csrf_input(session) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(session.csrf)}">'


def table(headers: Iterable[str], rows: Iterable[Iterable[Any]], cls: str = "",
          row_attrs: Iterable[str] | None = None) -> str:
    """A table; cells are escaped unless given as Raw."""
    headers = list(headers)
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    attrs = list(row_attrs) if row_attrs is not None else None
    body = []
    for i, row in enumerate(rows):
        extra = f" {attrs[i]}" if attrs else ""
        cells = "".join(f"<td>{c if isinstance(c, Raw) else esc(c)}</td>" for c in row)
        body.append(f"<tr{extra}>{cells}</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(headers) or 1}" class="muted">none</td></tr>')
    return (f'<div class="scroll"><table class="{esc(cls)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


class Raw(str):
    """Already-safe HTML."""


def field_row(name: str, label: str, control: str, error: str = "", hint: str = "") -> str:
    """A labelled control with its validation message right under it."""
    err = (f'<div class="error" id="err-{esc(name)}" data-error-for="{esc(name)}">'
           f"{esc(error)}</div>" if error else "")
    hint_html = f'<div class="hint">{esc(hint)}</div>' if hint else ""
    invalid = " invalid" if error else ""
    return (f'<div class="field{invalid}"><label for="f-{esc(name)}">{esc(label)}</label>'
            f"{control}{hint_html}{err}</div>")


def text_input(name: str, value: Any, kind: str = "text", extra: str = "") -> str:
    return (f'<input id="f-{esc(name)}" name="{esc(name)}" type="{kind}" '
            f'value="{esc(value)}"{extra}>')


def select(name: str, value: Any, choices: Iterable[Any]) -> str:
    opts = "".join(f'<option value="{esc(c)}"{" selected" if str(c) == str(value) else ""}>'
                   f"{esc(c if c != '' else '(default)')}</option>" for c in choices)
    return f'<select id="f-{esc(name)}" name="{esc(name)}">{opts}</select>'


def fmt_time(t: Any) -> str:
    """Epoch seconds as local ISO time (or the text as given)."""
    import datetime

    if isinstance(t, int | float):
        return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")
    return "" if t is None else str(t)


def fmt_num(v: Any, digits: int = 1, unit: str = "") -> str:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return "—" if v in (None, "") else str(v)
    return f"{v:.{digits}f}{(' ' + unit) if unit else ''}"
