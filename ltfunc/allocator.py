"""Keep freed memory in the process, so a step's large buffers do not page-fault on every call.

A compiled step allocates its outputs anew on every call (new params, optimizer state,
gradients) and frees the previous ones. PyTorch's CPU allocator takes that memory from the C
library's ``malloc``; glibc serves blocks above its mmap threshold (at most 32 MiB) with fresh
``mmap`` pages and unmaps them on ``free``, so every call touches new pages and pays a page
fault (and the kernel zeroing the page) per 4 KiB. Large buffers hit this: K = 4 stacked
Conv-2 members (four 13 MB params rows in one 53 MB buffer, the same for each Adam moment)
run at about two thirds of the speed of four sequential steps with glibc as it is and at the
same speed with this setting, and a ResNet-20 step at batch 128 (activations of megabytes
each) takes three quarters of the time with it (``bench/README.md``, "Memory reuse").

:func:`reuse_freed_memory` tells glibc to serve every block from its heap and to keep freed
memory there (up to 2 GiB free at the top of the heap), so the next call reuses pages that are
already mapped. The peak memory of the process is unchanged; what is freed stays resident for
reuse instead of going back to the system. The ``ltfunc`` command and its worker processes
call it at start; set ``LTFUNC_SYSTEM_MALLOC=1`` to leave malloc as it is. A library user
calls it once at the start of a training script.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["TRIM_THRESHOLD", "reuse_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1
"""Bytes free at the top of the heap above which glibc gives memory back (mallopt's maximum)."""


def reuse_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse: no ``mmap`` blocks, trimming only above 2 GiB free.

    Sets ``mallopt(M_MMAP_MAX, 0)`` and ``mallopt(M_TRIM_THRESHOLD, 2**31 - 1)`` for this
    process (the effect of ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``). Calling
    it again changes nothing. Elsewhere than on glibc (macOS, musl, Windows) it does nothing.

    Returns:
        ``True`` if glibc took both settings, ``False`` where there is no glibc ``mallopt``.

    Raises:
        Nothing: a setting glibc refuses makes it return ``False``.

    Example:
        >>> import ltfunc.allocator
        >>> ltfunc.allocator.reuse_freed_memory() in (True, False)
        True
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - glibc without mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def at_entry() -> bool:
    """:func:`reuse_freed_memory` unless ``LTFUNC_SYSTEM_MALLOC`` is set (the entry points' call)."""
    if os.environ.get("LTFUNC_SYSTEM_MALLOC", "") not in ("", "0"):
        return False
    return reuse_freed_memory()
