"""The serial console end to end: a real `branchline console` process on a real pty,
talking to a real sim core's control API. The tests run in file order and share one
console session (first setup, then commands, then cable and core failures, lockout last).
"""

from __future__ import annotations

import os
import random
import time

PASSWORD = "correct-horse-7"
PROMPT = r"branch-01# $"
CONFIG_PROMPT = r"branch-01\(config\)# $"


def login(term) -> None:
    term.expect(r"login: $")
    term.line("admin")
    term.expect(r"password: $")
    term.line(PASSWORD)
    term.expect(PROMPT)


def test_first_login_with_setup_code_then_password(console):
    term = console.term
    banner = term.expect(r"setup code: $")
    code = (console.data_dir / "setup-code").read_text().strip()
    assert f"Setup code: {code}" in banner
    term.line("WRONGCODE1")
    term.expect(r"wrong setup code.*setup code: $")
    term.line(code.lower())  # typed from the label: case does not matter
    term.expect(r"new admin password: $")
    term.line("short")
    term.expect(r"at least 10 characters.*new admin password: $")
    term.line(PASSWORD)
    term.expect(r"again: $")
    term.line(PASSWORD)
    out = term.expect(PROMPT)
    assert "admin password set" in out
    assert PASSWORD not in out  # passwords are never echoed
    assert not (console.data_dir / "setup-code").exists()


def test_show_status_and_abbreviations(console):
    term = console.term
    out = term.command("show status")
    assert "mode sim" in out and "fxs1" in out and "on-hook" in out and "fxo1" in out
    out = term.command("sh li")
    assert "fxs2" in out and "48.1" in out
    assert "no active calls" in term.command("sh calls")
    assert "edges:" in term.command("show wan")
    assert "registrations:" in term.command("show sip")


def test_errors_name_the_problem_and_the_fix(console):
    term = console.term
    assert '% unknown command "shw": did you mean "show"?' in term.command("shw status")
    assert '% incomplete command "test ring"' in term.command("test ring")
    assert 'no port "fxs9"; ports: fxs1, fxs2, fxo1' in term.command("test ring fxs9")


def test_question_mark_help_at_several_points(console):
    term = console.term
    term.send("?")
    out = term.expect(r"logout.*" + PROMPT)
    for word in ("show", "configure", "test", "ping", "reboot", "factory-reset", "logout"):
        assert f"  {word} " in out
    term.send("sh?")
    out = term.expect(r"show the box.*# sh$")
    assert "show the box's state" in out
    term.send(" ?")
    out = term.expect(r"versions.*# sh $")
    assert "status" in out and "versions" in out and "<cr>" not in out
    term.send("\x15test ring ?")
    out = term.expect(r"fxo1.*# test ring $")
    assert "fxs1" in out and "fxo1" in out
    term.send("fxs1 ?")
    out = term.expect(r"<cr>.*# test ring fxs1 $")
    assert "<seconds>" in out and "<cr>" in out
    term.send("\x15")
    term.command("")


def test_tab_completion(console):
    term = console.term
    term.send("sh\t")
    term.expect(r"# show $")
    term.send("st\t")
    term.expect(r"# show status $")
    term.send("\r")
    assert "survivability" in term.expect(PROMPT)
    term.send("show c\t")  # calls, config: ambiguous -> the choices are listed
    out = term.expect(r"config.*# show c$")
    assert "calls" in out and "config" in out
    term.send("\x15")
    term.command("")


def test_line_editing_keys_and_history(console):
    term = console.term
    term.send("shx\x7fow lines\r")  # DEL
    assert "fxs1" in term.expect(PROMPT)
    term.send("\x1b[A")  # up arrow: the last command comes back
    term.expect(r"# show lines$")
    term.send("\x17wan\r")  # Ctrl-W erases "lines"
    assert "edges:" in term.expect(PROMPT)
    term.send("garbage words\x15show calls\n")  # Ctrl-U, then LF alone ends the line
    term.expect(r"no active calls.*" + PROMPT)
    term.send("show calls\r\n")  # CRLF counts once
    term.expect(PROMPT)
    assert "% " not in term.drain(0.3)
    term.send("show stat\x1b[D\x1b[D\x1b[3~\x1b[Ft\x03")  # arrows, Delete, End, Ctrl-C
    term.expect(r"\^C\r\n" + PROMPT)


def test_configure_set_diff_commit_rollback_round_trip(console, core):
    term = console.term
    assert "configure mode" in term.command("configure", CONFIG_PROMPT)
    term.send("set lines.fxs1.fl\t")  # flash_min_ms / flash_max_ms: common prefix
    term.expect(r"# set lines\.fxs1\.flash_m$")
    term.send("ax\t")
    term.expect(r"# set lines\.fxs1\.flash_max_ms $")
    term.send("?")
    term.expect(r"integer, ms, 50\.\.2000 \(now 800\).*flash_max_ms $")
    term.line("600")
    assert "800 -> 600 (pending)" in term.expect(CONFIG_PROMPT)
    out = term.command("show diff", CONFIG_PROMPT)
    assert "- lines.fxs1.flash_max_ms = 800" in out and "+ lines.fxs1.flash_max_ms = 600" in out
    assert core.api.get("/config")["document"]["lines"]["fxs1"]["flash_max_ms"] == 800
    out = term.command("commit first change", CONFIG_PROMPT)
    assert "as version" in out and "applied to the running box" in out
    assert core.api.get("/config")["document"]["lines"]["fxs1"]["flash_max_ms"] == 600
    assert "console: first change" in term.command("show versions", CONFIG_PROMPT)
    out = term.command("show config lines.fxs1", CONFIG_PROMPT)
    assert "lines.fxs1.flash_max_ms = 600" in out and "lines.fxs2" not in out
    assert "config version" in term.command("show log 5", CONFIG_PROMPT)
    term.command("set system.name branch-02", r"branch-01\(config\)# $")
    term.command("commit", r"branch-02\(config\)# $|branch-01\(config\)# $")
    assert core.api.get("/config")["document"]["system"]["name"] == "branch-02"
    assert "rolled back" in term.command("rollback", r"\(config\)# $")
    doc = core.api.get("/config")["document"]
    assert doc["system"]["name"] == "branch-01" and doc["lines"]["fxs1"]["flash_max_ms"] == 600
    term.command("set sip.register_expires_s 900", CONFIG_PROMPT)
    out = term.command("commit", CONFIG_PROMPT)
    assert "takes effect after a restart ('reboot'): sip.register_expires_s" in out
    assert "restart needed for saved settings: sip.register_expires_s" in \
        term.command("show status", CONFIG_PROMPT)
    assert "applied to the running box" in term.command("rollback", CONFIG_PROMPT)
    assert "restart needed" not in term.command("show status", CONFIG_PROMPT)
    term.command("exit", r"# $")
    term.command("", PROMPT)


