"""Benchmarks (`sandbox bench`): medians and ratios against peers measured in the same run."""
