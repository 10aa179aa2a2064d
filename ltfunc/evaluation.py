"""Batched evaluation: mean loss and accuracy of params (under a mask) on a whole split.

:func:`evaluate` runs the model statelessly (``functional_call``) in eval mode, without
gradients, accumulates the per-batch results on the device and synchronizes once at the end.
Buffers (BatchNorm running statistics, e.g. ``TrainState.buffers`` after training) are an
input. :func:`make_eval_step` is the per-batch piece; its compiled form is cached per model
and loss, so evaluating after every few hundred training steps compiles once.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import masks as _masks
from ._checks import check_bool, check_callable, check_int, check_tree
from ._flat import _unique_function, unique_tag
from ._types import Batch, Buffers, LossFn, Params
from .data import Split
from .masks import Mask
from .params import get_buffers

__all__ = ["EvalStep", "evaluate", "make_eval_step"]

EvalStep = Callable[[Params, Batch], tuple[Tensor, Tensor]]
"""``eval_step(params, (x, y)) -> (loss_sum, n_correct)``, 0-d tensors on the device."""

_EvalCore = Callable[[Params, Buffers, Tensor, Tensor], tuple[Tensor, Tensor]]

_COMPILED_EVAL: weakref.WeakKeyDictionary[nn.Module, dict[Any, tuple[_EvalCore, EvalStep]]] = (
    weakref.WeakKeyDictionary()
)
"""Per model and loss: the compiled core (buffers are one of its inputs) and the default eval step."""


def _check_model(func: str, model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{func}: model must be a torch.nn.Module, got {type(model).__name__}")


def _eval_core(model: nn.Module, loss_fn: LossFn) -> _EvalCore:
    # Compiled cores are cached in a weakly keyed cache: they must not keep the model alive.
    model_ref = weakref.ref(model)

    def eval_core(params: Params, buffers: Buffers, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            # copies, so a model left in training mode cannot update the caller's buffers
            bufs = {k: b.clone() for k, b in buffers.items()}
            logits = torch.func.functional_call(model_ref(), {**params, **bufs}, (x,))  # type: ignore[arg-type]
            loss = loss_fn(logits, y) * y.shape[0]
            correct = (logits.argmax(-1) == y).sum()
        return loss.detach(), correct

    return eval_core


def make_eval_step(
    model: nn.Module,
    loss_fn: LossFn = F.cross_entropy,
    *,
    compile: bool = False,
    buffers: Buffers | None = None,
) -> EvalStep:
    """Make ``eval_step(params, (x, y)) -> (loss_sum, n_correct)`` for one batch (no grad).

    ``loss_sum`` is ``loss_fn(logits, y) * len(y)`` (so sums over batches divide by the
    number of examples) and ``n_correct`` the number of argmax hits; both 0-d tensors on the
    device, not synchronized. The model runs in its current train/eval mode (:func:`evaluate`
    switches to eval mode); buffers are never modified. Compiled code is cached per model and
    loss, with the buffers as an input: new buffer values (BatchNorm statistics after more
    training) do not recompile.

    Args:
        model: The module.
        loss_fn: Batch-mean loss ``loss_fn(logits, y)``.
        compile: ``torch.compile`` it (worth it for many evaluations of big splits).
        buffers: Buffers for the forward pass (e.g. the BatchNorm statistics of a
            ``TrainState``); default the model's own, as they are at each call.

    Returns:
        The eval step.

    Raises:
        TypeError: ``model`` not a module, ``loss_fn`` not callable, ``compile`` not a bool,
            ``buffers`` not a dict of tensors.

    Example:
        >>> import torch, ltfunc
        >>> from ltfunc.evaluation import make_eval_step
        >>> m = ltfunc.models.lenet300(seed=0)
        >>> ev = make_eval_step(m)
        >>> batch = (torch.randn(5, 784), torch.zeros(5, dtype=torch.long))
        >>> loss_sum, correct = ev(ltfunc.get_params(m), batch)
        >>> loss_sum.shape, 0 <= int(correct) <= 5
        (torch.Size([]), True)
    """
    func = "make_eval_step"
    _check_model(func, model)
    check_callable(func, "loss_fn", loss_fn, "callable(logits, y) -> loss")
    check_bool(func, "compile", compile)
    check_tree(func, "buffers", buffers, optional=True)
    cached = _COMPILED_EVAL.get(model, {}).get(loss_fn) if compile else None
    if cached is not None:
        core, default_step = cached
        if buffers is None:
            return default_step
    else:
        core = _eval_core(model, loss_fn)
        if compile:
            core = torch.compile(_unique_function(core, unique_tag("eval")), fullgraph=True)
        # a cached default step must not keep the model alive either
        model_of: Callable[[], nn.Module | None] = weakref.ref(model) if compile else (lambda: model)

        def default_step(params: Params, batch: Batch) -> tuple[Tensor, Tensor]:
            x, y = batch
            return core(params, get_buffers(model_of(), copy=False), x, y)  # type: ignore[arg-type]

        if compile:
            _COMPILED_EVAL.setdefault(model, {})[loss_fn] = (core, default_step)
        if buffers is None:
            return default_step
    bufs = dict(buffers)

    def eval_step(params: Params, batch: Batch) -> tuple[Tensor, Tensor]:
        x, y = batch
        return core(params, bufs, x, y)

    return eval_step


def evaluate(
    model: nn.Module,
    params: Mapping[str, Tensor],
    mask: Mask | None,
    split: Any,
    *,
    batch_size: int = 1000,
    loss_fn: LossFn = F.cross_entropy,
    buffers: Buffers | None = None,
    compile: bool = False,
) -> tuple[float, float]:
    """Mean loss and accuracy of ``params`` (under ``mask``) on a whole split.

    Batched, without gradient tracking, with the model temporarily in eval mode; the
    per-batch results are accumulated on the device and synchronized once at the end.

    Args:
        model: The module.
        params: Params pytree (masked weights need not be zero: ``mask`` is applied).
        mask: A :class:`~ltfunc.masks.Mask` or ``None``.
        split: An ``ltfunc.data.Split`` or any ``(x, y)`` pair of tensors on the params'
            device. An ``ltfunc.data.PixelSplit`` (``uint8`` images) is normalized batch by
            batch, with the numbers its normalized ``float32`` copy would give.
        batch_size: Examples per forward pass.
        loss_fn: Batch-mean loss, as in training.
        buffers: Buffers for the forward pass, e.g. the BatchNorm running statistics that
            training returned (``TrainState.buffers``); in eval mode BatchNorm normalizes
            with them. Default: the model's own.
        compile: Use a compiled eval step (cached per model; compiles once per batch shape).

    Returns:
        ``(mean loss, accuracy)`` as python floats, accuracy in [0, 1].

    Raises:
        TypeError: Wrong argument types (``params`` or ``buffers`` not a dict of tensors,
            ``mask`` not a Mask, ``split`` not an ``(x, y)`` pair, ``batch_size`` not an int).
        ValueError: Empty split, ``x``/``y`` length mismatch, a device mismatch, a mask that
            does not fit, or ``batch_size < 1``.

    Example:
        >>> import torch, ltfunc
        >>> from ltfunc.evaluation import evaluate
        >>> m = ltfunc.models.lenet300(seed=0); p = ltfunc.get_params(m)
        >>> split = (torch.randn(30, 1, 28, 28), torch.randint(0, 10, (30,)))
        >>> loss, acc = evaluate(m, p, None, split, batch_size=8)
        >>> isinstance(loss, float), 0.0 <= acc <= 1.0
        (True, True)
    """
    func = "evaluate"
    _check_model(func, model)
    check_tree(func, "params", params, nonempty=True)
    check_int(func, "batch_size", batch_size, 1)
    x, y = _split_tensors(func, split)
    norm = split.normalization if isinstance(split, Split) else None
    device = next(iter(params.values())).device
    if x.device != device or y.device != device:
        raise ValueError(f"{func}: split is on {x.device} but params are on {device}")
    check_tree(func, "buffers", buffers, optional=True)
    for k, b in (buffers or {}).items():
        if b.device != device:
            raise ValueError(f"{func}: buffers[{k!r}] is on {b.device} but params are on {device}")
    if mask is not None:
        if not isinstance(mask, Mask):
            raise TypeError(f"{func}: mask must be an ltfunc Mask or None, got {type(mask).__name__}")
        params = _masks.apply(mask, params)
    eval_step = make_eval_step(model, loss_fn, compile=compile, buffers=buffers)
    was_training = model.training
    model.eval()
    try:
        total_loss = torch.zeros((), dtype=torch.float64, device=device)
        total_correct = torch.zeros((), dtype=torch.int64, device=device)
        params = dict(params)
        for start in range(0, y.shape[0], batch_size):
            xb = x[start : start + batch_size]
            if norm is not None:
                xb = norm(xb)
            loss, correct = eval_step(params, (xb, y[start : start + batch_size]))
            total_loss = total_loss + loss
            total_correct = total_correct + correct
    finally:
        model.train(was_training)
    loss_sum, n_correct = torch.stack([total_loss, total_correct.to(torch.float64)]).tolist()
    n = y.shape[0]
    return loss_sum / n, n_correct / n


def _split_tensors(func: str, split: Any) -> tuple[Tensor, Tensor]:
    if hasattr(split, "x") and hasattr(split, "y"):
        x, y = split.x, split.y
    elif isinstance(split, (tuple, list)) and len(split) == 2:
        x, y = split
    else:
        raise TypeError(
            f"{func}: split must be an ltfunc.data.Split or an (x, y) pair, got {type(split).__name__}"
        )
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"{func}: split x and y must be tensors, got {type(x).__name__}, {type(y).__name__}")
    if x.dim() == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{func}: split x has shape {tuple(x.shape)} but y has shape {tuple(y.shape)}")
    if y.shape[0] == 0:
        raise ValueError(f"{func}: split is empty")
    return x, y
