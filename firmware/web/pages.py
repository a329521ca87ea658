"""The technician's pages: login and first setup, dashboard, configuration, diagnostics,
calls (CDRs), logs, backup/restore, firmware upload, audit log.

Each handler takes (app, req) and returns a Response; `dispatch` picks it by method and
path and applies the login gate (anonymous: login only; after the setup code: the
set-password page only; admin: everything). Every state change is written to the audit
log with who, from where and what changed (secrets masked). Data come only from the
core's control API (firmware.web.coreapi); when the core does not answer, pages still
render with a banner saying so.

Assumes the control API contract of issue 6 (paths under /api/v1).
"""

from __future__ import annotations

import logging
import time
import tomllib
from typing import Any

import tomli_w

from firmware.auth import ADMIN, AuthError, LockedOut
from firmware.web import forms, plots
from firmware.web.coreapi import ApiError, CoreDown
from firmware.web.html import (
    ON,
    Raw,
    csrf_input,
    esc,
    field_row,
    fmt_num,
    fmt_time,
    page,
    select,
    table,
    text_input,
)
from firmware.web.server import HttpError, Response, redirect

log = logging.getLogger(__name__)

PUBLIC = {("GET", "/login"), ("POST", "/login")}
SETUP = {("GET", "/setup"), ("POST", "/setup"), ("POST", "/logout")}
PAGE_SIZE = 50
TONES = ("dial", "busy", "ringback", "congestion", "howler")


def dispatch(app, req) -> Response:
    key = (req.method if req.method != "HEAD" else "GET", req.path)
    handler = ROUTES.get(key)
    if handler is None:
        if any(path == req.path for _m, path in ROUTES):
            raise HttpError(405, f"{req.method} is not allowed on {req.path}")
        prefix = next((p for p in PREFIX_ROUTES if key[1].startswith(p[1]) and key[0] == p[0]),
                      None)
        if prefix is None:
            raise HttpError(404, f"{req.path}: no such page")
        handler = PREFIX_ROUTES[prefix]
    stage = req.session.stage
    if key in PUBLIC or (stage == "setup" and key in SETUP) or stage == "admin":
        return handler(app, req)
    if stage == "setup":
        return redirect("/setup")
    if req.method == "GET" and req.path != "/live":
        return redirect("/login")
    raise HttpError(401, "log in first")


def error_page(app, req, status: int, message: str) -> Response:
    body = f'<p class="error" id="page-error">{esc(message)}</p><p><a href="/">Back</a></p>'
    title = {400: "Bad request", 401: "Not logged in", 403: "Refused", 404: "Not found",
             405: "Not allowed", 413: "Too large", 429: "Too many attempts"}.get(status, "Error")
    return Response(status, page(title, body, session=req.session, box=app.box))


def _render(app, req, title: str, body: str, active: str = "", status: int = 200,
            banner: str = "") -> Response:
    return Response(status, page(title, body, session=req.session, box=app.box,
                                 active=active, banner=banner))


def _core_banner(exc: ApiError) -> str:
    cls = "banner down" if isinstance(exc, CoreDown) else "banner warn"
    return f'<div class="{cls}" id="core-error">{esc(exc)}</div>'


def _audit(app, req, action: str, detail: Any = "") -> None:
    try:
        app.auth.audit(req.who, req.client, action, detail)
    except OSError:
        log.exception("audit log write failed")


# ---- login and first setup ----

def login_get(app, req, error: str = "", status: int = 200) -> Response:
    if req.session.stage == "admin":
        return redirect("/")
    setup = app.auth.needs_setup()
    if setup:
        app.auth.ensure_setup_code()
        intro = ("<p>First login: type the <b>setup code</b> shown on the serial console "
                 "and on the box label. You will then choose the admin password.</p>")
        fields = field_row("code", "Setup code", text_input(
            "code", "", extra=' autocomplete="one-time-code" autocapitalize="characters" '
                              'required'))
    else:
        intro = ""
        fields = (field_row("user", "User", text_input("user", ADMIN, extra=' autocomplete='
                                                       '"username" required')) +
                  field_row("password", "Password", text_input(
                      "password", "", "password", ' autocomplete="current-password" required')))
    err = f'<p class="error" id="login-error">{esc(error)}</p>' if error else ""
    body = (f'{intro}{err}<form method="post" action="/login" class="login">'
            f'{csrf_input(req.session)}{fields}<button type="submit">Log in</button></form>')
    return _render(app, req, "Log in", body, status=status)


