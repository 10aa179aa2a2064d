"""Iterative magnitude pruning (IMP) as plain functions over params, masks and one compiled step.

One IMP round: prune the lowest-magnitude survivors of the previous round's trained weights
(:func:`next_mask`), reset the survivors to θ0 (Frankle & Carbin, 2019) or rewind them to the
dense weights at iteration ``k`` (Frankle et al., 2020, "Stabilizing the LTH"; :func:`reset_to`),
and retrain with a fresh optimizer state and the same data order (:func:`train_round`).

The pieces compose::

    trainer = make_trainer(step, optimizer, data.train, iterations=..., batch_size=..., lr=...)
    for r in imp(trainer, theta0, rounds=5, rate=Rates(default=0.2, output=0.1)):
        print(r.round, r.mask.density(), r.history[-1]["test_accuracy"])

The step is made once (``ltfunc.make_train_step``) and reused by every round and baseline:
masks, learning rates and optimizer states are tensors, so nothing recompiles.

Baselines of a ticket round (:func:`baseline_round`): ``"reinit"`` keeps the ticket's mask with
a fresh initialization drawn from a seed; ``"random_prune"`` draws a random mask with the
ticket's per-layer counts and keeps the ticket's starting weights (θ0, or θk when rewinding).

Buffers (BatchNorm running statistics) are reset and rewound with the weights: every round
starts from the buffers of θ0 (the step's own, from ``make_train_step``) or of θk, carries
them through training, evaluates with them and returns the final ones
(:attr:`RoundResult.buffers`). Models without buffers see ``None`` everywhere.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

from torch import Tensor, nn

from . import masks as _masks
from ._errors import check_choice, check_fraction
from ._types import Buffers, Params
from .data import Split, batches
from .masks import Mask
from .models import init_params
from .optim import Optimizer
from .params import snapshot
from .prune import Rates, magnitude, random_like
from .step import evaluate
from .train import TrainState, fit

__all__ = [
    "BASELINES",
    "CONDITIONS",
    "SCHEDULES",
    "RoundResult",
    "RoundTraining",
    "Trainer",
    "baseline_round",
    "baseline_start",
    "dense_round",
    "derive_seed",
    "imp",
    "imp_round",
    "make_evaluator",
    "make_trainer",
    "next_mask",
    "reset_to",
    "round_rates",
    "train_round",
]

CONDITIONS: tuple[str, ...] = ("ticket", "reinit", "random_prune")
"""The ticket and its baselines, in display order."""

BASELINES: tuple[str, ...] = CONDITIONS[1:]
"""Baseline conditions: random re-initialization and random pruning."""

SCHEDULES: tuple[str, ...] = ("rate", "sparsity")
"""``"rate"``: prune a fraction of the survivors; ``"sparsity"``: reach a cumulative target."""

Evaluator = Callable[..., dict[str, float]]
"""``evaluate(params, mask) -> {"val_loss": ..., "val_accuracy": ..., "test_loss": ..., ...}``;
for models with buffers it is called as ``evaluate(params, mask, buffers=b)`` with the
round's current buffers (BatchNorm running statistics)."""

Record = dict[str, Any]
"""One evaluation: ``{"iteration", "train_loss", <evaluator keys>..., "density"}``."""


# --------------------------------------------------------------------------------------------
# masks and weights between rounds


def reset_to(params_init: Mapping[str, Tensor], mask: Mask) -> Params:
    """Weights that start a round: the survivors take their ``params_init`` values, pruned ones are 0.

    With θ0 this is Frankle & Carbin's reset; with the dense weights of iteration ``k`` it is
    rewinding. Unmasked parameters (biases) are copied from ``params_init`` as well.

    Args:
        params_init: θ0 or the rewind point (a params pytree); not modified.
        mask: The mask of the new round.

    Returns:
        A new params pytree (fresh tensors).

    Raises:
        TypeError, ValueError: If ``mask`` does not fit ``params_init`` (keys, shapes, devices).

    Example:
        >>> import torch, ltfunc
        >>> from ltfunc.ticket import reset_to
        >>> m = ltfunc.masks.from_dict({"w": [1, 0, 1]})
        >>> reset_to({"w": torch.tensor([1., 2., 3.]), "b": torch.ones(1)}, m)["w"]
        tensor([1., 0., 3.])
    """
    _masks.check_compatible(mask, params_init, "reset_to")
    return snapshot(_masks.apply(mask, params_init))


