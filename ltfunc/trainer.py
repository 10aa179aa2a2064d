"""How one IMP round trains: a :class:`Trainer` shared by every round, and :func:`train_round`.

A round trains given starting :class:`Weights` (params and buffers) under a mask, with a
fresh optimizer state and the same data order as every other round and condition, evaluates
every ``eval_every`` iterations, and returns the final weights and its evaluation records.
The step is made once (:func:`ltfunc.make_train_step`) and reused by every round: masks,
learning rates and optimizer states are tensors, so nothing recompiles.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from torch import Tensor, nn

from ._checks import check_bool, check_callable, check_choice, check_int, check_number, check_tree
from ._types import Buffers, Params
from .augment import AUGMENTATIONS
from .data import Split, batches
from .evaluation import evaluate
from .masks import Mask
from .params import get_buffers, get_params, snapshot
from .sparse_step import SPARSE_MODES
from .step import TrainStep
from .train import Schedule, fit

if TYPE_CHECKING:
    from .distributed import DataParallel

__all__ = [
    "Evaluator",
    "Record",
    "RoundTraining",
    "Trainer",
    "Weights",
    "as_weights",
    "make_evaluator",
    "make_trainer",
    "train_round",
]

Record = dict[str, Any]
"""One evaluation: ``{"iteration", "train_loss", <evaluator keys>..., "density"}``."""


class Weights(NamedTuple):
    """A model's state that pruning rounds reset, rewind, train and save: params and buffers together.

    ``buffers`` are the BatchNorm running statistics (and ``num_batches_tracked``); ``{}``
    for models without buffers.

    Example:
        >>> import ltfunc
        >>> w = ltfunc.Weights.of(ltfunc.models.lenet300(seed=0))
        >>> len(w.params), w.buffers
        (6, {})
    """

    params: Params
    """The parameter pytree."""
    buffers: Buffers = {}  # noqa: RUF012 - never mutated; a NamedTuple default
    """The buffer pytree (``{}`` when the model has none)."""

    @classmethod
    def of(cls, model: nn.Module) -> Weights:
        """Copies of a module's parameters and buffers.

        Args:
            model: The module.

        Returns:
            ``Weights(get_params(model), get_buffers(model))``.

        Raises:
            TypeError: ``model`` is not a module.
        """
        return cls(get_params(model), get_buffers(model))


Evaluator = Callable[[Weights, Mask], dict[str, float]]
"""``evaluate(weights, mask) -> {"val_loss": ..., "val_accuracy": ..., "test_loss": ..., ...}``."""


def as_weights(func: str, name: str, value: Any, model: nn.Module) -> Weights:
    """``value`` as :class:`Weights`: a plain params dict gets copies of ``model``'s buffers."""
    if isinstance(value, Weights):
        check_tree(func, f"{name}.params", value.params, nonempty=True)
        check_tree(func, f"{name}.buffers", value.buffers)
        return value
    check_tree(func, name, value, nonempty=True)
    return Weights(dict(value), get_buffers(model))


