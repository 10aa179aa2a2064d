"""Datasets as tensors on the training device, and on-device batch iterators.

MNIST and Fashion-MNIST are read once through torchvision (its raw ``uint8`` tensors, no
per-sample PIL or ``ToTensor``), normalized with the dataset's standard mean/std and moved
to the device as ``float32`` :class:`Split` s. CIFAR-10 / CIFAR-100 are read by
:mod:`ltfunc.cifar` (MD5-checked, restricted unpickling) and kept on the device as ``uint8``
pixels in a :class:`PixelSplit`, a ``Split`` that also carries its per-channel
:class:`Normalization`, applied when a batch is fetched (:func:`batches`) or evaluated
(``ltfunc.evaluation.evaluate``): a quarter of the memory, and random crops pad with black
pixels as torchvision's recipe does. :func:`batches` yields shuffled on-device mini-batches
with no ``DataLoader``, no worker processes and no host-to-device copy per step, optionally
augmented on the device (:mod:`ltfunc.augment`) from the stream's seed and the batch index.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from . import cifar, mnist
from ._checks import check_bool, check_choice, check_device, check_int, check_path, check_rng
from ._types import Batch, DeviceLike
from .augment import AUGMENTATIONS, _StreamAugmenter

__all__ = [
    "DATASETS",
    "NORMALIZATION",
    "PIXEL_NORMALIZATION",
    "TRAIN_SIZE",
    "Dataset",
    "Normalization",
    "PixelSplit",
    "Split",
    "batches",
    "load_dataset",
    "resolve_root",
]

DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist", "cifar10", "cifar100")
"""Names accepted by :func:`load_dataset` (CLI ``--dataset``)."""

NORMALIZATION: dict[str, tuple[float, float]] = {
    "mnist": (0.1307, 0.3081),
    "fashion-mnist": (0.2860, 0.3530),
}
"""Grey-scale datasets: ``(mean, std)`` of the training pixels in [0, 1], applied once at loading."""

TRAIN_SIZE: dict[str, int] = {"mnist": 60_000, "fashion-mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000}
"""Number of training examples of each dataset (before a validation split)."""

ENV_ROOT = "LTFUNC_DATA_ROOT"
"""Environment variable naming the folder that holds ``mnist/``, ``fashion-mnist/``, ``cifar10/``, ..."""

_SUBDIR = {"mnist": "mnist", "fashion-mnist": "fashion-mnist", "cifar10": "cifar10", "cifar100": "cifar100"}


class Normalization(NamedTuple):
    """Per-channel ``mean`` / ``std`` of pixels in [0, 1]; calling it normalizes a ``uint8`` batch.

    ``norm(x) = (x / 255 - mean[c]) / std[c]`` per channel ``c`` of ``x`` ``(..., C, H, W)``,
    in ``float32`` and with the operations of torchvision's ``ToTensor`` + ``Normalize`` (same
    numbers). The input is not modified.

    Example:
        >>> import torch
        >>> from ltfunc.data import Normalization
        >>> norm = Normalization(mean=(0.5, 0.25), std=(0.5, 0.25))
        >>> norm(torch.full((1, 2, 1, 1), 255, dtype=torch.uint8)).flatten().tolist()
        [1.0, 3.0]
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, x: Tensor) -> Tensor:
        """Normalize ``x`` (``uint8`` pixels ``(..., C, H, W)``) into a new ``float32`` tensor."""
        mean, std = _channel_constants(self, x.device)
        return x.to(torch.float32, copy=True).div_(255.0).sub_(mean).div_(std)


@functools.lru_cache(maxsize=64)
def _channel_constants(norm: Normalization, device: torch.device) -> tuple[Tensor, Tensor]:
    """``mean`` and ``std`` as ``(C, 1, 1)`` tensors on ``device``, made once (no copy per batch)."""
    return (
        torch.tensor(norm.mean, dtype=torch.float32, device=device).view(-1, 1, 1),
        torch.tensor(norm.std, dtype=torch.float32, device=device).view(-1, 1, 1),
    )


