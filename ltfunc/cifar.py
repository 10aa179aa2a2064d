"""CIFAR-10 / CIFAR-100 files in torchvision's on-disk layout, read safely into ``uint8`` tensors.

The "python version" of CIFAR is a set of pickles: dicts whose ``data`` is a ``uint8`` numpy
array ``(N, 3072)`` (the 1024 red, then green, then blue values of each 32x32 image, rows
first) and whose ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100) is a list of ints;
keys are ``bytes`` (``b"data"``) or ``str`` depending on how a file was written and read.
A pickle can run arbitrary code, so this module reads them with :class:`SafeUnpickler`,
which resolves only numpy's array-reconstruction helpers and refuses every other global,
and checks each file's MD5 against the official checksums (:data:`MD5`) before unpickling
it. ``ltfunc.data.load_dataset("cifar10" | "cifar100", ...)`` is the user-facing entry point;
torchvision is imported only to download.

Layout under a dataset folder (``ROOT/cifar10/``, ``ROOT/cifar100/``)::

    cifar10/cifar-10-batches-py/{data_batch_1 .. data_batch_5, test_batch, batches.meta}
    cifar100/cifar-100-python/{train, test, meta}

Example:
    >>> from ltfunc import cifar
    >>> cifar.FILES["cifar100"]
    ('train', 'test', 'meta')
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ._checks import check_bool, check_choice, check_path

__all__ = [
    "BASE_FOLDER",
    "FILES",
    "MD5",
    "CifarArrays",
    "SafeUnpickler",
    "UnsafePickleError",
    "download",
    "md5sum",
    "missing_files",
    "read_cifar",
    "safe_load",
]

NAMES: tuple[str, ...] = ("cifar10", "cifar100")

BASE_FOLDER: dict[str, str] = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
"""The folder the official archive extracts to, inside ``ROOT/<name>/``."""

_TRAIN: dict[str, tuple[str, ...]] = {
    "cifar10": ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"),
    "cifar100": ("train",),
}
_TEST: dict[str, tuple[str, ...]] = {"cifar10": ("test_batch",), "cifar100": ("test",)}
_META: dict[str, str] = {"cifar10": "batches.meta", "cifar100": "meta"}
_LABELS: dict[str, str] = {"cifar10": "labels", "cifar100": "fine_labels"}
_CLASS_NAMES: dict[str, str] = {"cifar10": "label_names", "cifar100": "fine_label_names"}
_NUM_CLASSES: dict[str, int] = {"cifar10": 10, "cifar100": 100}

FILES: dict[str, tuple[str, ...]] = {n: (*_TRAIN[n], *_TEST[n], _META[n]) for n in NAMES}
"""The files of each dataset inside its :data:`BASE_FOLDER`: training, test, then meta."""

MD5: dict[str, dict[str, str]] = {
    "cifar10": {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
    "cifar100": {
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    },
}
"""Official MD5 checksums of the extracted files of https://www.cs.toronto.edu/~kriz/cifar.html,
as listed by torchvision (``torchvision.datasets.CIFAR10`` / ``CIFAR100``: ``train_list``,
``test_list``, ``meta["md5"]``; torchvision 0.29)."""

_VERIFY_FIX = "pass verify=False to load_dataset to skip the MD5 check (e.g. for hand-made test files)"
_REDOWNLOAD_FIX = "delete the folder and load with download=True (CLI --download) to fetch the files again"


class CifarArrays(NamedTuple):
    """What :func:`read_cifar` returns: images as ``uint8 (N, 3, 32, 32)``, labels ``int64 (N,)`` (CPU)."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: tuple[str, ...]
    """The class names, in label order (from the meta file)."""


