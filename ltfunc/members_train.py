"""K members trained through whole rounds at once: the members' :func:`ltfunc.train_round`.

::

    vstep = members_step_for(trainers)                       # make once, reuse every round
    runs = train_members_round(trainers, starts, masks, vstep=vstep)
    runs[i].final, runs[i].history, runs[i].captured         # member i's RoundTraining

Member ``i`` trains ``starts[i]`` under ``masks[i]`` with ``trainers[i]``'s data order
(``data_seed`` and training split) and is evaluated with ``trainers[i].evaluate``; all members
advance together through one vmapped step (:class:`ltfunc.members.MembersStep`, compiled
once and reused across rounds: new masks and start weights never recompile). Each member gets
what :func:`ltfunc.train_round` gives it alone: the same final weights and buffers, the same
evaluation records at the same iterations and the same captured weights, up to float rounding
of the batched kernels.

What members share, because one step trains them: the model architecture, optimizer and loss
(``trainer.step``), batch size, iterations, ``eval_every``, learning rate (schedule) and
augmentation. ``data_seed``, the training split and the evaluator may differ per member. When
all members read the same stream (the same split object and seed), one batch per step is
fetched and shared (``shared_batch=True``); members with equal streams share their fetch
otherwise too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from ._checks import check_bool, check_callable, check_int, check_lr, check_mask
from ._types import Batch
from .data import batches
from .masks import Mask, density
from .members import MembersStep, make_members_step
from .step import TrainState, TrainStep
from .train import _LossTracker
from .trainer import Record, RoundTraining, Trainer, Weights, _copy, _eval_points, as_weights

__all__ = ["members_step_for", "train_members_round"]

_SHARED = ("batch_size", "iterations", "eval_every", "lr", "augment")
"""The :class:`~ltfunc.trainer.Trainer` fields every member must share (besides the step's model,
optimizer and loss)."""


def members_step_for(trainers: Sequence[Trainer], *, compile: bool | None = None) -> MembersStep:
    """The :class:`~ltfunc.members.MembersStep` that :func:`train_members_round` makes by default.

    Make it once and pass it as ``vstep=`` to every round, so the vmapped step compiles once
    (a new number of members or batch shape compiles again).

    Args:
        trainers: The members' trainers (checked like :func:`train_members_round` checks them).
        compile: ``torch.compile`` the step; ``None``: as ``trainers[0].step`` is.

    Returns:
        A step of ``trainers[0].step``'s model, optimizer and loss, with
        ``shared_batch=True`` when all members read the same data stream (the same training
        split object and ``data_seed``).

    Raises:
        TypeError, ValueError: As :func:`train_members_round` for ``trainers``; ``compile``
            not a bool or ``None``.

    Example:
        >>> import torch, ltfunc
        >>> m = ltfunc.models.lenet300(seed=0)
        >>> step = ltfunc.make_train_step(m, ltfunc.optim.sgd(lr=0.1), compile=False)
        >>> split = (torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,)))
        >>> t = ltfunc.make_trainer(step, split, iterations=4, batch_size=8)
        >>> members_step_for([t, t]).shared_batch, members_step_for([t, t._replace(data_seed=1)]).shared_batch
        (True, False)
    """
    func = "members_step_for"
    trainers = _check_trainers(func, trainers)
    if compile is not None:
        check_bool(func, "compile", compile)
    return _make_vstep(trainers, compile)


def train_members_round(
    trainers: Sequence[Trainer],
    starts: Sequence[Weights],
    masks: Sequence[Mask],
    *,
    start_iteration: int = 0,
    capture_at: int | None = None,
    on_records: Sequence[Callable[[Record], None] | None] | None = None,
    progress: Any = None,
    vstep: MembersStep | None = None,
) -> tuple[RoundTraining, ...]:
    """Train K = ``len(trainers)`` members through one round each, as one vmapped step.

    Member ``i`` is :func:`ltfunc.train_round` ``(trainers[i], starts[i], masks[i], ...)``:
    a fresh optimizer state, ``trainers[i]``'s batch stream
    (``ltfunc.data.batches(trainers[i].train, batch_size, seed=trainers[i].data_seed,
    augment=..., start=start_iteration)``), the shared learning rate at each iteration,
    evaluations at every multiple of ``eval_every`` after ``start_iteration`` and at the last
    iteration, each record ``{"iteration", "train_loss" (mean since the previous
    evaluation), <trainers[i].evaluate's values>, "density"}``; BatchNorm buffers start
    from ``starts[i].buffers`` and are evaluated with. Members are evaluated one after the
    other with their own evaluators.

    Before any work, the memory the members need (params, optimizer states, buffers, masks,
    gradients and the activations of one batch each:
    :meth:`~ltfunc.members.MembersStep.estimate_memory`) is checked against the device's
    available memory; too many members are refused with the number that fits.

    Args:
        trainers: K >= 1 :class:`~ltfunc.trainer.Trainer` s that share the model
            architecture, optimizer and loss of their steps, ``batch_size``, ``iterations``,
            ``eval_every``, ``lr`` and ``augment``; ``data_seed``, ``train`` and ``evaluate``
            may differ. ``trainers[0].step`` defines the computation.
        starts: K starting :class:`~ltfunc.trainer.Weights` (same keys, shapes, dtype and
            device); not modified.
        masks: K masks (same keys), one per member.
        start_iteration: Iteration to start at (the rewind iteration), ``< iterations``.
        capture_at: Also return every member's weights after this iteration.
        on_records: K callables (or ``None`` entries), ``on_records[i](record)`` with each of
            member ``i``'s records as soon as it exists; ``None``: no callbacks.
        progress: A tqdm-like bar: ``update(1)`` per iteration (one iteration advances all K
            members: a round is ``iterations - start_iteration`` updates, as for one
            member), ``set_postfix`` per evaluation (the members' lowest and highest
            training loss and accuracies).
        vstep: The vmapped step to train with (make it once with :func:`members_step_for`
            and reuse it: it compiles once). ``None``: a new one from ``trainers[0].step``
            (compiled like it). A ``shared_batch`` step needs members with one stream.

    Returns:
        One :class:`~ltfunc.trainer.RoundTraining` ``(final, history, captured)`` per member,
        in order. ``final`` params and buffers are views into the stacked result.

    Raises:
        TypeError: ``trainers``, ``starts``, ``masks`` or ``on_records`` not lists of the
            right kind (naming the member), ``vstep`` not a ``MembersStep``, ``progress``
            without ``update``.
        ValueError: K = 0; lists of another length than ``trainers``; a trainer that differs
            from ``trainers[0]`` in a shared field, or a ``vstep`` of another model,
            optimizer or loss (naming the member and the field); a data-parallel trainer
            (``parallel`` or a step with ``grad_reduce``); start weights or masks that
            do not fit the model or do not stack (naming the member and the key); splits on
            another device or of another float dtype than the weights; ``start_iteration`` /
            ``capture_at`` out of range; more members than fit in memory.
        FloatingPointError: A member's training loss became NaN/inf; the message names the
            member and its first bad step (detected at the end of each evaluation segment).

    Example:
        >>> import torch, ltfunc
        >>> m = ltfunc.models.lenet300(seed=0)
        >>> step = ltfunc.make_train_step(m, ltfunc.optim.sgd(lr=0.1), compile=False)
        >>> split = (torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,)))
        >>> t = ltfunc.make_trainer(step, split, iterations=4, batch_size=8, eval_every=2)
        >>> w = ltfunc.Weights.of(m)
        >>> full = ltfunc.masks.ones(w.params)
        >>> masks = [full, ltfunc.prune.random(w.params, full, rate=0.5, seed=0)]
        >>> runs = train_members_round([t, t._replace(data_seed=1)], [w, w], masks)
        >>> [[r["iteration"] for r in run.history] for run in runs], round(runs[1].history[-1]["density"], 2)
        ([[2, 4], [2, 4]], 0.5)
    """
    func = "train_members_round"
    trainers = _check_trainers(func, trainers)
    k = len(trainers)
    t0 = trainers[0]
    total = t0.iterations
    check_int(func, "start_iteration", start_iteration, 0, total - 1)
    if capture_at is not None:
        check_int(func, "capture_at", capture_at, start_iteration, total)
    weights = _check_starts(func, starts, k, t0.step)
    mask_list = _check_masks(func, masks, k, weights[0].params)
    callbacks = _check_callbacks(func, on_records, k)
    if progress is not None and not callable(getattr(progress, "update", None)):
        raise TypeError(f"{func}: progress must be None or a tqdm-like bar with update(n), got {progress!r}")
    groups, group_of = _stream_groups(trainers)
    if vstep is None:
        vstep = _make_vstep(trainers, None)
    else:
        if not isinstance(vstep, MembersStep):
            raise TypeError(
                f"{func}: vstep must be a MembersStep (from members_step_for), got {type(vstep).__name__}"
            )
        _check_same_step(func, "vstep", vstep, t0.step)
        if vstep.shared_batch and len(groups) > 1:
            raise ValueError(
                f"{func}: vstep has shared_batch=True but the members read {len(groups)} different data "
                "streams (training splits / data_seed); make it with members_step_for(trainers)"
            )
    device = next(iter(weights[0].params.values())).device
    dtype = next(iter(weights[0].params.values())).dtype
    for g in groups:
        x = trainers[g].train[0]
        if x.device != device:
            raise ValueError(
                f"{func}: trainers[{g}].train is on {x.device} but the start weights are on {device}"
            )
        if x.is_floating_point() and x.dtype != dtype:
            raise ValueError(f"{func}: trainers[{g}].train.x is {x.dtype} but the start weights are {dtype}")
    streams = [
        batches(
            trainers[g].train,
            t0.batch_size,
            seed=trainers[g].data_seed,
            augment=t0.augment,
            start=start_iteration,
        )
        for g in groups
    ]
    batch_shape = (t0.batch_size, *t0.train[0].shape[1:])
    vstep._check_memory(func, k, dtype, device, batch_shape)
    states = vstep.init([w.params for w in weights], [w.buffers for w in weights], iteration=start_iteration)
    return _run(
        vstep, trainers, states, weights, mask_list, streams, group_of, start_iteration, capture_at,
        callbacks, progress,
    )  # fmt: skip


def _run(
    vstep: MembersStep,
    trainers: list[Trainer],
    states: TrainState,
    starts: list[Weights],
    mask_list: list[Mask],
    streams: list[Iterator[Batch]],
    group_of: list[int],
    start_iteration: int,
    capture_at: int | None,
    callbacks: list[Callable[[Record], None] | None],
    progress: Any,
) -> tuple[RoundTraining, ...]:
    func = "train_members_round"
    k = len(trainers)
    t0 = trainers[0]
    total, schedule = t0.iterations, t0.lr
    kept = [density(m) if len(m) else 1.0 for m in mask_list]
    fs, _ = vstep._pack(func, states)
    device = fs.params.device
    tracker = _Losses(k, device)
    captured: list[Weights | None] = [_copy(w) if capture_at == start_iteration else None for w in starts]
    histories: list[list[Record]] = [[] for _ in range(k)]
    loss_sum, loss_steps = [0.0] * k, 0
    lr_value: float | None = None
    lr_t = torch.empty(0)
    it = start_iteration
    for point in _eval_points(start_iteration, total, t0.eval_every, capture_at):
        steps = point - it
        for _ in range(steps):
            value = check_lr(func, schedule(it), f"lr schedule({it})") if callable(schedule) else schedule
            if value != lr_value:  # one device tensor per lr value, as in fit
                lr_value, lr_t = value, torch.full((k,), value, dtype=torch.float32, device=device)
            fetched = [next(s) for s in streams]
            if vstep.shared_batch:
                batch = fetched[0]
            else:
                batch = (
                    torch.stack([fetched[g][0] for g in group_of]),
                    torch.stack([fetched[g][1] for g in group_of]),
                )
            fs, metrics = vstep._flat_step(func, fs, mask_list, batch, lr_t)
            it += 1
            tracker.add(metrics["loss"], it)
            if progress is not None:
                progress.update(1)
        means = tracker.read_members(func)
        loss_sum = [s + m * steps for s, m in zip(loss_sum, means, strict=True)]
        loss_steps += steps
        state = vstep._unpack(fs, point)
        members = [_member(state, i) for i in range(k)]
        if point == capture_at:
            captured = [_copy(w) for w in members]
        if point % t0.eval_every and point != total:
            continue
        records: list[Record] = []
        for i, t in enumerate(trainers):
            record: Record = {"iteration": point, "train_loss": loss_sum[i] / loss_steps}
            if t.evaluate is not None:
                record.update(t.evaluate(members[i], mask_list[i]))
            record["density"] = kept[i]
            histories[i].append(record)
            records.append(record)
            callback = callbacks[i]
            if callback is not None:
                callback(record)
        loss_sum, loss_steps = [0.0] * k, 0
        if progress is not None and callable(getattr(progress, "set_postfix", None)):
            progress.set_postfix(_postfix(records), refresh=False)
    final = vstep._unpack(fs, total)
    return tuple(RoundTraining(_member(final, i), tuple(histories[i]), captured[i]) for i in range(k))


def _member(state: TrainState, i: int) -> Weights:
    """Member ``i``'s weights in a stacked state (views)."""
    return Weights({n: t[i] for n, t in state.params.items()}, {n: b[i] for n, b in state.buffers.items()})