def _scale_rates(rates: Rates, f: Callable[[float], float]) -> Rates:
    return Rates(
        default=f(rates.default),
        conv=None if rates.conv is None else f(rates.conv),
        fc=None if rates.fc is None else f(rates.fc),
        output=None if rates.output is None else f(rates.output),
        overrides={k: f(v) for k, v in rates.overrides.items()},
    )


def round_rates(rate: float | Rates, round: int, schedule: str = "rate") -> dict[str, Rates]:
    """The keyword argument of :func:`ltfunc.prune.magnitude` that makes round ``round``'s mask.

    Args:
        rate: Per-round fraction (a float for every layer, or :class:`ltfunc.Rates`).
        round: The round being made (``>= 1``).
        schedule: ``"rate"``: remove ``rate`` of the survivors (``{"rate": ...}``);
            ``"sparsity"``: reach the cumulative target ``1 - (1 - rate) ** round`` of all
            weights of each group (``{"sparsity": ...}``), which does not compound rounding.

    Returns:
        ``{"rate": Rates}`` or ``{"sparsity": Rates}``.

    Raises:
        TypeError: ``rate`` is neither a float nor ``Rates``.
        ValueError: Unknown ``schedule``, a fraction outside [0, 1) or ``round < 1``.

    Example:
        >>> from ltfunc.ticket import round_rates
        >>> round(round_rates(0.2, 3, "sparsity")["sparsity"].default, 6)
        0.488
    """
    check_choice("round_rates", "schedule", schedule, SCHEDULES)
    if isinstance(round, bool) or not isinstance(round, int) or round < 1:
        raise ValueError(f"round_rates: round must be an int >= 1, got {round!r}")
    if isinstance(rate, Rates):
        rates = rate
    elif isinstance(rate, (int, float)) and not isinstance(rate, bool):
        rates = Rates(default=check_fraction("round_rates", "rate", rate))
    else:
        raise TypeError(f"round_rates: rate must be a float or ltfunc.Rates, got {rate!r}")
    for v in (rates.default, rates.conv, rates.fc, rates.output, *rates.overrides.values()):
        if v is not None:
            check_fraction("round_rates", "rate", v)
    if schedule == "rate":
        return {"rate": rates}
    return {"sparsity": _scale_rates(rates, lambda r: 1.0 - (1.0 - r) ** round)}


def next_mask(
    params: Mapping[str, Tensor],
    mask: Mask,
    *,
    round: int,
    rate: float | Rates,
    scope: str = "layer",
    schedule: str = "rate",
) -> Mask:
    """The mask of round ``round``: magnitude-prune the trained ``params`` under ``mask``.

    Args:
        params: Trained weights of round ``round - 1``.
        mask: Mask of round ``round - 1``; not modified.
        round: The round being made (``>= 1``).
        rate: Per-round fraction or :class:`ltfunc.Rates` (per class and per parameter).
        scope: ``"layer"`` or ``"global"`` (see :func:`ltfunc.prune.magnitude`).
        schedule: ``"rate"`` or ``"sparsity"`` (see :func:`round_rates`).

    Returns:
        A new mask; pruned weights stay pruned.

    Raises:
        TypeError, ValueError: As in :func:`round_rates` and :func:`ltfunc.prune.magnitude`.

    Example:
        >>> import ltfunc
        >>> from ltfunc.ticket import next_mask
        >>> p = ltfunc.get_params(ltfunc.models.lenet300(seed=0))
        >>> m1 = next_mask(p, ltfunc.masks.ones(p), round=1, rate=0.2)
        >>> m2 = next_mask(p, m1, round=2, rate=0.2)
        >>> round(m1.density(), 4), round(m2.density(), 4)
        (0.8, 0.64)
    """
    return magnitude(params, mask, scope=scope, **round_rates(rate, round, schedule))  # type: ignore[arg-type]


