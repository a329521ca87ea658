"""Call control: one state machine per port (fxs.py, fxo.py, headset.py), the dial plan
(dialplan.py), the local switch between our own ports (local.py) and the controller that
routes calls between the ports, the cloud (a firmware.sip.api.Bridge) and the PSTN
(controller.py). Everything runs on the reactor thread and reads the reactor clock."""

from foundation.errors import BranchlineError


class CallControlError(BranchlineError):
    """A control-API request call control cannot carry out (names the port and the fix)."""


__all__ = ["CallControlError"]
