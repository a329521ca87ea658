"""Call-control test rig: the real drivers on the register-level twins (SimBoard), the real
DSP, SimCloud as the cloud, all on a fake-clock reactor."""

from __future__ import annotations

import numpy as np

from drivers.bus.pcm import LINE_RATE
from drivers.sim.board import SimBoard
from firmware.callctl.controller import CallControl
from firmware.core.config import default_document, validate
from foundation.errors import ChipFailed
from foundation.reactor import FakeClock, Reactor
from lab.simcloud import SimCloud


class Rig:
    def __init__(self, doc_changes=None, cdr=None, unseated=()) -> None:
        doc = default_document()
        for path, value in (doc_changes or {}).items():
            node = doc
            *head, last = path.split(".")
            for key in head:
                node = node[key]
            node[last] = value
        self.doc = validate(doc)
        self.reactor = Reactor(FakeClock())
        self.board = SimBoard(self.reactor, self.doc, unseated=unseated)
        for driver in self.board.drivers.values():
            try:
                driver.start()
            except ChipFailed:
                pass  # marked failed; the other ports run (as the gateway does)
        if self.board.lifeline is not None:
            self.board.lifeline.energise()  # the phone on fxs1 to its SLIC, as the gateway does
        self.board.headset_driver.start()
        self.cloud = SimCloud(self.reactor)
        self.cc = CallControl(self.reactor, self.doc, self.board, self.cloud, cdr=cdr)
        self.cc.start()
        self.run(0.3)

    def run(self, seconds: float) -> None:
        self.reactor.run_for(seconds)

    def phone(self, name: str = "fxs1"):
        return self.board.phones[name]

    def co(self, name: str = "fxo1"):
        return self.board.cos[name]

    def state(self, port: str) -> str:
        return self.cc.ports[port].state.name

    def close(self) -> None:
        self.cc.stop()
        self.board.close()


def tone_level(samples: np.ndarray, hz: float, rate: int = 8000) -> float:
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


def tail(samples: np.ndarray, seconds: float, rate: int = 8000) -> np.ndarray:
    return np.asarray(samples)[-int(seconds * rate):]


def sine(hz: float, seconds: float, amp: float = 6000.0) -> np.ndarray:
    t = np.arange(int(seconds * LINE_RATE)) / LINE_RATE
    return np.round(amp * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def dial(r, digits: str, phone="fxs1", settle: float = 0.5, pulse: bool = False):
    p = r.phone(phone)
    if not p.is_off_hook:
        p.off_hook()
        r.run(0.5)
    end = p.dial_pulse(digits) if pulse else p.dial_dtmf(digits)
    r.run(end - r.reactor.now() + settle + (1.0 if pulse else 0.0))


def connect(r, number="5551234", phone="fxs1"):
    """A branch phone in a call with a cloud agent; returns the SimCall."""
    dial(r, number, phone)
    r.run(0.6)
    call = r.cloud.invites[-1]
    assert call.to == number and r.state(phone) == "CONNECTED"
    return call
