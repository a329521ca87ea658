"""Uploads: a config backup (multipart form) and a firmware image (streamed XHR body).

Firmware: the page's script sends the file as the raw request body (so the browser
reports upload progress) with X-Filename, X-SHA256 and X-CSRF-Token headers. The body
is streamed to data_dir/firmware/<name>.part in 64 KiB chunks while hashed; when the
SHA-256 matches the one typed in the form it is renamed into place, else deleted.
Nothing is flashed here: installing an image is the update agent's job (issue 5), and
the page says so.

Assumes uploads fit MAX_FIRMWARE and the data partition has room (checked up front).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil

from firmware.web.html import esc
from firmware.web.server import HttpError

MAX_FIRMWARE = 512 << 20
CHUNK = 64 << 10
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_HEX = re.compile(r"[0-9a-f]{64}")


def multipart_file(req, name: str) -> bytes:
    """The bytes of one file field of the request's multipart/form-data form."""
    if name not in req.files:
        raise HttpError(400, f"{name}: no file in the form; choose a file and try again")
    return req.files[name]


def firmware_page(app, req) -> str:
    files = sorted((app.data_dir / "firmware").glob("*.img*")) if (
        app.data_dir / "firmware").is_dir() else []
    stored = "".join(f"<li>{esc(p.name)} ({p.stat().st_size} bytes)</li>" for p in files
                     if not p.name.endswith(".part"))
    return ("<p>Upload a firmware image and the SHA-256 published with it. The image is "
            "checked and stored on the box; <b>it is not installed from this page</b> "
            "(the update agent installs verified images).</p>"
            f'<form id="fw-form" data-csrf="{esc(req.session.csrf)}">'
            '<div class="field"><label for="fw-file">Image file</label>'
            '<input id="fw-file" type="file" required></div>'
            '<div class="field"><label for="fw-sha">SHA-256</label>'
            '<input id="fw-sha" type="text" pattern="[0-9a-fA-F]{64}" required '
            'placeholder="64 hex digits"></div>'
            '<button type="submit">Upload</button></form>'
            '<progress id="fw-progress" max="100" value="0" hidden></progress>'
            '<p id="fw-status" class="muted"></p>'
            f"<h2>Stored images</h2><ul>{stored or '<li>none</li>'}</ul>")


def receive_firmware(app, req) -> dict:
    """Stream, hash and keep the uploaded image; the summary for the audit log."""
    name = (req.headers.get("X-Filename") or "").rsplit("/", 1)[-1]
    want = (req.headers.get("X-SHA256") or "").strip().lower()
    if not _NAME.fullmatch(name):
        raise HttpError(400, "file name: use letters, digits, '.', '-' or '_'")
    if not _HEX.fullmatch(want):
        raise HttpError(400, "SHA-256: give the 64 hex digits published with the image")
    if req.length <= 0 or req.length > MAX_FIRMWARE:
        raise HttpError(413, f"image: size must be 1 byte .. {MAX_FIRMWARE >> 20} MiB")
    folder = app.data_dir / "firmware"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if shutil.disk_usage(folder).free < req.length * 2:
        raise HttpError(413, "image: not enough room on the data partition")
    part = folder / f"{name}.part"
    got = _stream(req, part)
    if got != want:
        part.unlink(missing_ok=True)
        raise HttpError(422, f"SHA-256 mismatch: the image hashes to {got}, not {want}; "
                             "download it again")
    final = folder / (name if name.endswith((".img", ".img.xz", ".img.gz")) else name + ".img")
    os.replace(part, final)
    return {"ok": True, "file": final.name, "size": req.length, "sha256": got}


def _stream(req, path) -> str:
    digest, left = hashlib.sha256(), req.length
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        while left > 0:
            chunk = req.rfile.read(min(CHUNK, left))
            if not chunk:
                raise HttpError(400, "image: the upload stopped early; try again")
            os.write(fd, chunk)
            digest.update(chunk)
            left -= len(chunk)
        req._body = b""  # consumed: the connection can be reused
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return digest.hexdigest()
