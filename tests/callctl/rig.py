"""The call-control tests' rig and signal helpers: lab/rig.py, shared with the benchmarks."""

from lab.rig import Rig, connect, dial, rms, sine, tail, tone_level

__all__ = ["Rig", "connect", "dial", "rms", "sine", "tail", "tone_level"]
