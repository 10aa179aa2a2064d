"""Shared fixtures: the real-data root and small synthetic inputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def find_data_root() -> Path | None:
    """$LTFUNC_DATA_ROOT, else ../shared/data beside the project, if it holds MNIST."""
    candidates = []
    if os.environ.get("LTFUNC_DATA_ROOT"):
        candidates.append(Path(os.environ["LTFUNC_DATA_ROOT"]))
    candidates.append(ROOT.parent / "shared" / "data")
    for c in candidates:
        if (c / "mnist" / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return c
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = find_data_root()
    if root is None:
        pytest.skip(
            "real MNIST not found: set LTFUNC_DATA_ROOT to a folder holding mnist/ and "
            "fashion-mnist/ in torchvision layout (looked in $LTFUNC_DATA_ROOT and ../shared/data)"
        )
    return root


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
