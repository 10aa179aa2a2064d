"""Tests for ltfunc.models: architectures, initializations and fresh parameter draws."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import ltfunc
from ltfunc import masks, models

LENET_SHAPES = {
    "fc1.weight": (300, 784),
    "fc1.bias": (300,),
    "fc2.weight": (100, 300),
    "fc2.bias": (100,),
    "fc3.weight": (10, 100),
    "fc3.bias": (10,),
}
CONV2_SHAPES = {
    "conv1.weight": (64, 1, 3, 3),
    "conv1.bias": (64,),
    "conv2.weight": (64, 64, 3, 3),
    "conv2.bias": (64,),
    "fc1.weight": (256, 64 * 14 * 14),
    "fc1.bias": (256,),
    "fc2.weight": (256, 256),
    "fc2.bias": (256,),
    "fc3.weight": (10, 256),
    "fc3.bias": (10,),
}


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.named_parameters()}


def fans(w: Tensor) -> tuple[int, int]:
    receptive = math.prod(w.shape[2:]) if w.dim() > 2 else 1
    return w.shape[1] * receptive, w.shape[0] * receptive


# Architectures -----------------------------------------------------------------------------
def test_lenet300_architecture() -> None:
    m = models.lenet300()
    assert shapes(m) == LENET_SHAPES
    assert sum(p.numel() for p in m.parameters()) == 266_610  # 784*300+300 + 300*100+100 + 100*10+10
    assert masks.counts(masks.ones(m))["__all__"].total == 266_200
    assert m(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert m(torch.zeros(3, 784)).shape == (3, 10)  # flattens any trailing dims


def test_conv2_architecture() -> None:
    m = models.conv2()
    assert shapes(m) == CONV2_SHAPES
    # 64*9+64 + 64*64*9+64 + 12544*256+256 + 256*256+256 + 256*10+10
    assert sum(p.numel() for p in m.parameters()) == 3_317_450
    assert masks.counts(masks.ones(m))["__all__"].total == 3_316_800
    assert masks.prunable_names(m) == [k for k in CONV2_SHAPES if k.endswith("weight")]
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_build_and_registry() -> None:
    assert set(models.MODELS) == {"lenet300", "conv2"}
    assert isinstance(models.build("lenet300"), models.LeNet300)
    assert isinstance(models.build("conv2", init="torch"), models.Conv2)
    a, b = models.build("lenet300", seed=5), models.lenet300(seed=5)
    assert ltfunc.tree_equal(ltfunc.get_params(a), ltfunc.get_params(b))
    with pytest.raises(ValueError, match=r"build: name='resnet' is not supported\. Supported: 'lenet300'"):
        models.build("resnet")
    for cls in (models.LeNet300, models.Conv2):
        with pytest.raises(ValueError, match=f"{cls.__name__}: init='xavier' is not supported"):
            cls(init="xavier")
    with pytest.raises(ValueError, match="LeNet300: init='uniform'"):
        models.lenet300(init="uniform")


# Initializations ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fc1.weight", "fc2.weight", "conv2:conv2.weight", "conv2:fc1.weight"])
def test_glorot_normal_statistics(name: str) -> None:
    model_name, _, key = name.rpartition(":")
    model = models.build(model_name or "lenet300", seed=0)
    w = dict(model.named_parameters())[key].detach().double().reshape(-1)
    fan_in, fan_out = fans(dict(model.named_parameters())[key])
    std = math.sqrt(2.0 / (fan_in + fan_out))
    n = w.numel()
    # sd of the sample std is std/sqrt(2n) (<0.4% here); 3% tolerance still rejects Kaiming
    # normal (sqrt(2/fan_in): >= +19% here) and PyTorch's default uniform (1/sqrt(3 fan_in)).
    assert float(w.std()) == pytest.approx(std, rel=0.03)
    assert abs(float(w.mean())) < 5 * std / math.sqrt(n)
    # Gaussian, not uniform: P(|w| < std) = 0.683 for a normal, 0.577 for a uniform
    assert float((w.abs() < std).double().mean()) == pytest.approx(0.6827, abs=0.01)
    assert float(w.abs().max()) > 3.5 * std  # a uniform would be bounded by sqrt(3) std


def test_glorot_biases_zero_and_other_inits() -> None:
    m = models.lenet300(seed=0)
    for k in ("fc1.bias", "fc2.bias", "fc3.bias"):
        assert torch.equal(dict(m.named_parameters())[k].detach(), torch.zeros(LENET_SHAPES[k]))
    k = models.lenet300(init="kaiming_normal", seed=0).fc1.weight.detach().double()
    assert float(k.std()) == pytest.approx(math.sqrt(2.0 / 784), rel=0.03)
    assert float(k.std()) > 1.1 * math.sqrt(2.0 / (784 + 300))
    t = models.lenet300(init="torch", seed=0)
    bound = 1.0 / math.sqrt(784)
    assert float(t.fc1.weight.detach().abs().max()) <= bound
    assert float(t.fc1.weight.detach().double().std()) == pytest.approx(bound / math.sqrt(3), rel=0.03)
    assert float(t.fc1.bias.detach().abs().sum()) > 0  # torch's default init draws biases too


def test_seeded_builders() -> None:
    state = torch.get_rng_state()
    a, b, c = models.lenet300(seed=0), models.lenet300(seed=0), models.lenet300(seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    pa, pb, pc = (ltfunc.get_params(m) for m in (a, b, c))
    assert ltfunc.tree_equal(pa, pb)
    assert not torch.equal(pa["fc1.weight"], pc["fc1.weight"])
    torch.manual_seed(123)
    d = models.conv2()
    torch.manual_seed(123)
    e = models.conv2()
    assert ltfunc.tree_equal(ltfunc.get_params(d), ltfunc.get_params(e))  # seed=None: global RNG
    with pytest.raises(TypeError, match=r"lenet300: seed must be an int or None, got float 1\.5"):
        models.lenet300(seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="conv2: seed must be an int or None, got str '0'"):
        models.conv2(seed="0")  # type: ignore[arg-type]


# init_params -------------------------------------------------------------------------------
def test_init_params_reproducible_pure_and_fresh() -> None:
    model = models.lenet300(seed=0)
    before = ltfunc.get_params(model)
    state = torch.get_rng_state()
    a, b, c = (models.init_params(model, s) for s in (1, 1, 2))
    assert torch.equal(torch.get_rng_state(), state)
    assert ltfunc.tree_equal(ltfunc.get_params(model), before)  # the template is untouched
    assert list(a) == list(before)
    assert all(a[k].shape == before[k].shape and a[k].dtype == before[k].dtype for k in a)
    assert ltfunc.tree_equal(a, b)
    for k in ("fc1.weight", "fc2.weight", "fc3.weight"):
        assert not torch.equal(a[k], c[k])
        # fresh draws: (almost) no entry coincides with the original or the other seed
        assert float((a[k] == before[k]).double().mean()) < 1e-3
        assert float((a[k] == c[k]).double().mean()) < 1e-3
        assert not a[k].requires_grad
    # same scheme as the model: Glorot normal weights, zero biases
    assert float(a["fc1.weight"].double().std()) == pytest.approx(math.sqrt(2 / 1084), rel=0.03)
    assert float(a["fc1.bias"].abs().sum()) == 0.0
    # writable, independent tensors
    a["fc1.weight"].zero_()
    assert float(model.fc1.weight.detach().abs().sum()) > 0


def test_init_params_torch_init_draws_every_tensor() -> None:
    model = models.lenet300(init="torch", seed=0)
    before = ltfunc.get_params(model)
    fresh = models.init_params(model, 3)
    for k in before:
        assert not torch.equal(fresh[k], before[k]), k


def test_init_params_generic_module() -> None:
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    before = ltfunc.get_params(model)
    a, b = models.init_params(model, 0), models.init_params(model, 0)
    assert ltfunc.tree_equal(a, b)
    assert all(not torch.equal(a[k], before[k]) for k in before)
    # no top-level reset_parameters: every submodule's is used, in module order, so the
    # draw equals building the same module under torch.manual_seed(seed)
    assert ltfunc.tree_equal(models.init_params(model, 7), before)
    assert ltfunc.tree_equal(ltfunc.get_params(model), before)
    x = torch.randn(3, 5)
    assert ltfunc.call(model, a, x).shape == (3, 2)
    assert models.init_params(nn.Sequential(nn.ReLU()), 0) == {}


def test_init_params_errors() -> None:
    model = models.lenet300()
    with pytest.raises(TypeError, match=r"init_params: model must be a torch\.nn\.Module"):
        models.init_params(ltfunc.get_params(model), 0)  # type: ignore[arg-type]
    for bad in (True, 1.0, "0", None):
        with pytest.raises(TypeError, match="init_params: seed must be an int"):
            models.init_params(model, bad)  # type: ignore[arg-type]


def test_load_into_init_params_round_trip() -> None:
    model = models.conv2(seed=0)
    fresh = models.init_params(model, 9)
    target = models.conv2(seed=1)
    ltfunc.load_into(target, fresh)
    assert ltfunc.tree_equal(ltfunc.get_params(target), fresh)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(target(x), ltfunc.call(model, fresh, x), rtol=0, atol=0)
