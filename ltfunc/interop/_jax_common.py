"""Private helpers shared by the JAX interop modules: the lazy JAX import and tracer detection.

JAX is an optional extra; nothing here imports it at module import time. :func:`require_jax`
imports it on first use and turns a missing install into an ``ImportError`` naming the extra.
"""

from __future__ import annotations

import importlib
from typing import Any

INSTALL_HINT = "pip install 'ltfunc[jax]'"


def require_jax() -> Any:
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


def is_tracer(jax: Any, x: Any) -> bool:
    """Whether ``x`` is a JAX tracer (a value inside ``jax.jit`` / ``jax.grad``)."""
    tracer = getattr(getattr(jax, "core", None), "Tracer", None)
    return tracer is not None and isinstance(x, tracer)
