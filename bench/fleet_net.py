"""The fleet bench's plumbing: paho MQTT 5 clients over mutual TLS, the kernel's byte
counters of a TCP connection (what a device pays on the wire), and the broker's CPU
and memory from /proc. Shared by the agent, platform and meter sides of bench_fleet.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from firmware.agent.protocol import Topic, encode, topic

VERSION = "bench-fleet"
# IPv4 (20) + TCP (20) + the timestamp option Linux sends on every segment (12).
IP_TCP_HEADER = 52
# struct tcp_info (linux/tcp.h): offsets of the byte and segment counters.
_TCPI_BYTES_RECEIVED, _TCPI_SEGS, _TCPI_BYTES_SENT, _TCPI_LEN = 128, 136, 200, 232


@dataclass(frozen=True)
class Identity:
    """A device's (or the platform's) certificate and key, issued by lab.pki."""

    cn: str
    cert: str
    key: str


@dataclass(frozen=True)
class BrokerAddr:
    host: str
    port: int
    ca_file: str


@dataclass(frozen=True)
class Wire:
    """TCP payload bytes (TLS records: handshake, MQTT packets, alerts) each way and the
    segments that carried them, from the kernel's tcp_info of one socket."""

    tx: int = 0
    rx: int = 0
    segs_out: int = 0
    segs_in: int = 0

    def __sub__(self, other: Wire) -> Wire:
        return Wire(self.tx - other.tx, self.rx - other.rx,
                    self.segs_out - other.segs_out, self.segs_in - other.segs_in)

    def __add__(self, other: Wire) -> Wire:
        return Wire(self.tx + other.tx, self.rx + other.rx,
                    self.segs_out + other.segs_out, self.segs_in + other.segs_in)

    @property
    def tls(self) -> int:
        """Bytes both ways at the TLS record layer (measured)."""
        return self.tx + self.rx

    @property
    def ip(self) -> int:
        """Bytes both ways at the IP layer: TLS bytes + 52 per segment (estimated headers)."""
        return self.tls + IP_TCP_HEADER * (self.segs_out + self.segs_in)

    def as_dict(self) -> dict[str, int]:
        return {"tx": self.tx, "rx": self.rx, "segs_out": self.segs_out,
                "segs_in": self.segs_in, "tls_bytes": self.tls, "ip_bytes": self.ip}


def wire(sock: socket.socket | None) -> Wire:
    """The byte counters of a connected TCP socket (zeros once it is closed)."""
    if sock is None or sock.fileno() < 0:
        return Wire()
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCPI_LEN)
    except OSError:
        return Wire()
    if len(raw) < _TCPI_LEN - 16:
        raise RuntimeError("tcp_info too short: the kernel has no bytes_sent (needs >= 4.19)")
    rx, = struct.unpack_from("Q", raw, _TCPI_BYTES_RECEIVED)
    segs_out, segs_in = struct.unpack_from("II", raw, _TCPI_SEGS)
    tx, = struct.unpack_from("Q", raw, _TCPI_BYTES_SENT)
    return Wire(tx, rx, segs_out, segs_in)


def client_socket(client: mqtt.Client) -> socket.socket | None:
    sock = client.socket()
    return sock if isinstance(sock, socket.socket) else None


def tls_context(broker: BrokerAddr, ident: Identity) -> ssl.SSLContext:
    """The broker's CA pinned (no system CAs), this identity's certificate presented."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(broker.ca_file)
    ctx.load_cert_chain(ident.cert, ident.key)
    return ctx


def status(state: str, t: float, reason: str | None = None) -> bytes:
    doc: dict[str, object] = {"state": state, "time": round(t, 3), "version": VERSION}
    if reason:
        doc["reason"] = reason
    return encode(Topic.STATUS, doc)


def new_client(broker: BrokerAddr, ident: Identity, *, device: bool, now_wall: float,
               client_id: str | None = None) -> mqtt.Client:
    """An MQTT 5 client over mTLS; a device's carries the last will (offline, lost)."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or ident.cn,
                    protocol=mqtt.MQTTv5)
    c.tls_set_context(tls_context(broker, ident))
    if device:
        c.will_set(topic(ident.cn, Topic.STATUS), status("offline", now_wall, "lost"),
                   qos=1, retain=True)
    return c


def issue(pki_dir: Path, names: list[str]) -> list[Identity]:
    """Certificates for `names` from lab.pki's CA in pki_dir (made there once)."""
    from lab.pki import Pki
    pki = Pki(pki_dir)
    out = []
    for cn in names:
        cert, key = pki.client(cn)
        out.append(Identity(cn, str(cert), str(key)))
    return out


# --- the broker process ------------------------------------------------------------------
def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process in seconds (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_mem_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process in kB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system
