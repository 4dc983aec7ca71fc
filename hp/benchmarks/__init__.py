"""Benchmarks that print JSON, one module each, run as `python -m hp.benchmarks <benchmark> ...` (__main__.py)."""
