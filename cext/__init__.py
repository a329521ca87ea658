"""Cython telephony DSP kernels (G.711, echo canceller, DTMF, tones, caller-ID FSK,
resampler), each with a NumPy reference twin in `cext.ref`. Imports nothing of ours."""
