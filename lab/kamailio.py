"""Debian's Kamailio as the lab's cloud edge: registrar with digest auth and proxy.

`Kamailio(workdir, users=..., aliases=...)` renders lab/kamailio/kamailio.cfg into
`workdir`, starts `kamailio -DD -E` (foreground, log on stderr into workdir/kamailio.log)
on 127.0.0.1 at a free port, and waits until an OPTIONS ping is answered 200. It runs
as the current user (root in CI is fine: Kamailio only warns). Survivability tests can
`pause()`/`resume()` it (SIGSTOP/SIGCONT), make it `refuse(503)` every request, or
`stop()` it. Assumes the Debian `kamailio` package (5.6) is installed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from foundation.errors import BranchlineError
from lab.ports import HOST, free_port

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).with_name("kamailio") / "kamailio.cfg"
DEFAULT_USERS = {"agent1": "secret", "agent2": "secret", "branch": "secret"}
_SAFE = re.compile(r"^[A-Za-z0-9_.+*#-]+$")
_URI = re.compile(r"^sip:[A-Za-z0-9_.+*#-]+@127\.0\.0\.1:\d+(;[A-Za-z0-9=_.-]+)*$")


class LabError(BranchlineError):
    """A lab peer (Kamailio, agent, sipp) is missing, did not start or misbehaved."""


def module_dir() -> str:
    """Kamailio's module directory, as the installed binary reports it (no fixed arch)."""
    exe = shutil.which("kamailio")
    if exe is None:
        raise LabError("kamailio is not installed: apt-get install kamailio")
    out = subprocess.run([exe, "-I"], capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"Default paths to modules:\s*(\S+)", out)
    if m and Path(m.group(1), "tm.so").exists():
        return m.group(1)
    found = sorted(Path("/usr/lib").glob("*/kamailio/modules/tm.so"))
    if not found:
        raise LabError("kamailio modules (tm.so) not found: reinstall the kamailio package")
    return str(found[0].parent)


def _check_token(kind: str, value: str) -> str:
    # Values land inside the config file; keep them to plain SIP user characters.
    if not _SAFE.match(value):
        raise LabError(f"kamailio {kind} {value!r}: use letters, digits and _.+*#- only")
    return value


def _alias_action(target: str) -> str:
    # A user name is looked up in the location table; a SIP URI (e.g. a sipp UAS that
    # cannot register) is relayed to as is.
    if target.startswith("sip:"):
        if not _URI.match(target):
            raise LabError(f"kamailio alias target {target!r}: use sip:user@127.0.0.1:port")
        return f'$ru = "{target}";\n\t\t\troute(RELAY);'
    return f'$rU = "{_check_token("alias target", target)}";'


def _cases(pairs: dict[str, str], action: Callable[[str], str]) -> str:
    lines = []
    for key, value in pairs.items():
        lines.append(f'\t\tcase "{_check_token("user", key)}":')
        lines.append(f"\t\t\t{action(value)}")
        lines.append("\t\t\tbreak;")
    # Kamailio rejects a switch with only a default: keep one case that never matches.
    lines += ['\t\tcase "-none-":', "\t\t\tbreak;", "\t\tdefault:"]
    lines.append("\t\t\tbreak;")
    return "\n".join(lines)


def render(port: int, users: dict[str, str], aliases: dict[str, str], domain: str,
           invite_timeout_ms: int = 30000, host: str = HOST) -> str:
    """The config text for these users and aliases."""
    text = TEMPLATE.read_text()
    subst = {
        "PORT": str(port),
        "HOST": host,
        "MPATH": module_dir(),
        "DOMAIN": _check_token("domain", domain),
        "INVITE_TIMEOUT_MS": str(int(invite_timeout_ms)),
        "USER_CASES": _cases(users, lambda pw: f'$var(pw) = "{_check_token("password", pw)}";'),
        "ALIAS_CASES": _cases(aliases, _alias_action),
    }
    for key, value in subst.items():
        text = text.replace(f"@@{key}@@", value)
    return text


