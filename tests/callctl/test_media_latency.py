"""PortMedia and MediaClock timing: the audio to the cloud is not held back, DTMF is cut
from it without leaking a detectable digit, digits are reported at their start, frames
keep their order, and the media clock locks onto a frame clock like pjsua2's.

Assumes the simulated PCM wire (drivers.bus.pcm.SimPcmLink) as the hardware boundary and
a FakeClock reactor; the "pjsua2 clock" here is a reactor timer that stamps and takes
from the pipe the way firmware.sip.pjobjects.PipePort does (the real one is measured in
bench/bench_calls.py).
"""

import numpy as np
import pytest

from cext import toneplans
from cext.dtmf import DtmfDetector, dtmf_samples
from drivers.bus.pcm import FRAME, SimPcmLink
from firmware.media import MediaClock, PortMedia, dtmf_like
from firmware.sip.api import BACKLOG_TAKES, MediaPipe
from foundation.reactor import FakeClock, Reactor

PERIOD = 0.02


def make_media(digits: list | None = None) -> tuple[PortMedia, SimPcmLink, MediaPipe]:
    link = SimPcmLink("fxs1")
    media = PortMedia("fxs1", link.gateway, toneplans.plan("us"),
                      on_digit=None if digits is None else digits.append)
    media.start()
    pipe = MediaPipe(depth=1000)
    media.connect(pipe)
    return media, link, pipe


def frames_of(samples: np.ndarray) -> list[np.ndarray]:
    pad = (-len(samples)) % FRAME
    samples = np.concatenate([samples, np.zeros(pad, dtype=np.int16)])
    return [samples[i:i + FRAME] for i in range(0, len(samples), FRAME)]


def run_line(media: PortMedia, link: SimPcmLink, samples: np.ndarray) -> list[int]:
    """Capture `samples` frame by frame, one tick each; the frame index of each tick."""
    sizes = []
    for frame in frames_of(samples):
        link.device.write(frame)
        media.tick()
        sizes.append(len(media.pipe.to_cloud))
    return sizes


def noise(n: int, rms: float = 300.0, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, rms, n).astype(np.int16)


def test_audio_reaches_the_pipe_in_the_tick_it_was_captured_in_order():
    media, link, pipe = make_media()
    media.cancel_echo = False  # compare samples exactly
    sent = frames_of(noise(FRAME * 20))
    for k, frame in enumerate(sent):
        link.device.write(frame)
        media.tick()
        assert len(pipe.to_cloud) == k + 1  # no frame held back
    assert all(np.array_equal(a, b) for a, b in zip(pipe.to_cloud, sent, strict=True))


def test_a_late_tick_reading_two_frames_keeps_them_in_order():
    media, link, pipe = make_media()
    media.cancel_echo = False
    sent = frames_of(noise(FRAME * 6, seed=2))
    for pair in (sent[0:2], sent[2:4], sent[4:6]):
        for frame in pair:
            link.device.write(frame)
        media.tick()
    assert all(np.array_equal(a, b) for a, b in zip(pipe.to_cloud, sent, strict=True))


@pytest.mark.parametrize("offset", [0, 37, 80, 121, 159])
def test_dtmf_is_cut_from_the_cloud_audio_and_no_digit_leaks(offset):
    digits: list[str] = []
    media, link, pipe = make_media(digits)
    keys = "159#*0D"
    audio = np.concatenate([np.zeros(offset, dtype=np.int16),
                            dtmf_samples(keys, on_ms=60, off_ms=60, level_dbm0=-4.0),
                            np.zeros(FRAME * 10, dtype=np.int16)])
    run_line(media, link, audio)
    assert "".join(digits) == keys
    to_cloud = np.concatenate(list(pipe.to_cloud))
    det = DtmfDetector()
    assert det.process(to_cloud) + det.flush() == []
    # what leaked of each digit is a few ms of tone, nowhere near Q.24's 40 ms
    loud = np.abs(to_cloud.astype(np.int32)) > 1000
    assert loud.sum() <= len(keys) * 8 * 8


