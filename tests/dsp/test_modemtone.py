"""Fax and modem connect-tone detector (cext.modemtone), against its own grids: T.30 CNG,
V.25 ANS and ANS/ (phase reversals), V.8 ANSam and ANSam/ (15 Hz AM), V.21 channel-2 HDLC
flags; levels -6...-43 dBm0 found and below the floor not, frequency +-1 % found and
outside the tolerance not, reversals and AM classified right, through noise and G.711;
talk-off sets that must not trigger: espeak-ng speech (made at test time), synthetic
music, sweeps, DTMF and several countries' call-progress tones; the kernel reports
exactly what its NumPy twin (cext.ref.modemtone) does. Signals are made here."""

import functools
import shutil
import subprocess

import numpy as np
import pytest

from cext import toneplans
from cext.dtmf import dtmf_samples
from cext.modemtone import ModemTone, ModemToneDetector
from cext.ref import modemtone as ref
from cext.tones import tone_samples
from lab.linemodel import add_noise, dbm0_to_rms, g711_munge, to_int16
from lab.talkoff import speak

RATE = 8000
LEAD = np.zeros(1600)  # 0.2 s of line before each signal (T.30: CED after 0.2 s silence)
ANS_KINDS = {  # (am_index, reversals) -> expected tone
    (0.0, False): ModemTone.CED,
    (0.0, True): ModemTone.CED_PR,
    (0.2, False): ModemTone.ANSAM,
    (0.2, True): ModemTone.ANSAM_PR,
}


def detect(x, frame=160, det=None):
    det = det or ModemToneDetector(rate=RATE)
    x = to_int16(x)
    events = []
    for i in range(0, x.size, frame):
        events += det.process(x[i : i + frame])
    return events


def tones(x, **kw):
    return [t for t, _ in detect(x, **kw)]


def with_lead(x, tail_s=0.3):
    return np.concatenate([LEAD, x, np.zeros(int(tail_s * RATE))])


# --- API ---------------------------------------------------------------------------


def test_modem_tone_kind_and_echo_canceller_rule():
    kinds = {t.name: (t.kind, t.disables_echo_canceller) for t in ModemTone}
    assert kinds == {
        "CNG": ("fax", False), "CED": ("fax", False), "V21_PREAMBLE": ("fax", False),
        "CED_PR": ("modem", True), "ANSAM": ("modem", False), "ANSAM_PR": ("modem", True),
    }
    # the twin's enum is the same
    assert [(t.name, t.kind, t.disables_echo_canceller) for t in ref.ModemTone] == [
        (t.name, t.kind, t.disables_echo_canceller) for t in ModemTone]


def test_event_time_is_seconds_since_start_and_reset_restarts_it():
    x = with_lead(ref.ans_samples(2.0))
    det = ModemToneDetector()
    (tone, t1), = detect(x, det=det)
    assert tone is ModemTone.CED and 1.2 <= t1 <= 1.3  # 0.2 s lead + 1 s of tone
    det.reset()
    (_, t2), = detect(x, det=det)
    assert t2 == t1


def test_bad_rate_is_refused_with_the_rule():
    with pytest.raises(ValueError, match="multiple of 200"):
        ModemToneDetector(rate=8100)


# --- T.30 CNG ----------------------------------------------------------------------


@pytest.mark.parametrize("dbm0", [-6, -15, -25, -35, -43])
def test_t30_cng_levels(dbm0):
    events = detect(with_lead(ref.cng_samples(7.5, dbm0)))
    assert [t for t, _ in events] == [ModemTone.CNG, ModemTone.CNG, ModemTone.CNG]
    # reported 60 ms after each burst ends (10 ms guard + 50 ms edge), one per 3.5 s cycle
    assert [round(s, 2) for _, s in events] == [0.76, 4.26, 7.76]


