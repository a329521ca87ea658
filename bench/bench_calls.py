"""Call benchmarks of the whole box: capacity and CPU per bridged call, audio latency,
call setup latency and a sipp load, against real SIP peers on loopback.

What runs where. This process is the box: a SimBoard with N FXS lines (the real Si3215
driver on its register twin, one VirtualPhone per line), the real CallControl with one
PortMedia per port (cext.echo.EchoCanceller(128 ms) and cext.dtmf.DtmfDetector in every
analog leg), and the real PjBridge (pjsua2, 64-call build) on a MonotonicClock reactor.
Far ends are separate processes: Debian's Kamailio (registrar/proxy) and sipp, as an
echo UAS for box-originated calls (-rtp_echo: every RTP packet goes back to the box,
so both directions of every call carry audio) and as a load UAC for inbound calls.
The box process is pinned to one CPU (os.sched_setaffinity before pjsua2 starts its
threads, which inherit it); the peers are started with the other CPUs, and only the
box's CPU is counted (/proc/self/stat utime+stime over a steady window).

Why a whole board rather than PortMedia instances on stubs: the per-call cost includes
call control's 20 ms tick, the PCM queues and pjsua2's frame callbacks, which stubs
would leave out. The simulated phones are hardware, not box: their 20 ms tick is timed
(thread CPU) and subtracted, and both figures are reported. The config validator
refuses 48 chips on the Pi's 28 GPIOs, so the bench validates the stock document and
then replaces board.chips and lines with 48 Si3215 lines (bench only: SimBoard does
not care about pins).

Measured (repeats, min/median, JSON in bench/results/calls.json):
1. capacity: 1/8/16/32/48 bridged calls, process CPU (% of one core) and per call,
   media clock lateness (actual start minus the time the run was due: p50/p99/max),
   its runs per second (50 on one grid; 100 once phase-locked to pjsua2's frame clock:
   a line-in run before pjsua2 asks, a line-out run after it gives, firmware.media.
   MediaClock), its lead at the end (adaptive part + the line-in run's own duration), frames pjsua2 asked for and found missing (PipePort
   pipe empty), the depth of the from-cloud pipes; a frame is late when a run is > 20 ms
   behind or the pipe was empty while the call was up. A cProfile of the reactor thread
   at 32 calls says where the time goes.
2. audio latency: a tone burst written into a phone's PCM vs the RTP packet carrying it
   on the wire (kernel timestamps of an AF_PACKET socket on lo, root only), and the echoed
   packet coming back vs the frame call control writes to the PCM. Latency = time the
   frame leaves the box - time the frame carrying the same audio entered it, corrected
   for where the burst onset sits in each frame.
3. setup latency: the frame carrying the last dialled digit -> the INVITE on the wire;
   the INVITE arriving from the edge -> ring voltage on the SLIC twin.
4. sipp load: a sipp UAC through Kamailio to auto-answering phones, steady rate,
   successful/failed counts.
Usage: python -m bench.bench_calls [--quick]. Assumes kamailio and sipp are installed
and (for the wire timestamps) root; the machine is shared, so read ratios, not digits.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import json
import logging
import os
import platform
import pstats
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from cext import g711
from drivers.bus import tdm
from drivers.sim.board import SimBoard
from drivers.sim.phone import dtmf_audio
from firmware.callctl.controller import CallControl
from firmware.core.config import Config, default_document, validate
from firmware.sip import pjobjects
from firmware.sip.pjbridge import PjBridge
from foundation.errors import ChipFailed
from foundation.reactor import NEVER, MonotonicClock, Reactor
from lab.kamailio import Kamailio
from lab.ports import free_port
from lab.sipp import SippRun

log = logging.getLogger("bench.calls")
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "calls.json"
SCENARIOS = HERE / "sipp"
CLOUD_NUMBER = "5550100"  # Kamailio relays it to the sipp echo UAS
EXT_BASE = 300  # fxsN has extension 300+N-1
FRAME_S = 0.02
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- the box's config
def bench_doc(kam: Kamailio, n_lines: int) -> dict:
    """The stock document, validated, then n_lines FXS lines (see the module docstring)."""
    doc = default_document()
    doc["sip"].update(edges=[kam.uri], domain=kam.domain, bind_address="127.0.0.1",
                      local_port=0, registration="trunk", username="branch",
                      password="secret")
    doc["board"]["headset"]["enabled"] = False
    doc = validate(doc)
    chip0, line0 = doc["board"]["chips"]["slic0"], doc["lines"]["fxs1"]
    chips, lines = {}, {}
    for i in range(n_lines):
        chips[f"slic{i}"] = dict(chip0, spi_bus=i // 2, spi_cs=i % 2,
                                 reset_gpio=100 + 2 * i, int_gpio=101 + 2 * i)
        # four 8-bit slots per PCM bus (drivers/bus/tdm.py): one simulated bus per four lines
        lines[f"fxs{i + 1}"] = dict(copy.deepcopy(line0), chip=f"slic{i}",
                                    alsa_device=f"bench{i // tdm.SLOTS}", timeslot=i % tdm.SLOTS,
                                    extension=str(EXT_BASE + i), name=f"bench {i + 1}")
    doc["board"]["chips"], doc["lines"] = chips, lines
    doc["board"]["lifeline"]["enabled"] = False  # no FXO line on the bench board
    return doc


# ---------------------------------------------------------------- instrumentation
class TickStats:
    """Wraps call control's media timer: lateness, duration and thread CPU per tick."""

    def __init__(self, reactor: Reactor, timer) -> None:
        self.reactor, self.timer, self.inner = reactor, timer, timer.callback
        timer.callback = self._tick
        self.reset()

    def reset(self) -> None:
        self.late: list[float] = []
        self.cpu = 0.0
        self.starts: list[float] = []
        self.max_from_cloud = 0

    def _tick(self, eventtime: float) -> float:
        self.late.append(eventtime - self.timer.waketime)
        self.starts.append(eventtime)
        c0 = time.thread_time()
        nxt = self.inner(eventtime)
        self.cpu += time.thread_time() - c0
        return nxt


