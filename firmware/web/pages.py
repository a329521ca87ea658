"""The technician's pages (a Flask blueprint; their templates are in templates/). Data
come only from the core's control API; when the core does not answer, a page still renders
with a banner saying so. Every state change goes to the audit log (who, from where, what;
secrets masked). The login gate, CSRF and headers are in server.py."""

from __future__ import annotations

import datetime
import logging
import time
import tomllib
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

import tomli_w
from flask import Blueprint, Response, abort, current_app, g, jsonify, redirect, render_template
from flask import request as rq
from flask.typing import ResponseReturnValue
from jinja2 import Undefined
from werkzeug.exceptions import HTTPException

from firmware.api.client import ApiError, CoreDown
from firmware.auth import ADMIN, AuthError, LockedOut
from firmware.events import EventKind
from firmware.update.client import Reason, UpdateClient, UpdateError
from firmware.web import forms, plots, upload
from firmware.web.sessions import Session, Stage

if TYPE_CHECKING:
    from firmware.web.server import Web

log = logging.getLogger(__name__)
bp = Blueprint("pages", __name__)

PAGE_SIZE = 50
STATUS_TIMEOUT_S = 3.0
SLOW_TIMEOUT_S = 60.0
TONES = ("dial", "busy", "ringback", "congestion", "howler")


class Diag(StrEnum):
    RING = "ring"
    TONE = "tone"
    DTMF_ECHO = "dtmf-echo"
    MEASURE = "measure"
    LINE_TEST = "line-test"
    PING = "ping"


DIAG_FORMS = {  # the inputs of each diagnostic's form, in order
    Diag.RING: ("Ring a phone", ("port", "seconds")),
    Diag.TONE: ("Play a tone", ("port", "tone", "seconds")),
    Diag.DTMF_ECHO: ("DTMF echo test", ("port", "seconds")),
    Diag.MEASURE: ("Measure line", ("port",)),
    Diag.LINE_TEST: ("Line test", ("port",)),
    Diag.PING: ("Ping cloud edges", ()),
}


def web() -> Web:
    return cast("Web", current_app.extensions["web"])


def me() -> Session:
    return cast(Session, g.session)


def see(location: str) -> ResponseReturnValue:
    return redirect(location, 303)


def show(template: str, status: int = 200, **context: Any) -> ResponseReturnValue:
    return render_template(template, **context), status


def flash(message: str) -> None:
    me().flash.append(message)


def audit(action: str, detail: Any = "") -> None:
    try:
        web().auth.audit(me().user or "anonymous", rq.remote_addr or "", action, detail)
    except OSError:
        log.exception("audit log write failed")


@bp.app_context_processor
def _frame() -> dict[str, Any]:
    return {"me": g.get("session"), "box": web().box}


# ---- login and first setup ----

@bp.get("/login")
def login(error: str = "", status: int = 200) -> ResponseReturnValue:
    if me().stage is Stage.ADMIN:
        return see("/")
    setup = web().auth.needs_setup()
    if setup:
        web().auth.ensure_setup_code()
    return show("login.html", status, setup=setup, error=error, admin=ADMIN)


@bp.post("/login")
def login_post() -> ResponseReturnValue:
    client = rq.remote_addr or ""
    wait = web().limiter.allow(client)
    if wait:
        return login(f"too many login attempts from {client}; wait {int(wait) + 1} s", 429)
    try:
        stage, user, action = _log_in()
    except LockedOut as exc:
        audit("login refused (locked)", str(exc))
        return login(str(exc), 403)
    except AuthError as exc:
        audit("login failed", str(exc))
        return login(str(exc), 401)
    g.session = web().sessions.promote(me(), stage, user)
    audit(action)
    return see("/setup" if stage is Stage.SETUP else "/")


def _log_in() -> tuple[Stage, str, str]:
    auth = web().auth
    if auth.needs_setup():
        auth.check_setup_code(rq.form.get("code", ""))
        return Stage.SETUP, ADMIN, "login with setup code"
    user = rq.form.get("user", "")
    auth.login(user, rq.form.get("password", ""))
    return Stage.ADMIN, user, "login"


