"""The technician web page in real headless Chromium against a real sim core.

First login with the setup code, a line setting changed through the form and seen by
the control API, a bad value shown next to its field with nothing changed, the live
dashboard following a virtual phone off hook through the event stream (no polling), diagnostics, firmware upload with its
progress bar; screenshots of the main pages (desktop and phone) in tests/artifacts/.
"""

from __future__ import annotations

import hashlib

import pytest

from tests.web.peers import PASSWORD, login, new_page, shot

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


def test_first_login_needs_setup_code_then_forces_password(browser, fresh_web):
    ctx, page = new_page(browser, phone=True)
    try:
        page.goto(fresh_web.url + "/")
        page.wait_for_url(fresh_web.url + "/login")
        assert page.locator("#f-password").count() == 0  # no password login before setup
        shot(page, "login-setup-code-phone")
        page.fill("#f-code", "WRONGCODE1")
        page.click("form.login button")
        assert "wrong setup code" in page.locator("#login-error").inner_text()
        page.fill("#f-code", fresh_web.setup_code().lower())  # typed from the label
        page.click("form.login button")
        page.wait_for_url(fresh_web.url + "/setup")
        page.goto(fresh_web.url + "/")  # nothing else before the password is set
        page.wait_for_url(fresh_web.url + "/setup")
        page.fill("#f-password", "short")
        page.fill("#f-confirm", "short")
        page.click("form.login button")
        assert "at least 10" in page.locator("#setup-error").inner_text()
        page.fill("#f-password", PASSWORD)
        page.fill("#f-confirm", PASSWORD)
        page.click("form.login button")
        page.wait_for_url(fresh_web.url + "/")
        assert "Admin password set" in page.locator(".flash").inner_text()
        assert not (fresh_web.data_dir / "setup-code").exists()
    finally:
        ctx.close()
    ctx, page = new_page(browser)
    try:
        page.goto(fresh_web.url + "/login")
        assert page.locator("#f-code").count() == 0  # the setup code is spent
        shot(page, "login-desktop")
    finally:
        ctx.close()


def test_change_line_setting_is_applied(browser, web, core):
    ctx, page = new_page(browser)
    try:
        login(page, web)
        page.goto(web.url + "/config?section=lines.fxs1")
        field = "[name='lines.fxs1.flash_max_ms']"
        new = 650 if page.input_value(field) != "650" else 700
        page.fill(field, str(new))
        page.click("#form-lines\\.fxs1 button[type=submit]")
        page.wait_for_selector(".flash")
        assert "lines.fxs1.flash_max_ms" in page.locator(".flash").inner_text()
        assert "Applied to the running box" in page.locator(".flash").inner_text()
        got = core.api.config()
        assert got["document"]["lines"]["fxs1"]["flash_max_ms"] == new
        assert core.api.status()["box"]["restart_required"] == []
        assert page.input_value(field) == str(new)
        shot(page, "config-desktop")
        page.goto(web.url + "/audit")
        assert "config changed" in page.locator("table.audit").inner_text()
        assert "lines.fxs1.flash_max_ms" in page.locator("table.audit").inner_text()
        shot(page, "audit-desktop")
    finally:
        ctx.close()


def test_a_setting_that_needs_a_restart_says_so_until_rolled_back(browser, web, core):
    ctx, page = new_page(browser)
    try:
        login(page, web)
        page.goto(web.url + "/config?section=sip")
        field = "[name='sip.register_expires_s']"
        old = page.input_value(field)
        page.fill(field, "600" if old != "600" else "900")
        page.click("#form-sip button[type=submit]")
        page.wait_for_selector(".flash")
        assert "Takes effect after a restart: sip.register_expires_s" in \
            page.locator(".flash").inner_text()
        page.goto(web.url + "/")
        assert "sip.register_expires_s" in page.locator("#restart-needed").inner_text()
        back = core.api.rollback()
        assert back["restart_required"] == []
        page.goto(web.url + "/")
        assert page.locator("#restart-needed").count() == 0
    finally:
        ctx.close()


def test_bad_value_shows_field_error_and_changes_nothing(browser, web, core):
    ctx, page = new_page(browser, phone=True)
    try:
        login(page, web)
        before = core.api.config()
        page.goto(web.url + "/config?section=lines.fxs1")
        page.fill("[name='lines.fxs1.flash_max_ms']", "5000")
        page.click("#form-lines\\.fxs1 button[type=submit]")
        err = page.locator("[data-error-for='lines.fxs1.flash_max_ms']")
        err.wait_for()
        assert "out of range" in err.inner_text() and "50..2000" in err.inner_text()
        assert page.input_value("[name='lines.fxs1.flash_max_ms']") == "5000"  # kept
        shot(page, "config-error-phone")
        page.fill("[name='lines.fxs1.flash_max_ms']", "abc")
        page.fill("[name='lines.fxs1.debounce_ms']", "xyz")
        page.click("#form-lines\\.fxs1 button[type=submit]")
        assert "whole number" in page.locator(
            "[data-error-for='lines.fxs1.debounce_ms']").inner_text()
        after = core.api.config()
        assert after == before
    finally:
        ctx.close()


