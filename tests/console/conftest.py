"""Fixtures for the serial console tests: a real sim core with its control API on
loopback TCP, and a real `branchline console` process on the slave side of a real
pseudo-terminal pair, reached through a symlink (so a test can pull the "cable" and plug
a new pty in). The test drives the master side with os.read/os.write.

Assumes Linux ptys; every process started here is stopped here, bounded in time.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from lab.ports import free_port
from lab.procs import stop_process
from lab.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
ANSI = re.compile(rb"\x1b\[[0-9;]*[A-Za-z]|[\x07\x08]")


class Api:
    """A few raw HTTP calls to check what the console did, independent of its client."""

    def __init__(self, listen: str) -> None:
        self.base = f"http://{listen}/api/v1"

    def get(self, path: str):
        with urllib.request.urlopen(self.base + path, timeout=5) as resp:
            return json.loads(resp.read())

    def up(self) -> bool:
        try:
            self.get("/status")
            return True
        except (OSError, urllib.error.URLError):
            return False


class Core:
    """A sim core with the control API; start()/stop() may be repeated."""

    def __init__(self, tmp: Path) -> None:
        self.config_dir, self.data_dir = tmp / "etc", tmp / "core-data"
        self.listen = f"127.0.0.1:{free_port()}"
        self.api = Api(self.listen)
        self.proc: subprocess.Popen | None = None
        self.log = tmp / "core.log"

    def _command(self) -> list[str]:
        return [PY, "-m", "firmware", "run", "--sim", "--config-dir", str(self.config_dir),
                "--data-dir", str(self.data_dir), "--api", self.listen]

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self._command(), cwd=ROOT, stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
        def up() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError("core did not start: " + self.log.read_text()[-2000:])
            return self.api.up()
        wait_until(up, 20, "core up", step=0.1, detail=lambda: self.log.read_text()[-2000:])

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


class Terminal:
    """The technician's side of the serial cable: the pty master."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = -1
        self.buf = b""
        self.plug()

    def plug(self) -> None:
        """A new pty pair; the console's device symlink points at its slave."""
        self.master, slave = os.openpty()
        tmp = self.link.with_name(self.link.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(slave))
        os.replace(tmp, self.link)
        os.close(slave)
        self.buf = b""

    def unplug(self) -> None:
        os.close(self.master)
        self.master = -1

    def send(self, data: bytes | str) -> None:
        os.write(self.master, data.encode() if isinstance(data, str) else data)

    def line(self, text: str) -> None:
        self.send(text + "\r")

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                self.buf += os.read(self.master, 65536)
            except OSError:
                time.sleep(0.05)

    def expect(self, pattern: str, timeout: float = 10.0) -> str:
        """Read until the (ANSI-stripped) output matches; return the text up to the match
        end and keep the rest."""
        regex = re.compile(pattern.encode(), re.S)

        def matched() -> str | None:
            clean = ANSI.sub(b"", self.buf)
            match = regex.search(clean)
            if not match:
                return None
            self.buf = clean[match.end():]
            return clean[:match.end()].decode("ascii", "replace")
        return wait_until(matched, timeout, f"{pattern!r} in console output", step=0.2,
                          tick=self._read, detail=lambda: ANSI.sub(b"", self.buf)[-1500:])

    def drain(self, quiet: float = 0.3) -> str:
        """Whatever arrives until the console is quiet for `quiet` seconds."""
        while True:
            before = len(self.buf)
            self._read(quiet)
            if len(self.buf) == before:
                out, self.buf = ANSI.sub(b"", self.buf), b""
                return out.decode("ascii", "replace")

    def command(self, text: str, prompt: str = r"# $", timeout: float = 15.0) -> str:
        self.drain(0.05)
        self.line(text)
        return self.expect(prompt, timeout)


class ConsoleProc:
    def __init__(self, tmp: Path, core: Core) -> None:
        self.data_dir = tmp / "console-data"
        self.link = tmp / "ttyCONSOLE"
        self.log = tmp / "console.log"
        self.term = Terminal(self.link)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [PY, "-m", "firmware", "console", "--tty", str(self.link), "--baud", "115200",
                 "--api", core.listen, "--data-dir", str(self.data_dir)],
                cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        stop_process(self.proc)
        if self.term.master >= 0:
            self.term.unplug()


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    c = Core(tmp_path_factory.mktemp("core"))
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def console(core, tmp_path_factory):
    proc = ConsoleProc(tmp_path_factory.mktemp("console"), core)
    yield proc
    proc.stop()
