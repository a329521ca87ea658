"""Shared ctypes loader for spandsp (libspandsp.so.2), the reference the kernels are timed
and measured against in bench/ (not a runtime dependency). Debian's 0.0.6 echo canceller
prints per sample: wrap calls in `quiet_stdout()`, or `load(print_free=True)` the copy
scripts/spandsp/build.sh builds without the prints (see `load` for how both coexist).
"""

import contextlib
import ctypes
import os
import subprocess
import sys
from pathlib import Path

LIBNAME = "libspandsp.so.2"
BUILD_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "spandsp" / "build.sh"
PRINT_FREE_ENV = "BRANCHLINE_SPANDSP_PRINT_FREE"


class SpandspMissing(RuntimeError):
    """libspandsp is not installed on this machine."""


def load(print_free: bool = False) -> ctypes.CDLL:
    """Return the ctypes CDLL of Debian's libspandsp.so.2, or with print_free=True of the
    print-free build (Debian's is loaded first either way); raise SpandspMissing with the fix.
    Both copies share the soname, so each is opened RTLD_LOCAL and Debian's first: a later
    dlopen("libspandsp.so.2") finds Debian's, and neither copy's symbols bind into the other."""
    try:
        debian = ctypes.CDLL(LIBNAME, mode=os.RTLD_LOCAL)
    except OSError as exc:
        raise SpandspMissing(
            f"{LIBNAME} not found ({exc}): apt-get install libspandsp2 (libspandsp-dev for the C harness)"
        ) from None
    if not print_free:
        return debian
    path = print_free_path()
    if path is None:
        raise SpandspMissing(f"the print-free spandsp build is not cached: as root run {BUILD_SCRIPT} once")
    lib = ctypes.CDLL(str(path), mode=os.RTLD_LOCAL)
    if _address(lib, "echo_can_update") == _address(debian, "echo_can_update"):
        raise SpandspMissing(f"{path} resolved to Debian's {LIBNAME}: the two copies clash")
    return lib


def load_quiet() -> ctypes.CDLL:
    """The print-free build (echo canceller without its per-sample debug prints)."""
    return load(print_free=True)


def print_free_path() -> Path | None:
    """Path of the cached print-free libspandsp.so.2 (scripts/spandsp/build.sh), or None."""
    env = os.environ.get(PRINT_FREE_ENV)
    if env:
        return Path(env) if Path(env).is_file() else None
    try:
        res = subprocess.run([str(BUILD_SCRIPT), "--cached"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = res.stdout.strip()
    return Path(out) if res.returncode == 0 and out and Path(out).is_file() else None


def build_info(path: Path) -> dict:
    """The key=value lines build.sh wrote beside the library (source version, flags, ...)."""
    info = path.with_name("build-info.txt")
    if not info.is_file():
        return {}
    return dict(line.split("=", 1) for line in info.read_text().splitlines() if "=" in line)


def _address(lib: ctypes.CDLL, name: str) -> int:
    return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value


@contextlib.contextmanager
def quiet_stdout():
    """Send fd 1 to /dev/null for the duration (C-level prints included), then restore it.

    Meanwhile C stdout is fully buffered, as in any C program whose stdout is /dev/null:
    `python -u` / PYTHONUNBUFFERED=1 make it unbuffered, which would add a write() per debug
    line of Debian's echo canceller (measured: ~1130 instead of ~800 ns/sample at 128 ms).
    Its previous mode (glibc FILE flags) is put back afterwards."""
    sys.stdout.flush()
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    mode = _c_stdout_mode()
    try:
        os.dup2(devnull, 1)
        _set_c_stdout_mode(_IOFBF)
        yield
    finally:
        # flush C stdio buffers written while redirected so they do not leak out later
        with contextlib.suppress(Exception):
            ctypes.CDLL(None).fflush(None)
        if mode is not None:
            _set_c_stdout_mode(mode)
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


_IOFBF, _IOLBF, _IONBF = 0, 1, 2  # <stdio.h>
# Our own buffer for C stdout: setvbuf(_IOFBF) with NULL keeps an unbuffered stream's
# 1-byte buffer (a write() per character). Never freed: stdout may keep using it.
_STDOUT_BUF = ctypes.create_string_buffer(8192)


def _c_stdout_mode() -> int | None:
    """glibc stdout's buffering mode (_IO_UNBUFFERED 0x2, _IO_LINE_BUF 0x200 in _flags)."""
    try:
        flags = ctypes.c_int.from_address(ctypes.c_void_p.in_dll(ctypes.CDLL(None), "stdout").value).value
    except (ValueError, OSError):
        return None
    return _IONBF if flags & 0x2 else _IOLBF if flags & 0x200 else _IOFBF


def _set_c_stdout_mode(mode: int) -> None:
    with contextlib.suppress(ValueError, OSError):
        libc = ctypes.CDLL(None)
        libc.setvbuf.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t]
        buf = ctypes.cast(_STDOUT_BUF, ctypes.c_char_p) if mode != _IONBF else None
        libc.setvbuf(ctypes.c_void_p.in_dll(libc, "stdout").value, buf, mode, len(_STDOUT_BUF) if buf else 0)
