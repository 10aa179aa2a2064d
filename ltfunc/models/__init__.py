"""Built-in models of the lottery-ticket literature, the registry, and fresh initializations.

===================================  =====================================  =============
registry names                       family (module)                        ``"paper"``
===================================  =====================================  =============
``lenet300``, ``lenet5``             LeNet-300-100, LeNet-5 (``small``)     glorot_normal
``conv2``, ``conv4``, ``conv6``      Frankle & Carbin's Conv-N (``small``)  glorot_normal
``vgg11`` .. ``vgg19_bn``            CIFAR VGG, open_lth (``vgg``)          open_lth
``resnet20``, ``resnet32``,          He et al.'s CIFAR ResNets, open_lth    open_lth
``resnet56``                         (``resnet``)
``resnet18``, ``resnet34``           the LTH repos' CIFAR ResNets           kaiming_normal
                                     (``resnet``)
===================================  =====================================  =============

Every builder takes ``init=`` (one of :data:`INITS`; default ``"paper"``: the family's own
scheme, :func:`resolve_init`), ``seed=`` and the keywords ``num_classes``, ``in_channels``
and ``image_size``: LeNet-300-100, LeNet-5 and Conv-2 default to 1x28x28 (MNIST), the others
to 3x32x32 (CIFAR-10). Every model declares its prunable parameters
(:meth:`BaseModel.prunable_names`, honoured by :func:`ltfunc.masks.ones`): Linear/Conv
weights, except the output layer of VGG and ResNet.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .._checks import check_choice, check_module, check_seed
from .._types import Params
from ._base import INITS, SCHEMES, BaseModel
from .resnet import (
    BasicBlock,
    CifarResNet,
    ResNet,
    cifar_resnet,
    resnet18,
    resnet20,
    resnet32,
    resnet34,
    resnet56,
)
from .small import Conv2, Conv4, Conv6, LeNet5, LeNet300, conv2, conv4, conv6, lenet5, lenet300
from .vgg import VGG, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn

__all__ = [
    "INITS",
    "MODELS",
    "SCHEMES",
    "VGG",
    "BaseModel",
    "BasicBlock",
    "CifarResNet",
    "Conv2",
    "Conv4",
    "Conv6",
    "LeNet5",
    "LeNet300",
    "ResNet",
    "build",
    "cifar_resnet",
    "conv2",
    "conv4",
    "conv6",
    "init_params",
    "lenet5",
    "lenet300",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet34",
    "resnet56",
    "resolve_init",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
]

_CLASSES: dict[str, type[BaseModel]] = {
    "lenet300": LeNet300,
    "conv2": Conv2,
    "lenet5": LeNet5,
    "conv4": Conv4,
    "conv6": Conv6,
    **{f"vgg{d}{bn}": VGG for d in (11, 13, 16, 19) for bn in ("", "_bn")},
    "resnet20": CifarResNet,
    "resnet32": CifarResNet,
    "resnet56": CifarResNet,
    "resnet18": ResNet,
    "resnet34": ResNet,
}

MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet300": lenet300,
    "conv2": conv2,
    "lenet5": lenet5,
    "conv4": conv4,
    "conv6": conv6,
    "vgg11": vgg11,
    "vgg11_bn": vgg11_bn,
    "vgg13": vgg13,
    "vgg13_bn": vgg13_bn,
    "vgg16": vgg16,
    "vgg16_bn": vgg16_bn,
    "vgg19": vgg19,
    "vgg19_bn": vgg19_bn,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
    "resnet18": resnet18,
    "resnet34": resnet34,
}
"""Registry of built-in model names (CLI ``--model``): name -> builder
``(init="paper", seed=None, *, num_classes, in_channels, image_size)``."""


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: One of ``MODELS`` (``"lenet300"``, ``"conv2"``, ``"resnet20"``, ...).
        **kwargs: Passed to the builder: ``init`` (default ``"paper"``), ``seed``,
            ``num_classes``, ``in_channels``, ``image_size``.

    Returns:
        The model, on the CPU.

    Raises:
        ValueError: Unknown name (lists the valid ones); see the builder for the rest.
        TypeError: An argument the builder does not take or of the wrong type.

    Example:
        >>> import ltfunc
        >>> type(ltfunc.models.build("conv2")).__name__
        'Conv2'
        >>> ltfunc.models.build("resnet20", seed=0, num_classes=100).fc.out_features
        100
    """
    check_choice("build", "name", name, tuple(MODELS))
    return MODELS[name](**kwargs)


def resolve_init(name: str, init: str = "paper") -> str:
    """The concrete init scheme model ``name`` draws with for ``init`` (``"paper"`` resolved).

    Args:
        name: One of ``MODELS``.
        init: One of :data:`INITS`.

    Returns:
        A scheme of :data:`SCHEMES`: ``init`` itself unless it is ``"paper"``, which is the
        family's own (``"glorot_normal"`` for LeNet and Conv-N, ``"open_lth"`` for VGG and
        ResNet-20/32/56, ``"kaiming_normal"`` for ResNet-18/34; ``"glorot_normal"`` for a
        factory added to ``MODELS`` by the user).

    Raises:
        ValueError: Unknown ``name`` or ``init`` (lists the valid ones).

    Example:
        >>> import ltfunc
        >>> ltfunc.models.resolve_init("lenet300"), ltfunc.models.resolve_init("vgg16_bn")
        ('glorot_normal', 'open_lth')
        >>> ltfunc.models.resolve_init("resnet20", "torch")
        'torch'
    """
    check_choice("resolve_init", "name", name, tuple(MODELS))
    check_choice("resolve_init", "init", init, INITS)
    if init != "paper":
        return init
    cls = _CLASSES.get(name)  # a factory registered by the user has no declared paper init
    return cls.paper_init if cls is not None else "glorot_normal"


def init_params(model: nn.Module, seed: int) -> Params:
    """Fresh, independently drawn parameters for ``model`` from ``seed`` (pure).

    Uses the model's own ``reset_parameters()`` when it has one (built-in models re-draw
    with their init scheme, BatchNorm weights included), otherwise the
    ``reset_parameters()`` of every submodule. The model itself and the global RNG state are
    not changed; buffers (BatchNorm running statistics) are not part of the result.

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
