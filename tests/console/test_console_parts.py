"""The console's parts on their own: the line editor fed byte streams, the grammar's
abbreviations, help and completion, typed config values, and a session against a real
core whose commit is refused (the pending changes stay).
"""

from __future__ import annotations

import random
import time

import pytest

from firmware.api.client import ApiClient, CoreDown
from firmware.auth import Auth
from firmware.console import commands, confpath, grammar, views
from firmware.console.lineedit import MAX_LINE, LineEditor
from firmware.console.session import CORE_DOWN, Mode, Session
from firmware.core.config import default_document
from lab.wait import wait_until


class Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.helps: list[str] = []
        self.out = b""
        self.interrupts = 0

    def write(self, data: bytes) -> None:
        self.out += data

    def on_line(self, text: str) -> None:
        self.lines.append(text)

    def on_help(self, text: str) -> list[str]:
        self.helps.append(text)
        return ["  help"]

    def on_complete(self, text: str) -> tuple[str, list[str]]:
        return (text + "pleted ", []) if text.endswith("com") else (text, ["a", "b"])

    def on_interrupt(self) -> None:
        self.interrupts += 1


@pytest.fixture
def ed():
    rec = Recorder()
    editor = LineEditor(rec.write, rec)
    editor.start("> ")
    return editor, rec


def test_editor_line_endings_count_once(ed):
    editor, rec = ed
    editor.feed(b"a\rb\nc\r\nd\n\re\r")
    assert rec.lines == ["a", "b", "c", "d", "", "e"]


def test_editor_keys(ed):
    editor, rec = ed
    editor.feed(b"show lines\x17wan\r")  # Ctrl-W
    editor.feed(b"junk\x15ok\r")  # Ctrl-U
    editor.feed(b"ac\x1b[Db\x1b[F!\r")  # left arrow, insert, End
    editor.feed(b"xy\x08\x7fz\r")  # BS and DEL
    editor.feed(b"\x1b[A\x1b[A\r")  # history: two up
    editor.feed(b"abc\x01\x1b[3~\r")  # Ctrl-A, Delete
    assert rec.lines == ["show wan", "ok", "abc!", "z", "abc!", "bc"]


def test_editor_question_mark_and_tab(ed):
    editor, rec = ed
    editor.feed(b"sh?")
    assert rec.helps == ["sh"] and editor.buf == "sh"
    editor.feed(b"\x15com\t")
    assert editor.buf == "completed "
    editor.feed(b"\x15x\t")
    assert b"\r\na\r\nb\r\n" in rec.out


def test_editor_password_mode_echoes_nothing(ed):
    editor, rec = ed
    editor.start("password: ", echo=False)
    rec.out = b""
    editor.feed(b"s3cret?\tpw\r")
    assert rec.lines == ["s3cret?pw"]
    assert b"s3cret" not in rec.out and rec.helps == []
    assert "s3cret?pw" not in editor.history


def test_editor_survives_garbage(ed):
    editor, rec = ed
    rng = random.Random(1)
    for _ in range(50):
        editor.feed(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))))
    editor.feed(b"\x1b[1;5\x1bO\x1b\x00\xff" + b"x" * (MAX_LINE + 50))
    assert len(editor.buf) <= MAX_LINE
    editor.feed(b"\x03status\r")
    assert rec.lines[-1] == "status" and rec.interrupts >= 1


def test_editor_cut_off_escape_keeps_the_next_key(ed):
    editor, rec = ed
    editor.feed(b"\x1b[12;")  # cut off...
    editor.feed(b"\rok\r")  # ... by CR, which still ends the line
    assert rec.lines == ["", "ok"]


class Ctx:
    def __init__(self) -> None:
        self._doc = default_document()

    def doc(self, refresh: bool = False) -> dict:
        return self._doc


def test_grammar_abbreviations_and_errors():
    root, ctx = commands.exec_tree(), Ctx()
    parsed = grammar.parse(root, "sh st", ctx)
    assert parsed.words == ["show", "status"]
    parsed = grammar.parse(root, "te ri fxs1 3", ctx)
    assert parsed.args == {"port": "fxs1", "seconds": "3"}
    with pytest.raises(grammar.ParseError, match='did you mean "show"'):
        grammar.parse(root, "shw", ctx)
    with pytest.raises(grammar.ParseError, match="ambiguous"):
        grammar.parse(root, "show c", ctx)
    with pytest.raises(grammar.ParseError, match="not a number"):
        grammar.parse(root, "test ring fxs1 soon", ctx)


