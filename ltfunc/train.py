"""The training loop: N iterations of a masked step, with evaluation callbacks and NaN checks.

:func:`fit` runs a given number of *iterations* (not epochs) from an iterator of batches.
It keeps the host out of the way: the learning rate lives in a device tensor that is
replaced only when a schedule changes its value, the training losses are accumulated on the
device, and the host synchronizes only at evaluation points and at the end, where the mean
training loss is read and non-finite losses are detected (naming the first bad step).

Models with buffers that change in training (BatchNorm's running statistics) carry them in
:attr:`TrainState.buffers`: :func:`init` takes them from the step, every step reads them
and :func:`fit` returns the updated ones, to be passed on to ``ltfunc.step.evaluate``.

Example:
    >>> import itertools, torch, ltfunc
    >>> model = ltfunc.models.lenet300(seed=0); params = ltfunc.get_params(model)
    >>> opt = ltfunc.optim.sgd(lr=0.1)
    >>> step = ltfunc.step.make_train_step(model, opt, compile=False)
    >>> batch = (torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,)))
    >>> state = ltfunc.train.fit(step, ltfunc.train.init(step, params), None, itertools.repeat(batch), 8)
    >>> state.iteration
    8
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ._types import Batch, Buffers, Params
from .masks import Mask
from .step import FlatState, TrainStep

__all__ = ["Schedule", "TrainState", "fit", "init"]

Schedule = Callable[[int], float]
"""``schedule(iteration) -> lr``; ``iteration`` is the number of steps taken before the step."""

_CHUNK = 256
"""Losses are stacked and reduced on the device every this many steps."""


class TrainState(NamedTuple):
    """Everything that changes during training, as an immutable pytree."""

    params: Params
    """The parameter pytree."""
    opt_state: Any
    """The optimizer state (from ``optimizer.init`` or a previous step)."""
    iteration: int
    """Number of steps taken so far."""
    buffers: Buffers | None = None
    """The model's buffers (BatchNorm running statistics), updated by every step; ``None``
    for models without buffers (the step then uses its own, fixed ones)."""


def init(
    step: Any,
    params: Mapping[str, Tensor],
    iteration: int = 0,
    *,
    buffers: Mapping[str, Tensor] | None = None,
) -> TrainState:
    """A fresh :class:`TrainState`: ``params`` with a new state of the step's optimizer.

    Args:
        step: A step from :func:`ltfunc.step.make_train_step` (anything with an
            ``optimizer`` attribute).
        params: The starting params pytree.
        iteration: The iteration count to start from.
        buffers: The starting buffers (e.g. ``ltfunc.get_buffers(model)``). Default: copies
            of the step's own ``buffers`` (the model's at ``make_train_step`` time) when it
            has any, else ``None``.

    Returns:
        ``TrainState(params, step.optimizer.init(params), iteration, buffers)``.

    Raises:
        TypeError: If ``step`` has no ``optimizer.init``, or ``params`` or ``buffers`` is
            not a dict of tensors.
        ValueError: If ``iteration`` is not an int >= 0.

    Example:
        >>> import torch, ltfunc
        >>> m = ltfunc.models.lenet300()
        >>> step = ltfunc.step.make_train_step(m, ltfunc.optim.adam(), compile=False)
        >>> ltfunc.train.init(step, ltfunc.get_params(m)).opt_state.count
        tensor(0)
        >>> bn_net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
        >>> bn_step = ltfunc.step.make_train_step(bn_net, ltfunc.optim.sgd(), compile=False)
        >>> sorted(ltfunc.train.init(bn_step, ltfunc.get_params(bn_net)).buffers)
        ['1.num_batches_tracked', '1.running_mean', '1.running_var']
    """
    optimizer = getattr(step, "optimizer", None)
    if not callable(getattr(optimizer, "init", None)):
        raise TypeError(
            f"init: step must carry an optimizer (from make_train_step), got {type(step).__name__}"
        )
    if not isinstance(params, Mapping) or not all(isinstance(v, Tensor) for v in params.values()):
        raise TypeError(f"init: params must be a dict of tensors, got {type(params).__name__}")
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise ValueError(f"init: iteration must be an int >= 0, got {iteration!r}")
    if buffers is None:
        own = getattr(step, "buffers", None)
        bufs = {k: v.detach().clone() for k, v in own.items()} if own else None
    else:
        _check_buffers("init", "buffers", buffers)
        bufs = dict(buffers)
    return TrainState(dict(params), optimizer.init(params), iteration, bufs)


def _check_buffers(func: str, name: str, buffers: Any) -> None:
    if not isinstance(buffers, Mapping) or not all(isinstance(v, Tensor) for v in buffers.values()):
        raise TypeError(f"{func}: {name} must be a dict of tensors or None, got {type(buffers).__name__}")


class _LossTracker:
    """Mean training loss and the first non-finite loss, accumulated on the device."""

    def __init__(self, device: torch.device) -> None:
        self._none = torch.tensor(-1, dtype=torch.int64, device=device)
        self._pending: list[Tensor] = []
        self._first = 0  # iteration number of pending[0]
        self._total = torch.zeros((), dtype=torch.float64, device=device)
        self._count = 0
        self._bad_step = self._none
        self._bad_value = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, loss: Tensor, iteration: int) -> None:
        if not self._pending:
            self._first = iteration
        self._pending.append(loss)
        if len(self._pending) >= _CHUNK:
            self._reduce()

    def _reduce(self) -> None:
        if not self._pending:
            return
        losses = torch.stack(self._pending).to(torch.float64)
        self._total = self._total + losses.sum()
        self._count += len(self._pending)
        bad = ~torch.isfinite(losses)
        local = bad.to(torch.int8).argmax()  # first bad index (0 when none, masked below)
        new = bad.any() & (self._bad_step < 0)
        self._bad_step = torch.where(new, local + self._first, self._bad_step)
        self._bad_value = torch.where(new, losses[local], self._bad_value)
        self._pending.clear()

    def read(self) -> float:
        """Mean loss since the last read (one host sync); raise on a non-finite loss."""
        self._reduce()
        count = max(self._count, 1)
        mean, bad_step, bad_value = torch.stack(
            [self._total / count, self._bad_step.to(torch.float64), self._bad_value]
        ).tolist()
        if bad_step >= 0:
            raise FloatingPointError(
                f"fit: the training loss became {bad_value} at step {int(bad_step)} (the step that "
                f"took iteration {int(bad_step) - 1} to {int(bad_step)}), the first non-finite loss; "
                "lower the learning rate or check the data"
            )
        self._total = torch.zeros_like(self._total)
        self._count = 0
        return mean


def _check_lr(value: Any, what: str) -> float:
    """``value`` as a float; ``what`` names it in the message (``lr`` or ``lr schedule(k)``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"fit: {what} must be a float, got {type(value).__name__} {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v >= 0.0):
        raise ValueError(f"fit: {what} must be finite and >= 0, got {value!r}")
    return v


def fit(
    step: Callable[..., Any],
    state: TrainState,
    mask: Mask | None,
    batches: Iterable[Batch],
    iterations: int,
    *,
    lr: float | Schedule | None = None,
    eval_every: int | None = None,
    on_eval: Callable[[TrainState, float], None] | None = None,
    progress: bool | Callable[[int, int], None] | None = None,
) -> TrainState:
    """Run ``iterations`` more steps of ``step`` from ``state``.

    With a :class:`~ltfunc.step.TrainStep` the loop runs on the step's flat fast path and
    builds dict pytrees only for ``on_eval`` and the result; any other callable with the
    step signature works too (e.g. a wrapper around a step). Inputs are not modified.
    ``state.buffers`` (BatchNorm running statistics) go through every step and come back
    updated in the returned state (and in the states given to ``on_eval``).

    Args:
        step: ``step(params, opt_state, mask, batch, lr) -> (params, opt_state, metrics)``
            with ``metrics["loss"]`` a 0-d tensor, e.g. from :func:`ltfunc.step.make_train_step`;
            when ``state.buffers`` is not ``None``, called as ``step(params, opt_state, mask,
            batch, lr, buffers=b) -> (params, opt_state, metrics, new_buffers)``.
        state: Where to start; ``state.iteration`` counts the steps already taken.
        mask: A :class:`~ltfunc.masks.Mask` or ``None`` (dense), passed to every step.
        batches: An iterable of ``(x, y)`` batches on the params' device (e.g.
            :func:`ltfunc.data.batches`); ``iterations`` batches are drawn from one iterator.
        iterations: How many steps to take (>= 0).
        lr: A float, or a schedule ``lr(iteration) -> float`` called before every step with
            the number of steps taken so far (warmup, step decay...). ``None``: the step's
            optimizer's default ``lr`` (``1e-3`` for steps without one). The value is kept in
            a device tensor that is replaced only when it changes.
        eval_every: Call ``on_eval`` whenever ``state.iteration`` reaches a multiple of this
            (counted from iteration 0, not from the start of this call). ``None``: never.
        on_eval: ``on_eval(state, train_loss)`` with the :class:`TrainState` after that step
            and the mean training loss of the steps since the previous evaluation point (or
            the start of this call).
        progress: ``True`` shows a tqdm bar; a callable is called as ``progress(done,
            iterations)`` after every step; ``None``/``False`` is quiet.

    Returns:
        The final :class:`TrainState` (``iteration`` = start + ``iterations``).

    Raises:
        TypeError: ``step``/``on_eval``/``progress`` of the wrong kind, ``state`` not a
            :class:`TrainState` (or its ``buffers`` not a dict of tensors), a schedule
            returning a non-number.
        ValueError: Negative ``iterations``, ``eval_every < 1``, a negative or non-finite
            ``lr``, or ``batches`` running out before ``iterations`` steps; from the step,
            e.g. BatchNorm in training mode with ``state.buffers=None`` (use :func:`init`).
        FloatingPointError: A NaN/inf training loss; the message names the first bad step.
            It is detected at the next evaluation point or at the end, without a host sync
            per step.

    Example:
        >>> import torch, ltfunc
        >>> m = ltfunc.models.lenet300(seed=0); opt = ltfunc.optim.adam()
        >>> step = ltfunc.step.make_train_step(m, opt, compile=False)
        >>> data = [(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))) for _ in range(6)]
        >>> seen = []
        >>> state = ltfunc.train.fit(step, ltfunc.train.init(step, ltfunc.get_params(m)), None, data, 6,
        ...                          lr=lambda it: 1e-3 if it < 3 else 1e-4, eval_every=3,
        ...                          on_eval=lambda s, loss: seen.append(s.iteration))
        >>> seen, state.iteration
        ([3, 6], 6)
    """
    func = "fit"
    if not callable(step):
        raise TypeError(f"{func}: step must be callable (from make_train_step), got {type(step).__name__}")
    if not isinstance(state, TrainState):
        raise TypeError(f"{func}: state must be a TrainState, got {type(state).__name__}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"{func}: iterations must be an int >= 0, got {iterations!r}")
    if isinstance(state.iteration, bool) or not isinstance(state.iteration, int) or state.iteration < 0:
        raise ValueError(f"{func}: state.iteration must be an int >= 0, got {state.iteration!r}")
    if eval_every is not None and (
        isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1
    ):
        raise ValueError(f"{func}: eval_every must be None or an int >= 1, got {eval_every!r}")
    if on_eval is not None and not callable(on_eval):
        raise TypeError(f"{func}: on_eval must be None or callable(state, train_loss), got {on_eval!r}")
    if progress is not None and not isinstance(progress, bool) and not callable(progress):
        raise TypeError(f"{func}: progress must be None, a bool or callable(done, total), got {progress!r}")
    if not isinstance(state.params, Mapping) or not state.params:
        raise TypeError(f"{func}: state.params must be a non-empty dict of tensors")
    if state.buffers is not None:
        _check_buffers(func, "state.buffers", state.buffers)
    if lr is None:
        lr = float(getattr(getattr(step, "optimizer", None), "lr", 1e-3))
    schedule: Schedule | None = lr if callable(lr) else None
    if schedule is None:
        value = _check_lr(lr, "lr")
    if iterations == 0:
        return state
    device = next(iter(state.params.values())).device
    if schedule is not None:
        value = _check_lr(schedule(state.iteration), f"lr schedule({state.iteration})")
    lr_tensor = torch.tensor(value, dtype=torch.float32, device=device)

    it = iter(batches)
    fast = isinstance(step, TrainStep)
    flat: FlatState | None = step.pack(state.params, state.opt_state, state.buffers) if fast else None
    params, opt_state, buffers = state.params, state.opt_state, state.buffers
    tracker = _LossTracker(device)
    bar = _progress_bar(progress, iterations)
    try:
        for i in range(iterations):
            iteration = state.iteration + i
            if schedule is not None and i > 0:
                new_value = _check_lr(schedule(iteration), f"lr schedule({iteration})")
                if new_value != value:
                    value = new_value
                    lr_tensor = torch.tensor(value, dtype=torch.float32, device=device)
            try:
                batch = next(it)
            except StopIteration:
                raise ValueError(f"{func}: batches ran out after {i} of {iterations} iterations") from None
            if flat is not None:
                # a TrainStep keeps its own device tensor per lr value (no host read of it)
                flat, metrics = step.flat_step(flat, mask, batch, value)  # type: ignore[union-attr]
            elif buffers is None:
                params, opt_state, metrics = step(params, opt_state, mask, batch, lr_tensor)
            else:
                params, opt_state, metrics, buffers = step(
                    params, opt_state, mask, batch, lr_tensor, buffers=buffers
                )
            tracker.add(metrics["loss"], iteration + 1)
            if bar is not None:
                bar.update(1)
            elif callable(progress):
                progress(i + 1, iterations)
            if eval_every is not None and (iteration + 1) % eval_every == 0:
                train_loss = tracker.read()
                if bar is not None:
                    bar.set_postfix(loss=f"{train_loss:.4f}", refresh=False)
                if on_eval is not None:
                    if flat is not None:
                        params, opt_state = step.unpack(flat)  # type: ignore[union-attr]
                        buffers = flat.buffers
                    on_eval(TrainState(params, opt_state, iteration + 1, buffers), train_loss)
        tracker.read()
    finally:
        if bar is not None:
            bar.close()
    if flat is not None:
        params, opt_state = step.unpack(flat)  # type: ignore[union-attr]
        buffers = flat.buffers
    return TrainState(params, opt_state, state.iteration + iterations, buffers)


def _progress_bar(progress: Any, total: int) -> Any:
    if progress is not True:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="train", unit="it", leave=False)
