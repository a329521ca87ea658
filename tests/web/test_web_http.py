"""The web process over raw HTTPS (requests): redirect, security headers and cookie
flags, CSRF refusal, lockout after bad passwords, backup/restore, CSV export, a dead
core, bad input that never gets a 500, the relayed event stream and the bounded pool."""

from __future__ import annotations

import re
import socket
import time

import pytest
import requests
import tomli_w

from firmware.web.server import MAX_FEEDS, WORKERS
from tests.web.peers import PASSWORD, Web, _stop, csrf, free_port

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


def test_http_redirects_to_https(web):
    r = requests.get(f"http://127.0.0.1:{web.redirect_port}/cdrs?port=fxs1",
                     allow_redirects=False, timeout=5)
    assert r.status_code == 301
    assert r.headers["Location"] == f"{web.url}/cdrs?port=fxs1"


def test_security_headers_and_cookie_flags(web):
    r = web.session().get(web.url + "/login")
    h = r.headers
    assert "default-src 'self'" in h["Content-Security-Policy"]
    assert h["X-Frame-Options"] == "DENY"
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Referrer-Policy"] == "no-referrer"
    assert "max-age=" in h["Strict-Transport-Security"]
    cookie = h["Set-Cookie"]
    for flag in ("HttpOnly", "Secure", "SameSite=Strict"):
        assert flag in cookie
    sid = re.search(r"branchline_session=([^;]+)", cookie).group(1)
    assert len(sid) >= 43  # 256 bits, base64url
    assert "<script>" not in r.text  # no inline script (CSP)


