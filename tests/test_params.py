"""Tests for ltfunc.params: module <-> pytree, stateless calls, snapshots and files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from helpers import assert_bit_identical, tree_clone
from safetensors.torch import save_file
from torch import Tensor, nn

import ltfunc
from ltfunc import masks


def bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))


# get_params / get_buffers ------------------------------------------------------------------
def test_get_params_copies_by_default() -> None:
    model = ltfunc.models.lenet300(seed=0)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    p = ltfunc.get_params(model)
    assert list(p) == [k for k, _ in model.named_parameters()]
    assert type(p) is dict
    for k, v in p.items():
        assert torch.equal(v, before[k]) and not v.requires_grad
        assert v.data_ptr() != dict(model.named_parameters())[k].data_ptr()
    # "training" the pytree in place does not touch the module
    for v in p.values():
        v.add_(1.0)
    for k, v in model.named_parameters():
        assert torch.equal(v.detach(), before[k])


def test_get_params_copy_false_shares_storage() -> None:
    model = ltfunc.models.lenet300(seed=0)
    p = ltfunc.get_params(model, copy=False)
    assert not any(v.requires_grad for v in p.values())
    p["fc1.bias"].add_(2.0)
    assert torch.equal(model.fc1.bias.detach(), torch.full((300,), 2.0))  # glorot init biases are 0


def test_get_buffers() -> None:
    model = bn_model()
    b = ltfunc.get_buffers(model)
    assert list(b) == ["1.running_mean", "1.running_var", "1.num_batches_tracked"]
    b["1.running_mean"].add_(5.0)
    assert torch.equal(model[1].running_mean, torch.zeros(3))
    shared = ltfunc.get_buffers(model, copy=False)
    shared["1.running_mean"].add_(5.0)
    assert torch.equal(model[1].running_mean, torch.full((3,), 5.0))
    assert ltfunc.get_buffers(ltfunc.models.lenet300()) == {}
    for fn in (ltfunc.get_params, ltfunc.get_buffers):
        with pytest.raises(TypeError, match=f"{fn.__name__}: model must be a torch.nn.Module"):
            fn({"w": torch.ones(1)})  # type: ignore[arg-type]


# call --------------------------------------------------------------------------------------
def test_call_uses_the_given_params() -> None:
    model = ltfunc.models.lenet300(seed=0)
    x = torch.randn(5, 1, 28, 28)
    p = ltfunc.get_params(model)
    torch.testing.assert_close(ltfunc.call(model, p, x), model(x), rtol=0, atol=0)
    other = ltfunc.models.init_params(model, seed=1)
    out = ltfunc.call(model, other, x)
    reference = ltfunc.load_into(ltfunc.models.lenet300(), other)
    torch.testing.assert_close(out, reference(x), rtol=0, atol=0)
    assert not torch.allclose(out, model(x))
    assert ltfunc.tree_equal(ltfunc.get_params(model), p)  # the module is unchanged


def test_call_with_buffers_and_kwargs() -> None:
    model = bn_model().eval()
    p, b = ltfunc.get_params(model), ltfunc.get_buffers(model)
    b2 = {**b, "1.running_mean": torch.tensor([1.0, -1.0, 0.5])}
    x = torch.randn(6, 4)
    out = ltfunc.call(model, p, x, buffers=b2)
    ref = bn_model().eval()
    ref[1].running_mean.copy_(b2["1.running_mean"])
    torch.testing.assert_close(out, ref(x), rtol=0, atol=0)
    assert torch.equal(model[1].running_mean, torch.zeros(3))

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x: Tensor, *, scale: float = 1.0) -> Tensor:
            return self.lin(x) * scale

    m = Scaled()
    x2 = torch.randn(3, 2)
    torch.testing.assert_close(ltfunc.call(m, ltfunc.get_params(m), x2, scale=3.0), m(x2) * 3.0)
    with pytest.raises(TypeError, match="call: model must be"):
        ltfunc.call(lambda x: x, {}, x2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="call: params must be a dict of tensors, got list"):
        ltfunc.call(m, list(ltfunc.get_params(m).values()), x2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="call: buffers must be a dict of tensors or None, got dict"):
        ltfunc.call(m, ltfunc.get_params(m), x2, buffers={"b": 1.0})


def test_call_is_differentiable_wrt_params() -> None:
    model = ltfunc.models.lenet300(seed=0)
    p = {k: v.requires_grad_(True) for k, v in ltfunc.get_params(model).items()}
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    loss = nn.functional.cross_entropy(ltfunc.call(model, p, x), y)
    grads = torch.autograd.grad(loss, list(p.values()))
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    for g, (_, param) in zip(grads, model.named_parameters(), strict=True):
        torch.testing.assert_close(g, param.grad)


# snapshot / tree_equal ---------------------------------------------------------------------
class State(NamedTuple):
    params: dict[str, Tensor]
    step: int
    extra: Tensor | None


def test_snapshot_is_independent() -> None:
    p = ltfunc.get_params(ltfunc.models.lenet300(seed=0))
    state = State(p, 3, None)
    snap = ltfunc.snapshot(state)
    assert isinstance(snap, State) and snap.step == 3 and snap.extra is None
    assert ltfunc.tree_equal(snap, state)
    for v in p.values():
        v.mul_(0.0)
    assert not ltfunc.tree_equal(snap, state)
    assert float(snap.params["fc1.weight"].abs().sum()) > 0
    w = torch.ones(2, requires_grad=True)
    assert not ltfunc.snapshot({"w": w * 2})["w"].requires_grad


def test_tree_equal() -> None:
    a = {"w": torch.tensor([1.0, float("nan")]), "i": torch.tensor([1, 2])}
    assert ltfunc.tree_equal(a, tree_clone(a))  # NaN at the same place counts as equal
    assert not ltfunc.tree_equal(a, {**a, "w": torch.tensor([1.0, 2.0])})
    assert not ltfunc.tree_equal(a, {**a, "w": torch.tensor([2.0, float("nan")])})
    assert not ltfunc.tree_equal(a, {**a, "i": torch.tensor([1.0, 2.0])})  # dtype
    assert not ltfunc.tree_equal(a, {**a, "i": torch.tensor([[1, 2]])})  # shape
    assert ltfunc.tree_equal(a, {"i": a["i"], "w": a["w"]})  # dicts: insertion order is irrelevant
    ma, mb = masks.from_dict({"x": [1], "y": [0]}), masks.from_dict({"y": [0], "x": [1]})
    assert not ltfunc.tree_equal(ma, mb)  # a Mask's key order is part of its structure
    assert not ltfunc.tree_equal(a, {"w": a["w"]})
    assert not ltfunc.tree_equal(masks.from_dict({"w": [1]}), {"w": torch.tensor([True])})
    assert ltfunc.tree_equal((1, "x", None), (1, "x", None))
    assert not ltfunc.tree_equal((1,), (2,))


# load_into ---------------------------------------------------------------------------------
def test_load_into_round_trip() -> None:
    src = ltfunc.models.lenet300(seed=1)
    dst = ltfunc.models.lenet300(seed=2)
    p = ltfunc.get_params(src)
    out = ltfunc.load_into(dst, p)
    assert out is dst
    assert ltfunc.tree_equal(ltfunc.get_params(dst), p)
    p["fc1.weight"].add_(1.0)  # the module got copies, not the pytree's tensors
    assert not torch.equal(dst.fc1.weight.detach(), p["fc1.weight"])
    # partial loads with strict=False, and buffers
    model = bn_model()
    ltfunc.load_into(model, {"1.running_var": torch.full((3,), 4.0)}, strict=False)
    assert torch.equal(model[1].running_var, torch.full((3,), 4.0))


@pytest.mark.parametrize(
    ("bad", "exc", "pattern"),
    [
        ({"fc9.weight": torch.zeros(1)}, ValueError, r"load_into: params has names .*\['fc9\.weight'\]"),
        (
            {"fc1.bias": torch.zeros(300)},
            ValueError,
            r"load_into: params is missing parameters \['fc1\.weight'",
        ),
        ("shape", ValueError, r"load_into: params\['fc3.weight'\] has shape \(3, 3\)"),
        ([torch.zeros(1)], TypeError, "load_into: params must be a mapping"),
        ("not-tensor", TypeError, r"load_into: params values must be tensors; not tensors: \['fc3.bias'\]"),
    ],
)
def test_load_into_errors_leave_module_untouched(bad: object, exc: type[Exception], pattern: str) -> None:
    model = ltfunc.models.lenet300(seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}  # plain dict, like the check
    full = {k: torch.zeros_like(v) for k, v in ltfunc.get_params(model).items()}
    if bad == "shape":  # every other tensor is valid and would be written first
        bad = {**full, "fc3.weight": torch.zeros(3, 3)}
    elif bad == "not-tensor":
        bad = {**full, "fc3.bias": [0.0] * 10}
    with pytest.raises(exc, match=pattern):
        ltfunc.load_into(model, bad)  # type: ignore[arg-type]
    assert_bit_identical(dict(model.state_dict()), before)
    with pytest.raises(TypeError, match="load_into: model"):
        ltfunc.load_into(full, full)  # type: ignore[arg-type]


# save_tree / load_tree ---------------------------------------------------------------------
def test_save_load_tree_round_trip(tmp_path: Path) -> None:
    tree = {
        "z.weight": torch.randn(3, 2),
        "a.bias": torch.randn(3).to(torch.bfloat16),
        "m.count": torch.tensor(7),
        "b.mask": torch.tensor([True, False]),
        "t.view": torch.randn(4, 5).t(),  # non-contiguous input
    }
    f = tmp_path / "deep" / "dir" / "tree.safetensors"
    ltfunc.save_tree(tree, f, metadata={"note": "hello", "n": 3})  # type: ignore[dict-item]
    back = ltfunc.load_tree(f)
    assert list(back) == list(tree)  # saved order, not sorted
    assert_bit_identical(back, tree)
    from ltfunc.params import read_metadata

    meta = read_metadata(f)
    assert meta["note"] == "hello" and meta["n"] == "3"
    assert json.loads(meta["ltfunc.order"]) == list(tree)
    params = ltfunc.get_params(ltfunc.models.lenet300(seed=0))
    ltfunc.save_tree(params, tmp_path / "p.safetensors")
    assert_bit_identical(ltfunc.load_tree(tmp_path / "p.safetensors"), params)
    assert ltfunc.load_tree(tmp_path / "p.safetensors", device="meta")["fc1.weight"].is_meta


def test_save_tree_shared_storage(tmp_path: Path) -> None:
    t = torch.arange(6.0)
    tree = {"a": t, "b": t, "c": t[:3], "d": t.view(2, 3)}
    ltfunc.save_tree(tree, tmp_path / "shared.safetensors")
    back = ltfunc.load_tree(tmp_path / "shared.safetensors")
    assert_bit_identical(back, {k: v.clone() for k, v in tree.items()})
    assert torch.equal(t, torch.arange(6.0))


def test_save_tree_type_errors(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="save_tree: tree"):
        ltfunc.save_tree([torch.ones(1)], tmp_path / "x.safetensors")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="save_tree: tree"):
        ltfunc.save_tree({"a": [1.0]}, tmp_path / "x.safetensors")  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"save_tree: tree keys must be str names, got \[0\]"):
        ltfunc.save_tree({0: torch.ones(1)}, tmp_path / "x.safetensors")  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="save_tree: path must be a str or path, got int 5"):
        ltfunc.save_tree({"a": torch.ones(1)}, 5)  # type: ignore[arg-type]
    assert not (tmp_path / "x.safetensors").exists()


def test_load_tree_bad_files(tmp_path: Path) -> None:
    f = tmp_path / "good.safetensors"
    ltfunc.save_tree({"w": torch.randn(10, 10)}, f)
    data = f.read_bytes()
    for name, content in [
        ("truncated.safetensors", data[: len(data) // 2]),
        ("header-only.safetensors", data[:8]),
        ("empty.safetensors", b""),
        ("text.safetensors", b"this is not a tensor file"),
    ]:
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(ValueError, match=f"load_tree: .*{name} is not a valid safetensors file"):
            ltfunc.load_tree(bad)
    with pytest.raises(FileNotFoundError, match="load_tree: no such file"):
        ltfunc.load_tree(tmp_path / "absent.safetensors")
    with pytest.raises(ValueError, match="load_tree: device='gpu0'"):
        ltfunc.load_tree(f, device="gpu0")
    with pytest.raises(TypeError, match=r"load_tree: device must be a str or torch\.device, got float"):
        ltfunc.load_tree(f, device=0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="load_tree: path must be a str or path, got NoneType"):
        ltfunc.load_tree(None)  # type: ignore[arg-type]
    # valid safetensors whose ltfunc metadata is corrupt
    odd = tmp_path / "odd.safetensors"
    save_file({"w": torch.ones(2)}, str(odd), metadata={"ltfunc.order": "[not json"})
    with pytest.raises(ValueError, match=r"odd\.safetensors has unreadable key-order metadata"):
        ltfunc.load_tree(odd)
    save_file({"w": torch.ones(2)}, str(odd), metadata={"ltfunc.order": '["w", "v"]'})
    with pytest.raises(ValueError, match=r"odd\.safetensors has inconsistent key metadata"):
        ltfunc.load_tree(odd)
    # a plain safetensors file (no ltfunc metadata) loads in sorted key order
    plain = tmp_path / "plain.safetensors"
    save_file({"b": torch.ones(1), "a": torch.zeros(1)}, str(plain))
    assert list(ltfunc.load_tree(plain)) == ["a", "b"]


def test_save_tree_overwrite_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "weights.safetensors"
    old = {"w": torch.arange(4.0)}
    ltfunc.save_tree(old, f)

    def failing_writer(tensors: dict[str, Tensor], filename: str, metadata: object = None) -> None:
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt  # even an interrupt mid-write leaves the old file

    monkeypatch.setattr(ltfunc.params, "save_file", failing_writer)
    with pytest.raises(KeyboardInterrupt):
        ltfunc.save_tree({"w": torch.zeros(4), "v": torch.ones(1)}, f)
    monkeypatch.undo()
    assert_bit_identical(ltfunc.load_tree(f), old)
    assert os.listdir(tmp_path) == ["weights.safetensors"]
    ltfunc.save_tree({"w": torch.zeros(4)}, f)
    assert torch.equal(ltfunc.load_tree(f)["w"], torch.zeros(4))


def test_save_tree_refuses_the_reserved_metadata_key(tmp_path: Path) -> None:
    path = tmp_path / "p.safetensors"
    with pytest.raises(ValueError, match=r"ltfunc\.order"):
        ltfunc.save_tree({"w": torch.ones(2)}, path, metadata={"ltfunc.order": "[]"})
    assert not path.exists()


def test_atomic_write_errors_name_the_destination_not_the_temp_file(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="cannot write") as info:
        ltfunc.params.atomic_write_bytes(folder, lambda tmp: Path(tmp).write_text("hi"))
    assert str(folder) in str(info.value) and ".tmp-" not in str(info.value)
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(OSError, match="cannot write") as info2:
        ltfunc.params.atomic_write_bytes(afile / "x.bin", lambda tmp: Path(tmp).write_text("hi"))
    assert str(afile / "x.bin") in str(info2.value) and ".tmp-" not in str(info2.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "folder"]
    assert list(folder.iterdir()) == [] and afile.read_text() == "x"
