"""Core services every process shares: the config store and errors."""
