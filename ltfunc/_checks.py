"""The one validation layer: uniform, informative argument errors for the public entry points.

Every message names the function, the argument, the value received and what is allowed.
Public functions validate their inputs with these helpers; internal calls trust their inputs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, overload

import torch
from torch import Tensor, nn


def check_int(func: str, name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """Validate an ``int`` (not ``bool``) in ``[low, high]`` (either bound optional) and return it.

    Raises:
        TypeError: not an int. ValueError: out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{func}: {name} must be an int, got {type(value).__name__} {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            allowed = f">= {low}"
        elif low is None:
            allowed = f"<= {high}"
        else:
            allowed = f"in [{low}, {high}]"
        raise ValueError(f"{func}: {name} must be an int {allowed}, got {value!r}")
    return value


def check_seed(func: str, value: Any, *, name: str = "seed", optional: bool = False) -> int | None:
    """Validate an integer seed (not ``bool``; any sign) and return it; ``None`` too with ``optional``.

    Raises:
        TypeError: not an int (and not ``None`` where ``optional``).
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{func}: {name} must be an int{' or None' if optional else ''}, "
            f"got {type(value).__name__} {value!r}"
        )
    return value


def check_rng(func: str, seed: Any, generator: Any, *, required: bool = False) -> None:
    """Validate the ``seed=`` / ``generator=`` pair of a random function.

    At most one of them may be given (exactly one with ``required``); ``seed`` is an int,
    ``generator`` a ``torch.Generator``. Where the generator may live is the caller's check.

    Raises:
        TypeError: a seed that is not an int, a generator that is not a ``torch.Generator``.
        ValueError: both given, or neither where ``required``.
    """
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"{func}: generator must be a torch.Generator, got {type(generator).__name__}")
        if seed is not None:
            raise ValueError(f"{func}: give seed= or generator=, not both")
        return
    if seed is None:
        if required:
            raise ValueError(f"{func}: give seed= (an int) or generator= for reproducibility")
        return
    check_seed(func, seed)


def check_bool(func: str, name: str, value: Any) -> bool:
    """Validate a ``bool`` and return it."""
    if not isinstance(value, bool):
        raise TypeError(f"{func}: {name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def check_number(
    func: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
) -> float:
    """Validate a finite real number (``int`` or ``float``, not ``bool``) within bounds; return a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{func}: {name} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    ok = math.isfinite(v)
    if low is not None:
        ok = ok and (v > low if open_low else v >= low)
    if high is not None:
        ok = ok and (v < high if open_high else v <= high)
    if not ok:
        lo = "(-inf" if low is None else (f"({low}" if open_low else f"[{low}")
        hi = "inf)" if high is None else (f"{high})" if open_high else f"{high}]")
        raise ValueError(f"{func}: {name} must be a finite number in {lo}, {hi}, got {value!r}")
    return v


def check_lr(func: str, value: Any, name: str = "lr") -> float:
    """Validate a learning-rate value: a finite number >= 0 (a python number or a 0-d CPU tensor)."""
    if isinstance(value, Tensor) and value.dim() == 0 and value.is_floating_point():
        value = float(value)
    return check_number(func, name, value, low=0.0)


def check_fraction(func: str, name: str, value: Any, *, allow_one: bool = False) -> float:
    """Validate a fraction in [0, 1) (or [0, 1] with ``allow_one``) and return it as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{func}: {name} must be a float, got {type(value).__name__} {value!r}")
    v = float(value)
    upper_ok = v <= 1.0 if allow_one else v < 1.0
    if not (math.isfinite(v) and v >= 0.0 and upper_ok):
        allowed = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(f"{func}: {name} must be in {allowed}, got {value!r}")
    return v


def check_choice(func: str, name: str, value: Any, choices: tuple[str, ...] | list[str]) -> str:
    """Validate that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(
            f"{func}: {name}={value!r} is not supported. Supported: {', '.join(map(repr, choices))}"
        )
    return value


def check_tree(func: str, name: str, value: Any, *, nonempty: bool = False, optional: bool = False) -> None:
    """Validate a dict (any ``Mapping``) of tensors: params, buffers, optimizer moments.

    Args:
        nonempty: Refuse an empty mapping. optional: Accept ``None``.
    """
    if value is None and optional:
        return
    if (
        not isinstance(value, Mapping)
        or not all(isinstance(v, Tensor) for v in value.values())
        or (nonempty and not value)
    ):
        what = "a non-empty dict of tensors" if nonempty else "a dict of tensors"
        raise TypeError(
            f"{func}: {name} must be {what}{' or None' if optional else ''}, got {type(value).__name__}"
        )


def check_module(func: str, name: str, value: Any) -> nn.Module:
    """Validate a ``torch.nn.Module`` and return it."""
    if not isinstance(value, nn.Module):
        raise TypeError(f"{func}: {name} must be a torch.nn.Module, got {type(value).__name__}")
    return value


def check_device(func: str, value: Any, name: str = "device") -> torch.device:
    """Validate a device (a ``str`` or ``torch.device``) that tensors can be created on here.

    Returns:
        The ``torch.device``.

    Raises:
        TypeError: neither a ``str`` nor a ``torch.device``.
        ValueError: not a device name, or a device this machine does not have (``"cuda"``
            without CUDA).
    """
    if not isinstance(value, (str, torch.device)):
        raise TypeError(f"{func}: {name} must be a str or torch.device, got {type(value).__name__} {value!r}")
    try:
        dev = torch.device(value)
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as e:
        raise ValueError(f"{func}: {name}={value!r} is not usable here ({e})") from e
    return dev


@overload
def check_path(func: str, name: str, value: Any, *, optional: Literal[False] = False) -> Path: ...
@overload
def check_path(func: str, name: str, value: Any, *, optional: bool) -> Path | None: ...
def check_path(func: str, name: str, value: Any, *, optional: bool = False) -> Path | None:
    """Validate a file-system path (a ``str`` or ``os.PathLike``) and return it as a ``Path``.

    ``None`` is returned as ``None`` where ``optional``. Whether the path exists is the
    caller's check.

    Raises:
        TypeError: neither a ``str`` nor a path-like object (nor ``None`` where ``optional``).
    """
    if value is None and optional:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"{func}: {name} must be a str or path{' or None' if optional else ''}, "
            f"got {type(value).__name__} {value!r}"
        )
    return Path(value)


