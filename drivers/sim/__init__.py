"""Simulated twins at the hardware boundary: chip emulators, virtual central office, phones, headset."""
