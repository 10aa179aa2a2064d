"""CIFAR-10 / CIFAR-100: the safe reader, checksums, load_dataset, PixelSplit in batches and evaluate.

The fixtures are tiny files in the real format (pickled dicts with bytes keys, ``data`` a
``uint8`` array ``(N, 3072)``, labels a list of ints), so they load only with ``verify=False``.
"""

from __future__ import annotations

import copy
import io
import itertools
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import ltfunc
from ltfunc import cifar
from ltfunc.cifar import SafeUnpickler, UnsafePickleError, read_cifar, safe_load
from ltfunc.data import PIXEL_NORMALIZATION, Dataset, PixelSplit, Split, batches, load_dataset
from ltfunc.evaluation import evaluate
from tests.helpers import CIFAR10_CLASSES, write_cifar


@pytest.fixture
def c10(tmp_path: Path) -> tuple[Path, dict[str, tuple[np.ndarray, list[int]]]]:
    return tmp_path, write_cifar(tmp_path, "cifar10")


def expected(written: dict, files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    data = np.concatenate([written[f][0] for f in files])
    labels = [v for f in files for v in written[f][1]]
    return torch.from_numpy(data).view(-1, 3, 32, 32), torch.tensor(labels)


class Flat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


# ---------------------------------------------------------------- loading


def test_cifar10_loads_into_uint8_pixel_splits(c10) -> None:
    root, written = c10
    ds = load_dataset("cifar10", root, verify=False, download=False)
    assert isinstance(ds, Dataset) and ds.name == "cifar10" and ds.val is None
    assert isinstance(ds.train, PixelSplit) and isinstance(ds.test, PixelSplit)
    assert ds.train.x.shape == (300, 3, 32, 32) and ds.test.x.shape == (50, 3, 32, 32)
    assert ds.train.x.dtype == torch.uint8 and ds.train.y.dtype == torch.int64
    x, y = expected(written, [f"data_batch_{i}" for i in range(1, 6)])
    assert torch.equal(ds.train.x, x) and torch.equal(ds.train.y, y)  # file order, CHW planes
    tx, ty = expected(written, ["test_batch"])
    assert torch.equal(ds.test.x, tx) and torch.equal(ds.test.y, ty)
    # pixel 0 of image 0: data[0, 0] red, data[0, 1024] green, data[0, 1024 + 33] green at (1, 1)
    d0 = written["data_batch_1"][0][0]
    assert ds.train.x[0, 0, 0, 0] == d0[0] and ds.train.x[0, 1, 0, 0] == d0[1024]
    assert ds.train.x[0, 1, 1, 1] == d0[1024 + 33]
    assert ds.train.normalization == PIXEL_NORMALIZATION["cifar10"]


@pytest.mark.parametrize(("protocol", "str_keys"), [(2, False), (2, True), (4, False), (5, False)])
def test_cifar100_fine_labels_any_pickle_protocol_and_key_kind(
    tmp_path: Path, protocol: int, str_keys: bool
) -> None:
    written = write_cifar(tmp_path, "cifar100", per_file=80, protocol=protocol, str_keys=str_keys)
    ds = load_dataset("cifar100", tmp_path, verify=False, download=False)
    x, y = expected(written, ["train"])
    assert torch.equal(ds.train.x, x) and torch.equal(ds.train.y, y)
    assert int(ds.train.y.max()) > 9  # fine labels, not coarse
    assert ds.test.size == 50
    assert ds.train.normalization == PIXEL_NORMALIZATION["cifar100"]
    arrays = read_cifar("cifar100", tmp_path / "cifar100", verify=False)
    assert arrays.classes[:2] == ("c0", "c1") and len(arrays.classes) == 100


def test_read_cifar_classes_and_layout(c10) -> None:
    root, _ = c10
    arrays = read_cifar("cifar10", root / "cifar10", verify=False)
    assert list(arrays.classes) == CIFAR10_CLASSES
    assert arrays.train_x.is_contiguous() and arrays.train_x.device.type == "cpu"


def test_validation_split_is_disjoint_complete_ordered_and_seeded(c10) -> None:
    root, _ = c10
    full = load_dataset("cifar10", root, verify=False, download=False)
    ds = load_dataset("cifar10", root, val_size=40, split_seed=3, verify=False, download=False)
    assert ds.val is not None and isinstance(ds.val, PixelSplit)
    assert ds.train.size == 260 and ds.val.size == 40
    rows = {bytes(r.numpy()): i for i, r in enumerate(full.train.x.flatten(1))}
    assert len(rows) == 300  # random images are distinct
    idx_train = [rows[bytes(r.numpy())] for r in ds.train.x.flatten(1)]
    idx_val = [rows[bytes(r.numpy())] for r in ds.val.x.flatten(1)]
    assert sorted(idx_train + idx_val) == list(range(300))
    assert idx_train == sorted(idx_train) and idx_val == sorted(idx_val)
    assert torch.equal(ds.val.y, full.train.y[idx_val]) and torch.equal(ds.train.y, full.train.y[idx_train])
    again = load_dataset("cifar10", root, val_size=40, split_seed=3, verify=False, download=False)
    other = load_dataset("cifar10", root, val_size=40, split_seed=4, verify=False, download=False)
    assert again.val is not None and other.val is not None
    assert torch.equal(again.val.x, ds.val.x) and not torch.equal(other.val.x, ds.val.x)
    # the same split as the MNIST path draws: one seeded permutation
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(3))
    assert idx_val == perm[:40].sort().values.tolist()


