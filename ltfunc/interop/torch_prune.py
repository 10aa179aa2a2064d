"""Interop with ``torch.nn.utils.prune``: pruned modules <-> ``(params, Mask)`` pytrees.

``torch.nn.utils.prune`` keeps a pruned parameter ``weight`` as a parameter ``weight_orig``, a
buffer ``weight_mask`` (same dtype as the weight, 0/1) and a forward pre-hook that recomputes
``module.weight = weight_orig * weight_mask`` before every forward. ltfunc keeps the same
information as a params pytree keyed by the *original* names (``"fc1.weight"``) and an
immutable bool :class:`~ltfunc.masks.Mask`. This module converts between the two:

- :func:`from_pruned` reads a pruned module into ``(params, mask)``;
- :func:`apply_mask` prunes a module with an ltfunc mask (``prune.custom_from_mask``);
- :func:`make_permanent` removes the reparametrization (``prune.remove`` everywhere);
- :func:`pruned_names` lists the pruned parameters.

Functions that change a module work on a deep copy unless ``inplace=True``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import NamedTuple

from torch import Tensor, nn
from torch.nn.utils import prune

from .._checks import check_bool, check_mask, check_mask_fits, check_module
from .._types import Params
from ..masks import Mask

__all__ = ["apply_mask", "from_pruned", "make_permanent", "pruned_names"]


class _Pruned(NamedTuple):
    """One pruned parameter: its owner, local name, original tensor and 0/1 mask buffer."""

    module: nn.Module
    local: str
    orig: Tensor
    mask: Tensor


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _pruning_hooks(module: nn.Module) -> list[prune.BasePruningMethod]:
    return [h for h in module._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]


def _pruned(func: str, module: nn.Module) -> dict[str, _Pruned]:
    """``{original name: _Pruned}`` for every parameter pruned with ``torch.nn.utils.prune``."""
    found: dict[str, _Pruned] = {}
    for prefix, sub in module.named_modules():
        for hook in _pruning_hooks(sub):
            local = hook._tensor_name
            orig = sub._parameters.get(f"{local}_orig")
            mask = sub._buffers.get(f"{local}_mask")
            if orig is None or mask is None:
                raise ValueError(
                    f"{func}: {_join(prefix, local)!r} has a pruning hook but no "
                    f"{local}_orig parameter / {local}_mask buffer; the module is in an "
                    "inconsistent torch.nn.utils.prune state"
                )
            found[_join(prefix, local)] = _Pruned(sub, local, orig, mask)
    return found


def _require_pruned(func: str, module: nn.Module) -> dict[str, _Pruned]:
    found = _pruned(func, module)
    if not found:
        raise ValueError(
            f"{func}: module {type(module).__name__} has no parameters pruned with "
            "torch.nn.utils.prune (no <name>_orig parameter, <name>_mask buffer and pruning "
            "forward pre-hook on any submodule)"
        )
    return found


def _copy(module: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works on pruned modules.

    The pruning hook stores ``orig * mask`` as a plain, non-leaf attribute (``module.weight``),
    which ``deepcopy`` refuses; the copy gets a detached clone of it instead (the hook
    recomputes it on the next forward anyway).
    """
    memo: dict[int, object] = {}
    for _, sub in module.named_modules():
        for hook in _pruning_hooks(sub):
            value = sub.__dict__.get(hook._tensor_name)
            if isinstance(value, Tensor):
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(module, memo)


def _parameters(module: nn.Module, pruned: Mapping[str, _Pruned]) -> dict[str, tuple[nn.Module, str, Tensor]]:
    """``{original name: (owner submodule, local name, tensor)}`` for every parameter.

    A pruned ``<name>_orig`` is listed as ``<name>``. ``torch.nn.utils.prune`` re-registers it
    at the end of its submodule's parameters; every ``torch.nn`` layer registers ``weight``
    first, so moving ``weight`` to the front restores the original ``named_parameters()``
    order for them.
    """
    out: dict[str, tuple[nn.Module, str, Tensor]] = {}
    for prefix, sub in module.named_modules():
        local: dict[str, tuple[nn.Module, str, Tensor]] = {}
        for n, p in sub._parameters.items():
            if p is None:
                continue
            base = n.removesuffix("_orig")
            name = base if n != base and _join(prefix, base) in pruned else n
            local[name] = (sub, name, p)
        for name in sorted(local, key=lambda n: n != "weight"):  # stable: only moves "weight"
            out[_join(prefix, name)] = local[name]
    return out


