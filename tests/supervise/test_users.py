"""Device access is the core's only, for real: the product's supervisord.conf runs with
BRANCHLINE_CORE_USER and BRANCHLINE_USER set to two system users made here (and removed
after), as on the box (systemd/branchline.env): each program runs as its user, only the
core holds the device groups, a call on the sim core writes its CDR, `forward` (the
clients' user) delivers it and marks it delivered in the core's database (the
group-writable data folder works across users), the web page answers, and the root
watchdog still gets the core's pings (a stopped core is restarted).

The device groups spi and gpio do not exist on this machine: a group made here stands
for them, beside the real audio group; dialout is the console's (the clients' user)."""

from __future__ import annotations

import grp
import http.client
import os
import pwd
import secrets
import shutil
import signal
import sqlite3
import ssl
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from firmware.cdr import CDR_FILE
from lab.records import RecordsReceiver
from lab.supervisor import LabSupervisor, hang_up, lab_document, place_call
from lab.wait import wait_until

CLIENTS = ("web", "console", "agent", "forward")
WATCHDOG_RESTART_S = 30.0  # --core-timeout 10 s + SIGKILL 3 s after SIGABRT + startsecs 3


@dataclass(frozen=True)
class Users:
    core: str
    clients: str
    group: str
    device: str  # stands for spi and gpio


def _tool(*argv: str) -> None:
    if shutil.which(argv[0]) is None:
        pytest.fail(f"{argv[0]} is missing: apt install passwd (useradd, groupadd)")
    got = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert got.returncode == 0, f"{' '.join(argv)}: {got.stderr.strip()}"


def _quietly(*argv: str) -> None:
    subprocess.run(argv, capture_output=True, timeout=30, check=False)


@pytest.fixture
def users() -> Iterator[Users]:
    """Two system users and two groups with names of this run, removed afterwards."""
    tag = secrets.token_hex(3)
    u = Users(core=f"bltcore-{tag}", clients=f"bltapp-{tag}", group=f"bltgrp-{tag}",
              device=f"bltdev-{tag}")
    home = "/nonexistent"
    try:
        _tool("groupadd", "--system", u.group)
        _tool("groupadd", "--system", u.device)
        _tool("useradd", "--system", "-M", "-d", home, "-s", "/usr/sbin/nologin",
              "-g", u.group, "-G", f"{u.device},audio", u.core)
        _tool("useradd", "--system", "-M", "-d", home, "-s", "/usr/sbin/nologin",
              "-g", u.group, "-G", "dialout", u.clients)
        yield u
    finally:
        for user in (u.core, u.clients):
            _quietly("userdel", user)
        for group in (u.device, u.group):
            _quietly("groupdel", group)


@pytest.fixture
def box(users: Users) -> Iterator[tuple[LabSupervisor, RecordsReceiver]]:
    """The process tree under those users, in a folder they can reach (pytest's own
    temporary folders are root's, 0700), with forward pointed at a local receiver."""
    root = Path(tempfile.mkdtemp(prefix="branchline-users-"))
    try:
        os.chmod(root, 0o755)
        with RecordsReceiver() as receiver:
            doc = lab_document()
            doc["survive"]["records_url"] = receiver.url
            env = {"BRANCHLINE_CORE_USER": users.core, "BRANCHLINE_USER": users.clients,
                   "BRANCHLINE_GROUP": users.group}
            with LabSupervisor(root / "box", env=env, doc=doc) as lab:
                lab.wait_core()
                yield lab, receiver
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _ids(pid: int) -> tuple[int, set[int]]:
    """The real uid and the groups (primary and supplementary) of a process."""
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    uid = int(fields["Uid"].split()[0])
    gid = int(fields["Gid"].split()[0])
    return uid, {gid, *map(int, fields["Groups"].split())}


def _gid(name: str) -> int:
    return grp.getgrnam(name).gr_gid


def _delivered(data: Path, uuid: str) -> float | None:
    db = sqlite3.connect(f"file:{data / CDR_FILE}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT delivered FROM outbox WHERE uuid = ?", (uuid,)).fetchone()
    finally:
        db.close()
    return row[0] if row else None


def _web_status(port: int) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the box's own certificate
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status
    finally:
        conn.close()


def _check_users(lab: LabSupervisor, users: Users) -> None:
    core_uid, core_groups = _ids(lab.pid("core"))
    assert core_uid == pwd.getpwnam(users.core).pw_uid
    devices = {_gid(users.device), _gid("audio")}
    assert devices <= core_groups and _gid(users.group) in core_groups
    assert _gid("dialout") not in core_groups
    for name in CLIENTS:
        uid, groups = _ids(lab.pid(name))
        assert uid == pwd.getpwnam(users.clients).pw_uid, name
        assert not devices & groups, f"{name} has a device group: {groups}"
        assert groups == {_gid(users.group), _gid("dialout")}, name
    assert _ids(lab.pid("watchdog"))[0] == 0


def _check_layout(lab: LabSupervisor, users: Users) -> None:
    st = lab.data.stat()
    assert stat.S_IMODE(st.st_mode) == 0o2770 and st.st_gid == _gid(users.group)
    for name in (CDR_FILE, f"{CDR_FILE}-wal", f"{CDR_FILE}-shm"):
        st = (lab.data / name).stat()
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == _gid(users.group), name
    key = (lab.data / "agent" / "device.key").stat()
    assert stat.S_IMODE(key.st_mode) == 0o600
    assert key.st_uid == pwd.getpwnam(users.clients).pw_uid
    for sock in ("core.sock", "notify.sock"):
        assert (lab.run / sock).stat().st_gid == _gid(users.group), sock


def test_device_access_is_the_cores_only(box: tuple[LabSupervisor, RecordsReceiver],
                                         users: Users) -> None:
    lab, receiver = box
    _check_users(lab, users)
    api = lab.api
    place_call(api)
    hang_up(api)
    cdr = next(c for c in api.cdrs(limit=10)["items"] if c["port"] == "fxs1" and c["ended"])
    wait_until(lambda: cdr["uuid"] in receiver.records, 15, "forward delivered the CDR",
               step=0.1, detail=lambda: lab.program_log("forward")[-1500:])
    wait_until(lambda: _delivered(lab.data, cdr["uuid"]), 15,
               "forward marked the CDR delivered in the core's database", step=0.1,
               detail=lambda: lab.program_log("forward")[-1500:])
    _check_layout(lab, users)
    assert _web_status(lab.web_port) < 500
    assert "Traceback" not in lab.program_log("forward")
    old = lab.kill("core", signal.SIGSTOP)
    wait_until(lambda: lab.info("core")["statename"] == "RUNNING"
               and lab.info("core")["pid"] not in (0, old), WATCHDOG_RESTART_S,
               "the watchdog restarted the stopped core", step=0.2, detail=lab.describe)
    assert "core" in lab.program_log("watchdog")
    assert _ids(lab.pid("core"))[0] == pwd.getpwnam(users.core).pw_uid
