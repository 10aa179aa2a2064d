"""MNIST and Fashion-MNIST as normalized tensors on the training device, and batch iterators.

A dataset is read once through torchvision (its raw ``uint8`` tensors, no per-sample PIL or
``ToTensor``), normalized with the dataset's standard mean/std and moved to the device.
:func:`batches` then yields shuffled on-device mini-batches with no ``DataLoader``, no worker
processes and no host-to-device copy per step.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ._checks import check_bool, check_choice, check_device, check_int, check_path, check_rng
from ._types import Batch, DeviceLike

__all__ = [
    "DATASETS",
    "NORMALIZATION",
    "Dataset",
    "Split",
    "batches",
    "load_dataset",
    "resolve_root",
]

DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist")
"""Names accepted by :func:`load_dataset` (CLI ``--dataset``)."""

NORMALIZATION: dict[str, tuple[float, float]] = {
    "mnist": (0.1307, 0.3081),
    "fashion-mnist": (0.2860, 0.3530),
}
"""Per-dataset ``(mean, std)`` of the training pixels in [0, 1], used to normalize images."""

TRAIN_SIZE: dict[str, int] = {"mnist": 60_000, "fashion-mnist": 60_000}
"""Number of training examples of each dataset (before a validation split)."""

ENV_ROOT = "LTFUNC_DATA_ROOT"
"""Environment variable naming the folder that holds ``mnist/`` and ``fashion-mnist/``."""

_SUBDIR = {"mnist": "mnist", "fashion-mnist": "fashion-mnist"}


class Split(NamedTuple):
    """One split of a dataset: normalized ``float32`` images ``(N, 1, 28, 28)``, ``int64`` labels ``(N,)``."""

    x: Tensor
    y: Tensor

    @property
    def size(self) -> int:
        """Number of examples."""
        return int(self.y.shape[0])


class Dataset(NamedTuple):
    """A loaded dataset: training split, optional held-out validation split, test split."""

    name: str
    train: Split
    val: Split | None
    test: Split


def resolve_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data folder to use: ``root`` if given, else ``$LTFUNC_DATA_ROOT``, else ``~/.cache/ltfunc/data``.

    The folder holds one sub-folder per dataset (``mnist/``, ``fashion-mnist/``), each in
    torchvision layout (e.g. ``mnist/MNIST/raw/train-images-idx3-ubyte``).

    Args:
        root: An explicit folder, or ``None`` for the default.

    Returns:
        The folder as a ``Path`` with ``~`` expanded (it need not exist).

    Raises:
        TypeError: If ``root`` is not ``None``, a ``str`` or a path-like object.

    Example:
        >>> from ltfunc.data import resolve_root
        >>> resolve_root("/tmp/data").as_posix()
        '/tmp/data'
    """
    return _resolve_root("resolve_root", root)


def _resolve_root(func: str, root: Any) -> Path:
    path = check_path(func, "root", root, optional=True)
    if path is not None:
        return path.expanduser()
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "ltfunc" / "data"


def _missing_message(name: str, folder: Path, reason: str) -> str:
    return (
        f"load_dataset: {name} not found in {folder} ({reason}). Fix: pass root= (CLI --data-root) "
        f"naming the folder that holds {_SUBDIR[name]}/ in torchvision layout, or set "
        f"${ENV_ROOT}, or allow the download (download=None or True) on a machine with internet."
    )


def _open(name: str, folder: Path, train: bool, download: bool | None) -> Any:
    """The torchvision dataset object for one split, downloading as ``download`` allows."""
    import torchvision

    cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
    if download is not True:
        try:
            return cls(str(folder), train=train, download=False)
        except RuntimeError as e:
            if download is False:
                raise FileNotFoundError(_missing_message(name, folder, "download=False")) from e
    # torchvision creates <folder>/<Class>/raw before downloading; if the download fails,
    # remove the empty folders again so a failed attempt leaves nothing behind.
    made = [p for p in (folder, folder / cls.__name__, folder / cls.__name__ / "raw") if not p.exists()]
    try:
        return cls(str(folder), train=train, download=True)
    except (OSError, RuntimeError) as e:
        for p in reversed(made):
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        raise FileNotFoundError(
            _missing_message(name, folder, f"files missing and the download failed: {e}")
        ) from e


