"""The sparse training mode (ltfunc.sparse_step): same numbers as the dense masked step."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import ltfunc
from ltfunc import masks
from ltfunc.config import ImpConfig
from ltfunc.experiment import run_imp
from ltfunc.masks import Mask
from ltfunc.optim import OPTIMIZERS
from ltfunc.rundir import load_round
from ltfunc.sparse_step import AUTO_MAX_DENSITY, SparseTrainStep, make_sparse_train_step
from tests.helpers import ConvBN


class Mlp(torch.nn.Module):
    """20-24-10 MLP with biases."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(20, 24)
        self.fc2 = torch.nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def make_model(seed: int = 0) -> Mlp:
    torch.manual_seed(seed)
    return Mlp()


def random_mask(params: dict[str, torch.Tensor], densities: dict[str, float], seed: int = 0) -> Mask:
    g = torch.Generator().manual_seed(seed)
    return masks.from_dict({n: torch.rand(params[n].shape, generator=g) < d for n, d in densities.items()})


def batches(
    n: int, in_shape: tuple[int, ...] = (20,), seed: int = 1
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(8, *in_shape, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(n)
    ]


def assert_opt_state_matches(dense: Any, sparse: Any, mask: Mask, sparse_layers: tuple[str, ...]) -> None:
    """Sparse layers' state equals the dense state at the kept positions (the dense one is 0 elsewhere)."""
    assert type(dense) is type(sparse)
    for field in dense._fields:
        a, b = getattr(dense, field), getattr(sparse, field)
        if isinstance(a, dict):
            for n in a:
                if n in sparse_layers:
                    assert b[n].shape == (int(mask[n].sum()),)
                    torch.testing.assert_close(a[n][mask[n]], b[n], rtol=1e-5, atol=1e-6)
                    assert (a[n][~mask[n]] == 0).all()
                else:
                    torch.testing.assert_close(a[n], b[n], rtol=1e-5, atol=1e-6)
        else:
            torch.testing.assert_close(a, b)


def run_both(
    model: torch.nn.Module, opt: ltfunc.optim.Optimizer, mask: Mask, data: list[Any], *, compile: bool
):
    params = ltfunc.get_params(model)
    dense = ltfunc.make_train_step(model, opt, compile=False)  # the reference (its compiled twin: test_step)
    sparse = make_sparse_train_step(model, opt, mask, sparse="on", compile=compile)
    sd, ss = dense.init(params), sparse.init(params)
    for batch in data:
        sd, md = dense(sd, mask, batch, 0.05)
        ss, ms = sparse(ss, mask, batch, 0.05)
        torch.testing.assert_close(md["loss"], ms["loss"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(md["accuracy"], ms["accuracy"])
    return dense, sparse, sd, ss


@pytest.mark.parametrize("density", [1.0, 0.51, 0.07, 0.0])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_same_numbers_as_dense_masked_step(name: str, density: float) -> None:
    model = make_model()
    params = ltfunc.get_params(model)
    mask = random_mask(params, {"fc1.weight": density, "fc2.weight": 0.5})
    opt = ltfunc.optim.build(name, lr=0.05, weight_decay=1e-3)
    _, sparse, sd, ss = run_both(model, opt, mask, batches(4), compile=False)
    assert sparse.sparse_layers == ("fc1.weight", "fc2.weight")
    assert ss.iteration == sd.iteration == 4
    for n in params:
        torch.testing.assert_close(sd.params[n], ss.params[n], rtol=1e-5, atol=1e-6)
    assert (ss.params["fc1.weight"][~mask["fc1.weight"]] == 0).all()
    assert_opt_state_matches(sd.opt_state, ss.opt_state, mask, sparse.sparse_layers)
    if density == 0.0:
        assert ss.params["fc1.weight"].abs().sum() == 0


def test_compiled_sparse_step_matches_and_compiles_once() -> None:
    model = make_model()
    params = ltfunc.get_params(model)
    mask = random_mask(params, {"fc1.weight": 0.2, "fc2.weight": 0.3})
    _, sparse, sd, ss = run_both(model, ltfunc.optim.adam(lr=0.01), mask, batches(3), compile=True)
    for n in params:  # every layer's gradient reaches it (a compiled custom Function once lost them)
        torch.testing.assert_close(sd.params[n], ss.params[n], rtol=1e-5, atol=1e-6)
        assert not torch.equal(ss.params[n], masks.apply(mask, params)[n])
    assert_opt_state_matches(sd.opt_state, ss.opt_state, mask, sparse.sparse_layers)
    assert sparse.num_compiles == 1


def test_fit_runs_on_the_packed_state_and_matches_the_public_call() -> None:
    model = make_model()
    params = ltfunc.get_params(model)
    mask = random_mask(params, {"fc1.weight": 0.3})
    step = make_sparse_train_step(
        model, ltfunc.optim.sgd(lr=0.1, momentum=0.9), mask, sparse="on", compile=False
    )
    data = batches(5)
    by_call = step.init(params)
    for b in data:
        by_call, _ = step(by_call, mask, b, 0.1)
    by_fit = ltfunc.fit(step, step.init(params), mask, data, 5, lr=0.1)
    assert ltfunc.tree_equal(by_call.params, by_fit.params)
    assert by_fit.iteration == 5


def test_optimizer_state_shrinks_with_density() -> None:
    model = make_model()
    params = ltfunc.get_params(model)
    sizes = {}
    for d in (1.0, 0.5, 0.1):
        mask = random_mask(params, {"fc1.weight": d, "fc2.weight": d})
        step = make_sparse_train_step(model, ltfunc.optim.adam(), mask, sparse="on", compile=False)
        state = step.init(params)
        nnz = sum(int(mask[n].sum()) for n in mask)
        biases = params["fc1.bias"].numel() + params["fc2.bias"].numel()
        total = sum(t.numel() for t in state.opt_state.mu.values()) + sum(
            t.numel() for t in state.opt_state.nu.values()
        )
        assert total == 2 * (nnz + biases)
        sizes[d] = total
    assert sizes[0.1] < sizes[0.5] < sizes[1.0]


def test_pattern_changed_mid_round_is_refused() -> None:
    model = make_model()
    params = ltfunc.get_params(model)
    mask = random_mask(params, {"fc1.weight": 0.3})
    step = make_sparse_train_step(model, ltfunc.optim.sgd(), mask, sparse="on", compile=False)
    state, _ = step(step.init(params), mask, batches(1)[0], 0.1)
    other = random_mask(params, {"fc1.weight": 0.3}, seed=5)
    with pytest.raises(ValueError, match=r"train_step: pattern changed mid-round: mask\['fc1.weight'\]"):
        step(state, other, batches(1)[0], 0.1)
    with pytest.raises(ValueError, match="pattern changed mid-round"):
        step(state, None, batches(1)[0], 0.1)
    wider = random_mask(params, {"fc1.weight": 0.3, "fc2.weight": 1.0})
    with pytest.raises(ValueError, match="pattern changed mid-round: mask covers"):
        step(state, wider, batches(1)[0], 0.1)
    # an equal mask (another object) is the same pattern
    same = masks.from_dict({"fc1.weight": mask["fc1.weight"].clone()})
    step(state, same, batches(1)[0], 0.1)
    edited = masks.from_dict({"fc1.weight": mask["fc1.weight"].clone()})
    step(state, edited, batches(1)[0], 0.1)
    edited["fc1.weight"][0, 0] = ~edited["fc1.weight"][0, 0]
    with pytest.raises(ValueError, match="modified in place"):
        step(state, edited, batches(1)[0], 0.1)


def test_layers_without_a_sparse_kernel_run_dense_masked() -> None:
    torch.manual_seed(0)
    model = ConvBN()
    params = ltfunc.get_params(model)
    mask = random_mask(params, {"conv.weight": 0.5, "fc1.weight": 0.1, "fc2.weight": 0.5})
    data = batches(3, (1, 28, 28))
    opt = ltfunc.optim.sgd(lr=0.05, momentum=0.9)  # not Adam: conv.bias before BN has a ~0 gradient
    dense = ltfunc.make_train_step(model, opt, compile=False)
    sparse = make_sparse_train_step(model, opt, mask, sparse="on", compile=False)
    assert sparse.sparse_layers == ("fc1.weight", "fc2.weight")
    assert sparse.dense_fallback == ("conv.weight",)
    sd, ss = dense.init(params), sparse.init(params)
    for b in data:
        sd, _ = dense(sd, mask, b, 0.01)
        ss, _ = sparse(ss, mask, b, 0.01)
    for n in params:
        torch.testing.assert_close(sd.params[n], ss.params[n], rtol=1e-5, atol=1e-6)
    assert (ss.params["conv.weight"][~mask["conv.weight"]] == 0).all()
    assert ss.opt_state.momentum["conv.weight"].shape == params["conv.weight"].shape
    for k in sd.buffers:  # BatchNorm statistics travel as in the dense step
        torch.testing.assert_close(sd.buffers[k], ss.buffers[k])


def test_auto_picks_low_density_linear_layers_of_compiled_steps_only() -> None:
    model = make_model()
    params = ltfunc.get_params(model)
    low = min(AUTO_MAX_DENSITY / 2, 0.05)
    mask = random_mask(params, {"fc1.weight": low, "fc2.weight": 0.9})
    assert make_sparse_train_step(model, ltfunc.optim.sgd(), mask, compile=True).sparse_layers == (
        "fc1.weight",
    )
    assert make_sparse_train_step(model, ltfunc.optim.sgd(), mask, compile=False).sparse_layers == ()
    assert make_sparse_train_step(model, ltfunc.optim.sgd(), mask, sparse="off").sparse_layers == ()
    assert make_sparse_train_step(model, ltfunc.optim.sgd(), None, sparse="on").sparse_layers == ()


def test_pack_unpack_and_bad_input() -> None:
    model = make_model()
    params = ltfunc.get_params(model)
    mask = random_mask(params, {"fc1.weight": 0.4})
    step = make_sparse_train_step(model, ltfunc.optim.sgd(), mask, sparse="on", compile=False)
    assert isinstance(step, SparseTrainStep) and "fc1.weight" in repr(step)
    packed = step.pack(params)
    torch.testing.assert_close(packed["fc1.weight"], params["fc1.weight"][mask["fc1.weight"]])
    assert ltfunc.tree_equal(step.unpack(packed), masks.apply(mask, params))
    with pytest.raises(
        ValueError,
        match=r"make_sparse_train_step: sparse='maybe' is not supported\. Supported: 'auto', 'on', 'off'",
    ):
        make_sparse_train_step(model, ltfunc.optim.sgd(), mask, sparse="maybe")
    with pytest.raises(
        TypeError, match="make_sparse_train_step: mask must be an ltfunc Mask or None, got dict"
    ):
        make_sparse_train_step(model, ltfunc.optim.sgd(), {"fc1.weight": mask["fc1.weight"]})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="make_sparse_train_step"):
        make_sparse_train_step(
            model, ltfunc.optim.sgd(), masks.from_dict({"fc1.weight": torch.ones(3, 3, dtype=torch.bool)})
        )
    with pytest.raises(ValueError, match=r"opt_state tensor for 'fc1\.weight'"):  # a dense optimizer state
        heavy = ltfunc.optim.sgd(momentum=0.9)
        momentum_step = make_sparse_train_step(model, heavy, mask, sparse="on", compile=False)
        momentum_step(ltfunc.TrainState(params, heavy.init(params)), mask, batches(1)[0], 0.1)
    with pytest.raises(ValueError, match="make_trainer: sparse='yes' is not supported"):
        ltfunc.make_trainer(
            ltfunc.make_train_step(model, ltfunc.optim.sgd(), compile=False),
            batches(1)[0],
            iterations=2,
            batch_size=4,
            sparse="yes",
        )
    with pytest.raises(ValueError, match="ImpConfig: sparse='yes' is not supported"):
        ImpConfig(sparse="yes")


# -------------------------------------------------------------------------------- a whole IMP run
def tiny_mlp(seed: int | None = None) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0 if seed is None else seed)
        return torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
        )


