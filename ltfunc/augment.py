"""Batched, seeded data augmentation on the device: random crop with zero padding and horizontal flip.

The standard CIFAR recipe (torchvision ``RandomCrop(32, padding=4)`` then
``RandomHorizontalFlip()``) applied to a whole batch with tensor ops: one zero pad and one
gather per batch, on the batch's device, no PIL, no ``DataLoader``. The random choices of a
batch are drawn on the CPU from a generator seeded with :func:`batch_seed` ``(stream seed,
batch index)``, so batch ``i`` of a stream is augmented the same way on every device, in
every process and however many batches were drawn (or skipped) before it.

Padding is zero *in the stored values*: on the ``uint8`` pixels of an
:class:`ltfunc.data.PixelSplit` that is black, exactly what torchvision's recipe does (it
pads the PIL image with 0 before ``ToTensor`` / ``Normalize``), and
:func:`ltfunc.data.batches` normalizes after augmenting. On an already normalized float
split, zero is the dataset's mean colour instead.

Example:
    >>> import torch
    >>> from ltfunc.augment import crop_flip
    >>> x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    >>> out = crop_flip(x, seed=0, padding=2)
    >>> out.shape, torch.equal(out, crop_flip(x, seed=0, padding=2))
    (torch.Size([2, 3, 8, 8]), True)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_int, check_seed

__all__ = [
    "AUGMENTATIONS",
    "PADDING",
    "CropFlip",
    "apply_crop_flip",
    "batch_seed",
    "crop_flip",
    "draw_crop_flip",
]

AUGMENTATIONS: tuple[str, ...] = ("crop_flip",)
"""Recipes accepted by ``ltfunc.data.batches(..., augment=)``; ``augment=True`` means ``"crop_flip"``."""

PADDING = 4
"""Zero padding of the random crop on each side (torchvision ``RandomCrop(32, padding=4)``)."""

_MASK64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def batch_seed(seed: int, index: int) -> int:
    """The seed of batch ``index``'s augmentation in a stream seeded ``seed``.

    A splitmix64 hash of the pair, so neighbouring seeds and indices give unrelated
    generators; it depends on nothing else (not on earlier batches).

    Args:
        seed: The stream's seed (any int; taken modulo 2**64).
        index: The batch's position in the stream, ``>= 0``.

    Returns:
        An int in ``[0, 2**63)`` for ``torch.Generator.manual_seed``.

    Raises:
        TypeError: ``seed`` or ``index`` not an int.
        ValueError: ``index < 0``.

    Example:
        >>> from ltfunc.augment import batch_seed
        >>> batch_seed(0, 5) == batch_seed(0, 5), batch_seed(0, 5) != batch_seed(0, 6)
        (True, True)
    """
    check_seed("batch_seed", seed)
    check_int("batch_seed", "index", index, 0)
    return _batch_seed(seed, index)


def _batch_seed(seed: int, index: int) -> int:
    return _splitmix64((_splitmix64(seed & _MASK64) + index) & _MASK64) >> 1


class CropFlip(NamedTuple):
    """The random choices of one batch: per example the crop window and whether it is flipped."""

    top: Tensor
    """``int64 (B,)``: first row of the window in the padded image, in ``[0, 2 * padding]``."""
    left: Tensor
    """``int64 (B,)``: first column of the window in the padded image, in ``[0, 2 * padding]``."""
    flip: Tensor
    """``bool (B,)``: mirror the window left-right."""


def draw_crop_flip(n: int, *, seed: int, padding: int = PADDING) -> CropFlip:
    """Draw the crop offsets and flips of ``n`` examples from a CPU generator seeded ``seed``.

    Offsets are uniform in ``[0, 2 * padding]`` (every window of the padded image), flips
    have probability 1/2, all independent; drawn with one ``torch.randint`` on the CPU, so
    the result is the same on every machine.

    Args:
        n: Number of examples, ``>= 0``.
        seed: Seed of the draw (e.g. :func:`batch_seed` of a stream and a batch index).
        padding: Zero padding on each side, ``>= 0``.

    Returns:
        :class:`CropFlip` of CPU tensors.

    Raises:
        TypeError: Arguments not ints.
        ValueError: ``n < 0`` or ``padding < 0``.

    Example:
        >>> from ltfunc.augment import draw_crop_flip
        >>> p = draw_crop_flip(1000, seed=0)
        >>> int(p.top.min()), int(p.top.max()), 0.45 < p.flip.float().mean().item() < 0.55
        (0, 8, True)
    """
    func = "draw_crop_flip"
    check_int(func, "n", n, 0)
    check_seed(func, seed)
    check_int(func, "padding", padding, 0)
    gen = torch.Generator().manual_seed(seed & (_MASK64 >> 1))
    return _draw(n, gen, padding)


def _draw(n: int, gen: torch.Generator, padding: int) -> CropFlip:
    k = 2 * padding + 1
    v = torch.randint(0, 2 * k * k, (n,), generator=gen)  # one draw: (flip, top, left) mixed radix
    return CropFlip(top=v // k % k, left=v % k, flip=v >= k * k)


def apply_crop_flip(x: Tensor, params: CropFlip, *, padding: int = PADDING) -> Tensor:
    """Crop each image of ``x`` from its zero-padded copy and mirror it where asked.

    ``out[b, :, i, j] = P[b, :, top[b] + i, left[b] + j']`` with ``P`` the input padded
    with ``padding`` zeros on each side and ``j' = W - 1 - j`` where ``flip[b]`` else
    ``j``: one gather on ``x``'s device, any dtype, output shape and dtype those of ``x``.

    Args:
        x: Images ``(B, C, H, W)``; not modified.
        params: :class:`CropFlip` with ``B`` entries (on any device).
        padding: Zero padding on each side (the offsets must lie in ``[0, 2 * padding]``).

    Returns:
        The augmented batch, a new tensor.

    Raises:
        TypeError: ``x`` not a tensor or ``params`` not a :class:`CropFlip`.
        ValueError: ``x`` not 4-D, ``params`` of another length, ``padding < 0``, offsets
            outside ``[0, 2 * padding]``.

    Example:
        >>> import torch
        >>> from ltfunc.augment import CropFlip, apply_crop_flip
        >>> x = torch.arange(4.0).reshape(1, 1, 2, 2)
        >>> p = CropFlip(torch.tensor([1]), torch.tensor([1]), torch.tensor([True]))
        >>> apply_crop_flip(x, p, padding=1)  # the centre window, mirrored
        tensor([[[[1., 0.],
                  [3., 2.]]]])
    """
    func = "apply_crop_flip"
    _check_images(func, x)
    if not isinstance(params, CropFlip):
        raise TypeError(f"{func}: params must be a CropFlip, got {type(params).__name__}")
    if not all(t.shape == (x.shape[0],) for t in params):
        raise ValueError(
            f"{func}: params must hold {x.shape[0]} entries (one per image), "
            f"got shapes {[tuple(t.shape) for t in params]}"
        )
    check_int(func, "padding", padding, 0)
    for name in ("top", "left"):
        t = getattr(params, name)
        if t.numel() and not (0 <= int(t.min()) and int(t.max()) <= 2 * padding):
            raise ValueError(
                f"{func}: params.{name} must lie in [0, {2 * padding}] (2 * padding), "
                f"got values in [{int(t.min())}, {int(t.max())}]"
            )
    return _apply(x, params, padding)


def _apply(x: Tensor, params: CropFlip, padding: int) -> Tensor:
    b, c, h, w = x.shape
    hp, wp = h + 2 * padding, w + 2 * padding
    dev = x.device
    if any(t.device != dev for t in params):  # one small host-to-device copy for the three
        params = CropFlip(*torch.stack([t.to("cpu", torch.int64) for t in params]).to(dev).unbind())
    top, left, flip = params.top, params.left, params.flip.to(torch.bool)
    rows = top[:, None] + torch.arange(h, device=dev)  # (B, H)
    ar = torch.arange(w, device=dev)
    cols = left[:, None] + torch.where(flip[:, None], (w - 1) - ar, ar)  # (B, W), mirrored where flipped
    # one gather over the flattened padded image, the same window for every channel
    src = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    return padded.reshape(b, c, hp * wp).gather(2, src).view(b, c, h, w)


def crop_flip(x: Tensor, *, seed: int, padding: int = PADDING) -> Tensor:
    """Random crop with zero padding, then random horizontal flip, of every image of a batch.

    :func:`draw_crop_flip` with ``seed`` then :func:`apply_crop_flip`; the same seed gives
    the same output on every device.

    Args:
        x: Images ``(B, C, H, W)`` of any dtype; not modified.
        seed: Seed of the random choices.
        padding: Zero padding on each side. Default: :data:`PADDING` (4).

    Returns:
        The augmented batch, same shape, dtype and device as ``x``.

    Raises:
        TypeError: ``x`` not a tensor, ``seed`` / ``padding`` not ints.
        ValueError: ``x`` not 4-D, ``padding < 0``.

    Example:
        >>> import torch
        >>> from ltfunc.augment import crop_flip
        >>> x = torch.ones(3, 1, 4, 4)
        >>> crop_flip(x, seed=1, padding=0).equal(x), crop_flip(x, seed=1).sum() <= x.sum()
        (True, tensor(True))
    """
    func = "crop_flip"
    _check_images(func, x)
    check_seed(func, seed)
    check_int(func, "padding", padding, 0)
    gen = torch.Generator().manual_seed(seed & (_MASK64 >> 1))
    return _apply(x, _draw(x.shape[0], gen, padding), padding)


def _check_images(func: str, x: object) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{func}: x must be a tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{func}: x must be a batch of images (B, C, H, W), got shape {tuple(x.shape)}")


class _StreamAugmenter:
    """Augments batch ``i`` of a stream from ``batch_seed(seed, i)`` alone (used by ``data.batches``)."""

    def __init__(self, recipe: str, seed: int, padding: int = PADDING) -> None:
        if recipe not in AUGMENTATIONS:  # pragma: no cover - batches validates the name
            raise ValueError(f"unknown augmentation {recipe!r}")
        self.seed, self.padding = seed, padding
        self._gen = torch.Generator()

    def __call__(self, x: Tensor, index: int) -> Tensor:
        self._gen.manual_seed(_batch_seed(self.seed, index))
        return _apply(x, _draw(x.shape[0], self._gen, self.padding), self.padding)
