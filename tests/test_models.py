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
    assert list(models.MODELS) == list(COUNTS)
    assert isinstance(models.build("lenet300"), models.LeNet300)
    assert isinstance(models.build("conv2", init="torch"), models.Conv2)
    a, b = models.build("lenet300", seed=5), models.lenet300(seed=5)
    assert ltfunc.tree_equal(ltfunc.get_params(a), ltfunc.get_params(b))
    with pytest.raises(
        ValueError, match=r"build: name='resnet' is not supported\. Supported: 'lenet300'"
    ) as e:
        models.build("resnet")
    assert all(repr(name) in str(e.value) for name in models.MODELS)  # lists every valid name
    for cls in (models.LeNet300, models.Conv2, models.LeNet5, models.Conv4, models.Conv6):
        with pytest.raises(ValueError, match=f"{cls.__name__}: init='xavier' is not supported"):
            cls(init="xavier")
    with pytest.raises(ValueError, match="LeNet300: init='uniform'"):
        models.lenet300(init="uniform")
    with pytest.raises(TypeError, match="unexpected keyword argument 'depth'"):
        models.build("conv4", depth=4)


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


# The CIFAR-scale models ----------------------------------------------------------------------
# name -> (parameters, prunable weights) for the builder's default input and 10 classes.
COUNTS: dict[str, tuple[int, int]] = {
    "lenet300": (266_610, 266_200),
    "conv2": (3_317_450, 3_316_800),  # 1x28x28; 4,301,642 on CIFAR (paper: 4.3M)
    "lenet5": (61_706, 61_470),  # 156 + 2,416 + 48,120 + 10,164 + 850
    "conv4": (2_425_930, 2_425_024),  # paper: 2.4M
    "conv6": (2_262_602, 2_261_184),  # paper: 1.7M in all, 1.1M in the convs (ours: 1,145,408)
    "vgg11": (9_225_610, 9_217_728),
    "vgg11_bn": (9_231_114, 9_217_728),
    "vgg13": (9_410_122, 9_402_048),
    "vgg13_bn": (9_416_010, 9_402_048),
    "vgg16": (14_719_818, 14_710_464),
    "vgg16_bn": (14_728_266, 14_710_464),  # ~14.7M
    "vgg19": (20_029_514, 20_018_880),
    "vgg19_bn": (20_040_522, 20_018_880),  # Frankle & Carbin's VGG-19: 20.0M
    "resnet20": (272_474, 270_256),  # ~272K; Frankle & Carbin: 274K, 270K in conv layers
    "resnet32": (466_906, 463_792),
    "resnet56": (855_770, 850_864),
    "resnet18": (11_173_962, 11_159_232),  # ~11.17M, as kuangliu's pytorch-cifar ResNet18
    "resnet34": (21_282_122, 21_259_968),
}
OUTPUT = {"vgg": "fc", **dict.fromkeys(("resnet20", "resnet32", "resnet56"), "fc")}
OUTPUT.update(dict.fromkeys(("resnet18", "resnet34"), "linear"))  # kuangliu's name
MNIST_SHAPED = ("lenet300", "lenet5", "conv2")  # the builders whose default input is 1x28x28


def output_layer(name: str) -> str | None:
    """The layer a model leaves dense, or None (the small models prune every layer)."""
    return OUTPUT.get("vgg" if name.startswith("vgg") else name)


def numel(model: nn.Module, names: list[str] | None = None) -> int:
    return sum(p.numel() for k, p in model.named_parameters() if names is None or k in names)


def vgg_count(depth: int, batch_norm: bool, classes: int = 10) -> tuple[int, int]:
    """(parameters, conv weights) of a CIFAR VGG from its plan, by hand."""
    widths = [w for w in models.vgg.PLANS[depth] if w != "M"]
    ins = [3, *widths[:-1]]
    weights = sum(9 * i * o for i, o in zip(ins, widths, strict=True))
    total = weights + sum(widths) * (3 if batch_norm else 1) + 512 * classes + classes
    return total, weights


