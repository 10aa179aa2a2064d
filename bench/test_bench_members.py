"""The member-throughput benchmark (``bench/members.py``) in its quick form: it runs, numbers are finite."""

from __future__ import annotations

import math

import pytest

from bench import members


def test_members_quick(capsys: pytest.CaptureFixture[str]) -> None:
    rows = members.main(["--quick", "--models", "lenet300", "--ks", "2"])
    assert {(r["k"], r["variant"]) for r in rows} == {(2, v) for v in ("members", "sequential", "processes")}
    for r in rows:
        assert math.isfinite(r["best"]) and r["best"] >= r["median"] > 0, r
    out = capsys.readouterr().out
    assert "| LeNet-300-100 | 2 |" in out and "machine:" in out
