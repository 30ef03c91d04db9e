"""Benchmarks of saerl-zoo: ``python -m benchmarks.run [--quick] [--only NAME]`` (see benchmarks/README.md)."""
