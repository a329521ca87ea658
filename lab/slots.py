"""A Raspberry Pi's SD card as loop devices on backing files, for RAUC and the tryboot tests.

Partition numbers follow the box's layout (image/rauc/README.md):
  1 bootsel   FAT on the Pi, holds autoboot.txt. THIS KERNEL HAS NO vfat, so the lab makes it
              ext4 and mounts it (the backend only needs a directory with rename + fsync);
  2, 3        boot A / boot B: raw FAT images (mkfs.vfat, edited with mtools, never mounted);
  5, 6        root A / root B: ext4 with /etc/branchline-release VERSION=<v> and a marker;
  7           data: ext4, mounted (RAUC's data-directory, the box's config and records).
Devices are named like the Pi's (/dev/mmcblk0p<N>) in cmdline.txt; `Disk.device(N)` is the
loop device standing in for partition N. Sizes are a few MiB to stay fast. Needs root,
losetup, mkfs.ext4, mkfs.vfat and mtools (scripts/debian-test-packages.txt).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lab.kamailio import LabError

BOOTSEL, BOOT_A, BOOT_B, ROOT_A, ROOT_B, DATA = 1, 2, 3, 5, 6, 7
BOOT_OF = {"A": BOOT_A, "B": BOOT_B}
ROOT_OF = {"A": ROOT_A, "B": ROOT_B}
PI_DEVICE = "/dev/mmcblk0p{}"
BOOT_MIB, ROOT_MIB, SMALL_MIB = 4, 8, 8
BOOT_FILES = ("start4.elf", "kernel8.img", "cmdline.txt")
RELEASE = "etc/branchline-release"
MARKER = "etc/branchline-marker"
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def _run(*cmd: str, env: dict[str, str] | None = None, stdin: bytes | None = None) -> bytes:
    if shutil.which(cmd[0]) is None:
        raise LabError(f"{cmd[0]} is missing: apt-get install e2fsprogs dosfstools mtools util-linux")
    done = subprocess.run(cmd, input=stdin, capture_output=True, env=env, timeout=60, check=False)
    if done.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def blank(path: Path, mib: int) -> Path:
    with open(path, "wb") as out:
        out.truncate(mib * 1024 * 1024)
    return path


def cmdline_for(slot: str | None) -> str:
    """cmdline.txt of a boot slot; a bundle's carries @ROOT@/@SLOT@ for the install hook."""
    if slot is None:
        return "console=serial0,115200 root=@ROOT@ rootfstype=ext4 ro rauc.slot=@SLOT@\n"
    return f"console=serial0,115200 root={PI_DEVICE.format(ROOT_OF[slot])} rootfstype=ext4 ro rauc.slot={slot}\n"


def make_boot_image(path: Path, version: str, slot: str | None = None, mib: int = BOOT_MIB) -> Path:
    """A raw FAT boot image with stand-ins for start4.elf, kernel8.img and cmdline.txt."""
    blank(path, mib)
    _run("mkfs.vfat", "-n", "BOOT", str(path))
    with tempfile.TemporaryDirectory() as tmp:
        files = {"start4.elf": f"firmware stand-in {version}\n", "kernel8.img": f"kernel {version}\n",
                 "cmdline.txt": cmdline_for(slot), "config.txt": "arm_64bit=1\nenable_uart=1\n"}
        for name, text in files.items():
            (Path(tmp) / name).write_text(text)
            _run("mcopy", "-o", "-i", str(path), str(Path(tmp) / name), f"::{name}", env=MTOOLS_ENV)
    return path


def make_root_image(path: Path, version: str, marker: str = "", mib: int = ROOT_MIB) -> Path:
    """An ext4 root with /etc/branchline-release VERSION=<version> and /etc/branchline-marker."""
    blank(path, mib)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "etc").mkdir()
        (Path(tmp) / RELEASE).write_text(f"VERSION={version}\n")
        (Path(tmp) / MARKER).write_text(f"{marker or version}\n")
        _run("mkfs.ext4", "-q", "-F", "-d", tmp, str(path))
    return path


def fat_read(image_or_device: Path, name: str) -> str | None:
    """A file from a FAT image or device via mtools, or None when absent or not FAT."""
    done = subprocess.run(["mtype", "-i", str(image_or_device), f"::{name}"], capture_output=True,
                          env=MTOOLS_ENV, timeout=30, check=False)
    return done.stdout.decode(errors="replace") if done.returncode == 0 else None


