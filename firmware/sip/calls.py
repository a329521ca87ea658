"""Calls and transfers, on the SIP thread: placing, offering, answering and ending calls,
and the requests inside them (DTMF, hold, REFER, re-INVITE)."""

from __future__ import annotations

import logging
from typing import Any

import pjsua2 as pj

from firmware.sip import sipmsg
from firmware.sip.api import NO_QUALITY, SipCallState, SipEventKind
from firmware.sip.pjobjects import BAccount, BCall, Context, PjObj, pj_reason, sip_header

log = logging.getLogger(__name__)


class Calls:
    """The ANI goes into From (txOption.localUri) and P-Asserted-Identity, so one account
    serves every caller. A REFER or Replaces received moves the handle to a new leg (the
    pipe follows when its media comes up); if a REFER's new leg fails, it returns."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.legs = ctx.legs
        self.shared = ctx.shared
        self.emit = ctx.emit

    def make_call(self, handle: int, line: str, to: str, from_number: str | None,
                  from_name: str | None, headers: dict[str, str]) -> None:
        call = BCall(self.ctx.accounts.for_line(line), self.ctx, handle)
        self.legs.live[handle] = call
        self.shared.update_call(handle, state=SipCallState.CALLING, line=line)
        domain = self.ctx.accounts.domain()
        prm = pj.CallOpParam(True)
        if from_number:
            ident = sipmsg.identity(from_number, from_name, domain)
            prm.txOption.localUri = ident
            headers = {"P-Asserted-Identity": ident, **headers}
        for name, value in headers.items():
            prm.txOption.headers.append(sip_header(name, value))
        try:
            call.makeCall(sipmsg.target(to, domain), prm)
        except pj.Error as exc:
            self._fail(call, f"call to {to} not placed: {pj_reason(exc)}")

    def _fail(self, call: BCall, reason: str) -> None:
        """A call pjsua2 refused outright (PJ_ETOOMANY...): ENDED, not an exception."""
        log.warning("%s", reason)
        self.legs.unname(call)
        self.shared.forget_call(call.handle)
        self.legs.dead.append(call)
        self.emit(SipEventKind.ENDED, call.handle, code=0, reason=reason,
                  quality=dict(NO_QUALITY))

    def on_incoming(self, acc: BAccount, call_id: int, msg: str) -> None:
        handle = self.shared.next_handle()
        self.legs.live[handle] = BCall(acc, self.ctx, handle, call_id)
        who = sipmsg.caller(msg)
        who["call_id"] = sipmsg.header(msg, "call-id")
        if who["to_number"] == acc.aor.split("@")[0]:
            # The edge routed by our registration (R-URI = our contact): DNIS is in To.
            who["to_number"] = sipmsg.uri_user(sipmsg.name_addr(sipmsg.header(msg, "to"))[1])
        line = acc.line or self._line_for_number(who["to_number"])
        fields: dict[str, Any] = {"state": SipCallState.INCOMING}
        if line is not None:
            fields["line"] = line
        self.shared.update_call(handle, **fields)
        self.emit(SipEventKind.INCOMING, handle, line=line, **who)

    def _line_for_number(self, number: str) -> str | None:
        for name, line in self.ctx.lines.items():
            if number and number in (line.get("sip_user"), line.get("extension")):
                return str(name)
        return None

    def respond(self, handle: int, code: int) -> None:
        call = self.legs.get(handle, "answer")
        if call is not None:
            call.answer(_with_status(code))

    def hangup(self, handle: int, code: int) -> None:
        call = self.legs.get(handle, "hangup")
        if call is not None:
            call.hangup(_with_status(code))

    def on_state(self, call: BCall) -> None:
        info = call.getInfo()
        state = info.state
        if state == pj.PJSIP_INV_STATE_EARLY and info.role != pj.PJSIP_ROLE_UAS:
            early = info.lastStatusCode == 183
            self.once(call, SipEventKind.EARLY_MEDIA if early else SipEventKind.RINGING)
        elif state == pj.PJSIP_INV_STATE_CONFIRMED:
            call.answered = True
            self._finish_transfer(call)
            self.shared.update_call(call.handle, state=SipCallState.ANSWERED)
            self.once(call, SipEventKind.ANSWERED, call_id=info.callIdString)
            if call.passthrough and not call.passthrough_sent:
                self.ctx.media.passthrough.reinvite(call)
        elif state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self._ended(call, info.lastStatusCode, info.lastReason)

    def once(self, call: BCall, kind: SipEventKind, **data: Any) -> None:
        """Report `kind` for the call's handle, once per leg, never for a superseded leg."""
        if kind not in call.reported and not call.superseded:
            call.reported.add(kind)
            self.emit(kind, call.handle, **data)

    def _ended(self, call: BCall, code: int, reason: str) -> None:
        self.legs.dead.append(call)
        if call.superseded:
            return
        if call.previous is not None and not call.answered and self._revert(call):
            return
        self.legs.unname(call)
        quality = self.shared.quality_of(call.handle)
        self.shared.forget_call(call.handle)
        self.emit(SipEventKind.ENDED, call.handle, code=code, reason=reason, quality=quality)

    def on_transfer_request(self, call: BCall, prm: PjObj) -> None:
        """The far end REFERs us elsewhere: accept, and let the handle follow the new leg."""
        leg = BCall(call.account, self.ctx, call.handle)
        leg.previous = call
        self._hand_over(call, leg)
        prm.newCall = leg
        prm.statusCode = 202
        self.emit(SipEventKind.TRANSFER_REQUESTED, call.handle, target=prm.dstUri)

    def on_replaced(self, call: BCall, prm: PjObj) -> None:
        """An INVITE with Replaces took this call over: the handle follows the new call."""
        leg = BCall(call.account, self.ctx, call.handle, prm.newCallId)
        leg.answered = True
        self._hand_over(call, leg)
        prm.newCall = leg

    def _hand_over(self, old: BCall, leg: BCall) -> None:
        old.superseded = True
        self.legs.old.append(old)
        self.ctx.media.detach(old)
        self.legs.live[old.handle] = leg

    def _finish_transfer(self, leg: BCall) -> None:
        """The transfer leg is up: end the old leg if the transferor has not yet."""
        old, leg.previous = leg.previous, None
        if old is not None and old.isActive():
            old.hangup(pj.CallOpParam(True))

    def _revert(self, leg: BCall) -> bool:
        """A transfer leg failed: give the handle back to the old leg if it is still up."""
        old = leg.previous
        leg.previous = None
        if old is None or not old.isActive():
            return False
        old.superseded = False
        self.legs.live[leg.handle] = old
        self.ctx.media.attach(old)
        return True

    def send_dtmf(self, handle: int, digits: str) -> None:
        call = self.legs.get(handle, "DTMF")
        if call is None:
            return
        if self.ctx.sip["dtmf"] == "rfc4733":
            call.dialDtmf(digits)
            return
        prm = pj.CallSendDtmfParam()
        prm.method = pj.PJSUA_DTMF_METHOD_SIP_INFO
        prm.digits = digits
        prm.duration = 100
        call.sendDtmf(prm)

    def on_dtmf(self, call: BCall, digit: str, method: int) -> None:
        kind = "info" if method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "rfc4733"
        self.emit(SipEventKind.DTMF, call.handle, digit=digit, method=kind)

    def hold(self, handle: int, hold: bool) -> None:
        call = self.legs.get(handle, "hold")
        if call is None:
            return
        prm = pj.CallOpParam(True)
        if hold:
            call.setHold(prm)
        else:
            prm.opt.flag = pj.PJSUA_CALL_UNHOLD
            call.reinvite(prm)

    def transfer(self, handle: int, target: str) -> None:
        call = self.legs.get(handle, "transfer")
        if call is not None:
            call.xfer(sipmsg.target(target, self.ctx.accounts.domain()), pj.CallOpParam(True))

    def transfer_attended(self, handle: int, other: int) -> None:
        call, dest = self.legs.get(handle, "transfer"), self.legs.get(other, "transfer")
        if call is not None and dest is not None:
            call.xferReplaces(dest, pj.CallOpParam(True))

    def on_transfer_status(self, call: BCall, prm: PjObj) -> None:
        if prm.finalNotify or prm.statusCode >= 200:
            prm.cont = False
            self.once(call, SipEventKind.TRANSFER_DONE, ok=200 <= prm.statusCode < 300,
                      code=prm.statusCode)

    def refresh(self, handle: int) -> None:
        """Re-INVITE with a new Contact, so a call can follow the box to another edge."""
        call = self.legs.get(handle, "re-INVITE")
        if call is not None and call.answered:
            prm = pj.CallOpParam(True)
            prm.opt.flag = pj.PJSUA_CALL_UPDATE_CONTACT
            call.reinvite(prm)


def _with_status(code: int) -> PjObj:
    prm = pj.CallOpParam()
    prm.statusCode = code
    return prm
