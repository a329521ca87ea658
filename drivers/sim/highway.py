"""The simulated PCM highway: the Pi's PCM block as clock master, the wire, and the chips on it.

8 kHz frame sync, 32 bit clocks a frame, two S16 channels (the plan of drivers/bus/tdm.py).
The clock runs only while the Pi's stream does (from power-up with `card_clock`); a reactor
timer then exchanges one 20 ms period with every attached HighwayDevice on a fixed grid, and
two chips driving the same bits garble each other (counted). `SimPcmStream` has the shape of
drivers.bus.pcm.AlsaPcm, so TdmBus runs unchanged on both.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from drivers.bus import tdm
from drivers.bus.pcm import FRAME, LINE_RATE
from foundation.reactor import NEVER, Reactor

PERIOD_S = FRAME / LINE_RATE
MAX_BEHIND = 5  # periods a late wake-up catches up; later than that, the grid re-syncs


class SimHighway:
    """The wire and its clock; chips `attach()`, the Pi's stream starts and stops it."""

    def __init__(self, reactor: Reactor, name: str = "branchline", period: int = FRAME,
                 card_clock: bool = False) -> None:
        self.reactor, self.name, self.period = reactor, name, period
        self.card_clock = card_clock
        self.devices: list[tdm.HighwayDevice] = []
        self.clock_running = False
        self.frames = 0  # frame syncs clocked since start
        self.clashes = 0  # periods in which two chips drove the same bit clocks
        self.capture: deque[np.ndarray] = deque(maxlen=50)
        self.playback: deque[np.ndarray] = deque(maxlen=50)
        self.underruns = 0
        self._due = 0.0  # when the next period ends
        self._timer = reactor.register_timer(self._tick, NEVER)
        if card_clock:
            self.start()

    @property
    def bclk_hz(self) -> int:
        return tdm.BCLK_HZ if self.clock_running else 0

    def attach(self, device: tdm.HighwayDevice) -> None:
        """Wire a chip to the highway (once: a chip attached twice would clash with itself)."""
        if not any(d is device for d in self.devices):
            self.devices.append(device)

    def start(self) -> None:
        if not self.clock_running:
            self.clock_running = True
            self._due = self.reactor.now() + PERIOD_S
            self.reactor.update_timer(self._timer, self._due)

    def stop(self) -> None:
        self.clock_running = False
        self.reactor.update_timer(self._timer, NEVER)

    def _tick(self, eventtime: float) -> float:
        if not self.clock_running:
            return NEVER
        if eventtime - self._due > MAX_BEHIND * PERIOD_S:
            self._due = eventtime - PERIOD_S  # far behind (a stalled process): re-sync
        while self._due <= eventtime:
            self.exchange()
            self._due += PERIOD_S
        return self._due

    def exchange(self) -> None:
        """One period: chips -> capture, playback -> chips."""
        n = self.period
        if self.playback:
            out = self.playback.popleft()
        else:
            self.underruns += 1
            out = tdm.pack_slots({}, n)
        rx_words = tdm.words_from_channels(out)
        self.capture.append(tdm.channels_from_words(self._drive(n)))
        for device in self.devices:
            device.pcm_receive(rx_words)
        self.frames += n

    def _drive(self, n: int) -> np.ndarray:
        """What the chips put on DTX this period; bits nobody drives idle high."""
        words = np.zeros(n, dtype=np.uint32)
        driven = np.zeros(n, dtype=np.uint32)
        clashed = False
        for device in self.devices:
            sent = device.pcm_transmit(n)
            if sent is None:
                continue
            start, data = sent
            mine = np.zeros(n, dtype=np.uint32)
            mask = tdm.place(mine, start, np.asarray(data, dtype=np.uint8))
            overlap = driven & mask
            if overlap.any():
                clashed = True
                words = (words & ~mask) | ((words & mine) & overlap) | (mine & ~overlap)
            else:
                words |= mine
            driven |= mask
        if clashed:
            self.clashes += 1
        return words | (~driven & np.uint32(0xFFFFFFFF))


class SimPcmStream:
    """The Pi's PCM stream on a simulated highway: the AlsaPcm shape, two channels."""

    channels = tdm.ALSA_CHANNELS

    def __init__(self, highway: SimHighway) -> None:
        self.highway = highway
        self.name = self.device = highway.name
        self.rate, self.period = LINE_RATE, highway.period
        self.dropped = 0

    @property
    def frames(self) -> int:
        return self.highway.frames

    @property
    def running(self) -> bool:
        return self.highway.clock_running

    def start(self) -> SimPcmStream:
        self.highway.start()
        return self

    def read_all(self) -> np.ndarray | None:
        return self.highway.capture.popleft() if self.highway.capture else None

    def write(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame, dtype=np.int16)
        if frame.shape != (self.period, self.channels):
            raise ValueError(f"{self.name}: playback of {frame.shape}, expected "
                             f"({self.period}, {self.channels})")
        if len(self.highway.playback) == self.highway.playback.maxlen:
            self.dropped += 1
        self.highway.playback.append(frame.copy())

    def close(self) -> None:
        """The Pi's stream ends: its clock stops, unless the card drives the clock."""
        if not self.highway.card_clock:
            self.highway.stop()
