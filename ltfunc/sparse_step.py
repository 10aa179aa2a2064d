"""A sparse training mode for the masked step: one round's fixed pattern held as values.

::

    step = make_sparse_train_step(model, optimizer, mask)   # one round: mask fixed
    state = step.init(params)                                # opt state on the values only
    state, metrics = step(state, mask, (x, y), lr)           # same call shape as TrainStep

Within one IMP round the mask does not change. :func:`make_sparse_train_step` builds, once
per round, index arrays of the mask's pattern for each chosen ``nn.Linear`` weight, and the
step then holds that weight as its ``nnz`` surviving values only (in row-major order: the
order of ``weight[mask]``):

* forward ``y = x @ W.T`` is sparse x dense: for every output row, a gather of the input
  columns of its nonzeros, weighted by the values (a padded row-compressed / ELL layout,
  ``K`` = the most nonzeros of any row, batch innermost so the loops vectorize);
* the input gradient uses the transposed pattern (the same kernel on a column-compressed
  layout), and is skipped where it is not needed (the first layer);
* the weight gradient is computed only at the pattern's positions: for each nonzero
  ``(r, c)``, ``dot(grad_out[:, r], x[:, c])`` (a gather-based SDDMM);
* the optimizer state is built on the values, so it shrinks with the density.

The rest of the model (biases, convolutions, normalization, Linear layers left dense) runs
as in :func:`ltfunc.make_train_step`: masked gradients, update, mask re-applied. Numbers are
the dense masked step's up to float rounding (sums in another order).

Which layers are sparse (``sparse=``): ``"on"``: every masked ``nn.Linear`` weight;
``"auto"``: those whose density is at most :data:`AUTO_MAX_DENSITY`, and only in a
compiled step (eagerly the gathers are materialized and slower than dense); ``"off"``:
none. Layers without a sparse kernel (convolutions and any other layer type) always run
dense-masked in the same step, listed in ``step.dense_fallback``; that is the documented
fallback, not an error.

Compiling. ``compile=True`` compiles the sparse step like the dense one (inductor,
``fullgraph=True``); the pattern's sizes are baked into the graph, so each round's step
compiles once (one compile per round, ``step.num_compiles``), and a new batch shape or a
train/eval switch compiles again, as for the dense step.

Kernels, measured (LeNet-300-100's 784x300 layer, batch 60, 1 thread, min over 20
interleaved windows on a 2-core machine shared with other jobs; first probes, not a
benchmark): at 3.6% density the compiled ELL forward took 76 µs against 64 µs for
``torch.sparse.mm`` on CSR (at 7%: 150 / 139 µs), and the compiled gather-based weight
gradient 62 µs against 92 µs for ``torch.sparse.sampled_addmm`` (at 7%: 96 / 140 µs). CSR
kernels do not compile into the step (``fullgraph``), so the step uses the gather kernels
everywhere; eagerly their gathers are materialized and they lose to dense. Inside the
compiled step the transposed copies of the activations must be buffers of their own
(:func:`_transposed`), otherwise inductor fuses them into the gathers as strided loads (the
first layer's forward then took 1.9 ms).

State. ``state.params`` is the dense params dict (pruned weights exactly 0): the public
call materializes it after every step (a scatter of the values into zeros);
:func:`ltfunc.fit` and :func:`ltfunc.train_round` run on the internal packed form and
materialize it only at evaluation points and at the end. ``state.opt_state`` is the
optimizer's state on the packed params: a sparse weight's entries are ``(nnz,)`` vectors of
the kept positions, in ``weight[mask]`` order. Measured times: ``bench/README.md``
("Sparse training mode").
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, NamedTuple

import optree
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import masks as _masks
from ._checks import check_bool, check_callable, check_choice
from ._flat import FlatLayout, FlatState, _state_views, handed_out, same_buffers
from ._types import LossFn, Params
from .masks import Mask
from .optim import Optimizer
from .step import TrainState, TrainStep, _Given

__all__ = ["AUTO_MAX_DENSITY", "SPARSE_MODES", "SparseTrainStep", "make_sparse_train_step"]

SPARSE_MODES: tuple[str, ...] = ("auto", "on", "off")
"""The values of ``sparse=`` (and ``ImpConfig.sparse``, ``ltfunc imp --sparse``)."""

AUTO_MAX_DENSITY = 0.1
"""``sparse="auto"``: a masked Linear weight runs sparse at this density or below (compiled
steps only). Measured (``python -m bench.sparse``, LeNet-300-100, batch 60, Adam, compiled,
1 thread, min over 10 interleaved windows of 10 steps on a loaded 2-core machine): the whole
sparse step took 1.06x the dense masked step at 21% density, 0.94x at 15%, 0.62x at 10% and
0.36x at 7%; 10% is the side of the crossover where the win is clear (re-measure on an idle
machine)."""


# The kernel ---------------------------------------------------------------------------------
class _Pattern(NamedTuple):
    """One sparse Linear weight's fixed pattern (index arrays built once per round)."""

    shape: tuple[int, int]
    """``(out_features, in_features)``."""
    positions: Tensor
    """``(nnz,)`` int64: flat (row-major) positions of the kept weights."""
    rows: Tensor
    """``(nnz,)`` int64: row of each kept weight (row-major order)."""
    cols: Tensor
    """``(nnz,)`` int64: column of each kept weight."""
    fwd_cols: Tensor
    """``(K, out)`` int64: input column of the k-th nonzero of each row (padding: 0)."""
    fwd_vals: Tensor
    """``(K, out)`` int64: index of that nonzero's value (padding: ``nnz``, a zero)."""
    bwd_rows: Tensor
    """``(K', in)`` int64: output row of the k-th nonzero of each column (padding: 0)."""
    bwd_vals: Tensor
    """``(K', in)`` int64: index of that nonzero's value (padding: ``nnz``)."""