class Trainer(NamedTuple):
    """How every round trains; built once by :func:`make_trainer`, shared by all rounds and baselines.

    Each round starts a fresh optimizer state (``step.init``) and a fresh data stream
    ``ltfunc.data.batches(train, batch_size, seed=data_seed)``, so all rounds and conditions
    see the same batches in the same order.
    """

    step: TrainStep
    """The (compiled) masked step of :func:`ltfunc.make_train_step`; its optimizer trains every round."""
    train: Split | tuple[Tensor, Tensor]
    """The training split (a :class:`ltfunc.data.Split` or an ``(x, y)`` pair)."""
    iterations: int
    """Training length of a round (iterations counted from 0, also when rewinding)."""
    batch_size: int
    """Training batch size."""
    lr: float | Schedule
    """The learning rate as a function of the iteration (or a constant), passed to every step as
    a tensor (no recompiles); see :func:`ltfunc.fit`."""
    data_seed: int
    """Seed of the batch order."""
    eval_every: int
    """Evaluate every this many iterations, and at the last one."""
    evaluate: Evaluator | None
    """``evaluate(weights, mask) -> {name: float}`` (e.g. :func:`make_evaluator`), or ``None``."""
    augment: bool | str = False
    """Augmentation of the training batches, passed to :func:`ltfunc.data.batches` as
    ``augment=`` (``False``: none)."""
    parallel: DataParallel | None = None
    """Data-parallel training (:mod:`ltfunc.distributed`): each rank trains on its shard of
    every batch of ``batch_size`` and BatchNorm statistics are averaged at evaluation points;
    ``None``: one process."""
    sparse: str = "off"
    """Sparse training mode (:mod:`ltfunc.sparse_step`): ``"auto"``/``"on"`` build each round's
    step from its mask with Linear weights held as values (same numbers to float rounding);
    ``"off"``: the dense masked :attr:`step` for every round."""


class RoundTraining(NamedTuple):
    """What :func:`train_round` returns."""

    final: Weights
    """Weights after the last iteration."""
    history: tuple[Record, ...]
    """One record per evaluation, in order."""
    captured: Weights | None
    """Weights at iteration ``capture_at`` (the rewind point), if asked for."""


def make_trainer(
    step: TrainStep,
    train: Split | tuple[Tensor, Tensor],
    *,
    iterations: int,
    batch_size: int,
    lr: float | Schedule | None = None,
    data_seed: int = 0,
    eval_every: int | None = None,
    evaluate: Evaluator | None = None,
    augment: bool | str = False,
    parallel: DataParallel | None = None,
    sparse: str = "off",
) -> Trainer:
    """Bundle what every round needs into a :class:`Trainer` (validated once).

    Args:
        step: A step from :func:`ltfunc.make_train_step` (make it once; it is reused); its
            optimizer trains every round.
        train: Training split (:class:`ltfunc.data.Split` or an ``(x, y)`` pair of tensors).
        iterations: Training iterations per round (``>= 1``).
        batch_size: Training batch size (``>= 1``).
        lr: Learning rate: a number ``> 0`` or a schedule ``lr(iteration) -> float`` (the
            iteration counted from 0 in every round). ``None``: the step's optimizer's ``lr``.
        data_seed: Seed of the batch order (the same for every round).
        eval_every: Evaluate every this many iterations (default: only at the end).
        evaluate: ``evaluate(weights, mask) -> {name: float}``, e.g. from :func:`make_evaluator`;
            ``None`` records only the training loss.
        augment: Augment the training batches: ``augment=`` of :func:`ltfunc.data.batches`
            (``True`` or a recipe name; ``False``: none). Seeded per batch, so every round
            sees the same augmented batches.
        parallel: Data-parallel training (:func:`ltfunc.distributed.init`): ``batch_size`` is
            the global batch, each rank trains on its ``batch_size / world_size`` rows; the
            step must average gradients (``make_train_step(..., grad_reduce=parallel.mean)``).
        sparse: ``"off"`` (default), ``"auto"`` or ``"on"``: ``sparse=`` of
            :func:`ltfunc.make_sparse_train_step`, which each round's step is then made with
            from the round's mask and ``step``'s model, optimizer, loss and ``compile``
            (one compile per round). Not with ``parallel``.

    Returns:
        The :class:`Trainer`.

    Raises:
        TypeError: ``step`` not a step of :func:`ltfunc.make_train_step`, ``evaluate`` not
            callable, or numbers of the wrong type.
        ValueError: Numbers out of range; ``parallel`` with a world size that does not divide
            ``batch_size`` or a step without ``grad_reduce``.

    Example:
        >>> import torch, ltfunc
        >>> m = ltfunc.models.lenet300(seed=0)
        >>> step = ltfunc.make_train_step(m, ltfunc.optim.sgd(lr=0.1), compile=False)
        >>> split = (torch.zeros(8, 1, 28, 28), torch.zeros(8, dtype=torch.long))
        >>> t = ltfunc.make_trainer(step, split, iterations=10, batch_size=4)
        >>> t.eval_every, t.lr
        (10, 0.1)
    """
    func = "make_trainer"
    if not isinstance(step, TrainStep):
        raise TypeError(f"{func}: step must be a step from ltfunc.make_train_step, got {type(step).__name__}")
    if not isinstance(train, tuple) or len(train) != 2 or not all(isinstance(t, Tensor) for t in train):
        raise TypeError(
            f"{func}: train must be a Split or an (x, y) pair of tensors, got {type(train).__name__}"
        )
    check_int(func, "iterations", iterations, 1)
    check_int(func, "batch_size", batch_size, 1)
    check_int(func, "data_seed", data_seed, 0)
    if eval_every is None:
        eval_every = iterations
    check_int(func, "eval_every", eval_every, 1)
    if lr is None:
        lr = step.optimizer.lr
    if not callable(lr):
        lr = check_number(func, "lr", lr, low=0.0, open_low=True)
    check_callable(func, "evaluate", evaluate, "callable(weights, mask)", optional=True)
    if not isinstance(augment, (bool, str)):
        raise TypeError(f"{func}: augment must be a bool or a recipe name, got {augment!r}")
    if isinstance(augment, str):
        check_choice(func, "augment", augment, AUGMENTATIONS)
    if parallel is not None:
        _check_parallel(func, parallel, step, batch_size)
    check_choice(func, "sparse", sparse, SPARSE_MODES)
    if sparse != "off" and parallel is not None:
        raise ValueError(
            f"{func}: sparse={sparse!r} does not combine with parallel training; use sparse='off'"
        )
    return Trainer(
        step, train, iterations, batch_size, lr, data_seed, eval_every, evaluate, augment, parallel, sparse
    )


