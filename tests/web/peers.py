"""Real peers for the web tests (used by conftest.py): a sim core with its control API
(`branchline run --sim --api`), the web process (`branchline web`) as a subprocess, headless Chromium (Debian's
/usr/bin/chromium driven by Playwright) and a raw HTTPS client (requests).

Everything listens on 127.0.0.1 with free ports, in tmp dirs, and is stopped by the
fixtures. Screenshots go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import requests
import urllib3

from firmware.api.client import ApiClient, ApiError
from lab.ports import free_port
from lab.procs import stop_process as _stop  # noqa: F401 - the web tests stop peers with it
from lab.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PASSWORD = "correct horse battery"

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


def _branchline(*args: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "firmware", *args], cwd=ROOT, env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _wait(ok: Callable[[], bool], what: str, proc: subprocess.Popen, log: Path,
          timeout: float = 20.0) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text()[-2000:]}")
        return ok()
    wait_until(up, timeout, f"{what} up", step=0.1, detail=lambda: log.read_text()[-2000:])


class Core:
    def __init__(self, tmp: Path):
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.log = tmp / "core.log"
        (tmp / "cfg").mkdir()
        self.proc = _branchline("run", "--sim", "--config-dir", str(tmp / "cfg"),
                                "--data-dir", str(tmp / "core-data"), "--api", self.addr,
                                log=self.log)
        self.api = ApiClient(tcp=self.addr, timeout=5.0)
        _wait(self._up, "the core", self.proc, self.log)

    def _up(self) -> bool:
        try:
            self.api.status()
            return True
        except ApiError:
            return False


class Web:
    def __init__(self, tmp: Path, api: str, *extra: str):
        self.data_dir = tmp / "web-data"
        self.port, self.redirect_port = free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.log = tmp / "web.log"
        self.proc = _branchline("web", "--api", api, "--data-dir", str(self.data_dir),
                                "--listen", f"127.0.0.1:{self.port}",
                                "--http-redirect", str(self.redirect_port), *extra,
                                log=self.log)
        _wait(self._up, "the web page", self.proc, self.log)

    def _up(self) -> bool:
        try:
            self.session().get(self.url + "/login", timeout=2)
            return True
        except requests.RequestException:
            return False

    def setup_code(self) -> str:
        return (self.data_dir / "setup-code").read_text().strip()

    def session(self) -> requests.Session:
        s = requests.Session()
        s.verify = False
        s.trust_env = False  # a CA bundle from the environment would override verify
        return s

    def admin(self) -> requests.Session:
        """A raw HTTPS session logged in as admin (doing the first setup if needed)."""
        s = self.session()
        if (self.data_dir / "setup-code").exists():
            r = s.post(self.url + "/login", data={"code": self.setup_code(),
                                                  "csrf": csrf(s, self.url + "/login")})
            assert r.url.endswith("/setup"), r.text
            r = s.post(self.url + "/setup", data={"password": PASSWORD, "confirm": PASSWORD,
                                                  "csrf": csrf(s, self.url + "/setup")})
        else:
            r = s.post(self.url + "/login", data={"user": "admin", "password": PASSWORD,
                                                  "csrf": csrf(s, self.url + "/login")})
        assert r.status_code == 200 and r.url.rstrip("/") == self.url, r.text[:500]
        return s


def csrf(s: requests.Session, url: str) -> str:
    page = s.get(url).text
    m = re.search(r'name="csrf" value="([^"]+)"', page) or re.search(r'data-csrf="([^"]+)"',
                                                                      page)
    assert m, page[:500]
    return m.group(1)


def new_page(browser, phone: bool = False):
    size = {"width": 390, "height": 844} if phone else {"width": 1280, "height": 900}
    ctx = browser.new_context(ignore_https_errors=True, viewport=size)
    ctx.set_default_timeout(8000)
    return ctx, ctx.new_page()


def login(page, web: Web) -> None:
    if (web.data_dir / "setup-code").exists():
        web.admin()  # the first setup
    page.goto(web.url + "/login")
    page.fill("#f-password", PASSWORD)
    page.click("form.login button[type=submit]")
    page.wait_for_url(web.url + "/")


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"web-{name}.png"), full_page=True)
