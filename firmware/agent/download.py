"""A firmware bundle fetched over HTTPS for the firmware_update job: https only (redirects
too), the server's certificate verified (the system's CAs plus the fleet's CA when one is
pinned), the size bounded by what the job announced, the SHA-256 checked while the bytes
stream into `<dest>.part`, which is fsynced and renamed to `dest` only when it matches.
No resume: a download cut short starts again from its first byte (a .part left by a power
cut may end in garbage the hash would only catch at the end)."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import ssl
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urljoin, urlsplit

CHUNK = 64 << 10
TIMEOUT_S = 30.0  # per connect and per read: a stalled server fails the step
MAX_REDIRECTS = 3
AGENT = "branchline-agent"


class DownloadError(Exception):
    """One line naming what failed and the fix."""


class Stopped(Exception):
    """should_stop() said so between two chunks; the .part file is deleted."""


def tls_context(extra_ca: Path | None) -> ssl.SSLContext:
    """The system's CAs, plus `extra_ca` (the fleet's pinned CA) when it exists."""
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if extra_ca is not None and extra_ca.is_file():
        ctx.load_verify_locations(cafile=str(extra_ca))
    return ctx


def fetch(url: str, dest: Path, sha256: str, size: int, ctx: ssl.SSLContext, *,
          progress: Callable[[int], None], should_stop: Callable[[], bool]) -> None:
    """Download url to dest (see the module docstring); DownloadError says why not."""
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if shutil.disk_usage(dest.parent).free < size + (16 << 20):
        raise DownloadError(f"not enough room in {dest.parent} for {size} bytes; free the "
                            "data partition (old log bundles, recordings) and retry")
    part = dest.with_name(dest.name + ".part")
    conn, resp = _open(url, ctx)
    try:
        announced = resp.getheader("Content-Length")
        if announced is not None and announced.isdigit() and int(announced) != size:
            raise DownloadError(f"{url}: the server sends {announced} bytes, the job says "
                                f"size {size}; check the job's size and url")
        got = _stream(resp, part, size, progress, should_stop)
    finally:
        conn.close()
    if got != sha256:
        part.unlink(missing_ok=True)
        raise DownloadError(f"SHA-256 mismatch: the download hashes to {got}, not the job's "
                            f"sha256 {sha256}; the file was deleted (check the job's sha256 "
                            "or the file on the server)")
    os.replace(part, dest)
    _fsync_dir(dest.parent)


def _open(url: str, ctx: ssl.SSLContext) -> tuple[http.client.HTTPSConnection,
                                                   http.client.HTTPResponse]:
    """GET url, following up to MAX_REDIRECTS https redirects; the 200 answer."""
    for _hop in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise DownloadError(f"{url}: only https:// URLs are fetched; publish the bundle "
                                "over HTTPS")
        conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443, context=ctx,
                                           timeout=TIMEOUT_S)
        try:
            conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                         headers={"User-Agent": AGENT})
            resp = conn.getresponse()
        except ssl.SSLCertVerificationError as exc:
            conn.close()
            raise DownloadError(f"{url}: the server's certificate is not trusted "
                                f"({exc.verify_message}); it must chain to the system's CAs "
                                "or the fleet's CA (cloud.ca_file)") from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise DownloadError(f"{url}: cannot fetch it ({exc}); check the URL and the "
                                "box's WAN") from None
        if resp.status == 200:
            return conn, resp
        location = resp.getheader("Location")
        conn.close()
        if resp.status in (301, 302, 303, 307, 308) and location:
            url = urljoin(url, location)
            continue
        raise DownloadError(f"{url}: the server answered {resp.status} {resp.reason}; "
                            "check the URL")
    raise DownloadError(f"{url}: more than {MAX_REDIRECTS} redirects; give the final URL")


def _stream(resp: http.client.HTTPResponse, part: Path, size: int,
            progress: Callable[[int], None], should_stop: Callable[[], bool]) -> str:
    digest, got = hashlib.sha256(), 0
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        while True:
            if should_stop():
                raise Stopped
            try:
                chunk = resp.read(CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(f"the download broke off after {got} of {size} bytes "
                                    f"({exc}); the job can be sent again") from None
            if not chunk:
                break
            got += len(chunk)
            if got > size:
                raise DownloadError(f"the server sent more than the job's size {size} "
                                    "bytes; check the job's size and url")
            os.write(fd, chunk)
            digest.update(chunk)
            progress(got)
        if got != size:
            raise DownloadError(f"the download ended after {got} of {size} bytes; the job "
                                "can be sent again")
        os.fsync(fd)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
