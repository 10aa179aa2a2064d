"""Doctest collection for the optional JAX interop: skipped when JAX/optax are not installed."""

from importlib.util import find_spec

collect_ignore = [] if find_spec("jax") and find_spec("optax") else ["ltfunc/interop/jax.py"]
