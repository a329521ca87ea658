"""Fake-time survivability figures for bench/bench_survive.py: the full stack on the twins
(lab.rig's box with CDRs and SimCloud's WAN model, pinged with the shipped sip.options_*).

Scenarios, each per seed (a seed moves the cut's phase against the OPTIONS ping and the
media clock and draws the traffic, so min/median/max mean something):
  fallback_latency   WAN loss under a PSTN caller: hold tone, SURVIVABLE, cloud leg given
                     up, announcement, headset ringing (blip window as shipped, and 0 s)
  blip               blips of 2/5/9 s under a PSTN caller and a branch phone: the same
                     agent heard again both ways; time from WAN back to audio back
  outages            N random outages under continuous traffic: callers dropped, then
                     CDRs written once and the outbox delivered exactly once to lab.records
  failback           WAN back during a call at the headset: CLOUD_PRIMARY after
                     failback_stable_s, the local call kept
  handback           a caller queued locally when the WAN returns: handed to the cloud
`run(seeds, outages)` returns a dict of those with per-seed values and stats.
"""

from __future__ import annotations

import random
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from firmware.cdr import CdrStore
from firmware.core.config import default_document
from firmware.forward import Forwarder, HttpTransport
from firmware.survive import prompts
from lab.records import RecordsReceiver
from lab.rig import Rig, dial, sine, tail, tone_level
from lab.simcloud import dominant_hz

EDGES = ("sip:edge1.sim", "sip:edge2.sim")
AGENT_HZ = 650.0
PHONE_AGENT_HZ = 750.0
CALLER_HZ = 1100.0
PHONE_HZ = 900.0
FRAME = 160
RATE = 8000


# --- the box in fake time ----------------------------------------------------------------
def sim_box(workdir: Path, changes: dict[str, Any] | None = None) -> Rig:
    """lab.rig's box with two edges, the WAN model on as shipped and a CDR store in
    `workdir` (closed by close_box)."""
    workdir.mkdir(parents=True, exist_ok=True)
    sip, surv = default_document()["sip"], default_document()["survive"]
    changes = {"sip.edges": list(EDGES), **(changes or {})}
    wan = {"edges": EDGES, "interval_s": sip["options_interval_s"],
           "misses": sip["options_misses"], "rtp_timeout_s": surv["rtp_timeout_s"]}
    return Rig(changes, cdr=CdrStore(workdir / "cdr.db"), wan=wan, settle=0.8)


def close_box(box: Rig) -> None:
    box.close()
    if box.store is not None:
        box.store.close()
    box.store.close()


def hears(samples: np.ndarray, hz: float, seconds: float = 0.5, rate: int = RATE) -> bool:
    heard = tail(samples, seconds, rate)
    return len(heard) > 0 and abs(dominant_hz(heard, rate=rate) - hz) < 20


def tone_share(x: np.ndarray, hz: float, rate: int = RATE) -> float:
    """How much of x's power is the `hz` component (0..1)."""
    power = float(np.mean(np.asarray(x, dtype=np.float64) ** 2)) if len(x) else 0.0
    if power < 1e4:  # below about -50 dBm0: silence
        return 0.0
    return min(1.0, tone_level(x, hz, rate) ** 2 / power)


def pstn_call(box: Rig, ani: str, answer_after: float = 1.0) -> Any:
    """A PSTN caller on fxo1 talking to a cloud agent (AGENT_HZ); the SimCall."""
    box.cloud.agent("PSTN 1", answer_after=answer_after, tone_hz=AGENT_HZ)
    box.co().ring(callerid={"number": ani, "name": "BENCH CALLER", "datetime": "11221030",
                            "reason": None})
    for _ in range(400):
        box.run(0.1)
        if box.cloud.invites and box.cloud.invites[-1].state == "answered" \
                and box.state("fxo1") == "CONNECTED":
            return box.cloud.invites[-1]
    raise RuntimeError("the PSTN caller did not reach the cloud agent")


def phone_call(box: Rig, number: str = "5551234", phone: str = "fxs1") -> Any:
    """A branch phone talking to a cloud agent (PHONE_AGENT_HZ); the SimCall."""
    box.cloud.agent(number, answer_after=0.5, tone_hz=PHONE_AGENT_HZ)
    dial(box, number, phone)
    box.run(1.0)
    call = box.cloud.invites[-1]
    if call.to != number or box.state(phone) != "CONNECTED":
        raise RuntimeError(f"{phone} did not reach the cloud agent {number}")
    return call


