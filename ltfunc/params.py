"""Module <-> parameter pytree: stateless calls, snapshots, loading back, files.

A parameter pytree is a plain ``dict[str, Tensor]`` keyed by ``module.named_parameters()``
names, so ``optree.tree_map`` and ``torch.func.functional_call`` work on it directly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optree
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ._checks import check_device, check_module, check_path, check_tree
from ._types import Buffers, Params

__all__ = [
    "call",
    "get_buffers",
    "get_params",
    "load_into",
    "load_tree",
    "save_tree",
    "snapshot",
    "tree_equal",
]


def get_params(model: nn.Module, *, copy: bool = True) -> Params:
    """Return the module's parameters as a plain dict pytree.

    Args:
        model: Any ``nn.Module``.
        copy: If True (default) the tensors are detached clones, so training the pytree
            never touches the module. If False they are detached views sharing storage.

    Returns:
        ``{name: tensor}`` in ``model.named_parameters()`` order.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module``.

    Example:
        >>> import ltfunc
        >>> p = ltfunc.get_params(ltfunc.models.lenet300())
        >>> list(p)[:2]
        ['fc1.weight', 'fc1.bias']
    """
    check_module("get_params", "model", model)
    return {name: (p.detach().clone() if copy else p.detach()) for name, p in model.named_parameters()}


def get_buffers(model: nn.Module, *, copy: bool = True) -> Buffers:
    """Return the module's buffers (e.g. BatchNorm running stats) as a dict pytree.

    Args:
        model: Any ``nn.Module``.
        copy: Detached clones (default) or detached views sharing storage.

    Returns:
        ``{name: tensor}`` in ``model.named_buffers()`` order (empty for MLPs).

    Raises:
        TypeError: If ``model`` is not an ``nn.Module``.

    Example:
        >>> import ltfunc
        >>> ltfunc.get_buffers(ltfunc.models.lenet300())
        {}
    """
    check_module("get_buffers", "model", model)
    return {name: (b.detach().clone() if copy else b.detach()) for name, b in model.named_buffers()}


def call(
    model: nn.Module,
    params: Mapping[str, Tensor],
    *args: Any,
    buffers: Mapping[str, Tensor] | None = None,
    **kwargs: Any,
) -> Any:
    """Run ``model`` statelessly with ``params`` (and ``buffers``) via ``functional_call``.

    Args:
        model: The module that defines the computation; its own tensors are not used for
            the names given in ``params``/``buffers``.
        params: Parameter pytree.
        *args: Positional inputs of ``model.forward``.
        buffers: Optional buffer pytree.
        **kwargs: Keyword inputs of ``model.forward``.

    Returns:
        Whatever ``model.forward`` returns.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module``, ``params`` not a dict (mapping) of
            tensors, or ``buffers`` neither ``None`` nor one.

    Example:
        >>> import torch, ltfunc
        >>> m = ltfunc.models.lenet300()
        >>> ltfunc.call(m, ltfunc.get_params(m), torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    check_module("call", "model", model)
    check_tree("call", "params", params)
    check_tree("call", "buffers", buffers, optional=True)
    tensors: dict[str, Tensor] = dict(params)
    if buffers:
        tensors.update(buffers)
    return torch.func.functional_call(model, tensors, args, kwargs)


def snapshot(tree: Any) -> Any:
    """Return a deep copy of a pytree of tensors (e.g. θ₀ for later resets).

    Args:
        tree: Any optree-compatible pytree of tensors (dicts, NamedTuples, ``Mask``...).

    Returns:
        A pytree of the same structure with detached, cloned tensors.

    Example:
        >>> import torch, ltfunc
        >>> p = {"w": torch.ones(2)}
        >>> s = ltfunc.snapshot(p)
        >>> _ = p["w"].zero_()
        >>> s["w"]
        tensor([1., 1.])
    """
    return optree.tree_map(
        lambda t: t.detach().clone() if isinstance(t, Tensor) else t, tree, none_is_leaf=True
    )


def load_into(model: nn.Module, params: Mapping[str, Tensor], *, strict: bool = True) -> nn.Module:
    """Copy a parameter (or buffer) pytree into ``model`` in place and return the model.

    This is the one deliberate mutation in ltfunc: it writes into a user's module, e.g. to
    save it with ``torch.save(model.state_dict())`` or to hand it to other code.

    Args:
        model: Destination module.
        params: ``{name: tensor}``; names must be parameters or buffers of ``model``.
        strict: If True (default), every parameter of ``model`` must be present.

    Returns:
        ``model`` itself.

    Raises:
        TypeError: If ``model`` is not a module or ``params`` not a mapping of tensors.
        ValueError: On unknown names, missing names (strict) or shape mismatches; nothing
            is written in that case.

    Example:
        >>> import ltfunc
        >>> m = ltfunc.models.lenet300()
        >>> p = {k: v * 0 for k, v in ltfunc.get_params(m).items()}
        >>> float(ltfunc.load_into(m, p).fc1.weight.detach().abs().sum())
        0.0
    """
    check_module("load_into", "model", model)
    if not isinstance(params, Mapping):
        raise TypeError(
            f"load_into: params must be a mapping of names to tensors, got {type(params).__name__}"
        )
    not_tensors = [k for k, v in params.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise TypeError(f"load_into: params values must be tensors; not tensors: {not_tensors}")
    targets: dict[str, Tensor] = dict(model.named_parameters())
    targets.update(dict(model.named_buffers()))
    unknown = [k for k in params if k not in targets]
    if unknown:
        raise ValueError(
            f"load_into: params has names that {type(model).__name__} does not have: {unknown}; "
            f"allowed: {list(targets)}"
        )
    if strict:
        missing = [k for k, _ in model.named_parameters() if k not in params]
        if missing:
            raise ValueError(f"load_into: params is missing parameters {missing} (strict=True)")
    for k, v in params.items():
        if tuple(v.shape) != tuple(targets[k].shape):
            raise ValueError(
                f"load_into: params[{k!r}] has shape {tuple(v.shape)}, "
                f"the module expects {tuple(targets[k].shape)}"
            )
    with torch.no_grad():
        for k, v in params.items():
            targets[k].copy_(v)
    return model


def tree_equal(a: Any, b: Any) -> bool:
    """True when two pytrees have the same structure and identical tensors.

    The one spelling of "same keys and equal tensors" in ltfunc, for params, optimizer
    states and masks alike (``mask_a == mask_b`` on two :class:`~ltfunc.masks.Mask` objects
    is this function). Keys are part of the structure: a plain dict's keys as a set (optree
    sorts them), a ``Mask``'s keys in their order; a ``Mask`` and a plain dict never compare
    equal. Tensors must agree in dtype, shape and every value; NaN equals NaN at the same
    position (so a snapshot of diverged weights equals itself) and ``0.0`` equals ``-0.0``.

    Args:
        a: First pytree.
        b: Second pytree.

    Returns:
        Whether structure, dtypes, shapes and values all agree.

    Example:
        >>> import torch, ltfunc
        >>> ltfunc.tree_equal({"a": torch.ones(2)}, {"a": torch.ones(2)})
        True
        >>> m = ltfunc.masks.from_dict({"w": [1, 0]})
        >>> ltfunc.tree_equal(m, ltfunc.masks.from_dict({"w": [1, 0]})), ltfunc.tree_equal(m, dict(m))
        (True, False)
    """
    la, ta = optree.tree_flatten(a, none_is_leaf=True)
    lb, tb = optree.tree_flatten(b, none_is_leaf=True)
    if ta != tb or len(la) != len(lb):
        return False
    for x, y in zip(la, lb, strict=False):
        if isinstance(x, Tensor) != isinstance(y, Tensor):
            return False
        if isinstance(x, Tensor):
            if x.dtype != y.dtype or x.shape != y.shape or not _tensor_equal(x.cpu(), y.cpu()):
                return False
        elif x != y:
            return False
    return True


def _tensor_equal(x: Tensor, y: Tensor) -> bool:
    if torch.equal(x, y):
        return True
    if not (x.is_floating_point() or x.is_complex()):
        return False
    nx, ny = torch.isnan(x), torch.isnan(y)
    return torch.equal(nx, ny) and torch.equal(x[~nx], y[~ny])


def atomic_write_bytes(path: str | os.PathLike[str], write: Any) -> None:
    """Write a file atomically: ``write(tmp_path)`` then ``os.replace`` into place.

    Args:
        path: Destination file; parent folders are created.
        write: ``write(tmp_path: str)`` writes the complete file at ``tmp_path``.

    Raises:
        OSError: The file could not be written (the message names ``path``, not the
            temporary file); the temporary file is removed and ``path`` is untouched.
        Whatever else ``write`` raises, likewise.

    Example:
        >>> import pathlib, tempfile
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "sub" / "a.txt"
        >>> atomic_write_bytes(out, lambda tmp: pathlib.Path(tmp).write_text("hi"))
        >>> out.read_text(), sorted(p.name for p in out.parent.iterdir())
        ('hi', ['a.txt'])
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        reason = e.strerror or str(e)
        if e.errno is None:
            raise OSError(f"cannot write {str(path)!r}: {reason}") from e
        raise OSError(e.errno, f"cannot write {str(path)!r}: {reason}") from e
    finally:
        try:
            if tmp.is_file():
                tmp.unlink()
        except OSError:
            pass


def save_tree(
    tree: Mapping[str, Tensor],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Save a ``{name: tensor}`` pytree to a safetensors file, atomically, keeping key order.

    Args:
        tree: Flat dict of tensors (params, buffers, a mask's ``to_dict()``).
        path: Destination file; parent folders are created. An existing file is replaced
            only once the new one is completely written.
        metadata: Extra string metadata stored in the header.

    Raises:
        TypeError: If ``tree`` is not a mapping of str names to tensors, or ``path`` not a
            ``str`` or path.
        ValueError: If ``metadata`` uses the reserved key ``"ltfunc.order"``.

    Example:
        >>> import torch, ltfunc, tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "p.safetensors")
        >>> ltfunc.save_tree({"w": torch.ones(2)}, f); ltfunc.load_tree(f)
        {'w': tensor([1., 1.])}
    """
    check_tree("save_tree", "tree", tree)
    bad_keys = [k for k in tree if not isinstance(k, str)]
    if bad_keys:
        raise TypeError(f"save_tree: tree keys must be str names, got {bad_keys}")
    check_path("save_tree", "path", path)
    if metadata and "ltfunc.order" in metadata:
        raise ValueError("save_tree: metadata key 'ltfunc.order' is reserved (it records the key order)")
    _save_tree(tree, path, metadata)


def _save_tree(
    tree: Mapping[str, Tensor], path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> None:
    """:func:`save_tree` without the argument checks (``tree`` and ``path`` are trusted)."""
    meta = {"ltfunc.order": json.dumps(list(tree))}
    if metadata:
        meta.update({str(k): str(v) for k, v in metadata.items()})
    tensors: dict[str, Tensor] = {}
    seen: set[tuple[str, int]] = set()
    for k, v in tree.items():
        t = v.detach().contiguous().cpu()
        ptr = (str(t.device), t.untyped_storage().data_ptr())
        # safetensors refuses tensors that share memory (tied weights, views of one buffer).
        tensors[k] = t.clone() if ptr in seen else t
        seen.add(ptr)
    atomic_write_bytes(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """Return the string metadata of a safetensors file.

    Args:
        path: A safetensors file.

    Returns:
        The header's metadata (``{}`` when there is none); :func:`save_tree` stores the key
        order under ``"ltfunc.order"``.

    Raises:
        Whatever ``safetensors.safe_open`` raises for a missing or unreadable file.

    Example:
        >>> import os, tempfile, torch, ltfunc
        >>> path = os.path.join(tempfile.mkdtemp(), "t.safetensors")
        >>> ltfunc.save_tree({"w": torch.ones(1)}, path, metadata={"note": "x"})
        >>> read_metadata(path)["note"]
        'x'
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def load_tree(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Params:
    """Load a ``{name: tensor}`` pytree saved by :func:`save_tree` (original key order).

    Args:
        path: A safetensors file.
        device: Where to put the tensors.

    Returns:
        ``{name: tensor}`` in the order it was saved.

    Raises:
        TypeError: If ``path`` is not a ``str`` or path, or ``device`` not a ``str`` or
            ``torch.device``.
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a readable safetensors file (names the file), or
            ``device`` is not a device usable here.

    Example:
        See :func:`save_tree`.
    """
    file = check_path("load_tree", "path", path)
    dev = check_device("load_tree", device)
    if not file.is_file():
        raise FileNotFoundError(f"load_tree: no such file: {file}")
    try:
        tensors = load_file(str(file), device="cpu")
        meta = read_metadata(file)
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"load_tree: {file} is not a valid safetensors file ({exc})") from exc
    try:
        order = json.loads(meta.get("ltfunc.order", "null")) or sorted(tensors)
    except json.JSONDecodeError as exc:
        raise ValueError(f"load_tree: {file} has unreadable key-order metadata ({exc})") from exc
    if not isinstance(order, list) or set(order) != set(tensors) or len(order) != len(tensors):
        raise ValueError(f"load_tree: {file} has inconsistent key metadata")
    return {k: tensors[k] if dev.type == "cpu" else tensors[k].to(dev) for k in order}


def tree_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors in a safetensors file, read from its header only."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
