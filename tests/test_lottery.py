"""The seed-compatible LotteryTicket facade: seed call patterns, documented fixes, bad input."""

from __future__ import annotations

import copy
import io
import json
import math
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import train_reference, tree_allclose
from torch import nn

import ltfunc
from ltfunc.lottery import DEFAULT_LR, LotteryTicket

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# models and data


class ConvBN(nn.Module):
    """A small conv net with BatchNorm: conv kernels, a BN weight, two fc layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc1 = nn.Linear(4 * 13 * 13, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def make_loader(n: int = 96, batch_size: int = 32, seed: int = 0) -> torch.utils.data.DataLoader:
    """A DataLoader over synthetic, learnable MNIST-shaped data (label = brightest quadrant)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    for i in range(n):
        r, c = divmod(int(y[i]), 2)
        x[i, 0, r * 14 : (r + 1) * 14, c * 14 : (c + 1) * 14] += 1.0
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size)


def masked_fraction(mask: Mapping[str, torch.Tensor]) -> dict[str, float]:
    return {k: 1.0 - v.float().mean().item() for k, v in mask.items()}


def expected_kept(n: int, p: float) -> int:
    """Survivors of pruning fraction p of n weights: round half up, the documented rule."""
    return n - math.floor(p * n + 0.5)


@pytest.fixture
def lenet() -> nn.Module:
    return ltfunc.models.lenet300(seed=0)


# --------------------------------------------------------------------------------------------
# single shot


def test_single_shot_layer_prunes_each_layer_by_its_own_magnitudes(lenet: nn.Module) -> None:
    LT = LotteryTicket(lenet, "cpu", compile=False)
    masks = LT.get_masks_by_single_shot(0, 0.8, "layer")
    assert isinstance(masks, Mapping) and isinstance(masks, ltfunc.Mask)
    assert list(masks) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    for name, m in masks.items():
        w = dict(lenet.named_parameters())[name].detach().abs()
        assert m.dtype == torch.bool and m.shape == w.shape
        assert int(m.sum()) == expected_kept(m.numel(), 0.8)
        assert w[~m].max() <= w[m].min()  # the pruned are the smallest of their layer
    assert masks["fc1.weight"].shape == (300, 784)  # dict-style access, as the seed's masks


def test_single_shot_global_uses_one_threshold_across_fc_layers(lenet: nn.Module) -> None:
    LT = LotteryTicket(lenet, "cpu", compile=False)
    masks = LT.get_masks_by_single_shot(0, 0.8, "global")
    params = dict(lenet.named_parameters())
    kept = torch.cat([params[k].detach().abs()[m] for k, m in masks.items()])
    pruned = torch.cat([params[k].detach().abs()[~m] for k, m in masks.items()])
    total = sum(m.numel() for m in masks.values())
    assert kept.numel() == expected_kept(total, 0.8)
    assert pruned.max() <= kept.min()
    # Glorot init: fc1 (fan 784+300) has the smallest weights, so a global ranking prunes it
    # more than 80% and the output layer less, unlike layer-wise pruning.
    frac = masked_fraction(masks)
    assert frac["fc1.weight"] > 0.8 > frac["fc3.weight"]


def test_conv_and_fc_percents_apply_to_their_layers_and_batchnorm_is_never_masked() -> None:
    model = ConvBN()
    LT = LotteryTicket(model, "cpu", compile=False)
    assert list(LT.masks) == ["conv.weight", "fc1.weight", "fc2.weight"]  # no bn.weight, no biases
    for mode in ("layer", "global"):
        masks = LT.get_masks_by_single_shot(0.5, 0.25, mode)
        assert list(masks) == ["conv.weight", "fc1.weight", "fc2.weight"]
        assert int(masks["conv.weight"].sum()) == expected_kept(36, 0.5)
        fc_total = masks["fc1.weight"].numel() + masks["fc2.weight"].numel()
        fc_kept = int(masks["fc1.weight"].sum()) + int(masks["fc2.weight"].sum())
        assert fc_kept == expected_kept(fc_total, 0.25)


@pytest.mark.parametrize("mode", ["layer", "global"])
def test_zero_percent_prunes_nothing(lenet: nn.Module, mode: str) -> None:
    # The seed pruned |w| <= percentile(|w|, 0): the smallest weight of every layer.
    masks = LotteryTicket(lenet, "cpu", compile=False).get_masks_by_single_shot(0, 0, mode)
    assert all(bool(m.all()) for m in masks.values())


def test_single_shot_does_not_change_the_model_or_the_current_masks(lenet: nn.Module) -> None:
    LT = LotteryTicket(lenet, "cpu", compile=False)
    before = copy.deepcopy(lenet.state_dict())
    LT.get_masks_by_single_shot(0, 0.5, "global")
    assert ltfunc.tree_equal(dict(lenet.state_dict()), dict(before))
    assert ltfunc.masks.density(LT.masks) == 1.0


# --------------------------------------------------------------------------------------------
# iteration