class PhoneStats:
    """Thread CPU spent in the simulated phones' 20 ms ticks (hardware, not box)."""

    def __init__(self, phones) -> None:
        self.cpu = 0.0
        for phone in phones:
            timer = phone._audio_timer
            timer.callback = self._wrap(timer.callback)

    def _wrap(self, inner):
        def tick(eventtime: float) -> float:
            c0 = time.thread_time()
            nxt = inner(eventtime)
            self.cpu += time.thread_time() - c0
            return nxt
        return tick


class EmptyCounter:
    """Counts onFrameRequested finding the pipe empty (PipePort, pjsua2's clock thread)."""

    def __init__(self) -> None:
        self.asked = 0
        self.empty = 0
        inner = pjobjects.PipePort._next_frame

        def counted(port) -> bytes:
            self.asked += 1
            if not port.pipe.to_cloud:
                self.empty += 1
            return inner(port)

        pjobjects.PipePort._next_frame = counted

    def reset(self) -> None:
        self.asked = self.empty = 0


def proc_cpu() -> float:
    """CPU seconds (user + system) of this whole process, all threads."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu() -> dict[int, float]:
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
        except OSError:
            continue
    return out


def thread_names() -> dict[int, str]:
    names = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            names[int(tid)] = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
        except OSError:
            continue
    return names


def pct(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


# ---------------------------------------------------------------- wire sniffer
class Sniffer:
    """UDP packets on lo with kernel timestamps (AF_PACKET; needs root). Outgoing copies
    only, so each packet is seen once, at the moment it was sent."""

    def __init__(self) -> None:
        self.packets: list[tuple[float, int, int, bytes]] = []  # (ts, sport, dport, payload)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.sock.bind(("lo", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._run, name="sniffer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            try:
                data, anc, _flags, addr = self.sock.recvmsg(2048, 64)
            except TimeoutError:
                continue
            if (addr[2] != socket.PACKET_OUTGOING or len(data) < 42 or data[12:14] != b"\x08\x00"
                    or data[23] != 17):
                continue
            ts = next((struct.unpack("qq", d[:16]) for _l, _t, d in anc), None)
            if ts is None:
                continue
            ihl = (data[14] & 0x0F) * 4
            sport, dport = struct.unpack("!HH", data[14 + ihl:18 + ihl])
            self.packets.append((ts[0] + ts[1] * 1e-9, sport, dport, data[22 + ihl:]))

    def stop(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


def can_sniff() -> bool:
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)).close()
        return True
    except (PermissionError, OSError):
        return False


# ---------------------------------------------------------------- the box
class Box:
    """SimBoard + CallControl + PjBridge in this process, on a MonotonicClock reactor."""

    def __init__(self, kam: Kamailio, n_lines: int) -> None:
        self.doc = bench_doc(kam, n_lines)
        self.reactor = Reactor(MonotonicClock())
        self.board = SimBoard(self.reactor, self.doc)
        for driver in self.board.drivers.values():
            try:
                driver.start()
            except ChipFailed as exc:
                raise SystemExit(f"bench: {exc}") from None
        if self.board.lifeline is not None:
            self.board.lifeline.energise()  # the phone on fxs1 to its SLIC, as the gateway does
        self.bridge = PjBridge(self.reactor, self.doc)
        self.cc = CallControl(self.reactor, Config.from_valid(self.doc), self.board, self.bridge)
        self.names = list(self.doc["lines"])
        self.auto_answer = False
        self.rings: list[tuple[str, float]] = []  # (line, wall time the ring voltage came on)
        for name in self.names:
            slic = self.board.phones[name].slic
            slic.add_ring_listener(self._ringer(name))
        self.cc.subscribe(self._on_state)

    def start(self) -> None:
        self.cc.start()
        self.ticks = TickStats(self.reactor, self.cc.media_clock.timer)
        self.phone_cpu = PhoneStats(self.board.phones.values())
        self.empties = EmptyCounter()
        self.wait(lambda: self.bridge.status()["accounts"] and all(
            a.get("registered") for a in self.bridge.status()["accounts"].values()), 10,
            "registration")

    def stop(self) -> None:
        self.cc.stop()
        self.board.close()

    def run(self, seconds: float) -> None:
        self.reactor.run_for(seconds)

    def wait(self, pred, timeout: float, what: str) -> float:
        t0 = time.monotonic()
        while not pred():
            if time.monotonic() - t0 > timeout:
                raise SystemExit(f"bench: {what} not reached within {timeout} s")
            self.run(0.02)
        return time.monotonic() - t0

    def state(self, name: str) -> str:
        return self.cc.ports[name].state.name

    def phone(self, name: str):
        return self.board.phones[name]

    # auto-answering phones for inbound calls
    def _ringer(self, name: str):
        def on_ring(on: bool, t: float) -> None:
            if not on:
                return
            self.rings.append((name, time.time() - (self.reactor.now() - t)))
            phone = self.board.phones[name]
            if self.auto_answer and not phone.is_off_hook:
                self.reactor.register_timer(lambda _e: self._lift(phone), self.reactor.now() + 0.1)
        return on_ring

    def _lift(self, phone) -> float:
        if not phone.is_off_hook:
            phone.off_hook()
        return NEVER

    def _on_state(self, port: str, old: str, new: str) -> None:
        phone = self.board.phones.get(port)
        if self.auto_answer and old == "CONNECTED" and phone is not None and phone.is_off_hook:
            phone.on_hook()

    # calls out to the echo UAS
    def call_out(self, names: list[str], timeout: float = 15.0) -> None:
        noise = np.random.default_rng(1).normal(0, 300, 8000 * 120).astype(np.int16)
        for name in names:
            self.phone(name).off_hook()
        self.run(0.4)
        for name in names:
            self.phone(name).dial_dtmf(CLOUD_NUMBER)
        self.wait(lambda: all(self.state(n) == "CONNECTED" for n in names), timeout,
                  f"{len(names)} calls connected")
        for name in names:
            self.phone(name).speak(noise)  # low-level speech stand-in for the canceller

    def hang_up(self, names: list[str]) -> None:
        for name in names:
            self.phone(name).on_hook()
        self.wait(lambda: all(self.state(n) == "IDLE" for n in names)
                  and not self.bridge.status()["calls"], 15, "calls ended")


# ---------------------------------------------------------------- 1. capacity
def capacity_level(box: Box, n: int, window: float, profile: bool = False) -> dict:
    names = box.names[:n]
    box.call_out(names)
    box.run(1.0)  # settle: jitter buffers, canceller start-up
    box.ticks.reset()
    box.empties.reset()
    ph0, c0, th0, w0 = box.phone_cpu.cpu, proc_cpu(), thread_cpu(), time.monotonic()
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    box.run(window)
    if prof:
        prof.disable()
    wall = time.monotonic() - w0
    cpu, th1, phones = proc_cpu() - c0, thread_cpu(), box.phone_cpu.cpu - ph0
    depth = [len(p.from_cloud) for p in list(box.bridge.shared.pipes.values())]
    late_ms = np.array(box.ticks.late) * 1000
    res = {
        "calls": n, "window_s": round(wall, 2),
        "cpu_pct": round(100 * cpu / wall, 2),
        "phones_sim_pct": round(100 * phones / wall, 2),
        "box_pct": round(100 * (cpu - phones) / wall, 2),
        "media_tick_pct": round(100 * box.ticks.cpu / wall, 2),
        "threads_pct": _threads(th0, th1, wall, box),
        "tick_rate_hz": round(len(box.ticks.starts) / wall, 2),
        "tick_late_ms": {"p50": round(pct(late_ms, 50), 2), "p99": round(pct(late_ms, 99), 2),
                         "max": round(float(late_ms.max()), 2)},
        "late_ticks": int((late_ms > 20).sum()),
        "frames_asked": box.empties.asked, "pipe_empty": box.empties.empty,
        "from_cloud_depth_max": max(depth) if depth else 0,
        "clock_locked": box.cc.media_clock.locked,
        "clock_lead_ms": round(1000 * box.cc.media_clock.lead, 1),
        "clock_busy_ms": round(1000 * box.cc.media_clock.busy, 2),
    }
    if prof:
        res["profile"] = _profile_text(prof)
    box.hang_up(names)
    return res


def _threads(th0: dict, th1: dict, wall: float, box: Box) -> dict:
    names = thread_names()
    main = threading.main_thread().native_id
    sip = box.bridge._thread.native_id if box.bridge._thread else None
    out: dict[str, float] = {}
    for tid, t in th1.items():
        label = ("reactor" if tid == main else "sip" if tid == sip else names.get(tid, "?"))
        out[label] = round(out.get(label, 0.0) + 100 * (t - th0.get(tid, 0.0)) / wall, 2)
    return {k: v for k, v in out.items() if v > 0}


def _profile_text(prof: cProfile.Profile, n: int = 14) -> list[str]:
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(n)
    lines = [ln.rstrip() for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
    return lines[start:start + n + 1]


def capacity(box: Box, levels: list[int], repeats: int, window: float) -> dict:
    runs: dict[int, list[dict]] = {n: [] for n in levels}
    idle = []
    for rep in range(repeats):
        c0, w0 = proc_cpu(), time.monotonic()
        box.run(window / 2)
        idle.append(round(100 * (proc_cpu() - c0) / (time.monotonic() - w0), 2))
        for n in levels:
            res = capacity_level(box, n, window, profile=(rep == 0 and n == 32))
            log.info("capacity %d calls: %s", n, {k: v for k, v in res.items()
                                                  if k not in ("profile", "threads_pct")})
            runs[n].append(res)
    return {"idle_cpu_pct": idle, "levels": {str(n): runs[n] for n in levels}}


# ---------------------------------------------------------------- 2. audio latency
def burst(n_ms: float = 40, hz: float = 1000.0, amp: float = 12000.0) -> np.ndarray:
    t = np.arange(int(8 * n_ms)) / 8000
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def onset(samples: np.ndarray, threshold: float = 3000.0) -> int | None:
    hits = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    return int(hits[0]) if len(hits) else None


def audio_latency(box: Box, count: int) -> dict:
    """Bursts on an otherwise silent line, through the echo UAS and back (module doc)."""
    name = box.names[0]
    phone = box.phone(name)
    box.call_out([name])
    phone._tx = phone._tx[:0]  # no noise here: bursts on silence
    box.run(1.5)
    dev, gw = phone.pcm, box.board.pcm[name]
    into, out_of = [], []  # (wall time, onset index) of frames entering / leaving the box
    dev.write, gw.write = _tapped(dev.write, into), _tapped(gw.write, out_of)
    sniffer = Sniffer()
    try:
        for _ in range(count):
            phone.speak(np.concatenate([burst(), np.zeros(8 * 460, dtype=np.int16)]))
            box.run(0.5)
        box.run(0.5)
    finally:
        sniffer.stop()
        del dev.write, gw.write  # back to the class methods
    box.hang_up([name])
    return _latencies(_starts(into), _starts(out_of), sniffer.packets)


def _tapped(write, seen: list):
    def tap(frame) -> None:
        seen.append((time.time(), onset(np.asarray(frame))))
        write(frame)
    return tap


def _starts(frames: list[tuple[float, int | None]]) -> list[tuple[float, int]]:
    """The first frame of every burst: it has an onset, the one before it had none."""
    out, before = [], None
    for t, k in frames:
        if k is not None and before is None:
            out.append((t, k))
        before = k
    return out


def _latencies(into, out_of, packets) -> dict:
    rtp = [(ts, sp, dp, pl) for ts, sp, dp, pl in packets
           if len(pl) == 172 and pl[0] == 0x80 and pl[1] & 0x7F == 0]
    ports = [dp for _ts, _sp, dp, _pl in rtp]
    if not ports:
        return {"analog_in_to_rtp_out_ms": {"n": 0}, "rtp_in_to_analog_out_ms": {"n": 0}}
    # Both directions share sipp's media port: to it = from the box, from it = the echo.
    echo_port = max(set(ports), key=ports.count)
    to_far = _starts([(ts, _on(pl)) for ts, _sp, dp, pl in rtp if dp == echo_port])
    from_far = _starts([(ts, _on(pl)) for ts, sp, _dp, pl in rtp if sp == echo_port])
    up = _pair(into, to_far)
    down = _pair(from_far, out_of)
    return {"analog_in_to_rtp_out_ms": _summary(up), "rtp_in_to_analog_out_ms": _summary(down),
            "bursts": len(into)}


def _pair(entered, left) -> list[float]:
    """ms from each burst entering the box to the first burst leaving it after that."""
    out = []
    for t_in, k_in in entered:
        hit = next(((t, k) for t, k in left if t > t_in - 0.001), None)
        if hit is not None and hit[0] - t_in < 0.4:
            out.append(1000 * (hit[0] - t_in + (hit[1] - k_in) / 8000))
    return out


def _on(payload: bytes) -> int | None:
    return onset(g711.ulaw_decode(np.frombuffer(payload[12:], dtype=np.uint8)))


def _summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    v = np.array(values)
    return {"n": len(v), "min": round(float(v.min()), 1), "median": round(float(np.median(v)), 1),
            "p99": round(pct(v, 99), 1), "max": round(float(v.max()), 1)}


# ---------------------------------------------------------------- 3. setup latency
def setup_out(box: Box, count: int) -> dict:
    """The frame carrying the last digit's tone onset -> the INVITE leaving the box."""
    port = box.bridge.status()["ports"]["udp"]
    prefix = len(dtmf_audio(CLOUD_NUMBER[:-1])) // 160  # frames before the last digit
    values = []
    for i in range(count):
        name = box.names[i % len(box.names)]
        phone = box.phone(name)
        phone.off_hook()
        box.run(0.4)
        writes: list[tuple[float, int | None]] = []
        phone.pcm.write = _tapped(phone.pcm.write, writes)
        sniffer = Sniffer()
        try:
            phone.dial_dtmf(CLOUD_NUMBER)
            box.wait(lambda n=name: box.state(n) in ("CALLING", "CONNECTED"), 10, "INVITE sent")
            box.run(0.1)
        finally:
            sniffer.stop()
            del phone.pcm.write
        invite = next((ts for ts, sp, _dp, pl in sniffer.packets
                       if sp == port and pl.startswith(b"INVITE ")), None)
        if invite is not None and len(writes) > prefix:
            values.append(1000 * (invite - writes[prefix][0]))
        box.wait(lambda n=name: box.state(n) == "CONNECTED", 10, "call answered")
        box.hang_up([name])
    return _summary(values)


