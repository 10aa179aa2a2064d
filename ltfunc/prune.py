"""Pure pruning functions: ``(params, mask, ...) -> new Mask``. Inputs are never modified.

Layers are classified from their tensors: 2-D weights are ``fc``, weights with 3 or more
dimensions are ``conv``, and the last ``fc`` tensor of the mask (in parameter order) is the
``output`` layer. ``Rates`` gives each class its own rate, plus per-parameter overrides.

Rounding: pruning a fraction ``r`` of ``n`` surviving weights removes exactly
``floor(r * n + 0.5)`` weights (round half up). A target sparsity ``s`` over ``N`` prunable
weights keeps exactly ``N - floor(s * N + 0.5)``. Ties in magnitude are broken
deterministically: among equal magnitudes, the weight that comes first (layer order, then
flat index) is removed first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from ._checks import check_choice, check_fraction, check_mask, check_rng
from .masks import Mask, check_compatible

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


def _removal_plan(mask: Mask, rates: Rates, is_target: bool, scope: str) -> list[tuple[list[str], int]]:
    """Groups of layers and how many surviving weights each group must lose."""
    kinds = layer_kinds(mask)
    groups: dict[str, tuple[float, list[str]]] = {}
    for name in mask:
        frac, group = rates.resolve_with_group(name, kinds[name])
        key = group if scope == "global" else f"layer:{name}"
        groups.setdefault(key, (frac, []))[1].append(name)
    plan = []
    for frac, names in groups.values():
        kept = sum(int(mask[n].sum()) for n in names)
        if is_target:
            total = sum(mask[n].numel() for n in names)
            remove = max(0, kept - (total - _round_half_up(frac * total)))
        else:
            remove = _round_half_up(frac * kept)
        plan.append((names, remove))
    return plan


def _magnitude_select(
    func: str, params: Mapping[str, Tensor], mask: Mask, plan: list[tuple[list[str], int]]
) -> Mask:
    # Contiguous copies: a clone of a non-contiguous mask keeps its strides, and writing
    # through ``reshape(-1)`` of such a tensor would silently go to a temporary copy.
    new = {k: v.clone(memory_format=torch.contiguous_format) for k, v in mask.items()}
    for names, remove in plan:
        if remove == 0:
            continue
        scores, owners, positions = [], [], []
        for i, n in enumerate(names):
            idx = torch.nonzero(mask[n].reshape(-1), as_tuple=False).reshape(-1)
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
    return Mask(new)


def magnitude(
    params: Mapping[str, Tensor],
    mask: Mask,
    *,
    rate: float | Rates | None = None,
    sparsity: float | Rates | None = None,
    scope: Scope = "layer",
) -> Mask:
    """Prune the lowest-magnitude surviving weights; return a new mask.

    Weights already pruned stay pruned. Give exactly one of ``rate`` (fraction of the
    *surviving* weights to remove: Frankle & Carbin's 20% of what is left per round) or
    ``sparsity`` (target fraction of *all* prunable weights of a group; a target at or below
    the current sparsity is a no-op, never a regrowth).

    Args:
        params: Params pytree (only the masked keys are read).
        mask: The current mask; not modified.
        rate: A fraction in [0, 1) or a :class:`Rates`.
        sparsity: A fraction in [0, 1) or a :class:`Rates`.
        scope: ``"layer"`` (each layer by its own rate) or ``"global"`` (one threshold across
            the layers of a group: conv, fc, output, each override alone).

    Returns:
        A new ``Mask``; exactly ``floor(r * n + 0.5)`` weights removed per layer/group.

    Raises:
        TypeError: Mask/params of the wrong type, non-floating params, bad rate type.
        ValueError: Mismatched mask, fractions outside [0, 1), unknown override names,
            unknown scope, both/neither of rate and sparsity, NaN weights.

    Example:
        >>> import ltfunc
        >>> p = ltfunc.get_params(ltfunc.models.lenet300())
        >>> m = ltfunc.prune.magnitude(p, ltfunc.masks.ones(p), rate=ltfunc.Rates(fc=0.2, output=0.1))
        >>> ltfunc.masks.counts(m)["fc3.weight"]
        LayerCount(kept=900, total=1000)
    """
    return _checked_magnitude("magnitude", params, mask, rate, sparsity, scope)


def _magnitude(
    params: Mapping[str, Tensor],
    mask: Mask,
    *,
    rate: float | Rates | None = None,
    sparsity: float | Rates | None = None,
    scope: Scope = "layer",
) -> Mask:
    """:func:`magnitude` without the argument checks, for callers that have validated them.

    Only NaN/inf among the surviving weights still raise (a property of the values).
    """
    is_target = sparsity is not None
    frac = sparsity if is_target else rate
    rates = frac if isinstance(frac, Rates) else Rates(default=float(frac))  # type: ignore[arg-type]
    return _magnitude_select("magnitude", params, mask, _removal_plan(mask, rates, is_target, scope))


def _checked_magnitude(
    func: str,
    params: Mapping[str, Tensor],
    mask: Mask,
    rate: float | Rates | None,
    sparsity: float | Rates | None,
    scope: str,
) -> Mask:
    rates, is_target = _validate(func, params, mask, rate, sparsity, scope)
    return _magnitude_select(func, params, mask, _removal_plan(mask, rates, is_target, scope))


def kept_counts(
    params: Mapping[str, Tensor],
    mask: Mask,
    *,
    rate: float | Rates | None = None,
    sparsity: float | Rates | None = None,
    scope: Scope = "layer",
) -> dict[str, int]:
    """Per-layer surviving counts that :func:`magnitude` would leave (same arguments).

    Args:
        params: Params pytree (only the masked keys are read).
        mask: The current mask; not modified.
        rate: A fraction in [0, 1) or a :class:`Rates`.
        sparsity: A fraction in [0, 1) or a :class:`Rates`.
        scope: ``"layer"`` or ``"global"``.

    Returns:
        ``{name: kept}``.

    Raises:
        TypeError, ValueError: As in :func:`magnitude`.

    Example:
        >>> import ltfunc
        >>> p = ltfunc.get_params(ltfunc.models.lenet300())
        >>> ltfunc.prune.kept_counts(p, ltfunc.masks.ones(p), rate=0.5)["fc3.weight"]
        500
    """
    return _kept(_checked_magnitude("kept_counts", params, mask, rate, sparsity, scope))


def _kept(mask: Mask) -> dict[str, int]:
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


def random(
    params: Mapping[str, Tensor],
    mask: Mask,
    *,
    rate: float | Rates | None = None,
    sparsity: float | Rates | None = None,
    scope: Scope = "layer",
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> Mask:
    """Random pruning with exactly the per-layer counts :func:`magnitude` would give.

    The surviving weights of each layer are drawn uniformly from that layer's currently
    surviving weights (the LTH random-pruning baseline).

    Args:
        params: Params pytree (used to compute the magnitude counts).
        mask: Current mask; not modified.
        rate, sparsity, scope: As in :func:`magnitude`.
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
    """
    gen = _generator("random", seed, generator)
    kept = _kept(_checked_magnitude("random", params, mask, rate, sparsity, scope))
    return _random_keep(mask, mask, kept, gen)


def random_like(
    reference: Mask,
    *,
    within: Mask | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> Mask:
    """A random mask with the same per-layer kept counts as ``reference``.

    Args:
        reference: Mask whose per-layer counts to copy (e.g. a winning ticket).
        within: Draw survivors only among the weights this mask keeps (default: all).
        seed: Integer seed (or pass ``generator``).
        generator: A CPU ``torch.Generator``.

    Returns:
        A new ``Mask``.

    Raises:
        TypeError: If ``reference``/``within`` are not masks.
        ValueError: If ``within`` does not match ``reference`` or keeps too few weights.

    Example:
        >>> import ltfunc
        >>> ref = ltfunc.masks.from_dict({"w": [1, 0, 0, 1]})
        >>> int(ltfunc.prune.random_like(ref, seed=0)["w"].sum())
        2
    """
    check_mask("random_like", "reference", reference)
    check_mask("random_like", "within", within, optional=True)
    if within is None:
        within = Mask({k: torch.ones_like(v) for k, v in reference.items()})
    if list(within) != list(reference) or any(within[k].shape != reference[k].shape for k in reference):
        raise ValueError("random_like: within must have the same keys and shapes as reference")
    gen = _generator("random_like", seed, generator)
    return _random_keep(reference, within, _kept(reference), gen)