PIXEL_NORMALIZATION: dict[str, Normalization] = {
    "cifar10": Normalization(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
    "cifar100": Normalization(mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)),
}
"""Colour datasets kept as ``uint8`` (:class:`PixelSplit`): the per-channel mean and standard
deviation of the training pixels in [0, 1], applied at every batch fetch. (Not the
``std=(0.2023, 0.1994, 0.2010)`` often copied for CIFAR-10, which is not the standard deviation
of the training pixels.)"""


class Split(NamedTuple):
    """One split of a dataset: model inputs ``x`` (e.g. ``float32 (N, 1, 28, 28)``), ``int64`` labels ``y``.

    A pair: ``x, y = split`` works. :class:`PixelSplit` is the variant that stores ``uint8``
    pixels and normalizes them when batches are fetched.
    """

    x: Tensor
    y: Tensor

    @property
    def size(self) -> int:
        """Number of examples."""
        return int(self.y.shape[0])

    @property
    def normalization(self) -> Normalization | None:
        """What turns ``x[idx]`` into model inputs: ``None`` here (``x`` is used as it is)."""
        return None

    def normalized(self) -> Split:
        """This split with model-ready ``float32`` inputs (itself: ``x`` already is)."""
        return self


class PixelSplit(Split):
    """A :class:`Split` of raw ``uint8`` images ``(N, C, H, W)`` that normalizes them on fetch.

    Still a pair (``x, y = split``, ``len(split) == 2``, ``isinstance(split, Split)``), so
    everything that takes a ``Split`` takes it; :func:`batches` and
    ``ltfunc.evaluation.evaluate`` normalize each batch (after augmentation), giving the
    numbers a pre-normalized ``float32`` copy (:meth:`normalized`) would give. Used as a
    plain ``(x, y)`` tuple elsewhere, ``x`` is the raw pixels.

    Args:
        x: ``uint8`` images ``(N, C, H, W)``.
        y: Labels ``(N,)``.
        normalization: The :class:`Normalization`, one mean/std per channel ``C``.

    Raises:
        TypeError: ``x`` not a ``uint8`` tensor, ``y`` not a tensor, ``normalization`` not
            a :class:`Normalization`.
        ValueError: ``x`` not 4-D, ``len(y) != len(x)``, or a channel count that does not
            match the normalization.

    Example:
        >>> import torch
        >>> from ltfunc.data import PixelSplit, PIXEL_NORMALIZATION
        >>> s = PixelSplit(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.long),
        ...                PIXEL_NORMALIZATION["cifar10"])
        >>> x, y = s
        >>> x.dtype, s.normalized().x.dtype, round(s.normalized().x[0, 0, 0, 0].item(), 4)
        (torch.uint8, torch.float32, -1.9895)
    """

    def __new__(cls, x: Tensor, y: Tensor, normalization: Normalization) -> PixelSplit:
        func = "PixelSplit"
        if not isinstance(x, Tensor) or x.dtype != torch.uint8 or not isinstance(y, Tensor):
            raise TypeError(
                f"{func}: x must be a uint8 tensor and y a tensor, got {type(x).__name__} "
                f"{getattr(x, 'dtype', '')} and {type(y).__name__}"
            )
        if not isinstance(normalization, Normalization):
            raise TypeError(
                f"{func}: normalization must be a Normalization, got {type(normalization).__name__}"
            )
        if x.dim() != 4 or y.dim() != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"{func}: x must be (N, C, H, W) and y (N,), got shapes {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if not len(normalization.mean) == len(normalization.std) == x.shape[1]:
            raise ValueError(
                f"{func}: x has {x.shape[1]} channels but the normalization has "
                f"{len(normalization.mean)} means and {len(normalization.std)} stds"
            )
        self = super().__new__(cls, x, y)
        self._normalization = normalization  # the tuple holds (x, y); this lives in the instance dict
        return self

    _normalization: Normalization

    @property
    def normalization(self) -> Normalization:
        """The per-channel normalization applied to every fetched batch."""
        return self._normalization

    def normalized(self) -> Split:
        """A plain :class:`Split` with the normalized ``float32`` images (4x the memory)."""
        return Split(self._normalization(self.x), self.y)

    def _replace(self, **changes: Tensor) -> PixelSplit:
        x, y = changes.pop("x", self.x), changes.pop("y", self.y)
        if changes:
            raise ValueError(f"Got unexpected field names: {list(changes)!r}")
        return PixelSplit(x, y, self._normalization)

    def __getnewargs__(self) -> tuple[Tensor, Tensor, Normalization]:
        return (self.x, self.y, self._normalization)

    def __repr__(self) -> str:
        return f"PixelSplit(x={self.x!r}, y={self.y!r}, normalization={self._normalization!r})"


