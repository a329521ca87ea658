"""Call control: a state machine per port (fxs, fxo, headset), the dial plan, the local
switch and the controller routing calls between the ports, the cloud and the PSTN. All of
it runs on the reactor thread and reads the reactor clock."""

from foundation.errors import BranchlineError


class CallControlError(BranchlineError):
    """A control-API request call control cannot carry out (names the port and the fix)."""
