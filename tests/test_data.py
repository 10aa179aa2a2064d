"""Tests for ltfunc.data: real MNIST / Fashion-MNIST loading, validation split, batch iterators."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import torch
import torchvision

from ltfunc import data
from ltfunc.data import DATASETS, Dataset, Split, batches, load_dataset, resolve_root

# Published class counts of the training / test sets (LeCun et al.; Xiao et al. 2017).
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FASHION_TRAIN_COUNTS = [6000] * 10
FASHION_TEST_COUNTS = [1000] * 10


@pytest.fixture(scope="module")
def mnist(data_root: Path) -> Dataset:
    return load_dataset("mnist", data_root, download=False)


@pytest.fixture(scope="module")
def mnist_val(data_root: Path) -> Dataset:
    return load_dataset("mnist", data_root, val_size=5000, split_seed=0, download=False)


@pytest.fixture(scope="module")
def fashion(data_root: Path) -> Dataset:
    return load_dataset("fashion-mnist", data_root, download=False)


def fingerprints(x: torch.Tensor) -> list[float]:
    """One float64 random projection per image; distinct for MNIST's 60000 distinct training images."""
    proj = torch.randn(x[0].numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(123))
    return (x.flatten(1).double() @ proj).tolist()


def synthetic(n: int) -> Split:
    """A split whose features encode the example index, so batches can be traced back."""
    return Split(x=torch.arange(n, dtype=torch.float32).reshape(n, 1).repeat(1, 3), y=torch.arange(n))


# ---------------------------------------------------------------- loading real data


@pytest.mark.parametrize(
    ("fixture", "mean", "std", "train_counts", "test_counts"),
    [
        ("mnist", 0.1307, 0.3081, MNIST_TRAIN_COUNTS, MNIST_TEST_COUNTS),
        ("fashion", 0.2860, 0.3530, FASHION_TRAIN_COUNTS, FASHION_TEST_COUNTS),
    ],
)
def test_real_dataset_shapes_dtypes_and_normalization(
    request: pytest.FixtureRequest,
    fixture: str,
    mean: float,
    std: float,
    train_counts: list[int],
    test_counts: list[int],
) -> None:
    ds = request.getfixturevalue(fixture)
    assert ds.name in DATASETS
    assert ds.val is None
    assert ds.train.x.shape == (60000, 1, 28, 28) and ds.test.x.shape == (10000, 1, 28, 28)
    assert ds.train.x.dtype == torch.float32 and ds.test.x.dtype == torch.float32
    assert ds.train.y.dtype == torch.int64 and ds.test.y.dtype == torch.int64
    assert ds.train.size == 60000 and ds.test.size == 10000
    assert torch.bincount(ds.train.y, minlength=10).tolist() == train_counts
    assert torch.bincount(ds.test.y, minlength=10).tolist() == test_counts
    # The standard constants are the training-pixel mean/std, so the normalized train set is ~N(0, 1).
    x = ds.train.x.double()
    assert abs(x.mean().item()) < 1e-3
    assert abs(x.std().item() - 1.0) < 1e-3
    # Pixels are 0..255: black maps to -mean/std and white to (1-mean)/std.
    assert ds.train.x.min().item() == pytest.approx(-mean / std, abs=1e-6)
    assert ds.train.x.max().item() == pytest.approx((1 - mean) / std, abs=1e-6)


def test_loaded_images_match_torchvision(mnist: Dataset, data_root: Path) -> None:
    raw = torchvision.datasets.MNIST(str(data_root / "mnist"), train=False, download=False)
    img, label = raw[17]  # PIL path: the reference a DataLoader pipeline would see
    ref = torchvision.transforms.functional.to_tensor(img)
    ref = torchvision.transforms.functional.normalize(ref, [0.1307], [0.3081])
    torch.testing.assert_close(mnist.test.x[17], ref)
    assert int(mnist.test.y[17]) == label