class CountingLoss:
    """Cross-entropy that counts how often it is called (one call per training step)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return F.cross_entropy(logits, targets)


@pytest.mark.parametrize("mode", ["layer", "global"])
def test_iteration_reaches_cumulative_sparsity_and_trains_exactly_train_itrs(mode: str) -> None:
    model = ltfunc.models.lenet300(seed=0)
    init = copy.deepcopy(model.state_dict())
    loader = make_loader(n=64, batch_size=32)  # 2 batches: train_itrs=5 cycles it
    LT = LotteryTicket(model, "cpu", criterion=CountingLoss(), compile=False).set_init_weights(init)
    LT.train_all(loader, 10)  # "trained" model
    trained = copy.deepcopy(model.state_dict())
    LT.criterion.calls = 0

    masks = LT.get_masks_by_iteration(3, 0, 0.2, loader, 5, mode)

    assert LT.criterion.calls == 2 * 5  # rounds 2 and 3 train exactly train_itrs batches each
    if mode == "layer":
        for m in masks.values():
            assert int(m.sum()) == expected_kept(m.numel(), 0.6)
    else:
        total = sum(m.numel() for m in masks.values())
        assert sum(int(m.sum()) for m in masks.values()) == expected_kept(total, 0.6)
    # Rounds 2-3 ranked retrained weights, so the result differs from one-shot pruning to 60%,
    # and everything pruned in round 1 stays pruned.
    first = LT.get_masks_by_iteration(1, 0, 0.2, loader, 5, mode)
    assert first == LT.get_masks_by_single_shot(0, 0.2, mode)
    assert masks != LT.get_masks_by_single_shot(0, 0.6, mode)
    assert all(not bool((masks[k] & ~first[k]).any()) for k in masks)
    # Model, masks and mode are as on entry.
    assert ltfunc.tree_equal(dict(model.state_dict()), dict(trained))
    assert ltfunc.masks.density(LT.masks) == 1.0


def test_iteration_retrains_the_pruned_network() -> None:
    # Early seed versions retrained the dense network between rounds; here the weights pruned
    # in round k stay 0 while round k+1 trains.
    model = ltfunc.models.lenet300(seed=0)
    init = copy.deepcopy(model.state_dict())
    loader = make_loader(n=32, batch_size=32)
    pruned_stay_zero: list[bool] = []

    class Spy(LotteryTicket):
        def _train_batches(self, func: str, loader: object, iterations: int, horizon: int) -> None:
            super()._train_batches(func, loader, iterations, horizon)  # type: ignore[arg-type]
            for name, m in self.masks.items():
                pruned_stay_zero.append(bool((dict(self.model.named_parameters())[name][~m] == 0).all()))

    LT = Spy(model, "cpu", compile=False).set_init_weights(init)
    LT.get_masks_by_iteration(3, 0, 0.3, loader, 3, "layer")
    assert pruned_stay_zero == [True] * 6  # 2 training rounds x 3 layers


def test_iteration_leaves_training_state_untouched() -> None:
    batches = list(make_loader(n=96, batch_size=32))
    a, b = ltfunc.models.lenet300(seed=0), ltfunc.models.lenet300(seed=0)
    init = copy.deepcopy(a.state_dict())
    LTa = LotteryTicket(a, "cpu", init_weights=init, compile=False)
    LTb = LotteryTicket(b, "cpu", init_weights=init, compile=False)
    for x, y in batches[:2]:
        LTa.train_on_batch(x, y)
        LTb.train_on_batch(x, y)
    LTa.get_masks_by_iteration(2, 0, 0.4, batches, 4, "global")
    ra, rb = LTa.train_on_batch(*batches[2]), LTb.train_on_batch(*batches[2])
    # Same weights, masks and Adam state as if the iteration never ran.
    assert ra == rb
    assert ltfunc.tree_equal(ltfunc.get_params(a), ltfunc.get_params(b))


def test_iteration_accepts_the_seed_sources_keywords() -> None:
    """The seed's source spells the arguments prune_itrs / train_iter; both spellings give one mask."""
    loader = make_loader(n=64, batch_size=32)

    def ticket() -> LotteryTicket:
        model = ltfunc.models.lenet300(seed=0)
        LT = LotteryTicket(model, "cpu", compile=False).set_init_weights(copy.deepcopy(model.state_dict()))
        return LT.train_all(loader, 4)

    a = ticket().get_masks_by_iteration(3, 0, 0.2, loader, 3, "layer")
    b = ticket().get_masks_by_iteration(
        prune_itrs=3,
        conv_prune_percent=0,
        fc_prune_percent=0.2,
        train_loader=loader,
        train_iter=3,
        mode="layer",
    )
    assert ltfunc.tree_equal(dict(a), dict(b)) and ltfunc.masks.density(a) == pytest.approx(0.4, abs=0.01)
    LT = ticket()
    with pytest.raises(TypeError, match=r"got both prune_itr=3 and prune_itrs=3; give one"):
        LT.get_masks_by_iteration(3, 0, 0.2, loader, 3, prune_itrs=3)
    with pytest.raises(TypeError, match=r"missing argument train_itrs \(train_iter in the seed's source\)"):
        LT.get_masks_by_iteration(3, 0, 0.2, loader)
    with pytest.raises(TypeError, match=r"missing argument prune_itr"):
        LT.get_masks_by_iteration(conv_prune_percent=0, fc_prune_percent=0.2)
    with pytest.raises(TypeError, match=r"missing argument fc_prune_percent"):
        LT.get_masks_by_iteration(1, 0.0)


