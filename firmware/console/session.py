"""One technician's session on the serial console: login (or first setup with the setup
code), exec and configure modes, confirmations, and the live event monitor. Everything goes
through the control API client: a core that does not answer is one line, never the end of
the session. The account is firmware.auth.Auth, shared with the web page. Pending config
changes stay here until `commit`. Driven by one thread (the serial loop) but for the
monitor's reader thread, which only writes event lines, and the update watcher, which
prints an install's progress until the box reboots, it fails, or Ctrl-C stops watching."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from firmware.api.client import ApiClient, CoreDown, EventStream
from firmware.auth import ADMIN, Auth, AuthError
from firmware.console import commands, confpath, grammar, views
from firmware.console.lineedit import LineEditor
from firmware.core.config import default_document, paths
from firmware.update.client import UpdateClient
from foundation.errors import BranchlineError

log = logging.getLogger(__name__)


class Mode(StrEnum):
    LOGIN = "login"
    PASSWORD = "password"
    SETUP_CODE = "setup-code"
    NEW_PASSWORD = "new-password"
    CONFIRM_PASSWORD = "confirm-password"
    EXEC = "exec"
    CONFIG = "config"
    ASK = "ask"  # a yes/no question (reboot, factory-reset)
    MONITOR = "monitor"  # live events until a key
    WATCH = "watch"  # an update's progress until it ends or Ctrl-C


IDLE_TIMEOUT_S = 15 * 60
CORE_DOWN = "% the core is not answering (is branchline-core running?)"
WATCH_POLL_S = 0.5
WATCH_ENDS = frozenset({"REBOOTING", "FAILED", "GOOD", "ROLLED_BACK", "IDLE"})
CTRL_C = b"\x03"


class Session:
    """See the module docstring. `write(bytes)` sends to the terminal."""

    def __init__(self, write: Callable[[bytes], None], api: ApiClient, auth: Auth, where: str,
                 fingerprint: Callable[[], str | None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic,
                 idle_timeout_s: float = IDLE_TIMEOUT_S,
                 update: UpdateClient | None = None) -> None:
        self.write, self.api, self.auth, self.where = write, api, auth, where
        self._update = update
        self.fingerprint, self.clock, self.idle_timeout_s = fingerprint, clock, idle_timeout_s
        self.editor = LineEditor(write, self)
        self.exec_root, self.config_root = commands.exec_tree(), commands.config_tree()
        self.state = Mode.LOGIN
        self.on_text: dict[Mode, Callable[[str], None]] = {
            Mode.LOGIN: self._on_login, Mode.PASSWORD: self._on_password,
            Mode.SETUP_CODE: self._on_setup_code, Mode.NEW_PASSWORD: self._on_new_password,
            Mode.CONFIRM_PASSWORD: self._on_confirm_password, Mode.ASK: self._on_answer,
            Mode.EXEC: self._on_command, Mode.CONFIG: self._on_command}
        self.monitor: tuple[EventStream, threading.Thread] | None = None
        self.watch: threading.Event | None = None  # set: stop watching the update
        self._watch_lock = threading.Lock()
        self.user = ""
        self.name = "branchline"
        self.pending: dict[str, Any] = {}
        self._doc: dict | None = None
        self._new_password = ""
        self._ask: Callable[[], None] | None = None
        self._ask_back = Mode.EXEC
        self.last_input = clock()

    # --- output -----------------------------------------------------------------------

    def say(self, lines: str | list[str]) -> None:
        for line in [lines] if isinstance(lines, str) else lines:
            self.write(line.encode("ascii", "replace") + b"\r\n")

    # --- start, banner, prompts -------------------------------------------------------

    def start(self) -> None:
        self._refresh_name()
        self.say(["", f"branchline {self.name} - serial console"])
        fp = self.fingerprint()
        if fp:
            self.say(f"web page certificate (SHA-256): {fp}")
        self._login_prompt()

    def _login_prompt(self) -> None:
        self.user, self.pending, self._doc = "", {}, None
        try:
            code = self.auth.ensure_setup_code() if self.auth.needs_setup() else None
        except AuthError as exc:
            self.say(f"% {exc}")
            code = None
        if code:
            self.say(["", "First setup: there is no admin password yet.",
                      f"Setup code: {code}   (also on the box label)",
                      "Type the setup code to log in and choose the admin password.", ""])
            self._prompt(Mode.SETUP_CODE, "setup code: ", echo=False)
        else:
            self._prompt(Mode.LOGIN, "login: ")

    def _prompt(self, state: Mode, text: str | None = None, echo: bool = True) -> None:
        self.state = state
        self.editor.start(text if text is not None else self.prompt(), echo)

    def prompt(self) -> str:
        return f"{self.name}(config)# " if self.state == Mode.CONFIG else f"{self.name}# "

    def _refresh_name(self) -> None:
        try:
            name = self.api.status().get("box", {}).get("name")
        except (BranchlineError, AttributeError):
            return
        if isinstance(name, str) and name:
            self.name = name[:40]

    # --- editor hooks -----------------------------------------------------------------

    def on_line(self, text: str) -> None:
        self.last_input = self.clock()
        self.on_text[self.state](text)

    def on_help(self, text: str) -> list[str]:
        root = self._root()
        return grammar.help_lines(root, text, self) if root else []

    def on_complete(self, text: str) -> tuple[str, list[str]]:
        root = self._root()
        return grammar.complete(root, text, self) if root else (text, [])

    def on_interrupt(self) -> None:
        if self.state in (Mode.EXEC, Mode.CONFIG):
            self._prompt(self.state)
        elif self.state == Mode.ASK:
            self.say("cancelled")
            self._prompt(self._ask_back)
        else:
            self._login_prompt()

    def _root(self) -> grammar.Node | None:
        return {Mode.EXEC: self.exec_root, Mode.CONFIG: self.config_root}.get(self.state)

    def tick(self) -> None:
        """Log out a session idle for too long."""
        idle = self.clock() - self.last_input
        if self.state not in (Mode.LOGIN, Mode.SETUP_CODE) and idle > self.idle_timeout_s:
            self.stop_monitor(prompt=False)
            self.stop_watch(prompt=False)
            self.say(["", "% idle too long: logged out"])
            self.logout()

    def feed(self, data: bytes) -> None:
        self.last_input = self.clock()
        if self.state == Mode.MONITOR:
            self.stop_monitor()  # any key ends it (Ctrl-C too)
            return
        if self.state == Mode.WATCH:
            if CTRL_C in data:  # other keys are dropped while the update is watched
                self.stop_watch()
            return
        self.editor.feed(data)

    def hangup(self) -> None:
        """The cable was pulled: whoever plugs in next starts at the login prompt."""
        self.stop_monitor(prompt=False)
        self.stop_watch(prompt=False)
        if self.user:
            self._audit("logout", "serial port disconnected")
        self.user, self.pending, self._doc = "", {}, None
        self.state = Mode.LOGIN

    # --- login ------------------------------------------------------------------------

    def _on_login(self, text: str) -> None:
        user = text.strip()
        if not user:
            self._prompt(Mode.LOGIN, "login: ")
            return
        self.user = user[:32]
        self._prompt(Mode.PASSWORD, "password: ", echo=False)

    def _on_password(self, text: str) -> None:
        try:
            self.auth.login(self.user, text)
        except AuthError as exc:
            self._audit("login_failed", str(exc), who=self.user)
            self.say(f"% {exc}")
            self._login_prompt()
            return
        self._audit("login", "")
        self._welcome()

    def _on_setup_code(self, text: str) -> None:
        if not text.strip():
            self._login_prompt()
            return
        try:
            self.auth.check_setup_code(text)
        except AuthError as exc:
            self._audit("setup_code_failed", str(exc), who="?")
            self.say(f"% {exc}")
            self._login_prompt()
            return
        self.user = ADMIN
        self.say("setup code accepted; now choose the admin password "
                 "(at least 10 characters)")
        self._prompt(Mode.NEW_PASSWORD, "new admin password: ", echo=False)

    def _on_new_password(self, text: str) -> None:
        problem = self.auth.password_problem(text)
        if problem:
            self.say(f"% {problem}")
            self._prompt(Mode.NEW_PASSWORD, "new admin password: ", echo=False)
            return
        self._new_password = text
        self._prompt(Mode.CONFIRM_PASSWORD, "again: ", echo=False)

    def _on_confirm_password(self, text: str) -> None:
        new, self._new_password = self._new_password, ""
        try:
            self.auth.set_password(new, text)
        except AuthError as exc:
            self.say(f"% {exc}")
            self._prompt(Mode.NEW_PASSWORD, "new admin password: ", echo=False)
            return
        self._audit("password_set", "first setup on the serial console")
        self.say("admin password set; the setup code no longer works")
        self._welcome()

    def _welcome(self) -> None:
        self._refresh_name()
        self.say(f"logged in as {self.user}; type ? for help")
        self._prompt(Mode.EXEC)

    def logout(self) -> None:
        if self.pending:
            self.say(f"pending changes dropped: {len(self.pending)}")
        self._audit("logout", "")
        self.say("bye")
        self._login_prompt()

    # --- commands ---------------------------------------------------------------------

    def _on_command(self, text: str) -> None:
        def run() -> None:
            root = self._root()
            parsed = grammar.parse(root, text, self) if root is not None else None
            if parsed is not None and parsed.node.run is not None:
                parsed.node.run(self, parsed.args)

        self._run(run, text)

    def _run(self, action: Callable[[], None], what: str) -> None:
        """Run a command; its refusal is printed (one line each), then the prompt."""
        try:
            action()
        except grammar.ParseError as exc:
            self.say(str(exc))
        except CoreDown:
            self.say(CORE_DOWN)
        except BranchlineError as exc:  # ApiError's problems, or its one line
            self.say([f"% {p}" for p in getattr(exc, "problems", None) or [str(exc)]])
        except Exception as exc:  # noqa: BLE001 - a bug in one command must not end the session
            log.exception("console command %r failed", what)
            self.say(f"% internal error ({type(exc).__name__}: {exc}); see the log")
        if self.state in (Mode.EXEC, Mode.CONFIG):  # not MONITOR, WATCH: their end prompts
            self._prompt(self.state)

    def _audit(self, action: str, detail: Any, who: str | None = None) -> None:
        try:
            self.auth.audit(who or self.user or "?", self.where, action, detail)
        except (OSError, BranchlineError) as exc:
            log.warning("audit log: %s", exc)

    # --- the event monitor ------------------------------------------------------------

    def start_monitor(self, kinds: list[str]) -> None:
        """Print live events (one line each) from a reader thread until a key is pressed."""
        stream = self.api.events(kinds)
        self.say(f"monitoring {', '.join(kinds) or 'all events'}; press any key to stop")

        def read() -> None:
            for event in stream:
                if self.state == Mode.MONITOR:
                    self.say(views.event(event))

        thread = threading.Thread(target=read, name="console-monitor", daemon=True)
        self.monitor, self.state = (stream, thread), Mode.MONITOR
        thread.start()

    def stop_monitor(self, prompt: bool = True) -> None:
        if self.monitor is None:
            return
        (stream, thread), self.monitor = self.monitor, None
        self.state = Mode.EXEC
        stream.close()
        thread.join(2)
        if prompt:
            self.say("monitor stopped")
            self._prompt(Mode.EXEC)

    # --- firmware update (a bundle on a USB stick) -------------------------------------

    @property
    def update(self) -> UpdateClient:
        if self._update is None:
            self._update = UpdateClient()
        return self._update

    def _ask_update(self, what: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """One call to the update service; its refusal or absence as one BranchlineError."""
        try:
            return call()
        except BranchlineError as exc:
            reason = str(getattr(exc, "reason", "") or "")
            raise BranchlineError(f"{what} refused ({reason}): {exc}"
                                  if reason and reason != "unavailable"
                                  else f"{what}: {exc}") from None

    def update_install(self, path: str, force: bool) -> None:
        problem = bundle_problem(path)
        if problem:
            self._audit("update_refused", {"path": path, "error": problem})
            raise BranchlineError(problem)
        self.say(f"{path}: checking the bundle's signature (a minute for a big bundle) ...")
        try:
            st = self._ask_update("update install", lambda: self.update.install(
                os.path.abspath(path), "console", force=force))
        except BranchlineError as exc:
            self._audit("update_refused", {"path": path, "force": force, "error": str(exc)})
            raise
        self._audit("update_install", {"path": path, "force": force})
        self.say(f"{path}: accepted; the update service installs it, then reboots into it")
        self.start_watch(st)

    def update_status(self) -> None:
        self.say(views.update_status(self._ask_update("update status", self.update.status)))

    def update_cancel(self) -> None:
        st = self._ask_update("update cancel", self.update.cancel)
        self._audit("update_cancel", {"phase": st.get("phase")})
        self.say(f"update cancelled (phase {st.get('phase', '?')})")

    def start_watch(self, first: dict[str, Any]) -> None:
        """Print the update's progress lines from a thread until it reboots, fails or is
        cancelled, or Ctrl-C stops the watching (the update goes on)."""
        stop = threading.Event()
        self.say("press Ctrl-C to stop watching (the update goes on; `update status` shows it)")
        self.say(views.update_progress(first))
        with self._watch_lock:
            self.watch, self.state = stop, Mode.WATCH
        threading.Thread(target=self._watch, args=(stop, views.update_progress(first)),
                         name="console-update-watch", daemon=True).start()

    def _watch(self, stop: threading.Event, last: str) -> None:
        ended, misses = False, 0
        while not ended and not stop.wait(WATCH_POLL_S):
            try:
                st = self.update.status()
            except BranchlineError as exc:
                misses += 1
                if misses == 10:
                    self._watch_say(f"% the update service does not answer ({exc}); still "
                                    "trying (Ctrl-C stops watching)", stop)
                continue
            misses, line = 0, views.update_progress(st)
            ended = st.get("phase") in WATCH_ENDS
            if line != last:
                self._watch_say(line, stop)
                last = line
        with self._watch_lock:
            if ended and self.watch is stop:
                self.watch, self.state = None, Mode.EXEC
                self.say("the box reboots into the new firmware" if "REBOOTING" in last
                         else "update ended")
                self._prompt(Mode.EXEC)

    def _watch_say(self, line: str, stop: threading.Event) -> None:
        with self._watch_lock:
            if self.watch is stop:
                self.say(line)

    def stop_watch(self, prompt: bool = True) -> None:
        with self._watch_lock:
            stop, self.watch = self.watch, None
            if stop is None:
                return
            stop.set()
            self.state = Mode.EXEC
            if prompt:
                self.say(["stopped watching; the update goes on (`update status` shows it)"])
                self._prompt(Mode.EXEC)

    # --- confirmations ----------------------------------------------------------------

    def confirm(self, question: str, then: Callable[[], None]) -> None:
        self._ask, self._ask_back = then, self.state
        self.say(question)
        self._prompt(Mode.ASK, "type yes to go ahead, anything else cancels: ")

    def _on_answer(self, text: str) -> None:
        action, self._ask = self._ask, None
        self.state = self._ask_back
        if text.strip().lower() != "yes" or action is None:
            self.say("cancelled")
            self._prompt(self._ask_back)
            return
        self._run(action, "confirmed action")

    def do_reboot(self) -> None:
        self.api.reboot()
        self._audit("reboot", "")
        self.say("rebooting")

    def do_factory_reset(self) -> None:
        version = self.api.put_config(default_document(),
                                      "factory reset from the serial console")["version"]
        self._audit("factory_reset", {"version": version})
        code = self.auth.factory_reset()
        self.say([f"config reset to the defaults (version {version}); admin password "
                  f"forgotten; new setup code: {code}"])
        self.pending = {}
        self._login_prompt()

    # --- config -----------------------------------------------------------------------

    def doc(self, refresh: bool = False) -> dict | None:
        """The running document (cached; None while the core does not answer)."""
        if self._doc is None or refresh:
            try:
                self._doc = self.api.config().get("document")
            except BranchlineError:
                if refresh:
                    raise
        return self._doc

    def enter_config(self) -> None:
        self.doc(refresh=True)
        self.state = Mode.CONFIG
        self.say("configure mode: set <path> <value>, show diff, commit, rollback, "
                 "abort, exit")

    def leave_config(self, discard: bool) -> None:
        if self.pending and not discard:
            self.say(f"% {len(self.pending)} pending change(s): commit them, or abort to "
                     "discard them")
            return
        if self.pending:
            self.say(f"discarded {len(self.pending)} pending change(s)")
        self.pending = {}
        self.state = Mode.EXEC

    def set_pending(self, path: str, text: str) -> None:
        doc = self.doc(refresh=True) or {}
        value = confpath.typed(doc, path, text)
        changes = {**self.pending, path: value}
        try:
            self.api.validate_config(confpath.applied(doc, changes))
        except CoreDown:
            raise
        except BranchlineError as exc:
            problems: list[str] = list(getattr(exc, "problems", None) or [])
            mine = [p for p in problems or [str(exc)]
                    if p.startswith(path) or path.startswith(p.split(":")[0])]
            if mine or not problems:
                self.say([f"% {p}" for p in mine or [str(exc)]] + [f"% {path} not changed"])
                return
            self.say(f"% note: {problems[0]} (commit checks again)")
        self.pending[path] = value
        self.say(f"{path}: {self._was(doc, path)} -> {views.value_text(value)} (pending)")

    @staticmethod
    def _was(doc: dict, path: str) -> str:
        try:
            return views.value_text(paths.get(doc, path))
        except KeyError:
            return "(new)"

    def drop_pending(self, path: str) -> None:
        if path not in self.pending:
            self.say(f'% "{path}" has no pending change; see show diff')
            return
        del self.pending[path]
        self.say(f"{path}: pending change dropped")

    def pending_diff(self) -> list[str]:
        if not self.pending:
            return ["no pending changes"]
        doc = self._doc or {}
        out = []
        for path, value in self.pending.items():
            out += [f"- {path} = {self._was(doc, path)}",
                    f"+ {path} = {views.value_text(value)}"]
        return out

    def commit(self, comment: str) -> None:
        if not self.pending:
            self.say("nothing to commit")
            return
        reason = f"console: {comment}" if comment else f"console: {', '.join(self.pending)}"
        got = self.api.patch_config(dict(self.pending), reason)
        version = got["version"]
        self._audit("config_commit", {"version": version, "set": self.pending})
        self.say(f"committed {len(self.pending)} change(s) as version {version}")
        self._say_restart(got.get("restart_required") or [])
        self.pending = {}
        self.doc(refresh=True)

    def rollback(self, version: int | None) -> None:
        if self.pending:
            self.say(f"% {len(self.pending)} pending change(s): commit or abort them first")
            return
        got = self.api.rollback(version)
        new = got["version"]
        self._audit("config_rollback", {"to": version, "version": new})
        target = f"version {version}" if version is not None else "the previous version"
        self.say(f"rolled back to {target}; the running config is now version {new}")
        self._say_restart(got.get("restart_required") or [])
        self.doc(refresh=True)

    def _say_restart(self, restart: list[str]) -> None:
        if restart:
            self.say(f"% saved, but takes effect after a restart ('reboot'): "
                     f"{', '.join(restart)}")
        else:
            self.say("applied to the running box")


def bundle_problem(path: str) -> str:
    """Why `path` cannot be handed over as a bundle ("" when it can): one line naming the
    path and the fix."""
    if not path.startswith("/"):
        return (f"{path}: give the bundle's full path, e.g. "
                "/media/usb/branchline-1.2.raucb")
    if not os.path.exists(path):
        return (f"{path}: no such file; is the USB stick plugged in and mounted? "
                "(ls /media/usb lists it)")
    if not os.path.isfile(path):
        return f"{path}: not a file; give the .raucb bundle inside it"
    if not os.access(path, os.R_OK):
        return f"{path}: cannot be read (permission denied); copy it somewhere readable"
    return ""
