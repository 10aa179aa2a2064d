"""Immutable masks: a pytree of bool tensors keyed like the prunable parameters.

One spelling per operation: the module functions :func:`density` / :func:`sparsity` /
:func:`counts` measure a mask (the methods ``Mask.density()`` / ``Mask.sparsity()`` are
deprecated aliases), and :func:`ltfunc.params.tree_equal` compares masks like any other
pytree (same keys in the same order, equal tensors); ``mask_a == mask_b`` is that same
comparison, and ``Mask.equal`` is a deprecated alias.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import optree
import torch
from torch import Tensor, nn

from ._checks import check_mask, check_mask_fits, check_path
from ._types import Params, Selection
from .params import _save_tree, load_tree, read_metadata, tree_equal

__all__ = [
    "LayerCount",
    "Mask",
    "apply",
    "check_compatible",
    "counts",
    "density",
    "from_dict",
    "intersect",
    "load",
    "ones",
    "prunable_names",
    "save",
    "sparsity",
]


class LayerCount(NamedTuple):
    """Surviving and total weight counts of one layer (or of a whole mask)."""

    kept: int
    total: int

    @property
    def density(self) -> float:
        """Fraction of weights kept."""
        return self.kept / self.total if self.total else 1.0

    @property
    def sparsity(self) -> float:
        """Fraction of weights removed."""
        return 1.0 - self.density


class Mask(Mapping[str, Tensor]):
    """An immutable mapping ``{parameter name: bool tensor}`` that is an optree pytree.

    ``True`` keeps a weight, ``False`` prunes it. Keys are a subset of a params pytree's keys
    (the prunable parameters), in the params' order. Attribute and item assignment raise;
    every operation that changes a mask returns a new one.

    A mask owns its data: ``Mask(src)`` copies the tensors of ``src`` (masks are built once
    per pruning round, so the copy is cheap next to training), so later edits of ``src`` do
    not change it. Its tensors cannot be made read-only in PyTorch, so an in-place change
    (``mask["w"][:] = False``) is *detected* instead: the mask records each tensor's
    ``_version`` counter when built, and the training step (which caches a flat copy of
    each mask), :func:`apply`, :func:`check_compatible`, :func:`counts`, :func:`density`,
    :func:`sparsity`, :func:`intersect` and :func:`save` raise ``ValueError`` ("Mask was
    modified in place") when a counter moved. Build a new mask instead
    (:func:`from_dict`, the pruning functions).

    ``a == b`` for two masks is :func:`ltfunc.params.tree_equal` (same keys in the same
    order, same shapes and values); a mask never equals a plain dict. Measure a mask with
    the module functions :func:`density`, :func:`sparsity` and :func:`counts`.

    Example:
        >>> import ltfunc
        >>> m = ltfunc.masks.ones(ltfunc.models.lenet300())
        >>> m["fc1.weight"].shape, ltfunc.masks.density(m)
        (torch.Size([300, 784]), 1.0)
        >>> m == ltfunc.masks.ones(ltfunc.models.lenet300())
        True
    """

    __slots__ = ("_data", "_versions")
    _data: dict[str, Tensor]
    _versions: tuple[int, ...]

    def __init__(self, data: Mapping[str, Tensor]) -> None:
        if not isinstance(data, Mapping):
            raise TypeError(f"Mask: data must be a mapping of names to bool tensors, got {data!r}")
        checked: dict[str, Tensor] = {}
        for k, v in data.items():
            if not isinstance(k, str):
                raise TypeError(f"Mask: keys must be str, got {k!r}")
            if not isinstance(v, Tensor):
                raise TypeError(f"Mask: value of {k!r} must be a torch.Tensor, got {type(v).__name__}")
            if v.dtype != torch.bool:
                raise TypeError(f"Mask: value of {k!r} must have dtype torch.bool, got {v.dtype}")
            checked[k] = v.detach().clone()  # own the data: later edits of ``data`` do not leak in
        object.__setattr__(self, "_data", checked)
        object.__setattr__(self, "_versions", _versions_of(checked))

    # Mapping protocol -------------------------------------------------------------------
    def __getitem__(self, key: str) -> Tensor:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    # Immutability ------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Mask is immutable: cannot set attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Mask is immutable: cannot delete attribute {name!r}")

    def __setitem__(self, key: str, value: Any) -> None:
        raise TypeError(
            f"Mask is immutable: cannot assign mask[{key!r}]; build a new one with "
            "Mask({**mask.to_dict(), key: value})"
        )

    def __delitem__(self, key: str) -> None:
        raise TypeError(f"Mask is immutable: cannot delete mask[{key!r}]")

    def __reduce__(self) -> tuple[type[Mask], tuple[dict[str, Tensor]]]:
        # copy / deepcopy / pickle rebuild through __init__ (slot assignment would raise).
        return (Mask, (self._data,))

    # Comparison --------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mask):
            return NotImplemented
        return tree_equal(self, other)

    __hash__ = None  # type: ignore[assignment]

    def equal(self, other: Mask) -> bool:
        """Deprecated alias of ``ltfunc.tree_equal(self, other)`` (also ``self == other``)."""
        warnings.warn(
            "Mask.equal(other) is deprecated; use ltfunc.tree_equal(mask, other) (or mask == other)",
            DeprecationWarning,
            stacklevel=2,
        )
        return tree_equal(self, other)

    def __repr__(self) -> str:
        c = _counts(self)
        total = c.pop("__all__")
        return f"Mask({len(self)} tensors, density={total.density:.4f}, kept={total.kept}/{total.total})"

    # Conversions -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Tensor]:
        """Return a plain ``{name: bool tensor}`` dict of cloned tensors."""
        return {k: v.clone() for k, v in self._data.items()}

    def to(self, device: str | torch.device) -> Mask:
        """Return the mask on ``device``."""
        return Mask({k: v.to(device) for k, v in self._data.items()})

    def density(self) -> float:
        """Deprecated alias of :func:`ltfunc.masks.density` (``masks.density(mask)``)."""
        warnings.warn(
            "Mask.density() is deprecated; use ltfunc.masks.density(mask)", DeprecationWarning, stacklevel=2
        )
        return _density(self)

    def sparsity(self) -> float:
        """Deprecated alias of :func:`ltfunc.masks.sparsity` (``masks.sparsity(mask)``)."""
        warnings.warn(
            "Mask.sparsity() is deprecated; use ltfunc.masks.sparsity(mask)", DeprecationWarning, stacklevel=2
        )
        return 1.0 - _density(self)


def _versions_of(data: Mapping[str, Any]) -> tuple[int, ...]:
    """The ``_version`` counters of the tensors in ``data`` (-1 for non-tensor leaves)."""
    if torch.compiler.is_compiling():  # inside a traced function: nothing to record
        return ()
    return tuple(v._version if isinstance(v, Tensor) else -1 for v in data.values())


def _check_unmodified(func: str, mask: Any) -> None:
    """Raise if a tensor of ``mask`` was changed in place since the mask was built."""
    if not isinstance(mask, Mask):
        return
    recorded = mask._versions
    if not recorded or torch.compiler.is_compiling():
        return
    for (k, v), version in zip(mask._data.items(), recorded, strict=False):
        if isinstance(v, Tensor) and v._version != version:
            raise ValueError(
                f"{func}: Mask was modified in place (mask[{k!r}]); masks are immutable: build a "
                "new one with ltfunc.masks.from_dict / the ltfunc.prune functions"
            )


def _flatten(m: Mask) -> tuple[tuple[Tensor, ...], tuple[str, ...], tuple[str, ...]]:
    keys = tuple(m._data)
    return tuple(m._data.values()), keys, keys


def _unflatten(keys: tuple[str, ...], children: Any) -> Mask:
    # optree may hand back non-tensor leaves during tree_map (e.g. ints); keep them as-is.
    new = object.__new__(Mask)
    data = dict(zip(keys, children, strict=False))
    object.__setattr__(new, "_data", data)
    object.__setattr__(new, "_versions", _versions_of(data))
    return new


optree.register_pytree_node(
    Mask,
    _flatten,  # type: ignore[arg-type]
    _unflatten,  # type: ignore[arg-type]
    path_entry_type=optree.MappingEntry,
    namespace=getattr(optree.registry, "__GLOBAL_NAMESPACE"),
)
try:  # torch.func / torch.compile use torch's own pytree registry
    import torch.utils._pytree as _torch_pytree

    _torch_pytree.register_pytree_node(
        Mask,
        lambda m: (list(m._data.values()), tuple(m._data)),
        lambda children, keys: _unflatten(keys, children),
        serialized_type_name="ltfunc.masks.Mask",
    )
except (ImportError, AttributeError, ValueError, TypeError):  # pragma: no cover
    pass


# Construction ------------------------------------------------------------------------------
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_names(model: nn.Module | Mapping[str, Tensor]) -> list[str]:
    """Names of the parameters that are prunable by default.

    For a module that declares its prunable parameters with a ``prunable_names()`` method
    (every built-in model does, :meth:`ltfunc.models.BaseModel.prunable_names`; VGG and
    ResNet leave their output layer out): those names, in parameter order. For any other
    module: the ``weight`` of every ``nn.Linear`` and ``nn.Conv1d/2d/3d``. For a params
    dict, which declares nothing: floating tensors with at least 2 dimensions (weight
    matrices and conv kernels; biases and normalization parameters are 1-D), so an output
    layer a module leaves out is in; pass the module (or ``select=``) to :func:`ones` to get
    its declaration.

    Args:
        model: A module or a params pytree.

    Returns:
        Names in parameter order.

    Raises:
        TypeError: If ``model`` is neither, or its ``prunable_names()`` does not return a
            list or tuple of str.
        ValueError: If ``prunable_names()`` names a parameter the module does not have, or
            one twice.

    Example:
        >>> import ltfunc
        >>> ltfunc.masks.prunable_names(ltfunc.models.lenet300())
        ['fc1.weight', 'fc2.weight', 'fc3.weight']
        >>> m = ltfunc.models.resnet20()
        >>> "fc.weight" in ltfunc.masks.prunable_names(m), "fc.weight" in ltfunc.masks.prunable_names(
        ...     ltfunc.get_params(m))
        (False, True)
    """
    if isinstance(model, nn.Module):
        declared = getattr(model, "prunable_names", None)
        if callable(declared):
            return _declared_names(model, declared())
        chosen = set()
        for mod_name, mod in model.named_modules():
            if isinstance(mod, (nn.Linear, *_CONV_TYPES)) and mod.weight is not None:
                chosen.add(f"{mod_name}.weight" if mod_name else "weight")
        return [n for n, _ in model.named_parameters() if n in chosen]
    if isinstance(model, Mapping):
        return [
            n for n, t in model.items() if isinstance(t, Tensor) and t.is_floating_point() and t.dim() >= 2
        ]
    raise TypeError(
        f"prunable_names: model must be an nn.Module or a params dict, got {type(model).__name__}"
    )


def _declared_names(model: nn.Module, declared: Any) -> list[str]:
    """Check what ``model.prunable_names()`` returned; return it in parameter order."""
    func, cls = "prunable_names", type(model).__name__
    if not isinstance(declared, (list, tuple)) or not all(isinstance(n, str) for n in declared):
        raise TypeError(
            f"{func}: {cls}.prunable_names() must return a list of parameter names, got {declared!r}"
        )
    params = [n for n, _ in model.named_parameters()]
    unknown = [n for n in declared if n not in params]
    if unknown:
        raise ValueError(
            f"{func}: {cls}.prunable_names() names {unknown}, which are not parameters of the "
            f"module; parameters: {params}"
        )
    if len(set(declared)) != len(declared):
        raise ValueError(f"{func}: {cls}.prunable_names() names a parameter twice: {list(declared)}")
    wanted = set(declared)
    return [n for n in params if n in wanted]


def ones(model_or_params: nn.Module | Mapping[str, Tensor], select: Selection = None) -> Mask:
    """An all-ones (fully dense) mask over the prunable parameters.

    Args:
        model_or_params: A module or a params pytree; tensors are created on its device.
        select: Which parameters to mask: ``None`` for :func:`prunable_names` (a module's
            own declaration where it has one: pass the module rather than its params to get
            it), a list of names, or a predicate ``(name, tensor) -> bool``.

    Returns:
        A ``Mask`` with one all-True bool tensor per selected parameter.

    Raises:
        TypeError: If the input is not a module/params dict, or a selected parameter is not
            floating point; a module's ``prunable_names()`` that returns no list of names.
        ValueError: If ``select`` (or the module's ``prunable_names()``) names unknown
            parameters, or nothing is prunable.

    Example:
        >>> import ltfunc
        >>> ltfunc.masks.ones(ltfunc.models.lenet300(), select=["fc3.weight"]).keys()
        KeysView(Mask(1 tensors, density=1.0000, kept=1000/1000))
        >>> vgg = ltfunc.models.vgg11_bn()
        >>> len(ltfunc.masks.ones(vgg)), len(ltfunc.masks.ones(ltfunc.get_params(vgg)))  # fc.weight
        (8, 9)
    """
    if isinstance(model_or_params, nn.Module):
        params: Mapping[str, Tensor] = dict(model_or_params.named_parameters())
    elif isinstance(model_or_params, Mapping):
        params = model_or_params
    else:
        raise TypeError(
            "ones: model_or_params must be an nn.Module or a params dict, "
            f"got {type(model_or_params).__name__}"
        )
    if select is None:
        names = prunable_names(model_or_params)
    elif callable(select):
        names = [n for n, t in params.items() if select(n, t)]
    elif isinstance(select, (list, tuple, set)):
        unknown = [n for n in select if n not in params]
        if unknown:
            raise ValueError(f"ones: select names unknown parameters {unknown}; allowed: {list(params)}")
        wanted = set(select)
        names = [n for n in params if n in wanted]
    else:
        raise TypeError(
            f"ones: select must be None, a list of names or a predicate, got {type(select).__name__}"
        )
    if not names:
        raise ValueError(
            "ones: nothing is prunable (no Linear/Conv weights, an empty prunable_names(), "
            "or select matched nothing); "
            f"parameters: {list(params)}"
        )
    for n in names:
        if not params[n].is_floating_point():
            raise TypeError(
                f"ones: parameter {n!r} has dtype {params[n].dtype}; only floating "
                "point parameters can be pruned"
            )
    return Mask({n: torch.ones(params[n].shape, dtype=torch.bool, device=params[n].device) for n in names})


def from_dict(data: Mapping[str, Any]) -> Mask:
    """Build a mask from ``{name: tensor or array}`` (any dtype; nonzero means kept).

    Args:
        data: Mapping of names to tensors, numpy arrays or nested lists.

    Returns:
        A new ``Mask`` with cloned bool tensors.

    Raises:
        TypeError: If ``data`` is not a mapping.

    Example:
        >>> import ltfunc
        >>> ltfunc.masks.density(ltfunc.masks.from_dict({"w": [[1, 0], [0, 1]]}))
        0.5
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"from_dict: data must be a mapping, got {type(data).__name__}")
    out = {}
    for k, v in data.items():
        t = v.detach() if isinstance(v, Tensor) else torch.as_tensor(v)
        out[k] = t if t.dtype == torch.bool else t != 0  # Mask(out) copies
    return Mask(out)


# Checks and operations ---------------------------------------------------------------------
def check_compatible(mask: Any, params: Any, func: str = "check_compatible") -> None:
    """Raise a clear error unless ``mask`` fits ``params`` (keys, shapes, devices).

    Args:
        mask: The mask to check.
        params: The params pytree it should apply to.
        func: Name of the calling function, used in the message.

    Raises:
        TypeError: If ``mask`` is not a Mask of bool tensors or ``params`` not a mapping of
            tensors.
        ValueError: On unknown keys, shape or device mismatches.

    Example:
        >>> import ltfunc
        >>> m = ltfunc.models.lenet300(); p = ltfunc.get_params(m)
        >>> ltfunc.masks.check_compatible(ltfunc.masks.ones(p), p)
    """
    check_mask(func, "mask", mask)
    _check_unmodified(func, mask)
    if not isinstance(params, Mapping):
        raise TypeError(f"{func}: params must be a dict of tensors, got {type(params).__name__}")
    for k, m in mask.items():
        if not isinstance(m, Tensor) or m.dtype != torch.bool:
            got = m.dtype if isinstance(m, Tensor) else type(m).__name__
            raise TypeError(f"{func}: mask[{k!r}] must be a bool tensor, got {got}")
        if k in params and not isinstance(params[k], Tensor):
            raise TypeError(f"{func}: params[{k!r}] must be a tensor, got {type(params[k]).__name__}")
    check_mask_fits(func, "mask", mask, params)
    for k, m in mask.items():
        if m.device != params[k].device:
            raise ValueError(
                f"{func}: mask[{k!r}] is on {m.device} but params[{k!r}] is on {params[k].device}; "
                "use mask.to(device)"
            )


def apply(mask: Mask, params: Mapping[str, Tensor]) -> Params:
    """Return new params with masked weights set to zero (unmasked entries unchanged).

    Pruned entries become exactly 0 even where the weight is NaN or inf.

    Args:
        mask: The mask.
        params: A params pytree containing every key of ``mask``.

    Returns:
        A new dict; masked tensors are new, the others are the same tensor objects.

    Raises:
        TypeError, ValueError: See :func:`check_compatible`.

    Example:
        >>> import torch, ltfunc
        >>> m = ltfunc.masks.from_dict({"w": [1, 0]})
        >>> ltfunc.masks.apply(m, {"w": torch.tensor([3., 4.])})["w"]
        tensor([3., 0.])
    """
    check_compatible(mask, params, "apply")
    return _apply(mask, params)


def _apply(mask: Mask, params: Mapping[str, Tensor]) -> Params:
    """:func:`apply` without the checks: for callers that have validated ``mask`` and ``params``."""
    return {k: (torch.where(mask[k], v, v.new_zeros(())) if k in mask else v) for k, v in params.items()}


def intersect(a: Mask, b: Mask) -> Mask:
    """Element-wise AND of two masks with the same keys and shapes.

    Args:
        a: First mask.
        b: Second mask.

    Returns:
        A new mask that keeps a weight only where both keep it.

    Raises:
        TypeError: If either is not a Mask.
        ValueError: If keys or shapes differ.

    Example:
        >>> import ltfunc
        >>> a = ltfunc.masks.from_dict({"w": [1, 1, 0]}); b = ltfunc.masks.from_dict({"w": [0, 1, 1]})
        >>> ltfunc.masks.intersect(a, b)["w"]
        tensor([False,  True, False])
    """
    check_mask("intersect", "a", a)
    check_mask("intersect", "b", b)
    _check_unmodified("intersect", a)
    _check_unmodified("intersect", b)
    if list(a) != list(b):
        raise ValueError(f"intersect: masks have different keys: {list(a)} vs {list(b)}")
    for k in a:
        if a[k].shape != b[k].shape:
            raise ValueError(
                f"intersect: shapes differ for {k!r}: {tuple(a[k].shape)} vs {tuple(b[k].shape)}"
            )
    return Mask({k: a[k] & b[k] for k in a})


def counts(mask: Mask) -> dict[str, LayerCount]:
    """Kept/total counts per tensor, plus ``"__all__"`` for the whole mask.

    Args:
        mask: The mask.

    Returns:
        ``{name: LayerCount(kept, total), ..., "__all__": LayerCount(...)}``.

    Raises:
        TypeError: If ``mask`` is not a Mask.

    Example:
        >>> import ltfunc
        >>> ltfunc.masks.counts(ltfunc.masks.from_dict({"w": [1, 0, 1]}))["w"]
        LayerCount(kept=2, total=3)
    """
    check_mask("counts", "mask", mask)
    _check_unmodified("counts", mask)
    return _counts(mask)


def _counts(mask: Mask) -> dict[str, LayerCount]:
    out = {k: LayerCount(int(v.sum()), v.numel()) for k, v in mask.items()}
    out["__all__"] = LayerCount(sum(c.kept for c in out.values()), sum(c.total for c in out.values()))
    return out


def _density(mask: Mask) -> float:
    return _counts(mask)["__all__"].density


def density(mask: Mask) -> float:
    """Fraction of weights kept over all tensors of ``mask``.

    Args:
        mask: The mask.

    Returns:
        ``kept / total`` in [0, 1].

    Raises:
        TypeError: If ``mask`` is not a Mask.

    Example:
        >>> import ltfunc
        >>> ltfunc.masks.density(ltfunc.masks.from_dict({"w": [1, 0, 0, 0]}))
        0.25
    """
    check_mask("density", "mask", mask)
    _check_unmodified("density", mask)
    return _density(mask)


def sparsity(mask: Mask) -> float:
    """Fraction of weights pruned: ``1 - density(mask)``.

    Args:
        mask: The mask.

    Returns:
        ``1 - kept / total`` in [0, 1].

    Raises:
        TypeError: If ``mask`` is not a Mask.

    Example:
        >>> import ltfunc
        >>> ltfunc.masks.sparsity(ltfunc.masks.from_dict({"w": [1, 0, 0, 0]}))
        0.75
    """
    check_mask("sparsity", "mask", mask)
    _check_unmodified("sparsity", mask)
    return 1.0 - _density(mask)


def _digest(mask: Mask) -> str:
    """sha256 over a mask's names, shapes and values (independent of the file's layout)."""
    h = hashlib.sha256()
    for k, v in mask.items():
        h.update(f"{k}:{tuple(v.shape)};".encode())
        h.update(v.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def save(mask: Mask, path: str | os.PathLike[str]) -> None:
    """Save a mask to safetensors (bool stored losslessly), atomically.

    Args:
        mask: The mask.
        path: Destination file.

    Raises:
        TypeError: If ``mask`` is not a Mask, or ``path`` not a ``str`` or path.

    Example:
        >>> import ltfunc, tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "mask.safetensors")
        >>> m = ltfunc.masks.from_dict({"w": [1, 0]}); ltfunc.masks.save(m, f)
        >>> ltfunc.masks.load(f) == m
        True
    """
    check_mask("save", "mask", mask)
    _check_unmodified("save", mask)
    check_path("save", "path", path)
    _save_tree(dict(mask.items()), path, metadata={"ltfunc.kind": "mask"})


def load(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Mask:
    """Load a mask written by :func:`save`.

    Args:
        path: A safetensors file.
        device: Where to put the tensors.

    Returns:
        The mask, keys in saved order.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If it is not a valid mask file (names the file).

    Example:
        See :func:`save`.
    """
    tree = load_tree(path, device=device)
    bad = [k for k, v in tree.items() if v.dtype != torch.bool]
    if bad:
        raise ValueError(f"load: {path} is not a mask file: {bad} are not bool tensors")
    meta = read_metadata(path)
    if meta.get("ltfunc.kind", "mask") != "mask":
        raise ValueError(f"load: {path} holds {meta.get('ltfunc.kind')!r}, not a mask")
    return Mask(tree)


def _record(mask: Mask) -> dict[str, Any]:
    """What a run's ``summary.json`` keeps about its round's mask: checksum and counts."""
    total = _counts(mask)["__all__"]
    return {"mask_sha256": _digest(mask), "mask_kept": total.kept, "mask_total": total.total}