def login_post(app, req) -> Response:
    wait = app.limiter.allow(req.client)
    if wait:
        return login_get(app, req, f"too many login attempts from {req.client}; wait "
                                   f"{int(wait) + 1} s", 429)
    try:
        if app.auth.needs_setup():
            app.auth.check_setup_code(req.form.get("code", ""))
            stage, user, action = "setup", ADMIN, "login with setup code"
        else:
            user = req.form.get("user", "")
            app.auth.login(user, req.form.get("password", ""))
            stage, action = "admin", "login"
    except LockedOut as exc:
        _audit(app, req, "login refused (locked)", str(exc))
        return login_get(app, req, str(exc), 403)
    except AuthError as exc:
        _audit(app, req, "login failed", str(exc))
        return login_get(app, req, str(exc), 401)
    req.session = app.sessions.promote(req.session, stage, user)
    _audit(app, req, action)
    return redirect("/setup" if stage == "setup" else "/")


def setup_get(app, req, error: str = "", status: int = 200) -> Response:
    err = f'<p class="error" id="setup-error">{esc(error)}</p>' if error else ""
    body = (f"<p>Choose the admin password (at least 10 characters). There is no default "
            f"password; the setup code stops working once this is done.</p>{err}"
            f'<form method="post" action="/setup" class="login">{csrf_input(req.session)}'
            + field_row("password", "New password", text_input(
                "password", "", "password", ' autocomplete="new-password" required'))
            + field_row("confirm", "Confirm password", text_input(
                "confirm", "", "password", ' autocomplete="new-password" required'))
            + '<button type="submit">Set password</button></form>')
    return _render(app, req, "Set the admin password", body, status=status)


def setup_post(app, req) -> Response:
    if req.session.stage not in ("setup", "admin"):
        return redirect("/login")
    try:
        app.auth.set_password(req.form.get("password", ""), req.form.get("confirm", ""))
    except AuthError as exc:
        return setup_get(app, req, str(exc), 422)
    req.session = app.sessions.promote(req.session, "admin", ADMIN)
    _audit(app, req, "admin password set")
    req.session.flash.append("Admin password set. Keep it safe: there is no default.")
    return redirect("/")


def logout_post(app, req) -> Response:
    _audit(app, req, "logout")
    app.sessions.end(req.session)
    req.session = app.sessions.new()
    return redirect("/login")


# ---- dashboard ----

def dashboard(app, req) -> Response:
    body = f'<div id="live" data-live="/live">{_live_html(app)}</div>'
    return _render(app, req, "Dashboard", body, "/")


def live(app, req) -> Response:
    if req.session.stage != "admin":
        return Response(401, "log in again", "text/plain; charset=utf-8")
    return Response(200, _live_html(app))


def _live_html(app) -> str:
    try:
        st = app.api.call("GET", "/status", timeout=3.0)
    except ApiError as exc:
        return _core_banner(exc)
    app.note_status(st)
    return (_survivable_banner(st) + _restart_banner(st) + _box_html(st)
            + _ports_html(st.get("ports") or [])
            + _calls_html(st.get("calls") or []) + _sip_html(st))


def _survivable_banner(st: dict) -> str:
    state = (st.get("survivability") or {}).get("state", "unknown")
    if state == "SURVIVABLE":
        return ('<div class="banner survivable" id="survivable">SURVIVABLE: the cloud is '
                'unreachable; the box runs calls locally (extensions, PSTN, emergency)</div>')
    return ""