def test_bad_value_shows_the_field_error_and_changes_nothing(console, core):
    term = console.term
    before = core.api.get("/config")
    term.command("configure", CONFIG_PROMPT)
    out = term.command("set lines.fxs1.flash_max_ms 5000", CONFIG_PROMPT)
    assert "% lines.fxs1.flash_max_ms: 5000 is out of range; allowed 50..2000 ms" in out
    out = term.command("set lines.fxs1.flash_max_ms abc", CONFIG_PROMPT)
    assert "lines.fxs1.flash_max_ms: 'abc' must be an integer (ms)" in out
    out = term.command("set lines.fxs1.flsh_max_ms 5", CONFIG_PROMPT)
    assert "flash_max_ms" in out  # the did-you-mean of the unknown key
    assert "no pending changes" in term.command("show diff", CONFIG_PROMPT)
    assert "pending change(s)" not in term.command("exit", PROMPT)
    assert core.api.get("/config") == before


def test_diagnostics_through_the_core(console):
    term = console.term
    out = term.command("test ring fxs1 1", timeout=30)
    assert "ringing fxs1" in out and "internal error" not in out
    out = term.command("test measure fxs1", timeout=30)
    assert "line_voltage_v" in out
    out = term.command("ping cloud", timeout=30)
    assert "sip.edges" in out  # no cloud configured in sim: the fix is named
    out = term.command("test line fxo1", timeout=60)
    assert "internal error" not in out


def test_reboot_asks_to_confirm(console):
    term = console.term
    term.line("reboot")
    term.expect(r"type yes to go ahead, anything else cancels: $")
    term.line("no")
    assert "cancelled" in term.expect(PROMPT)


def test_garbage_input_does_not_kill_it(console):
    term = console.term
    rng = random.Random(6)
    junk = bytes(rng.randrange(256) for _ in range(4000))
    for chunk in (b"\x00\x00\xff\xfe", b"\x1b", b"\x1b[", b"\x1b[12;", b"\x1bO", b"\x1b[999999999999999999",
                  junk, b"\x1b[1;5", b"?" * 50, b"\t" * 20, b"\xff" * 600):
        term.send(chunk)
        time.sleep(0.01)
    time.sleep(0.5)
    term.drain(0.5)
    assert console.alive()
    # whatever state the garbage left (a prompt, configure mode, a question): get home
    term.send("\x03\x03")
    term.drain(0.3)
    term.line("end")
    term.drain(0.3)
    out = term.command("show status")
    if "login:" in out:  # the garbage may have logged out: that is allowed
        term.line("admin")
        term.expect("password: $")
        term.line(PASSWORD)
        term.expect(PROMPT)
        out = term.command("show status")
    assert "fxs1" in out


def test_core_down_message_and_recovery(console, core):
    term = console.term
    core.stop()
    try:
        out = term.command("show status")
        assert "% the core is not answering (is branchline-core running?)" in out
        assert console.alive()
    finally:
        core.start()
    assert "fxs1" in term.command("show status")


def test_cable_pulled_and_plugged_back(console):
    term = console.term
    term.unplug()
    time.sleep(1.0)
    assert console.alive()
    term.plug()  # a new pty behind the same device path
    term.expect(r"serial console", timeout=15)
    login(term)
    assert "fxs1" in term.command("show lines")
    assert "lost" in console.log.read_text()


def test_factory_reset_makes_a_new_setup_code(console, core):
    term = console.term
    term.line("factory-reset")
    term.expect(r"type yes to go ahead, anything else cancels: $")
    term.line("yes")
    out = term.expect(r"setup code: $")
    code = (console.data_dir / "setup-code").read_text().strip()
    assert f"new setup code: {code}" in out
    assert core.api.get("/config")["document"]["lines"]["fxs1"]["flash_max_ms"] == 800
    term.line(code)
    term.expect(r"new admin password: $")
    term.line(PASSWORD)
    term.expect(r"again: $")
    term.line(PASSWORD)
    term.expect(PROMPT)
    term.line("logout")
    term.expect(r"login: $")


def test_lockout_after_bad_passwords(console):
    term = console.term
    for _ in range(5):
        term.line("admin")
        term.expect(r"password: $")
        term.line("not-the-password")
        term.expect(r"login: $")
    term.line("admin")
    term.expect(r"password: $")
    term.line(PASSWORD)  # right password, but locked
    assert "account locked" in term.expect(r"login: $")
    audit = (console.data_dir / "audit.log").read_text()
    assert '"config_commit"' in audit and '"login_failed"' in audit
    assert console.alive()
    assert os.path.islink(console.link)
