"""The PCM highway between the Pi and the line chips: the clocking plan and the frame layout.

The Pi masters an 8 kHz frame of 32 bit clocks (256 kHz = 19.2 MHz / 75 exactly, where
2.048 MHz would need a jittery fractional divider), DSP mode B, two S16 channels each
carrying two 8-bit G.711 slots: four ports, slot n at bit clocks 8n..8n+7, the start
count each chip is programmed with. The clock runs continuously from before chip bring-up
(the chips' PLLs lock to PCLK). `clock_master = "card"` is the alternative, not the
default: bcm2835-i2s warns that consumer mode with DSP mode B is unstable.
Sources: Linux sound/soc/bcm/bcm2835-i2s.c (2 channels, 1024-clock frames, the clock only
while a stream runs unless SND_SOC_DAIFMT_CONT), soc-core.c; DAHDI wctdm.c (8 x port into
the ProSLIC's DR2-5 and the DAA's 34-37); image/overlays/branchline-card-overlay.dts.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

FRAME_SYNC_HZ = 8000
FRAME_BITS = 32  # bit clocks per frame
BCLK_HZ = FRAME_SYNC_HZ * FRAME_BITS  # 256 kHz
PI_OSC_HZ = 19_200_000
PI_BCLK_DIVIDER = PI_OSC_HZ // BCLK_HZ  # 75, exact: PI_OSC_HZ % BCLK_HZ == 0
SLOT_BITS = 8  # one G.711 byte per port per frame
SLOTS = FRAME_BITS // SLOT_BITS  # 4 ports per bus
ALSA_CHANNELS = 2  # what the Pi's PCM block exchanges: two S16 channels
CHANNEL_BITS = FRAME_BITS // ALSA_CHANNELS  # 16: two slots per channel
LAWS = ("ulaw", "alaw")
# What an idle slot carries: the code of a zero sample, i.e. G.711 silence (ITU-T G.711
# tables: mu-law positive zero is 0xFF; A-law 0x80 with the even bits inverted, 0xD5).
SILENCE = {"ulaw": 0xFF, "alaw": 0xD5}
CLOCK_MASTERS = ("pi", "card")
DEFAULT_CLOCK_MASTER = "pi"  # exact 256 kHz from the Pi's crystal, no part on the card


def pi_divider(bclk_hz: int) -> float:
    """The divider the Pi's clock manager needs from its 19.2 MHz oscillator; a
    fractional one is approximated by MASH noise shaping (jitter on PCLK)."""
    return PI_OSC_HZ / bclk_hz


def integer_divider(bclk_hz: int) -> int | None:
    """The exact integer divider for `bclk_hz`, or None when there is none."""
    return PI_OSC_HZ // bclk_hz if PI_OSC_HZ % bclk_hz == 0 else None


def slot_start(slot: int) -> int:
    """The bit clock (PCLK count after frame sync) where `slot` begins: what a chip's
    transmit and receive start count registers are programmed with."""
    if not 0 <= slot < SLOTS:
        raise ValueError(f"timeslot {slot}: a {FRAME_BITS}-bit frame has slots 0..{SLOTS - 1}")
    return slot * SLOT_BITS


class HighwayDevice(Protocol):
    """A chip on the simulated PCM highway.

    Every 20 ms the highway calls, for `n` frames (160):
      pcm_transmit(n) -> (start_bit, bytes) or None: what the chip drives onto DTX: n
          bytes (uint8) starting at bit clock `start_bit` of each frame; None when it
          drives nothing (PCM off, no PCLK, no audio path).
      pcm_receive(words): the n frames as seen on DRX, one uint32 per frame, bit clock 0
          of the frame in the word's most significant bit; the chip takes its own byte
          at its receive start count.
    """

    def pcm_transmit(self, n: int) -> tuple[int, np.ndarray] | None: ...

    def pcm_receive(self, words: np.ndarray) -> None: ...


def place(words: np.ndarray, start_bit: int, data: np.ndarray) -> np.ndarray:
    """The mask of the bits `data` (uint8 per frame) occupies at `start_bit`, after
    OR-ing it into `words` (uint32 per frame, bit clock 0 in the MSB). A start that is
    not on a slot boundary straddles two slots, as on the wire."""
    if not 0 <= start_bit <= FRAME_BITS - SLOT_BITS:
        return np.zeros_like(words)  # beyond the frame: clocked out after the next sync
    shift = FRAME_BITS - SLOT_BITS - start_bit
    words |= data.astype(np.uint32) << np.uint32(shift)
    return np.full_like(words, np.uint32(0xFF << shift))


def take(words: np.ndarray, start_bit: int) -> np.ndarray:
    """The byte per frame a receiver with this start count latches (uint8)."""
    if not 0 <= start_bit <= FRAME_BITS - SLOT_BITS:
        return np.full(len(words), 0xFF, dtype=np.uint8)  # nothing clocked: DRX idles high
    shift = FRAME_BITS - SLOT_BITS - start_bit
    return ((words >> np.uint32(shift)) & np.uint32(0xFF)).astype(np.uint8)


def words_from_channels(frames: np.ndarray) -> np.ndarray:
    """(n, 2) int16 as the Pi sends them (channel 0 first on the wire) -> n uint32."""
    u = frames.astype(np.int16).view(np.uint16).astype(np.uint32)
    return (u[:, 0] << np.uint32(16)) | u[:, 1]


def channels_from_words(words: np.ndarray) -> np.ndarray:
    """n uint32 frames -> (n, 2) int16 as the Pi's capture delivers them."""
    hi = (words >> np.uint32(16)).astype(np.uint16)
    lo = (words & np.uint32(0xFFFF)).astype(np.uint16)
    return np.stack([hi, lo], axis=1).view(np.int16)


# Where each slot's byte sits in memory in an (n, 2) int16 frame array: channel c is the
# 16 bits of slots 2c (high byte: first on the wire) and 2c + 1, and S16_LE keeps the low
# byte first. The two calls below are the hot path (every period, in the core's reactor);
# they index bytes instead of shifting words, and agree with place()/take() on slot
# boundaries (tests/drivers/test_tdm.py checks that).
_SLOT_BYTE = (1, 0, 3, 2)


def _as_bytes(frames: np.ndarray) -> np.ndarray:
    """(n, 2) int16 -> (n, 4) uint8 view in S16_LE byte order."""
    return np.ascontiguousarray(frames, dtype="<i2").view(np.uint8).reshape(-1, 2 * ALSA_CHANNELS)


def slot_bytes(frames: np.ndarray, slot: int) -> np.ndarray:
    """The G.711 bytes of `slot` out of (n, 2) int16 capture frames."""
    slot_start(slot)  # range check
    return _as_bytes(frames)[:, _SLOT_BYTE[slot]].copy()


def pack_slots(slots: dict[int, np.ndarray], n: int, idle: int = 0xFF) -> np.ndarray:
    """(n, 2) int16 playback frames carrying each slot's G.711 bytes; unused slots idle."""
    out = np.full((n, 2 * ALSA_CHANNELS), idle, dtype=np.uint8)
    for slot, data in slots.items():
        slot_start(slot)  # range check
        out[:, _SLOT_BYTE[slot]] = data
    return out.view("<i2").reshape(n, ALSA_CHANNELS).astype(np.int16)
