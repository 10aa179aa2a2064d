"""Functional optimizers over parameter pytrees, optax-style, with ``torch.optim`` numerics.

An :class:`Optimizer` is a pair of pure functions: ``init(params) -> state`` and
``update(grads, state, params, lr) -> (new_params, new_state)``. States are immutable
NamedTuples whose leaves are tensors: a 0-d ``int64`` step counter ``count`` plus dicts keyed
like the params (momentum buffers, Adam moments). Nothing is mutated; every update returns
new tensors.

The learning rate is an argument of ``update`` (a float or a 0-d tensor), not part of the
state, so a schedule never changes the structure of anything that is compiled. The step
counter is a tensor too: the bias corrections of Adam are computed from it on the device,
which is what lets one ``torch.compile``'d step serve every iteration without recompiling.

Numerics follow ``torch.optim`` (single-tensor implementation) step for step:

* :func:`sgd`: ``torch.optim.SGD`` including momentum, dampening (not applied on the first
  step, as in torch), Nesterov and L2 weight decay added to the gradient.
* :func:`adam`: ``torch.optim.Adam``; ``weight_decay`` is L2 added to the gradient.
* :func:`adamw`: ``torch.optim.AdamW``; decoupled decay ``p *= 1 - lr * weight_decay``.

One spelling per operation: ``sgd(..., momentum=0.9)`` is SGD with momentum (the
function :func:`momentum` is a deprecated alias; the registry name ``"momentum"`` stays so
that configs and run directories with ``optimizer="momentum"`` keep working), and
:func:`build` with :data:`OPTIMIZERS` is the one way to make an optimizer by name.

Example:
    >>> import torch, ltfunc
    >>> opt = ltfunc.optim.adam(lr=0.1)
    >>> params = {"w": torch.tensor([1.0, -2.0])}
    >>> state = opt.init(params)
    >>> params, state = opt.update({"w": torch.tensor([0.5, -0.5])}, state, params, opt.lr)
    >>> params["w"], int(state.count)
    (tensor([ 0.9000, -1.9000]), 1)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ._checks import check_bool, check_choice, check_lr, check_number, check_tree
from ._types import Grads, Params

__all__ = [
    "OPTIMIZERS",
    "AdamState",
    "MomentumState",
    "OptState",
    "Optimizer",
    "SGDState",
    "adam",
    "adamw",
    "build",
    "from_torch",
    "momentum",
    "sgd",
]

OptState = Any
"""An optimizer state: an immutable NamedTuple pytree of tensors."""

LR = float | Tensor
"""A learning rate: a python number or a 0-d tensor on the params' device."""


class Optimizer(NamedTuple):
    """A functional optimizer: ``init`` and ``update`` plus its default learning rate.

    Attributes:
        init: ``init(params) -> state``; the state holds tensors on the params' device.
        update: ``update(grads, state, params, lr) -> (new_params, new_state)``; ``lr`` is a
            float or a 0-d tensor. Pure: no argument is modified.
        lr: The default learning rate given to the factory. The training step and
            :func:`ltfunc.train.fit` use the ``lr`` they are given; this is what callers
            fall back to.
        name: Registry name (``"sgd"``, ``"momentum"``, ``"adam"``, ``"adamw"``) or
            ``"custom"``.
        hyperparams: The factory's keyword arguments (read-only), e.g. for run configs.

    Example:
        >>> import ltfunc
        >>> opt = ltfunc.optim.sgd(lr=0.05, momentum=0.9)
        >>> opt.name, opt.lr, opt.hyperparams["momentum"]
        ('sgd', 0.05, 0.9)
    """

    init: Callable[[Params], OptState]
    update: Callable[..., tuple[Params, OptState]]
    lr: float = 1e-3
    name: str = "custom"
    hyperparams: Mapping[str, Any] = MappingProxyType({})


