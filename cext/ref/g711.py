"""Reference twin of cext.g711, written straight from ITU-T G.711's segment tables.

Slow and plain on purpose: the tests compare the Cython kernel with it for every 16-bit
input. 16-bit PCM is reduced to G.711's 14-bit (mu-law) or 13-bit (A-law) linear range by
dropping low bits, negative values by one's complement, as ITU-T G.191's reference
g711.c does, so that -1 and 0 land in the two codes nearest zero.
"""

import numpy as np

# mu-law: the end point of each of the 8 segments, in biased 14-bit magnitude units
# (magnitude + 33), and the quantisation step of each segment (G.711 table 2a).
ULAW_SEG_END = np.array([63, 127, 255, 511, 1023, 2047, 4095, 8191])
ULAW_STEP = np.array([2, 4, 8, 16, 32, 64, 128, 256])
ULAW_BIAS = 33

# A-law: segment end points, starts and steps in units of 16 (16-bit >> 4), i.e. G.711
# table 1a's 13-bit values halved (its steps 2, 2, 4 ... 128 become 1, 1, 2 ... 64).
ALAW_SEG_END = np.array([15, 31, 63, 127, 255, 511, 1023, 2047])
ALAW_SEG_START = np.array([0, 16, 32, 64, 128, 256, 512, 1024])
ALAW_STEP = np.array([1, 1, 2, 4, 8, 16, 32, 64])


def ulaw_encode(pcm) -> np.ndarray:
    x = np.asarray(pcm, dtype=np.int64)
    neg = x < 0
    mag14 = np.where(neg, (~x) >> 2, x >> 2)
    biased = np.minimum(mag14 + ULAW_BIAS, 8191)
    seg = np.searchsorted(ULAW_SEG_END, biased)
    seg_start = (ULAW_SEG_END[seg] + 1) // 2
    interval = (biased - seg_start) // ULAW_STEP[seg]
    # the 7 magnitude bits are sent inverted; the sign bit is 1 for positive inputs
    code = ~((seg << 4) | interval) & 0x7F
    return np.where(neg, code, code | 0x80).astype(np.uint8)


def ulaw_decode(codes) -> np.ndarray:
    raw = np.asarray(codes, dtype=np.int64)
    c = (~raw & 0x7F) | (raw & 0x80)
    seg = (c >> 4) & 7
    interval = c & 0x0F
    seg_start = (ULAW_SEG_END[seg] + 1) // 2
    # decoder output is the middle of the interval, unbiased, back in 16-bit units
    mag14 = seg_start + interval * ULAW_STEP[seg] + ULAW_STEP[seg] // 2 - ULAW_BIAS
    return np.where(c & 0x80, mag14 * 4, -mag14 * 4).astype(np.int16)


def alaw_encode(pcm) -> np.ndarray:
    x = np.asarray(pcm, dtype=np.int64)
    neg = x < 0
    mag = np.where(neg, (~x) >> 4, x >> 4)
    seg = np.searchsorted(ALAW_SEG_END, mag)
    interval = (mag - ALAW_SEG_START[seg]) // ALAW_STEP[seg]
    code = (seg << 4) | interval
    code = np.where(neg, code, code | 0x80)
    return (code ^ 0x55).astype(np.uint8)


def alaw_decode(codes) -> np.ndarray:
    c = np.asarray(codes, dtype=np.int64) ^ 0x55
    seg = (c >> 4) & 7
    interval = c & 0x0F
    twice_mid = 2 * (ALAW_SEG_START[seg] + interval * ALAW_STEP[seg]) + ALAW_STEP[seg]
    return np.where(c & 0x80, twice_mid * 8, -twice_mid * 8).astype(np.int16)
