"""The small networks: LeNet-300-100, LeNet-5 and Frankle & Carbin's Conv-2 / Conv-4 / Conv-6.

All draw with Glorot (Xavier) normal weights and zero biases by default (``init="paper"``),
as Frankle & Carbin (2019) do, and all their Linear/Conv weights are prunable (the output
layer too: the paper prunes it at half the rate of the other fc layers).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ._base import BaseModel, check_shape, seeded

__all__ = ["Conv2", "Conv4", "Conv6", "LeNet5", "LeNet300", "conv2", "conv4", "conv6", "lenet5", "lenet300"]


class LeNet300(BaseModel):
    """LeNet-300-100: 784-300-100-10 fully connected with ReLU (Frankle & Carbin, 2019).

    266,610 parameters for 1x28x28 inputs (266,200 prunable weights).

    Args:
        init: A scheme of :data:`ltfunc.models.INITS`; ``"paper"`` (default) is
            ``"glorot_normal"``, the paper's. Biases start at 0 except for ``"torch"`` and
            ``"open_lth"``.
        num_classes: Output size.
        in_channels: Image channels; the input is flattened to ``in_channels * image_size**2``.
        image_size: Input height/width.

    Raises:
        ValueError: Unknown ``init``; a size below 1.
        TypeError: A size that is not an int.

    Example:
        >>> import ltfunc
        >>> ltfunc.models.LeNet300().fc1.in_features
        784
    """

    paper_init: ClassVar[str] = "glorot_normal"

    def __init__(
        self, init: str = "paper", num_classes: int = 10, in_channels: int = 1, image_size: int = 28
    ) -> None:
        super().__init__()
        self._set_init(init)
        num_classes, in_channels, image_size = check_shape(
            "LeNet300", num_classes, in_channels, image_size, 1
        )
        self.fc1 = nn.Linear(in_channels * image_size * image_size, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(BaseModel):
    """LeNet-5 (LeCun et al., 1998) in its common modern form.

    C1: 6 5x5 convs, 2x2 max-pool, C3: 16 5x5 convs (full connectivity, not the paper's
    partial table), 2x2 max-pool, C5: fully connected 400-120, F6: 120-84, output: 84-10, ReLU
    throughout (the paper: scaled tanh, trainable subsampling, RBF output). The layers keep
    the paper's names ``c1``, ``c3``, ``c5``, ``f6``, ``output``. C1 pads by
    ``max(0, (32 - image_size) // 2)``, so 28x28 (MNIST; padding 2) and 32x32 (the paper's
    input, CIFAR; no padding) both reach 16x5x5 before C5: 61,706 parameters for one input
    channel, 62,006 for three.

    Args:
        init: A scheme of :data:`ltfunc.models.INITS`; ``"paper"`` (default) is
            ``"glorot_normal"``, like the other small networks here.
        num_classes: Output size.
        in_channels: Image channels.
        image_size: Input height/width (at least 16).

    Raises:
        ValueError: Unknown ``init``; a size out of range.
        TypeError: A size that is not an int.

    Example:
        >>> import ltfunc
        >>> sum(p.numel() for p in ltfunc.models.LeNet5().parameters())
        61706
    """

    paper_init: ClassVar[str] = "glorot_normal"

    def __init__(
        self, init: str = "paper", num_classes: int = 10, in_channels: int = 1, image_size: int = 28
    ) -> None:
        super().__init__()
        self._set_init(init)
        num_classes, in_channels, image_size = check_shape("LeNet5", num_classes, in_channels, image_size, 16)
        pad = max(0, (32 - image_size) // 2)
        side = ((image_size + 2 * pad - 4) // 2 - 4) // 2
        self.c1 = nn.Conv2d(in_channels, 6, 5, padding=pad)
        self.c3 = nn.Conv2d(6, 16, 5)
        self.c5 = nn.Linear(16 * side * side, 120)
        self.f6 = nn.Linear(120, 84)
        self.output = nn.Linear(84, num_classes)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(torch.relu(self.c1(x)), 2)
        x = F.max_pool2d(torch.relu(self.c3(x)), 2)
        x = x.flatten(1)
        x = torch.relu(self.c5(x))
        x = torch.relu(self.f6(x))
        return self.output(x)


class _ConvNet(BaseModel):
    """Frankle & Carbin's Conv-N: pairs of 3x3 convs (padding 1) each followed by a 2x2
    max-pool, then fully connected 256-256-``num_classes``, ReLU throughout. Layers are named
    ``conv1 .. convN``, ``fc1 .. fc3``."""

    paper_init: ClassVar[str] = "glorot_normal"
    widths: ClassVar[tuple[int, ...]] = ()

    def __init__(self, init: str, in_channels: int, image_size: int, num_classes: int) -> None:
        super().__init__()
        name = type(self).__name__
        self._set_init(init)
        pools = len(self.widths) // 2
        num_classes, in_channels, image_size = check_shape(
            name, num_classes, in_channels, image_size, 2**pools
        )
        channels = in_channels
        for i, width in enumerate(self.widths, 1):
            setattr(self, f"conv{i}", nn.Conv2d(channels, width, 3, padding=1))
            channels = width
        side = image_size // 2**pools
        self.fc1 = nn.Linear(channels * side * side, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, num_classes)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, len(self.widths) + 1):
            x = torch.relu(getattr(self, f"conv{i}")(x))
            if i % 2 == 0:
                x = F.max_pool2d(x, 2)
        x = x.flatten(1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class Conv2(_ConvNet):
    """Conv-2: two 64-filter 3x3 convs, 2x2 max-pool, FC 256-256-10 (Frankle & Carbin).

    Padding 1 keeps the image size until the pool: for 1x28x28 inputs (the default) fc1
    sees 64*14*14 features (3,317,450 parameters); for CIFAR's 3x32x32, 64*16*16
    (4,301,642 parameters; the paper's 4.3M).

    Args:
        init: A scheme of :data:`ltfunc.models.INITS`; ``"paper"`` (default) is
            ``"glorot_normal"``, the paper's. Biases start at 0 except for ``"torch"`` and
            ``"open_lth"``.
        in_channels: Image channels (1 for MNIST / Fashion-MNIST).
        image_size: Input height/width (at least 2).
        num_classes: Output size.

    Raises:
        ValueError: Unknown ``init``; a size out of range.
        TypeError: A size that is not an int.

    Example:
        >>> import ltfunc
        >>> ltfunc.models.Conv2(in_channels=3, image_size=32).fc1.in_features
        16384
    """

    widths: ClassVar[tuple[int, ...]] = (64, 64)

    def __init__(
        self, init: str = "paper", in_channels: int = 1, image_size: int = 28, num_classes: int = 10
    ) -> None:
        super().__init__(init, in_channels, image_size, num_classes)


class Conv4(_ConvNet):
    """Conv-4: 64, 64, pool, 128, 128, pool, FC 256-256-10 (Frankle & Carbin's CIFAR-10 net).

    3x3 convs with padding 1, 2x2 max-pools. 2,425,930 parameters for 3x32x32 inputs (the
    default; the paper's 2.4M, 260K of them in the convolutions).

    Args:
        init: As for :class:`Conv2`.
        in_channels: Image channels.
        image_size: Input height/width (at least 4).
        num_classes: Output size.

    Raises:
        ValueError: Unknown ``init``; a size out of range.
        TypeError: A size that is not an int.

    Example:
        >>> import ltfunc
        >>> ltfunc.models.Conv4().fc1.in_features
        8192
    """

    widths: ClassVar[tuple[int, ...]] = (64, 64, 128, 128)

    def __init__(
        self, init: str = "paper", in_channels: int = 3, image_size: int = 32, num_classes: int = 10
    ) -> None:
        super().__init__(init, in_channels, image_size, num_classes)


class Conv6(_ConvNet):
    """Conv-6: 64, 64, pool, 128, 128, pool, 256, 256, pool, FC 256-256-10 (Frankle & Carbin).

    3x3 convs with padding 1, 2x2 max-pools. 2,262,602 parameters for 3x32x32 inputs (the
    default): 1,145,408 in the convolutions (the paper's 1.1M) and 1,117,194 in the fc layers
    (fc1 sees 256*4*4 features). The paper's table gives 1.7M in all, which these layer sizes
    do not add up to.

    Args:
        init: As for :class:`Conv2`.
        in_channels: Image channels.
        image_size: Input height/width (at least 8).
        num_classes: Output size.

    Raises:
        ValueError: Unknown ``init``; a size out of range.
        TypeError: A size that is not an int.

    Example:
        >>> import ltfunc
        >>> ltfunc.models.Conv6().fc1.in_features
        4096
    """

    widths: ClassVar[tuple[int, ...]] = (64, 64, 128, 128, 256, 256)

    def __init__(
        self, init: str = "paper", in_channels: int = 3, image_size: int = 32, num_classes: int = 10
    ) -> None:
        super().__init__(init, in_channels, image_size, num_classes)


# Builders ----------------------------------------------------------------------------------
_BUILDER_DOC = """Build {title}.

    Args:
        init: Init scheme of :data:`ltfunc.models.INITS` (``"paper"``: Glorot normal).
        seed: If given, the weights are drawn from this seed (global RNG state untouched);
            ``None`` draws from the global RNG.
        num_classes: Output size.
        in_channels: Image channels (default {channels}).
        image_size: Input height/width (default {size}).

    Returns:
        A new ``{cls}`` on the CPU.

    Raises:
        ValueError: Unknown ``init``; a size out of range.
        TypeError: ``seed`` neither an int nor ``None``; a size that is not an int.

    Example:
        >>> import ltfunc
        >>> {example}
        {result}
    """


def lenet300(
    init: str = "paper",
    seed: int | None = None,
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
) -> LeNet300:
    return seeded(
        "lenet300",
        lambda: LeNet300(init, num_classes=num_classes, in_channels=in_channels, image_size=image_size),
        seed,
    )


def lenet5(
    init: str = "paper",
    seed: int | None = None,
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
) -> LeNet5:
    return seeded(
        "lenet5",
        lambda: LeNet5(init, num_classes=num_classes, in_channels=in_channels, image_size=image_size),
        seed,
    )


def conv2(
    init: str = "paper",
    seed: int | None = None,
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
) -> Conv2:
    return seeded(
        "conv2",
        lambda: Conv2(init, in_channels=in_channels, image_size=image_size, num_classes=num_classes),
        seed,
    )


def conv4(
    init: str = "paper",
    seed: int | None = None,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
) -> Conv4:
    return seeded(
        "conv4",
        lambda: Conv4(init, in_channels=in_channels, image_size=image_size, num_classes=num_classes),
        seed,
    )


def conv6(
    init: str = "paper",
    seed: int | None = None,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
) -> Conv6:
    return seeded(
        "conv6",
        lambda: Conv6(init, in_channels=in_channels, image_size=image_size, num_classes=num_classes),
        seed,
    )


lenet300.__doc__ = _BUILDER_DOC.format(
    title="LeNet-300-100 (:class:`LeNet300`)",
    cls="LeNet300",
    channels=1,
    size=28,
    example="sum(p.numel() for p in ltfunc.models.lenet300().parameters())",
    result="266610",
)
lenet5.__doc__ = _BUILDER_DOC.format(
    title="LeNet-5 (:class:`LeNet5`)",
    cls="LeNet5",
    channels=1,
    size=28,
    example="ltfunc.models.lenet5(in_channels=3, image_size=32).c1.padding",
    result="(0, 0)",
)
conv2.__doc__ = _BUILDER_DOC.format(
    title="Conv-2 (:class:`Conv2`), by default for 1x28x28 inputs",
    cls="Conv2",
    channels=1,
    size=28,
    example="ltfunc.models.conv2().conv1.weight.shape",
    result="torch.Size([64, 1, 3, 3])",
)
conv4.__doc__ = _BUILDER_DOC.format(
    title="Conv-4 (:class:`Conv4`), by default for 3x32x32 inputs",
    cls="Conv4",
    channels=3,
    size=32,
    example="sum(p.numel() for p in ltfunc.models.conv4().parameters())",
    result="2425930",
)
conv6.__doc__ = _BUILDER_DOC.format(
    title="Conv-6 (:class:`Conv6`), by default for 3x32x32 inputs",
    cls="Conv6",
    channels=3,
    size=32,
    example="sum(p.numel() for p in ltfunc.models.conv6().parameters())",
    result="2262602",
)
