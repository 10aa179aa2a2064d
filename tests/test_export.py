"""ltfunc.export: sparse inference modules equal the dense masked model; bad input is refused."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
import torch
from torch import nn

import ltfunc
from ltfunc import masks
from ltfunc.export import (
    AUTO_MIN_SPARSITY,
    SparseConv2d,
    SparseLinear,
    describe,
    export_sparse,
    format_description,
)

CUDA_2_4 = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)


def random_mask(params: dict[str, torch.Tensor], densities: dict[str, float], seed: int = 0) -> masks.Mask:
    """A mask with each listed layer kept at its density (uniformly at random)."""
    gen = torch.Generator().manual_seed(seed)
    return masks.Mask({k: torch.rand(params[k].shape, generator=gen) < d for k, d in densities.items()})


def reference(model: nn.Module, params: dict, mask: masks.Mask, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return ltfunc.call(model.eval(), masks.apply(mask, params), x)


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = max(1.0, float(b.abs().max()))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale)


LENET_DENSITIES = [
    {"fc1.weight": 0.036, "fc2.weight": 0.2, "fc3.weight": 1.0},
    {"fc1.weight": 1.0, "fc2.weight": 0.0, "fc3.weight": 0.036},
    {"fc1.weight": 0.0, "fc2.weight": 0.036, "fc3.weight": 0.2},
]
CONV2_DENSITIES = [
    {"conv1.weight": 0.2, "conv2.weight": 0.036, "fc1.weight": 0.036, "fc2.weight": 0.2, "fc3.weight": 1.0},
    {"conv1.weight": 1.0, "conv2.weight": 0.0, "fc1.weight": 1.0, "fc2.weight": 0.0, "fc3.weight": 0.036},
]


@pytest.fixture(scope="module")
def lenet() -> tuple[nn.Module, dict]:
    m = ltfunc.models.lenet300(seed=0)
    p = {k: v + 0.01 * (k.endswith("bias")) for k, v in ltfunc.get_params(m).items()}  # nonzero biases
    return m, p


@pytest.fixture(scope="module")
def conv2() -> tuple[nn.Module, dict]:
    m = ltfunc.models.conv2(seed=0)
    p = {k: v + 0.01 * (k.endswith("bias")) for k, v in ltfunc.get_params(m).items()}
    return m, p


# ----------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("layout,blocksize", [("csr", None), ("bsr", None), ("bsr", 2), ("dense", None)])
@pytest.mark.parametrize("case", range(len(LENET_DENSITIES)))
def test_lenet_export_equals_the_dense_masked_model(
    lenet: tuple[nn.Module, dict], layout: str, blocksize: int | None, case: int
) -> None:
    model, params = lenet
    mask = random_mask(params, LENET_DENSITIES[case], seed=case)
    sparse = export_sparse(model, params, mask, layout=layout, blocksize=blocksize)
    kinds = {type(sparse.get_submodule(n)) for n in ("fc1", "fc2", "fc3")}
    assert kinds == ({nn.Linear} if layout == "dense" else {SparseLinear})
    for batch in (1, 256):
        x = torch.randn(batch, 1, 28, 28)
        with torch.no_grad():
            out = sparse(x)
        close(out, reference(model, params, mask, x))
    assert out.shape == (256, 10)


@pytest.mark.parametrize("layout", ["csr", "bsr"])
@pytest.mark.parametrize("case", range(len(CONV2_DENSITIES)))
def test_conv2_export_equals_the_dense_masked_model(
    conv2: tuple[nn.Module, dict], layout: str, case: int
) -> None:
    model, params = conv2
    mask = random_mask(params, CONV2_DENSITIES[case], seed=10 + case)
    sparse = export_sparse(model, params, mask, layout=layout)
    assert type(sparse.conv2) is nn.Conv2d and type(sparse.fc1) is SparseLinear  # convs=False
    for batch in (1, 256):
        x = torch.randn(batch, 1, 28, 28)
        with torch.no_grad():
            close(sparse(x), reference(model, params, mask, x))


@pytest.mark.parametrize("layout", ["csr", "bsr"])
def test_conv2_sparse_convolutions_equal_the_dense_ones(conv2: tuple[nn.Module, dict], layout: str) -> None:
    model, params = conv2
    mask = random_mask(params, CONV2_DENSITIES[0], seed=3)
    sparse = export_sparse(model, params, mask, layout=layout, convs=True)
    assert type(sparse.conv1) is SparseConv2d and type(sparse.conv2) is SparseConv2d
    for batch in (1, 8):  # im2col at batch 256 would hold 460 MB: the math is the same per sample
        x = torch.randn(batch, 1, 28, 28)
        with torch.no_grad():
            close(sparse(x), reference(model, params, mask, x))
    close(sparse.conv1(x[0]), sparse.conv1(x[:1])[0])  # an unbatched (C, H, W) input


def test_sparse_conv_with_stride_dilation_and_no_bias() -> None:
    conv = nn.Conv2d(3, 8, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), bias=False)
    model = nn.Sequential(conv)
    params = ltfunc.get_params(model)
    mask = random_mask(params, {"0.weight": 0.3})
    sparse = export_sparse(model, params, mask, layout="csr", convs=True)
    x = torch.randn(2, 3, 9, 7)
    close(sparse(x), reference(model, params, mask, x))


def test_auto_converts_only_layers_sparse_enough(lenet: tuple[nn.Module, dict]) -> None:
    model, params = lenet
    mask = random_mask(params, LENET_DENSITIES[0])  # fc1 3.6%, fc2 20%, fc3 100%
    sparse = export_sparse(model, params, mask)
    rows = {r.name: r for r in describe(sparse)}
    assert [rows[n].layout for n in ("fc1", "fc2", "fc3")] == ["csr", "dense", "dense"]
    assert rows["fc1"].density == pytest.approx(float(mask["fc1.weight"].float().mean()))
    assert str(AUTO_MIN_SPARSITY) in rows["fc2"].reason
    assert type(sparse.fc1) is SparseLinear and type(sparse.fc2) is nn.Linear
    # dense layers hold the masked weights
    assert torch.equal(sparse.fc2.weight, masks.apply(mask, params)["fc2.weight"])
    lower = export_sparse(model, params, mask, min_sparsity=0.5)
    assert [r.layout for r in describe(lower)] == ["csr", "csr", "dense"]
    x = torch.randn(3, 1, 28, 28)
    close(lower(x), reference(model, params, mask, x))


def test_conv_layers_are_reported_dense_without_convs(conv2: tuple[nn.Module, dict]) -> None:
    model, params = conv2
    mask = random_mask(params, {"conv2.weight": 0.01, "fc1.weight": 0.01})
    rows = {r.name: r for r in describe(export_sparse(model, params, mask))}
    assert rows["conv2"].layout == "dense" and "convs=False" in rows["conv2"].reason
    assert rows["fc1"].layout == "csr"
    assert rows["conv1"].reason == "not masked" and rows["conv1"].density == 1.0
    text = format_description(export_sparse(model, params, mask))
    assert "fc1" in text and "csr" in text and str(int(mask["fc1.weight"].sum())) in text


def test_the_input_model_params_and_mask_are_unchanged(lenet: tuple[nn.Module, dict]) -> None:
    model, params = lenet
    model.train()
    before = copy.deepcopy(model.state_dict())
    params_before = ltfunc.snapshot(params)
    mask = random_mask(params, LENET_DENSITIES[0])
    mask_before = ltfunc.snapshot(mask)
    sparse = export_sparse(model, params, mask, layout="csr")
    assert model.training and not sparse.training
    assert type(model.fc1) is nn.Linear and model.fc1.weight.requires_grad
    assert ltfunc.tree_equal(dict(model.state_dict()), dict(before))
    assert ltfunc.tree_equal(params, params_before) and mask == mask_before
    assert not any(p.requires_grad for p in sparse.parameters())


def test_bsr_blocksize_is_recorded_and_block_masks_store_fewer_values(lenet: tuple[nn.Module, dict]) -> None:
    model, params = lenet
    gen = torch.Generator().manual_seed(0)
    blocks = torch.rand(75, 196, generator=gen) < 0.1  # fc1 300x784 in 4x4 blocks
    block_mask = blocks.repeat_interleave(4, 0).repeat_interleave(4, 1)
    mask = masks.Mask({"fc1.weight": block_mask})
    sparse = export_sparse(model, params, mask, layout="bsr", blocksize=4)
    assert "blocksize 4" in describe(sparse)[0].reason
    assert sparse.fc1.nnz() == int(block_mask.sum())  # whole blocks: no stored zeros
    assert sparse.fc1.sparse_weight().layout == torch.sparse_bsr
    x = torch.randn(5, 1, 28, 28)
    close(sparse(x), reference(model, params, mask, x))


def test_exported_module_saves_loads_copies_and_converts(lenet: tuple[nn.Module, dict]) -> None:
    model, params = lenet
    mask = random_mask(params, LENET_DENSITIES[0])
    sparse = export_sparse(model, params, mask, layout="csr", min_sparsity=0.5)
    x = torch.randn(4, 1, 28, 28)
    want = sparse(x)
    buf = io.BytesIO()
    torch.save(sparse, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    torch.testing.assert_close(loaded(x), want, rtol=0, atol=0)
    assert describe(loaded) == describe(sparse)
    torch.testing.assert_close(copy.deepcopy(sparse)(x), want, rtol=0, atol=0)
    state = sparse.state_dict()
    assert {"fc1.crow_indices", "fc1.col_indices", "fc1.values", "fc1.bias"} <= set(state)
    double = copy.deepcopy(sparse).to(torch.float64)  # the sparse weight is rebuilt after .to()
    assert double.fc1.sparse_weight().dtype == torch.float64
    close(double(x.double()).float(), want)


# ----------------------------------------------------------------------- bad input
def test_a_mask_that_does_not_fit_the_params_names_the_key_and_both_shapes(
    lenet: tuple[nn.Module, dict],
) -> None:
    model, params = lenet
    bad = masks.Mask({"fc1.weight": torch.ones(300, 783, dtype=torch.bool)})
    with pytest.raises(
        ValueError, match=r"export_sparse: mask\['fc1.weight'\] has shape \(300, 783\).*\(300, 784\)"
    ):
        export_sparse(model, params, bad)
    unknown = masks.Mask({"fc9.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"export_sparse: mask has keys \['fc9.weight'\]"):
        export_sparse(model, params, unknown)
    with pytest.raises(TypeError, match="export_sparse: mask must be an ltfunc Mask"):
        export_sparse(model, params, {"fc1.weight": torch.ones(300, 784, dtype=torch.bool)})  # type: ignore[arg-type]


def test_params_that_do_not_fit_the_model(lenet: tuple[nn.Module, dict]) -> None:
    model, params = lenet
    mask = masks.ones(params)
    wrong = {**params, "fc2.weight": torch.zeros(100, 301)}
    with pytest.raises(ValueError, match=r"params\['fc2.weight'\] has shape \(100, 301\).*\(100, 300\)"):
        export_sparse(model, wrong, mask)
    missing = {k: v for k, v in params.items() if k != "fc3.bias"}
    with pytest.raises(ValueError, match=r"missing the model's parameters \['fc3.bias'\]"):
        export_sparse(model, missing, mask)
    with pytest.raises(ValueError, match="does not have"):
        export_sparse(model, params, mask, buffers={"running_mean": torch.zeros(3)})
    ints = {k: (v.long() if k == "fc1.weight" else v) for k, v in params.items()}
    with pytest.raises(TypeError, match=r"params\['fc1.weight'\] has dtype torch.int64"):
        export_sparse(model, ints, mask)
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        export_sparse("lenet", params, mask)  # type: ignore[arg-type]


def test_bad_layout_blocksize_and_min_sparsity(lenet: tuple[nn.Module, dict]) -> None:
    model, params = lenet
    mask = masks.ones(params)
    with pytest.raises(ValueError, match=r"layout='coo' is not supported. Supported: 'auto', 'csr'"):
        export_sparse(model, params, mask, layout="coo")
    with pytest.raises(
        ValueError, match=r"blocksize=7 does not divide the shape \(300, 784\) of 'fc1.weight'"
    ):
        export_sparse(model, params, mask, layout="bsr", blocksize=7)
    with pytest.raises(ValueError, match="blocksize=4 is only for layout='bsr'"):
        export_sparse(model, params, mask, layout="csr", blocksize=4)
    with pytest.raises(ValueError, match=r"blocksize must be an int >= 1, got 0"):
        export_sparse(model, params, mask, layout="bsr", blocksize=0)
    with pytest.raises(ValueError, match=r"min_sparsity must be a finite number in \[0.0, 1.0\], got 1.5"):
        export_sparse(model, params, mask, min_sparsity=1.5)
    with pytest.raises(TypeError, match="convs must be a bool"):
        export_sparse(model, params, mask, convs=1)  # type: ignore[arg-type]


def two_four_mask(shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Exactly 2 kept of every 4 consecutive weights along the input dimension."""
    gen = torch.Generator().manual_seed(seed)
    groups = torch.rand(shape[0], shape[1] // 4, 4, generator=gen).argsort(-1) < 2
    return groups.reshape(shape)


def mlp(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 64)).to(dtype)


