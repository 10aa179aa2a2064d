"""Small helpers for uniform, informative argument errors."""

from __future__ import annotations

import math
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