@bp.get("/setup")
def setup(error: str = "", status: int = 200) -> ResponseReturnValue:
    return show("setup.html", status, error=error)


@bp.post("/setup")
def setup_post() -> ResponseReturnValue:
    if me().stage is Stage.ANON:
        return see("/login")
    try:
        web().auth.set_password(rq.form.get("password", ""), rq.form.get("confirm", ""))
    except AuthError as exc:
        return setup(str(exc), 422)
    g.session = web().sessions.promote(me(), Stage.ADMIN, ADMIN)
    audit("admin password set")
    flash("Admin password set. Keep it safe: there is no default.")
    return see("/")


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    audit("logout")
    web().sessions.end(me())
    g.session = web().sessions.new()
    return see("/login")


# ---- dashboard ----

@bp.get("/")
def dashboard() -> ResponseReturnValue:
    return show("dashboard.html", kinds=[*EventKind, "ready", "dropped"], **_live())


@bp.get("/live")
def live() -> ResponseReturnValue:
    return show("live.html", **_live())


@bp.get("/events")
def events() -> ResponseReturnValue:
    """The core's events relayed to this browser (the dashboard refreshes on each)."""
    relay = web().relay
    feed = relay.open()
    if feed is None:
        abort(503, "too many live pages are open; this one refreshes by polling")
    response = Response(relay.frames(feed), mimetype="text/event-stream")
    response.call_on_close(lambda: relay.drop(feed))  # also when the browser goes
    return response


def _live() -> dict[str, Any]:
    try:
        st = web().api.request("GET", "/status", timeout=STATUS_TIMEOUT_S)
    except ApiError as exc:
        return {"live_error": exc}
    web().note_status(st)
    return {"st": st, "cards": _cards(st)}


def _cards(st: dict[str, Any]) -> list[tuple[str, Any]]:
    box, wan = st.get("box") or {}, st.get("wan") or {}
    items = [("Box", box.get("name")), ("Version", box.get("version")),
             ("Mode", box.get("mode")), ("Uptime", duration(box.get("uptime_s"))),
             ("WAN", wan.get("state", "unknown")),
             ("Survivability", (st.get("survivability") or {}).get("state", "unknown"))]
    relay = box.get("lifeline")
    if isinstance(relay, dict):  # the power-fail relay: where its phone is now
        items.append(("Lifeline", f"{relay.get('fxs')} on "
                      + ("its SLIC" if relay.get("phone_on") == "slic" else "the PSTN line")))
    return [(k, "—" if _absent(v) else v) for k, v in items]


# ---- configuration ----

def _sections(doc: Mapping[str, Any]) -> dict[str, str]:
    lines = {f"lines.{n}": f"Line {n}" for n in sorted(doc.get("lines", {}))}
    return lines | forms.SECTIONS


@bp.get("/config")
def config(section: str = "", typed: dict[str, str] | None = None,
           errors: dict[str, str] | None = None, status: int = 200) -> ResponseReturnValue:
    try:
        got, versions = web().api.config(), web().api.config_versions()
    except ApiError as exc:
        return show("config.html", 503, core_error=exc)
    doc = got.get("document") or {}
    sections = _sections(doc)
    section = section or rq.args.get("section") or next(iter(sections))
    if section not in sections:
        abort(404, f"config section {section!r} does not exist")
    return show("config.html", status, sections=sections, section=section,
                version=got.get("version"), rows=forms.rows(doc, section, typed, errors),
                general=(errors or {}).get(""), versions=list(reversed(versions[-10:])))


