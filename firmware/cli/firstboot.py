"""`branchline firstboot [--data-dir DIR]`: what a new box makes once, before its processes
start (systemd/branchline-firstboot.service runs it while the marker file is missing):

- the device identity and its private key (data_dir/agent/, the key 0600),
- the web page's TLS certificate and key (data_dir/tls-*.pem, 0600) and its fingerprint,
- the one-time setup code (data_dir/setup-code, 0600), until the admin password is set,
- the marker data_dir/firstboot.done, so the unit does not run again.

Every step keeps what exists, so running it again changes nothing. The setup code is a
secret: it is never printed to stdout (which ends up in the journal); `--tty DEV` writes
it to a terminal (the serial console) and nothing else, and the file is for the label.
`--owner USER --core-user CORE --group GROUP` lays the data folder out for the processes'
users (systemd/branchline.env): the folder itself belongs to CORE and GROUP, mode 2770
(setgid: what anyone makes in it gets GROUP), with the files the core and the clients
share (cdr.db and the -wal/-shm SQLite makes with its mode, recordings/, files/) mode
0660/2770, so the clients (umask 007 under supervisord) can mark records delivered and
delete uploaded files. The secrets made here (device key, web TLS key, setup code,
accounts) stay 0600 and go to USER, the clients' user that reads them (web, console,
agent, forward). `--config-dir` is given to CORE (it saves the config) and made
group-readable: `branchline forward` reads it. The update service's own folder (update/,
root's) is left alone.
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from firmware.cli.apiopts import DEFAULT_DATA_DIR, Subparsers
from foundation.errors import BranchlineError

MARKER = "firstboot.done"
# written by the core, updated by the clients (forward and the agent mark records
# delivered, prune and delete uploaded files): group-writable
SHARED_FILES = ("cdr.db", "cdr.db-wal", "cdr.db-shm")
SHARED_DIRS = ("recordings", "files")
LEFT_ALONE = ("update",)  # the update service's state (root)
DATA_MODE, SHARED_DIR_MODE, SHARED_FILE_MODE = 0o2770, 0o2770, 0o660
CONFIG_DIR_MODE = 0o2750  # the core writes, the clients read


@dataclass(frozen=True)
class Owners:
    """Who gets what: `clients` (uid) the secrets, `core` (uid) the folders and the shared
    files, `gid` the group of all of it."""

    clients: int
    core: int
    gid: int


class FirstBootError(BranchlineError):
    """A first-boot step failed; the message names the path and the fix."""


def register(sub: Subparsers) -> None:
    p = sub.add_parser("firstboot", help="make the device identity, TLS keys and setup code",
                       description="Make what a new box needs once (device identity and "
                                   "key, web certificate, setup code); safe to run again.")
    p.add_argument("--data-dir", metavar="DIR", default=DEFAULT_DATA_DIR,
                   help=f"the data partition's folder (default: {DEFAULT_DATA_DIR})")
    p.add_argument("--config-dir", metavar="DIR",
                   help="config directory (default: $BRANCHLINE_CONFIG_DIR or /etc/branchline)")
    p.add_argument("--name", metavar="NAME",
                   help="box name in the web certificate (default: the config's system.name)")
    p.add_argument("--tty", metavar="DEV",
                   help="also show the setup code on this terminal (the serial console)")
    p.add_argument("--owner", metavar="USER",
                   help="give the secrets in DIR to USER (web, console, agent, forward)")
    p.add_argument("--core-user", metavar="USER",
                   help="with --owner: give DIR, --config-dir and the shared files to "
                        "USER (the core; default: --owner)")
    p.add_argument("--group", metavar="GROUP",
                   help="with --owner: the group shared by the core and the clients "
                        "(default: --owner's primary group)")
    p.set_defaults(func=cmd_firstboot)


def cmd_firstboot(args: argparse.Namespace) -> int:
    data = Path(args.data_dir)
    if (args.core_user or args.group) and not args.owner:
        raise FirstBootError("--core-user and --group go with --owner: give the clients' "
                             "user too")
    owner = _owners(args) if args.owner else None
    _check_dir(data)
    try:
        device_id, key = _identity(data)
        print(f"branchline firstboot: device id {device_id} (key {key}, 0600)", flush=True)
        cert, fp = _certificate(data, args.name or _box_name(args.config_dir))
        print(f"branchline firstboot: web certificate {cert} SHA-256 {fp}", flush=True)
        code = _setup_code(data)
        _report_code(data, code, args.tty)
        _mark(data)
        if owner is not None:
            _give(data, owner)
            if args.config_dir:
                _give_config(Path(args.config_dir), owner)
    except BrokenPipeError:
        raise  # stdout closed: main() ends quietly
    except PermissionError as exc:
        raise FirstBootError(f"{exc.filename or data}: permission denied; run as root or "
                             f"give --data-dir a folder you can write") from None
    except OSError as exc:
        raise FirstBootError(f"{exc.filename or data}: {exc.strerror or exc}; check that "
                             f"the data partition is mounted and writable") from None
    return 0


def _check_dir(data: Path) -> None:
    if data.exists() and not data.is_dir():
        raise FirstBootError(f"{data}: not a folder; give --data-dir the data partition's "
                             "folder (e.g. /var/lib/branchline)")
    try:
        data.mkdir(parents=True, exist_ok=True, mode=0o750)
    except OSError as exc:
        raise FirstBootError(f"{data}: cannot create it ({exc.strerror}); mount the data "
                             "partition or give --data-dir a writable folder") from None
    if not os.access(data, os.W_OK | os.X_OK):
        raise FirstBootError(f"{data}: not writable; run as root or give --data-dir a "
                             "folder you can write")


def _identity(data: Path) -> tuple[str, Path]:
    from firmware.agent.identity import DeviceIdentity

    identity = DeviceIdentity(data)
    key = identity.ensure_key()
    return identity.made_id(), key


def _box_name(directory: str | None) -> str:
    """system.name of the saved config; "branchline" when there is none or it is bad."""
    from firmware.core.config import ConfigStore, config_dir

    try:
        return str(ConfigStore(config_dir(directory)).load()["system"]["name"])
    except (BranchlineError, OSError, KeyError):
        return "branchline"


def _certificate(data: Path, name: str) -> tuple[Path, str]:
    from firmware.web.tls import ensure_certificate

    cert, _key, fp = ensure_certificate(data, name)
    return cert, fp


def _setup_code(data: Path) -> str | None:
    from firmware.auth import Auth

    return Auth(data).ensure_setup_code()


def _report_code(data: Path, code: str | None, tty: str | None) -> None:
    """Where the setup code is (never the code itself on stdout)."""
    if code is None:
        print("branchline firstboot: the admin password is set; no setup code", flush=True)
        return
    from firmware.auth import SETUP_FILE

    print(f"branchline firstboot: setup code in {data / SETUP_FILE} (0600, for the label)",
          flush=True)
    if tty:
        _show_on_tty(tty, code)


def _show_on_tty(tty: str, code: str) -> None:
    """The code on a terminal only: a regular file or pipe would be a log."""
    try:
        fd = os.open(tty, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        print(f"branchline firstboot: {tty}: {exc.strerror}; the setup code is only in "
              "the file", file=sys.stderr, flush=True)
        return
    try:
        if not os.isatty(fd):
            print(f"branchline firstboot: {tty} is not a terminal; the setup code is not "
                  "written there", file=sys.stderr, flush=True)
            return
        os.write(fd, f"\r\nbranchline: first login setup code {code}\r\n".encode())
    except OSError as exc:
        print(f"branchline firstboot: {tty}: {exc.strerror}", file=sys.stderr, flush=True)
    finally:
        os.close(fd)


def _owners(args: argparse.Namespace) -> Owners:
    clients, primary = _user("--owner", args.owner)
    core = _user("--core-user", args.core_user)[0] if args.core_user else clients
    return Owners(clients, core, _group(args.group) if args.group else primary)


def _user(option: str, user: str) -> tuple[int, int]:
    try:
        rec = pwd.getpwnam(user)
    except KeyError:
        raise FirstBootError(f"{option} {user}: no such user; create it (useradd --system "
                             f"{user}) or leave {option} out") from None
    return rec.pw_uid, rec.pw_gid


def _group(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise FirstBootError(f"--group {name}: no such group; create it (groupadd --system "
                             f"{name}) or leave --group out") from None


def _give(data: Path, owners: Owners) -> None:
    """The data folder's layout for the core and the clients (module docstring)."""
    _set(data, owners.core, owners.gid, DATA_MODE)
    for name in SHARED_DIRS:
        (data / name).mkdir(exist_ok=True)
        _set(data / name, owners.core, owners.gid, SHARED_DIR_MODE)
        for path in (data / name).rglob("*"):
            _set(path, owners.core, owners.gid, SHARED_DIR_MODE if path.is_dir()
                 else SHARED_FILE_MODE)
    # an empty cdr.db is a new database to SQLite, which gives its -wal and -shm this
    # file's mode (unix_open's findCreateFileMode); made by the core, it would get 0640
    (data / SHARED_FILES[0]).touch(exist_ok=True)
    for name in SHARED_FILES:
        if (data / name).exists():
            _set(data / name, owners.core, owners.gid, SHARED_FILE_MODE)
    skip = {*SHARED_FILES, *SHARED_DIRS, *LEFT_ALONE}
    for top in data.iterdir():
        if top.name in skip:
            continue
        for path in [top, *top.rglob("*")]:
            _set(path, owners.clients, owners.gid)


def _give_config(config: Path, owners: Owners) -> None:
    """The config folder to the core, readable by the group (forward reads it)."""
    config.mkdir(parents=True, exist_ok=True)
    for path in [config, *config.rglob("*")]:
        mode = CONFIG_DIR_MODE if path.is_dir() else 0o640
        _set(path, owners.core, owners.gid, mode)


def _set(path: Path, uid: int, gid: int, mode: int | None = None) -> None:
    """chmod first, then chown (no links): the setgid bit is set while root still owns
    it, so no CAP_FSETID is needed, and a directory keeps it across the chown."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return
    if mode is not None and stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.chown(path, uid, gid)


def _mark(data: Path) -> None:
    marker = data / MARKER
    if marker.exists():
        print(f"branchline firstboot: already done ({marker})", flush=True)
        return
    tmp = marker.with_name(f".{MARKER}.tmp")
    tmp.write_text("identity, web certificate and setup code made\n")
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, marker)
    print(f"branchline firstboot: done ({marker})", flush=True)
