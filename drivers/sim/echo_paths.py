"""Hybrid echo paths for the virtual central office: ITU-T G.168 Annex D models, and a
synthetic decaying response with a chosen bulk delay, length and ERL.

The G.168 coefficients below (models m1, m4, m5: sections D.2, D.5, D.6) are copied from
lab/data/g168_echo_paths.json (as transcribed there from spandsp's g168models.h), since
drivers must not import lab. `impulse_response()` scales a model to a wanted echo return
loss (ERL, dB, for a white/flat probe: -10*log10(sum(h^2))) and puts a bulk delay ahead
of it. Assumes 8 kHz.
"""

from __future__ import annotations

import numpy as np

RATE = 8000
G168_MODELS: dict[str, tuple[int, ...]] = {
    "m1": (  # G.168 D.2, 64 taps
        -436, -829, -2797, -4208, -17968, -11215, 46150, 34480, -10427, 9049, -1309, -6320,
        390, -8191, -1751, -6051, -3796, -4055, -3948, -2557, -3372, -1808, -2259, -1300,
        -1098, -618, -340, -61, 323, 419, 745, 716, 946, 880, 1014, 976,
        1033, 1091, 1053, 1042, 794, 831, 899, 716, 390, 313, 304, 304,
        73, -119, -109, -176, -359, -407, -512, -580, -704, -618, -685, -791,
        -772, -820, -839, -724,
    ),
    "m4": (  # G.168 D.5, 128 taps
        160, 312, -241, -415, 897, 908, -1326, -1499, 2405, 3347, -3624, -7733,
        4041, 14484, -1477, -21739, -4470, 25356, 11458, -19696, -11800, 5766, 789, 6633,
        14624, -6975, -17156, -187, 149, 1515, 14907, 4345, -7128, -2757, -10185, -7083,
        6850, 3944, 6969, 8694, -4068, -3852, -5793, -9371, 453, 1060, 3965, 9463,
        2393, 2784, -892, -7366, -3376, -5847, -2399, 3011, 1537, 6623, 4205, 1602,
        1592, -4752, -3646, -5207, -5577, -501, -1174, 4041, 5647, 4628, 7252, 2123,
        2654, -881, -4113, -3244, -7289, -3830, -4600, -2508, 431, -144, 4184, 2372,
        4617, 3576, 2382, 2839, -404, 539, -1803, -1401, -1705, -2269, -783, -1608,
        -220, -306, 257, 615, 225, 561, 8, 344, 127, -57, 182, 41,
        203, -111, 95, -79, 30, 84, -13, -68, -241, -68, -24, 19,
        -57, -24, 30, -68, 84, -155, -68, 19,
    ),
    "m5": (  # G.168 D.6, 96 taps
        293, 268, 475, 460, 517, 704, 581, 879, 573, 896, 604, 787,
        561, 538, 440, 97, 265, -385, 20, -938, -523, -1438, -1134, -1887,
        -1727, -1698, -4266, -22548, -43424, 2743, 25897, 7380, 21499, 11983, 10400, 11667,
        3889, 7241, 925, 2018, -821, -2068, -2236, -4283, -3406, -5022, -4039, -4842,
        -4104, -4089, -3582, -2978, -2734, -1805, -1608, -645, -495, 279, 471, 947,
        1186, 1438, 1669, 1640, 1901, 1687, 1803, 1543, 1566, 1342, 1163, 963,
        733, 665, 323, 221, -14, -107, -279, -379, -468, -513, -473, -588,
        -612, -652, -616, -566, -515, -485, -404, -344, -290, -202, -180, -123,
    ),
}


def erl_db(h: np.ndarray) -> float:
    """Echo return loss of a response for a flat-spectrum probe."""
    energy = float(np.sum(np.asarray(h, dtype=float) ** 2))
    return float("inf") if energy <= 0 else -10 * np.log10(energy)


def synthetic(length_ms: float, seed: int = 1) -> np.ndarray:
    """A hybrid-like response: a few sharp taps, then noise under an exponential decay
    that is 40 dB down at `length_ms`."""
    n = max(8, round(length_ms * RATE / 1000))
    rng = np.random.default_rng(seed)
    decay = np.exp(np.log(1e-2) * np.arange(n) / n)  # amplitude 40 dB down at the end
    h = rng.standard_normal(n) * decay
    h[:4] += (0.9, -0.6, 0.3, -0.1)
    return h


def impulse_response(model: str = "m1", erl: float = 10.0, delay_ms: float = 0.0,
                     length_ms: float = 16.0, seed: int = 1) -> np.ndarray:
    """The echo path h[k] (8 kHz): `model` (m1, m4, m5 or "synthetic" of `length_ms`,
    or "flat": one tap) scaled to `erl` dB, after `delay_ms` of bulk delay."""
    if model == "flat":
        shape = np.ones(1)
    elif model == "synthetic":
        shape = synthetic(length_ms, seed)
    elif model in G168_MODELS:
        shape = np.asarray(G168_MODELS[model], dtype=float)
    else:
        raise ValueError(f"echo model {model!r}: use flat, synthetic or one of {', '.join(G168_MODELS)}")
    shape = shape * 10 ** ((erl_db(shape) - erl) / 20)
    return np.concatenate([np.zeros(round(delay_ms * RATE / 1000)), shape])