def test_grammar_set_takes_the_rest_of_the_line():
    root, ctx = commands.config_tree(), Ctx()
    parsed = grammar.parse(root, 'set lines.fxs1.name "Front desk 2"', ctx)
    assert parsed.args == {"path": "lines.fxs1.name", "value": "Front desk 2"}
    assert grammar.complete(root, "set sip.reg", ctx) == ("set sip.regist", [])
    assert grammar.complete(root, "set sip.registr", ctx) == ("set sip.registration ", [])
    assert grammar.complete(root, "set sip.registration", ctx)[0] == "set sip.registration "
    new, choices = grammar.complete(root, "set lines.", ctx)
    assert new == "set lines.fx" and not choices
    help_ = grammar.help_lines(root, "set sip.registration ", ctx)
    assert any("trunk" in line for line in help_)


def test_typed_values_follow_the_schema():
    doc = default_document()
    assert confpath.typed(doc, "lines.fxs1.flash_max_ms", "600") == 600
    assert confpath.typed(doc, "lines.fxs1.flash_max_ms", "abc") == "abc"
    assert confpath.typed(doc, "calls.call_waiting", "off") is False
    assert confpath.typed(doc, "sip.codecs", "PCMA,G722") == ["PCMA", "G722"]
    assert confpath.typed(doc, "country.ring_cadence", "2, 4") == [2.0, 4.0]
    assert confpath.typed(doc, "sip.edges", "[]") == []
    assert confpath.typed(doc, "lines.fxs1.extension", "201") == "201"
    changed = confpath.applied(doc, {"lines.fxs1.flash_max_ms": 600})
    assert changed["lines"]["fxs1"]["flash_max_ms"] == 600
    assert doc["lines"]["fxs1"]["flash_max_ms"] == 800


def _session(core, tmp_path, api=None):
    out = []
    session = Session(lambda b: out.append(b), api or ApiClient(tcp=core.listen),
                      Auth(tmp_path / "data"), "console:test")
    session.user, session.state = "admin", Mode.CONFIG
    return session, out


def test_refused_commit_keeps_the_pending_changes(core, tmp_path):
    session, out = _session(core, tmp_path)
    before = core.api.get("/config")
    session.pending = {"lines.fxs1.flash_max_ms": 5000, "lines.fxs1.flash_min_ms": 150}
    session.on_line("commit")
    text = b"".join(out).decode()
    assert "% lines.fxs1.flash_max_ms: 5000 is out of range; allowed 50..2000 ms" in text
    assert session.pending == {"lines.fxs1.flash_max_ms": 5000, "lines.fxs1.flash_min_ms": 150}
    assert core.api.get("/config") == before


def test_core_down_is_one_line(core, tmp_path):
    session, out = _session(core, tmp_path, ApiClient(tcp="127.0.0.1:9"))
    session.state = "exec"
    session.on_line("show status")
    assert CORE_DOWN in b"".join(out).decode()
    with pytest.raises(CoreDown):
        ApiClient(tcp="127.0.0.1:9").status()


def test_monitor_prints_live_events_until_a_key(core, tmp_path):
    session, out = _session(core, tmp_path)
    session.state = Mode.EXEC
    session.on_line("monitor")
    assert session.state == Mode.MONITOR and b"press any key" in b"".join(out)
    api = ApiClient(tcp=core.listen)
    api.sim_phone("fxs1", "off_hook")
    try:
        time.sleep(0.3)
        api.sim_phone("fxs1", "dial", digits="202")
        wait_until(lambda: b"ringing" in b"".join(out), 10, "ringing on the monitor",
                   detail=lambda: b"".join(out).decode())
    finally:
        api.sim_phone("fxs1", "on_hook")
    text = b"".join(out).decode()
    assert any(" ringing " in line and "fxs1" in line and "201 -> 202" in line
               for line in text.splitlines()), text
    session.feed(b"q")
    assert session.state == Mode.EXEC and "monitor stopped" in b"".join(out).decode()
    assert session.monitor is None


def test_monitor_refuses_an_unknown_kind_and_renders_events(core, tmp_path):
    session, out = _session(core, tmp_path)
    session.state = Mode.EXEC
    session.on_line("monitor nonsense")
    assert session.state == Mode.EXEC and 'no event kind "nonsense"' in b"".join(out).decode()
    line = views.event({"kind": "ringing", "time": 0, "port": "fxo1", "ani": "5551234",
                        "dnis": "100", "direction": "inbound"})
    assert "ringing" in line and "fxo1" in line and "5551234 -> 100 inbound" in line
    assert "3 event(s) lost" in views.event({"kind": "dropped", "count": 3})
