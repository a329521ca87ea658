"""Shared parts of the update service's tests (not a test module):

- `Signer`: a signing CA made at test time with openssl (a root and a leaf for signing;
  no extended key usage, which RAUC 1.8 would check as smimesign), and `make_bundle`
  building real RAUC plain bundles with `rauc bundle` (signed, signed by another CA, or a
  bare squashfs: unsigned);
- `LiveCore`: a real core (SimBoard twins, call control) on a real-clock reactor thread,
  its control API on a Unix socket; `unseated` chips answer 0xFF (a failed port);
- `HttpsPage`: an HTTPS server on loopback with a self-signed certificate (the web page's
  stand-in for the health check: it only has to answer).
Every process and thread started here is stopped by its owner (fixtures, finally)."""

from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Any

from drivers.sim.board import SimBoard
from firmware.api.client import ApiClient
from firmware.api.server import ApiServer
from firmware.core.config import ConfigStore
from firmware.core.runtime import Core
from foundation.reactor import MonotonicClock, Reactor
from lab.pki import Pki
from lab.wait import wait_until

COMPATIBLE = "branchline-rpi"


def need(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        raise AssertionError(f"{tool} is missing: apt-get install {package} "
                             "(scripts/debian-test-packages.txt)")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


class Signer:
    """A root CA (the keyring) and a leaf certificate that signs bundles."""

    def __init__(self, directory: Path, name: str) -> None:
        need("openssl", "openssl")
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca, self.ca_key = directory / f"{name}-ca.pem", directory / f"{name}-ca.key"
        self.cert, self.key = directory / f"{name}.pem", directory / f"{name}.key"
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                 "-subj", f"/CN={name} ca", "-keyout", str(self.ca_key), "-out", str(self.ca))
        csr = directory / f"{name}.csr"
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name} signer",
                 "-keyout", str(self.key), "-out", str(csr))
        ext = directory / f"{name}.ext"
        ext.write_text("keyUsage=digitalSignature\n")  # no EKU: RAUC 1.8 checks smimesign
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey",
                 str(self.ca_key), "-CAcreateserial", "-days", "30", "-extfile", str(ext),
                 "-out", str(self.cert))


def make_bundle(out: Path, version: str, signer: Signer | None,
                compatible: str = COMPATIBLE) -> Path:
    """A plain bundle with one small image; signer None: a bare squashfs (unsigned)."""
    need("rauc", "rauc")
    need("mksquashfs", "squashfs-tools")
    content = out.with_suffix(".content")
    content.mkdir(parents=True)
    (content / "root.ext4").write_bytes(b"branchline root " + version.encode())
    (content / "manifest.raucm").write_text(
        f"[update]\ncompatible={compatible}\nversion={version}\nbuild=test\n\n"
        "[bundle]\nformat=plain\n\n[image.rootfs]\nfilename=root.ext4\n")
    if signer is None:
        argv = ["mksquashfs", str(content), str(out), "-quiet", "-all-root", "-noappend"]
    else:
        argv = ["rauc", "bundle", "--cert", str(signer.cert), "--key", str(signer.key),
                str(content), str(out)]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    return out


class LiveCore:
    """A real core and its control API on `tmp`/core.sock; close() stops both."""

    def __init__(self, tmp: Path, unseated: tuple[str, ...] = (),
                 doc: dict[str, Any] | None = None) -> None:
        store = ConfigStore(tmp / "etc")
        if doc is not None:
            store.save(doc, "test")
        doc = store.load()
        self.reactor = Reactor(MonotonicClock())
        self.board = SimBoard(self.reactor, doc, unseated=unseated)
        self.core = Core(doc, self.board, self.reactor, data_dir=tmp / "data")
        ready = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(30), "the core did not start within 30 s"
        assert self.failure is None, self.failure
        self.socket = tmp / "run" / "core.sock"
        self.server = ApiServer(self.core, store, unix_path=str(self.socket))
        self.server.start()
        self.api = ApiClient(unix_path=str(self.socket))

    def _run(self, ready: threading.Event) -> None:
        try:
            self.core.start()
        except Exception as exc:  # noqa: BLE001 - reported by the constructor
            self.failure = exc
            ready.set()
            return
        ready.set()
        self.reactor.run_forever()
        self.core.stop()

    def call_up(self) -> None:
        """fxs1 dials fxs2's extension and fxs2 answers: a local call, in the status."""
        self.api.sim_phone("fxs1", "off_hook")
        wait_until(lambda: self._port("fxs1")["state"] == "off-hook", 5, "fxs1 off hook")
        self.api.sim_phone("fxs1", "dial", digits="202")
        wait_until(lambda: self._port("fxs2")["ringing"], 8, "fxs2 ringing")
        self.api.sim_phone("fxs2", "off_hook")
        wait_until(lambda: self.api.status()["calls"], 5, "a call in the status")

    def hang_up(self) -> None:
        self.api.sim_phone("fxs1", "on_hook")
        self.api.sim_phone("fxs2", "on_hook")
        wait_until(lambda: not self.api.status()["calls"], 8, "no call in the status")

    def _port(self, name: str) -> dict[str, Any]:
        return next(p for p in self.api.status()["ports"] if p["name"] == name)

    def close(self) -> None:
        self.server.stop()
        self.reactor.call_soon(self.reactor.stop)
        self.thread.join(15)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass


class HttpsPage:
    """An HTTPS server on 127.0.0.1 (certificate from lab.pki); `.listen` "HOST:PORT"."""

    def __init__(self, tmp: Path) -> None:
        cert, key = Pki(tmp / "pki").server("localhost")
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.listen = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