def check_callable(func: str, name: str, value: Any, what: str, *, optional: bool = False) -> None:
    """Validate a callable (``what`` describes its signature, e.g. ``"callable(state, loss)"``)."""
    if value is None and optional:
        return
    if not callable(value):
        raise TypeError(f"{func}: {name} must be {'None or ' if optional else ''}{what}, got {value!r}")


def check_mask(func: str, name: str, value: Any, *, optional: bool = False) -> None:
    """Validate an :class:`ltfunc.masks.Mask` (``None`` too with ``optional``)."""
    from .masks import Mask  # masks imports this module

    if value is None and optional:
        return
    if not isinstance(value, Mask):
        allowed = "an ltfunc Mask or None" if optional else "an ltfunc Mask"
        raise TypeError(f"{func}: {name} must be {allowed}, got {type(value).__name__}")


def check_mask_fits(
    func: str, name: str, items: Mapping[str, Any], params: Mapping[str, Any], hint: str = ""
) -> None:
    """Raise ``ValueError`` unless every key of ``items`` is in ``params`` with the same shape.

    ``items`` is a mask-like mapping of anything with a ``.shape`` (torch tensors, numpy or
    JAX arrays); ``None`` entries are skipped. ``hint`` is appended to the shape error.
    """
    unknown = [k for k in items if k not in params]
    if unknown:
        raise ValueError(
            f"{func}: {name} has keys {unknown} that are not in params (mask for a different "
            f"model?); params keys: {list(params)}"
        )
    for k, m in items.items():
        if m is None:
            continue
        shape, want = tuple(m.shape), tuple(params[k].shape)
        if shape != want:
            raise ValueError(
                f"{func}: {name}[{k!r}] has shape {shape} but params[{k!r}] has shape {want}{hint}"
            )


def check_output_path(
    func: str, name: str, path: Any, *, folder: bool = False, suffix: str | None = None
) -> Path:
    """Validate a path to write to, before any work: a file (or with ``folder``, a folder).

    Refuses an existing directory where a file is wanted (an existing non-directory where a
    folder is wanted), a path below something that is not a directory (``file.txt/x.png``,
    ``/dev/full/x``), a parent folder this process cannot write to, and (with ``suffix``) a
    file name with another suffix. Missing parent folders are fine: writers create them.

    Returns:
        The path as a ``Path``.

    Raises:
        TypeError: not a ``str`` or path. ValueError: a path that cannot be written (the
            message names ``func``, ``name`` and the path).
    """
    p = check_path(func, name, path)
    where = f"{func}: {name} {str(p)!r}"
    if folder:
        if p.exists() and not p.is_dir():
            raise ValueError(f"{where} is an existing file, not a folder; give a folder path")
    else:
        if p.is_dir():
            raise ValueError(f"{where} is a directory; give a file path")
        if suffix is not None and p.suffix.lower() != suffix:
            raise ValueError(f"{where} must end with {suffix}")
    parent = p if folder and p.is_dir() else p.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{where} cannot be written: {str(parent)!r} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{where} cannot be written: no write permission in {str(parent)!r}")
    return p