def cifar_resnet_count(depth: int, classes: int = 10) -> tuple[int, int]:
    """(parameters, conv weights) of He et al.'s CIFAR ResNet with 1x1 projection shortcuts."""
    n = (depth - 2) // 6
    convs = 9 * 3 * 16  # stem
    for i, w in enumerate((16, 32, 64)):
        first_in = w // 2 if i else 16
        convs += 9 * first_in * w + 9 * w * w + (2 * n - 2) * 9 * w * w
        convs += first_in * w if i else 0  # the 1x1 projection
    bn = 2 * (16 + 2 * n * (16 + 32 + 64) + 32 + 64)  # stem, two per block, two projections
    return convs + bn + 64 * classes + classes, convs


@pytest.mark.parametrize("name", list(COUNTS))
def test_parameter_counts_and_prunable_sets(name: str) -> None:
    model = models.build(name, seed=0)
    total, prunable = COUNTS[name]
    names = masks.prunable_names(model)
    assert (numel(model), numel(model, names)) == (total, prunable)
    layers = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    out = output_layer(name)
    assert set(names) == layers - ({f"{out}.weight"} if out else set())
    assert all(k.endswith(".weight") and dict(model.named_parameters())[k].dim() >= 2 for k in names)
    mask = masks.ones(model)
    assert list(mask) == names == model.prunable_names()  # type: ignore[operator]
    assert masks.counts(mask)["__all__"].total == prunable
    # a params dict declares nothing: its rule (>= 2-D tensors) also takes the output layer
    from_params = masks.prunable_names(ltfunc.get_params(model))
    assert set(from_params) == layers
    if out is not None:
        assert set(ltfunc.prune.layer_kinds(mask).values()) == {"conv"}  # no fc, no output left


def test_counts_by_hand_and_against_the_papers() -> None:
    for depth in (11, 13, 16, 19):
        for bn in (False, True):
            assert COUNTS[f"vgg{depth}{'_bn' if bn else ''}"] == vgg_count(depth, bn)
    for depth in (20, 32, 56):
        assert COUNTS[f"resnet{depth}"] == cifar_resnet_count(depth)
    cifar = {"in_channels": 3, "image_size": 32}
    c2 = models.conv2(**cifar)
    assert numel(c2) == 4_301_642 and c2.fc1.in_features == 64 * 16 * 16  # paper: 4.3M
    assert numel(c2, ["conv1.weight", "conv2.weight"]) == 38_592  # paper: 38K in the convs
    assert round(numel(models.conv4()) / 1e5) == 24  # 2.4M
    assert round(numel(models.vgg16_bn()) / 1e5) == 147  # 14.7M
    assert round(numel(models.vgg19_bn()) / 1e5) == 200  # 20.0M
    assert round(COUNTS["resnet20"][1] / 1e3) == 270  # paper: 270K conv weights
    assert round(numel(models.resnet18()) / 1e4) == 1117  # 11.17M
    assert numel(models.lenet5(in_channels=3, image_size=32)) == 62_006
    assert numel(models.lenet5(image_size=32)) == 61_706  # no padding on 32x32