# --- 1. WAN loss -> the caller hears the local fallback ------------------------------------
def fallback_latency(seed: int, workdir: Path, blip_window_s: float | None = None) -> dict:
    rnd = random.Random(seed)
    changes: dict[str, Any] = {"calls.headset_auto_answer": True}
    if blip_window_s is not None:
        changes["survive.blip_window_s"] = blip_window_s
    box = sim_box(workdir, changes)
    try:
        call = pstn_call(box, f"20155501{seed % 100:02d}")
        box.run(rnd.uniform(0.0, 2.0))  # the cut's phase against pings and frames
        lost = box.now()
        box.cloud.wan(False)
        first: dict[str, float] = {}
        seen = len(box.co().heard)  # < 60 s heard so far: the CO keeps 60 s
        while box.now() - lost < 30.0 and "headset_connected" not in first:
            box.run(0.1)
            heard = box.co().heard
            fresh, seen = heard[seen:], len(heard)
            _first_frames(first, fresh, box.now() - len(fresh) / RATE - lost)
            _first_state(first, box, lost, call)
        ok = box.state("fxo1") == "CONNECTED" and box.state("headset") == "CONNECTED"
        box.co().play(sine(CALLER_HZ, 1.0))
        box.run(1.0)
        hs = box.board.headset
        ok = ok and hears(hs.heard, CALLER_HZ, 0.5, hs.rate)
        return {**{k: round(v, 3) for k, v in first.items()}, "caller_kept": ok}
    finally:
        close_box(box)


def _first_frames(first: dict[str, float], fresh: np.ndarray, t0: float) -> None:
    """Stamp the first 20 ms frame of the hold tone and of the announcement."""
    for i in range(0, len(fresh) - FRAME + 1, FRAME):
        frame = fresh[i:i + FRAME]
        t = t0 + i / RATE
        if "hold_tone" not in first and tone_share(frame, prompts.HOLD_HZ) > 0.6:
            first["hold_tone"] = t
        if "announcement" not in first and \
                tone_share(frame, prompts.ANNOUNCE_HZ["tones"][0]) > 0.6:
            first["announcement"] = t


def _first_state(first: dict[str, float], box: Rig, lost: float, call) -> None:
    now = box.now() - lost
    surv = box.survive()["state"]
    if "survivable" not in first and surv == "survivable":
        first["survivable"] = now
    if "cloud_leg_lost" not in first and call.state == "ended":
        first["cloud_leg_lost"] = now
    for state, key in (("RINGING", "headset_ringing"), ("CONNECTED", "headset_connected")):
        t = box.entered("headset", state, lost)
        if key not in first and t is not None:
            first[key] = t - lost


# --- 2. blips: the same agent afterwards -------------------------------------------------
def blip(seed: int, seconds: float, workdir: Path) -> dict:
    """A PSTN caller and a branch phone in cloud calls; the WAN cut for `seconds`."""
    rnd = random.Random(seed * 1000 + int(seconds * 10))
    box = sim_box(workdir)
    try:
        pstn = pstn_call(box, "2015550123")
        phone = phone_call(box)
        box.run(rnd.uniform(0.0, 2.0))
        box.cloud.wan(False)
        box.run(seconds)
        back = box.now()
        box.cloud.wan(True)
        box.co().play(sine(CALLER_HZ, 4.0))
        box.phone().speak(sine(PHONE_HZ, 4.0))
        resumed = {"pstn": None, "phone": None}
        while box.now() - back < 3.0 and None in resumed.values():
            box.run(0.05)
            if resumed["pstn"] is None and hears(box.co().heard, AGENT_HZ, 0.2):
                resumed["pstn"] = box.now() - back
            if resumed["phone"] is None and hears(box.phone().heard, PHONE_AGENT_HZ, 0.2):
                resumed["phone"] = box.now() - back
        box.run(1.0)
        same = {
            "pstn": (pstn.state == "answered" and box.cc.ports["fxo1"].call == pstn.handle
                     and abs(pstn.dominant_hz(last_s=0.5) - CALLER_HZ) < 20
                     and resumed["pstn"] is not None),
            "phone": (phone.state == "answered" and phone.handle in box.cc.ports["fxs1"].calls()
                      and abs(phone.dominant_hz(last_s=0.5) - PHONE_HZ) < 20
                      and resumed["phone"] is not None),
        }
        counters = box.survive()["counters"]
        return {"calls": 2, "same_agent": sum(same.values()), "detail": same,
                "audio_back_s": [v for v in resumed.values() if v is not None],
                "rescued": counters.get("rescued", 0)}
    finally:
        close_box(box)