@pytest.mark.parametrize("dbm0", [-50, -60])
def test_t30_cng_below_floor_not_detected(dbm0):
    assert tones(with_lead(ref.cng_samples(3.4, dbm0))) == []


@pytest.mark.parametrize("offset", [-38, -11, 11, 38])  # T.30 +-38 Hz; +-1 % = 11 Hz
def test_t30_cng_frequency_tolerance_detected(offset):
    assert tones(with_lead(ref.cng_samples(3.4, -20, freq=1100 + offset))) == [ModemTone.CNG]


@pytest.mark.parametrize("offset", [-150, -60, 60, 150])
def test_t30_cng_outside_tolerance_not_detected(offset):
    assert tones(with_lead(ref.cng_samples(3.4, -20, freq=1100 + offset))) == []


@pytest.mark.parametrize("on_s,found", [(0.3, False), (0.44, True), (0.5, True),
                                        (0.56, True), (0.7, False), (3.0, False)])
def test_t30_cng_burst_length(on_s, found):
    """0.5 s +-15 %: a shorter or longer 1100 Hz burst is not CNG."""
    x = with_lead(ref.cng_samples(on_s + 1.0, -15, on_s=on_s, off_s=3.0))
    assert tones(x) == ([ModemTone.CNG] if found else [])


def test_t30_cng_needs_silent_edges():
    """An 1100 Hz note of the right length inside other sound is not CNG."""
    burst = ref.cng_samples(0.5, -15)
    bed = ref.ans_samples(0.3, -17, freq=700)  # only 2 dB below the burst
    assert tones(with_lead(np.concatenate([bed, burst, bed]))) == []
    assert tones(with_lead(np.concatenate([burst, bed]))) == []


@pytest.mark.parametrize("cng_dbm0,erl_db", [(-12, 6), (-20, 15), (-30, 20)])
def test_t30_cng_over_the_echo_of_ringback(cng_dbm0, erl_db):
    """A fax on an FXS port calling out: its CNG with the hybrid echo of the far end's
    ringback (US, 2 x -19 dBm0 sent) underneath; the "silent" edges only need to be 6 dB
    below the burst."""
    x = with_lead(ref.cng_samples(7.5, cng_dbm0))
    echo = tone_samples("us", "ringback", x.size / RATE).astype(float) * 10 ** (-erl_db / 20)
    assert tones(x + echo) == [ModemTone.CNG] * 3


def test_t30_cng_with_noise_and_g711():
    x = add_noise(with_lead(ref.cng_samples(7.5, -30)), -50, np.random.default_rng(1))
    for law in ("ulaw", "alaw"):
        assert tones(g711_munge(to_int16(x), law)) == [ModemTone.CNG] * 3


# --- V.25 ANS / ANS/, V.8 ANSam / ANSam/ --------------------------------------------


@pytest.mark.parametrize("dbm0", [-6, -12, -20, -30, -40, -43])
@pytest.mark.parametrize("kind", list(ANS_KINDS))
def test_v25_v8_answer_tone_levels(kind, dbm0):
    am, pr = kind
    x = with_lead(ref.ans_samples(3.3, dbm0, am_index=am, reversals=pr))
    events = detect(x)
    assert [t for t, _ in events] == [ANS_KINDS[kind]]
    # with reversals: at 0.5 s of tone; without: at 1.0 s
    t_tone = events[0][1] - LEAD.size / RATE
    assert (0.5 <= t_tone <= 0.6) if pr else (1.0 <= t_tone <= 1.1), events


@pytest.mark.parametrize("dbm0", [-50, -60])
def test_v25_answer_tone_below_floor_not_detected(dbm0):
    for am, pr in ANS_KINDS:
        assert tones(with_lead(ref.ans_samples(3.3, dbm0, am_index=am, reversals=pr))) == []