def _inject(path: Path, names: list[str]) -> Path:
    path.write_text("SEQUENTIAL\n" + "".join(f"{EXT_BASE + i};\n" for i in range(len(names))))
    return path


def setup_in(box: Box, kam: Kamailio, peers: Peers, count: int) -> dict:
    """The INVITE arriving from the edge -> ring voltage on the line's SLIC."""
    port = box.bridge.status()["ports"]["udp"]
    box.auto_answer = True
    box.rings.clear()
    csv = _inject(peers.workdir / "ring.csv", box.names[:count])
    sniffer = Sniffer()
    try:
        run = peers.sipp(SCENARIOS / "uac_ext.xml", kam.address, calls=count, rate=1.0,
                         hold_ms=500, timeout=count + 15, extra=["-inf", str(csv)])
        _wait_sipp(box, run, count + 20)
        box.run(0.5)
    finally:
        sniffer.stop()
        box.auto_answer = False
    invites = [ts for ts, _sp, dp, pl in sniffer.packets if dp == port and pl.startswith(b"INVITE ")]
    rings = [t for _n, t in box.rings]
    values = []
    for ts in invites:
        ring = next((t for t in rings if t >= ts), None)
        if ring is not None and ring - ts < 1.0:
            values.append(1000 * (ring - ts))
    return _summary(values)


