"""Linear mode connectivity: error along the line between two networks, instability, mask overlap.

::

    path = interpolate(model, params_a, params_b, mask, ds.test, alphas=[0, 0.25, 0.5, 0.75, 1])
    path.errors, path.barrier          # error at each alpha; error barrier height
    path = instability(trainer, start_weights, mask, ds.train, 1000, seeds=(0, 1), eval_split=ds.test)
    mask_overlap(mask_a, mask_b)       # MaskOverlap(per_layer={...: Jaccard}, overall=...)

Definitions (Frankle, Dziugaite, Roy & Carbin 2020, "Linear Mode Connectivity and the
Lottery Ticket Hypothesis"). The network at ``alpha`` is ``θ(α) = (1 − α)·θ_a + α·θ_b``
(computed as ``torch.lerp(θ_a, θ_b, α)``, which is exactly ``θ_a`` at 0 and ``θ_b`` at 1),
evaluated under the mask. The *error barrier height* is

    ``barrier = max_α E(θ(α)) − (E(θ_a) + E(θ_b)) / 2``

with ``E`` the error (1 − accuracy) on the split and the maximum taken over the given alphas
and both endpoints, so ``barrier >= 0`` and identical endpoints give exactly 0. Two networks
are linearly mode connected when the barrier is (close to) 0. *Instability* of a starting
point (weights at iteration k) is the barrier between two copies trained from it with
different data orders (SGD noise).

BatchNorm. The network at ``alpha`` uses interpolated buffers: running means and variances
are interpolated like the params (``torch.lerp``), integer buffers (``num_batches_tracked``)
are taken from ``a``. Statistics are not recomputed on data: interpolated running statistics
do not describe the interpolated network's activations, which can overstate the barrier of
BatchNorm networks (recomputing them, "REPAIR"/"reset BN", is not implemented).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import masks as _masks
from . import rundir as _rundir
from ._checks import check_int, check_mask, check_module, check_number, check_seed, check_tree
from ._types import Buffers, LossFn
from .data import batches as _batches
from .evaluation import evaluate
from .masks import Mask
from .members import make_members_step, unstack_state
from .step import TrainStep
from .trainer import Trainer, Weights, as_weights

__all__ = [
    "DEFAULT_ALPHAS",
    "OVERLAP_FIELDS",
    "Interpolation",
    "MaskOverlap",
    "format_overlap",
    "instability",
    "interpolate",
    "mask_overlap",
    "mask_overlaps",
]

OVERLAP_FIELDS: tuple[str, ...] = ("kind", "a", "b", "round_a", "round_b", "layer", "jaccard")
"""Rows of :func:`mask_overlaps` (``layer``: a mask key or ``"overall"``)."""

DEFAULT_ALPHAS: tuple[float, ...] = tuple(i / 10 for i in range(11))
"""``0.0, 0.1, ..., 1.0``: the alphas :func:`instability` evaluates by default."""


class Interpolation(NamedTuple):
    """Loss and error along ``(1 − α)·a + α·b``; what :func:`interpolate` returns.

    Example:
        >>> r = Interpolation((0.0, 0.5, 1.0), (0.3, 0.9, 0.2), (0.1, 0.4, 0.1), 0.3, 0.65, (0.1, 0.1))
        >>> r.barrier
        0.3
    """

    alphas: tuple[float, ...]
    """The interpolation weights, in the order given."""
    losses: tuple[float, ...]
    """Mean loss at each alpha."""
    errors: tuple[float, ...]
    """Error (1 − accuracy) at each alpha."""
    barrier: float
    """Error barrier height: ``max(errors ∪ endpoint errors) − mean(endpoint errors)`` (>= 0)."""
    loss_barrier: float
    """The same for the loss: ``max(losses ∪ endpoint losses) − mean(endpoint losses)``."""
    endpoint_errors: tuple[float, float]
    """``(E(θ_a), E(θ_b))`` (evaluated even where 0 or 1 is not among the alphas)."""


class MaskOverlap(NamedTuple):
    """Jaccard indices ``|a ∧ b| / |a ∨ b|`` of two masks; what :func:`mask_overlap` returns."""

    per_layer: dict[str, float]
    """Per mask key (1.0 where both masks prune a whole layer)."""
    overall: float
    """Over all layers together: total intersection / total union (1.0 if both prune everything)."""


# Interpolation ---------------------------------------------------------------------------------
def _check_alphas(func: str, alphas: Any) -> tuple[float, ...]:
    if isinstance(alphas, Tensor):
        alphas = alphas.reshape(-1).tolist()
    if isinstance(alphas, (str, bytes)) or not isinstance(alphas, Sequence):
        raise TypeError(f"{func}: alphas must be a list of numbers in [0, 1], got {type(alphas).__name__}")
    if len(alphas) == 0:
        raise ValueError(f"{func}: alphas must not be empty (e.g. ltfunc.lmc.DEFAULT_ALPHAS)")
    return tuple(check_number(func, f"alphas[{i}]", a, low=0.0, high=1.0) for i, a in enumerate(alphas))


def _check_pair(func: str, names: tuple[str, str], a: Any, b: Any, *, nonempty: bool) -> None:
    check_tree(func, names[0], a, nonempty=nonempty)
    check_tree(func, names[1], b, nonempty=nonempty)
    if list(a) != list(b):
        missing = [k for k in a if k not in b]
        extra = [k for k in b if k not in a]
        raise ValueError(
            f"{func}: {names[0]} and {names[1]} must have the same keys in the same order: "
            f"{names[1]} lacks {missing}, has extra {extra}"
        )
    for k in a:
        x, y = a[k], b[k]
        if x.shape != y.shape or x.dtype != y.dtype or x.device != y.device:
            raise ValueError(
                f"{func}: {names[0]}[{k!r}] is {x.dtype} {tuple(x.shape)} on {x.device} but "
                f"{names[1]}[{k!r}] is {y.dtype} {tuple(y.shape)} on {y.device}"
            )


def _lerp_tree(a: Mapping[str, Tensor], b: Mapping[str, Tensor], alpha: float) -> dict[str, Tensor]:
    # torch.lerp is exact at both ends (a + w·(b − a) below 0.5, b − (b − a)·(1 − w) above)
    return {k: torch.lerp(x, b[k], alpha) if x.is_floating_point() else x.clone() for k, x in a.items()}


def interpolate(
    model: nn.Module,
    params_a: Mapping[str, Tensor],
    params_b: Mapping[str, Tensor],
    mask: Mask | None,
    split: Any,
    alphas: Sequence[float] | Tensor = DEFAULT_ALPHAS,
    *,
    buffers: tuple[Mapping[str, Tensor], Mapping[str, Tensor]] | None = None,
    batch_size: int = 1000,
    loss_fn: LossFn = F.cross_entropy,
) -> Interpolation:
    """Loss and error of the masked networks on the line ``(1 − α)·params_a + α·params_b``.

    Every point is evaluated with :func:`ltfunc.evaluate` (eval mode, no gradients) under
    ``mask``; the endpoints are evaluated too where 0 or 1 is not among ``alphas``. See the
    module docstring for the barrier's definition and what is done with BatchNorm buffers.

    Args:
        model: The module (its computation; weights come from the arguments).
        params_a: The network at ``alpha = 0``.
        params_b: The network at ``alpha = 1`` (same keys, shapes, dtypes, device as ``a``).
        mask: A :class:`~ltfunc.masks.Mask` applied to every point, or ``None``.
        split: An ``ltfunc.data.Split`` or ``(x, y)`` pair on the params' device.
        alphas: Interpolation weights in [0, 1] (a non-empty list or 1-D tensor); default
            :data:`DEFAULT_ALPHAS` (0, 0.1, ..., 1).
        buffers: ``(buffers_a, buffers_b)`` (BatchNorm running statistics of each network),
            interpolated like the params; ``None``: the model's own buffers at every point.
        batch_size: Evaluation batch size.
        loss_fn: Batch-mean loss.

    Returns:
        An :class:`Interpolation` (alphas, losses, errors, barrier, loss_barrier,
        endpoint_errors).

    Raises:
        TypeError: Arguments of the wrong type.
        ValueError: Empty alphas or one outside [0, 1]; ``params_a`` / ``params_b`` (or the
            two buffer dicts) with different keys, shapes, dtypes or devices; what
            :func:`ltfunc.evaluate` refuses (a mask that does not fit, a split elsewhere).

    Example:
        >>> import torch, ltfunc
        >>> m = ltfunc.models.lenet300(seed=0)
        >>> a, b = ltfunc.get_params(m), ltfunc.get_params(ltfunc.models.lenet300(seed=1))
        >>> split = (torch.randn(20, 1, 28, 28), torch.randint(0, 10, (20,)))
        >>> r = interpolate(m, a, b, None, split, [0.0, 0.5, 1.0])
        >>> len(r.errors), r.barrier >= 0
        (3, True)
    """
    func = "interpolate"
    check_module(func, "model", model)
    _check_pair(func, ("params_a", "params_b"), params_a, params_b, nonempty=True)
    check_mask(func, "mask", mask, optional=True)
    alpha_list = _check_alphas(func, alphas)
    check_int(func, "batch_size", batch_size, 1)
    bufs: tuple[Mapping[str, Tensor], Mapping[str, Tensor]] | None = None
    if buffers is not None:
        if not isinstance(buffers, (tuple, list)) or len(buffers) != 2:
            raise TypeError(
                f"{func}: buffers must be None or a pair (buffers_a, buffers_b), got {type(buffers).__name__}"
            )
        _check_pair(func, ("buffers[0]", "buffers[1]"), buffers[0], buffers[1], nonempty=False)
        bufs = (buffers[0], buffers[1])
    if mask is not None:
        _masks.check_compatible(mask, params_a, func)

    def point(alpha: float) -> tuple[float, float]:
        p = _lerp_tree(params_a, params_b, alpha)
        b = _lerp_tree(bufs[0], bufs[1], alpha) if bufs is not None else None
        loss, acc = evaluate(model, p, mask, split, batch_size=batch_size, loss_fn=loss_fn, buffers=b or None)
        return loss, 1.0 - acc

    results = {alpha: point(alpha) for alpha in dict.fromkeys((*alpha_list, 0.0, 1.0))}
    losses = tuple(results[a][0] for a in alpha_list)
    errors = tuple(results[a][1] for a in alpha_list)
    (loss_a, err_a), (loss_b, err_b) = results[0.0], results[1.0]
    barrier = max(*errors, err_a, err_b) - (err_a + err_b) / 2
    loss_barrier = max(*losses, loss_a, loss_b) - (loss_a + loss_b) / 2
    return Interpolation(alpha_list, losses, errors, barrier, loss_barrier, (err_a, err_b))


# Instability ------------------------------------------------------------------------------------
def instability(
    trainer_or_step: Trainer | TrainStep,
    start_weights: Weights | Mapping[str, Tensor],
    mask: Mask | None,
    train_split: Any,
    iterations: int,
    *,
    seeds: tuple[int, int] = (0, 1),
    start_iteration: int = 0,
    batch_size: int | None = None,
    lr: float | Any = None,
    eval_split: Any = None,
    alphas: Sequence[float] | Tensor = DEFAULT_ALPHAS,
    eval_batch_size: int = 1000,
) -> Interpolation:
    """Instability of a starting point: train two copies with different data orders, interpolate them.

    Both copies start from ``start_weights`` (the weights at iteration ``start_iteration``,
    e.g. a rewind point) with fresh optimizer states and train ``iterations`` steps under
    ``mask`` as one vmapped pair (:func:`ltfunc.members.make_members_step`, eager or compiled
    like the given step); copy ``i`` sees ``ltfunc.data.batches(train_split, batch_size,
    seed=seeds[i], start=start_iteration)`` and the learning rate at ``start_iteration + t``.
    The trained pair (params and BatchNorm buffers) goes to :func:`interpolate`. Identical
    seeds give identical copies and a barrier of exactly 0.

    Args:
        trainer_or_step: A :class:`ltfunc.trainer.Trainer` (its step's model, optimizer and
            loss, its batch size, lr schedule and augmentation) or a step of
            :func:`ltfunc.make_train_step`.
        start_weights: :class:`ltfunc.Weights` or a params dict (buffers: the model's own).
        mask: The mask both copies train (and are evaluated) under, or ``None``.
        train_split: The training split (``Split`` or ``(x, y)`` pair).
        iterations: Training steps of each copy (``>= 1``).
        seeds: The two data-order seeds.
        start_iteration: The iteration ``start_weights`` belong to (where the data streams
            and the lr schedule start).
        batch_size: Training batch size; default the trainer's (required with a step).
        lr: A number or schedule ``lr(iteration)``; default the trainer's, else the
            optimizer's ``lr``.
        eval_split: Where the barrier is measured; default ``train_split``.
        alphas: Interpolation weights (see :func:`interpolate`).
        eval_batch_size: Evaluation batch size.

    Returns:
        The :class:`Interpolation` between the two trained copies.

    Raises:
        TypeError: Arguments of the wrong type.
        ValueError: Numbers out of range, bad alphas, weights that do not fit the model.

    Example:
        >>> import torch, ltfunc
        >>> m = ltfunc.models.lenet300(seed=0)
        >>> step = ltfunc.make_train_step(m, ltfunc.optim.sgd(lr=0.05), compile=False)
        >>> split = (torch.randn(40, 1, 28, 28), torch.randint(0, 10, (40,)))
        >>> r = instability(step, ltfunc.get_params(m), None, split, 3, seeds=(0, 0), batch_size=8)
        >>> r.barrier
        0.0
    """
    func = "instability"
    augment: bool | str = False
    if isinstance(trainer_or_step, Trainer):
        step = trainer_or_step.step
        batch_size = trainer_or_step.batch_size if batch_size is None else batch_size
        lr = trainer_or_step.lr if lr is None else lr
        augment = trainer_or_step.augment
    elif isinstance(trainer_or_step, TrainStep):
        step = trainer_or_step
        if batch_size is None:
            raise ValueError(f"{func}: give batch_size= with a step (a Trainer carries its own)")
    else:
        raise TypeError(
            f"{func}: trainer_or_step must be an ltfunc Trainer or TrainStep, "
            f"got {type(trainer_or_step).__name__}"
        )
    if lr is None:
        lr = step.optimizer.lr
    if not callable(lr):
        lr = check_number(func, "lr", lr, low=0.0)
    check_int(func, "iterations", iterations, 1)
    check_int(func, "start_iteration", start_iteration, 0)
    check_int(func, "batch_size", batch_size, 1)
    if not isinstance(seeds, (tuple, list)) or len(seeds) != 2:
        raise TypeError(f"{func}: seeds must be a pair of ints, got {seeds!r}")
    for i, s in enumerate(seeds):
        check_seed(func, s, name=f"seeds[{i}]")
    check_mask(func, "mask", mask, optional=True)
    alpha_list = _check_alphas(func, alphas)
    start = as_weights(func, "start_weights", start_weights, step.model)

    vstep = make_members_step(step.model, step.optimizer, step.loss_fn, compile=step.compiled)
    states = vstep.init([start.params, start.params], [start.buffers, start.buffers])
    streams: list[Iterator[tuple[Tensor, Tensor]]] = [
        _batches(train_split, batch_size, seed=s, start=start_iteration, augment=augment) for s in seeds
    ]
    masks_arg = [mask, mask]
    for t in range(iterations):
        (xa, ya), (xb, yb) = next(streams[0]), next(streams[1])
        rate = lr(start_iteration + t) if callable(lr) else lr
        states, _ = vstep(states, masks_arg, (torch.stack([xa, xb]), torch.stack([ya, yb])), float(rate))
    a, b = unstack_state(states, 0), unstack_state(states, 1)
    bufs: tuple[Buffers, Buffers] | None = (a.buffers, b.buffers) if a.buffers else None
    return interpolate(
        step.model,
        a.params,
        b.params,
        mask,
        train_split if eval_split is None else eval_split,
        alpha_list,
        buffers=bufs,
        batch_size=eval_batch_size,
        loss_fn=step.loss_fn,
    )


# Mask overlap -----------------------------------------------------------------------------------
def mask_overlap(a: Mask, b: Mask) -> MaskOverlap:
    """Jaccard index ``|a ∧ b| / |a ∨ b|`` of two masks' kept weights, per layer and overall.

    Args:
        a: A :class:`~ltfunc.masks.Mask`.
        b: A mask with the same keys and shapes.

    Returns:
        :class:`MaskOverlap` ``(per_layer={key: index}, overall=index)``; 1.0 for identical
        masks, 0.0 for disjoint ones; a layer (or all layers) that both prune completely
        counts as 1.0.

    Raises:
        TypeError: Not masks.
        ValueError: Different keys or shapes (or a mask modified in place).

    Example:
        >>> import torch, ltfunc
        >>> a = ltfunc.masks.from_dict({"w": torch.tensor([True, True, False, False])})
        >>> b = ltfunc.masks.from_dict({"w": torch.tensor([True, False, True, False])})
        >>> mask_overlap(a, b)
        MaskOverlap(per_layer={'w': 0.3333333333333333}, overall=0.3333333333333333)
    """
    func = "mask_overlap"
    check_mask(func, "a", a)
    check_mask(func, "b", b)
    _masks._check_unmodified(func, a)
    _masks._check_unmodified(func, b)
    if list(a) != list(b):
        raise ValueError(f"{func}: a and b must have the same keys: a has {list(a)}, b has {list(b)}")
    per_layer: dict[str, float] = {}
    counts = []
    for k in a:
        x, y = a[k], b[k]
        if x.shape != y.shape:
            raise ValueError(f"{func}: a[{k!r}] has shape {tuple(x.shape)} but b[{k!r}] has {tuple(y.shape)}")
        y = y.to(x.device)
        counts.append(torch.stack([(x & y).sum(), (x | y).sum()]))
    pairs = torch.stack(counts).tolist() if counts else []
    for k, (inter, union) in zip(a, pairs, strict=True):
        per_layer[k] = inter / union if union else 1.0
    total_inter, total_union = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
    return MaskOverlap(per_layer, total_inter / total_union if total_union else 1.0)


# Mask overlap across run directories ------------------------------------------------------------
def _int_list(func: str, name: str, values: Any, low: int, high: int, what: str) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{func}: {name} must be a list of ints, got {type(values).__name__} {values!r}")
    if len(values) == 0:
        raise ValueError(f"{func}: {name} must not be empty")
    out: list[int] = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{func}: {name}[{i}] must be an int, got {type(v).__name__} {v!r}")
        if not low <= v <= high:
            raise ValueError(f"{func}: {name}[{i}]={v} {what}: allowed {low} <= value <= {high}")
        if v not in out:
            out.append(v)
    return out


def _finished_rounds(run: Path) -> list[int]:
    found = _rundir.round_dirs(run).get("ticket", {})
    return [k for k in found if _rundir.is_finished(run, "ticket", k)]


def _ticket_mask(func: str, run: Path, r: int, device: Any) -> Any:
    """Ticket round ``r``'s mask, checked against its ``summary.json`` (shipped runs keep no weights)."""
    rd = _rundir.round_dir(run, "ticket", r)
    mask = _rundir._load_mask(func, rd / "mask.safetensors", device)
    _rundir._check_round_mask(func, rd / "mask.safetensors", mask, rd / "summary.json", run)
    return mask


def _ticket_masks(func: str, run: Path, rounds: Sequence[int] | None) -> dict[int, Any]:
    done = _finished_rounds(run)
    chosen = done if rounds is None else [r for r in rounds if r in done]
    return {r: _ticket_mask(func, run, r, "cpu") for r in chosen}


def mask_overlaps(
    run_dirs: Sequence[str | os.PathLike[str]], *, rounds: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """Jaccard overlap of ticket masks: same round across runs, and consecutive rounds of each run.

    ``kind="seeds"`` rows compare every pair of runs at each round finished in both;
    ``kind="rounds"`` rows compare round ``r - 1`` with round ``r`` of one run. Each pair
    gives one row per mask key and one ``layer="overall"`` row (:func:`mask_overlap`).

    Args:
        run_dirs: Run directories (e.g. the seeds of one config); all with the same model.
        rounds: Ticket rounds to compare (default: all finished ones); for ``"rounds"``
            rows a round is compared with the one before it when both are chosen.

    Returns:
        Rows with :data:`OVERLAP_FIELDS` (``a`` / ``b``: run directory names).

    Raises:
        TypeError: ``run_dirs`` not a list of paths, ``rounds`` not a list of ints.
        ValueError: An entry is not a run directory; ``rounds`` names a round no run
            finished; masks of different keys or shapes.
        FileNotFoundError: A run directory does not exist.

    Example:
        >>> from ltfunc.lmc import mask_overlaps
        >>> rows = mask_overlaps(["runs/seed0", "runs/seed1"], rounds=[1, 2])  # doctest: +SKIP
        >>> [r for r in rows if r["layer"] == "overall"][0]["jaccard"]  # doctest: +SKIP
    """
    func = "mask_overlaps"
    if isinstance(run_dirs, (str, bytes, os.PathLike)) or not isinstance(run_dirs, Sequence) or not run_dirs:
        raise TypeError(f"{func}: run_dirs must be a non-empty list of run directories, got {run_dirs!r}")
    runs = [_rundir.open_run(func, r) for r in run_dirs]
    chosen = None if rounds is None else _int_list(func, "rounds", rounds, 0, 10**9, "is not a round index")
    if chosen is not None:
        everywhere = set().union(*(_finished_rounds(r) for r in runs))
        missing = [r for r in chosen if r not in everywhere]
        if missing:
            raise ValueError(f"{func}: rounds {missing} are not finished ticket rounds of any of the runs")
    names = [r.name if r.name else str(r) for r in runs]
    if len(set(names)) < len(names):
        names = [str(r) for r in runs]
    all_masks = [_ticket_masks(func, r, chosen) for r in runs]
    rows: list[dict[str, Any]] = []

    def add(kind: str, a: str, b: str, ra: int, rb: int, ma: Any, mb: Any) -> None:
        ov = mask_overlap(ma, mb)
        for layer, j in (*ov.per_layer.items(), ("overall", ov.overall)):
            rows.append(
                {"kind": kind, "a": a, "b": b, "round_a": ra, "round_b": rb, "layer": layer, "jaccard": j}
            )

    for (i, ma), (j, mb) in itertools.combinations(enumerate(all_masks), 2):
        for r in sorted(set(ma) & set(mb)):
            add("seeds", names[i], names[j], r, r, ma[r], mb[r])
    for i, m in enumerate(all_masks):
        for r in sorted(m):
            if r - 1 in m:
                add("rounds", names[i], names[i], r - 1, r, m[r - 1], m[r])
    return rows


def format_overlap(rows: Sequence[Mapping[str, Any]]) -> str:
    """A text table of :func:`mask_overlaps` rows: one line per pair, overall and per-layer Jaccard.

    Args:
        rows: :func:`mask_overlaps` output.

    Returns:
        The table (``(no rows)`` when empty).

    Raises:
        ValueError: Rows without :data:`OVERLAP_FIELDS`.

    Example:
        >>> rows = [{"kind": "rounds", "a": "s0", "b": "s0", "round_a": 0, "round_b": 1,
        ...          "layer": l, "jaccard": 0.8} for l in ("fc1.weight", "overall")]
        >>> print(format_overlap(rows))
        kind    a   b   rounds  overall  fc1.weight
        rounds  s0  s0  0-1     0.8000   0.8000
    """
    func = "format_overlap"
    for i, row in enumerate(rows):
        missing = [k for k in OVERLAP_FIELDS if k not in row]
        if missing:
            raise ValueError(f"{func}: rows[{i}] lacks {missing}")
    if not rows:
        return "(no rows)"
    layers: list[str] = []
    pairs: dict[tuple[Any, ...], dict[str, float]] = {}
    for row in rows:
        key = (row["kind"], row["a"], row["b"], row["round_a"], row["round_b"])
        pairs.setdefault(key, {})[row["layer"]] = float(row["jaccard"])
        if row["layer"] != "overall" and row["layer"] not in layers:
            layers.append(row["layer"])
    head = ["kind", "a", "b", "rounds", "overall", *layers]
    body = []
    for (kind, a, b, ra, rb), vals in pairs.items():
        rnd = str(ra) if ra == rb else f"{ra}-{rb}"
        body.append([kind, str(a), str(b), rnd, *(_fmt_j(vals.get(n)) for n in ("overall", *layers))])
    widths = [max(len(h), *(len(x[i]) for x in body)) for i, h in enumerate(head)]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(x, widths, strict=True)).rstrip() for x in (head, *body)
    )


def _fmt_j(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.4f}"
