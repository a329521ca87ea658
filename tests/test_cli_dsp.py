"""`branchline dsp ...` run as real subprocesses on the files `dsp tone` writes: generate,
then detect; bad WAV files give one clear line and exit code 2, never a traceback."""

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from firmware import wavio

ROOT = Path(__file__).resolve().parents[1]


def dsp(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "firmware", "dsp", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def lines(proc):
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_tone_then_cpt_finds_it(tmp_path):
    out = tmp_path / "busy.wav"
    dsp("tone", "--plan", "uk", "busy", "--seconds", "4", out)
    x = wavio.read(out)
    assert x.size == 4 * 8000 and np.abs(x).max() > 1000
    events = lines(dsp("cpt", "--plan", "uk", out))
    assert events[0]["tone"] == "busy" and 0 < events[0]["t_ms"] < 2500


def test_tone_dtmf_then_dtmf_detects_the_digits(tmp_path):
    out = tmp_path / "digits.wav"
    dsp("tone", "dtmf:159#0*", out)
    digits = lines(dsp("dtmf", out))
    assert "".join(d["digit"] for d in digits) == "159#0*"
    for i, d in enumerate(digits):  # 100 ms on, 100 ms off
        assert d["start_ms"] == pytest.approx(200 * i, abs=15)
        assert d["end_ms"] - d["start_ms"] == pytest.approx(100, abs=15)


@pytest.mark.parametrize("standard", ["bell202", "v23"])
def test_tone_cid_then_cid_decodes_it(tmp_path, standard):
    out = tmp_path / "cid.wav"
    dsp("tone", "--standard", standard, "--datetime", "11221030", "cid:5551230100:ACME LTD", out)
    (msg,) = lines(dsp("cid", out))
    assert msg == {
        "standard": standard,
        "number": "5551230100",
        "name": "ACME LTD",
        "datetime": "11221030",
        "reason": None,
        "checksum_ok": True,
    }


def test_echo_writes_cancelled_near_end_and_erle_per_100ms(tmp_path):
    rng = np.random.default_rng(0)
    far = (rng.standard_normal(8000 * 2) * 2500).astype(np.int16)
    echo = np.convolve(far.astype(float), [0, 0, 0, 0.25, -0.1, 0.05])[: far.size]
    wavio.write(tmp_path / "far.wav", far)
    wavio.write(tmp_path / "near.wav", echo)
    proc = dsp("echo", "--far", tmp_path / "far.wav", "--near", tmp_path / "near.wav",
               "--out", tmp_path / "out.wav", "--tail-ms", "64")
    rows = lines(proc)
    assert [r["t_ms"] for r in rows] == list(range(100, 2001, 100))
    out = wavio.read(tmp_path / "out.wav")
    assert out.size == far.size
    assert rows[-1]["erle_db"] > 20  # a converged canceller removes a plain echo
    tail = slice(8000, None)
    measured = 10 * np.log10(np.sum(echo[tail] ** 2) / max(np.sum(out[tail].astype(float) ** 2), 1))
    assert measured > 20


def test_echo_far_and_near_of_different_length(tmp_path):
    wavio.write(tmp_path / "far.wav", np.zeros(800, dtype=np.int16))
    wavio.write(tmp_path / "near.wav", np.zeros(900, dtype=np.int16))
    proc = dsp("echo", "--far", tmp_path / "far.wav", "--near", tmp_path / "near.wav",
               "--out", tmp_path / "o.wav", check=False)
    assert proc.returncode == 2 and "same length" in proc.stderr


def _write_wav(path, rate, channels, width, n=800):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\x01" * n * channels * width)


def _bad_stereo(p):
    _write_wav(p, 8000, 2, 2)


def _bad_rate(p):
    _write_wav(p, 44100, 1, 2)


def _bad_24bit(p):
    _write_wav(p, 44100, 2, 3)


def _truncated(p):
    _write_wav(p, 8000, 1, 2, n=8000)
    p.write_bytes(p.read_bytes()[:1000])


def _not_wav(p):
    p.write_text("this is not audio\n")


def _missing(p):
    pass


@pytest.mark.parametrize(
    "make,words",
    [
        (_bad_stereo, "8000 Hz stereo 16-bit; expected 8000 Hz mono 16-bit"),
        (_bad_rate, "44100 Hz mono 16-bit; expected 8000 Hz mono 16-bit"),
        (_bad_24bit, "44100 Hz stereo 24-bit; expected 8000 Hz mono 16-bit"),
        (_truncated, "truncated"),
        (_not_wav, "not a PCM WAV file"),
        (_missing, "no such file"),
    ],
)
@pytest.mark.parametrize("tool", ["dtmf", "cid"])
def test_bad_wav_is_one_clear_line_exit_2(tmp_path, make, words, tool):
    path = tmp_path / "IN.wav"
    make(path)
    proc = dsp(tool, path, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and words in proc.stderr and str(path) in proc.stderr


def test_tone_rejects_unknown_names_with_the_choices(tmp_path):
    proc = dsp("tone", "--plan", "de", "howler", tmp_path / "x.wav", check=False)
    assert proc.returncode == 2 and "busy" in proc.stderr and "dtmf:DIGITS" in proc.stderr
    proc = dsp("tone", "dtmf:12x", tmp_path / "x.wav", check=False)
    assert proc.returncode == 2 and "0-9" in proc.stderr
    assert not (tmp_path / "x.wav").exists()