def _postfix(records: list[Record]) -> dict[str, str]:
    shown = {}
    for key, label in (("train_loss", "loss"), ("val_accuracy", "val_acc"), ("test_accuracy", "test_acc")):
        values = [float(r[key]) for r in records if key in r]
        if values:
            lo, hi = min(values), max(values)
            shown[label] = f"{lo:.4f}" if lo == hi else f"{lo:.4f}..{hi:.4f}"
    return shown


class _Losses(_LossTracker):
    """Each member's mean training loss and first non-finite loss, accumulated on the device."""

    def __init__(self, k: int, device: torch.device) -> None:
        super().__init__(device, k)

    def read_members(self, func: str) -> list[float]:
        """Each member's mean loss since the last read (one host sync); raise on a non-finite loss."""
        means, bad_steps, bad_values = self._take()
        bad = [i for i, s in enumerate(bad_steps) if s >= 0]
        if bad:
            i, step = bad[0], int(bad_steps[bad[0]])
            others = f" (members {bad[1:]} too)" if len(bad) > 1 else ""
            raise FloatingPointError(
                f"{func}: member {i}'s training loss became {bad_values[i]} at step {step} (the step that "
                f"took iteration {step - 1} to {step}), its first non-finite loss{others}; lower the "
                "learning rate or check the data"
            )
        return [float(m) for m in means]


