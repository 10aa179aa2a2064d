"""Tests for ltfunc.masks: the immutable Mask pytree, its operations and its files."""

from __future__ import annotations

import copy
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import optree
import pytest
import torch
import torch.utils._pytree as torch_pytree
from helpers import assert_bit_identical, tree_clone
from torch import Tensor, nn

import ltfunc
from ltfunc import masks
from ltfunc.masks import LayerCount, Mask


def hand_mask() -> Mask:
    return masks.from_dict({"a": [[1, 0], [1, 1]], "b": [0, 0, 0, 1]})


def small_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * 4 * 4, 5, bias=False),
        nn.Linear(5, 3),
    )


# Construction ------------------------------------------------------------------------------
def test_prunable_names_module_and_params() -> None:
    m = small_model()
    assert masks.prunable_names(m) == ["0.weight", "4.weight", "5.weight"]  # no bias, no BatchNorm
    p = ltfunc.get_params(m)
    assert masks.prunable_names(p) == ["0.weight", "4.weight", "5.weight"]
    assert masks.prunable_names({"w": torch.zeros(2, 2, dtype=torch.int64), "v": torch.zeros(2, 2)}) == ["v"]
    with pytest.raises(TypeError, match="prunable_names: model"):
        masks.prunable_names([1, 2])  # type: ignore[arg-type]


class Declared(nn.Module):
    """A module that declares its prunable parameters (the output layer stays dense)."""

    def __init__(self, declared: object = ("head.weight", "body.weight")) -> None:
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.norm = nn.BatchNorm1d(4)
        self.head = nn.Linear(4, 2)
        self.out = nn.Linear(2, 2)
        self.declared = declared

    def prunable_names(self) -> object:
        return self.declared

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.head(self.norm(self.body(x))))


def test_a_module_declares_its_prunable_names() -> None:
    m = Declared()
    # honoured, in parameter order whatever the declared order
    assert masks.prunable_names(m) == ["body.weight", "head.weight"]
    assert list(masks.ones(m)) == ["body.weight", "head.weight"]
    assert list(masks.ones(m, select=["out.weight"])) == ["out.weight"]  # select still wins
    # a params dict declares nothing: the >= 2-D rule, output layer included
    assert masks.prunable_names(ltfunc.get_params(m)) == ["body.weight", "head.weight", "out.weight"]
    # the built-in models declare theirs: VGG / ResNet leave the output layer dense
    for name, out in (("vgg11_bn", "fc.weight"), ("resnet20", "fc.weight"), ("resnet18", "linear.weight")):
        model = ltfunc.models.build(name)
        assert out not in masks.ones(model) and out in masks.ones(ltfunc.get_params(model))
        assert all(not k.endswith("bias") and "bn" not in k for k in masks.ones(model))
    assert masks.prunable_names(ltfunc.models.lenet300())[-1] == "fc3.weight"  # pruned by the paper


def test_declared_prunable_names_errors() -> None:
    with pytest.raises(
        ValueError, match=r"prunable_names: Declared\.prunable_names\(\) names \['nope'\], which"
    ):
        masks.prunable_names(Declared(["body.weight", "nope"]))
    with pytest.raises(ValueError, match="names a parameter twice"):
        masks.ones(Declared(["body.weight", "body.weight"]))
    for bad in ("body.weight", None, [1]):
        with pytest.raises(
            TypeError, match=r"Declared\.prunable_names\(\) must return a list of parameter names"
        ):
            masks.prunable_names(Declared(bad))
    with pytest.raises(ValueError, match="ones: nothing is prunable"):
        masks.ones(Declared([]))


