"""Line diagnostics on a running core (the control API's /diag routes, on the reactor
thread): ring a phone, play a tone, echo DTMF, measure, commission a port. A test leases
the port from call control (409 naming why while it is busy) until it ends on a reactor
timer; a tone or DTMF echo on a phone merely off hook plays over its dial tone, unleased."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from drivers.chips.si3215 import Si3215
from firmware.api.errors import ApiFailure, ErrorKind
from firmware.callctl import CallControlError
from firmware.callctl.model import PortLease, PortLine, PortState
from foundation.reactor import NEVER, Timer

if TYPE_CHECKING:
    from firmware.callctl.controller import CallControl
    from firmware.core.runtime import Core
    from firmware.media import PortMedia

log = logging.getLogger(__name__)

OFF_HOOK_ONLY = {"dialtone", "dialing", "busy", "reorder", "confirm"}  # FXS, not in a call
MEASURE_KEYS = ("line_voltage_v", "loop_current_ma", "battery_v", "hook", "polarity",
                "linefeed", "line_in_use", "line_side", "ringing", "ring", "alarm", "state")
CONFLICT, NOT_FOUND = ErrorKind.CONFLICT, ErrorKind.NOT_FOUND


def num(value: Any, digits: int = 1) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return round(x, digits) if math.isfinite(x) else None


class LineTests:
    def __init__(self, core: Core) -> None:
        self.core, self.reactor = core, core.reactor
        self.timers: dict[tuple[str, str], Timer] = {}

    def cc(self) -> CallControl:
        if self.core.cc is None:
            raise ApiFailure(ErrorKind.UNAVAILABLE, "call control is not running")
        return self.core.cc

    def line(self, port: str, kinds: tuple[str, ...], what: str) -> PortLine:
        """The port in call control's book: it exists, is of one of `kinds`, its chip runs."""
        book = self.cc().book.ports
        line = book.get(port)
        if line is None:
            raise ApiFailure(NOT_FOUND, f"port {port!r} does not exist; ports: "
                                        f"{', '.join(book) or 'none'}", "port")
        if line.kind not in kinds:
            raise ApiFailure(CONFLICT, f"{port} is an {line.kind.upper()} port: {what} works "
                             f"on {' and '.join(k.upper() for k in kinds)} ports", "port")
        driver = self.core.board.drivers.get(port)
        if line.state is PortState.FAILED or driver is None or getattr(driver, "failed", False):
            why = (line.reason or getattr(driver, "error", "")
                   or self.core.board.errors.get(port, "no reason"))
            raise ApiFailure(CONFLICT, f"{port}: the chip failed ({why}); fix the card and "
                                       "restart the core", "port")
        return line

    def lease(self, port: str, kinds: tuple[str, ...], what: str) -> PortLease:
        """As line(), and the port out of service for calls until cc.release()."""
        self.line(port, kinds, what)
        try:
            return self.cc().lease_port(port, what)
        except CallControlError as exc:
            raise ApiFailure(CONFLICT, str(exc), "port") from None

    def media(self, port: str, what: str) -> tuple[PortMedia, PortLease | None]:
        """The port's audio: leased, or as it is when the phone is merely off hook."""
        line = self.line(port, ("fxs", "fxo"), what)
        if line.kind == "fxs" and line.call in OFF_HOOK_ONLY:
            return self.cc().media_of(port), None
        lease = self.lease(port, ("fxs", "fxo"), what)
        return lease.media, lease

    def later(self, port: str, what: str, seconds: float, fn: Callable[[], object],
              lease: PortLease | None = None) -> None:
        """Run fn, then release the lease, in `seconds` (replacing the same test's end)."""
        key = (port, what)
        old = self.timers.pop(key, None)
        if old is not None:
            self.reactor.unregister_timer(old)
        cc = self.core.cc

        def fire(_eventtime: float) -> float:
            self.timers.pop(key, None)
            try:
                fn()
            except Exception:  # noqa: BLE001 - a test's end must not stop the reactor
                log.exception("%s: ending the %s test failed", port, what)
            if lease is not None and cc is not None:
                cc.release(lease)
            return NEVER

        self.timers[key] = self.reactor.register_timer(fire, self.reactor.now() + seconds)

    def ring(self, port: str, seconds: float) -> dict[str, Any]:
        lease = self.lease(port, ("fxs",), "ringing a phone")
        driver = lease.driver
        if not (isinstance(driver, Si3215) and driver.ring()):
            self.cc().release(lease)
            raise ApiFailure(CONFLICT, f"{port}: the phone is off hook; hang it up, then "
                                       "ring it", "port")
        self.later(port, "ring", seconds, driver.stop_ring, lease)
        log.info("%s: ringing for %g s (diagnostics)", port, seconds)
        return {"ok": True, "detail": f"ringing {port} for {seconds:g} s"}

    def tone(self, port: str, tone: str, seconds: float) -> dict[str, Any]:
        media, lease = self.media(port, "a tone")
        if tone not in media.plan.tones:
            if lease is not None:
                self.cc().release(lease)
            raise ApiFailure(CONFLICT, f"{port}: the {media.plan.code} plan has no {tone} "
                             f"tone; tones: {', '.join(media.plan.tones)}", "tone")
        before = media.tone_name
        media.tone(tone)

        def restore() -> None:
            if media.tone_name == tone:
                media.tone(before or None)

        self.later(port, "tone", seconds, restore, lease)
        log.info("%s: playing %s tone for %g s (diagnostics)", port, tone, seconds)
        return {"ok": True, "detail": f"playing {tone} tone on {port} for {seconds:g} s"}

    def dtmf_echo(self, port: str, seconds: float) -> dict[str, Any]:
        from cext.dtmf import DtmfDetector, dtmf_samples

        media, lease = self.media(port, "the DTMF echo test")
        detector = DtmfDetector()

        def tap(frame: np.ndarray) -> None:
            if media.playing:
                return  # our own playback must not be heard as a new digit
            for digit, _start, _end in detector.process(frame):
                log.info("%s: DTMF echo test heard %s", port, digit)
                media.play(dtmf_samples(digit))

        media.add_tap(tap)
        self.later(port, "dtmf-echo", seconds, lambda: media.remove_tap(tap), lease)
        return {"ok": True, "detail": f"digits heard on {port} are played back for "
                                      f"{seconds:g} s"}

    def measure(self, port: str) -> dict[str, Any]:
        kind = self.line(port, ("fxs", "fxo"), "measuring").kind
        readout = dict(self.core.board.drivers[port].status())
        out: dict[str, Any] = {"port": port, "kind": kind}
        for key in MEASURE_KEYS:
            value = readout.get(key)
            out[key] = value if isinstance(value, bool | str) or value is None else num(value)
        return out

    def line_test(self, port: str, test_call_s: float = 0.0) -> dict[str, Any]:
        """Commission the port (firmware/diag/commission.py leases it itself)."""
        from firmware.diag.commission import commission_port

        self.line(port, ("fxs", "fxo"), "the line test")
        log.info("%s: line test started through the control API", port)
        return dict(commission_port(self.core, port, test_call_s=test_call_s))
