"""The G.107 E-model of firmware.quality against the Recommendation's own figures:
the default rating R = 93.2, the MOS(R) mapping's published points, the Idd delay
formula worked by hand, and the direction in which loss, delay and jitter move R."""

import math

import pytest

from firmware import quality as q


def test_g107_defaults_give_r_93_2_and_its_parts():
    p = q.Params()
    # G.107 clause 7.7: with all defaults R = 94.77 - 1.41 - 0.15 - 0 + 0 = 93.2
    assert q.ro(p) == pytest.approx(94.77, abs=0.01)
    assert q.is_(p) == pytest.approx(1.41, abs=0.01)
    assert q.idte(p) + q.idle(p) + q.idd(p.Ta) == pytest.approx(0.15, abs=0.01)
    assert q.r_from_params(p) == pytest.approx(93.2, abs=0.05)


def test_r_93_2_maps_to_mos_4_41():
    assert q.mos_from_r(93.2) == pytest.approx(4.41, abs=0.005)


@pytest.mark.parametrize("r, mos", [(90, 4.34), (80, 4.03), (70, 3.60), (60, 3.10), (50, 2.58)])
def test_mos_of_r_published_points(r, mos):
    # G.107 Annex B / G.109: the boundaries of the user-satisfaction classes, as
    # published to two decimals (R = 80 computes to 4.024)
    assert q.mos_from_r(r) == pytest.approx(mos, abs=0.01)


def test_mos_is_clipped_to_1_and_4_5_and_rises_with_r():
    assert q.mos_from_r(-20) == 1.0
    assert q.mos_from_r(100) == 4.5
    assert q.mos_from_r(130) == 4.5
    values = [q.mos_from_r(r / 2) for r in range(0, 201)]
    assert all(1.0 <= v <= 4.5 for v in values)
    upper = values[14:]  # the Annex B cubic dips a hair below 1 under R = 6.5
    assert all(b > a for a, b in zip(upper, upper[1:], strict=False))


def _idd_by_hand(ta):
    x = math.log10(ta / 100) / math.log10(2)
    return 25 * ((1 + x ** 6) ** (1 / 6) - 3 * (1 + (x / 3) ** 6) ** (1 / 6) + 2)


@pytest.mark.parametrize("ta, expected", [
    (50, 0.0), (100, 0.0),  # no impairment up to 100 ms
    (200, 3.044),  # X = 1: 25 * (2^(1/6) - 3 * (1 + 3^-6)^(1/6) + 2)
    (400, 24.070),  # X = 2: 25 * (65^(1/6) - 3 * (1 + (2/3)^6)^(1/6) + 2)
    (800, 40.832),  # X = 3: 25 * (730^(1/6) - 3 * 2^(1/6) + 2)
])
def test_g107_idd_against_hand_computed_values(ta, expected):
    assert q.idd(ta) == pytest.approx(expected, abs=0.001)
    if ta > 100:
        assert q.idd(ta) == pytest.approx(_idd_by_hand(ta), rel=1e-12)


def test_ie_eff_with_and_without_plc_at_one_percent_loss():
    with_plc = q.ie_eff(q.Params(Ie=0, Bpl=25.1, Ppl=1))
    without = q.ie_eff(q.Params(Ie=0, Bpl=4.3, Ppl=1))
    assert with_plc == pytest.approx(95 / 26.1, abs=1e-9)  # 3.64
    assert without == pytest.approx(95 / 5.3, abs=1e-9)  # 17.9: PLC matters
    assert q.ie_eff(q.Params(Ie=0, Bpl=25.1, Ppl=1, BurstR=2)) > with_plc


def test_g711_with_no_loss_and_low_delay_rates_about_93():
    r = q.r_factor("PCMU", loss_pct=0, jitter_ms=0, rtt_ms=0, jitter_buffer_ms=0)
    # only the 20 ms packet is left: a little talker/listener echo impairment, no Idd
    assert 92.0 < r < 93.2
    assert q.mos_from_r(r) == pytest.approx(4.41, abs=0.03)


