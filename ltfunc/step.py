"""One ``torch.compile``'d masked training step, and batched evaluation.

:func:`make_train_step` turns a module, an :class:`~ltfunc.optim.Optimizer` and a loss into
``step(params, opt_state, mask, (x, y), lr) -> (params, opt_state, metrics)``: loss and
gradients by ``torch.func.grad_and_value`` over ``functional_call``, masked gradients set to
zero, the optimizer update, and the mask applied again so pruned weights stay exactly 0
whatever the optimizer (momentum, Adam moments, weight decay). Pruned weights are also zero
in the forward pass: params that did not come out of this step under this mask are masked
once on entry.

Compile once. The mask, the learning rate and the optimizer's step counter are tensor
inputs of the compiled function, so new masks (pruning rounds), any learning-rate schedule
and fresh optimizer states (``optimizer.init``) reuse the same compiled code; the only
things that recompile are a new batch shape, dtype or device. ``step.num_compiles`` counts
the compilations of a step.

Flat layout. Inside, the parameters, the optimizer's per-parameter state and the mask each
live in one flat buffer (``FlatLayout``; the mask as floats): the model sees views into
them, the update runs per tensor on views and writes straight into slices of the flat
outputs, and the compiled function has a handful of tensor inputs whatever the model (few
guards, few buffers). The dict interface is
kept: params and optimizer states go in and come out as dict pytrees, the returned tensors
being views into the flat buffers; feeding a step's outputs back in costs nothing (they are
recognized by identity), anything else is flattened once. :meth:`TrainStep.flat_step` with
a :class:`FlatState` skips the views altogether (``ltfunc.train.fit`` uses it).

Buffers. Modules that update buffers in training mode (BatchNorm's running statistics and
``num_batches_tracked``) are trained functionally: the buffers are an explicit input of
the step and the updated buffers an output. ``step(..., buffers=b)`` returns
``(params, opt_state, metrics, new_buffers)``; a :class:`FlatState` carries them from step
to step; :class:`ltfunc.train.TrainState` carries them through ``fit``. Without
``buffers=`` the step reads its own fixed buffers and returns the 3-tuple, which is what
buffer-free models use (and models whose normalization layers are in eval mode).

Performance: see :class:`TrainStep` for measured times per step (LeNet-300-100 on CPU),
the cold compile time and what each design choice bought.
"""

from __future__ import annotations

import math
import types
import weakref
from collections.abc import Callable, Mapping
from itertools import count as _counter
from typing import Any, NamedTuple, overload

import optree
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import masks as _masks
from ._types import Batch, Buffers, LossFn, Params
from .masks import Mask
from .optim import Optimizer, OptState
from .params import get_buffers

__all__ = [
    "FlatLayout",
    "FlatState",
    "Metrics",
    "TrainStep",
    "evaluate",
    "make_eval_step",
    "make_train_step",
]

Metrics = dict[str, Tensor]
"""``{"loss": 0-d tensor, "accuracy": 0-d tensor}`` of one step (still on the device)."""

FLAT_KEY = "flat"
"""The single key of the one-leaf param trees the optimizer sees inside the step."""


class FlatLayout(NamedTuple):
    """Where each parameter lives in one flat 1-D buffer (in parameter order).

    Example:
        >>> import torch
        >>> layout = FlatLayout.of({"w": torch.ones(2, 3), "b": torch.zeros(3)})
        >>> layout.numel, layout.offsets
        (9, (0, 6))
        >>> flat = layout.flatten({"w": torch.ones(2, 3), "b": torch.zeros(3)})
        >>> layout.views(flat)["w"].shape
        torch.Size([2, 3])
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]
    numels: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]

    @property
    def numel(self) -> int:
        """Total number of elements."""
        return sum(self.numels)

    @classmethod
    def of(cls, params: Mapping[str, Tensor]) -> FlatLayout:
        """The layout of a params pytree (its key order)."""
        names = tuple(params)
        shapes = tuple(params[k].shape for k in names)
        numels = tuple(math.prod(s) for s in shapes)
        offsets = tuple(sum(numels[:i]) for i in range(len(numels)))
        strides = tuple(tuple(math.prod(s[i + 1 :]) for i in range(len(s))) for s in shapes)
        return cls(names, shapes, offsets, numels, strides)

    def views(self, flat: Tensor) -> Params:
        """``{name: view into flat}`` (no copy)."""
        if torch.compiler.is_compiling() or flat.stride(0) != 1:
            return {
                n: flat[o : o + c].view(s)
                for n, o, c, s in zip(self.names, self.offsets, self.numels, self.shapes, strict=True)
            }
        # eagerly, one as_strided per tensor is about 3x cheaper than slice + view
        base = flat.storage_offset()
        return {
            n: flat.as_strided(s, st, base + o)
            for n, o, s, st in zip(self.names, self.offsets, self.shapes, self.strides, strict=True)
        }

    def flatten(self, tree: Mapping[str, Tensor]) -> Tensor:
        """A new flat tensor holding ``tree``'s tensors in layout order (a copy)."""
        return torch.cat([tree[n].reshape(-1) for n in self.names])


class FlatState(NamedTuple):
    """Params and optimizer state in the step's flat layout (the fast path of :class:`TrainStep`).

    Build it with :meth:`TrainStep.pack`, advance it with :meth:`TrainStep.flat_step`, and
    get dict pytrees back with :meth:`TrainStep.unpack` (and ``state.buffers``).
    """

    params: Tensor
    """All parameters in one 1-D tensor (see :class:`FlatLayout`)."""
    opt_state: OptState
    """The optimizer's state for the one-leaf tree ``{"flat": params}``."""
    buffers: Buffers | None = None
    """The model's buffers (BatchNorm running statistics), read and updated by every
    :meth:`TrainStep.flat_step`; ``None``: the step's own fixed buffers, not updated."""


def _is_param_dict(node: Any, names: tuple[str, ...]) -> bool:
    return isinstance(node, dict) and len(node) == len(names) and all(n in node for n in names)


def _is_flat_dict(node: Any) -> bool:
    return isinstance(node, dict) and len(node) == 1 and FLAT_KEY in node


