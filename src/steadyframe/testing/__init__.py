"""Helpers for tests and benchmarks: random weights saved in official layouts (``tiny_weights``)."""
