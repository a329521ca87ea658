"""After a boot: keep the new slot or go back. Run once per boot (by
branchline-update-confirm.service, after branchline.service) as `branchline update confirm`.

- REBOOTING and the firmware says tryboot: TRIAL, then the health check (health.py) within
  `update.health_timeout_s`; all passed -> `rauc status mark-good` (the tryboot backend
  commits autoboot.txt) -> GOOD. A failed check -> the failed checks into the state,
  `rauc status mark-bad`, reboot(tryboot=False): the firmware boots the old slot.
- REBOOTING or TRIAL but not a tryboot: this is the old slot again. Either the health check
  failed (the state says which checks) or the trial boot never came up (power cut, hang,
  the hardware watchdog): ROLLED_BACK with that reason. When the running version is the
  new one, the commit happened and only its record was lost (power cut after mark-good):
  GOOD.
- Any other phase: nothing to do."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from firmware.update import bootflags
from firmware.update.health import Check, failed, summary
from firmware.update.rauc import Rauc, Reason, UpdateError
from firmware.update.state import Phase, StateFile, UpdateState
from firmware.update.version import running_version
from foundation.reactor import Clock

log = logging.getLogger(__name__)

TRIAL_LOST = "the trial boot did not come up: power cut or hang"
HealthRun = Callable[[list[str]], list[Check]]  # the baseline in, the final checks out


class Confirm:
    def __init__(self, state_file: StateFile, rauc: Rauc, health: HealthRun,
                 reboot: Callable[[bool], None], clock: Clock, *,
                 dt_dir: Path | None = None,
                 version: Callable[[], str] = running_version) -> None:
        self.file, self.rauc, self.health = state_file, rauc, health
        self.reboot, self.clock, self.version = reboot, clock, version
        self.dt_dir = dt_dir or bootflags.DT_DIR

    def run(self) -> UpdateState:
        state = self.file.load()
        if state.phase not in (Phase.REBOOTING, Phase.TRIAL):
            return state
        if not bootflags.tryboot_active(self.dt_dir):
            return self._back_on_old(state)
        if state.phase == Phase.TRIAL and state.reason == Reason.HEALTH_FAILED:
            return self._reject(state, state.message.split(": ", 1)[-1])  # reboot lost
        return self._trial(state)  # first run in the trial boot, or one cut short

    def _set(self, state: UpdateState, phase: Phase, message: str, reason: str = "",
             finished: bool = False) -> UpdateState:
        log.info("update: %s -> %s: %s", state.phase, phase, message)
        state.phase, state.message, state.reason = phase, message, reason
        if finished:
            state.finished = self.clock.wall()
        self.file.save(state)
        return state

    def _trial(self, state: UpdateState) -> UpdateState:
        state = self._set(state, Phase.TRIAL, f"trial boot of version {state.version_to}: "
                          "running the health check")
        checks = self.health(list(state.baseline))
        if failed(checks):
            return self._reject(state, summary(checks))
        try:
            self.rauc.mark_good()
        except UpdateError as exc:
            return self._reject(state, f"mark-good failed ({exc})")
        return self._set(state, Phase.GOOD, f"version {state.version_to} is good: "
                         f"{summary(checks)}", finished=True)

    def _reject(self, state: UpdateState, why: str) -> UpdateState:
        """Record why, mark the slot bad, reboot into the old one."""
        why = why.removesuffix(self._tail(state))
        state = self._set(state, Phase.TRIAL, f"health check failed: {why}"
                          f"{self._tail(state)}", Reason.HEALTH_FAILED)
        try:
            self.rauc.mark_bad()
        except UpdateError as exc:  # the tryboot flag is one-shot: a reboot goes back anyway
            log.error("update: mark-bad failed (%s); rebooting all the same", exc)
        self.reboot(False)
        return state

    @staticmethod
    def _tail(state: UpdateState) -> str:
        return f"; rolling back to {state.version_from}"

    def _back_on_old(self, state: UpdateState) -> UpdateState:
        running = self.version()
        if state.version_to and running == state.version_to:
            return self._set(state, Phase.GOOD, f"version {running} is running and was "
                             "committed (its confirmation record was lost)", finished=True)
        if state.reason == Reason.HEALTH_FAILED:
            why = state.message.removesuffix(self._tail(state))
            return self._set(state, Phase.ROLLED_BACK, f"rolled back to {running}: {why}",
                             Reason.HEALTH_FAILED, finished=True)
        return self._set(state, Phase.ROLLED_BACK, f"rolled back to {running}: {TRIAL_LOST}",
                         Reason.HEALTH_FAILED, finished=True)