def derive_seed(seed: int, condition: str, round: int) -> int:
    """A stable seed for a baseline's draws at a round (independent streams per condition/round).

    Args:
        seed: The experiment seed.
        condition: ``"reinit"`` or ``"random_prune"``.
        round: Round index.

    Returns:
        An int in ``[0, 2**31)``, the same on every platform and Python version.

    Raises:
        TypeError: If ``seed`` is not an int.

    Example:
        >>> from ltfunc.ticket import derive_seed
        >>> derive_seed(0, "reinit", 1) == derive_seed(0, "reinit", 1) != derive_seed(0, "reinit", 2)
        True
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"derive_seed: seed must be an int, got {seed!r}")
    digest = hashlib.sha256(f"ltfunc/{seed}/{condition}/{round}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def baseline_start(
    condition: str,
    ticket_mask: Mask,
    ticket_start: Mapping[str, Tensor],
    *,
    model: nn.Module,
    seed: int,
) -> tuple[Mask, Params]:
    """The mask and starting weights of a baseline for one ticket round.

    Args:
        condition: ``"reinit"``: the ticket's mask, weights freshly drawn with
            :func:`ltfunc.models.init_params` from ``seed``; ``"random_prune"``: a random mask
            with the ticket's per-layer counts (:func:`ltfunc.prune.random_like` from ``seed``)
            over the ticket's starting weights before masking (θ0, or θk when rewinding).
        ticket_mask: The ticket's mask of the round.
        ticket_start: The unmasked weights the ticket's survivors were reset to (θ0 / θk).
        model: Template module (architecture and init scheme for ``"reinit"``).
        seed: Seed of the baseline's draw (see :func:`derive_seed`).

    Returns:
        ``(mask, start_params)``.

    Raises:
        ValueError: Unknown condition, or a mask that does not fit.

    Example:
        >>> import ltfunc
        >>> from ltfunc.ticket import baseline_start, next_mask
        >>> model = ltfunc.models.lenet300(seed=0); theta0 = ltfunc.get_params(model)
        >>> m = next_mask(theta0, ltfunc.masks.ones(theta0), round=1, rate=0.5)
        >>> rm, _ = baseline_start("random_prune", m, theta0, model=model, seed=1)
        >>> ltfunc.masks.counts(rm)["fc2.weight"] == ltfunc.masks.counts(m)["fc2.weight"], rm == m
        (True, False)
    """
    check_choice("baseline_start", "condition", condition, BASELINES)
    if condition == "reinit":
        # drawn on the CPU, so a seed gives the same weights whatever device trains them
        on_cpu = all(p.device.type == "cpu" for p in model.parameters())
        template = model if on_cpu else copy.deepcopy(model).cpu()
        fresh = {k: v.to(ticket_start[k].device) for k, v in init_params(template, seed).items()}
        return ticket_mask, reset_to(fresh, ticket_mask)
    mask = random_like(ticket_mask, seed=seed)
    return mask, reset_to(ticket_start, mask)


# --------------------------------------------------------------------------------------------
# training one round


class Trainer(NamedTuple):
    """How every round trains; built once by :func:`make_trainer`, shared by all rounds and baselines.

    Each round starts a fresh optimizer state (``optimizer.init``) and a fresh data stream
    ``ltfunc.data.batches(train, batch_size, seed=data_seed)``, so all rounds and conditions
    see the same batches in the same order.
    """

    step: Callable[..., Any]
    """The (compiled) masked step of :func:`ltfunc.step.make_train_step`."""
    optimizer: Optimizer
    """The :class:`ltfunc.optim.Optimizer` the step was made with (for ``init``)."""
    train: Split | tuple[Tensor, Tensor]
    """The training split (a :class:`ltfunc.data.Split` or an ``(x, y)`` pair)."""
    iterations: int
    """Training length of a round (iterations counted from 0, also when rewinding)."""
    batch_size: int
    """Training batch size."""
    lr: float
    """Learning rate, passed to the step as a tensor (no recompiles)."""
    data_seed: int
    """Seed of the batch order."""
    eval_every: int
    """Evaluate every this many iterations, and at the last one."""
    evaluate: Evaluator | None
    """``evaluate(params, mask) -> {name: float}`` (e.g. :func:`make_evaluator`), or ``None``."""


class RoundTraining(NamedTuple):
    """What :func:`train_round` returns."""

    final: Params
    """Weights after the last iteration."""
    history: tuple[Record, ...]
    """One record per evaluation, in order."""
    captured: Params | None
    """Weights at iteration ``capture_at`` (the rewind point), if asked for."""
    buffers: Buffers | None = None
    """Buffers after the last iteration (BatchNorm running statistics); ``None`` without buffers."""
    captured_buffers: Buffers | None = None
    """Buffers at iteration ``capture_at``, if asked for and the model has buffers."""


class RoundResult(NamedTuple):
    """One trained round of the ticket or a baseline."""

    condition: str
    """``"ticket"``, ``"reinit"`` or ``"random_prune"``."""
    round: int
    """Round index (0 = dense)."""
    mask: Mask
    """The mask trained in this round."""
    start: Params
    """The weights the round started from (survivors reset/rewound; pruned weights 0)."""
    final: Params
    """Trained weights at the end of the round."""
    history: tuple[Record, ...]
    """Evaluation records (``metrics.jsonl``)."""
    rewind_point: Params | None
    """Round 0 only: the dense weights later rounds reset to (θ0, or θk when rewinding)."""
    buffers: Buffers | None = None
    """Buffers at the end of the round (BatchNorm running statistics); ``None`` without buffers."""
    rewind_buffers: Buffers | None = None
    """Round 0 only: the buffers later rounds restart from (θ0's, or θk's when rewinding)."""


def _check_pos_int(func: str, name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{func}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{func}: {name} must be >= {minimum}, got {value!r}")
    return value


def make_trainer(
    step: Callable[..., Any],
    optimizer: Optimizer,
    train: Split | tuple[Tensor, Tensor],
    *,
    iterations: int,
    batch_size: int,
    lr: float,
    data_seed: int = 0,
    eval_every: int | None = None,
    evaluate: Evaluator | None = None,
) -> Trainer:
    """Bundle what every round needs into a :class:`Trainer` (validated once).

    Args:
        step: A step from :func:`ltfunc.step.make_train_step` (make it once; it is reused).
        optimizer: The :class:`ltfunc.optim.Optimizer` the step was made with.
        train: Training split (:class:`ltfunc.data.Split` or an ``(x, y)`` pair of tensors).
        iterations: Training iterations per round (``>= 1``).
        batch_size: Training batch size (``>= 1``).
        lr: Learning rate (``> 0``).
        data_seed: Seed of the batch order (the same for every round).
        eval_every: Evaluate every this many iterations (default: only at the end).
        evaluate: ``evaluate(params, mask) -> {name: float}``, e.g. from :func:`make_evaluator`;
            ``None`` records only the training loss.

    Returns:
        The :class:`Trainer`.

    Raises:
        TypeError: ``step``/``evaluate`` not callable, ``optimizer`` without ``init``, or
            numbers of the wrong type.
        ValueError: Numbers out of range.

    Example:
        >>> import torch, ltfunc
        >>> from ltfunc import optim
        >>> from ltfunc.ticket import make_trainer
        >>> split = (torch.zeros(8, 2), torch.zeros(8, dtype=torch.long))
        >>> t = make_trainer(lambda *a: a, optim.sgd(), split, iterations=10, batch_size=4, lr=0.1)
        >>> t.eval_every
        10
    """
    func = "make_trainer"
    if not callable(step):
        raise TypeError(f"{func}: step must be callable (from ltfunc.make_train_step), got {step!r}")
    if not callable(getattr(optimizer, "init", None)):
        raise TypeError(f"{func}: optimizer must be an ltfunc.optim.Optimizer (with init), got {optimizer!r}")
    if not isinstance(train, tuple) or len(train) != 2 or not all(isinstance(t, Tensor) for t in train):
        raise TypeError(
            f"{func}: train must be a Split or an (x, y) pair of tensors, got {type(train).__name__}"
        )
    _check_pos_int(func, "iterations", iterations)
    _check_pos_int(func, "batch_size", batch_size)
    _check_pos_int(func, "data_seed", data_seed, 0)
    if eval_every is None:
        eval_every = iterations
    _check_pos_int(func, "eval_every", eval_every)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"{func}: lr must be a number > 0, got {lr!r}")
    if evaluate is not None and not callable(evaluate):
        raise TypeError(f"{func}: evaluate must be None or callable(params, mask), got {evaluate!r}")
    return Trainer(step, optimizer, train, iterations, batch_size, float(lr), data_seed, eval_every, evaluate)


def make_evaluator(
    model: nn.Module,
    splits: Mapping[str, Split | tuple[Tensor, Tensor] | None],
    *,
    batch_size: int = 1000,
    buffers: Mapping[str, Tensor] | None = None,
    compile: bool = False,
) -> Evaluator:
    """An evaluator ``(params, mask) -> {"<split>_loss": float, "<split>_accuracy": float, ...}``.

    The evaluator also takes ``buffers=`` (the BatchNorm statistics training returned;
    :func:`train_round` passes the round's current ones), which replace ``buffers`` for
    that call.

    Args:
        model: The module (its computation; weights come from ``params``).
        splits: ``{name: split}`` in output order, e.g. ``{"val": ds.val, "test": ds.test}``;
            ``None`` splits are skipped.
        batch_size: Evaluation batch size.
        buffers: Default buffers for :func:`ltfunc.step.evaluate` (BatchNorm statistics);
            ``None``: the model's own.
        compile: Evaluate with the compiled eval step (compiled once per model and batch
            shape, reused for every mask); worth it for conv nets, where the forward passes
            of an evaluation cost as much as hundreds of training steps.

    Returns:
        The evaluator (cross-entropy loss, accuracy in [0, 1]).

    Raises:
        TypeError: ``splits`` is not a mapping of names to splits, ``compile`` not a bool.

    Example:
        >>> import torch, ltfunc
        >>> from ltfunc.ticket import make_evaluator
        >>> m = ltfunc.models.lenet300(seed=0); p = ltfunc.get_params(m)
        >>> x, y = torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)
        >>> sorted(make_evaluator(m, {"test": (x, y)})(p, ltfunc.masks.ones(p)))
        ['test_accuracy', 'test_loss']
    """
    if not isinstance(splits, Mapping) or not all(isinstance(k, str) for k in splits):
        raise TypeError(
            f"make_evaluator: splits must be a dict of name -> split, got {type(splits).__name__}"
        )
    if not isinstance(compile, bool):
        raise TypeError(f"make_evaluator: compile must be a bool, got {compile!r}")
    chosen = {k: v for k, v in splits.items() if v is not None}

    def evaluator(
        params: Params, mask: Mask, *, buffers: Mapping[str, Tensor] | None = buffers
    ) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, split in chosen.items():
            loss, acc = evaluate(
                model, params, mask, split, batch_size=batch_size, buffers=buffers, compile=compile
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
    params: Mapping[str, Tensor],
    mask: Mask,
    *,
    start_iteration: int = 0,
    capture_at: int | None = None,
    on_record: Callable[[Record], None] | None = None,
    progress: Any = None,
    buffers: Mapping[str, Tensor] | None = None,
) -> RoundTraining:
    """Train one round from ``params`` under ``mask`` with a fresh optimizer state.

    The data stream restarts from ``trainer.data_seed`` and skips the first
    ``start_iteration`` batches, so a rewound round sees exactly the batches the dense
    round saw from that iteration on. Evaluations happen at every multiple of
    ``trainer.eval_every`` after ``start_iteration`` and at ``trainer.iterations``; each
    record holds the mean training loss since the previous evaluation, the evaluator's
    values and the mask's density.

    Args:
        trainer: From :func:`make_trainer`.
        params: Starting weights (e.g. :func:`reset_to` output); not modified.
        mask: The round's mask.
        start_iteration: Iteration to start at (the rewind iteration), ``< trainer.iterations``.
        capture_at: Also return the weights after this iteration (to rewind to later).
        on_record: Called with every evaluation record as soon as it exists.
        progress: A ``tqdm`` bar (anything with ``update(n)`` and ``set_postfix(dict,
            refresh=False)``), advanced every step and showing the latest loss and
            accuracies; or ``None``.
        buffers: Starting buffers (BatchNorm running statistics), carried through training
            and passed to the evaluator as ``buffers=``. Default: the step's own buffers
            (``make_train_step``'s, i.e. the model's at that time) if it has any.

    Returns:
        :class:`RoundTraining` ``(final, history, captured, buffers, captured_buffers)``.

    Raises:
        TypeError: ``trainer`` not a :class:`Trainer`, ``buffers`` not a dict of tensors.
        ValueError: ``start_iteration``/``capture_at`` out of range; a mask or buffers that
            do not fit the step.
        FloatingPointError: The training loss became NaN/inf (from :func:`ltfunc.train.fit`).

    Example:
        >>> import torch, ltfunc
        >>> from ltfunc import optim, step as lt_step
        >>> from ltfunc.ticket import make_trainer, train_round
        >>> m = ltfunc.models.lenet300(seed=0); p = ltfunc.get_params(m); opt = optim.sgd(lr=0.1)
        >>> split = (torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,)))
        >>> step = lt_step.make_train_step(m, opt, compile=False)
        >>> t = make_trainer(step, opt, split, iterations=4, batch_size=8, lr=0.1, eval_every=2)
        >>> [r["iteration"] for r in train_round(t, p, ltfunc.masks.ones(p)).history]
        [2, 4]
    """
    func = "train_round"
    if not isinstance(trainer, Trainer):
        raise TypeError(f"{func}: trainer must be a Trainer from make_trainer, got {type(trainer).__name__}")
    _masks.check_compatible(mask, params, func)
    total = trainer.iterations
    _check_pos_int(func, "start_iteration", start_iteration, 0)
    if start_iteration >= total:
        raise ValueError(
            f"{func}: start_iteration={start_iteration} must be < trainer.iterations={total} "
            "(the training length)"
        )
    if capture_at is not None:
        _check_pos_int(func, "capture_at", capture_at, 0)
        if not start_iteration <= capture_at <= total:
            raise ValueError(
                f"{func}: capture_at={capture_at} must be in [start_iteration={start_iteration}, "
                f"iterations={total}]"
            )
    bufs = _start_buffers(func, trainer, buffers)
    density = float(mask.density()) if len(mask) else 1.0
    stream = itertools.islice(
        batches(trainer.train, trainer.batch_size, seed=trainer.data_seed), start_iteration, None
    )
    start = dict(params)
    state = TrainState(start, trainer.optimizer.init(start), start_iteration, bufs)
    captured = snapshot(start) if capture_at == start_iteration else None
    captured_buffers = snapshot(bufs) if capture_at == start_iteration else None
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
            trainer.step,
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
        if point == capture_at:
            captured = snapshot(state.params)
            captured_buffers = snapshot(state.buffers)
        if point % trainer.eval_every and point != total:
            continue
        record: Record = {"iteration": point, "train_loss": loss_sum / loss_steps}
        loss_sum, loss_steps = 0.0, 0
        if trainer.evaluate is not None:
            if state.buffers is None:
                record.update(trainer.evaluate(state.params, mask))
            else:
                record.update(trainer.evaluate(state.params, mask, buffers=state.buffers))
        record["density"] = density
        history.append(record)
        if on_record is not None:
            on_record(record)
        if progress is not None:
            shown = {"loss": f"{record['train_loss']:.4f}"}
            for key in ("val_accuracy", "test_accuracy"):
                if key in record:
                    shown[key.replace("_accuracy", "_acc")] = f"{record[key]:.4f}"
            progress.set_postfix(shown, refresh=False)
    return RoundTraining(state.params, tuple(history), captured, state.buffers, captured_buffers)


def _start_buffers(func: str, trainer: Trainer, buffers: Mapping[str, Tensor] | None) -> Buffers | None:
    """The buffers a round starts from: ``buffers``, else copies of the step's own, else ``None``."""
    if buffers is None:
        own = getattr(trainer.step, "buffers", None)
        return snapshot(dict(own)) if own else None
    if not isinstance(buffers, Mapping) or not all(isinstance(v, Tensor) for v in buffers.values()):
        raise TypeError(f"{func}: buffers must be a dict of tensors or None, got {type(buffers).__name__}")
    return dict(buffers)


