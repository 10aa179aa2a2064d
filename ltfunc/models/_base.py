"""What every built-in model shares: init schemes, the base class, seeded construction.

Init schemes (:data:`INITS`), applied to the layers in module order:

- ``"glorot_normal"``: Linear/Conv weights ``N(0, 2 / (fan_in + fan_out))`` (Glorot & Bengio,
  2010), biases 0, BatchNorm weight 1 and bias 0.
- ``"kaiming_normal"``: Linear/Conv weights ``N(0, 2 / fan_in)`` (He et al., 2015), biases 0,
  BatchNorm weight 1 and bias 0.
- ``"torch"``: PyTorch's default ``reset_parameters()`` of Linear/Conv (Kaiming uniform with
  ``a=sqrt(5)``, uniform biases), BatchNorm weight 1 and bias 0.
- ``"open_lth"``: what open_lth's ``kaiming_normal`` model init with its ``uniform`` BatchNorm
  init does: Linear/Conv weights ``N(0, 2 / fan_in)``, biases drawn by PyTorch's default
  (uniform in ``±1/sqrt(fan_in)``; open_lth does not touch them), BatchNorm weight
  ``U[0, 1)`` and bias 0.
- ``"paper"``: the scheme of the model's paper or reference code (``paper_init`` of each
  class; see :func:`ltfunc.models.resolve_init`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, TypeVar

import torch
from torch import nn

from .._checks import check_choice, check_int, check_seed

__all__ = ["INITS", "SCHEMES", "BaseModel"]

SCHEMES = ("glorot_normal", "kaiming_normal", "torch", "open_lth")
"""The concrete init schemes (what ``"paper"`` resolves to)."""
INITS = (*SCHEMES, "paper")
"""Every accepted ``init=`` value: the concrete :data:`SCHEMES` and ``"paper"``."""

_M = TypeVar("_M", bound=nn.Module)
_WEIGHTED = (nn.Linear, nn.Conv2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def init_layers(model: nn.Module, scheme: str) -> None:
    """Re-draw the Linear/Conv/BatchNorm parameters of ``model`` with a concrete scheme.

    The draws happen in ``model.modules()`` order, one layer at a time (the RNG stream of
    LeNet-300-100 and Conv-2 depends on it). Must run under ``torch.no_grad()`` or on leaf
    parameters (``nn.init`` functions are no-grad themselves).
    """
    for mod in model.modules():
        if isinstance(mod, _WEIGHTED):
            if scheme in ("torch", "open_lth"):
                mod.reset_parameters()
                if scheme == "open_lth":
                    nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
                continue
            if scheme == "glorot_normal":
                nn.init.xavier_normal_(mod.weight)
            else:
                nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
        elif isinstance(mod, _NORMS) and mod.affine:
            with torch.no_grad():
                if scheme == "open_lth":
                    mod.weight.copy_(torch.rand(mod.weight.shape))
                else:
                    mod.weight.fill_(1.0)
                mod.bias.zero_()


class BaseModel(nn.Module):
    """Base class of the built-in models: an init scheme and a declared prunable set.

    Subclasses set ``paper_init`` (the concrete scheme ``init="paper"`` means) and
    ``unpruned`` (weights of Linear/Conv layers that stay dense, e.g. the output layer of
    VGG and ResNet), build their layers, then call :meth:`reset_parameters`.

    :meth:`prunable_names` is the declaration :func:`ltfunc.masks.prunable_names` (hence
    :func:`ltfunc.masks.ones` and the IMP pipeline) honours for a module: the weights of
    every ``nn.Linear`` / ``nn.Conv2d`` except ``unpruned``; biases and BatchNorm parameters
    never.

    Attributes:
        init: The concrete scheme of :data:`SCHEMES` this model draws with (``"paper"`` is
            resolved when the model is built).

    Example:
        >>> import ltfunc
        >>> m = ltfunc.models.build("resnet20")
        >>> m.init, "fc.weight" in m.prunable_names()
        ('open_lth', False)
    """

    paper_init: ClassVar[str] = "kaiming_normal"
    """The concrete scheme ``init="paper"`` resolves to for this class."""
    unpruned: ClassVar[tuple[str, ...]] = ()
    """Names of Linear/Conv weights that are not prunable."""

    init: str

    def _set_init(self, init: str) -> None:
        check_choice(type(self).__name__, "init", init, INITS)
        self.init = self.paper_init if init == "paper" else init

    def reset_parameters(self) -> None:
        """Re-draw every parameter with this model's init scheme (``self.init``).

        Returns:
            None; the parameters are overwritten in place.

        Example:
            >>> import ltfunc, torch
            >>> m = ltfunc.models.lenet300(seed=0); before = m.fc1.weight.clone()
            >>> m.reset_parameters(); torch.equal(before, m.fc1.weight)
            False
        """
        init_layers(self, self.init)

    def prunable_names(self) -> list[str]:
        """Names of the prunable parameters, in parameter order.

        Returns:
            The ``weight`` of every ``nn.Linear`` / ``nn.Conv2d`` not in ``unpruned``.

        Example:
            >>> import ltfunc
            >>> ltfunc.models.vgg11().prunable_names()[-1]
            'layers.11.conv.weight'
        """
        chosen = {f"{n}.weight" for n, m in self.named_modules() if isinstance(m, _WEIGHTED)}
        chosen -= set(self.unpruned)
        return [n for n, _ in self.named_parameters() if n in chosen]


def check_shape(
    func: str, num_classes: int, in_channels: int, image_size: int, min_size: int
) -> tuple[int, int, int]:
    """Validate the ``num_classes`` / ``in_channels`` / ``image_size`` arguments of a model."""
    return (
        check_int(func, "num_classes", num_classes, 1),
        check_int(func, "in_channels", in_channels, 1),
        check_int(func, "image_size", image_size, min_size),
    )


def seeded(func: str, make: Callable[[], _M], seed: int | None) -> _M:
    """Run ``make()`` with the global RNG seeded by ``seed`` (and restored after), if given."""
    if check_seed(func, seed, optional=True) is None:
        return make()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()