def pruned_names(module: nn.Module) -> list[str]:
    """Original names of the parameters pruned with ``torch.nn.utils.prune``.

    Args:
        module: Any module; it may have no pruning at all.

    Returns:
        Names such as ``"fc1.weight"`` (not ``"fc1.weight_orig"``), in module order.

    Raises:
        TypeError: If ``module`` is not an ``nn.Module``.
        ValueError: If a pruning hook has lost its ``_orig``/``_mask`` tensors.

    Example:
        >>> import ltfunc
        >>> from torch.nn.utils import prune
        >>> from ltfunc.interop import torch_prune
        >>> m = ltfunc.models.lenet300()
        >>> _ = prune.l1_unstructured(m.fc2, "weight", amount=0.5)
        >>> torch_prune.pruned_names(m)
        ['fc2.weight']
    """
    check_module("pruned_names", "module", module)
    found = _pruned("pruned_names", module)
    return [n for n in _parameters(module, found) if n in found]


def from_pruned(module: nn.Module, *, masked: bool = True) -> tuple[Params, Mask]:
    """Read a module pruned with ``torch.nn.utils.prune`` into ``(params, mask)``.

    The pruned module's state is read directly from ``<name>_orig`` and ``<name>_mask``, not
    from the attribute ``module.<name>`` (which the pruning hook refreshes only on the next
    forward, so it is stale after an optimizer step on ``<name>_orig``).

    Args:
        module: A module with at least one parameter pruned by ``torch.nn.utils.prune``
            (any method: ``l1_unstructured``, ``global_unstructured``, ``custom_from_mask``,
            repeated pruning, ...). It is not modified.
        masked: If True (default), a pruned parameter holds ``orig * mask`` (exactly what the
            module's forward uses, and what ltfunc keeps: pruned weights are 0). If False it
            holds ``<name>_orig`` unchanged (the values under the mask are kept, e.g. to
            study them or to re-mask differently).

    Returns:
        ``(params, mask)``: ``params`` has every parameter of the module under its original
        name (``"fc1.weight"``, never ``"fc1.weight_orig"``) as detached clones, in the
        original order (``weight`` before ``bias``); ``mask`` has one bool tensor per pruned
        parameter (``True`` = kept), in the same order.

    Raises:
        TypeError: If ``module`` is not an ``nn.Module``.
        ValueError: If no parameter of ``module`` is pruned (names the module's type), or a
            mask buffer holds values other than 0 and 1.

    Example:
        >>> import torch, ltfunc
        >>> from torch.nn.utils import prune
        >>> from ltfunc.interop import torch_prune
        >>> m = ltfunc.models.lenet300(seed=0)
        >>> _ = prune.l1_unstructured(m.fc1, "weight", amount=0.75)
        >>> params, mask = torch_prune.from_pruned(m)
        >>> list(mask), ltfunc.masks.density(mask)
        (['fc1.weight'], 0.25)
        >>> x = torch.randn(2, 1, 28, 28)
        >>> torch.allclose(ltfunc.call(ltfunc.models.lenet300(), params, x), m(x))
        True
    """
    check_module("from_pruned", "module", module)
    check_bool("from_pruned", "masked", masked)
    found = _require_pruned("from_pruned", module)
    bool_masks: dict[str, Tensor] = {}
    for name, entry in found.items():
        m = entry.mask.detach()
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError(
                f"from_pruned: {name}_mask holds values other than 0 and 1; only binary "
                "pruning masks can be read as an ltfunc Mask"
            )
        bool_masks[name] = m != 0
    params: Params = {}
    for name, (_, _, tensor) in _parameters(module, found).items():
        value = tensor.detach()
        if masked and name in bool_masks:
            value = value * bool_masks[name].to(value.dtype)
        params[name] = value.clone()
    mask = Mask({n: bool_masks[n].clone() for n in params if n in bool_masks})
    return params, mask