# --------------------------------------------------------------------------------------------
# rounds


def dense_round(
    trainer: Trainer,
    params_init: Mapping[str, Tensor],
    *,
    rewind: int = 0,
    mask: Mask | None = None,
    on_record: Callable[[Record], None] | None = None,
    progress: Any = None,
    buffers: Mapping[str, Tensor] | None = None,
) -> RoundResult:
    """Round 0: train θ0 under ``mask`` (default: dense) and keep the rewind point.

    Args:
        trainer: From :func:`make_trainer`.
        params_init: θ0; not modified.
        rewind: Iteration whose weights later rounds rewind to (0: θ0 itself).
        mask: Starting mask (default :func:`ltfunc.masks.ones`, i.e. all prunable weights).
        on_record: Called with every evaluation record.
        progress: A tqdm-like bar, see :func:`train_round`.
        buffers: θ0's buffers (BatchNorm statistics); default the step's own, see
            :func:`train_round`.

    Returns:
        A ``"ticket"`` :class:`RoundResult` with ``round=0``, ``rewind_point`` and (for
        models with buffers) ``rewind_buffers`` set.

    Raises:
        ValueError: ``rewind`` not in ``[0, trainer.iterations)``.

    Example:
        See :func:`imp`.
    """
    _check_pos_int("dense_round", "rewind", rewind, 0)
    if rewind >= trainer.iterations:
        raise ValueError(
            f"dense_round: rewind={rewind} is beyond the training length iterations={trainer.iterations}; "
            f"it must be in [0, {trainer.iterations - 1}]"
        )
    mask = _masks.ones(params_init) if mask is None else mask
    start = reset_to(params_init, mask)
    out = train_round(
        trainer, start, mask, capture_at=rewind, on_record=on_record, progress=progress, buffers=buffers
    )
    point = snapshot(dict(params_init)) if rewind == 0 else out.captured
    # train_round captured the starting buffers too when rewind == 0
    return RoundResult(
        "ticket", 0, mask, start, out.final, out.history, point, out.buffers, out.captured_buffers
    )


