"""The DTMF twist limits from end to end (issue 10 part 1): the detector's two named limits
(row_above_column_max_db, column_above_row_max_db) in the kernel and its NumPy twin, the
lines' config fields of the same names (dtmf_ + name) with their defaults and ranges, the
port media passing them to its detector, and `branchline dsp dtmf`'s options. The Q.24
acceptance of both directions on all 16 digits is in tests/dsp/test_q24.py.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cext import dtmf as kernel
from cext import toneplans
from cext.ref import dtmf as ref
from drivers.bus.pcm import SimPcmLink
from firmware import wavio
from firmware.core.config.schema import LINE, read_document
from firmware.media import PortMedia
from lab.linemodel import dbm0_to_rms, to_int16

ROOT = Path(__file__).resolve().parents[2]
RATE = 8000
KEYS = "123A456B789C*0#D"


def pair(key, row_dbm0, col_dbm0, on_ms=60, off_ms=60):
    i = KEYS.index(key)
    t = np.arange(int(on_ms * RATE / 1000)) / RATE
    x = dbm0_to_rms(row_dbm0) * np.sqrt(2) * np.sin(2 * np.pi * kernel.ROWS[i // 4] * t)
    x += dbm0_to_rms(col_dbm0) * np.sqrt(2) * np.sin(2 * np.pi * kernel.COLS[i % 4] * t)
    return to_int16(np.concatenate([x, np.zeros(int(off_ms * RATE / 1000))]))


def digits(det, x):
    return "".join(d for d, _, _ in det.process(x) + det.flush())


@pytest.mark.parametrize("module", [kernel, ref], ids=["kernel", "twin"])
@pytest.mark.parametrize(("row_db", "col_db", "found"), [
    (-6, -13.5, True),    # row 7.5 dB above the column: inside 8
    (-6, -14.5, False),   # 8.5: outside
    (-9.5, -6, True),     # column 3.5 dB above the row: inside 4
    (-10.5, -6, False),   # 4.5: outside
])
def test_twist_direction_kernel_and_twin(module, row_db, col_db, found):
    """Both implementations: just inside / just outside each limit, every digit."""
    x = np.concatenate([pair(k, row_db, col_db) for k in KEYS])
    assert digits(module.DtmfDetector(), x) == (KEYS if found else "")


def test_twist_limits_are_line_settings_with_defaults_and_ranges():
    doc, problems = read_document({})
    assert problems == []
    for line in doc["lines"].values():
        assert line["dtmf_row_above_column_max_db"] == 8.0
        assert line["dtmf_column_above_row_max_db"] == 4.0
    assert LINE["dtmf_row_above_column_max_db"].unit == "dB"
    bad = {"lines": {"fxo1": {"kind": "fxo", "chip": "daa0", "timeslot": 2,
                              "dtmf_row_above_column_max_db": 20,
                              "dtmf_column_above_row_max_db": -1}}}
    _, problems = read_document(bad)
    assert any(p.startswith("lines.fxo1.dtmf_row_above_column_max_db: 20") and "0..12 dB" in p
               for p in problems), problems
    assert any(p.startswith("lines.fxo1.dtmf_column_above_row_max_db: -1") and "0..8 dB" in p
               for p in problems), problems


def test_port_media_detector_uses_the_configured_limits():
    """A port built with a wider row-above-column limit finds a digit whose column tone
    is 10 dB down; one built with the defaults does not."""
    x = pair("6", -6, -16, on_ms=100, off_ms=100)
    heard = {}
    for name, kw in (("default", {}), ("wide", {"dtmf_row_above_column_max_db": 12.0})):
        media = PortMedia("fxo1", SimPcmLink("fxo1").gateway, toneplans.plan("us"), **kw)
        heard[name] = digits(media._det, x)
    assert heard == {"default": "", "wide": "6"}


def dsp_dtmf(*args):
    return subprocess.run([sys.executable, "-m", "firmware", "dsp", "dtmf", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_cli_dsp_dtmf_twist_options(tmp_path):
    wav = tmp_path / "twist.wav"
    wavio.write(wav, np.concatenate([pair("5", -6, -16), pair("9", -12, -6)]))
    plain = dsp_dtmf(wav)
    assert plain.returncode == 0 and plain.stdout == ""
    wide = dsp_dtmf("--row-above-column-max-db", 11, "--column-above-row-max-db", 7, wav)
    assert [json.loads(line)["digit"] for line in wide.stdout.splitlines()] == ["5", "9"]
    bad = dsp_dtmf("--column-above-row-max-db", 9, wav)
    assert bad.returncode == 2 and "--column-above-row-max-db: 9 is out of range" in bad.stderr
    assert "Traceback" not in bad.stderr
