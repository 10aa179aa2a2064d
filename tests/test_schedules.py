"""Tests for ltfunc.schedules: values, composition, validation, descriptions, and use in fit / configs."""

from __future__ import annotations

import itertools
import json
import math
import pickle

import pytest
import torch

import ltfunc
from ltfunc import schedules
from ltfunc.config import ImpConfig
from ltfunc.schedules import (
    Constant,
    Cosine,
    MultiStep,
    Warmup,
    build,
    check_fits,
    constant,
    cosine,
    describe,
    epochs_to_iterations,
    from_description,
    linear_warmup,
    multistep,
    steps_per_epoch,
    warmup,
)

# ---------------------------------------------------------------------------- values


def test_constant_multistep_and_cosine_values() -> None:
    assert [constant(0.1)(it) for it in (0, 1, 10**6)] == [0.1, 0.1, 0.1]
    s = multistep(0.1, [10, 20], gamma=0.5)
    assert [s(it) for it in (0, 9, 10, 19, 20, 1000)] == [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    assert multistep(0.1, [])(5) == 0.1  # no milestones: constant
    c = cosine(1.0, 100, final=0.1)
    assert c(0) == 1.0 and c(100) == pytest.approx(0.1) and c(500) == pytest.approx(0.1)
    assert c(50) == pytest.approx(0.55)
    assert all(c(i) >= c(i + 1) for i in range(120))  # never rises


def test_warmup_is_open_lths_linear_ramp_and_composes() -> None:
    s = warmup(multistep(0.1, [300, 400]), 100)
    assert s(0) == 0.0 and s(25) == pytest.approx(0.025) and s(100) == pytest.approx(0.1)
    assert s(299) == pytest.approx(0.1) and s(300) == pytest.approx(0.01) and s(400) == pytest.approx(0.001)
    assert linear_warmup(0.2, 10) == warmup(constant(0.2), 10)
    assert warmup(0.2, 10) == warmup(constant(0.2), 10)  # a number stands for a constant
    # open_lth's LambdaLR: lr · gamma ** bisect(milestones, it) · min(1, it / warmup)
    ref = [0.1 * 0.1 ** sum(it >= m for m in (300, 400)) * min(1.0, it / 100) for it in range(500)]
    assert [s(it) for it in range(500)] == pytest.approx(ref)
    nested = warmup(cosine(0.1, 1000), 50)
    assert nested(25) == pytest.approx(0.5 * cosine(0.1, 1000)(25))


def test_epoch_helpers() -> None:
    assert steps_per_epoch(50_000, 128) == 390 and steps_per_epoch(50_000, 128, drop_last=False) == 391
    assert steps_per_epoch(60, 60) == 1
    assert epochs_to_iterations(160, 391) == 62_560
    assert epochs_to_iterations([80, 120], 391) == (31_280, 46_920)
    with pytest.raises(ValueError, match="batch_size"):
        steps_per_epoch(10, 11)
    with pytest.raises(ValueError, match=r"epochs\[1\]"):
        epochs_to_iterations([1, -1], 10)


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda: constant(0.0), ValueError, ["constant: lr", "(0.0, inf)"]),
        (lambda: constant(-0.1), ValueError, ["constant: lr"]),
        (lambda: constant("0.1"), TypeError, ["lr must be a number"]),
        (
            lambda: multistep(0.1, [20, 10]),
            ValueError,
            ["milestones must be strictly increasing", "[20, 10]"],
        ),
        (lambda: multistep(0.1, [10, 10]), ValueError, ["strictly increasing"]),
        (lambda: multistep(0.1, [0]), ValueError, ["milestones[0]", ">= 1"]),
        (lambda: multistep(0.1, [10, 200], total=100), ValueError, ["beyond the training length of 100"]),
        (lambda: multistep(0.1, [100], total=100), ValueError, ["must be < 100"]),
        (lambda: multistep(0.1, "10,20"), TypeError, ["milestones must be a sequence"]),
        (lambda: multistep(0.1, [10], gamma=0.0), ValueError, ["gamma", "(0.0, 1.0]"]),
        (lambda: multistep(0.1, [10], gamma=1.5), ValueError, ["gamma", "(0.0, 1.0]"]),
        (lambda: multistep(0.1, [10], gamma=-0.1), ValueError, ["gamma"]),
        (lambda: multistep(-1.0, [10]), ValueError, ["multistep: lr"]),
        (lambda: cosine(0.1, 0), ValueError, ["cosine: total"]),
        (lambda: cosine(0.1, 10, final=0.2), ValueError, ["final", "[0.0, 0.1]"]),
        (lambda: warmup(constant(0.1), 0), ValueError, ["warm-up length", ">= 1"]),
        (lambda: warmup(constant(0.1), 200, total=100), ValueError, ["warm-up of 200", "longer", "100"]),
        (lambda: warmup("fast", 10), TypeError, ["schedule"]),
        (lambda: linear_warmup(0.0, 10), ValueError, ["lr"]),
        (lambda: build("step", 0.1, total=10), ValueError, ["lr_schedule='step'", "multistep", "cosine"]),
        (lambda: build("cosine", 0.1, total=10, milestones=[5]), ValueError, ["only apply to", "multistep"]),
        (lambda: build("multistep", 0.1, total=10, milestones=[5, 12]), ValueError, ["beyond"]),
        (lambda: build("constant", 0.1, total=10, warmup=11), ValueError, ["warm-up of 11"]),
    ],
)
def test_bad_arguments_are_refused_with_a_message_naming_them(make, error: type, words: list[str]) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error) as info:
        make()
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_gamma_one_and_a_warmup_as_long_as_training_are_allowed() -> None:
    assert multistep(0.1, [5], gamma=1.0)(10) == 0.1
    assert warmup(constant(0.1), 100, total=100)(100) == pytest.approx(0.1)