def _wait_sipp(box: Box, run: SippRun, timeout: float):
    t0 = time.monotonic()
    while run.proc.poll() is None and time.monotonic() - t0 < timeout:
        box.run(0.05)
    return run.wait(timeout=5)


# ---------------------------------------------------------------- 4. sipp load
def load(box: Box, kam: Kamailio, peers: Peers, rate: float, seconds: float,
         hold_ms: int) -> dict:
    calls = int(rate * seconds)
    box.auto_answer = True
    csv = _inject(peers.workdir / "load.csv", box.names)
    peak = 0
    c0, w0 = proc_cpu(), time.monotonic()
    run = peers.sipp(SCENARIOS / "uac_ext.xml", kam.address, calls=calls, rate=rate,
                     hold_ms=hold_ms, timeout=seconds + 20, extra=["-inf", str(csv)])
    try:
        while run.proc.poll() is None and time.monotonic() - w0 < seconds + 25:
            box.run(0.1)
            peak = max(peak, len(box.bridge.status()["calls"]))
        res = run.wait(timeout=5)
    finally:
        box.auto_answer = False
    wall = time.monotonic() - w0
    box.run(1.0)
    return {"rate_cps": rate, "calls": calls, "hold_ms": hold_ms,
            "successful": res.successful, "failed": res.failed,
            "sipp_exit": res.returncode, "peak_concurrent": peak,
            "box_cpu_pct": round(100 * (proc_cpu() - c0) / wall, 2)}