def _restart_banner(st: dict) -> str:
    pending = (st.get("box") or {}).get("restart_required") or []
    if not pending:
        return ""
    return ('<div class="banner warn" id="restart-needed">Saved settings that take effect '
            f"after a restart: {esc(', '.join(map(str, pending)))}</div>")


def _box_html(st: dict) -> str:
    box, wan = st.get("box") or {}, st.get("wan") or {}
    surv = (st.get("survivability") or {}).get("state", "unknown")
    up = box.get("uptime_s")
    items = [("Box", box.get("name")), ("Version", box.get("version")),
             ("Mode", box.get("mode")), ("Uptime", _duration(up)),
             ("WAN", wan.get("state", "unknown")), ("Survivability", surv)]
    relay = box.get("lifeline")
    if isinstance(relay, dict):  # the power-fail relay: where its phone is now
        items.append(("Lifeline", f"{relay.get('fxs')} on "
                      + ("its SLIC" if relay.get("phone_on") == "slic" else "the PSTN line")))
    cells = "".join(f'<div class="kv"><span>{esc(k)}</span><b data-k="{esc(k.lower())}">'
                    f"{esc(v if v not in (None, '') else '—')}</b></div>" for k, v in items)
    return f'<section class="cards">{cells}</section>'


def _hook(port: dict) -> str:
    hook = port.get("hook")
    if hook in (True, "off", "off_hook", "off-hook", "offhook"):
        return "off-hook"
    if hook in (False, "on", "on_hook", "on-hook", "onhook"):
        return "on-hook"
    return "—" if hook is None else str(hook)


def _ports_html(ports: list) -> str:
    rows, attrs = [], []
    for p in ports:
        hook = _hook(p)
        call = p.get("call") or {}
        ringing = "RINGING" if p.get("ringing") else ""
        state = p.get("state") or ""
        if p.get("failed_reason"):
            state = f"{state}: {p['failed_reason']}"
        rows.append([p.get("name"), p.get("kind"), state, hook, ringing,
                     fmt_num(p.get("loop_current_ma"), 1, "mA"),
                     fmt_num(p.get("line_voltage_v"), 1, "V"),
                     fmt_num(p.get("erle_db"), 1, "dB"),
                     _call_text(call)])
        attrs.append(f'data-port="{esc(p.get("name"))}" data-hook="{esc(hook)}" '
                     f'data-state="{esc(p.get("state"))}"' + (' class="ringing"' if ringing else ""))
    return "<h2>Ports</h2>" + table(("Port", "Kind", "State", "Hook", "Ring", "Loop", "Line",
                                     "ERLE", "Call"), rows, "ports", attrs)


def _call_text(call: dict) -> str:
    if not call:
        return ""
    mos = f" MOS {call['mos']:.2f}" if isinstance(call.get("mos"), int | float) else ""
    return f"{call.get('direction', '')} {call.get('remote', '')} {call.get('state', '')}{mos}"


def _calls_html(calls: list) -> str:
    rows = [[c.get("port"), c.get("direction"), c.get("remote"), c.get("state"),
             _duration(c.get("duration_s")), c.get("codec"), fmt_num(c.get("mos"), 2)]
            for c in calls]
    return "<h2>Active calls</h2>" + table(("Port", "Direction", "Remote", "State",
                                            "Duration", "Codec", "MOS"), rows, "calls")


def _sip_html(st: dict) -> str:
    regs = [[r.get("account"), "registered" if r.get("ok") else "NOT registered",
             r.get("code"), r.get("reason")] for r in st.get("registrations") or []]
    edges = [[e.get("uri"), "up" if e.get("ok") else "DOWN", fmt_num(e.get("rtt_ms"), 0, "ms")]
             for e in (st.get("wan") or {}).get("edges") or []]
    return ("<h2>Registrations</h2>" + table(("Account", "State", "Code", "Reason"), regs)
            + "<h2>Cloud edges</h2>" + table(("Edge", "State", "RTT"), edges))


