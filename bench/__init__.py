"""Benchmarks (``python -m bench``): training throughput against a reference loop and the
machine's limit, time to quality, t-SNE and placement, app latency. Not part of the tests'
pass/fail; see ``bench/README.md``."""
