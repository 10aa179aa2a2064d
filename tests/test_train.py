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
from ltfunc.evaluation import evaluate
from ltfunc.step import TrainState, make_train_step
from ltfunc.train import fit


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

    def __call__(self, state, mask, batch, lr):
        self.lrs.append(lr)
        state, metrics = self.step(state, mask, batch, lr)
        if self.nan_at is not None and len(self.lrs) == self.nan_at:
            metrics = {**metrics, "loss": torch.tensor(self.value)}
        self.losses.append(float(metrics["loss"]))
        return state, metrics


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = TinyMLP()
    opt = optim.adam(lr=0.01)
    step = make_train_step(model, opt, compile=False)
    params = ltfunc.get_params(model)
    return step, params, masks.Mask({"fc1.weight": torch.rand(16, 12) < 0.5})


def manual(step, params, opt_state, mask, batches, lrs):
    state = TrainState(params, opt_state)
    for batch, lr in zip(batches, lrs, strict=True):
        state, _ = step(state, mask, batch, lr)
    return state.params, state.opt_state


def test_fit_runs_iterations_and_equals_the_manual_loop(setup) -> None:
    step, p, mask = setup
    batches = tiny_batches(10)
    state = fit(step, step.init(p, iteration=3), mask, iter(batches), 7, lr=0.01)
    assert isinstance(state, TrainState) and state.iteration == 10
    ref_p, ref_s = manual(step, p, step.optimizer.init(p), mask, batches[:7], [0.01] * 7)
    assert ltfunc.tree_equal(state.params, ref_p) and ltfunc.tree_equal(state.opt_state, ref_s)
    assert torch.count_nonzero(state.params["fc1.weight"][~mask["fc1.weight"]]) == 0


def test_fast_path_and_generic_step_agree(setup) -> None:
    step, p, mask = setup
    batches = tiny_batches(9)
    schedule = lambda it: 0.01 if it < 4 else 0.002  # noqa: E731
    fast = fit(step, step.init(p), mask, batches, 9, lr=schedule, eval_every=4)
    generic = fit(Recorder(step), step.init(p), mask, batches, 9, lr=schedule, eval_every=4)
    assert ltfunc.tree_equal(fast.params, generic.params)
    assert ltfunc.tree_equal(fast.opt_state, generic.opt_state)


def test_on_eval_is_called_at_multiples_of_eval_every_with_the_mean_loss(setup) -> None:
    step, p, mask = setup
    rec = Recorder(step)
    calls: list[tuple[int, float, dict]] = []
    start = step.init(p, iteration=5)
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
            step.init(p),
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

    state = fit(rec, step.init(p, iteration=1), mask, tiny_batches(8), 8, lr=warmup_then_decay)
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
    fit(rec, step.init(p), mask, tiny_batches(2), 2)
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
            step.init(p),
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
        fit(rec, step.init(p, iteration=2), mask, tiny_batches(6), 6, lr=0.01)
    assert len(rec.losses) == 6


def test_real_divergence_is_caught_at_the_first_bad_step() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    step = make_train_step(model, optim.sgd(lr=1e4), compile=False)
    p = ltfunc.get_params(model)
    rec = Recorder(step)
    with pytest.raises(FloatingPointError) as generic:
        fit(rec, step.init(p), None, tiny_batches(30), 30)
    first_bad = next(i for i, loss in enumerate(rec.losses) if not math.isfinite(loss)) + 1
    assert f"at step {first_bad} " in str(generic.value)
    with pytest.raises(FloatingPointError, match=f"at step {first_bad} "):
        fit(step, step.init(p), None, tiny_batches(30), 30)  # the fast path


def test_host_syncs_only_at_evaluation_points(setup, monkeypatch) -> None:
    step, p, mask = setup
    fit(step, step.init(p), mask, tiny_batches(2), 2, lr=0.01)  # warm the step's caches
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
    fit(step, step.init(p), mask, tiny_batches(12), 12, lr=0.01, eval_every=5)
    monkeypatch.undo()
    assert len(calls) == 3  # evaluation points 5 and 10, and the end


def test_inputs_are_not_modified_and_zero_iterations(setup) -> None:
    step, p, mask = setup
    start = step.init(p)
    before = tree_clone(start)
    fit(step, start, mask, tiny_batches(3), 3, lr=0.01)
    assert ltfunc.tree_equal(start, before)
    assert fit(step, start, mask, [], 0) is start


