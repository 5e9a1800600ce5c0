"""Benchmarks: each prints its figure next to an anchor measured in the same run."""
