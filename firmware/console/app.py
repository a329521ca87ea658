"""The `console` process: one Session on one serial port, kept alive whatever happens.
`SerialConsole(device, baud, make_session).run(stop)` serves the port (8N1, no flow
control) and reopens it with backoff when it fails (cable or USB gadget gone); a bug in
a command is logged and shown as one line; output nobody reads is dropped after
WRITE_TIMEOUT_S rather than stalling the console."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import serial

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.1
WRITE_TIMEOUT_S = 2.0
BACKOFF_S = (0.2, 5.0)


class SerialConsole:
    """See the module docstring. `make_session(write)` builds a session object with
    start(), feed(bytes), tick() and hangup()."""

    def __init__(self, device: str, baud: int, make_session: Callable) -> None:
        self.device, self.baud = device, baud
        self.port: serial.Serial | None = None
        self.session = make_session(self.write)
        self._broken: Exception | None = None
        self._lost_logged = False

    # --- the port ---------------------------------------------------------------------

    def _open(self) -> serial.Serial:
        return serial.Serial(self.device, self.baud, bytesize=serial.EIGHTBITS,
                             parity=serial.PARITY_NONE, stopbits=serial.STOPBITS_ONE,
                             timeout=READ_TIMEOUT_S, write_timeout=WRITE_TIMEOUT_S,
                             xonxoff=False, rtscts=False, dsrdtr=False)

    def write(self, data: bytes) -> None:
        port = self.port
        if port is None or self._broken is not None:
            return
        try:
            port.write(data)
        except serial.SerialTimeoutException:
            log.debug("serial %s: output dropped (nobody reading)", self.device)
        except (serial.SerialException, OSError) as exc:
            self._broken = exc

    def _close(self) -> None:
        port, self.port = self.port, None
        if port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                port.close()

    # --- the loop ---------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        delay = BACKOFF_S[0]
        while not stop.is_set():
            if self._connect():
                delay = BACKOFF_S[0]
                self._serve(stop)
                self._lost()
            else:
                stop.wait(delay)
                delay = min(delay * 2, BACKOFF_S[1])
        self._close()

    def _connect(self) -> bool:
        try:
            self.port = self._open()
        except (serial.SerialException, OSError, ValueError) as exc:
            if not self._lost_logged:
                log.warning("serial %s: cannot open (%s); retrying until it appears",
                            self.device, exc)
                self._lost_logged = True
            return False
        if self._lost_logged:
            log.info("serial %s: open again", self.device)
        self._lost_logged, self._broken = False, None
        self._guarded(self.session.start)
        return True

    def _serve(self, stop: threading.Event) -> None:
        while not stop.is_set() and self._broken is None and self.port is not None:
            try:
                data = self.port.read(max(1, self.port.in_waiting or 1))
            except (serial.SerialException, OSError, TypeError) as exc:
                self._broken = exc
                break
            if data:
                self._guarded(self.session.feed, data)
            self._guarded(self.session.tick)

    def _lost(self) -> None:
        if self._broken is not None:
            log.warning("serial %s: lost (%s); reopening with backoff", self.device,
                        self._broken)
            self._lost_logged = True
        self._close()
        self._guarded(self.session.hangup)
        time.sleep(BACKOFF_S[0])

    def _guarded(self, fn: Callable[..., object], *args: object) -> None:
        """A bug in a command must not end the console: log it, say one line, go on."""
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - the console process must survive
            log.exception("console: internal error")
            self.write(f"\r\n% internal error ({type(exc).__name__}); the console goes on; "
                       "see the log\r\n".encode())