def test_progress_callback_bar_and_quiet(setup, capsys) -> None:
    step, p, mask = setup
    ticks: list[tuple[int, int]] = []
    fit(
        step,
        step.init(p),
        mask,
        tiny_batches(3),
        3,
        progress=lambda done, total: ticks.append((done, total)),
    )
    assert ticks == [(1, 3), (2, 3), (3, 3)]
    fit(step, step.init(p), mask, tiny_batches(3), 3)
    quiet = capsys.readouterr()
    assert quiet.out == "" and quiet.err == ""
    fit(step, step.init(p), mask, tiny_batches(4), 4, progress=True, eval_every=2)
    assert "train" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"iterations": -1}, ValueError, "fit: iterations must be an int >= 0, got -1"),
        ({"eval_every": 0}, ValueError, "fit: eval_every must be an int >= 1, got 0"),
        ({"eval_every": 2.5}, TypeError, "fit: eval_every must be an int, got float 2.5"),
        ({"lr": -0.1}, ValueError, r"fit: lr must be a finite number in \[0.0, inf\), got -0.1"),
        ({"lr": "fast", "iterations": 0}, TypeError, "fit: lr must be a number, got str 'fast'"),
        (
            {"lr": lambda it: float("nan") if it == 2 else 0.1},
            ValueError,
            r"fit: lr schedule\(2\) must be a finite number in \[0.0, inf\), got nan",
        ),
        ({"lr": lambda it: "fast"}, TypeError, r"fit: lr schedule\(0\) must be a number, got str"),
        ({"on_eval": 3}, TypeError, "fit: on_eval must be None or callable"),
        ({"progress": "yes"}, TypeError, "fit: progress must be None, a bool or callable"),
        (
            {"state": ({}, None, 0)},
            TypeError,
            r"fit: state must be a TrainState \(from step.init\), got tuple",
        ),
        ({"state": "no buffers"}, TypeError, "fit: state.buffers must be a dict of tensors, got NoneType"),
        ({"state": "iteration"}, ValueError, "fit: state.iteration must be an int >= 0, got -2"),
        ({"step": "step"}, TypeError, "fit: step must be callable"),
        (
            {"step": lambda s, m, b, lr: (s.params, s.opt_state, {"loss": torch.zeros(())})},
            TypeError,
            r"fit: step must return \(TrainState, metrics\) like step\(state, mask, batch, lr\)",
        ),
        (
            {"step": lambda s, m, b, lr: (s, {"loss": torch.zeros(())})},
            ValueError,
            "fit: the step returned a state at iteration 0 after iteration 0; a step must advance",
        ),
        ({"batches": tiny_batches(2)}, ValueError, "fit: batches ran out after 2 of 4 iterations"),
    ],
)
def test_fit_rejects_bad_arguments(setup, kwargs, exc, match) -> None:
    step, p, mask = setup
    args: dict[str, Any] = {
        "step": step,
        "state": step.init(p),
        "batches": tiny_batches(4),
        "iterations": 4,
    }
    args.update(kwargs)
    if args["state"] == "no buffers":
        args["state"] = step.init(p)._replace(buffers=None)
    elif args["state"] == "iteration":
        args["state"] = step.init(p)._replace(iteration=-2)
    with pytest.raises(exc, match=match):
        fit(
            args.pop("step"),
            args.pop("state"),
            mask,
            args.pop("batches"),
            args.pop("iterations"),
            **args,
        )


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
        step.init(params),
        mask,
        batches(ds.train, 60, seed=0),
        1000,
        eval_every=250,
        on_eval=lambda s, loss: evals.append((s.iteration, loss)),
    )
    loss, acc = evaluate(model, state.params, mask, ds.test)
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
    """A generic step (not a TrainStep): fit calls it with the state and takes the state back."""

    def __init__(self, step: Any) -> None:
        self.step, self.optimizer = step, step.optimizer

    def __call__(self, state: TrainState, mask: Any, batch: Any, lr: Any) -> Any:
        return self.step(state, mask, batch, lr)


@pytest.fixture
def bn_setup():
    torch.manual_seed(1)
    model = ConvBN()
    step = make_train_step(model, optim.sgd(lr=0.05, momentum=0.9), compile=False)
    params = ltfunc.get_params(model)
    return model, step, params, ltfunc.prune.magnitude(params, masks.ones(model), rate=0.5)


def test_init_takes_the_buffers_from_the_model_or_the_argument(bn_setup, setup) -> None:
    model, step, p, _ = bn_setup
    state = step.init(p)
    assert ltfunc.tree_equal(state.buffers, ltfunc.get_buffers(model))
    assert all(state.buffers[k] is not v for k, v in ltfunc.get_buffers(model, copy=False).items())  # copies
    given = {k: v + 1 for k, v in ltfunc.get_buffers(model).items()}
    assert step.init(p, buffers=given).buffers == given
    tiny_step, tiny_p, _ = setup
    assert tiny_step.init(tiny_p).buffers == {}  # no buffers, nothing to carry
    with pytest.raises(TypeError, match=r"init: buffers must be a dict of tensors .*got list"):
        step.init(p, buffers=[torch.zeros(1)])  # type: ignore[arg-type]


def test_fit_carries_batchnorm_buffers_like_the_manual_loop_and_the_torch_module(bn_setup) -> None:
    model, step, p, mask = bn_setup
    batches = bn_batches(6, seed=2)
    seen: list[TrainState] = []
    state = fit(
        step,
        step.init(p),
        mask,
        batches,
        6,
        lr=0.05,
        eval_every=3,
        on_eval=lambda s, _: seen.append(s),
    )
    # the manual loop, step by step with the public call
    manual_state = TrainState(p, step.optimizer.init(p), 0, ltfunc.get_buffers(model))
    after = []
    for batch in batches:
        manual_state, _ = step(manual_state, mask, batch, 0.05)
        after.append(manual_state.buffers)
    assert ltfunc.tree_equal(state, manual_state)  # params, optimizer state, iteration, buffers
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
    fast = fit(step, step.init(p), mask, batches, 4, lr=0.05)
    generic = fit(Forward(step), step.init(p), mask, batches, 4, lr=0.05)
    assert ltfunc.tree_equal(fast, generic)  # params, optimizer state, iteration and buffers


def test_fit_refuses_a_state_without_the_models_buffers(bn_setup) -> None:
    _, step, p, mask = bn_setup
    state = TrainState(p, step.optimizer.init(p), 0)  # built by hand, without step.init: buffers={}
    with pytest.raises(
        ValueError, match=r"fit: state.buffers keys do not match the model's buffers: missing"
    ):
        fit(step, state, mask, bn_batches(2), 2, lr=0.05)
    with pytest.raises(TypeError, match=r"fit: state\.buffers must be a dict of tensors, got list"):
        fit(step, state._replace(buffers=[torch.zeros(1)]), mask, bn_batches(2), 2, lr=0.05)
