"""The trial boot's health check: is this slot fit to keep? Each check is named, and a
failed one says what was seen:

  core          the core's control API answers (GET /status)
  ports         no port failed to initialise (a chip that did not come up)
  selftest      the live selftest (loop feed, FXO line voltage) passes
  registration  registered with the cloud, or knowingly survivable (SURVIVABLE, or no
                cloud configured at all)
  web           the web page answers HTTPS (a self-signed certificate is fine on loopback)

Checks that already failed before the update (the service's selftest baseline: an FXO
port with no line plugged in) are not held against the new version. The selftest
(firmware.api.selftest, the one the cloud agent runs too) is injected, so tests may give
another."""

from __future__ import annotations

import http.client
import ipaddress
import os
import ssl
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from firmware.api.client import ApiClient, ApiError
from foundation.reactor import Clock

WEB_ENV = "BRANCHLINE_WEB_LISTEN"
DEFAULT_WEB = "0.0.0.0:443"
WEB_TIMEOUT_S = 5.0
INTERVAL_S = 5.0
NOT_JUDGED = ("registration", "sip ping")  # selftest rows the registration check covers
Selftest = Callable[[ApiClient], list[dict[str, Any]]]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{self.name}: {self.detail}"


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if not c.ok]


def summary(checks: list[Check]) -> str:
    """One line: the failed checks with what was seen, or "all N checks passed"."""
    bad = failed(checks)
    if not bad:
        return f"all {len(checks)} checks passed ({', '.join(c.name for c in checks)})"
    return "; ".join(c.line() for c in bad)


def web_address(env: dict[str, str] | None = None) -> str:
    return (env if env is not None else dict(os.environ)).get(WEB_ENV) or DEFAULT_WEB


class Health:
    """The checks against one core (`api`) and web page (`web` "HOST:PORT"; None skips it)."""

    def __init__(self, api: ApiClient, *, web: str | None = DEFAULT_WEB,
                 selftest: Selftest | None = None, baseline: Collection[str] = ()) -> None:
        self.api, self.web, self.selftest = api, web, selftest
        self.baseline = set(baseline)

    def run(self) -> list[Check]:
        try:
            status = self.api.status()
        except ApiError as exc:
            return [Check("core", False, f"does not answer ({exc})")]
        checks = [Check("core", True, f"answers, version {status['box'].get('version')}"),
                  self.ports(status), self.live_selftest(), self.registration(status)]
        return checks + ([self.web_page()] if self.web else [])

    def ports(self, status: dict[str, Any]) -> Check:
        down = [f"{p['name']} ({p.get('failed_reason') or 'failed'})" for p in status["ports"]
                if p.get("state") == "failed" and f"{p['name']} initialised" not in self.baseline]
        if down:
            return Check("ports", False, "failed to initialise: " + ", ".join(down))
        return Check("ports", True, f"{len(status['ports'])} initialised")

    def live_selftest(self) -> Check:
        if self.selftest is None:
            return Check("selftest", True, "not run (no selftest given)")
        try:
            rows = self.selftest(self.api)
        except ApiError as exc:
            return Check("selftest", False, f"could not run ({exc})")
        names = [(f"{r.get('port') or ''} {r['check']}".strip(), r) for r in rows
                 if r.get("check") not in NOT_JUDGED]
        bad = [f"{name} ({r.get('detail')})" for name, r in names
               if not r.get("pass") and name not in self.baseline]
        if bad:
            return Check("selftest", False, "failed: " + ", ".join(bad))
        return Check("selftest", True, f"{len(names)} checks passed")

    def registration(self, status: dict[str, Any]) -> Check:
        regs = status.get("registrations") or []
        state = (status.get("survivability") or {}).get("state")
        if regs and all(r.get("ok") for r in regs):
            return Check("registration", True, "registered: " +
                         ", ".join(str(r["account"]) for r in regs))
        if state == "SURVIVABLE":
            return Check("registration", True, "not registered but knowingly survivable "
                         "(the cloud does not answer; local calls and PSTN work)")
        if not regs and not (status.get("wan") or {}).get("edges"):
            return Check("registration", True, "no cloud configured (sip.edges is empty)")
        seen = ", ".join(f"{r.get('account')} {r.get('code')} {r.get('reason') or ''}".strip()
                         for r in regs) or "no registration"
        return Check("registration", False, f"not registered ({seen}) and not survivable "
                     f"(state {state})")

    def web_page(self) -> Check:
        host, _, port = str(self.web).rpartition(":")
        host = host.strip("[]")
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        url = f"https://{host}:{port}/"
        conn = http.client.HTTPSConnection(host, int(port), timeout=WEB_TIMEOUT_S,
                                           context=_tls(host))
        try:
            conn.request("GET", "/")
            code = conn.getresponse().status
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return Check("web", False, f"{url} does not answer ({exc})")
        finally:
            conn.close()
        if code >= 500:
            return Check("web", False, f"{url} answered HTTP {code}")
        return Check("web", True, f"{url} answered HTTP {code}")


def _tls(host: str) -> ssl.SSLContext:
    """Verify certificates, except on loopback where the box's own is self-signed."""
    context = ssl.create_default_context()
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def check_until(health: Health, clock: Clock, timeout_s: float, *,
                interval_s: float = INTERVAL_S,
                sleep: Callable[[float], object] = time.sleep) -> list[Check]:
    """Run the checks until all pass or `timeout_s` (on `clock`) is over; the last result.
    A trial boot needs time: the core starts, the lines come up, SIP registers."""
    deadline = clock.now() + timeout_s
    while True:
        checks = health.run()
        left = deadline - clock.now()
        if not failed(checks) or left <= 0:
            return checks
        sleep(min(interval_s, left))
