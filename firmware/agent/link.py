"""The agent's MQTT 5 session with the cloud: TLS with the pinned broker CA and the
device's certificate, birth and last will on branchline/<device>/status, reconnects with
exponential backoff and jitter, a bounded queue while offline, and publish handles that
finish only on the broker's PUBACK.

Threads: paho's client is touched only by the link's network thread (it runs paho's
read/write/misc steps itself, so the backoff is ours). publish() from any thread queues
and wakes that thread; inbound messages and up/down notices queue for poll(), which runs
the handlers on the caller's (main) thread. Nothing here is specific to one broker.

Session: clean_start False with a session expiry (default 1 h), client id = device id:
QoS1 messages for the box that arrive while it is briefly away are kept by the broker and
delivered on reconnect; messages handed to paho and not PUBACKed are resent by it.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from firmware.agent.protocol import (
    INBOUND,
    MAX_PAYLOAD,
    QOS,
    RETAIN,
    ProtocolError,
    Topic,
    check_device,
    decode,
    encode,
    parse_topic,
    prefix,
    topic,
)
from foundation.backoff import backoff_s
from foundation.errors import BranchlineError

log = logging.getLogger(__name__)

QUEUE_MAX = 1000  # QoS1 messages kept while offline
CONNECT_TIMEOUT_S = 10.0  # TCP + TLS + CONNACK
STOP_WAIT_S = 2.0  # how long stop() waits for the offline status's PUBACK
SESSION_EXPIRY_S = 3600
MAX_PACKET_IN = 4 * MAX_PAYLOAD  # bigger packets are refused by the broker for us


class Clock(Protocol):
    def now(self) -> float: ...
    def wall(self) -> float: ...


class LinkError(BranchlineError):
    """Settings the link cannot use (a bad broker URL)."""


@dataclass(frozen=True)
class LinkSettings:
    device: str
    host: str
    port: int
    tls: bool = True
    ca_file: str = ""  # the broker's CA, pinned (no system CAs when given)
    cert_file: str = ""
    key_file: str = ""  # the device's X.509 identity
    username: str = ""
    password: str = field(default="", repr=False)  # fallback only
    keepalive_s: int = 60
    version: str = ""
    session_expiry_s: int = SESSION_EXPIRY_S

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> LinkSettings:
        """mqtts://host:8883 (TLS) or mqtt://host:1883; the rest as keywords."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise LinkError(f"cloud.broker: {url!r} is not mqtts://host:port or mqtt://host:port")
        try:
            port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        except ValueError:
            raise LinkError(f"cloud.broker: {url!r} has a bad port") from None
        return cls(host=parts.hostname, port=port, tls=parts.scheme == "mqtts", **kw)


@dataclass(frozen=True)
class Message:
    topic: Topic
    payload: dict[str, Any]
    retained: bool
    response_topic: str | None
    correlation: bytes | None


class Delivery:
    """A published message's fate: done on PUBACK (QoS1) or once written (QoS0); failed
    when the broker refuses it (PUBACK reason >= 0x80) or it is dropped. Thread-safe."""

    def __init__(self, t: Topic, name: str, data: bytes, props: Properties | None,
                 seq: int) -> None:
        self.topic, self.name, self.data, self.props, self.seq = t, name, data, props, seq
        self.qos, self.retain = QOS[t], RETAIN[t]
        self.error = ""
        self._event = threading.Event()
        self._failed = False

    @property
    def done(self) -> bool:
        return self._event.is_set() and not self._failed

    @property
    def failed(self) -> bool:
        return self._event.is_set() and self._failed

    def wait(self, timeout: float) -> bool:
        """True once the broker has it; False on failure or time-out."""
        return self._event.wait(timeout) and not self._failed

    def finish(self, error: str = "") -> None:
        if self._event.is_set():
            return
        self.error, self._failed = error, bool(error)
        self._event.set()


def _reason_text(reason: ReasonCode | int) -> str:
    if isinstance(reason, ReasonCode):
        return f"{reason.getName()} (0x{reason.value:02x})"
    return f"0x{int(reason):02x}"


