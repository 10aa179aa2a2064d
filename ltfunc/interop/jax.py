"""JAX interop: pytrees to JAX arrays and back via DLPack, a JAX forward/step, jaxpruner masks.

Needs the optional extra ``pip install 'ltfunc[jax]'`` (JAX's CPU wheel from pip is enough).
JAX is imported lazily, inside the functions that need it, so ``import ltfunc`` and
``import ltfunc.interop.jax`` work without it; calling a JAX function then raises an
``ImportError`` that names the extra. :func:`mask_to_numpy` / :func:`mask_from_numpy` need only
numpy.

This module is the public entry point (``from ltfunc.interop import jax as lj``); it re-exports
three modules of one idea each, whose docstrings hold the details:

- :mod:`ltfunc.interop.jax_arrays`: :func:`to_jax`, :func:`from_jax`, :func:`shares_memory`:
  pytrees of torch tensors <-> JAX arrays through DLPack (zero-copy where possible, explicit
  64-bit handling, every error names the offending leaf's path).
- :mod:`ltfunc.interop.jax_masks`: :func:`mask_to_numpy`, :func:`mask_from_numpy` (numpy only)
  and :func:`to_jaxpruner`, :func:`from_jaxpruner` (jaxpruner's mask convention).
- :mod:`ltfunc.interop.jax_models`: :func:`apply`, :func:`predict`, :func:`infer_arch`,
  :func:`cross_entropy`, :func:`mask_params`, :func:`make_train_step`, :func:`evaluate`: the
  built-in LeNet-300-100 and Conv-2 in pure JAX, a masked optax step and evaluation.
"""

from __future__ import annotations

from ._jax_common import INSTALL_HINT as INSTALL_HINT
from .jax_arrays import from_jax, shares_memory, to_jax
from .jax_masks import from_jaxpruner, mask_from_numpy, mask_to_numpy, to_jaxpruner
from .jax_models import (
    ARCHITECTURES,
    apply,
    cross_entropy,
    evaluate,
    infer_arch,
    make_train_step,
    mask_params,
    predict,
)

__all__ = [
    "ARCHITECTURES",
    "apply",
    "cross_entropy",
    "evaluate",
    "from_jax",
    "from_jaxpruner",
    "infer_arch",
    "make_train_step",
    "mask_from_numpy",
    "mask_params",
    "mask_to_numpy",
    "predict",
    "shares_memory",
    "to_jax",
    "to_jaxpruner",
]