def _state_views(state: OptState, layout: FlatLayout) -> OptState:
    """A flat-form optimizer state (``{"flat": t}`` leaves) with dicts of views instead."""
    if not torch.compiler.is_compiling():
        return _map_flat_dicts(state, layout)
    return _tree_map_flat_dicts(state, layout)


def _tree_map_flat_dicts(node: Any, layout: FlatLayout) -> Any:
    # The general version (any optree pytree; what dynamo traces).
    return optree.tree_map(
        lambda n: layout.views(n[FLAT_KEY]) if _is_flat_dict(n) else n,
        node,
        is_leaf=lambda n: _is_flat_dict(n) or isinstance(n, Tensor),
        none_is_leaf=True,
    )


def _map_flat_dicts(node: Any, layout: FlatLayout) -> Any:
    # Plain recursion over the usual containers: several times cheaper than optree.tree_map
    # with an is_leaf callback, which matters on the per-step path of the dict interface.
    if _is_flat_dict(node):
        return layout.views(node[FLAT_KEY])
    if isinstance(node, Tensor) or node is None:
        return node
    if isinstance(node, tuple):
        items = [_map_flat_dicts(v, layout) for v in node]
        return type(node)(*items) if hasattr(node, "_fields") else type(node)(items)
    if isinstance(node, list):
        return [_map_flat_dicts(v, layout) for v in node]
    if isinstance(node, dict):
        return {k: _map_flat_dicts(v, layout) for k, v in node.items()}
    return _tree_map_flat_dicts(node, layout)


def _state_flat(state: OptState, layout: FlatLayout) -> OptState:
    """An optimizer state with per-parameter dicts concatenated into ``{"flat": t}`` leaves."""
    return optree.tree_map(
        lambda node: {FLAT_KEY: layout.flatten(node)} if _is_param_dict(node, layout.names) else node,
        state,
        is_leaf=lambda node: _is_param_dict(node, layout.names) or isinstance(node, Tensor),
        none_is_leaf=True,
    )


def _unique_function(fn: Callable[..., Any], tag: str) -> Callable[..., Any]:
    """A copy of ``fn`` with its own code object.

    Dynamo keeps its compiled entries (and its recompile limit) per code object. Steps made
    from the same source function would otherwise share one cache, and a program making
    more than ``torch._dynamo.config.recompile_limit`` steps (one per experiment, say)
    would silently fall back to eager mode.
    """
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{tag}")
    new = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)
    new.__qualname__ = f"{fn.__qualname__}_{tag}"
    return new


_STEP_IDS = _counter()