def test_csrf_less_post_is_refused(web, core):
    s = web.admin()
    before = core.api.config()
    form = {"lines.fxs1.flash_max_ms": "640"}
    r = s.post(web.url + "/config/lines.fxs1", data=form)
    assert r.status_code == 403 and "CSRF" in r.text
    r = s.post(web.url + "/config/lines.fxs1", data={**form, "csrf": "forged"})
    assert r.status_code == 403
    r = s.post(web.url + "/reboot", json={})
    assert r.status_code == 403
    assert core.api.config() == before
    token = csrf(s, web.url + "/config")
    r = s.post(web.url + "/config/lines.fxs1", data={**form, "csrf": token},
               headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "another site" in r.text
    assert core.api.config() == before


def test_pages_need_login(web):
    s = web.session()
    for path in ("/", "/config", "/diag", "/cdrs", "/logs", "/audit", "/backup.toml"):
        r = s.get(web.url + path, allow_redirects=False)
        assert r.status_code == 303 and r.headers["Location"] == "/login", path
    assert s.get(web.url + "/live").status_code == 401


def test_lockout_after_five_bad_passwords(core, tmp_path):
    w = Web(tmp_path, core.addr)
    try:
        w.admin()  # first setup
        s = w.session()
        for _ in range(5):
            r = s.post(w.url + "/login", data={"user": "admin", "password": "wrong password",
                                               "csrf": csrf(s, w.url + "/login")})
            assert r.status_code == 401 and "wrong user name or password" in r.text
        r = s.post(w.url + "/login", data={"user": "admin", "password": PASSWORD,
                                           "csrf": csrf(s, w.url + "/login")})
        assert r.status_code == 403 and "locked" in r.text and "15 min" in r.text
        audit = (w.data_dir / "audit.log").read_text()
        assert audit.count('"login failed"') == 5 and "login refused (locked)" in audit
    finally:
        _stop(w.proc)


def test_login_rate_limit_per_address(core, tmp_path):
    w = Web(tmp_path, core.addr, "--login-rate", "3")
    try:
        s = w.session()
        codes = []
        for _ in range(4):
            r = s.post(w.url + "/login", data={"code": "NOPE", "csrf": csrf(s, w.url + "/login")})
            codes.append(r.status_code)
        assert codes == [401, 401, 401, 429]
    finally:
        _stop(w.proc)


def test_backup_download_and_restore(web, core):
    s = web.admin()
    r = s.get(web.url + "/backup.toml")
    assert r.status_code == 200 and "[lines.fxs1]" in r.text
    import tomllib

    doc = tomllib.loads(r.text)
    doc["calls"]["interdigit_s"] = 5.5 if doc["calls"]["interdigit_s"] != 5.5 else 6.0
    token = csrf(s, web.url + "/backup")
    r = s.post(web.url + "/backup/restore", data={"csrf": token},
               files={"file": ("b.toml", tomli_w.dumps(doc).encode())})
    assert r.status_code == 200 and "Restored" in r.text
    assert core.api.config()["document"]["calls"]["interdigit_s"] == doc["calls"]["interdigit_s"]
    before = core.api.config()
    doc["lines"]["fxs1"]["flash_max_ms"] = 99999
    r = s.post(web.url + "/backup/restore", data={"csrf": token},
               files={"file": ("b.toml", tomli_w.dumps(doc).encode())})
    assert r.status_code == 422 and "flash_max_ms" in r.text
    r = s.post(web.url + "/backup/restore", data={"csrf": token},
               files={"file": ("b.toml", b"\xff\xfe not toml [[[")})
    assert r.status_code == 422 and "not a TOML config" in r.text
    assert core.api.config() == before


def test_cdr_csv_export_and_search(web):
    s = web.admin()
    r = s.get(web.url + "/cdrs.csv?direction=inbound")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    r = s.get(web.url + "/cdrs?q=555&port=fxs1&since=2020-01-01")
    assert r.status_code == 200 and 'id="cdr-total"' in r.text
    assert s.get(web.url + "/cdrs?since=yesterday").status_code == 400


def test_rollback_and_diff(web, core):
    s = web.admin()
    versions = core.api.config_versions()
    if len(versions) < 2:  # make two versions
        for v in (610, 620):
            core.api.patch_config({"lines.fxs2.flash_max_ms": v}, "test")
        versions = core.api.config_versions()
    target = versions[-2]["version"]
    r = s.get(web.url + f"/config-diff?against={target}")
    assert r.status_code == 200 and "Changes since version" in r.text
    r = s.post(web.url + "/config-rollback", data={"version": str(target),
                                                   "csrf": csrf(s, web.url + "/config")})
    assert r.status_code == 200 and "Rolled back" in r.text
    assert core.api.config()["version"] == versions[-1]["version"] + 1


def test_bad_input_never_500(web):
    s = web.admin()
    token = csrf(s, web.url + "/config")
    cases = [("POST", "/config/nosuch", {"csrf": token}),
             ("POST", "/config/lines.fxs1", {"csrf": token, "lines.fxs1.name": "\x00\x01"}),
             ("POST", "/diag/ring", {"csrf": token, "port": "fxs9", "seconds": "x"}),
             ("POST", "/diag/ring", {"csrf": token, "port": "nosuch", "seconds": "1"}),
             ("POST", "/diag/explode", {"csrf": token}),
             ("POST", "/config-rollback", {"csrf": token, "version": "999999"}),
             ("GET", "/config-diff?against=abc", None), ("GET", "/config?section=../etc", None),
             ("GET", "/static/../server.py", None), ("DELETE", "/", {"csrf": token}),
             ("POST", "/firmware/upload", {"csrf": token})]
    for method, path, form in cases:
        r = s.request(method, web.url + path, data=form)
        assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text[:300])
    r = s.post(web.url + "/login", data=b"\xff" * 2_000_000,
               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413


def test_core_down_shows_banner(tmp_path):
    w = Web(tmp_path, f"127.0.0.1:{free_port()}")  # nothing listens there
    try:
        s = w.admin()
        r = s.get(w.url + "/")
        assert r.status_code == 200 and 'id="core-error"' in r.text and "does not answer" in r.text
        assert s.get(w.url + "/config").status_code == 503
        assert w.proc.poll() is None
    finally:
        _stop(w.proc)


def _next_event(lines, kind: str) -> str:
    """The data line of the next `kind` event on an open /events stream."""
    for line in lines:
        if line == f"event: {kind}":
            return next(lines)
    raise AssertionError(f"the stream ended before a {kind} event")


def test_event_stream_needs_login_relays_core_events_and_is_bounded(core, tmp_path):
    w = Web(tmp_path, core.addr)  # its own: no other test's streams open
    try:
        assert w.session().get(w.url + "/events").status_code == 401
        s = w.admin()
        with s.get(w.url + "/events", stream=True, timeout=10) as r:
            assert r.status_code == 200
            assert r.headers["Content-Type"].startswith("text/event-stream")
            lines = r.iter_lines(decode_unicode=True)
            assert next(lines).startswith("retry: ")
            _next_event(lines, "ready")  # the core's stream is up
            try:
                core.api.sim_phone("fxs1", "off_hook")
                assert '"port": "fxs1"' in _next_event(lines, "port_state")
            finally:
                core.api.sim_phone("fxs1", "on_hook")
            more = [s.get(w.url + "/events", stream=True, timeout=10) for _ in range(MAX_FEEDS)]
            for m in more:
                m.close()
            assert [m.status_code for m in more] == [200] * (MAX_FEEDS - 1) + [503]
    finally:
        _stop(w.proc)


def test_idle_connections_hold_no_worker(web):
    idle = [socket.create_connection(("127.0.0.1", web.port)) for _ in range(WORKERS * 2)]
    try:
        started = time.monotonic()
        assert web.session().get(web.url + "/login", timeout=5).status_code == 200
        assert time.monotonic() - started < 2
    finally:
        for sock in idle:
            sock.close()
