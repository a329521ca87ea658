"""A real Mosquitto 2.0 on loopback for the tests, the demo and the bench, and an MQTT 5
client for the cloud side (the platform) and for playing other devices.

`Mosquitto(dir, pki)` fills lab/mosquitto/mosquitto.conf (the config and ACL in the repo)
into dir: an mTLS listener (the certificate's CN is the user name) and a TLS listener with
a password file (the fallback). start() waits until the mTLS port answers an MQTT 5
CONNECT; stop() is SIGTERM (bounded), kill() SIGKILL (a broker that dies). It runs as the
current user with a raised open-files limit (the bench's 1,000 clients).

`MqttClient` is a paho MQTT 5 client with its loop thread, a thread-safe list of what it
received and blocking publish()/subscribe() that return the broker's reason codes;
`PlatformClient(broker)` is one with the platform's certificate (readwrite branchline/#).
paho's loop thread reconnects it after a broker restart; with clean_start=False and a
session_expiry_s its subscriptions (and the messages for it) survive that.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import resource
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from lab.kamailio import LabError
from lab.pki import Pki
from lab.ports import HOST, free_ports
from lab.procs import stop_process
from lab.wait import wait_until

CONF_DIR = Path(__file__).resolve().parent / "mosquitto"
PLATFORM = "platform"  # the CN of the cloud side's certificate: readwrite branchline/#
MAX_PACKET = 64 * 1024 + 8 * 1024  # the agent's MAX_PAYLOAD plus topic and properties
NOFILE = 65536
LOG_TYPES = "error warning notice information subscribe unsubscribe"


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto"
                                          if os.path.exists("/usr/sbin/mosquitto") else None)
    if not found:
        raise LabError("mosquitto is not installed: apt-get install mosquitto "
                       "(scripts/debian-test-packages.txt)")
    return found


def hash_password(password: str) -> str:
    """Mosquitto 2.0's sha512-pbkdf2 password hash ($7$), what mosquitto_passwd writes."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return f"$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _raise_nofile() -> None:
    """Popen preexec: as many open files as allowed, for 1,000 clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _mqtt5_connect_packet(client_id: str) -> bytes:
    cid = client_id.encode()
    variable = b"\x00\x04MQTT\x05\x02\x00\x0a\x00"  # v5, clean start, keepalive 10, no props
    payload = len(cid).to_bytes(2, "big") + cid
    body = variable + payload
    return b"\x10" + bytes([len(body)]) + body


class Mosquitto:
    """See the module docstring. Ports are chosen at construction and kept over restarts."""

    def __init__(self, directory: Path, pki: Pki, *,
                 password_users: Mapping[str, str] | None = None,
                 log_types: str = LOG_TYPES) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.pki = pki
        self.password_users = dict(password_users or {})
        self.log_types = log_types
        self.tls_port, self.password_port = free_ports(2, "tcp")
        self.host = HOST
        self.cert_file, self.key_file = pki.server("localhost")
        self.platform_cert, self.platform_key = pki.client(PLATFORM)
        self.conf_file = self.directory / "mosquitto.conf"
        self.acl_file = self.directory / "acl"
        self.password_file = self.directory / "passwords"
        self.log_file = self.directory / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtts://{self.host}:{self.tls_port}"

    @property
    def password_url(self) -> str:
        return f"mqtts://{self.host}:{self.password_port}"

    def _write_files(self) -> None:
        shutil.copyfile(CONF_DIR / "acl", self.acl_file)
        lines = [f"{user}:{hash_password(pw)}\n" for user, pw in self.password_users.items()]
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.writelines(lines)
        values = {"user": pwd.getpwuid(os.getuid()).pw_name, "dir": str(self.directory),
                  "log_types": self.log_types, "max_packet_size": MAX_PACKET,
                  "tls_port": self.tls_port, "password_port": self.password_port,
                  "ca_file": self.pki.ca_file, "cert_file": self.cert_file,
                  "key_file": self.key_file, "acl_file": self.acl_file,
                  "password_file": self.password_file}
        text = Template((CONF_DIR / "mosquitto.conf").read_text()).substitute(values)
        self.conf_file.write_text(text)

    def set_password(self, user: str, password: str) -> None:
        """Add or change a fallback user; takes effect at the next start/restart."""
        self.password_users[user] = password

    def start(self, timeout: float = 15.0) -> Mosquitto:
        if self.proc is not None and self.proc.poll() is None:
            return self
        self._write_files()
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.conf_file)],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         preexec_fn=_raise_nofile)
        wait_until(self._ready, timeout, f"mosquitto on {self.host}:{self.tls_port}", step=0.05,
                   detail=self.log_tail)
        return self

    def _ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise LabError(f"mosquitto exited at start: {self.log_tail()}")
        return self.answers()

    def answers(self) -> bool:
        """Whether the mTLS port completes a TLS handshake and an MQTT 5 CONNECT/CONNACK."""
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_file))
        ctx.load_cert_chain(str(self.platform_cert), str(self.platform_key))
        try:
            with socket.create_connection((self.host, self.tls_port), timeout=2) as raw, \
                    ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(_mqtt5_connect_packet(f"probe-{secrets.token_hex(4)}"))
                head = tls.recv(4)
                tls.sendall(b"\xe0\x00")  # DISCONNECT
                return len(head) >= 4 and head[0] == 0x20 and head[3] == 0
        except (OSError, ssl.SSLError):
            return False

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        stop_process(self.proc, grace=5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the broker dies without a goodbye (its in-memory state is lost)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: the broker stops answering (sockets stay open, nothing is acknowledged)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, cn: str, **kw: Any) -> MqttClient:
        """A connected MQTT 5 client with a certificate for `cn` from this broker's CA."""
        cert, key = self.pki.client(cn)
        return MqttClient(self.host, self.tls_port, self.pki.ca_file, cert=cert, key=key,
                          client_id=kw.pop("client_id", cn), **kw)


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retained: bool
    qos: int
    response_topic: str | None
    correlation: bytes | None
    at: float  # time.monotonic() when it arrived

    def json(self) -> Any:
        return json.loads(self.payload)