@pytest.mark.parametrize("offset", [-21, -15, 15, 21])  # V.25 +-15 Hz; +-1 % = 21 Hz
@pytest.mark.parametrize("kind", list(ANS_KINDS))
def test_v25_answer_tone_frequency_tolerance_detected(kind, offset):
    am, pr = kind
    x = with_lead(ref.ans_samples(3.3, -20, freq=2100 + offset, am_index=am, reversals=pr))
    assert tones(x) == [ANS_KINDS[kind]]


@pytest.mark.parametrize("offset", [-100, -50, -35, 35, 50, 100])
def test_v25_answer_tone_outside_tolerance_not_detected(offset):
    for am, pr in ANS_KINDS:
        x = with_lead(ref.ans_samples(3.3, -20, freq=2100 + offset, am_index=am, reversals=pr))
        assert tones(x) == [], (am, pr)


@pytest.mark.parametrize("period_s", [0.425, 0.45, 0.475])
def test_v25_phase_reversals_every_450_ms_classified(period_s):
    """V.25: reversals every 450 +-25 ms; also with white noise at 20 dB S/N."""
    rng = np.random.default_rng(3)
    for am in (0.0, 0.2):
        x = with_lead(ref.ans_samples(3.3, -25, am_index=am, reversals=True, reversal_s=period_s))
        x = add_noise(x, -45, rng)
        assert tones(x) == [ANS_KINDS[(am, True)]]


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_v25_v8_classified_through_g711_and_noise(law):
    rng = np.random.default_rng(4)
    for (am, pr), want in ANS_KINDS.items():
        x = add_noise(with_lead(ref.ans_samples(3.3, -30, am_index=am, reversals=pr)), -50, rng)
        assert tones(g711_munge(to_int16(x), law)) == [want], (am, pr)


@pytest.mark.parametrize("am_index", [0.15, 0.2, 0.25])  # V.8: 0.2 +-0.05
def test_v8_ansam_modulation_index_range(am_index):
    for pr in (False, True):
        x = with_lead(ref.ans_samples(3.3, -20, am_index=am_index, reversals=pr))
        assert tones(x) == [ANS_KINDS[(0.2, pr)]]


def test_v25_answer_tone_reported_once_and_short_bursts_ignored():
    x = with_lead(ref.ans_samples(5.0, -15, reversals=True))
    assert tones(x) == [ModemTone.CED_PR]
    assert tones(with_lead(ref.ans_samples(0.4, -15))) == []  # too short for any call
    # a plain 2100 Hz tone of 0.8 s: no reversal seen, not yet 1 s -> nothing
    assert tones(with_lead(ref.ans_samples(0.8, -15))) == []


@pytest.mark.parametrize("start_s", [0.1, 0.3, 0.44, 0.47, 0.7, 1.2])
def test_v25_detector_attached_mid_tone_still_classifies(start_s):
    """The media path may open after the answer tone began: the reversals that follow
    still classify it (by their 450 ms spacing when the first seen is not on time)."""
    for (am, pr), want in ANS_KINDS.items():
        x = ref.ans_samples(3.3, -20, am_index=am, reversals=pr)[int(start_s * RATE):]
        assert tones(x) == [want], (am, pr)


def _jumps(seconds, at_s, jump_deg, am_index=0.0):
    """2100 Hz at -20 dBm0 whose phase jumps by jump_deg at the times at_s."""
    n = np.arange(int(seconds * RATE))
    phase = 2 * np.pi * 2100 * n / RATE
    for t in at_s:
        phase = phase + np.radians(jump_deg) * (n >= int(t * RATE))
    env = 1 + am_index * np.sin(2 * np.pi * 15 * n / RATE)
    return dbm0_to_rms(-20) * np.sqrt(2) * env * np.sin(phase)