def _duration(s: Any) -> str:
    if not isinstance(s, int | float) or isinstance(s, bool):
        return "—"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ---- configuration ----

def _sections(doc: dict) -> list[tuple[str, str]]:
    lines = [(f"lines.{n}", f"Line {n}") for n in sorted(doc.get("lines", {}))]
    return lines + [(k, title) for k, (title, _f) in forms.SECTIONS.items()]


def config_get(app, req, section: str | None = None, values=None, errors=None,
               status: int = 200) -> Response:
    try:
        got = app.api.call("GET", "/config")
        versions = app.api.call("GET", "/config/versions")
    except ApiError as exc:
        return _render(app, req, "Configuration", "", "/config", 503, _core_banner(exc))
    doc = got.get("document") or {}
    sections = _sections(doc)
    section = section or req.query.get("section") or sections[0][0]
    if section not in dict(sections):
        raise HttpError(404, f"config section {section!r} does not exist")
    tabs = "".join(f'<a href="/config?section={esc(k)}"{ON if k == section else ""}>'
                   f"{esc(t)}</a>" for k, t in sections)
    body = (f'<nav class="tabs">{tabs}</nav><p class="muted">Live version '
            f'{esc(got.get("version"))}.</p>'
            + forms.render_form(doc, section, req.session.csrf, values, errors)
            + _versions_html(req, versions if isinstance(versions, list) else []))
    return _render(app, req, "Configuration", body, "/config", status)


def _versions_html(req, versions: list) -> str:
    rows = []
    for v in reversed(versions[-10:]):
        n = v.get("version")
        rollback = (f'<form method="post" action="/config-rollback" class="inline">'
                    f'{csrf_input(req.session)}<input type="hidden" name="version" '
                    f'value="{esc(n)}"><button type="submit" class="small">Roll back to '
                    f'this</button></form>')
        diff = f'<a href="/config-diff?against={esc(n)}">diff</a>'
        rows.append([n, fmt_time(v.get("time")), v.get("reason"), Raw(diff + " " + rollback)])
    return "<h2>Versions</h2>" + table(("Version", "Saved", "Reason", ""), rows, "versions")


def config_post(app, req) -> Response:
    section = req.path[len("/config/"):]
    try:
        doc = app.api.call("GET", "/config").get("document") or {}
    except ApiError as exc:
        return _render(app, req, "Configuration", "", "/config", 503, _core_banner(exc))
    if section not in dict(_sections(doc)):
        raise HttpError(404, f"config section {section!r} does not exist")
    changes, errors = forms.parse_form(doc, section, req.form)
    typed = {p: req.form.get(p, "") for p in forms.section_fields(doc, section)}
    if errors:
        return config_get(app, req, section, typed, errors, 422)
    if not changes:
        req.session.flash.append("Nothing changed.")
        return redirect(f"/config?section={section}")
    try:
        got = app.api.call("PATCH", "/config", {"set": changes,
                                                "reason": f"web: {req.who} changed {section}"})
    except ApiError as exc:
        if isinstance(exc, CoreDown):
            raise
        paths = list(forms.section_fields(doc, section))
        problems = exc.problems or [str(exc)]
        return config_get(app, req, section, typed, forms.map_problems(problems, paths), 422)
    _audit(app, req, "config changed", {"section": section, "version": got.get("version"),
                                        "set": _masked(changes, doc)})
    req.session.flash.append(f"Saved as version {got.get('version')}: "
                             + ", ".join(sorted(changes)) + ". " + _applied(got))
    return redirect(f"/config?section={section}")


def _applied(got: dict) -> str:
    """What a save means for the running box (the core's restart_required answer)."""
    pending = got.get("restart_required") or []
    if not pending:
        return "Applied to the running box."
    return f"Takes effect after a restart: {', '.join(pending)}."


def _masked(changes: dict, doc: dict) -> dict:
    out = {}
    for path, new in changes.items():
        if path.rsplit(".", 1)[-1] in forms.SECRET:
            out[path] = "(secret changed)"
        else:
            out[path] = {"old": forms.current(doc, path), "new": new}
    return out


