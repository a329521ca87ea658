"""The board-level first-power-up checks behind `branchline hw selftest`.

`run(board, reactor, down)` takes a board whose chips were just brought up (firmware/cli/
hw.py starts them) and returns one row per check, {"port", "check", "ok", "detail",
"fix"}: device problems, PCLK, each driver's own `selftest()`, a digital loopback per
line, the lifeline relay. A driver's failure gives a failed row, never a crash; time
passes only through reactor.run_for. Assumes no running core uses the chips meanwhile.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cext import toneplans
from cext.tones import DBM0_PEAK, ToneGenerator
from drivers.board import Board, LineDriver
from drivers.bus.pcm import FRAME, LINE_RATE, PcmPort
from foundation.errors import BranchlineError
from foundation.reactor import Reactor

LOOPBACK_HZ = 1000.0
LOOPBACK_DBM0 = -10.0
LOOPBACK_S = 0.5  # sent; the last MEASURE_S of what came back is measured
MEASURE_S = 0.2
LEVEL_TOLERANCE_DB = 2.0  # G.711 there and back is well inside this
MIN_TONE_SHARE = 0.9  # of the received power at 1 kHz
PCLK_WINDOW_S = 0.2
PCLK_TOLERANCE = 0.05  # frame counts within 5 % of 8 kHz
DBM0_RMS = DBM0_PEAK / math.sqrt(2)
BOARD = "board"
UPDATE_FIX = "update the firmware: this driver predates `hw selftest`"


Row = dict[str, Any]


def check(port: str, name: str, ok: bool, detail: str, fix: str = "") -> Row:
    return {"port": port, "check": name, "ok": bool(ok), "detail": detail,
            "fix": "" if ok else (fix or "see the detail")}


def run(board: Board, reactor: Reactor, down: dict[str, str] | None = None) -> list[Row]:
    """Every check, in the order a technician reads them; `down`: line -> why it failed
    to come up (from whoever started the chips)."""
    down = dict(down or {})
    results = device_checks(board) + pclk_checks(board, reactor)
    for name, _line, _chip_name, _chip in board.lines():
        results += line_checks(board, reactor, name, down.get(name, ""))
    return results + lifeline_checks(board)


# ---- devices and clocks ---------------------------------------------------------------------

def device_checks(board: Board) -> list[Row]:
    """The board's device problems that belong to no single line (GPIO, ALSA...)."""
    per_line = set(board.errors.values())
    return [check(BOARD, "device", False, problem, problem)
            for problem in board.problems if problem not in per_line]


def pcm_streams(board: Board) -> dict[str, Any]:
    """alsa_device -> the Pi's PCM stream (anything with a `frames` count): PCLK runs
    when that count advances at the 8 kHz frame-sync rate."""
    buses = getattr(board, "tdm", None) or {}  # alsa_device -> TdmBus (None: did not open)
    return {device: bus.stream for device, bus in buses.items()
            if bus is not None and hasattr(getattr(bus, "stream", None), "frames")}


def pclk_checks(board: Board, reactor: Reactor) -> list[Row]:
    streams = pcm_streams(board)
    if not streams:
        return [check(BOARD, "pclk", False, "the board exposes no PCM stream with a frame "
                      "counter", "open the lines' ALSA device (see the device lines) or "
                      + UPDATE_FIX)]
    before = {device: stream.frames for device, stream in streams.items()}
    t0 = reactor.now()
    reactor.run_for(PCLK_WINDOW_S)
    elapsed = max(reactor.now() - t0, 1e-9)
    return [_pclk(device, streams[device].frames - before[device], elapsed)
            for device in streams]


def _pclk(device: str, frames: int, elapsed: float) -> Row:
    rate = frames / elapsed
    ok = abs(rate - LINE_RATE) <= PCLK_TOLERANCE * LINE_RATE
    detail = f"{device}: {frames} frame syncs in {elapsed * 1000:.0f} ms ({rate:.0f} Hz)"
    fix = ("no bit clock: the PCM stream is not running; check the card's sound-card "
           "overlay (`aplay -l`) and the PCM pins GPIO 18-21" if frames == 0 else
           f"frame sync at {rate:.0f} Hz instead of {LINE_RATE}: check board.pcm and the "
           "overlay's clocking")
    return check(BOARD, "pclk", ok, detail, fix)


# ---- per line -------------------------------------------------------------------------------

def line_checks(board: Board, reactor: Reactor, name: str, down: str = "") -> list[Row]:
    driver = board.drivers.get(name)
    if driver is None:
        why = board.errors.get(name, "no driver was built for this line")
        return [check(name, "bus", False, why, why)]
    out = driver_checks(name, driver)
    if down:
        return out + [check(name, "loopback", False, f"not run: the port did not come up "
                            f"({down})", "fix the checks above first")]
    return out + [loopback(board, reactor, name, driver)]


