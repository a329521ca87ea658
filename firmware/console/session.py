"""One technician's session on the serial console: login, exec and configure modes.

States: LOGIN (user name) -> PASSWORD -> EXEC; before first setup SETUP_CODE ->
NEW_PASSWORD -> CONFIRM_PASSWORD -> EXEC. EXEC <-> CONFIG via `configure` / `exit`.
ASK waits for a yes/no answer (reboot, factory-reset). Logout, an idle timeout or a
pulled cable return to LOGIN.

Everything the core does goes through `api` (firmware/console/corelink.CoreLink): a core
that does not answer prints "% the core is not answering ..." and the session goes on.
The account (setup code, password, lockout, audit log) is firmware.auth.Auth, shared
with the web page. Pending config changes are kept here until `commit` (PATCH /config);
a refused commit keeps them.

Assumes one session per serial port, driven by one thread: `start()`, then the line
editor's hooks, then `tick()` now and then for the idle timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from firmware.auth import ADMIN, AuthError
from firmware.console import commands, confpath, grammar, views
from firmware.console.corelink import CoreDown
from firmware.console.lineedit import LineEditor
from firmware.core.config import default_document
from foundation.errors import BranchlineError

log = logging.getLogger(__name__)

LOGIN, PASSWORD, SETUP_CODE, NEW_PASSWORD, CONFIRM_PASSWORD, EXEC, CONFIG, ASK = (
    "login", "password", "setup-code", "new-password", "confirm-password", "exec",
    "config", "ask")
IDLE_TIMEOUT_S = 15 * 60
CORE_DOWN = "% the core is not answering (is branchline-core running?)"


class Session:
    """See the module docstring. `write(bytes)` sends to the terminal."""

    def __init__(self, write: Callable[[bytes], None], api, auth, where: str,
                 fingerprint: Callable[[], str | None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic,
                 idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        self.write, self.api, self.auth, self.where = write, api, auth, where
        self.fingerprint, self.clock, self.idle_timeout_s = fingerprint, clock, idle_timeout_s
        self.editor = LineEditor(write, self)
        self.exec_root, self.config_root = commands.exec_tree(), commands.config_tree()
        self.state = LOGIN
        self.user = ""
        self.name = "branchline"
        self.pending: dict[str, Any] = {}
        self._doc: dict | None = None
        self._new_password = ""
        self._ask: Callable[[], None] | None = None
        self._ask_back = EXEC
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
            self._prompt(SETUP_CODE, "setup code: ", echo=False)
        else:
            self._prompt(LOGIN, "login: ")

    def _prompt(self, state: str, text: str | None = None, echo: bool = True) -> None:
        self.state = state
        self.editor.start(text if text is not None else self.prompt(), echo)

    def prompt(self) -> str:
        return f"{self.name}(config)# " if self.state == CONFIG else f"{self.name}# "

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
        handler = _LINE_HANDLERS[self.state]
        handler(self, text)

    def on_help(self, text: str) -> list[str]:
        root = self._root()
        return grammar.help_lines(root, text, self) if root else []

    def on_complete(self, text: str) -> tuple[str, list[str]]:
        root = self._root()
        return grammar.complete(root, text, self) if root else (text, [])

    def on_interrupt(self) -> None:
        if self.state in (EXEC, CONFIG):
            self._prompt(self.state)
        elif self.state == ASK:
            self.say("cancelled")
            self._prompt(self._ask_back)
        else:
            self._login_prompt()

    def _root(self) -> grammar.Node | None:
        return {EXEC: self.exec_root, CONFIG: self.config_root}.get(self.state)

    def tick(self) -> None:
        """Log out a session idle for too long."""
        idle = self.clock() - self.last_input
        if self.state not in (LOGIN, SETUP_CODE) and idle > self.idle_timeout_s:
            self.say(["", "% idle too long: logged out"])
            self.logout()

    def feed(self, data: bytes) -> None:
        self.last_input = self.clock()
        self.editor.feed(data)

    def hangup(self) -> None:
        """The cable was pulled: whoever plugs in next starts at the login prompt."""
        if self.user:
            self._audit("logout", "serial port disconnected")
        self.user, self.pending, self._doc = "", {}, None
        self.state = LOGIN

    # --- login ------------------------------------------------------------------------

    def _on_login(self, text: str) -> None:
        user = text.strip()
        if not user:
            self._prompt(LOGIN, "login: ")
            return
        self.user = user[:32]
        self._prompt(PASSWORD, "password: ", echo=False)

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
        self._prompt(NEW_PASSWORD, "new admin password: ", echo=False)

    def _on_new_password(self, text: str) -> None:
        problem = self.auth.password_problem(text)
        if problem:
            self.say(f"% {problem}")
            self._prompt(NEW_PASSWORD, "new admin password: ", echo=False)
            return
        self._new_password = text
        self._prompt(CONFIRM_PASSWORD, "again: ", echo=False)

    def _on_confirm_password(self, text: str) -> None:
        new, self._new_password = self._new_password, ""
        try:
            self.auth.set_password(new, text)
        except AuthError as exc:
            self.say(f"% {exc}")
            self._prompt(NEW_PASSWORD, "new admin password: ", echo=False)
            return
        self._audit("password_set", "first setup on the serial console")
        self.say("admin password set; the setup code no longer works")
        self._welcome()

    def _welcome(self) -> None:
        self._refresh_name()
        self.say(f"logged in as {self.user}; type ? for help")
        self._prompt(EXEC)

    def logout(self) -> None:
        if self.pending:
            self.say(f"pending changes dropped: {len(self.pending)}")
        self._audit("logout", "")
        self.say("bye")
        self._login_prompt()

    # --- commands ---------------------------------------------------------------------

    def _on_command(self, text: str) -> None:
        try:
            parsed = grammar.parse(self._root(), text, self)
            if parsed is not None:
                parsed.node.run(self, parsed.args)
        except grammar.ParseError as exc:
            self.say(str(exc))
        except CoreDown:
            self.say(CORE_DOWN)
        except BranchlineError as exc:
            self._say_error(exc)
        except Exception as exc:  # noqa: BLE001 - a bug in one command must not end the session
            log.exception("console command %r failed", text)
            self.say(f"% internal error ({type(exc).__name__}: {exc}); see the log")
        self._reprompt()

    def _reprompt(self) -> None:
        if self.state in (EXEC, CONFIG):
            self._prompt(self.state)

    def _say_error(self, exc: BranchlineError) -> None:
        problems = getattr(exc, "problems", None) or [str(exc)]
        self.say([f"% {p}" for p in problems])

    def _audit(self, action: str, detail: Any, who: str | None = None) -> None:
        try:
            self.auth.audit(who or self.user or "?", self.where, action, detail)
        except (OSError, BranchlineError) as exc:
            log.warning("audit log: %s", exc)

    # --- confirmations ----------------------------------------------------------------

    def confirm(self, question: str, then: Callable[[], None]) -> None:
        self._ask, self._ask_back = then, self.state
        self.say(question)
        self._prompt(ASK, "type yes to go ahead, anything else cancels: ")

    def _on_answer(self, text: str) -> None:
        action, self._ask = self._ask, None
        self.state = self._ask_back
        if text.strip().lower() != "yes" or action is None:
            self.say("cancelled")
            self._prompt(self._ask_back)
            return
        self._on_command_action(action)

    def _on_command_action(self, action: Callable[[], None]) -> None:
        try:
            action()
        except CoreDown:
            self.say(CORE_DOWN)
        except BranchlineError as exc:
            self._say_error(exc)
        self._reprompt()

    def do_reboot(self) -> None:
        self.api.reboot()
        self._audit("reboot", "")
        self.say("rebooting")

    def do_factory_reset(self) -> None:
        version = self.api.put_config(default_document(), "factory reset from the serial console")
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
        self.state = CONFIG
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
        self.state = EXEC

    def set_pending(self, path: str, text: str) -> None:
        doc = self.doc(refresh=True) or {}
        value = confpath.typed(doc, path, text)
        changes = {**self.pending, path: value}
        try:
            self.api.validate(confpath.applied(doc, changes))
        except CoreDown:
            raise
        except BranchlineError as exc:
            mine = [p for p in getattr(exc, "problems", []) or [str(exc)]
                    if p.startswith(path) or path.startswith(p.split(":")[0])]
            if mine or not getattr(exc, "problems", None):
                self.say([f"% {p}" for p in mine or [str(exc)]] +
                         [f"% {path} not changed"])
                return
            self.say(f"% note: {exc.problems[0]} (commit checks again)")
        self.pending[path] = value
        self.say(f"{path}: {self._was(doc, path)} -> {views.value_text(value)} (pending)")

    @staticmethod
    def _was(doc: dict, path: str) -> str:
        try:
            return views.value_text(confpath.lookup(doc, path))
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

    def _say_restart(self, paths: list[str]) -> None:
        if paths:
            self.say(f"% saved, but takes effect after a restart ('reboot'): "
                     f"{', '.join(paths)}")
        else:
            self.say("applied to the running box")


_LINE_HANDLERS: dict[str, Callable[[Session, str], None]] = {
    LOGIN: Session._on_login,
    PASSWORD: Session._on_password,
    SETUP_CODE: Session._on_setup_code,
    NEW_PASSWORD: Session._on_new_password,
    CONFIRM_PASSWORD: Session._on_confirm_password,
    EXEC: Session._on_command,
    CONFIG: Session._on_command,
    ASK: Session._on_answer,
}
