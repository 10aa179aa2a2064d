"""The member-throughput benchmark (``bench/members.py``) in its quick form: it runs, numbers are finite."""

from __future__ import annotations

import math

import pytest

from bench import members


def test_members_quick(capsys: pytest.CaptureFixture[str]) -> None:
    rows = members.main(["--quick", "--models", "lenet300", "--ks", "2"])
    variants = {(2, v, m) for v in ("members", "sequential") for m in ("reuse", "system")}
    assert {(r["k"], r["variant"], r["malloc"]) for r in rows} == variants | {(2, "processes", "reuse")}
    for r in rows:
        assert math.isfinite(r["best"]) and r["best"] >= r["median"] > 0, r
        assert r["variant"] == "processes" or r["faults"] >= 0, r
    out = capsys.readouterr().out
    assert "| LeNet-300-100 | 2 | reuse |" in out and "| LeNet-300-100 | 2 | system |" in out
    assert "machine:" in out
