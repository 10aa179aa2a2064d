"""Doctest collection for the optional JAX interop: skipped when JAX/optax are not installed."""

from importlib.util import find_spec

# ltfunc/interop/jax.py and its parts jax_arrays.py, jax_masks.py, jax_models.py (and any later
# jax_*.py): their doctests run JAX (and make_train_step's optax).
collect_ignore_glob = [] if find_spec("jax") and find_spec("optax") else ["ltfunc/interop/jax*.py"]
