"""ITU-T G.168 accuracy suite for cext.echo.EchoCanceller on the Annex D echo paths.

Signals come from lab/linemodel.py (white or speech-like far end, hybrid models m1..m8,
near-end noise, G.711 munging); ERLE is measured from the near input and the output over
100 ms windows, with the NLP off unless the test is about the NLP. Needs the compiled
kernel (cext/echo.pyx); the reference twin in cext/ref/echo.py is checked against it.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from cext.dtmf import DtmfDetector, dtmf_samples
from cext.echo import EchoCanceller
from cext.ref import echo as ref_echo
from lab.linemodel import (
    MODELS,
    add_noise,
    apply_echo,
    dbm0_to_rms,
    echo_path,
    g711_munge,
    level_dbm0,
    speech_like,
    to_int16,
    white_noise,
)

RATE = 8000
FRAME = 160
TONES_6 = json.loads((Path(__file__).resolve().parents[2] / "lab" / "data" / "g168_echo_paths.json")
                     .read_text())["tones_6_4_2_7"]["pairs"]


def run(ec, near, far, frame=FRAME):
    """Feed whole 20 ms frames, as the media path does."""
    return np.concatenate([ec.process(near[i:i + frame], far[i:i + frame])
                           for i in range(0, near.size, frame)])


def erle(near, out, t_s, win_s=0.1):
    """ERLE in dB over the window ending at t_s."""
    a, b = int((t_s - win_s) * RATE), int(t_s * RATE)
    return level_dbm0(near[a:b]) - level_dbm0(out[a:b])


def scene(model, erl_db, seconds, rng, far_dbm0=-16.0, noise_dbm0=-70.0):
    """White far end, echo through `model`, near-end noise: (near, far, echo) as int16/float."""
    far = to_int16(white_noise(int(seconds * RATE), far_dbm0, rng))
    echo = apply_echo(far, echo_path(model, erl_db))
    near = to_int16(add_noise(echo, noise_dbm0, rng))
    return near, far, echo


def floor_erle(echo, noise_dbm0):
    """Best ERLE the near-end noise allows: (echo + noise) / noise."""
    pe, pn = np.mean(echo ** 2), dbm0_to_rms(noise_dbm0) ** 2
    return 10 * np.log10((pe + pn) / pn)


@pytest.mark.parametrize("erl_db", [6, 12])
@pytest.mark.parametrize("model", MODELS)
def test_g168_2a_convergence_nlp_off(model, erl_db):
    rng = np.random.default_rng(int(model[1:]) * 100 + erl_db)  # str hash() varies per run
    near, far, echo = scene(model, erl_db, 2.5, rng)
    ec = EchoCanceller(128, nlp=False)
    out = run(ec, near, far)
    assert erle(near, out, 1.0) >= 30.0
    steady = level_dbm0(near[-4000:]) - level_dbm0(out[-4000:])
    assert steady >= floor_erle(echo[-4000:], -70.0) - 3.0
    assert ec.converged
    assert abs(ec.erle_db - steady) < 3.0  # the live estimate tracks the measured ERLE


@pytest.mark.parametrize("model", ["m1", "m5", "m7"])
def test_g168_2b_convergence_nlp_on(model):
    rng = np.random.default_rng(21)
    near, far, _ = scene(model, 12, 1.5, rng)
    out = run(EchoCanceller(128, nlp=True), near, far)
    # with the NLP on, what is left after 1 s is comfort noise at the near-end noise level
    assert erle(near, out, 1.0) >= 35.0
    assert abs(level_dbm0(out[8000:]) - (-70.0)) < 4.0


def test_g168_3a_doubletalk_no_divergence():
    rng = np.random.default_rng(31)
    near, far, _ = scene("m4", 6, 4.0, rng)
    talk = speech_like(16000, -16.0, rng)
    near_dt = near.astype(np.float64)
    near_dt[12000:28000] += talk
    near_dt = to_int16(near_dt)
    ec = EchoCanceller(128, nlp=False)
    before = run(ec, near_dt[:12000], far[:12000])
    flags = []
    for i in range(12000, 28000, FRAME):
        ec.process(near_dt[i:i + FRAME], far[i:i + FRAME])
        flags.append(ec.doubletalk)
    after = run(ec, near_dt[28000:], far[28000:])
    assert np.mean(flags) > 0.3  # the detector saw the near-end talker (it pauses too)
    pre = erle(near[:12000], before, 1.5)
    post = level_dbm0(near[28000:28800]) - level_dbm0(after[:800])  # first 100 ms after
    # 2 s of equal-level double talk at the minimum ERL costs some ERLE, never the filter
    assert pre >= 30.0
    assert post >= 20.0


def test_g168_3b_doubletalk_before_convergence():
    rng = np.random.default_rng(32)
    near, far, _ = scene("m2", 6, 3.0, rng)
    near_dt = near.astype(np.float64)
    near_dt[:8000] += speech_like(8000, -16.0, rng)
    near_dt = to_int16(near_dt)
    out = run(EchoCanceller(128, nlp=False), near_dt, far)
    # never louder than what came in, and converges once the near end is quiet
    assert level_dbm0(out[:8000]) <= level_dbm0(near_dt[:8000]) + 1.0
    assert erle(near_dt, out, 2.5) >= 30.0


def test_g168_5_infinite_return_loss_no_false_adaptation():
    rng = np.random.default_rng(5)
    far = to_int16(white_noise(16000, -10.0, rng))
    near = to_int16(white_noise(16000, -60.0, rng))  # no echo at all, just line noise
    ec = EchoCanceller(128, nlp=True)
    out = run(ec, near, far)
    # NLMS misadjustment on pure noise costs under 2 dB; nothing converges, the NLP stays off
    assert level_dbm0(out[8000:]) - level_dbm0(near[8000:]) < 2.0
    assert not ec.converged


def test_g168_echo_path_change_reconvergence():
    rng = np.random.default_rng(7)
    far = to_int16(white_noise(24000, -16.0, rng))
    echo = np.concatenate([apply_echo(far, echo_path("m1", 12))[:12000],
                           apply_echo(far, echo_path("m5", 6))[12000:]])
    near = to_int16(add_noise(echo, -70.0, rng))
    out = run(EchoCanceller(128, nlp=False), near, far)
    assert erle(near, out, 1.5) >= 30.0
    assert erle(near, out, 1.6) < 20.0  # the change is visible...
    # ...and re-converged within 1.5 s (the first 0.5 s look like double talk)
    assert erle(near, out, 3.0) >= 30.0


def test_g168_dc_removal():
    rng = np.random.default_rng(8)
    near, far, _ = scene("m3", 12, 2.0, rng)
    near_dc = to_int16(near.astype(np.float64) + 800.0)
    out = run(EchoCanceller(128, nlp=False), near_dc, far)
    assert abs(np.mean(out[8000:])) < 2.0
    assert erle(near, out, 1.5) >= 30.0


def test_speech_through_g711_at_6db_erl_does_not_diverge():
    rng = np.random.default_rng(11)
    far = g711_munge(speech_like(5 * RATE, -16.0, rng), "ulaw")
    near = g711_munge(add_noise(apply_echo(far, echo_path("m6", 6)), -60.0, rng), "ulaw")
    ec = EchoCanceller(128, nlp=False)
    out = run(ec, near, far)
    active = [t for t in np.arange(0.5, 5.0, 0.25) if level_dbm0(near[int((t - 0.25) * RATE):int(t * RATE)]) > -35]
    gains = [level_dbm0(near[int((t - 0.25) * RATE):int(t * RATE)]) - level_dbm0(out[int((t - 0.25) * RATE):int(t * RATE)]) for t in active]
    assert len(gains) > 5
    assert min(gains[1:]) > 3.0  # never louder than the echo it was given: no divergence
    assert np.median(gains[len(gains) // 2:]) > 10.0


def test_comfort_noise_matches_near_end_noise():
    rng = np.random.default_rng(12)
    near, far, _ = scene("m1", 6, 2.0, rng, noise_dbm0=-50.0)
    out = run(EchoCanceller(128, nlp=True), near, far)
    assert abs(level_dbm0(out[9600:]) - (-50.0)) < 3.0
    rng = np.random.default_rng(12)
    near, far, _ = scene("m1", 6, 2.0, rng, noise_dbm0=-50.0)
    quiet = run(EchoCanceller(128, nlp=True, comfort_noise=False), near, far)
    assert level_dbm0(quiet[9600:]) < -80.0


def test_adapt_off_passes_echo_through():
    rng = np.random.default_rng(13)
    near, far, _ = scene("m1", 6, 1.0, rng)
    out = run(EchoCanceller(64, nlp=False, adapt=False), near, far)
    assert abs(level_dbm0(out[4000:]) - level_dbm0(near[4000:])) < 0.5


@pytest.mark.parametrize("tail_ms", [16, 64, 100])
def test_short_tails_converge(tail_ms):
    rng = np.random.default_rng(tail_ms)
    near, far, _ = scene("m4", 12, 1.0, rng)  # m4 is 16 ms long: fits every tail
    out = run(EchoCanceller(tail_ms, nlp=False), near, far)
    assert erle(near, out, 1.0) >= 30.0


@pytest.mark.parametrize("tail_ms", [0, 8, 15, 129, 256])
def test_tail_length_rejected(tail_ms):
    for cls in (EchoCanceller, ref_echo.EchoCanceller):
        with pytest.raises(ValueError, match="16..128"):
            cls(tail_ms)


def test_rate_other_than_8k_rejected():
    with pytest.raises(ValueError, match="8000"):
        EchoCanceller(128, rate=16000)


def test_any_chunking_gives_the_same_output():
    rng = np.random.default_rng(14)
    near, far, _ = scene("m8", 6, 0.6, rng)
    whole = EchoCanceller(128, nlp=True).process(near, far)
    ec = EchoCanceller(128, nlp=True)
    cuts = np.cumsum(rng.integers(1, 300, size=200))
    cuts = cuts[cuts < near.size]
    pieces = [ec.process(a, b) for a, b in zip(np.split(near, cuts), np.split(far, cuts), strict=True)]
    assert np.array_equal(np.concatenate(pieces), whole)


def test_reset_forgets_the_path():
    rng = np.random.default_rng(15)
    near, far, _ = scene("m2", 6, 1.0, rng)
    ec = EchoCanceller(64, nlp=False)
    first = run(ec, near, far)
    ec.reset()
    assert ec.erle_db == 0.0 and not ec.converged
    assert np.array_equal(run(ec, near, far), first)


def test_mismatched_lengths_rejected():
    with pytest.raises(ValueError, match="equal length"):
        EchoCanceller().process(np.zeros(160, np.int16), np.zeros(80, np.int16))


def test_reference_twin_agreement():
    rng = np.random.default_rng(16)
    near, far, _ = scene("m3", 6, 0.5, rng, noise_dbm0=-50.0)
    fast = run(EchoCanceller(32, nlp=False), near, far, frame=97)
    slow = ref_echo.EchoCanceller(32, nlp=False).process(near, far)
    diff = fast.astype(np.int64) - slow
    assert np.max(np.abs(diff)) <= 2  # float32 kernel vs float64 twin
    assert level_dbm0(near[2000:]) - level_dbm0(slow[2000:]) > 20.0  # and both cancel


# --- narrow-band signals: G.168 test 6, tones in double talk, DTMF -------------------------

def sine(hz, amp, n, phase=0.0):
    return amp * np.sin(2 * np.pi * hz * np.arange(n) / RATE + phase)


def windows(x, win=800):
    """Level in dBm0 of each 100 ms window."""
    return np.array([level_dbm0(x[i:i + win]) for i in range(0, x.size - win + 1, win)])


def tone_amp(x, hz):
    """Amplitude of the `hz` component of x (single-bin DFT)."""
    t = np.arange(x.size) / RATE
    z = np.dot(np.asarray(x, np.float64), np.exp(-2j * np.pi * hz * t))
    return 2 * abs(z) / x.size


@pytest.mark.parametrize("law", [None, "ulaw"])
@pytest.mark.parametrize("model", (None,) + MODELS)
@pytest.mark.parametrize("near_amp", [6000, 3000])
def test_doubletalk_with_tones_does_not_diverge(model, law, near_amp):
    # The call-control bug: a -10 dBm0 440 Hz far end (amplitude 7177) and a 1000 Hz
    # near-end talker ran cext.echo to clipping (ERLE -133 dB) within a second. 3000 is
    # under any Geigel threshold, so only the adaptation itself can keep it stable.
    n = 4 * RATE
    far = to_int16(sine(440, 7177, n))
    echo = np.zeros(n) if model is None else apply_echo(far, echo_path(model, 6))
    near = echo + sine(1000, near_amp, n)
    near = g711_munge(near, law) if law else to_int16(near)
    ec = EchoCanceller(128)
    out = run(ec, near, far)
    assert np.max(windows(out) - windows(near)) < 1.0  # never louder than its input
    assert ec.erle_db > -3.0
    last = slice(3 * RATE, n)
    # the near-end talker gets through untouched; the echo of 440 Hz does not grow
    assert abs(tone_amp(out[last], 1000) / tone_amp(near[last], 1000) - 1) < 0.1
    assert tone_amp(out[last], 440) <= tone_amp(near[last], 440) + 20


@pytest.mark.parametrize("model", MODELS)
def test_g168_6_narrowband_no_divergence(model):
    # G.168 6.4.2.7: converge on a broadband signal, then 5 s of each narrow-band signal
    # (single tones at -11 dBm0, pairs at -11/-9 dBm0) with adaptation on; then freeze
    # adaptation and measure the echo of the broadband signal again: the tones must not
    # have pulled the filter away (no more than 10 dB of the cancellation lost) and the
    # output must never be louder than the echo it was given.
    rng = np.random.default_rng(int(model[1:]) + 60)
    h = echo_path(model, 6)
    ec = EchoCanceller(128, nlp=False)

    def broadband_erle(seconds):
        far = to_int16(white_noise(int(seconds * RATE), -16.0, rng))
        near = to_int16(add_noise(apply_echo(far, h), -70.0, rng))
        out = run(ec, near, far)
        return level_dbm0(near[-RATE // 2:]) - level_dbm0(out[-RATE // 2:])

    before = broadband_erle(2.0)
    assert before >= 30.0
    for f1, f2 in TONES_6:
        n = 5 * RATE
        far = sine(f1, dbm0_to_rms(-11) * np.sqrt(2), n)
        if f2:
            far = far + sine(f2, dbm0_to_rms(-9) * np.sqrt(2), n, 1.0)
        far = to_int16(far)
        near = to_int16(add_noise(apply_echo(far, h), -70.0, rng))
        ec.adapt = True
        out = run(ec, near, far)
        assert np.max(windows(out) - windows(near)) < 0.5, (f1, f2)
        ec.adapt = False
        after = broadband_erle(1.0)
        assert after >= before - 10.0, (f1, f2, before, after)


def test_doubletalk_twin_agreement_on_tones():
    # the two-filter logic and the Geigel/power detectors take the same branches in both
    n = RATE // 2
    far = to_int16(sine(440, 7177, n))
    near = to_int16(apply_echo(far, echo_path("m2", 6)) + sine(1000, 3000, n))
    fast = EchoCanceller(32, nlp=False)
    out_fast = run(fast, near, far, frame=97)
    slow = ref_echo.EchoCanceller(32, nlp=False)
    out_slow = slow.process(near, far)
    assert np.max(np.abs(out_fast.astype(np.int64) - out_slow)) <= 2
    assert (fast.fg_copies, fast.bg_resets) == (slow.fg_copies, slow.bg_resets)


DIGITS = "0123456789*#ABCD"


@pytest.mark.parametrize("model", ["m1", "m4", "m7"])
def test_far_end_dtmf_does_not_diverge(model):
    # DTMF sent to the line (dialling through a PSTN line, RFC 4733 from the cloud) is a
    # narrow-band far end; the canceller must stay stable and keep its broadband fit.
    rng = np.random.default_rng(int(model[1:]) + 70)
    h = echo_path(model, 6)
    white = to_int16(white_noise(int(1.5 * RATE), -16.0, rng))
    dtmf = dtmf_samples(DIGITS, 100, 100, -7.0)
    far = np.concatenate([white, dtmf, to_int16(white_noise(RATE, -16.0, rng))])
    near = to_int16(add_noise(apply_echo(far, h), -70.0, rng))
    out = run(EchoCanceller(128, nlp=False), near, far)
    assert np.max(windows(out) - windows(near)) < 0.5
    seg = slice(white.size, white.size + dtmf.size)
    assert level_dbm0(near[seg]) - level_dbm0(out[seg]) >= 20.0  # the digits' echo is cancelled
    assert erle(near, out, far.size / RATE) >= 30.0


@pytest.mark.parametrize("far_kind", ["silent", "white", "speech"])
def test_near_end_dtmf_survives_the_canceller(far_kind):
    # A caller keying digits while the far end is quiet, noisy or talking:
    # the detector behind the canceller (firmware/media.py) must still find every digit.
    rng = np.random.default_rng(80)
    n = 5 * RATE
    if far_kind == "silent":
        far = np.zeros(n, np.int16)
    elif far_kind == "white":
        far = to_int16(white_noise(n, -16.0, rng))
    else:
        far = g711_munge(speech_like(n, -16.0, rng), "ulaw")
    keyed = np.zeros(n)
    digits = dtmf_samples(DIGITS, 80, 120, -12.0)
    keyed[RATE:RATE + digits.size] = digits
    near = to_int16(add_noise(apply_echo(far, echo_path("m3", 6)) + keyed, -60.0, rng))
    out = run(EchoCanceller(128, nlp=True), near, far)
    det = DtmfDetector()
    found = det.process(out) + det.flush()
    assert "".join(d for d, _s, _e in found) == DIGITS