def test_check_fits_checks_nested_schedules_against_a_training_length() -> None:
    s = warmup(multistep(0.1, [500, 800]), 200)
    check_fits(s, 1000)
    with pytest.raises(ValueError, match=r"make_config: milestones \[500, 800\] reach beyond .* 600"):
        check_fits(s, 600, func="make_config")
    with pytest.raises(ValueError, match=r"warm-up of 200 iterations is longer .* 100"):
        check_fits(s, 100)
    check_fits(lambda it: 0.1, 5)  # any other callable is not inspected
    check_fits(cosine(0.1, 10_000), 10)  # a longer cosine is allowed


# ---------------------------------------------------------------------------- descriptions, pickling


ALL = [
    constant(0.1),
    multistep(0.1, [10, 20], 0.5),
    cosine(0.1, 100, 0.001),
    warmup(multistep(0.1, [300, 400]), 100),
    warmup(warmup(cosine(0.2, 50), 10), 5),
]


@pytest.mark.parametrize("schedule", ALL)
def test_schedules_pickle_and_round_trip_through_json_descriptions(schedule) -> None:  # type: ignore[no-untyped-def]
    again = pickle.loads(pickle.dumps(schedule))
    assert again == schedule and hash(again) == hash(schedule)
    data = json.loads(json.dumps(describe(schedule)))
    back = from_description(data)
    assert back == schedule
    assert [back(it) for it in range(0, 500, 7)] == [schedule(it) for it in range(0, 500, 7)]


def test_describe_and_from_description_refuse_what_they_do_not_know() -> None:
    assert describe(0.5) == {"name": "constant", "lr": 0.5}
    assert describe(warmup(constant(0.1), 5)) == {
        "name": "warmup",
        "iterations": 5,
        "schedule": {"name": "constant", "lr": 0.1},
    }
    with pytest.raises(TypeError, match=r"not a schedule of ltfunc\.schedules"):
        describe(lambda it: 0.1)
    with pytest.raises(ValueError, match="name='poly' is not supported"):
        from_description({"name": "poly", "lr": 0.1})
    with pytest.raises(ValueError, match="bad fields"):
        from_description({"name": "constant", "rate": 0.1})
    with pytest.raises(TypeError, match="data must be a dict"):
        from_description([("name", "constant")])  # type: ignore[arg-type]


def test_build_makes_the_named_schedules() -> None:
    assert build("constant", 0.1, total=10) == Constant(0.1)
    assert build("multistep", 0.1, total=10, milestones=[5], gamma=0.5) == MultiStep(0.1, (5,), 0.5)
    assert build("cosine", 0.1, total=10) == Cosine(0.1, 10, 0.0)
    assert build("cosine", 0.1, total=10, warmup=3) == Warmup(Cosine(0.1, 10, 0.0), 3)
    assert schedules.SCHEDULES == ("constant", "multistep", "cosine")


# ---------------------------------------------------------------------------- in training


