"""The firmware page as a source of updates, against a real update service (`branchline
update serve`) driving the real `rauc service` on a private bus over one loop-device SD card
for the module (lab/updatesvc.py RaucBox; `systemctl` is a shim recording the reboot) and a
real sim core: a good bundle uploaded (SHA-256 checked) and installed from headless
Chromium shows INSTALLING with its progress, then REBOOTING, and is in the audit log; bad
bundles are refused with their reason on the page and in the audit log; the page says
plainly when the update service does not answer; only the newest two files are kept."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests

from lab.updatesvc import RaucBox, UpdateService, signed_bundle
from lab.wait import wait_until
from tests.update.fixtures import serve
from tests.update.updaterig import Signer, make_bundle
from tests.web.peers import Core, Web, _stop, csrf, login, new_page, shot

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


@pytest.fixture(scope="module")
def service(core: Core, signer: Signer, box: RaucBox,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpdateService]:
    yield from serve(core.addr, signer, box, tmp_path_factory)


@pytest.fixture(scope="module")
def fw_web(core: Core, service: UpdateService,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    w = Web(tmp_path_factory.mktemp("fw-web"), core.addr, "--update-socket",
            str(service.socket))
    yield w
    _stop(w.proc)


def _upload(s: requests.Session, web: Web, path: Path, sha: str | None = None
            ) -> requests.Response:
    token = csrf(s, web.url + "/firmware")
    return s.post(web.url + "/firmware/upload", data=path.read_bytes(),
                  headers={"X-CSRF-Token": token, "X-Filename": path.name,
                           "X-SHA256": sha or hashlib.sha256(path.read_bytes()).hexdigest(),
                           "Content-Type": "application/octet-stream"})


def test_unsigned_bundle_uploaded_then_refused_with_its_reason(
        browser: Browser, fw_web: Web, service: UpdateService, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "branchline-9.0.raucb", "9.0", None)
    sha = hashlib.sha256(bundle.read_bytes()).hexdigest()
    ctx, page = new_page(browser)
    page.on("dialog", lambda d: d.accept())  # the install form asks to confirm
    try:
        login(page, fw_web)
        page.goto(fw_web.url + "/firmware")
        assert page.locator("#update-down").count() == 0
        page.set_input_files("#fw-file", str(bundle))
        page.fill("#fw-sha", sha)
        page.click("#fw-form button")
        page.wait_for_selector("#fw-status.ok")
        assert "not installed" in page.locator("#fw-status").inner_text().lower()
        assert page.locator("#f-file").input_value() == bundle.name  # offered at once
        page.check("#f-force")
        page.click("#install-button")
        page.wait_for_selector("#install-error")
        error = page.locator("#install-error").inner_text()
        assert "unsigned" in error and "not signed" in error, error
        page.wait_for_selector("#upd-reason:has-text('unsigned')")
        assert page.locator("#upd-phase").inner_text() == "FAILED"
        assert "Last update: FAILED" in page.locator("#upd-outcome").inner_text()
        shot(page, "firmware-refused-desktop")
        page.goto(fw_web.url + "/audit")
        table = page.locator("table.audit").inner_text()
        assert "firmware uploaded" in table and "firmware install refused" in table
        assert "unsigned" in table
    finally:
        ctx.close()
    st = service.client.status()
    assert st["source"] == "web" and st["reason"] == "unsigned"
    assert st["bundle"] == str((fw_web.data_dir / "firmware" / bundle.name).resolve())


def _shown(page: Page) -> tuple[str, int]:
    """What the page shows of the update now: (phase, progress bar value)."""
    got = page.evaluate("[document.getElementById('upd-phase').textContent, "
                        "document.getElementById('upd-progress').value]")
    return str(got[0]), int(got[1])


def test_good_bundle_uploaded_installed_with_progress_then_reboots(
        browser: Browser, fw_web: Web, service: UpdateService, held: RaucBox, signer: Signer,
        tmp_path: Path) -> None:
    """The install is held at its first write to the boot selection until the page has
    shown INSTALLING with a progress between 0 and 100 (seen rising, not only 0 and 100);
    then it runs on to REBOOTING and the reboot into the trial is asked for."""
    bundle = signed_bundle(tmp_path / "branchline-2.0.0.raucb", "2.0.0", signer.cert,
                           signer.key)
    sha = hashlib.sha256(bundle.read_bytes()).hexdigest()
    ctx, page = new_page(browser)
    ctx.set_default_timeout(30000)  # rauc info + a real install on a loaded machine
    page.on("dialog", lambda d: d.accept())  # the install form asks to confirm
    seen: list[tuple[str, int]] = []

    def showing(phase: str, low: int = 0, high: int = 100) -> bool:
        now = _shown(page)
        if not seen or seen[-1] != now:
            seen.append(now)
        return now[0] == phase and low <= now[1] <= high
    try:
        login(page, fw_web)
        page.goto(fw_web.url + "/firmware")
        page.set_input_files("#fw-file", str(bundle))
        page.fill("#fw-sha", sha)
        page.click("#fw-form button")
        page.wait_for_selector("#fw-status.ok")
        assert page.locator("#f-file").input_value() == bundle.name
        try:
            page.click("#install-button")
            wait_until(lambda: showing("INSTALLING", 1, 99), 60, "INSTALLING with its "
                       "progress on the page", step=0.1, detail=lambda: seen)
            assert held.holding(), "the install went past the hold"
            shot(page, "firmware-installing-desktop")
        finally:
            held.release()
        wait_until(lambda: showing("REBOOTING", 100), 60, "REBOOTING on the page", step=0.1,
                   detail=lambda: seen)
        values = [v for _phase, v in seen]
        assert values == sorted(values), seen
        assert "rebooting into it" in page.locator("#upd-message").inner_text()
        assert page.locator("#upd-version").inner_text() == "1.0.0 → 2.0.0"
        page.goto(fw_web.url + "/audit")
        table = page.locator("table.audit").inner_text()
        assert "firmware uploaded" in table and "firmware install started" in table
        assert bundle.name in table
    finally:
        ctx.close()
    st = service.client.status()
    assert (st["phase"], st["source"], st["version_to"]) == ("REBOOTING", "web", "2.0.0")
    assert st["bundle"] == str((fw_web.data_dir / "firmware" / bundle.name).resolve())
    assert service.reboot_requests() == ["reboot 0 tryboot"]
    assert held.disk.release("B") == "2.0.0"  # RAUC wrote slot B's root


def test_bad_signature_refused_over_http_and_status_json(fw_web: Web, service: UpdateService,
                                                         tmp_path: Path) -> None:
    other = Signer(tmp_path / "other", "other")
    bundle = make_bundle(tmp_path / "foreign-9.1.raucb", "9.1", other)
    s = fw_web.admin()
    assert _upload(s, fw_web, bundle).json()["bundle"] is True
    r = s.post(fw_web.url + "/firmware/install",
               data={"file": bundle.name, "csrf": csrf(s, fw_web.url + "/firmware")})
    assert r.status_code == 422
    assert "bad_signature" in r.text and "Traceback" not in r.text
    st = s.get(fw_web.url + "/firmware/status.json").json()
    assert st["ok"] and st["phase"] == "FAILED" and st["reason"] == "bad_signature"
    r = s.post(fw_web.url + "/firmware/install", data={"file": bundle.name})  # no CSRF
    assert r.status_code == 403
    r = s.post(fw_web.url + "/firmware/install",
               data={"file": "../../etc/passwd", "csrf": csrf(s, fw_web.url + "/firmware")})
    assert r.status_code == 400 and ".raucb" in r.text


def test_only_the_newest_two_files_are_kept(fw_web: Web, tmp_path: Path) -> None:
    s = fw_web.admin()
    for n in range(3):
        path = tmp_path / f"keep-{n}.raucb"
        path.write_bytes(b"bundle %d " % n * 1000)
        assert _upload(s, fw_web, path).json()["ok"]
    kept = sorted(p.name for p in (fw_web.data_dir / "firmware").iterdir()
                  if p.name.endswith(".raucb"))
    assert kept == ["keep-1.raucb", "keep-2.raucb"]
    page = s.get(fw_web.url + "/firmware").text
    assert "keep-0.raucb" not in page and re.search(r'<option value="keep-2.raucb"', page)
    bad = tmp_path / "notes.txt"
    bad.write_text("x")
    r = _upload(s, fw_web, bad)
    assert r.status_code == 400 and ".raucb" in r.json()["error"]


def test_update_service_down_is_said_plainly(core: Core, tmp_path: Path) -> None:
    web = Web(tmp_path, core.addr, "--update-socket", str(tmp_path / "nobody.sock"))
    try:
        s = web.admin()
        page = s.get(web.url + "/firmware")
        assert page.status_code == 200
        assert 'id="update-down"' in page.text and "does not answer" in page.text
        r = s.get(web.url + "/firmware/status.json")
        assert r.status_code == 503 and not r.json()["ok"]
        assert "does not answer" in r.json()["error"]
        bundle = tmp_path / "x-1.0.raucb"
        bundle.write_bytes(b"x" * 100)
        assert _upload(s, web, bundle).json()["ok"]  # storing needs no update service
        r = s.post(web.url + "/firmware/install",
                   data={"file": bundle.name, "csrf": csrf(s, web.url + "/firmware")})
        assert r.status_code == 503 and "does not answer" in r.text
        assert "Traceback" not in r.text
        audit = s.get(web.url + "/audit").text
        assert "firmware install refused" in audit
    finally:
        _stop(web.proc)