@bp.post("/config/<path:section>")
def config_post(section: str) -> ResponseReturnValue:
    try:
        doc = web().api.config().get("document") or {}
    except ApiError as exc:
        return show("config.html", 503, core_error=exc)
    if section not in _sections(doc):
        abort(404, f"config section {section!r} does not exist")
    fields = forms.section_fields(doc, section)
    changes, errors = forms.parse_form(doc, section, rq.form)
    typed = {p: rq.form.get(p, "") for p in fields}
    if errors:
        return config(section, typed, errors, 422)
    if not changes:
        flash("Nothing changed.")
        return see(f"/config?section={section}")
    try:
        got = web().api.patch_config(changes, f"web: {me().user} changed {section}")
    except CoreDown:
        raise
    except ApiError as exc:
        problems = forms.map_problems(exc.problems or [str(exc)], list(fields))
        return config(section, typed, problems, 422)
    audit("config changed", {"section": section, "version": got.get("version"),
                             "set": _masked(changes, doc)})
    flash(f"Saved as version {got.get('version')}: {', '.join(sorted(changes))}. "
          + _applied(got))
    return see(f"/config?section={section}")


def _applied(got: dict[str, Any]) -> str:
    """What a save means for the running box (the core's restart_required answer)."""
    pending = got.get("restart_required") or []
    if not pending:
        return "Applied to the running box."
    return f"Takes effect after a restart: {', '.join(pending)}."


def _masked(changes: dict[str, Any], doc: Mapping[str, Any]) -> dict[str, Any]:
    return {path: "(secret changed)" if forms.is_secret(path)
            else {"old": forms.current(doc, path), "new": new} for path, new in changes.items()}


@bp.post("/config-rollback")
def config_rollback() -> ResponseReturnValue:
    raw = rq.form.get("version", "")
    version = int(raw) if raw.isdigit() else None
    got = web().api.rollback(version)
    audit("config rolled back", {"to": version, "version": got.get("version")})
    flash(f"Rolled back to version {version}; live is now version {got.get('version')}. "
          + _applied(got))
    return see("/config")


@bp.get("/config-diff")
def config_diff() -> ResponseReturnValue:
    against = rq.args.get("against", "")
    if not against.isdigit():
        abort(400, "against: give a version number, e.g. ?against=3")
    text = web().api.config_diff(int(against))
    return show("diff.html", against=against, diff=text or "(no difference)")


# ---- diagnostics ----

@bp.get("/diag")
def diag(result: dict[str, Any] | None = None, status: int = 200) -> ResponseReturnValue:
    try:
        st = web().api.request("GET", "/status", timeout=STATUS_TIMEOUT_S)
    except ApiError as exc:
        return show("diag.html", 503, core_error=exc)
    ports = [p.get("name") for p in st.get("ports") or [] if p.get("name")]
    return show("diag.html", status, ports=ports, diags=DIAG_FORMS, tones=TONES,
                result=result, plots=_plots())


@bp.post("/diag/<action>")
def diag_post(action: str) -> ResponseReturnValue:
    if action not in DIAG_FORMS:
        abort(404, f"no diagnostic {action!r}")
    body = _diag_body(Diag(action))
    try:
        got = web().api.request("POST", f"/diag/{action}", body, timeout=SLOW_TIMEOUT_S)
    except CoreDown:
        raise
    except ApiError as exc:
        audit(f"diag {action} refused", {**body, "error": str(exc)})
        return diag({"error": str(exc)}, 422)
    audit(f"diag {action}", body)
    return diag({"title": f"{action} {body.get('port', '')}".strip(), **_result(got)})


def _diag_body(action: Diag) -> dict[str, Any]:
    inputs = DIAG_FORMS[action][1]
    body: dict[str, Any] = {k: rq.form.get(k, "") for k in inputs if k != "seconds"}
    if "tone" in inputs:
        body["tone"] = body["tone"] or "dial"
    if "seconds" in inputs:
        try:
            body["seconds"] = float(rq.form.get("seconds", "5"))
        except ValueError:
            abort(400, f"seconds: {rq.form.get('seconds')!r} must be a number, e.g. 5")
    return body


def _result(got: Any) -> dict[str, Any]:
    """A diagnostic's answer: test items, cloud edges, or plain items."""
    if isinstance(got, dict) and isinstance(got.get("items"), list):
        return {"tests": got["items"], "kv": _kv({k: v for k, v in got.items() if k != "items"})}
    if isinstance(got, dict) and isinstance(got.get("edges"), list):
        return {"edges": got["edges"]}
    return {"kv": _kv(got if isinstance(got, dict) else {"result": got})}


