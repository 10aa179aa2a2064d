"""The sweep executors' overhead per run (``bench/sweep.py``), in its short form: printed, never asserted."""

from __future__ import annotations

import math

from bench import sweep


def test_sweep_overhead_quick_runs_and_prints() -> None:
    rows = sweep.main(["--quick"])
    modes = [r[0] for r in rows]
    assert modes[:3] == ["in-process", "local, 1 worker", "local, 2 workers"]
    for mode, wall, per_run, overhead in rows:
        assert math.isfinite(wall) and math.isfinite(per_run) and math.isfinite(overhead), mode
        assert per_run == wall / 2, mode
