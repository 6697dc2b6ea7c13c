"""Benchmark suites run by `ssmkit bench <name>`; each registers itself with register_bench."""