def test_loss_lowers_r_monotonically():
    rs = [q.r_factor("PCMA", loss, 2, 30) for loss in (0, 0.5, 1, 2, 5, 10, 20, 50)]
    assert all(b < a for a, b in zip(rs, rs[1:], strict=False))
    assert rs[0] - rs[2] == pytest.approx(95 / 26.1, abs=0.01)  # exactly the Ie,eff step


def test_delay_lowers_r_monotonically():
    rs = [q.r_factor("PCMU", 0, 0, rtt, jitter_buffer_ms=20) for rtt in range(0, 1001, 50)]
    assert all(b < a for a, b in zip(rs, rs[1:], strict=False))
    assert rs[0] > 91 and rs[-1] < 60  # 500 ms one way is well into "many dissatisfied"


def test_jitter_grows_the_buffer_and_lowers_r():
    assert q.one_way_delay_ms("PCMU", 100, 30) == pytest.approx(50 + 60 + 20 + 0.125)
    assert q.one_way_delay_ms("PCMU", 100, 2) == pytest.approx(50 + 20 + 20 + 0.125)
    rs = [q.r_factor("PCMU", 0, jitter, 200) for jitter in (0, 20, 50, 100, 200)]
    assert all(b < a for a, b in zip(rs, rs[1:], strict=False))


def test_codec_names_as_pjsua2_reports_them():
    assert q.r_factor("PCMU/8000/1", 1, 5, 40) == q.r_factor("pcmu", 1, 5, 40)
    assert q.r_factor("G.711a", 1, 5, 40) == q.r_factor("PCMA", 1, 5, 40)
    # G.722 on the narrowband scale: as G.711, only its longer codec delay counts
    assert q.r_factor("G722/16000/1", 1, 5, 40) <= q.r_factor("PCMU", 1, 5, 40)


def test_unknown_codec_and_bad_figures_are_refused():
    with pytest.raises(ValueError, match="G729"):
        q.r_factor("G729", 0, 0, 0)
    for args in ((-1, 0, 0), (0, -5, 0), (0, 0, float("nan")), (101, 0, 0)):
        with pytest.raises(ValueError):
            q.r_factor("PCMU", *args)


def test_estimate_from_a_bridge_quality_dict():
    good = q.estimate({"codec": "PCMU", "jitter_ms": 2.0, "loss_pct": 0.0, "rtt_ms": 30.0})
    bad = q.estimate({"codec": "PCMU", "jitter_ms": 40.0, "loss_pct": 8.0, "rtt_ms": 400.0})
    assert 4.3 < good["mos"] <= 4.41 and good["r_factor"] > 90
    assert bad["mos"] < 3.1 and bad["r_factor"] < 60
    assert good["r_factor"] == round(good["r_factor"], 2)


@pytest.mark.parametrize("quality", [
    {}, {"codec": None, "jitter_ms": 1, "loss_pct": 0},
    {"codec": "PCMU", "jitter_ms": None, "loss_pct": 0},
    {"codec": "PCMU", "jitter_ms": 1, "loss_pct": None},
    {"codec": "speex", "jitter_ms": 1, "loss_pct": 0},
    {"codec": "PCMU", "jitter_ms": -1, "loss_pct": 0},
])
def test_estimate_without_usable_figures_is_none(quality):
    assert q.estimate(quality) == {"r_factor": None, "mos": None}


def test_estimate_without_rtt_counts_zero_network_delay():
    no_rtt = q.estimate({"codec": "PCMU", "jitter_ms": 1, "loss_pct": 0, "rtt_ms": None})
    zero = q.estimate({"codec": "PCMU", "jitter_ms": 1, "loss_pct": 0, "rtt_ms": 0})
    assert no_rtt == zero
