"""A whole training iteration, fetching the batch included, on real MNIST.

ltfunc: the dataset lives on the device, ``ltfunc.data.batches`` gathers each batch there,
the compiled masked step trains. Baseline: ``torch.utils.data.DataLoader`` over torchvision
MNIST with ``ToTensor`` + ``Normalize`` (what the seed and its peers do), ``.to(device)``,
an eager step.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench import cases
from ltfunc.data import batches, load_dataset

ITER_VARIANTS = ("iter-ltfunc", "iter-dataloader", "iter-dataloader-seed")
OPTIMIZER = "adam"  # Frankle & Carbin's optimizer for LeNet-300-100 and Conv-2


@pytest.mark.parametrize("variant", ITER_VARIANTS)
@pytest.mark.parametrize("device", cases.DEVICES)
@pytest.mark.parametrize("model", cases.MODELS)
def test_iteration(measure: cases.Measure, data_root: Path, model: str, device: str, variant: str) -> None:
    dev = torch.device(device)
    mask = cases.make_mask(cases.make_model(model, dev))
    if variant == "iter-ltfunc":
        ds = load_dataset("mnist", data_root, device=dev, download=False)
        feed = batches(ds.train, cases.BATCH, seed=0)
        runner = cases.ltfunc_runner(model, dev, OPTIMIZER, mask, compile=True)
        cases.check_against_reference(runner, model, dev, OPTIMIZER, mask)
    elif variant == "iter-dataloader":
        feed = cases.dataloader_batches(data_root, dev)
        runner = cases.dense_eager(model, dev, OPTIMIZER)
    else:
        feed = cases.dataloader_batches(data_root, dev)
        runner = cases.seed_numpy(model, dev, OPTIMIZER, mask)
    measure(runner, feed, model=model, device=device, variant=variant, optimizer=OPTIMIZER)
