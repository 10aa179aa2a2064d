"""Benchmarks of ltfunc's masked training step against the usual PyTorch and JAX ways.

Run with ``python -m pytest bench -q`` from the repository root (see ``bench/README.md``).
"""
