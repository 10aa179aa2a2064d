"""Smoke test of bench/parallel.py (quick mode: tiny runs, not a measurement)."""

from __future__ import annotations

import pytest

from bench import parallel


def test_quick_mode_runs(capsys: pytest.CaptureFixture[str]) -> None:
    parallel.main(["--quick", "--one-thread"])
    out = capsys.readouterr().out
    assert "| sequential |" in out and "| processes |" in out and "aim <= 0.55x" in out
    assert "| sequential, 1 thread |" in out and "processes / one-thread sequential" in out
