"""Built-in models of the lottery-ticket literature, and fresh initializations."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from ._checks import check_choice, check_module, check_seed
from ._types import Params

__all__ = ["MODELS", "Conv2", "LeNet300", "build", "conv2", "init_params", "lenet300"]

INITS = ("glorot_normal", "kaiming_normal", "torch")
_M = TypeVar("_M", bound=nn.Module)


def _init_layers(model: nn.Module, init: str) -> None:
    for mod in model.modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            if init == "torch":
                mod.reset_parameters()
                continue
            if init == "glorot_normal":
                nn.init.xavier_normal_(mod.weight)
            else:
                nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)


class LeNet300(nn.Module):
    """LeNet-300-100: 784-300-100-10 fully connected with ReLU (Frankle & Carbin, 2019).

    Args:
        init: ``"glorot_normal"`` (the paper's, default), ``"kaiming_normal"`` or
            ``"torch"`` (PyTorch's default Linear init). Biases start at 0 except for
            ``"torch"``.
        num_classes: Output size.
    """

    def __init__(self, init: str = "glorot_normal", num_classes: int = 10) -> None:
        super().__init__()
        self.init = check_choice("LeNet300", "init", init, INITS)
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw all weights with this model's init scheme."""
        _init_layers(self, self.init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class Conv2(nn.Module):
    """Conv-2: two 64-filter 3x3 convs, 2x2 max-pool, FC 256-256-10 (Frankle & Carbin).

    Padding 1 keeps 28x28 inputs at 28x28 before the pool, so fc1 sees 64*14*14 features.

    Args:
        init: As for :class:`LeNet300`.
        in_channels: Image channels (1 for MNIST / Fashion-MNIST).
        image_size: Input height/width.
        num_classes: Output size.
    """

    def __init__(
        self,
        init: str = "glorot_normal",
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.init = check_choice("Conv2", "init", init, INITS)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1)
        self.conv2 = nn.Conv2d(64, 64, 3, padding=1)
        side = image_size // 2
        self.fc1 = nn.Linear(64 * side * side, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw all weights with this model's init scheme."""
        _init_layers(self, self.init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.nn.functional.max_pool2d(x, 2)
        x = x.flatten(1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def lenet300(init: str = "glorot_normal", seed: int | None = None) -> LeNet300:
    """Build LeNet-300-100.

    Args:
        init: Init scheme, see :class:`LeNet300`.
        seed: If given, the weights are drawn from this seed (global RNG state untouched).

    Returns:
        A new ``LeNet300`` on the CPU.

    Raises:
        ValueError: Unknown ``init``.
        TypeError: ``seed`` neither an int nor ``None``.

    Example:
        >>> import ltfunc
        >>> sum(p.numel() for p in ltfunc.models.lenet300().parameters())
        266610
    """
    return _seeded("lenet300", lambda: LeNet300(init=init), seed)


def conv2(init: str = "glorot_normal", seed: int | None = None) -> Conv2:
    """Build Conv-2 for 1x28x28 inputs.

    Args:
        init: Init scheme, see :class:`LeNet300`.
        seed: If given, the weights are drawn from this seed (global RNG state untouched).

    Returns:
        A new ``Conv2`` on the CPU.

    Raises:
        ValueError: Unknown ``init``.
        TypeError: ``seed`` neither an int nor ``None``.

    Example:
        >>> import ltfunc
        >>> ltfunc.models.conv2().conv1.weight.shape
        torch.Size([64, 1, 3, 3])
    """
    return _seeded("conv2", lambda: Conv2(init=init), seed)


def _seeded(func: str, make: Callable[[], _M], seed: int | None) -> _M:
    if check_seed(func, seed, optional=True) is None:
        return make()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


MODELS: dict[str, Callable[..., nn.Module]] = {"lenet300": lenet300, "conv2": conv2}
"""Registry of built-in model names (CLI ``--model``)."""


def build(name: str, **kwargs: object) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: One of ``MODELS`` (``"lenet300"``, ``"conv2"``).
        **kwargs: Passed to the builder (``init``, ``seed``).

    Returns:
        The model.

    Raises:
        ValueError: Unknown name (lists the valid ones).

    Example:
        >>> import ltfunc
        >>> type(ltfunc.models.build("conv2")).__name__
        'Conv2'
    """
    check_choice("build", "name", name, tuple(MODELS))
    return MODELS[name](**kwargs)


def init_params(model: nn.Module, seed: int) -> Params:
    """Fresh, independently drawn parameters for ``model`` from ``seed`` (pure).

    Uses the model's own ``reset_parameters()`` when it has one (built-in models re-draw
    with their init scheme), otherwise the ``reset_parameters()`` of every submodule. The
    model itself and the global RNG state are not changed.

    Args:
        model: Template module.
        seed: Integer seed.

    Returns:
        A params pytree (detached tensors on the model's device).

    Raises:
        TypeError: If ``model`` is not a module or ``seed`` not an int.

    Example:
        >>> import ltfunc, torch
        >>> m = ltfunc.models.lenet300(seed=0)
        >>> a, b = ltfunc.models.init_params(m, 1), ltfunc.models.init_params(m, 1)
        >>> torch.equal(a["fc1.weight"], b["fc1.weight"])
        True
    """
    check_module("init_params", "model", model)
    check_seed("init_params", seed)
    clone = copy.deepcopy(model)
    devices = [p.device.index or 0 for p in clone.parameters() if p.is_cuda][:1]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        with torch.no_grad():
            reset: Any = getattr(clone, "reset_parameters", None)
            if callable(reset):
                reset()
            else:
                for mod in clone.modules():
                    sub: Any = getattr(mod, "reset_parameters", None)
                    if mod is not clone and callable(sub):
                        sub()
    return {n: p.detach() for n, p in clone.named_parameters()}
