"""Benchmarks of the cext kernels side by side with spandsp (run by hand, never by pytest)."""
