"""The same masked step in JAX + optax under ``jax.jit`` (skipped when JAX is not installed)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("jax", reason="jax is not installed (pip install 'ltfunc[jax]' optax)")
pytest.importorskip("optax", reason="optax is not installed (pip install optax)")

from bench import cases


@pytest.mark.parametrize("optimizer", cases.OPTIMIZERS)
@pytest.mark.parametrize("device", cases.DEVICES)
@pytest.mark.parametrize("model", cases.MODELS)
def test_jax_step(measure: cases.Measure, model: str, device: str, optimizer: str) -> None:
    import jax

    from bench.jax_cases import jax_runner

    dev = torch.device(device)
    if dev.type == "cuda":
        try:
            jax.devices("gpu")
        except RuntimeError:
            pytest.skip("this JAX has no GPU backend (pip install 'jax[cuda12]')")
    mask = cases.make_mask(cases.make_model(model, dev))
    runner = jax_runner(model, dev, optimizer, mask)
    cases.check_against_reference(runner, model, dev, optimizer, mask)
    batch = runner.convert(*cases.fixed_batch(dev))
    measure(runner, batch, model=model, device=device, variant="jax-jit", optimizer=optimizer)
