"""Residual networks for CIFAR: He et al.'s ResNet-20/32/56 and the ResNet-18/34 of the LTH repos.

Both families use the same basic block: 3x3 conv, BatchNorm, ReLU, 3x3 conv, BatchNorm, plus
the shortcut, then ReLU; convs have no biases. Where a block changes the width or the
resolution, the shortcut is a 1x1 conv (stride 2 where the block downsamples) with
BatchNorm (He et al.'s option B); elsewhere it is the identity.

- :class:`CifarResNet` (``resnet20``, ``resnet32``, ``resnet56``): He et al. (2016, §4.2),
  as open_lth's ``cifar_resnet_N``: a 3x3 16-filter conv with BatchNorm and ReLU, three
  stages of ``n = (depth - 2) / 6`` blocks of widths 16, 32, 64 (the first block of the
  2nd and 3rd stages downsamples), global average pool, linear 64 -> ``num_classes``. The
  projection shortcuts are open_lth's choice (the paper's CIFAR nets use option A,
  zero-padded identities, which have no parameters). Parameters (10 classes): ResNet-20
  272,474; ResNet-32 466,906; ResNet-56 855,770. Of ResNet-20's, 270,256 are conv weights
  (Frankle & Carbin's "Resnet-18", 274K / 270K in conv layers). Names follow open_lth
  (``conv``, ``bn``, ``blocks.<i>.conv1`` ..., ``blocks.<i>.shortcut.0``, ``fc``).
- :class:`ResNet` (``resnet18``, ``resnet34``): the ImageNet ResNet's basic-block layout
  (64-128-256-512, 2-2-2-2 or 3-4-6-3 blocks) adapted to CIFAR as in kuangliu's
  pytorch-cifar, which the hook-based LTH repositories ship: the stem is a 3x3 stride-1 conv
  with BatchNorm and ReLU and no max-pool, so a 32x32 input reaches the last stage at 4x4;
  global average pool; linear 512 -> ``num_classes``. Parameters (10 classes): ResNet-18
  11,173,962; ResNet-34 21,282,122. Names follow that code (``conv1``, ``bn1``,
  ``layer<k>.<i>.conv1`` ..., ``linear``).

Init ``"paper"``: ``"open_lth"`` for :class:`CifarResNet` (open_lth's defaults: weights
``N(0, 2 / fan_in)``, the fc bias PyTorch's default, BatchNorm weight ``U[0, 1)``, bias 0);
``"kaiming_normal"`` for :class:`ResNet` (He et al.'s init: weights ``N(0, 2 / fan_in)``,
BatchNorm weight 1, bias 0, fc bias 0). Prunable: every conv weight, the 1x1 shortcut
convs included (as in open_lth); not the output layer (Frankle & Carbin: fc rate 0%), nor
biases or BatchNorm. open_lth's default ResNet-20 hyperparameters do prune ``fc.weight``;
pass ``select=`` to :func:`ltfunc.masks.ones` to include it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_int
from ._base import BaseModel, check_shape, seeded

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "ResNet",
    "cifar_resnet",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet34",
    "resnet56",
]


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU (no conv biases).

    Args:
        in_channels: Input width.
        out_channels: Output width.
        stride: Stride of the first conv (2 to downsample).

    Example:
        >>> import torch, ltfunc
        >>> b = ltfunc.models.BasicBlock(16, 32, stride=2)
        >>> b(torch.zeros(1, 16, 8, 8)).shape, len(b.shortcut)
        (torch.Size([1, 32, 4, 4]), 2)
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(BaseModel):
    """He et al.'s CIFAR ResNet-``depth`` (``depth = 6n + 2``), open_lth's variant.

    See :mod:`ltfunc.models.resnet` for the architecture, counts, init and prunable set.

    Args:
        depth: ``6n + 2`` for ``n >= 1`` (20, 32, 44, 56, 110, ...).
        init: A scheme of :data:`ltfunc.models.INITS`; ``"paper"`` (default) is ``"open_lth"``.
        width: Width of the first stage (the others: 2x, 4x); 16 in the paper.
        num_classes: Output size (100 for CIFAR-100).
        in_channels: Image channels.
        image_size: Input height/width (at least 4).

    Raises:
        ValueError: A depth that is not ``6n + 2``; unknown ``init``; a size out of range.
        TypeError: A size that is not an int.

    Example:
        >>> import ltfunc
        >>> m = ltfunc.models.CifarResNet(20)
        >>> len(m.blocks), m.fc.in_features
        (9, 64)
    """

    paper_init: ClassVar[str] = "open_lth"
    unpruned: ClassVar[tuple[str, ...]] = ("fc.weight",)

    def __init__(
        self,
        depth: int,
        init: str = "paper",
        width: int = 16,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
    ) -> None:
        super().__init__()
        check_int("CifarResNet", "depth", depth, 8)
        if (depth - 2) % 6:
            raise ValueError(f"CifarResNet: depth must be 6n + 2 (20, 32, 44, 56, 110, ...), got {depth!r}")
        check_int("CifarResNet", "width", width, 1)
        self._set_init(init)
        num_classes, in_channels, image_size = check_shape(
            "CifarResNet", num_classes, in_channels, image_size, 4
        )
        self.depth = depth
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks: list[nn.Module] = []
        channels = width
        for stage, w in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                blocks.append(BasicBlock(channels, w, stride=2 if stage and i == 0 else 1))
                channels = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, num_classes)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.conv(x)))
        out = self.blocks(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


STAGES: dict[int, tuple[int, int, int, int]] = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
"""Blocks per stage of :class:`ResNet` by depth."""


class ResNet(BaseModel):
    """ResNet-18/34 with basic blocks, for CIFAR (3x3 stride-1 stem, no max-pool).

    See :mod:`ltfunc.models.resnet` for the architecture, counts, init and prunable set.

    Args:
        depth: 18 or 34.
        init: A scheme of :data:`ltfunc.models.INITS`; ``"paper"`` (default) is
            ``"kaiming_normal"``.
        num_classes: Output size (100 for CIFAR-100).
        in_channels: Image channels.
        image_size: Input height/width (at least 8).

    Raises:
        ValueError: Unknown ``depth`` or ``init``; a size out of range.
        TypeError: A size that is not an int.

    Example:
        >>> import ltfunc
        >>> [len(getattr(ltfunc.models.ResNet(34), f"layer{k}")) for k in (1, 2, 3, 4)]
        [3, 4, 6, 3]
    """

    paper_init: ClassVar[str] = "kaiming_normal"
    unpruned: ClassVar[tuple[str, ...]] = ("linear.weight",)

    def __init__(
        self,
        depth: int,
        init: str = "paper",
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
    ) -> None:
        super().__init__()
        check_choice("ResNet", "depth", depth, tuple(STAGES))  # type: ignore[arg-type]
        self._set_init(init)
        num_classes, in_channels, image_size = check_shape("ResNet", num_classes, in_channels, image_size, 8)
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        channels = 64
        for k, (n, w) in enumerate(zip(STAGES[depth], (64, 128, 256, 512), strict=True), 1):
            stage = []
            for i in range(n):
                stage.append(BasicBlock(channels, w, stride=2 if k > 1 and i == 0 else 1))
                channels = w
            setattr(self, f"layer{k}", nn.Sequential(*stage))
        self.linear = nn.Linear(channels, num_classes)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for k in (1, 2, 3, 4):
            out = getattr(self, f"layer{k}")(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def cifar_resnet(
    depth: int,
    init: str = "paper",
    seed: int | None = None,
    *,
    width: int = 16,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
) -> CifarResNet:
    """Build He et al.'s CIFAR ResNet of any depth ``6n + 2`` (:class:`CifarResNet`).

    Args:
        depth: ``6n + 2`` (20, 32, 44, 56, 110, ...).
        init: Init scheme of :data:`ltfunc.models.INITS` (``"paper"``: ``"open_lth"``).
        seed: If given, the weights are drawn from this seed (global RNG state untouched);
            ``None`` draws from the global RNG.
        width: Width of the first stage (16 in the paper; open_lth's ``cifar_resnet_N_W``).
        num_classes: Output size (100 for CIFAR-100).
        in_channels: Image channels.
        image_size: Input height/width (at least 4).

    Returns:
        A new ``CifarResNet`` on the CPU.

    Raises:
        ValueError: A depth that is not ``6n + 2``; unknown ``init``; a size out of range.
        TypeError: ``seed`` neither an int nor ``None``; a wrongly typed argument.

    Example:
        >>> import ltfunc
        >>> sum(p.numel() for p in ltfunc.models.cifar_resnet(44).parameters())
        661338
    """
    return seeded(
        "cifar_resnet",
        lambda: CifarResNet(depth, init, width, num_classes, in_channels, image_size),
        seed,
    )


_VARIANT_DOC = """Build {title} (:class:`{cls}` with ``depth={depth}``).

    Args:
        init: Init scheme of :data:`ltfunc.models.INITS` (``"paper"``: ``"{paper}"``).
        seed: If given, the weights are drawn from this seed (global RNG state untouched);
            ``None`` draws from the global RNG.
        num_classes: Output size (keyword; 100 for CIFAR-100).
        in_channels: Image channels (keyword).
        image_size: Input height/width (keyword).

    Returns:
        A new ``{cls}`` on the CPU: {params:,} parameters for 10 classes.

    Raises:
        ValueError: Unknown ``init``; a size out of range.
        TypeError: ``seed`` neither an int nor ``None``; a wrongly typed argument.

    Example:
        >>> import ltfunc
        >>> sum(p.numel() for p in ltfunc.models.{name}().parameters())
        {params}
    """


def _variant(cls: type[CifarResNet] | type[ResNet], depth: int, params: int) -> Callable[..., Any]:
    name = f"resnet{depth}"

    def build(init: str = "paper", seed: int | None = None, **shape: Any) -> Any:
        return seeded(name, lambda: cls(depth, init, **shape), seed)

    cifar = cls is CifarResNet
    build.__name__ = build.__qualname__ = name
    build.__doc__ = _VARIANT_DOC.format(
        title=("He et al.'s" if cifar else "the LTH repos'") + f" CIFAR ResNet-{depth}",
        cls=cls.__name__,
        depth=depth,
        paper=cls.paper_init,
        params=params,
        name=name,
    )
    return build


resnet20: Callable[..., CifarResNet] = _variant(CifarResNet, 20, 272_474)
resnet32: Callable[..., CifarResNet] = _variant(CifarResNet, 32, 466_906)
resnet56: Callable[..., CifarResNet] = _variant(CifarResNet, 56, 855_770)
resnet18: Callable[..., ResNet] = _variant(ResNet, 18, 11_173_962)
resnet34: Callable[..., ResNet] = _variant(ResNet, 34, 21_282_122)
