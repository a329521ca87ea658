"""Firmware images uploaded from the page, streamed to disk and checked, never installed
(that is the update agent's job). The page's script sends the file as the raw request body
(so the browser shows progress) with X-Filename, X-SHA256 and X-CSRF-Token headers; it goes
to data_dir/firmware/<name>.part while hashed and is renamed into place only when its
SHA-256 is the one typed in the form."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import IO, Any

from flask import Request, abort

MAX_FIRMWARE = 512 << 20
CHUNK = 64 << 10
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_HEX = re.compile(r"[0-9a-f]{64}")


def stored(data_dir: Path) -> list[tuple[str, int]]:
    """(name, size) of the images kept on the box."""
    folder = data_dir / "firmware"
    files = sorted(folder.glob("*.img*")) if folder.is_dir() else []
    return [(p.name, p.stat().st_size) for p in files if not p.name.endswith(".part")]


def receive(data_dir: Path, request: Request) -> dict[str, Any]:
    """Stream, hash and keep the uploaded image; the summary for the audit log.
    Refusals abort with the status and one line for the person."""
    name = (request.headers.get("X-Filename") or "").rsplit("/", 1)[-1]
    want = (request.headers.get("X-SHA256") or "").strip().lower()
    size = request.content_length or 0
    if not _NAME.fullmatch(name):
        abort(400, "file name: use letters, digits, '.', '-' or '_'")
    if not _HEX.fullmatch(want):
        abort(400, "SHA-256: give the 64 hex digits published with the image")
    if size <= 0 or size > MAX_FIRMWARE:
        abort(413, f"image: size must be 1 byte .. {MAX_FIRMWARE >> 20} MiB")
    folder = data_dir / "firmware"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if shutil.disk_usage(folder).free < size * 2:
        abort(413, "image: not enough room on the data partition")
    part = folder / f"{name}.part"
    got = _stream(request.stream, size, part)
    if got != want:
        part.unlink(missing_ok=True)
        abort(422, f"SHA-256 mismatch: the image hashes to {got}, not {want}; download it again")
    final = folder / (name if name.endswith((".img", ".img.xz", ".img.gz")) else name + ".img")
    os.replace(part, final)
    return {"ok": True, "file": final.name, "size": size, "sha256": got}


def _stream(body: IO[bytes], size: int, path: Path) -> str:
    digest, left = hashlib.sha256(), size
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        while left > 0:
            chunk = body.read(min(CHUNK, left))
            if not chunk:
                abort(400, "image: the upload stopped early; try again")
            os.write(fd, chunk)
            digest.update(chunk)
            left -= len(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return digest.hexdigest()
