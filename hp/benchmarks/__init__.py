"""Benchmarks too large for hp.benchmarks.suite's one module: each runs real stages on data it writes and prints JSON."""