# ---------------------------------------------------------------- safe unpickling


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names a global that :class:`SafeUnpickler` refuses to resolve (nothing was called)."""


def _latin1_encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    # Python 3 pickles bytes with protocols 0-2 as _codecs.encode(text, "latin1")
    if not isinstance(text, str) or encoding != "latin1" or errors != "strict":
        raise UnsafePickleError(
            "SafeUnpickler: _codecs.encode is allowed only as encode(str, 'latin1'), "
            f"got encoding {encoding!r}"
        )
    return text.encode("latin1")


def _dtype(*args: Any) -> np.dtype[Any]:
    dt = np.dtype(*args)
    if dt.hasobject:
        raise UnsafePickleError(f"SafeUnpickler: refusing an object dtype ({dt!r}) in a CIFAR file")
    return dt


def _numpy_helpers() -> dict[tuple[str, str], Callable[..., Any]]:
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct
        from numpy._core.numeric import _frombuffer  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
        from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for core in ("numpy.core", "numpy._core"):  # numpy 1.x and 2.x names of the same helpers
        allowed[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain containers and numpy arrays.

    ``find_class`` resolves numpy's array-reconstruction helpers (``_reconstruct``,
    ``ndarray``, ``dtype`` without object dtypes, and ``_frombuffer`` for protocol 5, under
    their numpy 1.x and 2.x module names) and ``_codecs.encode(str, "latin1")`` (how Python 3
    pickles ``bytes`` with protocol 2); every other global (``os.system``, ``builtins.eval``,
    ``subprocess.Popen``, ...) raises :class:`UnsafePickleError` (a ``pickle.UnpicklingError``)
    before anything is called.

    Example:
        >>> import io, pickle
        >>> from ltfunc.cifar import SafeUnpickler
        >>> SafeUnpickler(io.BytesIO(pickle.dumps({b"labels": [1, 2]}))).load()
        {b'labels': [1, 2]}
        >>> SafeUnpickler(io.BytesIO(pickle.dumps(print))).load()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ltfunc.cifar.UnsafePickleError: SafeUnpickler: refusing to load builtins.print: ...
    """

    _allowed: dict[tuple[str, str], Callable[..., Any]] | None = None

    def find_class(self, module: str, name: str) -> Any:
        """Resolve ``module.name`` if it is one of the allowed numpy helpers, else raise.

        Args:
            module: The module named in the pickle.
            name: The attribute named in the pickle.

        Returns:
            The allowed callable.

        Raises:
            UnsafePickleError: Anything else.
        """
        if SafeUnpickler._allowed is None:
            SafeUnpickler._allowed = _numpy_helpers()
        found = SafeUnpickler._allowed.get((module, name))
        if found is None:
            raise UnsafePickleError(
                f"SafeUnpickler: refusing to load {module}.{name}: a CIFAR file holds only dicts, "
                "lists, strings and numpy arrays; this file may be malicious or not a CIFAR file"
            )
        return found