# Checks --------------------------------------------------------------------------------------------
def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # objects whose == does not give a bool: only identity counts
        return False


def _check_trainers(func: str, trainers: Any) -> list[Trainer]:
    if isinstance(trainers, Trainer) or not isinstance(trainers, Sequence):
        raise TypeError(
            f"{func}: trainers must be a list of Trainers (one per member), got {type(trainers).__name__}"
        )
    if not trainers:
        raise ValueError(f"{func}: trainers must hold at least one member (K >= 1), got an empty list")
    for i, t in enumerate(trainers):
        if not isinstance(t, Trainer):
            raise TypeError(
                f"{func}: trainers[{i}] must be a Trainer from make_trainer, got {type(t).__name__}"
            )
    for i, t in enumerate(trainers):
        if getattr(t, "parallel", None) is not None or getattr(t.step, "grad_reduce", None) is not None:
            raise ValueError(
                f"{func}: trainers[{i}] trains data-parallel (parallel= / grad_reduce=); members train "
                "in one process: use trainers without parallel"
            )
    t0 = trainers[0]
    for i, t in enumerate(trainers[1:], 1):
        for field in _SHARED:
            a, b = getattr(t, field), getattr(t0, field)
            if not _same(a, b):
                raise ValueError(
                    f"{func}: trainers[{i}].{field} is {a!r} but trainers[0].{field} is {b!r}; members share "
                    f"{', '.join(_SHARED)} and the step's model, optimizer and loss (data_seed, train and "
                    "evaluate may differ)"
                )
        _check_same_step(func, f"trainers[{i}].step", t.step, t0.step)
    return list(trainers)