def _kv(d: dict[str, Any]) -> list[tuple[str, Any]]:
    rows = []
    for k, v in d.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items())
        elif isinstance(v, list):
            v = "; ".join(str(x) for x in v)
        rows.append((k.replace("_", " "), f"{v:.3g}" if isinstance(v, float) else v))
    return rows


def _plots() -> list[plots.Plot]:
    history, out = web().history, []
    for name in history.ports():
        pts = [(t, e) for t, e, _m in history.series(name) if e is not None]
        if pts:
            out.append(plots.line_plot([(t - pts[0][0], e) for t, e in pts],
                                       f"ERLE on {name} over the last call", "dB",
                                       ident=f"erle-{name}"))
    if not out:
        out.append(plots.line_plot([], "ERLE over the last call (no call seen since the web "
                                       "page started)", "dB", ident="erle"))
    try:
        got = web().api.cdrs(0, 20)
        items = [c for c in got.get("items") or [] if isinstance(c.get("mos"), int | float)]
    except ApiError:
        items = []
    bars = [(f"{c.get('port')} {when(c.get('started'))}", float(c["mos"]))
            for c in reversed(items)]
    out.append(plots.bar_plot(bars, "Call quality (MOS) of the last calls", "MOS", ident="mos"))
    return out


# ---- CDRs, logs, audit ----

def _paged(template: str, fetch: Callable[[int], dict[str, Any]],
           **context: Any) -> ResponseReturnValue:
    """The page of a listing at the query's offset (a banner when the core does not
    answer); `search`, the query but for the offset, is what the page links keep."""
    raw = rq.args.get("offset", "0")
    offset = int(raw) if raw.isdigit() else 0
    search = {k: v for k, v in rq.args.items() if k != "offset" and v}
    try:
        got = fetch(offset)
    except ApiError as exc:
        return show(template, 503, core_error=exc, search=search, **context)
    total = int(got.get("total") or 0)
    pager = {"keep": search, "newer": max(0, offset - PAGE_SIZE) if offset > 0 else None,
             "older": offset + PAGE_SIZE if offset + PAGE_SIZE < total else None}
    return show(template, items=got.get("items") or [], total=total, search=search,
                pager=pager, **context)


def _epoch(day: str, end: bool = False) -> float | None:
    if not day:
        return None
    try:
        t = time.mktime(time.strptime(day, "%Y-%m-%d"))
    except ValueError:
        abort(400, f"date {day!r}: use YYYY-MM-DD")
    return t + 86400 if end else t


def _cdr_filters() -> dict[str, Any]:
    """The search form's filters that were given."""
    a = rq.args
    given = {"q": a.get("q", ""), "port": a.get("port", ""), "direction": a.get("direction", ""),
             "since": _epoch(a.get("since", "")), "until": _epoch(a.get("until", ""), True)}
    return {k: v for k, v in given.items() if v not in (None, "")}


@bp.get("/cdrs")
def cdrs() -> ResponseReturnValue:
    filters = _cdr_filters()
    return _paged("cdrs.html", lambda offset: web().api.cdrs(offset, PAGE_SIZE, **filters))


