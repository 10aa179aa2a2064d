"""Tests for ltfunc.ticket: the functional IMP building blocks (synthetic data; fast)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import ltfunc
from ltfunc import masks, optim
from ltfunc.data import batches
from ltfunc.step import make_train_step
from ltfunc.ticket import (
    RoundResult,
    baseline_round,
    baseline_start,
    dense_round,
    derive_seed,
    imp,
    imp_round,
    next_mask,
    reset_to,
    round_rates,
)
from ltfunc.trainer import Trainer, Weights, make_evaluator, make_trainer, train_round
from tests.helpers import ConvBN, tree_clone

N = 96  # synthetic examples


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return ltfunc.models.lenet300(seed=0)


@pytest.fixture(scope="module")
def theta0(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return ltfunc.get_params(model)


@pytest.fixture(scope="module")
def w0(model: torch.nn.Module) -> Weights:
    """θ0 as Weights: LeNet has no buffers."""
    return Weights.of(model)


@pytest.fixture(scope="module")
def split() -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable synthetic task: the label is the argmax of 10 fixed pixel sums."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(N, 1, 28, 28, generator=gen)
    y = x.flatten(1)[:, :10].argmax(1)
    return x, y


@pytest.fixture(scope="module")
def sgd_step(model: torch.nn.Module) -> ltfunc.TrainStep:
    """Eager step with stateless SGD: a round's result then depends only on weights and data."""
    return make_train_step(model, optim.sgd(lr=0.05), compile=False)


def trainer_for(step: ltfunc.TrainStep, split, iterations: int, **kw) -> Trainer:
    return make_trainer(step, split, iterations=iterations, batch_size=16, lr=0.05, **kw)


# ---------------------------------------------------------------------------- masks and resets


def test_reset_to_takes_survivors_from_init_and_zeros_the_rest(theta0) -> None:
    mask = next_mask(theta0, masks.ones(theta0), round=1, rate=0.5)
    before = tree_clone(theta0)
    out = reset_to(theta0, mask)
    assert ltfunc.tree_equal(theta0, before)  # input untouched
    for name, t in out.items():
        if name in mask:
            assert torch.equal(t[mask[name]], theta0[name][mask[name]])
            assert torch.all(t[~mask[name]] == 0)
        else:
            assert torch.equal(t, theta0[name]) and t is not theta0[name]  # a copy


def test_reset_to_weights_resets_the_params_and_copies_the_buffers(theta0) -> None:
    mask = next_mask(theta0, masks.ones(theta0), round=1, rate=0.5)
    stats = {"bn.running_mean": torch.randn(3), "bn.num_batches_tracked": torch.tensor(7)}
    init = Weights(theta0, stats)
    before = tree_clone(init)
    out = reset_to(init, mask)
    assert isinstance(out, Weights) and ltfunc.tree_equal(init, before)  # input untouched
    assert ltfunc.tree_equal(out.params, reset_to(theta0, mask))
    assert ltfunc.tree_equal(out.buffers, stats)
    assert all(out.buffers[k] is not stats[k] for k in stats)  # copies


def test_reset_to_rejects_a_mask_for_another_model(theta0, w0) -> None:
    other = masks.ones(ltfunc.get_params(ltfunc.models.conv2(seed=0)))
    with pytest.raises(ValueError, match="reset_to"):
        reset_to(theta0, other)
    with pytest.raises(ValueError, match="reset_to"):
        reset_to(w0, other)


