"""Slow, plain NumPy reference twins of the Cython kernels; the tests compare the two."""
