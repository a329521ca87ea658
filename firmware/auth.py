"""The technician's one admin account, shared by the web page and the serial console:
no default password but a one-time setup code (data_dir/setup-code, 0600, for the box
label), scrypt-hashed passwords, a lockout after MAX_FAILURES bad tries shared through
account.json (flock, atomic replace), and an append-only JSON-lines audit log."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from foundation.errors import BranchlineError

log = logging.getLogger(__name__)

ADMIN = "admin"
MIN_PASSWORD = 10
MAX_FAILURES = 5
LOCKOUT_S = 15 * 60
SCRYPT = {"n": 2**14, "r": 8, "p": 1}
ACCOUNT_FILE = "account.json"
SETUP_FILE = "setup-code"
AUDIT_FILE = "audit.log"


class AuthError(BranchlineError):
    """A login or password change was refused; the message says why and what to do."""


class LockedOut(AuthError):
    """Too many bad passwords: the account is locked for a while."""

    def __init__(self, seconds: float):
        self.seconds = max(0.0, seconds)
        minutes = max(1, round(self.seconds / 60))
        super().__init__(f"account locked after {MAX_FAILURES} bad passwords; "
                         f"try again in {minutes} min")


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    """`scrypt$n$r$p$salt$hash` (base64 parts) of a password or setup code."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, dklen=32, **SCRYPT)
    b64 = base64.b64encode
    return (f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}$"
            f"{b64(salt).decode()}${b64(digest).decode()}")


def check_secret(secret: str, stored: str) -> bool:
    """Constant-time check of a secret against `hash_secret` output."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), dklen=32,
                             n=int(n), r=int(r), p=int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def new_setup_code() -> str:
    return base64.b32encode(secrets.token_bytes(10)).decode()[:10]


class Auth:
    """The admin account, its setup code, lockout and the audit log in one data dir."""

    def __init__(self, data_dir: str | os.PathLike, clock: Callable[[], float] = time.time,
                 max_failures: int = MAX_FAILURES, lockout_s: float = LOCKOUT_S):
        self.dir, self.clock = Path(data_dir), clock
        self.max_failures, self.lockout_s = max_failures, lockout_s
        self.account_path, self.setup_path, self.audit_path = (
            self.dir / ACCOUNT_FILE, self.dir / SETUP_FILE, self.dir / AUDIT_FILE)

    # ---- state ----
    def needs_setup(self) -> bool:
        """True until the admin password is set (the setup code is the only way in)."""
        return not self._state().get("password")

    def ensure_setup_code(self) -> str | None:
        """The setup code to print on the console (made on first start); None once set up."""
        with self._locked():
            state = self._state()
            if state.get("password"):
                return None
            code = self._read_setup_code()
            if code and state.get("setup") and check_secret(code, state["setup"]):
                return code
            code = new_setup_code()
            state["setup"] = hash_secret(code)
            write_private(self.setup_path, f"{code}\n".encode())
            self._save(state)
            log.info("new setup code written to %s", self.setup_path)
            return code

    def locked_for(self) -> float:
        """Seconds the account stays locked (0: not locked)."""
        return max(0.0, self._state().get("locked_until", 0.0) - self.clock())

    # ---- checks ----
    def login(self, user: str, password: str) -> None:
        """Accept the admin password, or raise AuthError / LockedOut (counted)."""
        with self._locked():
            state = self._state()
            self._refuse_if_locked(state)
            stored = state.get("password")
            if not stored:
                raise AuthError("the admin password is not set yet: log in with the setup "
                                "code from the serial console or the box label")
            ok = check_secret(password, stored)
            self._count(state, ok and user == ADMIN)
            if not ok or user != ADMIN:
                raise AuthError("wrong user name or password")

    def check_setup_code(self, code: str) -> None:
        """Accept the one-time setup code (before first setup), or raise (counted)."""
        with self._locked():
            state = self._state()
            self._refuse_if_locked(state)
            if state.get("password") or not state.get("setup"):
                raise AuthError("the setup code was already used: log in with the admin "
                                "password")
            ok = check_secret(_normal_code(code), state["setup"])
            self._count(state, ok)
            if not ok:
                raise AuthError("wrong setup code: read it on the serial console or the "
                                "box label")

    def set_password(self, new: str, confirm: str | None = None) -> None:
        """Set the admin password (after a setup-code or password login)."""
        problem = self.password_problem(new, confirm)
        if problem:
            raise AuthError(problem)
        with self._locked():
            state = self._state()
            if state.get("setup") and check_secret(_normal_code(new), state["setup"]):
                raise AuthError("password: must not be the setup code; choose your own")
            state["password"] = hash_secret(new)
            state.pop("setup", None)
            state["failures"], state["locked_until"] = 0, 0.0
            self._save(state)
            self.setup_path.unlink(missing_ok=True)

    @staticmethod
    def password_problem(new: str, confirm: str | None = None) -> str:
        """'' when the password is acceptable, else the rule it breaks."""
        if len(new) < MIN_PASSWORD:
            return f"password: must be at least {MIN_PASSWORD} characters"
        if new.strip() != new or not new.isprintable():
            return "password: no leading/trailing spaces or control characters"
        if confirm is not None and confirm != new:
            return "confirm: the two passwords differ; type the same password twice"
        return ""

    def factory_reset(self) -> str:
        """Forget the admin password; a new setup code is made (returned)."""
        with self._locked():
            self.account_path.unlink(missing_ok=True)
            self.setup_path.unlink(missing_ok=True)
        return self.ensure_setup_code() or ""

    # ---- audit log ----
    def audit(self, who: str, where: str, action: str, detail: Any = "") -> None:
        """Append one line: who did what, from where, when."""
        line = json.dumps({"time": self.clock(), "who": who, "where": where,
                           "action": action, "detail": detail}, sort_keys=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.audit_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def audit_entries(self, offset: int = 0, limit: int = 50) -> tuple[int, list[dict]]:
        """(total, newest first page) of the audit log; damaged lines are skipped."""
        try:
            lines = self.audit_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return 0, []
        entries = []
        for line in reversed(lines):
            with contextlib.suppress(ValueError):
                entries.append(json.loads(line))
        return len(entries), entries[offset:offset + limit]

    # ---- internals ----
    def _refuse_if_locked(self, state: dict) -> None:
        left = state.get("locked_until", 0.0) - self.clock()
        if left > 0:
            raise LockedOut(left)

    def _count(self, state: dict, ok: bool) -> None:
        if ok:
            state["failures"], state["locked_until"] = 0, 0.0
        else:
            state["failures"] = state.get("failures", 0) + 1
            if state["failures"] >= self.max_failures:
                state["locked_until"] = self.clock() + self.lockout_s
                state["failures"] = 0
                log.warning("admin account locked for %.0f s", self.lockout_s)
        self._save(state)

    def _state(self) -> dict:
        try:
            state = json.loads(self.account_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise AuthError(f"{self.account_path}: unreadable ({exc}); restore it or run "
                            "factory-reset on the serial console") from None
        return state if isinstance(state, dict) else {}

    def _save(self, state: dict) -> None:
        write_private(self.account_path, (json.dumps(state, indent=1) + "\n").encode())

    def _read_setup_code(self) -> str:
        try:
            return self.setup_path.read_text().strip()
        except FileNotFoundError:
            return ""

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.dir / ".auth.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _normal_code(code: str) -> str:
    """Setup codes are typed from a label: ignore case, spaces and dashes."""
    return "".join(code.split()).replace("-", "").upper()


def write_private(path: Path, data: bytes) -> None:
    """Atomic write of a 0600 file (temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