def apply_mask(module: nn.Module, mask: Mask, *, inplace: bool = False) -> nn.Module:
    """Prune ``module`` with an ltfunc mask through ``prune.custom_from_mask``.

    Each masked parameter ``name`` gets the usual ``name_orig`` / ``name_mask`` / pre-hook
    reparametrization, so the result works with every ``torch.nn.utils.prune`` tool. A
    parameter that is already pruned keeps its old mask *and* the new one (torch combines
    them in a ``PruningContainer``: a weight survives only if both keep it).

    Args:
        module: The module to prune.
        mask: An ltfunc ``Mask`` whose keys are (original) parameter names of ``module``.
        inplace: If False (default) a deep copy is pruned and ``module`` is left unchanged;
            if True ``module`` itself is pruned, like ``torch.nn.utils.prune`` does.

    Returns:
        The pruned module (``module`` itself when ``inplace=True``).

    Raises:
        TypeError: If ``module`` is not a module or ``mask`` not a ``Mask``.
        ValueError: If the mask names a parameter ``module`` does not have, or a shape
            differs (a mask for a different architecture); nothing is changed then.

    Example:
        >>> import torch, ltfunc
        >>> from ltfunc.interop import torch_prune
        >>> m = ltfunc.models.lenet300(seed=0)
        >>> params = ltfunc.get_params(m)
        >>> mask = ltfunc.prune.magnitude(params, ltfunc.masks.ones(params), sparsity=0.8)
        >>> pruned = torch_prune.apply_mask(m, mask)
        >>> x = torch.randn(2, 1, 28, 28)
        >>> torch.allclose(pruned(x), ltfunc.call(m, ltfunc.masks.apply(mask, params), x))
        True
        >>> torch_prune.pruned_names(m)  # the original is untouched
        []
    """
    check_module("apply_mask", "module", module)
    check_mask("apply_mask", "mask", mask)
    check_bool("apply_mask", "inplace", inplace)
    targets = _parameters(module, _pruned("apply_mask", module))
    check_mask_fits("apply_mask", "mask", mask, {k: t[2] for k, t in targets.items()})
    out = module if inplace else _copy(module)
    out_targets = _parameters(out, _pruned("apply_mask", out))
    for k, m in mask.items():
        owner, local, tensor = out_targets[k]
        prune.custom_from_mask(owner, local, mask=m.to(tensor.device))
    return out


def make_permanent(module: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Make the pruning permanent: ``prune.remove`` on every pruned parameter.

    Afterwards each pruned parameter is a plain ``nn.Parameter`` again, holding
    ``orig * mask`` (pruned weights are 0 but no longer forced to stay 0), and the
    ``_orig``/``_mask`` tensors and hooks are gone: ``state_dict()`` has the original keys
    (``weight`` is moved back before the other parameters of its submodule, where every
    ``torch.nn`` layer registers it; ``prune.remove`` alone would leave it last).

    Args:
        module: A module with at least one parameter pruned by ``torch.nn.utils.prune``.
        inplace: If False (default) a deep copy is changed and returned; if True ``module``
            itself is changed.

    Returns:
        The un-reparametrized module.

    Raises:
        TypeError: If ``module`` is not an ``nn.Module``.
        ValueError: If no parameter of ``module`` is pruned (names the module's type).

    Example:
        >>> import ltfunc
        >>> from torch.nn.utils import prune
        >>> from ltfunc.interop import torch_prune
        >>> m = ltfunc.models.lenet300()
        >>> _ = prune.l1_unstructured(m.fc1, "weight", amount=0.5)
        >>> fixed = torch_prune.make_permanent(m)
        >>> "fc1.weight" in fixed.state_dict(), float((fixed.fc1.weight == 0).float().mean())
        (True, 0.5)
    """
    check_module("make_permanent", "module", module)
    check_bool("make_permanent", "inplace", inplace)
    _require_pruned("make_permanent", module)
    out = module if inplace else _copy(module)
    for entry in _pruned("make_permanent", out).values():
        prune.remove(entry.module, entry.local)
        # prune.remove re-registers the parameter last; put "weight" back in front.
        params = entry.module._parameters
        for n in sorted(params, key=lambda n: n != "weight"):
            params[n] = params.pop(n)
    return out
