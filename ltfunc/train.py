"""The training loop: N iterations of a masked step, with evaluation callbacks and NaN checks.

:func:`fit` runs a given number of *iterations* (not epochs) from an iterator of batches.
It keeps the host out of the way: the learning rate lives in a device tensor that is
replaced only when a schedule changes its value, the training losses are accumulated on the
device, and the host synchronizes only at evaluation points and at the end, where the mean
training loss is read and non-finite losses are detected (naming the first bad step).

The state is :class:`ltfunc.step.TrainState` (params, optimizer state, iteration, buffers);
make the first one with ``step.init(params)``. Models with buffers that change in training
(BatchNorm's running statistics) carry them in ``state.buffers``: every step reads them and
:func:`fit` returns the updated ones, to be passed on to ``ltfunc.evaluation.evaluate``.

Example:
    >>> import itertools, torch, ltfunc
    >>> model = ltfunc.models.lenet300(seed=0); params = ltfunc.get_params(model)
    >>> step = ltfunc.make_train_step(model, ltfunc.optim.sgd(lr=0.1), compile=False)
    >>> batch = (torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,)))
    >>> state = ltfunc.train.fit(step, step.init(params), None, itertools.repeat(batch), 8)
    >>> state.iteration
    8
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ._checks import check_callable, check_int, check_lr, check_tree
from ._types import Batch
from .masks import Mask
from .step import TrainState, TrainStep

__all__ = ["Schedule", "TrainState", "fit"]

Schedule = Callable[[int], float]
"""``schedule(iteration) -> lr``; ``iteration`` is the number of steps taken before the step."""

_CHUNK = 256
"""Losses are stacked and reduced on the device every this many steps."""


class _LossTracker:
    """Mean training loss and the first non-finite loss, accumulated on the device.

    ``k=None``: one run (0-d losses); ``k``: K members at once (losses of shape ``(K,)``,
    :mod:`ltfunc.members_train`).
    """

    def __init__(self, device: torch.device, k: int | None = None) -> None:
        shape = () if k is None else (k,)
        self._pending: list[Tensor] = []
        self._first = 0  # iteration number of pending[0]
        self._total = torch.zeros(shape, dtype=torch.float64, device=device)
        self._count = 0
        self._bad_step = torch.full(shape, -1, dtype=torch.int64, device=device)
        self._bad_value = torch.zeros(shape, dtype=torch.float64, device=device)

    def add(self, loss: Tensor, iteration: int) -> None:
        if not self._pending:
            self._first = iteration
        self._pending.append(loss)
        if len(self._pending) >= _CHUNK:
            self._reduce()

    def _reduce(self) -> None:
        if not self._pending:
            return
        losses = torch.stack(self._pending).to(torch.float64)  # (steps,) or (steps, K)
        self._total = self._total + losses.sum(0)
        self._count += len(self._pending)
        bad = ~torch.isfinite(losses)
        local = bad.to(torch.int8).argmax(0)  # first bad step (of each member; 0 when none, masked below)
        new = bad.any(0) & (self._bad_step < 0)
        self._bad_step = torch.where(new, local + self._first, self._bad_step)
        self._bad_value = torch.where(new, losses.gather(0, local[None])[0], self._bad_value)
        self._pending.clear()

    def _take(self) -> list[Any]:
        """``[mean, first bad step (-1: none), its loss]`` since the last take, one host sync."""
        self._reduce()
        count = max(self._count, 1)
        out = torch.stack([self._total / count, self._bad_step.to(torch.float64), self._bad_value]).tolist()
        self._total = torch.zeros_like(self._total)
        self._count = 0
        return out

    def read(self) -> float:
        """Mean loss since the last read (one host sync); raise on a non-finite loss."""
        mean, bad_step, bad_value = self._take()
        if bad_step >= 0:
            raise FloatingPointError(
                f"fit: the training loss became {bad_value} at step {int(bad_step)} (the step that "
                f"took iteration {int(bad_step) - 1} to {int(bad_step)}), the first non-finite loss; "
                "lower the learning rate or check the data"
            )
        return float(mean)


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

    With a :class:`~ltfunc.step.TrainStep` the loop runs on the step's internal flat path
    and builds dict pytrees only for ``on_eval`` and the result; any other callable with the
    step's call shape works too (e.g. a wrapper around a step). Inputs are not modified.
    ``state.buffers`` (BatchNorm running statistics) go through every step and come back
    updated in the returned state (and in the states given to ``on_eval``).

    Args:
        step: ``step(state, mask, batch, lr) -> (new_state, metrics)`` with
            ``new_state.iteration == state.iteration + 1`` and ``metrics["loss"]`` a 0-d
            tensor, e.g. from :func:`ltfunc.step.make_train_step`. A generic step gets ``lr``
            as a 0-d device tensor.
        state: Where to start (e.g. ``step.init(params)``); ``state.iteration`` counts the
            steps already taken.
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
            :class:`TrainState` (or its params/buffers not dicts of tensors), a schedule
            returning a non-number, a generic step that does not return ``(TrainState,
            metrics)``.
        ValueError: Negative ``iterations``, ``eval_every < 1``, a negative or non-finite
            ``lr``, ``batches`` running out before ``iterations`` steps, a generic step that
            does not advance ``iteration`` by one; from the step, e.g. buffers that do not
            match the model (make the state with ``step.init``).
        FloatingPointError: A NaN/inf training loss; the message names the first bad step.
            It is detected at the next evaluation point or at the end, without a host sync
            per step.

    Example:
        >>> import torch, ltfunc
        >>> m = ltfunc.models.lenet300(seed=0)
        >>> step = ltfunc.make_train_step(m, ltfunc.optim.adam(), compile=False)
        >>> data = [(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))) for _ in range(6)]
        >>> seen = []
        >>> state = ltfunc.train.fit(step, step.init(ltfunc.get_params(m)), None, data, 6,
        ...                          lr=lambda it: 1e-3 if it < 3 else 1e-4, eval_every=3,
        ...                          on_eval=lambda s, loss: seen.append(s.iteration))
        >>> seen, state.iteration
        ([3, 6], 6)
    """
    func = "fit"
    check_callable(func, "step", step, "callable(state, mask, batch, lr) -> (state, metrics)")
    if not isinstance(state, TrainState):
        raise TypeError(f"{func}: state must be a TrainState (from step.init), got {type(state).__name__}")
    check_int(func, "iterations", iterations, 0)
    check_int(func, "state.iteration", state.iteration, 0)
    if eval_every is not None:
        check_int(func, "eval_every", eval_every, 1)
    check_callable(func, "on_eval", on_eval, "callable(state, train_loss)", optional=True)
    if progress is not None and not isinstance(progress, bool) and not callable(progress):
        raise TypeError(f"{func}: progress must be None, a bool or callable(done, total), got {progress!r}")
    check_tree(func, "state.params", state.params, nonempty=True)
    check_tree(func, "state.buffers", state.buffers)
    if lr is None:
        lr = float(getattr(getattr(step, "optimizer", None), "lr", 1e-3))
    schedule: Schedule | None = lr if callable(lr) else None
    if schedule is None:
        value = check_lr(func, lr)
    if iterations == 0:
        return state
    device = next(iter(state.params.values())).device
    if schedule is not None:
        value = check_lr(func, schedule(state.iteration), f"lr schedule({state.iteration})")
    lr_tensor = torch.tensor(value, dtype=torch.float32, device=device)

    start = state.iteration
    it = iter(batches)
    fast = step if isinstance(step, TrainStep) else None  # runs on its internal flat path
    flat = fast._pack(state, func=func) if fast is not None else None
    tracker = _LossTracker(device)
    bar = _progress_bar(progress, iterations)
    try:
        for i in range(iterations):
            iteration = start + i
            if schedule is not None and i > 0:
                new_value = check_lr(func, schedule(iteration), f"lr schedule({iteration})")
                if new_value != value:
                    value = new_value
                    lr_tensor = torch.tensor(value, dtype=torch.float32, device=device)
            try:
                batch = next(it)
            except StopIteration:
                raise ValueError(f"{func}: batches ran out after {i} of {iterations} iterations") from None
            if fast is not None and flat is not None:
                # a TrainStep keeps its own device tensor per lr value (no host read of it)
                flat, metrics = fast._flat_step(flat, mask, batch, value, func=func)
            else:
                state, metrics = _generic_step(step, state, mask, batch, lr_tensor, iteration)
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
                    on_eval(
                        state if fast is None or flat is None else fast._unpack(flat, iteration + 1),
                        train_loss,
                    )
        tracker.read()
    finally:
        if bar is not None:
            bar.close()
    return state if fast is None or flat is None else fast._unpack(flat, start + iterations)


def _generic_step(
    step: Callable[..., Any], state: TrainState, mask: Mask | None, batch: Batch, lr: Tensor, iteration: int
) -> tuple[TrainState, Any]:
    """``step(state, mask, batch, lr)`` for a step that is not a TrainStep, its result checked."""
    out = step(state, mask, batch, lr)
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], TrainState)):
        raise TypeError(
            f"fit: step must return (TrainState, metrics) like step(state, mask, batch, lr) of "
            f"make_train_step, got {type(out).__name__}"
        )
    if out[0].iteration != iteration + 1:
        raise ValueError(
            f"fit: the step returned a state at iteration {out[0].iteration!r} after iteration "
            f"{iteration}; a step must advance state.iteration by one"
        )
    return out


def _progress_bar(progress: Any, total: int) -> Any:
    if progress is not True:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="train", unit="it", leave=False)
