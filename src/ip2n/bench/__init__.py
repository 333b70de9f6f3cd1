"""Benchmarks behind `ip2n bench`: seconds and peak memory per stage, printed and saved as JSON."""