class SGDState(NamedTuple):
    """State of plain SGD: only the number of updates taken."""

    count: Tensor  # type: ignore[assignment]  # the field shadows tuple.count
    """0-d ``int64`` tensor: updates taken so far."""


class MomentumState(NamedTuple):
    """State of SGD with momentum: the step counter and one momentum buffer per parameter."""

    count: Tensor  # type: ignore[assignment]  # the field shadows tuple.count
    """0-d ``int64`` tensor: updates taken so far."""
    momentum: Params
    """Momentum buffers keyed like the params (zeros after ``init``)."""


class AdamState(NamedTuple):
    """State of Adam / AdamW: the step counter and the two moment estimates."""

    count: Tensor  # type: ignore[assignment]  # the field shadows tuple.count
    """0-d ``int64`` tensor: updates taken so far (``step`` in ``torch.optim``)."""
    mu: Params
    """First moment (``exp_avg``) keyed like the params."""
    nu: Params
    """Second moment (``exp_avg_sq``) keyed like the params."""


# Helpers ------------------------------------------------------------------------------------
def _check_betas(func: str, betas: Any) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"{func}: betas must be a pair (beta1, beta2), got {betas!r}")
    b1 = check_number(func, "betas[0]", betas[0], low=0.0, high=1.0, open_high=True)
    b2 = check_number(func, "betas[1]", betas[1], low=0.0, high=1.0, open_high=True)
    return b1, b2


def _counter(params: Mapping[str, Tensor]) -> Tensor:
    device = next(iter(params.values())).device if params else torch.device("cpu")
    return torch.zeros((), dtype=torch.int64, device=device)


def _scalars(device: torch.device, *values: Tensor | float) -> tuple[Tensor, ...]:
    """Materialize per-step scalars once.

    Inductor inlines cheap pointwise scalar math into every consumer loop; on CPU that means
    ``pow``/``sqrt``/division re-evaluated once per SIMD vector of every parameter (about
    1 ms per step for LeNet-300-100's Adam). Stacking the scalars into one small tensor makes
    them a single realized buffer, so the update loops only load them. Python numbers are
    accepted too (``lr`` may be a float). The scalars are float64 (float32 on MPS), like the
    python floats ``torch.optim`` computes them in; callers cast them to the params' dtype.
    """
    dtype = _scalar_dtype(device)
    parts = [torch.as_tensor(v, dtype=dtype, device=device) for v in values]
    stacked = torch.stack(parts)
    return tuple(stacked[i] for i in range(len(values)))


def _scalar_dtype(device: torch.device) -> torch.dtype:
    # float64 where the backend supports it (torch.optim computes these in python floats).
    return torch.float32 if device.type == "mps" else torch.float64