def test_round_rates_rate_and_cumulative_sparsity_schedules() -> None:
    rates = ltfunc.Rates(default=0.2, output=0.1, overrides={"fc1.weight": 0.5})
    assert round_rates(rates, 3, "rate") == {"rate": rates}
    target = round_rates(rates, 3, "sparsity")["sparsity"]
    assert target.default == pytest.approx(1 - 0.8**3)
    assert target.output == pytest.approx(1 - 0.9**3)
    assert target.fc is None and target.conv is None
    assert target.overrides["fc1.weight"] == pytest.approx(1 - 0.5**3)
    with pytest.raises(ValueError, match="round_rates: schedule='linear' is not supported"):
        round_rates(0.2, 1, "linear")
    with pytest.raises(ValueError, match="round must be an int >= 1"):
        round_rates(0.2, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        round_rates(1.5, 1)


def test_next_mask_rate_schedule_compounds_per_layer_rounding(theta0) -> None:
    mask = masks.ones(theta0)
    kept = {n: mask[n].numel() for n in mask}
    for k in range(1, 4):
        mask = next_mask(theta0, mask, round=k, rate=0.2)
        kept = {n: v - math.floor(0.2 * v + 0.5) for n, v in kept.items()}
        assert {n: c.kept for n, c in masks.counts(mask).items() if n != "__all__"} == kept


def test_next_mask_sparsity_schedule_hits_the_cumulative_target_exactly(theta0) -> None:
    mask = masks.ones(theta0)
    for k in range(1, 4):
        mask = next_mask(theta0, mask, round=k, rate=0.2, schedule="sparsity")
        for name, c in masks.counts(mask).items():
            if name != "__all__":
                assert c.kept == c.total - math.floor((1 - 0.8**k) * c.total + 0.5)


def test_next_mask_global_scope_and_output_rate(theta0) -> None:
    rates = ltfunc.Rates(fc=0.2, output=0.1)
    mask = next_mask(theta0, masks.ones(theta0), round=1, rate=rates, scope="global")
    c = masks.counts(mask)
    assert c["fc3.weight"].kept == 900  # the output layer is its own group
    assert c["fc1.weight"].kept + c["fc2.weight"].kept == round(0.8 * (235200 + 30000))
    # one threshold across fc1 and fc2: every survivor there outweighs every pruned weight
    alive = torch.cat([theta0[n][mask[n]].abs() for n in ("fc1.weight", "fc2.weight")])
    dead = torch.cat([theta0[n][~mask[n]].abs() for n in ("fc1.weight", "fc2.weight")])
    assert dead.max() <= alive.min()


def test_derive_seed_is_stable_and_separates_streams() -> None:
    seeds = {derive_seed(s, c, k) for s in (0, 1) for c in ("reinit", "random_prune") for k in (1, 2, 3)}
    assert len(seeds) == 12 and all(0 <= s < 2**31 for s in seeds)
    assert derive_seed(0, "reinit", 1) == derive_seed(0, "reinit", 1)


def test_baseline_start_reinit_and_random_prune(model, theta0, w0) -> None:
    ticket_mask = next_mask(theta0, masks.ones(theta0), round=1, rate=0.6)
    mask, start = baseline_start("reinit", ticket_mask, w0, model=model, seed=7)
    assert mask == ticket_mask
    fresh = ltfunc.models.init_params(model, 7)
    assert ltfunc.tree_equal(start, Weights(masks.apply(mask, fresh), {}))
    assert not torch.equal(start.params["fc1.weight"], masks.apply(mask, theta0)["fc1.weight"])

    rmask, rstart = baseline_start("random_prune", ticket_mask, w0, model=model, seed=7)
    assert rmask != ticket_mask
    assert all(masks.counts(rmask)[n] == masks.counts(ticket_mask)[n] for n in ticket_mask)
    assert ltfunc.tree_equal(rstart, Weights(masks.apply(rmask, theta0), {}))
    again, _ = baseline_start("random_prune", ticket_mask, w0, model=model, seed=7)
    assert again == rmask  # a seed fixes the draw
    with pytest.raises(ValueError, match="'shuffle' is not supported"):
        baseline_start("shuffle", ticket_mask, w0, model=model, seed=7)


# ---------------------------------------------------------------------------- training rounds


def test_make_trainer_validates_and_takes_the_optimizer_from_the_step(sgd_step, split) -> None:
    with pytest.raises(TypeError, match=r"make_trainer: step must be a step from ltfunc\.make_train_step"):
        make_trainer(None, split, iterations=1, batch_size=1, lr=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="make_trainer: iterations must be an int >= 1"):
        make_trainer(sgd_step, split, iterations=0, batch_size=1, lr=0.1)
    with pytest.raises(ValueError, match=r"make_trainer: lr must be a finite number in \(0\.0, inf\)"):
        make_trainer(sgd_step, split, iterations=1, batch_size=1, lr=0.0)
    with pytest.raises(TypeError, match="make_trainer: train must be a Split"):
        make_trainer(sgd_step, [1, 2], iterations=1, batch_size=1, lr=0.1)  # type: ignore[arg-type]
    # no optimizer argument: every round trains with the step's optimizer (and its lr by default)
    assert "optimizer" not in Trainer._fields
    with pytest.raises(TypeError):
        make_trainer(sgd_step, optim.sgd(lr=0.05), split, iterations=1, batch_size=1)  # type: ignore[misc]
    t = make_trainer(sgd_step, split, iterations=3, batch_size=16)
    assert t.step is sgd_step and t.step.optimizer.name == "sgd"
    assert (t.lr, t.eval_every, t.data_seed, t.evaluate) == (0.05, 3, 0, None)


def test_train_round_evaluates_on_schedule_and_at_the_end(sgd_step, split, w0, model) -> None:
    evaluator = make_evaluator(model, {"val": split, "test": split})
    t = trainer_for(sgd_step, split, 10, eval_every=4, evaluate=evaluator)
    seen = []
    out = train_round(t, w0, masks.ones(w0.params), on_record=seen.append)
    assert [r["iteration"] for r in out.history] == [4, 8, 10]
    assert seen == list(out.history)
    assert list(out.history[0]) == [
        "iteration", "train_loss", "val_loss", "val_accuracy", "test_loss", "test_accuracy", "density",
    ]  # fmt: skip
    assert out.history[-1]["val_loss"] == out.history[-1]["test_loss"]  # same split twice
    assert out.history[-1]["train_loss"] < out.history[0]["train_loss"] * 1.5
    assert out.captured is None


def test_compiled_evaluator_matches_eager_and_validates(split, theta0, w0, model) -> None:
    mask = next_mask(theta0, masks.ones(theta0), round=1, rate=0.5)
    eager = make_evaluator(model, {"test": split})(w0, mask)
    compiled = make_evaluator(model, {"test": split}, compile=True)(w0, mask)
    assert compiled["test_accuracy"] == eager["test_accuracy"]
    assert compiled["test_loss"] == pytest.approx(eager["test_loss"], rel=1e-5)
    # the mask is applied (a different mask gives a different loss through the same compiled step)
    dense = make_evaluator(model, {"test": split}, compile=True)(w0, masks.ones(theta0))
    assert dense["test_loss"] != pytest.approx(compiled["test_loss"], rel=1e-6)
    with pytest.raises(TypeError, match="make_evaluator: compile must be a bool, got str 'yes'"):
        make_evaluator(model, {"test": split}, compile="yes")  # type: ignore[arg-type]


def test_train_round_from_a_rewind_point_continues_the_same_data_stream(sgd_step, split, theta0, w0) -> None:
    """Stateless SGD: training 0..10 equals training 0..4, then 4..10 from the captured weights."""
    mask = next_mask(theta0, masks.ones(theta0), round=1, rate=0.3)
    start = reset_to(w0, mask)
    t = trainer_for(sgd_step, split, 10)  # 10 steps of 16 from 96 examples: crosses an epoch
    full = train_round(t, start, mask, capture_at=4)
    assert full.captured is not None and not ltfunc.tree_equal(full.captured, start)
    rest = train_round(t, full.captured, mask, start_iteration=4)
    assert ltfunc.tree_equal(rest.final, full.final)
    assert [r["iteration"] for r in rest.history] == [10]
    with pytest.raises(ValueError, match=r"train_round: start_iteration must be an int in \[0, 9\], got 10"):
        train_round(t, start, mask, start_iteration=10)
    with pytest.raises(
        TypeError, match=r"train_round: start must be ltfunc\.Weights\(params, buffers\), got dict"
    ):
        train_round(t, start.params, mask)  # type: ignore[arg-type]


def test_every_round_starts_with_a_fresh_optimizer_state(model, split, w0) -> None:
    """With Adam, the same start weights and mask give the same round twice (no carried moments)."""
    step = make_train_step(model, optim.adam(lr=1e-3), compile=False)
    t = make_trainer(step, split, iterations=3, batch_size=16, lr=1e-3)
    mask = masks.ones(w0.params)
    a, b = train_round(t, w0, mask), train_round(t, w0, mask)
    assert ltfunc.tree_equal(a.final, b.final) and a.history == b.history


def test_imp_generator_resets_to_theta0_and_keeps_pruned_weights_zero(sgd_step, split, theta0) -> None:
    before = tree_clone(theta0)
    t = trainer_for(sgd_step, split, 4)
    results = list(imp(t, theta0, rounds=3, rate=0.2))  # a params dict: the model's own buffers ({})
    assert ltfunc.tree_equal(theta0, before)
    assert [r.round for r in results] == [0, 1, 2, 3]
    assert all(isinstance(r, RoundResult) and r.condition == "ticket" for r in results)
    assert ltfunc.tree_equal(results[0].rewind_point, Weights(theta0, {}))
    for prev, cur in itertools.pairwise(results):
        assert cur.mask == next_mask(prev.final.params, prev.mask, round=cur.round, rate=0.2)
        assert ltfunc.tree_equal(cur.start, reset_to(Weights(theta0, {}), cur.mask))
        for n in cur.mask:
            assert torch.all(cur.final.params[n][~cur.mask[n]] == 0)


def test_imp_with_rewinding_resets_to_the_iteration_k_weights(sgd_step, split, w0) -> None:
    t = trainer_for(sgd_step, split, 6)
    r0, r1 = list(imp(t, w0, rounds=1, rate=0.2, rewind=2))
    after_two = train_round(trainer_for(sgd_step, split, 2), w0, masks.ones(w0.params)).final
    assert ltfunc.tree_equal(r0.rewind_point, after_two)
    assert ltfunc.tree_equal(r1.start, reset_to(after_two, r1.mask))


def test_the_round_functions_compose_into_imp(sgd_step, split, w0, model) -> None:
    t = trainer_for(sgd_step, split, 4)
    r0, r1, r2 = list(imp(t, w0, rounds=2, rate=0.2, rewind=1))
    d0 = dense_round(t, w0, rewind=1)
    d1 = imp_round(t, d0, d0.rewind_point, rate=0.2, rewind=1)
    d2 = imp_round(t, d1, d0.rewind_point, rate=0.2, rewind=1)
    for a, b in ((r0, d0), (r1, d1), (r2, d2)):
        assert a.mask == b.mask and a.history == b.history
        assert ltfunc.tree_equal((a.start, a.final, a.rewind_point), (b.start, b.final, b.rewind_point))
    assert d1.rewind_point is None and d2.round == 2


def test_imp_continues_after_a_finished_round(sgd_step, split, w0) -> None:
    t = trainer_for(sgd_step, split, 4)
    full = list(imp(t, w0, rounds=3, rate=0.2, rewind=1))
    rest = list(imp(t, w0, rounds=3, rate=0.2, rewind=1, previous=full[1], rewind_point=full[0].rewind_point))
    assert [r.round for r in rest] == [2, 3]
    for a, b in zip(full[2:], rest, strict=True):
        assert a.mask == b.mask and a.history == b.history
        assert ltfunc.tree_equal((a.start, a.final), (b.start, b.final))
    assert list(imp(t, w0, rounds=1, rate=0.2, previous=full[1], rewind_point=full[0].rewind_point)) == []


def test_round_hooks_open_every_round_and_receive_its_records(sgd_step, split, w0, model) -> None:
    class Bar:
        def __init__(self) -> None:
            self.steps, self.postfix = 0, None

        def update(self, n: int) -> None:
            self.steps += n

        def set_postfix(self, shown, refresh: bool = True) -> None:
            self.postfix = shown

    opened: list[tuple[str, int]] = []
    records: dict[tuple[str, int], list] = {}
    bars: dict[tuple[str, int], Bar] = {}

    def hooks(condition: str, k: int):
        opened.append((condition, k))
        records[condition, k], bars[condition, k] = [], Bar()
        return records[condition, k].append, bars[condition, k]

    t = trainer_for(sgd_step, split, 6, eval_every=3)
    results = []
    for r in imp(t, w0, rounds=2, rate=0.2, rewind=2, hooks=hooks):
        results.append(r)
        if r.round:
            results.append(
                baseline_round(
                    t, "reinit", r, results[0].rewind_point, model=model, seed=0, rewind=2, hooks=hooks
                )
            )
    assert opened == [("ticket", 0), ("ticket", 1), ("reinit", 1), ("ticket", 2), ("reinit", 2)]
    for r in results:
        key = (r.condition, r.round)
        assert records[key] == list(r.history)
        assert bars[key].steps == (6 if r.round == 0 else 4)  # from the rewind iteration on
        assert bars[key].postfix == {"loss": f"{r.history[-1]['train_loss']:.4f}"}


def test_imp_validates_before_training(sgd_step, split, w0) -> None:
    t = trainer_for(sgd_step, split, 4)
    with pytest.raises(ValueError, match="imp: rounds must be an int >= 1"):
        imp(t, w0, rounds=0, rate=0.2)
    with pytest.raises(ValueError, match="imp: rewind=4 is beyond the training length iterations=4"):
        imp(t, w0, rounds=1, rate=0.2, rewind=4)
    with pytest.raises(ValueError, match="schedule"):
        imp(t, w0, rounds=1, rate=0.2, schedule="cubic")
    r0 = next(imp(t, w0, rounds=1, rate=0.2))
    with pytest.raises(ValueError, match=r"imp: previous= needs rewind_point="):
        imp(t, w0, rounds=1, rate=0.2, previous=r0)
    with pytest.raises(TypeError, match="imp: previous must be a RoundResult, got dict"):
        imp(t, w0, rounds=1, rate=0.2, previous={}, rewind_point=w0)  # type: ignore[arg-type]


def test_baseline_round_trains_the_same_iterations_and_data(sgd_step, split, model, w0) -> None:
    t = trainer_for(sgd_step, split, 5, eval_every=5)
    _, r1 = list(imp(t, w0, rounds=1, rate=0.5))
    base = baseline_round(t, "random_prune", r1, w0, model=model, seed=3)
    assert (base.condition, base.round) == ("random_prune", 1)
    assert [r["iteration"] for r in base.history] == [r["iteration"] for r in r1.history] == [5]
    # same data order: retraining the baseline's start with its mask reproduces it exactly
    again = train_round(t, base.start, base.mask)
    assert ltfunc.tree_equal(again.final, base.final)
    mask, start = baseline_start(
        "random_prune", r1.mask, w0, model=model, seed=derive_seed(3, "random_prune", 1)
    )
    assert mask == base.mask and ltfunc.tree_equal(start, base.start)


# ---------------------------------------------------------------------------- one compile for the run


@pytest.mark.slow
def test_the_compiled_step_does_not_recompile_across_rounds_or_baselines(model, split, w0) -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    step = make_train_step(model, optim.adam(lr=1e-3), compile=True)
    t = make_trainer(step, split, iterations=3, batch_size=16, lr=1e-3)
    rounds = imp(t, w0, rounds=3, rate=0.2, rewind=1)
    first = next(rounds)
    graphs = counters["stats"]["unique_graphs"]
    frames = dict(counters["frames"])
    assert graphs >= 1
    later = list(rounds)
    for r in later:
        baseline_round(t, "reinit", r, first.rewind_point, model=model, seed=0, rewind=1)
        baseline_round(t, "random_prune", r, first.rewind_point, model=model, seed=0, rewind=1)
    assert [r.round for r in later] == [1, 2, 3]
    assert counters["stats"]["unique_graphs"] == graphs
    assert step.num_compiles == 1
    assert dict(counters["frames"]) == frames
    assert not counters["recompiles"]


# ---------------------------------------------------------------------------- BatchNorm buffers


@pytest.fixture(scope="module")
def bn_model() -> torch.nn.Module:
    torch.manual_seed(2)
    return ConvBN()


@pytest.fixture(scope="module")
def bn_step(bn_model: torch.nn.Module) -> ltfunc.TrainStep:
    return make_train_step(bn_model, optim.sgd(lr=0.05), compile=False)


def test_train_round_carries_batchnorm_statistics_and_evaluates_with_them(bn_model, bn_step, split) -> None:
    w0 = Weights.of(bn_model)
    stats0 = tree_clone(w0.buffers)
    mask = next_mask(w0.params, masks.ones(bn_model), round=1, rate=0.3)
    assert list(mask) == ["conv.weight", "fc1.weight", "fc2.weight"]
    start = reset_to(w0, mask)
    t = trainer_for(bn_step, split, 6, eval_every=3, evaluate=make_evaluator(bn_model, {"test": split}))
    out = train_round(t, start, mask, capture_at=3)
    # the same training with fit on the same data stream, from the model's initial statistics
    state = ltfunc.fit(bn_step, bn_step.init(start.params), mask, batches(split, 16, seed=0), 6, lr=0.05)
    assert ltfunc.tree_equal(out.final, Weights(state.params, state.buffers))
    assert (
        int(out.final.buffers["bn.num_batches_tracked"]) == 6
        and int(out.captured.buffers["bn1.num_batches_tracked"]) == 3
    )
    assert ltfunc.tree_equal(ltfunc.get_buffers(bn_model), stats0)  # the template model is untouched
    assert ltfunc.tree_equal(w0.buffers, stats0) and ltfunc.tree_equal(start.buffers, stats0)  # inputs too
    # every record is evaluated with the statistics of its iteration (BatchNorm in eval mode)
    at_3 = ltfunc.evaluate(bn_model, out.captured.params, mask, split, buffers=out.captured.buffers)
    at_6 = ltfunc.evaluate(bn_model, out.final.params, mask, split, buffers=out.final.buffers)
    assert [(r["test_loss"], r["test_accuracy"]) for r in out.history] == [at_3, at_6]
    assert ltfunc.evaluate(bn_model, out.final.params, mask, split)[0] != pytest.approx(at_6[0], rel=1e-3)
    # training on from the captured point with its statistics reproduces the round
    rest = train_round(t, out.captured, mask, start_iteration=3)
    assert ltfunc.tree_equal(rest.final, out.final)


def test_imp_and_baselines_restart_from_the_rewind_point_statistics(bn_model, bn_step, split) -> None:
    w0 = Weights.of(bn_model)
    t = trainer_for(bn_step, split, 5)
    r0, r1 = list(imp(t, w0, rounds=1, rate=0.2, rewind=2))
    dense_two = train_round(trainer_for(bn_step, split, 2), w0, masks.ones(bn_model))
    assert ltfunc.tree_equal(r0.rewind_point, dense_two.final)
    # round 1 restarts at iteration 2 from the weights *and* running statistics of iteration 2
    assert ltfunc.tree_equal(r1.start.buffers, r0.rewind_point.buffers)
    again = train_round(t, Weights(r1.start.params, r0.rewind_point.buffers), r1.mask, start_iteration=2)
    assert ltfunc.tree_equal(r1.final, again.final)
    assert int(r1.final.buffers["bn.num_batches_tracked"]) == 5  # 2 rewound + 3 trained
    pruned = baseline_round(t, "random_prune", r1, r0.rewind_point, model=bn_model, seed=0, rewind=2)
    assert ltfunc.tree_equal(pruned.start.buffers, r0.rewind_point.buffers)
    assert int(pruned.final.buffers["bn.num_batches_tracked"]) == 5
    reinit = baseline_round(t, "reinit", r1, r0.rewind_point, model=bn_model, seed=0, rewind=2)
    assert ltfunc.tree_equal(reinit.start.buffers, ltfunc.get_buffers(bn_model))
    assert int(reinit.final.buffers["bn.num_batches_tracked"]) == 3  # fresh weights, fresh statistics
    # reset to θ0 (given as a params dict): every round starts from the model's initial statistics
    s0, s1 = list(imp(t, w0.params, rounds=1, rate=0.2))
    assert ltfunc.tree_equal(s0.rewind_point.buffers, ltfunc.get_buffers(bn_model))
    assert ltfunc.tree_equal(s1.start.buffers, ltfunc.get_buffers(bn_model))
    assert int(s1.final.buffers["bn.num_batches_tracked"]) == 5


def test_imp_with_batchnorm_continues_after_a_finished_round_with_its_statistics(
    bn_model, bn_step, split
) -> None:
    w0 = Weights.of(bn_model)
    t = trainer_for(bn_step, split, 5, eval_every=5, evaluate=make_evaluator(bn_model, {"test": split}))
    full = list(imp(t, w0, rounds=3, rate=0.2, rewind=2))
    # continue from copies, as a resumed run does from its files
    previous, point = tree_clone(full[1]), tree_clone(full[0].rewind_point)
    rest = list(imp(t, w0, rounds=3, rate=0.2, rewind=2, previous=previous, rewind_point=point))
    assert [r.round for r in rest] == [2, 3]
    for a, b in zip(full[2:], rest, strict=True):
        assert a.mask == b.mask and a.history == b.history
        assert ltfunc.tree_equal((a.start, a.final), (b.start, b.final))
        assert int(b.final.buffers["bn1.num_batches_tracked"]) == 5


def test_models_without_buffers_carry_empty_buffers(sgd_step, split, theta0, w0) -> None:
    assert w0.buffers == {} and Weights(theta0).buffers == {}
    t = trainer_for(sgd_step, split, 2)
    r0, r1 = list(imp(t, theta0, rounds=1, rate=0.2))
    assert r0.final.buffers == {} and r0.rewind_point.buffers == {} and r1.final.buffers == {}
    assert r0.start.buffers == {} and r1.start.buffers == {}
    out = train_round(t, w0, masks.ones(theta0), capture_at=1)
    assert out.final.buffers == {} and out.captured.buffers == {}
    with pytest.raises(TypeError, match=r"train_round: start\.buffers must be a dict of tensors, got list"):
        train_round(t, Weights(theta0, [torch.zeros(1)]), masks.ones(theta0))  # type: ignore[arg-type]
