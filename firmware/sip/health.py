"""Edge health, on the SIP thread: OPTIONS pings to every cloud edge, and the RTP watch
that reports an answered call whose far end stopped sending."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import pjsua2 as pj

from firmware.sip.api import SipEventKind
from firmware.sip.pjobjects import BAccount, Context, PjObj, pj_reason

log = logging.getLogger(__name__)


@dataclass
class Edge:
    uri: str
    next_ping: float
    up: bool | None = None  # None until the first answer or the first outage
    misses: int = 0
    sent_at: float = 0.0
    outstanding: bool = False
    account: BAccount | None = None  # sends this edge's pings


class EdgePinger:
    """pjsip reports an unanswered OPTIONS only after 32 s, so each edge is pinged every
    sip.options_interval_s and missed at our own deadline (sip.options_timeout_s). Each
    edge has its own non-registering ping account, which matches answers to it
    (onSendRequest's userData cannot carry a Python value, and pjsip drops the port from
    the To URI, so neither names the edge)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.sip = ctx.sip
        self.edges = [Edge(uri, ctx.now()) for uri in ctx.sip["edges"]]

    def create_accounts(self) -> None:
        for edge in self.edges:
            edge.account = self.ctx.accounts.add("branchline-ping", "", None, register=False,
                                        proxy=False)

    def forget_accounts(self) -> None:
        for edge in self.edges:
            edge.account = None

    def tick(self, now: float) -> None:
        for edge in self.edges:
            if edge.outstanding and now - edge.sent_at >= self.sip["options_timeout_s"]:
                self._missed(edge)
            if now >= edge.next_ping:
                edge.next_ping = now + self.sip["options_interval_s"]
                self._send(edge, now)

    def _send(self, edge: Edge, now: float) -> None:
        if edge.outstanding:
            self._missed(edge)
        assert edge.account is not None, "ping accounts are created at start"
        prm = pj.SendRequestParam()
        prm.method = "OPTIONS"
        prm.txOption.targetUri = edge.uri
        try:
            edge.account.sendRequest(prm)
        except pj.Error as exc:
            log.debug("OPTIONS to %s not sent: %s", edge.uri, pj_reason(exc))
            self._missed(edge)
            return
        edge.sent_at = now
        edge.outstanding = True

    def _missed(self, edge: Edge) -> None:
        edge.outstanding = False
        edge.misses += 1
        if edge.misses >= self.sip["options_misses"] and edge.up is not False:
            edge.up = False
            self._publish(edge, None)
            self.ctx.emit(SipEventKind.EDGE, edge=edge.uri, ok=False, rtt_ms=None)

    def on_request_done(self, acc: BAccount, event: PjObj) -> None:
        if event.body.tsxState.type != pj.PJSIP_EVENT_RX_MSG:
            return  # a local timeout or transport error: the deadline already counted it
        edge = next((e for e in self.edges if e.account is acc), None)
        if edge is not None:
            self._answered(edge)

    def _answered(self, edge: Edge) -> None:
        rtt_ms = round((self.ctx.now() - edge.sent_at) * 1000.0, 1)
        edge.outstanding = False
        edge.misses = 0
        self._publish(edge, rtt_ms)
        if edge.up is not True:
            edge.up = True
            self.ctx.emit(SipEventKind.EDGE, edge=edge.uri, ok=True, rtt_ms=rtt_ms)

    def _publish(self, edge: Edge, rtt_ms: float | None) -> None:
        self.ctx.shared.publish("edges", edge.uri,
                                {"ok": edge.up, "rtt_ms": rtt_ms, "misses": edge.misses})


@dataclass
class _Rx:
    packets: int
    since: float  # when the count last grew
    silent: bool = False  # MEDIA_TIMEOUT sent


class RtpWatch:
    """Each answered call's received packet count: unchanged for `timeout()` seconds
    (survive.rtp_timeout_s), MEDIA_TIMEOUT; growing again, MEDIA_RESUMED."""

    def __init__(self, ctx: Context, timeout: Callable[[], float]) -> None:
        self.ctx = ctx
        self.timeout = timeout
        self.rx: dict[int, _Rx] = {}

    def tick(self, now: float) -> None:
        for handle, call in list(self.ctx.legs.live.items()):
            up = call.answered and not call.superseded and call.isActive()
            pkts = call.rx_packets() if up else None
            if pkts is None:  # not up, or held: the far end sends nothing on purpose
                gone = self.rx.pop(handle, None)
                if up and gone is not None and gone.silent:  # the hold explains the silence
                    self.ctx.emit(SipEventKind.MEDIA_RESUMED, handle,
                                  silent_s=round(now - gone.since, 2), held=True)
                continue
            self._seen(handle, pkts, now)
        for handle in [h for h in self.rx if h not in self.ctx.legs.live]:
            del self.rx[handle]

    def _seen(self, handle: int, pkts: int, now: float) -> None:
        entry = self.rx.setdefault(handle, _Rx(pkts, now))
        silent_s = round(now - entry.since, 2)
        if pkts != entry.packets:
            if entry.silent:
                self.ctx.emit(SipEventKind.MEDIA_RESUMED, handle, silent_s=silent_s)
            self.rx[handle] = _Rx(pkts, now)
        elif not entry.silent and now - entry.since >= self.timeout():
            entry.silent = True
            self.ctx.emit(SipEventKind.MEDIA_TIMEOUT, handle, silent_s=silent_s)

