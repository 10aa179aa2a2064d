"""K members through whole rounds: each member equals its own train_round; shared streams; bad input."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

import ltfunc
from ltfunc import _members_memory, masks, optim, schedules
from ltfunc.data import Split
from ltfunc.members import make_members_step
from ltfunc.members_train import members_step_for, train_members_round
from ltfunc.rundir import summarize_round
from ltfunc.trainer import RoundTraining, Trainer, Weights, _train_round, make_evaluator, make_trainer
from tests.helpers import ConvBN as _ConvBN
from tests.helpers import Tiny, tree_allclose

TOL = {"rtol": 1e-4, "atol": 1e-5}


class ConvBN(_ConvBN):
    """tests.helpers.ConvBN without the biases before its BatchNorms: their gradient is 0 up to
    rounding, which Adam scales up to lr-sized steps, so batched and solo kernels would disagree."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, bias=False)
        self.fc1 = torch.nn.Linear(4 * 13 * 13, 32, bias=False)


def split(n: int, seed: int, shape: tuple[int, ...] = (1, 28, 28)) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(
        torch.randn(n, *shape, generator=g), torch.randint(0, 10 if len(shape) > 1 else 5, (n,), generator=g)
    )


class Bar:
    """A tqdm stand-in that records what it was told."""

    def __init__(self) -> None:
        self.updates = 0
        self.postfixes: list[dict[str, str]] = []

    def update(self, n: int) -> None:
        self.updates += n

    def set_postfix(self, shown: dict[str, str], refresh: bool = True) -> None:
        self.postfixes.append(shown)


def starts_and_masks(model_cls: type[torch.nn.Module], k: int) -> tuple[list[Weights], list[masks.Mask]]:
    starts, mks = [], []
    for i in range(k):
        torch.manual_seed(50 + i)
        m = model_cls()
        with torch.no_grad():  # BatchNorm statistics that differ per member
            for name, b in m.named_buffers():
                if name.endswith("running_mean"):
                    b.normal_()
        w = Weights.of(m)
        starts.append(w)
        names = [n for n in w.params if n.endswith("weight") and w.params[n].dim() > 1]
        mks.append(
            ltfunc.prune.random(w.params, masks.ones(w.params, select=names), rate=0.15 * (i + 1), seed=i)
        )
    return starts, mks


OPTS = {"sgd_momentum": lambda: optim.sgd(lr=0.05, momentum=0.9), "adam": lambda: optim.adam(lr=0.003)}


def conv_trainers(opt_name: str, k: int, *, shared: bool) -> list[Trainer]:
    model = ConvBN()
    a, b = split(48, 1), split(40, 2)
    step = ltfunc.make_train_step(model, OPTS[opt_name](), compile=False)
    evaluators = [make_evaluator(model, {"val": split(24, 3), "test": split(24, 4)}, batch_size=16)]
    evaluators.append(make_evaluator(model, {"val": split(20, 5), "test": split(24, 4)}, batch_size=16))
    lr = schedules.multistep(OPTS[opt_name]().lr, [3], gamma=0.5)
    base = make_trainer(step, a, iterations=6, batch_size=8, lr=lr, eval_every=2, evaluate=evaluators[0])
    if shared:
        return [base] * k
    # member 1: its own split, seed and evaluator; member 2 reads member 0's stream
    others = [base._replace(train=b, data_seed=1, evaluate=evaluators[1]), base._replace(data_seed=0)]
    return [base, *others][:k]


def assert_rounds_equal(got: RoundTraining, want: RoundTraining) -> None:
    assert tree_allclose(got.final.params, want.final.params, **TOL)
    assert tree_allclose(got.final.buffers, want.final.buffers, **TOL)
    assert [r["iteration"] for r in got.history] == [r["iteration"] for r in want.history]
    for a, b in zip(got.history, want.history, strict=True):
        assert list(a) == list(b)  # same keys, same order
        for key in a:
            assert math.isclose(a[key], b[key], rel_tol=1e-4, abs_tol=1e-5), (key, a[key], b[key])
        assert a["density"] == b["density"]
    assert (got.captured is None) == (want.captured is None)
    if want.captured is not None:
        assert got.captured is not None
        assert tree_allclose(got.captured.params, want.captured.params, **TOL)
        assert tree_allclose(got.captured.buffers, want.captured.buffers, **TOL)
    es = [
        summarize_round(r.history, round=0, density=1.0, wall_seconds=0.0)["early_stop_iteration"]
        for r in (got, want)
    ]
    assert es[0] == es[1]


