"""Transports and accounts, on the SIP thread: the endpoint's transports and codecs; the
trunk or one account per FXS line (sip.registration), else a local one; use_edge."""

from __future__ import annotations

import logging
from typing import Any

import pjsua2 as pj

from firmware.sip import sipmsg
from firmware.sip.api import SipEventKind
from firmware.sip.pjobjects import BAccount, Context, PjObj
from foundation.errors import BranchlineError

log = logging.getLogger(__name__)

CODEC_IDS = {"PCMU": "PCMU/8000", "PCMA": "PCMA/8000", "G722": "G722/16000"}


class SipError(BranchlineError):
    """The SIP stack could not start (port in use, bad TLS setup...)."""


def set_codecs(ep: PjObj, codecs: list[str]) -> None:
    wanted = [CODEC_IDS[c] for c in codecs]
    for info in ep.codecEnum2():
        if info.codecId.split("/")[:2] not in [w.split("/") for w in wanted]:
            ep.codecSetPriority(info.codecId, 0)  # 0 disables (speex, gsm, L16...)
    for rank, codec in enumerate(wanted):
        for info in ep.codecEnum2():
            if info.codecId.startswith(codec):
                ep.codecSetPriority(info.codecId, 255 - rank)


class Transports:
    """UDP and TCP on one port (sip.local_port, or one the OS picks), TLS on the next."""

    def __init__(self, ep: PjObj, sip: dict[str, Any]) -> None:
        self.ep = ep
        self.sip = sip
        self.ids: dict[str, int] = {}

    def create(self) -> None:
        host = self.sip["bind_address"]
        port = self.sip["local_port"]
        if port:
            self._create(pj.PJSIP_TRANSPORT_UDP, "udp", host, port)
            self._create(pj.PJSIP_TRANSPORT_TCP, "tcp", host, port)
        else:
            port = self._ephemeral_pair(host)
        if self.sip["transport"] == "tls":
            tls_port = int(port) + 1 if self.sip["local_port"] else 0
            self._create(pj.PJSIP_TRANSPORT_TLS, "tls", host, tls_port)

    def ports(self) -> dict[str, int]:
        return {name: self._port(tid) for name, tid in self.ids.items()}

    def _port(self, tid: int) -> int:
        return int(self.ep.transportGetInfo(tid).localName.rsplit(":", 1)[1])

    def _ephemeral_pair(self, host: str, tries: int = 20) -> int:
        """UDP and TCP on one free port number (sip.local_port 0): the OS picks the UDP
        port, and another process may already hold that number for TCP; then try again."""
        for _ in range(tries):
            udp = self._create(pj.PJSIP_TRANSPORT_UDP, "udp", host, 0)
            port = self._port(udp)
            try:
                self._create(pj.PJSIP_TRANSPORT_TCP, "tcp", host, port)
                return port
            except SipError:
                self.ep.transportClose(udp)
                self.ids.pop("udp", None)
        raise SipError(f"no port number on {host} was free for both SIP UDP and TCP "
                       f"after {tries} tries: set sip.local_port")

    def _create(self, kind: int, name: str, host: str, port: int) -> int:
        cfg = pj.TransportConfig()
        cfg.boundAddress = host
        cfg.port = port
        if self.sip["public_address"]:
            cfg.publicAddress = self.sip["public_address"]
        if name == "tls":
            cfg.tlsConfig.verifyServer = bool(self.sip["tls_verify"])
        try:
            tid = int(self.ep.transportCreate(kind, cfg))
        except pj.Error as exc:
            raise _bind_error(name, host, port, exc) from None
        self.ids[name] = tid
        return tid


def _bind_error(name: str, host: str, port: int, exc: PjObj) -> SipError:
    if port and exc.status in (120098, 120013):  # EADDRINUSE, EACCES as pj_status_t
        return SipError(f"SIP port {port} on {host} is in use: another SIP service is running, "
                        "or set sip.local_port")
    return SipError(f"SIP {name.upper()} transport on {host}:{port} failed: "
                    f"{exc.reason} (check sip.bind_address and sip.local_port)")


