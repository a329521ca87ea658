# cython: language_level=3
"""G.711 mu-law and A-law encode/decode over whole buffers, bit-exact with ITU-T G.711.

Encoding reads a 64 KiB lookup table per law indexed by the 16-bit sample (built once at
import by the segment search of ITU-T G.191's reference coder: 16-bit input reduced to
14/13 bits, negatives by one's complement); decoding reads a 256-entry table. Both loops
run without the GIL. Inputs: int16 arrays (encode) and uint8 arrays or bytes (decode);
outputs are new NumPy arrays (uint8 codes, int16 samples). Stateless: G.711 has no memory.
"""

import numpy as np

from libc.stdint cimport int16_t, uint8_t, uint16_t


cdef uint8_t _ulaw_lut[65536]
cdef uint8_t _alaw_lut[65536]
cdef int16_t _ulaw_dec[256]
cdef int16_t _alaw_dec[256]


cdef inline int _top_bit(int v) noexcept nogil:
    cdef int n = -1
    while v:
        v >>= 1
        n += 1
    return n


cdef uint8_t _ulaw_one(int x) noexcept nogil:
    cdef int mag, seg, code
    mag = ((~x) >> 2) if x < 0 else (x >> 2)
    mag += 33                         # the mu-law bias makes the segments powers of two
    if mag > 8191:
        mag = 8191
    seg = _top_bit(mag) - 5
    code = (seg << 4) | ((mag >> (seg + 1)) & 0x0F)
    code = (~code) & 0x7F             # magnitude bits are sent inverted
    return <uint8_t>(code if x < 0 else code | 0x80)


cdef uint8_t _alaw_one(int x) noexcept nogil:
    cdef int mag, seg, code
    mag = ((~x) >> 4) if x < 0 else (x >> 4)
    if mag < 16:
        code = mag
    else:
        seg = _top_bit(mag) - 3
        code = (seg << 4) | ((mag >> (seg - 1)) & 0x0F)
    if x >= 0:
        code |= 0x80
    return <uint8_t>(code ^ 0x55)     # even bits inverted for the line


cdef int16_t _ulaw_expand(int code) noexcept nogil:
    cdef int c = (~code) & 0x7F
    cdef int seg = c >> 4
    cdef int v = (((c & 0x0F) << 3) + 0x84) << seg
    v -= 0x84
    return <int16_t>(v if code & 0x80 else -v)


cdef int16_t _alaw_expand(int code) noexcept nogil:
    cdef int c = code ^ 0x55
    cdef int seg = (c >> 4) & 7
    cdef int v = ((c & 0x0F) << 4) + 8
    if seg > 0:
        v = (v + 0x100) << (seg - 1)
    return <int16_t>(v if c & 0x80 else -v)


cdef void _build_tables() noexcept nogil:
    cdef int i
    for i in range(65536):
        _ulaw_lut[i] = _ulaw_one(<int16_t><uint16_t>i)
        _alaw_lut[i] = _alaw_one(<int16_t><uint16_t>i)
    for i in range(256):
        _ulaw_dec[i] = _ulaw_expand(i)
        _alaw_dec[i] = _alaw_expand(i)


_build_tables()


cdef void _encode(const int16_t[::1] pcm, uint8_t[::1] out, const uint8_t *lut) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(pcm.shape[0]):
        out[i] = lut[<uint16_t>pcm[i]]


cdef void _decode(const uint8_t[::1] codes, int16_t[::1] out, const int16_t *tab) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(codes.shape[0]):
        out[i] = tab[codes[i]]


def _as_pcm(pcm):
    return np.ascontiguousarray(pcm, dtype=np.int16)


def _as_codes(codes):
    if isinstance(codes, (bytes, bytearray, memoryview)):
        return np.frombuffer(codes, dtype=np.uint8)
    return np.ascontiguousarray(codes, dtype=np.uint8)


def ulaw_encode(pcm):
    """mu-law codes (uint8 array) of int16 samples."""
    cdef const int16_t[::1] x = _as_pcm(pcm)
    out = np.empty(x.shape[0], dtype=np.uint8)
    cdef uint8_t[::1] o = out
    with nogil:
        _encode(x, o, _ulaw_lut)
    return out


def alaw_encode(pcm):
    """A-law codes (uint8 array) of int16 samples."""
    cdef const int16_t[::1] x = _as_pcm(pcm)
    out = np.empty(x.shape[0], dtype=np.uint8)
    cdef uint8_t[::1] o = out
    with nogil:
        _encode(x, o, _alaw_lut)
    return out


def ulaw_decode(codes):
    """int16 samples of mu-law codes (uint8 array or bytes)."""
    cdef const uint8_t[::1] c = _as_codes(codes)
    out = np.empty(c.shape[0], dtype=np.int16)
    cdef int16_t[::1] o = out
    with nogil:
        _decode(c, o, _ulaw_dec)
    return out


def alaw_decode(codes):
    """int16 samples of A-law codes (uint8 array or bytes)."""
    cdef const uint8_t[::1] c = _as_codes(codes)
    out = np.empty(c.shape[0], dtype=np.int16)
    cdef int16_t[::1] o = out
    with nogil:
        _decode(c, o, _alaw_dec)
    return out
