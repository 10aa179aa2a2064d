"""One masked training step at batch 60: ltfunc against the usual PyTorch ways and the kernel floor.

Every timed runner is first checked to train exactly like the textbook masked step
(``cases.check_against_reference``), which also compiles and warms it up.
"""

from __future__ import annotations

import pytest
import torch

from bench import cases
from ltfunc.masks import Mask

STEP_VARIANTS = (
    "dense-eager",
    "hooks-l1",
    "hooks-global",
    "seed-numpy",
    "seed-torch",
    "ltfunc-eager",
    "ltfunc-compiled",
    "ltfunc-compiled-dense",
)


def build(variant: str, model: str, device: torch.device, optimizer: str) -> tuple[cases.Runner, Mask | None]:
    """The runner of ``variant`` and the mask it trains with (``None``: dense)."""
    mask = cases.make_mask(cases.make_model(model, device))
    if variant == "dense-eager":
        return cases.dense_eager(model, device, optimizer), None
    if variant in ("hooks-l1", "hooks-global"):
        return cases.hooks(model, device, optimizer, variant.removeprefix("hooks-"))
    if variant == "seed-numpy":
        return cases.seed_numpy(model, device, optimizer, mask), mask
    if variant == "seed-torch":
        return cases.masked_eager_torch(model, device, optimizer, mask), mask
    if variant == "ltfunc-compiled-dense":
        return cases.ltfunc_runner(model, device, optimizer, None, compile=True), None
    compiled = variant == "ltfunc-compiled"
    return cases.ltfunc_runner(model, device, optimizer, mask, compile=compiled), mask


@pytest.mark.parametrize("variant", STEP_VARIANTS)
@pytest.mark.parametrize("optimizer", cases.OPTIMIZERS)
@pytest.mark.parametrize("device", cases.DEVICES)
@pytest.mark.parametrize("model", cases.MODELS)
def test_step(measure: cases.Measure, model: str, device: str, optimizer: str, variant: str) -> None:
    dev = torch.device(device)
    runner, mask = build(variant, model, dev, optimizer)
    cases.check_against_reference(runner, model, dev, optimizer, mask)
    measure(runner, cases.fixed_batch(dev), model=model, device=device, variant=variant, optimizer=optimizer)


@pytest.mark.parametrize("device", cases.DEVICES)
@pytest.mark.parametrize("model", cases.MODELS)
def test_floor(measure: cases.Measure, model: str, device: str) -> None:
    dev = torch.device(device)
    runner = cases.floor(model, dev)
    measure(runner, cases.fixed_batch(dev), model=model, device=device, variant="floor", optimizer="-")
