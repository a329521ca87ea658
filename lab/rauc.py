"""The real RAUC 1.8 on this machine: a private system bus, `rauc service`, and its CLI.

`RaucLab(folder, disk, keyring).start(booted="A")` starts a dbus-daemon of its own (a config in
`folder` that lets anyone own and call de.pengutronix.rauc; DBUS_SYSTEM_BUS_ADDRESS points the
RAUC programs at it) and `rauc service --conf=<folder>/system.conf --override-boot-slot=<A|B>`.
That system.conf is image/rauc/system.conf with the /dev/mmcblk0p<N> devices swapped for the
Disk's loop devices, the keyring for the test CA, the data-directory on the Disk's data mount,
and the backend for a wrapper that logs each call and runs `branchline-tryboot` with the
Disk's tryboot.conf and the device-tree folder the Pi firmware model writes;
`start(..., backend_env={...})` exports that environment to the backend alone (the tryboot
backend's test hooks: BRANCHLINE_TEST_HOOKS, BRANCHLINE_CRASH_AT/VERB/SIGNAL).
`--override-boot-slot` is RAUC's documented way to name the booted slot when the kernel
command line (rauc.slot=) is not the box's (rauc/rauc v1.8 docs/reference.rst).
Nothing here is a stand-in: install, status, mark-good and mark-bad are RAUC's own.
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lab.kamailio import LabError
from lab.procs import stop_process
from lab.slots import Disk
from lab.wait import wait_until

REPO = Path(__file__).resolve().parents[1]
SYSTEM_CONF = REPO / "image" / "rauc" / "system.conf"
BUS_NAME = "de.pengutronix.rauc"
TIMEOUT_S = 120.0

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="{name}"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

WRAPPER = """#!/bin/sh
# lab wrapper of RAUC's custom backend: log the call, then run the real branchline-tryboot
echo "$*" >> '{log}'
{exports}exec '{backend}' "$@"
"""


@dataclass(frozen=True)
class Result:
    """What a rauc command did: exit code, stdout and stderr (text)."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def last_error(self) -> str:
        """RAUC's "LastError: ..." line of a failed install, else stderr's last real line."""
        for line in self.stdout.splitlines():
            if line.startswith("LastError: "):
                return line[len("LastError: "):]
        lines = [ln for ln in self.stderr.splitlines() if ln.strip() and not ln.startswith("rauc-Message")]
        return lines[-1] if lines else ""


def backend_path() -> Path:
    """branchline-tryboot beside this Python (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "branchline-tryboot"
    found = beside if beside.exists() else Path(shutil.which("branchline-tryboot") or "")
    if not found.name:
        raise LabError("branchline-tryboot is not installed: .venv/bin/pip install -e . --no-deps")
    return found


def lab_system_conf(disk: Disk, keyring: Path, backend: Path, mountprefix: Path) -> str:
    """image/rauc/system.conf with the lab's devices and paths."""
    conf = configparser.ConfigParser(interpolation=None)
    conf.optionxform = str  # type: ignore[assignment,method-assign]
    conf.read(SYSTEM_CONF)
    conf["system"]["data-directory"] = str(disk.data / "rauc")
    conf["system"]["mountprefix"] = str(mountprefix)
    conf["keyring"]["path"] = str(keyring)
    conf["handlers"]["bootloader-custom-backend"] = str(backend)
    for section in conf.sections():
        device = conf[section].get("device", "")
        if device.startswith("/dev/mmcblk0p"):
            conf[section]["device"] = str(disk.device(int(device.removeprefix("/dev/mmcblk0p"))))
    lines: list[str] = []
    for section in conf.sections():
        lines += [f"[{section}]", *(f"{k}={v}" for k, v in conf[section].items()), ""]
    return "\n".join(lines)


