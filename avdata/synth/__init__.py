"""Generators of small raw datasets in the real formats, for the demo, tests and benchmarks."""
