"""What the Raspberry Pi firmware tells the running system about how it booted.

The firmware publishes its boot choice in the device tree under /chosen/bootloader
(Raspberry Pi documentation, "Device Trees, overlays and parameters" -> firmware
parameters: https://www.raspberrypi.com/documentation/computers/configuration.html,
source raspberrypi/documentation documentation/asciidoc/computers/configuration/device-tree.adoc):
`tryboot` is 1 when the one-shot tryboot flag was set for this boot, `partition` is the
partition number the firmware booted from. Each is one big-endian 32-bit cell.

`BRANCHLINE_DT_DIR` points elsewhere in tests, where lab/pifirmware.py writes the same files.
"""

from __future__ import annotations

import os
from pathlib import Path

DT_DIR = Path(os.environ.get("BRANCHLINE_DT_DIR", "/proc/device-tree/chosen/bootloader"))


def _read_u32(path: Path) -> int | None:
    """The value of a one-cell device-tree property, or None when absent or not 4 bytes."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) != 4:
        return None
    return int.from_bytes(data, "big")


def tryboot_active(dt_dir: Path = DT_DIR) -> bool:
    """True when the firmware booted this time with the tryboot flag (the [tryboot] section)."""
    return _read_u32(dt_dir / "tryboot") == 1


def boot_partition(dt_dir: Path = DT_DIR) -> int | None:
    """The partition number the firmware booted from, or None when it does not say."""
    return _read_u32(dt_dir / "partition")
