"""A cloud records receiver on loopback: what `branchline forward` delivers to.

It stores every delivery, dedups by record UUID and counts duplicates (a redelivery is
harmless; a record stored twice is a bug). Switchable at run time to script a bad cloud:
ok, fail (503), hang, lose_ack, down. In-process as a context manager, or
`python -m lab.records --port 0` driven over HTTP (POST /_control, GET /_stats). 127.0.0.1
only; HTTPS with a self-signed certificate the forwarder can trust (`cert_path`), or a
given one; `client_ca` makes it mutual TLS: a client without a certificate signed by that
CA is refused at the handshake (counted in `refused`), and each record and file keeps
the CN of the certificate that delivered it (`senders`). Files arrive at
PUT <path>/files/<uuid> (older forwarders: <path>/recordings/<uuid>).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import http.server
import ipaddress
import json
import logging
import socket
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
MODES = ("ok", "fail", "hang", "lose_ack", "down")
MAX_BODY = 256 * 1024 * 1024

log = logging.getLogger(__name__)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    receiver: RecordsReceiver

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A connection the chaos proxy reset mid-request is the test's point, not a fault;
        # a client refused at the TLS handshake is counted, not printed.
        exc = sys.exc_info()[1]
        if isinstance(exc, ssl.SSLError):
            with self.receiver.lock:
                self.receiver.refused += 1
            log.info("records receiver: TLS handshake refused: %s", exc)
        elif not isinstance(exc, ConnectionError):
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: the forwarder reuses its connection
    disable_nagle_algorithm = True  # header and body are two writes: no 40 ms ACK stall

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):  # here, not in the accepting thread
            self.request.do_handshake()
        super().setup()
        self.server.receiver._open_conns.add(self.connection)

    def peer_cn(self) -> str:
        """The CN of the client's certificate ("" without mutual TLS)."""
        if not isinstance(self.connection, ssl.SSLSocket):
            return ""
        subject: Any = (self.connection.getpeercert() or {}).get("subject", ())
        names = [value for rdn in subject for key, value in rdn if key == "commonName"]
        return str(names[0]) if names else ""

    def finish(self) -> None:
        self.server.receiver._open_conns.discard(self.connection)
        super().finish()

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("records receiver: " + fmt, *args)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.server.receiver._handle(self, "POST")

    def do_PUT(self) -> None:  # noqa: N802
        self.server.receiver._handle(self, "PUT")

    def do_GET(self) -> None:  # noqa: N802
        self.server.receiver._handle(self, "GET")

    def reply(self, status: int, doc: Any) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class RecordsReceiver:
    """The receiver (see the module docstring). Counters are read under `lock`."""

    def __init__(self, port: int = 0, path: str = "/v1/records", tls: bool = False,
                 mode: str = "ok", hang_s: float = 30.0, reply_delay_s: float = 0.0,
                 cert_dir: str | Path | None = None,
                 server_cert: tuple[Path, Path] | None = None,
                 client_ca: str | Path | None = None) -> None:
        self.path = path.rstrip("/")
        tls = tls or server_cert is not None or client_ca is not None
        self.tls, self.hang_s, self.reply_delay_s = tls, hang_s, reply_delay_s
        self.client_ca = Path(client_ca) if client_ca is not None else None
        self.lock = threading.Lock()
        self._changed = threading.Condition(self.lock)
        self.records: dict[str, dict] = {}   # uuid -> the first copy received
        self.order: list[str] = []           # uuids in order of first arrival
        self.duplicates: dict[str, int] = {}  # uuid -> extra copies received
        self.files: dict[str, tuple[int, str]] = {}  # uuid -> (size, sha256)
        self.file_puts = 0
        self.senders: dict[str, str] = {}    # uuid -> CN of the client that sent it first
        self.refused = 0                      # TLS handshakes refused (no/bad client cert)
        self.requests = 0
        self.received = 0                     # records received, duplicates included
        self._mode = "down"
        self._want = mode
        self._open_conns: set[socket.socket] = set()  # kept-alive clients, cut on down()
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.cert_path: Path | None = None
        self._key_path: Path | None = None
        if server_cert is not None:
            self.cert_path, self._key_path = server_cert
        elif tls:
            if not cert_dir:
                self._tmp = tempfile.TemporaryDirectory(prefix="records-")
                cert_dir = self._tmp.name
            self.cert_path, self._key_path = _self_signed(Path(cert_dir))

    # --- life cycle ----------------------------------------------------------------

    def start(self) -> RecordsReceiver:
        self.set_mode(self._want)
        return self

    def __enter__(self) -> RecordsReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.set_mode("down")
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self._port}{self.path}"

    @property
    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"records receiver mode {mode!r}: choose one of {', '.join(MODES)}")
        if mode == "down":
            self._stop_listening()
        elif self._server is None:
            self._listen()
        with self._changed:
            self._mode = mode
            self._changed.notify_all()

    def down(self) -> None:
        self.set_mode("down")

    def up(self, mode: str = "ok") -> None:
        self.set_mode(mode)

    def _listen(self) -> None:
        server = _Server((HOST, self._port), _Handler)
        server.receiver = self
        if self.cert_path is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.cert_path, self._key_path)
            if self.client_ca is not None:
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(cafile=str(self.client_ca))
            server.socket = ctx.wrap_socket(server.socket, server_side=True,
                                            do_handshake_on_connect=False)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,),
                                        name="records-receiver", daemon=True)
        self._thread.start()

    def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        with self._changed:
            self._mode = "down"
            self._changed.notify_all()  # release hanging handlers
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        for conn in list(self._open_conns):  # a dead cloud drops its connections too
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # --- what the tests read ------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"distinct": len(self.records), "received": self.received,
                    "duplicates": sum(self.duplicates.values()), "files": len(self.files),
                    "file_puts": self.file_puts, "requests": self.requests,
                    "refused": self.refused, "mode": self._mode}

    def wait_for(self, distinct: int, timeout: float = 10.0) -> bool:
        """Wait until `distinct` different records were stored."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.records) < distinct:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.1))
        return True

    # --- requests ------------------------------------------------------------------

    def _handle(self, h: _Handler, method: str) -> None:
        if method == "GET" and h.path == "/_stats":
            return h.reply(200, self.stats())
        body = self._read_body(h)
        if body is None:
            return None
        if method == "POST" and h.path == "/_control":
            return self._control(h, body)
        with self.lock:
            self.requests += 1
            mode = self._mode
        if mode == "fail":
            return h.reply(503, {"error": "records receiver told to fail"})
        if mode == "hang":
            return self._hang(h)
        return self._store(h, method, body, ack=mode != "lose_ack")

    def _read_body(self, h: _Handler) -> bytes | None:
        size = int(h.headers.get("Content-Length") or 0)
        if not 0 <= size <= MAX_BODY:
            h.reply(413, {"error": "body too large"})
            return None
        return h.rfile.read(size)

    def _control(self, h: _Handler, body: bytes) -> None:
        try:
            mode = json.loads(body)["mode"]
            threading.Thread(target=self.set_mode, args=(mode,), daemon=True).start() \
                if mode == "down" else self.set_mode(mode)
        except (ValueError, KeyError, TypeError) as exc:
            return h.reply(400, {"error": str(exc)})
        return h.reply(200, {"mode": mode})

    def _hang(self, h: _Handler) -> None:
        deadline = time.monotonic() + self.hang_s
        with self._changed:
            while self._mode == "hang" and time.monotonic() < deadline:
                self._changed.wait(0.05)
        h.close_connection = True  # nothing stored, nothing answered

    def _store(self, h: _Handler, method: str, body: bytes, ack: bool) -> None:
        name = next((h.path[len(p):] for p in (self.path + "/files/", self.path + "/recordings/")
                     if h.path.startswith(p)), None)
        result: dict[str, Any] | str
        if method == "PUT" and name:
            result = self._store_file(name, body, h.peer_cn())
        elif method == "POST" and h.path == self.path:
            result = self._store_records(body, h.peer_cn())
        else:
            return h.reply(404, {"error": f"no such resource {method} {h.path}"})
        if isinstance(result, str):
            return h.reply(400, {"error": result})
        if not ack:
            h.close_connection = True
            return None
        if self.reply_delay_s:
            time.sleep(self.reply_delay_s)
        return h.reply(200, result)

    def _store_file(self, uuid: str, body: bytes, cn: str) -> dict[str, Any]:
        with self._changed:
            self.file_puts += 1
            self.files.setdefault(uuid, (len(body), hashlib.sha256(body).hexdigest()))
            self.senders.setdefault(uuid, cn)
            self._changed.notify_all()
        return {"stored": 1}

    def _store_records(self, body: bytes, cn: str) -> dict[str, Any] | str:
        try:
            records = json.loads(body)["records"]
            uuids = [str(r["uuid"]) for r in records if r["kind"]]
        except (ValueError, KeyError, TypeError) as exc:
            return f"bad records document: {exc}"
        stored = dups = 0
        with self._changed:
            for uuid, rec in zip(uuids, records, strict=True):
                self.received += 1
                if uuid in self.records:
                    self.duplicates[uuid] = self.duplicates.get(uuid, 0) + 1
                    dups += 1
                    continue
                self.records[uuid] = rec
                self.senders.setdefault(uuid, cn)
                self.order.append(uuid)
                stored += 1
            self._changed.notify_all()
        return {"stored": stored, "duplicates": dups}


def _self_signed(d: Path) -> tuple[Path, Path]:
    """A throw-away certificate for 127.0.0.1 / localhost (lab only)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "records.lab")])
    now = datetime.datetime.now(datetime.UTC)
    alt = x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                       x509.IPAddress(ipaddress.ip_address(HOST))])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(alt, critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    d.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = d / "records-cert.pem", d / "records-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.records",
                                     description="Cloud records receiver on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--path", default="/v1/records")
    parser.add_argument("--tls", action="store_true", help="HTTPS with a self-signed cert")
    parser.add_argument("--cert-dir", help="where the certificate goes (with --tls)")
    parser.add_argument("--client-ca", help="mutual TLS: require a client certificate "
                                            "signed by this CA (PEM)")
    parser.add_argument("--mode", default="ok", choices=MODES)
    parser.add_argument("--seconds", type=float, default=600.0, help="exit after this long")
    args = parser.parse_args(argv)
    rx = RecordsReceiver(port=args.port, path=args.path, tls=args.tls, mode=args.mode,
                         cert_dir=args.cert_dir, client_ca=args.client_ca)
    with rx:
        cert = f" cert={rx.cert_path}" if rx.cert_path else ""
        print(f"READY {rx.url}{cert}", flush=True)
        deadline = time.monotonic() + args.seconds
        try:
            while time.monotonic() < deadline:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        print("STATS " + json.dumps(rx.stats()), flush=True)
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    sys.exit(main())