class Accounts:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.sip = ctx.sip
        self.all: list[BAccount] = []
        self.by_line: dict[str, BAccount] = {}
        self.main: BAccount | None = None
        self.stopping = False  # registration changes are not reported any more
        self._transport = -1

    def domain(self) -> str:
        if self.sip["domain"]:
            return str(self.sip["domain"])
        if self.sip["edges"]:
            return sipmsg.uri_hostport(self.sip["edges"][0]).split(":")[0]
        return str(self.sip["bind_address"])

    def create(self, transport: int) -> None:
        """The accounts of sip.registration, on this transport."""
        self._transport = transport
        mode = self.sip["registration"]
        if mode == "trunk":
            self.main = self.add(self.sip["username"], self.sip["password"], None,
                                 register=True)
        elif mode == "per_line":
            for name, line in self.ctx.lines.items():
                if line.get("kind") == "fxs" and (line.get("sip_user") or line.get("extension")):
                    user = line.get("sip_user") or line["extension"]
                    password = line.get("sip_password", "")
                    self.by_line[name] = self.add(user, password, name, register=True)
        if self.main is None:
            self.main = self.add("branchline", "", None, register=False)

    def add(self, user: str, password: str, line: str | None, *, register: bool,
            proxy: bool = True) -> BAccount:
        """A new account (after create); the first one added is pjsua's default."""
        aor = f"{user}@{self.domain()}"
        edges = self.sip["edges"]
        cfg = pj.AccountConfig()
        cfg.idUri = f"sip:{aor}"
        cfg.sipConfig.transportId = self._transport
        if register and edges:
            cfg.regConfig.registrarUri = self.edge_uri(edges[0], lr=False)
            cfg.regConfig.timeoutSec = self.sip["register_expires_s"]
            cfg.regConfig.retryIntervalSec = 30
            cfg.regConfig.firstRetryIntervalSec = 5
        cfg.regConfig.registerOnAdd = register and bool(edges)
        if proxy and edges:
            cfg.sipConfig.proxies.append(self.edge_uri(edges[0], lr=True))
        if password or register:
            cfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, password))
        cfg.natConfig.udpKaIntervalSec = self.sip["nat_keepalive_s"]
        acc = BAccount(self.ctx, aor, line, register and bool(edges), cfg, proxy)
        acc.create(cfg, not self.all)
        self.all.append(acc)
        if acc.registers:
            self._publish(acc, False, 0, "registering")
        return acc

    def edge_uri(self, uri: str, *, lr: bool) -> str:
        transport = self.sip["transport"]
        if transport != "udp" and "transport=" not in uri:
            uri += f";transport={transport}"
        return uri + (";lr" if lr and ";lr" not in uri else "")

    def for_line(self, line: str | None) -> BAccount:
        acc = self.by_line.get(line or "", self.main)
        assert acc is not None, "no SIP account: accounts are created at start"
        return acc

    def on_reg_state(self, acc: BAccount, code: int, reason: str, expiration: int) -> None:
        if self.stopping or not acc.registers:
            return
        ok = 200 <= code < 300 and expiration > 0
        if ok:
            text = f"{acc.aor} registered"
        elif code in (401, 403, 407):
            text = (f"registration of {acc.aor} refused ({code} {reason}): check "
                    f"{'lines.' + acc.line + '.sip_password' if acc.line else 'sip.password'}")
        else:
            text = (f"registration of {acc.aor} failed ({code} {reason}): check sip.edges "
                    "and the network")
        self._publish(acc, ok, code, text)
        self.ctx.emit(SipEventKind.REGISTRATION, account=acc.aor, line=acc.line, ok=ok, code=code,
                  reason=text)

    def _publish(self, acc: BAccount, ok: bool, code: int, reason: str) -> None:
        self.ctx.shared.publish("accounts", acc.aor,
                            {"line": acc.line, "registered": ok, "code": code, "reason": reason})

    def use_edge(self, uri: str) -> None:
        """Re-point every account but the ping ones at `uri` (Account.modify re-registers)."""
        for acc in self.all:
            if not acc.proxied:
                continue
            cfg = acc.config
            if acc.registers:
                cfg.regConfig.registrarUri = self.edge_uri(uri, lr=False)
            cfg.sipConfig.proxies.clear()
            cfg.sipConfig.proxies.append(self.edge_uri(uri, lr=True))
            acc.modify(cfg)
        log.warning("SIP: accounts moved to %s", uri)

    def shutdown(self) -> None:
        for acc in self.all:
            acc.shutdown()
        self.all.clear()
        self.by_line.clear()
        self.main = None