# --- 3. many random outages under continuous traffic, then the records -------------------
class Traffic:
    """PSTN callers back to back on fxo1 and a branch phone on fxs1, stepped by `tick`."""

    def __init__(self, box: Rig, rnd: random.Random) -> None:
        self.box, self.rnd = box, rnd
        self.pstn: dict[str, Any] = {"phase": "idle", "until": 0.0}
        self.ph: dict[str, Any] = {"phase": "idle", "until": 0.0}
        self.calls: list[dict[str, Any]] = []
        self.lost: list[dict[str, Any]] = []
        self.phone_calls = 0
        self.phone_lost: list[dict[str, Any]] = []
        self.phone_reordered = 0
        self.wan_down_at: float | None = None
        self.closing = False
        self.box.cloud.agent("PSTN 1", answer_after=1.0, tone_hz=AGENT_HZ)
        self.box.cloud.agent("5551234", answer_after=0.5, tone_hz=PHONE_AGENT_HZ)

    def tick(self) -> None:
        self._pstn_tick()
        self._phone_tick()

    def idle(self) -> bool:
        return self.pstn["phase"] == "idle" and self.ph["phase"] == "idle"

    # ---- PSTN callers: ring, get answered (cloud or local), talk, hang up ----
    def _pstn_tick(self) -> None:
        box, p, now = self.box, self.pstn, self.box.now()
        co = box.co()
        if p["phase"] == "idle" and now >= p["until"] and not self.closing:
            if co.state != "idle" or box.state("fxo1") != "IDLE":
                return
            ani = f"2015{len(self.calls):06d}"
            co.ring(callerid={"number": ani, "name": "CUSTOMER", "datetime": "11221030",
                              "reason": None})
            self.calls.append({"ani": ani, "rang": now, "answered": None, "legs0": self._legs()})
            p.update(phase="ringing", until=now + 45.0)
        elif p["phase"] == "ringing":
            if co.answered:
                self.calls[-1]["answered"] = now
                p.update(phase="talking", until=now + self.rnd.uniform(20.0, 90.0))
            elif now >= p["until"]:
                self._lose("never answered")
        elif p["phase"] == "talking":
            if not co.answered or box.state("fxo1") != "CONNECTED":
                self._lose(f"line dropped (fxo1 {box.state('fxo1')})")
            elif now >= p["until"]:
                co.disconnect()
                self.calls[-1]["legs1"] = self._legs()
                p.update(phase="idle", until=now + self.rnd.uniform(1.0, 4.0))

    def _legs(self) -> int:
        c = self.box.survive()["counters"]
        return c.get("rescued", 0) + c.get("local_inbound", 0)

    def _lose(self, why: str) -> None:
        call = self.calls[-1]
        self.lost.append({**call, "why": why, "t": self.box.now()})
        call["legs1"] = self._legs()
        if self.box.co().answered:
            self.box.co().disconnect()
        else:
            self.box.co().stop_ring()
        self.pstn.update(phase="idle", until=self.box.now() + 6.0)

    # ---- a branch phone: the cloud agent while the cloud is up, else an extension ----
    def _phone_tick(self) -> None:
        box, s, now = self.box, self.ph, self.box.now()
        ph = box.phone()
        if s["phase"] == "idle" and now >= s["until"] and not self.closing:
            if box.state("fxs1") != "IDLE" or box.state("fxs2") != "IDLE":
                return
            cloud = box.survive()["state"] != "survivable" and box.cloud.wan_up
            s.update(phase="dialing", cloud=cloud, until=now + 20.0, started=now)
            ph.off_hook()
            self._after_dialtone = ph.dial_dtmf("5551234" if cloud else "202")
            self.phone_calls += 1
        elif s["phase"] == "dialing":
            if not s["cloud"] and box.phone("fxs2").is_ringing:
                box.phone("fxs2").off_hook()
            if box.state("fxs1") == "CONNECTED":
                s.update(phase="talking", until=now + self.rnd.uniform(10.0, 40.0))
            elif now >= s["until"] or box.state("fxs1") in ("REORDER", "BUSY"):
                self._phone_done()
        elif s["phase"] == "talking":
            if box.state("fxs1") != "CONNECTED":
                self._phone_dropped()
            elif now >= s["until"]:
                self._phone_done()

    def _phone_dropped(self) -> None:
        """A phone's call to the cloud ended under it: fine after a long outage (reorder,
        dial again), a loss in a blip shorter than the window."""
        down = self.wan_down_at
        window = self.box.doc["survive"]["blip_window_s"]
        if down is not None and self.box.now() - down >= window - 0.5 or not self.ph["cloud"]:
            self.phone_reordered += 1
        else:
            self.phone_lost.append({"t": self.box.now(), "state": self.box.state("fxs1")})
        self._phone_done()

    def _phone_done(self) -> None:
        for name in ("fxs1", "fxs2"):
            if self.box.phone(name).is_off_hook:
                self.box.phone(name).on_hook()
        self.ph.update(phase="idle", until=self.box.now() + self.rnd.uniform(2.0, 8.0))