def imp_round(
    trainer: Trainer,
    previous: RoundResult,
    rewind_point: Mapping[str, Tensor],
    *,
    rate: float | Rates,
    scope: str = "layer",
    schedule: str = "rate",
    rewind: int = 0,
    on_record: Callable[[Record], None] | None = None,
    progress: Any = None,
    rewind_buffers: Mapping[str, Tensor] | None = None,
) -> RoundResult:
    """One IMP round: prune ``previous``'s trained weights, reset/rewind the survivors, retrain.

    Args:
        trainer: From :func:`make_trainer` (the same for every round).
        previous: The ticket's previous round (its ``mask`` and ``final`` weights are used).
        rewind_point: θ0 (reset) or the dense weights at iteration ``rewind`` (rewinding).
        rate: Per-round fraction or :class:`ltfunc.Rates`.
        scope: ``"layer"`` or ``"global"``.
        schedule: ``"rate"`` or ``"sparsity"`` (see :func:`round_rates`).
        rewind: The iteration ``rewind_point`` belongs to; training resumes there.
        on_record: Called with every evaluation record.
        progress: A tqdm-like bar, see :func:`train_round`.
        rewind_buffers: The buffers that belong to ``rewind_point`` (round 0's
            :attr:`RoundResult.rewind_buffers`); default the step's own (θ0's).

    Returns:
        The ``"ticket"`` :class:`RoundResult` of round ``previous.round + 1``.

    Raises:
        TypeError, ValueError: As in :func:`next_mask` and :func:`train_round`.

    Example:
        See :func:`imp`.
    """
    if not isinstance(previous, RoundResult):
        raise TypeError(f"imp_round: previous must be a RoundResult, got {type(previous).__name__}")
    k = previous.round + 1
    mask = next_mask(previous.final, previous.mask, round=k, rate=rate, scope=scope, schedule=schedule)
    start = reset_to(rewind_point, mask)
    out = train_round(
        trainer,
        start,
        mask,
        start_iteration=rewind,
        on_record=on_record,
        progress=progress,
        buffers=rewind_buffers,
    )
    return RoundResult("ticket", k, mask, start, out.final, out.history, None, out.buffers)