def _check_parallel(func: str, parallel: Any, step: TrainStep, batch_size: int) -> None:
    from .distributed import DataParallel

    if not isinstance(parallel, DataParallel):
        raise TypeError(
            f"{func}: parallel must be None or an ltfunc.distributed.DataParallel, "
            f"got {type(parallel).__name__}"
        )
    if batch_size % parallel.world_size:
        raise ValueError(
            f"{func}: the world size {parallel.world_size} does not divide batch_size={batch_size} "
            "(each rank trains on batch_size / world_size examples)"
        )
    if parallel.world_size > 1 and step.grad_reduce is None:
        raise ValueError(
            f"{func}: parallel training needs a step that averages gradients across ranks: "
            "make_train_step(..., grad_reduce=parallel.mean)"
        )


def make_evaluator(
    model: nn.Module,
    splits: Mapping[str, Split | tuple[Tensor, Tensor] | None],
    *,
    batch_size: int = 1000,
    compile: bool = False,
) -> Evaluator:
    """An evaluator ``(weights, mask) -> {"<split>_loss": float, "<split>_accuracy": float, ...}``.

    Each split is evaluated with :func:`ltfunc.evaluate` on the weights' params and buffers
    (BatchNorm normalizes with the round's running statistics).

    Args:
        model: The module (its computation; weights come from the call).
        splits: ``{name: split}`` in output order, e.g. ``{"val": ds.val, "test": ds.test}``;
            ``None`` splits are skipped.
        batch_size: Evaluation batch size (``>= 1``).
        compile: Evaluate with the compiled forward pass (compiled once per model and batch
            shape, reused for every mask); worth it for conv nets, where the forward passes
            of an evaluation cost as much as hundreds of training steps.

    Returns:
        The evaluator (cross-entropy loss, accuracy in [0, 1]).

    Raises:
        TypeError: ``splits`` is not a mapping of names to splits, ``compile`` not a bool,
            ``batch_size`` not an int.
        ValueError: ``batch_size < 1``.

    Example:
        >>> import torch, ltfunc
        >>> m = ltfunc.models.lenet300(seed=0); w = ltfunc.Weights.of(m)
        >>> x, y = torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)
        >>> sorted(ltfunc.make_evaluator(m, {"test": (x, y)})(w, ltfunc.masks.ones(w.params)))
        ['test_accuracy', 'test_loss']
    """
    func = "make_evaluator"
    if not isinstance(splits, Mapping) or not all(isinstance(k, str) for k in splits):
        raise TypeError(f"{func}: splits must be a dict of name -> split, got {type(splits).__name__}")
    check_bool(func, "compile", compile)
    check_int(func, "batch_size", batch_size, 1)
    chosen = {k: v for k, v in splits.items() if v is not None}

    def evaluator(weights: Weights, mask: Mask) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, split in chosen.items():
            loss, acc = evaluate(
                model,
                weights.params,
                mask,
                split,
                batch_size=batch_size,
                buffers=weights.buffers or None,
                compile=compile,
            )
            out[f"{name}_loss"], out[f"{name}_accuracy"] = float(loss), float(acc)
        return out

    return evaluator