def test_validation_split_is_disjoint_complete_and_ordered(mnist: Dataset, mnist_val: Dataset) -> None:
    assert mnist_val.val is not None
    assert mnist_val.train.x.shape == (55000, 1, 28, 28) and mnist_val.val.x.shape == (5000, 1, 28, 28)
    assert mnist_val.val.y.dtype == torch.int64
    fp_full = fingerprints(mnist.train.x)
    assert len(set(fp_full)) == 60000  # the projection tells MNIST's training images apart
    fp_train, fp_val = fingerprints(mnist_val.train.x), fingerprints(mnist_val.val.x)
    assert not set(fp_train) & set(fp_val)
    assert sorted(fp_train + fp_val) == sorted(fp_full)
    # Both parts keep the dataset order and pair each image with its own label.
    position = {f: i for i, f in enumerate(fp_full)}
    for part, fps in ((mnist_val.train, fp_train), (mnist_val.val, fp_val)):
        idx = torch.tensor([position[f] for f in fps])
        assert bool((idx[1:] > idx[:-1]).all())
        assert torch.equal(part.y, mnist.train.y[idx])
    # The test split is untouched by the validation split.
    assert torch.equal(mnist_val.test.x, mnist.test.x)


def test_validation_split_depends_only_on_split_seed(data_root: Path, mnist_val: Dataset) -> None:
    torch.manual_seed(999)  # the global RNG must not matter
    again = load_dataset("mnist", data_root, val_size=5000, split_seed=0, download=False)
    other = load_dataset("mnist", data_root, val_size=5000, split_seed=1, download=False)
    assert mnist_val.val is not None and again.val is not None and other.val is not None
    assert torch.equal(again.val.x, mnist_val.val.x) and torch.equal(again.train.y, mnist_val.train.y)
    assert not torch.equal(other.val.x, mnist_val.val.x)


def test_root_from_environment_and_explicit_root_wins(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(data.ENV_ROOT, str(data_root))
    assert resolve_root() == data_root
    ds = load_dataset("mnist", download=False)
    assert ds.test.x.shape == (10000, 1, 28, 28)
    monkeypatch.setenv(data.ENV_ROOT, str(tmp_path))  # empty folder
    assert load_dataset("mnist", data_root, download=False).test.size == 10000
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_dataset("mnist", download=False)


def test_default_root_is_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(data.ENV_ROOT, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_root() == tmp_path / ".cache" / "ltfunc" / "data"
    assert resolve_root("~/x") == tmp_path / "x"


# ---------------------------------------------------------------- missing data and bad input


def test_missing_root_without_download_names_folder_and_fixes(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("fashion-mnist", tmp_path, download=False)
    msg = str(info.value)
    assert msg.startswith("load_dataset: ")
    assert str(tmp_path / "fashion-mnist") in msg
    assert "--data-root" in msg and "LTFUNC_DATA_ROOT" in msg and "download" in msg


def test_failed_download_becomes_file_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def offline(self: torchvision.datasets.MNIST) -> None:
        calls.append(self.raw_folder)
        os.makedirs(self.raw_folder, exist_ok=True)  # as torchvision does before fetching
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no network")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    with pytest.raises(FileNotFoundError, match="download failed") as info:
        load_dataset("mnist", tmp_path)  # download=None: try, then explain
    assert str(tmp_path / "mnist") in str(info.value)
    assert "no network" in str(info.value)
    assert calls == [str(tmp_path / "mnist" / "MNIST" / "raw")]
    assert list(tmp_path.iterdir()) == []  # the failed attempt left no empty folders behind
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "keep.txt").write_text("user file")
    with pytest.raises(FileNotFoundError, match="download failed"):
        load_dataset("mnist", tmp_path, download=True)
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == ["keep.txt"]


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (
            {"name": "imagenet"},
            ValueError,
            r"^load_dataset: name='imagenet' is not supported\. "
            r"Supported: 'mnist', 'fashion-mnist', 'cifar10', 'cifar100'",
        ),
        ({"name": 3}, ValueError, r"^load_dataset: name=3 is not supported"),
        ({"val_size": -1}, ValueError, r"^load_dataset: val_size must be in \[0, 60000\) for mnist, got -1"),
        ({"val_size": 60000}, ValueError, r"^load_dataset: val_size must be in \[0, 60000\)"),
        ({"val_size": 5000.0}, TypeError, r"^load_dataset: val_size must be an int, got float"),
        ({"val_size": True}, TypeError, r"^load_dataset: val_size must be an int, got bool"),
        ({"split_seed": "0"}, TypeError, r"^load_dataset: split_seed must be an int"),
        ({"download": "yes"}, TypeError, r"^load_dataset: download must be None, True or False"),
        ({"verify": 1}, TypeError, r"^load_dataset: verify must be a bool"),
        ({"name": "cifar10", "val_size": 50000}, ValueError, r"val_size must be in \[0, 50000\) for cifar10"),
        ({"device": "bogus"}, ValueError, r"^load_dataset: device='bogus' is not usable"),
        ({"device": 0.5}, TypeError, r"^load_dataset: device must be a str or torch.device"),
        ({"root": 5}, TypeError, r"^load_dataset: root must be a str or path"),
    ],
)
def test_load_dataset_rejects_bad_input_before_reading(
    tmp_path: Path, kwargs: dict, exc: type[Exception], match: str
) -> None:
    args = {"name": "mnist", "root": tmp_path, "download": False, **kwargs}
    with pytest.raises(exc, match=match):
        load_dataset(**args)
    assert list(tmp_path.iterdir()) == []  # nothing created or downloaded