class TrainStep:
    """The masked training step made by :func:`make_train_step`; call it like a function.

    ``step(params, opt_state, mask, (x, y), lr) -> (params, opt_state, metrics)``, and
    ``step(..., buffers=b) -> (params, opt_state, metrics, new_buffers)`` for models whose
    buffers change in training (BatchNorm). See :func:`make_train_step` for the semantics;
    this class adds the flat fast path (:meth:`pack`, :meth:`flat_step`, :meth:`unpack`) and
    :attr:`num_compiles`.

    Measured on LeNet-300-100, batch 60, real MNIST batches, torch 2.14, a shared 2-core AMD
    EPYC VM, ``OMP_NUM_THREADS=1``; µs per step, best of 20 windows of 50 steps, variants
    interleaved in one process with the bare matmuls of one forward+backward (761 µs) as the
    yardstick:

    =========================================  ======  ======  ============
    this design (cpp wrapper on CPU)            Adam    SGD     momentum
    =========================================  ======  ======  ============
    :meth:`flat_step` (``fit`` uses it)         1100    970     1028
    dict interface, outputs fed back            1177
    ``fit``, per iteration                      1113
    eager (``compile=False``)                   4324
    same, ``OMP_NUM_THREADS=2`` (bare 528)      837     724     774
    =========================================  ======  ======  ============

    How it got there (Adam unless noted; each line compared in one process):

    * per-tensor dict step, bool masks: 2500-2800: inductor converts bool masks to floats
      per SIMD vector (~1 ms) and inlines the ``pow`` of Adam's bias corrections into every
      update loop (~1 ms); float masks and scalars materialized once: 1450;
    * flat buffer with gradients taken w.r.t. the flat tensor: 1560 (slice-backward gathers
      six sources per element); w.r.t. per-tensor views, concatenated: 1090-1320 (the
      concatenation copies the gradients);
    * per-tensor update on views, results concatenated into the flat outputs (inductor
      writes each fused loop straight into its slice): 1187 vs 1324; SGD 998 vs 1042;
    * inductor's C++ wrapper (CPU only): 1143 vs 1192, SGD 980 vs 1013;
    * ``as_strided`` views and a plain recursion for the dict outputs: the dict interface's
      extra cost fell from about 90 to about 40-75 µs;
    * not used: uint8 masks (SGD 1147 vs 992), bool masks (2024), in-place (donated)
      updates (no gain), ``max_autotune`` (no gain: CPU GEMM templates need frozen
      weights), Adam's update written with one division instead of torch's two (no
      measurable gain; parity with ``torch.optim`` kept).

    What remains above the matmuls is mostly memory traffic of the update (Adam reads five
    and writes three 1 MB buffers per step) and ~11 µs of dynamo guards.

    Cold compile (empty inductor cache): 14-15 s for this model on this machine; with the
    on-disk cache warm (same graph compiled before), 2-3 s.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        loss_fn: LossFn,
        *,
        compile: bool,
        buffers: Buffers,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.compiled = compile
        self.buffers = buffers
        # Normalization layers that update running statistics in training mode: without
        # explicit buffers the step would have to drop those updates, so it refuses.
        self._stat_modules: tuple[tuple[str, nn.Module], ...] = tuple(
            (name, m)
            for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
        )
        # momentum=None (a cumulative average) reads num_batches_tracked on the host: not traceable
        self._cma_modules = tuple((name, m) for name, m in self._stat_modules if m.momentum is None)
        self._buffer_specs: dict[str, tuple[torch.Size, torch.dtype]] = {
            k: (v.shape, v.dtype) for k, v in buffers.items()
        }
        params = dict(model.named_parameters())
        self.layout = FlatLayout.of(params)
        meta = {k: torch.empty(v.shape, device="meta") for k, v in params.items()}
        try:  # the structure every optimizer state of this step must have (no memory used)
            self._state_spec: Any = optree.tree_structure(optimizer.init(meta), none_is_leaf=True)
        except Exception:  # a custom optimizer whose init needs real tensors: learn it later
            self._state_spec = None
        self._compiles = [0]
        core = self._make_core()
        if compile:
            inductor = torch._dynamo.lookup_backend("inductor")
            counter = self._compiles

            def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
                counter[0] += 1
                on_cpu = all(t.device.type == "cpu" for t in example_inputs if isinstance(t, Tensor))
                # On CPU a C++ wrapper calls the kernels without the generated Python
                # function's per-kernel overhead: about 40 µs (4%) per LeNet-300-100 step.
                return inductor(gm, example_inputs, config_patches={"cpp_wrapper": True} if on_cpu else None)

            unique = _unique_function(core, f"step{next(_STEP_IDS)}")
            self._fn: Callable[..., Any] = torch.compile(
                unique, backend=backend, fullgraph=True, dynamic=False
            )
        else:
            self._fn = core
        # caches (all hold strong references, so identities stay unique while cached)
        self._masks: list[tuple[Any, torch.device, torch.dtype, Tensor]] = []
        self._lr: tuple[float, torch.device, Tensor] | None = None
        self._lr_tensor_seen: Tensor | None = None  # last lr tensor whose value was checked
        self._produced: tuple[Tensor, Tensor] | None = None  # (flat params out, flat mask used)
        self._last: tuple[tuple[Tensor, ...], list[Any], Tensor, OptState] | None = None
        self._example_shape: tuple[int, ...] | None = None

    # ------------------------------------------------------------------------------------
    @property
    def num_compiles(self) -> int:
        """How many graphs ``torch.compile`` has built for this step (0 when eager)."""
        return self._compiles[0]

    def __repr__(self) -> str:
        mode = "compiled" if self.compiled else "eager"
        return (
            f"TrainStep({type(self.model).__name__}, optimizer={self.optimizer.name!r}, {mode}, "
            f"{len(self.layout.names)} tensors / {self.layout.numel} weights)"
        )

    def _make_core(self) -> Callable[..., Any]:
        model, loss_fn, optimizer, layout = self.model, self.loss_fn, self.optimizer, self.layout
        names = layout.names

        def masked_step(
            flat: Tensor,
            opt_state: OptState,
            flat_mask: Tensor,
            x: Tensor,
            y: Tensor,
            lr: Tensor,
            buffers: Buffers,
        ) -> tuple[Tensor, OptState, Tensor, Tensor, Buffers]:
            def loss_of(ps: Params, bufs: Buffers) -> tuple[Tensor, tuple[Tensor, Buffers]]:
                # torch.func refuses in-place updates of tensors from outside the transform:
                # copies made inside it are what BatchNorm updates (running statistics,
                # num_batches_tracked), and they come out as the new buffers.
                new_bufs = {k: b.clone() for k, b in bufs.items()}
                out = torch.func.functional_call(model, {**ps, **new_bufs}, (x,))
                return loss_fn(out, y), (out, new_bufs)

            params = layout.views(flat)
            mask = layout.views(flat_mask)
            grads, (loss, (logits, new_buffers)) = torch.func.grad_and_value(loss_of, has_aux=True)(
                params, buffers
            )
            # The update runs per tensor on views of the flat inputs and its results are
            # concatenated into flat outputs: inductor then writes each fused per-tensor loop
            # straight into its slice of the output buffers, and reads each gradient where its
            # matmul left it (concatenating the gradients first costs an extra copy of them).
            grads = {n: grads[n] * mask[n] for n in names}
            new, new_state = optimizer.update(grads, _state_views(opt_state, layout), params, lr)
            new_flat = torch.cat([(new[n] * mask[n]).reshape(-1) for n in names])
            accuracy = (logits.argmax(-1) == y).to(loss.dtype).mean()
            return new_flat, _state_flat(new_state, layout), loss.detach(), accuracy, new_buffers

        return masked_step

    # Flat fast path -------------------------------------------------------------------------
    def pack(
        self,
        params: Mapping[str, Tensor],
        opt_state: OptState | None = None,
        buffers: Mapping[str, Tensor] | None = None,
    ) -> FlatState:
        """Copy a params pytree (and optimizer state) into the step's flat layout.

        Args:
            params: Dict of float tensors keyed like the model's parameters, one dtype and
                device.
            opt_state: A state of this step's optimizer for ``params`` (e.g. from
                ``optimizer.init(params)`` or returned by the step), or ``None`` for a fresh
                ``optimizer.init``.
            buffers: The model's buffers to carry (BatchNorm running statistics; keys,
                shapes and dtypes of the step's :attr:`buffers`), or ``None`` to use the
                step's own fixed buffers.

        Returns:
            A :class:`FlatState` (new flat tensors; the buffers are referenced, not copied;
            the inputs are not modified).

        Raises:
            TypeError, ValueError: As for calling the step.

        Example:
            >>> import ltfunc
            >>> m = ltfunc.models.lenet300(); p = ltfunc.get_params(m)
            >>> step = ltfunc.step.make_train_step(m, ltfunc.optim.adam(), compile=False)
            >>> fs = step.pack(p)
            >>> fs.params.shape, fs.opt_state.mu["flat"].shape
            (torch.Size([266610]), torch.Size([266610]))
        """
        flat = self._check_and_flatten("pack", params)
        bufs = None if buffers is None else self._check_buffers("pack", buffers, flat)
        if opt_state is None:
            return FlatState(flat, self.optimizer.init({FLAT_KEY: flat}), bufs)
        return FlatState(flat, self._flatten_state("pack", opt_state, flat), bufs)

    def unpack(self, state: FlatState) -> tuple[Params, OptState]:
        """Dict pytrees of a :class:`FlatState`: ``(params, opt_state)`` as views (no copy).

        Args:
            state: A flat state of this step.

        Returns:
            ``(params, opt_state)`` keyed like the model's parameters.

        Raises:
            TypeError: If ``state`` is not a :class:`FlatState`.

        Example:
            >>> import ltfunc
            >>> m = ltfunc.models.lenet300(); p = ltfunc.get_params(m)
            >>> step = ltfunc.step.make_train_step(m, ltfunc.optim.sgd(momentum=0.9), compile=False)
            >>> params, opt_state = step.unpack(step.pack(p))
            >>> ltfunc.tree_equal(params, p), list(opt_state.momentum)[:2]
            (True, ['fc1.weight', 'fc1.bias'])
        """
        if not isinstance(state, FlatState):
            raise TypeError(f"unpack: state must be a FlatState, got {type(state).__name__}")
        return self.layout.views(state.params), _state_views(state.opt_state, self.layout)

    def flat_step(
        self, state: FlatState, mask: Mask | None, batch: Batch, lr: float | Tensor
    ) -> tuple[FlatState, Metrics]:
        """One masked step on a :class:`FlatState` (no dict views are built).

        Args:
            state: From :meth:`pack` or a previous :meth:`flat_step`. Its ``buffers`` are the
                forward pass's buffers and come back updated in the new state; ``None`` uses
                the step's own fixed buffers (refused for normalization layers that update
                running statistics in training mode).
            mask: As for calling the step.
            batch: ``(x, y)`` on the params' device.
            lr: Learning rate, a float or a 0-d tensor.

        Returns:
            ``(new_state, metrics)``.

        Raises:
            TypeError, ValueError: As for calling the step.

        Example:
            >>> import torch, ltfunc
            >>> m = ltfunc.models.lenet300(seed=0); p = ltfunc.get_params(m)
            >>> step = ltfunc.step.make_train_step(m, ltfunc.optim.sgd(), compile=False)
            >>> batch = (torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))
            >>> fs, metrics = step.flat_step(step.pack(p), None, batch, 0.1)
            >>> sorted(metrics)
            ['accuracy', 'loss']
        """
        if not isinstance(state, FlatState):
            raise TypeError(f"flat_step: state must be a FlatState, got {type(state).__name__}")
        flat = state.params
        if not isinstance(flat, Tensor) or flat.shape != (self.layout.numel,) or not flat.is_floating_point():
            raise ValueError(
                f"flat_step: state.params must be a 1-D float tensor of {self.layout.numel} elements "
                "(from step.pack)"
            )
        return self._run("flat_step", flat, state.opt_state, mask, batch, lr, state.buffers)

    # Dict interface ---------------------------------------------------------------------------
    @overload
    def __call__(
        self,
        params: Mapping[str, Tensor],
        opt_state: OptState,
        mask: Mask | None,
        batch: Batch,
        lr: float | Tensor,
        buffers: None = None,
    ) -> tuple[Params, OptState, Metrics]: ...

    @overload
    def __call__(
        self,
        params: Mapping[str, Tensor],
        opt_state: OptState,
        mask: Mask | None,
        batch: Batch,
        lr: float | Tensor,
        buffers: Mapping[str, Tensor],
    ) -> tuple[Params, OptState, Metrics, Buffers]: ...

    def __call__(
        self,
        params: Mapping[str, Tensor],
        opt_state: OptState,
        mask: Mask | None,
        batch: Batch,
        lr: float | Tensor,
        buffers: Mapping[str, Tensor] | None = None,
    ) -> tuple[Params, OptState, Metrics] | tuple[Params, OptState, Metrics, Buffers]:
        """One masked step on dict pytrees; see :func:`make_train_step`."""
        last = self._last
        if (
            last is not None
            and isinstance(params, Mapping)
            and len(params) == len(last[0])
            and all(params.get(n) is t for n, t in zip(self.layout.names, last[0], strict=True))
            and _same_leaves(opt_state, last[1])
        ):
            flat, flat_opt = last[2], last[3]
        else:
            flat = self._check_and_flatten("train_step", params)
            flat_opt = self._flatten_state("train_step", opt_state, flat)
        if buffers is not None:
            buffers = self._check_buffers("train_step", buffers, flat)
        new_state, metrics = self._run("train_step", flat, flat_opt, mask, batch, lr, buffers)
        out_params, out_opt = self.unpack(new_state)
        self._last = (
            tuple(out_params.values()),
            optree.tree_leaves(out_opt, none_is_leaf=True),
            new_state.params,
            new_state.opt_state,
        )
        if new_state.buffers is None:
            return out_params, out_opt, metrics
        return out_params, out_opt, metrics, new_state.buffers

    # Shared core --------------------------------------------------------------------------------
    def _run(
        self,
        func: str,
        flat: Tensor,
        flat_opt: OptState,
        mask: Mask | None,
        batch: Batch,
        lr: float | Tensor,
        buffers: Buffers | None,
    ) -> tuple[FlatState, Metrics]:
        # ``buffers`` were checked by the caller (pack / __call__) when not None
        flat_mask = self._flat_mask(func, mask, flat)
        x, y = self._check_batch(func, batch, flat)
        lr_t = self._lr_tensor(func, lr, flat)
        bufs = self._own_buffers(func, flat) if buffers is None else buffers
        if self._cma_modules and self.compiled:
            self._check_traceable(func)
        produced = self._produced
        if produced is None or produced[0] is not flat or produced[1] is not flat_mask:
            flat = flat * flat_mask  # params from elsewhere, or a new mask: prune them once
        new_flat, new_opt, loss, accuracy, new_bufs = self._fn(flat, flat_opt, flat_mask, x, y, lr_t, bufs)
        self._produced = (new_flat, flat_mask)
        if self._example_shape is None:
            self._example_shape = tuple(x.shape[1:])
        return FlatState(new_flat, new_opt, None if buffers is None else new_bufs), {
            "loss": loss,
            "accuracy": accuracy,
        }

    def _own_buffers(self, func: str, flat: Tensor) -> Buffers:
        """The step's fixed buffers, for calls without ``buffers``; refused where they would change."""
        updating = [name or "(the model)" for name, m in self._stat_modules if m.training]
        if updating:
            raise ValueError(
                f"{func}: {type(self.model).__name__} has normalization layers in training mode "
                f"({', '.join(updating)}) whose running statistics every step updates, but no buffers "
                "were given: pass them (step(..., buffers=b) returns (params, opt_state, metrics, "
                "new_buffers); step.pack(params, opt_state, b) for flat_step; ltfunc.train.init for "
                "fit), or call model.eval() to train with fixed statistics"
            )
        for k, b in self.buffers.items():
            if b.device != flat.device:
                raise ValueError(f"{func}: buffer {k!r} is on {b.device} but params are on {flat.device}")
        return self.buffers

    def _check_traceable(self, func: str) -> None:
        cumulative = [name or "(the model)" for name, m in self._cma_modules if m.training]
        if cumulative:
            raise ValueError(
                f"{func}: normalization layers {cumulative} have momentum=None (a cumulative average of "
                "the batch statistics), which torch.compile cannot trace in training mode (it reads "
                "num_batches_tracked on the host); make the step with compile=False or give them a "
                "numeric momentum"
            )

    def _check_buffers(self, func: str, buffers: Any, flat: Tensor) -> Buffers:
        """A new dict of ``buffers`` after checking them against the step's buffers."""
        if not isinstance(buffers, Mapping):
            raise TypeError(
                f"{func}: buffers must be a dict of tensors (e.g. ltfunc.get_buffers(model)) or None, "
                f"got {type(buffers).__name__}"
            )
        specs = self._buffer_specs
        if len(buffers) != len(specs) or any(k not in buffers for k in specs):
            missing = [k for k in specs if k not in buffers]
            extra = [k for k in buffers if k not in specs]
            raise ValueError(
                f"{func}: buffers keys do not match the step's buffers: missing {missing}, unexpected {extra}"
            )
        for k, (shape, dtype) in specs.items():
            b = buffers[k]
            if not isinstance(b, Tensor):
                raise TypeError(f"{func}: buffers[{k!r}] must be a tensor, got {type(b).__name__}")
            if b.shape != shape or b.dtype != dtype:
                raise ValueError(
                    f"{func}: buffers[{k!r}] is {b.dtype} with shape {tuple(b.shape)}, the step expects "
                    f"{dtype} with shape {tuple(shape)}"
                )
            if b.device != flat.device:
                raise ValueError(f"{func}: buffers[{k!r}] is on {b.device} but params are on {flat.device}")
        return {k: buffers[k] for k in specs}

    def _check_and_flatten(self, func: str, params: Any) -> Tensor:
        if not isinstance(params, Mapping):
            raise TypeError(f"{func}: params must be a dict of float tensors, got {type(params).__name__}")
        names = self.layout.names
        if len(params) != len(names) or any(n not in params for n in names):
            missing = [n for n in names if n not in params]
            extra = [k for k in params if k not in names]
            raise ValueError(
                f"{func}: params keys do not match the model's parameters: missing {missing}, "
                f"unexpected {extra}"
            )
        first = params[names[0]]
        for n, shape in zip(names, self.layout.shapes, strict=True):
            t = params[n]
            if not isinstance(t, Tensor) or not t.is_floating_point():
                what = t.dtype if isinstance(t, Tensor) else type(t).__name__
                raise TypeError(f"{func}: params[{n!r}] must be a float tensor, got {what}")
            if t.shape != shape:
                raise ValueError(
                    f"{func}: params[{n!r}] has shape {tuple(t.shape)}, the model expects {tuple(shape)}"
                )
            if t.dtype != first.dtype or t.device != first.device:
                raise ValueError(
                    f"{func}: all params must share one dtype and device; params[{n!r}] is "
                    f"{t.dtype} on {t.device}, params[{names[0]!r}] is {first.dtype} on {first.device}"
                )
        return self.layout.flatten(params).detach()

    def _flatten_state(self, func: str, opt_state: Any, flat: Tensor) -> OptState:
        spec = optree.tree_structure(opt_state, none_is_leaf=True)
        if self._state_spec is None:
            self._state_spec = optree.tree_structure(
                self.optimizer.init(self.layout.views(flat)), none_is_leaf=True
            )
        if spec != self._state_spec:
            raise TypeError(
                f"{func}: opt_state does not have the structure of this step's optimizer state "
                f"({self.optimizer.name}): expected {self._state_spec}, got {spec}; "
                "use optimizer.init(params) with the step's optimizer"
            )
        names = self.layout.names

        def convert(node: Any) -> Any:
            if _is_param_dict(node, names):
                for n, shape in zip(names, self.layout.shapes, strict=True):
                    t = node[n]
                    if t.shape != shape or t.device != flat.device:
                        raise ValueError(
                            f"{func}: opt_state tensor for {n!r} has shape {tuple(t.shape)} on "
                            f"{t.device}; expected {tuple(shape)} on {flat.device}"
                        )
                return {FLAT_KEY: self.layout.flatten(node).to(flat.dtype)}
            if isinstance(node, Tensor) and node.device != flat.device:
                raise ValueError(
                    f"{func}: opt_state holds a tensor on {node.device}, params are on {flat.device}"
                )
            return node

        return optree.tree_map(
            convert,
            opt_state,
            is_leaf=lambda node: _is_param_dict(node, names) or isinstance(node, Tensor),
            none_is_leaf=True,
        )

    def _flat_mask(self, func: str, mask: Any, flat: Tensor) -> Tensor:
        for cached, device, dtype, flat_mask in self._masks:
            if cached is mask and device == flat.device and dtype == flat.dtype:
                return flat_mask
        if mask is None:
            flat_mask = torch.ones(self.layout.numel, dtype=flat.dtype, device=flat.device)
        else:
            if not isinstance(mask, Mask):
                raise TypeError(f"{func}: mask must be an ltfunc Mask or None, got {type(mask).__name__}")
            _masks.check_compatible(mask, self.layout.views(flat), func)
            parts = [
                mask[n].reshape(-1).to(flat.dtype)
                if n in mask
                else torch.ones(c, dtype=flat.dtype, device=flat.device)
                for n, c in zip(self.layout.names, self.layout.numels, strict=True)
            ]
            flat_mask = torch.cat(parts)
        self._masks = [*self._masks[-3:], (mask, flat.device, flat.dtype, flat_mask)]
        return flat_mask

    def _check_batch(self, func: str, batch: Any, flat: Tensor) -> tuple[Tensor, Tensor]:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError(f"{func}: batch must be an (x, y) pair of tensors, got {type(batch).__name__}")
        x, y = batch
        for name, t in (("x", x), ("y", y)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{func}: batch {name} must be a tensor, got {type(t).__name__}")
            if t.device != flat.device:
                raise ValueError(
                    f"{func}: batch {name} is on {t.device} but params are on {flat.device}; "
                    "move the batch (or load the dataset) to the params' device"
                )
        if y.dtype != torch.int64 or y.dim() != 1:
            raise ValueError(
                f"{func}: batch y must be a 1-D int64 tensor of class labels, got {y.dtype} "
                f"with shape {tuple(y.shape)}"
            )
        if x.dim() == 0 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"{func}: batch x has shape {tuple(x.shape)} but y has {y.shape[0]} labels; "
                "x's first dimension must be the batch"
            )
        if x.is_floating_point() and x.dtype != flat.dtype:
            raise ValueError(f"{func}: batch x has dtype {x.dtype} but params are {flat.dtype}")
        if self._example_shape is not None and tuple(x.shape[1:]) != self._example_shape:
            raise ValueError(
                f"{func}: batch x has per-example shape {tuple(x.shape[1:])}, but this step was "
                f"first used with {self._example_shape}"
            )
        return x, y

    def _lr_tensor(self, func: str, lr: Any, flat: Tensor) -> Tensor:
        if isinstance(lr, Tensor):
            if lr.dim() != 0 or not lr.is_floating_point():
                raise ValueError(
                    f"{func}: lr must be a float or a 0-d float tensor, got {lr.dtype} {tuple(lr.shape)}"
                )
            if lr.device != flat.device:
                raise ValueError(f"{func}: lr is on {lr.device} but params are on {flat.device}")
            if lr is not self._lr_tensor_seen:
                if lr.device.type == "cpu":  # reading a CPU value is not a device sync
                    _check_lr_value(func, float(lr))
                self._lr_tensor_seen = lr
            return lr if lr.dtype == torch.float32 else lr.to(torch.float32)
        if isinstance(lr, bool) or not isinstance(lr, (int, float)):
            raise TypeError(f"{func}: lr must be a float or a 0-d tensor, got {type(lr).__name__}")
        value = _check_lr_value(func, float(lr))
        cached = self._lr
        if cached is not None and cached[0] == value and cached[1] == flat.device:
            return cached[2]
        tensor = torch.tensor(value, dtype=torch.float32, device=flat.device)
        self._lr = (value, flat.device, tensor)
        return tensor


