"""Small helpers for uniform, informative argument errors."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


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


def check_fits(
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