# ---------------------------------------------------------------- peers and main
class Peers:
    """Kamailio and the sipp echo UAS, started on the CPUs the box does not use."""

    def __init__(self, box_cpu: int, others: set[int]) -> None:
        self.box_cpu, self.others = box_cpu, others
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-calls-"))
        self.runs: list[SippRun] = []
        self.kam: Kamailio | None = None

    def start(self, n_lines: int) -> Kamailio:
        uas_port, media = free_port("udp"), free_port("udp")
        aliases = {CLOUD_NUMBER: f"sip:uas@127.0.0.1:{uas_port}"}
        aliases.update({str(EXT_BASE + i): "branch" for i in range(n_lines)})
        self.kam = Kamailio(self.workdir / "kamailio", users={"branch": "secret"},
                            aliases=aliases)
        with self.affinity():
            self.kam.start()
        self.sipp(SCENARIOS / "uas_echo.xml", None, calls=100000, port=uas_port,
                  timeout=900, recv_timeout_ms=300000, keys={"rtpport": str(media)},
                  extra=["-mp", str(media), "-rtp_echo"])
        return self.kam

    def sipp(self, scenario, target, **opts) -> SippRun:
        run = SippRun(scenario, target, workdir=self.workdir / f"sipp{len(self.runs)}", **opts)
        with self.affinity():
            run.start()
        self.runs.append(run)
        return run

    def affinity(self):
        peers = self

        class _Ctx:
            def __enter__(self):
                os.sched_setaffinity(0, peers.others)

            def __exit__(self, *exc):
                os.sched_setaffinity(0, {peers.box_cpu})
        return _Ctx()

    def stop(self) -> None:
        for run in self.runs:
            run.kill()
            if run.proc is not None:
                run.proc.wait(timeout=5)
        if self.kam is not None:
            self.kam.stop()


