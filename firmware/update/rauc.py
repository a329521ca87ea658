"""The RAUC command line (Debian's rauc 1.8) as the update service uses it: bundle info,
install with progress, slot status, mark-good / mark-bad. `rauc install` and `rauc status`
talk to the RAUC service over D-Bus, so `env` carries the bus address the tests start
(DBUS_SYSTEM_BUS_ADDRESS); `rauc info` checks the signature itself.

RAUC's refusals become an UpdateError with a Reason and one line that names the fix. The
texts matched are RAUC 1.8's own (src/bundle.c, src/signature.c, src/install.c, and the
progress lines of src/main.c: "%3d%% <step>" and "LastError: <text>")."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from foundation.errors import BranchlineError

INFO_TIMEOUT_S = 120.0  # a signature check reads the whole bundle
STATUS_TIMEOUT_S = 30.0
SQUASHFS_MAGIC = b"hsqs"  # a plain bundle is a squashfs image with a CMS signature appended
_PROGRESS = re.compile(r"^\s*(\d{1,3})% (.*)$")
_COMPATIBLE = re.compile(r"Compatible mismatch: Expected '([^']*)' but bundle manifest has '([^']*)'")


class Reason(StrEnum):
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    WRONG_BOARD = "wrong_board"
    DOWNGRADE = "downgrade"
    CORRUPT = "corrupt"
    CALLS_UP = "calls_up"
    OUTSIDE_WINDOW = "outside_window"
    BUSY = "busy"
    NO_SPACE = "no_space"
    INSTALL_FAILED = "install_failed"
    HEALTH_FAILED = "health_failed"
    BAD_INPUT = "bad_input"  # a request the API cannot read (field named)
    UNAVAILABLE = "unavailable"  # the update service does not answer


class UpdateError(BranchlineError):
    """An update refused or failed: `reason` for programs, str() the one line for people."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = Reason(reason)


@dataclass(frozen=True)
class BundleInfo:
    compatible: str
    version: str
    build: str
    hash: str  # SHA-256 of the bundle file (what the web page shows and checks)


