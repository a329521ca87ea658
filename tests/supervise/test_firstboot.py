"""`branchline firstboot`: the device identity, the web certificate, the setup code and the
marker are made once with private modes, a second run changes nothing, and no secret
reaches stdout (the journal); the setup code goes to a terminal only when asked."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from firmware.cli import main
from firmware.cli.firstboot import MARKER

ROOT = Path(__file__).resolve().parents[2]
Capture = pytest.CaptureFixture[str]
PRIVATE = ("agent/device.key", "tls-key.pem", "tls-cert.pem", "setup-code")


def _run(data: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "firmware", "firstboot", "--data-dir",
                           str(data), *extra], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)


def _snapshot(data: Path) -> dict[str, bytes]:
    names = [*PRIVATE, "agent/device-id", "tls-fingerprint", MARKER]
    return {n: (data / n).read_bytes() for n in names}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_boot_makes_everything_private_and_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = _run(data)
    assert first.returncode == 0, first.stderr
    made = _snapshot(data)
    for name in PRIVATE:
        assert _mode(data / name) == 0o600, name
    assert _mode(data / "agent") == 0o700
    assert made["agent/device-id"].decode().startswith("bl-")
    again = _run(data)
    assert again.returncode == 0, again.stderr
    assert _snapshot(data) == made  # identity, keys, certificate and code are stable
    assert "already done" in again.stdout


def test_no_secret_on_stdout_or_stderr(tmp_path: Path) -> None:
    data = tmp_path / "data"
    got = _run(data)
    assert got.returncode == 0, got.stderr
    code = (data / "setup-code").read_text().strip()
    output = got.stdout + got.stderr
    assert code and code not in output
    assert "PRIVATE KEY" not in output
    assert f"setup code in {data / 'setup-code'}" in got.stdout
    device_id = (data / "agent" / "device-id").read_text().strip()
    assert device_id in got.stdout


def test_the_setup_code_goes_to_a_terminal_when_asked(tmp_path: Path, capsys: Capture) -> None:
    master, slave = os.openpty()
    try:
        assert main(["firstboot", "--data-dir", str(tmp_path), "--tty",
                     os.ttyname(slave)]) == 0
        shown = os.read(master, 4096).decode()
    finally:
        os.close(master)
        os.close(slave)
    code = (tmp_path / "setup-code").read_text().strip()
    assert f"setup code {code}" in shown
    out = capsys.readouterr()
    assert code not in out.out + out.err


def test_a_file_that_is_not_a_terminal_gets_no_code(tmp_path: Path, capsys: Capture) -> None:
    log = tmp_path / "console.log"
    log.write_text("")
    assert main(["firstboot", "--data-dir", str(tmp_path / "d"), "--tty", str(log)]) == 0
    assert log.read_text() == ""
    assert "is not a terminal" in capsys.readouterr().err


def test_no_setup_code_once_the_password_is_set(tmp_path: Path, capsys: Capture) -> None:
    from firmware.auth import Auth

    assert main(["firstboot", "--data-dir", str(tmp_path)]) == 0
    Auth(tmp_path).set_password("a good long password", "a good long password")
    (tmp_path / MARKER).unlink()
    assert main(["firstboot", "--data-dir", str(tmp_path)]) == 0
    assert "admin password is set" in capsys.readouterr().out
    assert not (tmp_path / "setup-code").exists()


def test_owner_gives_the_data_to_the_user(tmp_path: Path) -> None:
    got = _run(tmp_path / "data", "--owner", "root")
    assert got.returncode == 0, got.stderr
    assert all(p.stat().st_uid == 0 for p in (tmp_path / "data").rglob("*"))


def _owned(path: Path) -> tuple[int, str, str]:
    st = path.stat()
    return (stat.S_IMODE(st.st_mode), pwd.getpwuid(st.st_uid).pw_name,
            grp.getgrgid(st.st_gid).gr_name)


def test_the_core_and_the_clients_share_the_records_not_the_secrets(tmp_path: Path) -> None:
    """The layout of systemd/branchline.env's users (stand-ins that exist everywhere:
    daemon for the core, nobody for the clients, audio for their group)."""
    from firmware.core.config import ConfigStore, default_document

    data, etc = tmp_path / "data", tmp_path / "etc"
    ConfigStore(etc).save(default_document(), "test")
    (data / "update").mkdir(parents=True, mode=0o700)  # the update service's (root)
    got = _run(data, "--config-dir", str(etc), "--owner", "nobody", "--core-user", "daemon",
               "--group", "audio")
    assert got.returncode == 0, got.stderr
    assert _owned(data) == (0o2770, "daemon", "audio")
    for name in ("recordings", "files"):
        assert _owned(data / name) == (0o2770, "daemon", "audio")
    assert _owned(data / "cdr.db") == (0o660, "daemon", "audio")
    for name in PRIVATE:
        assert _owned(data / name) == (0o600, "nobody", "audio"), name
    assert _owned(data / "agent") == (0o700, "nobody", "audio")
    assert _owned(data / "update") == (0o700, "root", "root")
    assert _owned(etc) == (0o2750, "daemon", "audio")
    assert _owned(etc / "branchline.toml") == (0o640, "daemon", "audio")
    again = _run(data, "--config-dir", str(etc), "--owner", "nobody", "--core-user",
                 "daemon", "--group", "audio")
    assert again.returncode == 0 and _owned(data) == (0o2770, "daemon", "audio")


@pytest.mark.parametrize(("setup", "extra", "needle"), [
    ("file", (), "not a folder; give --data-dir"),
    ("dir", ("--owner", "no-such-user-here"), "no such user; create it"),
    ("dir", ("--owner", "root", "--group", "no-such-group-here"), "no such group; create"),
    ("dir", ("--core-user", "root"), "go with --owner"),
])
def test_bad_input_is_one_line_naming_the_fix(tmp_path: Path, setup: str,
                                              extra: tuple[str, ...], needle: str) -> None:
    data = tmp_path / "data"
    if setup == "file":
        data.write_text("")
    got = _run(data, *extra)
    assert got.returncode == 2
    assert needle in got.stderr and "Traceback" not in got.stderr
    assert len(got.stderr.strip().splitlines()) == 1


def test_a_blocked_path_is_named(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "agent").write_text("")  # where the identity's folder goes (root ignores modes)
    got = _run(data)
    assert got.returncode == 2
    assert str(data / "agent") in got.stderr and "Traceback" not in got.stderr


def test_the_certificate_carries_the_configured_box_name(tmp_path: Path) -> None:
    from cryptography import x509

    from firmware.core.config import ConfigStore, default_document

    doc = default_document()
    doc["system"]["name"] = "lobby-gw"
    ConfigStore(tmp_path / "etc").save(doc, "test")
    got = _run(tmp_path / "data", "--config-dir", str(tmp_path / "etc"))
    assert got.returncode == 0, got.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "data" / "tls-cert.pem").read_bytes())
    assert "CN=lobby-gw" in cert.subject.rfc4514_string()