def test_digits_are_reported_at_their_start_and_repeats_count():
    digits: list[str] = []
    media, link, pipe = make_media(digits)
    audio = np.concatenate([np.zeros(FRAME * 2, dtype=np.int16),
                            dtmf_samples("55", on_ms=200, off_ms=80),
                            np.zeros(FRAME * 10, dtype=np.int16)])
    reported_at = []
    for k, frame in enumerate(frames_of(audio)):
        link.device.write(frame)
        before = len(digits)
        media.tick()
        reported_at += [k] * (len(digits) - before)
    assert digits == ["5", "5"]
    # tone onsets at frames 2 and 2 + 14; reported within 40 ms, long before each end
    assert reported_at[0] - 2 <= 2
    assert reported_at[1] - 16 <= 2


def test_speech_like_audio_and_call_progress_tones_are_not_muted():
    plan = toneplans.plan("us")
    from cext.tones import ToneGenerator
    for name in ("dial", "ringback", "busy"):
        tone = ToneGenerator(plan.tones[name], 8000)
        frames = [tone.generate(FRAME) for _ in range(30)]
        assert not any(dtmf_like(f) for f in frames), name
    t = np.arange(FRAME * 50) / 8000
    vowel = sum(3000 / k * np.sin(2 * np.pi * 120 * k * t) for k in range(1, 25))
    assert sum(dtmf_like(f) for f in frames_of(vowel.astype(np.int16))) == 0
    assert sum(dtmf_like(f) for f in frames_of(noise(FRAME * 200, rms=3000))) == 0


class FakeFrameClock:
    """pjsua2's conference clock as PipePort sees it: every 20 ms at `phase`, ask each
    pipe for a frame (stamp asked_at, take_to_cloud), then give one (stamp given_at)."""

    def __init__(self, reactor: Reactor, pipes: list[MediaPipe], phase: float) -> None:
        self.reactor, self.pipes = reactor, pipes
        self.taken: list[int] = []
        start = reactor.now() + phase
        reactor.register_periodic(self.tick, PERIOD, start=start)

    def tick(self, eventtime: float) -> None:
        for pipe in self.pipes:
            pipe.asked_at = eventtime
            self.taken.append(0 if pipe.take_to_cloud() is None else 1)
        for pipe in self.pipes:
            pipe.from_cloud.append(np.zeros(FRAME, dtype=np.int16))
            pipe.given_at = eventtime + 0.0005


@pytest.mark.parametrize("phase", [0.003, 0.011, 0.0185])
def test_media_clock_locks_onto_the_sip_frame_clock(phase):
    reactor = Reactor(FakeClock())
    media, link, pipe = make_media()
    pipe.to_cloud = type(pipe.to_cloud)(maxlen=10)
    ins, outs = [], []
    media.tick_in = lambda f=media.tick_in: (ins.append(reactor.now()), f())
    media.tick_out = lambda f=media.tick_out: (outs.append(reactor.now()), f())
    clock = MediaClock(reactor, lambda: [media], lambda m: None)
    clock.start()
    # the line captures a frame every 20 ms, just after the clock's own start
    reactor.register_periodic(lambda t: link.device.write(np.zeros(FRAME, dtype=np.int16)),
                              PERIOD, start=reactor.now() + 0.0002)
    frames = FakeFrameClock(reactor, [pipe], phase)
    reactor.run_for(1.0)
    assert clock.locked
    t0 = reactor.now()
    taken0 = len(frames.taken)
    reactor.run_for(2.0)
    asked = pipe.asked_at
    late_in = [(asked - t) % PERIOD for t in ins if t > t0]
    after_out = [(t - pipe.given_at) % PERIOD for t in outs if t > t0]
    assert len(late_in) == pytest.approx(100, abs=1)
    assert len(after_out) == pytest.approx(100, abs=1)
    assert all(abs(x - clock.lead) < 1e-6 for x in late_in), sorted(set(late_in))[:5]
    assert all(abs(x - MediaClock.OUT_AFTER_S) < 1e-6 for x in after_out)
    assert frames.taken[taken0:] == [1] * (len(frames.taken) - taken0)  # never starved