def refusal(text: str, bundle: Path | None = None) -> UpdateError:
    """RAUC's error text as an UpdateError naming the fix."""
    detail = _last_line(text)
    if match := _COMPATIBLE.search(text):
        return UpdateError(Reason.WRONG_BOARD, f"made for board {match[2]}, this box is "
                           f"{match[1]}: get the bundle built for {match[1]}")
    if "Error creating proxy" in text or "RAUC service disappeared" in text:
        return UpdateError(Reason.INSTALL_FAILED, f"the RAUC service does not answer on D-Bus "
                           f"(RAUC: {detail}): start rauc.service; nothing was installed")
    if "No such file:" in text:
        return UpdateError(Reason.CORRUPT, f"{bundle or 'the bundle'}: no such file; "
                           "give the path of the .raucb")
    if "Signature size" in text or "Signature data is no valid CMS" in text:
        if bundle is not None and _starts_with(bundle, SQUASHFS_MAGIC):
            return UpdateError(Reason.UNSIGNED, "bundle is not signed: get the signed .raucb "
                               "from the release")
        return UpdateError(Reason.CORRUPT, f"not a RAUC bundle or cut short (RAUC: {detail}): "
                           "download the .raucb again")
    if "Verify error" in text or "Failed to verify X509 cert" in text:
        return UpdateError(Reason.BAD_SIGNATURE, "signed by a certificate this box does not "
                           f"trust (RAUC: {detail}): get the bundle signed for this fleet")
    if "signature verification failed" in text or "payload is corrupted" in text:
        return UpdateError(Reason.CORRUPT, "the bundle was changed after it was signed "
                           f"(RAUC: {detail}): download it again and check its SHA-256")
    if "No space left on device" in text:
        return UpdateError(Reason.NO_SPACE, f"out of space while installing (RAUC: {detail}): "
                           "free space on the data partition and try again")
    if "Invalid bundle format" in text or "Failed to load manifest" in text:
        return UpdateError(Reason.CORRUPT, f"not a valid RAUC bundle (RAUC: {detail}): "
                           "download the .raucb again")
    return UpdateError(Reason.INSTALL_FAILED, f"RAUC: {detail or 'failed without a message'}; "
                       "the running version is unchanged, see `rauc status`")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and not ln.startswith("rauc-Message")]
    lines = [ln.removeprefix("LastError: ") for ln in lines
             if not re.match(r"\w+:error:", ln) and "while installing `" not in ln
             and not ln.startswith("Installing `")]
    return lines[-1] if lines else ""


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Rauc:
    """The `rauc` command with `conf` (system.conf; RAUC's default when None) and `env`."""

    def __init__(self, conf: Path | None = None, env: Mapping[str, str] | None = None,
                 binary: str = "rauc") -> None:
        self.conf, self.binary = conf, binary
        self.env = {**os.environ, **(env or {})}

    def _argv(self, *args: str) -> list[str]:
        conf = ["--conf", str(self.conf)] if self.conf is not None else []
        return [self.binary, *conf, *args]

    def _run(self, *args: str, timeout: float, bundle: Path | None = None) -> str:
        try:
            done = subprocess.run(self._argv(*args), env=self.env, capture_output=True,
                                  text=True, timeout=timeout, check=False)
        except FileNotFoundError:
            raise UpdateError(Reason.INSTALL_FAILED, f"{self.binary}: not installed; "
                              "install Debian's rauc") from None
        except subprocess.TimeoutExpired:
            raise UpdateError(Reason.INSTALL_FAILED, f"rauc {args[0]} did not finish within "
                              f"{timeout:g} s; is the RAUC service running?") from None
        if done.returncode != 0:
            raise refusal(done.stderr + done.stdout, bundle)
        return done.stdout

    def info(self, bundle: Path, keyring: Path) -> BundleInfo:
        """The bundle's manifest once its signature checked out against `keyring`."""
        out = self._run("info", "--keyring", str(keyring), "--output-format=json", str(bundle),
                        timeout=INFO_TIMEOUT_S, bundle=bundle)
        doc = json.loads(out)
        return BundleInfo(compatible=str(doc.get("compatible") or ""),
                          version=str(doc.get("version") or ""),
                          build=str(doc.get("build") or ""), hash=file_hash(bundle))

    def install(self, bundle: Path, progress: Callable[[int, str], None]) -> None:
        """Install into the other slot; progress(percent, step) for each line RAUC prints."""
        proc = subprocess.Popen(self._argv("install", str(bundle)), env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        lines: list[str] = []
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if match := _PROGRESS.match(line):
                progress(min(100, int(match[1])), match[2].strip())
        if proc.wait() != 0:
            raise refusal("\n".join(_errors_first(lines)), bundle)

    def status(self) -> dict[str, Any]:
        doc = json.loads(self._run("status", "--output-format=json",
                                   timeout=STATUS_TIMEOUT_S))
        return doc if isinstance(doc, dict) else {}

    def installed(self) -> list[SlotRecord]:
        """The slots without a parent (the roots; their boot partitions follow them), each
        with its state and the bundle RAUC recorded as installed in it."""
        doc = json.loads(self._run("status", "--detailed", "--output-format=json",
                                   timeout=STATUS_TIMEOUT_S))
        slots = doc.get("slots") if isinstance(doc, dict) else None
        return [_slot_record(name, body) for entry in (slots or []) if isinstance(entry, dict)
                for name, body in entry.items()
                if isinstance(body, dict) and not body.get("parent")]

    def mark_good(self) -> None:
        self._run("status", "mark-good", timeout=STATUS_TIMEOUT_S)

    def mark_bad(self, slot: str = "booted") -> None:
        """`booted`, `other` or a slot name, as `rauc status mark-bad` takes them."""
        self._run("status", "mark-bad", slot, timeout=STATUS_TIMEOUT_S)


@dataclass(frozen=True)
class SlotRecord:
    name: str
    state: str  # "booted", "active" or "inactive"
    version: str  # of the bundle installed in it ("" when RAUC recorded none)
    build: str


def _slot_record(name: str, body: dict[str, Any]) -> SlotRecord:
    bundle = (body.get("slot_status") or {}).get("bundle") or {}
    return SlotRecord(name, str(body.get("state") or ""), str(bundle.get("version") or ""),
                      str(bundle.get("build") or ""))


def _errors_first(lines: list[str]) -> list[str]:
    """The install's output with its LastError last, so it is the detail shown."""
    errors = [ln for ln in lines if ln.startswith("LastError:")]
    return [ln for ln in lines if ln not in errors] + errors[-1:]
