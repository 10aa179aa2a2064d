"""JAX interop, masks: ltfunc masks as numpy arrays and as jaxpruner-style mask pytrees.

Part of :mod:`ltfunc.interop.jax` (import the functions from there).

- :func:`mask_to_numpy` / :func:`mask_from_numpy`: ``{name: numpy bool array}`` and back;
  they need only numpy, never JAX.
- :func:`to_jaxpruner` / :func:`from_jaxpruner` follow jaxpruner's convention (a pytree over
  *all* parameters with ``None`` where a parameter is not pruned, ``uint8`` 0/1); they import
  JAX on first use.

Masks built here are validated (names and shapes against the params when given, 0/1 values)
and always copied from the arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._checks import check_choice, check_mask_fits
from ..masks import Mask
from ._jax_common import is_tracer, require_jax

__all__ = ["from_jaxpruner", "mask_from_numpy", "mask_to_numpy", "to_jaxpruner"]


def _to_numpy(func: str, v: Any, path: str) -> np.ndarray:
    if isinstance(v, np.ndarray):
        return v
    if isinstance(v, Tensor):
        return v.detach().cpu().numpy()
    if hasattr(v, "__array__") and hasattr(v, "dtype") and hasattr(v, "shape"):  # a JAX array
        if is_tracer(require_jax(), v):
            raise TypeError(f"{func}: {path} is a JAX tracer; convert outside jax.jit / jax.grad")
        return np.asarray(v)
    raise TypeError(f"{func}: {path} must be an array, got {type(v).__name__}")


def _build_mask(func: str, arrays: Any, params: Mapping[str, Any] | None, *, allow_none: bool) -> Mask:
    """Validated ``Mask`` from ``{name: bool or 0/1 array (or None)}``, ordered like ``params``."""
    if not isinstance(arrays, Mapping):
        raise TypeError(
            f"{func}: masks must be a mapping of parameter names to arrays, got {type(arrays).__name__}"
        )
    if params is not None and not isinstance(params, Mapping):
        raise TypeError(
            f"{func}: params must be a mapping of names to tensors/arrays, got {type(params).__name__}"
        )
    found: dict[str, np.ndarray] = {}
    for k, v in arrays.items():
        if not isinstance(k, str):
            raise TypeError(f"{func}: mask names must be str, got {k!r}")
        if v is None:
            if not allow_none:
                raise TypeError(
                    f"{func}: masks[{k!r}] is None; use from_jaxpruner for masks with None entries"
                )
            continue
        found[k] = _to_numpy(func, v, f"masks[{k!r}]")
    devices: dict[str, torch.device] = {}
    order = list(found)
    if params is not None:
        hint = " (packed jaxpruner masks, use_packed_masks=True, must be unpacked first)"
        check_mask_fits(func, "masks", found, params, hint)
        for k in found:
            if isinstance(params[k], Tensor):
                devices[k] = params[k].device
        order = [k for k in params if k in found]
    bools: dict[str, np.ndarray] = {}
    for k in order:
        a = found[k]
        if a.dtype == np.bool_:
            bools[k] = a.copy()
        elif np.issubdtype(a.dtype, np.integer):
            if a.size and not np.isin(a, (0, 1)).all():
                raise ValueError(f"{func}: masks[{k!r}] ({a.dtype}) holds values other than 0 and 1")
            bools[k] = a != 0
        else:
            raise TypeError(
                f"{func}: masks[{k!r}] has dtype {a.dtype}; mask arrays must be bool or 0/1 integers"
            )
    return Mask({k: torch.from_numpy(bools[k]).to(devices.get(k, "cpu")) for k in order})


def _check_mask_vs_params(func: str, mask: Any, params: Any) -> None:
    if not isinstance(mask, Mask):
        raise TypeError(f"{func}: mask must be an ltfunc Mask, got {type(mask).__name__}")
    if not isinstance(params, Mapping):
        raise TypeError(
            f"{func}: params must be a mapping of names to tensors/arrays, got {type(params).__name__}"
        )
    check_mask_fits(func, "mask", mask, params)


def mask_to_numpy(mask: Mask) -> dict[str, np.ndarray]:
    """A mask as a plain ``{name: numpy bool array}`` dict (copies; no JAX needed).

    Args:
        mask: An ltfunc ``Mask`` (on any device).

    Returns:
        ``{name: np.ndarray of dtype bool}`` in the mask's order.

    Raises:
        TypeError: If ``mask`` is not a ``Mask``.

    Example:
        >>> import ltfunc
        >>> from ltfunc.interop import jax as lj
        >>> lj.mask_to_numpy(ltfunc.masks.from_dict({"w": [1, 0]}))
        {'w': array([ True, False])}
    """
    if not isinstance(mask, Mask):
        raise TypeError(f"mask_to_numpy: mask must be an ltfunc Mask, got {type(mask).__name__}")
    return {k: v.detach().cpu().numpy().copy() for k, v in mask.items()}


def mask_from_numpy(arrays: Mapping[str, np.ndarray], params: Mapping[str, Any] | None = None) -> Mask:
    """Build a ``Mask`` from ``{name: numpy bool (or 0/1 integer) array}`` (no JAX needed).

    Args:
        arrays: The mask arrays.
        params: Optional params pytree (torch tensors or arrays). When given, every name must
            be a parameter with the same shape, the mask follows the params' order and each
            tensor is put on its parameter's device.

    Returns:
        A new ``Mask`` (copied; later changes to the arrays do not reach it).

    Raises:
        TypeError: If ``arrays`` is not a mapping, a value is not an array (``None`` is not
            allowed here) or has a float dtype.
        ValueError: Integer values other than 0/1, or names/shapes that do not match
            ``params`` (a mask for a different architecture).

    Example:
        >>> import numpy as np, ltfunc
        >>> from ltfunc.interop import jax as lj
        >>> ltfunc.masks.density(lj.mask_from_numpy({"w": np.array([1, 0, 1], dtype=np.uint8)}))
        0.6666666666666666
    """
    return _build_mask("mask_from_numpy", arrays, params, allow_none=False)


def to_jaxpruner(mask: Mask, params: Mapping[str, Any], *, dtype: str = "uint8") -> dict[str, Any]:
    """A mask in jaxpruner's convention: every parameter name, ``None`` where not pruned.

    jaxpruner keeps one mask per parameter in a pytree shaped like the params, with ``None``
    for parameters it does not prune and 0/1 ``uint8`` arrays (its ``MASK_DTYPE``) otherwise.

    Args:
        mask: An ltfunc ``Mask``.
        params: The params pytree the mask belongs to (torch tensors or JAX arrays); its keys
            and order define the result's.
        dtype: ``"uint8"`` (jaxpruner's default) or ``"bool"``.

    Returns:
        ``{name: jax.Array | None}`` over all of ``params``.

    Raises:
        ImportError: If JAX is not installed.
        TypeError: If ``mask`` is not a ``Mask`` or ``params`` not a mapping.
        ValueError: If mask keys are not in ``params`` or shapes differ; unknown ``dtype``.

    Example:
        >>> import ltfunc
        >>> from ltfunc.interop import jax as lj
        >>> p = ltfunc.get_params(ltfunc.models.lenet300())
        >>> jp = lj.to_jaxpruner(ltfunc.masks.ones(p), p)
        >>> jp["fc1.weight"].dtype.name, jp["fc1.bias"]
        ('uint8', None)
    """
    jnp = require_jax().numpy
    check_choice("to_jaxpruner", "dtype", dtype, ("uint8", "bool"))
    _check_mask_vs_params("to_jaxpruner", mask, params)
    target = jnp.uint8 if dtype == "uint8" else jnp.bool_
    return {
        k: (jnp.asarray(mask[k].detach().cpu().numpy(), dtype=target) if k in mask else None) for k in params
    }


def from_jaxpruner(masks: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> Mask:
    """Build an ltfunc ``Mask`` from a jaxpruner-style mask pytree.

    Args:
        masks: ``{name: array or None}``; ``None`` means "not pruned" and is dropped; arrays
            are bool or 0/1 integers (JAX or numpy). Packed masks must be unpacked first.
        params: Optional params pytree to check names/shapes against and to take the order
            and devices from (see :func:`mask_from_numpy`).

    Returns:
        A new ``Mask`` over the non-``None`` entries (copied from the arrays).

    Raises:
        ImportError: If JAX is not installed.
        TypeError: Non-mapping input, float arrays or non-array values.
        ValueError: Values other than 0/1, or a mismatch with ``params``.

    Example:
        >>> import ltfunc
        >>> from ltfunc.interop import jax as lj
        >>> p = ltfunc.get_params(ltfunc.models.lenet300())
        >>> m = ltfunc.prune.magnitude(p, ltfunc.masks.ones(p), sparsity=0.5)
        >>> lj.from_jaxpruner(lj.to_jaxpruner(m, p), p) == m
        True
    """
    require_jax()
    return _build_mask("from_jaxpruner", masks, params, allow_none=True)