def _check_lr_value(func: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{func}: lr must be finite and >= 0, got {value!r}")
    return value


def _same_leaves(tree: Any, leaves: list[Any]) -> bool:
    try:
        got = optree.tree_leaves(tree, none_is_leaf=True)
    except Exception:  # not a pytree at all: let the full check report it
        return False
    return len(got) == len(leaves) and all(a is b for a, b in zip(got, leaves, strict=True))


def make_train_step(
    model: nn.Module,
    optimizer: Optimizer,
    loss_fn: LossFn = F.cross_entropy,
    *,
    compile: bool = True,
    buffers: Buffers | None = None,
) -> TrainStep:
    """Make the masked training step ``step(params, opt_state, mask, (x, y), lr)``.

    The step returns ``(params, opt_state, metrics)``: new params with pruned weights exactly
    0, the new optimizer state, and ``{"loss", "accuracy"}`` as 0-d tensors on the device
    (nothing is synchronized with the host). ``mask=None`` trains densely. Params, batch and
    lr must be on one device; the computation runs there (CPU or CUDA). Inputs are never
    modified.

    Make one step per model/optimizer/loss and reuse it: changing the mask, the learning
    rate (float or 0-d tensor), the buffers' values or resetting the optimizer state does
    not recompile (switching the model between train and eval mode does, once per mode).

    Buffers (BatchNorm running statistics, ``num_batches_tracked``) are functional too:
    ``step(params, opt_state, mask, (x, y), lr, buffers=b)`` runs the forward pass with
    ``b`` and returns a 4-tuple ``(params, opt_state, metrics, new_buffers)``; ``b`` is not
    modified, ``new_buffers`` holds what a BatchNorm layer in training mode would have
    written into its running statistics (same values as an ``nn.Module`` step). Feed
    ``new_buffers`` to the next step, and to :func:`evaluate` (which runs the model in
    eval mode, i.e. on those statistics). Without ``buffers=`` the step reads its own fixed
    :attr:`TrainStep.buffers` and returns the 3-tuple; that is refused with a ``ValueError``
    when a normalization layer that tracks running statistics is in training mode, since
    its updates would be lost. :class:`FlatState` and :class:`ltfunc.train.TrainState`
    carry buffers the same way (``ltfunc.train.init`` fills them in). Default masks
    (:func:`ltfunc.masks.ones`) never cover normalization parameters. BatchNorm with
    ``momentum=None`` (cumulative average) trains only with ``compile=False``.

    Args:
        model: Defines the computation; its own parameters and buffers are not used or
            changed. It runs in whatever train/eval mode it is in.
        optimizer: A functional optimizer (:mod:`ltfunc.optim`).
        loss_fn: ``loss_fn(logits, y) -> scalar`` (a batch mean); default cross-entropy.
        compile: ``torch.compile`` the step (default, ``fullgraph=True``). ``False`` runs the
            same function eagerly (same results up to float rounding; for debugging).
        buffers: The step's own buffers (BatchNorm statistics): what the forward pass reads
            when a call passes none, and the keys, shapes and dtypes every call's
            ``buffers`` must have. Default: a copy of the model's own buffers.

    Returns:
        A :class:`TrainStep`.

    Raises:
        TypeError: ``model`` not a module, ``optimizer`` not an :class:`Optimizer`,
            ``loss_fn`` not callable, ``buffers`` not a dict of tensors.
        ValueError: A model without parameters.

    Calling the step raises (before any computation) ``TypeError``/``ValueError`` for
    params that are not a dict of float tensors matching the model (keys, shapes, one
    dtype and device), buffers that do not match the step's (keys, shapes, dtypes, device),
    a mask that is not a :class:`~ltfunc.masks.Mask` or does not fit
    (keys, shapes, device), a batch that is not an ``(x, y)`` pair on the params' device
    with int64 labels, a negative or non-finite lr, or an optimizer state of another
    structure.

    Example:
        >>> import torch, ltfunc
        >>> model = ltfunc.models.lenet300(seed=0)
        >>> opt = ltfunc.optim.adam(lr=1e-3)
        >>> step = ltfunc.step.make_train_step(model, opt, compile=False)
        >>> params = ltfunc.get_params(model)
        >>> mask = ltfunc.prune.magnitude(params, ltfunc.masks.ones(params), rate=0.5)
        >>> batch = (torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,)))
        >>> params, state, metrics = step(params, opt.init(params), mask, batch, 1e-3)
        >>> bool((params["fc1.weight"][~mask["fc1.weight"]] == 0).all()), metrics["loss"].shape
        (True, torch.Size([]))

        With BatchNorm in training mode, pass the buffers and take the updated ones back:

        >>> bn_net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
        >>> sgd = ltfunc.optim.sgd(lr=0.1)
        >>> bn_step = ltfunc.step.make_train_step(bn_net, sgd, compile=False)
        >>> p, b = ltfunc.get_params(bn_net), ltfunc.get_buffers(bn_net)
        >>> xy = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
        >>> p, s, metrics, b = bn_step(p, sgd.init(p), None, xy, 0.1, buffers=b)
        >>> int(b["1.num_batches_tracked"]), int(bn_net[1].num_batches_tracked)
        (1, 0)
    """
    func = "make_train_step"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{func}: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"{func}: optimizer must be an ltfunc.optim.Optimizer (e.g. ltfunc.optim.adam()), "
            f"got {type(optimizer).__name__}; translate torch.optim ones with ltfunc.optim.from_torch"
        )
    if not callable(loss_fn):
        raise TypeError(f"{func}: loss_fn must be callable(logits, y) -> loss, got {type(loss_fn).__name__}")
    if not isinstance(compile, bool):
        raise TypeError(f"{func}: compile must be a bool, got {compile!r}")
    if buffers is None:
        buffers = get_buffers(model)
    elif not isinstance(buffers, Mapping) or not all(isinstance(v, Tensor) for v in buffers.values()):
        raise TypeError(f"{func}: buffers must be a dict of tensors or None, got {type(buffers).__name__}")
    if not any(True for _ in model.parameters()):
        raise ValueError(f"{func}: {type(model).__name__} has no parameters to train")
    return TrainStep(model, optimizer, loss_fn, compile=compile, buffers=dict(buffers))