def ext4_read(device: Path, name: str) -> str | None:
    """A file from an unmounted ext4 device via debugfs, or None when absent or not ext4."""
    done = subprocess.run(["debugfs", "-R", f"cat /{name}", str(device)], capture_output=True,
                          timeout=30, check=False)
    text = done.stdout.decode(errors="replace")
    return text if done.returncode == 0 and text and "not found" not in done.stderr.decode() else None


def attach(backing: Path) -> Path:
    return Path(_run("losetup", "--find", "--show", str(backing)).decode().strip())


def detach(device: Path) -> None:
    subprocess.run(["losetup", "-d", str(device)], capture_output=True, timeout=30, check=False)


def mount(device: Path, where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "ext4", str(device), str(where))


def unmount(where: Path) -> None:
    subprocess.run(["umount", str(where)], capture_output=True, timeout=30, check=False)


@dataclass
class Disk:
    """The SD card: backing files in `root`, one loop device per partition, two mounts."""

    root: Path
    devices: dict[int, Path] = field(default_factory=dict)
    mounts: list[Path] = field(default_factory=list)

    @property
    def bootsel(self) -> Path:
        return self.root / "mnt" / "bootsel"

    @property
    def data(self) -> Path:
        return self.root / "mnt" / "data"

    def backing(self, part: int) -> Path:
        return self.root / f"p{part}.img"

    def device(self, part: int) -> Path:
        return self.devices[part]

    def partition_of(self, pi_device: str) -> int | None:
        """The partition number a cmdline root= names (/dev/mmcblk0p<N>), or None."""
        prefix = PI_DEVICE.format("")
        tail = pi_device[len(prefix):] if pi_device.startswith(prefix) else ""
        return int(tail) if tail.isdigit() else None

    def create(self, version: str = "1.0.0", b_version: str | None = None) -> Disk:
        """Factory state: A holds `version`; B holds `b_version` or is blank (no boot files)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for part in (BOOTSEL, DATA):
            blank(self.backing(part), SMALL_MIB)
            _run("mkfs.ext4", "-q", "-F", str(self.backing(part)))
        make_boot_image(self.backing(BOOT_A), version, "A")
        make_root_image(self.backing(ROOT_A), version)
        if b_version is None:
            blank(self.backing(BOOT_B), BOOT_MIB)
            _run("mkfs.vfat", str(self.backing(BOOT_B)))
            blank(self.backing(ROOT_B), ROOT_MIB)
            _run("mkfs.ext4", "-q", "-F", str(self.backing(ROOT_B)))
        else:
            make_boot_image(self.backing(BOOT_B), b_version, "B")
            make_root_image(self.backing(ROOT_B), b_version)
        return self.attach_all()

    def attach_all(self) -> Disk:
        try:
            for part in (BOOTSEL, BOOT_A, BOOT_B, ROOT_A, ROOT_B, DATA):
                self.devices[part] = attach(self.backing(part))
            self.mount_all()
        except BaseException:
            self.close()
            raise
        return self

    def mount_all(self) -> None:
        for part, where in ((BOOTSEL, self.bootsel), (DATA, self.data)):
            mount(self.devices[part], where)
            self.mounts.append(where)

    def unmount_all(self) -> None:
        while self.mounts:
            unmount(self.mounts.pop())

    def close(self) -> None:
        """Unmount and detach everything this disk attached (safe to call twice)."""
        self.unmount_all()
        for part in list(self.devices):
            detach(self.devices.pop(part))

    def __enter__(self) -> Disk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tryboot_conf(self, path: Path) -> Path:
        """A tryboot.conf for the backend: bootsel mount and A=2, B=3."""
        path.write_text(f"bootsel={self.bootsel}\nA={BOOT_A}\nB={BOOT_B}\n")
        return path

    def release(self, slot: str) -> str | None:
        """VERSION= of a root slot (read with debugfs, unmounted), or None without a release file."""
        text = ext4_read(self.devices[ROOT_OF[slot]], RELEASE)
        if not text or not text.startswith("VERSION="):
            return None
        return text.strip().partition("=")[2]
