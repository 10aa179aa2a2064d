"""The run directory's lock file (``.lock``): held while a process writes a run.

Private; :mod:`ltfunc.rundir` re-exports :func:`lock`. Taking the lock is ``O_CREAT | O_EXCL``
(only one process can create the file). Taking over a *stale* lock (its process is gone) is
inspect-then-replace, which two processes could interleave (both see the stale lock, one
replaces it, the other deletes the new lock and takes it too); so every step that looks at or
replaces the lock file runs under an exclusive ``fcntl.flock`` on the run directory itself
(no extra file). Where ``fcntl`` is missing (Windows), or the directory cannot be locked,
the takeover is best effort as before.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"
"""Held in a run directory while a process writes into it: ``{"pid", "host", "since"}``."""


def _lock_holder(path: Path) -> dict[str, Any] | None:
    """The lock's owner, or ``None`` when the lock is stale (its process is gone) or missing."""
    try:
        raw = path.read_text(encoding="utf-8")
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(raw)
        pid, host = int(holder["pid"]), str(holder["host"])
    except (ValueError, KeyError, TypeError):
        # being written right now by its owner (without the guard), or garbage left by a crash
        return {"pid": "?", "host": "?", "since": "?"} if age < 10 else None
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, owned by another user
    return holder


@contextmanager
def _guard(run_dir: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the run directory for a short critical section (no-op without fcntl)."""
    fd = None
    if fcntl is not None:
        with suppress(OSError):
            fd = os.open(run_dir, os.O_RDONLY)
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # a file system without flock: best effort
                os.close(fd)
                fd = None
        yield
    finally:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _acquire(func: str, run_dir: Path, path: Path, mine: dict[str, Any]) -> None:
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _lock_holder(path)
            if holder is None:
                path.unlink(missing_ok=True)  # stale: safe under the guard
                continue
            raise ValueError(
                f"{func}: {run_dir} is in use by process {holder.get('pid')} on {holder.get('host')!r} "
                f"(since {holder.get('since')}); wait for it to finish, or delete {path} if that "
                "process is gone"
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(mine, fh)
        return
    raise ValueError(f"{func}: could not take the lock {path}; another process keeps recreating it")


@contextmanager
def lock(func: str, run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` for the block; refuse (``ValueError``) while another process holds it.

    A lock whose process is gone (same host, dead pid) is taken over, atomically: of several
    processes that find one stale lock together, exactly one gets it. Two processes writing
    into one run directory would interleave rounds and summaries.
    """
    path = run_dir / LOCK_FILE
    mine = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with _guard(run_dir):
        _acquire(func, run_dir, path, mine)
    try:
        yield
    finally:
        with _guard(run_dir):
            try:
                if json.loads(path.read_text(encoding="utf-8")).get("pid") == mine["pid"]:
                    path.unlink()
            except (OSError, ValueError):
                pass