def _padded(major: Tensor, minor: Tensor, n: int, order: Tensor) -> tuple[Tensor, Tensor]:
    """ELL arrays ``(minor index, value index)``, shape ``(K, n)``, of nonzeros grouped by ``major``."""
    nnz = major.numel()
    counts = torch.bincount(major, minlength=n)
    width = int(counts.max()) if nnz else 0
    major_sorted = major[order]
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(nnz, device=major.device) - starts[major_sorted]
    other = torch.zeros((width, n), dtype=torch.int64, device=major.device)
    values = torch.full((width, n), nnz, dtype=torch.int64, device=major.device)
    other[slot, major_sorted] = minor[order]
    values[slot, major_sorted] = order
    return other, values


def _pattern(mask: Tensor) -> _Pattern:
    """The index arrays of a 2-D bool mask (one host sync for the widths)."""
    out, inp = mask.shape
    rows, cols = mask.nonzero(as_tuple=True)
    by_row = torch.arange(rows.numel(), device=mask.device)
    by_col = torch.argsort(cols * out + rows, stable=True)
    fwd_cols, fwd_vals = _padded(rows, cols, out, by_row)
    bwd_rows, bwd_vals = _padded(cols, rows, inp, by_col)
    positions = rows * inp + cols
    return _Pattern((out, inp), positions, rows, cols, fwd_cols, fwd_vals, bwd_rows, bwd_vals)


def _transposed(x: Tensor) -> Tensor:
    """``x.t().contiguous()`` as a buffer of its own, also under inductor.

    Inductor inlines a plain transposed copy into the gathers that read it, which then load
    with a stride of ``in_features`` along the vectorized batch dimension (measured: the
    LeNet-300-100 first layer's forward at 3.6% took 1.9 ms instead of about 0.1 ms). An
    ``index_put`` into a new tensor is realized as its own loop, so the gathers read
    contiguous rows.
    """
    rows = torch.arange(x.shape[1], device=x.device)
    return torch.index_put(x.new_empty(x.shape[1], x.shape[0]), (rows,), x.t())


def _ell_matmul(xt: Tensor, index: Tensor, weights: Tensor) -> Tensor:
    """``out[r, :] = sum_k weights[k, r] * xt[index[k, r], :]``: ``(K, n)`` ELL times ``(m, B)``."""
    return (xt[index] * weights.unsqueeze(-1)).sum(0)