@bp.get("/cdrs.csv")
def cdrs_csv() -> ResponseReturnValue:
    text = web().api.request("GET", "/cdrs.csv", query=_cdr_filters(), timeout=SLOW_TIMEOUT_S,
                             raw=True)
    return Response(text, mimetype="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="cdrs.csv"'})


@bp.get("/logs")
def logs() -> ResponseReturnValue:
    level = rq.args.get("level", "")
    return _paged("logs.html", lambda offset: web().api.logs(offset, PAGE_SIZE, level or None),
                  level=level)


@bp.get("/audit")
def audit_log() -> ResponseReturnValue:
    def entries(offset: int) -> dict[str, Any]:
        total, items = web().auth.audit_entries(offset, PAGE_SIZE)
        return {"total": total, "items": items}

    return _paged("audit.html", entries)


# ---- backup / restore, reboot, firmware ----

@bp.get("/backup")
def backup(error: str = "", status: int = 200) -> ResponseReturnValue:
    return show("backup.html", status, error=error)


@bp.get("/backup.toml")
def backup_toml() -> ResponseReturnValue:
    got = web().api.config()
    name = f"{web().box}-config-v{got.get('version')}.toml"
    audit("config downloaded", {"version": got.get("version")})
    return Response(tomli_w.dumps(got.get("document") or {}), mimetype="application/toml",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.post("/backup/restore")
def restore() -> ResponseReturnValue:
    file = rq.files.get("file")
    if file is None:
        abort(400, "file: no file in the form; choose a file and try again")
    try:
        doc = tomllib.loads(file.read().decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return backup(f"the file is not a TOML config: {exc}", 422)
    try:
        web().api.validate_config(doc)
        got = web().api.put_config(doc, f"web: {me().user} restored a backup")
    except CoreDown:
        raise
    except ApiError as exc:
        return backup("; ".join(exc.problems) or str(exc), 422)
    audit("config restored", {"version": got.get("version")})
    flash(f"Restored: live config is version {got.get('version')}. " + _applied(got))
    return see("/backup")


@bp.post("/reboot")
def reboot() -> ResponseReturnValue:
    web().api.reboot()
    audit("reboot")
    flash("Reboot requested.")
    return see("/")


# ---- firmware: upload a bundle, hand it to the update service, follow it ----

class Finished(StrEnum):
    """The update service's phases that end an update (its outcome, audited once)."""

    GOOD = "GOOD"
    ROLLED_BACK = "ROLLED_BACK"
    FAILED = "FAILED"


IN_USE = ("CHECKING", "WAITING", "INSTALLING")  # phases holding the bundle file
STATUS_POLL_TIMEOUT_S = 5.0  # the page's poll
SLOW_UPDATE_S = 150.0  # an install request waits for the signature check of the bundle


def updater(timeout: float = STATUS_POLL_TIMEOUT_S) -> UpdateClient:
    """A client of the update service (cli/web.py puts --update-socket in the app)."""
    return UpdateClient(current_app.config.get("UPDATE_SOCKET"), timeout=timeout)


def _ask(call: Callable[[UpdateClient], dict[str, Any]], timeout: float = STATUS_POLL_TIMEOUT_S
         ) -> tuple[dict[str, Any] | None, str, str]:
    """(the update service's answer, "", "") or (None, its reason, one line): a refusal
    names its reason; a service that does not answer says so (never a traceback)."""
    try:
        return call(updater(timeout)), "", ""
    except UpdateError as exc:
        if exc.reason is Reason.UNAVAILABLE:
            return None, str(exc.reason), _down(str(exc))
        return None, str(exc.reason), f"{exc.reason}: {exc}"


def _down(why: str) -> str:
    return f"{why}. Nothing can be installed until it is back"


def _note_outcome(st: dict[str, Any] | None) -> None:
    """Audit an update's end once (the web page may be the first to see it)."""
    if not st or st.get("phase") not in set(Finished) or not st.get("started"):
        return
    mark = web().data_dir / "firmware" / ".audited"
    key = f"{st.get('started')} {st.get('phase')}"
    try:
        if mark.exists() and mark.read_text() == key:
            return
        mark.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        mark.write_text(key)
    except OSError:
        log.exception("firmware: cannot note the audited outcome")
        return
    audit(f"firmware update {str(st['phase']).lower().replace('_', ' ')}",
          {k: st.get(k) for k in ("source", "bundle", "version_from", "version_to", "reason",
                                  "message", "job") if st.get(k)})


@bp.get("/firmware")
def firmware(error: str = "", status: int = 200) -> ResponseReturnValue:
    st, _reason, down = _ask(lambda u: u.status())
    _note_outcome(st)
    return show("firmware.html", status, images=upload.stored(web().data_dir), st=st,
                update_down=down, install_error=error, keep=upload.KEEP)


@bp.get("/firmware/status.json")
def firmware_status() -> ResponseReturnValue:
    """What the page's script polls: the update service's state, or why there is none."""
    st, _reason, down = _ask(lambda u: u.status())
    if st is None:
        return jsonify(ok=False, error=down), 503
    _note_outcome(st)
    return jsonify(ok=True, **st)


@bp.post("/firmware/upload")
def firmware_upload() -> ResponseReturnValue:
    try:
        got = upload.receive(web().data_dir, rq)
    except HTTPException as exc:
        audit("firmware upload refused", exc.description)
        return jsonify(ok=False, error=exc.description), exc.code or 400
    st, _reason, _why = _ask(lambda u: u.status())
    busy = (st or {}).get("bundle") if (st or {}).get("phase") in IN_USE else None
    gone = upload.prune(web().data_dir, busy)
    audit("firmware uploaded", {**got, "deleted": gone} if gone else got)
    return jsonify(got)


@bp.post("/firmware/install")
def firmware_install() -> ResponseReturnValue:
    name, force = rq.form.get("file", ""), rq.form.get("force") in ("1", "on", "yes")
    try:
        path = upload.bundle_path(web().data_dir, name)
    except HTTPException as exc:
        audit("firmware install refused", {"file": name, "error": exc.description})
        return firmware(exc.description or "no such bundle", exc.code or 400)
    detail = {"file": name, "force": force}
    got, reason, why = _ask(lambda u: u.install(str(path), "web", force=force), SLOW_UPDATE_S)
    if got is None:
        audit("firmware install refused", {**detail, "reason": reason, "error": why})
        return firmware(f"not installed: {why}", 503 if reason == "unavailable" else 422)
    audit("firmware install started", {**detail, "phase": got.get("phase")})
    flash(f"{name} handed to the update service: it checks the signature, then installs "
          "and reboots into it; follow the progress below.")
    return see("/firmware")


@bp.post("/firmware/cancel")
def firmware_cancel() -> ResponseReturnValue:
    got, reason, why = _ask(lambda u: u.cancel())
    if got is None:
        audit("firmware cancel refused", {"reason": reason, "error": why})
        return firmware(f"not cancelled: {why}", 503 if reason == "unavailable" else 422)
    audit("firmware update cancelled", {"phase": got.get("phase")})
    flash("Update cancelled.")
    return see("/firmware")


# ---- how values look on a page ----

def _absent(v: Any) -> bool:
    return v is None or v == "" or isinstance(v, Undefined)


@bp.app_template_filter("num")
def num(v: Any, digits: int = 1, unit: str = "") -> str:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return "—" if _absent(v) else str(v)
    return f"{v:.{digits}f}{(' ' + unit) if unit else ''}"


@bp.app_template_filter("when")
def when(t: Any) -> str:
    """Epoch seconds as local ISO time (or the text as given)."""
    if isinstance(t, int | float):
        return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")
    return "" if t is None else str(t)


@bp.app_template_filter("duration")
def duration(s: Any) -> str:
    if not isinstance(s, int | float) or isinstance(s, bool):
        return "—"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@bp.app_template_filter("hook")
def hook(port: Mapping[str, Any]) -> str:
    h = port.get("hook")
    if h in (True, "off", "off_hook", "off-hook", "offhook"):
        return "off-hook"
    if h in (False, "on", "on_hook", "on-hook", "onhook"):
        return "on-hook"
    return "—" if h is None else str(h)


@bp.app_template_filter("call_text")
def call_text(call: Any) -> str:
    if not isinstance(call, Mapping) or not call:
        return ""
    mos = f" MOS {call['mos']:.2f}" if isinstance(call.get("mos"), int | float) else ""
    return f"{call.get('direction', '')} {call.get('remote', '')} {call.get('state', '')}{mos}"


@bp.app_template_filter("detail")
def detail(d: Any) -> str:
    if isinstance(d, dict):
        return "; ".join(f"{k}: {detail(v)}" for k, v in d.items())
    return "" if d is None else str(d)


@bp.app_template_test("core_down")
def core_down(exc: Any) -> bool:
    return isinstance(exc, CoreDown)
