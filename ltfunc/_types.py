"""Type aliases that say what flows through ltfunc."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Params = dict[str, Tensor]
"""A parameter pytree: a plain dict keyed by the module's parameter names."""

Buffers = dict[str, Tensor]
"""A buffer pytree (BatchNorm running stats, ...), keyed like ``Params``."""

Grads = Params
"""Gradients have the structure of the parameters."""

Batch = tuple[Tensor, Tensor]
"""An ``(inputs, targets)`` pair."""

LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss_fn(logits, targets) -> scalar``."""

Selection = Callable[[str, Tensor], bool] | list[str] | tuple[str, ...] | set[str] | None
"""Which parameters are prunable: names, a ``(name, tensor) -> bool`` predicate, or the default."""

DeviceLike = str | torch.device

__all__ = ["Batch", "Buffers", "DeviceLike", "Grads", "LossFn", "Params", "Selection"]
