"""Functional optimizers: parity with torch.optim, purity, states, translation, bad input."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from helpers import tree_allclose, tree_clone

import ltfunc
from ltfunc import optim

SHAPES = {"a.weight": (5, 3), "a.bias": (3,), "conv.weight": (4, 2, 2, 2)}


def make_params(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) for k, s in SHAPES.items()}


def make_loss(seed: int = 1) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """A smooth non-quadratic loss, so the gradients depend on the trajectory."""
    g = torch.Generator().manual_seed(seed)
    coef = {k: torch.randn(s, generator=g) for k, s in SHAPES.items()}

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum((torch.sin(3 * p[k]) * coef[k] + 0.3 * p[k] ** 2).sum() for k in p)

    return loss


# (name, torch class, torch kwargs, ltfunc factory, ltfunc kwargs)
VARIANTS = [
    ("sgd", torch.optim.SGD, {"lr": 0.05}, optim.sgd, {}),
    ("sgd_wd", torch.optim.SGD, {"lr": 0.05, "weight_decay": 0.1}, optim.sgd, {"weight_decay": 0.1}),
    ("momentum", torch.optim.SGD, {"lr": 0.02, "momentum": 0.9}, optim.sgd, {"momentum": 0.9}),
    (
        "momentum_dampening",
        torch.optim.SGD,
        {"lr": 0.02, "momentum": 0.8, "dampening": 0.3},
        optim.sgd,
        {"momentum": 0.8, "dampening": 0.3},
    ),
    (
        "nesterov_wd",
        torch.optim.SGD,
        {"lr": 0.02, "momentum": 0.9, "nesterov": True, "weight_decay": 0.05},
        optim.sgd,
        {"momentum": 0.9, "nesterov": True, "weight_decay": 0.05},
    ),
    ("adam", torch.optim.Adam, {"lr": 0.01}, optim.adam, {}),
    (
        "adam_l2",
        torch.optim.Adam,
        {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
        optim.adam,
        {"betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
    ),
    ("adamw", torch.optim.AdamW, {"lr": 0.01}, optim.adamw, {}),
    (
        "adamw_strong",
        torch.optim.AdamW,
        {"lr": 0.01, "weight_decay": 0.5, "betas": (0.85, 0.98)},
        optim.adamw,
        {"weight_decay": 0.5, "betas": (0.85, 0.98)},
    ),
]


def run_torch(cls: type, kwargs: dict, steps: int) -> list[dict[str, torch.Tensor]]:
    params = {k: v.clone().requires_grad_(True) for k, v in make_params().items()}
    opt = cls(list(params.values()), **kwargs)
    loss_fn = make_loss()
    traj = []
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(params).backward()
        opt.step()
        traj.append({k: v.detach().clone() for k, v in params.items()})
    return traj


def run_ltfunc(opt: optim.Optimizer, steps: int, lr: float | torch.Tensor) -> list[dict[str, torch.Tensor]]:
    params = make_params()
    state = opt.init(params)
    grad_fn = torch.func.grad(make_loss())
    traj = []
    for _ in range(steps):
        params, state = opt.update(grad_fn(params), state, params, lr)
        traj.append(params)
    assert int(state.count) == steps
    return traj


@pytest.mark.parametrize("lr_as_tensor", [False, True], ids=["lr_float", "lr_tensor"])
@pytest.mark.parametrize(("name", "cls", "tkw", "factory", "lkw"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_parity_with_torch_optim_100_steps(name, cls, tkw, factory, lkw, lr_as_tensor) -> None:
    steps = 100
    expected = run_torch(cls, tkw, steps)
    lr = torch.tensor(tkw["lr"]) if lr_as_tensor else tkw["lr"]
    got = run_ltfunc(factory(lr=tkw["lr"], **lkw), steps, lr)
    # every step, not only the last one: a wrong first step (dampening, bias correction)
    # would otherwise be hidden by later convergence
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        assert tree_allclose(g, e, rtol=1e-5, atol=1e-6), f"{name}: diverged from torch.optim at step {i + 1}"
    # and the trajectory actually moved (a no-op optimizer would fail above, but be explicit)
    assert not tree_allclose(got[-1], make_params(), rtol=0, atol=1e-3)


@pytest.mark.parametrize(("name", "cls", "tkw", "factory", "lkw"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_from_torch_reproduces_the_torch_optimizer(name, cls, tkw, factory, lkw) -> None:
    w = torch.zeros(2, requires_grad=True)
    translated = optim.from_torch(cls([w], **tkw))
    direct = factory(lr=tkw["lr"], **lkw)
    assert translated.lr == pytest.approx(tkw["lr"])
    assert dict(translated.hyperparams) == dict(direct.hyperparams)
    got = run_ltfunc(translated, 20, translated.lr)
    assert tree_allclose(got[-1], run_torch(cls, tkw, 20)[-1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "momentum_dampening", "adam_l2", "adamw"])
def test_update_is_pure(name: str) -> None:
    _, _, tkw, factory, lkw = next(v for v in VARIANTS if v[0] == name)
    opt = factory(lr=tkw["lr"], **lkw)
    params = make_params()
    state = opt.init(params)
    grads = torch.func.grad(make_loss())(params)
    # take one step first so the state holds non-zero tensors
    params, state = opt.update(grads, state, params, tkw["lr"])
    before = tree_clone((grads, state, params))
    new_params, new_state = opt.update(grads, state, params, tkw["lr"])
    assert ltfunc.tree_equal((grads, state, params), before)
    assert all(new_params[k] is not params[k] for k in params)
    assert type(new_state) is type(state)


def test_states_are_namedtuples_with_device_counters() -> None:
    p = make_params()
    s = optim.sgd().init(p)
    assert isinstance(s, optim.SGDState) and s.count.dtype == torch.int64 and s.count.shape == ()
    m = optim.sgd(momentum=0.9).init(p)
    assert isinstance(m, optim.MomentumState) and set(m.momentum) == set(p)
    assert all(torch.count_nonzero(v) == 0 for v in m.momentum.values())
    a = optim.adam().init(p)
    assert isinstance(a, optim.AdamState)
    assert all(a.mu[k].shape == p[k].shape and a.nu[k].shape == p[k].shape for k in p)
    assert isinstance(optim.adamw().init(p), optim.AdamState)
    with pytest.raises(AttributeError):
        a.count = torch.tensor(3)  # type: ignore[misc]


def test_adam_state_reset_restarts_bias_correction() -> None:
    """A fresh init() after some steps behaves exactly like the very first step again."""
    opt = optim.adam(lr=0.1)
    p0 = make_params()
    grads = torch.func.grad(make_loss())(p0)
    first, _ = opt.update(grads, opt.init(p0), p0, 0.1)
    p, s = p0, opt.init(p0)
    for _ in range(5):
        p, s = opt.update(grads, s, p, 0.1)
    again, _ = opt.update(grads, opt.init(p0), p0, 0.1)
    assert ltfunc.tree_equal(first, again)
    # the first Adam step moves every coordinate by ~lr (bias-corrected m / sqrt(v) = sign(g))
    for k in p0:
        delta = (first[k] - p0[k]).abs()
        assert torch.allclose(delta[grads[k] != 0], torch.tensor(0.1), rtol=1e-3)


def test_registry_and_build() -> None:
    assert set(optim.OPTIMIZERS) == {"sgd", "momentum", "adam", "adamw"}
    for name in optim.OPTIMIZERS:
        assert optim.build(name).name == name
    assert optim.build("sgd", lr=0.3, momentum=0.5).hyperparams == {
        "lr": 0.3,
        "momentum": 0.5,
        "dampening": 0.0,
        "nesterov": False,
        "weight_decay": 0.0,
    }
    with pytest.raises(ValueError, match=r"build: name='rmsprop' is not supported\. Supported: 'sgd'"):
        optim.build("rmsprop")


def test_optimizer_carries_its_default_lr() -> None:
    assert optim.sgd().lr == 0.1
    assert optim.adam().lr == 1e-3
    assert optim.adamw(lr=3e-4).lr == 3e-4
    assert optim.sgd(lr=0.01, momentum=0.9).lr == 0.01
    assert optim.build("momentum", lr=0.01).lr == 0.01


def test_momentum_function_is_a_deprecated_alias_and_the_registry_name_stays() -> None:
    with pytest.warns(DeprecationWarning, match=r"optim\.momentum\(\) is deprecated; use ltfunc\.optim\.sgd"):
        old = optim.momentum(lr=0.01, nesterov=True, weight_decay=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # old configs with optimizer="momentum" build without a warning
        registry = optim.build("momentum", lr=0.01, nesterov=True, weight_decay=0.1)
    new = optim.sgd(lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.1)
    assert old.name == registry.name == "momentum" and new.name == "sgd"
    assert dict(old.hyperparams) == dict(registry.hyperparams) == dict(new.hyperparams)
    p_old = p_new = make_params()
    s_old, s_new = old.init(p_old), new.init(p_new)
    grad = torch.func.grad(make_loss())
    for _ in range(3):
        p_old, s_old = old.update(grad(p_old), s_old, p_old, 0.01)
        p_new, s_new = new.update(grad(p_new), s_new, p_new, 0.01)
    assert ltfunc.tree_equal((p_old, s_old), (p_new, s_new))


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (
            lambda: optim.sgd(lr=-0.1),
            ValueError,
            r"sgd: lr must be a finite number in \[0.0, inf\), got -0.1",
        ),
        (lambda: optim.sgd(lr=float("nan")), ValueError, "sgd: lr must be a finite number"),
        (lambda: optim.sgd(lr="0.1"), TypeError, "sgd: lr must be a number, got str"),
        (lambda: optim.sgd(momentum=-1.0), ValueError, "sgd: momentum"),
        (
            lambda: optim.sgd(dampening=1.5),
            ValueError,
            r"sgd: dampening must be a finite number in \[0.0, 1.0\]",
        ),
        (lambda: optim.sgd(nesterov=True), ValueError, "sgd: nesterov=True needs momentum > 0"),
        (lambda: optim.sgd(momentum=0.9, dampening=0.1, nesterov=True), ValueError, "dampening == 0"),
        (lambda: optim.sgd(nesterov=1), TypeError, "sgd: nesterov must be a bool"),
        (lambda: optim.build("momentum", momentum=0.0), ValueError, "momentum: momentum must be > 0"),
        (lambda: optim.adam(betas=(0.9, 1.0)), ValueError, r"adam: betas\[1\] must be a finite number"),
        (lambda: optim.adam(betas=0.9), TypeError, "adam: betas must be a pair"),
        (lambda: optim.adam(betas=("0.9", 0.99)), TypeError, r"adam: betas\[0\] must be a number, got str"),
        (lambda: optim.adam(eps=-1e-8), ValueError, "adam: eps"),
        (lambda: optim.adamw(weight_decay=-0.01), ValueError, "adamw: weight_decay"),
        (
            lambda: optim.adam().init([torch.zeros(2)]),
            TypeError,
            "adam.init: params must be a dict of tensors",
        ),
    ],
)
def test_bad_hyperparameters(call, exc, match) -> None:
    with pytest.raises(exc, match=match):
        call()


def test_from_torch_adam_decoupled_is_adamw_and_tensor_lr() -> None:
    w = torch.zeros(2, requires_grad=True)
    o = optim.from_torch(
        torch.optim.Adam([w], lr=torch.tensor(0.02), weight_decay=0.1, decoupled_weight_decay=True)
    )
    assert o.name == "adamw" and o.lr == pytest.approx(0.02) and o.hyperparams["weight_decay"] == 0.1
    assert optim.from_torch(torch.optim.Adam([w], weight_decay=0.1)).name == "adam"


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        (
            lambda w: torch.optim.RMSprop([w]),
            ValueError,
            r"from_torch: torch\.optim\.rmsprop\.RMSprop is not supported\. Supported: torch\.optim\.SGD, "
            r"torch\.optim\.Adam, torch\.optim\.AdamW",
        ),
        (lambda w: torch.optim.Adam([w], amsgrad=True), ValueError, r"Adam\(amsgrad=True\) is not supported"),
        (
            lambda w: torch.optim.AdamW([w], amsgrad=True),
            ValueError,
            r"AdamW\(amsgrad=True\) is not supported",
        ),
        (lambda w: torch.optim.SGD([w], maximize=True), ValueError, r"SGD\(maximize=True\) is not supported"),
        (lambda w: torch.optim.Adam([w], maximize=True), ValueError, "Supported: maximize=False"),
        (
            lambda w: torch.optim.SGD([{"params": [w]}, {"params": [torch.zeros(1, requires_grad=True)]}]),
            ValueError,
            "from_torch: opt has 2 param groups; only a single param group is supported",
        ),
        (lambda w: "adam", TypeError, "from_torch: opt must be a torch.optim.Optimizer, got str"),
    ],
)
def test_from_torch_rejects_what_it_cannot_translate(make, exc, match) -> None:
    with pytest.raises(exc, match=match):
        optim.from_torch(make(torch.zeros(2, requires_grad=True)))


def test_from_torch_rejects_unknown_group_options() -> None:
    w = torch.zeros(2, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    opt.param_groups[0]["my_extra_option"] = 3
    with pytest.raises(ValueError, match=r"options \['my_extra_option'\] that ltfunc does not translate"):
        optim.from_torch(opt)
