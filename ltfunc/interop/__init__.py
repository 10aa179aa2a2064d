"""Interop with other pruning and array libraries.

- :mod:`ltfunc.interop.torch_prune`: modules pruned with ``torch.nn.utils.prune`` <->
  ``(params, Mask)``.
- :mod:`ltfunc.interop.jax`: pytrees to JAX arrays and back via DLPack, a JAX forward pass and
  masked step for the built-in models, jaxpruner-style masks. Needs ``pip install 'ltfunc[jax]'``;
  importing it does not import JAX (that happens on first use).
"""

from . import jax as jax
from . import torch_prune as torch_prune

__all__ = ["jax", "torch_prune"]
