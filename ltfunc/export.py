"""Export a ticket (params + mask) for sparse inference: an ``nn.Module`` with sparse layers.

:func:`export_sparse` deep-copies a model, loads the masked weights into the copy and swaps
its pruned ``nn.Linear`` layers (and, on request, ``nn.Conv2d`` layers) for modules that hold
the weight in one of PyTorch's sparse formats:

- ``"csr"``: compressed sparse rows, ``y = (W x^T)^T`` with ``torch.addmm(bias, W_csr, x^T)``
  (MKL on the CPU, cuSPARSE on CUDA);
- ``"bsr"``: block sparse rows with square ``b x b`` blocks (MKL needs square blocks), for
  block-structured tickets (``structure="block:RxC"``); on an unstructured mask nearly every
  block holds a survivor and BSR does more work than the dense layer;
- ``"semi_structured"``: ``torch.sparse.to_sparse_semi_structured`` for 2:4 tickets
  (at most 2 kept of every 4 consecutive weights along the input dimension), float16 or
  bfloat16 weights on a CUDA GPU with 2:4 sparse tensor cores (compute capability >= 8.0);
- ``"dense"``: the masked dense model (the baseline);
- ``"auto"``: on the CPU, CSR for the Linear layers with sparsity >= :data:`AUTO_MIN_SPARSITY`,
  dense otherwise; on CUDA, 2:4 semi-structured for the Linear layers whose mask, dtype and
  shape allow it, dense otherwise (CSR on CUDA is not chosen: it was not measured).

Why 95%: one-thread CPU timings of ``addmm(bias, W_csr, x^T)`` against ``F.linear`` on the
layers of LeNet-300-100 (784-300, 300-100) and Conv-2 (12544-256) at batch 1 and 256, random
masks, on a shared 2-core machine (noisy): CSR was faster for every layer at batch 256 from
3.6% density down, and at 10% for the 784-300 and 300-100 layers; at batch 1 CSR was faster
for the two large layers at 3.6% and below and slower for the 300-100 layer at every density
(about 10 µs against 5 µs). At 21% density CSR was slower everywhere. 5% density is the
simple cut between those. ``bench/export.py`` measures whole models.

Convolutions stay dense unless ``convs=True``: :class:`SparseConv2d` (``F.unfold`` + a sparse
matmul) was measured slower than the dense ``conv2d`` for Conv-2's 64->64 convolution at every
density down to 1.4% and batch 1 and 32 (the im2col copy alone took about as long as the
dense convolution), and for its 1->64 convolution at batch 1.

:func:`describe` lists what was done to each layer (its layout, density and why).
``ltfunc export RUN_DIR --round K`` (:mod:`ltfunc._export_cli`) exports a round of a run
directory to a ``torch.save`` file.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_bool, check_choice, check_int, check_module, check_number, check_tree
from .masks import Mask, check_compatible

__all__ = [
    "AUTO_MIN_SPARSITY",
    "LAYOUTS",
    "LayerExport",
    "SparseConv2d",
    "SparseLinear",
    "describe",
    "export_sparse",
    "format_description",
]

LAYOUTS = ("auto", "csr", "bsr", "semi_structured", "dense")
"""The ``layout=`` values of :func:`export_sparse`."""
AUTO_MIN_SPARSITY = 0.95
"""Under ``layout="auto"`` on the CPU, a Linear layer becomes CSR from this sparsity up."""
_SEMI_DTYPES = (torch.float16, torch.bfloat16)
_BSR_BLOCKS = (16, 8, 4, 2, 1)
_ATTR = "ltfunc_export"


class LayerExport(NamedTuple):
    """What :func:`export_sparse` did to one layer (a row of :func:`describe`)."""

    name: str
    """The module's name in the model, e.g. ``"fc1"``."""
    kind: str
    """``"linear"``, ``"conv2d"`` or the module's class name."""
    layout: str
    """``"csr"``, ``"bsr"``, ``"semi_structured"`` or ``"dense"``."""
    density: float
    """Fraction of the layer's weights kept by the mask (1.0 for an unmasked layer)."""
    reason: str
    """Why this layout (``"sparsity 0.964 >= 0.95"``, ``"not masked"``, ...)."""