class Dataset(NamedTuple):
    """A loaded dataset: training split, optional held-out validation split, test split."""

    name: str
    train: Split
    val: Split | None
    test: Split


def resolve_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data folder to use: ``root`` if given, else ``$LTFUNC_DATA_ROOT``, else ``~/.cache/ltfunc/data``.

    The folder holds one sub-folder per dataset (``mnist/``, ``fashion-mnist/``, ``cifar10/``,
    ``cifar100/``), each in torchvision layout (e.g. ``mnist/MNIST/raw/train-images-idx3-ubyte``,
    ``cifar10/cifar-10-batches-py/data_batch_1``).

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
        f"${ENV_ROOT}, or allow the download (download=None or True; CLI --download) on a machine "
        "with internet."
    )


def _check_labels(name: str, labels: Tensor, what: str, folder: Path) -> None:
    """MNIST labels must lie in ``[0, 10)`` (checked once, on the host, before the move)."""
    k = 10
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(
            f"load_dataset: the {what} labels of {name} in {folder} lie in [{int(labels.min())}, "
            f"{int(labels.max())}], outside [0, {k}): the label file is corrupt or not {name}'s"
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
        _remove_empty(made)
        raise FileNotFoundError(
            _missing_message(name, folder, f"files missing and the download failed: {e}")
        ) from e


def _remove_empty(made: list[Path]) -> None:
    for p in reversed(made):
        if p.is_dir() and not any(p.iterdir()):
            p.rmdir()


def _read_cifar(name: str, folder: Path, download: bool | None, verify: bool) -> cifar.CifarArrays:
    """Read CIFAR from ``folder`` (``ROOT/<name>/``), downloading the missing files as ``download`` allows."""
    missing = cifar.missing_files(name, folder)
    if missing:
        base = folder / cifar.BASE_FOLDER[name]
        what = (
            f"no folder {base}"
            if not base.is_dir()
            else f"missing {', '.join(p.name for p in missing)} in {base}"
        )
        if download is False:
            raise FileNotFoundError(_missing_message(name, folder, f"{what}; download=False"))
        made = [p for p in (folder,) if not p.exists()]
        try:
            cifar.download(name, folder)
        except (OSError, RuntimeError) as e:
            _remove_empty(made)
            raise FileNotFoundError(
                _missing_message(name, folder, f"{what} and the download failed: {e}")
            ) from e
    return cifar.read_cifar(name, folder, verify=verify)


def _split_indices(n: int, val_size: int, split_seed: int) -> tuple[Tensor, Tensor]:
    """Sorted ``(train_idx, val_idx)``: ``val_size`` of ``n`` examples drawn with ``split_seed``."""
    gen = torch.Generator().manual_seed(split_seed)
    perm = torch.randperm(n, generator=gen)
    return perm[val_size:].sort().values, perm[:val_size].sort().values


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
    verify: bool = True,
) -> Dataset:
    """Load a dataset once into tensors on ``device``, with an optional held-out validation split.

    MNIST / Fashion-MNIST: ``float32`` :class:`Split` s ``(N, 1, 28, 28)`` normalized with the
    dataset's standard mean/std (:data:`NORMALIZATION`). CIFAR-10 / CIFAR-100: ``uint8``
    :class:`PixelSplit` s ``(N, 3, 32, 32)`` that carry the per-channel mean/std
    (:data:`PIXEL_NORMALIZATION`), applied by :func:`batches` and ``evaluate`` at every
    batch; read by :mod:`ltfunc.cifar` with checksums and a restricted unpickler (CIFAR-100:
    the 100 fine labels). Labels are ``int64`` ``(N,)``. A validation split of ``val_size``
    examples (Frankle & Carbin hold out 5000) is drawn from the training set by a permutation
    seeded with ``split_seed``; the remaining examples form ``train``. Both keep the
    dataset's original order.

    Args:
        name: One of :data:`DATASETS` (``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``,
            ``"cifar100"``).
        root: Folder holding ``mnist/``, ``fashion-mnist/``, ``cifar10/``, ``cifar100/`` in
            torchvision layout (e.g. ``cifar10/cifar-10-batches-py/data_batch_1``); default
            ``$LTFUNC_DATA_ROOT``, else ``~/.cache/ltfunc/data`` (see :func:`resolve_root`).
        device: Device for all tensors. Default: ``"cpu"``.
        val_size: Training examples held out for validation; ``0`` gives ``val=None``.
        split_seed: Seed of the validation split (independent of any training seed).
        download: ``None`` (default) downloads into ``root`` only if files are missing,
            ``True`` downloads if missing and fails loudly, ``False`` never downloads.
        verify: Check every file's MD5 against the official checksums
            (:data:`ltfunc.cifar.MD5`, :data:`ltfunc.mnist.MNIST_MD5`) before reading it. ``False`` for
            files in the same format that are not the official ones (test fixtures). MNIST
            files are always checked for truncation (size against their header), and all
            labels must lie in ``[0, num_classes)``.

    Returns:
        A :class:`Dataset` ``(name, train, val, test)``.

    Raises:
        ValueError: Unknown ``name`` (lists :data:`DATASETS`), ``val_size`` not in
            ``[0, train size)``, an unusable ``device``; a CIFAR file with the wrong
            checksum, truncated or corrupt (the message names the file and the fix).
        TypeError: ``root``, ``device``, ``val_size``, ``split_seed``, ``download`` or
            ``verify`` of the wrong type.
        FileNotFoundError: The files are missing and could not (or may not) be
            downloaded; the message names the folder searched (and for CIFAR the missing
            files) and how to fix it.
        ltfunc.cifar.UnsafePickleError: A CIFAR file names Python objects other than numpy
            arrays (nothing in it is run).

    Example:
        >>> import ltfunc
        >>> ltfunc.data.DATASETS
        ('mnist', 'fashion-mnist', 'cifar10', 'cifar100')
        >>> ds = ltfunc.data.load_dataset("mnist", val_size=5000)  # doctest: +SKIP
        >>> ds.train.x.shape, ds.val.x.shape, ds.test.y.dtype  # doctest: +SKIP
        (torch.Size([55000, 1, 28, 28]), torch.Size([5000, 1, 28, 28]), torch.int64)
        >>> ds = ltfunc.data.load_dataset("cifar10", val_size=5000)  # doctest: +SKIP
        >>> ds.train.x.dtype, ds.train.x.shape, ds.train.normalization.mean  # doctest: +SKIP
        (torch.uint8, torch.Size([45000, 3, 32, 32]), (0.4914, 0.4822, 0.4465))
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
    check_bool(func, "verify", verify)
    dev = check_device(func, device)
    folder = _resolve_root(func, root) / _SUBDIR[name]
    if name in PIXEL_NORMALIZATION:
        return _load_pixels(name, folder, dev, val_size, split_seed, download, verify)

    mnist.check_idx_files(name, folder, verify)
    train_raw = _open(name, folder, train=True, download=download)
    test_raw = _open(name, folder, train=False, download=download)
    mean, std = NORMALIZATION[name]
    images, labels = train_raw.data, train_raw.targets
    _check_labels(name, labels, "training", folder)
    _check_labels(name, test_raw.targets, "test", folder)
    val = None
    if val_size:
        train_idx, val_idx = _split_indices(images.shape[0], val_size, split_seed)
        val = _to_split(images[val_idx], labels[val_idx], mean, std, dev)
        images, labels = images[train_idx], labels[train_idx]
    return Dataset(
        name=name,
        train=_to_split(images, labels, mean, std, dev),
        val=val,
        test=_to_split(test_raw.data, test_raw.targets, mean, std, dev),
    )


def _load_pixels(
    name: str,
    folder: Path,
    dev: torch.device,
    val_size: int,
    split_seed: int,
    download: bool | None,
    verify: bool,
) -> Dataset:
    arrays = _read_cifar(name, folder, download, verify)
    norm = PIXEL_NORMALIZATION[name]
    images, labels = arrays.train_x, arrays.train_y
    n = int(labels.shape[0])  # labels: checked against the class count by ltfunc.cifar
    if val_size >= n:
        raise ValueError(
            f"load_dataset: val_size must be in [0, {n}) for {name} (the files in {folder} hold "
            f"{n} training images), got {val_size}"
        )
    val = None
    if val_size:
        train_idx, val_idx = _split_indices(n, val_size, split_seed)
        val = PixelSplit(images[val_idx].to(dev), labels[val_idx].to(dev), norm)
        images, labels = images[train_idx], labels[train_idx]
    return Dataset(
        name=name,
        train=PixelSplit(images.to(dev), labels.to(dev), norm),
        val=val,
        test=PixelSplit(arrays.test_x.to(dev), arrays.test_y.to(dev), norm),
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
    augment: bool | str = False,
    start: int = 0,
    shard: tuple[int, int] | None = None,
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

    Augmentation (``augment="crop_flip"`` or ``True``) crops every image of a batch from its
    4-pixel zero-padded copy at a random offset and mirrors it with probability 1/2
    (torchvision's ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``), on the
    device, before normalization: on a :class:`PixelSplit` the padding is black pixels, as
    in torchvision's recipe; on a ``float`` split it is the value 0 (for normalized data,
    the mean colour). The random choices of batch ``i`` come from
    :func:`ltfunc.augment.batch_seed` ``(s, i)`` with ``s`` drawn from a copy of the
    shuffling generator (which stays untouched: the batch order is the same with and
    without augmentation), so they depend only on the seed and ``i``.

    A :class:`PixelSplit` 's batches are normalized (``float32``) after the gather and the
    augmentation; any other split's ``x`` rows are yielded as they are.

    ``start=k`` yields exactly what ``itertools.islice(batches(...), k, None)`` yields, with
    the same generator use, but without gathering or augmenting the skipped batches (the
    skipped epochs only draw their permutations): resume a stream mid-round with it.

    Args:
        split: A :class:`Split` (:class:`PixelSplit` too) or any ``(x, y)`` pair of tensors
            with the same first dimension on the same device. Not modified.
        batch_size: Examples per batch, ``1 <= batch_size`` (and ``<= N`` if ``drop_last``).
        seed: Integer seed of the shuffling (and the augmentation). Give ``seed`` or
            ``generator``; with neither, a seed is drawn from torch's global RNG
            (reproducible under ``torch.manual_seed``).
        generator: A ``torch.Generator`` on the CPU or on the split's device; it is
            advanced once per epoch.
        drop_last: Drop each epoch's incomplete last batch. Default: ``True``.
        augment: ``False`` (default), ``True`` or a name in
            :data:`ltfunc.augment.AUGMENTATIONS` (``"crop_flip"``); needs images
            ``(N, C, H, W)``.
        start: Index of the first batch to yield (``>= 0``). Default: ``0``.
        shard: ``(rank, world_size)`` for data-parallel training: every batch is drawn as
            above and only its rows ``[rank * b / world_size, (rank + 1) * b / world_size)``
            are yielded (``b = batch_size``, which ``world_size`` must divide; needs
            ``drop_last=True``), so ``world_size`` streams together yield exactly the batches of
            one. Without augmentation only the shard's rows are gathered; with it, the whole
            batch is augmented and then sliced (the same random choices as in one stream).

    Returns:
        An infinite iterator of ``(x, y)`` batches.

    Raises:
        TypeError: ``split`` is not a pair of tensors, or ``batch_size``/``seed``/``generator``/
            ``drop_last``/``augment``/``start`` of the wrong type.
        ValueError: Mismatched ``x``/``y`` sizes or devices, an empty split, a
            ``batch_size`` out of the allowed range, both ``seed`` and ``generator``, a
            generator on another device, an unknown ``augment`` or one on data that are not
            images, ``start < 0``, a ``shard`` out of range or whose ``world_size`` does not
            divide ``batch_size``, a ``shard`` with ``drop_last=False``.

    Example:
        >>> import itertools, torch, ltfunc
        >>> split = ltfunc.data.Split(torch.arange(10.0).reshape(10, 1), torch.arange(10))
        >>> it = ltfunc.data.batches(split, 4, seed=0)
        >>> [tuple(next(it)[1].shape) for _ in range(3)]
        [(4,), (4,), (4,)]
        >>> imgs = ltfunc.data.Split(torch.rand(20, 3, 8, 8), torch.arange(20))
        >>> full = list(itertools.islice(ltfunc.data.batches(imgs, 4, seed=1, augment=True), 7))
        >>> rest = list(itertools.islice(ltfunc.data.batches(imgs, 4, seed=1, augment=True, start=5), 2))
        >>> all(torch.equal(a[0], b[0]) for a, b in zip(full[5:], rest))
        True
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
    recipe = _check_augment(func, augment, x)
    check_int(func, "start", start, 0)
    rows = _shard_rows(func, shard, batch_size, drop_last)
    gen = _batch_generator(func, x.device, seed, generator)
    norm = split.normalization if isinstance(split, Split) else None
    return _iterate(x, y, batch_size, gen, drop_last, start, recipe, norm, rows)


def _shard_rows(func: str, shard: Any, batch_size: int, drop_last: bool) -> slice | None:
    """The rows of every batch a data-parallel ``shard=(rank, world_size)`` takes (``None``: all)."""
    if shard is None:
        return None
    if not isinstance(shard, tuple) or len(shard) != 2:
        raise TypeError(f"{func}: shard must be None or a (rank, world_size) pair of ints, got {shard!r}")
    world = check_int(func, "shard world_size", shard[1], 1)
    rank = check_int(func, "shard rank", shard[0], 0, world - 1)
    if batch_size % world or not drop_last:
        raise ValueError(
            f"{func}: shard={shard} needs drop_last=True and a batch_size divisible by the world size "
            f"{world}, got batch_size={batch_size}, drop_last={drop_last}"
        )
    per = batch_size // world
    return slice(rank * per, (rank + 1) * per)


def _check_augment(func: str, augment: Any, x: Tensor) -> str | None:
    """The augmentation recipe's name, or ``None`` for none."""
    if augment is False:
        return None
    if augment is True:
        augment = AUGMENTATIONS[0]
    elif not isinstance(augment, str):
        raise TypeError(
            f"{func}: augment must be a bool or one of {', '.join(map(repr, AUGMENTATIONS))}, "
            f"got {type(augment).__name__} {augment!r}"
        )
    check_choice(func, "augment", augment, AUGMENTATIONS)
    if x.dim() != 4:
        raise ValueError(
            f"{func}: augment={augment!r} needs images (N, C, H, W), got split.x of shape {tuple(x.shape)}"
        )
    return augment


