"""The console's commands: the exec-mode and configure-mode grammar trees, each word with
its handler (session, args) in the tree itself. Handlers call the control API and print
through `session.say`; the session prints the core's refusals."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from firmware.console import confpath, views
from firmware.console.grammar import Handler, Node, arg, kw
from firmware.events import EventKind

if TYPE_CHECKING:
    from firmware.console.session import Session

TONES = (("dial", "dial tone"), ("busy", "busy tone"), ("ringback", "ringback tone"),
         ("congestion", "congestion (reorder) tone"))


# --- argument helpers -----------------------------------------------------------------

def _ports(s: Session, _args: dict) -> list[tuple[str, str]]:
    lines = (s.doc() or {}).get("lines", {})
    return [(name, f"{line.get('kind', '?').upper()} {line.get('name', '')}".rstrip())
            for name, line in lines.items() if isinstance(line, dict)]


def _check_port(s: Session, word: str) -> str:
    known = [name for name, _h in _ports(s, {})]
    if not known or word in known:
        return ""
    return f'no port "{word}"; ports: {", ".join(known)}'


def _check_number(_s: Session, word: str) -> str:
    try:
        value = float(word)
    except ValueError:
        return f'"{word}" is not a number; give seconds, e.g. 5'
    return "" if 0 < value <= 600 else f"{word} is out of range; allowed 0..600 s"


def _check_int(_s: Session, word: str) -> str:
    return "" if word.isdigit() else f'"{word}" is not a whole number, e.g. 3'


def port_arg(name: str = "port", run: Handler | None = None, *children: Node) -> Node:
    return arg(name, "port name (fxs1, fxo1, ...)", run, *children,
               choices=_ports, check=_check_port)


def seconds_arg(run: Handler, default: int) -> Node:
    return arg("seconds", f"how long, in seconds (default {default})", run, check=_check_number)


def _path_complete(s: Session, partial: str) -> list[str]:
    return confpath.completions(s.doc() or {}, partial)


def _value_help(s: Session, args: dict) -> str:
    return confpath.describe(s.doc() or {}, args.get("path", ""))


def _value_choices(s: Session, args: dict) -> list[tuple[str, str]]:
    return [(c, "") for c in confpath.choices(s.doc() or {}, args.get("path", ""))]


def path_arg(name: str, help: str, run: Handler | None = None, *children: Node) -> Node:
    return arg(name, help, run, *children, complete=_path_complete)


# --- show -----------------------------------------------------------------------------

def _view(view: Callable[[dict], list[str]]) -> Handler:
    """A `show` handler printing one view of the status document."""
    return lambda s, _a: s.say(view(s.api.status()))


def show_config(s: Session, a: dict) -> None:
    s.say(views.config(s.doc(refresh=True) or {}, a.get("path", "")))


def show_log(s: Session, a: dict) -> None:
    count = int(a.get("count", 20))
    page = s.api.logs(limit=count)
    s.say(views.log(page) + [f"({len(page.get('items', []))} of {page.get('total', '?')})"])


def show_versions(s: Session, _a: dict) -> None:
    rows = s.api.config_versions()
    s.say([f"{r.get('version'):>5}  {views.stamp(r.get('time'))}  {r.get('reason') or ''}"
           for r in rows] or ["no saved versions yet (the box runs the default config)"])


def show_diff(s: Session, a: dict) -> None:
    if "version" in a:
        text = s.api.config_diff(int(a["version"]))
        s.say(text.splitlines() or [f"no difference to version {a['version']}"])
        return
    s.say(s.pending_diff())


def show_tree() -> Node:
    show = kw("show", "show the box's state or config")
    show.add(
        kw("status", "box, WAN, survivability, registration, outbox, ports and calls",
           _view(views.status)),
        kw("lines", "each port: state, hook, ring, voltage, current, ERLE", _view(views.lines)),
        kw("calls", "active calls with duration and quality", _view(views.calls)),
        kw("sip", "SIP registrations and cloud edges", _view(views.sip)),
        kw("wan", "WAN state and each cloud edge's OPTIONS round trip", _view(views.wan)),
        kw("config", "the running config (optionally under a path)", show_config,
           path_arg("path", "a setting or a section, e.g. lines.fxs1", show_config)),
        kw("log", "the newest log lines", show_log,
           arg("count", "how many lines (default 20)", show_log, check=_check_int)),
        kw("versions", "saved config versions (for rollback)", show_versions),
        kw("diff", "pending changes (configure mode), or the config vs a version",
           show_diff, arg("version", "a saved version (see show versions)", show_diff,
                          check=_check_int)),
    )
    return show


# --- test and ping --------------------------------------------------------------------

def test_ring(s: Session, a: dict) -> None:
    seconds = float(a.get("seconds", 5))
    s.say(f"ringing {a['port']} for {seconds:g} s ...")
    s.say(views.diag(s.api.ring(a["port"], seconds)))


def test_tone(s: Session, a: dict) -> None:
    seconds = float(a.get("seconds", 5))
    s.say(views.diag(s.api.tone(a["port"], a["tone"], seconds)))


def test_dtmf(s: Session, a: dict) -> None:
    seconds = float(a.get("seconds", 20))
    s.say(f"press keys on {a['port']}: each digit is played back for {seconds:g} s ...")
    s.say(views.diag(s.api.dtmf_echo(a["port"], seconds)))


def test_line(s: Session, a: dict) -> None:
    s.say(f"testing {a['port']} (a few seconds) ...")
    s.say(views.diag(s.api.line_test(a["port"])))


def test_tree() -> Node:
    tones = arg("tone", "which tone", None, seconds_arg(test_tone, 5),
                choices=lambda _s, _a: list(TONES))
    tones.run = test_tone
    return kw("test", "line diagnostics").add(
        kw("ring", "ring a phone on an FXS port", None, port_arg("port", test_ring,
                                                                 seconds_arg(test_ring, 5))),
        kw("tone", "play a tone on a port", None, port_arg("port", None, tones)),
        kw("dtmf-echo", "play back the digits heard on a port", None,
           port_arg("port", test_dtmf, seconds_arg(test_dtmf, 20))),
        kw("measure", "measure line voltage and loop current", None,
           port_arg("port", lambda s, a: s.say(views.diag(s.api.measure(a["port"]))))),
        kw("line", "line test: GR-909 (FXS) or line characterisation (FXO)", None,
           port_arg("port", test_line)),
    )


def ping_cloud(s: Session, _a: dict) -> None:
    found = s.api.ping().get("edges")
    s.say(views.edges(found) or ["no cloud edge configured: configure, set sip.edges "
                                 "sip:edge1.example.com:5060, commit"])


def monitor(s: Session, a: dict) -> None:
    s.start_monitor([a["kind"]] if "kind" in a else [])


def monitor_tree() -> Node:
    kinds = [(k.value, "only this kind") for k in EventKind]

    def check(_s: Session, word: str) -> str:
        return "" if word in {k.value for k in EventKind} else f'no event kind "{word}"; type ? to list them'

    return kw("monitor", "live call, port and box events until a key is pressed", monitor,
              arg("kind", "only events of this kind", monitor, choices=lambda _s, _a: kinds,
                  check=check))


# --- box commands ---------------------------------------------------------------------

def reboot(s: Session, _a: dict) -> None:
    s.confirm("reboot the box? active calls will be dropped", s.do_reboot)


def factory_reset(s: Session, _a: dict) -> None:
    s.confirm("factory reset: the config goes back to the defaults and the admin password "
              "is forgotten (a new setup code is made); CDRs, logs and the web certificate "
              "are kept. Continue?", s.do_factory_reset)


def logout(s: Session, _a: dict) -> None:
    s.logout()


# --- update (a bundle on a USB stick, handed to the update service) ---------------------

def update_install_force(s: Session, a: dict) -> None:
    s.update_install(a["path"], force=True)


def update_tree() -> Node:
    path = arg("path", "the bundle's full path, e.g. /media/usb/branchline-1.2.raucb",
               lambda s, a: s.update_install(a["path"], force=False),
               kw("force", "install even with calls up (they drop at the reboot)",
                  update_install_force))
    return kw("update", "install a firmware bundle, its progress, cancel").add(
        kw("install", "install a signed RAUC bundle from a path (a USB stick)", None, path),
        kw("status", "the update service's phase, progress and last outcome",
           lambda s, _a: s.update_status()),
        kw("cancel", "cancel an update that has not started writing",
           lambda s, _a: s.update_cancel()),
    )


def exec_tree() -> Node:
    return Node().add(
        show_tree(),
        kw("configure", "enter configure mode (set, show diff, commit, rollback)",
           lambda s, _a: s.enter_config()),
        test_tree(),
        monitor_tree(),
        kw("ping", "SIP OPTIONS ping", None, kw("cloud", "ping each cloud edge", ping_cloud)),
        kw("reboot", "restart the box (asks to confirm)", reboot),
        update_tree(),
        kw("factory-reset", "config to defaults, admin password forgotten (asks to confirm)",
           factory_reset),
        kw("logout", "end this session", logout),
        kw("exit", "end this session", logout),
    )


# --- configure mode -------------------------------------------------------------------

def commit(s: Session, a: dict) -> None:
    s.commit(a.get("comment", ""))


def rollback(s: Session, a: dict) -> None:
    s.rollback(int(a["version"]) if "version" in a else None)


def leave(s: Session, _a: dict) -> None:
    s.leave_config(discard=False)


def config_tree() -> Node:
    value = arg("value", "the new value", lambda s, a: s.set_pending(a["path"], a["value"]),
                rest=True, describe=_value_help, choices=_value_choices)
    show = show_tree().add(kw("pending", "pending changes (same as show diff)", show_diff))
    return Node().add(
        kw("set", "change a setting (kept pending until commit)", None,
           path_arg("path", "a setting, e.g. lines.fxs1.flash_max_ms", None, value)),
        kw("unset", "drop a pending change", None,
           path_arg("path", "a pending setting", lambda s, a: s.drop_pending(a["path"]))),
        show,
        kw("commit", "apply the pending changes as a new config version", commit,
           arg("comment", "why (goes into the version's reason)", commit, rest=True)),
        kw("rollback", "go back to the previous (or a given) config version", rollback,
           arg("version", "a saved version (see show versions)", rollback, check=_check_int)),
        kw("abort", "discard pending changes and leave configure mode",
           lambda s, _a: s.leave_config(discard=True)),
        kw("exit", "leave configure mode (pending changes must be committed or aborted)", leave),
        kw("end", "same as exit", leave),
    )
