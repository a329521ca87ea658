"""Recordings of calls handled locally in an outage (survive.record_calls), in fake time:
the caller on the left channel and the box's side on the right, DTMF masked, the file
indexed in the outbox with the call's CDR UUID; off by default; a recording a power cut
left half written is completed and indexed at the next start.
"""

import struct
from pathlib import Path

import numpy as np

from cext.dtmf import DtmfDetector, dtmf_samples
from cext.g711 import ulaw_decode
from firmware.cdr import CdrStore
from firmware.survive import prompts, recording
from lab.simcloud import dominant_hz
from tests.survive.test_continuity import pstn_call

CALLER_HZ, AGENT_HZ = 900.0, 1200.0
KEY = dtmf_samples("5", on_ms=150, off_ms=50, level_dbm0=-10.0)


def _sine(hz: float, seconds: float, rate: int, amp: float = 6000.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.round(amp * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def _read(path) -> tuple[dict, np.ndarray, np.ndarray]:
    """Parse the stereo mu-law WAV ourselves (Python's wave reads PCM only)."""
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:16] == b"WAVEfmt " and raw[38:42] == b"fact"
    assert raw[50:54] == b"data" and struct.unpack("<I", raw[4:8])[0] == len(raw) - 8
    tag, channels, rate, _bps, align, bits, _cb = struct.unpack("<HHIIHHH", raw[20:38])
    size = struct.unpack("<I", raw[54:58])[0]
    assert size == len(raw) - recording.HEADER_BYTES
    pcm = np.asarray(ulaw_decode(raw[58:]))
    info = {"tag": tag, "channels": channels, "rate": rate, "align": align, "bits": bits,
            "frames": struct.unpack("<I", raw[46:50])[0]}
    return info, pcm[0::2], pcm[1::2]


def _outage_call_at_headset(r):
    pstn_call(r)
    r.cloud.wan(False)
    r.run(14.0)  # past the 10 s blip window: announcement, then the headset answers
    assert r.state("headset") == "CONNECTED" and r.state("fxo1") == "CONNECTED"


def test_a_call_handled_locally_is_recorded_both_ways_and_queued(srig):
    r = srig(survive__record_calls=True, calls__headset_auto_answer=True)
    _outage_call_at_headset(r)
    hs = r.board.headset
    r.co().play(np.concatenate([_sine(CALLER_HZ, 2.0, 8000),
                                KEY]))
    hs.speak(_sine(AGENT_HZ, 2.0, hs.rate))
    r.run(2.6)
    r.co().disconnect()
    r.run(2.0)
    assert r.state("fxo1") == "IDLE"

    rows = [q for q in r.store.pending(1000) if q["kind"] == "recording"]
    assert len(rows) == 1
    row = rows[0]
    cdr = next(c for c in r.store.list(limit=50) if c["port"] == "fxo1"
               and c["uuid"] == row["body"]["call_uuid"])
    assert cdr["ani"] == "2015550123" and row["body"]["port"] == "fxo1"
    assert row["file_bytes"] == row["body"]["bytes"] > 0

    path = Path(row["path"])
    assert path.name == f"{cdr['uuid']}.wav" and not list(path.parent.glob("*.part"))
    info, left, right = _read(path)
    assert (info["tag"], info["channels"], info["rate"], info["bits"]) == (7, 2, 8000, 8)
    assert info["frames"] == len(left) == len(right)
    seconds = len(left) / 8000
    assert 5.0 < seconds < 9.0, seconds  # from the fallback's start to the line's release
    assert abs(row["body"]["seconds"] - seconds) < 0.05
    # The announcement went to the caller: on the right channel, at the start.
    assert abs(dominant_hz(right[:1600]) - dominant_hz(prompts.announce("tones")[:1600])) < 25
    # The conversation: the caller on the left, the headset agent on the right.
    loud = np.flatnonzero(np.abs(left.astype(int)) > 3000)
    talk = slice(loud[0] + 800, loud[0] + 800 + 8000)  # a second into the caller's tone
    assert abs(dominant_hz(left[talk]) - CALLER_HZ) < 20
    assert abs(dominant_hz(right[talk]) - AGENT_HZ) < 20
    # The caller keyed a digit after talking: masked, as it is for the cloud.
    assert [d for d, _s, _e in DtmfDetector().process(KEY)] == ["5"]  # what was keyed
    assert DtmfDetector().process(left) == []


def test_recording_is_off_by_default(srig):
    r = srig(calls__headset_auto_answer=True)
    _outage_call_at_headset(r)
    r.co().disconnect()
    r.run(2.0)
    assert [q for q in r.store.pending(1000) if q["kind"] == "recording"] == []
    assert not list(r.store.recordings_dir.glob("*.wav*"))


def test_a_recording_cut_by_a_power_failure_is_completed_at_the_next_start(tmp_path):
    store = CdrStore(tmp_path / "cdr.db")
    rec = recording.Recording(store.recordings_dir, "3f1c0de0-0000-4000-8000-000000000001",
                              "fxo1", "2015550123", 1_795_000_000.0)
    for _ in range(50):  # 1 s both ways, then the power goes
        rec.from_line(_sine(CALLER_HZ, 0.02, 8000))
        rec.to_line(_sine(AGENT_HZ, 0.02, 8000))
    rec._file.flush()
    store.close()

    store = CdrStore(tmp_path / "cdr.db")  # the next start
    assert recording.recover(store) == 1
    row = next(q for q in store.pending(100) if q["kind"] == "recording")
    assert row["body"]["call_uuid"] == "3f1c0de0-0000-4000-8000-000000000001"
    assert row["body"]["recovered"] is True
    info, left, right = _read(tmp_path / "recordings" / f"{row['body']['call_uuid']}.wav")
    assert info["frames"] == len(left) == 8000
    assert abs(dominant_hz(left) - CALLER_HZ) < 20 and abs(dominant_hz(right) - AGENT_HZ) < 20
    assert recording.recover(store) == 0  # nothing left to complete
    store.close()