def outages(seed: int, count: int, workdir: Path) -> dict:
    rnd = random.Random(seed)
    box = sim_box(workdir, {"calls.headset_auto_answer": True})
    traffic = Traffic(box, rnd)
    window = box.doc["survive"]["blip_window_s"]
    lengths = [rnd.uniform(0.5, window - 1.0) if rnd.random() < 0.4
               else rnd.uniform(window + 1.0, 90.0) for _ in range(count)]
    with RecordsReceiver() as rx:
        fwd_store = CdrStore(box.store.path)
        fwd = Forwarder(fwd_store, HttpTransport(rx.url, timeout=2.0, box="bench"), batch=20)
        deliveries = {"attempts": 0, "acks_lost": 0}
        try:
            _run_outages(box, traffic, rnd, lengths, fwd, rx, deliveries)
            box.run(5.0)
            _drain(fwd, rx, deliveries)
            rec = _records(box, traffic, rx)
        finally:
            fwd_store.close()
    surv = box.survive()
    close_box(box)
    return {"outages": count, "outage_s": _stats(lengths),
            "blips": sum(1 for x in lengths if x < window), "fake_time_s": round(box.now()),
            "pstn_calls": len(traffic.calls), "pstn_lost": len(traffic.lost),
            "lost_detail": traffic.lost[:5], "phone_calls": traffic.phone_calls,
            "phone_lost_in_blips": len(traffic.phone_lost),
            "phone_reordered_after_long_loss": traffic.phone_reordered,
            "transitions": surv["transitions"], "counters": surv["counters"],
            "records": rec, "deliveries": deliveries}


def _run_outages(box, traffic, rnd, lengths, fwd, rx, deliveries) -> None:
    last_delivery = box.now()
    for length in lengths:
        for phase, seconds in (("up", rnd.uniform(10.0, 120.0)), ("down", length)):
            box.cloud.wan(phase == "up")
            traffic.wan_down_at = None if phase == "up" else box.now()
            end = box.now() + seconds
            while box.now() < end:
                box.run(min(0.5, end - box.now()))
                traffic.tick()
                if phase == "up" and box.now() - last_delivery >= 10.0:
                    last_delivery = box.now()
                    _deliver(fwd, rx, rnd, deliveries)
    box.cloud.wan(True)
    traffic.wan_down_at = None
    traffic.closing = True  # no new calls: the last ones finish; failback passes
    end = box.now() + 150.0
    while box.now() < end or not traffic.idle():
        box.run(0.5)
        traffic.tick()


def _deliver(fwd: Forwarder, rx: RecordsReceiver, rnd: random.Random, deliveries: dict) -> None:
    """One pass of the forwarder while the WAN is up; sometimes the cloud stores a batch
    but its answer is lost (the forwarder must redeliver; the cloud dedups by UUID)."""
    lose = rnd.random() < 0.2
    if lose:
        rx.set_mode("lose_ack")
        deliveries["acks_lost"] += 1
    deliveries["attempts"] += 1
    fwd.deliver_pending()
    if lose:
        rx.set_mode("ok")


def _drain(fwd: Forwarder, rx: RecordsReceiver, deliveries: dict) -> None:
    rx.set_mode("ok")
    for _ in range(50):
        deliveries["attempts"] += 1
        fwd.deliver_pending()
        if fwd.store.depth() == 0:
            return


