"""VGG-11/13/16/19 for CIFAR, as in open_lth's ``cifar_vgg`` (Frankle et al.'s lottery-ticket code).

The convolutional part of VGG (Simonyan & Zisserman, 2015): 3x3 convs with padding 1 (with
biases), each followed by BatchNorm (the ``_bn`` models; open_lth always has it) and ReLU,
and a 2x2 max-pool after each stage but the last; then a global average pool over the last
2x2 map and ONE linear layer 512 -> ``num_classes``: no 4096-wide fc layers. open_lth pools
with ``AvgPool2d(2)``, the same operation for 32x32 inputs; the global average here also
takes other sizes (at least 16).

Parameter names follow open_lth (``layers.<i>.conv.weight``, ``layers.<i>.bn.weight``,
``fc.weight``; ``<i>`` counts the pools too), so its checkpoints load. Counts for 3x32x32
and 10 classes: VGG-11 9,231,114 / 9,225,610 without BN; VGG-13 9,416,010 / 9,410,122;
VGG-16 14,728,266 / 14,719,818; VGG-19 20,040,522 / 20,029,514 (Frankle & Carbin's
VGG-19: 20.0M).

Init ``"paper"`` is ``"open_lth"`` (open_lth's defaults ``model_init='kaiming_normal'``,
``batchnorm_init='uniform'``): weights ``N(0, 2 / fan_in)``, biases PyTorch's default,
BatchNorm weight ``U[0, 1)``, bias 0. Prunable: every conv weight; not the output layer
``fc.weight`` (open_lth's ``pruning_layers_to_ignore='fc.weight'``; Frankle & Carbin's fc
rate 0%), nor biases or BatchNorm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_bool, check_choice
from ._base import BaseModel, check_shape, seeded

__all__ = ["PLANS", "VGG", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]

PLANS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512),
}
"""Conv widths per depth (``"M"``: a 2x2 max-pool), open_lth's plans."""


class _ConvModule(nn.Module):
    """3x3 conv (padding 1, bias), optional BatchNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(out_channels) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x)


class VGG(BaseModel):
    """CIFAR VGG: the conv stack of VGG-``depth``, global average pool, one linear layer.

    See the module docstring (:mod:`ltfunc.models.vgg`) for the architecture, the parameter
    counts, the init and what is prunable.

    Args:
        depth: 11, 13, 16 or 19.
        batch_norm: BatchNorm after every conv.
        init: A scheme of :data:`ltfunc.models.INITS`; ``"paper"`` (default) is ``"open_lth"``.
        num_classes: Output size (100 for CIFAR-100).
        in_channels: Image channels.
        image_size: Input height/width (at least 16).

    Raises:
        ValueError: Unknown ``depth`` or ``init``; a size out of range.
        TypeError: ``batch_norm`` not a bool; a size that is not an int.

    Example:
        >>> import ltfunc
        >>> m = ltfunc.models.VGG(11, batch_norm=True)
        >>> sorted(k for k, _ in m.named_parameters() if k.startswith("layers.0."))
        ['layers.0.bn.bias', 'layers.0.bn.weight', 'layers.0.conv.bias', 'layers.0.conv.weight']
    """

    paper_init: ClassVar[str] = "open_lth"
    unpruned: ClassVar[tuple[str, ...]] = ("fc.weight",)

    def __init__(
        self,
        depth: int,
        batch_norm: bool = True,
        init: str = "paper",
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
    ) -> None:
        super().__init__()
        check_choice("VGG", "depth", depth, tuple(PLANS))  # type: ignore[arg-type]
        check_bool("VGG", "batch_norm", batch_norm)
        self._set_init(init)
        num_classes, in_channels, image_size = check_shape("VGG", num_classes, in_channels, image_size, 16)
        self.depth, self.batch_norm = depth, batch_norm
        layers: list[nn.Module] = []
        channels = in_channels
        for spec in PLANS[depth]:
            if spec == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                assert isinstance(spec, int)
                layers.append(_ConvModule(channels, spec, batch_norm))
                channels = spec
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


_VARIANT_DOC = """Build CIFAR VGG-{depth} {bn} (:class:`VGG` with ``depth={depth}``).

    Args:
        init: Init scheme of :data:`ltfunc.models.INITS` (``"paper"``: ``"open_lth"``).
        seed: If given, the weights are drawn from this seed (global RNG state untouched);
            ``None`` draws from the global RNG.
        num_classes: Output size (keyword; 100 for CIFAR-100).
        in_channels: Image channels (keyword).
        image_size: Input height/width (keyword; at least 16).

    Returns:
        A new ``VGG`` on the CPU: {params:,} parameters for 3x32x32 inputs and 10 classes.

    Raises:
        ValueError: Unknown ``init``; a size out of range.
        TypeError: ``seed`` neither an int nor ``None``; a wrongly typed argument.

    Example:
        >>> import ltfunc
        >>> sum(p.numel() for p in ltfunc.models.{name}().parameters())
        {params}
    """

_COUNTS = {
    (11, True): 9_231_114,
    (11, False): 9_225_610,
    (13, True): 9_416_010,
    (13, False): 9_410_122,
    (16, True): 14_728_266,
    (16, False): 14_719_818,
    (19, True): 20_040_522,
    (19, False): 20_029_514,
}


def _variant(depth: int, batch_norm: bool) -> Callable[..., VGG]:
    name = f"vgg{depth}{'_bn' if batch_norm else ''}"

    def build(init: str = "paper", seed: int | None = None, **shape: Any) -> VGG:
        return seeded(name, lambda: VGG(depth, batch_norm, init, **shape), seed)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = _VARIANT_DOC.format(
        depth=depth,
        bn="with BatchNorm" if batch_norm else "without BatchNorm",
        name=name,
        params=_COUNTS[depth, batch_norm],
    )
    return build


vgg11, vgg11_bn = _variant(11, False), _variant(11, True)
vgg13, vgg13_bn = _variant(13, False), _variant(13, True)
vgg16, vgg16_bn = _variant(16, False), _variant(16, True)
vgg19, vgg19_bn = _variant(19, False), _variant(19, True)