@pytest.mark.parametrize("jump_deg", [180, 150, 90])
def test_g168_lone_phase_jumps_do_not_disable_the_echo_canceller(jump_deg):
    """Phase jumps off the 450 ms grid (line hits, packet-loss concealment) in a plain
    answer tone are not phase reversals: it stays CED / ANSAM (echo canceller kept)."""
    for am, want in ((0.0, ModemTone.CED), (0.2, ModemTone.ANSAM)):
        x = with_lead(_jumps(3.3, (0.2, 0.75, 1.3, 2.2), jump_deg, am))
        got = tones(x)
        assert got == [want] and not got[0].disables_echo_canceller, (am, got)


def test_ced_then_v21_preamble_as_a_fax_answers():
    """T.30 answering fax: CED (2.6-4 s), 75 ms silence, then V.21 flags and DIS."""
    rng = np.random.default_rng(5)
    bits = np.concatenate([ref.hdlc_flag_bits(38), rng.integers(0, 2, 200)])
    x = np.concatenate([ref.ans_samples(3.0, -12), np.zeros(600), ref.fsk_samples(bits, -12)])
    assert tones(with_lead(x)) == [ModemTone.CED, ModemTone.V21_PREAMBLE]


# --- V.21 channel 2 preamble ---------------------------------------------------------


def _preamble(n_flags, dbm0=-15, rng=None):
    """Mark idle, n flags, then random data (as after the T.30 preamble)."""
    rng = rng or np.random.default_rng(6)
    bits = np.concatenate([np.ones(10, dtype=np.int8), ref.hdlc_flag_bits(n_flags),
                           rng.integers(0, 2, 120).astype(np.int8)])
    return with_lead(ref.fsk_samples(bits, dbm0))


@pytest.mark.parametrize("dbm0", [-6, -20, -35, -43])
def test_v21_preamble_levels(dbm0):
    events = detect(_preamble(38, dbm0))
    assert [t for t, _ in events] == [ModemTone.V21_PREAMBLE]
    # 5 back-to-back flags after 10 bits of mark: ~ 0.2 s + 50 bits / 300
    assert 0.2 + 45 / 300 <= events[0][1] <= 0.2 + 60 / 300


def test_v21_preamble_below_floor_not_detected():
    assert tones(_preamble(38, -52)) == []


@pytest.mark.parametrize("snr_db", [20, 12, 8])
def test_v21_preamble_flags_at_300_bits_with_noise(snr_db):
    rng = np.random.default_rng(snr_db)
    x = add_noise(_preamble(38, -20, rng), -20 - snr_db, rng)
    assert tones(x) == [ModemTone.V21_PREAMBLE]


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_v21_preamble_through_g711(law):
    rng = np.random.default_rng(9)
    x = add_noise(_preamble(38, -30, rng), -50, rng)
    assert tones(g711_munge(to_int16(x), law)) == [ModemTone.V21_PREAMBLE]


def test_v21_one_report_per_preamble_even_in_noise():
    """A noisy preamble is reported once; a second one after 0.5 s of no carrier is
    reported again (T.30: each command/response has its own preamble)."""
    rng = np.random.default_rng(10)
    one = _preamble(38, -20, rng)
    x = np.concatenate([one, np.zeros(4000), one])
    assert tones(add_noise(x, -26, rng)) == [ModemTone.V21_PREAMBLE] * 2


def test_v21_four_flags_or_random_data_are_not_a_preamble():
    rng = np.random.default_rng(7)
    assert tones(_preamble(4)) == []
    data = ref.fsk_samples(rng.integers(0, 2, 900).astype(np.int8), -15)
    assert tones(with_lead(data)) == []


@pytest.mark.parametrize("offset", [-8, 8])
def test_v21_preamble_with_frequency_offset(offset):
    bits = np.concatenate([np.ones(10, dtype=np.int8), ref.hdlc_flag_bits(38)])
    x = ref.fsk_samples(bits, -20, mark=1650 + offset, space=1850 + offset)
    assert tones(with_lead(x)) == [ModemTone.V21_PREAMBLE]