def baseline_round(
    trainer: Trainer,
    condition: str,
    ticket: RoundResult,
    rewind_point: Mapping[str, Tensor],
    *,
    model: nn.Module,
    seed: int,
    rewind: int = 0,
    on_record: Callable[[Record], None] | None = None,
    progress: Any = None,
    rewind_buffers: Mapping[str, Tensor] | None = None,
) -> RoundResult:
    """Train a baseline of a ticket round with the same iterations and data order.

    Args:
        trainer: The ticket's :class:`Trainer`.
        condition: ``"reinit"`` or ``"random_prune"`` (see :func:`baseline_start`).
        ticket: The ticket's round (its ``mask`` is used).
        rewind_point: The weights the ticket's survivors were reset to, unmasked (θ0 / θk).
        model: Template module (for ``"reinit"``).
        seed: Experiment seed; the draw uses ``derive_seed(seed, condition, ticket.round)``.
        rewind: Iteration training starts at, as for the ticket.
        on_record: Called with every evaluation record.
        progress: A tqdm-like bar, see :func:`train_round`.
        rewind_buffers: The buffers of ``rewind_point``, as for :func:`imp_round`;
            ``"random_prune"`` starts from them, ``"reinit"`` (fresh weights) from the
            step's own.

    Returns:
        A :class:`RoundResult` with ``condition`` and the ticket's round index.

    Raises:
        ValueError: Unknown condition.

    Example:
        See :func:`imp`.
    """
    if not isinstance(ticket, RoundResult):
        raise TypeError(f"baseline_round: ticket must be a RoundResult, got {type(ticket).__name__}")
    mask, start = baseline_start(
        condition, ticket.mask, rewind_point, model=model, seed=derive_seed(seed, condition, ticket.round)
    )
    out = train_round(
        trainer,
        start,
        mask,
        start_iteration=rewind,
        on_record=on_record,
        progress=progress,
        buffers=rewind_buffers if condition == "random_prune" else None,
    )
    return RoundResult(condition, ticket.round, mask, start, out.final, out.history, None, out.buffers)


