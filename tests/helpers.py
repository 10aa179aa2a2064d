"""Test helpers: tree comparisons, a small BatchNorm net, the masked reference loop, CIFAR fixture files."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import optree
import torch

from ltfunc import cifar


def tree_allclose(a: Any, b: Any, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    """True when both pytrees have the same structure and close tensors."""
    la, ta = optree.tree_flatten(a, none_is_leaf=True)
    lb, tb = optree.tree_flatten(b, none_is_leaf=True)
    if ta != tb:
        return False
    for x, y in zip(la, lb, strict=True):
        if isinstance(x, torch.Tensor):
            if x.shape != y.shape or not torch.allclose(x.float(), y.float(), rtol=rtol, atol=atol):
                return False
        elif x != y:
            return False
    return True


def tree_clone(tree: Any) -> Any:
    """Deep copy of a pytree of tensors, for purity checks."""
    return optree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, tree)


_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def assert_bit_identical(a: Any, b: Any) -> None:
    """Assert same structure and byte-identical tensors (NaN payloads and -0.0 included)."""
    la, ta = optree.tree_flatten(a, none_is_leaf=True)
    lb, tb = optree.tree_flatten(b, none_is_leaf=True)
    assert ta == tb, f"structure differs: {ta} vs {tb}"
    for i, (x, y) in enumerate(zip(la, lb, strict=True)):
        if not isinstance(x, torch.Tensor):
            assert x == y, f"leaf {i}: {x!r} != {y!r}"
            continue
        assert x.dtype == y.dtype and x.shape == y.shape, f"leaf {i}: dtype/shape differ"
        if x.dtype != torch.bool:
            x, y = x.view(_INT_OF_SIZE[x.element_size()]), y.view(_INT_OF_SIZE[y.element_size()])
        assert torch.equal(x.cpu(), y.cpu()), f"leaf {i} was modified"


class ConvBN(torch.nn.Module):
    """A small conv net with BatchNorm after the conv (2-D) and after the first fc layer (1-D).

    MNIST-shaped inputs ``(N, 1, 28, 28)``, 10 classes; prunable: ``conv.weight``,
    ``fc1.weight``, ``fc2.weight`` (never the BatchNorm weights).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc1 = torch.nn.Linear(4 * 13 * 13, 32)
        self.bn1 = torch.nn.BatchNorm1d(32)
        self.fc2 = torch.nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc2(torch.relu(self.bn1(self.fc1(x.flatten(1)))))


class Tiny(torch.nn.Module):
    """A 12-16-5 MLP: tiny and fast, for step/members/interpolation tests."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(12, 16)
        self.fc2 = torch.nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class TinyBN(torch.nn.Module):
    """BatchNorm after a bias-free layer (a bias before BN has a zero gradient, which Adam amplifies)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(12, 16, bias=False)
        self.bn = torch.nn.BatchNorm1d(16)
        self.fc2 = torch.nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


def train_reference(
    model: torch.nn.Module,
    make_optimizer: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer],
    mask: Mapping[str, torch.Tensor] | None,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.nn.Module, torch.optim.Optimizer, list[float]]:
    """Train a deep copy of ``model`` the classic eager way, as the reference for masked steps.

    ``nn.Module`` in training mode (BatchNorm updates its running statistics in place),
    ``torch.optim``, masked weights zeroed first, masked gradients zeroed before each
    ``optimizer.step()`` and the mask re-applied after it. Returns the trained copy, its
    optimizer (for ``ltfunc.optim.from_torch``) and the loss of every step.
    """
    ref = copy.deepcopy(model).train()
    named = dict(ref.named_parameters())
    mask = {} if mask is None else mask
    with torch.no_grad():
        for k, m in mask.items():
            named[k].mul_(m)
    opt = make_optimizer(ref.parameters())
    losses = []
    for x, y in batches:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(ref(x), y)
        loss.backward()
        for k, m in mask.items():
            named[k].grad.mul_(m)
        opt.step()
        with torch.no_grad():
            for k, m in mask.items():
                named[k].mul_(m)
        losses.append(loss.item())
    return ref, opt, losses


CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def write_cifar(
    root: Path,
    name: str,
    *,
    per_file: int = 60,
    n_test: int = 50,
    seed: int = 0,
    protocol: int = 2,
    str_keys: bool = False,
) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Write a tiny dataset in CIFAR's format under ``root/<name>/``; return ``{file: (data, labels)}``."""
    rng = np.random.default_rng(seed)
    base = root / name / cifar.BASE_FOLDER[name]
    base.mkdir(parents=True, exist_ok=True)
    k = 10 if name == "cifar10" else 100
    label_key = "labels" if name == "cifar10" else "fine_labels"

    def key(s: str) -> str | bytes:
        return s if str_keys else s.encode()

    def dump(fname: str, obj: dict) -> None:
        (base / fname).write_bytes(pickle.dumps(obj, protocol=protocol))

    written = {}
    train = tuple(f"data_batch_{i}" for i in range(1, 6)) if name == "cifar10" else ("train",)
    test = "test_batch" if name == "cifar10" else "test"
    for fname in (*train, test):
        n = n_test if fname == test else per_file
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, k, size=n)]
        entry = {
            key("batch_label"): key(f"{fname} of 1"),
            key(label_key): labels,
            key("data"): data,
            key("filenames"): [key(f"img_{i}.png") for i in range(n)],
        }
        if name == "cifar100":
            entry[key("coarse_labels")] = [v // 5 for v in labels]
        dump(fname, entry)
        written[fname] = (data, labels)
    if name == "cifar10":
        dump("batches.meta", {key("label_names"): [key(c) for c in CIFAR10_CLASSES], key("num_vis"): 3072})
    else:
        dump(
            "meta",
            {key("fine_label_names"): [key(f"c{i}") for i in range(100)], key("coarse_label_names"): []},
        )
    return written


def tiny_dataset(root: Any = None, device: str = "cpu", val_size: int = 0) -> Any:
    """A dataset factory for import paths (``tests.helpers:tiny_dataset``): 300 3x8x8 images
    whose class is the sign of one pixel (200 train, ``val_size`` of them held out, 100 test)."""
    from ltfunc.data import Dataset, Split

    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 3, 8, 8, generator=g).to(device)
    y = (x[:, 0, 4, 4] > 0).long()
    return Dataset(
        "tiny",
        Split(x[val_size:200], y[val_size:200]),
        Split(x[:val_size], y[:val_size]),
        Split(x[200:], y[200:]),
    )