def _tiny() -> tuple[torch.nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
        data = [(torch.randn(4, 6), torch.randint(0, 3, (4,))) for _ in range(12)]
    return model, data


def test_a_schedule_in_fit_matches_steps_by_hand_and_never_recompiles() -> None:
    model, data = _tiny()
    params = ltfunc.get_params(model)
    mask = ltfunc.masks.ones(params)
    sched = warmup(multistep(0.2, [6, 9], gamma=0.5), 4)  # 9 distinct lr values over 12 steps
    step = ltfunc.make_train_step(model, ltfunc.optim.sgd(lr=0.1, momentum=0.9), compile=True)
    state = ltfunc.fit(step, step.init(params), mask, iter(data), 12, lr=sched, eval_every=4)
    assert step.num_compiles == 1  # one graph for every lr value (the lr is a tensor)

    eager = ltfunc.make_train_step(model, ltfunc.optim.sgd(lr=0.1, momentum=0.9), compile=False)
    by_hand = eager.init(params)
    for it, batch in enumerate(data):
        by_hand, _ = eager(by_hand, mask, batch, sched(it))
    for k in params:
        torch.testing.assert_close(state.params[k], by_hand.params[k], rtol=1e-5, atol=1e-6)
    # a constant lr of 0 at iteration 0 (warm-up) left the first step without effect on params
    first, _ = eager(eager.init(params), mask, data[0], sched(0))
    assert all(torch.equal(first.params[k], params[k]) for k in params)


def test_a_rewound_round_reads_the_schedule_at_the_absolute_iteration() -> None:
    model, data = _tiny()
    seen: list[int] = []

    def recording(it: int) -> float:
        seen.append(it)
        return 0.1

    step = ltfunc.make_train_step(model, ltfunc.optim.sgd(lr=0.1), compile=False)
    ltfunc.fit(
        step, step.init(ltfunc.get_params(model), iteration=5), None, itertools.cycle(data), 3, lr=recording
    )
    assert seen == [5, 6, 7]


# ---------------------------------------------------------------------------- from the config


def test_imp_config_builds_the_schedule_and_validates_it_against_iterations() -> None:
    cfg = ImpConfig(
        optimizer="sgd",
        momentum=0.9,
        lr=0.1,
        iterations=1000,
        lr_schedule="multistep",
        milestones=(500, 750),
        gamma=0.1,
        warmup=100,
    )
    assert cfg.make_schedule() == warmup(multistep(0.1, [500, 750], 0.1), 100)
    assert ImpConfig(lr_schedule="cosine", iterations=200).make_schedule() == cosine(1.2e-3, 200)
    assert ImpConfig(warmup=10, iterations=100).make_schedule() == warmup(constant(1.2e-3), 10)
    assert ImpConfig().make_schedule() == 1.2e-3  # constant, no warm-up: a plain float
    for kwargs, words in [
        (
            {"lr_schedule": "multistep", "milestones": (50, 200), "iterations": 100},
            "beyond the training length",
        ),
        ({"lr_schedule": "multistep", "milestones": (60, 50), "iterations": 100}, "strictly increasing"),
        ({"warmup": 101, "iterations": 100}, "warm-up of 101 iterations is longer"),
        ({"lr_schedule": "multistep", "iterations": 100}, "needs milestones"),
        ({"milestones": (10,), "iterations": 100}, "only apply to lr_schedule='multistep'"),
        ({"gamma": 0.5}, "only apply to lr_schedule='multistep'"),
        ({"lr_schedule": "multistep", "milestones": (10,), "gamma": 2.0}, "gamma"),
        ({"lr_schedule": "poly"}, "lr_schedule='poly' is not supported"),
        ({"warmup": -1}, "warmup must be an int >= 0"),
    ]:
        with pytest.raises(ValueError) as info:
            ImpConfig(**kwargs)
        assert str(info.value).startswith("ImpConfig:") and words in str(info.value), (kwargs, info.value)
    with pytest.raises(TypeError, match="milestones must be a tuple of iterations"):
        ImpConfig(lr_schedule="multistep", milestones="10,20")  # type: ignore[arg-type]


def test_make_config_trainer_passes_the_schedule_as_the_trainers_lr() -> None:
    from ltfunc.data import Dataset
    from ltfunc.experiment import make_config_trainer

    x, y = torch.randn(40, 1, 28, 28), torch.randint(0, 10, (40,))
    ds = Dataset("mnist", (x, y), (x[:8], y[:8]), (x, y))
    cfg = ImpConfig(
        optimizer="sgd",
        lr=0.1,
        iterations=20,
        batch_size=8,
        lr_schedule="cosine",
        warmup=5,
        compile=False,
    )
    t = make_config_trainer(cfg, ltfunc.models.lenet300(seed=0), ds)
    assert t.lr == warmup(cosine(0.1, 20), 5)
    w = ltfunc.Weights.of(ltfunc.models.lenet300(seed=0))
    out = ltfunc.train_round(t, w, ltfunc.masks.ones(w.params))
    assert math.isfinite(out.history[-1]["train_loss"])