def options_ping(port: int, host: str = HOST, timeout: float = 0.5,
                 headers: dict[str, str] | None = None) -> int | None:
    """Send one OPTIONS to the proxy over UDP; the status code, or None on no answer."""
    tag, branch, callid = (uuid.uuid4().hex[:10] for _ in range(3))
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        lport = s.getsockname()[1]
        msg = (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {HOST}:{lport};branch=z9hG4bK{branch};rport\r\n"
               f"Max-Forwards: 70\r\nFrom: <sip:lab@{HOST}>;tag={tag}\r\n"
               f"To: <sip:{host}:{port}>\r\nCall-ID: {callid}@lab\r\nCSeq: 1 OPTIONS\r\n"
               f"{extra}Content-Length: 0\r\n\r\n")
        s.settimeout(timeout)
        s.sendto(msg.encode(), (host, port))
        try:
            data = s.recv(65535)
        except OSError:
            return None
    m = re.match(rb"SIP/2\.0 (\d{3})", data)
    return int(m.group(1)) if m else None


class Kamailio:
    """A running Kamailio on 127.0.0.1:`port` (a free one when None). Context manager."""

    def __init__(self, workdir: str | os.PathLike, port: int | None = None,
                 users: dict[str, str] | None = None, domain: str = "cloud.test",
                 aliases: dict[str, str] | None = None, invite_timeout_ms: int = 30000,
                 start_timeout: float = 10.0, host: str = HOST) -> None:
        self.workdir = Path(workdir)
        self.host = host  # 127.0.0.1, or a test namespace's own address (lab/netns.py)
        self.port = port or free_port("udp")
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.aliases = dict(aliases or {})
        self.domain = domain
        self.invite_timeout_ms = invite_timeout_ms
        self.start_timeout = start_timeout
        self.cfg = self.workdir / "kamailio.cfg"
        self.log_path = self.workdir / "kamailio.log"
        self.pid_path = self.workdir / "kamailio.pid"
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"

    def __enter__(self) -> Kamailio:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Write the config, check it, start Kamailio and wait until it answers OPTIONS."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cfg.write_text(render(self.port, self.users, self.aliases, self.domain,
                                   self.invite_timeout_ms, self.host))
        self._check_config()
        run = self.workdir / "run"
        run.mkdir(exist_ok=True)
        cmd = ["kamailio", "-f", str(self.cfg), "-DD", "-E", "-n", "1",
               "-Y", str(run), "-P", str(self.pid_path)]
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()
        log.info("kamailio up on %s (log %s)", self.address, self.log_path)

    def _check_config(self) -> None:
        res = subprocess.run(["kamailio", "-c", "-f", str(self.cfg)], capture_output=True,
                             text=True, timeout=20)
        if res.returncode != 0:
            self.log_path.write_text(res.stdout + res.stderr)
            raise LabError(f"kamailio rejected {self.cfg}: see {self.log_path}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise LabError(f"kamailio exited with code {self.proc.returncode} at start: "
                               f"see {self.log_path}")
            if options_ping(self.port, self.host, timeout=0.2) == 200:
                return
        self.stop()
        raise LabError(f"kamailio on {self.address} did not answer OPTIONS within "
                       f"{self.start_timeout:.0f} s: see {self.log_path}")

    def ping(self, timeout: float = 0.5) -> int | None:
        """One OPTIONS ping: 200 when serving, the refusal code, or None (paused/stopped)."""
        return options_ping(self.port, self.host, timeout=timeout)

    def refuse(self, code: int | None = 503) -> None:
        """Answer every later request with `code` (None: serve normally again)."""
        if options_ping(self.port, self.host,
                        headers={"X-Lab-Refuse": str(code or 0)}) != 200:
            raise LabError(f"kamailio on {self.address} did not take the refuse command: "
                           f"is it paused or stopped? (log {self.log_path})")

    def pause(self) -> None:
        """Freeze the edge (SIGSTOP to its process group): requests go unanswered."""
        self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_group(signal.SIGCONT)

    def _signal_group(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise LabError(f"kamailio on {self.address} is not running (log {self.log_path})")
        os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; also wakes a paused Kamailio first."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGCONT)
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        except ProcessLookupError:
            pass