def test_media_clock_without_sip_frames_runs_one_grid():
    reactor = Reactor(FakeClock())
    media, link, pipe = make_media()
    runs = []
    media.tick_out = lambda: runs.append(("out", reactor.now()))
    media.tick_in = lambda: runs.append(("in", reactor.now()))
    clock = MediaClock(reactor, lambda: [media], lambda m: None)
    clock.start()
    t0 = reactor.now()
    reactor.run_for(0.1 - 1e-9)
    assert not clock.locked
    assert [k for k, _ in runs] == ["out", "in"] * 5
    assert [round(t - t0, 6) for _, t in runs[::2]] == [0.0, 0.02, 0.04, 0.06, 0.08]


def test_a_starved_pipe_makes_the_lead_grow():
    reactor = Reactor(FakeClock())
    media, link, pipe = make_media()
    clock = MediaClock(reactor, lambda: [media], lambda m: None)
    clock.start()
    reactor.register_periodic(lambda t: link.device.write(np.zeros(FRAME, dtype=np.int16)),
                              PERIOD, start=reactor.now() + 0.0002)
    FakeFrameClock(reactor, [pipe], 0.007)
    reactor.run_for(0.5)
    lead = clock.lead
    assert lead < MediaClock.LEAD_MAX_S
    pipe.starved += 1
    reactor.run_for(0.05)
    assert clock.lead == pytest.approx(lead + MediaClock.LEAD_STEP_S)


def test_a_standing_queue_is_dropped_to_the_newest_frame():
    pipe = MediaPipe()
    frames = [np.full(FRAME, k, dtype=np.int16) for k in range(200)]
    pipe.from_cloud.append(frames[0])
    taken = []
    for k in range(1, 40):  # one frame early, then in step: always two waiting
        pipe.from_cloud.append(frames[k])
        taken.append(int(pipe.take_from_cloud()[0]))
    assert taken[:BACKLOG_TAKES - 1] == list(range(BACKLOG_TAKES - 1))
    assert taken[-1] == 39  # caught up: the standing frame was dropped once
    assert len(pipe.from_cloud) == 0


def test_media_clock_keeps_clear_of_a_jittery_capture_clock():
    """pjsua2 asks at 11 ms, so the in-tick wants 7 ms, right where the line captures
    (7 ms +- 0.4 ms): it must move off that phase, after which no frame is late."""
    reactor = Reactor(FakeClock())
    media, link, pipe = make_media()
    jitter = np.random.default_rng(3)
    t0 = reactor.now()
    captures = []

    def capture(eventtime: float) -> float:
        link.device.write(np.zeros(FRAME, dtype=np.int16))
        captures.append(eventtime)
        k = round((eventtime - t0 - 0.007) / PERIOD) + 1
        return t0 + 0.007 + k * PERIOD + jitter.uniform(-0.0004, 0.0004)

    reactor.register_timer(capture, t0 + 0.007)
    ins = []
    media.tick_in = lambda f=media.tick_in: (ins.append(reactor.now()), f())[1]
    clock = MediaClock(reactor, lambda: [media], lambda m: None)
    clock.LEAD_MAX_S = clock.LEAD_S  # the lead stays 4 ms: only the capture guard moves it
    clock.start()
    frames = FakeFrameClock(reactor, [pipe], 0.011)
    reactor.run_for(1.0)
    starved, taken0 = pipe.starved, len(frames.taken)
    reactor.run_for(2.0)
    assert clock.capture_at is not None
    assert pipe.starved == starved
    assert frames.taken[taken0:] == [1] * (len(frames.taken) - taken0)
    phases = [(t - t0 - 0.007 + PERIOD / 2) % PERIOD - PERIOD / 2 for t in ins[-50:]]
    assert min(abs(p) for p in phases) >= MediaClock.CAPTURE_GUARD_S - 0.0005


def test_a_frame_that_missed_its_take_is_dropped_when_the_next_is_there():
    pipe = MediaPipe()
    frames = [np.full(FRAME, k, dtype=np.int16) for k in range(10)]
    pipe.put_to_cloud(frames[0])
    assert int(pipe.take_to_cloud()[0]) == 0
    assert pipe.take_to_cloud() is None  # frame 1 came late: silence went in its place
    assert pipe.starved == 1
    pipe.put_to_cloud(frames[1])
    pipe.put_to_cloud(frames[2])
    assert int(pipe.take_to_cloud()[0]) == 2  # back in step at once, 1 dropped
    pipe.put_to_cloud(frames[3])
    assert int(pipe.take_to_cloud()[0]) == 3