def driver_checks(name: str, driver: LineDriver) -> list[Row]:
    if not hasattr(driver, "selftest"):
        return [check(name, "selftest", False, "driver has no selftest", UPDATE_FIX)]
    try:
        rows = list(driver.selftest())
    except BranchlineError as exc:
        return [check(name, "selftest", False, str(exc))]
    except Exception as exc:  # noqa: BLE001 - one driver's bug must not stop the others
        return [check(name, "selftest", False, f"selftest crashed: {type(exc).__name__}: "
                      f"{exc}", "report it with `BRANCHLINE_DEBUG=1 branchline hw selftest`")]
    return [check(name, str(r.get("check", "?")), bool(r.get("ok")), str(r.get("detail", "")),
                  str(r.get("fix", ""))) for r in rows]


def loopback(board: Board, reactor: Reactor, name: str, driver: LineDriver) -> Row:
    """1 kHz at LOOPBACK_DBM0 through the chip's digital loopback, its level and purity
    measured: proves the Pi's stream, the slot packing, the chip's timeslot and law."""
    if not hasattr(driver, "pcm_loopback"):
        return check(name, "loopback", False, "driver has no pcm_loopback", UPDATE_FIX)
    port = board.pcm.get(name)
    if port is None:
        return check(name, "loopback", False, "the line has no PCM port",
                     "fix the ALSA device problem shown above")
    try:
        driver.pcm_loopback(True)
        try:
            received = send_and_capture(port, reactor)
        finally:
            driver.pcm_loopback(False)
    except BranchlineError as exc:
        return check(name, "loopback", False, str(exc))
    return judge_loopback(name, received, slot=getattr(port, "slot", None))


def send_and_capture(port: PcmPort, reactor: Reactor) -> np.ndarray:
    """Write LOOPBACK_S of the test tone frame by frame; everything read meanwhile."""
    while port.read() is not None:
        pass  # what was queued before the loop was closed
    gen = ToneGenerator(toneplans.Tone((LOOPBACK_HZ,), LOOPBACK_DBM0), LINE_RATE)
    got: list[np.ndarray] = []
    for _ in range(round(LOOPBACK_S * LINE_RATE / FRAME)):
        port.write(gen.generate(FRAME))
        reactor.run_for(FRAME / LINE_RATE)
        while (frame := port.read()) is not None:
            got.append(np.asarray(frame, dtype=np.int16))
    return np.concatenate(got) if got else np.zeros(0, dtype=np.int16)


def tone_measure(x: np.ndarray, hz: float) -> tuple[float, float]:
    """(level of the `hz` component in dBm0, its share of the total power)."""
    x = np.asarray(x, dtype=float)
    if not len(x):
        return -120.0, 0.0
    t = np.arange(len(x)) / LINE_RATE
    c, s = np.cos(2 * np.pi * hz * t), np.sin(2 * np.pi * hz * t)
    a, b = 2 * np.dot(x, c) / len(x), 2 * np.dot(x, s) / len(x)
    tone_power = (a * a + b * b) / 2
    total = float(np.mean(x * x))
    level = 10 * math.log10(tone_power / DBM0_RMS ** 2) if tone_power > 0 else -120.0
    return level, (tone_power / total if total > 0 else 0.0)


def judge_loopback(name: str, received: np.ndarray, slot: int | None = None) -> Row:
    where = f"timeslot {slot}" if slot is not None else "its timeslot"
    tail = received[-round(MEASURE_S * LINE_RATE):]
    level, share = tone_measure(tail, LOOPBACK_HZ)
    detail = (f"{LOOPBACK_HZ:.0f} Hz sent at {LOOPBACK_DBM0:.1f} dBm0 on {where}, came back "
              f"at {level:.1f} dBm0 ({share * 100:.0f}% of the power at {LOOPBACK_HZ:.0f} Hz)")
    if len(tail) < round(MEASURE_S * LINE_RATE) or level < LOOPBACK_DBM0 - 20:
        return check(name, "loopback", False, f"nothing came back on {where}",
                     f"the chip is not on {where} or PCLK/FSYNC do not reach it: check "
                     f"lines.{name}.timeslot, the PCM wiring (GPIO 18-21) and board.pcm")
    ok = abs(level - LOOPBACK_DBM0) <= LEVEL_TOLERANCE_DB and share >= MIN_TONE_SHARE
    return check(name, "loopback", ok, detail,
                 "the tone came back changed: check board.pcm.law (mu-law/A-law) against "
                 "the chips, and that no other chip drives this timeslot")


# ---- the lifeline ---------------------------------------------------------------------------

def lifeline_checks(board: Board) -> list[Row]:
    relay = getattr(board, "lifeline", None)
    settings = board.doc["board"]["lifeline"]
    if not settings["enabled"]:
        return []
    if relay is None:
        return [check(BOARD, "lifeline relay", False,
                      f"GPIO {settings['gpio']} for the relay was not claimed",
                      "fix the GPIO problem above, or set board.lifeline.enabled = false "
                      "on a card without the relay")]
    st = relay.status()
    return [check(BOARD, "lifeline relay", True,
                  f"GPIO {st['gpio']} ({st['drive']} drive) claimed, relay released: "
                  f"{st['fxs']} stays on the PSTN line of {st['fxo']} during the selftest")]