def _records(box: Rig, traffic: Traffic, rx: RecordsReceiver) -> dict:
    """CDRs written once, one outbox row each, every outbox row at the cloud once."""
    rows = box.store.list(limit=100000)
    cdr_uuids = [r["uuid"] for r in rows]
    with box.store.snapshot() as snap:
        outbox = snap.read("SELECT uuid, kind, seq FROM outbox ORDER BY seq")
    out_uuids = [r["uuid"] for r in outbox]
    out_cdrs = [r["uuid"] for r in outbox if r["kind"] == "cdr"]
    by_ani: dict[str, int] = {}
    for r in rows:
        by_ani[r["ani"]] = by_ani.get(r["ani"], 0) + 1
    mismatched = []
    for call in traffic.calls:
        cloud_legs = sum(1 for c in box.cloud.calls.values() if c.from_number == call["ani"])
        local_legs = call.get("legs1", traffic._legs()) - call["legs0"]
        if by_ani.get(call["ani"], 0) != cloud_legs + local_legs:
            mismatched.append((call["ani"], by_ani.get(call["ani"], 0), cloud_legs, local_legs))
    st = rx.stats()
    with rx.lock:
        got, order = set(rx.records), list(rx.order)
    return {"cdrs": len(rows), "cdr_uuids_unique": len(set(cdr_uuids)) == len(cdr_uuids),
            "cdrs_open": sum(1 for r in rows if r["ended"] is None),
            "cdr_outbox_rows": len(out_cdrs),
            "cdrs_not_queued": len(set(cdr_uuids) - set(out_cdrs)),
            "cdrs_queued_twice": len(out_cdrs) - len(set(out_cdrs)),
            "pstn_calls_with_wrong_cdr_count": len(mismatched), "mismatch": mismatched[:5],
            "outbox_rows": len(out_uuids),
            "kinds": {k: sum(1 for r in outbox if r["kind"] == k)
                      for k in sorted({r["kind"] for r in outbox})},
            "lost": len(set(out_uuids) - got),
            "stored_twice": st["received"] - st["duplicates"] - st["distinct"],
            "redelivered": st["duplicates"],
            "in_order": [u for u in order if u in set(out_uuids)] == out_uuids,
            "pending_after": box.store.depth()}


# --- 4. failback and handback ------------------------------------------------------------
def failback(seed: int, workdir: Path) -> dict:
    """A caller rescued to the headset; the WAN returns; failback waits, keeps the call."""
    rnd = random.Random(seed)
    box = sim_box(workdir, {"calls.headset_auto_answer": True})
    try:
        pstn_call(box, "2015550123")
        box.cloud.wan(False)
        box.run(14.0 + rnd.uniform(0.0, 2.0))
        local = box.state("headset") == "CONNECTED" and box.state("fxo1") == "CONNECTED"
        back = box.now()
        box.cloud.wan(True)
        primary = None
        while box.now() - back < 60.0 and primary is None:
            box.run(0.1)
            if box.survive()["state"] == "cloud_primary":
                primary = box.now() - back
        box.run(2.0)
        kept = box.state("headset") == "CONNECTED" and box.state("fxo1") == "CONNECTED"
        return {"failback_s": primary, "local_call_before": local, "local_call_kept": kept,
                "stable_s": box.doc["survive"]["failback_stable_s"]}
    finally:
        close_box(box)


def handback(seed: int, workdir: Path) -> dict:
    """A caller in the local queue when the WAN returns: handed back to the cloud."""
    rnd = random.Random(seed)
    box = sim_box(workdir, {"survive.fallback": ["queue", "callback"],
                           "survive.queue_timeout_s": 600.0})
    try:
        box.cloud.wan(False)
        box.run(3.0)
        box.cloud.agent("PSTN 1", answer_after=1.0, tone_hz=AGENT_HZ)
        box.co().ring(callerid={"number": "2015550123", "name": "Q CALLER",
                                "datetime": "11221030", "reason": None})
        box.run(10.0 + rnd.uniform(0.0, 20.0))
        queued = box.co().answered and bool(box.survive()["fallbacks"])
        back = box.now()
        box.cloud.wan(True)
        took = None
        while box.now() - back < 90.0 and took is None:
            box.run(0.1)
            inv = box.cloud.invites
            if inv and inv[-1].state == "answered" and box.cc.ports["fxo1"].call == inv[-1].handle:
                took = box.now() - back
        call = box.cloud.invites[-1] if box.cloud.invites else None
        box.run(1.0)
        fb_start = box.entered("fallback:fxo1", "ANNOUNCE", 0.0)
        waited = int(call.headers.get("X-Branchline-Waited", -1)) if call else None
        return {"handback_s": took, "queued": queued,
                "ani_kept": call is not None and call.from_number == "2015550123",
                "waited_header_s": waited,
                "waited_ok": None not in (call, fb_start, waited)
                and abs(waited - (call.started - fb_start)) <= 1.0,
                "hears_agent": hears(box.co().heard, AGENT_HZ, 0.5)}
    finally:
        close_box(box)