def rollback_post(app, req) -> Response:
    raw = req.form.get("version", "")
    version = int(raw) if raw.isdigit() else None
    got = app.api.call("POST", "/config/rollback", {"version": version})
    _audit(app, req, "config rolled back", {"to": version, "version": got.get("version")})
    req.session.flash.append(f"Rolled back to version {version}; live is now version "
                             f"{got.get('version')}. " + _applied(got))
    return redirect("/config")


def diff_get(app, req) -> Response:
    against = req.query.get("against", "")
    if not against.isdigit():
        raise HttpError(400, "against: give a version number, e.g. ?against=3")
    got = app.api.call("GET", "/config/diff", query={"against": against})
    text = got.get("diff") or "(no difference)"
    body = f'<pre class="diff">{esc(text)}</pre><p><a href="/config">Back</a></p>'
    return _render(app, req, f"Changes since version {against}", body, "/config")


# ---- diagnostics ----

def diag_get(app, req, result: str = "", status: int = 200) -> Response:
    try:
        st = app.api.call("GET", "/status", timeout=3.0)
        ports = [p.get("name") for p in st.get("ports") or [] if p.get("name")]
    except ApiError as exc:
        return _render(app, req, "Diagnostics", "", "/diag", 503, _core_banner(exc))
    body = (f'<div id="diag-result">{result}</div>' + _diag_forms(req, ports)
            + "<h2>Echo and call quality</h2>" + _plots_html(app))
    return _render(app, req, "Diagnostics", body, "/diag", status)


def _diag_forms(req, ports: list[str]) -> str:
    def form(action: str, title: str, inner: str) -> str:
        return (f'<form method="post" action="/diag/{action}" class="diag" id="diag-{action}">'
                f"<h3>{esc(title)}</h3>{csrf_input(req.session)}{inner}"
                f'<button type="submit">{esc(title)}</button></form>')

    port = select("port", "", ports)
    secs = text_input("seconds", "5", extra=' inputmode="decimal" class="short"')
    return ('<div class="grid">'
            + form("ring", "Ring a phone", f"<label>Port {port}</label><label>Seconds {secs}"
                                           "</label>")
            + form("tone", "Play a tone", f"<label>Port {port}</label><label>Tone "
                                          f"{select('tone', 'dial', TONES)}</label>"
                                          f"<label>Seconds {secs}</label>")
            + form("dtmf-echo", "DTMF echo test", f"<label>Port {port}</label>"
                                                  f"<label>Seconds {secs}</label>")
            + form("measure", "Measure line", f"<label>Port {port}</label>")
            + form("line-test", "Line test", f"<label>Port {port}</label>")
            + form("ping", "Ping cloud edges", "")
            + "</div>")


def _plots_html(app) -> str:
    out = []
    for name in app.history.ports():
        pts = [(t, e) for t, e, _m in app.history.series(name) if e is not None]
        if pts:
            t0 = pts[0][0]
            out.append(plots.line_plot([(t - t0, e) for t, e in pts],
                                       f"ERLE on {name} over the last call", "dB",
                                       ident=f"erle-{name}"))
    if not out:
        out.append(plots.line_plot([], "ERLE over the last call (no call seen since the "
                                       "web page started)", "dB", ident="erle"))
    try:
        got = app.api.call("GET", "/cdrs", query={"limit": 20})
        items = [c for c in got.get("items") or [] if isinstance(c.get("mos"), int | float)]
    except ApiError:
        items = []
    bars = [(f"{c.get('port')} {fmt_time(c.get('started'))}", float(c["mos"]))
            for c in reversed(items)]
    out.append(plots.bar_plot(bars, "Call quality (MOS) of the last calls", "MOS",
                              ident="mos"))
    return '<div class="plots">' + "".join(out) + "</div>"


