"""Linear mode connectivity: interpolation endpoints, barriers, instability, mask overlap, bad input."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import ltfunc
from ltfunc import masks, optim
from ltfunc.evaluation import evaluate
from ltfunc.lmc import instability, interpolate, mask_overlap
from ltfunc.step import make_train_step
from ltfunc.trainer import Weights, make_trainer
from tests.helpers import Tiny, TinyBN


class TwoLayer(nn.Module):
    """``W2 · relu(W1 · x)`` without biases: swapping the hidden units is the same function."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2, 2, bias=False)
        self.fc2 = nn.Linear(2, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def split(n: int = 64, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 12, generator=g)
    return x, (x[:, :5].argmax(1))  # learnable labels


def params_of(cls: type[nn.Module], seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return ltfunc.get_params(cls())


def test_endpoints_equal_each_networks_own_evaluation() -> None:
    model = Tiny()
    a, b = params_of(Tiny, 1), params_of(Tiny, 2)
    mask = ltfunc.prune.random(a, masks.ones(a), rate=0.5, seed=0)
    data = split()
    r = interpolate(model, a, b, mask, data, [0.0, 0.3, 0.7, 1.0], batch_size=16)
    for i, p in ((0, a), (-1, b)):
        loss, acc = evaluate(model, p, mask, data, batch_size=16)
        assert r.losses[i] == loss and r.errors[i] == 1.0 - acc
    assert r.endpoint_errors == (r.errors[0], r.errors[-1])
    assert r.alphas == (0.0, 0.3, 0.7, 1.0)
    assert r.barrier == max(r.errors) - (r.errors[0] + r.errors[-1]) / 2 >= 0
    # endpoints are evaluated even when 0 and 1 are not among the alphas
    inner = interpolate(model, a, b, mask, data, torch.tensor([0.5]), batch_size=16)
    assert inner.endpoint_errors == r.endpoint_errors and len(inner.errors) == 1


def test_identical_endpoints_have_zero_barrier() -> None:
    model = Tiny()
    a = params_of(Tiny, 1)
    r = interpolate(model, a, {k: v.clone() for k, v in a.items()}, None, split(), [0.0, 0.25, 0.5, 0.9, 1.0])
    assert r.barrier == 0.0 and r.loss_barrier == 0.0
    assert len(set(r.errors)) == 1


def test_permuted_hidden_units_have_a_barrier_at_the_midpoint() -> None:
    model = TwoLayer()
    eye, swap = torch.eye(2), torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    a = {"fc1.weight": eye, "fc2.weight": eye}
    b = {"fc1.weight": swap, "fc2.weight": swap}  # the same function, hidden units swapped
    data = (torch.eye(2), torch.tensor([0, 1]))
    r = interpolate(model, a, b, None, data, [0.0, 0.5, 1.0])
    assert r.errors[0] == 0.0 and r.errors[2] == 0.0
    assert r.errors[1] == 0.5  # midpoint: all weights 0.5, equal logits, argmax picks class 0
    assert r.barrier == 0.5
    assert r.loss_barrier > 0


def test_batchnorm_buffers_are_interpolated() -> None:
    model = TinyBN()
    a, b = params_of(TinyBN, 1), params_of(TinyBN, 2)
    ba = {k: v.clone() for k, v in ltfunc.get_buffers(model).items()}
    bb = {**ba, "bn.running_mean": torch.full((16,), 0.5), "bn.running_var": torch.full((16,), 2.0)}
    data = split()
    r = interpolate(model, a, b, None, data, [0.0, 0.5, 1.0], buffers=(ba, bb))
    mid = {k: (a[k] + b[k]) / 2 for k in a}
    mid_bufs = {**ba, "bn.running_mean": torch.full((16,), 0.25), "bn.running_var": torch.full((16,), 1.5)}
    loss, acc = evaluate(model, mid, None, data, buffers=mid_bufs)
    assert r.losses[1] == pytest.approx(loss, rel=1e-6) and r.errors[1] == pytest.approx(1.0 - acc)
    assert r.losses[2] == evaluate(model, b, None, data, buffers=bb)[0]


def train_alone(step, start: Weights, mask, data, seed: int, n: int, lr: float, bs: int, it0: int = 0):
    state = step.init(start.params, buffers=start.buffers)
    for x, y in itertools.islice(ltfunc.data.batches(data, bs, seed=seed, start=it0), n):
        state, _ = step(state, mask, (x, y), lr)
    return state


def test_instability_of_identical_seeds_is_zero_and_endpoints_are_the_copies() -> None:
    model = Tiny()
    step = make_train_step(model, optim.sgd(lr=0.05, momentum=0.9), compile=False)
    start = params_of(Tiny, 1)
    mask = ltfunc.prune.random(start, masks.ones(start), rate=0.3, seed=1)
    data = split(96)
    same = instability(step, start, mask, data, 6, seeds=(4, 4), batch_size=16)
    assert same.barrier == 0.0 and same.loss_barrier == 0.0
    r = instability(step, start, mask, data, 6, seeds=(4, 5), batch_size=16, start_iteration=2)
    for i, seed in ((0, 4), (-1, 5)):
        alone = train_alone(step, Weights(start), mask, data, seed, 6, 0.05, 16, it0=2)
        loss, _ = evaluate(model, alone.params, mask, data)
        assert r.losses[i] == pytest.approx(loss, rel=1e-5)
    assert r.barrier >= 0.0


def test_instability_with_a_trainer_and_batchnorm() -> None:
    model = TinyBN()
    step = make_train_step(model, optim.adam(lr=0.01), compile=False)
    data = split(96)
    trainer = make_trainer(step, data, iterations=5, batch_size=16, lr=lambda it: 0.01 / (1 + it))
    start = Weights.of(model)
    r = instability(
        trainer, start, None, data, 5, seeds=(0, 1), eval_split=split(32, seed=9), alphas=[0.0, 0.5, 1.0]
    )
    assert len(r.errors) == 3 and r.barrier >= 0.0
    same = instability(trainer, start, None, data, 5, seeds=(3, 3), alphas=[0.0, 0.5, 1.0])
    assert same.barrier == 0.0


def test_bad_input() -> None:
    model = Tiny()
    a, b = params_of(Tiny, 1), params_of(Tiny, 2)
    data = split()
    with pytest.raises(ValueError, match=r"alphas\[1\] must be a finite number in \[0.0, 1.0\]"):
        interpolate(model, a, b, None, data, [0.0, 1.5])
    with pytest.raises(ValueError, match=r"alphas\[0\]"):
        interpolate(model, a, b, None, data, [-0.1])
    with pytest.raises(ValueError, match="alphas must not be empty"):
        interpolate(model, a, b, None, data, [])
    with pytest.raises(ValueError, match="params_b lacks"):
        interpolate(model, a, {k: v for k, v in b.items() if k != "fc2.bias"}, None, data)
    with pytest.raises(ValueError, match=r"params_a\['fc1.weight'\].*params_b\['fc1.weight'\]"):
        interpolate(model, a, {**b, "fc1.weight": torch.zeros(3, 3)}, None, data)
    with pytest.raises(TypeError, match="buffers must be None or a pair"):
        interpolate(model, a, b, None, data, buffers={})  # type: ignore[arg-type]
    step = make_train_step(model, optim.sgd(), compile=False)
    with pytest.raises(ValueError, match="give batch_size="):
        instability(step, a, None, data, 2)
    with pytest.raises(TypeError, match="Trainer or TrainStep"):
        instability(model, a, None, data, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alphas must not be empty"):
        instability(step, a, None, data, 2, batch_size=8, alphas=[])


def test_mask_overlap_on_hand_made_masks() -> None:
    t, f = True, False
    a = masks.from_dict(
        {
            "l1": torch.tensor([[t, t], [f, f]]),
            "l2": torch.tensor([t, f, t, f]),
            "l3": torch.tensor([f, f]),
        }
    )
    b = masks.from_dict(
        {
            "l1": torch.tensor([[t, f], [t, f]]),
            "l2": torch.tensor([t, f, t, f]),
            "l3": torch.tensor([f, f]),
        }
    )
    r = mask_overlap(a, b)
    assert r.per_layer == {"l1": 1 / 3, "l2": 1.0, "l3": 1.0}
    assert r.overall == (1 + 2) / (3 + 2)
    assert mask_overlap(a, a).overall == 1.0
    c = masks.from_dict({"l1": ~a["l1"], "l2": ~a["l2"], "l3": a["l3"]})
    assert mask_overlap(a, c).per_layer["l1"] == 0.0 and mask_overlap(a, c).overall == 0.0
    with pytest.raises(ValueError, match="same keys"):
        mask_overlap(a, masks.from_dict({"l1": a["l1"]}))
    with pytest.raises(ValueError, match="shape"):
        mask_overlap(a, masks.from_dict({"l1": a["l1"], "l2": a["l2"][:2], "l3": a["l3"]}))
    with pytest.raises(TypeError, match="Mask"):
        mask_overlap(a, {"l1": a["l1"]})  # type: ignore[arg-type]