def machine() -> dict:
    model = next((ln.split(":", 1)[1].strip() for ln in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith(("model name", "Model"))), platform.machine())
    return {"cpu": model, "arch": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "loadavg_at_start": os.getloadavg()}


def median_of(runs: list[dict], key: str):
    vals = [r[key] for r in runs]
    return {"min": min(vals), "median": float(np.median(vals)), "all": vals}


def table(result: dict) -> str:
    rows = [f"conference bridge clock {result.get('conference_rate_hz')} Hz", "",
            "| calls | box CPU % of one core (min/med) | per call % | sim phones % | "
            "media clock late p50/p99/max ms | late runs | runs/s | lead ms | "
            "pipe empty / asked |",
            "|---|---|---|---|---|---|---|---|---|"]
    for n, runs in result["capacity"]["levels"].items():
        box = median_of(runs, "box_pct")
        best = min(runs, key=lambda r: r["box_pct"])
        late = best["tick_late_ms"]
        rows.append(f"| {n} | {box['min']:.1f} / {box['median']:.1f} | "
                    f"{box['median'] / int(n):.2f} | {best['phones_sim_pct']:.1f} | "
                    f"{late['p50']:.2f} / {late['p99']:.2f} / {late['max']:.1f} | "
                    f"{max(r['late_ticks'] for r in runs)} | {best['tick_rate_hz']:.2f} | "
                    f"{max(r.get('clock_lead_ms', 0) for r in runs)} + "
                    f"{max(r.get('clock_busy_ms', 0) for r in runs)} | "
                    f"{max(r['pipe_empty'] for r in runs)} / {best['frames_asked']} |")
    lat = result.get("audio_latency", {})
    setup = result.get("setup_latency", {})
    rows += ["", "| latency (ms) | n | min | median | p99 |", "|---|---|---|---|---|"]
    for label, s in (("analog in -> RTP out", lat.get("analog_in_to_rtp_out_ms")),
                     ("RTP in -> analog out", lat.get("rtp_in_to_analog_out_ms")),
                     ("last digit -> INVITE on the wire", setup.get("digit_to_invite_ms")),
                     ("INVITE in -> ring voltage", setup.get("invite_to_ring_ms"))):
        if s and s.get("n"):
            rows.append(f"| {label} | {s['n']} | {s['min']} | {s['median']} | {s['p99']} |")
        else:
            rows.append(f"| {label} | 0 | - | - | - |")
    ld = result.get("load")
    if ld:
        rows += ["", f"sipp load: {ld['rate_cps']} calls/s x {ld['calls']} calls, "
                 f"{ld['hold_ms']} ms hold: {ld['successful']} successful, {ld['failed']} "
                 f"failed, peak {ld['peak_concurrent']} concurrent, box CPU {ld['box_cpu_pct']}%"]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 and 8 calls, one repeat")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    log.setLevel(logging.INFO)
    levels = [1, 8] if args.quick else [1, 8, 16, 32, 48]
    repeats, window = (1, 3.0) if args.quick else (2, 6.0)
    cpus = sorted(os.sched_getaffinity(0))
    box_cpu = cpus[-1]
    others = set(cpus) - {box_cpu} or {box_cpu}
    result: dict = {"machine": machine(), "box_cpu": box_cpu, "repeats": repeats,
                    "window_s": window, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    t0 = time.monotonic()
    peers = Peers(box_cpu, others)
    box = None
    try:
        kam = peers.start(max(levels))
        os.sched_setaffinity(0, {box_cpu})  # the box's threads are created after this
        box = Box(kam, max(levels))
        box.start()
        result["conference_rate_hz"] = box.bridge.clock_rate
        result["capacity"] = capacity(box, levels, repeats, window)
        if can_sniff():
            result["audio_latency"] = audio_latency(box, 10)
            result["setup_latency"] = {"digit_to_invite_ms": setup_out(box, 5),
                                       "invite_to_ring_ms": setup_in(box, kam, peers, 5)}
        else:
            result["wire_timestamps"] = "skipped: AF_PACKET on lo needs root"
        result["load"] = load(box, kam, peers, 10.0, 8.0 if args.quick else 30.0, 2000)
    finally:
        if box is not None:
            box.stop()
        peers.stop()
    result["runtime_s"] = round(time.monotonic() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