def test_iteration_errors_before_any_work(lenet: nn.Module) -> None:
    loader = make_loader(n=32)
    LT = LotteryTicket(lenet, "cpu", compile=False)
    with pytest.raises(ValueError, match="set_init_weights"):
        LT.get_masks_by_iteration(2, 0, 0.2, loader, 1, "layer")
    LT.set_init_weights(copy.deepcopy(lenet.state_dict()))
    with pytest.raises(ValueError, match=r"prune_itr \* fc_prune_percent"):
        LT.get_masks_by_iteration(5, 0, 0.2, loader, 1, "layer")
    with pytest.raises(ValueError, match="prune_itr"):
        LT.get_masks_by_iteration(0, 0, 0.2, loader, 1, "layer")
    with pytest.raises(ValueError, match="train_itrs"):
        LT.get_masks_by_iteration(2, 0, 0.2, loader, 0, "layer")
    with pytest.raises(TypeError, match="re-iterable"):
        LT.get_masks_by_iteration(2, 0, 0.2, iter(loader), 1, "layer")
    with pytest.raises(ValueError, match="mode"):
        LT.get_masks_by_iteration(2, 0, 0.2, loader, 1, "blockwise")
    with pytest.raises(ValueError, match="no batches"):
        LT.get_masks_by_iteration(2, 0, 0.2, [], 1, "layer")


# --------------------------------------------------------------------------------------------
# train_init / train_on_batch / eval_all


def test_train_init_restores_init_on_survivors_zeroes_pruned_and_resets_optimizer() -> None:
    model = ltfunc.models.lenet300(seed=0)
    init = copy.deepcopy(model.state_dict())
    loader = make_loader()
    LT = LotteryTicket(model, "cpu", compile=False).set_init_weights(init)
    LT.train_all(loader, 6)
    masks = LT.get_masks_by_single_shot(0, 0.7, "layer")

    assert LT.set_init_weights(init).set_masks(masks) is LT
    assert LT.train_init() is LT
    for name, p in model.named_parameters():
        if name in masks:
            assert torch.equal(p[masks[name]], init[name][masks[name]])
            assert bool((p[~masks[name]] == 0).all())
        else:
            assert torch.equal(p, init[name])
    # A fresh facade from the same start takes exactly the same first step: the Adam state
    # (moments and step count) was reset.
    x, y = next(iter(loader))
    LT.train_on_batch(x, y)
    fresh_model = ltfunc.models.lenet300(seed=0)
    fresh = LotteryTicket(fresh_model, "cpu", None, None, init, masks, compile=False).train_init()
    fresh.train_on_batch(x, y)
    assert tree_allclose(ltfunc.get_params(model), ltfunc.get_params(fresh_model), rtol=0, atol=0)


def test_train_init_without_init_weights_is_a_clear_error(lenet: nn.Module) -> None:
    with pytest.raises(ValueError, match="set_init_weights"):
        LotteryTicket(lenet, "cpu", compile=False).train_init()


def test_train_on_batch_keeps_pruned_weights_at_zero_and_updates_the_model() -> None:
    model = ltfunc.models.lenet300(seed=0)
    init = copy.deepcopy(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    LT = LotteryTicket(model, "cpu", opt, nn.CrossEntropyLoss(), compile=False)
    masks = LT.get_masks_by_single_shot(0, 0.5, "layer")
    LT.set_init_weights(init).set_masks(masks).train_init()
    assert LT.train() is LT and model.training
    before = copy.deepcopy(model.state_dict())
    for x, y in make_loader():
        logits = model(x)
        expect_loss = F.cross_entropy(logits, y).item()
        expect_correct = int((logits.argmax(1) == y).sum())
        loss, acc, correct = LT.train_on_batch(x, y)
        assert loss == pytest.approx(expect_loss, rel=1e-5)
        assert correct == expect_correct and acc == pytest.approx(correct / len(y))
    for name, m in masks.items():
        w = dict(model.named_parameters())[name]
        assert bool((w[~m] == 0).all())  # weight decay and momentum never revive them
        assert bool((w[m] != before[name][m]).any())  # survivors trained, in LT.model itself
    assert not torch.equal(model.fc1.bias, before["fc1.bias"])


def test_model_edited_between_steps_is_what_the_next_step_trains(lenet: nn.Module) -> None:
    LT = LotteryTicket(lenet, "cpu", compile=False)
    batches = list(make_loader(n=96, batch_size=32))
    LT.train_on_batch(*batches[0])
    edited = {k: v * 0.5 for k, v in lenet.state_dict().items()}
    lenet.load_state_dict(edited)  # in place, like a seed user loading a checkpoint
    x, y = batches[1]
    with torch.no_grad():
        expected = F.cross_entropy(lenet(x), y).item()
    assert LT.train_on_batch(x, y).loss == pytest.approx(expected, rel=1e-5)
    with torch.no_grad():
        lenet.fc3.weight.data = torch.zeros_like(lenet.fc3.weight)  # new storage
    x, y = batches[2]
    with torch.no_grad():
        expected = F.cross_entropy(lenet(x), y).item()
    assert LT.train_on_batch(x, y).loss == pytest.approx(expected, rel=1e-5)
    assert float(lenet.fc3.weight.detach().abs().sum()) > 0  # trained, written into the new storage


def test_train_on_batch_without_sync_returns_tensors(lenet: nn.Module) -> None:
    LT = LotteryTicket(lenet, "cpu", compile=False)
    x, y = next(iter(make_loader()))
    res = LT.train_on_batch(x, y, sync=False)
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in res)
    assert int(res.correct) == round(float(res.accuracy) * len(y))