def _to_split(images: Tensor, labels: Tensor, mean: float, std: float, device: torch.device) -> Split:
    x = images.to(device).to(torch.float32).div_(255.0).sub_(mean).div_(std).unsqueeze(1)
    return Split(x=x, y=labels.to(device=device, dtype=torch.int64))


def load_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    device: DeviceLike = "cpu",
    val_size: int = 0,
    split_seed: int = 0,
    download: bool | None = None,
) -> Dataset:
    """Load MNIST or Fashion-MNIST once into normalized tensors on ``device``.

    Images become ``float32`` ``(N, 1, 28, 28)`` tensors normalized with the dataset's
    standard mean/std (:data:`NORMALIZATION`), labels ``int64`` ``(N,)``. A validation split
    of ``val_size`` examples (Frankle & Carbin hold out 5000) is drawn from the training set
    by a permutation seeded with ``split_seed``; the remaining examples form ``train``. Both
    keep the dataset's original order.

    Args:
        name: One of :data:`DATASETS` (``"mnist"``, ``"fashion-mnist"``).
        root: Folder holding ``mnist/`` and ``fashion-mnist/`` in torchvision layout;
            default ``$LTFUNC_DATA_ROOT``, else ``~/.cache/ltfunc/data`` (see :func:`resolve_root`).
        device: Device for all tensors. Default: ``"cpu"``.
        val_size: Training examples held out for validation; ``0`` gives ``val=None``.
        split_seed: Seed of the validation split (independent of any training seed).
        download: ``None`` (default) downloads into ``root`` only if files are missing,
            ``True`` downloads if missing and fails loudly, ``False`` never downloads.

    Returns:
        A :class:`Dataset` ``(name, train, val, test)``.

    Raises:
        ValueError: Unknown ``name`` (lists :data:`DATASETS`), ``val_size`` not in
            ``[0, train size)``, or an unusable ``device``.
        TypeError: ``root``, ``device``, ``val_size``, ``split_seed`` or ``download`` of the
            wrong type.
        FileNotFoundError: The files are missing and could not (or may not) be
            downloaded; the message names the folder searched and how to fix it.

    Example:
        >>> import ltfunc
        >>> ltfunc.data.DATASETS
        ('mnist', 'fashion-mnist')
        >>> ds = ltfunc.data.load_dataset("mnist", val_size=5000)  # doctest: +SKIP
        >>> ds.train.x.shape, ds.val.x.shape, ds.test.y.dtype  # doctest: +SKIP
        (torch.Size([55000, 1, 28, 28]), torch.Size([5000, 1, 28, 28]), torch.int64)
    """
    func = "load_dataset"
    check_choice(func, "name", name, DATASETS)
    check_int(func, "val_size", val_size)
    n_train = TRAIN_SIZE[name]
    if not 0 <= val_size < n_train:
        raise ValueError(f"{func}: val_size must be in [0, {n_train}) for {name}, got {val_size}")
    check_int(func, "split_seed", split_seed)
    if download is not None and not isinstance(download, bool):
        raise TypeError(f"{func}: download must be None, True or False, got {download!r}")
    dev = check_device(func, device)
    folder = _resolve_root(func, root) / _SUBDIR[name]

    train_raw = _open(name, folder, train=True, download=download)
    test_raw = _open(name, folder, train=False, download=download)
    mean, std = NORMALIZATION[name]
    images, labels = train_raw.data, train_raw.targets
    val = None
    if val_size:
        gen = torch.Generator().manual_seed(split_seed)
        perm = torch.randperm(images.shape[0], generator=gen)
        val_idx = perm[:val_size].sort().values
        train_idx = perm[val_size:].sort().values
        val = _to_split(images[val_idx], labels[val_idx], mean, std, dev)
        images, labels = images[train_idx], labels[train_idx]
    return Dataset(
        name=name,
        train=_to_split(images, labels, mean, std, dev),
        val=val,
        test=_to_split(test_raw.data, test_raw.targets, mean, std, dev),
    )


