"""Smoke test of bench/floor.py (quick mode: a few short windows, not a measurement)."""

from __future__ import annotations

import pytest

from bench import floor


def test_quick_mode_runs(capsys: pytest.CaptureFixture[str]) -> None:
    floor.main(["--quick", "--threads", "1"])
    out = capsys.readouterr().out
    assert "| ltfunc |" in out and "| roofline floor |" in out and "ltfunc / matmul floor" in out
