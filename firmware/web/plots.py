"""Inline SVG plots drawn on the server: ERLE over the last call, call quality (MOS).

No script and no style attribute (the CSP allows neither inline): presentation
attributes only. The SVG scales to its container (viewBox), so it fits a phone.

`History` is what the ERLE plot needs: the web process polls the core's /status once a
second and keeps, per port, the ERLE and MOS samples of the call in progress and of the
last finished call (the core keeps no history; this is cheap and stays out of it).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from firmware.web.html import esc

W, H = 600, 220
PAD_L, PAD_R, PAD_T, PAD_B = 48, 12, 16, 32
MAX_SAMPLES = 3600


class History:
    """Per port: samples (t, erle_db, mos) of the current and of the last call."""

    def __init__(self) -> None:
        self.current: dict[str, list[tuple[float, float | None, float | None]]] = {}
        self.last: dict[str, list[tuple[float, float | None, float | None]]] = {}
        self._lock = threading.Lock()

    def feed(self, status: dict, t: float) -> None:
        with self._lock:
            for port in status.get("ports", []) or []:
                self._feed_port(port, t)

    def _feed_port(self, port: dict, t: float) -> None:
        name = port.get("name")
        call = port.get("call")
        if not name:
            return
        if call:
            samples = self.current.setdefault(name, [])
            if len(samples) < MAX_SAMPLES:
                samples.append((t, _num(port.get("erle_db")), _num(call.get("mos"))))
        elif self.current.get(name):
            self.last[name] = self.current.pop(name)

    def series(self, name: str) -> list[tuple[float, float | None, float | None]]:
        with self._lock:
            return list(self.current.get(name) or self.last.get(name) or [])

    def ports(self) -> list[str]:
        with self._lock:
            return sorted(set(self.current) | set(self.last))


def _num(v) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def line_plot(points: Sequence[tuple[float, float]], title: str, unit: str,
              ymin: float = 0.0, ymax: float | None = None, ident: str = "plot") -> str:
    """A line plot of (x seconds, y) points with axes and labels."""
    if not points:
        return _empty(title, ident)
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    top = ymax if ymax is not None else max(max(ys) * 1.1, ymin + 1)
    sx = lambda x: PAD_L + (x - x0) / (x1 - x0) * (W - PAD_L - PAD_R)  # noqa: E731
    sy = lambda y: H - PAD_B - (min(max(y, ymin), top) - ymin) / (top - ymin) * (H - PAD_T - PAD_B)  # noqa: E731
    path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}"
                    for i, (x, y) in enumerate(points))
    grid = _grid(ymin, top, sy, unit) + _xaxis(x0, x1, sx)
    return _svg(title, ident, grid + f'<path d="{path}" fill="none" stroke="#0a7" '
                                      'stroke-width="2"/>')


def bar_plot(values: Sequence[tuple[str, float]], title: str, unit: str,
             ymin: float = 1.0, ymax: float = 5.0, ident: str = "bars") -> str:
    """Bars (label, value), e.g. MOS of the last calls; red below 3.6, amber below 4.0."""
    if not values:
        return _empty(title, ident)
    sy = lambda y: H - PAD_B - (min(max(y, ymin), ymax) - ymin) / (ymax - ymin) * (H - PAD_T - PAD_B)  # noqa: E731
    step = (W - PAD_L - PAD_R) / len(values)
    bars = []
    for i, (label, v) in enumerate(values):
        x, y = PAD_L + i * step + step * 0.15, sy(v)
        color = "#c33" if v < 3.6 else "#d90" if v < 4.0 else "#0a7"
        bars.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{step * 0.7:.1f}" '
                    f'height="{H - PAD_B - y:.1f}" fill="{color}">'
                    f"<title>{esc(label)}: {v:.2f}</title></rect>")
    return _svg(title, ident, _grid(ymin, ymax, sy, unit) + "".join(bars))


def _grid(lo: float, hi: float, sy, unit: str) -> str:
    out = []
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        y = sy(v)
        out.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" '
                   'stroke="#ccc" stroke-width="1"/>'
                   f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end" '
                   f'font-size="11" fill="#555">{v:.3g}</text>')
    out.append(f'<text x="4" y="{PAD_T - 4}" font-size="11" fill="#555">{esc(unit)}</text>')
    return "".join(out)


def _xaxis(x0: float, x1: float, sx) -> str:
    out = []
    for i in range(5):
        x = x0 + (x1 - x0) * i / 4
        out.append(f'<text x="{sx(x):.1f}" y="{H - PAD_B + 16}" text-anchor="middle" '
                   f'font-size="11" fill="#555">{x - x0:.0f} s</text>')
    return "".join(out)


def _svg(title: str, ident: str, inner: str) -> str:
    return (f'<figure class="plot"><svg id="{esc(ident)}" viewBox="0 0 {W} {H}" '
            f'role="img" aria-label="{esc(title)}" xmlns="http://www.w3.org/2000/svg">'
            f"{inner}</svg><figcaption>{esc(title)}</figcaption></figure>")


def _empty(title: str, ident: str) -> str:
    return _svg(title, ident, f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" '
                              'font-size="14" fill="#777">no data yet</text>')