# ---------------------------------------------------------------- batches


def take(it, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(itertools.islice(it, k))


def test_batches_same_seed_same_sequence_different_seed_differs() -> None:
    split = synthetic(50)
    a = take(batches(split, 8, seed=3), 20)  # crosses three epochs
    b = take(batches(split, 8, seed=3), 20)
    c = take(batches(split, 8, seed=4), 20)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True))
    assert not all(torch.equal(ya, yc) for (_, ya), (_, yc) in zip(a, c, strict=True))


def test_batches_generator_equals_seed_and_is_advanced() -> None:
    split = synthetic(30)
    gen = torch.Generator().manual_seed(7)
    via_gen = take(batches(split, 10, generator=gen), 6)
    via_seed = take(batches(split, 10, seed=7), 6)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(via_gen, via_seed, strict=True))
    # Two epochs drew two permutations from the caller's generator.
    ref = torch.Generator().manual_seed(7)
    torch.randperm(30, generator=ref)
    torch.randperm(30, generator=ref)
    assert torch.equal(gen.get_state(), ref.get_state())


def test_batches_without_seed_follow_global_rng() -> None:
    split = synthetic(40)
    torch.manual_seed(11)
    a = take(batches(split, 8), 5)
    torch.manual_seed(11)
    b = take(batches(split, 8), 5)
    assert all(torch.equal(x[1], y[1]) for x, y in zip(a, b, strict=True))


def test_batches_every_sample_once_per_epoch_and_reshuffled() -> None:
    split = synthetic(24)
    it = batches(split, 6, seed=0)
    epochs = [torch.cat([y for _, y in take(it, 4)]) for _ in range(3)]
    for e in epochs:
        assert sorted(e.tolist()) == list(range(24))
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[1], epochs[2])


def test_batches_rows_stay_paired_and_split_is_untouched() -> None:
    split = synthetic(20)
    before = (split.x.clone(), split.y.clone())
    for x, y in take(batches(split, 7, seed=1, drop_last=False), 9):
        assert x.shape[1:] == (3,) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(x[:, 0].long(), y) and torch.equal(x[:, 2].long(), y)
    assert torch.equal(split.x, before[0]) and torch.equal(split.y, before[1])


