"""A virtual USB headset: a device that can be plugged and unplugged, with a mic and ears.

It stands where ALSA stands on the box: `open_pcm(rate, period)` and `present()` are what
`drivers.chips.headset.Headset` is built with. While unplugged, opening fails and a PCM
already open raises HardwareError on read/write, as ALSA does when a USB card vanishes.
A 20 ms reactor timer plays the role of the sound card's clock: it moves one period of
`speak()`-queued audio into the capture side and collects playback into `heard`.
Audio is raw 16-bit PCM at the headset's native rate.
"""

from __future__ import annotations

import numpy as np

from drivers.bus.pcm import FRAME, LINE_RATE, SimPcmLink
from foundation.errors import HardwareError

TICK_S = FRAME / LINE_RATE  # 20 ms


class _HeadsetPcm:
    """The gateway's end of the link, failing like ALSA once the headset is gone."""

    def __init__(self, sim: SimHeadset) -> None:
        self._sim = sim
        self._end = sim.link.gateway
        self.name, self.rate, self.period = sim.device, sim.rate, sim.period

    def _check(self) -> None:
        if not self._sim.plugged:
            raise HardwareError(f"ALSA device {self._sim.device!r}: No such device")

    def read(self) -> np.ndarray | None:
        self._check()
        return self._end.read()

    def write(self, frame: np.ndarray) -> None:
        self._check()
        self._end.write(frame)

    def close(self) -> None:
        self._sim.opened = False


class SimHeadset:
    """A plug-in headset at `rate` Hz; `speak()` feeds its mic, `heard` is what it played."""

    def __init__(self, reactor, rate: int = 48000, device: str = "sim:headset") -> None:
        self.reactor, self.rate, self.device = reactor, rate, device
        self.period = rate * FRAME // LINE_RATE
        self.link = SimPcmLink("headset", rate=rate, period=self.period)
        self.plugged = True
        self.opened = False
        self._mic = np.zeros(0, dtype=np.int16)
        self._heard: list[np.ndarray] = []
        reactor.register_periodic(self._tick, TICK_S, start=reactor.now() + TICK_S)

    # -- what the Headset driver is built with --
    def present(self) -> bool:
        return self.plugged

    def open_pcm(self, rate: int, period: int) -> _HeadsetPcm:
        if not self.plugged:
            raise HardwareError(f"ALSA device {self.device!r} did not open: headset unplugged")
        if (rate, period) != (self.rate, self.period):
            raise HardwareError(f"ALSA device {self.device!r}: {rate} Hz not supported, use {self.rate}")
        self.opened = True
        return _HeadsetPcm(self)

    # -- what a test or the demo does with it --
    def plug(self) -> None:
        self.plugged = True

    def unplug(self) -> None:
        self.plugged = False
        self.link.device.close()

    def speak(self, samples: np.ndarray) -> None:
        """Queue audio (native rate) for the microphone; it flows at 20 ms per tick."""
        self._mic = np.concatenate([self._mic, np.asarray(samples, dtype=np.int16)])

    @property
    def heard(self) -> np.ndarray:
        return np.concatenate(self._heard) if self._heard else np.zeros(0, dtype=np.int16)

    def _tick(self, eventtime: float) -> float:
        if self.plugged:
            self._feed_mic()
            while (frame := self.link.device.read()) is not None:
                self._heard.append(frame)
        return eventtime + TICK_S

    def _feed_mic(self) -> None:
        if len(self._mic) == 0:
            return
        chunk = np.zeros(self.period, dtype=np.int16)
        n = min(self.period, len(self._mic))
        chunk[:n], self._mic = self._mic[:n], self._mic[n:]
        self.link.device.write(chunk)
