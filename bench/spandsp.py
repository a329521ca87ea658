"""Shared ctypes loader for spandsp (libspandsp.so.2), the reference the kernels are timed
and measured against in bench/. Benchmarks only: spandsp is not a runtime dependency.

Assumes Debian's libspandsp2 (0.0.6). Its echo canceller prints debug lines to stdout for
every sample; wrap calls into it in `quiet_stdout()` so fd 1 goes to /dev/null meanwhile.
"""

import contextlib
import ctypes
import os
import sys

LIBNAME = "libspandsp.so.2"


class SpandspMissing(RuntimeError):
    """libspandsp is not installed on this machine."""


def load() -> ctypes.CDLL:
    """Return the ctypes CDLL of libspandsp.so.2, or raise SpandspMissing with the fix."""
    try:
        return ctypes.CDLL(LIBNAME)
    except OSError as exc:
        raise SpandspMissing(
            f"{LIBNAME} not found ({exc}): apt-get install libspandsp2 (libspandsp-dev for the C harness)"
        ) from None


@contextlib.contextmanager
def quiet_stdout():
    """Send fd 1 to /dev/null for the duration (C-level prints included), then restore it."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        # flush C stdio buffers written while redirected so they do not leak out later
        with contextlib.suppress(Exception):
            ctypes.CDLL(None).fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
