"""cext.echo on real speech through G.711 at the minimum echo return loss (issue 10 part 3).

The condition the independent check found weak: an espeak-ng voice as the far end, coded
through mu-law on the way out (the canceller's reference is the decoded far end, as from
RTP), echoed through each ITU-T G.168 Annex D hybrid model (lab/data/g168_echo_paths.json)
at 6 dB extra echo return loss, with -60 dBm0 line noise, and mu-law coded again on the
capture side. NLP off: this is the linear canceller. ERLE is near-input over output level
over a 250 ms window ending at the given time (speech starts at 0 s), "steady" over 3..5 s.

The speech is made here with espeak-ng (Debian package; no audio is committed) and
resampled with cext.resample. Assumes 8 kHz; about 5 s of audio per voice and path.
The G.168 test 4 (leak rate) is here too because it is about the converged filter.
"""

import functools
import shutil

import numpy as np
import pytest

from cext.echo import EchoCanceller
from lab.linemodel import (
    MODELS,
    add_noise,
    apply_echo,
    echo_path,
    espeak_speech,
    g711_munge,
    level_dbm0,
    to_int16,
    white_noise,
)

RATE = 8000
FRAME = 160
SECONDS = 5.0
VOICES = (("en-us", 160, 50), ("en+f3", 170, 60))  # (voice, words/minute, pitch): male, female


