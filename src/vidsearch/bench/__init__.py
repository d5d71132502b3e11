"""Benchmarks: `python -m vidsearch.bench NAME [--quick]`."""