def test_imp_run_in_sparse_mode_gives_the_same_masks(tmp_path: Any, monkeypatch: Any) -> None:
    base = {
        "model": "tests.test_sparse_step:tiny_mlp",
        "dataset": "tests.helpers:tiny_dataset",
        "rounds": 3,
        "rate": 0.5,
        "iterations": 20,
        "eval_every": 10,
        "val_size": 50,
        "batch_size": 16,
        "baselines": ("random_prune",),
        "compile": False,
        "optimizer": "adam",
        "lr": 0.01,
    }
    run_imp(ImpConfig(**base), tmp_path / "dense", progress=False)
    made: list[SparseTrainStep] = []

    def recording(*args: Any, **kwargs: Any) -> SparseTrainStep:
        made.append(make_sparse_train_step(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(ltfunc.sparse_step, "make_sparse_train_step", recording)
    run_imp(ImpConfig(**base, sparse="on"), tmp_path / "sparse", progress=False)
    assert len(made) == 4 + 3  # one step per round: the ticket's 4, the baseline's 3
    assert all(s.sparse_layers == ("1.weight", "3.weight") for s in made)
    for cond, first in (("ticket", 0), ("random_prune", 1)):
        for k in range(first, 4):
            a, b = load_round(tmp_path / "dense", cond, k), load_round(tmp_path / "sparse", cond, k)
            assert ltfunc.tree_equal(dict(a.mask), dict(b.mask))
            for n in a.final.params:
                torch.testing.assert_close(a.final.params[n], b.final.params[n], rtol=1e-4, atol=1e-5)
    assert masks.density(load_round(tmp_path / "sparse", "ticket", 3).mask) < 0.2


def test_the_cli_flag_sets_the_config_field(capsys: pytest.CaptureFixture[str]) -> None:
    from ltfunc.cli import imp_config_from_args

    cfg, _ = imp_config_from_args(["imp", "--sparse", "auto", "--iterations", "100", "--name", "x"])
    assert cfg.sparse == "auto" and cfg.to_dict()["sparse"] == "auto"
    plain, _ = imp_config_from_args(["imp", "--iterations", "100", "--name", "x"])
    assert plain.sparse == "off" and "sparse" not in plain.to_dict()  # old hashes unchanged
    with pytest.raises(SystemExit):
        imp_config_from_args(["imp", "--sparse", "always"])
    assert "invalid choice: 'always'" in capsys.readouterr().err