# --- talk-off ----------------------------------------------------------------------

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please hold the line, your call is important to us.",
    "She sells sea shells by the sea shore, eleven twelve thirteen.",
    "Would you like to leave a message after the tone? Press one for sales.",
)
VOICES = (("en", 160, 50), ("en+f3", 140, 80), ("de", 170, 40), ("fr+f2", 180, 99),
          ("en-us", 220, 20))


@functools.cache
def speech():
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng not found: install the Debian package 'espeak-ng' "
                    "(scripts/debian-test-packages.txt) to make the talk-off corpus")
    parts = [speak(v, s, p, text) for v, s, p in VOICES for text in SENTENCES]
    return np.concatenate(parts)


def at_level(x, dbm0):
    active = np.abs(x) > np.max(np.abs(x)) * 0.01
    return x * dbm0_to_rms(dbm0) / np.sqrt(np.mean(x[active] ** 2))


@pytest.mark.parametrize("dbm0", [-6, -20, -35])
@pytest.mark.parametrize("law", [None, "ulaw"])
def test_talkoff_speech(dbm0, law):
    x = to_int16(at_level(speech(), dbm0))
    if law:
        x = g711_munge(x, law)
    assert speech().size / RATE > 45
    assert tones(x) == []


def _note(freq, seconds, harmonics=(1.0, 0.5, 0.33, 0.25), vibrato=0.0):
    t = np.arange(int(seconds * RATE)) / RATE
    ph = 2 * np.pi * freq * t + vibrato * np.sin(2 * np.pi * 5.5 * t)
    env = np.minimum(1, t / 0.02) * np.exp(-t * 1.0)
    return env * sum(a * np.sin((k + 1) * ph) for k, a in enumerate(harmonics))


def music(rng):
    """Chords (2-4 notes) and melodies of harmonic notes 220-1760 Hz, and harmonic series
    whose partials land on 1100 and 2100 Hz (fundamentals 100, 150, 175, 350, 525, 700 Hz);
    about 40 s."""
    scale = 220.0 * 2 ** (np.arange(37) / 12)
    parts = []
    for _ in range(25):
        chord = rng.choice(scale, size=int(rng.integers(2, 5)), replace=False)
        parts.append(sum(_note(f, 0.8, vibrato=rng.uniform(0, 0.3)) for f in chord))
        parts.append(np.concatenate([_note(f, 0.2) for f in rng.choice(scale, 4)]))
    for f0 in (100.0, 150.0, 175.0, 350.0, 525.0, 700.0):
        k = np.arange(1, int(3800 / f0) + 1)
        parts.append(_note(f0, 1.5, harmonics=tuple(1.0 / k)))
    return np.concatenate(parts)


def sweeps():
    out = []
    for seconds in (0.5, 2.0, 8.0):
        t = np.arange(int(seconds * RATE)) / RATE
        f0, f1 = 300.0, 3400.0
        ph = 2 * np.pi * f0 * seconds / np.log(f1 / f0) * ((f1 / f0) ** (t / seconds) - 1)
        out += [np.sin(ph), np.sin(ph) + 0.5 * np.sin(2 * ph) + 0.3 * np.sin(3 * ph)]
    return np.concatenate(out)


@pytest.mark.parametrize("dbm0", [-6, -20])
def test_talkoff_music_and_sweeps(dbm0):
    rng = np.random.default_rng(2026)
    for sig in (music(rng), sweeps()):
        assert tones(at_level(sig, dbm0)) == []


def test_talkoff_dtmf_digits():
    x = np.concatenate([dtmf_samples("0123456789*#ABCD" * 3, on, on, -7) for on in (50, 100, 500)])
    assert tones(x) == []


@pytest.mark.parametrize("country", ["us", "uk", "de", "fr", "in", "au"])
def test_talkoff_call_progress_tones(country):
    plan = toneplans.plan(country)
    x = np.concatenate([tone_samples(country, name, 8.0) for name in plan.tones])
    assert tones(x) == []