@pytest.mark.parametrize("name", list(COUNTS))
def test_forward_shapes_and_num_classes(name: str) -> None:
    cifar = {"in_channels": 3, "image_size": 32} if name in MNIST_SHAPED else {}
    model = models.build(name, seed=0, num_classes=100, **cifar).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    params, classes = numel(model), 100
    in_features = dict(model.named_parameters())[masks.prunable_names(ltfunc.get_params(model))[-1]].shape[1]
    small = models.build(name, seed=0, **cifar)
    assert params - numel(small) == (classes - 10) * (in_features + 1)  # only the output layer grows
    mnist = models.build(name, seed=0, num_classes=10, in_channels=1, image_size=28).eval()
    with torch.no_grad():
        assert mnist(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_shape_argument_errors() -> None:
    with pytest.raises(ValueError, match=r"VGG: depth=12 is not supported\. Supported: 11, 13, 16, 19"):
        models.VGG(12)
    with pytest.raises(ValueError, match="CifarResNet: depth must be 6n \\+ 2"):
        models.cifar_resnet(21)
    with pytest.raises(ValueError, match=r"ResNet: depth=50 is not supported\. Supported: 18, 34"):
        models.ResNet(50)
    with pytest.raises(ValueError, match="VGG: image_size must be an int >= 16, got 8"):
        models.vgg16(image_size=8)
    with pytest.raises(ValueError, match="Conv6: image_size must be an int >= 8, got 4"):
        models.conv6(image_size=4)
    with pytest.raises(ValueError, match="LeNet5: num_classes must be an int >= 1, got 0"):
        models.lenet5(num_classes=0)
    with pytest.raises(TypeError, match=r"CifarResNet: in_channels must be an int, got float 3\.0"):
        models.resnet20(in_channels=3.0)
    with pytest.raises(TypeError, match="VGG: batch_norm must be a bool"):
        models.VGG(11, batch_norm=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ResNet: init='he' is not supported"):
        models.resnet18(init="he")
    with pytest.raises(TypeError, match=r"resnet20: seed must be an int or None, got float 1\.5"):
        models.build("resnet20", seed=1.5)
    with pytest.raises(TypeError, match="vgg16_bn: seed must be an int or None"):
        models.vgg16_bn(seed="0")


# Inits of the CIFAR models ---------------------------------------------------------------------
def test_resolve_init_and_paper_defaults() -> None:
    paper = {n: models.resolve_init(n) for n in models.MODELS}
    assert {paper[n] for n in ("lenet300", "lenet5", "conv2", "conv4", "conv6")} == {"glorot_normal"}
    assert {paper[n] for n in paper if n.startswith("vgg")} == {"open_lth"}
    assert {paper[n] for n in ("resnet20", "resnet32", "resnet56")} == {"open_lth"}
    assert {paper[n] for n in ("resnet18", "resnet34")} == {"kaiming_normal"}
    for name, scheme in paper.items():
        if name in ("lenet300", "conv2", "resnet20", "resnet18", "vgg11"):
            assert models.build(name).init == scheme  # type: ignore[union-attr]
        assert models.resolve_init(name, "torch") == "torch"
    assert set(models.INITS) == {*models.SCHEMES, "paper"}
    with pytest.raises(ValueError, match="resolve_init: name='vgg' is not supported"):
        models.resolve_init("vgg")
    with pytest.raises(ValueError, match="resolve_init: init='he' is not supported"):
        models.resolve_init("vgg11", "he")


def normal_std_check(w: Tensor, std: float) -> None:
    w = w.detach().double().reshape(-1)
    assert float(w.std()) == pytest.approx(std, rel=0.03)
    assert abs(float(w.mean())) < 5 * std / math.sqrt(w.numel())
    assert float((w.abs() < std).double().mean()) == pytest.approx(0.6827, abs=0.01)


def bn_params(model: nn.Module) -> tuple[Tensor, Tensor]:
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    return torch.cat([m.weight.detach() for m in bns]), torch.cat([m.bias.detach() for m in bns])


def test_open_lth_init_of_cifar_resnet_and_vgg() -> None:
    m = models.resnet20(seed=0)  # "paper" = open_lth: Kaiming normal, BN weight U[0, 1), BN bias 0
    normal_std_check(m.blocks[8].conv2.weight, math.sqrt(2 / (64 * 9)))
    normal_std_check(torch.cat([b.conv2.weight.reshape(-1) for b in m.blocks[6:]]), math.sqrt(2 / (64 * 9)))
    assert float(m.fc.weight.detach().double().std()) == pytest.approx(math.sqrt(2 / 64), rel=0.1)
    gamma, beta = bn_params(m)
    assert gamma.numel() == 784 and float(gamma.min()) >= 0 and float(gamma.max()) < 1
    assert float(gamma.double().mean()) == pytest.approx(0.5, abs=0.04)
    assert float(gamma.double().std()) == pytest.approx(math.sqrt(1 / 12), rel=0.1)
    assert float(beta.abs().sum()) == 0
    bias = m.fc.bias.detach()  # open_lth leaves biases at PyTorch's default: U(+-1/sqrt(fan_in))
    assert 0 < float(bias.abs().max()) <= 1 / math.sqrt(64)
    v = models.vgg16_bn(seed=0)
    normal_std_check(v.layers[-1].conv.weight, math.sqrt(2 / (512 * 9)))
    conv_bias = v.layers[-1].conv.bias.detach()
    assert 0 < float(conv_bias.abs().max()) <= 1 / math.sqrt(512 * 9)
    assert float(bn_params(v)[0].max()) < 1 and len(set(bn_params(v)[0].tolist())) > 100
    plain = models.vgg16(seed=0)  # no BatchNorm, same draws for the conv weights
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in plain.modules())
    normal_std_check(plain.layers[-1].conv.weight, math.sqrt(2 / (512 * 9)))


def test_kaiming_init_of_resnet18_and_other_schemes_with_batchnorm() -> None:
    m = models.resnet18(seed=0)  # "paper" = kaiming_normal: He et al.; BN 1 / 0, fc bias 0
    normal_std_check(m.layer4[1].conv2.weight, math.sqrt(2 / (512 * 9)))
    normal_std_check(m.layer2[0].shortcut[0].weight, math.sqrt(2 / 64))
    gamma, beta = bn_params(m)
    assert torch.equal(gamma, torch.ones_like(gamma)) and float(beta.abs().sum()) == 0
    assert float(m.linear.bias.detach().abs().sum()) == 0
    g = models.resnet20(init="glorot_normal", seed=0)
    normal_std_check(g.blocks[8].conv2.weight, math.sqrt(2 / (2 * 64 * 9)))
    assert torch.equal(bn_params(g)[0], torch.ones(784))
    t = models.resnet20(init="torch", seed=0)  # PyTorch's default: Kaiming uniform(a=sqrt(5))
    w = t.blocks[8].conv2.weight.detach()
    assert float(w.abs().max()) <= 1 / math.sqrt(64 * 9)
    assert float(w.double().std()) == pytest.approx(1 / math.sqrt(3 * 64 * 9), rel=0.03)
    assert torch.equal(bn_params(t)[0], torch.ones(784))
    k = models.vgg11_bn(init="kaiming_normal", seed=0)
    assert float(k.layers[0].conv.bias.detach().abs().sum()) == 0
    assert torch.equal(bn_params(k)[0], torch.ones(64 + 128 + 2 * 256 + 4 * 512))


@pytest.mark.parametrize("name", ["lenet5:c5.weight", "conv4:fc1.weight", "conv6:conv6.weight"])
def test_glorot_normal_statistics_of_the_new_small_models(name: str) -> None:
    model_name, _, key = name.partition(":")
    w = dict(models.build(model_name, seed=0).named_parameters())[key]
    fan_in, fan_out = fans(w)
    normal_std_check(w, math.sqrt(2.0 / (fan_in + fan_out)))


@pytest.mark.parametrize("name", ["lenet5", "conv4", "vgg11_bn", "resnet20", "resnet18"])
def test_seeded_and_fresh_draws_of_new_models(name: str) -> None:
    state = torch.get_rng_state()
    a, b, c = (ltfunc.get_params(models.build(name, seed=s)) for s in (0, 0, 1))
    assert torch.equal(torch.get_rng_state(), state)
    assert ltfunc.tree_equal(a, b)
    weights = [k for k in a if a[k].dim() >= 2]
    assert all(not torch.equal(a[k], c[k]) for k in weights)
    model = models.build(name, seed=0)
    fresh, again = models.init_params(model, 3), models.init_params(model, 3)
    assert ltfunc.tree_equal(fresh, again) and ltfunc.tree_equal(ltfunc.get_params(model), a)
    assert all(not torch.equal(fresh[k], a[k]) for k in weights)
    if name in ("vgg11_bn", "resnet20"):  # open_lth: BN weights are re-drawn too
        bn = [k for k in a if k.endswith("bn.weight") or k.endswith("bn1.weight")]
        assert bn and all(not torch.equal(fresh[k], a[k]) for k in bn)


def test_lenet300_and_conv2_are_drawn_as_before() -> None:
    """The reproductions in docs/results depend on these exact draws: the recipe before the
    CIFAR models (Linear/Conv layers built in order, then Glorot normal per layer, zero biases)."""

    def legacy(layers: list[nn.Module], scheme: str) -> dict[str, Tensor]:
        for layer in layers:
            assert isinstance(layer, (nn.Linear, nn.Conv2d))
            if scheme == "torch":
                layer.reset_parameters()
                continue
            if scheme in ("glorot_normal", "paper"):  # "paper" is Glorot normal for both
                nn.init.xavier_normal_(layer.weight)
            else:
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        return {
            f"{n}.{k}": v.detach()
            for n, m in zip(names, layers, strict=True)
            for k, v in m.named_parameters()
        }

    for scheme in ("glorot_normal", "kaiming_normal", "torch", "paper"):
        for seed in (0, 3):
            torch.manual_seed(seed)
            names = ["fc1", "fc2", "fc3"]
            want = legacy([nn.Linear(784, 300), nn.Linear(300, 100), nn.Linear(100, 10)], scheme)
            assert ltfunc.tree_equal(ltfunc.get_params(models.lenet300(scheme, seed=seed)), want)
            torch.manual_seed(seed)
            names = ["conv1", "conv2", "fc1", "fc2", "fc3"]
            layers = [nn.Conv2d(1, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1)]
            layers += [nn.Linear(64 * 14 * 14, 256), nn.Linear(256, 256), nn.Linear(256, 10)]
            want = legacy(layers, scheme)
            assert ltfunc.tree_equal(ltfunc.get_params(models.conv2(scheme, seed=seed)), want)


# Training the BatchNorm models in the masked step ---------------------------------------------
@pytest.mark.parametrize("name", ["resnet20", "vgg11_bn"])
def test_masked_step_trains_and_updates_batchnorm_buffers(name: str) -> None:
    model = models.build(name, seed=0)
    params = ltfunc.get_params(model)
    mask = ltfunc.prune.magnitude(params, masks.ones(model), rate=0.5)
    step = ltfunc.make_train_step(model, ltfunc.optim.sgd(lr=0.1, momentum=0.9), compile=False)
    state = step.init(params)
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g))
    before = {k: v.clone() for k, v in state.buffers.items()}
    new, metrics = step(state, mask, batch, 0.1)
    assert math.isfinite(float(metrics["loss"])) and new.iteration == 1
    assert set(new.buffers) == set(before) and any(k.endswith("running_mean") for k in before)
    for k, v in new.buffers.items():
        if k.endswith("num_batches_tracked"):
            assert int(v) == int(before[k]) + 1
        else:
            assert not torch.equal(v, before[k]), k  # running statistics moved
    assert ltfunc.tree_equal(state.buffers, before)  # inputs are not modified
    for k in mask:
        assert float(new.params[k][~mask[k]].abs().sum()) == 0  # pruned weights stay 0
    out = "fc.weight"  # not in the mask, still trained
    assert out not in mask and not torch.equal(new.params[out], params[out])
    second, _ = step(new, mask, batch, 0.1)
    assert second.iteration == 2
