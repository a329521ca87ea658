"""RAUC's custom bootloader backend for the Raspberry Pi's tryboot A/B (`branchline-tryboot`).

RAUC 1.8 runs the program named by `bootloader-custom-backend=` in system.conf with
(rauc/rauc v1.8: docs/integration.rst "Custom bootloader backend interface",
src/bootchooser.c custom_backend_get/custom_backend_set):
  get-primary            -> print the primary slot's bootname, exit 0
  get-state <bootname>   -> print "good" or "bad", exit 0
  set-primary <bootname> -> exit 0 when done
  set-state <bootname> good|bad -> exit 0 when done
Any non-zero exit is a failure; RAUC reports "custom backend: <path> failed with exit code N".
During `rauc install` RAUC calls get-primary and get-state for every slot, then
`set-state <target> bad`, writes the images, then `set-primary <target>` (src/install.c,
src/mark.c mark_active); `rauc status mark-good|mark-bad` call set-state on the slot,
`mark-active` calls set-primary.

The Pi side (raspberrypi/documentation documentation/asciidoc/computers/config_txt/autoboot.adoc,
https://www.raspberrypi.com/documentation/computers/config_txt.html#autoboot-txt):
autoboot.txt on partition 1 names the boot partition in [all]; with `tryboot_a_b=1` a reboot
with the one-shot tryboot flag (`reboot "0 tryboot"`) uses the [tryboot] section instead.
So here:
  primary      = the slot [all] boot_partition names (where a normal boot, a crash or a power
                 cut lands);
  set-primary  = of the other slot: [tryboot] boot_partition=<it> (the one-shot try); [all] stays;
  set-state good on the booted slot during a tryboot boot = commit: [all]=booted, [tryboot]=old;
  set-state bad = [all] never names a bad slot; refused when no good slot would be left.
The good/bad record lives in a comment line of autoboot.txt (the firmware skips comments), so
one atomic rename changes everything at once. autoboot.txt must stay under 512 bytes.
Writes: temp file, fsync, rename, fsync the directory, under an flock of the directory.

Test hook (honoured only with BRANCHLINE_TEST_HOOKS=1), for the power-loss tests: at the
write's named point (BRANCHLINE_CRASH_AT: autoboot-temp-written, autoboot-renamed) the
backend sends itself BRANCHLINE_CRASH_SIGNAL (KILL, the default; or STOP: frozen exactly
there, so a harness can cut the power while nothing else of the write has happened), only
in the call BRANCHLINE_CRASH_VERB names when set (`set-primary`, `set-state`, or
`set-state:good` / `set-state:bad` for one kind of set-state): RAUC calls the backend several
times per install and the first write would hit the point otherwise.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from firmware.update import bootflags
from foundation.errors import BranchlineError

DEFAULT_CONF = Path("/etc/rauc/tryboot.conf")
AUTOBOOT = "autoboot.txt"
TEMP = "autoboot.txt.new"
MAX_AUTOBOOT_BYTES = 512  # the firmware reads no more (autoboot.adoc)
STATE_TAG = "# branchline-tryboot:"
CRASH_POINTS = ("autoboot-temp-written", "autoboot-renamed")
CRASH_SIGNALS = {"KILL": signal.SIGKILL, "STOP": signal.SIGSTOP}
VERBS = ("get-primary", "get-state", "set-primary", "set-state", "init")


class TrybootError(BranchlineError):
    """A refusal or a broken boot-selection partition, said in one line with the fix."""


class SlotState(StrEnum):
    GOOD = "good"
    BAD = "bad"


@dataclass(frozen=True)
class Settings:
    """tryboot.conf: where the boot-selection partition is mounted and slot -> boot partition."""

    bootsel: Path
    slots: dict[str, int]

    def slot_of(self, partition: int | None) -> str | None:
        return next((name for name, part in self.slots.items() if part == partition), None)

    def partition_of(self, slot: str) -> int:
        if slot not in self.slots:
            known = ", ".join(sorted(self.slots))
            raise TrybootError(f"unknown slot {slot!r}: tryboot.conf knows {known}")
        return self.slots[slot]


@dataclass(frozen=True)
class Autoboot:
    """The parts of autoboot.txt this backend owns."""

    all_partition: int
    try_partition: int
    states: dict[str, SlotState] = field(default_factory=dict)


# -- settings ---------------------------------------------------------------------------------

def parse_settings(text: str, origin: str = "tryboot.conf") -> Settings:
    """`bootsel=<mount path>` and one `<slot>=<boot partition>` line per slot."""
    bootsel: Path | None = None
    slots: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        if not sep or not key or not value:
            raise TrybootError(f"{origin} line {number}: expected key=value, got {line!r}")
        if key == "bootsel":
            bootsel = Path(value)
        elif re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key) and value.isdigit():
            slots[key] = int(value)
        else:
            raise TrybootError(f"{origin} line {number}: {line!r} is neither bootsel= nor <slot>=<partition>")
    if bootsel is None or len(slots) < 2:
        raise TrybootError(f"{origin}: needs bootsel=<path> and two slots (A=2, B=3)")
    return Settings(bootsel, slots)


def load_settings(env: Mapping[str, str] = os.environ) -> Settings:
    path = Path(env.get("BRANCHLINE_TRYBOOT_CONF", str(DEFAULT_CONF)))
    try:
        text = path.read_text()
    except OSError as exc:
        raise TrybootError(f"cannot read {path}: {exc.strerror}; install image/rauc/tryboot.conf there") from None
    return parse_settings(text, str(path))


# -- autoboot.txt -----------------------------------------------------------------------------

def _parse_states(line: str) -> dict[str, SlotState]:
    states: dict[str, SlotState] = {}
    for item in line[len(STATE_TAG):].split():
        slot, _, state = item.partition("=")
        if state in (SlotState.GOOD, SlotState.BAD):
            states[slot] = SlotState(state)
    return states


def _parse_lines(text: str) -> tuple[dict[str, dict[str, str]], dict[str, SlotState]]:
    sections: dict[str, dict[str, str]] = {}
    states: dict[str, SlotState] = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(STATE_TAG):
            states = _parse_states(line)
        elif not line or line.startswith("#"):
            continue
        elif re.fullmatch(r"\[[A-Za-z0-9_]+\]", line):
            current = sections.setdefault(line[1:-1], {})
        elif "=" in line and current is not None:
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
        else:
            raise ValueError(f"unreadable line {line!r}")
    return sections, states


def _partition_value(sections: dict[str, dict[str, str]], section: str) -> int:
    value = sections.get(section, {}).get("boot_partition", "")
    if not value.isdigit():
        raise ValueError(f"no boot_partition=<number> in [{section}]")
    return int(value)


def parse_autoboot(text: str) -> Autoboot:
    """Our autoboot.txt: [all] tryboot_a_b=1 and boot_partition, [tryboot] boot_partition."""
    sections, states = _parse_lines(text)
    if sections.get("all", {}).get("tryboot_a_b") != "1":
        raise ValueError("no tryboot_a_b=1 in [all]")
    return Autoboot(_partition_value(sections, "all"), _partition_value(sections, "tryboot"), states)


def render_autoboot(autoboot: Autoboot) -> str:
    """The file text; the state comment first, then the sections the firmware reads."""
    states = " ".join(f"{slot}={state}" for slot, state in sorted(autoboot.states.items()))
    text = (f"{STATE_TAG} {states}\n[all]\ntryboot_a_b=1\nboot_partition={autoboot.all_partition}\n"
            f"[tryboot]\nboot_partition={autoboot.try_partition}\n")
    if len(text.encode()) > MAX_AUTOBOOT_BYTES:
        raise TrybootError(f"autoboot.txt would exceed {MAX_AUTOBOOT_BYTES} bytes: use fewer slots")
    return text


def _repair_hint(settings: Settings) -> str:
    return f"repair with `branchline-tryboot init <slot that boots>` (e.g. init {min(settings.slots)})"


def read_autoboot(settings: Settings) -> Autoboot:
    path = settings.bootsel / AUTOBOOT
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise TrybootError(f"cannot read {path}: {reason}; {_repair_hint(settings)}") from None
    try:
        autoboot = parse_autoboot(text)
    except ValueError as exc:
        raise TrybootError(f"{path} is not a tryboot A/B autoboot.txt ({exc}); {_repair_hint(settings)}") from None
    if settings.slot_of(autoboot.all_partition) is None:
        raise TrybootError(f"{path}: [all] boot_partition={autoboot.all_partition} is no slot "
                           f"of tryboot.conf; {_repair_hint(settings)}")
    return autoboot


# -- atomic write -----------------------------------------------------------------------------

@dataclass(frozen=True)
class CrashHook:
    """The test hook of one backend call: the point to stop at (None: no hook) and how."""

    point: str | None = None
    sig: signal.Signals = signal.SIGKILL

    def at(self, point: str) -> None:
        if point == self.point:
            os.kill(os.getpid(), self.sig)


NO_CRASH = CrashHook()


def crash_hook(args: Sequence[str], env: Mapping[str, str] = os.environ) -> CrashHook:
    """The hook for the call `args` (verb first) from the environment; NO_CRASH unless
    BRANCHLINE_TEST_HOOKS=1 and BRANCHLINE_CRASH_AT is set and BRANCHLINE_CRASH_VERB, when
    set, matches this call."""
    point = env.get("BRANCHLINE_CRASH_AT", "")
    if env.get("BRANCHLINE_TEST_HOOKS") != "1" or not point:
        return NO_CRASH
    if point not in CRASH_POINTS:
        raise TrybootError(f"BRANCHLINE_CRASH_AT={point!r} is no crash point: use one of "
                           f"{', '.join(CRASH_POINTS)}")
    name = env.get("BRANCHLINE_CRASH_SIGNAL", "KILL").upper().removeprefix("SIG")
    if name not in CRASH_SIGNALS:
        raise TrybootError(f"BRANCHLINE_CRASH_SIGNAL={name!r}: use KILL or STOP")
    verb = env.get("BRANCHLINE_CRASH_VERB", "")
    return CrashHook(point, CRASH_SIGNALS[name]) if _verb_matches(verb, args) else NO_CRASH


def _verb_matches(verb: str, args: Sequence[str]) -> bool:
    """`verb` ("" = any call, `set-state`, `set-state:good`) against the call's arguments."""
    if not verb:
        return True
    name, _, state = verb.partition(":")
    if name not in VERBS:
        raise TrybootError(f"BRANCHLINE_CRASH_VERB={verb!r}: use one of {', '.join(VERBS)} "
                           f"(set-state:good or set-state:bad for one kind)")
    if not args or args[0] != name:
        return False
    return not state or (len(args) == 3 and args[2] == state)