def test_eval_all_matches_a_manual_computation_and_restores_mode(lenet: nn.Module) -> None:
    loader = make_loader(n=70, batch_size=32)  # a short last batch: per-example averaging matters
    LT = LotteryTicket(lenet, "cpu", compile=False).train()
    loss, acc = LT.eval_all(loader)
    x = torch.cat([b[0] for b in loader])
    y = torch.cat([b[1] for b in loader])
    with torch.no_grad():
        logits = lenet(x)
    assert 0.0 <= acc <= 1.0
    assert acc == int((logits.argmax(1) == y).sum()) / 70
    assert loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert lenet.training
    with pytest.raises(ValueError, match="no examples"):
        LT.eval_all([])


def test_eval_all_runs_batchnorm_in_eval_mode() -> None:
    model = ConvBN()
    with torch.no_grad():
        model.bn.running_mean.fill_(0.3)
        model.bn.running_var.fill_(2.0)
    stats = copy.deepcopy(model.state_dict())
    loader = make_loader(n=40, batch_size=16)
    LT = LotteryTicket(model, "cpu", compile=False).train()
    loss, _ = LT.eval_all(loader)
    assert ltfunc.tree_equal(dict(model.state_dict()), dict(stats))  # no running-stat update
    assert model.training
    x = torch.cat([b[0] for b in loader])
    y = torch.cat([b[1] for b in loader])
    with torch.no_grad():
        train_mode_loss = F.cross_entropy(copy.deepcopy(model)(x), y).item()  # batch statistics
        model.eval()
        assert loss == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-5)
    assert loss != pytest.approx(train_mode_loss, rel=1e-3)


def test_learning_improves_on_learnable_data() -> None:
    model = ltfunc.models.lenet300(seed=0)
    loader = make_loader(n=128, batch_size=32)
    LT = LotteryTicket(model, "cpu", compile=False)
    loss0, acc0 = LT.eval_all(loader)
    LT.set_masks(LT.get_masks_by_single_shot(0, 0.8, "layer")).train_all(loader, 40)
    loss, acc = LT.eval_all(loader)
    assert acc > max(acc0, 0.9) and loss < loss0


# --------------------------------------------------------------------------------------------
# optimizers


def _reference(model: nn.Module, opt: torch.optim.Optimizer, batches: list, sched: object = None) -> None:
    for x, y in batches:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()  # type: ignore[attr-defined]


OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05),
    "sgd_momentum_wd": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "sgd_dampening": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, dampening=0.3),
    "sgd_nesterov": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda ps: torch.optim.Adam(ps, lr=2e-3, betas=(0.8, 0.99), eps=1e-7, weight_decay=1e-4),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=2e-3, weight_decay=0.05),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_torch_optimizer_translation_matches_torch_optim(name: str) -> None:
    batches = list(make_loader(n=128, batch_size=32))
    ref = ltfunc.models.lenet300(seed=1)
    ours = copy.deepcopy(ref)
    _reference(ref, OPTIMIZERS[name](ref.parameters()), batches)
    LT = LotteryTicket(ours, "cpu", OPTIMIZERS[name](ours.parameters()), compile=False)
    for x, y in batches:
        LT.train_on_batch(x, y)
    assert tree_allclose(ltfunc.get_params(ours), ltfunc.get_params(ref), rtol=1e-4, atol=1e-6)


def test_default_optimizer_is_adam_with_the_documented_lr(lenet: nn.Module) -> None:
    batches = list(make_loader(n=64, batch_size=32))
    ref = copy.deepcopy(lenet)
    _reference(ref, torch.optim.Adam(ref.parameters(), lr=DEFAULT_LR), batches)
    LT = LotteryTicket(lenet, "cpu", compile=False)
    for x, y in batches:
        LT.train_on_batch(x, y)
    assert DEFAULT_LR == 1.2e-3
    assert tree_allclose(ltfunc.get_params(lenet), ltfunc.get_params(ref), rtol=1e-4, atol=1e-6)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")
