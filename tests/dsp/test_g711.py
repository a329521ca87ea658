"""G.711 kernel (cext.g711) against the reference twin written from the standard's
segment tables, for every 16-bit input and every code; plus the standard's own values."""

import numpy as np
import pytest

from cext import g711
from cext.ref import g711 as ref
from lab.linemodel import level_dbm0

ALL_PCM = np.arange(-32768, 32768).astype(np.int16)
ALL_CODES = np.arange(256, dtype=np.uint8)
LAWS = ["ulaw", "alaw"]


def _fns(law):
    return getattr(g711, f"{law}_encode"), getattr(g711, f"{law}_decode")


@pytest.mark.parametrize("law", LAWS)
def test_g711_encode_every_16bit_input_matches_reference(law):
    enc, _ = _fns(law)
    np.testing.assert_array_equal(enc(ALL_PCM), getattr(ref, f"{law}_encode")(ALL_PCM))


@pytest.mark.parametrize("law", LAWS)
def test_g711_decode_every_code_matches_reference(law):
    _, dec = _fns(law)
    np.testing.assert_array_equal(dec(ALL_CODES), getattr(ref, f"{law}_decode")(ALL_CODES))


def test_g711_ulaw_decoder_values_per_segment():
    # G.711 table 2: decoder output of interval 0 of segments 0..7 (14-bit units), and
    # the largest output 8031; positive codes are 0x80..0xFF with inverted magnitude bits.
    firsts = [0, 33, 99, 231, 495, 1023, 2079, 4191]
    codes = [0xFF - 16 * s for s in range(8)]
    np.testing.assert_array_equal(g711.ulaw_decode(codes), np.array(firsts) * 4)
    np.testing.assert_array_equal(g711.ulaw_decode([0x80, 0x00]), [8031 * 4, -8031 * 4])


def test_g711_alaw_decoder_values_per_segment():
    # G.711 table 1: decoder output of interval 0 of segments 0..7 (13-bit units); 4032 max
    firsts = [1, 33, 66, 132, 264, 528, 1056, 2112]
    codes = [(0x80 | (s << 4)) ^ 0x55 for s in range(8)]
    np.testing.assert_array_equal(g711.alaw_decode(codes), np.array(firsts) * 8)
    np.testing.assert_array_equal(g711.alaw_decode([0xAA, 0x2A]), [4032 * 8, -4032 * 8])


def test_g711_alaw_even_bits_inverted():
    # the smallest positive and negative values are 0x80/0x00 before even-bit inversion
    np.testing.assert_array_equal(g711.alaw_encode([0, -1, 15, -16]), [0xD5, 0x55, 0xD5, 0x55])
    np.testing.assert_array_equal(g711.ulaw_encode([0, -1]), [0xFF, 0x7F])


@pytest.mark.parametrize("law", LAWS)
def test_g711_round_trip_codes(law):
    enc, dec = _fns(law)
    back = enc(dec(ALL_CODES))
    same = back == ALL_CODES
    if law == "ulaw":  # the two zeros 0x7F and 0xFF both decode to 0, which encodes as 0xFF
        assert set(ALL_CODES[~same]) == {0x7F}
    else:
        assert same.all()


@pytest.mark.parametrize("law", LAWS)
def test_g711_monotonic_and_error_within_half_step(law):
    enc, dec = _fns(law)
    y = dec(enc(ALL_PCM)).astype(np.int64)
    assert np.all(np.diff(y) >= 0)
    # the largest step is 1024 in 16-bit units (both laws); clipping aside, |err| <= step/2
    err = np.abs(y - ALL_PCM)
    assert err[np.abs(ALL_PCM.astype(np.int64)) < 32000].max() <= 512 + 4


@pytest.mark.parametrize("law", LAWS)
def test_g711_sine_sqnr(law):
    enc, dec = _fns(law)
    t = np.arange(8000)
    x = np.rint(22786 * 10 ** (-10 / 20) * np.sin(2 * np.pi * 1004 * t / 8000)).astype(np.int16)
    noise = dec(enc(x)).astype(float) - x
    sqnr = 10 * np.log10(np.sum(x.astype(float) ** 2) / np.sum(noise**2))
    assert sqnr > 35  # G.712 asks for >= 35 dB at -10 dBm0


@pytest.mark.parametrize(
    "law,dmw",
    [
        ("ulaw", [0x1E, 0x0B, 0x0B, 0x1E, 0x9E, 0x8B, 0x8B, 0x9E]),
        ("alaw", [0x34, 0x21, 0x21, 0x34, 0xB4, 0xA1, 0xA1, 0xB4]),
    ],
)
def test_g711_digital_milliwatt(law, dmw):
    enc, dec = _fns(law)
    x = dec(bytes(dmw) * 1000)  # G.711 table 5/6: the 1 kHz, 0 dBm0 test sequence
    assert abs(level_dbm0(x)) < 0.1
    spectrum = np.abs(np.fft.rfft(x))
    assert np.argmax(spectrum) * 8000 / x.size == pytest.approx(1000, abs=1)
    np.testing.assert_array_equal(enc(x[:8]), dmw)


def test_g711_accepts_bytes_lists_and_empty():
    assert g711.ulaw_decode(b"").size == 0
    assert g711.alaw_encode(np.zeros(0, dtype=np.int16)).size == 0
    np.testing.assert_array_equal(g711.ulaw_decode(b"\x80"), g711.ulaw_decode([0x80]))
    assert g711.ulaw_encode([1000]).dtype == np.uint8
