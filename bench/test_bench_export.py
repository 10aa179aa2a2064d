"""``bench/export.py`` in its quick form: it runs and every variant agrees with the dense model."""

from __future__ import annotations

import math
from pathlib import Path

from bench import export


def test_export_bench_quick(tmp_path: Path, capsys: object) -> None:
    rows = export.measure("lenet300", export.QUICK_DENSITIES, export.QUICK_BATCHES, quick=True)
    rows += export.measure("conv2", (0.036,), (1,), quick=True)
    variants = {r.variant for r in rows}
    assert {"dense", "csr", "csr+convs", "bsr (block mask)", "auto"} <= variants
    for r in rows:
        assert math.isfinite(r.min_us) and 0 < r.min_us <= r.median_us, r
        assert r.max_diff < 1e-4, r  # every variant computes the dense masked model
    dense_rows = [r for r in rows if r.variant == "dense"]
    assert all(r.speedup == 1.0 and r.sparse_layers.startswith("0/") for r in dense_rows)
    csr = next(r for r in rows if r.variant == "csr" and r.model == "lenet300")
    assert csr.sparse_layers == "3/3 csr"
    table = export.format_table(rows)
    assert table.count("\n| lenet300 |") == len([r for r in rows if r.model == "lenet300"])
    assert "baseline" in table and ("no speed-up" in table or "faster" in table)
    out = tmp_path / "t.md"
    assert export.main(["--quick", "--models", "lenet300", "--out", str(out)]) == 0
    assert "| lenet300 | 32 | 3.6% | csr | 3/3 csr |" in out.read_text()
    print(table)
