"""Register-level chip drivers, one module per chip; each sees only a bus object."""