def test_torch_lr_scheduler_on_the_given_optimizer_is_followed(lenet: nn.Module) -> None:
    batches = list(make_loader(n=96, batch_size=32))
    ref = copy.deepcopy(lenet)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    _reference(ref, ref_opt, batches, torch.optim.lr_scheduler.StepLR(ref_opt, step_size=1, gamma=0.1))
    opt = torch.optim.SGD(lenet.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    LT = LotteryTicket(lenet, "cpu", opt, compile=False)
    for x, y in batches:
        LT.train_on_batch(x, y)
        sched.step()
    assert tree_allclose(ltfunc.get_params(lenet), ltfunc.get_params(ref), rtol=1e-5, atol=1e-7)


def test_unsupported_optimizers_are_clear_errors(lenet: nn.Module) -> None:
    with pytest.raises(ValueError, match="RMSprop"):
        LotteryTicket(lenet, "cpu", torch.optim.RMSprop(lenet.parameters()), compile=False)
    with pytest.raises(TypeError, match="optimizer"):
        LotteryTicket(lenet, "cpu", "adam", compile=False)  # type: ignore[arg-type]
    other = ltfunc.models.lenet300()
    with pytest.raises(ValueError, match="another model"):
        LotteryTicket(lenet, "cpu", torch.optim.Adam(other.parameters()), compile=False)
    with pytest.raises(ValueError, match="covers only"):
        LotteryTicket(lenet, "cpu", torch.optim.Adam(lenet.fc1.parameters()), compile=False)


def test_set_optimizer_and_set_criterion(lenet: nn.Module) -> None:
    batches = list(make_loader(n=64, batch_size=32))
    ref = copy.deepcopy(lenet)
    _reference(ref, torch.optim.SGD(ref.parameters(), lr=0.2, momentum=0.5), batches)
    LT = LotteryTicket(lenet, "cpu", compile=False)
    assert LT.set_optimizer(torch.optim.SGD(lenet.parameters(), lr=0.2, momentum=0.5)) is LT
    assert LT.set_criterion(nn.CrossEntropyLoss()) is LT
    for x, y in batches:
        LT.train_on_batch(x, y)
    assert tree_allclose(ltfunc.get_params(lenet), ltfunc.get_params(ref), rtol=1e-4, atol=1e-6)
    with pytest.raises(TypeError, match="criterion"):
        LT.set_criterion("mse")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# masks in and out


def test_masks_round_trip_through_torch_save_and_load_the_seed_way(lenet: nn.Module) -> None:
    masks = LotteryTicket(lenet, "cpu", compile=False).get_masks_by_single_shot(0, 0.8, "layer")
    buf = io.BytesIO()
    torch.save({"masks": masks}, buf)
    buf.seek(0)
    loaded = torch.load(buf)["masks"]  # default weights_only=True
    assert isinstance(loaded, ltfunc.Mask) and loaded == masks


def test_set_masks_accepts_seed_style_numpy_masks(lenet: nn.Module) -> None:
    LT = LotteryTicket(lenet, "cpu", compile=False)
    masks = LT.get_masks_by_single_shot(0, 0.6, "global")
    seed_style = {k: np.where(v.numpy(), 1.0, 0.0) for k, v in masks.items()}  # the seed's format
    assert LT.set_masks(seed_style).masks == masks
    LT.masks = masks  # attribute assignment validates too
    assert LT.masks == masks


def test_set_masks_for_another_model_is_rejected(lenet: nn.Module) -> None:
    LT = LotteryTicket(lenet, "cpu", compile=False)
    conv_masks = ltfunc.masks.ones(ConvBN())
    with pytest.raises(ValueError, match="different model"):
        LT.set_masks(conv_masks)
    with pytest.raises(ValueError, match="shape"):
        LT.set_masks({"fc1.weight": torch.ones(10, 10)})
    with pytest.raises(TypeError, match="masks"):
        LT.set_masks([1, 0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="different model"):
        LotteryTicket(lenet, "cpu", masks={"conv.weight": torch.ones(4, 1, 3, 3)}, compile=False)


def test_set_init_weights_for_another_model_is_rejected(lenet: nn.Module) -> None:
    LT = LotteryTicket(lenet, "cpu", compile=False)
    with pytest.raises(ValueError, match="missing keys"):
        LT.set_init_weights(ConvBN().state_dict())
    bad = copy.deepcopy(lenet.state_dict())
    bad["fc3.weight"] = torch.zeros(3, 100)
    with pytest.raises(ValueError, match="shape"):
        LT.set_init_weights(bad)
    with pytest.raises(TypeError, match="state_dict"):
        LT.set_init_weights([1, 2])  # type: ignore[arg-type]


def test_set_init_weights_keeps_a_copy(lenet: nn.Module) -> None:
    init = copy.deepcopy(lenet.state_dict())
    LT = LotteryTicket(lenet, "cpu", compile=False).set_init_weights(init)
    init["fc1.weight"].zero_()
    LT.train_init()
    assert float(lenet.fc1.weight.detach().abs().sum()) > 0


# --------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("percent", [1.0, -0.1, 1.5, float("nan")])
def test_percents_outside_unit_interval_are_rejected(lenet: nn.Module, percent: float) -> None:
    LT = LotteryTicket(lenet, "cpu", compile=False)
    with pytest.raises(ValueError, match="fc_prune_percent"):
        LT.get_masks_by_single_shot(0, percent, "layer")
    with pytest.raises(ValueError, match="conv_prune_percent"):
        LT.get_masks_by_single_shot(percent, 0.5, "layer")


def test_other_bad_arguments(lenet: nn.Module) -> None:
    LT = LotteryTicket(lenet, "cpu", compile=False)
    with pytest.raises(TypeError, match="fc_prune_percent"):
        LT.get_masks_by_single_shot(0, "0.5", "layer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode='blockwise' is not supported"):
        LT.get_masks_by_single_shot(0, 0.5, "blockwise")
    with pytest.raises(TypeError, match="model"):
        LotteryTicket("lenet", "cpu")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="device"):
        LotteryTicket(lenet, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="device"):
        LotteryTicket(lenet, "tpu")
    with pytest.raises(TypeError, match="inputs and targets"):
        LT.train_on_batch([1.0], [0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch size"):
        LT.train_on_batch(torch.zeros(3, 1, 28, 28), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="train_itrs"):
        LT.train_all(make_loader(), 0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_unavailable_cuda_is_a_clear_error(lenet: nn.Module) -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        LotteryTicket(lenet, "cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        LotteryTicket(lenet, torch.device("cuda", 0))


# --------------------------------------------------------------------------------------------
# BatchNorm running statistics


def bn_sgd(params) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def test_batchnorm_running_stats_follow_the_eager_reference_via_steps_fit_and_train_init() -> None:
    torch.manual_seed(4)
    template = ConvBN()
    init = copy.deepcopy(template.state_dict())
    batches = list(make_loader(n=96, batch_size=32)) * 2  # 6 steps
    mask = LotteryTicket(copy.deepcopy(template), "cpu", compile=False).get_masks_by_single_shot(
        0.5, 0.5, "layer"
    )
    ref, ref_opt, _ = train_reference(template, bn_sgd, mask, batches)
    expected = dict(ref.state_dict())
    assert int(expected["bn.num_batches_tracked"]) == 6

    # the facade, one step at a time and through train_all (ltfunc.fit inside)
    by_step, by_fit = copy.deepcopy(template), copy.deepcopy(template)
    LT = LotteryTicket(by_step, "cpu", bn_sgd(by_step.parameters()), init_weights=init, compile=False)
    LT.set_masks(mask).train()
    for x, y in batches:
        LT.train_on_batch(x, y)
    assert tree_allclose(dict(by_step.state_dict()), expected, rtol=1e-4, atol=1e-6)
    LT_fit = LotteryTicket(by_fit, "cpu", bn_sgd(by_fit.parameters()), masks=mask, compile=False)
    LT_fit.train_all(batches, len(batches))
    assert tree_allclose(dict(by_fit.state_dict()), expected, rtol=1e-4, atol=1e-6)

    # ltfunc.fit on its own, with the buffers in the TrainState
    step = ltfunc.make_train_step(template, ltfunc.optim.from_torch(ref_opt), compile=False)
    state = ltfunc.fit(step, step.init(ltfunc.get_params(template)), mask, batches, 6, lr=0.05)
    assert tree_allclose({**state.params, **state.buffers}, expected, rtol=1e-4, atol=1e-6)

    # evaluation uses the trained running statistics
    x = torch.cat([b[0] for b in batches[:3]])
    y = torch.cat([b[1] for b in batches[:3]])
    with torch.no_grad():
        ref_loss = F.cross_entropy(ref.eval()(x), y).item()
    assert LT.eval_all(batches[:3])[0] == pytest.approx(ref_loss, rel=1e-4)
    assert ltfunc.evaluate(template, state.params, mask, (x, y), buffers=state.buffers)[0] == pytest.approx(
        ref_loss, rel=1e-4
    )

    # train_init resets the statistics with the weights, and the next steps read them from the model
    LT.train_init()
    assert ltfunc.tree_equal(ltfunc.get_buffers(by_step), {k: init[k] for k in ltfunc.get_buffers(by_step)})
    for x_, y_ in batches:
        LT.train_on_batch(x_, y_)
    assert tree_allclose(dict(by_step.state_dict()), expected, rtol=1e-4, atol=1e-6)


def test_batchnorm_in_eval_mode_keeps_the_running_stats() -> None:
    torch.manual_seed(5)
    model = ConvBN()
    with torch.no_grad():
        model.bn.running_mean.fill_(0.1)
    before = ltfunc.get_buffers(model)
    LT = LotteryTicket(model, "cpu", bn_sgd(model.parameters()), compile=False).eval()
    x, y = next(iter(make_loader(n=32, batch_size=32)))
    with torch.no_grad():
        expected_loss = F.cross_entropy(model(x), y).item()  # eval mode: the running statistics
    assert LT.train_on_batch(x, y).loss == pytest.approx(expected_loss, rel=1e-5)
    assert ltfunc.tree_equal(ltfunc.get_buffers(model), before)


# --------------------------------------------------------------------------------------------
# compiled step


def test_compiled_facade_matches_eager_and_keeps_pruned_weights_zero() -> None:
    batches = list(make_loader(n=96, batch_size=32))
    eager_model, compiled_model = ltfunc.models.lenet300(seed=0), ltfunc.models.lenet300(seed=0)
    init = copy.deepcopy(eager_model.state_dict())
    results = []
    for model, compile in ((eager_model, False), (compiled_model, True)):
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
        LT = LotteryTicket(model, "cpu", opt, nn.CrossEntropyLoss(), init, compile=compile)
        LT.set_masks(LT.get_masks_by_single_shot(0, 0.75, "layer")).train_init().train()
        results.append([LT.train_on_batch(x, y) for x, y in batches])
        for name, m in LT.masks.items():
            assert bool((dict(model.named_parameters())[name][~m] == 0).all())
    for a, b in zip(*results, strict=True):
        assert a.loss == pytest.approx(b.loss, rel=1e-4) and a.correct == b.correct
    assert tree_allclose(ltfunc.get_params(eager_model), ltfunc.get_params(compiled_model), 1e-4, 1e-6)
    # New masks, a reset optimizer state, a scheduler-changed lr and an iterative search
    # reuse the one compiled graph.
    LT.set_masks(LT.get_masks_by_single_shot(0, 0.5, "global")).train_init()
    opt.param_groups[0]["lr"] = 0.01
    LT.train_on_batch(*batches[0])
    LT.get_masks_by_iteration(2, 0, 0.3, batches, 2, "layer")
    assert LT.train_step.num_compiles == 1


# --------------------------------------------------------------------------------------------
# the example scripts, chained on real MNIST


@pytest.mark.slow
def test_example_scripts_run_in_a_chain(data_root: Path, tmp_path: Path) -> None:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    common = ["--data-root", str(data_root), "--out", str(tmp_path), "--no-compile"]

    def run(script: str, *args: str) -> str:
        cmd = [sys.executable, str(ROOT / "examples" / script), *common, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    run("train_mnist.py", "--train-itrs", "40", "--eval-itrs", "40")
    dense = [json.loads(line) for line in (tmp_path / "log_dense.jsonl").read_text().splitlines()]
    assert dense[-1]["itr"] == 40 and dense[-1]["test_acc"] > 0.6  # well above chance after 40 steps
    init = torch.load(tmp_path / "init.pt")["net"]
    trained = torch.load(tmp_path / "ckpt.pt")["net"]
    assert not torch.equal(init["fc1.weight"], trained["fc1.weight"])

    run("get_mask_mnist_single.py", "--prune-percent", "0.8", "--mode", "layer")
    single = torch.load(tmp_path / "masks_0.8_layer_1.pt")["masks"]
    assert all(int(m.sum()) == expected_kept(m.numel(), 0.8) for m in single.values())

    run("get_mask_mnist_itr.py", *"--prune-percent 0.8 --mode global --prune-itr 2 --train-itrs 5".split())
    itr = torch.load(tmp_path / "masks_0.8_global_2.pt")["masks"]
    assert sum(int(m.sum()) for m in itr.values()) == expected_kept(266200, 0.8)

    run("prune_train_mnist.py", "--prune-itr", "1", "--train-itrs", "30", "--eval-itrs", "30")
    run("prune_train_mnist_random.py", "--prune-itr", "1", "--train-itrs", "30", "--eval-itrs", "30")
    for tag in ("0.8_layer_1", "0.8_layer_1_random"):
        log = [json.loads(line) for line in (tmp_path / f"log_{tag}.jsonl").read_text().splitlines()]
        assert log[-1]["itr"] == 30 and 0.0 <= log[-1]["test_acc"] <= 1.0
        net = torch.load(tmp_path / f"ckpt_{tag}.pt")["net"]
        for name, m in single.items():
            assert bool((net[name][~m] == 0).all())  # saved ticket weights are pruned

    out = run("functional_imp.py", "--prune-itr", "2", "--iterations", "20", "--eval-every", "20")
    functional = tmp_path / "functional"
    for rounds in (1, 2):
        m = ltfunc.masks.load(functional / f"masks_0.8_layer_{rounds}.safetensors")
        assert all(int(v.sum()) == expected_kept(v.numel(), 0.8) for v in m.values())
    theta0 = ltfunc.load_tree(functional / "init.safetensors")
    assert torch.equal(theta0["fc1.weight"], init["fc1.weight"])  # both scripts start from lenet300(seed=0)
    summary = out[out.index("condition") :].splitlines()[1:]  # the final table: name, weights left, acc
    accs = {line[:32].strip(): float(line.split()[-1]) for line in summary}
    assert set(accs) == {"dense", "ticket (single-shot)", "ticket (2 rounds)", "random reinit (single-shot)"}
    assert accs["dense"] > 0.6 and all(0.0 <= a <= 1.0 for a in accs.values())


# --------------------------------------------------------------------------------------------
# compile="auto", input checks


def auto_ticket(monkeypatch: pytest.MonkeyPatch, after: int) -> LotteryTicket:
    import ltfunc._facade as facade

    monkeypatch.setattr(facade, "AUTO_COMPILE_STEPS", after)
    model = ltfunc.models.lenet300(seed=0)
    return LotteryTicket(model, "cpu", torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))


def test_auto_compile_switches_at_a_step_count_and_is_reproducible(monkeypatch: pytest.MonkeyPatch) -> None:
    batches = list(make_loader(n=8 * 6, batch_size=8))
    runs = []
    for _ in range(2):
        LT = auto_ticket(monkeypatch, after=3)
        assert LT.train_step.num_compiles == 0 and not LT.train_step.compiled  # starts eager
        losses = [LT.train().train_on_batch(x, y).loss for x, y in batches]
        assert LT.train_step.compiled and LT.train_step.num_compiles == 1  # steps 4.. compiled
        runs.append((losses, ltfunc.get_params(LT.model)))
    assert runs[0][0] == runs[1][0] and ltfunc.tree_equal(runs[0][1], runs[1][1])


def test_auto_compiles_a_long_train_all_at_once_and_not_a_short_one(monkeypatch: pytest.MonkeyPatch) -> None:
    loader = list(make_loader(n=32, batch_size=8))
    LT = auto_ticket(monkeypatch, after=10)
    LT.train_all(loader, 4)  # 4 < 10 steps ahead: eager
    assert not LT.train_step.compiled
    LT.train_all(loader, 10)  # 10 steps ahead: compiled from its first step
    assert LT.train_step.compiled and LT.train_step.num_compiles == 1


def test_train_on_batch_refuses_another_input_shape_and_runs_other_batch_sizes_eagerly() -> None:
    model = ltfunc.models.lenet300(seed=0)
    LT = LotteryTicket(model, "cpu", compile=True).train()
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    LT.train_on_batch(x, y)
    LT.train_on_batch(x[:5], y[:5])  # a smaller last batch: eager, no second graph
    assert LT.train_step.num_compiles == 1
    with pytest.raises(
        ValueError, match=r"per-example shape \(784,\) and dtype torch.float32, but the first"
    ):
        LT.train_on_batch(x.reshape(8, 784), y)
    with pytest.raises(ValueError, match=r"dtype torch.float64, but the first batch had \(1, 28, 28\)"):
        LT.train_on_batch(x.double(), y)
    assert LT.train_step.num_compiles == 1


def test_compile_argument_is_checked() -> None:
    with pytest.raises(TypeError, match="LotteryTicket: compile must be a bool"):
        LotteryTicket(ltfunc.models.lenet300(), "cpu", compile="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda ps: torch.optim.Adam(ps, lr=1e-3, weight_decay=1e-4),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
        lambda ps: torch.optim.AdamW(ps, lr=1e-3),
        None,
    ],
    ids=["adam", "sgd-nesterov", "adamw", "default"],
)
def test_auto_mode_trains_like_the_functional_step_before_and_after_the_switch(
    monkeypatch: pytest.MonkeyPatch, make_opt: Any
) -> None:
    """compile="auto" runs the module with a torch optimizer twin, then hands its state to the
    compiled step: the whole trajectory matches ltfunc's eager functional step."""
    import ltfunc._facade as facade

    monkeypatch.setattr(facade, "AUTO_COMPILE_STEPS", 4)
    batches = list(make_loader(n=8 * 8, batch_size=8))
    runs = {}
    for mode in ("auto", False):
        torch.manual_seed(0)
        model = ConvBN()  # BatchNorm: running statistics must follow both paths too
        # the conv bias before BatchNorm gets a zero gradient, whose float noise Adam blows up
        # into noise-sized updates: drop it, so every compared weight has a real gradient
        model.conv = nn.Conv2d(1, 4, 3, bias=False)
        opt = None if make_opt is None else make_opt(model.parameters())
        LT = LotteryTicket(model, "cpu", opt, compile=mode)  # type: ignore[arg-type]
        LT.set_masks(LT.get_masks_by_single_shot(0.3, 0.5, "layer")).train()
        losses = [LT.train_on_batch(x, y).loss for x, y in batches]
        runs[mode] = (losses, dict(model.state_dict()), LT)
    (la, sa, lt_auto), (lf, sf, _) = runs["auto"], runs[False]
    assert lt_auto.train_step.compiled  # steps 5.. ran compiled
    assert la == pytest.approx(lf, rel=1e-4, abs=1e-5)
    assert tree_allclose(sa, sf, rtol=1e-4, atol=1e-5)
    for name, m in lt_auto.masks.items():
        assert bool((sa[name][~m] == 0).all())