def test_semi_structured_refuses_a_mask_that_is_not_2_4() -> None:
    model = mlp(torch.float16)
    params = ltfunc.get_params(model)
    m = two_four_mask((128, 256))
    m[5, 8:12] = torch.tensor([True, True, True, False])
    mask = masks.Mask({"0.weight": m, "2.weight": two_four_mask((64, 128))})
    with pytest.raises(ValueError, match=r"mask\['0.weight'\] is not 2:4: row 5, columns 8..11 keep 3 of 4"):
        export_sparse(model, params, mask, layout="semi_structured")


@pytest.mark.skipif(CUDA_2_4, reason="checks the message on machines without a 2:4-capable GPU")
def test_semi_structured_without_cuda_says_why() -> None:
    model = mlp(torch.float16)
    params = ltfunc.get_params(model)
    mask = masks.Mask({"0.weight": two_four_mask((128, 256)), "2.weight": two_four_mask((64, 128))})
    with pytest.raises(
        ValueError, match=r"semi_structured' cannot be used: the params are on cpu.*CUDA GPUs only"
    ):
        export_sparse(model, params, mask, layout="semi_structured")
    fp32 = mlp()
    with pytest.raises(ValueError, match=r"needs float16 or bfloat16 weights.*torch\.float32"):
        export_sparse(fp32, ltfunc.get_params(fp32), mask, layout="semi_structured")
    # auto on the CPU: a 2:4 mask (50% sparse) stays dense
    assert {r.layout for r in describe(export_sparse(model, params, mask))} == {"dense"}