def test_ones_module_params_and_select() -> None:
    model = small_model()
    p = ltfunc.get_params(model)
    for src in (model, p):
        m = masks.ones(src)
        assert list(m) == ["0.weight", "4.weight", "5.weight"]
        for k, v in m.items():
            assert v.dtype == torch.bool and v.shape == p[k].shape and v.all()
    assert list(masks.ones(p, select=["5.weight", "0.weight"])) == ["0.weight", "5.weight"]  # params order
    assert list(masks.ones(p, select=lambda n, t: t.dim() == 2)) == ["4.weight", "5.weight"]
    with pytest.raises(ValueError, match=r"ones: select names unknown parameters \['nope'\]"):
        masks.ones(p, select=["nope"])
    with pytest.raises(ValueError, match="ones: nothing is prunable"):
        masks.ones(p, select=lambda n, t: False)
    with pytest.raises(TypeError, match="ones: select must be"):
        masks.ones(p, select="0.weight")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"ones: parameter 'i' has dtype torch\.int64"):
        masks.ones({"i": torch.zeros(2, 2, dtype=torch.int64)}, select=["i"])
    with pytest.raises(TypeError, match="ones: model_or_params"):
        masks.ones(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "model",
    [nn.Sequential(nn.ReLU()), nn.Sequential(nn.BatchNorm1d(3)), nn.BatchNorm2d(4)],
    ids=["relu", "batchnorm1d", "batchnorm2d"],
)
def test_ones_nothing_prunable(model: nn.Module) -> None:
    with pytest.raises(ValueError, match="ones: nothing is prunable"):
        masks.ones(model)
    with pytest.raises(ValueError, match="ones: nothing is prunable"):
        masks.ones(ltfunc.get_params(model))


def test_constructor_validates() -> None:
    with pytest.raises(TypeError, match=r"dtype torch\.bool"):
        Mask({"w": torch.ones(2)})
    with pytest.raises(TypeError, match="keys must be str"):
        Mask({1: torch.ones(2, dtype=torch.bool)})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"must be a torch\.Tensor"):
        Mask({"w": [True, False]})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="Mask: data must be a mapping"):
        Mask([("w", torch.ones(2, dtype=torch.bool))])  # type: ignore[arg-type]


def test_from_dict_any_dtype_and_copies() -> None:
    src = torch.tensor([0.0, 2.5, -1.0])
    m = masks.from_dict({"t": src, "l": [[1, 0]], "n": np.array([0, 0, 3]), "b": torch.tensor([True])})
    assert torch.equal(m["t"], torch.tensor([False, True, True]))
    assert torch.equal(m["l"], torch.tensor([[True, False]]))
    assert torch.equal(m["n"], torch.tensor([False, False, True]))
    assert all(v.dtype == torch.bool for v in m.values())
    b = torch.tensor([True, False])
    mb = masks.from_dict({"b": b})
    b[1] = True
    assert not mb["b"][1]  # from_dict cloned the bool tensor
    with pytest.raises(TypeError, match="from_dict: data"):
        masks.from_dict([1, 0])  # type: ignore[arg-type]


# Immutability and Mapping ------------------------------------------------------------------
def test_immutable() -> None:
    m = hand_mask()
    with pytest.raises(AttributeError, match="immutable"):
        m._data = {}  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        m.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="immutable"):
        del m._data
    with pytest.raises(TypeError, match="immutable"):
        m["a"] = torch.zeros(2, 2, dtype=torch.bool)  # type: ignore[index]
    with pytest.raises(TypeError, match="immutable"):
        m["new"] = torch.zeros(2, dtype=torch.bool)  # type: ignore[index]
    with pytest.raises(TypeError, match="immutable"):
        del m["a"]  # type: ignore[attr-defined]
    assert m == hand_mask() and list(m) == ["a", "b"]


def test_mapping_behaviour() -> None:
    m = masks.ones(ltfunc.models.lenet300())
    assert isinstance(m, Mapping)
    assert m["fc1.weight"].shape == (300, 784)
    assert "fc2.weight" in m and "fc1.bias" not in m
    assert len(m) == 3 and list(m) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert m.get("nope") is None
    with pytest.raises(KeyError):
        m["fc1.bias"]
    assert list(dict(m)) == list(m)
    assert [k for k, _ in m.items()] == list(m.keys())


def test_to_dict_is_a_copy() -> None:
    m = hand_mask()
    d = m.to_dict()
    assert type(d) is dict and list(d) == ["a", "b"]
    d["a"][0, 0] = False
    assert m["a"][0, 0]


def test_equality() -> None:
    assert hand_mask() == hand_mask()
    other = masks.from_dict({"a": [[1, 0], [1, 1]], "b": [0, 0, 1, 1]})
    assert hand_mask() != other
    swapped = masks.from_dict({"b": [0, 0, 0, 1], "a": [[1, 0], [1, 1]]})
    assert hand_mask() != swapped  # key order is part of a mask
    reshaped = masks.from_dict({"a": [1, 0, 1, 1], "b": [0, 0, 0, 1]})
    assert hand_mask() != reshaped
    assert hand_mask() != {"a": hand_mask()["a"], "b": hand_mask()["b"]}  # a dict is not a Mask
    # == on masks is ltfunc.tree_equal, the one spelling of "same keys, equal tensors"
    assert ltfunc.tree_equal(hand_mask(), hand_mask())
    for different in (other, swapped, reshaped, dict(hand_mask())):
        assert not ltfunc.tree_equal(hand_mask(), different)
    with pytest.raises(TypeError):
        hash(hand_mask())


