"""cext.dtmf beyond the Q.24 matrix: start/end timing, frame-by-frame versus whole-buffer
results, agreement with the NumPy reference twin (cext/ref/dtmf.py), the `current`
digit, flush/reset, and the generator's exactness (frequencies and levels by FFT,
frame-wise generation identical to dtmf_samples).
"""

import numpy as np
import pytest

from cext import dtmf as kernel
from cext.ref import dtmf as ref
from lab.linemodel import dbm0_to_rms, g711_munge, level_dbm0, to_int16, white_noise

RATE = 8000
ROWS = (697.0, 770.0, 852.0, 941.0)
COLS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS = "123A456B789C*0#D"


def run(det, x, frame=None):
    if frame is None:
        return det.process(x) + det.flush()
    out = []
    for i in range(0, len(x), frame):
        out += det.process(x[i:i + frame])
    return out + det.flush()


def scenario(seed=3, n=24):
    """Random digits, durations, pauses and levels at a random offset, in light noise."""
    rng = np.random.default_rng(seed)
    parts, truth, pos = [np.zeros(int(rng.integers(0, 400)))], [], 0
    pos = parts[0].size
    for _ in range(n):
        key = KEYS[int(rng.integers(16))]
        on, off = int(rng.integers(45, 150)), int(rng.integers(45, 150))
        lev = float(rng.uniform(-30, -5))
        x = kernel.dtmf_samples(key, on, off, lev, float(rng.uniform(-3, 3)))
        parts.append(x.astype(float))
        truth.append((key, pos, pos + on * 8))
        pos += x.size
    x = np.concatenate(parts)
    return to_int16(x + white_noise(x.size, -50, rng)), truth


def test_dtmf_timing_accuracy():
    """Each digit once, start and end within 2 ms (16 samples) of the truth."""
    x, truth = scenario()
    got = run(kernel.DtmfDetector(), x)
    assert [d for d, _, _ in got] == [d for d, _, _ in truth]
    for (d, s, e), (_, ts, te) in zip(got, truth, strict=True):
        assert abs(s - ts) <= 16 and abs(e - te) <= 16, (d, s, e, ts, te)


@pytest.mark.parametrize("frame", [1, 7, 160, 333, 4096])
def test_dtmf_frame_by_frame_equals_whole_buffer(frame):
    x, _ = scenario(seed=5, n=10)
    assert run(kernel.DtmfDetector(), x, frame) == run(kernel.DtmfDetector(), x)


def test_dtmf_reference_twin_agreement():
    """Kernel and twin agree digit for digit and to a sample on the times (they differ
    only by float rounding), on clean, noisy and companded signals."""
    rng = np.random.default_rng(11)
    x, _ = scenario(seed=9, n=16)
    noisy = to_int16(x + white_noise(x.size, -25, rng))
    for sig in (x, noisy, g711_munge(noisy, "alaw")):
        a = run(kernel.DtmfDetector(), sig)
        b = run(ref.DtmfDetector(), sig)
        assert [d for d, _, _ in a] == [d for d, _, _ in b]
        for (_, s1, e1), (_, s2, e2) in zip(a, b, strict=True):
            assert abs(s1 - s2) <= 1 and abs(e1 - e2) <= 1


def test_dtmf_gain_polynomial_matches_window():
    """The level correction (1/g^2 as a polynomial in 1 - cos of the phase advance per
    hop, no trigonometry per frame) follows the sine window's exact response to 1e-4
    over every accepted offset, and kernel and twin use the same constants."""
    assert kernel.GAIN_POLY == ref.GAIN_POLY
    hop, rate, tol = 40, 8000, 0.025
    for f in ROWS + COLS:
        for off in np.linspace(-tol * f, tol * f, 41):
            phi = 2 * np.pi * off * hop / rate
            k = off * 160 / rate  # bins of 50 Hz
            assert ref.inverse_gain2(1 - np.cos(phi)) * ref.window_gain(k) ** 2 == pytest.approx(1, abs=1e-4)
            assert ref.window_gain(k) ** 2 >= ref.GAIN_MIN2


def test_dtmf_reference_twin_generator_identical():
    args = ("0123456789*#ABCD", 70, 30, -3.0, 2.5)
    assert np.array_equal(kernel.dtmf_samples(*args), ref.dtmf_samples(*args))