class RaucLab:
    """A private bus plus `rauc service` over a Disk; every process is stopped by stop()."""

    def __init__(self, folder: Path, disk: Disk, keyring: Path, dt_dir: Path) -> None:
        self.folder = folder
        self.disk = disk
        self.keyring = keyring
        self.dt_dir = dt_dir
        self.bus: subprocess.Popen[bytes] | None = None
        self.service: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self.socket = folder / "system_bus.sock"
        self.backend_log = folder / "backend.log"
        self.service_log = folder / "rauc-service.log"
        self.conf = folder / "system.conf"
        self.tryboot_conf = disk.tryboot_conf(folder / "tryboot.conf")
        self._write_files()

    @property
    def wrapper(self) -> Path:
        return self.folder / "branchline-tryboot-lab"

    def _write_wrapper(self, backend_env: Mapping[str, str] | None = None) -> None:
        """The backend wrapper, exporting `backend_env` to the backend only."""
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in (backend_env or {}).items())
        self.wrapper.write_text(WRAPPER.format(log=self.backend_log, backend=backend_path(),
                                               exports=exports))
        self.wrapper.chmod(0o755)

    def _write_files(self) -> None:
        wrapper = self.wrapper
        self._write_wrapper()
        (self.folder / "bus.conf").write_text(BUS_CONF.format(socket=self.socket, name=BUS_NAME))
        self.conf.write_text(lab_system_conf(self.disk, self.keyring, wrapper, self.folder / "mnt"))

    @property
    def env(self) -> dict[str, str]:
        """The environment of every RAUC program here (and so of the backend)."""
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.socket}",
                "BRANCHLINE_TRYBOOT_CONF": str(self.tryboot_conf), "BRANCHLINE_DT_DIR": str(self.dt_dir)}

    def start(self, booted: str, extra_env: Mapping[str, str] | None = None,
              backend_env: Mapping[str, str] | None = None) -> RaucLab:
        """Start the bus (once) and the service, booted from slot `booted` (A or B);
        `extra_env` goes to the service, `backend_env` to each backend call it makes."""
        self._write_wrapper(backend_env)
        if self.bus is None or self.bus.poll() is not None:
            self._start_bus()
        self.stop_service()
        (self.folder / "mnt").mkdir(exist_ok=True)
        with open(self.service_log, "ab") as log:
            self.service = subprocess.Popen(
                ["rauc", "service", f"--conf={self.conf}", f"--override-boot-slot={booted}"],
                env={**self.env, **(extra_env or {})}, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._service_answers, timeout=20, what="rauc service on the lab bus",
                   detail=lambda: self.service_log.read_text()[-500:])
        return self

    def _start_bus(self) -> None:
        if shutil.which("dbus-daemon") is None or shutil.which("rauc") is None:
            raise LabError("dbus-daemon or rauc is missing: apt-get install dbus rauc rauc-service")
        self.socket.unlink(missing_ok=True)
        self.bus = subprocess.Popen(["dbus-daemon", f"--config-file={self.folder / 'bus.conf'}", "--nofork"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.socket.exists, timeout=10, what="the lab's dbus-daemon socket")

    def _service_answers(self) -> bool:
        if self.service is not None and self.service.poll() is not None:
            raise LabError(f"rauc service exited: {self.service_log.read_text()[-500:]}")
        return self.run("status", "--output-format=json", timeout=10).ok

    def run(self, *args: str, timeout: float = TIMEOUT_S) -> Result:
        """`rauc <args>` against the lab's service."""
        done = subprocess.run(["rauc", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        return Result(done.returncode, done.stdout, done.stderr)

    def install(self, bundle: Path) -> Result:
        return self.run("install", str(bundle))

    def info(self, bundle: Path) -> Result:
        return self.run("info", f"--keyring={self.keyring}", "--output-format=json", str(bundle))

    def status(self) -> dict[str, object]:
        result = self.run("status", "--output-format=json")
        if not result.ok:
            raise LabError(f"rauc status failed: {result.stderr.strip()}")
        parsed: dict[str, object] = json.loads(result.stdout)
        return parsed

    def mark(self, state: str, slot: str = "booted") -> Result:
        """`rauc status mark-good|mark-bad|mark-active [booted|other|<slot>]`."""
        return self.run("status", f"mark-{state}", slot)

    def backend_calls(self) -> list[str]:
        return self.backend_log.read_text().splitlines() if self.backend_log.exists() else []

    def stop_service(self) -> None:
        stop_process(self.service, grace=10)
        self.service = None

    def stop(self) -> None:
        self.stop_service()
        stop_process(self.bus, grace=5)
        self.bus = None
