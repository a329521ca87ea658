"""firmware.auth, the web sessions, form reading and plots, with an injected clock (no
servers): setup code, scrypt hashes, lockout expiry, session expiry, problem mapping."""

from __future__ import annotations

import json
import stat

import pytest

from firmware.api.client import ApiClient
from firmware.auth import Auth, AuthError, LockedOut, check_secret, hash_secret
from firmware.core.config import default_document
from firmware.web import forms, plots
from firmware.web.server import Web
from firmware.web.sessions import RateLimiter, Sessions


def macros(tmp_path):
    """The page's template macros (templates/macros.html), rendered as the pages do."""
    app = Web(ApiClient(tcp="127.0.0.1:1"), tmp_path).app
    return app.jinja_env.get_template("macros.html").module


class Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_scrypt_hash_round_trip_and_salt():
    a, b = hash_secret("correct horse battery"), hash_secret("correct horse battery")
    assert a != b and a.startswith("scrypt$16384$8$1$")
    assert check_secret("correct horse battery", a)
    assert not check_secret("correct horse batterz", a)
    assert not check_secret("x", "garbage")


def test_setup_code_once_then_password(tmp_path):
    auth = Auth(tmp_path, clock=Clock())
    code = auth.ensure_setup_code()
    assert code and len(code) == 10 and auth.ensure_setup_code() == code  # stable
    path = tmp_path / "setup-code"
    assert path.read_text().strip() == code
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert code not in (tmp_path / "account.json").read_text()  # kept hashed only
    with pytest.raises(AuthError, match="setup code"):
        auth.login("admin", "anything at all")
    auth.check_setup_code(code.lower())
    with pytest.raises(AuthError, match="at least 10"):
        auth.set_password("short")
    with pytest.raises(AuthError, match="differ"):
        auth.set_password("long enough pw", "long enough pX")
    with pytest.raises(AuthError, match="setup code"):
        auth.set_password(code)
    auth.set_password("long enough pw", "long enough pw")
    assert not path.exists() and auth.ensure_setup_code() is None
    auth.login("admin", "long enough pw")
    with pytest.raises(AuthError, match="already used"):
        auth.check_setup_code(code)


def test_lockout_for_fifteen_minutes(tmp_path):
    clock = Clock()
    auth = Auth(tmp_path, clock=clock)
    auth.ensure_setup_code()
    auth.set_password("long enough pw")
    for _ in range(4):
        with pytest.raises(AuthError):
            auth.login("admin", "bad password!")
    auth.login("admin", "long enough pw")  # a good one resets the count
    for _ in range(5):
        with pytest.raises(AuthError):
            auth.login("admin", "bad password!")
    with pytest.raises(LockedOut, match="15 min"):
        auth.login("admin", "long enough pw")
    assert Auth(tmp_path, clock=clock).locked_for() == pytest.approx(900)  # shared on disk
    clock.t += 899
    with pytest.raises(LockedOut):
        auth.login("admin", "long enough pw")
    clock.t += 2
    auth.login("admin", "long enough pw")


def test_audit_log_append_only_lines(tmp_path):
    auth = Auth(tmp_path, clock=Clock())
    auth.audit("admin", "10.0.0.5", "config changed", {"lines.fxs1.flash_max_ms": [800, 600]})
    auth.audit("admin", "10.0.0.5", "logout")
    with (tmp_path / "audit.log").open("a") as f:
        f.write("torn li")
    total, entries = auth.audit_entries()
    assert total == 2 and entries[0]["action"] == "logout"
    first = json.loads((tmp_path / "audit.log").read_text().splitlines()[0])
    assert first["where"] == "10.0.0.5" and first["time"] == 1_800_000_000.0


def test_factory_reset_makes_new_setup_code(tmp_path):
    auth = Auth(tmp_path, clock=Clock())
    old = auth.ensure_setup_code()
    auth.set_password("long enough pw")
    code = auth.factory_reset()
    assert code and code != old and auth.needs_setup()


def test_sessions_idle_and_absolute_expiry():
    clock = Clock()
    sessions = Sessions(clock, idle_s=60, absolute_s=300)
    s = sessions.new("admin", "admin")
    assert len(s.id) >= 43 and s.csrf != s.id
    for _ in range(5):
        clock.t += 50
        assert sessions.get(s.id) is s  # kept alive by use
    clock.t += 51
    assert sessions.get(s.id) is None  # absolute limit
    t = sessions.new()
    clock.t += 61
    assert sessions.get(t.id) is None  # idle limit
    u = sessions.new()
    v = sessions.promote(u, "admin", "admin")
    assert sessions.get(u.id) is None and v.id != u.id and v.csrf != u.csrf


def test_rate_limiter_window():
    clock = Clock()
    rl = RateLimiter(limit=2, window_s=10, clock=clock)
    assert rl.allow("a") == 0 and rl.allow("a") == 0 and rl.allow("a") > 0
    assert rl.allow("b") == 0
    clock.t += 11
    assert rl.allow("a") == 0


def test_form_parsing_and_problem_mapping(tmp_path):
    doc = default_document()
    changes, errors = forms.parse_form(doc, "lines.fxs1", {
        "lines.fxs1.flash_max_ms": "600", "lines.fxs1.debounce_ms": "2x",
        "lines.fxs1.sip_password": "", "lines.fxs1.name": "Front desk"})
    assert changes == {"lines.fxs1.flash_max_ms": 600}
    assert "whole number" in errors["lines.fxs1.debounce_ms"]
    changes, _ = forms.parse_form(doc, "sip", {"sip.codecs": "PCMA, PCMU",
                                               "sip.tls_verify": "false"})
    assert changes == {"sip.codecs": ["PCMA", "PCMU"], "sip.tls_verify": False}
    mapped = forms.map_problems(["sip.edges[0]: 'x' must be a SIP URI",
                                 "lines.fxs1.flash_min_ms: must be below flash_max_ms",
                                 "something else"], ["sip.edges", "lines.fxs1.flash_min_ms"])
    assert set(mapped) == {"sip.edges", "lines.fxs1.flash_min_ms", ""}
    rows = forms.rows(doc, "lines.fxs1", errors={"lines.fxs1.name": "bad <x>"})
    html = str(macros(tmp_path).config_form("lines.fxs1", rows, "tok"))
    assert 'data-error-for="lines.fxs1.name"' in html and "bad &lt;x&gt;" in html
    assert forms.section_fields(doc, "lines.nosuch") == {}


def test_plots_and_history(tmp_path):
    h = plots.History()
    for i in range(5):
        h.feed({"ports": [{"name": "fxs1", "erle_db": 20.0 + i,
                           "call": {"mos": 4.2}}]}, 100.0 + i)
    h.feed({"ports": [{"name": "fxs1", "erle_db": None, "call": None}]}, 106.0)
    series = h.series("fxs1")
    assert len(series) == 5 and series[-1][1] == 24.0
    draw = macros(tmp_path).plot
    svg = str(draw(plots.line_plot([(t - 100, e) for t, e, _m in series], "ERLE", "dB")))
    assert "<path d=\"M" in svg and "<script" not in svg
    bars = str(draw(plots.bar_plot([("call <1>", 4.3), ("call 2", 3.1)], "MOS", "MOS")))
    assert bars.count("<rect") == 2 and "call &lt;1&gt;" in bars and "#c33" in bars