def test_dtmf_current_digit_and_single_report():
    det = kernel.DtmfDetector()
    x = kernel.dtmf_samples("7", on_ms=200, off_ms=100)
    assert det.process(x[:800]) == [] and det.current == "7"  # 100 ms into the tone
    assert det.process(x[800:1600]) == [] and det.current == "7"
    got = det.process(x[1600:])
    assert [d for d, _, _ in got] == ["7"] and det.current is None
    assert det.process(np.zeros(2000, np.int16)) == []  # reported once only


def test_dtmf_flush_reports_tone_still_on():
    det = kernel.DtmfDetector()
    assert det.process(kernel.dtmf_samples("#", on_ms=120, off_ms=0)) == []
    (d, s, e), = det.flush()
    assert d == "#" and s <= 24 and e == 960
    assert det.flush() == []


def test_dtmf_reset_restarts_sample_count():
    det = kernel.DtmfDetector()
    x = kernel.dtmf_samples("3")
    first = run(det, x)
    det.process(np.zeros(1234, np.int16))
    det.reset()
    assert run(det, x) == first


def test_dtmf_accepts_lists_and_other_int_arrays():
    x = kernel.dtmf_samples("9")
    assert run(kernel.DtmfDetector(), x.astype(np.int32))[0][0] == "9"
    assert run(kernel.DtmfDetector(), list(x))[0][0] == "9"


def test_dtmf_unsupported_rate_is_a_clear_error():
    with pytest.raises(ValueError, match="rate"):
        kernel.DtmfDetector(rate=8010)


def test_dtmf_16k_rate():
    """The detector scales with the rate (frame stays 20 ms)."""
    x = kernel.dtmf_samples("159D", rate=16000)
    assert [d for d, _, _ in run(kernel.DtmfDetector(rate=16000), x)] == list("159D")


@pytest.mark.parametrize("key", KEYS)
def test_generator_frequencies_and_levels(key):
    """FFT of a 1 s digit: the two peaks sit on the nominal frequencies, each at the
    requested level (low at level, high at level + twist), nothing else above -50 dB."""
    x = kernel.dtmf_samples(key, on_ms=1000, off_ms=0, level_dbm0=-10, twist_db=2.0).astype(float)
    spec = np.abs(np.fft.rfft(x)) / (x.size / 2)  # peak amplitude per 1 Hz bin
    i = KEYS.index(key)
    lo, hi = int(ROWS[i // 4]), int(COLS[i % 4])
    assert 20 * np.log10(spec[lo] / np.sqrt(2) / dbm0_to_rms(-10)) == pytest.approx(0, abs=0.05)
    assert 20 * np.log10(spec[hi] / np.sqrt(2) / dbm0_to_rms(-8)) == pytest.approx(0, abs=0.05)
    rest = spec.copy()
    rest[[lo, hi]] = 0
    assert rest.max() < spec[lo] * 10 ** (-50 / 20)
    assert level_dbm0(x) == pytest.approx(10 * np.log10(10 ** -1 + 10 ** -0.8), abs=0.05)


def test_generator_timing_and_silence():
    x = kernel.dtmf_samples("12", on_ms=60, off_ms=40)
    assert x.size == 2 * 800
    assert np.all(x[480:800] == 0) and np.all(x[1280:] == 0)
    assert np.any(x[:8] != 0) and np.any(x[800:808] != 0)


def test_generator_saturates_instead_of_wrapping():
    x = kernel.dtmf_samples("D", on_ms=50, off_ms=0, level_dbm0=3.0)
    assert x.max() == 32767 and x.min() == -32768


def test_dtmf_generator_framewise_equals_dtmf_samples():
    gen = kernel.DtmfGenerator(on_ms=70, off_ms=50, level_dbm0=-9, twist_db=1.0)
    gen.queue("5*")
    frames = [gen.generate(160) for _ in range(5)]
    gen.queue("a0")
    assert gen.busy
    frames += [gen.generate(160) for _ in range(25)]
    got = np.concatenate(frames)
    want = kernel.dtmf_samples("5*A0", 70, 50, -9, 1.0)
    assert np.array_equal(got[: want.size], want)
    assert not np.any(got[want.size:]) and not gen.busy


def test_dtmf_generator_rejects_unknown_digit():
    gen = kernel.DtmfGenerator()
    with pytest.raises(ValueError, match="'x'"):
        gen.queue("12x")
