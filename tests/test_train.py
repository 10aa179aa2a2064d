"""The training loop: iterations, evaluation callbacks, lr schedules, NaN detection, real MNIST."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from helpers import ConvBN, train_reference, tree_allclose, tree_clone
from torch import nn

import ltfunc
from ltfunc import masks, optim, train
from ltfunc.data import batches, load_dataset
from ltfunc.step import make_train_step
from ltfunc.train import TrainState, fit


class TinyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def tiny_batches(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 12, generator=g), torch.randint(0, 5, (16,), generator=g)) for _ in range(n)]


class Recorder:
    """A generic step (not a TrainStep) that records what it was called with."""

    def __init__(self, step: Any, nan_at: int | None = None, value: float = float("nan")) -> None:
        self.step, self.optimizer = step, step.optimizer
        self.losses: list[float] = []
        self.lrs: list[torch.Tensor] = []
        self.nan_at, self.value = nan_at, value

    def __call__(self, params, opt_state, mask, batch, lr):
        self.lrs.append(lr)
        params, opt_state, metrics = self.step(params, opt_state, mask, batch, lr)
        if self.nan_at is not None and len(self.lrs) == self.nan_at:
            metrics = {**metrics, "loss": torch.tensor(self.value)}
        self.losses.append(float(metrics["loss"]))
        return params, opt_state, metrics


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = TinyMLP()
    opt = optim.adam(lr=0.01)
    step = make_train_step(model, opt, compile=False)
    params = ltfunc.get_params(model)
    return step, params, masks.Mask({"fc1.weight": torch.rand(16, 12) < 0.5})


def manual(step, params, opt_state, mask, batches, lrs):
    for batch, lr in zip(batches, lrs, strict=True):
        params, opt_state, _ = step(params, opt_state, mask, batch, lr)
    return params, opt_state


def test_fit_runs_iterations_and_equals_the_manual_loop(setup) -> None:
    step, p, mask = setup
    batches = tiny_batches(10)
    state = fit(step, train.init(step, p, iteration=3), mask, iter(batches), 7, lr=0.01)
    assert isinstance(state, TrainState) and state.iteration == 10
    ref_p, ref_s = manual(step, p, step.optimizer.init(p), mask, batches[:7], [0.01] * 7)
    assert ltfunc.tree_equal(state.params, ref_p) and ltfunc.tree_equal(state.opt_state, ref_s)
    assert torch.count_nonzero(state.params["fc1.weight"][~mask["fc1.weight"]]) == 0


def test_fast_path_and_generic_step_agree(setup) -> None:
    step, p, mask = setup
    batches = tiny_batches(9)
    schedule = lambda it: 0.01 if it < 4 else 0.002  # noqa: E731
    fast = fit(step, train.init(step, p), mask, batches, 9, lr=schedule, eval_every=4)
    generic = fit(Recorder(step), train.init(step, p), mask, batches, 9, lr=schedule, eval_every=4)
    assert ltfunc.tree_equal(fast.params, generic.params)
    assert ltfunc.tree_equal(fast.opt_state, generic.opt_state)


def test_on_eval_is_called_at_multiples_of_eval_every_with_the_mean_loss(setup) -> None:
    step, p, mask = setup
    rec = Recorder(step)
    calls: list[tuple[int, float, dict]] = []
    start = train.init(step, p, iteration=5)
    state = fit(
        rec,
        start,
        mask,
        tiny_batches(12),
        12,
        lr=0.01,
        eval_every=4,
        on_eval=lambda s, loss: calls.append((s.iteration, loss, tree_clone(s.params))),
    )
    # iterations 6..17 were reached; multiples of 4 counted from 0: 8, 12, 16
    assert [c[0] for c in calls] == [8, 12, 16]
    # losses of steps 6-8, 9-12, 13-16 (step k takes iteration k-1 to k)
    expected = [sum(rec.losses[0:3]) / 3, sum(rec.losses[3:7]) / 4, sum(rec.losses[7:11]) / 4]
    assert [c[1] for c in calls] == pytest.approx(expected, rel=1e-6)
    # the state given to on_eval is the state after that step
    ref_p, _ = manual(step, p, step.optimizer.init(p), mask, tiny_batches(12)[:3], [0.01] * 3)
    assert ltfunc.tree_equal(calls[0][2], ref_p)
    assert state.iteration == 17


def test_fast_path_on_eval_gets_the_same_states(setup) -> None:
    step, p, mask = setup
    got: dict[str, list] = {"fast": [], "generic": []}
    for name, s in (("fast", step), ("generic", Recorder(step))):
        fit(
            s,
            train.init(step, p),
            mask,
            tiny_batches(6),
            6,
            lr=0.01,
            eval_every=2,
            on_eval=lambda st, loss, name=name: got[name].append((st.iteration, loss, tree_clone(st))),
        )
    assert [g[0] for g in got["fast"]] == [2, 4, 6]
    for (i1, l1, s1), (i2, l2, s2) in zip(got["fast"], got["generic"], strict=True):
        assert i1 == i2 and l1 == pytest.approx(l2, rel=1e-6) and ltfunc.tree_equal(s1, s2)


def test_lr_schedule_and_tensor_replaced_only_on_change(setup) -> None:
    step, p, mask = setup
    rec = Recorder(step)

    def warmup_then_decay(it: int) -> float:
        return 0.01 * min(1.0, (it + 1) / 3) * (0.1 if it >= 6 else 1.0)

    state = fit(rec, train.init(step, p, iteration=1), mask, tiny_batches(8), 8, lr=warmup_then_decay)
    values = [warmup_then_decay(it) for it in range(1, 9)]
    assert [float(t) for t in rec.lrs] == pytest.approx(values)
    assert all(isinstance(t, torch.Tensor) and t.shape == () for t in rec.lrs)
    # a new device tensor only when the value changes
    changes = 1 + sum(a != b for a, b in itertools.pairwise(values))
    assert len({id(t) for t in rec.lrs}) == changes < len(values)
    ref_p, _ = manual(step, p, step.optimizer.init(p), mask, tiny_batches(8), values)
    assert ltfunc.tree_equal(state.params, ref_p)


def test_default_lr_is_the_optimizers(setup) -> None:
    step, p, mask = setup
    rec = Recorder(step)
    fit(rec, train.init(step, p), mask, tiny_batches(2), 2)
    assert [float(t) for t in rec.lrs] == pytest.approx([0.01, 0.01])  # adam(lr=0.01) above


@pytest.mark.parametrize("chunk", [256, 3])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_loss_names_the_first_bad_step(setup, monkeypatch, chunk, value) -> None:
    monkeypatch.setattr(train, "_CHUNK", chunk)
    step, p, mask = setup
    seen: list[int] = []
    rec = Recorder(step, nan_at=7, value=value)
    with pytest.raises(FloatingPointError, match=rf"fit: the training loss became {value} at step 7 "):
        fit(
            rec,
            train.init(step, p),
            mask,
            tiny_batches(20),
            20,
            lr=0.01,
            eval_every=5,
            on_eval=lambda s, _: seen.append(s.iteration),
        )
    # detected at the first evaluation point after it (10), without a sync per step
    assert seen == [5] and len(rec.losses) == 10


def test_non_finite_loss_is_detected_at_the_end_without_evaluations(setup) -> None:
    step, p, mask = setup
    rec = Recorder(step, nan_at=3)
    with pytest.raises(FloatingPointError, match="at step 5 "):
        fit(rec, train.init(step, p, iteration=2), mask, tiny_batches(6), 6, lr=0.01)
    assert len(rec.losses) == 6


def test_real_divergence_is_caught_at_the_first_bad_step() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    step = make_train_step(model, optim.sgd(lr=1e4), compile=False)
    p = ltfunc.get_params(model)
    rec = Recorder(step)
    with pytest.raises(FloatingPointError) as generic:
        fit(rec, train.init(step, p), None, tiny_batches(30), 30)
    first_bad = next(i for i, loss in enumerate(rec.losses) if not math.isfinite(loss)) + 1
    assert f"at step {first_bad} " in str(generic.value)
    with pytest.raises(FloatingPointError, match=f"at step {first_bad} "):
        fit(step, train.init(step, p), None, tiny_batches(30), 30)  # the fast path


def test_host_syncs_only_at_evaluation_points(setup, monkeypatch) -> None:
    step, p, mask = setup
    fit(step, train.init(step, p), mask, tiny_batches(2), 2, lr=0.01)  # warm the step's caches
    calls = []
    real = torch.Tensor.tolist

    def counting(self):
        calls.append(1)
        return real(self)

    def forbidden(*args, **kwargs):
        raise AssertionError("host sync per step")

    monkeypatch.setattr(torch.Tensor, "tolist", counting)
    for name in ("item", "__bool__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    fit(step, train.init(step, p), mask, tiny_batches(12), 12, lr=0.01, eval_every=5)
    monkeypatch.undo()
    assert len(calls) == 3  # evaluation points 5 and 10, and the end


def test_inputs_are_not_modified_and_zero_iterations(setup) -> None:
    step, p, mask = setup
    start = train.init(step, p)
    before = tree_clone(start)
    fit(step, start, mask, tiny_batches(3), 3, lr=0.01)
    assert ltfunc.tree_equal(start, before)
    assert fit(step, start, mask, [], 0) is start


def test_progress_callback_bar_and_quiet(setup, capsys) -> None:
    step, p, mask = setup
    ticks: list[tuple[int, int]] = []
    fit(
        step,
        train.init(step, p),
        mask,
        tiny_batches(3),
        3,
        progress=lambda done, total: ticks.append((done, total)),
    )
    assert ticks == [(1, 3), (2, 3), (3, 3)]
    fit(step, train.init(step, p), mask, tiny_batches(3), 3)
    quiet = capsys.readouterr()
    assert quiet.out == "" and quiet.err == ""
    fit(step, train.init(step, p), mask, tiny_batches(4), 4, progress=True, eval_every=2)
    assert "train" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"iterations": -1}, ValueError, "fit: iterations must be an int >= 0, got -1"),
        ({"eval_every": 0}, ValueError, "fit: eval_every must be None or an int >= 1, got 0"),
        ({"lr": -0.1}, ValueError, "fit: lr must be finite and >= 0, got -0.1"),
        ({"lr": "fast", "iterations": 0}, TypeError, "fit: lr must be a float, got str"),
        (
            {"lr": lambda it: float("nan") if it == 2 else 0.1},
            ValueError,
            r"fit: lr schedule\(2\) must be finite",
        ),
        ({"lr": lambda it: "fast"}, TypeError, r"fit: lr schedule\(0\) must be a float, got str"),
        ({"on_eval": 3}, TypeError, "fit: on_eval must be None or callable"),
        ({"progress": "yes"}, TypeError, "fit: progress must be None, a bool or callable"),
        ({"state": ({}, None, 0)}, TypeError, "fit: state must be a TrainState, got tuple"),
        ({"step": "step"}, TypeError, "fit: step must be callable"),
        ({"batches": tiny_batches(2)}, ValueError, "fit: batches ran out after 2 of 4 iterations"),
    ],
)
def test_fit_rejects_bad_arguments(setup, kwargs, exc, match) -> None:
    step, p, mask = setup
    args: dict[str, Any] = {
        "step": step,
        "state": train.init(step, p),
        "batches": tiny_batches(4),
        "iterations": 4,
    }
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        fit(
            args.pop("step"),
            args.pop("state"),
            mask,
            args.pop("batches"),
            args.pop("iterations"),
            **args,
        )


def test_init_needs_a_step_with_an_optimizer() -> None:
    with pytest.raises(TypeError, match="init: step must carry an optimizer"):
        train.init(lambda *a: a, {"w": torch.zeros(2)})


def test_init_rejects_bad_params_and_iteration(setup) -> None:
    step, p, _ = setup
    with pytest.raises(TypeError, match="init: params must be a dict of tensors, got list"):
        train.init(step, list(p.values()))
    with pytest.raises(ValueError, match="init: iteration must be an int >= 0, got -1"):
        train.init(step, p, -1)


@pytest.mark.slow
def test_one_epoch_of_pruned_lenet300_on_real_mnist(data_root) -> None:
    """1 epoch, LeNet-300-100, Adam 1.2e-3, batch 60, half the weights pruned: > 95% test accuracy."""
    ds = load_dataset("mnist", data_root, download=False)
    model = ltfunc.models.lenet300(seed=0)
    opt = optim.adam(lr=1.2e-3)
    step = make_train_step(model, opt)  # compiled
    params = ltfunc.get_params(model)
    mask = ltfunc.prune.magnitude(params, masks.ones(params), rate=0.5)
    evals: list[tuple[int, float]] = []
    state = fit(
        step,
        train.init(step, params),
        mask,
        batches(ds.train, 60, seed=0),
        1000,
        eval_every=250,
        on_eval=lambda s, loss: evals.append((s.iteration, loss)),
    )
    loss, acc = ltfunc.step.evaluate(model, state.params, mask, ds.test)
    assert acc > 0.95, f"test accuracy {acc:.4f}"
    assert [i for i, _ in evals] == [250, 500, 750, 1000]
    assert evals[-1][1] < evals[0][1] and loss < 0.2  # training loss went down
    assert torch.count_nonzero(torch.cat([state.params[k][~m] for k, m in mask.items()])) == 0
    assert step.num_compiles == 1


# BatchNorm: the state carries the buffers ---------------------------------------------------
def bn_batches(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(n)
    ]


class Forward:
    """A generic step (not a TrainStep): fit takes its dict path, with ``buffers=``."""

    def __init__(self, step: Any) -> None:
        self.step, self.optimizer = step, step.optimizer

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.step(*args, **kwargs)


@pytest.fixture
def bn_setup():
    torch.manual_seed(1)
    model = ConvBN()
    step = make_train_step(model, optim.sgd(lr=0.05, momentum=0.9), compile=False)
    params = ltfunc.get_params(model)
    return model, step, params, ltfunc.prune.magnitude(params, masks.ones(model), rate=0.5)


def test_init_takes_the_buffers_from_the_step_or_the_argument(bn_setup, setup) -> None:
    model, step, p, _ = bn_setup
    state = train.init(step, p)
    assert ltfunc.tree_equal(state.buffers, ltfunc.get_buffers(model))
    assert all(state.buffers[k] is not v for k, v in step.buffers.items())  # copies
    given = {k: v + 1 for k, v in ltfunc.get_buffers(model).items()}
    assert train.init(step, p, buffers=given).buffers == given
    tiny_step, tiny_p, _ = setup
    assert train.init(tiny_step, tiny_p).buffers is None  # no buffers, nothing to carry
    with pytest.raises(TypeError, match="init: buffers must be a dict of tensors or None, got list"):
        train.init(step, p, buffers=[torch.zeros(1)])  # type: ignore[arg-type]


def test_fit_carries_batchnorm_buffers_like_the_manual_loop_and_the_torch_module(bn_setup) -> None:
    model, step, p, mask = bn_setup
    batches = bn_batches(6, seed=2)
    seen: list[TrainState] = []
    state = fit(
        step,
        train.init(step, p),
        mask,
        batches,
        6,
        lr=0.05,
        eval_every=3,
        on_eval=lambda s, _: seen.append(s),
    )
    # the manual loop, step by step with the 4-tuple interface
    mp, ms, mb = p, step.optimizer.init(p), ltfunc.get_buffers(model)
    after = []
    for batch in batches:
        mp, ms, _, mb = step(mp, ms, mask, batch, 0.05, buffers=mb)
        after.append(mb)
    assert ltfunc.tree_equal(state.buffers, mb) and ltfunc.tree_equal(state.params, mp)
    assert [s.iteration for s in seen] == [3, 6]
    assert ltfunc.tree_equal(seen[0].buffers, after[2]) and ltfunc.tree_equal(seen[1].buffers, after[5])
    # and an nn.Module trained with torch.optim in training mode
    ref, _, _ = train_reference(model, lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9), mask, batches)
    assert int(state.buffers["bn.num_batches_tracked"]) == 6
    assert tree_allclose(state.buffers, ltfunc.get_buffers(ref), rtol=1e-4, atol=1e-6)
    assert tree_allclose(state.params, ltfunc.get_params(ref), rtol=1e-4, atol=1e-6)


def test_fast_path_and_generic_step_carry_the_same_buffers(bn_setup) -> None:
    _, step, p, mask = bn_setup
    batches = bn_batches(4, seed=3)
    fast = fit(step, train.init(step, p), mask, batches, 4, lr=0.05)
    generic = fit(Forward(step), train.init(step, p), mask, batches, 4, lr=0.05)
    assert ltfunc.tree_equal(fast, generic)  # params, optimizer state, iteration and buffers


def test_fit_without_buffers_for_batchnorm_in_training_mode_raises(bn_setup) -> None:
    _, step, p, mask = bn_setup
    state = TrainState(p, step.optimizer.init(p), 0)  # built by hand, without train.init
    with pytest.raises(ValueError, match="flat_step: ConvBN has normalization layers in training mode"):
        fit(step, state, mask, bn_batches(2), 2, lr=0.05)
    with pytest.raises(TypeError, match=r"fit: state\.buffers must be a dict of tensors or None, got list"):
        fit(step, state._replace(buffers=[torch.zeros(1)]), mask, bn_batches(2), 2, lr=0.05)
