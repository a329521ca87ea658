"""Plots drawn on the server as inline SVG: ERLE over the last call, call quality (MOS).
This module works out the geometry; templates/macros.html (plot) draws it with presentation
attributes only (the CSP allows no inline script or style). `History` keeps, per port, the
ERLE and MOS samples of the call in progress and of the last one, fed by the web process's
once-a-second /status poll (the core keeps no history)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

W, H = 600, 220
PAD_L, PAD_R, PAD_T, PAD_B = 48, 12, 16, 32
MAX_SAMPLES = 3600
Sample = tuple[float, float | None, float | None]


class History:
    """Per port: samples (t, erle_db, mos) of the current and of the last call."""

    def __init__(self) -> None:
        self.current: dict[str, list[Sample]] = {}
        self.last: dict[str, list[Sample]] = {}
        self._lock = threading.Lock()

    def feed(self, status: Mapping[str, Any], t: float) -> None:
        with self._lock:
            for port in status.get("ports", []) or []:
                self._feed_port(port, t)

    def _feed_port(self, port: Mapping[str, Any], t: float) -> None:
        name, call = port.get("name"), port.get("call")
        if not name:
            return
        if call:
            samples = self.current.setdefault(name, [])
            if len(samples) < MAX_SAMPLES:
                samples.append((t, _num(port.get("erle_db")), _num(call.get("mos"))))
        elif self.current.get(name):
            self.last[name] = self.current.pop(name)

    def series(self, name: str) -> list[Sample]:
        with self._lock:
            return list(self.current.get(name) or self.last.get(name) or [])

    def ports(self) -> list[str]:
        with self._lock:
            return sorted(set(self.current) | set(self.last))


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    label: str


@dataclass
class Plot:
    """What the `plot` macro draws; `path` (a line) or `bars`, or neither (no data)."""

    title: str
    ident: str
    unit: str
    grid: list[tuple[float, str]] = field(default_factory=list)  # (y, label)
    xticks: list[tuple[float, str]] = field(default_factory=list)  # (x, label)
    path: str = ""
    bars: list[Bar] = field(default_factory=list)
    w: int = W
    h: int = H
    left: int = PAD_L
    right: int = W - PAD_R
    top: int = PAD_T
    base: int = H - PAD_B


def _scale(lo: float, hi: float) -> Callable[[float], float]:
    return lambda y: round(H - PAD_B - (min(max(y, lo), hi) - lo) / (hi - lo)
                           * (H - PAD_T - PAD_B), 1)


def _grid(lo: float, hi: float, sy: Callable[[float], float]) -> list[tuple[float, str]]:
    return [(sy(v), f"{v:.3g}") for v in (lo + (hi - lo) * i / 4 for i in range(5))]


def line_plot(points: Sequence[tuple[float, float]], title: str, unit: str,
              ymin: float = 0.0, ident: str = "plot") -> Plot:
    """A line of (x seconds, y) points with axes and labels."""
    plot = Plot(title, ident, unit)
    if not points:
        return plot
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    top = max(max(ys) * 1.1, ymin + 1)
    sy = _scale(ymin, top)

    def sx(x: float) -> float:
        return round(PAD_L + (x - x0) / (x1 - x0) * (W - PAD_L - PAD_R), 1)

    plot.grid = _grid(ymin, top, sy)
    plot.xticks = [(sx(x), f"{x - x0:.0f} s") for x in (x0 + (x1 - x0) * i / 4 for i in range(5))]
    plot.path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x)},{sy(y)}"
                         for i, (x, y) in enumerate(points))
    return plot


def bar_plot(values: Sequence[tuple[str, float]], title: str, unit: str,
             ymin: float = 1.0, ymax: float = 5.0, ident: str = "bars") -> Plot:
    """Bars (label, value), e.g. MOS of the last calls; red below 3.6, amber below 4.0."""
    plot = Plot(title, ident, unit)
    if not values:
        return plot
    sy = _scale(ymin, ymax)
    step = (W - PAD_L - PAD_R) / len(values)
    plot.grid = _grid(ymin, ymax, sy)
    for i, (label, v) in enumerate(values):
        x, y = PAD_L + i * step + step * 0.15, sy(v)
        color = "#c33" if v < 3.6 else "#d90" if v < 4.0 else "#0a7"
        plot.bars.append(Bar(round(x, 1), y, round(step * 0.7, 1), round(H - PAD_B - y, 1),
                             color, f"{label}: {v:.2f}"))
    return plot