@pytest.mark.parametrize("opt_name", sorted(OPTS))
@pytest.mark.parametrize(("k", "shared", "start_iteration"), [(1, False, 0), (3, False, 1), (3, True, 0)])
def test_each_member_equals_its_own_train_round(
    opt_name: str, k: int, shared: bool, start_iteration: int
) -> None:
    trainers = conv_trainers(opt_name, k, shared=shared)
    starts, mks = starts_and_masks(ConvBN, k)
    seen: list[list[dict[str, Any]]] = [[] for _ in range(k)]
    bar = Bar()
    got = train_members_round(
        trainers,
        starts,
        mks,
        start_iteration=start_iteration,
        capture_at=3,
        on_records=[seen[i].append for i in range(k)],
        progress=bar,
    )
    assert len(got) == k
    want = [_train_round(trainers[i], starts[i], mks[i], start_iteration, 3, None, None) for i in range(k)]
    for i in range(k):
        assert_rounds_equal(got[i], want[i])
        assert seen[i] == list(got[i].history)
        for n, mk in mks[i].items():  # pruned weights exactly 0
            assert bool((got[i].final.params[n][~mk] == 0).all())
    assert bar.updates == 6 - start_iteration and len(bar.postfixes) == len(got[0].history)
    if k == 3 and not shared:  # members trained apart: own data, own statistics
        assert not torch.equal(
            got[0].final.buffers["bn.running_mean"], got[2].final.buffers["bn.running_mean"]
        )
        assert got[0].history[0]["val_loss"] != got[1].history[0]["val_loss"]


def test_shared_stream_same_with_a_per_member_step() -> None:
    trainers = conv_trainers("adam", 3, shared=True)
    starts, mks = starts_and_masks(ConvBN, 3)
    assert members_step_for(trainers).shared_batch
    shared = train_members_round(trainers, starts, mks)
    per_member = make_members_step(ConvBN(), trainers[0].step.optimizer, shared_batch=False)
    stacked = train_members_round(trainers, starts, mks, vstep=per_member)
    for a, b in zip(shared, stacked, strict=True):
        assert tree_allclose(a.final.params, b.final.params, **TOL)
        assert tree_allclose(a.final.buffers, b.final.buffers, **TOL)
    with pytest.raises(ValueError, match="shared_batch=True but the members read 2 different data streams"):
        train_members_round(
            [trainers[0], trainers[0]._replace(data_seed=5)],
            starts[:2],
            mks[:2],
            vstep=members_step_for(trainers),
        )


def test_compiled_once_across_rounds_with_new_masks() -> None:
    model = Tiny()
    step = ltfunc.make_train_step(model, optim.adam(lr=0.01), compile=True)
    base = make_trainer(step, split(40, 0, (12,)), iterations=4, batch_size=8, eval_every=2)
    trainers = [base, base._replace(data_seed=1)]
    vstep = members_step_for(trainers)
    assert vstep.compiled and not vstep.shared_batch
    starts, mks = starts_and_masks(Tiny, 2)
    first = train_members_round(trainers, starts, mks, vstep=vstep)
    assert vstep.num_compiles == 1
    new_masks = [ltfunc.prune.magnitude(r.final.params, m, rate=0.5) for r, m in zip(first, mks, strict=True)]
    second = train_members_round(trainers, starts[::-1], new_masks, start_iteration=1, vstep=vstep)
    assert vstep.num_compiles == 1
    eager = [ltfunc.make_train_step(model, optim.adam(lr=0.01), compile=False) for _ in range(2)]
    for i, r in enumerate(second):
        want = _train_round(
            trainers[i]._replace(step=eager[i]), starts[::-1][i], new_masks[i], 1, None, None, None
        )
        assert tree_allclose(r.final.params, want.final.params, **TOL)


def test_non_finite_loss_names_the_member() -> None:
    trainers = conv_trainers("sgd_momentum", 3, shared=False)
    starts, mks = starts_and_masks(ConvBN, 3)
    bad = dict(starts[1].params)
    bad["fc2.bias"] = torch.full_like(bad["fc2.bias"], float("nan"))
    starts[1] = Weights(bad, starts[1].buffers)
    with pytest.raises(FloatingPointError, match=r"member 1's training loss became nan at step 1 "):
        train_members_round(trainers, starts, mks)


