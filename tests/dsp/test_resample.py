"""Resampler (cext.resample): reference twin, frame independence, tone level and
frequency, pass-band flatness, image and alias rejection, reported group delay."""

import numpy as np
import pytest

from cext.ref import resample as ref
from cext.resample import Resampler
from lab.linemodel import dbm0_to_rms

PAIRS = [(8000, 16000), (16000, 8000), (8000, 48000), (48000, 8000), (8000, 44100), (44100, 8000)]


def _sine(f, rate, seconds=0.5, dbm0=-10.0):
    t = np.arange(int(rate * seconds))
    return np.rint(dbm0_to_rms(dbm0) * np.sqrt(2) * np.sin(2 * np.pi * f * t / rate)).astype(np.int16)


def _level_db(x, skip):
    x = x[skip:-skip].astype(np.float64)
    return 10 * np.log10(np.mean(x * x))


def _tone_db(x, f, rate, skip):
    """Level (dB re int16^2) of the component at f, by least squares over the steady part."""
    x = x[skip:-skip].astype(np.float64)
    t = np.arange(x.size)
    b = np.stack([np.cos(2 * np.pi * f * t / rate), np.sin(2 * np.pi * f * t / rate)], axis=1)
    coef = np.linalg.lstsq(b, x, rcond=None)[0]
    return 10 * np.log10(np.sum(coef**2) / 2 + 1e-12)


@pytest.mark.parametrize("rate_in,rate_out", PAIRS)
def test_resample_matches_reference_twin(rate_in, rate_out):
    x = (np.random.default_rng(1).standard_normal(rate_in // 20) * 4000).astype(np.int16)
    y = Resampler(rate_in, rate_out).process(x)
    want = ref.resample(x, rate_in, rate_out)
    assert y.size == want.size
    assert np.abs(y.astype(int) - want).max() <= 1


@pytest.mark.parametrize("rate_in,rate_out", PAIRS)
def test_resample_frames_equal_whole_buffer(rate_in, rate_out):
    x = (np.random.default_rng(2).standard_normal(rate_in // 2) * 4000).astype(np.int16)
    whole = Resampler(rate_in, rate_out).process(x)
    r = Resampler(rate_in, rate_out)
    frame = rate_in // 50  # 20 ms
    parts = [r.process(x[i : i + frame]) for i in range(0, x.size, frame)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize("rate_in,rate_out", [(8000, 16000), (8000, 48000), (48000, 8000), (16000, 8000)])
@pytest.mark.parametrize("f", [300.0, 1004.0, 3400.0])
def test_resample_passband_level_and_frequency(rate_in, rate_out, f):
    y = Resampler(rate_in, rate_out).process(_sine(f, rate_in))
    skip = rate_out // 20
    # the tone is where it was and within 0.5 dB of its level; nothing else of note
    assert _tone_db(y, f, rate_out, skip) == pytest.approx(_tone_db(_sine(f, rate_out), f, rate_out, skip), abs=0.5)
    assert _level_db(y, skip) - _tone_db(y, f, rate_out, skip) < 0.05


@pytest.mark.parametrize("rate_out", [16000, 48000])
def test_resample_image_rejection(rate_out):
    y = Resampler(8000, rate_out).process(_sine(1004.0, 8000, dbm0=0.0))
    skip = rate_out // 20
    images = [8000 - 1004, 8000 + 1004] + ([16000 - 1004, 16000 + 1004] if rate_out > 16000 else [])
    main = _tone_db(y, 1004.0, rate_out, skip)
    for f in images:
        assert main - _tone_db(y, f, rate_out, skip) >= 60, f


@pytest.mark.parametrize("rate_in,f", [(48000, 5000.0), (48000, 7500.0), (48000, 12000.0), (16000, 6000.0), (16000, 4600.0)])
def test_resample_alias_rejection(rate_in, f):
    x = _sine(f, rate_in, dbm0=0.0)
    y = Resampler(rate_in, 8000).process(x)
    alias = abs(((f + 4000) % 8000) - 4000)
    assert _level_db(x, rate_in // 20) - _tone_db(y, alias, 8000, 400) >= 60


@pytest.mark.parametrize("rate_in,rate_out", [(8000, 16000), (16000, 8000), (8000, 48000), (48000, 8000)])
def test_resample_reports_its_group_delay(rate_in, rate_out):
    r = Resampler(rate_in, rate_out)
    n = rate_in // 50  # a 20 ms Hann-shaped 1 kHz burst: smooth, so its energy centre is sharp
    t = np.arange(n)
    shaped = np.hanning(n) * 20000 * np.sin(2 * np.pi * 1004 * t / rate_in)
    burst = np.zeros(rate_in // 2)
    at = rate_in // 10
    burst[at : at + n] = shaped
    y = r.process(np.rint(burst).astype(np.int16)).astype(np.float64)
    t_out = np.sum(np.arange(y.size) * y**2) / np.sum(y**2)
    t_in = np.sum(np.arange(burst.size) * burst**2) / np.sum(burst**2) * rate_out / rate_in
    assert t_out - t_in == pytest.approx(r.delay_samples, abs=0.01 * rate_out / 1000)


def test_resample_reset_and_bad_rates():
    r = Resampler(8000, 16000)
    x = _sine(1004.0, 8000, 0.1)
    first = r.process(x)
    r.process(x)
    r.reset()
    np.testing.assert_array_equal(r.process(x), first)
    with pytest.raises(ValueError):
        Resampler(0, 8000)
