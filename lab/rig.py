"""The fake-time box: the real drivers on the register-level twins (SimBoard), the real DSP,
call control (with a CDR store) and SimCloud as the cloud, all on a FakeClock reactor. The call-control and
survivability tests and bench/survive_sim.py build their boxes here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from drivers.bus.pcm import LINE_RATE
from drivers.sim.board import SimBoard
from drivers.sim.central_office import VirtualCO
from drivers.sim.phone import VirtualPhone
from firmware.callctl.controller import CallControl
from firmware.cdr import CdrStore
from firmware.core.config import Config, default_document, paths, validate
from foundation.errors import ChipFailed
from foundation.reactor import FakeClock, Reactor
from lab.simcloud import SimCall, SimCloud


class Rig:
    """A started box in fake time. `changes` maps dotted config paths to values; `cdr` is
    the CDR store call control writes; `wan` (SimCloud.enable_wan's keywords) turns the WAN
    model on before the first `settle` seconds run."""

    def __init__(self, changes: Mapping[str, Any] | None = None, cdr: CdrStore | None = None,
                 unseated: Iterable[str] = (), wan: Mapping[str, Any] | None = None,
                 settle: float = 0.3) -> None:
        doc = default_document()
        for path, value in (changes or {}).items():
            paths.put(doc, path, value)
        self.doc = validate(doc)
        self.reactor = Reactor(FakeClock())
        self.board = SimBoard(self.reactor, self.doc, unseated=tuple(unseated))
        for driver in self.board.drivers.values():
            try:
                driver.start()
            except ChipFailed:
                pass  # marked failed; the other ports run (as the gateway does)
        if self.board.lifeline is not None:
            self.board.lifeline.energise()  # the phone on fxs1 to its SLIC, as the gateway does
        if self.board.headset_driver is not None:
            self.board.headset_driver.start()
        self.store = cdr
        self.cloud = SimCloud(self.reactor)
        self.cc = CallControl(self.reactor, Config.from_doc(self.doc), self.board, self.cloud, cdr=cdr)
        self.cc.start()
        if wan is not None:
            self.cloud.enable_wan(**wan)
        self.run(settle)

    def run(self, seconds: float) -> None:
        self.reactor.run_for(seconds)

    def now(self) -> float:
        return self.reactor.now()

    def phone(self, name: str = "fxs1") -> VirtualPhone:
        return self.board.phones[name]

    def co(self, name: str = "fxo1") -> VirtualCO:
        return self.board.cos[name]

    def state(self, port: str) -> str:
        """The state of call control's machine on `port` ("IDLE", "DIALTONE"...)."""
        return str(self.cc.status()["ports"][port]["state"]).upper()

    def survive(self) -> dict[str, Any]:
        return self.cc.status()["survivability"]

    def entered(self, port: str, state: str, since: float) -> float | None:
        """When `port` first entered `state` at or after `since` (call control's trace)."""
        return next((t for t, p, _o, new in self.cc.trace
                     if p == port and new == state and t >= since), None)

    def close(self) -> None:
        self.cc.stop()
        self.board.close()  # the CDR store stays open: its owner closes it


def tone_level(samples: np.ndarray, hz: float, rate: int = LINE_RATE) -> float:
    """RMS amplitude of the `hz` component of samples (a Goertzel-style projection)."""
    x = np.asarray(samples, dtype=np.float64)
    if len(x) == 0:
        return 0.0
    t = np.arange(len(x)) / rate
    c, s = np.dot(x, np.cos(2 * np.pi * hz * t)), np.dot(x, np.sin(2 * np.pi * hz * t))
    return float(np.hypot(c, s) * np.sqrt(2) / len(x))


def rms(samples: np.ndarray) -> float:
    x = np.asarray(samples, dtype=np.float64)
    return float(np.sqrt(np.mean(x * x))) if len(x) else 0.0


def tail(samples: np.ndarray, seconds: float, rate: int = LINE_RATE) -> np.ndarray:
    return np.asarray(samples)[-int(seconds * rate):]


def sine(hz: float, seconds: float, amp: float = 6000.0, rate: int = LINE_RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.round(amp * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def dial(r: Rig, digits: str, phone: str = "fxs1", settle: float = 0.5,
         pulse: bool = False) -> None:
    """Off hook if need be, then the digits (DTMF or pulse), and `settle` s after them."""
    p = r.phone(phone)
    if not p.is_off_hook:
        p.off_hook()
        r.run(0.5)
    end = p.dial_pulse(digits) if pulse else p.dial_dtmf(digits)
    r.run(end - r.now() + settle + (1.0 if pulse else 0.0))


def connect(r: Rig, number: str = "5551234", phone: str = "fxs1") -> SimCall:
    """A branch phone in a call with a cloud agent; returns the SimCall."""
    dial(r, number, phone)
    r.run(0.6)
    call = r.cloud.invites[-1]
    assert call.to == number and r.state(phone) == "CONNECTED"
    return call
