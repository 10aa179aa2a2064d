"""Private: how much memory K vmapped members need, and the check that refuses too many.

:meth:`ltfunc.members.MembersStep.estimate_memory` documents the estimate; this module holds
its parts (kept out of ``members.py`` to keep that module short).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import optree
import torch
from torch import Tensor, nn

from ._checks import check_int
from ._flat import FlatLayout
from .optim import Optimizer


def check_batch_shape(func: str, batch_shape: Any) -> tuple[int, ...] | None:
    """``batch_shape`` as a tuple of ints ``>= 1`` (``None`` stays ``None``)."""
    if batch_shape is None:
        return None
    if isinstance(batch_shape, (str, bytes)) or not isinstance(batch_shape, Sequence) or not batch_shape:
        raise TypeError(f"{func}: batch_shape must be None or a tuple of ints (B, ...), got {batch_shape!r}")
    return tuple(check_int(func, f"batch_shape[{i}]", d, 1) for i, d in enumerate(batch_shape))


def nbytes(t: Any) -> int:
    """Bytes of a tensor's elements (0 for anything else)."""
    return t.numel() * t.element_size() if isinstance(t, Tensor) else 0


def gib(n: int) -> str:
    """``n`` bytes for a message: GiB from 1 GiB on, MiB below."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def forward_bytes(model: nn.Module, dtype: torch.dtype, batch_shape: tuple[int, ...]) -> int:
    """Bytes of all operation outputs (views and in-place results excluded) of one forward pass.

    Traced on the meta device (no memory, no computation); 0 for a model that cannot run there.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, fn: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = fn(*args, **(kwargs or {}))
            if not any(r.alias_info is not None for r in fn._schema.returns):
                self.total += sum(nbytes(t) for t in optree.tree_leaves(out))
            return out

    def meta(t: Tensor) -> Tensor:
        return torch.empty(t.shape, dtype=dtype if t.is_floating_point() else t.dtype, device="meta")

    tensors = {n: meta(t) for n, t in (*model.named_parameters(), *model.named_buffers())}
    x = torch.empty(batch_shape, dtype=dtype, device="meta")
    counter = _Count()
    try:
        with torch.no_grad(), counter:
            torch.func.functional_call(model, tensors, (x,))
    except Exception:  # a model that cannot run on meta tensors: no activation estimate
        return 0
    return counter.total


def member_bytes(
    model: nn.Module,
    optimizer: Optimizer,
    layout: FlatLayout,
    buffer_specs: Mapping[str, tuple[torch.Size, torch.dtype]],
    dtype: torch.dtype,
    batch_shape: tuple[int, ...] | None,
) -> tuple[int, int]:
    """``(state bytes, activation bytes)`` of one member (see ``MembersStep.estimate_memory``).

    State: params, optimizer state and buffers twice (a step's outputs exist next to its
    inputs), plus the flat mask and the gradients. Activations (with ``batch_shape``): twice
    :func:`forward_bytes` (kept for backward, plus their gradients) and the batch itself.
    """
    size = torch.empty((), dtype=dtype).element_size()
    weights = layout.numel * size
    meta = {
        n: torch.empty(s, dtype=dtype, device="meta")
        for n, s in zip(layout.names, layout.shapes, strict=True)
    }
    try:
        opt = sum(nbytes(t) for t in optree.tree_leaves(optimizer.init(meta)))
    except Exception:  # a custom optimizer that cannot run on meta tensors: assume Adam's two moments
        opt = 2 * weights
    bufs = sum(s.numel() * torch.empty((), dtype=d).element_size() for s, d in buffer_specs.values())
    acts = 0
    if batch_shape is not None:
        acts = 2 * forward_bytes(model, dtype, batch_shape) + math.prod(batch_shape) * size
    return 2 * (weights + opt + bufs) + 2 * weights, acts


def available_memory(device: torch.device, meminfo: str = "/proc/meminfo") -> tuple[int, str] | None:
    """``(bytes available, where that number comes from)`` on ``device``; ``None``: unknown (no check).

    CUDA: the device's free memory plus what PyTorch's caching allocator holds unused; CPU:
    ``MemAvailable`` of ``meminfo``; other devices, or an unreadable file: ``None``.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return free + cached, f"free memory of {device}: torch.cuda.mem_get_info + unused cached memory"
    if device.type == "cpu":
        try:
            with open(meminfo) as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024, f"MemAvailable in {meminfo}"
        except (OSError, ValueError, IndexError):
            return None
    return None


def check_memory(
    func: str, k: int, per_member: tuple[int, int], device: torch.device, batch_shape: tuple[int, ...] | None
) -> None:
    """Raise ``ValueError`` when K members need more than :func:`available_memory` (says how many fit)."""
    available = available_memory(device)
    if available is None:
        return
    free, where = available
    state, acts = per_member
    per = state + acts
    if k * per <= free:
        return
    fit = free // per
    what = f"{gib(state)} of params, optimizer state, buffers, mask and gradients"
    if batch_shape is not None:
        what += f" + {gib(acts)} of activations for a batch of shape {batch_shape}"
    raise ValueError(
        f"{func}: {k} members need about {gib(k * per)} ({what} per member), but only {gib(free)} "
        f"is available ({where}); "
        + (
            f"at most {fit} members fit"
            if fit > 1
            else "1 member fits"
            if fit
            else "not even one member fits"
        )
        + ": train fewer members at once"
    )
