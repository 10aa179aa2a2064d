"""A process that races for a run directory's lock (for the stale-lock test).

Imported by the test's fork server up front, so the racing processes start without importing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ltfunc import rundir


def race_for_lock(run_dir: str, start: Any, done: Any, wins: Any) -> None:
    start.wait()
    try:
        with rundir.lock("run_imp", Path(run_dir)):
            wins.put(1)
            done.wait()  # hold the lock until every process has tried
            return
    except ValueError:
        pass
    done.wait()
