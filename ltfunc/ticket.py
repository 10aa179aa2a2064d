"""Iterative magnitude pruning (IMP) as plain functions over weights, masks and one compiled step.

One IMP round: prune the lowest-magnitude survivors of the previous round's trained weights
(:func:`next_mask`), reset the survivors to θ0 (Frankle & Carbin, 2019) or rewind them to the
dense weights at iteration ``k`` (Frankle et al., 2020, "Stabilizing the LTH"; :func:`reset_to`),
and retrain with a fresh optimizer state and the same data order
(:func:`ltfunc.trainer.train_round`).

The pieces compose::

    trainer = make_trainer(step, data.train, iterations=..., batch_size=..., lr=...)
    for r in imp(trainer, Weights.of(model), rounds=5, rate=Rates(default=0.2, output=0.1)):
        print(r.round, masks.density(r.mask), r.history[-1]["test_accuracy"])

Baselines of a ticket round (:func:`baseline_round`): ``"reinit"`` keeps the ticket's mask with
a fresh initialization drawn from a seed; ``"random_prune"`` draws a random mask with the
ticket's per-layer counts and keeps the ticket's starting weights (θ0, or θk when rewinding).

Params and buffers travel together as :class:`~ltfunc.trainer.Weights`: BatchNorm running
statistics are reset and rewound with the weights, carried through training, evaluated with
and returned in every :class:`RoundResult`.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple, TypeVar

from torch import Tensor, nn

from . import masks as _masks
from ._checks import check_choice, check_fraction, check_int
from ._types import Params
from .masks import Mask
from .models import init_params
from .params import get_buffers, snapshot
from .prune import SCOPES, Rates, _check_structured_rounds, _magnitude, magnitude, random_like
from .structured import Structure, _parse
from .trainer import Record, RoundTraining, Trainer, Weights, _copy, _train_round, as_weights

__all__ = [
    "BASELINES",
    "CONDITIONS",
    "SCHEDULES",
    "RoundHooks",
    "RoundResult",
    "baseline_round",
    "baseline_start",
    "dense_round",
    "derive_seed",
    "imp",
    "imp_round",
    "next_mask",
    "reset_to",
    "round_rates",
]

CONDITIONS: tuple[str, ...] = ("ticket", "reinit", "random_prune")
"""The ticket and its baselines, in display order."""

BASELINES: tuple[str, ...] = CONDITIONS[1:]
"""Baseline conditions: random re-initialization and random pruning."""

SCHEDULES: tuple[str, ...] = ("rate", "sparsity")
"""``"rate"``: prune a fraction of the survivors; ``"sparsity"``: reach a cumulative target."""

_W = TypeVar("_W", Weights, dict[str, Tensor])

# --------------------------------------------------------------------------------------------
# masks and weights between rounds


def reset_to(init: _W, mask: Mask) -> _W:
    """Weights that start a round: the survivors take their ``init`` values, pruned ones are 0.

    With θ0 this is Frankle & Carbin's reset; with the dense weights of iteration ``k`` it is
    rewinding. Unmasked parameters (biases) are copied from ``init`` as well, and so are the
    buffers of a :class:`~ltfunc.trainer.Weights`.

    Args:
        init: θ0 or the rewind point: a params pytree or :class:`~ltfunc.trainer.Weights`;
            not modified.
        mask: The mask of the new round.

    Returns:
        New weights of the same kind as ``init`` (fresh tensors).

    Raises:
        TypeError, ValueError: If ``mask`` does not fit ``init``'s params (keys, shapes, devices).

    Example:
        >>> import torch, ltfunc
        >>> m = ltfunc.masks.from_dict({"w": [1, 0, 1]})
        >>> ltfunc.reset_to({"w": torch.tensor([1., 2., 3.]), "b": torch.ones(1)}, m)["w"]
        tensor([1., 0., 3.])
    """
    params = init.params if isinstance(init, Weights) else init
    _masks.check_compatible(mask, params, "reset_to")
    return _reset(init, mask)  # type: ignore[return-value]


def _reset(init: Weights | Mapping[str, Tensor], mask: Mask) -> Weights | Params:
    if isinstance(init, Weights):
        return Weights(snapshot(_masks._apply(mask, init.params)), snapshot(dict(init.buffers)))
    return snapshot(_masks._apply(mask, init))


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
    check_int("round_rates", "round", round, 1)
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
    structure: str | Structure | None = None,
) -> Mask:
    """The mask of round ``round``: magnitude-prune the trained ``params`` under ``mask``.

    Args:
        params: Trained weights of round ``round - 1``.
        mask: Mask of round ``round - 1``; not modified.
        round: The round being made (``>= 1``).
        rate: Per-round fraction or :class:`ltfunc.Rates` (per class and per parameter).
        scope: ``"layer"`` or ``"global"`` (see :func:`ltfunc.prune.magnitude`).
        schedule: ``"rate"`` or ``"sparsity"`` (see :func:`round_rates`).
        structure: ``None``, ``"N:M"`` or ``"block:RxC"`` (see :func:`ltfunc.prune.magnitude`).

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
        >>> round(ltfunc.masks.density(m1), 4), round(ltfunc.masks.density(m2), 4)
        (0.8, 0.64)
    """
    kwargs = round_rates(rate, round, schedule)
    return magnitude(params, mask, scope=scope, structure=structure, **kwargs)  # type: ignore[arg-type]


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
    check_int("derive_seed", "seed", seed)
    digest = hashlib.sha256(f"ltfunc/{seed}/{condition}/{round}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def baseline_start(
    condition: str,
    ticket_mask: Mask,
    ticket_start: Weights,
    *,
    model: nn.Module,
    seed: int,
    structure: str | Structure | None = None,
) -> tuple[Mask, Weights]:
    """The mask and starting weights of a baseline for one ticket round.

    Args:
        condition: ``"reinit"``: the ticket's mask, params freshly drawn with
            :func:`ltfunc.models.init_params` from ``seed`` and ``model``'s own buffers;
            ``"random_prune"``: a random mask with the ticket's per-layer counts
            (:func:`ltfunc.prune.random_like` from ``seed``) over the ticket's starting
            weights before masking (θ0, or θk when rewinding), buffers included.
        ticket_mask: The ticket's mask of the round.
        ticket_start: The unmasked weights the ticket's survivors were reset to (θ0 / θk).
        model: Template module (architecture, init scheme and initial buffers for ``"reinit"``).
        seed: Seed of the baseline's draw (see :func:`derive_seed`).
        structure: The ticket's structure: ``"random_prune"`` draws a random mask of it
            (:func:`ltfunc.prune.random_like` with ``structure=``); ``None``: unstructured.

    Returns:
        ``(mask, start)``.

    Raises:
        ValueError: Unknown condition, or a mask that does not fit.

    Example:
        >>> import ltfunc
        >>> from ltfunc.ticket import baseline_start, next_mask
        >>> model = ltfunc.models.lenet300(seed=0); theta0 = ltfunc.Weights.of(model)
        >>> m = next_mask(theta0.params, ltfunc.masks.ones(theta0.params), round=1, rate=0.5)
        >>> rm, _ = baseline_start("random_prune", m, theta0, model=model, seed=1)
        >>> ltfunc.masks.counts(rm)["fc2.weight"] == ltfunc.masks.counts(m)["fc2.weight"], rm == m
        (True, False)
    """
    check_choice("baseline_start", "condition", condition, BASELINES)
    _parse("baseline_start", "structure", structure)
    if not isinstance(ticket_start, Weights):
        raise TypeError(
            "baseline_start: ticket_start must be ltfunc.Weights(params, buffers), "
            f"got {type(ticket_start).__name__}"
        )
    if condition == "reinit":
        # drawn on the CPU, so a seed gives the same weights whatever device trains them
        on_cpu = all(p.device.type == "cpu" for p in model.parameters())
        template = model if on_cpu else copy.deepcopy(model).cpu()
        params = ticket_start.params
        fresh = {k: v.to(params[k].device) for k, v in init_params(template, seed).items()}
        buffers = {k: v.to(params[next(iter(params))].device) for k, v in get_buffers(template).items()}
        return ticket_mask, Weights(snapshot(_masks._apply(ticket_mask, fresh)), buffers)
    mask = random_like(ticket_mask, seed=seed, structure=structure)
    return mask, _reset(ticket_start, mask)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# rounds


class RoundResult(NamedTuple):
    """One trained round of the ticket or a baseline."""

    condition: str
    """``"ticket"``, ``"reinit"`` or ``"random_prune"``."""
    round: int
    """Round index (0 = dense)."""
    mask: Mask
    """The mask trained in this round."""
    start: Weights
    """The weights the round started from (survivors reset/rewound; pruned weights 0)."""
    final: Weights
    """Trained weights at the end of the round."""
    history: tuple[Record, ...]
    """Evaluation records (``metrics.jsonl``)."""
    rewind_point: Weights | None = None
    """Round 0 only: the dense weights later rounds reset to (θ0, or θk when rewinding)."""


RoundHooks = Callable[[str, int], tuple[Callable[[Record], None] | None, Any]]
"""``hooks(condition, round) -> (on_record, progress)``: called as a round starts; ``on_record``
receives every evaluation record of that round and ``progress`` is a tqdm-like bar (or
``None``) updated per step (see :func:`ltfunc.train_round`)."""


def _no_hooks(_condition: str, _round: int) -> tuple[None, None]:
    return None, None


def _check_rewind(func: str, trainer: Trainer, rewind: int) -> None:
    check_int(func, "rewind", rewind, 0)
    if rewind >= trainer.iterations:
        raise ValueError(
            f"{func}: rewind={rewind} is beyond the training length iterations={trainer.iterations}; "
            f"it must be in [0, {trainer.iterations - 1}]"
        )


def _check_trainer(func: str, trainer: Any) -> None:
    if not isinstance(trainer, Trainer):
        raise TypeError(f"{func}: trainer must be a Trainer from make_trainer, got {type(trainer).__name__}")


def _check_round(func: str, name: str, value: Any) -> None:
    if not isinstance(value, RoundResult):
        raise TypeError(f"{func}: {name} must be a RoundResult, got {type(value).__name__}")


def dense_round(
    trainer: Trainer,
    init: Weights | Mapping[str, Tensor],
    *,
    rewind: int = 0,
    mask: Mask | None = None,
    hooks: RoundHooks | None = None,
) -> RoundResult:
    """Round 0: train θ0 under ``mask`` (default: dense) and keep the rewind point.

    Args:
        trainer: From :func:`ltfunc.make_trainer`.
        init: θ0: :class:`~ltfunc.trainer.Weights`, or a params dict (buffers: copies of the
            step's model's own); not modified.
        rewind: Iteration whose weights later rounds rewind to (0: θ0 itself).
        mask: Starting mask (default: ``ltfunc.masks.ones`` of the step's model, i.e. its
            prunable weights).
        hooks: Per-round record sink and progress bar, see :data:`RoundHooks`.

    Returns:
        A ``"ticket"`` :class:`RoundResult` with ``round=0`` and ``rewind_point`` set.

    Raises:
        TypeError: Arguments of the wrong kind.
        ValueError: ``rewind`` not in ``[0, trainer.iterations)``, a mask that does not fit.

    Example:
        See :func:`imp`.
    """
    func = "dense_round"
    _check_trainer(func, trainer)
    _check_rewind(func, trainer, rewind)
    weights = as_weights(func, "init", init, trainer.step.model)
    if mask is not None:
        _masks.check_compatible(mask, weights.params, func)
    return _dense_round(trainer, weights, rewind, mask, hooks or _no_hooks)


def _dense_round(
    trainer: Trainer, init: Weights, rewind: int, mask: Mask | None, hooks: RoundHooks
) -> RoundResult:
    return _run_plan(trainer, _plan_dense(trainer.step.model, init, rewind, mask), hooks)


class _Plan(NamedTuple):
    """A round ready to train: everything :func:`ltfunc.trainer.train_round` needs, and the rest."""

    condition: str
    round: int
    mask: Mask
    start: Weights
    start_iteration: int
    capture_at: int | None
    point: Weights | None = None
    """Round 0 when resetting: θ0, the rewind point (else the weights captured at ``capture_at``)."""


def _plan_dense(model: nn.Module, init: Weights, rewind: int, mask: Mask | None) -> _Plan:
    mask = _masks.ones(model) if mask is None else mask
    start: Weights = _reset(init, mask)  # type: ignore[assignment]
    return _Plan("ticket", 0, mask, start, 0, rewind, _copy(init) if rewind == 0 else None)


def _plan_ticket(
    previous: RoundResult,
    rewind_point: Weights,
    rate: float | Rates,
    scope: str,
    schedule: str,
    rewind: int,
    structure: str | Structure | None,
) -> _Plan:
    k = previous.round + 1
    kwargs = round_rates(rate, k, schedule)
    mask = _magnitude(previous.final.params, previous.mask, scope=scope, structure=structure, **kwargs)  # type: ignore[arg-type]
    start: Weights = _reset(rewind_point, mask)  # type: ignore[assignment]
    return _Plan("ticket", k, mask, start, rewind, None)


def _plan_baseline(
    condition: str,
    k: int,
    ticket_mask: Mask,
    rewind_point: Weights,
    model: nn.Module,
    seed: int,
    rewind: int,
    structure: str | Structure | None,
) -> _Plan:
    mask, start = baseline_start(
        condition,
        ticket_mask,
        rewind_point,
        model=model,
        seed=derive_seed(seed, condition, k),
        structure=structure,
    )
    return _Plan(condition, k, mask, start, rewind, None)


def _finish(plan: _Plan, out: RoundTraining) -> RoundResult:
    """The :class:`RoundResult` of a trained plan (round 0 of the ticket keeps its rewind point)."""
    point = None
    if plan.condition == "ticket" and plan.round == 0:
        point = plan.point if plan.point is not None else out.captured
    return RoundResult(plan.condition, plan.round, plan.mask, plan.start, out.final, out.history, point)


def _run_plan(trainer: Trainer, plan: _Plan, hooks: RoundHooks) -> RoundResult:
    on_record, bar = hooks(plan.condition, plan.round)
    out = _train_round(trainer, plan.start, plan.mask, plan.start_iteration, plan.capture_at, on_record, bar)
    return _finish(plan, out)


def imp_round(
    trainer: Trainer,
    previous: RoundResult,
    rewind_point: Weights,
    *,
    rate: float | Rates,
    scope: str = "layer",
    schedule: str = "rate",
    rewind: int = 0,
    hooks: RoundHooks | None = None,
    structure: str | Structure | None = None,
) -> RoundResult:
    """One IMP round: prune ``previous``'s trained weights, reset/rewind the survivors, retrain.

    Args:
        trainer: From :func:`ltfunc.make_trainer` (the same for every round).
        previous: The ticket's previous round (its ``mask`` and ``final`` params are used).
        rewind_point: θ0 (reset) or the dense weights at iteration ``rewind`` (rewinding),
            buffers included (round 0's :attr:`RoundResult.rewind_point`).
        rate: Per-round fraction or :class:`ltfunc.Rates`.
        scope: ``"layer"`` or ``"global"``.
        schedule: ``"rate"`` or ``"sparsity"`` (see :func:`round_rates`).
        rewind: The iteration ``rewind_point`` belongs to; training resumes there.
        hooks: Per-round record sink and progress bar, see :data:`RoundHooks`.
        structure: ``None``, ``"N:M"`` or ``"block:RxC"`` (see :func:`ltfunc.prune.magnitude`).

    Returns:
        The ``"ticket"`` :class:`RoundResult` of round ``previous.round + 1``.

    Raises:
        TypeError, ValueError: As in :func:`next_mask` and :func:`ltfunc.train_round`.

    Example:
        See :func:`imp`.
    """
    func = "imp_round"
    _check_trainer(func, trainer)
    _check_round(func, "previous", previous)
    _check_rewind(func, trainer, rewind)
    point = as_weights(func, "rewind_point", rewind_point, trainer.step.model)
    round_rates(rate, 1, schedule)
    check_choice(func, "scope", scope, SCOPES)
    s = _parse(func, "structure", structure)
    return _imp_round(
        trainer, previous, point, rate, scope, schedule, rewind, hooks or _no_hooks, structure=s
    )


def _imp_round(
    trainer: Trainer,
    previous: RoundResult,
    rewind_point: Weights,
    rate: float | Rates,
    scope: str,
    schedule: str,
    rewind: int,
    hooks: RoundHooks,
    structure: str | Structure | None = None,
) -> RoundResult:
    plan = _plan_ticket(previous, rewind_point, rate, scope, schedule, rewind, structure)
    return _run_plan(trainer, plan, hooks)


def baseline_round(
    trainer: Trainer,
    condition: str,
    ticket: RoundResult,
    rewind_point: Weights,
    *,
    model: nn.Module,
    seed: int,
    rewind: int = 0,
    hooks: RoundHooks | None = None,
    structure: str | Structure | None = None,
) -> RoundResult:
    """Train a baseline of a ticket round with the same iterations and data order.

    Args:
        trainer: The ticket's :class:`~ltfunc.trainer.Trainer`.
        condition: ``"reinit"`` or ``"random_prune"`` (see :func:`baseline_start`).
        ticket: The ticket's round (its ``mask`` is used).
        rewind_point: The weights the ticket's survivors were reset to, unmasked (θ0 / θk),
            buffers included.
        model: Template module (for ``"reinit"``).
        seed: Experiment seed; the draw uses ``derive_seed(seed, condition, ticket.round)``.
        rewind: Iteration training starts at, as for the ticket.
        hooks: Per-round record sink and progress bar, see :data:`RoundHooks`.
        structure: The ticket's structure (see :func:`baseline_start`).

    Returns:
        A :class:`RoundResult` with ``condition`` and the ticket's round index.

    Raises:
        TypeError: Arguments of the wrong kind.
        ValueError: Unknown condition, ``rewind`` out of range.

    Example:
        See :func:`imp`.
    """
    func = "baseline_round"
    _check_trainer(func, trainer)
    _check_round(func, "ticket", ticket)
    check_choice(func, "condition", condition, BASELINES)
    check_int(func, "seed", seed)
    _check_rewind(func, trainer, rewind)
    point = as_weights(func, "rewind_point", rewind_point, trainer.step.model)
    s = _parse(func, "structure", structure)
    hooks = hooks or _no_hooks
    return _baseline_round(trainer, condition, ticket, point, model, seed, rewind, hooks, structure=s)


def _baseline_round(
    trainer: Trainer,
    condition: str,
    ticket: RoundResult,
    rewind_point: Weights,
    model: nn.Module,
    seed: int,
    rewind: int,
    hooks: RoundHooks,
    structure: str | Structure | None = None,
) -> RoundResult:
    k, mask = ticket.round, ticket.mask
    return _baseline_of(
        trainer, condition, k, mask, rewind_point, model, seed, rewind, hooks, structure=structure
    )


def _baseline_of(
    trainer: Trainer,
    condition: str,
    k: int,
    ticket_mask: Mask,
    rewind_point: Weights,
    model: nn.Module,
    seed: int,
    rewind: int,
    hooks: RoundHooks,
    structure: str | Structure | None = None,
) -> RoundResult:
    """The baseline ``condition`` of ticket round ``k`` given only that round's mask."""
    plan = _plan_baseline(condition, k, ticket_mask, rewind_point, model, seed, rewind, structure)
    return _run_plan(trainer, plan, hooks)


def imp(
    trainer: Trainer,
    init: Weights | Mapping[str, Tensor],
    *,
    rounds: int,
    rate: float | Rates,
    scope: str = "layer",
    schedule: str = "rate",
    rewind: int = 0,
    mask: Mask | None = None,
    previous: RoundResult | None = None,
    rewind_point: Weights | None = None,
    hooks: RoundHooks | None = None,
    structure: str | Structure | None = None,
) -> Iterator[RoundResult]:
    """Iterative magnitude pruning: yield the dense round 0, then the pruned rounds up to ``rounds``.

    A generator: each round is trained when it is requested, so a loop can stop early, save
    each round, or train baselines in between (:func:`baseline_round`). Given ``previous``
    (a finished ticket round, e.g. read back with :func:`ltfunc.load_round`) and the
    ``rewind_point``, it continues after that round instead: a resumed search gives the same
    rounds as an uninterrupted one.

    Args:
        trainer: From :func:`ltfunc.make_trainer`; its step is made once and reused by all rounds.
        init: θ0: :class:`~ltfunc.trainer.Weights`, or a params dict (buffers: copies of the
            step's model's own); not modified.
        rounds: The last round (``>= 1``); round 0 is the dense one.
        rate: Per-round fraction or :class:`ltfunc.Rates`.
        scope: ``"layer"`` or ``"global"``.
        schedule: ``"rate"`` or ``"sparsity"`` (see :func:`round_rates`).
        rewind: 0 resets survivors to θ0; ``k > 0`` rewinds to the dense weights at iteration k.
        mask: Starting mask (default: all prunable weights).
        previous: Continue after this finished ticket round (``None``: start at round 0).
        rewind_point: With ``previous``: round 0's :attr:`RoundResult.rewind_point`.
        hooks: Per-round record sink and progress bar, see :data:`RoundHooks`.
        structure: ``None``, ``"N:M"`` or ``"block:RxC"``: every round prunes under it
            (:func:`ltfunc.prune.magnitude`); a structure that does not fit the mask, or a
            round that could not prune any layer further (N:M reached, no whole block left
            to remove), is refused before any training.

    Returns:
        An iterator of ``"ticket"`` :class:`RoundResult` for the rounds up to ``rounds``,
        each trained when requested.

    Raises:
        TypeError: Arguments of the wrong kind.
        ValueError: ``rounds < 1``, invalid pruning settings, ``previous`` without
            ``rewind_point`` (before any training).

    Example:
        >>> import torch, ltfunc
        >>> m = ltfunc.models.lenet300(seed=0); opt = ltfunc.optim.sgd(lr=0.1)
        >>> split = (torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,)))
        >>> t = ltfunc.make_trainer(ltfunc.make_train_step(m, opt, compile=False), split,
        ...                         iterations=2, batch_size=8)
        >>> rounds = ltfunc.imp(t, ltfunc.Weights.of(m), rounds=2, rate=0.2)
        >>> [round(ltfunc.masks.density(r.mask), 3) for r in rounds]
        [1.0, 0.8, 0.64]
    """
    func = "imp"
    _check_trainer(func, trainer)
    check_int(func, "rounds", rounds, 1)
    round_rates(rate, 1, schedule)  # validate now, not at the first next()
    check_choice(func, "scope", scope, SCOPES)
    _check_rewind(func, trainer, rewind)
    weights = as_weights(func, "init", init, trainer.step.model)
    if mask is not None:
        _masks.check_compatible(mask, weights.params, func)
    point = None
    if previous is not None:
        _check_round(func, "previous", previous)
        if rewind_point is None:
            raise ValueError(f"{func}: previous= needs rewind_point= (round 0's rewind_point) to continue")
        point = as_weights(func, "rewind_point", rewind_point, trainer.step.model)
    s = _parse(func, "structure", structure)
    if s is not None:
        first = 1 if previous is None else previous.round + 1
        start = previous.mask if previous is not None else mask
        start = _masks.ones(trainer.step.model) if start is None else start
        plans = [round_rates(rate, k, schedule) for k in range(first, rounds + 1)]
        _check_structured_rounds(func, s, start, plans, scope, first)
    return _imp_rounds(
        trainer, weights, rounds, rate, scope, schedule, rewind, mask, previous, point, hooks, structure=s
    )


def _imp_rounds(
    trainer: Trainer,
    init: Weights,
    rounds: int,
    rate: float | Rates,
    scope: str,
    schedule: str,
    rewind: int,
    mask: Mask | None,
    previous: RoundResult | None,
    point: Weights | None,
    hooks: RoundHooks | None,
    structure: str | Structure | None = None,
) -> Iterator[RoundResult]:
    hooks = hooks or _no_hooks
    if previous is None:
        previous = _dense_round(trainer, init, rewind, mask, hooks)
        point = previous.rewind_point
        yield previous
    assert point is not None
    for _ in range(previous.round, rounds):
        previous = _imp_round(
            trainer, previous, point, rate, scope, schedule, rewind, hooks, structure=structure
        )
        yield previous