def _peek_seed(gen: torch.Generator) -> int:
    """An int drawn from a copy of ``gen`` (``gen`` itself is not advanced)."""
    copy = torch.Generator(device=gen.device)
    copy.set_state(gen.get_state())
    return int(torch.randint(0, 2**62, (), generator=copy, device=gen.device))


def _iterate(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    gen: torch.Generator,
    drop_last: bool,
    start: int,
    recipe: str | None,
    norm: Normalization | None,
    rows: slice | None = None,
) -> Iterator[Batch]:
    n = int(x.shape[0])
    stop = n - n % batch_size if drop_last else n
    per_epoch = -(-stop // batch_size)
    augment = None if recipe is None else _StreamAugmenter(recipe, _peek_seed(gen))
    epoch, skip = divmod(start, per_epoch)
    for _ in range(epoch):  # skipped epochs: only their permutations, to advance the generator
        torch.randperm(n, generator=gen, device=gen.device)
    index = start
    while True:
        perm = torch.randperm(n, generator=gen, device=gen.device)[:stop].to(x.device, non_blocking=True)
        for idx in perm.split(batch_size)[skip:]:
            if rows is not None and augment is None:
                idx = idx[rows]  # a data-parallel shard: gather only its rows
            xb = x.index_select(0, idx)
            if augment is not None:
                xb = augment(xb, index)
                if rows is not None:  # augmented as the whole batch, then sliced
                    xb, idx = xb[rows], idx[rows]
            if norm is not None:
                xb = norm(xb)
            yield xb, y.index_select(0, idx)
            index += 1
        skip = 0