# --- all of it -----------------------------------------------------------------------------
def _stats(values: list[float]) -> dict[str, Any]:
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0}
    return {"n": len(values), "min": round(min(values), 3),
            "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def run(seeds: list[int], outage_count: int = 100, outage_seeds: list[int] | None = None,
        progress=None) -> dict[str, Any]:
    say = progress or (lambda _msg: None)
    out: dict[str, Any] = {"seeds": seeds}
    with tempfile.TemporaryDirectory(prefix="bench-survive-sim-") as tmp:
        n = iter(range(10**6))

        def wd() -> Path:
            return Path(tmp) / f"box{next(n)}"

        say("fake time: WAN loss -> local fallback")
        for key, window in (("fallback_default_window", None), ("fallback_window_0", 0.0)):
            per = [fallback_latency(s, wd(), window) for s in seeds]
            out[key] = {"blip_window_s": window if window is not None
                        else default_document()["survive"]["blip_window_s"],
                        "caller_kept": sum(p["caller_kept"] for p in per), "runs": len(per),
                        **{k: _stats([p.get(k) for p in per]) for k in
                           ("hold_tone", "survivable", "cloud_leg_lost", "announcement",
                            "headset_ringing", "headset_connected")}}
        say("fake time: blips of 2, 5, 9 s")
        out["blips"] = {}
        for seconds in (2.0, 5.0, 9.0):
            per = [blip(s, seconds, wd()) for s in seeds]
            calls, same = sum(p["calls"] for p in per), sum(p["same_agent"] for p in per)
            out["blips"][f"{seconds:g}s"] = {
                "calls": calls, "same_agent": same, "share_pct": round(100.0 * same / calls, 1),
                "rescued": sum(p["rescued"] for p in per),
                "audio_back_s": _stats([v for p in per for v in p["audio_back_s"]])}
        say(f"fake time: {outage_count} random outages x {len(outage_seeds or seeds)} seeds")
        out["outages"] = _outages(outage_seeds or seeds, outage_count, wd)
        say("fake time: failback and handback")
        fb = [failback(s, wd()) for s in seeds]
        out["failback"] = {"stable_s": fb[0]["stable_s"],
                           "failback_s": _stats([p["failback_s"] for p in fb]),
                           "local_calls_kept": sum(p["local_call_kept"] for p in fb),
                           "runs": len(fb)}
        hb = [handback(s, wd()) for s in seeds]
        out["handback"] = {"handback_s": _stats([p["handback_s"] for p in hb]),
                           "handed_back": sum(p["handback_s"] is not None and p["hears_agent"]
                                              and p["ani_kept"] for p in hb),
                           "runs": len(hb), "per_seed": hb}
    return out


def _outages(seeds: list[int], count: int, wd) -> dict[str, Any]:
    results = [outages(s, count, wd()) for s in seeds]  # one after another
    tot = {k: sum(r[k] for r in results) for k in
           ("outages", "pstn_calls", "pstn_lost", "phone_calls", "phone_lost_in_blips",
            "phone_reordered_after_long_loss")}
    recs = [r["records"] for r in results]
    return {**tot, "per_100_outages": round(100.0 * tot["pstn_lost"] / tot["outages"], 2),
            "phone_lost_per_100": round(100.0 * tot["phone_lost_in_blips"] / tot["outages"], 2),
            "records": {k: sum(r[k] for r in recs) for k in
                        ("cdrs", "cdr_outbox_rows", "cdrs_not_queued", "cdrs_queued_twice",
                         "pstn_calls_with_wrong_cdr_count", "cdrs_open", "outbox_rows", "lost",
                         "stored_twice", "redelivered", "pending_after")},
            "records_in_order": all(r["in_order"] for r in recs),
            "per_seed": results}

