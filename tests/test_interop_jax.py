"""ltfunc.interop.jax: DLPack pytrees, JAX forward/step/evaluate, jaxpruner and numpy masks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ltfunc
from ltfunc import masks
from ltfunc.interop import jax as lj
from ltfunc.interop import jax_arrays
from ltfunc.step import make_train_step
from tests.helpers import train_reference, tree_allclose

ROOT = Path(__file__).resolve().parents[1]
JAX_REASON = "needs JAX: install the extra with pip install 'ltfunc[jax]'"


@pytest.fixture(scope="module")
def jax() -> Any:
    return pytest.importorskip("jax", reason=JAX_REASON)


@pytest.fixture(scope="module")
def optax(jax: Any) -> Any:
    return pytest.importorskip("optax", reason="needs optax (part of the ltfunc[jax] extra)")


@pytest.fixture
def x64(jax: Any) -> Any:
    """Turn on jax_enable_x64 for one test and restore it afterwards."""
    before = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


class State(NamedTuple):
    """An optimizer-state-like NamedTuple."""

    count: torch.Tensor
    momentum: dict[str, torch.Tensor]
    extra: Any


def _host(a: Any) -> np.ndarray:
    return np.asarray(a)


# Without JAX -------------------------------------------------------------------------------------
def test_importing_ltfunc_and_the_module_does_not_import_jax() -> None:
    code = "import sys, ltfunc, ltfunc.interop, ltfunc.interop.jax; assert 'jax' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def _hide_jax(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("jax", "jax.numpy", "jax.dlpack"):
        monkeypatch.setitem(sys.modules, name, None)  # makes "import jax" raise ImportError


@pytest.mark.parametrize(
    "call",
    [
        lambda: lj.to_jax({"w": torch.ones(2)}),
        lambda: lj.from_jax({"w": None}),
        lambda: lj.apply({}, np.zeros((1, 784))),
        lambda: lj.make_train_step(object()),
        lambda: lj.to_jaxpruner(masks.from_dict({"w": [1]}), {"w": torch.ones(1)}),
        lambda: lj.from_jaxpruner({"w": None}),
        lambda: lj.shares_memory(torch.ones(1), None),
        lambda: lj.evaluate({}, np.zeros((1, 784)), np.zeros(1)),
    ],
    ids=[
        "to_jax",
        "from_jax",
        "apply",
        "make_train_step",
        "to_jaxpruner",
        "from_jaxpruner",
        "shares",
        "eval",
    ],
)
def test_missing_jax_raises_import_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch, call: Any) -> None:
    _hide_jax(monkeypatch)
    with pytest.raises(ImportError, match=r"pip install 'ltfunc\[jax\]'"):
        call()


def test_numpy_masks_work_without_jax(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_jax(monkeypatch)
    params = ltfunc.get_params(ltfunc.models.lenet300(seed=0))
    mask = ltfunc.prune.magnitude(params, masks.ones(params), sparsity=0.6)
    arrays = lj.mask_to_numpy(mask)
    assert list(arrays) == list(mask)
    assert all(a.dtype == np.bool_ and a.shape == tuple(mask[k].shape) for k, a in arrays.items())
    assert lj.mask_from_numpy(arrays, params) == mask
    arrays["fc1.weight"][:] = False  # copies: the mask is not affected
    assert masks.counts(mask)["fc1.weight"].kept == 235_200 - round(0.6 * 235_200)
    # 0/1 integers are accepted too; the params' order wins over the dict's.
    ints = {k: a.astype(np.uint8) for k, a in reversed(lj.mask_to_numpy(mask).items())}
    assert list(lj.mask_from_numpy(ints, params)) == list(mask)
    assert lj.mask_from_numpy(ints, params) == mask


def test_numpy_mask_errors() -> None:
    params = ltfunc.get_params(ltfunc.models.lenet300())
    conv = lj.mask_to_numpy(masks.ones(ltfunc.models.conv2()))
    with pytest.raises(
        ValueError, match=r"mask_from_numpy: masks has keys \['conv1.weight', 'conv2.weight'\]"
    ):
        lj.mask_from_numpy(conv, params)
    with pytest.raises(ValueError, match=r"mask_from_numpy: masks\['fc1.weight'\] has shape \(784, 300\)"):
        lj.mask_from_numpy({"fc1.weight": np.ones((784, 300), bool)}, params)
    with pytest.raises(ValueError, match=r"values other than 0 and 1"):
        lj.mask_from_numpy({"w": np.array([0, 2])})
    with pytest.raises(TypeError, match=r"has dtype float32; mask arrays must be bool or 0/1 integers"):
        lj.mask_from_numpy({"w": np.ones(2, np.float32)})
    with pytest.raises(TypeError, match=r"mask_from_numpy: masks\['w'\] is None"):
        lj.mask_from_numpy({"w": None})
    with pytest.raises(TypeError, match=r"mask_to_numpy: mask must be an ltfunc Mask"):
        lj.mask_to_numpy({"w": torch.ones(1, dtype=torch.bool)})


# DLPack conversion ---------------------------------------------------------------------------------
def test_params_are_shared_zero_copy_both_ways(jax: Any) -> None:
    params = ltfunc.get_params(ltfunc.models.lenet300(seed=0))
    arrays = lj.to_jax(params)
    assert list(arrays) == list(params)
    for k, t in params.items():
        a = arrays[k]
        assert isinstance(a, jax.Array) and a.dtype.name == "float32" and a.shape == tuple(t.shape)
        assert a.unsafe_buffer_pointer() == t.data_ptr()
        assert lj.shares_memory(t, a)
    # Mutate-and-observe: the JAX array sees an in-place change of the tensor.
    params["fc3.bias"].add_(7.0)
    assert np.array_equal(_host(arrays["fc3.bias"]), params["fc3.bias"].numpy())
    # And back: the torch tensor aliases the JAX buffer.
    back = lj.from_jax(arrays)
    assert all(back[k].data_ptr() == arrays[k].unsafe_buffer_pointer() for k in arrays)
    assert ltfunc.tree_equal(back, params)


def test_copy_true_gives_independent_buffers(jax: Any) -> None:
    t = torch.arange(6.0)
    a = lj.to_jax({"t": t}, copy=True)["t"]
    assert not lj.shares_memory(t, a)
    t.add_(100.0)
    assert _host(a).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    back = lj.from_jax(a, copy=True)
    assert back.data_ptr() != a.unsafe_buffer_pointer() and back.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_bool_masks_direct_and_via_uint8_detour(jax: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    params = ltfunc.get_params(ltfunc.models.lenet300(seed=0))
    mask = ltfunc.prune.random(params, masks.ones(params), sparsity=0.5, seed=0)
    out = lj.to_jax(mask)
    assert type(out) is dict and list(out) == list(mask)
    for k, a in out.items():
        assert a.dtype.name == "bool" and np.array_equal(_host(a), mask[k].numpy())
        # This JAX takes bool through DLPack, so there is no copy.
        assert lj.shares_memory(mask[k], a) == jax_arrays._bool_dlpack_supported()
    assert lj.from_jax(out, as_mask=True) == mask
    # A JAX without bool DLPack: a uint8 view goes over and JAX makes one bool copy.
    monkeypatch.setattr(jax_arrays, "_bool_dlpack_supported", lambda: False)
    detour = lj.to_jax(mask)
    for k, a in detour.items():
        assert a.dtype.name == "bool" and np.array_equal(_host(a), mask[k].numpy())
        assert not lj.shares_memory(mask[k], a)
    back = lj.from_jax(detour)
    assert all(back[k].dtype == torch.bool and torch.equal(back[k], mask[k]) for k in mask)


def test_nested_structure_is_preserved(jax: Any) -> None:
    mask = masks.from_dict({"w": [[1, 0], [0, 1]]})
    tree = {
        "params": {"w": torch.randn(2, 2), "b": torch.zeros(2)},
        "opt": State(
            torch.tensor(3, dtype=torch.int32), {"w": torch.ones(2, 2)}, [None, 0.5, (torch.ones(1),)]
        ),
        "mask": mask,
    }
    out = lj.to_jax(tree)
    assert type(out["opt"]) is State and type(out["opt"].extra) is list and type(out["opt"].extra[2]) is tuple
    assert out["opt"].extra[:2] == [None, 0.5]
    assert type(out["mask"]) is dict and out["mask"]["w"].dtype.name == "bool"
    # jax.tree_util sees the same leaves (None is an empty subtree for JAX, a scalar is a leaf).
    leaves = jax.tree_util.tree_leaves(out)
    assert len(leaves) == 7 and sum(isinstance(x, jax.Array) for x in leaves) == 6
    doubled = jax.tree_util.tree_map(lambda x: x * 2, out["params"])
    assert np.allclose(_host(doubled["w"]), 2 * tree["params"]["w"].numpy())

    back = lj.from_jax(out)
    assert type(back["opt"]) is State and back["opt"].count.dtype == torch.int32
    assert int(back["opt"].count) == 3 and back["opt"].extra[:2] == [None, 0.5]
    assert ltfunc.tree_equal(back["params"], tree["params"])
    assert torch.equal(back["opt"].momentum["w"], torch.ones(2, 2))
    assert lj.from_jax(out["mask"], as_mask=True) == mask
    assert lj.to_jax(out) is not out and lj.to_jax(out)["params"]["w"] is out["params"]["w"]  # idempotent


@pytest.mark.parametrize(
    "dtype",
    [torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.int8, torch.uint8, torch.int16],
)
def test_dtypes_round_trip_exactly(jax: Any, dtype: torch.dtype) -> None:
    t = (torch.arange(-6, 6) * 3).to(dtype).reshape(3, 4)
    a = lj.to_jax(t)
    assert a.dtype.name == str(dtype).removeprefix("torch.")
    back = lj.from_jax(a)
    assert back.dtype == dtype and torch.equal(back, t)


def test_64_bit_dtypes_refuse_or_downcast_when_x64_is_off(jax: Any) -> None:
    assert not jax.config.read("jax_enable_x64"), "these checks assume JAX's default (x64 off)"
    third = torch.tensor([1 / 3], dtype=torch.float64)
    with pytest.raises(
        TypeError, match=r"to_jax: tree\['opt'\]\.count has dtype torch\.int64 but jax_enable_x64"
    ):
        lj.to_jax({"opt": State(torch.tensor(1), {}, None)})
    with pytest.raises(TypeError, match=r"pass downcast=True"):
        lj.to_jax(third)
    down = lj.to_jax({"f": third, "i": torch.tensor([-5, 2**31 - 1])}, downcast=True)
    assert down["f"].dtype.name == "float32" and _host(down["f"])[0] == np.float32(1 / 3)
    assert down["i"].dtype.name == "int32" and _host(down["i"]).tolist() == [-5, 2**31 - 1]
    with pytest.raises(ValueError, match=r"holds values in \[0, 2147483648\] that do not fit torch.int32"):
        lj.to_jax(torch.tensor([0, 2**31]), downcast=True)


def test_64_bit_dtypes_convert_exactly_with_x64(jax: Any, x64: None) -> None:
    t = {"f": torch.tensor([1 / 3, 1e-300], dtype=torch.float64), "i": torch.tensor([2**40, -1])}
    out = lj.to_jax(t)
    assert out["f"].dtype.name == "float64" and out["i"].dtype.name == "int64"
    assert lj.shares_memory(t["f"], out["f"])
    assert ltfunc.tree_equal(lj.from_jax(out), t)


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_unsupported_tensors_raise_clear_errors(jax: Any) -> None:
    with pytest.raises(
        TypeError, match=r"to_jax: tree\['c'\] has dtype torch.complex32, which JAX cannot take"
    ):
        lj.to_jax({"ok": torch.ones(2), "c": torch.zeros(2, dtype=torch.complex32)})
    q = torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.qint8)
    with pytest.raises(TypeError, match=r"has dtype torch.qint8"):
        lj.to_jax([q])
    with pytest.raises(TypeError, match=r"layout torch.sparse_coo"):
        lj.to_jax(torch.eye(3).to_sparse())
    weight_t = torch.randn(3, 4).T
    with pytest.raises(ValueError, match=r"to_jax: tree\[1\] is not contiguous .* pass copy=True"):
        lj.to_jax((torch.ones(1), weight_t))
    assert np.array_equal(_host(lj.to_jax(weight_t, copy=True)), weight_t.numpy())
    with pytest.raises(TypeError, match=r"to_jax: tree\['x'\] is a ndarray; leaves must be torch tensors"):
        lj.to_jax({"x": np.ones(2)})
    with pytest.raises(TypeError, match=r"to_jax: copy must be a bool"):
        lj.to_jax(torch.ones(1), copy=1)
    with pytest.raises(TypeError, match=r"from_jax: tree\['t'\] is a JAX tracer; convert outside jax.jit"):
        jax.jit(lambda a: lj.from_jax({"t": a}))(jax.numpy.ones(2))
    with pytest.raises(TypeError, match=r"from_jax: tree\[0\] is a object; leaves must be JAX arrays"):
        lj.from_jax([object()])
    # requires_grad tensors are detached, not refused
    w = torch.ones(2, requires_grad=True)
    assert lj.shares_memory(w, lj.to_jax(w))


# Models ----------------------------------------------------------------------------------------------
MODELS = {
    "lenet300": lambda: ltfunc.models.lenet300(seed=0),
    "conv2": lambda: ltfunc.models.conv2(seed=0),
    "conv2-rgb32": lambda: ltfunc.models.Conv2(in_channels=3, image_size=32, num_classes=7),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_apply_matches_pytorch_logits(jax: Any, name: str) -> None:
    model = MODELS[name]()
    shape = (5, 3, 32, 32) if name == "conv2-rgb32" else (5, 1, 28, 28)
    x = torch.randn(shape)
    params = ltfunc.get_params(model)
    mask = ltfunc.prune.magnitude(params, masks.ones(params), sparsity=0.7)
    for p in (params, masks.apply(mask, params)):
        expected = ltfunc.call(model, p, x)
        jp, jx = lj.to_jax(p), lj.to_jax(x)
        logits = lj.apply(jp, jx)
        assert logits.shape == tuple(expected.shape)
        assert torch.allclose(lj.from_jax(logits), expected, rtol=1e-5, atol=1e-5)
        jitted = jax.jit(lj.apply)(jp, jx)
        assert torch.allclose(lj.from_jax(jitted), expected, rtol=1e-5, atol=1e-5)
    masked = lj.apply(lj.mask_params(lj.to_jax(params), lj.to_jax(mask)), lj.to_jax(x))
    assert torch.allclose(lj.from_jax(masked), ltfunc.call(model, masks.apply(mask, params), x), atol=1e-5)


def test_jax_gradients_match_torch_autograd(jax: Any) -> None:
    model = ltfunc.models.conv2(seed=2)
    params = ltfunc.get_params(model)
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([1, 0, 9, 3])
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    loss = F.cross_entropy(ltfunc.call(model, leaves, x), y)
    expected = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True))

    jloss, grads = jax.value_and_grad(
        lambda p: lj.cross_entropy(lj.apply(p, lj.to_jax(x)), lj.to_jax(y, downcast=True))
    )(lj.to_jax(params))
    assert abs(float(jloss) - loss.item()) < 1e-5
    assert tree_allclose(lj.from_jax(grads), expected, rtol=1e-4, atol=1e-6)


def test_apply_errors(jax: Any) -> None:
    jp = lj.to_jax(ltfunc.get_params(ltfunc.models.lenet300()))
    x = jax.numpy.zeros((2, 1, 28, 28))
    missing = {k: v for k, v in jp.items() if k != "fc3.bias"}
    with pytest.raises(
        ValueError, match=r"apply: params has keys .* not those of a built-in model; supported: lenet300"
    ):
        lj.apply(missing, x)
    with pytest.raises(ValueError, match=r"apply: params do not fit arch='conv2': missing \['conv1.bias'"):
        lj.apply(jp, x, arch="conv2")
    with pytest.raises(
        ValueError, match=r"apply: arch='mlp' is not supported. Supported: 'lenet300', 'conv2'"
    ):
        lj.apply(jp, x, arch="mlp")
    with pytest.raises(
        ValueError,
        match=r"apply: fc1.weight/fc1.bias have shapes \(300, 784\)/\(300,\); expected \(out, 900\)",
    ):
        lj.apply(jp, jax.numpy.zeros((2, 1, 30, 30)))
    swapped = {**jp, "fc2.weight": jp["fc2.weight"].T}
    with pytest.raises(ValueError, match=r"apply: fc2.weight/fc2.bias have shapes \(300, 100\)"):
        lj.apply(swapped, x)
    conv = lj.to_jax(ltfunc.get_params(ltfunc.models.conv2()))
    with pytest.raises(ValueError, match=r"apply: x has shape \(2, 784\); conv2 needs NCHW input with C=1"):
        lj.apply(conv, jax.numpy.zeros((2, 784)))
    with pytest.raises(TypeError, match=r"apply: params must be a dict"):
        lj.apply([jp], x)
    with pytest.raises(ValueError, match=r"infer_arch: params has keys"):
        lj.infer_arch({"w": 1})


# Masks: jaxpruner ----------------------------------------------------------------------------------
def test_jaxpruner_convention(jax: Any) -> None:
    params = ltfunc.get_params(ltfunc.models.conv2(seed=0))
    mask = ltfunc.prune.magnitude(
        params, masks.ones(params, select=["conv2.weight", "fc1.weight"]), sparsity=0.5
    )
    jp = lj.to_jaxpruner(mask, params)
    assert list(jp) == list(params)  # all parameter names, in order
    assert [k for k, v in jp.items() if v is not None] == ["conv2.weight", "fc1.weight"]
    for k in mask:
        assert jp[k].dtype.name == "uint8" and np.array_equal(_host(jp[k]), mask[k].numpy().astype(np.uint8))
    assert lj.to_jaxpruner(mask, params, dtype="bool")["fc1.weight"].dtype.name == "bool"
    # jax.tree_util treats the None entries as empty subtrees, as jaxpruner relies on.
    assert len(jax.tree_util.tree_leaves(jp)) == 2
    assert lj.from_jaxpruner(jp, params) == mask
    assert lj.from_jaxpruner(jp) == mask
    # jaxpruner's apply_mask (param * mask, skipping None) equals ltfunc's masks.apply.
    jparams = lj.to_jax(params)
    applied = {k: (v if jp[k] is None else v * jp[k]) for k, v in jparams.items()}
    assert ltfunc.tree_equal(lj.from_jax(applied), masks.apply(mask, params))
    with pytest.raises(ValueError, match=r"to_jaxpruner: dtype='int8' is not supported"):
        lj.to_jaxpruner(mask, params, dtype="int8")


def test_mask_computed_in_jax_the_jaxpruner_way_matches_ltfunc(jax: Any) -> None:
    """A layer-wise top-k magnitude mask computed in JAX (jaxpruner's uint8 0/1 convention)."""
    jnp = jax.numpy
    params = ltfunc.get_params(ltfunc.models.lenet300(seed=4))
    jparams = lj.to_jax(params)

    def topk_mask(score: Any, sparsity: float) -> Any:
        flat = jnp.abs(score).reshape(-1)
        keep = flat.size - int(np.floor(sparsity * flat.size + 0.5))
        threshold = jnp.sort(flat)[flat.size - keep]
        return (jnp.abs(score) >= threshold).astype(jnp.uint8)

    jp = {k: (topk_mask(v, 0.75) if v.ndim == 2 else None) for k, v in jparams.items()}
    expected = ltfunc.prune.magnitude(params, masks.ones(params), sparsity=0.75, scope="layer")
    assert lj.from_jaxpruner(jp, params) == expected


def test_jaxpruner_errors(jax: Any) -> None:
    params = ltfunc.get_params(ltfunc.models.lenet300())
    conv_mask = masks.ones(ltfunc.models.conv2())
    with pytest.raises(ValueError, match=r"to_jaxpruner: mask has keys \['conv1.weight', 'conv2.weight'\]"):
        lj.to_jaxpruner(conv_mask, params)
    packed = {"fc1.weight": jax.numpy.packbits(jax.numpy.ones((300, 784), jax.numpy.uint8))}
    with pytest.raises(
        ValueError, match=r"has shape \(29400,\) but params\['fc1.weight'\] has shape \(300, 784\)"
    ):
        lj.from_jaxpruner(packed, params)
    with pytest.raises(
        ValueError, match=r"from_jaxpruner: masks\['w'\] \(uint8\) holds values other than 0 and 1"
    ):
        lj.from_jaxpruner({"w": jax.numpy.array([0, 3], jax.numpy.uint8)})
    with pytest.raises(TypeError, match=r"from_jaxpruner: masks\['w'\] has dtype float32"):
        lj.from_jaxpruner({"w": jax.numpy.ones(2)})
    with pytest.raises(TypeError, match=r"from_jaxpruner: masks must be a mapping"):
        lj.from_jaxpruner([jax.numpy.ones(2)])
    with pytest.raises(TypeError, match=r"mask_params: mask must be None or a dict of JAX arrays"):
        lj.mask_params(lj.to_jax(params), masks.ones(params))


# Training and evaluation -----------------------------------------------------------------------------
@pytest.mark.parametrize("build", [ltfunc.models.lenet300, ltfunc.models.conv2], ids=["lenet300", "conv2"])
def test_jax_masked_sgd_step_matches_torch(jax: Any, optax: Any, build: Any) -> None:
    model = build(seed=5)
    params = ltfunc.get_params(model)
    mask = ltfunc.prune.magnitude(params, masks.ones(params), sparsity=0.8)
    gen = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(16, 1, 28, 28, generator=gen), torch.randint(0, 10, (16,), generator=gen))
        for _ in range(4)
    ]
    lr, momentum = 0.05, 0.9
    # reference: masked training with torch.optim.SGD on the module (independent of ltfunc.step)
    ref, _, losses = train_reference(
        model, lambda ps: torch.optim.SGD(ps, lr=lr, momentum=momentum), mask, batches
    )
    expected = ltfunc.get_params(ref)

    opt = optax.sgd(lr, momentum=momentum)
    step = lj.make_train_step(opt)
    jparams, jmask = lj.to_jax(masks.apply(mask, params)), lj.to_jaxpruner(mask, params)
    state = opt.init(jparams)
    for (x, y), loss in zip(batches, losses, strict=True):
        jparams, state, metrics = step(jparams, state, jmask, (lj.to_jax(x), lj.to_jax(y, downcast=True)))
        assert abs(float(metrics["loss"]) - loss) < 1e-4
        assert 0.0 <= float(metrics["accuracy"]) <= 1.0
    got = lj.from_jax(jparams, copy=True)
    assert tree_allclose(got, expected, rtol=1e-4, atol=1e-5)
    for k, m in mask.items():
        assert torch.all(got[k][~m] == 0)  # pruned weights are exactly 0
    # The weights actually moved (the comparison is not trivially between initial values).
    assert not tree_allclose(got, masks.apply(mask, params), atol=1e-4)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