@contextmanager
def _locked(directory: Path) -> Iterator[int]:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def write_autoboot(directory: Path, text: str, crash: CrashHook = NO_CRASH) -> None:
    """Replace directory/autoboot.txt atomically: temp, fsync, rename, fsync the directory."""
    with _locked(directory) as dir_fd:
        temp = directory / TEMP
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        crash.at("autoboot-temp-written")
        os.rename(temp, directory / AUTOBOOT)
        crash.at("autoboot-renamed")
        os.fsync(dir_fd)


# -- the verbs --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Backend:
    settings: Settings
    dt_dir: Path = bootflags.DT_DIR
    crash: CrashHook = NO_CRASH

    def _load(self) -> Autoboot:
        return read_autoboot(self.settings)

    def _save(self, autoboot: Autoboot) -> None:
        write_autoboot(self.settings.bootsel, render_autoboot(autoboot), self.crash)

    def _slot(self, partition: int) -> str:
        return self.settings.slot_of(partition) or f"partition {partition}"

    def primary(self) -> str:
        return self._slot(self._load().all_partition)

    def state(self, slot: str) -> SlotState:
        part = self.settings.partition_of(slot)
        autoboot = self._load()
        if part == autoboot.all_partition:
            return SlotState.GOOD  # [all] never names a bad slot
        return autoboot.states.get(slot, SlotState.BAD)

    def booted(self) -> str | None:
        return self.settings.slot_of(bootflags.boot_partition(self.dt_dir))

    def set_primary(self, slot: str) -> None:
        part = self.settings.partition_of(slot)
        autoboot = self._load()
        if part == autoboot.all_partition:
            return
        states = {**autoboot.states, slot: SlotState.GOOD}
        self._save(replace(autoboot, try_partition=part, states=states))

    def set_state(self, slot: str, state: SlotState) -> None:
        part = self.settings.partition_of(slot)
        autoboot = self._load()
        if state is SlotState.GOOD:
            self._mark_good(slot, part, autoboot)
        else:
            self._mark_bad(slot, part, autoboot)

    def _mark_good(self, slot: str, part: int, autoboot: Autoboot) -> None:
        states = {**autoboot.states, slot: SlotState.GOOD}
        if part == autoboot.all_partition:
            if autoboot.states.get(slot) is not SlotState.GOOD:
                self._save(replace(autoboot, states=states))
            return
        trying = bootflags.tryboot_active(self.dt_dir)
        if not trying or self.booted() != slot:
            raise TrybootError(
                f"refusing to commit slot {slot}: the box is not running a trial boot of it "
                f"(tryboot={int(trying)}, booted {self.booted() or 'unknown'}); "
                f'install it, reboot with `reboot "0 tryboot"`, then mark it good')
        self._save(Autoboot(part, autoboot.all_partition, states))

    def _mark_bad(self, slot: str, part: int, autoboot: Autoboot) -> None:
        states = {**autoboot.states, slot: SlotState.BAD}
        if part != autoboot.all_partition:
            try_part = autoboot.all_partition if autoboot.try_partition == part else autoboot.try_partition
            self._save(replace(autoboot, try_partition=try_part, states=states))
            return
        if bootflags.tryboot_active(self.dt_dir):
            raise TrybootError(f"refusing to mark the committed slot {slot} bad during a trial "
                               f"boot: mark the trial good or bad first, then reboot")
        fallback = self._good_other(slot, autoboot)
        if fallback is None:
            raise TrybootError(f"refusing to mark slot {slot} bad: no other slot is good, "
                               f"the box would have nothing to boot; install an update first")
        new_all = self.settings.slots[fallback]
        self._save(Autoboot(new_all, new_all, states))

    def _good_other(self, slot: str, autoboot: Autoboot) -> str | None:
        return next((name for name in sorted(self.settings.slots)
                     if name != slot and autoboot.states.get(name) is SlotState.GOOD), None)

    def init(self, slot: str) -> None:
        """A fresh autoboot.txt: `slot` committed and good, the others bad (image build, repair)."""
        part = self.settings.partition_of(slot)
        states = {name: SlotState.GOOD if name == slot else SlotState.BAD for name in self.settings.slots}
        self._save(Autoboot(part, part, states))