def test_memory_refusal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    vstep = make_members_step(ConvBN(), optim.adam())
    one = vstep.estimate_memory(1)
    with_acts = vstep.estimate_memory(1, batch_shape=(8, 1, 28, 28))
    assert vstep.estimate_memory(3) == 3 * one and with_acts > one
    # activations: at least the conv output (8 x 4 x 26 x 26 floats) kept and its gradient
    assert with_acts - one >= 2 * 8 * 4 * 26 * 26 * 4
    monkeypatch.setattr(
        _members_memory, "available_memory", lambda device: (2 * one + one // 2, "test memory")
    )
    starts, mks = starts_and_masks(ConvBN, 3)
    with pytest.raises(
        ValueError, match=r"members.init: 3 members need about .*\(test memory\); at most 2 members fit"
    ):
        vstep.init([w.params for w in starts], [w.buffers for w in starts])
    assert (
        vstep.init([w.params for w in starts[:2]], [w.buffers for w in starts[:2]])
        .params["fc1.weight"]
        .shape[0]
        == 2
    )
    trainers = conv_trainers("adam", 3, shared=False)
    called: list[Any] = []
    with pytest.raises(
        ValueError, match=r"train_members_round: 3 members need .*activations.*1 member fits: train fewer"
    ):
        train_members_round(trainers, starts, mks, on_records=[called.append] * 3)
    assert called == []
    monkeypatch.setattr(_members_memory, "available_memory", lambda device: (one // 2, "test memory"))
    with pytest.raises(ValueError, match="not even one member fits"):
        vstep.init([starts[0].params], [starts[0].buffers])
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"estimate_memory: k must be an int >= 1, got 0"):
        vstep.estimate_memory(0)
    with pytest.raises(ValueError, match=r"batch_shape\[0\] must be an int >= 1, got 0"):
        vstep.estimate_memory(1, batch_shape=(0, 3))
    with pytest.raises(TypeError, match="batch_shape must be None or a tuple of ints"):
        vstep.estimate_memory(1, batch_shape="8")
    with pytest.raises(TypeError, match=r"dtype must be a floating-point torch\.dtype"):
        vstep.estimate_memory(1, dtype=torch.int64)
    info = tmp_path / "meminfo"
    info.write_text("MemTotal:       24684096 kB\nMemAvailable:   2000 kB\n")
    assert _members_memory.available_memory(torch.device("cpu"), str(info)) == (
        2000 * 1024,
        f"MemAvailable in {info}",
    )
    assert _members_memory.available_memory(torch.device("cpu"), str(tmp_path / "missing")) is None
    assert _members_memory.available_memory(torch.device("meta")) is None


def test_bad_input() -> None:
    trainers = conv_trainers("sgd_momentum", 3, shared=False)
    starts, mks = starts_and_masks(ConvBN, 3)
    t0 = trainers[0]
    with pytest.raises(ValueError, match=r"trainers must hold at least one member \(K >= 1\)"):
        train_members_round([], [], [])
    with pytest.raises(TypeError, match="trainers must be a list of Trainers"):
        train_members_round(t0, starts, mks)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"trainers\[1\]\.batch_size is 4 but trainers\[0\]\.batch_size is 8"
    ):
        train_members_round([t0, t0._replace(batch_size=4)], starts[:2], mks[:2])
    with pytest.raises(ValueError, match=r"trainers\[2\]\.lr is 0.1 but trainers\[0\]\.lr is MultiStep"):
        train_members_round([t0, t0, t0._replace(lr=0.1)], starts, mks)
    with pytest.raises(ValueError, match=r"trainers\[1\]\.iterations"):
        train_members_round([t0, t0._replace(iterations=7)], starts[:2], mks[:2])
    adam_step = ltfunc.make_train_step(ConvBN(), optim.adam(), compile=False)
    with pytest.raises(ValueError, match=r"trainers\[1\]\.step\.optimizer \(adam"):
        train_members_round([t0, t0._replace(step=adam_step)], starts[:2], mks[:2])
    other = ltfunc.make_train_step(Tiny(), optim.sgd(lr=0.05, momentum=0.9), compile=False)
    with pytest.raises(
        ValueError, match=r"trainers\[1\]\.step\.model \(Tiny.*members share the model architecture"
    ):
        train_members_round([t0, t0._replace(step=other)], starts[:2], mks[:2])
    with pytest.raises(ValueError, match=r"trainers\[1\]\.step\.loss_fn"):
        loss_step = ltfunc.make_train_step(
            t0.step.model, t0.step.optimizer, torch.nn.functional.nll_loss, compile=False
        )
        train_members_round([t0, t0._replace(step=loss_step)], starts[:2], mks[:2])
    reducing = ltfunc.make_train_step(ConvBN(), optim.sgd(lr=0.05, momentum=0.9), compile=False)
    reducing.grad_reduce = lambda t: t  # a data-parallel step (ltfunc.distributed)
    with pytest.raises(ValueError, match=r"trainers\[1\] trains data-parallel"):
        train_members_round([t0, t0._replace(step=reducing)], starts[:2], mks[:2])
    with pytest.raises(ValueError, match=r"starts must hold one entry per member \(K = 3 trainers\), got 2"):
        train_members_round(trainers, starts[:2], mks)
    with pytest.raises(ValueError, match=r"masks must hold one entry per member \(K = 3 trainers\), got 4"):
        train_members_round(trainers, starts, [*mks, mks[0]])
    wrong = {**starts[1].params, "fc1.weight": torch.zeros(3, 3)}
    with pytest.raises(ValueError, match=r"starts\[1\]\.params\['fc1.weight'\] has shape \(3, 3\)"):
        train_members_round(trainers, [starts[0], Weights(wrong, starts[1].buffers), starts[2]], mks)
    missing = {k: v for k, v in starts[2].params.items() if k != "fc2.bias"}
    with pytest.raises(ValueError, match=r"starts\[2\]\.params keys .* missing \['fc2.bias'\]"):
        train_members_round(trainers, [starts[0], starts[1], Weights(missing, starts[2].buffers)], mks)
    with pytest.raises(ValueError, match=r"starts\[1\]\.buffers keys"):
        train_members_round(trainers, [starts[0], Weights(starts[1].params, {}), starts[2]], mks)
    double = {k: v.double() for k, v in starts[1].params.items()}
    with pytest.raises(
        ValueError, match=r"starts\[1\]\.params are torch.float64 .* starts\[0\]\.params are torch.float32"
    ):
        train_members_round(trainers, [starts[0], Weights(double, starts[1].buffers), starts[2]], mks)
    bad_mask = masks.from_dict({**dict(mks[1]), "fc1.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"masks\[1\].*'fc1.weight'"):
        train_members_round(trainers, starts, [mks[0], bad_mask, mks[2]])
    fewer = masks.from_dict({k: v for k, v in mks[2].items() if k != "conv.weight"})
    with pytest.raises(
        ValueError, match=r"masks\[2\] does not have masks\[0\]'s keys: missing \['conv.weight'\]"
    ):
        train_members_round(trainers, starts, [mks[0], mks[1], fewer])
    with pytest.raises(TypeError, match=r"masks\[0\] must be an ltfunc Mask"):
        train_members_round(trainers, starts, [None, mks[1], mks[2]])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"on_records must hold one entry per member"):
        train_members_round(trainers, starts, mks, on_records=[print])
    with pytest.raises(ValueError, match=r"start_iteration must be an int in \[0, 5\]"):
        train_members_round(trainers, starts, mks, start_iteration=6)
    with pytest.raises(ValueError, match=r"capture_at must be an int in \[2, 6\]"):
        train_members_round(trainers, starts, mks, start_iteration=2, capture_at=1)
    with pytest.raises(ValueError, match=r"vstep\.model \(Tiny"):
        train_members_round(trainers, starts, mks, vstep=make_members_step(Tiny(), t0.step.optimizer))
    with pytest.raises(TypeError, match="vstep must be a MembersStep"):
        train_members_round(trainers, starts, mks, vstep=t0.step)  # type: ignore[arg-type]
    float64 = [t._replace(train=Split(t.train[0].double(), t.train[1])) for t in trainers]
    with pytest.raises(
        ValueError, match=r"trainers\[0\]\.train\.x is torch.float64 but the start weights are torch.float32"
    ):
        train_members_round(float64, starts, mks)
    with pytest.raises(TypeError, match="progress must be None or a tqdm-like bar"):
        train_members_round(trainers, starts, mks, progress=True)
