"""Benchmarks: `python -m benchmarks` prints one table (see README.md)."""