# Evaluation --------------------------------------------------------------------------------------
EvalStep = Callable[[Params, Batch], tuple[Tensor, Tensor]]

_EvalCore = Callable[[Params, Buffers, Tensor, Tensor], tuple[Tensor, Tensor]]

_COMPILED_EVAL: weakref.WeakKeyDictionary[nn.Module, dict[Any, tuple[_EvalCore, EvalStep]]] = (
    weakref.WeakKeyDictionary()
)
"""Per model and loss: the compiled core (buffers are one of its inputs) and the default eval step."""


def _eval_core(model: nn.Module, loss_fn: LossFn) -> _EvalCore:
    # Compiled cores are cached in a weakly keyed cache: they must not keep the model alive.
    model_ref = weakref.ref(model)

    def eval_core(params: Params, buffers: Buffers, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            # copies, so a model left in training mode cannot update the caller's buffers
            bufs = {k: b.clone() for k, b in buffers.items()}
            logits = torch.func.functional_call(model_ref(), {**params, **bufs}, (x,))
            loss = loss_fn(logits, y) * y.shape[0]
            correct = (logits.argmax(-1) == y).sum()
        return loss.detach(), correct

    return eval_core


def make_eval_step(
    model: nn.Module,
    loss_fn: LossFn = F.cross_entropy,
    *,
    compile: bool = False,
    buffers: Buffers | None = None,
) -> EvalStep:
    """Make ``eval_step(params, (x, y)) -> (loss_sum, n_correct)`` for one batch (no grad).

    ``loss_sum`` is ``loss_fn(logits, y) * len(y)`` (so sums over batches divide by the
    number of examples) and ``n_correct`` the number of argmax hits; both 0-d tensors on the
    device, not synchronized. The model runs in its current train/eval mode (:func:`evaluate`
    switches to eval mode); buffers are never modified. Compiled code is cached per model and
    loss, with the buffers as an input: new buffer values (BatchNorm statistics after more
    training) do not recompile.

    Args:
        model: The module.
        loss_fn: Batch-mean loss ``loss_fn(logits, y)``.
        compile: ``torch.compile`` it (worth it for many evaluations of big splits).
        buffers: Buffers for the forward pass (e.g. the BatchNorm statistics a training step
            returned); default the model's own, as they are at each call.

    Returns:
        The eval step.

    Raises:
        TypeError: ``model`` not a module, ``loss_fn`` not callable, ``buffers`` not a dict
            of tensors.

    Example:
        >>> import torch, ltfunc
        >>> m = ltfunc.models.lenet300(seed=0)
        >>> ev = ltfunc.step.make_eval_step(m)
        >>> batch = (torch.randn(5, 784), torch.zeros(5, dtype=torch.long))
        >>> loss_sum, correct = ev(ltfunc.get_params(m), batch)
        >>> loss_sum.shape, 0 <= int(correct) <= 5
        (torch.Size([]), True)
    """
    func = "make_eval_step"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{func}: model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"{func}: loss_fn must be callable(logits, y) -> loss, got {type(loss_fn).__name__}")
    if buffers is not None and (
        not isinstance(buffers, Mapping) or not all(isinstance(v, Tensor) for v in buffers.values())
    ):
        raise TypeError(f"{func}: buffers must be a dict of tensors or None, got {type(buffers).__name__}")
    cached = _COMPILED_EVAL.get(model, {}).get(loss_fn) if compile else None
    if cached is not None:
        core, default_step = cached
        if buffers is None:
            return default_step
    else:
        core = _eval_core(model, loss_fn)
        if compile:
            core = torch.compile(_unique_function(core, f"eval{next(_STEP_IDS)}"), fullgraph=True)
        # a cached default step must not keep the model alive either
        model_of: Callable[[], nn.Module | None] = weakref.ref(model) if compile else (lambda: model)

        def default_step(params: Params, batch: Batch) -> tuple[Tensor, Tensor]:
            x, y = batch
            return core(params, get_buffers(model_of(), copy=False), x, y)  # type: ignore[arg-type]

        if compile:
            _COMPILED_EVAL.setdefault(model, {})[loss_fn] = (core, default_step)
        if buffers is None:
            return default_step
    bufs = dict(buffers)

    def eval_step(params: Params, batch: Batch) -> tuple[Tensor, Tensor]:
        x, y = batch
        return core(params, bufs, x, y)

    return eval_step


