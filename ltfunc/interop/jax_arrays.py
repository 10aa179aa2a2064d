"""JAX interop, arrays: pytrees of torch tensors to JAX arrays and back through DLPack.

Part of :mod:`ltfunc.interop.jax` (import the functions from there). JAX is imported on first
use, not when this module is imported.

**Conversion** (:func:`to_jax`, :func:`from_jax`) walks dicts, NamedTuples (optimizer states),
tuples and lists, which ``jax.tree_util`` understands natively; a :class:`~ltfunc.masks.Mask`
becomes a plain ``dict`` of bool arrays and ``from_jax(..., as_mask=True)`` rebuilds one.

- *Zero-copy*: with ``copy=False`` (default) every tensor is handed over through DLPack, so on
  the CPU the JAX array and the torch tensor share memory (:func:`shares_memory` tells). JAX
  itself copies a buffer it cannot alias: on the CPU, one whose address is not 64-byte
  aligned, e.g. a view that starts inside a larger tensor (such as the per-parameter views
  into one flat buffer that :func:`ltfunc.step.make_train_step` returns; fresh tensors and
  ``ltfunc.snapshot`` copies are aligned). Shared memory means a later in-place torch
  operation on the tensor changes the "immutable" JAX array; ltfunc never mutates tensors in
  place, but pass ``copy=True`` when your code does.
- *bool*: handed over directly when the installed JAX accepts bool DLPack tensors (zero-copy,
  checked once with ``jax.dlpack.is_supported_dtype``); otherwise through a zero-copy
  ``uint8`` view and one ``astype(bool)`` copy in JAX.
- *64-bit*: with ``jax_enable_x64`` off (JAX's default) JAX would silently turn ``float64`` into
  ``float32`` and ``int64`` into ``int32``. :func:`to_jax` refuses instead (``TypeError``)
  unless you pass ``downcast=True`` (float64/complex128 lose precision; int64/uint64 are
  range-checked, so their downcast is exact) or enable x64
  (``jax.config.update("jax_enable_x64", True)``), in which case they convert unchanged.
- *Unsupported*: non-contiguous tensors (``ValueError`` unless ``copy=True``), quantized and
  sparse tensors, and dtypes JAX has no DLPack type for (e.g. ``torch.complex32``) raise
  ``TypeError``; every message names the offending leaf's path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from .._checks import check_bool
from ._jax_common import is_tracer, require_jax
from .jax_masks import _build_mask

__all__ = ["from_jax", "shares_memory", "to_jax"]


# JAX capabilities ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _bool_dlpack_supported() -> bool:
    """Whether this JAX accepts bool tensors through DLPack (checked once)."""
    jax = require_jax()
    check = getattr(getattr(jax, "dlpack", None), "is_supported_dtype", None)
    if check is not None:
        return bool(check(jax.numpy.bool_))
    try:
        jax.numpy.from_dlpack(torch.zeros(1, dtype=torch.bool))
    except Exception:
        return False
    return True


def _x64_enabled(jax: Any) -> bool:
    return bool(jax.config.read("jax_enable_x64"))


# Tree walking -------------------------------------------------------------------------------
def _is_namedtuple(x: object) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _walk(tree: Any, leaf: Callable[[Any, str], Any], path: str = "tree") -> Any:
    """Rebuild ``tree`` with ``leaf(x, path)`` applied to every non-container leaf.

    Masks and other mappings become plain dicts, NamedTuples keep their type, tuples and
    lists keep theirs; ``None`` and Python scalars are left as they are.
    """
    if isinstance(tree, Mapping):  # includes Mask
        return {k: _walk(v, leaf, f"{path}[{k!r}]") for k, v in tree.items()}
    if _is_namedtuple(tree):
        return type(tree)(*(_walk(v, leaf, f"{path}.{f}") for f, v in zip(tree._fields, tree, strict=True)))
    if isinstance(tree, (tuple, list)):
        return type(tree)(_walk(v, leaf, f"{path}[{i}]") for i, v in enumerate(tree))
    if tree is None or isinstance(tree, (bool, int, float, complex, str)):
        return tree
    return leaf(tree, path)


# torch -> JAX ---------------------------------------------------------------------------------
_DOWNCAST: dict[torch.dtype, torch.dtype] = {
    torch.float64: torch.float32,
    torch.complex128: torch.complex64,
    torch.int64: torch.int32,
    torch.uint64: torch.uint32,
}
_SUPPORTED: tuple[torch.dtype, ...] = (
    torch.bool,
    torch.uint8,
    torch.uint16,
    torch.uint32,
    torch.uint64,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.complex64,
    torch.complex128,
    *(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n)),
)
"""torch dtypes that :func:`to_jax` converts (64-bit ones only with x64 or ``downcast``)."""


def _downcast(func: str, t: Tensor, path: str) -> Tensor:
    target = _DOWNCAST[t.dtype]
    if not target.is_floating_point and not target.is_complex and t.numel():
        info = torch.iinfo(target)
        lo, hi = int(t.min()), int(t.max())
        if lo < info.min or hi > info.max:
            raise ValueError(
                f"{func}: {path} ({t.dtype}) holds values in [{lo}, {hi}] that do not fit "
                f"{target}; enable jax_enable_x64 to convert it exactly"
            )
    return t.to(target)


def _check_tensor(func: str, t: Tensor, path: str, *, copy: bool, downcast: bool, x64: bool) -> None:
    """Every reason a tensor cannot go to JAX, raised before any conversion work."""
    if t.is_quantized or t.dtype not in _SUPPORTED:
        raise TypeError(
            f"{func}: {path} has dtype {t.dtype}, which JAX cannot take through DLPack; "
            f"supported: {', '.join(str(d) for d in _SUPPORTED)}"
        )
    if t.layout != torch.strided:
        raise TypeError(f"{func}: {path} has layout {t.layout}; only dense (strided) tensors are supported")
    if t.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{func}: {path} is on {t.device}; only CPU and CUDA tensors can go to JAX")
    if t.dtype in _DOWNCAST and not x64 and not downcast:
        raise TypeError(
            f"{func}: {path} has dtype {t.dtype} but jax_enable_x64 is off, so JAX would "
            f"silently turn it into {_DOWNCAST[t.dtype]}; pass downcast=True to convert it "
            'explicitly, or enable 64-bit JAX with jax.config.update("jax_enable_x64", True)'
        )
    if not copy and not t.is_contiguous():
        raise ValueError(
            f"{func}: {path} is not contiguous (shape {tuple(t.shape)}, strides {t.stride()}), "
            "so it cannot be shared zero-copy; call .contiguous() on it or pass copy=True"
        )


def _tensor_to_jax(func: str, t: Tensor, path: str, *, copy: bool, downcast: bool, x64: bool) -> Any:
    jnp = require_jax().numpy
    t = t.detach()
    if t.dtype in _DOWNCAST and not x64:
        t = _downcast(func, t, path)  # a new tensor: the copy the downcast needs
    elif copy:
        t = t.clone(memory_format=torch.contiguous_format)
    if t.dtype == torch.bool and not _bool_dlpack_supported():
        return jnp.from_dlpack(t.view(torch.uint8)).astype(jnp.bool_)
    try:
        return jnp.from_dlpack(t)
    except Exception as exc:  # backend-specific errors (e.g. CUDA tensor, CPU-only JAX)
        raise ValueError(f"{func}: JAX could not import {path} ({t.dtype} on {t.device}): {exc}") from exc


def to_jax(tree: Any, *, copy: bool = False, downcast: bool = False) -> Any:
    """Convert a pytree of torch tensors to JAX arrays through DLPack, keeping its structure.

    Args:
        tree: Tensors nested in dicts, NamedTuples (optimizer states), tuples and lists; an
            ltfunc ``Mask`` (anywhere in the tree) becomes a plain dict of bool arrays.
            ``None`` and Python scalars are kept; JAX arrays already in the tree pass through.
        copy: If False (default), share memory with the tensors where JAX can (see the
            module docstring); if True, hand JAX fresh contiguous copies.
        downcast: With ``jax_enable_x64`` off, convert float64/complex128 to 32-bit (lossy)
            and int64/uint64 to 32-bit (range-checked) instead of raising. Ignored when x64
            is on.

    Returns:
        The same structure with ``jax.Array`` leaves on the matching JAX device (CPU for CPU
        tensors).

    Raises:
        ImportError: If JAX is not installed (names the ``ltfunc[jax]`` extra).
        TypeError: For unsupported leaves (names the path): an unknown leaf type, quantized,
            sparse or non-DLPack dtypes (e.g. ``torch.complex32``), 64-bit dtypes with x64 off
            and ``downcast=False``.
        ValueError: For non-contiguous tensors with ``copy=False``, tensors on devices JAX
            cannot import, or int64 values that do not fit int32 when downcasting.

    Example:
        >>> import torch, ltfunc
        >>> from ltfunc.interop import jax as lj
        >>> t = torch.arange(3.0)
        >>> a = lj.to_jax({"w": t, "mask": ltfunc.masks.from_dict({"w": [1, 0, 1]})})
        >>> a["w"].tolist(), a["mask"]["w"].dtype.name, lj.shares_memory(t, a["w"])
        ([0.0, 1.0, 2.0], 'bool', True)
    """
    jax = require_jax()
    check_bool("to_jax", "copy", copy)
    check_bool("to_jax", "downcast", downcast)
    x64 = _x64_enabled(jax)

    def check(x: Any, path: str) -> Any:
        if isinstance(x, Tensor):
            _check_tensor("to_jax", x, path, copy=copy, downcast=downcast, x64=x64)
        elif not isinstance(x, jax.Array):
            raise TypeError(
                f"to_jax: {path} is a {type(x).__name__}; leaves must be torch tensors (or "
                "None / Python scalars) inside dicts, NamedTuples, tuples and lists"
            )
        return x

    _walk(tree, check)  # validate everything before converting anything

    def convert(x: Any, path: str) -> Any:
        if isinstance(x, Tensor):
            return _tensor_to_jax("to_jax", x, path, copy=copy, downcast=downcast, x64=x64)
        return x

    return _walk(tree, convert)


# JAX -> torch ---------------------------------------------------------------------------------
def _array_to_torch(func: str, a: Any, path: str, *, copy: bool) -> Tensor:
    jnp = require_jax().numpy
    try:
        if a.dtype == jnp.bool_ and not _bool_dlpack_supported():
            t = torch.from_dlpack(a.astype(jnp.uint8)).bool()
        else:
            t = torch.from_dlpack(a)
    except Exception as exc:
        raise ValueError(f"{func}: torch could not import {path} ({a.dtype}): {exc}") from exc
    return t.clone() if copy else t


def from_jax(tree: Any, *, copy: bool = False, as_mask: bool = False) -> Any:
    """Convert a pytree of JAX arrays back to torch tensors through DLPack.

    Args:
        tree: JAX arrays nested in dicts, NamedTuples, tuples and lists (e.g. what
            :func:`to_jax` or a JAX training loop returns). ``None``, Python scalars and
            torch tensors already in the tree pass through.
        copy: If False (default) the tensors share memory with the JAX arrays where DLPack
            allows (CPU: always); do not modify them in place then, JAX assumes its arrays
            never change. If True they are independent copies.
        as_mask: If True, ``tree`` must be a flat mapping ``{name: bool or 0/1 array}``
            (``None`` entries, jaxpruner's "not pruned", are dropped) and an ltfunc ``Mask``
            is returned (always copied; see :func:`from_jaxpruner`).

    Returns:
        The same structure with torch tensors (dicts stay dicts), or a ``Mask``.

    Raises:
        ImportError: If JAX is not installed.
        TypeError: For leaves that are neither arrays nor scalars, for tracers (convert
            outside ``jax.jit``), and, with ``as_mask``, for non-mapping trees or float arrays.
        ValueError: If torch cannot import an array, or (``as_mask``) 0/1 values are violated.

    Example:
        >>> import torch, ltfunc
        >>> from ltfunc.interop import jax as lj
        >>> m = ltfunc.masks.from_dict({"w": [1, 0]})
        >>> lj.from_jax(lj.to_jax(m), as_mask=True) == m
        True
        >>> lj.from_jax(lj.to_jax({"w": torch.ones(2)}))
        {'w': tensor([1., 1.])}
    """
    jax = require_jax()
    check_bool("from_jax", "copy", copy)
    check_bool("from_jax", "as_mask", as_mask)
    if as_mask:
        return _build_mask("from_jax", tree, None, allow_none=True)

    def check(x: Any, path: str) -> Any:
        if is_tracer(jax, x):
            raise TypeError(f"from_jax: {path} is a JAX tracer; convert outside jax.jit / jax.grad")
        if not isinstance(x, (jax.Array, Tensor)):
            raise TypeError(
                f"from_jax: {path} is a {type(x).__name__}; leaves must be JAX arrays (or None / "
                "Python scalars) inside dicts, NamedTuples, tuples and lists"
            )
        return x

    _walk(tree, check)

    def convert(x: Any, path: str) -> Any:
        return x if isinstance(x, Tensor) else _array_to_torch("from_jax", x, path, copy=copy)

    return _walk(tree, convert)


def shares_memory(tensor: Tensor, array: Any) -> bool:
    """Whether a torch tensor and a JAX array start at the same memory (a zero-copy hand-over).

    Args:
        tensor: A torch tensor.
        array: A single-device JAX array.

    Returns:
        True when both buffers start at the same address on the same kind of device.

    Raises:
        ImportError: If JAX is not installed.
        TypeError: If the arguments are not a tensor and a JAX array.

    Example:
        >>> import torch
        >>> from ltfunc.interop import jax as lj
        >>> t = torch.ones(4)
        >>> lj.shares_memory(t, lj.to_jax(t)), lj.shares_memory(t, lj.to_jax(t, copy=True))
        (True, False)
    """
    jax = require_jax()
    if not isinstance(tensor, Tensor):
        raise TypeError(f"shares_memory: tensor must be a torch.Tensor, got {type(tensor).__name__}")
    if not isinstance(array, jax.Array):
        raise TypeError(f"shares_memory: array must be a jax.Array, got {type(array).__name__}")
    kinds = {d.platform for d in array.devices()}
    same_kind = kinds == {"cpu"} if tensor.device.type == "cpu" else "cpu" not in kinds
    return same_kind and tensor.data_ptr() == array.unsafe_buffer_pointer()