def imp(
    trainer: Trainer,
    params_init: Mapping[str, Tensor],
    *,
    rounds: int,
    rate: float | Rates,
    scope: str = "layer",
    schedule: str = "rate",
    rewind: int = 0,
    mask: Mask | None = None,
    buffers: Mapping[str, Tensor] | None = None,
) -> Iterator[RoundResult]:
    """Iterative magnitude pruning: yield the dense round 0, then ``rounds`` pruned rounds.

    A generator: each round is trained when it is requested, so a loop can stop early, save
    each round, or train baselines in between (:func:`baseline_round`).

    Args:
        trainer: From :func:`make_trainer`; its step is made once and reused by all rounds.
        params_init: θ0; not modified.
        rounds: Pruning rounds after round 0 (``>= 1``).
        rate: Per-round fraction or :class:`ltfunc.Rates`.
        scope: ``"layer"`` or ``"global"``.
        schedule: ``"rate"`` or ``"sparsity"`` (see :func:`round_rates`).
        rewind: 0 resets survivors to θ0; ``k > 0`` rewinds to the dense weights at iteration k.
        mask: Starting mask (default: all prunable weights).
        buffers: θ0's buffers (BatchNorm statistics); default the step's own. Each round
            restarts from the buffers of its rewind point.

    Returns:
        An iterator of ``"ticket"`` :class:`RoundResult` for rounds ``0 .. rounds``, each
        trained when requested.

    Raises:
        ValueError: ``rounds < 1`` or invalid pruning settings (before any training).

    Example:
        >>> import torch, ltfunc
        >>> from ltfunc import optim, step
        >>> from ltfunc.ticket import imp, make_trainer
        >>> m = ltfunc.models.lenet300(seed=0); theta0 = ltfunc.get_params(m); opt = optim.sgd(lr=0.1)
        >>> split = (torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,)))
        >>> t = make_trainer(step.make_train_step(m, opt, compile=False), opt, split,
        ...                  iterations=2, batch_size=8, lr=0.1)
        >>> [round(r.mask.density(), 3) for r in imp(t, theta0, rounds=2, rate=0.2)]
        [1.0, 0.8, 0.64]
    """
    _check_pos_int("imp", "rounds", rounds)
    round_rates(rate, 1, schedule)  # validate now, not at the first next()
    check_choice("imp", "scope", scope, ("layer", "global"))
    if not isinstance(trainer, Trainer):
        raise TypeError(f"imp: trainer must be a Trainer from make_trainer, got {type(trainer).__name__}")
    _check_pos_int("imp", "rewind", rewind, 0)
    if rewind >= trainer.iterations:
        raise ValueError(
            f"imp: rewind={rewind} is beyond the training length iterations={trainer.iterations}; "
            f"it must be in [0, {trainer.iterations - 1}]"
        )
    return _imp_rounds(trainer, params_init, rounds, rate, scope, schedule, rewind, mask, buffers)


def _imp_rounds(
    trainer: Trainer,
    params_init: Mapping[str, Tensor],
    rounds: int,
    rate: float | Rates,
    scope: str,
    schedule: str,
    rewind: int,
    mask: Mask | None,
    buffers: Mapping[str, Tensor] | None,
) -> Iterator[RoundResult]:
    result = dense_round(trainer, params_init, rewind=rewind, mask=mask, buffers=buffers)
    yield result
    point, point_buffers = result.rewind_point, result.rewind_buffers
    assert point is not None
    for _ in range(rounds):
        result = imp_round(
            trainer,
            result,
            point,
            rate=rate,
            scope=scope,
            schedule=schedule,
            rewind=rewind,
            rewind_buffers=point_buffers,
        )
        yield result
