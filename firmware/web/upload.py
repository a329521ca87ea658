"""Firmware bundles uploaded from the page, streamed to disk and checked; installing one is
the update service's job (pages.py hands it the stored file). The page's script sends the
file as the raw request body (so the browser shows progress) with X-Filename, X-SHA256 and
X-CSRF-Token headers; it goes to data_dir/firmware/<name>.part while hashed and is renamed
into place only when its SHA-256 is the one typed in the form. RAUC bundles end in
.raucb; older raw images (.img, .img.xz, .img.gz) are still kept but cannot be installed.
Only the newest KEEP files stay (never the one the update service is working on)."""

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
KEEP = 2
BUNDLE = ".raucb"
IMAGES = (".img", ".img.xz", ".img.gz")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_HEX = re.compile(r"[0-9a-f]{64}")


def folder(data_dir: Path) -> Path:
    return data_dir / "firmware"


def _kept(data_dir: Path) -> list[Path]:
    """The stored files, newest first."""
    where = folder(data_dir)
    if not where.is_dir():
        return []
    files = [p for p in where.iterdir()
             if p.is_file() and p.name.endswith((BUNDLE, *IMAGES))]
    return sorted(files, key=lambda p: (p.stat().st_mtime, p.name), reverse=True)


def stored(data_dir: Path) -> list[dict[str, Any]]:
    """The files kept on the box, newest first: name, size, mtime, bundle (installable)."""
    return [{"name": p.name, "size": p.stat().st_size, "time": p.stat().st_mtime,
             "bundle": p.name.endswith(BUNDLE)} for p in _kept(data_dir)]


def bundle_path(data_dir: Path, name: str) -> Path:
    """The stored bundle called `name` (absolute: the update service runs elsewhere);
    aborts 400/404 with the fix when there is none."""
    if not _NAME.fullmatch(name) or not name.endswith(BUNDLE):
        abort(400, "bundle: choose one of the stored .raucb bundles (upload one first)")
    path = folder(data_dir).resolve() / name
    if not path.is_file():
        abort(404, f"bundle {name}: not stored on the box (any more); upload it again")
    return path


def prune(data_dir: Path, busy: str | None, keep: int = KEEP) -> list[str]:
    """Delete all but the newest `keep` files (never `busy`, the path the update service
    holds); the names deleted."""
    gone = []
    for path in _kept(data_dir)[keep:]:
        if busy and os.path.abspath(busy) == str(path.resolve()):
            continue
        path.unlink(missing_ok=True)
        gone.append(path.name)
    return gone


def _final_name(name: str) -> str:
    if name.endswith((BUNDLE, *IMAGES)):
        return name
    abort(400, f"file name {name}: a firmware bundle ends in {BUNDLE} "
               "(e.g. branchline-1.2.raucb); choose the bundle published for this box")


def receive(data_dir: Path, request: Request) -> dict[str, Any]:
    """Stream, hash and keep the uploaded bundle; the summary for the audit log.
    Refusals abort with the status and one line for the person."""
    name = (request.headers.get("X-Filename") or "").rsplit("/", 1)[-1]
    want = (request.headers.get("X-SHA256") or "").strip().lower()
    size = request.content_length or 0
    if not _NAME.fullmatch(name):
        abort(400, "file name: use letters, digits, '.', '-' or '_'")
    final = folder(data_dir) / _final_name(name)
    if not _HEX.fullmatch(want):
        abort(400, "SHA-256: give the 64 hex digits published with the bundle")
    if size <= 0 or size > MAX_FIRMWARE:
        abort(413, f"bundle: size must be 1 byte .. {MAX_FIRMWARE >> 20} MiB")
    final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if shutil.disk_usage(final.parent).free < size * 2:
        abort(413, "bundle: not enough room on the data partition; delete old bundles or "
                   "logs first")
    part = final.parent / f"{name}.part"
    got = _stream(request.stream, size, part)
    if got != want:
        part.unlink(missing_ok=True)
        abort(422, f"SHA-256 mismatch: the file hashes to {got}, not {want}; download it "
                   "again")
    os.replace(part, final)
    return {"ok": True, "file": final.name, "size": size, "sha256": got,
            "bundle": final.name.endswith(BUNDLE)}


def _stream(body: IO[bytes], size: int, path: Path) -> str:
    digest, left = hashlib.sha256(), size
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        while left > 0:
            chunk = body.read(min(CHUNK, left))
            if not chunk:
                abort(400, "bundle: the upload stopped early; try again")
            os.write(fd, chunk)
            digest.update(chunk)
            left -= len(chunk)
        os.fsync(fd)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return digest.hexdigest()