def diag_post(app, req) -> Response:
    action = req.path[len("/diag/"):]
    if action not in ("ring", "tone", "dtmf-echo", "measure", "line-test", "ping"):
        raise HttpError(404, f"no diagnostic {action!r}")
    body = _diag_body(action, req.form)
    try:
        got = app.api.call("POST", f"/diag/{action}", body, timeout=60.0)
    except ApiError as exc:
        if isinstance(exc, CoreDown):
            raise
        _audit(app, req, f"diag {action} refused", {**body, "error": str(exc)})
        return diag_get(app, req, f'<p class="error">{esc(exc)}</p>', 422)
    _audit(app, req, f"diag {action}", body)
    title = f"{action} {body.get('port', '')}".strip()
    return diag_get(app, req, f"<h2>Result: {esc(title)}</h2>" + _result_html(got))


def _diag_body(action: str, form: dict) -> dict:
    body: dict[str, Any] = {}
    if action != "ping":
        body["port"] = form.get("port", "")
    if action in ("ring", "tone", "dtmf-echo"):
        try:
            body["seconds"] = float(form.get("seconds", "5"))
        except ValueError:
            raise HttpError(400, f"seconds: {form.get('seconds')!r} must be a number, "
                                 "e.g. 5") from None
    if action == "tone":
        body["tone"] = form.get("tone", "dial")
    return body


def _result_html(got: Any) -> str:
    if isinstance(got, dict) and isinstance(got.get("items"), list):
        rows = [[i.get("name"), fmt_num(i.get("value"), 2, i.get("unit") or ""),
                 i.get("limit"), Raw('<b class="pass">pass</b>' if i.get("pass")
                                     else '<b class="fail">FAIL</b>')]
                for i in got["items"]]
        rest = {k: v for k, v in got.items() if k != "items"}
        return table(("Test", "Value", "Limit", "Result"), rows, "result") + _kv(rest)
    if isinstance(got, dict) and isinstance(got.get("edges"), list):
        rows = [[e.get("uri"), "up" if e.get("ok") else "DOWN", fmt_num(e.get("rtt_ms"), 0, "ms")]
                for e in got["edges"]]
        return table(("Edge", "State", "RTT"), rows, "result")
    return _kv(got if isinstance(got, dict) else {"result": got})


def _kv(d: dict) -> str:
    rows = []
    for k, v in d.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items())
        elif isinstance(v, list):
            v = "; ".join(str(x) for x in v)
        rows.append([k.replace("_", " "), v if not isinstance(v, float) else f"{v:.3g}"])
    return table(("Item", "Value"), rows, "result") if rows else ""


# ---- CDRs, logs, audit ----

def _page_args(req) -> tuple[int, int]:
    raw = req.query.get("offset", "0")
    return (int(raw) if raw.isdigit() else 0), PAGE_SIZE


def _epoch(day: str, end: bool = False) -> float | None:
    if not day:
        return None
    try:
        t = time.mktime(time.strptime(day, "%Y-%m-%d"))
    except ValueError:
        raise HttpError(400, f"date {day!r}: use YYYY-MM-DD") from None
    return t + 86400 if end else t


def _cdr_query(req) -> dict:
    q = req.query
    return {"q": q.get("q", ""), "port": q.get("port", ""), "direction": q.get("direction", ""),
            "since": _epoch(q.get("since", "")), "until": _epoch(q.get("until", ""), True)}


def cdrs_get(app, req) -> Response:
    offset, limit = _page_args(req)
    filters = _cdr_query(req)
    try:
        got = app.api.call("GET", "/cdrs", query={**filters, "offset": offset, "limit": limit})
    except ApiError as exc:
        return _render(app, req, "Calls", _cdr_filters(req), "/cdrs", 503, _core_banner(exc))
    rows = [[fmt_time(c.get("started")), c.get("direction"), c.get("port"), c.get("ani"),
             c.get("dnis"), c.get("disposition"), _duration(c.get("duration_s")),
             c.get("codec"), fmt_num(c.get("mos"), 2)] for c in got.get("items") or []]
    total = int(got.get("total") or 0)
    body = (_cdr_filters(req) + f'<p class="muted" id="cdr-total">{total} calls</p>'
            + table(("Started", "Direction", "Port", "From", "To", "Result", "Duration",
                     "Codec", "MOS"), rows, "cdrs")
            + _pager(req, "/cdrs", offset, limit, total))
    return _render(app, req, "Calls", body, "/cdrs")


