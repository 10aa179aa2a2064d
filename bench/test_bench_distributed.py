"""Smoke test of ``python -m bench.distributed --quick``: the code runs (its numbers mean nothing)."""

from __future__ import annotations

from bench import distributed


def test_quick_mode_measures_one_and_two_processes() -> None:
    rows = distributed.main(["--quick"])
    assert [(r["batch"], r["world"]) for r in rows] == [(60, 1), (60, 2)]
    assert all(r["step_ms"] > 0 and r["steps"] == 3 and not r["compiled"] for r in rows)
    assert rows[0]["allreduce_ms"] == 0 and rows[1]["allreduce_ms"] > 0
    assert "ratio vs 1 process" in distributed.table(rows)
