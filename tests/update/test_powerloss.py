"""Power loss at every step of an update: the harness itself (a cut loses what never reached
the disk, kill -9 does not), then the matrix step × {kill -9, power cut}, whose every cell must
come up on a good slot with its config and records; the matrix goes to
tests/artifacts/powerloss.json and is printed as a markdown table.

The matrix also installs a bad build (its root's marker makes the core fail to start, so the
health check fails): uncut it must roll back to A by itself, ROLLED_BACK naming the failed
check; cut during that rollback (mark-bad's autoboot.txt write, or after mark-bad before the
reboot) it must end the same way. Cells run 2 at once on a 2-CPU machine (CI)."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.bundle import BundleKind, BundleMaker, make_pki
from lab.pki import Pki
from lab.powercut import (
    BROKEN_MARKER,
    CutMode,
    Disk,
    Fixtures,
    Processes,
    attached,
    config_print,
    copy_card,
    cut,
    default_workers,
    make_base_card,
    markdown,
    records_print,
    run_matrix,
    write_json,
)
from lab.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _mkfs(path: Path, size_mb: int = 8) -> Path:
    with path.open("wb") as f:
        f.truncate(size_mb << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(path)], check=True, timeout=60)
    return path


def _write(path: Path, data: bytes, *, sync: bool) -> None:
    with path.open("wb") as f:
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    if sync:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    d = Disk({"data": _mkfs(tmp_path / "data.img")})
    with attached(d):
        yield d


def _reboot_and_read(disk: Disk, where: Path, names: list[str]) -> dict[str, bytes | None]:
    with attached(disk):
        disk.fsck("data")
        disk.mount("data", where)
        return {n: (where / n).read_bytes() if (where / n).exists() else None for n in names}


@pytest.mark.parametrize("mode", list(CutMode))
def test_cut_keeps_synced_files_and_loses_unsynced_ones_only_on_power_cut(
        disk: Disk, tmp_path: Path, mode: CutMode) -> None:
    mnt = disk.mount("data", tmp_path / "mnt")
    synced, unsynced = b"synced\n" * 1000, b"unsynced\n" * 1000
    _write(mnt / "synced.txt", synced, sync=True)
    _write(mnt / "unsynced.txt", unsynced, sync=False)
    after = cut(mode, Processes(), disk)
    got = _reboot_and_read(after, tmp_path / "mnt2", ["synced.txt", "unsynced.txt"])
    assert got["synced.txt"] == synced
    if mode is CutMode.POWER:
        # never fsynced: delayed allocation kept its blocks in memory, so the file is gone
        # (or, if a journal commit raced in, there but empty) — never complete
        assert got["unsynced.txt"] in (None, b"")
    else:
        assert got["unsynced.txt"] == unsynced


WRITER = """
import os, sys
d = sys.argv[1]
with open(os.path.join(d, "synced.txt"), "wb") as f:
    f.write(b"s" * 65536); f.flush(); os.fsync(f.fileno())
fd = os.open(d, os.O_RDONLY); os.fsync(fd); os.close(fd)
with open(os.path.join(d, "unsynced.txt"), "wb") as f:
    f.write(b"u" * 65536); f.flush()
print("written", flush=True)
fd = os.open(os.path.join(d, "busy.txt"), os.O_WRONLY | os.O_CREAT)
while True:  # keeps dirtying one page (never fills the disk: a full ext4 flushes everything)
    os.pwrite(fd, os.urandom(4096), 0)
"""


def test_power_cut_kills_a_writing_process_tree_and_keeps_only_the_disk(
        disk: Disk, tmp_path: Path) -> None:
    mnt = disk.mount("data", tmp_path / "mnt")
    procs = Processes()
    log = tmp_path / "writer.log"
    # a shell parent with the writer below it: the whole tree goes
    proc = procs.spawn(["sh", "-c", f'"{sys.executable}" -c \'{WRITER}\' {mnt}; sleep 600'],
                       os.environ, log)
    wait_until(lambda: b"written" in log.read_bytes(), 20, "the writer to write")
    after = cut(CutMode.POWER, procs, disk)
    assert proc.poll() is not None
    got = _reboot_and_read(after, tmp_path / "mnt2", ["synced.txt", "unsynced.txt"])
    assert got["synced.txt"] == b"s" * 65536
    assert got["unsynced.txt"] in (None, b"")


# -- the matrix ----------------------------------------------------------------------------

ARTIFACT = ROOT / "tests" / "artifacts" / "powerloss.json"
CHUNK, CHUNK_PAUSE_S = 16 << 10, 0.05
DOWNLOAD_BYTES = 512 << 10  # the agent writes 64 KiB at a time: several writes, then a cut  # the cloud's slow download: the cut lands inside it


@contextlib.contextmanager
def slow_https(payload: bytes, folder: Path) -> Iterator[tuple[str, Path]]:
    """An HTTPS server (the lab CA) that trickles `payload`; yields (url, ca file)."""
    pki = Pki(folder)
    cert, key = pki.server("localhost")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            stop = self.server.stopping  # type: ignore[attr-defined]
            for i in range(0, len(payload), CHUNK):
                if stop.wait(CHUNK_PAUSE_S):
                    return
                try:
                    self.wfile.write(payload[i:i + CHUNK])
                except OSError:
                    return  # the box was cut mid-download

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.stopping = threading.Event()  # type: ignore[attr-defined]
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/update.raucb", pki.ca_file
    finally:
        server.stopping.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixtures]:
    folder = tmp_path_factory.mktemp("powerloss")
    pki = make_pki(folder / "pki")
    maker = BundleMaker(folder / "bundles", pki)
    bundle = maker.build(BundleKind.GOOD, "2.0.0")
    broken = maker.build(BundleKind.GOOD, "2.0.1", marker=BROKEN_MARKER)  # a bad build
    base = make_base_card(folder / "base")
    expected = read_base(base, folder / "probe")
    payload = bundle.read_bytes().ljust(DOWNLOAD_BYTES, b"\0")
    with slow_https(payload, folder / "https") as (url, ca):
        yield Fixtures(base, pki.ca, bundle, expected[0], expected[1], url, ca,
                       hashlib.sha256(payload).hexdigest(), len(payload), broken)


def read_base(base: Path, where: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The config and records the factory card holds (read from a copy)."""
    copy = where / "card"
    copy_card(base, copy)
    disk = Disk({"data": copy / "p7.img"})
    with attached(disk):
        mnt = disk.mount("data", where / "mnt")
        return config_print(mnt / "config"), records_print(mnt / "lib")


def test_power_loss_matrix(fixtures: Fixtures, tmp_path: Path) -> None:
    started = time.monotonic()
    outcomes = run_matrix(fixtures, tmp_path)
    write_json(outcomes, ARTIFACT)
    table = markdown(outcomes)
    print(f"\npower-loss matrix ({len(outcomes)} cells, {default_workers()} at once, "
          f"{time.monotonic() - started:.0f} s):\n{table}")
    failed = [f"{o.step} × {o.mode}: {o.verdict()}" for o in outcomes if not o.passed]
    assert not failed, "\n".join(failed) + "\n\n" + table