def test_drop_last_true_gives_full_batches_only() -> None:
    split = synthetic(10)
    got = take(batches(split, 4, seed=0), 6)  # 2 batches per epoch, 3 epochs
    assert [y.numel() for _, y in got] == [4] * 6
    for e in range(3):
        ids = torch.cat([got[2 * e][1], got[2 * e + 1][1]]).tolist()
        assert len(set(ids)) == 8


def test_drop_last_false_ends_each_epoch_with_the_remainder() -> None:
    split = synthetic(10)
    got = take(batches(split, 4, seed=0, drop_last=False), 6)
    assert [y.numel() for _, y in got] == [4, 4, 2, 4, 4, 2]
    assert sorted(torch.cat([y for _, y in got[:3]]).tolist()) == list(range(10))
    assert sorted(torch.cat([y for _, y in got[3:]]).tolist()) == list(range(10))
    big = take(batches(split, 64, seed=0, drop_last=False), 2)
    assert [y.numel() for _, y in big] == [10, 10]


def test_batches_cover_real_mnist_epoch(mnist: Dataset) -> None:
    it = batches(mnist.train, 60, seed=0)
    epoch = take(it, 1000)  # 60000 / 60
    assert all(x.shape == (60, 1, 28, 28) and x.device == mnist.train.x.device for x, _ in epoch)
    labels = torch.cat([y for _, y in epoch])
    assert torch.bincount(labels, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    first = torch.cat([x for x, _ in epoch[:5]])
    assert len(set(fingerprints(first))) == 300  # no repeats inside the epoch's first batches


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        ((synthetic(10), 0), {"seed": 0}, ValueError, r"^batches: batch_size must be in \[1, 10\]"),
        ((synthetic(10), 11), {"seed": 0}, ValueError, r"^batches: batch_size must be in \[1, 10\].*got 11"),
        (
            (synthetic(10), -3),
            {"seed": 0, "drop_last": False},
            ValueError,
            r"^batches: batch_size must be >= 1, got -3",
        ),
        ((synthetic(10), 2.0), {"seed": 0}, TypeError, r"^batches: batch_size must be an int, got float"),
        ((synthetic(10), True), {"seed": 0}, TypeError, r"^batches: batch_size must be an int, got bool"),
        (
            (synthetic(10), 2),
            {"seed": 0, "generator": torch.Generator()},
            ValueError,
            r"^batches: give seed= or generator=",
        ),
        ((synthetic(10), 2), {"seed": "0"}, TypeError, r"^batches: seed must be an int"),
        ((synthetic(10), 2), {"generator": 0}, TypeError, r"^batches: generator must be a torch.Generator"),
        ((synthetic(10), 2), {"seed": 0, "drop_last": 1}, TypeError, r"^batches: drop_last must be a bool"),
        ((torch.zeros(10, 3), 2), {"seed": 0}, TypeError, r"^batches: split must be a Split"),
        (
            ((torch.zeros(10, 3), torch.zeros(9)), 2),
            {"seed": 0},
            ValueError,
            r"same first dimension.*\(10, 3\) and \(9,\)",
        ),
        (((torch.zeros(0, 3), torch.zeros(0)), 2), {"seed": 0}, ValueError, r"^batches: split is empty"),
    ],
)
def test_batches_rejects_bad_input_eagerly(
    args: tuple, kwargs: dict, exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        batches(*args, **kwargs)  # raised at the call, not at the first next()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_on_cuda_match_cpu_for_the_same_seed() -> None:
    cpu = synthetic(50)
    gpu = Split(cpu.x.cuda(), cpu.y.cuda())
    a = take(batches(cpu, 8, seed=5), 10)
    b = take(batches(gpu, 8, seed=5), 10)
    assert all(yb.is_cuda and torch.equal(ya, yb.cpu()) for (_, ya), (_, yb) in zip(a, b, strict=True))
    gen = torch.Generator(device="cuda").manual_seed(5)
    c = take(batches(gpu, 8, generator=gen), 10)
    assert all(yc.is_cuda for _, yc in c)
