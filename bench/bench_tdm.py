"""The lines' PCM highway in the core: what one 20 ms period of the TdmBus costs.

TdmBus (drivers/bus/pcm.py) unpacks four G.711 slots from the Pi's two S16 channels and
decodes them, and the reverse, once per period; the baseline is the path it replaced (one
linear S16 channel per port). Both on the same frames through a stream stand-in, 4 ports.
Run: .venv/bin/python -m bench.bench_tdm (writes bench/results/tdm.json).
"""

from __future__ import annotations

import json
import statistics
import time
from collections import deque
from pathlib import Path

import numpy as np

from drivers.bus import tdm
from drivers.bus.pcm import FRAME, TdmBus

REPEATS = 9
PERIODS = 500  # 10 s of audio per repeat
PORTS = tdm.SLOTS
RESULTS = Path(__file__).with_name("results") / "tdm.json"


class LoopStream:
    """A stream stand-in: an endless capture of prepared periods; playback is dropped."""

    def __init__(self, periods: list[np.ndarray], channels: int) -> None:
        self.name, self.rate, self.period, self.channels = "bench", 8000, FRAME, channels
        self._periods, self._i, self.frames = periods, 0, 0
        self.pending = 0

    def read_all(self) -> np.ndarray | None:
        if not self.pending:
            return None
        self.pending -= 1
        self._i = (self._i + 1) % len(self._periods)
        self.frames += self.period
        return self._periods[self._i]

    def write(self, frame: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass


class OldTdm:
    """The replaced path: one S16 channel per port, no companding (for the baseline)."""

    def __init__(self, stream: LoopStream) -> None:
        self.stream = stream
        self._rx = [deque(maxlen=10) for _ in range(stream.channels)]
        self._tx = [deque(maxlen=10) for _ in range(stream.channels)]

    def read_slot(self, slot: int) -> np.ndarray | None:
        while (frame := self.stream.read_all()) is not None:
            for ch, queue in enumerate(self._rx):
                queue.append(frame[:, ch].copy())
        return self._rx[slot].popleft() if self._rx[slot] else None

    def write_slot(self, slot: int, frame: np.ndarray) -> None:
        self._tx[slot].append(np.asarray(frame, dtype=np.int16))
        if all(self._tx):
            self.stream.write(np.stack([q.popleft() for q in self._tx], axis=1))


def _speech_like(rng: np.random.Generator) -> np.ndarray:
    return (rng.standard_normal(FRAME) * 3000).clip(-32768, 32767).astype(np.int16)


def _run(ports, stream: LoopStream, frames: list[np.ndarray]) -> float:
    """Microseconds per period for PERIODS periods: capture one, every port reads and
    writes one frame."""
    t0 = time.perf_counter_ns()
    for i in range(PERIODS):
        stream.pending = 1
        for slot, port in enumerate(ports):
            port.read()
            port.write(frames[(i + slot) % len(frames)])
    return (time.perf_counter_ns() - t0) / 1000 / PERIODS


class _OldPort:
    def __init__(self, bus: OldTdm, slot: int) -> None:
        self.bus, self.slot = bus, slot

    def read(self) -> np.ndarray | None:
        return self.bus.read_slot(self.slot)

    def write(self, frame: np.ndarray) -> None:
        self.bus.write_slot(self.slot, frame)


def measure() -> dict:
    rng = np.random.default_rng(7)
    frames = [_speech_like(rng) for _ in range(16)]
    new_periods = [tdm.pack_slots({s: np.full(FRAME, 0x55 + s, np.uint8) for s in range(PORTS)},
                                  FRAME) for _ in range(4)]
    old_periods = [np.stack([f for f in frames[:PORTS]], axis=1) for _ in range(4)]
    out: dict[str, list[float]] = {"tdm_bus": [], "baseline": []}
    for _ in range(REPEATS):  # interleaved, so both see the same machine load
        new_stream = LoopStream(new_periods, tdm.ALSA_CHANNELS)
        bus = TdmBus(new_stream, "ulaw")
        new_ports = [bus.port(s, f"port{s}") for s in range(PORTS)]
        out["tdm_bus"].append(_run(new_ports, new_stream, frames))
        old_stream = LoopStream(old_periods, PORTS)
        old = OldTdm(old_stream)
        out["baseline"].append(_run([_OldPort(old, s) for s in range(PORTS)], old_stream, frames))
    return out


def main() -> None:
    times = measure()
    period_us = FRAME / 8000 * 1e6
    rows, result = [], {"ports": PORTS, "periods": PERIODS, "repeats": REPEATS}
    base = statistics.median(times["baseline"])
    for name, us in times.items():
        med = statistics.median(us)
        result[name] = {"min_us": round(min(us), 1), "median_us": round(med, 1),
                        "budget_pct": round(100 * med / period_us, 3),
                        "vs_baseline": round(med / base, 2)}
        rows.append(f"| {name} | {min(us):.1f} | {med:.1f} | {100 * med / period_us:.3f} % "
                    f"| {med / base:.2f} |")
    print("| path (4 ports) | min us/period | median us/period | of the 20 ms period | "
          "vs baseline |\n|---|---|---|---|---|\n" + "\n".join(rows))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