@functools.cache
def speech(voice, wpm, pitch):
    """espeak-ng speech at 8 kHz, leading/trailing silence cut, at -16 dBm0 active level."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng not found: install the Debian package 'espeak-ng' "
                    "(scripts/debian-test-packages.txt)")
    return espeak_speech(voice, wpm, pitch, seconds=SECONDS)


def scene(model, voice, seed=1):
    """(near, far) int16: far speech via mu-law, its echo at 6 dB ERL plus noise via mu-law."""
    rng = np.random.default_rng(seed)
    far = g711_munge(speech(*voice), "ulaw")
    near = g711_munge(add_noise(apply_echo(far, echo_path(model, 6)), -60.0, rng), "ulaw")
    return near, far


def run(ec, near, far):
    return np.concatenate([ec.process(near[i:i + FRAME], far[i:i + FRAME])
                           for i in range(0, near.size, FRAME)])


def erle(near, out, t_s, win_s=0.25):
    a, b = int((t_s - win_s) * RATE), int(t_s * RATE)
    return level_dbm0(near[a:b]) - level_dbm0(out[a:b])


def speech_erle(model, voice):
    """(ERLE at 1 s, steady ERLE, worst window excess, ERLE per 100 ms window) for one case."""
    near, far = scene(model, voice)
    out = run(EchoCanceller(128, nlp=False), near, far)
    steady = level_dbm0(near[3 * RATE:]) - level_dbm0(out[3 * RATE:])
    w = RATE // 10
    excess = [level_dbm0(out[i:i + w]) - level_dbm0(near[i:i + w])
              for i in range(RATE // 2, near.size - w + 1, w) if level_dbm0(near[i:i + w]) > -45.0]
    return erle(near, out, 1.0), steady, max(excess)


@pytest.mark.parametrize("voice", VOICES, ids=lambda v: v[0])
@pytest.mark.parametrize("model", MODELS)
def test_speech_via_g711_at_6db_erl(model, voice):
    at_1s, steady, excess = speech_erle(model, voice)
    # issue 10's goal: >= 18 dB at 1 s and >= 25 dB steady on every path (met: 19.0 and
    # 27.5 dB worst over four voices in bench/bench_echo.py; 18.2 and 26.4 dB here)
    assert steady >= 25.0, (at_1s, steady)
    assert at_1s >= 18.0, (at_1s, steady)
    # no divergence: after the first 0.5 s no 100 ms window of echo comes out louder
    assert excess < 1.0, excess


# --- G.168 test 4: leak rate ----------------------------------------------------------------

@pytest.mark.parametrize("model,line_noise", [("m1", False), ("m5", False), ("m4", True)])
def test_g168_4_leak_rate(model, line_noise):
    # G.168 Test No. 4, leak rate (in clause 6.4.2 with the other tests; "leak time" is
    # defined in clause 3.16): the test only guards against a leak that is too fast, i.e.
    # an H register that goes to zero within the 2 minutes after the receive signal stops.
    # Procedure as spandsp's echo_tests.c perform_test_4: converge on a broadband signal,
    # 2 minutes of silence on both ports, freeze adaptation, apply the signal again and
    # measure. The G.168 numeric limit was not in the stored references; our filters have
    # no leakage term at all (they hold their taps while the far end is silent), so the
    # assertion is the strict one: the frozen filter cancels within 3 dB of before.
    rng = np.random.default_rng(int(model[1:]) + 40)
    h = echo_path(model, 6)
    ec = EchoCanceller(128, nlp=False)

    def probe():
        far = to_int16(white_noise(RATE, -10.0, rng))
        near = to_int16(add_noise(apply_echo(far, h), -70.0, rng))
        out = run(ec, near, far)
        return level_dbm0(near[RATE // 2:]) - level_dbm0(out[RATE // 2:])

    for _ in range(3):
        before = probe()
    assert before >= 30.0
    silence = np.zeros(120 * RATE, np.int16)
    # the far end silent for 2 minutes; the capture side silent too, or carrying line noise
    near = to_int16(white_noise(silence.size, -50.0, rng)) if line_noise else silence
    ec.process(near, silence)
    ec.adapt = False
    after = probe()
    assert after >= before - 3.0, (before, after)


def test_g168_4_echo_path_change_after_silence():
    # The other half of the leak question: after a long far-end silence the path may have
    # changed (the line was re-seized); the canceller must still re-converge on the new path.
    rng = np.random.default_rng(44)
    ec = EchoCanceller(128, nlp=False)
    far = to_int16(white_noise(2 * RATE, -16.0, rng))
    ec.process(to_int16(add_noise(apply_echo(far, echo_path("m1", 6)), -70.0, rng)), far)
    silence = np.zeros(30 * RATE, np.int16)
    ec.process(silence, silence)
    far = to_int16(white_noise(3 * RATE, -16.0, rng))
    near = to_int16(add_noise(apply_echo(far, echo_path("m5", 6)), -70.0, rng))
    out = run(ec, near, far)
    assert level_dbm0(near[-RATE // 2:]) - level_dbm0(out[-RATE // 2:]) >= 30.0


def test_reference_twin_agreement_full_tail_speech():
    # the full 128 ms tail (16 partitions) exercises the choice of constrained partitions
    # and the step shares; 0.6 s of the female voice on m4 (the slowest path)
    from cext.ref import echo as ref_echo
    near, far = scene("m4", VOICES[1])
    near, far = near[: 6 * RATE // 10], far[: 6 * RATE // 10]
    ec = EchoCanceller(128, nlp=False)
    fast = np.concatenate([ec.process(near[i:i + 97], far[i:i + 97]) for i in range(0, near.size, 97)])
    twin = ref_echo.EchoCanceller(128, nlp=False)
    slow = twin.process(near, far)
    assert np.max(np.abs(fast.astype(np.int64) - slow)) <= 2
    assert (ec.fg_copies, ec.bg_resets) == (twin.fg_copies, twin.bg_resets)
    assert level_dbm0(near[1600:4000]) - level_dbm0(slow[1600:4000]) > 10.0  # and both cancel


def test_reference_twin_agreement_through_the_head_filter_fold():
    # 1.4 s: the time-domain head filter adapts, is folded into the block filters (after
    # T_FAST blocks or at FOLD_DB) and stops, in both; the outputs agree across the fold
    from cext.ref import echo as ref_echo
    near, far = scene("m4", VOICES[1])
    near, far = near[: 14 * RATE // 10], far[: 14 * RATE // 10]
    ec = EchoCanceller(64, nlp=False)
    fast = np.concatenate([ec.process(near[i:i + 97], far[i:i + 97]) for i in range(0, near.size, 97)])
    twin = ref_echo.EchoCanceller(64, nlp=False)
    slow = twin.process(near, far)
    assert not ec.td_live and not twin.td_live and not ec.td_retired and not twin.td_retired
    assert ec.td_blocks == twin.td_blocks
    assert np.max(np.abs(fast.astype(np.int64) - slow)) <= 2
    assert (ec.fg_copies, ec.bg_resets) == (twin.fg_copies, twin.bg_resets)
    assert level_dbm0(near[RATE:]) - level_dbm0(slow[RATE:]) > 15.0


def test_head_filter_retired_on_a_bulk_delayed_echo():
    # an echo 100 samples (12.5 ms) late puts most of the path outside the head window
    # (lags 0..127): the head filter must step aside (taps dropped) instead of being folded
    # in, and the canceller must still converge without diverging on the female voice.
    # (Longer bulk delays are weak before and after issue 10: see cext/echo.pyx.)
    rng = np.random.default_rng(3)
    far = g711_munge(speech(*VOICES[1]), "ulaw")
    near = g711_munge(add_noise(apply_echo(far, echo_path("m6", 6), 100), -60.0, rng), "ulaw")
    ec = EchoCanceller(128, nlp=False)
    out = run(ec, near, far)
    assert not ec.td_live and ec.td_retired
    assert level_dbm0(near[3 * RATE:]) - level_dbm0(out[3 * RATE:]) >= 15.0
    w = RATE // 10
    excess = [level_dbm0(out[i:i + w]) - level_dbm0(near[i:i + w])
              for i in range(RATE // 2, near.size - w + 1, w) if level_dbm0(near[i:i + w]) > -45.0]
    assert max(excess) < 1.0, excess
    # the twin takes the same decision (at ~0.15 s here) and agrees on the output
    from cext.ref import echo as ref_echo
    n = 3 * RATE // 10
    twin = ref_echo.EchoCanceller(128, nlp=False)
    slow = twin.process(near[:n], far[:n])
    fast = EchoCanceller(128, nlp=False).process(near[:n], far[:n])
    assert twin.td_retired
    assert np.max(np.abs(fast.astype(np.int64) - slow)) <= 2