# -- command line -----------------------------------------------------------------------------

USAGE = ("usage: branchline-tryboot get-primary | get-state <slot> | set-primary <slot> | "
         "set-state <slot> good|bad | init <slot>")


def _run(backend: Backend, args: Sequence[str]) -> str | None:
    verb, rest = (args[0], list(args[1:])) if args else ("", [])
    if verb == "get-primary" and not rest:
        return backend.primary()
    if verb == "get-state" and len(rest) == 1:
        return str(backend.state(rest[0]))
    if verb == "set-primary" and len(rest) == 1:
        backend.set_primary(rest[0])
        return None
    if verb == "set-state" and len(rest) == 2 and rest[1] in (SlotState.GOOD, SlotState.BAD):
        backend.set_state(rest[0], SlotState(rest[1]))
        return None
    if verb == "init" and len(rest) == 1:
        backend.init(rest[0])
        return None
    raise TrybootError(USAGE)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `branchline-tryboot`: 0 on success, 1 with one line on stderr otherwise."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        output = _run(Backend(load_settings(), crash=crash_hook(args)), args)
    except TrybootError as exc:
        print(f"branchline-tryboot: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"branchline-tryboot: {exc.filename or 'autoboot.txt'}: {exc.strerror}; "
              f"check that the boot-selection partition is mounted read-write", file=sys.stderr)
        return 1
    if output is not None:
        print(output)
    return 0
