"""Benchmarks of xlingual (see bench/README.md); each writes results/bench/<name>.json and .md."""