def test_jax_step_matches_ltfunc_step(jax: Any, optax: Any, optimizer: str) -> None:
    """ltfunc's own masked step (eager) and the JAX step agree, starting from unmasked params."""
    model = ltfunc.models.lenet300(seed=6)
    params = ltfunc.get_params(model)  # not masked: both steps mask on entry
    mask = ltfunc.prune.random(params, masks.ones(params), sparsity=0.7, seed=2)
    lr, momentum = 0.1, (0.9 if optimizer == "momentum" else 0.0)
    torch_step = make_train_step(model, ltfunc.optim.sgd(lr, momentum=momentum), compile=False)
    opt = optax.sgd(lr, momentum=momentum or None)
    jax_step = lj.make_train_step(opt)

    gen = torch.Generator().manual_seed(3)
    state = torch_step.init(params)
    jp, jmask = lj.to_jax(params, copy=True), lj.to_jax(mask)
    jstate = opt.init(jp)
    for _ in range(3):
        x, y = torch.randn(32, 1, 28, 28, generator=gen), torch.randint(0, 10, (32,), generator=gen)
        state, metrics = torch_step(state, mask, (x, y), lr)
        jp, jstate, jmetrics = jax_step(jp, jstate, jmask, (lj.to_jax(x), lj.to_jax(y, downcast=True)))
        assert abs(float(jmetrics["loss"]) - float(metrics["loss"])) < 1e-4
        assert float(jmetrics["accuracy"]) == float(metrics["accuracy"])
    got = lj.from_jax(jp, copy=True)
    assert tree_allclose(got, state.params, rtol=1e-4, atol=1e-5)
    assert all(torch.all(got[k][~m] == 0) for k, m in mask.items())
    if optimizer == "momentum":  # the momentum buffers agree too (optax's trace vs ltfunc's)
        assert tree_allclose(
            lj.from_jax(jstate[0].trace, copy=True), state.opt_state.momentum, rtol=1e-4, atol=1e-5
        )


