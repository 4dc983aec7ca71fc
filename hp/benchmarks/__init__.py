"""Benchmarks too large for hp.bench's one module: each runs real stages on data it writes and prints JSON."""