def _check_same_step(func: str, name: str, step: TrainStep | MembersStep, ref: TrainStep) -> None:
    """``step`` must train what ``trainers[0].step`` trains: model architecture, optimizer, loss."""

    def arch(s: TrainStep | MembersStep) -> tuple[Any, ...]:
        lay = s.layout
        specs = s._buffer_specs if isinstance(s, TrainStep) else s._one._buffer_specs
        return type(s.model), lay.names, tuple(map(tuple, lay.shapes)), tuple(specs.items())

    def desc(s: TrainStep | MembersStep) -> str:
        return f"{type(s.model).__name__}, {len(s.layout.names)} tensors / {s.layout.numel} weights"

    if step.model is not ref.model and arch(step) != arch(ref):
        raise ValueError(
            f"{func}: {name}.model ({desc(step)}) is not the architecture of trainers[0].step.model "
            f"({desc(ref)}); members share the model architecture"
        )
    a, b = step.optimizer, ref.optimizer
    same_opt = a is b or (a.init is b.init and a.update is b.update)
    if not same_opt and a.name != "custom" and a.name == b.name:
        same_opt = {k: v for k, v in a.hyperparams.items() if k != "lr"} == {
            k: v for k, v in b.hyperparams.items() if k != "lr"
        }
    if not same_opt:
        raise ValueError(
            f"{func}: {name}.optimizer ({a.name} {dict(a.hyperparams)}) differs from "
            f"trainers[0].step.optimizer ({b.name} {dict(b.hyperparams)}); members share the optimizer "
            "(the learning rate is the trainers')"
        )
    if not _same(step.loss_fn, ref.loss_fn):
        raise ValueError(
            f"{func}: {name}.loss_fn {step.loss_fn!r} differs from trainers[0].step.loss_fn {ref.loss_fn!r}; "
            "members share the loss"
        )


