"""ITU-T G.168 accuracy suite for cext.echo.EchoCanceller on the Annex D echo paths.

Signals come from lab/linemodel.py (white or speech-like far end, hybrid models m1..m8,
near-end noise, G.711 munging); ERLE is measured from the near input and the output over
100 ms windows, with the NLP off unless the test is about the NLP. Needs the compiled
kernel (cext/echo.pyx); the reference twin in cext/ref/echo.py is checked against it.
"""

import numpy as np
import pytest

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
    rng = np.random.default_rng(hash((model, erl_db)) % 2**32)
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