# Sparse modules ------------------------------------------------------------------------------
class _SparseWeight(nn.Module):
    """A weight held as CSR/BSR components (or a dense 2:4 weight), with the sparse tensor cached.

    The components are buffers, so ``state_dict``, ``.to()``, ``copy.deepcopy`` and pickling
    work; the sparse tensor is rebuilt from them when they are replaced (``.to()``).
    """

    layout: str
    weight_shape: tuple[int, int]
    crow_indices: Tensor
    col_indices: Tensor
    values: Tensor
    weight: Tensor

    def _set_weight(self, dense: Tensor, layout: str, blocksize: int | None) -> None:
        self.layout = layout
        self.weight_shape = (int(dense.shape[0]), int(dense.shape[1]))
        self._cache: tuple[Any, ...] | None = None
        with warnings.catch_warnings():  # "sparse CSR/BSR support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            if layout == "csr":
                s = dense.to_sparse_csr()
            elif layout == "bsr":
                assert blocksize is not None
                s = dense.to_sparse_bsr((blocksize, blocksize))
            else:
                self.register_buffer("weight", dense.contiguous())
                self.sparse_weight()  # convert now: a failure shows at export, not at the first call
                return
        self.register_buffer("crow_indices", s.crow_indices().contiguous())
        self.register_buffer("col_indices", s.col_indices().contiguous())
        self.register_buffer("values", s.values().contiguous())

    def _parts(self) -> tuple[Tensor, ...]:
        if self.layout == "semi_structured":
            return (self.weight,)
        return (self.crow_indices, self.col_indices, self.values)

    def sparse_weight(self) -> Tensor:
        """The weight as a sparse tensor (built from the buffers, cached until they change).

        Returns:
            A CSR, BSR or ``SparseSemiStructuredTensor`` of shape ``weight_shape``.

        Example:
            >>> import torch
            >>> SparseLinear(torch.eye(3), None, "csr").sparse_weight().layout
            torch.sparse_csr
        """
        parts = self._parts()
        cache = self._cache
        if cache is None or any(a is not b for a, b in zip(cache[:-1], parts, strict=True)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                w: Tensor
                if self.layout == "semi_structured":
                    w = torch.sparse.to_sparse_semi_structured(parts[0])
                else:
                    make = torch.sparse_csr_tensor if self.layout == "csr" else torch.sparse_bsr_tensor
                    crow, col, vals = parts
                    w = make(crow, col, vals, size=self.weight_shape, check_invariants=False)
            self._cache = (*parts, w)
            return w
        return cache[-1]

    def _matmul_t(self, x2: Tensor, bias: Tensor | None) -> Tensor:
        """``x2 @ W^T + bias`` for a 2-D ``x2``."""
        w = self.sparse_weight()
        if self.layout == "semi_structured":
            return F.linear(x2, w, bias)
        if bias is None:
            return torch.mm(w, x2.t()).t()
        return torch.addmm(bias.unsqueeze(1), w, x2.t()).t()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = None  # sparse tensors cannot be deep-copied; rebuilt on the next call
        return state

    def nnz(self) -> int:
        """Stored weights: nonzeros (CSR), the elements of the stored blocks (BSR), or half
        the weights (2:4).

        Example:
            >>> import torch
            >>> SparseLinear(torch.eye(3), None, "csr").nnz()
            3
        """
        if self.layout == "semi_structured":
            return self.weight.numel() // 2
        return int(self.values.numel())


class SparseLinear(_SparseWeight):
    """An inference ``nn.Linear`` whose weight is stored sparse (CSR, BSR or 2:4).

    Args:
        weight: The dense (masked) weight, ``(out_features, in_features)``.
        bias: The bias or ``None``.
        layout: ``"csr"``, ``"bsr"`` or ``"semi_structured"``.
        blocksize: The square block side for ``"bsr"`` (dividing both dimensions).

    Example:
        >>> import torch
        >>> lin = SparseLinear(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.zeros(2), "csr")
        >>> lin(torch.ones(1, 2))
        tensor([[1., 2.]])
    """

    def __init__(
        self, weight: Tensor, bias: Tensor | None, layout: str, blocksize: int | None = None
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = int(weight.shape[1]), int(weight.shape[0])
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self._set_weight(weight.detach(), layout, blocksize)

    def forward(self, x: Tensor) -> Tensor:
        y = self._matmul_t(x.reshape(-1, self.in_features), self.bias)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, layout={self.layout}"


class SparseConv2d(_SparseWeight):
    """An inference ``nn.Conv2d`` (groups 1, zero padding) as ``F.unfold`` + a sparse matmul.

    Slower than the dense convolution in every case measured (see the module docstring);
    :func:`export_sparse` builds it only with ``convs=True``.

    Args:
        conv: The convolution to copy (its hyperparameters and bias).
        weight: Its dense (masked) weight, ``(out, in, kh, kw)``.
        layout: ``"csr"`` or ``"bsr"``.
        blocksize: The square block side for ``"bsr"`` (dividing ``out`` and ``in*kh*kw``).

    Example:
        >>> import torch
        >>> conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        >>> sc = SparseConv2d(conv, conv.weight.detach(), "csr")
        >>> x = torch.randn(1, 1, 5, 5)
        >>> torch.allclose(sc(x), conv(x), atol=1e-6)
        True
    """

    def __init__(self, conv: nn.Conv2d, weight: Tensor, layout: str, blocksize: int | None = None) -> None:
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size: tuple[int, int] = (conv.kernel_size[0], conv.kernel_size[1])
        self.stride: tuple[int, int] = (conv.stride[0], conv.stride[1])
        self.dilation: tuple[int, int] = (conv.dilation[0], conv.dilation[1])
        pad = conv.padding  # ints: export_sparse keeps "same"/"valid" convs dense
        self.padding: tuple[int, int] = (int(pad[0]), int(pad[1]))
        b = conv.bias
        self.bias = None if b is None else nn.Parameter(b.detach().clone(), requires_grad=False)
        self._set_weight(weight.detach().flatten(1), layout, blocksize)

    def forward(self, x: Tensor) -> Tensor:
        batched = x.dim() == 4
        x4 = x if batched else x.unsqueeze(0)
        n, (h, w) = x4.shape[0], x4.shape[-2:]
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        cols = F.unfold(x4, self.kernel_size, self.dilation, self.padding, self.stride)  # (n, CKK, L)
        cols = cols.transpose(0, 1).reshape(cols.shape[1], -1)  # (CKK, n*L)
        y = self._matmul_t(cols.t(), self.bias).t()  # (out, n*L)
        y = y.reshape(self.out_channels, n, ho, wo).transpose(0, 1)
        return y if batched else y.squeeze(0)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, layout={self.layout}"
        )


# Checks ------------------------------------------------------------------------------------
def _semi_min_shape(dtype: torch.dtype) -> tuple[int, int]:
    """The (rows, cols) multiples the 2:4 kernels of this torch build need for ``dtype``."""
    try:
        from torch.sparse import (
            SparseSemiStructuredTensor,
            SparseSemiStructuredTensorCUSPARSELT,
            SparseSemiStructuredTensorCUTLASS,
        )

        cutlass = SparseSemiStructuredTensor._FORCE_CUTLASS or not torch.backends.cusparselt.is_available()
        cls = SparseSemiStructuredTensorCUTLASS if cutlass else SparseSemiStructuredTensorCUSPARSELT
        c = cls._DTYPE_SHAPE_CONSTRAINTS[dtype]
        return int(c.sparse_min_rows), int(c.sparse_min_cols)
    except (ImportError, AttributeError, KeyError):  # pragma: no cover - other torch versions
        return 32, 64


def _not_2_4(mask2d: Tensor) -> str | None:
    """Why a 2-D mask is not 2:4 along its input dimension, or ``None`` when it is."""
    rows, cols = mask2d.shape
    if cols % 4:
        return f"its {cols} input columns are not a multiple of 4"
    kept = mask2d.reshape(rows, cols // 4, 4).sum(-1)
    bad = (kept > 2).nonzero()
    if bad.numel():
        r, g = (int(v) for v in bad[0])
        return (
            f"row {r}, columns {4 * g}..{4 * g + 3} keep {int(kept[r, g])} of 4 weights "
            f"({bad.shape[0]} such groups)"
        )
    return None


def _cuda_2_4_ready(device: torch.device) -> str | None:
    """Why 2:4 sparse kernels cannot run on ``device``, or ``None`` when they can."""
    if device.type != "cuda":
        return (
            f"the params are on {device} (torch.cuda.is_available() is {torch.cuda.is_available()}); "
            "2:4 semi-structured sparsity runs on CUDA GPUs only"
        )
    cap = torch.cuda.get_device_capability(device)
    if cap < (8, 0):
        return (
            f"{torch.cuda.get_device_name(device)} has compute capability {cap}; 2:4 kernels need >= (8, 0)"
        )
    return None


def _check_params(func: str, model: nn.Module, params: Any, buffers: Any) -> torch.device:
    check_tree(func, "params", params, nonempty=True)
    check_tree(func, "buffers", buffers, optional=True)
    for what, tree, own in (
        ("params", params, dict(model.named_parameters())),
        ("buffers", buffers or {}, dict(model.named_buffers())),
    ):
        unknown = [k for k in tree if k not in own]
        if unknown:
            raise ValueError(
                f"{func}: {what} has names {unknown} that {type(model).__name__} does not have; "
                f"its {what}: {list(own)}"
            )
        for k, v in tree.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise ValueError(
                    f"{func}: {what}[{k!r}] has shape {tuple(v.shape)} but the model's {k!r} has "
                    f"shape {tuple(own[k].shape)}"
                )
    missing = [k for k, _ in model.named_parameters() if k not in params]
    if missing:
        raise ValueError(f"{func}: params is missing the model's parameters {missing}")
    for k, v in params.items():
        if not v.is_floating_point():
            raise TypeError(
                f"{func}: params[{k!r}] has dtype {v.dtype}; only floating point params can be exported"
            )
    devices = {v.device for v in params.values()}
    if len(devices) > 1:
        raise ValueError(f"{func}: params are on several devices {sorted(map(str, devices))}; use one")
    return next(iter(devices))


def _check_blocksize(func: str, blocksize: Any, layout: str) -> int | None:
    if blocksize is None:
        return None
    if layout != "bsr":
        raise ValueError(f"{func}: blocksize={blocksize!r} is only for layout='bsr', got layout={layout!r}")
    return check_int(func, "blocksize", blocksize, 1)


# Planning ----------------------------------------------------------------------------------
def _plan(
    func: str,
    name: str,
    mod: nn.Module,
    weight: Tensor,
    mask2d: Tensor,
    layout: str,
    min_sparsity: float,
    blocksize: int | None,
    convs: bool,
    device: torch.device,
) -> tuple[str, str, int | None]:
    """``(layout, reason, blocksize)`` for one masked Linear/Conv2d layer; raises on a bad request."""
    sparsity = 1.0 - float(mask2d.sum()) / max(1, mask2d.numel())
    key = f"{name}.weight"
    if layout == "dense":
        return "dense", "layout='dense'", None
    if isinstance(mod, nn.Conv2d):
        if not convs:
            return "dense", "convolutions stay dense (convs=False; measured slower sparse)", None
        if layout == "semi_structured" or (layout == "auto" and device.type == "cuda"):
            return "dense", "2:4 export covers Linear layers only", None
        if mod.groups != 1 or mod.padding_mode != "zeros" or isinstance(mod.padding, str):
            return "dense", "only groups=1, zero-padded convolutions with int padding", None
    if sparsity < min_sparsity:
        return "dense", f"sparsity {sparsity:.4f} < min_sparsity {min_sparsity}", None
    why = f"sparsity {sparsity:.4f} >= {min_sparsity}"
    if layout == "auto":
        if device.type != "cuda":
            return "csr", why, None
        problem = _semi_problem(key, weight, mask2d)
        return ("dense", problem, None) if problem else ("semi_structured", "2:4 mask on CUDA", None)
    if layout == "semi_structured":
        why_not = _not_2_4(mask2d)
        if why_not:
            raise ValueError(
                f"{func}: layout='semi_structured' needs a 2:4 mask, but mask[{key!r}] is not 2:4: "
                f"{why_not}; a 2:4 ticket keeps at most 2 of every 4 consecutive weights along the "
                "input dimension (ltfunc.prune.magnitude(..., structure='2:4'))"
            )
        if weight.dtype not in _SEMI_DTYPES:
            raise ValueError(
                f"{func}: layout='semi_structured' needs float16 or bfloat16 weights, but "
                f"params[{key!r}] is {weight.dtype}; convert the params first (e.g. v.half())"
            )
        not_ready = _cuda_2_4_ready(device)
        if not_ready:
            raise ValueError(f"{func}: layout='semi_structured' cannot be used: {not_ready}")
        problem = _semi_problem(key, weight, mask2d)
        return ("dense", problem, None) if problem else ("semi_structured", why, None)
    if layout == "bsr":
        rows, cols = mask2d.shape
        if blocksize is None:
            b = next(b for b in _BSR_BLOCKS if rows % b == 0 and cols % b == 0)
            return "bsr", f"{why}; blocksize {b}", b
        if rows % blocksize or cols % blocksize:
            raise ValueError(
                f"{func}: blocksize={blocksize} does not divide the shape {(rows, cols)} of "
                f"{key!r} (as a matrix); use a blocksize that divides both, or None to pick one per layer"
            )
        return "bsr", f"{why}; blocksize {blocksize}", blocksize
    return "csr", why, None


def _semi_problem(key: str, weight: Tensor, mask2d: Tensor) -> str | None:
    """Why a layer that may be 2:4 stays dense (mask, dtype, device or shape), or ``None``."""
    why_not = _not_2_4(mask2d)
    if why_not:
        return f"mask not 2:4 ({why_not})"
    if weight.dtype not in _SEMI_DTYPES:
        return f"2:4 kernels need float16/bfloat16, the weight is {weight.dtype}"
    not_ready = _cuda_2_4_ready(weight.device)
    if not_ready:
        return not_ready
    rows, cols = mask2d.shape
    r, c = _semi_min_shape(weight.dtype)
    if rows % r or cols % c:
        return f"shape {(rows, cols)} of {key!r} is not a multiple of {(r, c)}, which the 2:4 kernels need"
    return None


# Export ------------------------------------------------------------------------------------
def export_sparse(
    model: nn.Module,
    params: Mapping[str, Tensor],
    mask: Mask,
    *,
    layout: str = "auto",
    blocksize: int | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    min_sparsity: float | None = None,
    convs: bool = False,
) -> nn.Module:
    """A new inference module computing ``model`` with the masked params, pruned layers sparse.

    ``model`` is deep-copied (it is not modified); the copy gets ``apply(mask, params)`` (and
    ``buffers``) on the params' device, in the params' dtypes, then every masked
    ``nn.Linear`` (and with ``convs=True`` ``nn.Conv2d``) whose sparsity is at least
    ``min_sparsity`` is replaced by a :class:`SparseLinear` (:class:`SparseConv2d`) in
    ``layout``. The result is in eval mode without gradients; its outputs equal
    ``ltfunc.call(model.eval(), ltfunc.masks.apply(mask, params), x)`` up to float rounding
    (the sums run in another order). :func:`describe` says what happened to each layer.

    Args:
        model: The architecture (e.g. ``ltfunc.models.lenet300()``); its own values are not used.
        params: All the model's parameters (``get_params``; a round's ``final.params``).
        mask: The ticket's mask; it must fit ``params`` (keys, shapes, device).
        layout: One of :data:`LAYOUTS` (see the module docstring): ``"auto"`` (default),
            ``"csr"``, ``"bsr"``, ``"semi_structured"`` or ``"dense"``.
        blocksize: ``"bsr"`` only: the side of the square blocks; it must divide both
            dimensions of every converted weight (a conv's as ``(out, in*kh*kw)``). ``None``:
            per layer, the largest of 16, 8, 4, 2, 1 that does.
        buffers: Buffers to load (BatchNorm statistics); ``None`` keeps the model's own.
        min_sparsity: Layers with a lower sparsity stay dense. ``None``:
            :data:`AUTO_MIN_SPARSITY` for ``"auto"`` on the CPU, 0 (every masked layer)
            otherwise (``"auto"`` on CUDA takes every 2:4 layer, 50% sparse).
        convs: Also convert masked ``nn.Conv2d`` layers (CSR/BSR only; slower than dense in
            every case measured, hence off by default).

    Returns:
        The new module (``describe(module)`` lists the layers).

    Raises:
        TypeError: ``model`` not a module, ``params``/``buffers`` not dicts of tensors,
            ``mask`` not a Mask, non-floating params, bad ``convs``/``blocksize`` types.
        ValueError: A mask or params that do not fit the model (names the key and both
            shapes); an unknown ``layout``; ``blocksize`` with another layout or not dividing
            a layer; ``"semi_structured"`` with a mask that is not 2:4 (names the layer, row
            and columns), weights that are not float16/bfloat16, or params not on a CUDA GPU
            with compute capability >= 8.0; ``min_sparsity`` outside [0, 1].

    Example:
        >>> import torch, ltfunc
        >>> model = ltfunc.models.lenet300(seed=0); p = ltfunc.get_params(model)
        >>> mask = ltfunc.prune.magnitude(p, ltfunc.masks.ones(p), sparsity=0.97)
        >>> sparse = export_sparse(model, p, mask, layout="csr")
        >>> [(r.name, r.layout) for r in describe(sparse)]
        [('fc1', 'csr'), ('fc2', 'csr'), ('fc3', 'csr')]
        >>> x = torch.randn(4, 1, 28, 28)
        >>> dense = ltfunc.call(model, ltfunc.masks.apply(mask, p), x)
        >>> torch.allclose(sparse(x), dense, atol=1e-5)
        True
    """
    func = "export_sparse"
    check_module(func, "model", model)
    check_choice(func, "layout", layout, LAYOUTS)
    block = _check_blocksize(func, blocksize, layout)
    check_bool(func, "convs", convs)
    if min_sparsity is not None:
        check_number(func, "min_sparsity", min_sparsity, low=0.0, high=1.0)
    device = _check_params(func, model, params, buffers)
    if min_sparsity is None:
        min_sparsity = AUTO_MIN_SPARSITY if layout == "auto" and device.type != "cuda" else 0.0
    check_compatible(mask, params, func)
    masked = {k: torch.where(mask[k], v, v.new_zeros(())) if k in mask else v for k, v in params.items()}
    modules = dict(model.named_modules())
    plans: dict[str, tuple[str, str, int | None]] = {}
    rows: list[LayerExport] = []
    for name, mod in modules.items():
        key = f"{name}.weight" if name else "weight"
        kind = {nn.Linear: "linear", nn.Conv2d: "conv2d"}.get(type(mod), type(mod).__name__)
        if type(mod) not in (nn.Linear, nn.Conv2d) or not name:  # subclasses may not call forward
            if key in mask and getattr(mod, "weight", None) is not None:
                density = float(mask[key].float().mean())
                why = "not an nn.Linear/nn.Conv2d submodule: masked dense"
                rows.append(LayerExport(name, kind, "dense", density, why))
            continue
        if key not in mask:
            rows.append(LayerExport(name, kind, "dense", 1.0, "not masked"))
            continue
        m2d = mask[key].reshape(mask[key].shape[0], -1)
        plan = _plan(func, name, mod, masked[key], m2d, layout, min_sparsity, block, convs, device)
        plans[name] = plan
        rows.append(LayerExport(name, kind, plan[0], float(m2d.float().mean()), plan[1]))
    # All checks passed: build the copy.
    new = copy.deepcopy(model)
    for k, v in masked.items():
        owner, _, leaf = k.rpartition(".")
        new.get_submodule(owner)._parameters[leaf] = nn.Parameter(v.detach().clone(), requires_grad=False)
    for k, v in (buffers or {}).items():
        owner, _, leaf = k.rpartition(".")
        new.get_submodule(owner)._buffers[leaf] = v.detach().clone()
    new.to(device)
    for name, (lay, _, b) in plans.items():
        if lay == "dense":
            continue
        old = new.get_submodule(name)
        assert isinstance(old, (nn.Linear, nn.Conv2d))
        w = old.weight.detach()
        bias = None if old.bias is None else old.bias.detach()
        sparse: nn.Module = (
            SparseLinear(w, bias, lay, b) if isinstance(old, nn.Linear) else SparseConv2d(old, w, lay, b)
        )
        owner, _, leaf = name.rpartition(".")
        setattr(new.get_submodule(owner), leaf, sparse)
    new.requires_grad_(False)
    new.eval()
    setattr(new, _ATTR, tuple(rows))
    return new


def describe(module: nn.Module) -> tuple[LayerExport, ...]:
    """What :func:`export_sparse` did to each Linear/Conv2d (or masked) layer of ``module``.

    Args:
        module: A module returned by :func:`export_sparse` (or loaded back with ``torch.load``).

    Returns:
        One :class:`LayerExport` per layer, in module order.

    Raises:
        TypeError: ``module`` is not an ``nn.Module``.
        ValueError: ``module`` was not made by :func:`export_sparse`.

    Example:
        >>> import ltfunc
        >>> m = ltfunc.models.lenet300(seed=0); p = ltfunc.get_params(m)
        >>> row = describe(export_sparse(m, p, ltfunc.masks.ones(p)))[0]
        >>> row.name, row.layout, row.density, row.reason
        ('fc1', 'dense', 1.0, 'sparsity 0.0000 < min_sparsity 0.95')
    """
    check_module("describe", "module", module)
    rows = getattr(module, _ATTR, None)
    if not isinstance(rows, tuple):
        raise ValueError(
            f"describe: module ({type(module).__name__}) was not made by export_sparse (no {_ATTR!r} record)"
        )
    return rows


def format_description(module: nn.Module) -> str:
    """:func:`describe` as a text table (layer, kind, layout, density, stored weights, reason).

    Args:
        module: A module returned by :func:`export_sparse`.

    Returns:
        The table, one line per layer.

    Raises:
        TypeError, ValueError: As :func:`describe`.

    Example:
        >>> import ltfunc
        >>> m = ltfunc.models.lenet300(seed=0); p = ltfunc.get_params(m)
        >>> print(format_description(export_sparse(m, p, ltfunc.masks.ones(p), layout="dense")))
        ... # doctest: +NORMALIZE_WHITESPACE
        layer  kind    layout  density  stored  reason
        fc1    linear  dense   1.0000   235200  layout='dense'
        fc2    linear  dense   1.0000   30000   layout='dense'
        fc3    linear  dense   1.0000   1000    layout='dense'
    """
    rows = describe(module)
    table = [("layer", "kind", "layout", "density", "stored", "reason")]
    for r in rows:
        mod = module.get_submodule(r.name)
        weight = getattr(mod, "weight", None)
        stored = (
            mod.nnz() if isinstance(mod, _SparseWeight) else (weight.numel() if weight is not None else 0)
        )
        table.append((r.name, r.kind, r.layout, f"{r.density:.4f}", str(stored), r.reason))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)) + "  " + row[-1]
        for row in table
    )