def test_ltfunc_optimizer_state_round_trip(jax: Any) -> None:
    model = ltfunc.models.lenet300(seed=0)
    params = ltfunc.get_params(model)
    opt = ltfunc.optim.adam(1e-3)
    step = make_train_step(model, opt, compile=False)
    batch = (torch.randn(8, 1, 28, 28), torch.arange(8))
    state = step(step.init(params), None, batch, 1e-3)[0].opt_state
    with pytest.raises(TypeError, match=r"to_jax: tree\.count has dtype torch.int64"):
        lj.to_jax(state)
    out = lj.to_jax(state, downcast=True)  # the int64 step counter becomes int32, exactly
    assert type(out) is type(state) and out.count.dtype.name == "int32" and int(out.count) == 1
    for k in params:  # ltfunc's step returns views into one flat buffer
        assert np.array_equal(_host(out.mu[k]), state.mu[k].numpy())
        if state.mu[k].data_ptr() % 64 == 0:  # XLA's CPU alignment: JAX copies other views
            assert lj.shares_memory(state.mu[k], out.mu[k])
    back = lj.from_jax(out)
    assert type(back) is type(state) and int(back.count) == 1
    assert ltfunc.tree_equal(back.mu, state.mu) and ltfunc.tree_equal(back.nu, state.nu)


