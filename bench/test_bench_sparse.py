"""Smoke test of bench/sparse.py (quick mode: eager steps, short windows; not a measurement)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import sparse


def test_quick_mode_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = sparse.main(["--quick", "--models", "lenet300,conv2", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| model | density % | dense-masked µs | sparse µs | floor µs |" in out
    assert [(r["model"], r["density"]) for r in rows] == [
        (m, d) for m in ("lenet300", "conv2") for d in sparse.QUICK_DENSITIES
    ]
    assert (tmp_path / "sparse_step.png").stat().st_size > 0
    # the optimizer state shrinks with the density (sparse layers hold only their values)
    assert "| lenet300 | 3.6 |" in out


def test_density_mask_keeps_the_asked_fraction_per_layer() -> None:
    import ltfunc

    model = ltfunc.models.lenet300(seed=0)
    mask = sparse.density_mask(model, 0.036)
    for name, m in mask.items():
        assert int(m.sum()) == round(0.036 * m.numel()), name
