"""Starts and stops the chips, marks a chip that fails with its reason, and drives the
power-fail lifeline relay (energised once both its ports are up and the PSTN line is
free; released on stop and when either port fails). Without call control (`hw probe`, the
demo) it keeps the port book from the line events itself and decodes FXO caller ID."""

from __future__ import annotations

from typing import Any

import numpy as np

from drivers.board import Board
from drivers.bus.pcm import FRAME, LINE_RATE
from drivers.chips.headset import Headset
from drivers.chips.si3050 import Si3050
from firmware.callctl import model
from firmware.callctl.model import PortBook, PortLine, PortState
from firmware.core.config import Config
from foundation import events as ev
from foundation.errors import BranchlineError
from foundation.events import LineEvent
from foundation.reactor import Reactor, Timer

SEIZED, FAILED = model.SEIZED, PortState.FAILED
MEDIA_TICK_S = FRAME / LINE_RATE
CID_STATES = (PortState.IDLE, PortState.RINGING)  # caller ID comes before the answer


class Gateway:
    def __init__(self, cfg: Config, board: Board, reactor: Reactor, *,
                 media: bool = True, lifeline: bool = True) -> None:
        self.cfg = cfg
        self.board, self.reactor = board, reactor
        self.media = media  # False: call control reads the PCM (and decodes caller ID)
        self.lifeline = board.lifeline if lifeline else None
        self._lifeline_waits = False  # energise once the FXO line is free
        self.book = PortBook(self.cfg.lines, board.headset_driver is not None)
        self._feeding = True  # False once call control keeps the book
        self._cid: dict[str, Any] = {}
        self._media_timer: Timer | None = None
        board.subscribe(self._on_event)

    def hand_over(self) -> PortBook:
        """Call control keeps the port book from now on (chip failures at start in it)."""
        self._feeding = False
        return self.book

    # -- life cycle --
    def start(self) -> None:
        for name, port in self.book.ports.items():
            if port.kind != "headset":
                self._start_line(name)
        if (headset := self.board.headset_driver) is not None:
            self._start_headset(headset)
        if self.media:
            self._media_timer = self.reactor.register_timer(self._media, self.reactor.now())
        self._energise_lifeline()

    def _start_line(self, name: str) -> None:
        driver = self.board.drivers.get(name)
        if driver is None:
            self._fail(name, self.board.errors.get(name, "no driver was built for this line"))
            return
        try:
            driver.start()
        except BranchlineError as exc:
            self._fail(name, str(exc))
            return
        if self.book.ports[name].kind == "fxo" and self.media:
            self._cid[name] = _callerid_receiver(self.cfg.line(name).effective_callerid)

    def _start_headset(self, headset: Headset) -> None:
        try:
            headset.start()
        except BranchlineError as exc:
            self._fail("headset", str(exc))
            return
        if headset.present:
            self.book.apply(LineEvent("headset", ev.HEADSET_PLUGGED, self.reactor.now(),
                                      {"rate": headset.rate}))

    def stop(self) -> None:
        self._release_lifeline("the core stopped")
        if self._media_timer is not None:
            self.reactor.unregister_timer(self._media_timer)
            self._media_timer = None
        self.board.close()

    # -- the power-fail lifeline --
    def _energise_lifeline(self, line_free: bool = False) -> None:
        """The phone goes to its SLIC only when both lifeline ports are up, and not in the
        middle of a PSTN call it is making through the relay."""
        relay = self.lifeline
        if relay is None:
            return
        ports = self.book.ports
        down = [p for p in relay.ports if p not in ports or ports[p].state is FAILED]
        if down:
            self._release_lifeline("; ".join(
                f"{p} is not up: {ports[p].reason if p in ports else 'no such line'}"
                for p in down))
        elif not line_free and ports[relay.fxo].state is PortState.IN_USE:
            self._lifeline_waits = True
        else:
            self._lifeline_waits = False
            relay.energise()

    def _release_lifeline(self, reason: str) -> None:
        self._lifeline_waits = False
        if self.lifeline is not None:
            self.lifeline.release(reason)

    def _lifeline_event(self, event: LineEvent) -> None:
        relay = self.lifeline
        if relay is None or event.port not in relay.ports:
            return
        if event.kind == ev.CHIP_FAILED:
            why = event.data.get("error") or self.book.ports[event.port].reason
            self._release_lifeline(f"{event.port} failed: {why}")
        elif self._lifeline_waits and event.kind == ev.LINE_FREE:
            self._energise_lifeline(line_free=True)

    # -- without call control --
    def seize(self, name: str) -> None:
        self._fxo(name).seize()
        self.book.apply(LineEvent(name, SEIZED, self.reactor.now()))

    def release(self, name: str) -> None:
        self._fxo(name).release()
        self.book.apply(LineEvent(name, model.RELEASED, self.reactor.now()))

    def _fxo(self, name: str) -> Si3050:
        driver = self.board.drivers[name]
        if not isinstance(driver, Si3050):
            raise BranchlineError(f"{name} is not an FXO line")
        return driver

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: port_document(self.board, port) for name, port in self.book.ports.items()}

    def _fail(self, name: str, reason: str) -> None:
        self.book.failed(name, reason, self.reactor.now())
        self._lifeline_event(LineEvent(name, ev.CHIP_FAILED, self.reactor.now(),
                                       {"error": reason}))

    def _on_event(self, event: LineEvent) -> None:
        if self._feeding:
            self.book.apply(event)
        self._lifeline_event(event)

    def _media(self, eventtime: float) -> float:
        for name, pcm in self.board.pcm.items():
            while (frame := pcm.read()) is not None:
                self._hear(name, frame, eventtime)
        return eventtime + MEDIA_TICK_S

    def _hear(self, name: str, frame: np.ndarray, eventtime: float) -> None:
        receiver = self._cid.get(name)
        if receiver is None or self.book.ports[name].state not in CID_STATES:
            return
        for message in receiver.process(frame):
            if message.get("checksum_ok", True):
                self.book.caller_id(name, message, eventtime)


def port_document(board: Board, port: PortLine) -> dict[str, Any]:
    """A port's status: the driver's live readout under the port book's state."""
    live = _readout(board, port.name) if port.state is not FAILED else {}
    out = {**live, "port": port.name, "kind": port.kind, "state": str(port.state),
           "reason": port.reason or live.get("reason", "")}
    if port.call:
        out["call"] = port.call
    return out


def _readout(board: Board, name: str) -> dict[str, Any]:
    driver = board.headset_driver if name == "headset" else board.drivers.get(name)
    if driver is None:
        return {}
    try:
        return dict(driver.status())
    except BranchlineError as exc:
        return {"reason": str(exc)}


def _callerid_receiver(standard: str) -> Any:
    """cext.callerid's streaming decoder for the line's standard, or None when the
    kernels it needs are not built (the line still works, without caller ID)."""
    try:
        from cext.callerid import CallerIdDecoder
        return CallerIdDecoder(standard, LINE_RATE)
    except ImportError:
        return None