def test_train_step_validates_arguments(jax: Any, optax: Any) -> None:
    with pytest.raises(
        TypeError, match=r"make_train_step: optimizer must be an optax GradientTransformation"
    ):
        lj.make_train_step(ltfunc.models.lenet300())
    with pytest.raises(ValueError, match=r"make_train_step: arch='resnet' is not supported"):
        lj.make_train_step(optax.sgd(0.1), arch="resnet")
    step = lj.make_train_step(optax.sgd(0.1), jit=False)
    p = lj.to_jax(ltfunc.get_params(ltfunc.models.lenet300()))
    batch = (jax.numpy.zeros((2, 784)), jax.numpy.zeros(2, jax.numpy.int32))
    with pytest.raises(ValueError, match=r"step: mask\['fc1.weight'\] has shape \(784, 300\)"):
        step(p, optax.sgd(0.1).init(p), {"fc1.weight": jax.numpy.ones((784, 300), bool)}, batch)


def test_evaluate_matches_torch(jax: Any) -> None:
    model = ltfunc.models.lenet300(seed=0)
    params = ltfunc.get_params(model)
    mask = ltfunc.prune.magnitude(params, masks.ones(params), sparsity=0.5)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(250, 1, 28, 28, generator=gen), torch.randint(0, 10, (250,), generator=gen)
    logits = ltfunc.call(model, masks.apply(mask, params), x)
    loss, correct = float(F.cross_entropy(logits, y)), int((logits.argmax(1) == y).sum())

    jloss, jacc = lj.evaluate(lj.to_jax(params), x, y, mask=lj.to_jax(mask), batch_size=100)
    assert abs(jloss - loss) < 1e-5
    assert round(jacc * 250) == correct and jacc == correct / 250
    preds = lj.predict(lj.to_jax(masks.apply(mask, params)), lj.to_jax(x))
    assert np.array_equal(_host(preds), logits.argmax(1).numpy())
    with pytest.raises(ValueError, match=r"evaluate: batch_size must be >= 1"):
        lj.evaluate(lj.to_jax(params), x, y, batch_size=0)
    with pytest.raises(
        ValueError, match=r"evaluate: need x of shape \(N, ...\) with N > 0 and y of shape \(N,\)"
    ):
        lj.evaluate(lj.to_jax(params), x, y[:10])


# Example -----------------------------------------------------------------------------------------------
def test_jax_ticket_example_runs(jax: Any, data_root: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        str(ROOT / "examples" / "jax_ticket.py"),
        "--data-root",
        str(data_root),
        "--iterations",
        "20",
        "--retrain-iterations",
        "20",
        "--test-size",
        "2000",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "identical: True" in result.stdout