def test_val_size_must_be_smaller_than_the_files(c10) -> None:
    root, _ = c10
    with pytest.raises(
        ValueError, match=r"val_size must be in \[0, 300\) for cifar10 \(the files in .* hold 300"
    ):
        load_dataset("cifar10", root, val_size=300, verify=False, download=False)
    with pytest.raises(ValueError, match=r"val_size must be in \[0, 50000\) for cifar10, got 50000"):
        load_dataset("cifar10", root, val_size=50000, verify=False, download=False)


def test_verify_must_be_a_bool(c10) -> None:
    with pytest.raises(TypeError, match=r"^load_dataset: verify must be a bool"):
        load_dataset("cifar10", c10[0], verify="no", download=False)  # type: ignore[arg-type]


# ---------------------------------------------------------------- checksums and bad files


def test_md5_checked_by_default_mismatch_names_file_and_fix(c10) -> None:
    root, _ = c10
    with pytest.raises(ValueError) as info:
        load_dataset("cifar10", root, download=False)
    msg = str(info.value)
    assert msg.startswith("load_dataset: ")
    assert "batches.meta" in msg and str(root / "cifar10" / "cifar-10-batches-py") in msg
    assert cifar.MD5["cifar10"]["batches.meta"] in msg  # the expected checksum
    assert "verify=False" in msg and "download=True" in msg and "--download" in msg