def test_talkoff_control_tone_inside_speech_is_found():
    """Control: the same material with a real ANSam/ and CNG after it is not silent."""
    x = at_level(speech()[: 8 * RATE], -15)
    x = np.concatenate([x, np.zeros(1600), ref.ans_samples(3.3, -15, am_index=0.2, reversals=True),
                        np.zeros(1600), ref.cng_samples(1.0, -15)])
    assert tones(x) == [ModemTone.ANSAM_PR, ModemTone.CNG]


# --- kernel vs NumPy twin ------------------------------------------------------------


def _twin_events(x, frame):
    det = ref.ModemToneDetector(rate=RATE)
    out = []
    for i in range(0, x.size, frame):
        out += [(t.name, s) for t, s in det.process(x[i : i + frame])]
    return out


@pytest.mark.parametrize("frame", [160, 80, 1234])
def test_kernel_reports_what_the_reference_twin_does(frame):
    rng = np.random.default_rng(8)
    bits = np.concatenate([ref.hdlc_flag_bits(20), rng.integers(0, 2, 100)])
    parts = [at_level(speech()[: 3 * RATE], -20), ref.cng_samples(4.0, -25, freq=1120)]
    for (am, pr) in ANS_KINDS:
        parts += [np.zeros(800), ref.ans_samples(2.0, -33, freq=2088, am_index=am, reversals=pr)]
    parts += [np.zeros(800), ref.fsk_samples(bits, -30), np.zeros(800)]
    x = to_int16(add_noise(np.concatenate(parts), -55, rng))
    ours = [(t.name, s) for t, s in detect(x, frame=frame)]
    assert ours == _twin_events(x, frame)
    assert [n for n, _ in ours] == ["CNG", "CNG", "CED", "CED_PR", "ANSAM", "ANSAM_PR",
                                    "V21_PREAMBLE"]
    # and the framing does not matter
    assert ours == [(t.name, s) for t, s in detect(x, frame=x.size)]


def test_kernel_and_twin_agree_on_random_framing_and_talkoff_material():
    rng = np.random.default_rng(11)
    x = to_int16(np.concatenate([at_level(speech()[: 6 * RATE], -10), at_level(sweeps(), -15),
                                 ref.ans_samples(1.6, -25, am_index=0.2, reversals=True)]))
    det, twin = ModemToneDetector(), ref.ModemToneDetector()
    ours, theirs, i = [], [], 0
    while i < x.size:
        n = int(rng.integers(1, 700))
        ours += [(t.name, s) for t, s in det.process(x[i : i + n])]
        theirs += [(t.name, s) for t, s in twin.process(x[i : i + n])]
        i += n
    assert ours == theirs == [("ANSAM_PR", ours[0][1])]


@pytest.mark.parametrize("rate", [16000])
def test_wideband_rate(rate):
    x = np.concatenate([np.zeros(rate // 5), ref.ans_samples(2.0, -20, rate=rate, reversals=True)])
    det = ModemToneDetector(rate=rate)
    assert [t for t, _ in det.process(to_int16(x))] == [ModemTone.CED_PR]


def test_cli_dsp_modem_prints_one_json_line_per_tone(tmp_path):
    """`branchline dsp modem IN.wav`, as a subprocess, on a CNG then an ANSam/ file."""
    import json
    import sys
    from pathlib import Path

    from firmware import wavio

    wav = tmp_path / "fax.wav"
    x = np.concatenate([LEAD, ref.cng_samples(3.4, -20),
                        ref.ans_samples(3.3, -15, am_index=0.2, reversals=True)])
    wavio.write(wav, to_int16(x))
    proc = subprocess.run([sys.executable, "-m", "firmware", "dsp", "modem", str(wav)],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(g["tone"], g["kind"], g["disables_echo_canceller"]) for g in got] == [
        ("CNG", "fax", False), ("ANSAM_PR", "modem", True)]
    assert got[0]["t_ms"] == 760.0