def _cdr_filters(req) -> str:
    q = req.query
    csv_q = "&".join(f"{k}={esc(v)}" for k, v in q.items() if k != "offset" and v)
    return ('<form method="get" action="/cdrs" class="filters">'
            f'<input name="q" placeholder="number or text" value="{esc(q.get("q", ""))}">'
            + select("port", q.get("port", ""), ["", "fxs1", "fxs2", "fxo1", "headset"])
            + select("direction", q.get("direction", ""), ["", "inbound", "outbound", "local",
                                                           "emergency"])
            + f'<input type="date" name="since" value="{esc(q.get("since", ""))}">'
            + f'<input type="date" name="until" value="{esc(q.get("until", ""))}">'
            + '<button type="submit">Search</button>'
            + f'<a class="button" href="/cdrs.csv?{csv_q}" id="csv">Export CSV</a></form>')


def cdrs_csv(app, req) -> Response:
    query = {k: v for k, v in _cdr_query(req).items() if v not in (None, "")}
    text = app.api.call("GET", "/cdrs.csv", query=query, timeout=60.0)
    if not isinstance(text, str):
        text = str(text)
    return Response(200, text, "text/csv; charset=utf-8",
                    [("Content-Disposition", 'attachment; filename="cdrs.csv"')])


def _pager(req, base: str, offset: int, limit: int, total: int) -> str:
    keep = "&".join(f"{k}={esc(v)}" for k, v in req.query.items() if k != "offset" and v)
    links = []
    if offset > 0:
        links.append(f'<a href="{base}?{keep}&offset={max(0, offset - limit)}">« newer</a>')
    if offset + limit < total:
        links.append(f'<a href="{base}?{keep}&offset={offset + limit}">older »</a>')
    return f'<p class="pager">{" ".join(links)}</p>'


def logs_get(app, req) -> Response:
    offset, limit = _page_args(req)
    level = req.query.get("level", "")
    try:
        got = app.api.call("GET", "/logs", query={"offset": offset, "limit": limit,
                                                  "level": level})
    except ApiError as exc:
        return _render(app, req, "Logs", "", "/logs", 503, _core_banner(exc))
    rows = [[fmt_time(i.get("time")), i.get("level"), i.get("source"), i.get("message")]
            for i in got.get("items") or []]
    total = int(got.get("total") or 0)
    filt = ('<form method="get" action="/logs" class="filters">'
            + select("level", level, ["", "debug", "info", "warning", "error"])
            + '<button type="submit">Filter</button></form>')
    body = (filt + f'<p class="muted">{total} lines</p>'
            + table(("Time", "Level", "Source", "Message"), rows, "logs")
            + _pager(req, "/logs", offset, limit, total))
    return _render(app, req, "Logs", body, "/logs")


def audit_get(app, req) -> Response:
    offset, limit = _page_args(req)
    total, entries = app.auth.audit_entries(offset, limit)
    rows = [[fmt_time(e.get("time")), e.get("who"), e.get("where"), e.get("action"),
             _detail(e.get("detail"))] for e in entries]
    body = (f'<p class="muted">{total} entries, newest first.</p>'
            + table(("Time", "Who", "From", "Action", "What changed"), rows, "audit")
            + _pager(req, "/audit", offset, limit, total))
    return _render(app, req, "Audit log", body, "/audit")


def _detail(d: Any) -> str:
    if isinstance(d, dict):
        return "; ".join(f"{k}: {_detail(v)}" for k, v in d.items())
    return "" if d is None else str(d)


# ---- backup / restore, reboot ----