def test_md5_passes_for_the_listed_checksums(c10, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = c10
    base = root / "cifar10" / "cifar-10-batches-py"
    sums = {f: cifar.md5sum(base / f) for f in cifar.FILES["cifar10"]}
    monkeypatch.setitem(cifar.MD5, "cifar10", sums)
    assert load_dataset("cifar10", root, download=False).train.size == 300
    raw = bytearray((base / "data_batch_3").read_bytes())
    raw[len(raw) // 2] ^= 1  # one pixel off by one: still a valid pickle
    (base / "data_batch_3").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"data_batch_3 has MD5 [0-9a-f]{32}, expected the official"):
        load_dataset("cifar10", root, download=False)


def test_checksums_are_torchvisions() -> None:
    for name, cls in (("cifar10", torchvision.datasets.CIFAR10), ("cifar100", torchvision.datasets.CIFAR100)):
        listed = dict(cls.train_list + cls.test_list) | {cls.meta["filename"]: cls.meta["md5"]}
        assert cifar.MD5[name] == listed
        assert cifar.BASE_FOLDER[name] == cls.base_folder
        assert set(cifar.FILES[name]) == set(listed)


def test_truncated_file_names_the_file(c10) -> None:
    root, _ = c10
    path = root / "cifar10" / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"cannot read .*data_batch_2: truncated or corrupt"):
        load_dataset("cifar10", root, verify=False, download=False)
    path.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match=r"cannot read .*data_batch_2"):
        load_dataset("cifar10", root, verify=False, download=False)


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ([1, 2], r"data_batch_1 is not a CIFAR file: it holds a list"),
        ({b"labels": [0]}, r"data_batch_1 is not a CIFAR file: no 'data' entry \(it has \['labels'\]\)"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, r"no 'labels' entry"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, r"data must be a uint8 array"),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, r"\(N, 3072\), got a uint8 array"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, r"expected 2 labels .*got 1"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, r"labels must be ints in \[0, 10\)"),
    ],
)
def test_malformed_content_names_the_file(c10, entry: object, match: str) -> None:
    root, _ = c10
    (root / "cifar10" / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.raises(ValueError, match=match):
        load_dataset("cifar10", root, verify=False, download=False)


class RunsCommand:
    """Unpickling this would run a shell command (the classic pickle exploit)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_malicious_pickle_is_refused_and_never_runs(c10, tmp_path: Path) -> None:
    root, _ = c10
    marker = tmp_path / "pwned"
    payload = {b"data": RunsCommand(f"touch {marker}"), b"labels": [0]}
    (root / "cifar10" / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(
        UnsafePickleError, match=r"refusing to read .*data_batch_1: .*refusing to load (posix|nt)\.system"
    ):
        load_dataset("cifar10", root, verify=False, download=False)
    assert not marker.exists()
    assert issubclass(UnsafePickleError, pickle.UnpicklingError)


@pytest.mark.parametrize(
    "payload",
    [
        RunsCommand("true"),
        b"cbuiltins\neval\n(S'1+1'\ntR.",
        b"csubprocess\nPopen\n((S'true'\nttR.",
        b"cbuiltins\ngetattr\n(cnumpy\nndarray\nS'tofile'\ntR.",
        b"c_codecs\nencode\n(Vabc\nVrot13\ntR.",
        b"cnumpy\ndtype\n(VO\nI00\nI01\ntR.",
    ],
)
def test_safe_unpickler_refuses_everything_but_numpy_arrays(payload: object) -> None:
    data = payload if isinstance(payload, bytes) else pickle.dumps(payload, protocol=2)
    with pytest.raises(UnsafePickleError):
        safe_load(data)


def test_safe_unpickler_reads_numpy_arrays_of_every_protocol() -> None:
    a = np.arange(24, dtype=np.uint8).reshape(2, 12)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        out = safe_load(pickle.dumps({b"data": a, "labels": [1, 2], b"x": b"bytes"}, protocol=protocol))
        assert np.array_equal(out[b"data"], a) and out["labels"] == [1, 2] and out[b"x"] == b"bytes"
    legacy = pickle.dumps(a, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert np.array_equal(SafeUnpickler(io.BytesIO(legacy)).load(), a)  # numpy 1.x name


# ---------------------------------------------------------------- missing files and download


def test_missing_folder_without_download_names_folder_and_fixes(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("cifar100", tmp_path, download=False)
    msg = str(info.value)
    assert msg.startswith("load_dataset: cifar100 not found in ")
    assert f"no folder {tmp_path / 'cifar100' / 'cifar-100-python'}" in msg
    assert (
        "download=False" in msg and "--download" in msg and "--data-root" in msg and "LTFUNC_DATA_ROOT" in msg
    )
    assert list(tmp_path.iterdir()) == []


def test_missing_files_are_named(c10) -> None:
    root, _ = c10
    (root / "cifar10" / "cifar-10-batches-py" / "data_batch_4").unlink()
    (root / "cifar10" / "cifar-10-batches-py" / "batches.meta").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"missing data_batch_4, batches.meta in .*cifar-10-batches-py"
    ):
        load_dataset("cifar10", root, verify=False, download=False)
    assert [p.name for p in cifar.missing_files("cifar10", root / "cifar10")] == [
        "data_batch_4",
        "batches.meta",
    ]


def test_failed_download_becomes_file_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, Path]] = []

    def offline(name: str, folder: Path) -> None:
        calls.append((name, folder))
        folder.mkdir(parents=True, exist_ok=True)  # as torchvision does before fetching
        raise RuntimeError("Error downloading cifar-10-python.tar.gz: no network")

    monkeypatch.setattr(cifar, "download", offline)
    with pytest.raises(FileNotFoundError, match=r"download failed.*no network") as info:
        load_dataset("cifar10", tmp_path)  # download=None: try, then explain
    assert str(tmp_path / "cifar10") in str(info.value)
    assert calls == [("cifar10", tmp_path / "cifar10")]
    assert list(tmp_path.iterdir()) == []  # the failed attempt left no empty folder behind
    with pytest.raises(FileNotFoundError, match="download failed"):
        load_dataset("cifar10", tmp_path, download=True)


def test_present_files_are_not_downloaded_again(c10, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cifar, "download", lambda *a: pytest.fail("downloaded"))
    assert load_dataset("cifar10", c10[0], verify=False, download=True).test.size == 50


def test_import_ltfunc_does_not_import_torchvision() -> None:
    code = "import sys, ltfunc\nprint('torchvision' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- normalization on fetch


def test_normalization_matches_torchvisions_to_tensor_and_normalize(c10) -> None:
    root, _ = c10
    ds = load_dataset("cifar10", root, verify=False, download=False)
    norm = ds.train.normalization
    tf = torchvision.transforms
    for i in (0, 17, 299):
        img = torchvision.transforms.functional.to_pil_image(ds.train.x[i])
        ref = tf.Normalize(norm.mean, norm.std)(tf.ToTensor()(img))
        torch.testing.assert_close(ds.train.normalized().x[i], ref, rtol=0, atol=1e-6)


def test_batches_of_a_pixel_split_are_normalized_rows(c10) -> None:
    root, _ = c10
    ds = load_dataset("cifar10", root, verify=False, download=False)
    flat = ds.train.normalized()
    assert type(flat) is Split and flat.x.dtype == torch.float32
    raw = list(itertools.islice(batches(ds.train, 32, seed=5), 12))
    ref = list(itertools.islice(batches(flat, 32, seed=5), 12))
    for (xa, ya), (xb, yb) in zip(raw, ref, strict=True):
        assert xa.dtype == torch.float32 and torch.equal(xa, xb) and torch.equal(ya, yb)
    x, _ = ds.train  # still an (x, y) pair of raw pixels
    assert x.dtype == torch.uint8 and len(ds.train) == 2


@pytest.mark.parametrize("batch_size", [7, 64, 1000])
def test_evaluate_pixel_split_equals_float_copy(c10, batch_size: int) -> None:
    root, _ = c10
    ds = load_dataset("cifar10", root, verify=False, download=False)
    torch.manual_seed(0)
    model = Flat()
    p = ltfunc.get_params(model)
    mask = ltfunc.prune.magnitude(p, ltfunc.masks.ones(p), rate=0.5)
    for split in (ds.train, ds.test):
        assert evaluate(model, p, None, split, batch_size=batch_size) == evaluate(
            model, p, None, split.normalized(), batch_size=batch_size
        )
        assert evaluate(model, p, mask, split, batch_size=batch_size) == evaluate(
            model, p, mask, split.normalized(), batch_size=batch_size
        )
    loss, acc = evaluate(model, p, None, ds.test)
    assert loss > 0 and 0 <= acc <= 1


def test_trainer_trains_and_evaluates_on_pixel_splits(c10) -> None:
    root, _ = c10
    ds = load_dataset("cifar10", root, val_size=50, verify=False, download=False)
    model = Flat()
    w = ltfunc.Weights.of(model)
    step = ltfunc.make_train_step(model, ltfunc.optim.sgd(lr=0.01), compile=False)
    ev = ltfunc.make_evaluator(model, {"val": ds.val, "test": ds.test})
    trainer = ltfunc.make_trainer(step, ds.train, iterations=6, batch_size=25, eval_every=3, evaluate=ev)
    out = ltfunc.train_round(trainer, w, ltfunc.masks.ones(w.params))
    assert [r["iteration"] for r in out.history] == [3, 6]
    assert all(np.isfinite(r["train_loss"]) and 0 <= r["val_accuracy"] <= 1 for r in out.history)


# ---------------------------------------------------------------- PixelSplit as a value


def test_pixel_split_is_a_pair_that_keeps_its_normalization() -> None:
    norm = PIXEL_NORMALIZATION["cifar100"]
    s = PixelSplit(torch.zeros(3, 3, 4, 4, dtype=torch.uint8), torch.arange(3), norm)
    assert isinstance(s, Split) and isinstance(s, tuple) and len(s) == 2 and s.size == 3
    for again in (pickle.loads(pickle.dumps(s)), copy.copy(s), copy.deepcopy(s)):
        assert type(again) is PixelSplit and again.normalization == norm and torch.equal(again.x, s.x)
    moved = s._replace(y=torch.ones(3, dtype=torch.long))
    assert type(moved) is PixelSplit and moved.normalization == norm and moved.y.sum() == 3
    with pytest.raises(ValueError, match="unexpected field names"):
        s._replace(z=1)
    assert "normalization=Normalization(mean=(0.5071" in repr(s)
    assert Split(torch.zeros(2, 1), torch.zeros(2)).normalization is None


@pytest.mark.parametrize(
    ("x", "y", "norm", "exc", "match"),
    [
        (torch.zeros(2, 3, 4, 4), torch.zeros(2), "c10", TypeError, r"x must be a uint8 tensor"),
        (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2), (0.5, 0.5), TypeError, "Normalization"),
        (torch.zeros(2, 12, dtype=torch.uint8), torch.zeros(2), "c10", ValueError, r"\(N, C, H, W\)"),
        (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3), "c10", ValueError, r"shapes"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2), "c10", ValueError, r"1 channels but"),
    ],
)
def test_pixel_split_rejects_bad_input(x, y, norm, exc, match) -> None:
    with pytest.raises(exc, match=match):
        PixelSplit(x, y, PIXEL_NORMALIZATION["cifar10"] if norm == "c10" else norm)