def _check_list(func: str, name: str, value: Any, k: int) -> list[Any]:
    if isinstance(value, (Mapping, str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(
            f"{func}: {name} must be a list with one entry per member, got {type(value).__name__}"
        )
    if len(value) != k:
        raise ValueError(
            f"{func}: {name} must hold one entry per member (K = {k} trainers), got {len(value)}"
        )
    return list(value)


def _check_starts(func: str, starts: Any, k: int, step: TrainStep) -> list[Weights]:
    out: list[Weights] = []
    for i, w in enumerate(_check_list(func, "starts", starts, k)):
        if not isinstance(w, Weights):
            raise TypeError(
                f"{func}: starts[{i}] must be ltfunc.Weights(params, buffers), got {type(w).__name__}"
            )
        as_weights(func, f"starts[{i}]", w, step.model)
        first = step._check_params(func, f"starts[{i}].params", w.params)
        step._check_buffers(func, f"starts[{i}].buffers", w.buffers, first.device)
        if out:
            ref = next(iter(out[0].params.values()))
            if (first.dtype, first.device) != (ref.dtype, ref.device):
                raise ValueError(
                    f"{func}: starts[{i}].params are {first.dtype} on {first.device} but starts[0].params "
                    f"are {ref.dtype} on {ref.device}; members share one dtype and device"
                )
        out.append(w)
    return out


def _check_masks(func: str, masks: Any, k: int, params: Any) -> list[Mask]:
    from .masks import check_compatible

    out = _check_list(func, "masks", masks, k)
    for i, m in enumerate(out):
        check_mask(func, f"masks[{i}]", m)
        check_compatible(m, params, f"{func}: masks[{i}]")
        if set(m) != set(out[0]):
            missing = [n for n in out[0] if n not in m]
            extra = [n for n in m if n not in out[0]]
            raise ValueError(
                f"{func}: masks[{i}] does not have masks[0]'s keys: missing {missing}, unexpected {extra}; "
                "members' masks must have the same keys"
            )
    return out


def _check_callbacks(func: str, on_records: Any, k: int) -> list[Callable[[Record], None] | None]:
    if on_records is None:
        return [None] * k
    out = _check_list(func, "on_records", on_records, k)
    for i, c in enumerate(out):
        check_callable(func, f"on_records[{i}]", c, "callable(record)", optional=True)
    return out


def _stream_key(t: Trainer) -> tuple[Any, ...]:
    train = t.train
    tensors = tuple(id(x) for x in train)
    return (type(train), tensors, t.data_seed)


def _stream_groups(trainers: list[Trainer]) -> tuple[list[int], list[int]]:
    """The first member of each distinct data stream, and each member's stream index."""
    keys: dict[tuple[Any, ...], int] = {}
    firsts: list[int] = []
    group_of = []
    for i, t in enumerate(trainers):
        key = _stream_key(t)
        if key not in keys:
            keys[key] = len(firsts)
            firsts.append(i)
        group_of.append(keys[key])
    return firsts, group_of


def _make_vstep(trainers: list[Trainer], compile: bool | None) -> MembersStep:
    step = trainers[0].step
    shared = len(_stream_groups(trainers)[0]) == 1
    return make_members_step(
        step.model,
        step.optimizer,
        step.loss_fn,
        compile=step.compiled if compile is None else compile,
        shared_batch=shared,
    )
