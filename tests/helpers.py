"""Tree comparison helpers for tests."""

from __future__ import annotations

from typing import Any

import optree
import torch


def tree_allclose(a: Any, b: Any, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    """True when both pytrees have the same structure and close tensors."""
    la, ta = optree.tree_flatten(a, none_is_leaf=True)
    lb, tb = optree.tree_flatten(b, none_is_leaf=True)
    if ta != tb:
        return False
    for x, y in zip(la, lb):
        if isinstance(x, torch.Tensor):
            if x.shape != y.shape or not torch.allclose(x.float(), y.float(), rtol=rtol, atol=atol):
                return False
        elif x != y:
            return False
    return True


def tree_clone(tree: Any) -> Any:
    """Deep copy of a pytree of tensors, for purity checks."""
    return optree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, tree)
