"""A model of the Raspberry Pi firmware's boot choice, written from Raspberry Pi's documentation.

It is deliberately independent of firmware/update/tryboot.py (its own parser) so that the
backend's output is judged by what the Pi would do, not by the backend's own idea of it.
Sources (raspberrypi/documentation):
- documentation/asciidoc/computers/config_txt/autoboot.adoc: autoboot.txt on partition 1,
  at most 512 bytes, filters [all], [none], [tryboot]; `boot_partition=`; `tryboot_a_b=1`
  loads the normal config.txt from the [tryboot] partition; `reboot "0 tryboot"`.
- documentation/asciidoc/computers/raspberry-pi/bootflow-2711.adoc "Fail-safe OS updates
  (TRYBOOT)": the tryboot flag is one-shot, cleared before the firmware starts, so a crash or
  reset boots the normal configuration.
- documentation/asciidoc/computers/configuration/device-tree.adoc: /chosen/bootloader
  `tryboot` and `partition` (32-bit cells) tell Linux how it was booted.
Where the documentation leaves a case open the model takes the stricter reading and says the
box is bricked: a missing, oversized or garbled autoboot.txt, or boot_partition=0/absent (the
docs' "first bootable FAT partition" fallback is not relied on). Only a real Pi's EEPROM and
firmware can confirm those cases. The bootsel partition is read through its mount (ext4
stand-in, see lab/slots.py); boot partitions with mtools, roots with debugfs.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lab.kamailio import LabError
from lab.slots import BOOT_FILES, RELEASE, Disk, ext4_read, fat_read

MAX_AUTOBOOT = 512
FILTERS = ("all", "none", "tryboot")


class Bricked(LabError):
    """The Pi would not boot: the firmware finds nothing it can start (said plainly)."""


@dataclass(frozen=True)
class Booted:
    """What the firmware booted: partitions, the flag, the kernel's command line, the version."""

    boot_partition: int
    tryboot: bool
    slot: str
    root_partition: int
    version: str
    cmdline: str


def parse_autoboot(text: str, tryboot: bool) -> dict[str, str]:
    """The properties that apply: [all] always, [tryboot] when the flag is set, [none] never."""
    props: dict[str, str] = {}
    applies = True  # before any filter, config.txt-style files behave like [all]
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        section = re.fullmatch(r"\[(\w+)\]", line)
        if section:
            if section.group(1) not in FILTERS:
                raise Bricked(f"autoboot.txt: filter [{section.group(1)}] is not supported there")
            applies = section.group(1) == "all" or (section.group(1) == "tryboot" and tryboot)
        elif re.fullmatch(r"\w+=\S*", line):
            key, _, value = line.partition("=")
            if applies:
                props[key] = value
        else:
            raise Bricked(f"autoboot.txt is garbled ({line[:40]!r}): the firmware cannot boot")
    return props


@dataclass
class PiFirmware:
    """The board: one-shot tryboot flag, the disk, and the device-tree folder it fills."""

    disk: Disk
    dt_dir: Path
    tryboot_flag: bool = False
    partition_arg: int = 0
    history: list[Booted] = field(default_factory=list)

    def request_reboot(self, arg: str = "0") -> None:
        """What `reboot "<arg>"` leaves for the firmware: a partition and the tryboot flag."""
        words = arg.split()
        self.partition_arg = int(words[0]) if words and words[0].isdigit() else 0
        self.tryboot_flag = "tryboot" in words[1:]

    def reboot(self, arg: str = "0") -> Booted:
        self.request_reboot(arg)
        return self.boot()

    def power_cycle(self) -> Booted:
        """A power cut or watchdog reset: nothing survives in RAM, the flag is gone."""
        self.tryboot_flag, self.partition_arg = False, 0
        return self.boot()

    def boot(self) -> Booted:
        """Choose and check the boot, consume the flag, publish the device-tree flags."""
        trying, forced = self.tryboot_flag, self.partition_arg
        self.tryboot_flag, self.partition_arg = False, 0  # one-shot, cleared either way
        self._clear_dt()
        partition = forced or self._autoboot_partition(trying)
        booted = self._check_partition(partition, trying)
        self._write_dt(booted)
        self.history.append(booted)
        return booted

    def _autoboot_partition(self, trying: bool) -> int:
        path = self.disk.bootsel / "autoboot.txt"
        try:
            data = path.read_bytes()
        except OSError:
            raise Bricked("no autoboot.txt on partition 1: nothing says which partition to boot") from None
        if len(data) > MAX_AUTOBOOT:
            raise Bricked(f"autoboot.txt is {len(data)} bytes; the firmware reads only {MAX_AUTOBOOT}")
        try:
            props = parse_autoboot(data.decode("ascii"), trying)
        except UnicodeDecodeError:
            raise Bricked("autoboot.txt is not text: the firmware cannot boot") from None
        if trying and props.get("tryboot_a_b") != "1":
            raise Bricked("tryboot without tryboot_a_b=1 wants tryboot.txt, which no slot has")
        value = props.get("boot_partition", "")
        if not value.isdigit() or int(value) == 0:
            raise Bricked(f"autoboot.txt names no boot_partition ({value or 'absent'}): not relied on")
        return int(value)

    def _check_partition(self, partition: int, trying: bool) -> Booted:
        if partition not in self.disk.devices:
            raise Bricked(f"boot_partition={partition} does not exist on this card")
        device = self.disk.device(partition)
        missing = [name for name in BOOT_FILES if fat_read(device, name) is None]
        if missing:
            raise Bricked(f"partition {partition} has no {', '.join(missing)}: it is not bootable")
        cmdline = (fat_read(device, "cmdline.txt") or "").strip()
        root = self._root_partition(cmdline, partition)
        version = self._root_version(root, partition)
        slot = re.search(r"rauc\.slot=(\S+)", cmdline)
        return Booted(partition, trying, slot.group(1) if slot else "", root, version, cmdline)

    def _root_partition(self, cmdline: str, partition: int) -> int:
        found = re.search(r"(?:^|\s)root=(\S+)", cmdline)
        root = self.disk.partition_of(found.group(1)) if found else None
        if root is None or root not in self.disk.devices:
            raise Bricked(f"partition {partition}'s cmdline.txt names no root we have: {cmdline!r}")
        return root

    def _root_version(self, root: int, partition: int) -> str:
        text = ext4_read(self.disk.device(root), RELEASE) or ""
        if not text.startswith("VERSION="):
            raise Bricked(f"partition {partition} boots root partition {root}, which holds no "
                          f"valid root file system: the kernel panics")
        return text.strip().partition("=")[2]

    def _clear_dt(self) -> None:
        shutil.rmtree(self.dt_dir, ignore_errors=True)
        self.dt_dir.mkdir(parents=True)

    def _write_dt(self, booted: Booted) -> None:
        (self.dt_dir / "tryboot").write_bytes(int(booted.tryboot).to_bytes(4, "big"))
        (self.dt_dir / "partition").write_bytes(booted.boot_partition.to_bytes(4, "big"))
