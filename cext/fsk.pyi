"""Types of cext/fsk.pyx (the caller-ID FSK modem kernels), for mypy."""

import numpy as np
from numpy.typing import NDArray

STANDARDS: dict[str, tuple[float, float]]
BAUD: int
WINDOW_S: dict[str, float]
CHAR: int
FRAMING_ERROR: int
CARRIER_ON: int
CARRIER_OFF: int

def tone_freqs(standard: str) -> tuple[float, float]: ...
def window_samples(standard: str, rate: int) -> int: ...
def fsk_modulate(bits: NDArray[np.uint8], mark_hz: float, space_hz: float, rate: int = ...,
                 amplitude: float = ..., baud: float = ...) -> NDArray[np.int16]: ...

class FskRx:
    standard: str
    rate: int
    def __init__(self, standard: str = ..., rate: int = ..., cd_on_dbm0: float = ...,
                 cd_off_dbm0: float = ..., mark_hz: float | None = ...,
                 space_hz: float | None = ..., baud: int = ...,
                 window: int | None = ...) -> None: ...
    def reset(self) -> None: ...
    @property
    def carrier(self) -> bool: ...
    @property
    def window(self) -> int: ...
    def process(self, samples: NDArray[np.int16]) -> list[tuple[int, int, float, int]]: ...
    def discriminator(self, samples: NDArray[np.int16]) -> tuple[NDArray[np.int64], NDArray[np.int64]]: ...
