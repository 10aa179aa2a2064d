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
    for x, y in zip(la, lb, strict=True):
        if isinstance(x, torch.Tensor):
            if x.shape != y.shape or not torch.allclose(x.float(), y.float(), rtol=rtol, atol=atol):
                return False
        elif x != y:
            return False
    return True


def tree_clone(tree: Any) -> Any:
    """Deep copy of a pytree of tensors, for purity checks."""
    return optree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, tree)


_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def assert_bit_identical(a: Any, b: Any) -> None:
    """Assert same structure and byte-identical tensors (NaN payloads and -0.0 included)."""
    la, ta = optree.tree_flatten(a, none_is_leaf=True)
    lb, tb = optree.tree_flatten(b, none_is_leaf=True)
    assert ta == tb, f"structure differs: {ta} vs {tb}"
    for i, (x, y) in enumerate(zip(la, lb, strict=True)):
        if not isinstance(x, torch.Tensor):
            assert x == y, f"leaf {i}: {x!r} != {y!r}"
            continue
        assert x.dtype == y.dtype and x.shape == y.shape, f"leaf {i}: dtype/shape differ"
        if x.dtype != torch.bool:
            x, y = x.view(_INT_OF_SIZE[x.element_size()]), y.view(_INT_OF_SIZE[y.element_size()])
        assert torch.equal(x.cpu(), y.cpu()), f"leaf {i} was modified"