def backup_get(app, req, error: str = "", status: int = 200) -> Response:
    err = f'<p class="error" id="restore-error">{esc(error)}</p>' if error else ""
    body = ('<p><a class="button" href="/backup.toml" id="download">Download the config '
            "(TOML)</a></p><h2>Restore</h2><p>Upload a saved config: it is validated first; "
            f"nothing changes if it is refused.</p>{err}"
            '<form method="post" action="/backup/restore" enctype="multipart/form-data">'
            f'{csrf_input(req.session)}<input type="file" name="file" accept=".toml" required>'
            '<button type="submit">Restore</button></form>'
            '<h2>Reboot</h2><form method="post" action="/reboot" data-confirm="Reboot the box? '
            f'Calls in progress will drop.">{csrf_input(req.session)}'
            '<button type="submit" class="danger">Reboot</button></form>')
    return _render(app, req, "Backup and restore", body, "/backup", status)


def backup_toml(app, req) -> Response:
    got = app.api.call("GET", "/config")
    text = tomli_w.dumps(got.get("document") or {})
    name = f"{app.box}-config-v{got.get('version')}.toml"
    _audit(app, req, "config downloaded", {"version": got.get("version")})
    return Response(200, text, "application/toml; charset=utf-8",
                    [("Content-Disposition", f'attachment; filename="{name}"')])


def restore_post(app, req) -> Response:
    from firmware.web.upload import multipart_file

    data = multipart_file(req, "file")
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return backup_get(app, req, f"the file is not a TOML config: {exc}", 422)
    try:
        app.api.call("POST", "/config/validate", {"document": doc})
        got = app.api.call("PUT", "/config", {"document": doc,
                                              "reason": f"web: {req.who} restored a backup"})
    except ApiError as exc:
        if isinstance(exc, CoreDown):
            raise
        return backup_get(app, req, "; ".join(exc.problems) or str(exc), 422)
    _audit(app, req, "config restored", {"version": got.get("version")})
    req.session.flash.append(f"Restored: live config is version {got.get('version')}. "
                             + _applied(got))
    return redirect("/backup")


def reboot_post(app, req) -> Response:
    app.api.call("POST", "/reboot", {})
    _audit(app, req, "reboot")
    req.session.flash.append("Reboot requested.")
    return redirect("/")


def firmware_get(app, req) -> Response:
    from firmware.web.upload import firmware_page

    return _render(app, req, "Firmware", firmware_page(app, req), "/firmware")


def firmware_post(app, req) -> Response:
    from firmware.web.upload import receive_firmware

    try:
        got = receive_firmware(app, req)
    except HttpError as exc:
        _audit(app, req, "firmware upload refused", str(exc))
        return Response(exc.status, _json({"ok": False, "error": str(exc)}), "application/json")
    _audit(app, req, "firmware uploaded", got)
    return Response(200, _json(got), "application/json")


def _json(d: Any) -> str:
    import json

    return json.dumps(d)


ROUTES = {
    ("GET", "/login"): login_get, ("POST", "/login"): login_post,
    ("GET", "/setup"): setup_get, ("POST", "/setup"): setup_post,
    ("POST", "/logout"): logout_post,
    ("GET", "/"): dashboard, ("GET", "/live"): live,
    ("GET", "/config"): config_get, ("POST", "/config-rollback"): rollback_post,
    ("GET", "/config-diff"): diff_get,
    ("GET", "/diag"): diag_get,
    ("GET", "/cdrs"): cdrs_get, ("GET", "/cdrs.csv"): cdrs_csv,
    ("GET", "/logs"): logs_get, ("GET", "/audit"): audit_get,
    ("GET", "/backup"): backup_get, ("GET", "/backup.toml"): backup_toml,
    ("POST", "/backup/restore"): restore_post, ("POST", "/reboot"): reboot_post,
    ("GET", "/firmware"): firmware_get, ("POST", "/firmware/upload"): firmware_post,
}
PREFIX_ROUTES = {("POST", "/config/"): config_post, ("POST", "/diag/"): diag_post}
