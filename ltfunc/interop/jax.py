"""JAX interop: pytrees to JAX arrays and back via DLPack, a JAX forward/step, jaxpruner masks.

Needs the optional extra ``pip install 'ltfunc[jax]'`` (JAX's CPU wheel from pip is enough).
JAX is imported lazily, inside the functions that need it, so ``import ltfunc`` and
``import ltfunc.interop.jax`` work without it; calling a JAX function then raises an
``ImportError`` that names the extra. :func:`mask_to_numpy` / :func:`mask_from_numpy` need only
numpy.

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

**Models**: :func:`apply` is a pure JAX forward pass of the built-in LeNet-300-100 and Conv-2
over the exported params pytree (PyTorch layouts: NCHW inputs, OIHW kernels, Linear weights
``(out, in)``); :func:`make_train_step` is a masked step with any optax optimizer, and
:func:`evaluate` returns ``(loss, accuracy)`` like :func:`ltfunc.step.evaluate`.

**Masks**: :func:`to_jaxpruner` / :func:`from_jaxpruner` follow jaxpruner's convention (a
pytree over *all* parameters with ``None`` where a parameter is not pruned, ``uint8`` 0/1).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._errors import check_choice, check_fits
from ..masks import Mask

__all__ = [
    "ARCHITECTURES",
    "apply",
    "cross_entropy",
    "evaluate",
    "from_jax",
    "from_jaxpruner",
    "infer_arch",
    "make_train_step",
    "mask_from_numpy",
    "mask_params",
    "mask_to_numpy",
    "predict",
    "shares_memory",
    "to_jax",
    "to_jaxpruner",
]

INSTALL_HINT = "pip install 'ltfunc[jax]'"


# JAX import --------------------------------------------------------------------------------
def _jax() -> Any:
    """Import and return the real ``jax`` package, or raise an ImportError naming the extra."""
    try:
        jax = importlib.import_module("jax")
        importlib.import_module("jax.numpy")
    except ImportError as exc:
        raise ImportError(
            f"ltfunc.interop.jax needs JAX, which is not installed: {INSTALL_HINT} "
            f"(or pip install jax) ({exc})"
        ) from exc
    return jax


@functools.lru_cache(maxsize=1)
def _bool_dlpack_supported() -> bool:
    """Whether this JAX accepts bool tensors through DLPack (checked once)."""
    jax = _jax()
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
    jnp = _jax().numpy
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
    jax = _jax()
    for name, flag in (("copy", copy), ("downcast", downcast)):
        if not isinstance(flag, bool):
            raise TypeError(f"to_jax: {name} must be a bool, got {flag!r}")
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
def _is_tracer(jax: Any, x: Any) -> bool:
    tracer = getattr(getattr(jax, "core", None), "Tracer", None)
    return tracer is not None and isinstance(x, tracer)


def _array_to_torch(func: str, a: Any, path: str, *, copy: bool) -> Tensor:
    jnp = _jax().numpy
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
    jax = _jax()
    for name, flag in (("copy", copy), ("as_mask", as_mask)):
        if not isinstance(flag, bool):
            raise TypeError(f"from_jax: {name} must be a bool, got {flag!r}")
    if as_mask:
        return _build_mask("from_jax", tree, None, allow_none=True)

    def check(x: Any, path: str) -> Any:
        if _is_tracer(jax, x):
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
    jax = _jax()
    if not isinstance(tensor, Tensor):
        raise TypeError(f"shares_memory: tensor must be a torch.Tensor, got {type(tensor).__name__}")
    if not isinstance(array, jax.Array):
        raise TypeError(f"shares_memory: array must be a jax.Array, got {type(array).__name__}")
    kinds = {d.platform for d in array.devices()}
    same_kind = kinds == {"cpu"} if tensor.device.type == "cpu" else "cpu" not in kinds
    return same_kind and tensor.data_ptr() == array.unsafe_buffer_pointer()


# Masks: numpy and jaxpruner ---------------------------------------------------------------------
def _to_numpy(func: str, v: Any, path: str) -> np.ndarray:
    if isinstance(v, np.ndarray):
        return v
    if isinstance(v, Tensor):
        return v.detach().cpu().numpy()
    if hasattr(v, "__array__") and hasattr(v, "dtype") and hasattr(v, "shape"):  # a JAX array
        if _is_tracer(_jax(), v):
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
        check_fits(func, "masks", found, params, hint)
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
    check_fits(func, "mask", mask, params)


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
        >>> import numpy as np
        >>> from ltfunc.interop import jax as lj
        >>> lj.mask_from_numpy({"w": np.array([1, 0, 1], dtype=np.uint8)}).density()
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
    jnp = _jax().numpy
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
    _jax()
    return _build_mask("from_jaxpruner", masks, params, allow_none=True)


# Models -------------------------------------------------------------------------------------------
_FC = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias")
ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "lenet300": _FC,
    "conv2": ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", *_FC),
}
"""Parameter names of each built-in model :func:`apply` can run (``ltfunc.models`` names)."""


def infer_arch(params: Mapping[str, Any]) -> str:
    """The built-in architecture whose parameter names ``params`` has.

    Args:
        params: A params pytree (torch or JAX).

    Returns:
        A key of :data:`ARCHITECTURES` (``"lenet300"`` or ``"conv2"``).

    Raises:
        TypeError: If ``params`` is not a mapping.
        ValueError: If its names are not exactly those of a built-in model.

    Example:
        >>> import ltfunc
        >>> from ltfunc.interop import jax as lj
        >>> lj.infer_arch(ltfunc.get_params(ltfunc.models.conv2()))
        'conv2'
    """
    return _arch("infer_arch", params, None)


def _arch(func: str, params: Any, arch: str | None) -> str:
    if not isinstance(params, Mapping):
        raise TypeError(f"{func}: params must be a dict of arrays, got {type(params).__name__}")
    keys = set(params)
    if arch is None:
        for name, names in ARCHITECTURES.items():
            if keys == set(names):
                return name
        raise ValueError(
            f"{func}: params has keys {sorted(keys)}, which are not those of a built-in model; "
            f"supported: {', '.join(f'{a} {list(n)}' for a, n in ARCHITECTURES.items())}"
        )
    check_choice(func, "arch", arch, tuple(ARCHITECTURES))
    expected = set(ARCHITECTURES[arch])
    if keys != expected:
        raise ValueError(
            f"{func}: params do not fit arch={arch!r}: missing {sorted(expected - keys)}, "
            f"unexpected {sorted(keys - expected)}"
        )
    return arch


def _shape(params: Mapping[str, Any], k: str) -> tuple[int, ...]:
    return tuple(int(d) for d in params[k].shape)


def _check_chain(func: str, params: Mapping[str, Any], layers: list[str], in_features: int) -> None:
    """Linear layers ``layers`` must chain: weight ``(out, in)``, bias ``(out,)``."""
    for layer in layers:
        w, b = _shape(params, f"{layer}.weight"), _shape(params, f"{layer}.bias")
        if len(w) != 2 or w[1] != in_features or b != (w[0],):
            raise ValueError(
                f"{func}: {layer}.weight/{layer}.bias have shapes {w}/{b}; expected "
                f"(out, {in_features}) and (out,) given the previous layer"
            )
        in_features = w[0]


def _check_input(func: str, arch: str, params: Mapping[str, Any], x: Any) -> None:
    shape = tuple(int(d) for d in x.shape)
    if arch == "lenet300":
        features = int(np.prod(shape[1:])) if len(shape) >= 2 else -1
        if len(shape) < 2:
            raise ValueError(f"{func}: x has shape {shape}; lenet300 needs (N, ...) inputs")
        _check_chain(func, params, ["fc1", "fc2", "fc3"], features)
        return
    w1, w2 = _shape(params, "conv1.weight"), _shape(params, "conv2.weight")
    if len(w1) != 4 or w1[2:] != (3, 3) or len(w2) != 4 or w2[1:] != (w1[0], 3, 3):
        raise ValueError(
            f"{func}: conv1.weight/conv2.weight have shapes {w1}/{w2}; Conv-2 needs OIHW 3x3 "
            "kernels with conv2's in-channels equal to conv1's out-channels"
        )
    for layer, w in (("conv1", w1), ("conv2", w2)):
        if _shape(params, f"{layer}.bias") != (w[0],):
            got = _shape(params, f"{layer}.bias")
            raise ValueError(f"{func}: {layer}.bias has shape {got}, expected ({w[0]},)")
    if len(shape) != 4 or shape[1] != w1[1]:
        raise ValueError(f"{func}: x has shape {shape}; conv2 needs NCHW input with C={w1[1]}")
    _check_chain(func, params, ["fc1", "fc2", "fc3"], w2[0] * (shape[2] // 2) * (shape[3] // 2))


def _linear(jax: Any, x: Any, params: Mapping[str, Any], layer: str) -> Any:
    w, b = params[f"{layer}.weight"], params[f"{layer}.bias"]
    return jax.numpy.matmul(x, w.T, precision=jax.lax.Precision.HIGHEST) + b


def _conv3x3(jax: Any, x: Any, params: Mapping[str, Any], layer: str) -> Any:
    y = jax.lax.conv_general_dilated(
        x,
        params[f"{layer}.weight"],
        window_strides=(1, 1),
        padding=((1, 1), (1, 1)),
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
        precision=jax.lax.Precision.HIGHEST,
    )
    return y + params[f"{layer}.bias"][None, :, None, None]


def _forward(jax: Any, arch: str, params: Mapping[str, Any], x: Any) -> Any:
    relu = jax.nn.relu
    if arch == "conv2":
        x = relu(_conv3x3(jax, x, params, "conv1"))
        x = relu(_conv3x3(jax, x, params, "conv2"))
        x = jax.lax.reduce_window(x, -jax.numpy.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    x = x.reshape(x.shape[0], -1)  # NCHW flatten, same order as torch's x.flatten(1)
    x = relu(_linear(jax, x, params, "fc1"))
    x = relu(_linear(jax, x, params, "fc2"))
    return _linear(jax, x, params, "fc3")


def apply(params: Mapping[str, Any], x: Any, *, arch: str | None = None) -> Any:
    """Pure JAX forward pass of a built-in model (LeNet-300-100 or Conv-2): the logits.

    Matches ``ltfunc.call(model, params, x)`` of the PyTorch model to float tolerance. Works
    under ``jax.jit`` / ``jax.grad`` (the checks only read static shapes and names).

    Args:
        params: The exported params pytree (``to_jax(ltfunc.get_params(model))``; apply a
            mask first, e.g. ``to_jax(ltfunc.masks.apply(mask, params))`` or
            :func:`mask_params`). PyTorch layouts: Linear weights ``(out, in)``, conv kernels
            OIHW.
        x: Inputs as a JAX (or numpy) array: ``(N, 1, 28, 28)`` NCHW images; LeNet also takes
            any ``(N, ...)`` with 784 features per example.
        arch: ``"lenet300"`` or ``"conv2"``; ``None`` infers it from the parameter names.

    Returns:
        Logits ``(N, num_classes)``.

    Raises:
        ImportError: If JAX is not installed.
        TypeError: If ``params`` is not a mapping.
        ValueError: Names or shapes that do not form the model, or ``x`` of the wrong shape.

    Example:
        >>> import torch, ltfunc
        >>> from ltfunc.interop import jax as lj
        >>> model = ltfunc.models.lenet300(seed=0)
        >>> x = torch.randn(3, 1, 28, 28)
        >>> logits = lj.apply(lj.to_jax(ltfunc.get_params(model)), lj.to_jax(x))
        >>> torch.allclose(lj.from_jax(logits), model(x), atol=1e-5)
        True
    """
    jax = _jax()
    arch = _arch("apply", params, arch)
    x = jax.numpy.asarray(x)
    _check_input("apply", arch, params, x)
    return _forward(jax, arch, params, x)


def predict(params: Mapping[str, Any], x: Any, *, arch: str | None = None) -> Any:
    """Predicted class of each example: ``argmax(apply(params, x), axis=-1)``.

    Args:
        params: See :func:`apply`.
        x: See :func:`apply`.
        arch: See :func:`apply`.

    Returns:
        An integer array ``(N,)``.

    Raises:
        ImportError, TypeError, ValueError: As :func:`apply`.

    Example:
        >>> import torch, ltfunc
        >>> from ltfunc.interop import jax as lj
        >>> p = lj.to_jax(ltfunc.get_params(ltfunc.models.lenet300(seed=0)))
        >>> lj.predict(p, lj.to_jax(torch.zeros(2, 784))).shape
        (2,)
    """
    jnp = _jax().numpy
    return jnp.argmax(apply(params, x, arch=arch), axis=-1)


def cross_entropy(logits: Any, labels: Any) -> Any:
    """Mean softmax cross-entropy with integer labels, like ``torch.nn.functional.cross_entropy``.

    Args:
        logits: ``(N, C)`` array.
        labels: ``(N,)`` integer class indices.

    Returns:
        A scalar array.

    Raises:
        ImportError: If JAX is not installed.

    Example:
        >>> import jax.numpy as jnp
        >>> from ltfunc.interop import jax as lj
        >>> round(float(lj.cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3]))), 4)  # log(4)
        1.3863
    """
    jax = _jax()
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jax.numpy.take_along_axis(logp, labels[:, None].astype(jax.numpy.int32), axis=-1).mean()


def mask_params(params: Mapping[str, Any], mask: Mapping[str, Any] | None) -> dict[str, Any]:
    """Zero the pruned entries of a JAX params (or gradients) pytree: ``p * mask``.

    Args:
        params: ``{name: array}``.
        mask: ``None`` (dense), ``to_jax(ltfunc_mask)`` or a jaxpruner-style pytree
            (:func:`to_jaxpruner`): ``{name: bool/0-1 array or None}`` over a subset of the
            names.

    Returns:
        A new dict; masked entries are ``p * mask`` in ``p``'s dtype, others unchanged.

    Raises:
        ImportError: If JAX is not installed.
        TypeError: If ``params`` or ``mask`` is not a mapping (an ltfunc ``Mask``: use
            :func:`to_jax` first).
        ValueError: Mask names not in ``params`` or shapes that differ.

    Example:
        >>> import jax.numpy as jnp
        >>> from ltfunc.interop import jax as lj
        >>> lj.mask_params({"w": jnp.array([3.0, 4.0])}, {"w": jnp.array([True, False])})["w"].tolist()
        [3.0, 0.0]
    """
    _jax()
    _check_jax_mask("mask_params", params, mask)
    if mask is None:
        return dict(params)
    return {k: (v * mask[k].astype(v.dtype) if mask.get(k) is not None else v) for k, v in params.items()}


def _check_jax_mask(func: str, params: Any, mask: Any) -> None:
    if not isinstance(params, Mapping):
        raise TypeError(f"{func}: params must be a dict of arrays, got {type(params).__name__}")
    if mask is None:
        return
    if isinstance(mask, Mask) or not isinstance(mask, Mapping):
        raise TypeError(
            f"{func}: mask must be None or a dict of JAX arrays (convert an ltfunc Mask with "
            f"to_jax(mask) or to_jaxpruner(mask, params)), got {type(mask).__name__}"
        )
    check_fits(func, "mask", mask, params)


# Training and evaluation ----------------------------------------------------------------------------
Step = Callable[[Any, Any, Any, tuple[Any, Any]], tuple[Any, Any, dict[str, Any]]]


def make_train_step(
    optimizer: Any,
    *,
    arch: str | None = None,
    loss_fn: Callable[[Any, Any], Any] | None = None,
    jit: bool = True,
) -> Step:
    """A masked training step in JAX, the counterpart of :func:`ltfunc.step.make_train_step`.

    ``step(params, opt_state, mask, (x, y)) -> (params, opt_state, metrics)``: ``params`` are
    masked on entry (a no-op for params that are already masked), the loss of
    ``apply(params, x)`` is differentiated, gradients of pruned weights are zeroed, the
    optimizer's update is added, and the mask is re-applied so pruned weights stay exactly 0.
    With ``optax.sgd(lr, momentum)`` this matches ltfunc's step with
    ``ltfunc.optim.sgd(lr, momentum)`` (PyTorch's SGD semantics) to float tolerance.

    Args:
        optimizer: An optax-style ``GradientTransformation``: ``init(params) -> state`` and
            ``update(grads, state, params) -> (updates, state)`` (the learning rate lives in
            the optimizer; use ``optax.inject_hyperparams`` to change it during training).
        arch: ``"lenet300"``, ``"conv2"`` or ``None`` (inferred from the parameter names).
        loss_fn: ``loss_fn(logits, labels) -> scalar``; default :func:`cross_entropy`.
        jit: Compile the step with ``jax.jit`` (default). A new mask of the same structure
            does not recompile.

    Returns:
        The step function. ``mask`` is ``None``, ``to_jax(mask)`` or a jaxpruner-style
        pytree; ``metrics`` is ``{"loss": scalar, "accuracy": scalar}`` of the batch,
        before the update.

    Raises:
        ImportError: If JAX is not installed.
        TypeError: If ``optimizer`` has no callable ``init``/``update``, or ``loss_fn`` is
            not callable.
        ValueError: Unknown ``arch``.

    Example:
        >>> import optax, torch, ltfunc
        >>> from ltfunc.interop import jax as lj
        >>> p = ltfunc.get_params(ltfunc.models.lenet300(seed=0))
        >>> mask = ltfunc.prune.magnitude(p, ltfunc.masks.ones(p), sparsity=0.9)
        >>> params, jmask = lj.to_jax(ltfunc.masks.apply(mask, p)), lj.to_jax(mask)
        >>> opt = optax.sgd(0.1)
        >>> step = lj.make_train_step(opt, jit=False)
        >>> x, y = lj.to_jax(torch.randn(8, 1, 28, 28)), lj.to_jax(torch.arange(8).int())
        >>> params, state, metrics = step(params, opt.init(params), jmask, (x, y))
        >>> bool(((params["fc1.weight"] != 0) == jmask["fc1.weight"]).all())  # pruned stay 0
        True
    """
    jax = _jax()
    for name in ("init", "update"):
        if not callable(getattr(optimizer, name, None)):
            raise TypeError(
                f"make_train_step: optimizer must be an optax GradientTransformation with "
                f"callable init/update, got {type(optimizer).__name__} (ltfunc.optim optimizers "
                "are for torch; use e.g. optax.sgd)"
            )
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"make_train_step: loss_fn must be callable, got {loss_fn!r}")
    if arch is not None:
        check_choice("make_train_step", "arch", arch, tuple(ARCHITECTURES))
    if not isinstance(jit, bool):
        raise TypeError(f"make_train_step: jit must be a bool, got {jit!r}")
    loss = loss_fn if loss_fn is not None else cross_entropy
    jnp = jax.numpy

    def step(
        params: Any, opt_state: Any, mask: Any, batch: tuple[Any, Any]
    ) -> tuple[Any, Any, dict[str, Any]]:
        _check_jax_mask("step", params, mask)
        x, y = batch
        params = mask_params(params, mask)  # like ltfunc's step: pruned weights are 0 in the forward

        def objective(p: Any) -> tuple[Any, Any]:
            logits = apply(p, x, arch=arch)
            return loss(logits, y), logits

        (value, logits), grads = jax.value_and_grad(objective, has_aux=True)(params)
        grads = mask_params(grads, mask)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = {k: (p + updates[k]).astype(p.dtype) for k, p in params.items()}
        params = mask_params(params, mask)
        accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == y).astype(jnp.float32))
        return params, opt_state, {"loss": value, "accuracy": accuracy}

    return jax.jit(step) if jit else step


@functools.lru_cache(maxsize=8)
def _eval_batch(arch: str) -> Any:
    jax = _jax()
    jnp = jax.numpy

    def run(params: Any, x: Any, y: Any) -> tuple[Any, Any]:
        logits = _forward(jax, arch, params, x)
        logp = jax.nn.log_softmax(logits, axis=-1)
        nll = -jnp.take_along_axis(logp, y[:, None].astype(jnp.int32), axis=-1).sum()
        return nll, (jnp.argmax(logits, axis=-1) == y).sum()

    return jax.jit(run)


def evaluate(
    params: Mapping[str, Any],
    x: Any,
    y: Any,
    *,
    mask: Mapping[str, Any] | None = None,
    batch_size: int = 1000,
    arch: str | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a whole split, in JAX (like ``ltfunc.step.evaluate``).

    Args:
        params: JAX params pytree of a built-in model.
        x: Inputs (JAX, numpy or torch: torch tensors are converted with :func:`to_jax`).
        y: Integer labels ``(N,)`` (same kinds).
        mask: Optional mask applied to ``params`` first (see :func:`mask_params`).
        batch_size: Examples per jitted forward pass.
        arch: See :func:`apply`.

    Returns:
        ``(loss, accuracy)`` as Python floats; ``accuracy * N`` is the number correct.

    Raises:
        ImportError: If JAX is not installed.
        TypeError: Bad ``params``/``mask`` types or a non-int ``batch_size``.
        ValueError: Shape mismatches, empty or mismatched ``x``/``y``, ``batch_size < 1``.

    Example:
        >>> import torch, ltfunc
        >>> from ltfunc.interop import jax as lj
        >>> p = lj.to_jax(ltfunc.get_params(ltfunc.models.lenet300(seed=0)))
        >>> loss, acc = lj.evaluate(p, torch.zeros(10, 1, 28, 28), torch.zeros(10, dtype=torch.int32))
        >>> acc in (0.0, 1.0)
        True
    """
    jax = _jax()
    jnp = jax.numpy
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"evaluate: batch_size must be an int, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"evaluate: batch_size must be >= 1, got {batch_size}")
    arch = _arch("evaluate", params, arch)
    x, y = (to_jax(v, downcast=True) if isinstance(v, Tensor) else jnp.asarray(v) for v in (x, y))
    n = int(x.shape[0]) if x.ndim else 0
    if n == 0 or y.shape != (n,):
        raise ValueError(
            f"evaluate: need x of shape (N, ...) with N > 0 and y of shape (N,); got {x.shape} and {y.shape}"
        )
    _check_input("evaluate", arch, params, x[:1])
    params = mask_params(params, mask)
    run = _eval_batch(arch)
    nll, correct = 0.0, 0
    for start in range(0, n, batch_size):
        b_nll, b_correct = run(params, x[start : start + batch_size], y[start : start + batch_size])
        nll += float(b_nll)
        correct += int(b_correct)
    return nll / n, correct / n