def test_dashboard_follows_phone_off_hook(browser, web, core):
    ctx, page = new_page(browser)
    try:
        login(page, web)
        page.wait_for_selector("tr[data-port='fxs1'][data-hook='on-hook']")
        page.wait_for_timeout(1000)  # the event stream is up (and its refresh done)
        fetched = []
        page.on("request", lambda r: fetched.append(r.url) if "/live" in r.url else None)
        page.wait_for_timeout(2500)
        assert fetched == []  # nothing happened: no polling
        core.api.sim_phone("fxs1", "off_hook")
        page.wait_for_selector("tr[data-port='fxs1'][data-hook='off-hook']", timeout=6000)
        shot(page, "dashboard-desktop")
        core.api.sim_phone("fxs1", "on_hook")
        page.wait_for_selector("tr[data-port='fxs1'][data-hook='on-hook']", timeout=6000)
        page.set_viewport_size({"width": 390, "height": 844})
        shot(page, "dashboard-phone")
    finally:
        core.api.sim_phone("fxs1", "on_hook")
        ctx.close()


def test_diagnostics_and_other_pages(browser, web):
    ctx, page = new_page(browser)
    try:
        login(page, web)
        page.goto(web.url + "/diag")
        page.select_option("#diag-measure select[name=port]", "fxs1")
        page.click("#diag-measure button")
        result = page.locator("#diag-result")
        result.wait_for()
        assert "measure fxs1" in result.inner_text()
        assert page.locator("svg#mos").count() == 1
        shot(page, "diagnostics-desktop")
        for path, name in (("/cdrs", "cdrs"), ("/logs", "logs"), ("/backup", "backup")):
            page.goto(web.url + path)
            assert page.locator("#page-error").count() == 0
            assert page.locator("#core-error").count() == 0
            shot(page, f"{name}-desktop")
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(web.url + "/diag")
        shot(page, "diagnostics-phone")
    finally:
        ctx.close()


def test_firmware_upload_shows_progress_and_checks_sha(browser, web, tmp_path):
    image = tmp_path / "branchline-0.2.img"
    image.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    sha = hashlib.sha256(image.read_bytes()).hexdigest()
    ctx, page = new_page(browser)
    try:
        login(page, web)
        page.goto(web.url + "/firmware")
        page.set_input_files("#fw-file", str(image))
        page.fill("#fw-sha", "0" * 64)
        page.click("#fw-form button")
        page.wait_for_selector("#fw-status.error")
        assert "mismatch" in page.locator("#fw-status").inner_text()
        page.fill("#fw-sha", sha)
        page.click("#fw-form button")
        page.wait_for_selector("#fw-status.ok")
        assert page.locator("#fw-progress").get_attribute("value") == "100"
        assert "not installed" in page.locator("#fw-status").inner_text().lower()
        shot(page, "firmware-desktop")
        assert (web.data_dir / "firmware" / image.name).read_bytes() == image.read_bytes()
    finally:
        ctx.close()


def test_call_shows_on_dashboard_then_erle_plot(browser, web, core):
    ctx, page = new_page(browser)
    try:
        login(page, web)
        core.api.sim_phone("fxs1", "off_hook")
        core.api.sim_phone("fxs1", "dial", digits="202")
        page.wait_for_selector("tr[data-port='fxs2'].ringing", timeout=8000)
        core.api.sim_phone("fxs2", "off_hook")
        page.wait_for_selector("table.calls td:has-text('202')", timeout=6000)
        page.wait_for_timeout(2500)  # a few ERLE samples for the plot
        shot(page, "dashboard-call-desktop")
        core.api.sim_phone("fxs1", "on_hook")
        core.api.sim_phone("fxs2", "on_hook")
        page.wait_for_selector("tr[data-port='fxs2'][data-hook='on-hook']", timeout=6000)
        page.wait_for_timeout(1200)  # the sampler sees the call end
        page.goto(web.url + "/diag")
        assert page.locator("svg#erle-fxs1 path").count() == 1
    finally:
        for port in ("fxs1", "fxs2"):
            core.api.sim_phone(port, "on_hook")
        ctx.close()