class _SparseLinearFn(torch.autograd.Function):
    """``x @ W.T`` for ``W`` held as values on a fixed pattern; gradients only where needed."""

    @staticmethod
    def forward(
        values: Tensor, x: Tensor, rows: Tensor, cols: Tensor, fc: Tensor, fv: Tensor, br: Tensor, bv: Tensor
    ) -> Tensor:
        ext = torch.cat([values, values.new_zeros(1)])
        return _ell_matmul(_transposed(x), fc, ext[fv]).t()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        values, x, rows, cols, _fc, _fv, br, bv = inputs
        ctx.save_for_backward(values, x, rows, cols, br, bv)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        values, x, rows, cols, br, bv = ctx.saved_tensors
        gt = _transposed(grad)
        # Under torch.compile needs_input_grad is not reliable here (measured: gradients of
        # later layers came back as zeros), so both are computed; the compiled graph drops an
        # unused one (the first layer's input gradient).
        compiling = torch.compiler.is_compiling()
        d_values = d_x = None
        if compiling or ctx.needs_input_grad[0]:
            d_values = (gt[rows] * _transposed(x)[cols]).sum(-1)
        if compiling or ctx.needs_input_grad[1]:
            ext = torch.cat([values, values.new_zeros(1)])
            d_x = _ell_matmul(gt, br, ext[bv]).t()
        return d_values, d_x, None, None, None, None, None, None


class _SparseLinear(nn.Module):
    """Stands in for an ``nn.Linear`` in the step's copy of the model: ``weight`` is ``(nnz,)``."""

    def __init__(self, linear: nn.Linear, pattern: _Pattern) -> None:
        super().__init__()
        self.pattern = pattern
        self.in_features, self.out_features = linear.in_features, linear.out_features
        nnz = pattern.positions.numel()
        self.weight = nn.Parameter(torch.empty(nnz, dtype=linear.weight.dtype, device="meta"))
        self.bias = linear.bias

    def forward(self, x: Tensor) -> Tensor:
        p = self.pattern
        flat = x.reshape(-1, self.in_features)
        y = _SparseLinearFn.apply(
            self.weight, flat, p.rows, p.cols, p.fwd_cols, p.fwd_vals, p.bwd_rows, p.bwd_vals
        )
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


# The step -----------------------------------------------------------------------------------
def _choose(
    model: nn.Module, mask: Mask | None, sparse: str, compile: bool
) -> tuple[dict[str, str], tuple[str, ...]]:
    """``({weight name: module path} of the sparse layers, masked weights left dense-masked)``."""
    chosen: dict[str, str] = {}
    fallback: list[str] = []
    if mask is None or sparse == "off":
        return chosen, ()
    linears = {
        f"{path}.weight" if path else "weight": path
        for path, m in model.named_modules()
        if type(m) is nn.Linear
    }
    for name in mask:
        if name not in linears:
            fallback.append(name)
            continue
        if sparse == "on" or (compile and _masks.density(Mask({name: mask[name]})) <= AUTO_MAX_DENSITY):
            chosen[name] = linears[name]
    return chosen, tuple(fallback)