def _batch_generator(
    func: str, device: torch.device, seed: int | None, generator: torch.Generator | None
) -> torch.Generator:
    check_rng(func, seed, generator)
    if generator is not None:
        if generator.device.type != "cpu" and generator.device != device:
            raise ValueError(
                f"{func}: generator is on {generator.device} but the split is on {device}; "
                "use a CPU generator or one on the split's device"
            )
        return generator
    if seed is None:
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    return torch.Generator().manual_seed(seed)


def batches(
    split: Split | tuple[Tensor, Tensor],
    batch_size: int,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    drop_last: bool = True,
) -> Iterator[Batch]:
    """An infinite iterator of shuffled ``(x, y)`` mini-batches on the split's device.

    Each epoch draws one permutation of the split from ``generator`` (on the generator's
    device: with ``seed=`` a CPU generator, so the same seed gives the same batches on
    every device) and yields ``x.index_select(0, idx), y.index_select(0, idx)`` for
    consecutive index slices: one gather per tensor per step, no ``DataLoader``, no host
    work beyond slicing. With ``drop_last=True`` (default) every batch has exactly
    ``batch_size`` examples (a compiled step never sees a new shape) and the last
    ``N % batch_size`` examples of each epoch's permutation are skipped; with ``False``
    each epoch ends with a smaller batch holding them.

    Args:
        split: A :class:`Split` or any ``(x, y)`` pair of tensors with the same first
            dimension on the same device. Not modified.
        batch_size: Examples per batch, ``1 <= batch_size`` (and ``<= N`` if ``drop_last``).
        seed: Integer seed of the shuffling. Give ``seed`` or ``generator``; with neither,
            a seed is drawn from torch's global RNG (reproducible under ``torch.manual_seed``).
        generator: A ``torch.Generator`` on the CPU or on the split's device; it is
            advanced once per epoch.
        drop_last: Drop each epoch's incomplete last batch. Default: ``True``.

    Returns:
        An infinite iterator of ``(x, y)`` batches.

    Raises:
        TypeError: ``split`` is not a pair of tensors, or ``batch_size``/``seed``/``generator``
            of the wrong type.
        ValueError: Mismatched ``x``/``y`` sizes or devices, an empty split, a
            ``batch_size`` out of the allowed range, both ``seed`` and ``generator``, or a
            generator on another device.

    Example:
        >>> import torch, ltfunc
        >>> split = ltfunc.data.Split(torch.arange(10.0).reshape(10, 1), torch.arange(10))
        >>> it = ltfunc.data.batches(split, 4, seed=0)
        >>> [tuple(next(it)[1].shape) for _ in range(3)]
        [(4,), (4,), (4,)]
    """
    func = "batches"
    if not isinstance(split, tuple) or len(split) != 2 or not all(isinstance(t, Tensor) for t in split):
        raise TypeError(
            f"{func}: split must be a Split or an (x, y) pair of tensors, got {type(split).__name__}"
        )
    x, y = split
    if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{func}: split.x and split.y must have the same first dimension, "
            f"got shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.device != y.device:
        raise ValueError(f"{func}: split.x is on {x.device} but split.y is on {y.device}")
    n = int(x.shape[0])
    if n == 0:
        raise ValueError(f"{func}: split is empty")
    check_bool(func, "drop_last", drop_last)
    check_int(func, "batch_size", batch_size)
    if drop_last and not 1 <= batch_size <= n:
        raise ValueError(
            f"{func}: batch_size must be in [1, {n}] (the split size; drop_last=True), got {batch_size}"
        )
    if batch_size < 1:
        raise ValueError(f"{func}: batch_size must be >= 1, got {batch_size}")
    gen = _batch_generator(func, x.device, seed, generator)
    return _iterate(x, y, batch_size, gen, drop_last)


def _iterate(x: Tensor, y: Tensor, batch_size: int, gen: torch.Generator, drop_last: bool) -> Iterator[Batch]:
    n = int(x.shape[0])
    stop = n - n % batch_size if drop_last else n
    while True:
        perm = torch.randperm(n, generator=gen, device=gen.device)[:stop].to(x.device, non_blocking=True)
        for idx in perm.split(batch_size):
            yield x.index_select(0, idx), y.index_select(0, idx)
