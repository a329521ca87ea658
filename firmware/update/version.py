"""Which release this root file system is, and how two releases order. The image writes
VERSION=... into /etc/branchline-release in each root (one per slot), so the version
follows the slot the box booted; a development tree falls back to the package version.
Versions order as PEP 440 (packaging.version)."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

from packaging.version import InvalidVersion, Version

from firmware.update.rauc import Reason, UpdateError

RELEASE_ENV = "BRANCHLINE_RELEASE_FILE"
DEFAULT_RELEASE_FILE = "/etc/branchline-release"
UNKNOWN = "0"  # no release file, no installed package: older than any release


def release_file() -> Path:
    return Path(os.environ.get(RELEASE_ENV) or DEFAULT_RELEASE_FILE)


def running_version(path: Path | None = None) -> str:
    """VERSION= of the release file, else the installed package's version."""
    try:
        text = (path or release_file()).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "VERSION" and value.strip().strip("\"'"):
            return value.strip().strip("\"'")
    try:
        return metadata.version("branchline")
    except metadata.PackageNotFoundError:
        return UNKNOWN


def parse(text: str) -> Version:
    """A release version; UpdateError (CORRUPT) naming it when it is not PEP 440."""
    try:
        return Version(text)
    except InvalidVersion:
        raise UpdateError(Reason.CORRUPT, f"version {text!r} is not a release version like "
                          "1.4.2: the bundle's manifest needs [update] version=") from None


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as a is older than, the same as or newer than b."""
    va, vb = parse(a), parse(b)
    return (va > vb) - (va < vb)