class SparseTrainStep(TrainStep):
    """The masked step of one round with its sparse Linear weights held as values.

    Made by :func:`make_sparse_train_step`; called like :class:`~ltfunc.step.TrainStep`
    (``state, metrics = step(state, mask, (x, y), lr)``), accepted by
    :func:`ltfunc.fit` and :func:`ltfunc.make_trainer`. The mask given to every call must be
    the pattern the step was made for.

    Attributes:
        model: The user's module (the step runs a copy whose sparse Linear layers are swapped).
        pattern: The mask the step was made for.
        sparse_layers: The weights held as values on the pattern.
        dense_fallback: Masked weights of layers without a sparse kernel (run dense-masked).
        dense_layout: The layout of the dense params (``layout`` is the packed one).

    Example:
        >>> import torch, ltfunc
        >>> from ltfunc.sparse_step import make_sparse_train_step
        >>> m = ltfunc.models.lenet300(seed=0); p = ltfunc.get_params(m)
        >>> mask = ltfunc.prune.magnitude(p, ltfunc.masks.ones(p), rate=0.9)
        >>> step = make_sparse_train_step(m, ltfunc.optim.sgd(), mask, sparse="on", compile=False)
        >>> step.sparse_layers
        ('fc1.weight', 'fc2.weight', 'fc3.weight')
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        mask: Mask | None,
        loss_fn: LossFn,
        *,
        compile: bool,
        chosen: Mapping[str, str],
        fallback: tuple[str, ...],
    ) -> None:
        runner = copy.deepcopy(model)
        patterns: dict[str, _Pattern] = {}
        for name, path in chosen.items():
            assert mask is not None
            patterns[name] = _pattern(mask[name])
            parent, _, child = path.rpartition(".")
            holder = runner.get_submodule(parent) if parent else runner
            if child:
                setattr(holder, child, _SparseLinear(getattr(holder, child), patterns[name]))
        super().__init__(runner, optimizer, loss_fn, compile=compile)  # the core runs the runner
        self._runner = runner
        self._pairs = tuple(
            (a, b) for a, b in zip(runner.modules(), model.modules(), strict=True) if a is not b
        )
        self.model = model
        self.pattern = mask
        self.sparse_layers = tuple(chosen)
        self.dense_fallback = fallback
        self._patterns = patterns
        self.dense_layout = FlatLayout.of(dict(model.named_parameters()))
        self._accepted: list[Any] = [mask]
        self._packed_mask: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def __repr__(self) -> str:
        mode = "compiled" if self.compiled else "eager"
        kept = sum(p.positions.numel() for p in self._patterns.values())
        return (
            f"SparseTrainStep({type(self.model).__name__}, optimizer={self.optimizer.name!r}, {mode}, "
            f"sparse={list(self.sparse_layers)} ({kept} values), dense_fallback={list(self.dense_fallback)})"
        )

    # Dense <-> packed -------------------------------------------------------------------------
    def pack(self, params: Mapping[str, Tensor]) -> Params:
        """``params`` with every sparse weight replaced by its values on the pattern.

        Args:
            params: A dense params dict of the model (checked).

        Returns:
            A new dict: sparse weights as ``(nnz,)`` value vectors (``weight[mask]`` order),
            the other params as given.

        Raises:
            TypeError, ValueError: ``params`` that do not match the model.

        Example:
            >>> import ltfunc
            >>> from ltfunc.sparse_step import make_sparse_train_step
            >>> m = ltfunc.models.lenet300(seed=0); p = ltfunc.get_params(m)
            >>> mask = ltfunc.prune.magnitude(p, ltfunc.masks.ones(p), rate=0.9)
            >>> step = make_sparse_train_step(m, ltfunc.optim.sgd(), mask, sparse="on", compile=False)
            >>> step.pack(p)["fc1.weight"].shape, int(mask["fc1.weight"].sum())
            (torch.Size([23520]), 23520)
        """
        self._check_params("pack", "params", params)
        return self._packed(params)

    def _packed(self, params: Mapping[str, Tensor]) -> Params:
        return {
            n: params[n].reshape(-1)[self._patterns[n].positions] if n in self._patterns else params[n]
            for n in self.dense_layout.names
        }

    def unpack(self, packed: Mapping[str, Tensor]) -> Params:
        """The dense params of a packed dict: values scattered into zeros (a new tensor per weight).

        Args:
            packed: A dict from :meth:`pack` (or ``state`` internals of the same shapes).

        Returns:
            The dense params dict (pruned weights exactly 0); non-sparse entries as given.

        Example:
            >>> import ltfunc
            >>> from ltfunc.sparse_step import make_sparse_train_step
            >>> m = ltfunc.models.lenet300(seed=0); p = ltfunc.get_params(m)
            >>> mask = ltfunc.prune.magnitude(p, ltfunc.masks.ones(p), rate=0.9)
            >>> step = make_sparse_train_step(m, ltfunc.optim.sgd(), mask, sparse="on", compile=False)
            >>> ltfunc.tree_equal(step.unpack(step.pack(p)), ltfunc.masks.apply(mask, p))
            True
        """
        out: Params = {}
        for n, shape in zip(self.dense_layout.names, self.dense_layout.shapes, strict=True):
            v = packed[n]
            pattern = self._patterns.get(n)
            if pattern is None:
                out[n] = v
            else:
                dense = v.new_zeros(shape.numel()).index_copy(0, pattern.positions, v)
                out[n] = dense.view(shape)
        return out

    # TrainStep overrides ---------------------------------------------------------------------
    def init(
        self,
        params: Mapping[str, Tensor],
        *,
        buffers: Mapping[str, Tensor] | None = None,
        iteration: int = 0,
    ) -> TrainState:
        """A fresh state: the dense ``params`` and a new optimizer state on the packed params.

        Args:
            params: The starting dense params (keys, shapes of the model). Not copied.
            buffers: The starting buffers (default: copies of the model's own).
            iteration: The iteration count to start from.

        Returns:
            ``TrainState(params, optimizer.init(step.pack(params)), iteration, buffers)``.

        Raises:
            TypeError, ValueError: As :meth:`ltfunc.step.TrainStep.init`.

        Example:
            >>> import ltfunc
            >>> from ltfunc.sparse_step import make_sparse_train_step
            >>> m = ltfunc.models.lenet300(seed=0); p = ltfunc.get_params(m)
            >>> mask = ltfunc.prune.magnitude(p, ltfunc.masks.ones(p), rate=0.9)
            >>> step = make_sparse_train_step(m, ltfunc.optim.adam(), mask, sparse="on", compile=False)
            >>> step.init(p).opt_state.mu["fc1.weight"].shape
            torch.Size([23520])
        """
        return super().init(params, buffers=buffers, iteration=iteration)

    def _optimized(self, params: Params) -> Params:
        return self._packed(params)

    def _check_params(self, func: str, name: str, params: Any) -> Tensor:
        packed = self.layout
        self.layout = self.dense_layout  # the user's params are dense
        try:
            return super()._check_params(func, name, params)
        finally:
            self.layout = packed

    def _pack(self, state: TrainState, *, func: str = "train_step") -> FlatState:
        if not isinstance(state, TrainState):
            raise TypeError(
                f"{func}: state must be a TrainState (from step.init), got {type(state).__name__}"
            )
        last, params, buffers = self._last, state.params, state.buffers
        if last is not None and handed_out(
            params, state.opt_state, self.dense_layout.names, last.params, last.opt_leaves
        ):
            fs = last.flat  # the state handed out last (recognized by identity): no copy
            if same_buffers(buffers, last.buffers):
                return fs
            return fs._replace(buffers=self._check_buffers(func, "state.buffers", buffers, fs.params.device))
        first = self._check_params(func, "state.params", params)
        flat = self.layout.flatten(self._packed(params)).detach()
        flat_opt = self._flatten_state(func, state.opt_state, flat)
        return FlatState(flat, flat_opt, self._check_buffers(func, "state.buffers", buffers, first.device))

    def _unpack(self, fs: FlatState, iteration: int) -> TrainState:
        packed = self.layout.views(fs.params)
        params = self.unpack(packed)
        opt_state = _state_views(fs.opt_state, self.layout)
        leaves = optree.tree_leaves(opt_state, none_is_leaf=True)
        self._last = _Given(tuple(params.values()), leaves, tuple(fs.buffers.items()), fs)
        return TrainState(params, opt_state, iteration, fs.buffers)

    def _flat_step(
        self, fs: FlatState, mask: Mask | None, batch: Any, lr: float | Tensor, *, func: str = "train_step"
    ) -> tuple[FlatState, dict[str, Tensor]]:
        for copied, original in self._pairs:  # the step runs in the user's module's modes
            copied.training = original.training
        return super()._flat_step(fs, mask, batch, lr, func=func)

    def _flat_mask(self, func: str, mask: Any, flat: Tensor) -> Tensor:
        if not any(mask is m for m in self._accepted):
            self._check_pattern(func, mask, flat.device)
            self._accepted = [*self._accepted[-3:], mask]
        _masks._check_unmodified(func, mask)
        where = next((p.positions.device for p in self._patterns.values()), flat.device)
        if where != flat.device:
            raise ValueError(
                f"{func}: params are on {flat.device} but this sparse step's pattern (its mask) is on "
                f"{where}; make the step with the mask on the params' device"
            )
        key = (flat.device, flat.dtype)
        cached = self._packed_mask.get(key)
        if cached is None:
            parts = []
            for n, c in zip(self.layout.names, self.layout.numels, strict=True):
                if n in self._patterns or self.pattern is None or n not in self.pattern:
                    parts.append(torch.ones(c, dtype=flat.dtype, device=flat.device))
                else:
                    parts.append(self.pattern[n].reshape(-1).to(device=flat.device, dtype=flat.dtype))
            cached = torch.cat(parts)
            self._packed_mask[key] = cached
        return cached

    def _check_pattern(self, func: str, mask: Any, device: torch.device) -> None:
        pattern = self.pattern
        if mask is not None and not isinstance(mask, Mask):
            raise TypeError(f"{func}: mask must be an ltfunc Mask or None, got {type(mask).__name__}")
        if mask is None or pattern is None:
            if mask is None and pattern is None:
                return
            raise ValueError(
                f"{func}: pattern changed mid-round: this sparse step was made for "
                f"{'no mask' if pattern is None else 'a mask'}, got {'None' if mask is None else 'a mask'}; "
                "make a new step for the new mask (ltfunc.make_sparse_train_step(model, optimizer, mask))"
            )
        if set(mask) != set(pattern):
            raise ValueError(
                f"{func}: pattern changed mid-round: mask covers {sorted(mask)}, the step's pattern "
                f"{sorted(pattern)}; make a new step for the new mask (ltfunc.make_sparse_train_step)"
            )
        for n in pattern:
            if mask[n].shape != pattern[n].shape or not torch.equal(
                mask[n].to(device), pattern[n].to(device)
            ):
                raise ValueError(
                    f"{func}: pattern changed mid-round: mask[{n!r}] differs from the pattern this "
                    "sparse step was made for (its index arrays are fixed for the round); make a new "
                    "step for the new mask (ltfunc.make_sparse_train_step(model, optimizer, mask))"
                )


def make_sparse_train_step(
    model: nn.Module,
    optimizer: Optimizer,
    mask: Mask | None,
    loss_fn: LossFn = F.cross_entropy,
    *,
    compile: bool = True,
    sparse: str = "auto",
) -> SparseTrainStep:
    """Make the masked step of one round, with Linear weights held as values on ``mask``'s pattern.

    Same semantics, call shape and results (to float rounding) as
    :func:`ltfunc.make_train_step` under ``mask``; see the module docstring for the kernels,
    what is cached, and the number of compiles (one per step, i.e. per round).

    Args:
        model: Defines the computation (copied; the copy's sparse Linear layers are swapped).
            Its own parameters and buffers are not used or changed.
        optimizer: A functional optimizer (:mod:`ltfunc.optim`); its state is built on the
            packed params, so a sparse weight's state has ``nnz`` entries.
        mask: The round's mask (fixed for the step's life), or ``None`` (dense, nothing sparse).
        loss_fn: ``loss_fn(logits, y) -> scalar`` (a batch mean); default cross-entropy.
        compile: ``torch.compile`` the step (once for this pattern and batch shape).
        sparse: ``"auto"`` (masked Linear weights at density <= :data:`AUTO_MAX_DENSITY`,
            compiled steps only), ``"on"`` (every masked Linear weight), ``"off"`` (none).
            Masked weights of other layer types (convolutions) run dense-masked
            (``step.dense_fallback``).

    Returns:
        A :class:`SparseTrainStep`.

    Raises:
        TypeError: ``model`` not a module, ``optimizer`` not an :class:`Optimizer`, ``mask``
            not a :class:`~ltfunc.masks.Mask` or ``None``, ``loss_fn`` not callable,
            ``compile`` not a bool.
        ValueError: ``sparse`` not one of :data:`SPARSE_MODES`, a mask that does not fit the
            model's parameters, a model without parameters.

    Calling the step raises what :func:`ltfunc.make_train_step`'s step raises, and
    ``ValueError("... pattern changed mid-round ...")`` for a mask other than the pattern.

    Example:
        >>> import torch, ltfunc
        >>> from ltfunc.sparse_step import make_sparse_train_step
        >>> m = ltfunc.models.lenet300(seed=0); p = ltfunc.get_params(m)
        >>> mask = ltfunc.prune.magnitude(p, ltfunc.masks.ones(p), rate=0.95)
        >>> step = make_sparse_train_step(m, ltfunc.optim.adam(), mask, sparse="on", compile=False)
        >>> batch = (torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))
        >>> state, metrics = step(step.init(p), mask, batch, 1e-3)
        >>> bool((state.params["fc1.weight"][~mask["fc1.weight"]] == 0).all())
        True
    """
    func = "make_sparse_train_step"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{func}: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"{func}: optimizer must be an ltfunc.optim.Optimizer (e.g. ltfunc.optim.adam()), "
            f"got {type(optimizer).__name__}"
        )
    if mask is not None and not isinstance(mask, Mask):
        raise TypeError(f"{func}: mask must be an ltfunc Mask or None, got {type(mask).__name__}")
    check_callable(func, "loss_fn", loss_fn, "callable(logits, y) -> loss")
    check_bool(func, "compile", compile)
    check_choice(func, "sparse", sparse, SPARSE_MODES)
    params = dict(model.named_parameters())
    if not params:
        raise ValueError(f"{func}: {type(model).__name__} has no parameters to train")
    if mask is not None:
        _masks.check_compatible(mask, {k: v.detach() for k, v in params.items()}, func)
    chosen, fallback = _choose(model, mask, sparse, compile)
    return SparseTrainStep(model, optimizer, mask, loss_fn, compile=compile, chosen=chosen, fallback=fallback)
