"""The facade's drop-in speed (``bench/facade.py``), in its short form: printed, never asserted."""

from __future__ import annotations

import math
from pathlib import Path

from bench import facade


def test_facade_iteration_and_mask_search(data_root: Path, capsys: object) -> None:
    rows = facade.part_iteration(data_root, quick=True) + facade.part_masks(data_root, quick=True)
    for name, lo, med in rows:
        assert math.isfinite(lo) and 0 < lo <= med, name
        print(f"{name:40s} min {lo:10.1f} median {med:10.1f}")
