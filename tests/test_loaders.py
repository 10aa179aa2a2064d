"""ltfunc.preload: an in-memory DataLoader equal to the original, batch for batch; and its refusals."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

import ltfunc
from ltfunc.loaders import PreloadedLoader, preload


def mnist(root: Path, transform: object) -> object:
    from torchvision import datasets

    return datasets.MNIST(str(root / "mnist"), train=False, download=False, transform=transform)


def to_tensor(normalize: bool = False) -> object:
    from torchvision import transforms as T

    steps = [T.ToTensor()]
    if normalize:
        steps.append(T.Normalize((0.1307,), (0.3081,)))
    return T.Compose(steps)


def assert_same_epochs(make: object, epochs: int = 2) -> None:
    """Two loaders made alike (same generator seed): the pre-loaded one yields the same batches."""
    original, fast = make(), preload(make())  # type: ignore[operator]
    assert isinstance(fast, PreloadedLoader) and len(fast) == len(original)
    for _ in range(epochs):
        got, want = list(fast), list(original)
        assert len(got) == len(want)
        for (x, y), (wx, wy) in zip(got, want, strict=True):
            assert x.dtype == wx.dtype and y.dtype == wy.dtype
            assert torch.equal(x, wx) and torch.equal(y, wy)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize(("shuffle", "drop_last"), [(True, True), (True, False), (False, False)])
def test_mnist_loader_is_reproduced_exactly(
    data_root: Path, normalize: bool, shuffle: bool, drop_last: bool
) -> None:
    ds = mnist(data_root, to_tensor(normalize))
    sub = Subset(ds, list(range(0, 2000, 3)))  # 667 examples: a partial last batch

    def make() -> DataLoader:
        gen = torch.Generator().manual_seed(7)
        return DataLoader(sub, batch_size=60, shuffle=shuffle, drop_last=drop_last, generator=gen)

    assert_same_epochs(make)


def test_the_global_rng_is_consumed_like_the_original(data_root: Path) -> None:
    """Without an explicit generator both draw their order from torch's global RNG, alike."""
    ds = Subset(mnist(data_root, to_tensor()), list(range(300)))
    torch.manual_seed(3)
    want = [y.tolist() for _ in range(2) for _, y in DataLoader(ds, batch_size=50, shuffle=True)]
    after_want = torch.rand(1)
    torch.manual_seed(3)
    fast = preload(DataLoader(ds, batch_size=50, shuffle=True))
    got = [y.tolist() for _ in range(2) for _, y in fast]
    assert got == want and torch.equal(torch.rand(1), after_want)


def write_cifar(root: Path, n: int = 40) -> Path:
    """A tiny CIFAR-10 in torchvision's on-disk layout, with the keys torchvision reads (the MD5
    check is switched off by the caller)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "labels": [int(v) for v in rng.integers(0, 10, n)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    return root


def test_cifar_loader_is_reproduced_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar as tv_cifar
    from torchvision import datasets, transforms

    monkeypatch.setattr(datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: True)
    ds = datasets.CIFAR10(
        str(write_cifar(tmp_path)),
        train=True,
        transform=transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))]
        ),
    )

    def make() -> DataLoader:
        return DataLoader(ds, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(1))

    assert_same_epochs(make)
    x, _ = next(iter(preload(make())))
    assert x.shape == (16, 3, 32, 32)


def test_tensor_dataset_and_device() -> None:
    ds = TensorDataset(torch.randn(10, 3), torch.arange(10))
    fast = preload(DataLoader(ds, batch_size=4), device="cpu")
    assert [y.tolist() for _, y in fast] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert fast.nbytes == 10 * 3 * 4 + 10 * 8 and "10 examples" in repr(fast)


def test_unsupported_loaders_are_refused_with_the_reason(data_root: Path) -> None:
    from torchvision import transforms as T

    ds = TensorDataset(torch.randn(10, 3), torch.arange(10))
    with pytest.raises(ValueError, match="custom collate_fn"):
        preload(DataLoader(ds, batch_size=4, collate_fn=lambda b: b))
    with pytest.raises(ValueError, match=r"is not a torch\.utils\.data\.DataLoader"):
        preload([(torch.zeros(1), torch.zeros(1))])
    flip = T.Compose([T.RandomRotation(10), T.ToTensor()])
    with pytest.raises(ValueError, match=r"do not start with ToTensor"):
        preload(DataLoader(mnist(data_root, flip), batch_size=8))
    with pytest.raises(ValueError, match="RandomSampler with replacement"):
        preload(DataLoader(ds, batch_size=4, sampler=torch.utils.data.RandomSampler(ds, replacement=True)))
    with pytest.raises(TypeError, match="max_bytes must be an int"):
        preload(DataLoader(ds, batch_size=4), max_bytes=1.5)  # type: ignore[arg-type]


def test_a_preload_that_does_not_fit_is_refused_before_allocating(data_root: Path) -> None:
    loader = DataLoader(mnist(data_root, to_tensor()), batch_size=60)
    # 10000 test images of 784 bytes + int64 labels
    with pytest.raises(ValueError, match=r"needs 7\.6 MiB on cpu but only 1\.0 MiB are allowed"):
        preload(loader, max_bytes=2**20)


def test_facade_train_all_preloads_and_trains_like_the_loader(data_root: Path) -> None:
    ds = Subset(mnist(data_root, to_tensor()), list(range(600)))

    def make() -> DataLoader:
        return DataLoader(ds, batch_size=60, shuffle=True, generator=torch.Generator().manual_seed(0))

    def run(loader: object) -> tuple[dict[str, torch.Tensor], ltfunc.LotteryTicket]:
        model = ltfunc.models.lenet300(seed=0)
        LT = ltfunc.LotteryTicket(model, "cpu", torch.optim.Adam(model.parameters(), 1e-3), compile=False)
        LT.train_all(loader, 25)  # 2.5 epochs: crosses epoch boundaries
        return ltfunc.get_params(model), LT

    loader = make()
    by_facade, LT = run(loader)
    assert isinstance(LT._preloaded[loader], PreloadedLoader)  # it did not iterate the DataLoader
    original = make()
    batches = [b for _ in range(3) for b in original][:25]  # what the original loader yields
    by_batches, _ = run(batches)
    assert ltfunc.tree_equal(by_facade, by_batches)


def test_facade_warns_once_for_a_loader_it_cannot_preload() -> None:
    ds = TensorDataset(torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,)))
    loader = DataLoader(
        ds,
        batch_size=8,
        collate_fn=lambda b: (torch.stack([x for x, _ in b]), torch.stack([y for _, y in b])),
    )
    LT = ltfunc.LotteryTicket(ltfunc.models.lenet300(seed=0), "cpu", compile=False)
    with pytest.warns(UserWarning, match="iterating the loader as given.*custom collate_fn"):
        LT.train_all(loader, 3)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LT.train_all(loader, 3)  # said once
