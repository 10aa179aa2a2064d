"""A ``DataLoader`` over a standard torchvision dataset, pre-loaded once into tensors.

The seed's scripts feed their training loops from ``DataLoader(MNIST(transform=ToTensor()))``:
every batch of 60 converts 60 PIL images one by one, about 9 ms per batch on a CPU core, several
times the cost of a compiled LeNet-300-100 step. :func:`preload` recognises such a loader and
returns a :class:`PreloadedLoader` that yields the same batches (same batch size, the same
shuffled order drawn from the same generator, ``drop_last``, the same transformed values) by
indexing tensors held in memory: one gather and one conversion per batch::

    loader = ltfunc.preload(loader)       # the one line that makes a user's own loop fast

Recognised: ``torchvision.datasets.MNIST`` and its subclasses (Fashion-MNIST, KMNIST, EMNIST,
QMNIST), ``CIFAR10``/``CIFAR100``, ``torch.utils.data.TensorDataset`` and ``Subset`` of any of
them; transforms ``ToTensor`` and ``Normalize`` (in a ``Compose``, in that order), no
``target_transform``; the default ``collate_fn``; a ``SequentialSampler`` or a
``RandomSampler`` (without replacement) inside the default ``BatchSampler``. Anything else is
refused with the reason (:func:`preload`) or, inside :class:`ltfunc.LotteryTicket`, iterated as
given after one warning.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ._checks import check_int

__all__ = ["PreloadedLoader", "preload"]

Batch = tuple[Tensor, Tensor]


class NotPreloadable(ValueError):
    """Raised by :func:`preload` for a loader it cannot reproduce in memory (the reason is the message)."""


class PreloadedLoader:
    """A re-iterable of ``(inputs, targets)`` batches equivalent to a ``DataLoader``, from memory.

    Made by :func:`preload`. Each ``iter()`` draws the epoch's order exactly as the original
    loader would (its sampler, its generator), so the two can be used interchangeably.
    """

    def __init__(
        self,
        loader: torch.utils.data.DataLoader[Any],
        images: Tensor,
        labels: Tensor,
        scale: float | None,
        mean: Tensor | None,
        std: Tensor | None,
        device: torch.device,
        channels_last: bool = False,
    ) -> None:
        self.loader = loader
        self.batch_size: int | None = loader.batch_size
        self.drop_last: bool = loader.drop_last
        self._images, self._labels = images.to(device), labels.to(device)
        self._scale = scale
        self._mean = None if mean is None else mean.to(device)
        self._std = None if std is None else std.to(device)
        self.device = device
        self._channels_last = channels_last  # stored N, H, W, C (CIFAR's layout): permuted per batch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        # The order of the DataLoader's draws from its generator: the batch sampler's iterator
        # is created first (lazily), then the iterator's base seed is drawn, then the sampler
        # draws its permutation on the first batch.
        indices = iter(self.loader.batch_sampler)  # type: ignore[arg-type]
        torch.empty((), dtype=torch.int64).random_(generator=self.loader.generator)
        for batch in indices:
            idx = torch.as_tensor(batch, dtype=torch.int64, device=self.device)
            yield self._transform(self._images.index_select(0, idx)), self._labels.index_select(0, idx)

    def _transform(self, x: Tensor) -> Tensor:
        if self._channels_last:
            x = x.permute(0, 3, 1, 2)
        if self._scale is not None:  # ToTensor: uint8 HWC/HW -> float CHW in [0, 1]
            x = x.to(torch.float32).div(self._scale)
        if self._mean is not None and self._std is not None:  # Normalize
            x = x.sub(self._mean).div(self._std)
        return x

    @property
    def nbytes(self) -> int:
        """Memory held by the pre-loaded images and labels."""
        return self._images.nbytes + self._labels.nbytes

    def __repr__(self) -> str:
        return (
            f"PreloadedLoader({len(self._labels)} examples {tuple(self._images.shape[1:])} on {self.device}, "
            f"batch_size={self.batch_size}, drop_last={self.drop_last})"
        )


def _available_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` (``/proc/meminfo``'s MemAvailable for the CPU), ``None`` if unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _transforms(transform: Any) -> tuple[float | None, tuple[Sequence[float], Sequence[float]] | None]:
    """``(scale, (mean, std))`` of a ``ToTensor`` [+ ``Normalize``] pipeline, else NotPreloadable."""
    from torchvision import transforms as T

    steps = list(transform.transforms) if isinstance(transform, T.Compose) else [transform]
    if not steps or not isinstance(steps[0], T.ToTensor):
        names = [type(s).__name__ for s in steps]
        raise NotPreloadable(f"transforms {names} do not start with ToTensor")
    norm = None
    for s in steps[1:]:
        if isinstance(s, T.Normalize) and norm is None and not s.inplace:
            norm = (list(s.mean), list(s.std))
        else:
            raise NotPreloadable(
                f"transform {type(s).__name__} is not supported (ToTensor and Normalize are)"
            )
    return 255.0, norm


def _source(dataset: Any) -> tuple[Tensor, Tensor, Any]:
    """``(images, labels, transform)`` of a recognised dataset, sharing its memory (no copy)."""
    from torchvision import datasets as D

    if isinstance(dataset, torch.utils.data.TensorDataset):
        if len(dataset.tensors) < 2:
            raise NotPreloadable("a TensorDataset needs (inputs, targets) tensors")
        return dataset.tensors[0], dataset.tensors[1], None
    if isinstance(dataset, D.MNIST):
        images, labels = dataset.data, torch.as_tensor(dataset.targets)
        if images.dtype != torch.uint8 or images.dim() != 3:
            raise NotPreloadable(f"{type(dataset).__name__}.data is {images.dtype} {tuple(images.shape)}")
        return images.unsqueeze(1), labels, dataset.transform
    if isinstance(dataset, (D.CIFAR10, D.CIFAR100)):  # N, H, W, C uint8, shared with the dataset
        return torch.from_numpy(dataset.data), torch.as_tensor(dataset.targets), dataset.transform
    raise NotPreloadable(f"dataset {type(dataset).__name__} is not one ltfunc can pre-load")


def _check_loader(loader: Any) -> None:
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler
    from torch.utils.data._utils.collate import default_collate

    if not isinstance(loader, DataLoader):
        raise NotPreloadable(f"{type(loader).__name__} is not a torch.utils.data.DataLoader")
    if loader.batch_size is None or type(loader.batch_sampler) is not BatchSampler:
        raise NotPreloadable("the loader has a custom batch_sampler (or batch_size=None)")
    sampler = loader.sampler
    if type(sampler) is RandomSampler:
        if sampler.replacement or sampler._num_samples is not None:
            raise NotPreloadable("RandomSampler with replacement or num_samples is not supported")
    elif type(sampler) is not SequentialSampler:
        raise NotPreloadable(f"sampler {type(sampler).__name__} is not supported")
    if loader.collate_fn is not default_collate:
        raise NotPreloadable("the loader has a custom collate_fn")


class _Plan(NamedTuple):
    images: Tensor  # as the dataset holds them (no copy yet)
    labels: Tensor
    subset: Tensor | None  # indices of a Subset
    channels_last: bool
    scale: float | None  # ToTensor's divisor
    norm: tuple[Sequence[float], Sequence[float]] | None  # Normalize's mean and std

    def nbytes(self) -> int:
        n = self.images.shape[0]
        kept = n if self.subset is None else int(self.subset.numel())
        per = (self.images.nbytes // max(n, 1)) + 8  # one example and its int64 label
        return kept * per


def _plan(loader: Any) -> _Plan:
    """What :func:`preload` would hold in memory, found without copying anything."""
    from torchvision import datasets as D

    _check_loader(loader)
    dataset: Any = loader.dataset
    subset = None
    if isinstance(dataset, torch.utils.data.Subset):
        dataset, subset = dataset.dataset, torch.as_tensor(list(dataset.indices), dtype=torch.int64)
    images, labels, transform = _source(dataset)
    target_transform = getattr(dataset, "target_transform", None)
    if target_transform is not None:
        raise NotPreloadable(f"target_transform {type(target_transform).__name__} is not supported")
    scale, norm = (None, None) if transform is None else _transforms(transform)
    channels_last = isinstance(dataset, (D.CIFAR10, D.CIFAR100))
    return _Plan(images, labels, subset, channels_last, scale, norm)


def preload(
    loader: Any, *, device: str | torch.device | None = None, max_bytes: int | None = None
) -> PreloadedLoader:
    """An in-memory equivalent of a ``DataLoader`` over a standard dataset (see the module docstring).

    The images are held as the dataset stores them (``uint8`` for MNIST/CIFAR) and converted
    per batch exactly as ``ToTensor`` / ``Normalize`` do, so batches are equal to the
    loader's, in the same order for the same generator state.

    Args:
        loader: A ``torch.utils.data.DataLoader``.
        device: Where to hold the data and yield the batches (default: the CPU).
        max_bytes: Refuse to pre-load more than this many bytes (default: the memory
            available on ``device``).

    Returns:
        A :class:`PreloadedLoader`.

    Raises:
        ValueError: The loader cannot be pre-loaded (the message says why: dataset,
            transform, sampler, collate_fn), or the data would not fit (the message says how
            many bytes it needs and how many are available) — raised before allocating.
        TypeError: ``max_bytes`` not an int.

    Example:
        >>> import torch, ltfunc
        >>> ds = torch.utils.data.TensorDataset(torch.arange(10.0).reshape(10, 1), torch.arange(10))
        >>> def make():
        ...     g = torch.Generator().manual_seed(0)
        ...     return torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True, generator=g)
        >>> [y.tolist() for _, y in ltfunc.preload(make())] == [y.tolist() for _, y in make()]
        True
        >>> [y.tolist() for _, y in ltfunc.preload(torch.utils.data.DataLoader(ds, batch_size=4))]
        [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    """
    func = "preload"
    dev = torch.device("cpu") if device is None else torch.device(device)
    if max_bytes is not None:
        check_int(func, "max_bytes", max_bytes, 0)
    try:
        plan = _plan(loader)
    except NotPreloadable as e:
        raise ValueError(f"{func}: cannot pre-load this loader: {e}; iterate it as it is") from e
    need = plan.nbytes()
    limit = max_bytes if max_bytes is not None else _available_memory(dev)
    if limit is not None and need > limit:
        raise ValueError(
            f"{func}: pre-loading needs {need / 2**20:.1f} MiB on {dev} but only {limit / 2**20:.1f} MiB "
            f"{'are allowed (max_bytes)' if max_bytes is not None else 'are available'}; iterate the "
            "loader as it is, or free memory"
        )
    images, labels = plan.images, plan.labels.to(torch.int64)
    if plan.subset is not None:
        images, labels = images.index_select(0, plan.subset), labels.index_select(0, plan.subset)
    mean = std = None
    if plan.norm is not None:
        shape = (-1, 1, 1) if images.dim() == 4 else (-1,)
        mean = torch.tensor(plan.norm[0], dtype=torch.float32).reshape(shape)
        std = torch.tensor(plan.norm[1], dtype=torch.float32).reshape(shape)
    return PreloadedLoader(loader, images, labels, plan.scale, mean, std, dev, plan.channels_last)


def try_preload(loader: Any, device: torch.device) -> tuple[PreloadedLoader | None, str]:
    """:func:`preload` for the facade: ``(loader, "")`` or ``(None, why not)``; never raises for an
    unsupported loader. ``$LTFUNC_NO_PRELOAD=1`` turns it off."""
    if os.environ.get("LTFUNC_NO_PRELOAD"):
        return None, "LTFUNC_NO_PRELOAD is set"
    try:
        return preload(loader, device=device), ""
    except ValueError as e:
        return None, str(e)
