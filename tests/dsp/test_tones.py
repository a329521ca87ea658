"""Tone plans (cext.toneplans) and the call-progress tone generator (cext.tones):
reference twin, levels per component, cadences to the sample, frame continuity, AM."""

import numpy as np
import pytest

from cext import toneplans
from cext.ref import tones as ref
from cext.tones import ToneGenerator, tone_samples
from lab.linemodel import rms_to_dbm0

ALL_TONES = [(c, n) for c in toneplans.COUNTRIES for n in toneplans.TONE_NAMES]


def _component_dbm0(x, f, rate=8000):
    t = np.arange(x.size)
    b = np.stack([np.cos(2 * np.pi * f * t / rate), np.sin(2 * np.pi * f * t / rate)], axis=1)
    coef = np.linalg.lstsq(b, x.astype(np.float64), rcond=None)[0]
    return rms_to_dbm0(np.sqrt(np.sum(coef**2) / 2))


def _runs(x: np.ndarray) -> list[int]:
    """Lengths of the alternating on/off runs of a tone, starting with 'on'. A run of at
    most 4 zero samples is a zero crossing (or a beat null), not a gap."""
    on = x != 0
    edges = np.flatnonzero(np.diff(on.astype(np.int8))) + 1
    runs = np.diff(np.concatenate([[0], edges, [on.size]])).tolist()
    state = [bool(on[0])]
    for _ in runs[1:]:
        state.append(not state[-1])
    merged: list[list] = []
    for st, r in zip(state, runs, strict=True):
        st = st or r <= 4  # short zero runs count as 'on'
        if merged and merged[-1][0] == st:
            merged[-1][1] += r
        else:
            merged.append([st, r])
    assert merged[0][0], "a tone starts with its first burst"
    return [r for _, r in merged]


def test_every_country_has_every_tone_and_sane_data():
    for code in toneplans.COUNTRIES:
        p = toneplans.plan(code)
        assert set(p.tones) == set(toneplans.TONE_NAMES), code
        for name, t in p.tones.items():
            assert len(t.cadence) % 2 == 0 and all(d > 0 for d in t.cadence), (code, name)
            assert all(300 <= f <= 700 for f in t.freqs) and -30 <= t.level_dbm0 <= 0
        assert len(p.ring_cadence) % 2 == 0 and p.ring_cadence
        assert p.callerid in ("bell202", "v23", "dtmf")
        assert p.callerid_when in ("after_first_ring", "before_ring")
        assert p.emergency


def test_plans_carry_the_published_caller_id_and_emergency_numbers():
    got = {c: (p.callerid, p.callerid_when, p.emergency) for c, p in toneplans.PLANS.items()}
    assert got == {
        "us": ("bell202", "after_first_ring", ("911",)),
        "uk": ("v23", "before_ring", ("999", "112")),
        "de": ("v23", "after_first_ring", ("112", "110")),
        "fr": ("v23", "before_ring", ("112", "15", "17", "18")),
        "in": ("dtmf", "before_ring", ("112", "100")),
        "au": ("v23", "before_ring", ("000", "112")),
    }


def test_unknown_country_names_the_known_ones():
    with pytest.raises(KeyError, match="known: us, uk, de, fr, in, au"):
        toneplans.plan("xx")
    with pytest.raises(KeyError, match="busy"):
        tone_samples("us", "howler", 1.0)


@pytest.mark.parametrize("country,name", ALL_TONES)
def test_tone_matches_reference_twin_in_20ms_frames(country, name):
    t = toneplans.plan(country).tones[name]
    n = 8000 * int(max(3, sum(t.cadence) + 1))
    g = ToneGenerator(t)
    got = np.concatenate([g.generate(160) for _ in range(n // 160)])
    assert np.abs(got.astype(int) - ref.tone(t, n)).max() <= 1


@pytest.mark.parametrize("country,name", ALL_TONES)
def test_tone_cadence_to_the_sample(country, name):
    t = toneplans.plan(country).tones[name]
    cycles = 2
    n = int(round(8000 * sum(t.cadence))) * cycles if t.cadence else 8000
    x = tone_samples(country, name, n / 8000)
    want = [int(round(d * 8000)) for d in t.cadence] * cycles if t.cadence else [n]
    runs = _runs(x)
    assert len(runs) == len(want)
    # the first sample of a burst may be a zero crossing: runs are exact within 2 samples
    assert all(abs(a - b) <= 2 for a, b in zip(runs, want, strict=True)), (runs, want)


@pytest.mark.parametrize("country,name", [("us", "dial"), ("us", "busy"), ("uk", "ringback"), ("de", "dial")])
def test_tone_level_per_component(country, name):
    t = toneplans.plan(country).tones[name]
    x = tone_samples(country, name, 0.25)  # inside the first burst (or continuous)
    for f in t.freqs:
        assert _component_dbm0(x, f) == pytest.approx(t.level_dbm0, abs=0.1)


def test_modulated_tone_has_carrier_and_sidebands():
    t = toneplans.plan("in").tones["dial"]
    assert t.mod_hz == 25.0
    x = tone_samples("in", "dial", 1.0)
    carrier = _component_dbm0(x, 400)
    assert carrier == pytest.approx(t.level_dbm0, abs=0.1)
    for f in (375, 425):  # each sideband is mod_depth/2 of the carrier
        assert _component_dbm0(x, f) - carrier == pytest.approx(20 * np.log10(t.mod_depth / 2), abs=0.1)


def test_generator_continues_across_calls_and_resets():
    t = toneplans.plan("uk").tones["congestion"]
    whole = ToneGenerator(t).generate(8000 * 3)
    g = ToneGenerator(t)
    sizes = [1, 159, 160, 7, 4000, 8000 * 3 - 4327]
    np.testing.assert_array_equal(np.concatenate([g.generate(k) for k in sizes]), whole)
    g.reset()
    np.testing.assert_array_equal(g.generate(500), whole[:500])


def test_tone_of_any_cadence_length_and_rate():
    t = toneplans.Tone((1000,), -10, (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08))
    x = ToneGenerator(t, rate=16000).generate(16000 * 36 // 100 * 2)
    want = [160, 320, 480, 640, 800, 960, 1120, 1280] * 2
    assert all(abs(a - b) <= 2 for a, b in zip(_runs(x), want, strict=True))
    with pytest.raises(ValueError):
        ToneGenerator(toneplans.Tone((400,), -10, (0.5,)))
