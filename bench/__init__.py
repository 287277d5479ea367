"""Benchmarks of the reconciler against the real local stack (`make bench`; not part of `make test`).

See BENCHMARKS.md for what is measured, how, and the latest numbers.
"""