@pytest.mark.skipif(not CUDA_2_4, reason="needs a CUDA GPU with compute capability >= 8.0 (2:4 kernels)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_semi_structured_on_cuda_equals_the_dense_masked_model(dtype: torch.dtype) -> None:
    model = mlp(dtype).cuda()
    params = ltfunc.get_params(model)
    mask = masks.Mask({"0.weight": two_four_mask((128, 256)), "2.weight": two_four_mask((64, 128), 1)})
    mask = mask.to("cuda")
    for layout in ("semi_structured", "auto"):
        sparse = export_sparse(model, params, mask, layout=layout)
        assert [r.layout for r in describe(sparse)] == ["semi_structured", "semi_structured"]
        for batch in (1, 256):
            x = torch.randn(batch, 256, device="cuda", dtype=dtype)
            with torch.no_grad():
                out, ref = sparse(x), reference(model, params, mask, x)
            torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2 * float(ref.abs().max()))


# ----------------------------------------------------------------------- CLI
def test_cli_export_of_a_run_round(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ltfunc.cli import main
    from ltfunc.rundir import load_round

    runs = tmp_path / "runs"
    tiny = "--rounds 1 --rate 0.97 --iterations 20 --eval-every 10 --val-size 500 --baselines none"
    args = [*tiny.split(), "--no-compile", "--quiet", "--data-root", str(data_root)]
    assert main(["imp", *args, "--runs-dir", str(runs), "--name", "t"]) == 0
    capsys.readouterr()
    out = tmp_path / "ticket.pt"
    assert main(["export", str(runs / "t"), "--round", "1", "--layout", "csr", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fc1" in text and "csr" in text and str(out) in text
    module = torch.load(out, weights_only=False)
    r = load_round(runs / "t", "ticket", 1)
    model = ltfunc.models.lenet300()
    x = torch.randn(7, 1, 28, 28)
    close(module(x), reference(model, r.final.params, r.mask, x))
    assert main(["export", str(runs / "t"), "--round", "5", "-o", str(tmp_path / "b.pt")]) == 2
    assert "not a finished round" in capsys.readouterr().err
    assert main(["export", str(runs / "t"), "--round", "1", "--layout", "bsr", "--blocksize", "7", "-o",
                 str(tmp_path / "c.pt")]) == 2  # fmt: skip
    assert "does not divide" in capsys.readouterr().err and not (tmp_path / "c.pt").exists()
    assert main(["export", str(runs / "t"), "--round", "1", "-o", str(tmp_path)]) == 2
    assert "-o/--output" in capsys.readouterr().err


def test_layers_that_are_not_plain_linear_or_conv2d_stay_masked_dense() -> None:
    class Scaled(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    model = nn.Sequential(Scaled(8, 4), nn.ReLU(), nn.Linear(4, 3))
    params = ltfunc.get_params(model)
    mask = random_mask(params, {"0.weight": 0.01, "2.weight": 0.01})
    sparse = export_sparse(model, params, mask)
    rows = {r.name: r for r in describe(sparse)}
    assert rows["0"].layout == "dense" and "not an nn.Linear" in rows["0"].reason
    assert type(sparse[0]) is Scaled and type(sparse[2]) is SparseLinear
    x = torch.randn(5, 8)
    close(sparse(x), reference(model, params, mask, x))
    with pytest.raises(ValueError, match="was not made by export_sparse"):
        describe(model)