class MqttClient:
    """A paho MQTT 5 client over TLS with its loop thread started (see the module docstring).

    publish() and subscribe() block until the broker answers and return its reason codes;
    `received` is appended on paho's thread (read it with snapshot()/wait_for()).
    """

    def __init__(self, host: str, port: int, ca_file: Path, *, cert: Path | None = None,
                 key: Path | None = None, username: str = "", password: str = "",
                 client_id: str = "", clean_start: bool = True, session_expiry_s: int = 0,
                 timeout: float = 10.0) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        ctx = ssl.create_default_context(cafile=str(ca_file))
        if cert is not None and key is not None:
            ctx.load_cert_chain(str(cert), str(key))
        self.client.tls_set_context(ctx)
        if username:
            self.client.username_pw_set(username, password)
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._acks: dict[int, ReasonCode] = {}
        self._subacks: dict[int, list[ReasonCode]] = {}
        self.connack: ReasonCode | None = None
        self.disconnected = threading.Event()
        self._connected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.timeout = timeout
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry_s
        self.client.reconnect_delay_set(1, 2)
        self.client.connect(host, port, keepalive=30, clean_start=clean_start, properties=props)
        self.client.loop_start()
        if not self._connected.wait(timeout) or self.connack is None:
            self.close()
            raise LabError(f"MQTT client {client_id!r}: no CONNACK from {host}:{port}")

    # ---- paho's thread ----
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Any) -> None:
        self.connack = reason
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                       properties: Any) -> None:
        self.disconnected.set()
        self._connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        item = Received(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos,
                        getattr(props, "ResponseTopic", None),
                        getattr(props, "CorrelationData", None), time.monotonic())
        with self._lock:
            self._received.append(item)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Any) -> None:
        with self._lock:
            self._acks[mid] = reason

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reasons: list[ReasonCode], properties: Any) -> None:
        with self._lock:
            self._subacks[mid] = list(reasons)

    # ---- the test's thread ----
    @property
    def refused(self) -> bool:
        return self.connack is not None and self.connack.is_failure

    def subscribe(self, topic: str, qos: int = 1) -> list[ReasonCode]:
        """Subscribe and wait for the SUBACK; its reason codes (0x87 = not authorized)."""
        _, sub_mid = self.client.subscribe(topic, qos=qos)
        mid = sub_mid or 0
        return wait_until(lambda: self._take(self._subacks, mid), self.timeout,
                          f"SUBACK for {topic}")

    def publish(self, topic: str, payload: Mapping[str, Any] | bytes | str, qos: int = 1,
                retain: bool = False, *, response_topic: str | None = None,
                correlation: bytes | None = None, wait: bool = True) -> ReasonCode | None:
        """Publish; with wait, the PUBACK's reason code (QoS1) or success once written."""
        data = payload if isinstance(payload, bytes) else (
            payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
        props = None
        if response_topic is not None or correlation is not None:
            props = Properties(PacketTypes.PUBLISH)
            if response_topic is not None:
                props.ResponseTopic = response_topic
            if correlation is not None:
                props.CorrelationData = correlation
        info = self.client.publish(topic, data, qos=qos, retain=retain, properties=props)
        if not wait:
            return None
        return wait_until(lambda: self._take(self._acks, info.mid), self.timeout,
                          f"PUBACK for {topic}")

    def _take(self, table: dict[int, Any], mid: int) -> Any:
        with self._lock:
            return table.pop(mid, None)

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def clear(self) -> None:
        with self._lock:
            self._received.clear()

    def messages(self, topic: str) -> list[Received]:
        return [m for m in self.snapshot() if m.topic == topic]

    def wait_for(self, predicate: Callable[[Received], bool], timeout: float = 10.0,
                 what: str = "a message") -> Received:
        """The first received message (old or new) for which predicate holds."""
        def found() -> Received | None:
            return next((m for m in self.snapshot() if predicate(m)), None)
        return wait_until(found, timeout, what, detail=lambda: [
            (m.topic, m.payload[:200]) for m in self.snapshot()[-10:]])

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


class PlatformClient(MqttClient):
    """The cloud side: the platform's certificate, readwrite on branchline/#."""

    def __init__(self, broker: Mosquitto, client_id: str = "", **kw: Any) -> None:
        super().__init__(broker.host, broker.tls_port, broker.pki.ca_file,
                         cert=broker.platform_cert, key=broker.platform_key,
                         client_id=client_id or f"platform-{secrets.token_hex(4)}", **kw)