def test_copy_deepcopy_pickle() -> None:
    m = hand_mask()
    for dup in (copy.copy(m), copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert isinstance(dup, Mask) and dup == m
    deep = copy.deepcopy(m)
    assert deep["a"].data_ptr() != m["a"].data_ptr()
    with pytest.raises(AttributeError):
        deep.x = 1  # type: ignore[attr-defined]


# Pytree registration -----------------------------------------------------------------------
def test_optree_global_registration() -> None:
    m = hand_mask()
    leaves, spec = optree.tree_flatten(m)  # no namespace argument: registered globally
    assert len(leaves) == 2 and leaves[0] is m["a"] and leaves[1] is m["b"]
    rebuilt = optree.tree_unflatten(spec, leaves)
    assert isinstance(rebuilt, Mask) and rebuilt == m
    inv = optree.tree_map(lambda t: ~t, m)
    assert isinstance(inv, Mask) and list(inv) == ["a", "b"]
    assert torch.equal(inv["b"], torch.tensor([True, True, True, False]))
    both = optree.tree_map(lambda x, y: x & y, m, inv)
    assert isinstance(both, Mask) and masks.density(both) == 0.0
    paths = optree.tree_paths(m)
    assert paths == [("a",), ("b",)]
    nested = optree.tree_map(lambda t: t.sum(), {"mask": m, "x": torch.ones(1, dtype=torch.bool)})
    assert isinstance(nested["mask"], Mask)


def test_torch_pytree_registration() -> None:
    m = hand_mask()
    leaves, spec = torch_pytree.tree_flatten(m)
    assert len(leaves) == 2
    back = torch_pytree.tree_unflatten(leaves, spec)
    assert isinstance(back, Mask) and back == m


def test_snapshot_and_to() -> None:
    m = hand_mask()
    s = ltfunc.snapshot(m)
    assert isinstance(s, Mask) and s == m and s["a"].data_ptr() != m["a"].data_ptr()
    moved = m.to("meta")
    assert isinstance(moved, Mask) and moved["a"].device.type == "meta"
    assert m["a"].device.type == "cpu"


# Counts ------------------------------------------------------------------------------------
def test_counts_density_sparsity() -> None:
    m = hand_mask()
    c = masks.counts(m)
    assert c == {"a": LayerCount(3, 4), "b": LayerCount(1, 4), "__all__": LayerCount(4, 8)}
    assert c["a"].density == 0.75 and c["b"].sparsity == 0.75
    assert masks.density(m) == 0.5
    assert masks.sparsity(m) == 0.5
    lop = masks.from_dict({"w": [1, 0, 0, 0, 0]})
    assert masks.density(lop) == pytest.approx(0.2) and masks.sparsity(lop) == pytest.approx(0.8)
    assert "kept=4/8" in repr(m)
    for fn in (masks.counts, masks.density, masks.sparsity):
        with pytest.raises(TypeError, match=f"{fn.__name__}: mask must be an ltfunc Mask, got dict"):
            fn({"a": torch.ones(2, dtype=torch.bool)})  # type: ignore[arg-type]


def test_density_sparsity_and_equal_methods_are_deprecated_aliases() -> None:
    m = hand_mask()
    with pytest.warns(
        DeprecationWarning, match=r"Mask\.density\(\) is deprecated; use ltfunc\.masks\.density"
    ):
        assert m.density() == masks.density(m) == 0.5
    with pytest.warns(
        DeprecationWarning, match=r"Mask\.sparsity\(\) is deprecated; use ltfunc\.masks\.sparsity"
    ):
        assert m.sparsity() == masks.sparsity(m) == 0.5
    other = masks.from_dict({"a": [[1, 0], [1, 1]], "b": [0, 0, 1, 1]})
    with pytest.warns(
        DeprecationWarning, match=r"Mask\.equal\(other\) is deprecated; use ltfunc\.tree_equal"
    ):
        assert m.equal(hand_mask()) and not m.equal(other)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the kept spellings do not warn
        assert masks.density(m) == 0.5 and m == hand_mask() and ltfunc.tree_equal(m, hand_mask())


def test_counts_lenet_prunable() -> None:
    c = masks.counts(masks.ones(ltfunc.models.lenet300()))
    assert c["__all__"] == LayerCount(266_200, 266_200)
    assert c["fc1.weight"].total == 235_200


# intersect ---------------------------------------------------------------------------------
def test_intersect() -> None:
    a = hand_mask()
    b = masks.from_dict({"a": [[0, 0], [1, 1]], "b": [1, 1, 1, 1]})
    a0, b0 = tree_clone(a), tree_clone(b)
    out = masks.intersect(a, b)
    assert torch.equal(out["a"], torch.tensor([[False, False], [True, True]]))
    assert torch.equal(out["b"], a["b"])
    assert masks.intersect(a, a) == a
    assert_bit_identical(a, a0)
    assert_bit_identical(b, b0)
    with pytest.raises(ValueError, match="intersect: masks have different keys"):
        masks.intersect(a, masks.from_dict({"a": [[1, 1], [1, 1]]}))
    with pytest.raises(ValueError, match="intersect: shapes differ for 'b'"):
        masks.intersect(a, masks.from_dict({"a": [[1, 1], [1, 1]], "b": [1, 1]}))
    with pytest.raises(TypeError, match="intersect: b must be an ltfunc Mask"):
        masks.intersect(a, b.to_dict())  # type: ignore[arg-type]


# apply and functional_call -----------------------------------------------------------------
def test_apply_zeroes_exactly_the_pruned_entries() -> None:
    p = {"w": torch.randn(3, 4), "bias": torch.randn(3)}
    m = Mask({"w": torch.rand(3, 4) < 0.5})
    p0, m0 = tree_clone(p), tree_clone(m)
    out = masks.apply(m, p)
    assert torch.equal(out["w"][m["w"]], p["w"][m["w"]])
    assert (out["w"][~m["w"]] == 0).all()
    assert out["bias"] is p["bias"]  # unmasked entries pass through
    assert out["w"] is not p["w"]
    assert_bit_identical(p, p0)
    assert_bit_identical(m, m0)


def test_unchecked_apply_equals_apply() -> None:
    p = {"w": torch.randn(3, 4), "bias": torch.randn(3)}
    m = Mask({"w": torch.rand(3, 4) < 0.5})
    fast = masks._apply(m, p)  # for callers that validated mask and params already
    assert ltfunc.tree_equal(fast, masks.apply(m, p)) and fast["bias"] is p["bias"]


def test_apply_zeroes_nan_and_inf() -> None:
    p = {"w": torch.tensor([float("nan"), float("inf"), -float("inf"), 2.0])}
    out = masks.apply(masks.from_dict({"w": [0, 0, 0, 1]}), p)
    assert torch.equal(out["w"], torch.tensor([0.0, 0.0, 0.0, 2.0]))


def test_apply_keeps_dtype_and_gradient() -> None:
    w = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    m = masks.from_dict({"w": [[1, 0, 1], [0, 1, 1]]})
    out = masks.apply(m, {"w": w})
    assert out["w"].dtype == torch.float64
    out["w"].sum().backward()
    assert torch.equal(w.grad, m["w"].double())


@pytest.mark.parametrize("builder", [ltfunc.models.lenet300, ltfunc.models.conv2])
def test_call_with_masked_params_matches_inplace_masked_module(builder: object) -> None:
    model = builder(seed=0)  # type: ignore[operator]
    p = ltfunc.get_params(model)
    g = torch.Generator().manual_seed(1)
    mask = Mask({k: torch.rand(v.shape, generator=g) < 0.3 for k, v in masks.ones(p).items()})
    x = torch.randn(4, 1, 28, 28, generator=g)
    functional = ltfunc.call(model, masks.apply(mask, p), x)
    dense = ltfunc.call(model, p, x)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if name in mask:
                param.mul_(mask[name])
        expected = reference(x)
    torch.testing.assert_close(functional, expected, rtol=0, atol=0)
    assert not torch.allclose(dense, expected)  # the mask really changed the function
    # the template module was not touched by the functional call
    assert ltfunc.tree_equal(ltfunc.get_params(model), p)


# Errors of check_compatible / apply --------------------------------------------------------
def test_apply_and_check_compatible_errors() -> None:
    p = {"w": torch.randn(2, 3), "v": torch.randn(3)}
    good = masks.from_dict({"w": [[1, 0, 1], [0, 1, 1]]})
    masks.check_compatible(good, p)  # a subset of the params is fine
    cases = [
        (masks.from_dict({"u": [1]}), ValueError, r"apply: mask has keys \['u'\]"),
        (masks.from_dict({"w": [1, 0, 1, 0, 1, 1]}), ValueError, r"apply: mask\['w'\] has shape \(6,\)"),
        (optree.tree_map(lambda t: t.float(), good), TypeError, r"apply: mask\['w'\] must be a bool"),
        (good.to("meta"), ValueError, r"apply: mask\['w'\] is on meta"),
        (good.to_dict(), TypeError, "apply: mask must be an ltfunc Mask"),
    ]
    p0 = tree_clone(p)
    for bad, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            masks.apply(bad, p)  # type: ignore[arg-type]
        assert_bit_identical(p, p0)
    with pytest.raises(TypeError, match="apply: params must be a dict"):
        masks.apply(good, [torch.ones(2, 3)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"check_compatible: params\['w'\] must be a tensor"):
        masks.check_compatible(good, {"w": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]})


# Files -------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path: Path) -> None:
    m = masks.from_dict({"z.weight": [[1, 0], [0, 1]], "a.weight": [1, 1, 0], "m.weight": [[[0]]]})
    f = tmp_path / "sub" / "mask.safetensors"
    masks.save(m, f)
    back = masks.load(f)
    assert list(back) == ["z.weight", "a.weight", "m.weight"]  # not sorted: saved order
    assert all(v.dtype == torch.bool for v in back.values())
    assert back == m
    assert masks.load(str(f), device="meta")["a.weight"].device.type == "meta"


def test_save_load_pruned_lenet(tmp_path: Path) -> None:
    p = ltfunc.get_params(ltfunc.models.lenet300(seed=0))
    m = ltfunc.prune.magnitude(p, masks.ones(p), rate=0.37)
    masks.save(m, tmp_path / "m.safetensors")
    back = masks.load(tmp_path / "m.safetensors")
    assert back == m and masks.counts(back) == masks.counts(m)
    # bool is stored losslessly, one byte per entry, not as float
    assert os.path.getsize(tmp_path / "m.safetensors") < 266_200 + 4096


def test_load_errors(tmp_path: Path) -> None:
    m = hand_mask()
    f = tmp_path / "mask.safetensors"
    masks.save(m, f)
    data = f.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) - 3])
    with pytest.raises(ValueError, match=f"{truncated.name}.*not a valid safetensors"):
        masks.load(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file at all")
    with pytest.raises(ValueError, match=garbage.name):
        masks.load(garbage)
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors"):
        masks.load(tmp_path / "missing.safetensors")
    params_file = tmp_path / "params.safetensors"
    ltfunc.save_tree({"w": torch.ones(2)}, params_file)
    with pytest.raises(ValueError, match=r"params.safetensors is not a mask file: \['w'\]"):
        masks.load(params_file)
    tagged = tmp_path / "tagged.safetensors"
    ltfunc.save_tree({"w": torch.ones(2, dtype=torch.bool)}, tagged, metadata={"ltfunc.kind": "weights"})
    with pytest.raises(ValueError, match="holds 'weights', not a mask"):
        masks.load(tagged)
    with pytest.raises(TypeError, match="save: mask must be an ltfunc Mask"):
        masks.save(m.to_dict(), f)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="save: path must be a str or path, got NoneType"):
        masks.save(m, None)  # type: ignore[arg-type]


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "mask.safetensors"
    old = hand_mask()
    masks.save(old, f)

    def failing_writer(tensors: dict[str, Tensor], filename: str, metadata: object = None) -> None:
        with open(filename, "wb") as fh:
            fh.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(ltfunc.params, "save_file", failing_writer)
    new = masks.from_dict({"a": [[0, 0], [0, 0]], "b": [1, 1, 1, 1]})
    with pytest.raises(OSError, match="disk full"):
        masks.save(new, f)
    monkeypatch.undo()
    assert masks.load(f) == old  # the old file is intact
    assert sorted(os.listdir(tmp_path)) == ["mask.safetensors"]  # no temporary left behind
    masks.save(new, f)
    assert masks.load(f) == new
