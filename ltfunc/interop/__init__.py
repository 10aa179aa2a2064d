"""Interop with other pruning and array libraries.

- :mod:`ltfunc.interop.torch_prune`: modules pruned with ``torch.nn.utils.prune`` <->
  ``(params, Mask)``.
- :mod:`ltfunc.interop.jax`: pytrees to JAX arrays and back via DLPack, a JAX forward pass and
  masked step for the built-in models, jaxpruner-style masks. Needs ``pip install 'ltfunc[jax]'``;
  importing it does not import JAX (that happens on first use).

``import ltfunc.interop`` imports neither submodule: each is loaded on first attribute access
(``ltfunc.interop.jax``) or by importing it (``from ltfunc.interop import jax``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["jax", "torch_prune"]


def __getattr__(name: str) -> ModuleType:
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
