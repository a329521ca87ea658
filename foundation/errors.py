"""Errors a person at the box can act on.

Every error that reaches a user is a `BranchlineError`: one line that names the device
or field and says what to do. The command line prints it without a traceback.
"""


class BranchlineError(Exception):
    """An error with a message meant for the technician (device or field, and the fix)."""


class HardwareError(BranchlineError):
    """A device node, bus or chip is missing or does not answer as expected."""


class ChipFailed(HardwareError):
    """A chip failed its identity check or calibration; it is marked failed, the rest runs."""