def evaluate(
    model: nn.Module,
    params: Mapping[str, Tensor],
    mask: Mask | None,
    split: Any,
    *,
    batch_size: int = 1000,
    loss_fn: LossFn = F.cross_entropy,
    buffers: Buffers | None = None,
    compile: bool = False,
) -> tuple[float, float]:
    """Mean loss and accuracy of ``params`` (under ``mask``) on a whole split.

    Batched, without gradient tracking, with the model temporarily in eval mode; the
    per-batch results are accumulated on the device and synchronized once at the end.

    Args:
        model: The module.
        params: Params pytree (masked weights need not be zero: ``mask`` is applied).
        mask: A :class:`~ltfunc.masks.Mask` or ``None``.
        split: An ``ltfunc.data.Split`` or any ``(x, y)`` pair of tensors on the params'
            device.
        batch_size: Examples per forward pass.
        loss_fn: Batch-mean loss, as in training.
        buffers: Buffers for the forward pass, e.g. the BatchNorm running statistics that
            training returned (``TrainState.buffers``); in eval mode BatchNorm normalizes
            with them. Default: the model's own.
        compile: Use a compiled eval step (cached per model; compiles once per batch shape).

    Returns:
        ``(mean loss, accuracy)`` as python floats, accuracy in [0, 1].

    Raises:
        TypeError: Wrong argument types (``params`` or ``buffers`` not a dict of tensors,
            ``mask`` not a Mask, ``split`` not an ``(x, y)`` pair).
        ValueError: Empty split, ``x``/``y`` length mismatch, a device mismatch, a mask that
            does not fit, or ``batch_size < 1``.

    Example:
        >>> import torch, ltfunc
        >>> m = ltfunc.models.lenet300(seed=0); p = ltfunc.get_params(m)
        >>> split = (torch.randn(30, 1, 28, 28), torch.randint(0, 10, (30,)))
        >>> loss, acc = ltfunc.step.evaluate(m, p, None, split, batch_size=8)
        >>> isinstance(loss, float), 0.0 <= acc <= 1.0
        (True, True)
    """
    func = "evaluate"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{func}: model must be a torch.nn.Module, got {type(model).__name__}")
    if (
        not isinstance(params, Mapping)
        or not params
        or not all(isinstance(v, Tensor) for v in params.values())
    ):
        raise TypeError(f"{func}: params must be a non-empty dict of tensors, got {type(params).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{func}: batch_size must be a positive int, got {batch_size!r}")
    x, y = _split_tensors(func, split)
    device = next(iter(params.values())).device
    if x.device != device or y.device != device:
        raise ValueError(f"{func}: split is on {x.device} but params are on {device}")
    if buffers is not None:
        if not isinstance(buffers, Mapping) or not all(isinstance(v, Tensor) for v in buffers.values()):
            raise TypeError(
                f"{func}: buffers must be a dict of tensors or None, got {type(buffers).__name__}"
            )
        for k, b in buffers.items():
            if b.device != device:
                raise ValueError(f"{func}: buffers[{k!r}] is on {b.device} but params are on {device}")
    if mask is not None:
        if not isinstance(mask, Mask):
            raise TypeError(f"{func}: mask must be an ltfunc Mask or None, got {type(mask).__name__}")
        params = _masks.apply(mask, params)
    eval_step = make_eval_step(model, loss_fn, compile=compile, buffers=buffers)
    was_training = model.training
    model.eval()
    try:
        total_loss = torch.zeros((), dtype=torch.float64, device=device)
        total_correct = torch.zeros((), dtype=torch.int64, device=device)
        params = dict(params)
        for start in range(0, y.shape[0], batch_size):
            loss, correct = eval_step(params, (x[start : start + batch_size], y[start : start + batch_size]))
            total_loss = total_loss + loss
            total_correct = total_correct + correct
    finally:
        model.train(was_training)
    loss_sum, n_correct = torch.stack([total_loss, total_correct.to(torch.float64)]).tolist()
    n = y.shape[0]
    return loss_sum / n, n_correct / n


def _split_tensors(func: str, split: Any) -> tuple[Tensor, Tensor]:
    if hasattr(split, "x") and hasattr(split, "y"):
        x, y = split.x, split.y
    elif isinstance(split, (tuple, list)) and len(split) == 2:
        x, y = split
    else:
        raise TypeError(
            f"{func}: split must be an ltfunc.data.Split or an (x, y) pair, got {type(split).__name__}"
        )
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"{func}: split x and y must be tensors, got {type(x).__name__}, {type(y).__name__}")
    if x.dim() == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{func}: split x has shape {tuple(x.shape)} but y has shape {tuple(y.shape)}")
    if y.shape[0] == 0:
        raise ValueError(f"{func}: split is empty")
    return x, y