# SGD ----------------------------------------------------------------------------------------
def sgd(
    lr: float = 0.1,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> Optimizer:
    """Stochastic gradient descent with optional momentum, as ``torch.optim.SGD``.

    Update: ``d = g + weight_decay * p``; with momentum ``buf = momentum * buf + (1 -
    dampening) * d`` (``buf = d`` on the first step), ``d = d + momentum * buf`` if
    ``nesterov`` else ``buf``; then ``p = p - lr * d``.

    Args:
        lr: Default learning rate (the step's ``lr`` argument is what is used).
        momentum: Momentum factor; 0 (default) is plain SGD with a counter-only state.
        dampening: Dampening of the momentum (not applied on the first step, as in torch).
        nesterov: Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
        weight_decay: L2 penalty added to the gradient.

    Returns:
        An :class:`Optimizer` with :class:`SGDState` (``momentum == 0``) or
        :class:`MomentumState` states.

    Raises:
        TypeError: A hyper-parameter of the wrong type.
        ValueError: A negative / non-finite hyper-parameter, or ``nesterov`` without
            momentum or with dampening.

    Example:
        >>> import torch, ltfunc
        >>> opt = ltfunc.optim.sgd(lr=0.5)
        >>> p = {"w": torch.tensor([1.0])}
        >>> opt.update({"w": torch.tensor([2.0])}, opt.init(p), p, 0.5)[0]["w"]
        tensor([0.])
    """
    return _sgd("sgd", lr, momentum, dampening, nesterov, weight_decay)


def _sgd(func: str, lr: Any, momentum: Any, dampening: Any, nesterov: Any, weight_decay: Any) -> Optimizer:
    """:func:`sgd` under registry name ``func`` (``"sgd"`` or ``"momentum"``, which needs momentum > 0)."""
    lr = check_lr(func, lr)
    momentum = check_number(func, "momentum", momentum, low=0.0)
    if func == "momentum" and momentum == 0.0:
        raise ValueError("momentum: momentum must be > 0 (use sgd() for plain SGD), got 0.0")
    dampening = check_number(func, "dampening", dampening, low=0.0, high=1.0)
    weight_decay = check_number(func, "weight_decay", weight_decay, low=0.0)
    check_bool(func, "nesterov", nesterov)
    if nesterov and (momentum <= 0.0 or dampening != 0.0):
        raise ValueError(
            f"{func}: nesterov=True needs momentum > 0 and dampening == 0, "
            f"got momentum={momentum}, dampening={dampening}"
        )
    hyper = MappingProxyType(
        {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
        }
    )

    def decayed(grads: Grads, params: Params) -> Grads:
        if weight_decay == 0.0:
            return dict(grads)
        return {k: g + weight_decay * params[k] for k, g in grads.items()}

    if momentum == 0.0:

        def init_plain(params: Params) -> SGDState:
            check_tree(f"{func}.init", "params", params)
            return SGDState(count=_counter(params))

        def update_plain(grads: Grads, state: SGDState, params: Params, lr: LR) -> tuple[Params, SGDState]:
            d = decayed(grads, params)
            new_params = {k: p - lr * d[k] for k, p in params.items()}
            return new_params, SGDState(count=state.count + 1)

        return Optimizer(init_plain, update_plain, lr, func, hyper)

    def init_momentum(params: Params) -> MomentumState:
        check_tree(f"{func}.init", "params", params)
        return MomentumState(
            count=_counter(params), momentum={k: torch.zeros_like(v) for k, v in params.items()}
        )

    def update_momentum(
        grads: Grads, state: MomentumState, params: Params, lr: LR
    ) -> tuple[Params, MomentumState]:
        d = decayed(grads, params)
        if dampening == 0.0:
            # buf starts at 0, so momentum * 0 + d == d reproduces torch's first step exactly.
            bufs = {k: momentum * state.momentum[k] + d[k] for k in d}
        else:
            first = state.count == 0
            (scale,) = _scalars(first.device, torch.where(first, 1.0, 1.0 - dampening))
            bufs = {k: momentum * state.momentum[k] + scale.to(g.dtype) * g for k, g in d.items()}
        if nesterov:
            direction = {k: d[k] + momentum * bufs[k] for k in d}
        else:
            direction = bufs
        new_params = {k: p - lr * direction[k] for k, p in params.items()}
        return new_params, MomentumState(count=state.count + 1, momentum=bufs)

    return Optimizer(init_momentum, update_momentum, lr, func, hyper)


def _momentum(
    lr: float = 0.1,
    momentum: float = 0.9,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> Optimizer:
    """The registry entry ``OPTIMIZERS["momentum"]``: :func:`sgd` with momentum 0.9 by default.

    Kept (without a warning) so that configs and run directories with
    ``optimizer="momentum"`` still build; new code writes ``sgd(..., momentum=0.9)``.
    """
    return _sgd("momentum", lr, momentum, dampening, nesterov, weight_decay)


def momentum(
    lr: float = 0.1,
    momentum: float = 0.9,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> Optimizer:
    """Deprecated alias of ``sgd(..., momentum=0.9)``; use :func:`sgd` (or ``build("momentum")``).

    Emits a ``DeprecationWarning`` and returns what ``build("momentum", ...)`` returns:
    :func:`sgd` with momentum (default 0.9) under the registry name ``"momentum"``.

    Args:
        lr: Default learning rate.
        momentum: Momentum factor (> 0).
        dampening: Dampening of the momentum.
        nesterov: Nesterov momentum.
        weight_decay: L2 penalty added to the gradient.

    Returns:
        An :class:`Optimizer` with :class:`MomentumState` states.

    Raises:
        TypeError, ValueError: As :func:`sgd`; also ``momentum == 0``.

    Example:
        >>> import warnings, ltfunc
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", DeprecationWarning)
        ...     opt = ltfunc.optim.momentum(lr=0.01, nesterov=True)
        >>> opt.name, opt.hyperparams["momentum"], opt.hyperparams["nesterov"]
        ('momentum', 0.9, True)
        >>> ltfunc.optim.sgd(lr=0.01, momentum=0.9, nesterov=True).hyperparams == opt.hyperparams
        True
    """
    warnings.warn(
        "ltfunc.optim.momentum() is deprecated; use ltfunc.optim.sgd(..., momentum=0.9) "
        '(or ltfunc.optim.build("momentum", ...) for the registry name)',
        DeprecationWarning,
        stacklevel=2,
    )
    return _sgd("momentum", lr, momentum, dampening, nesterov, weight_decay)


# Adam / AdamW -------------------------------------------------------------------------------
def _adam_like(
    func: str, lr: float, betas: Any, eps: float, weight_decay: float, decoupled: bool
) -> Optimizer:
    lr = check_lr(func, lr)
    b1, b2 = _check_betas(func, betas)
    eps = check_number(func, "eps", eps, low=0.0)
    weight_decay = check_number(func, "weight_decay", weight_decay, low=0.0)
    hyper = MappingProxyType({"lr": lr, "betas": (b1, b2), "eps": eps, "weight_decay": weight_decay})

    def init(params: Params) -> AdamState:
        check_tree(f"{func}.init", "params", params)
        return AdamState(
            count=_counter(params),
            mu={k: torch.zeros_like(v) for k, v in params.items()},
            nu={k: torch.zeros_like(v) for k, v in params.items()},
        )

    def update(grads: Grads, state: AdamState, params: Params, lr: LR) -> tuple[Params, AdamState]:
        count = state.count + 1
        t = count.to(_scalar_dtype(count.device))
        bias1 = 1.0 - b1**t
        bias2_sqrt = torch.sqrt(1.0 - b2**t)
        if decoupled and weight_decay != 0.0:
            step_size, bias2_sqrt, keep = _scalars(t.device, lr / bias1, bias2_sqrt, 1.0 - lr * weight_decay)
            params = {k: p * keep.to(p.dtype) for k, p in params.items()}
        else:
            step_size, bias2_sqrt = _scalars(t.device, lr / bias1, bias2_sqrt)
        if not decoupled and weight_decay != 0.0:
            grads = {k: g + weight_decay * params[k] for k, g in grads.items()}
        mu = {k: torch.lerp(state.mu[k], g, 1.0 - b1) for k, g in grads.items()}
        nu = {k: state.nu[k] * b2 + (1.0 - b2) * g * g for k, g in grads.items()}
        new_params = {
            k: p - step_size.to(p.dtype) * (mu[k] / (nu[k].sqrt() / bias2_sqrt.to(p.dtype) + eps))
            for k, p in params.items()
        }
        return new_params, AdamState(count=count, mu=mu, nu=nu)

    return Optimizer(init, update, lr, func, hyper)


def adam(
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> Optimizer:
    """Adam, as ``torch.optim.Adam`` (``weight_decay`` is an L2 term added to the gradient).

    Args:
        lr: Default learning rate.
        betas: Decay rates of the first and second moment estimates, each in [0, 1).
        eps: Added to the denominator.
        weight_decay: L2 penalty added to the gradient (use :func:`adamw` for decoupled decay).

    Returns:
        An :class:`Optimizer` with :class:`AdamState` states.

    Raises:
        TypeError: A hyper-parameter of the wrong type.
        ValueError: A hyper-parameter out of range.

    Example:
        >>> import torch, ltfunc
        >>> opt = ltfunc.optim.adam(lr=0.01)
        >>> p = {"w": torch.zeros(3)}
        >>> p, s = opt.update({"w": torch.tensor([1.0, -1.0, 0.0])}, opt.init(p), p, 0.01)
        >>> p["w"]
        tensor([-0.0100,  0.0100,  0.0000])
    """
    return _adam_like("adam", lr, betas, eps, weight_decay, decoupled=False)


def adamw(
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
) -> Optimizer:
    """AdamW, as ``torch.optim.AdamW``: decoupled weight decay ``p *= 1 - lr * weight_decay``.

    Args:
        lr: Default learning rate.
        betas: Decay rates of the moment estimates, each in [0, 1).
        eps: Added to the denominator.
        weight_decay: Decoupled decay coefficient (default 0.01, as torch).

    Returns:
        An :class:`Optimizer` with :class:`AdamState` states.

    Raises:
        TypeError: A hyper-parameter of the wrong type.
        ValueError: A hyper-parameter out of range.

    Example:
        >>> import torch, ltfunc
        >>> opt = ltfunc.optim.adamw(lr=0.1, weight_decay=0.5)
        >>> p = {"w": torch.ones(1)}
        >>> opt.update({"w": torch.zeros(1)}, opt.init(p), p, 0.1)[0]["w"]
        tensor([0.9500])
    """
    return _adam_like("adamw", lr, betas, eps, weight_decay, decoupled=True)


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "sgd": sgd,
    "momentum": _momentum,
    "adam": adam,
    "adamw": adamw,
}
"""Registry of optimizer names (CLI ``--optimizer``, ``ImpConfig.optimizer``) to factories.

``"momentum"`` is ``sgd`` with momentum 0.9 by default, kept for configs and run directories
that name it (``config.json`` with ``"optimizer": "momentum"``); it builds without the
deprecation warning of the function :func:`momentum`.
"""


def build(name: str, **hyperparams: Any) -> Optimizer:
    """Build a registered optimizer by name: the one constructor by name.

    ``build(opt.name, **opt.hyperparams)`` rebuilds any registry-made optimizer ``opt``
    (what run configs store).

    Args:
        name: One of :data:`OPTIMIZERS` (``"sgd"``, ``"momentum"``, ``"adam"``, ``"adamw"``).
        **hyperparams: Keyword arguments of the factory (``lr``, ``momentum``, ``betas``, ...).

    Returns:
        The optimizer.

    Raises:
        ValueError: Unknown name (lists the supported ones), or bad hyper-parameters.
        TypeError: Hyper-parameters the factory does not take.

    Example:
        >>> import ltfunc
        >>> ltfunc.optim.build("adamw", lr=3e-4).hyperparams["weight_decay"]
        0.01
        >>> opt = ltfunc.optim.build("momentum", lr=0.05)  # sgd with momentum 0.9, named "momentum"
        >>> opt.name, ltfunc.optim.build(opt.name, **opt.hyperparams).hyperparams == opt.hyperparams
        ('momentum', True)
    """
    check_choice("build", "name", name, tuple(OPTIMIZERS))
    return OPTIMIZERS[name](**hyperparams)


# torch.optim translation --------------------------------------------------------------------
_SUPPORTED_TORCH = "torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW"
_TORCH_NEUTRAL = {"params", "foreach", "capturable", "differentiable", "fused", "initial_lr"}
"""param_group keys that do not change the numerics (implementation switches, schedulers)."""


def _group_float(func: str, group: Mapping[str, Any], key: str) -> float:
    value = group[key]
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{func}: param_groups[0][{key!r}] must be a scalar, got shape {tuple(value.shape)}"
            )
        value = value.item()
    return float(value)


def from_torch(opt: torch.optim.Optimizer) -> Optimizer:
    """Translate a ``torch.optim`` optimizer's hyper-parameters into a functional one.

    Reads ``opt.param_groups[0]``; the torch optimizer is not modified and its state (if it
    has stepped) is not carried over. Implementation switches (``foreach``, ``fused``,
    ``capturable``, ``differentiable``) are ignored: they do not change the numerics.

    Args:
        opt: A ``torch.optim.SGD``, ``torch.optim.Adam`` or ``torch.optim.AdamW`` with one
            param group. ``Adam(decoupled_weight_decay=True)`` becomes :func:`adamw`.

    Returns:
        The equivalent :class:`Optimizer` (same lr, momentum, betas, eps, weight decay...).

    Raises:
        TypeError: If ``opt`` is not a ``torch.optim.Optimizer``.
        ValueError: Another optimizer class, several param groups, or options without a
            functional equivalent (``amsgrad``, ``maximize``); the message lists what is
            supported.

    Example:
        >>> import torch, ltfunc
        >>> w = torch.zeros(2, requires_grad=True)
        >>> opt = ltfunc.optim.from_torch(torch.optim.SGD([w], lr=0.01, momentum=0.9, nesterov=True))
        >>> opt.name, opt.lr, opt.hyperparams["nesterov"]
        ('sgd', 0.01, True)
    """
    func = "from_torch"
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(f"{func}: opt must be a torch.optim.Optimizer, got {type(opt).__name__}")
    kind = type(opt)
    if kind not in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW):
        raise ValueError(
            f"{func}: {kind.__module__}.{kind.__qualname__} is not supported. Supported: {_SUPPORTED_TORCH}"
        )
    if len(opt.param_groups) != 1:
        raise ValueError(
            f"{func}: opt has {len(opt.param_groups)} param groups; only a single param group is "
            "supported (one set of hyper-parameters for all parameters)"
        )
    group = opt.param_groups[0]
    name = kind.__name__
    if group.get("maximize", False):
        raise ValueError(f"{func}: {name}(maximize=True) is not supported. Supported: maximize=False")
    if kind is torch.optim.SGD:
        known = _TORCH_NEUTRAL | {"lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"}
        _check_known(func, name, group, known)
        return sgd(
            lr=_group_float(func, group, "lr"),
            momentum=_group_float(func, group, "momentum"),
            dampening=_group_float(func, group, "dampening"),
            nesterov=bool(group["nesterov"]),
            weight_decay=_group_float(func, group, "weight_decay"),
        )
    if group.get("amsgrad", False):
        raise ValueError(f"{func}: {name}(amsgrad=True) is not supported. Supported: amsgrad=False")
    known = _TORCH_NEUTRAL | {"lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"}
    known |= {"decoupled_weight_decay"}
    _check_known(func, name, group, known)
    betas = tuple(float(b.item()) if isinstance(b, Tensor) else float(b) for b in group["betas"])
    decoupled = kind is torch.optim.AdamW or bool(group.get("decoupled_weight_decay", False))
    factory = adamw if decoupled else adam
    return factory(
        lr=_group_float(func, group, "lr"),
        betas=betas,  # type: ignore[arg-type]
        eps=_group_float(func, group, "eps"),
        weight_decay=_group_float(func, group, "weight_decay"),
    )


def _check_known(func: str, name: str, group: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(group) - known)
    if unknown:
        raise ValueError(
            f"{func}: {name} param group has options {unknown} that ltfunc does not translate. "
            f"Supported options: {', '.join(sorted(known - _TORCH_NEUTRAL))}"
        )