def _eval_points(start: int, end: int, every: int, extra: int | None) -> list[int]:
    points = set(range((start // every + 1) * every, end + 1, every)) | {end}
    if extra is not None and start < extra < end:
        points.add(extra)
    return sorted(points)


def train_round(
    trainer: Trainer,
    start: Weights,
    mask: Mask,
    *,
    start_iteration: int = 0,
    capture_at: int | None = None,
    on_record: Callable[[Record], None] | None = None,
    progress: Any = None,
) -> RoundTraining:
    """Train one round from ``start`` under ``mask`` with a fresh optimizer state.

    The data stream restarts from ``trainer.data_seed`` and skips the first
    ``start_iteration`` batches, so a rewound round sees exactly the batches the dense
    round saw from that iteration on. Evaluations happen at every multiple of
    ``trainer.eval_every`` after ``start_iteration`` and at ``trainer.iterations``; each
    record holds the mean training loss since the previous evaluation, the evaluator's
    values and the mask's density. Buffers (BatchNorm statistics) start from
    ``start.buffers``, are carried through training and evaluated with.

    Args:
        trainer: From :func:`make_trainer`.
        start: Starting weights (e.g. :func:`ltfunc.reset_to` output); not modified.
        mask: The round's mask.
        start_iteration: Iteration to start at (the rewind iteration), ``< trainer.iterations``.
        capture_at: Also return the weights after this iteration (to rewind to later).
        on_record: Called with every evaluation record (e.g. to append it to a log file).
        progress: A tqdm-like bar: ``update(1)`` per step, ``set_postfix`` per evaluation.

    Returns:
        :class:`RoundTraining` ``(final, history, captured)``.

    Raises:
        TypeError: ``trainer`` not a :class:`Trainer`, ``start`` not :class:`Weights`.
        ValueError: ``start_iteration``/``capture_at`` out of range; a mask or buffers that
            do not fit the step.
        FloatingPointError: The training loss became NaN/inf (from :func:`ltfunc.fit`).

    Example:
        >>> import torch, ltfunc
        >>> m = ltfunc.models.lenet300(seed=0); w = ltfunc.Weights.of(m)
        >>> split = (torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,)))
        >>> step = ltfunc.make_train_step(m, ltfunc.optim.sgd(lr=0.1), compile=False)
        >>> t = ltfunc.make_trainer(step, split, iterations=4, batch_size=8, eval_every=2)
        >>> [r["iteration"] for r in ltfunc.train_round(t, w, ltfunc.masks.ones(w.params)).history]
        [2, 4]
    """
    func = "train_round"
    if not isinstance(trainer, Trainer):
        raise TypeError(f"{func}: trainer must be a Trainer from make_trainer, got {type(trainer).__name__}")
    if not isinstance(start, Weights):
        raise TypeError(f"{func}: start must be ltfunc.Weights(params, buffers), got {type(start).__name__}")
    as_weights(func, "start", start, trainer.step.model)  # start.params / start.buffers: dicts of tensors
    total = trainer.iterations
    check_int(func, "start_iteration", start_iteration, 0, total - 1)
    if capture_at is not None:
        check_int(func, "capture_at", capture_at, start_iteration, total)
    return _train_round(trainer, start, mask, start_iteration, capture_at, on_record, progress)


def _train_round(
    trainer: Trainer,
    start: Weights,
    mask: Mask,
    start_iteration: int,
    capture_at: int | None,
    on_record: Callable[[Record], None] | None,
    progress: Any,
) -> RoundTraining:
    from .masks import density

    total = trainer.iterations
    kept = density(mask) if len(mask) else 1.0
    stream = batches(
        trainer.train,
        trainer.batch_size,
        seed=trainer.data_seed,
        augment=trainer.augment,
        start=start_iteration,  # = islice(..., start_iteration, None) without gathering the skipped batches
        shard=None if trainer.parallel is None else (trainer.parallel.rank, trainer.parallel.world_size),
    )
    step = trainer.step
    if trainer.sparse != "off":  # one step per round, built from the round's fixed mask
        from .sparse_step import make_sparse_train_step

        sparse_step = make_sparse_train_step(
            step.model, step.optimizer, mask, step.loss_fn, compile=step.compiled, sparse=trainer.sparse
        )
        step = sparse_step if sparse_step.sparse_layers else step  # none chosen: the shared dense step
    state = step.init(dict(start.params), buffers=dict(start.buffers), iteration=start_iteration)
    captured = _copy(start) if capture_at == start_iteration else None
    tick = None if progress is None else (lambda _done, _of: progress.update(1))
    history: list[Record] = []
    seen: list[float] = []
    loss_sum, loss_steps = 0.0, 0  # training loss since the previous evaluation
    for point in _eval_points(start_iteration, total, trainer.eval_every, capture_at):
        # One fit call per segment, made to report exactly at its end: eval_every=point
        # fires at `point` and at no earlier iteration of the segment.
        seen.clear()
        steps = point - state.iteration
        state = fit(
            step,
            state,
            mask,
            stream,
            steps,
            lr=trainer.lr,
            eval_every=point,
            on_eval=lambda _, loss: seen.append(loss),
            progress=tick,
        )
        loss_sum += seen[-1] * steps
        loss_steps += steps
        if trainer.parallel is not None and state.buffers:  # every rank evaluates and keeps the mean
            from .distributed import sync_buffers

            state = state._replace(buffers=sync_buffers(trainer.parallel, state.buffers))
        weights = Weights(state.params, state.buffers)
        if point == capture_at:
            captured = _copy(weights)
        if point % trainer.eval_every and point != total:
            continue
        record: Record = {"iteration": point, "train_loss": loss_sum / loss_steps}
        loss_sum, loss_steps = 0.0, 0
        if trainer.evaluate is not None:
            record.update(trainer.evaluate(weights, mask))
        record["density"] = kept
        history.append(record)
        if on_record is not None:
            on_record(record)
        if progress is not None:
            shown = {"loss": f"{record['train_loss']:.4f}"}
            for key in ("val_accuracy", "test_accuracy"):
                if key in record:
                    shown[key.replace("_accuracy", "_acc")] = f"{record[key]:.4f}"
            progress.set_postfix(shown, refresh=False)
    return RoundTraining(Weights(dict(state.params), dict(state.buffers)), tuple(history), captured)


def _copy(weights: Weights) -> Weights:
    return Weights(snapshot(dict(weights.params)), snapshot(dict(weights.buffers)))
