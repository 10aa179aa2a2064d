"""The allocator benchmark (``bench/malloc.py``) in a short form: both processes report, numbers are sane."""

from __future__ import annotations

import math
import platform

import pytest

from bench import malloc


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_malloc_short(capsys: pytest.CaptureFixture[str]) -> None:
    rows = malloc.main(["--models", "lenet300", "--windows", "2", "--steps", "2"])
    assert sorted(r["malloc"] for r in rows) == ["reuse", "system"]
    for r in rows:
        assert math.isfinite(r["min"]) and 0 < r["min"] <= r["median"], r
        assert r["faults"] >= 0 and r["weights"] == 266_610, r
    assert "| LeNet-300-100 | 266,610 |" in capsys.readouterr().out
