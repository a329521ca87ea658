"""Diagnostics run by the core: line commissioning (commission.py)."""