def safe_load(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`SafeUnpickler` (``encoding="latin1"`` for Python 2 pickles).

    Args:
        data: The pickle's bytes.

    Returns:
        The unpickled object.

    Raises:
        UnsafePickleError: A refused global (a ``pickle.UnpicklingError``); nothing was called.
        pickle.UnpicklingError: A malformed pickle.
        Exception: Whatever a truncated or corrupt pickle raises (``EOFError``, ``ValueError``, ...).

    Example:
        >>> import pickle, numpy as np
        >>> from ltfunc.cifar import safe_load
        >>> safe_load(pickle.dumps({b"data": np.zeros((1, 3), np.uint8)}, protocol=2))
        {b'data': array([[0, 0, 0]], dtype=uint8)}
    """
    return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()


# ---------------------------------------------------------------- files


def md5sum(path: str | Path) -> str:
    """The hex MD5 digest of a file (read in 1 MiB chunks).

    Args:
        path: The file.

    Returns:
        32 lowercase hex digits.

    Raises:
        OSError: The file cannot be read.

    Example:
        >>> import tempfile, pathlib
        >>> from ltfunc.cifar import md5sum
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "f"; _ = p.write_bytes(b"abc")
        >>> md5sum(p)
        '900150983cd24fb0d6963f7d28e17f72'
    """
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def missing_files(name: str, folder: str | Path) -> list[Path]:
    """The files of dataset ``name`` that are not in ``folder`` (``ROOT/<name>/``), in :data:`FILES` order.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        folder: The dataset folder that holds :data:`BASE_FOLDER`.

    Returns:
        The missing paths (empty if all are there).

    Raises:
        ValueError: Unknown ``name``. TypeError: ``folder`` not a path.

    Example:
        >>> from ltfunc.cifar import missing_files
        >>> [p.name for p in missing_files("cifar100", "/nonexistent")]
        ['train', 'test', 'meta']
    """
    func = "missing_files"
    check_choice(func, "name", name, NAMES)
    base = check_path(func, "folder", folder) / BASE_FOLDER[name]
    return [base / f for f in FILES[name] if not (base / f).is_file()]


def _read(path: Path, verify: bool, expected: str) -> Any:
    raw = path.read_bytes()
    if verify:
        got = hashlib.md5(raw, usedforsecurity=False).hexdigest()
        if got != expected:
            raise ValueError(
                f"load_dataset: {path} has MD5 {got}, expected the official {expected}: the file is "
                f"corrupt, truncated or not the official one. Fix: {_REDOWNLOAD_FIX}; or {_VERIFY_FIX}."
            )
    try:
        return safe_load(raw)
    except UnsafePickleError as e:
        raise UnsafePickleError(f"load_dataset: refusing to read {path}: {e}") from e
    except Exception as e:  # EOFError, ValueError, ... of a truncated or corrupt pickle
        raise ValueError(
            f"load_dataset: cannot read {path}: truncated or corrupt ({type(e).__name__}: {e}). "
            f"Fix: {_REDOWNLOAD_FIX}."
        ) from e


def _get(entry: Any, key: str, path: Path) -> Any:
    if not isinstance(entry, Mapping):
        raise ValueError(
            f"load_dataset: {path} is not a CIFAR file: it holds a {type(entry).__name__}, not a dict"
        )
    for k in (key, key.encode()):
        if k in entry:
            return entry[k]
    keys = sorted(k.decode("latin1") if isinstance(k, bytes) else str(k) for k in entry)
    raise ValueError(f"load_dataset: {path} is not a CIFAR file: no {key!r} entry (it has {keys})")


def _batch(name: str, path: Path, verify: bool) -> tuple[np.ndarray[Any, Any], list[int]]:
    entry = _read(path, verify, MD5[name][path.name])
    data = _get(entry, "data", path)
    labels = _get(entry, _LABELS[name], path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        what = (
            f"{data.dtype} array of shape {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise ValueError(f"load_dataset: {path}: data must be a uint8 array (N, 3072), got a {what}")
    if not isinstance(labels, (list, tuple)) or len(labels) != data.shape[0]:
        n = len(labels) if isinstance(labels, (list, tuple)) else type(labels).__name__
        raise ValueError(f"load_dataset: {path}: expected {data.shape[0]} labels (one per image), got {n}")
    k = _NUM_CLASSES[name]
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < k for v in labels):
        raise ValueError(f"load_dataset: {path}: labels must be ints in [0, {k})")
    return data, list(labels)


def _classes(name: str, path: Path, verify: bool) -> tuple[str, ...]:
    names = _get(_read(path, verify, MD5[name][path.name]), _CLASS_NAMES[name], path)
    k = _NUM_CLASSES[name]
    if not isinstance(names, (list, tuple)) or len(names) != k:
        raise ValueError(f"load_dataset: {path}: expected {k} class names")
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in names)


def _stack(name: str, base: Path, files: tuple[str, ...], verify: bool) -> tuple[Tensor, Tensor]:
    parts = [_batch(name, base / f, verify) for f in files]
    data = np.concatenate([d for d, _ in parts])  # a fresh, writable, contiguous array
    x = torch.from_numpy(data).view(-1, 3, 32, 32)  # channel planes, rows first: CHW
    y = torch.tensor([v for _, labels in parts for v in labels], dtype=torch.int64)
    return x, y


def read_cifar(name: str, folder: str | Path, *, verify: bool = True) -> CifarArrays:
    """Read CIFAR-10 or CIFAR-100 from ``folder`` (``ROOT/<name>/``) into CPU tensors.

    Every file is checked against :data:`MD5` first (with ``verify``) and unpickled with
    :class:`SafeUnpickler`; training images keep the files' order (``data_batch_1`` first).
    CIFAR-100 labels are the 100 fine labels.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        folder: The dataset folder holding :data:`BASE_FOLDER` ``[name]``.
        verify: Check the official MD5 checksums. Default ``True``; ``False`` for hand-made
            files in the same format (test fixtures, subsets).

    Returns:
        :class:`CifarArrays` with ``uint8 (N, 3, 32, 32)`` images and ``int64`` labels.

    Raises:
        ValueError: Unknown ``name``; a checksum mismatch (names the file and how to
            re-download or skip the check); a truncated, corrupt or malformed file (names it).
        UnsafePickleError: A file names a global other than numpy's array helpers (a
            ``pickle.UnpicklingError``; nothing in the file was called).
        FileNotFoundError: A file is missing (lists them; see :func:`missing_files`).
        TypeError: ``folder`` not a path, ``verify`` not a bool.

    Example:
        >>> from ltfunc.cifar import read_cifar
        >>> arrays = read_cifar("cifar10", "data/cifar10")  # doctest: +SKIP
        >>> arrays.train_x.shape, arrays.classes[:2]  # doctest: +SKIP
        (torch.Size([50000, 3, 32, 32]), ('airplane', 'automobile'))
    """
    func = "read_cifar"
    check_choice(func, "name", name, NAMES)
    path = check_path(func, "folder", folder)
    check_bool(func, "verify", verify)
    missing = missing_files(name, path)
    if missing:
        raise FileNotFoundError(f"{func}: missing {', '.join(map(str, missing))}")
    base = path / BASE_FOLDER[name]
    classes = _classes(name, base / _META[name], verify)
    train_x, train_y = _stack(name, base, _TRAIN[name], verify)
    test_x, test_y = _stack(name, base, _TEST[name], verify)
    return CifarArrays(train_x, train_y, test_x, test_y, classes)


def download(name: str, folder: str | Path) -> None:  # pragma: no cover - needs the internet
    """Download and extract the official archive into ``folder`` with torchvision (MD5-checked).

    Goes through ``torchvision.datasets.CIFAR10`` / ``CIFAR100`` with ``download=True``,
    which fetches https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (or the CIFAR-100
    one), checks the archive's and the files' MD5s and extracts :data:`BASE_FOLDER`.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        folder: The dataset folder (``ROOT/<name>/``); created if missing.

    Returns:
        None.

    Raises:
        ValueError: Unknown ``name``.
        OSError, RuntimeError: The download or the check failed (torchvision's errors).

    Example:
        >>> from ltfunc import cifar
        >>> cifar.download("cifar10", "data/cifar10")  # doctest: +SKIP
    """
    func = "download"
    check_choice(func, "name", name, NAMES)
    path = check_path(func, "folder", folder)
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    cls(str(path), train=True, download=True)
