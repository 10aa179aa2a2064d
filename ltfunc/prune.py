"""Pure pruning functions: ``(params, mask, ...) -> new Mask``. Inputs are never modified.

Layers are classified from their tensors: 2-D weights are ``fc``, weights with 3 or more
dimensions are ``conv``, and the last ``fc`` tensor of the mask (in parameter order) is the
``output`` layer. ``Rates`` gives each class its own rate, plus per-parameter overrides.

Rounding: pruning a fraction ``r`` of ``n`` surviving weights removes exactly
``floor(r * n + 0.5)`` weights (round half up). A target sparsity ``s`` over ``N`` prunable
weights keeps exactly ``N - floor(s * N + 0.5)``. Ties in magnitude are broken
deterministically: among equal magnitudes, the weight that comes first (layer order, then
flat index) is removed first.

Structured pruning (``structure="N:M"`` or ``"block:RxC"``, :mod:`ltfunc.structured`) keeps
these counts and rankings but constrains the choice: N:M protects the ``N`` largest survivors
of every group of ``M`` (the counts stop at the ``N/M`` floor, where the mask is exactly N:M);
blocks are counted, ranked (by L2 norm) and removed whole. :func:`random` and
:func:`random_like` draw masks of the same structure for the random-pruning baseline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from ._checks import check_choice, check_fraction, check_mask, check_rng
from .masks import Mask, check_compatible
from .structured import (
    NM,
    Structure,
    _block_alive,
    _block_norms,
    _check_fits,
    _check_pattern,
    _expand_blocks,
    _nm_protected,
    _parse,
)

__all__ = ["Rates", "kept_counts", "layer_kinds", "magnitude", "random", "random_like"]

Scope = Literal["global", "layer"]
SCOPES = ("global", "layer")


@dataclass(frozen=True)
class Rates:
    """Per-class fractions: how much to prune (``rate``) or the target (``sparsity``).

    Resolution for a parameter: ``overrides[name]``, else ``output`` (for the output layer,
    falling back to ``fc``), else ``conv`` / ``fc`` by layer class, else ``default``.

    Args:
        default: Fraction for layers not covered otherwise (default 0: untouched).
        conv: Fraction for conv kernels (``conv_prune_percent`` in the seed repos).
        fc: Fraction for fully connected weights (``fc_prune_percent``).
        output: Fraction for the output layer (Frankle & Carbin use half the fc rate).
        overrides: ``{parameter name: fraction}``.

    Example:
        >>> import ltfunc
        >>> r = ltfunc.Rates(fc=0.2, output=0.1)
        >>> r.resolve("fc3.weight", "output"), r.resolve("fc1.weight", "fc")
        (0.1, 0.2)
    """

    default: float = 0.0
    conv: float | None = None
    fc: float | None = None
    output: float | None = None
    overrides: Mapping[str, float] = field(default_factory=dict)

    def resolve(self, name: str, kind: str) -> float:
        """The fraction for parameter ``name`` of class ``kind`` (conv/fc/output)."""
        return self.resolve_with_group(name, kind)[0]

    def resolve_with_group(self, name: str, kind: str) -> tuple[float, str]:
        """The fraction and the group (for global scope) of parameter ``name``."""
        if name in self.overrides:
            return float(self.overrides[name]), f"override:{name}"
        if kind == "output" and self.output is not None:
            return float(self.output), "output"
        if kind in ("output", "fc") and self.fc is not None:
            return float(self.fc), "fc"
        if kind == "conv" and self.conv is not None:
            return float(self.conv), "conv"
        return float(self.default), "default"


def layer_kinds(mask: Mask) -> dict[str, str]:
    """Classify each tensor of ``mask`` as ``"conv"``, ``"fc"`` or ``"output"``.

    Args:
        mask: The mask (its keys are in parameter order).

    Returns:
        ``{name: kind}``; the last 2-D tensor is ``"output"``.

    Example:
        >>> import ltfunc
        >>> ltfunc.prune.layer_kinds(ltfunc.masks.ones(ltfunc.models.lenet300()))
        {'fc1.weight': 'fc', 'fc2.weight': 'fc', 'fc3.weight': 'output'}
    """
    kinds = {k: ("fc" if v.dim() == 2 else "conv" if v.dim() >= 3 else "other") for k, v in mask.items()}
    fcs = [k for k, v in kinds.items() if v == "fc"]
    if fcs:
        kinds[fcs[-1]] = "output"
    return kinds


def _as_rates(func: str, name: str, value: float | Rates, mask: Mask) -> Rates:
    if isinstance(value, Rates):
        r = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        r = Rates(default=float(value))
    else:
        raise TypeError(f"{func}: {name} must be a float or ltfunc.Rates, got {value!r}")
    for attr in ("default", "conv", "fc", "output"):
        v = getattr(r, attr)
        if v is not None:
            check_fraction(func, f"{name}.{attr}" if isinstance(value, Rates) else name, v)
    if not isinstance(r.overrides, Mapping):
        raise TypeError(f"{func}: {name}.overrides must be a dict of name -> fraction")
    unknown = [k for k in r.overrides if k not in mask]
    if unknown:
        raise ValueError(
            f"{func}: {name}.overrides names parameters {unknown} that are not in the mask; "
            f"allowed: {list(mask)}"
        )
    for k, v in r.overrides.items():
        check_fraction(func, f"{name}.overrides[{k!r}]", v)
    return r


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def _validate(
    func: str,
    params: Mapping[str, Tensor],
    mask: Mask,
    rate: float | Rates | None,
    sparsity: float | Rates | None,
    scope: str,
) -> tuple[Rates, bool]:
    check_compatible(mask, params, func)
    if len(mask) == 0:
        raise ValueError(f"{func}: mask is empty: the model has nothing prunable (no Linear/Conv weights)")
    for k in mask:
        if not params[k].is_floating_point():
            raise TypeError(
                f"{func}: params[{k!r}] has dtype {params[k].dtype}; only floating point "
                "parameters can be pruned"
            )
    check_choice(func, "scope", scope, SCOPES)
    if (rate is None) == (sparsity is None):
        raise ValueError(
            f"{func}: give exactly one of rate= (fraction of surviving weights to remove) or "
            f"sparsity= (target fraction of all weights removed); got rate={rate!r}, "
            f"sparsity={sparsity!r}"
        )
    if rate is not None:
        return _as_rates(func, "rate", rate, mask), False
    assert sparsity is not None
    return _as_rates(func, "sparsity", sparsity, mask), True


def _grouping(
    kinds: Mapping[str, str], names: list[str], rates: Rates, scope: str
) -> list[tuple[float, list[str]]]:
    """The groups of layers that share one ranking (a layer each, or a rate group) and their fraction."""
    groups: dict[str, tuple[float, list[str]]] = {}
    for name in names:
        frac, group = rates.resolve_with_group(name, kinds[name])
        key = group if scope == "global" else f"layer:{name}"
        groups.setdefault(key, (frac, []))[1].append(name)
    return list(groups.values())


def _to_remove(frac: float, kept: int, total: int, is_target: bool) -> int:
    """How many of ``kept`` survivors (out of ``total``) a fraction removes (see the module docstring)."""
    if is_target:
        return max(0, kept - (total - _round_half_up(frac * total)))
    return _round_half_up(frac * kept)


def _removal_plan(mask: Mask, rates: Rates, is_target: bool, scope: str) -> list[tuple[list[str], int]]:
    """Groups of layers and how many surviving weights each group must lose."""
    plan = []
    for frac, names in _grouping(layer_kinds(mask), list(mask), rates, scope):
        kept = sum(int(mask[n].sum()) for n in names)
        total = sum(mask[n].numel() for n in names)
        plan.append((names, _to_remove(frac, kept, total, is_target)))
    return plan


def _magnitude_select(
    func: str,
    params: Mapping[str, Tensor],
    mask: Mapping[str, Tensor],
    plan: list[tuple[list[str], int]],
    candidates: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """``mask`` with, in each plan group, the ``remove`` lowest-``|params|`` candidates pruned.

    ``candidates`` (default: ``mask``) are the entries that may be pruned.
    """
    # Contiguous copies: a clone of a non-contiguous mask keeps its strides, and writing
    # through ``reshape(-1)`` of such a tensor would silently go to a temporary copy.
    new = {k: v.clone(memory_format=torch.contiguous_format) for k, v in mask.items()}
    candidates = mask if candidates is None else candidates
    for names, remove in plan:
        if remove == 0:
            continue
        scores, owners, positions = [], [], []
        for i, n in enumerate(names):
            idx = torch.nonzero(candidates[n].reshape(-1), as_tuple=False).reshape(-1)
            w = params[n].detach().reshape(-1)[idx].abs().to(torch.float64)
            if not torch.isfinite(w).all():
                raise ValueError(
                    f"{func}: params[{n!r}] contains NaN or inf among "
                    "surviving weights; cannot rank by magnitude"
                )
            scores.append(w.cpu())
            positions.append(idx.cpu())
            owners.append(torch.full((idx.numel(),), i, dtype=torch.int64))
        order = torch.sort(torch.cat(scores), stable=True).indices[:remove]
        own = torch.cat(owners)[order]
        pos = torch.cat(positions)[order]
        for i, n in enumerate(names):
            sel = pos[own == i]
            if sel.numel():
                flat = new[n].view(-1)
                flat[sel.to(flat.device)] = False
    return new


def magnitude(
    params: Mapping[str, Tensor],
    mask: Mask,
    *,
    rate: float | Rates | None = None,
    sparsity: float | Rates | None = None,
    scope: Scope = "layer",
    structure: str | Structure | None = None,
) -> Mask:
    """Prune the lowest-magnitude surviving weights; return a new mask.

    Weights already pruned stay pruned. Give exactly one of ``rate`` (fraction of the
    *surviving* weights to remove: Frankle & Carbin's 20% of what is left per round) or
    ``sparsity`` (target fraction of *all* prunable weights of a group; a target at or below
    the current sparsity is a no-op, never a regrowth).

    ``structure`` (the geometry is :mod:`ltfunc.structured`'s) constrains which weights go;
    a layer whose rate is 0 is never pruned and needs not fit the structure:

    * ``"N:M"``: in every group of ``M`` consecutive weights along the input dimension the
      ``N`` largest survivors are protected; the other survivors are pruned by magnitude
      exactly as without a structure (same counts, same scope), except that a layer (a
      group of layers with ``scope="global"``) never loses more than its unprotected
      survivors. So the kept count follows the rates down to the floor of ``N/M`` of the
      weights, where every group keeps exactly its ``N`` largest survivors: the mask is
      exactly N:M (e.g. ``sparsity=0.5, structure="2:4"`` in one shot); below the floor it
      is clamped there (any target beyond ``N/M`` gives exact N:M), and a mask at the floor
      stays unchanged. ``mask`` must keep at least ``N`` weights in every group.
    * ``"block:RxC"``: the same rates counted in blocks: ``floor(r * n + 0.5)`` of the ``n``
      surviving ``R×C`` blocks with the lowest L2 norm go (``sparsity``: the target
      fraction of all blocks; global scope ranks the blocks of a group's layers together),
      so the mask stays a union of whole blocks; ``mask`` must be one.

    Args:
        params: Params pytree (only the masked keys are read).
        mask: The current mask; not modified.
        rate: A fraction in [0, 1) or a :class:`Rates`.
        sparsity: A fraction in [0, 1) or a :class:`Rates`.
        scope: ``"layer"`` (each layer by its own rate) or ``"global"`` (one threshold across
            the layers of a group: conv, fc, output, each override alone).
        structure: ``None`` (unstructured), ``"N:M"`` or ``"block:RxC"``
            (:func:`ltfunc.structured.parse`).

    Returns:
        A new ``Mask``; exactly ``floor(r * n + 0.5)`` weights removed per layer/group
        (with a structure: clamped at the N:M floor, counted in blocks).

    Raises:
        TypeError: Mask/params of the wrong type, non-floating params, bad rate type.
        ValueError: Mismatched mask, fractions outside [0, 1), unknown override names,
            unknown scope, both/neither of rate and sparsity, NaN weights; a structure that
            does not parse, does not divide a layer pruned at a rate > 0 or cannot apply to
            it (1-D), or a mask it cannot continue from (names the layer).

    Example:
        >>> import ltfunc
        >>> p = ltfunc.get_params(ltfunc.models.lenet300())
        >>> m = ltfunc.prune.magnitude(p, ltfunc.masks.ones(p), rate=ltfunc.Rates(fc=0.2, output=0.1))
        >>> ltfunc.masks.counts(m)["fc3.weight"]
        LayerCount(kept=900, total=1000)
        >>> m24 = ltfunc.prune.magnitude(p, ltfunc.masks.ones(p), sparsity=0.5, structure="2:4")
        >>> ltfunc.structured.satisfies(m24, "2:4")["fc1.weight"], ltfunc.masks.density(m24)
        (True, 0.5)
    """
    return _checked_magnitude("magnitude", params, mask, rate, sparsity, scope, structure)


def _magnitude(
    params: Mapping[str, Tensor],
    mask: Mask,
    *,
    rate: float | Rates | None = None,
    sparsity: float | Rates | None = None,
    scope: Scope = "layer",
    structure: str | Structure | None = None,
) -> Mask:
    """:func:`magnitude` without the argument checks, for callers that have validated them.

    Only NaN/inf among the surviving weights still raise (a property of the values), and
    with a structure its fit to the layers and to ``mask``.
    """
    is_target = sparsity is not None
    frac = sparsity if is_target else rate
    rates = frac if isinstance(frac, Rates) else Rates(default=float(frac))  # type: ignore[arg-type]
    s = _parse("magnitude", "structure", structure)
    if s is not None:
        return Mask(_structured_select("magnitude", params, mask, rates, is_target, scope, s))
    return Mask(_magnitude_select("magnitude", params, mask, _removal_plan(mask, rates, is_target, scope)))


def _checked_magnitude(
    func: str,
    params: Mapping[str, Tensor],
    mask: Mask,
    rate: float | Rates | None,
    sparsity: float | Rates | None,
    scope: str,
    structure: Any = None,
) -> Mask:
    rates, is_target = _validate(func, params, mask, rate, sparsity, scope)
    s = _parse(func, "structure", structure)
    if s is not None:
        return Mask(_structured_select(func, params, mask, rates, is_target, scope, s))
    return Mask(_magnitude_select(func, params, mask, _removal_plan(mask, rates, is_target, scope)))


# --------------------------------------------------------------------------------------------
# structured selection


def _active(func: str, s: Structure, mask: Mapping[str, Tensor], rates: Rates) -> list[str]:
    """The layers a structured pruning touches (rate > 0), after checking they fit ``s``."""
    kinds = layer_kinds(mask)  # type: ignore[arg-type]
    active = [n for n in mask if rates.resolve(n, kinds[n]) != 0.0]
    for n in active:
        _check_fits(func, s, n, tuple(mask[n].shape))
    for n in active:
        _check_pattern(func, s, n, mask[n])
    return active


def _structured_select(
    func: str,
    params: Mapping[str, Tensor],
    mask: Mask,
    rates: Rates,
    is_target: bool,
    scope: str,
    s: Structure,
) -> dict[str, Tensor]:
    active = _active(func, s, mask, rates)
    for n in active:
        if not torch.isfinite(params[n].detach()[mask[n]]).all():
            raise ValueError(
                f"{func}: params[{n!r}] contains NaN or inf among surviving weights; cannot rank by magnitude"
            )
    if isinstance(s, NM):
        candidates = dict(mask)
        for n in active:
            candidates[n] = mask[n] & ~_nm_protected(params[n].detach().abs(), mask[n], s)
        plan = [
            (names, min(remove, sum(int(candidates[n].sum()) for n in names)))
            for names, remove in _removal_plan(mask, rates, is_target, scope)
        ]
        return _magnitude_select(func, params, mask, plan, candidates)
    alive = {n: _block_alive(mask[n], s) for n in active}
    norms = {n: _block_norms(params[n], mask[n], s) for n in active}
    plan = []
    for frac, names in _grouping(layer_kinds(mask), active, rates, scope):
        kept = sum(int(alive[n].sum()) for n in names)
        total = sum(alive[n].numel() for n in names)
        plan.append((names, _to_remove(frac, kept, total, is_target)))
    chosen = _magnitude_select(func, norms, alive, plan)
    out = dict(mask)
    for n in active:
        out[n] = _expand_blocks(chosen[n], tuple(mask[n].shape), s).to(mask[n].device)
    return out


def _check_structured_rounds(
    func: str,
    structure: Any,
    mask: Mask,
    plans: Sequence[Mapping[str, Rates]],
    scope: str,
    first: int = 1,
) -> None:
    """Refuse a structured IMP schedule before any work: a misfit, or a round that prunes nothing.

    ``plans[i]`` is round ``first + i``'s ``{"rate": Rates}`` / ``{"sparsity": Rates}``
    (:func:`ltfunc.ticket.round_rates`). The kept counts of every round follow from the
    counts alone (the N:M floor, whole blocks), so a round that could not prune any layer
    further — and would repeat the round before — is found from the shapes.
    """
    s = _parse(func, "structure", structure)
    if s is None or not plans:
        return
    first_rates = next(iter(plans[0].values()))
    active = _active(func, s, mask, first_rates)
    kinds = layer_kinds(mask)
    if isinstance(s, NM):
        kept = {n: int(mask[n].sum()) for n in active}
        total = {n: mask[n].numel() for n in active}
        floor = {n: s.n * (mask[n].numel() // s.m) for n in active}
        reason = f"every layer pruned at a rate > 0 is at its {s} floor, {s.n}/{s.m} of its weights"
    else:
        kept = {n: int(_block_alive(mask[n], s).sum()) for n in active}
        total = {n: mask[n].numel() // (s.rows * s.cols) for n in active}
        floor = dict.fromkeys(active, 0)
        reason = f"the rates remove no whole {s.rows}x{s.cols} block from any layer"
    state: dict[tuple[str, ...], int] = {}
    for i, plan in enumerate(plans):
        k = first + i
        is_target = "sparsity" in plan
        rates = next(iter(plan.values()))
        changed = False
        for frac, names in _grouping(kinds, active, rates, scope):
            key = tuple(names)
            cur = state.get(key, sum(kept[n] for n in names))
            remove = _to_remove(frac, cur, sum(total[n] for n in names), is_target)
            remove = min(remove, cur - sum(floor[n] for n in names))
            state[key] = cur - max(remove, 0)
            changed = changed or remove > 0
        if not changed:
            fix = f"use rounds <= {k - 1}" if k > first else "use a larger rate"
            raise ValueError(
                f"{func}: with structure '{s}', round {k} cannot prune any layer further ({reason}), so "
                f"it would repeat the round before; {fix} (rounds {k}..{first + len(plans) - 1} were asked)"
            )


def kept_counts(
    params: Mapping[str, Tensor],
    mask: Mask,
    *,
    rate: float | Rates | None = None,
    sparsity: float | Rates | None = None,
    scope: Scope = "layer",
    structure: str | Structure | None = None,
) -> dict[str, int]:
    """Per-layer surviving counts that :func:`magnitude` would leave (same arguments).

    Args:
        params: Params pytree (only the masked keys are read).
        mask: The current mask; not modified.
        rate: A fraction in [0, 1) or a :class:`Rates`.
        sparsity: A fraction in [0, 1) or a :class:`Rates`.
        scope: ``"layer"`` or ``"global"``.
        structure: ``None``, ``"N:M"`` or ``"block:RxC"`` (see :func:`magnitude`).

    Returns:
        ``{name: kept}``.

    Raises:
        TypeError, ValueError: As in :func:`magnitude`.

    Example:
        >>> import ltfunc
        >>> p = ltfunc.get_params(ltfunc.models.lenet300())
        >>> ltfunc.prune.kept_counts(p, ltfunc.masks.ones(p), rate=0.5)["fc3.weight"]
        500
        >>> ltfunc.prune.kept_counts(p, ltfunc.masks.ones(p), rate=0.6, structure="2:4")["fc3.weight"]
        500
    """
    return _kept(_checked_magnitude("kept_counts", params, mask, rate, sparsity, scope, structure))


def _kept(mask: Mapping[str, Tensor]) -> dict[str, int]:
    """Surviving weights per layer."""
    return {k: int(v.sum()) for k, v in mask.items()}


def _generator(func: str, seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    check_rng(func, seed, generator, required=True)
    if generator is None:
        return torch.Generator().manual_seed(seed)  # type: ignore[arg-type]
    if generator.device.type != "cpu":
        raise ValueError(
            f"{func}: generator must be a CPU torch.Generator (the draws happen on the CPU), "
            f"got one on {generator.device}"
        )
    return generator


def _random_keep(mask: Mask, within: Mask, kept: Mapping[str, int], gen: torch.Generator) -> Mask:
    out = {}
    for n in mask:
        surv = torch.nonzero(within[n].reshape(-1).cpu(), as_tuple=False).reshape(-1)
        k = kept[n]
        if k > surv.numel():
            raise ValueError(
                f"random_like: layer {n!r} needs {k} surviving weights but only "
                f"{surv.numel()} are available in 'within'"
            )
        chosen = surv[torch.randperm(surv.numel(), generator=gen)[:k]]
        flat = torch.zeros(mask[n].numel(), dtype=torch.bool)
        flat[chosen] = True
        out[n] = flat.reshape(mask[n].shape).to(mask[n].device)
    return Mask(out)


def _random_structured(
    func: str, within: Mask, kept: Mapping[str, int], gen: torch.Generator, s: Structure
) -> Mask:
    """Random scores through the structured selection: ``kept[n]`` weights of ``within[n]`` per layer.

    A layer that keeps all of ``within``'s survivors is copied (it needs not fit ``s``).
    """
    out: dict[str, Tensor] = {}
    for n, alive in within.items():
        surv, k, shape = int(alive.sum()), kept[n], tuple(alive.shape)
        if k > surv:
            raise ValueError(
                f"{func}: layer {n!r} needs {k} surviving weights but only {surv} are available in 'within'"
            )
        if k == surv:
            out[n] = alive
            continue
        _check_fits(func, s, n, shape)
        _check_pattern(func, s, n, alive)
        if isinstance(s, NM):
            scores = torch.rand(shape, generator=gen, dtype=torch.float64).to(alive.device)
            candidates = alive & ~_nm_protected(scores, alive, s)
            floor = surv - int(candidates.sum())
            if k < floor:
                raise ValueError(
                    f"{func}: layer {n!r} must keep {k} weights, fewer than the {floor} "
                    f"that {s} keeps ({s.n} of every {s.m})"
                )
            out[n] = _magnitude_select(func, {n: scores}, {n: alive}, [([n], surv - k)], {n: candidates})[n]
        else:
            size = s.rows * s.cols
            if k % size:
                raise ValueError(
                    f"{func}: layer {n!r} must keep {k} weights, not a whole number of "
                    f"{s.rows}x{s.cols} blocks"
                )
            blocks = _block_alive(alive, s)
            scores = torch.rand(tuple(blocks.shape), generator=gen, dtype=torch.float64)
            chosen = _magnitude_select(func, {n: scores}, {n: blocks}, [([n], int(blocks.sum()) - k // size)])
            out[n] = _expand_blocks(chosen[n], shape, s).to(alive.device)
    return Mask(out)


def random(
    params: Mapping[str, Tensor],
    mask: Mask,
    *,
    rate: float | Rates | None = None,
    sparsity: float | Rates | None = None,
    scope: Scope = "layer",
    seed: int | None = None,
    generator: torch.Generator | None = None,
    structure: str | Structure | None = None,
) -> Mask:
    """Random pruning with exactly the per-layer counts :func:`magnitude` would give.

    The surviving weights of each layer are drawn uniformly from that layer's currently
    surviving weights (the LTH random-pruning baseline). With a ``structure`` the draw has
    the same structure: random scores go through :func:`magnitude`'s structured selection
    (N:M: ``N`` random survivors protected in every group, the rest of the count drawn among
    the others; blocks: whole random blocks).

    Args:
        params: Params pytree (used to compute the magnitude counts).
        mask: Current mask; not modified.
        rate, sparsity, scope, structure: As in :func:`magnitude`.
        seed: Integer seed (or pass ``generator``).
        generator: A CPU ``torch.Generator``.

    Returns:
        A new ``Mask``.

    Raises:
        TypeError, ValueError: As in :func:`magnitude`; also when neither/both of
            ``seed`` and ``generator`` are given.

    Example:
        >>> import ltfunc
        >>> p = ltfunc.get_params(ltfunc.models.lenet300())
        >>> m = ltfunc.prune.random(p, ltfunc.masks.ones(p), rate=0.2, seed=0)
        >>> ltfunc.masks.counts(m)["fc1.weight"].kept
        188160
        >>> m = ltfunc.prune.random(p, ltfunc.masks.ones(p), sparsity=0.5, seed=0, structure="2:4")
        >>> all(ltfunc.structured.satisfies(m, "2:4").values())
        True
    """
    gen = _generator("random", seed, generator)
    s = _parse("random", "structure", structure)
    kept = _kept(_checked_magnitude("random", params, mask, rate, sparsity, scope, s))
    if s is not None:
        return _random_structured("random", mask, kept, gen, s)
    return _random_keep(mask, mask, kept, gen)


def random_like(
    reference: Mask,
    *,
    within: Mask | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    structure: str | Structure | None = None,
) -> Mask:
    """A random mask with the same per-layer kept counts as ``reference``.

    Args:
        reference: Mask whose per-layer counts to copy (e.g. a winning ticket).
        within: Draw survivors only among the weights this mask keeps (default: all).
        seed: Integer seed (or pass ``generator``).
        generator: A CPU ``torch.Generator``.
        structure: ``None``, ``"N:M"`` or ``"block:RxC"``: draw a mask of that structure
            (as :func:`random`); a layer that keeps every weight of ``within`` is copied.

    Returns:
        A new ``Mask``.

    Raises:
        TypeError: If ``reference``/``within`` are not masks.
        ValueError: If ``within`` does not match ``reference`` or keeps too few weights; a
            structure that does not parse or fit a layer, or counts it cannot give (fewer
            than N of every M, not whole blocks).

    Example:
        >>> import ltfunc
        >>> ref = ltfunc.masks.from_dict({"w": [1, 0, 0, 1]})
        >>> int(ltfunc.prune.random_like(ref, seed=0)["w"].sum())
        2
        >>> ref = ltfunc.masks.from_dict({"w": [[1, 1, 0, 0], [1, 0, 0, 1]]})
        >>> r = ltfunc.prune.random_like(ref, seed=0, structure="1:2")
        >>> ltfunc.structured.satisfies(r, "1:2")
        {'w': True}
    """
    check_mask("random_like", "reference", reference)
    check_mask("random_like", "within", within, optional=True)
    s = _parse("random_like", "structure", structure)
    if within is None:
        within = Mask({k: torch.ones_like(v) for k, v in reference.items()})
    if list(within) != list(reference) or any(within[k].shape != reference[k].shape for k in reference):
        raise ValueError("random_like: within must have the same keys and shapes as reference")
    gen = _generator("random_like", seed, generator)
    if s is not None:
        return _random_structured("random_like", within, _kept(reference), gen, s)
    return _random_keep(reference, within, _kept(reference), gen)