def _check_files(s: LinkSettings) -> None:
    for name in ("ca_file", "cert_file", "key_file"):
        path = getattr(s, name)
        if path and not os.access(path, os.R_OK):
            raise LinkError(f"{name} {path}: missing or unreadable: install it or fix the path")
    if bool(s.cert_file) != bool(s.key_file):
        raise LinkError("cert_file and key_file: give both (the device identity) or neither")


def tls_context(s: LinkSettings) -> ssl.SSLContext:
    """Client TLS: only the pinned CA when given, else the system's; the device identity."""
    _check_files(s)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if s.ca_file:
        ctx.load_verify_locations(cafile=s.ca_file)
    else:
        ctx.load_default_certs()
    if s.cert_file:
        ctx.load_cert_chain(s.cert_file, s.key_file or None)
    return ctx


Item = tuple[str, Any]  # ("msg", (handlers, Message)) or ("up", bool) for poll()


class Link:
    """See the module docstring; the contract is in the agent brief."""

    def __init__(self, settings: LinkSettings, clock: Clock, *, rng: random.Random | None = None,
                 backoff_min_s: float = 1.0, backoff_max_s: float = 120.0) -> None:
        check_device(settings.device)
        self.settings, self.clock = settings, clock
        self.rng = rng or random.Random()
        self.backoff_min_s, self.backoff_max_s = backoff_min_s, backoff_max_s
        self.last_error = ""
        self.dropped = 0  # offline-queue drops since the link was last up
        self._lock = threading.Lock()
        self._handlers: dict[Topic, list[Callable[[Message], None]]] = {}
        self._on_connect: list[Callable[[bool], None]] = []
        self._outbox: deque[Delivery] = deque()  # waiting for the network thread
        self._inflight: dict[int, Delivery] = {}  # paho mid -> delivery (network thread)
        self._inbox: queue.Queue[Item] = queue.Queue()
        self._seq = 0
        self._up = False
        self._stopping = False
        self._new_settings: LinkSettings | None = None
        self._resubscribe = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._attempts = 0
        self._next_try = 0.0
        self._connect_deadline = 0.0
        self._connect_time = 0.0
        self._refusal = ""
        self._sub_mids: set[int] = set()  # SUBSCRIBEs waiting for their SUBACK
        # the clock gives the wall times of status messages; sockets live in real time,
        # so the network timers (backoff, CONNACK deadline) use the monotonic clock
        self._now = time.monotonic

    # ---- the contract (any thread unless noted) ----
    @property
    def device(self) -> str:
        return self.settings.device

    @property
    def connected(self) -> bool:
        return self._up

    @property
    def subscribed(self) -> bool:
        """Up, and every handler's topic is subscribed (SUBACK received)."""
        return self._up and not self._resubscribe and not self._sub_mids

    def start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            self._stopping = False
        self._thread = threading.Thread(target=self._run, name="mqtt-link", daemon=True)
        self._thread.start()

    def stop(self, reason: str = "stopped") -> None:
        """Publish offline status (when up), disconnect cleanly (no last will), end the thread."""
        if self._thread is None:
            return
        if self._up:
            self.publish(Topic.STATUS, self._status("offline", reason)).wait(STOP_WAIT_S)
        with self._lock:
            self._stopping = True
        self._wake()
        self._thread.join(10)
        self._thread = None

    def on(self, t: Topic, handler: Callable[[Message], None]) -> None:
        """Run `handler` (on the poll() thread) for every valid message on t; subscribes."""
        t = Topic(t)
        if t not in INBOUND:
            raise ValueError(f"{t} is not a topic the box receives: one of "
                             + ", ".join(sorted(INBOUND)))
        with self._lock:
            self._handlers.setdefault(t, []).append(handler)
            self._resubscribe = True
        self._wake()

    def on_connect(self, fn: Callable[[bool], None]) -> None:
        self._on_connect.append(fn)

    def poll(self, timeout: float) -> int:
        """Main thread: run the handlers of queued messages and up/down notices; their count."""
        n = 0
        try:
            item = self._inbox.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return 0
        while True:
            self._dispatch(item)
            n += 1
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return n

    def publish(self, t: Topic, payload: Mapping[str, Any], *, correlation: bytes | None = None,
                to: str | None = None) -> Delivery:
        """Validate, encode and send (or queue while offline); ProtocolError when invalid."""
        t = Topic(t)
        data = encode(t, payload)
        name = self._target(t, to)
        props = None
        if correlation is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = correlation
        with self._lock:
            self._seq += 1
            d = Delivery(t, name, data, props, self._seq)
            if not self._up and d.qos == 0:
                d.finish("offline: QoS 0 messages are not kept")
                return d
            self._outbox.append(d)
            if not self._up and len(self._outbox) > QUEUE_MAX:
                self._drop_one()
        self._wake()
        return d

    def respond(self, msg: Message, payload: Mapping[str, Any]) -> Delivery:
        """A cmd/result for `msg`: to its Response Topic when that is this box's cmd/result
        (or under it), else to cmd/result; with the request's Correlation Data."""
        to = None
        own = topic(self.device, Topic.CMD_RESULT)
        if msg.response_topic and (msg.response_topic == own
                                   or msg.response_topic.startswith(own + "/")):
            to = msg.response_topic
        elif msg.response_topic:
            log.warning("response topic %r is not under %s: answering on %s",
                        msg.response_topic, own, own)
        return self.publish(Topic.CMD_RESULT, payload, correlation=msg.correlation, to=to)

    def reconfigure(self, settings: LinkSettings) -> None:
        """Reconnect with new settings (broker, identity, device); unacked messages kept."""
        check_device(settings.device)
        if self._up and settings.device != self.device:
            self.publish(Topic.STATUS, self._status("offline", "reconfigured")).wait(1.0)
        with self._lock:
            self._new_settings = settings
        self._wake()

    # ---- helpers shared by both sides ----
    def _target(self, t: Topic, to: str | None) -> str:
        if to is None:
            return topic(self.device, t)
        if not to.startswith(prefix(self.device)) or "+" in to or "#" in to:
            raise ProtocolError("to", f"{to!r} must be a topic under {prefix(self.device)}")
        return to

    def _status(self, state: str, reason: str = "", when: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"state": state, "time": round(when or self.clock.wall(), 3),
                               "version": self.settings.version}
        if reason:
            out["reason"] = reason
        return out

    def _drop_one(self) -> None:
        """Offline queue over its bound (lock held): drop the oldest non-records message."""
        victim = next((d for d in self._outbox if d.topic is not Topic.RECORDS), self._outbox[0])
        self._outbox.remove(victim)
        victim.finish(f"dropped: offline queue full ({QUEUE_MAX})")
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 100 == 0:
            log.warning("offline queue full (%d): dropped the oldest %s message (%d dropped "
                        "since the link went down)", QUEUE_MAX, victim.topic, self.dropped)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # buffer full (already awake) or closed (stopped)

    def _dispatch(self, item: Item) -> None:
        kind, value = item
        if kind == "up":
            targets: list[Callable[[Any], None]] = list(self._on_connect)
        else:
            targets, value = value
        for fn in targets:
            try:
                fn(value)
            except Exception:
                log.exception("agent handler %s failed on %s", getattr(fn, "__qualname__", fn),
                              value.topic if isinstance(value, Message) else f"link up={value}")

    # ---- the network thread ----
    def _run(self) -> None:
        while True:
            with self._lock:
                stopping, new = self._stopping, self._new_settings
                self._new_settings = None
            if stopping:
                self._shutdown()
                return
            try:
                self._step(new)
            except Exception as exc:  # a paho or TLS surprise must not end the link
                log.exception("cloud link: unexpected error, reconnecting")
                if self._client is not None:
                    self._abandon(self._client, f"unexpected error: {exc}")
                else:
                    self._failed(f"unexpected error: {exc}")

    def _step(self, new: LinkSettings | None) -> None:
        if new is not None:
            self._switch(new)
        if self._client is None or self._client.socket() is None:
            self._offline_step()
        else:
            self._online_step()

    def _offline_step(self) -> None:
        wait = self._next_try - self._now()
        if wait > 0:
            self._sleep(min(wait, 1.0))
            return
        self._try_connect()

    def _sleep(self, seconds: float) -> None:
        ready, _, _ = select.select([self._wake_r], [], [], seconds)
        if ready:
            self._drain_wake()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _new_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.device,
                             protocol=mqtt.MQTTv5)
        if s.tls:
            client.tls_set_context(tls_context(s))
        if s.username:
            client.username_pw_set(s.username, s.password)
        client.on_connect = self._on_connack
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_suback
        client.on_socket_register_write = self._no_op  # publish() never writes: we do
        client.connect_timeout = CONNECT_TIMEOUT_S
        client.max_inflight_messages_set(50)
        return client

    @staticmethod
    def _no_op(*_args: object) -> None:
        return None

    def _try_connect(self) -> None:
        s = self.settings
        if self._client is None:
            try:
                self._client = self._new_client()
            except (OSError, ssl.SSLError, ValueError, LinkError) as exc:
                self._failed(f"TLS setup for {s.host}:{s.port} failed: {exc}")
                return
        try:
            self._connect_time = self.clock.wall()
            self._client.will_set(topic(s.device, Topic.STATUS),
                                  encode(Topic.STATUS, self._status("offline", "lost",
                                                                    self._connect_time)),
                                  qos=1, retain=True)
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = s.session_expiry_s
            props.MaximumPacketSize = MAX_PACKET_IN
            self._client.connect(s.host, s.port, keepalive=s.keepalive_s, clean_start=False,
                                 properties=props)
            self._connect_deadline = self._now() + CONNECT_TIMEOUT_S
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._failed(f"cannot connect to {s.host}:{s.port}: {exc}")

    def _failed(self, why: str) -> None:
        """A connect attempt or a session ended: note why, schedule the next try."""
        if why != self.last_error:
            log.warning("cloud link: %s", why)
        self.last_error = why
        self._attempts += 1
        delay = backoff_s(self._attempts, self.backoff_min_s, self.backoff_max_s, self.rng)
        self._next_try = self._now() + delay

    def _online_step(self) -> None:
        client = self._client
        assert client is not None
        sock = client.socket()
        if sock is None:
            return
        if not self._up and self._now() > self._connect_deadline:
            self._abandon(client, "no CONNACK within "
                          f"{CONNECT_TIMEOUT_S:g} s from {self.settings.host}:{self.settings.port}")
            return
        pending = getattr(sock, "pending", lambda: 0)()
        wlist = [sock] if client.want_write() else []
        try:
            rs, ws, _ = select.select([sock, self._wake_r], wlist, [], 0 if pending else 0.5)
        except (OSError, ValueError):
            rs, ws = [sock], []
        if self._wake_r in rs:
            self._drain_wake()
        if sock in rs or pending:
            client.loop_read()
        if client.socket() is not None and (ws or client.want_write()):
            client.loop_write()
        if client.socket() is not None:
            client.loop_misc()
            self._flush()

    def _abandon(self, client: mqtt.Client, why: str) -> None:
        self._client = None  # a fresh client (and socket) for the next try
        self._close(client)
        self._set_down()
        self._failed(why)
        self._requeue_inflight()

    @staticmethod
    def _close(client: mqtt.Client) -> None:
        """A clean DISCONNECT (the broker drops the last will), written now, socket closed."""
        try:
            client.disconnect()
            if client.socket() is not None:
                client.loop_write()
        except (OSError, ValueError) as exc:
            log.info("cloud link: DISCONNECT not sent: %s", exc)
        sock = client.socket()
        if sock is not None:
            sock.close()

    def _flush(self) -> None:
        """Hand queued messages to paho once the session is up (network thread)."""
        client = self._client
        with self._lock:
            resubscribe, self._resubscribe = self._resubscribe, False
            batch = list(self._outbox) if self._up else []
            if self._up:
                self._outbox.clear()
        if client is None or not self._up:
            return
        if resubscribe:
            self._subscribe(client)
        for d in batch:
            self._send(client, d)

    def _send(self, client: mqtt.Client, d: Delivery) -> None:
        info = client.publish(d.name, d.data, qos=d.qos, retain=d.retain, properties=d.props)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            d.finish(f"not sent: {mqtt.error_string(info.rc)}")
            return
        self._inflight[info.mid] = d

    def _subscribe(self, client: mqtt.Client) -> None:
        with self._lock:
            topics = sorted(self._handlers)
        if topics:
            _, mid = client.subscribe([(topic(self.device, t), mqtt.SubscribeOptions(qos=QOS[t]))
                                       for t in topics])
            if mid is not None:
                self._sub_mids.add(mid)

    def _requeue_inflight(self) -> None:
        """Messages the old client never got PUBACKed go first into the new session."""
        if not self._inflight:
            return
        waiting = sorted(self._inflight.values(), key=lambda d: d.seq)
        self._inflight.clear()
        with self._lock:
            self._outbox.extendleft(reversed([d for d in waiting if not d.failed]))

    def _switch(self, settings: LinkSettings) -> None:
        old, self._client = self._client, None
        if old is not None:
            self._close(old)
        self._set_down()
        self._requeue_inflight()
        self._sub_mids.clear()
        self.settings = settings
        self._attempts, self._next_try = 0, 0.0
        with self._lock:
            self._resubscribe = True

    def _shutdown(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            self._close(client)
        self._set_down()
        with self._lock:
            left = list(self._outbox) + list(self._inflight.values())
            self._outbox.clear()
        self._inflight.clear()
        for d in left:
            d.finish("link stopped")

    def _set_down(self) -> None:
        if self._up:
            self._up = False
            self._inbox.put(("up", False))

    # ---- paho callbacks (network thread) ----
    def _on_connack(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Any) -> None:
        if reason.is_failure:  # the broker closes the socket next: _on_disconnect
            self._refusal = f"the broker refused the connection: {_reason_text(reason)}"
            return
        self._attempts = 0
        self.last_error = ""
        self._sub_mids.clear()
        if self.dropped:
            log.warning("cloud link up again: %d messages were dropped while offline",
                        self.dropped)
            self.dropped = 0
        log.info("cloud link up: %s:%d as %s (session %s)", self.settings.host,
                 self.settings.port, self.device,
                 "resumed" if flags.session_present else "new")
        birth = Delivery(Topic.STATUS, topic(self.device, Topic.STATUS),
                         encode(Topic.STATUS, self._status("online")), None, 0)
        self._send(client, birth)
        self._subscribe(client)
        with self._lock:
            self._resubscribe = False
            self._up = True
        self._inbox.put(("up", True))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                       reason: ReasonCode, properties: Any) -> None:
        if client is not self._client:
            return
        was_up, refusal, self._refusal = self._up, self._refusal, ""
        self._set_down()
        if was_up:
            self._failed(f"connection lost: {_reason_text(reason)}")
        else:
            self._failed(refusal or f"connection closed before CONNACK: {_reason_text(reason)} "
                         "(check the certificate, the CA and the broker address)")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Any) -> None:
        d = self._inflight.pop(mid, None)
        if d is None:
            return
        if reason.is_failure:
            log.error("the broker refused a message on %s: %s", d.name, _reason_text(reason))
            d.finish(f"refused by the broker: {_reason_text(reason)}")
        else:
            d.finish()

    def _on_suback(self, client: mqtt.Client, userdata: Any, mid: int,
                   reasons: list[ReasonCode], properties: Any) -> None:
        self._sub_mids.discard(mid)
        for reason in reasons:
            if reason.is_failure:
                log.error("the broker refused a subscription of %s: %s (check the broker's "
                          "ACL for branchline/%s/)", self.device, _reason_text(reason),
                          self.device)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parsed = parse_topic(msg.topic)
        handlers = self._handlers.get(parsed[1], []) if parsed else []
        if parsed is None or parsed[0] != self.device or not handlers:
            log.warning("dropped a message on %s: not a topic this box handles", msg.topic)
            return
        try:
            payload = decode(parsed[1], bytes(msg.payload))
        except ProtocolError as exc:
            log.warning("dropped a message on %s: %s", msg.topic, exc)
            return
        props = getattr(msg, "properties", None)
        message = Message(parsed[1], payload, bool(msg.retain),
                          getattr(props, "ResponseTopic", None),
                          getattr(props, "CorrelationData", None))
        self._inbox.put(("msg", (list(handlers), message)))
