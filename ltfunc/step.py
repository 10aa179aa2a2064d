"""One ``torch.compile``'d masked training step, and the state it advances.

::

    step = make_train_step(model, optimizer)          # a TrainStep: compile once, reuse
    state = step.init(params)                         # TrainState(params, opt_state, 0, buffers)
    state, metrics = step(state, mask, (x, y), lr)    # one masked step

Each step takes loss and gradients by ``torch.func.grad_and_value`` over ``functional_call``,
sets masked gradients to zero, applies the optimizer update and the mask again, so pruned
weights stay exactly 0 whatever the optimizer (momentum, Adam moments, weight decay). Pruned
weights are also zero in the forward pass: params that did not come out of this step under
this mask are masked once on entry.

Compile once. The mask, the learning rate and the optimizer's step counter are tensor
inputs of the compiled function, so new masks (pruning rounds), any learning-rate schedule
and fresh optimizer states reuse the same compiled code; only a new batch shape, dtype or
device recompiles. ``step.num_compiles`` counts the compilations of a step.

State. :class:`TrainState` holds everything that changes: params, optimizer state, the
number of steps taken and the model's buffers (BatchNorm running statistics and
``num_batches_tracked``; ``{}`` for models without buffers). Every step reads the buffers and
returns the updated ones in the new state; inputs are never modified.

Flat layout. Inside, params, optimizer state and mask each live in one flat buffer
(``ltfunc._flat``): a returned state's params and optimizer state are views into them, and
feeding a returned state back costs nothing (its tensors are recognized by identity);
anything else is checked and flattened once. The internal flat path, used by
:func:`ltfunc.train.fit` and the :class:`~ltfunc.lottery.LotteryTicket` facade (private,
may change)::

    fs = step._pack(state)                               # FlatState(params, opt_state, buffers)
    fs, metrics = step._flat_step(fs, mask, (x, y), lr)  # no dict views; per-batch checks only
    state = step._unpack(fs, iteration)                  # TrainState of dict views (no copy)

Measured times per step and the design choices behind them: ``bench/README.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import optree
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import masks as _masks
from ._checks import check_bool, check_callable, check_int, check_lr
from ._flat import (
    FlatLayout,
    FlatState,
    _state_flat,
    _state_views,
    compile_step,
    flatten_state,
    handed_out,
    same_buffers,
)
from ._types import Batch, Buffers, LossFn, Params
from .masks import Mask
from .optim import Optimizer, OptState
from .params import get_buffers

__all__ = ["Metrics", "TrainState", "TrainStep", "make_train_step"]

Metrics = dict[str, Tensor]
"""``{"loss": 0-d tensor, "accuracy": 0-d tensor}`` of one step (still on the device)."""


# Closure variables of the step's core that never change while the step exists (the model is
# not one of them: its ``training`` flag and hooks stay guarded).
_CONSTANTS = ("layout", "names", "optimizer", "loss_fn", "grad_reduce")


class TrainState(NamedTuple):
    """Everything that changes during training, as an immutable pytree.

    Make the first one with :meth:`TrainStep.init`; every step returns the next one.

    Example:
        >>> import torch, ltfunc
        >>> p = {"w": torch.zeros(2)}
        >>> state = TrainState(p, ltfunc.optim.sgd().init(p))
        >>> state.iteration, state.buffers
        (0, {})
    """

    params: Params
    """The parameter pytree (a dict of tensors keyed like the model's parameters)."""
    opt_state: OptState
    """The optimizer state (from ``optimizer.init`` or a previous step)."""
    iteration: int = 0
    """Number of steps taken so far (a python int)."""
    buffers: Buffers = {}  # noqa: RUF012 (a NamedTuple field default; never mutated)
    """The model's buffers (BatchNorm running statistics), read and updated by every step;
    ``{}`` for models without buffers."""


class _Given(NamedTuple):
    """The state a step handed out last: its tensors (compared by identity) and its flat form."""

    params: tuple[Tensor, ...]
    opt_leaves: list[Any]
    buffers: tuple[tuple[str, Tensor], ...]
    flat: FlatState


class TrainStep:
    """The masked training step made by :func:`make_train_step`; call it like a function.

    ``state, metrics = step(state, mask, (x, y), lr)``, with the first state from
    :meth:`init`. See :func:`make_train_step` for the semantics. Measured times per step and
    the design notes behind them: ``bench/README.md``.

    Attributes:
        model: The module that defines the computation (its own tensors are not used).
        optimizer: The functional optimizer.
        loss_fn: The batch-mean loss.
        compiled: Whether the step is ``torch.compile``'d.
        layout: Where each parameter lives in the flat buffers (``ltfunc._flat.FlatLayout``).

    Example:
        >>> import ltfunc
        >>> step = ltfunc.make_train_step(ltfunc.models.lenet300(), ltfunc.optim.sgd(), compile=False)
        >>> step
        TrainStep(LeNet300, optimizer='sgd', eager, 6 tensors / 266610 weights)
        >>> step.num_compiles  # compiled steps count their graphs; compiling is lazy
        0
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        loss_fn: LossFn,
        *,
        compile: bool,
        grad_reduce: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.compiled = compile
        self.grad_reduce = grad_reduce
        # BatchNorm with momentum=None (a cumulative average) reads num_batches_tracked on the
        # host in training mode: not traceable
        self._cma_modules = tuple(
            (name, m)
            for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats and m.momentum is None
        )
        self._buffer_specs: dict[str, tuple[torch.Size, torch.dtype]] = {
            k: (v.shape, v.dtype) for k, v in model.named_buffers()
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
        self._fn: Callable[..., Any] = (
            compile_step(core, self._compiles, constants=_CONSTANTS) if compile else core
        )
        # Per-call caches, all by identity (they hold strong references, so identities stay
        # unique while cached): the last 4 masks in flat float form; the last lr (a float and
        # its device tensor, or a tensor whose value was checked); the flat params this step
        # produced and the flat mask they were produced under (no re-masking); the last state
        # handed out (fed back, it is not checked or flattened again).
        self._masks: list[tuple[Any, torch.device, torch.dtype, Tensor]] = []
        self._lr: tuple[Any, torch.device, Tensor | None] | None = None
        self._produced: tuple[Tensor, Tensor] | None = None
        self._last: _Given | None = None
        self._example_shape: tuple[int, ...] | None = None  # x.shape[1:] of the first batch

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
        names, grad_reduce = layout.names, self.grad_reduce

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
            accuracy = (logits.argmax(-1) == y).to(loss.dtype).mean()
            if grad_reduce is not None:  # data-parallel: one all-reduce of grads, loss and accuracy
                grads, loss, accuracy = _reduce_grads(grad_reduce, layout, grads, loss, accuracy)
            grads = {n: grads[n] * mask[n] for n in names}
            new, new_state = optimizer.update(grads, _state_views(opt_state, layout), params, lr)
            new_flat = torch.cat([(new[n] * mask[n]).reshape(-1) for n in names])
            return new_flat, _state_flat(new_state, layout), loss.detach(), accuracy, new_buffers

        return masked_step

    # Public ----------------------------------------------------------------------------------
    def init(
        self,
        params: Mapping[str, Tensor],
        *,
        buffers: Mapping[str, Tensor] | None = None,
        iteration: int = 0,
    ) -> TrainState:
        """A fresh :class:`TrainState`: ``params`` with a new state of the step's optimizer.

        Args:
            params: The starting params pytree (float tensors keyed like the model's
                parameters, one dtype and device). Not copied.
            buffers: The starting buffers (keys, shapes and dtypes of the model's buffers).
                Default: copies of the model's own buffers as they are now
                (``ltfunc.get_buffers(model)``, on the params' device); ``{}`` when it has none.
            iteration: The iteration count to start from.

        Returns:
            ``TrainState(params, optimizer.init(params), iteration, buffers)``.

        Raises:
            TypeError: ``params`` or ``buffers`` not a dict of tensors (float tensors for
                params), ``iteration`` not an int.
            ValueError: ``params`` or ``buffers`` that do not match the model (keys, shapes,
                dtypes, one device), ``iteration < 0``.

        Example:
            >>> import torch, ltfunc
            >>> m = ltfunc.models.lenet300()
            >>> step = ltfunc.make_train_step(m, ltfunc.optim.adam(), compile=False)
            >>> state = step.init(ltfunc.get_params(m))
            >>> state.opt_state.count, state.iteration, state.buffers
            (tensor(0), 0, {})
            >>> bn_net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
            >>> bn_step = ltfunc.make_train_step(bn_net, ltfunc.optim.sgd(), compile=False)
            >>> sorted(bn_step.init(ltfunc.get_params(bn_net)).buffers)
            ['1.num_batches_tracked', '1.running_mean', '1.running_var']
        """
        func = "init"
        first = self._check_params(func, "params", params)
        check_int(func, "iteration", iteration, 0)
        if buffers is None:
            bufs = {k: v.to(first.device, copy=True) for k, v in get_buffers(self.model, copy=False).items()}
        else:
            bufs = self._check_buffers(func, "buffers", buffers, first.device)
        params = dict(params)
        return TrainState(params, self.optimizer.init(self._optimized(params)), iteration, bufs)

    def _optimized(self, params: Params) -> Params:
        """The params the optimizer state is kept for (all of them here; sparse steps pack them)."""
        return params

    def __call__(
        self, state: TrainState, mask: Mask | None, batch: Batch, lr: float | Tensor
    ) -> tuple[TrainState, Metrics]:
        """One masked step: ``(new_state, metrics)``; see :func:`make_train_step`.

        Args:
            state: From :meth:`init` or a previous step (a returned state is recognized and
                costs nothing to feed back; any other one is checked and flattened once).
            mask: A :class:`~ltfunc.masks.Mask` or ``None`` (dense).
            batch: ``(x, y)`` on the params' device, ``y`` int64 class labels.
            lr: Learning rate, a float or a 0-d float tensor.

        Returns:
            The new :class:`TrainState` (``iteration + 1``, updated buffers; params and
            optimizer state are views into the step's flat buffers) and
            ``{"loss", "accuracy"}`` of the batch before the update, 0-d tensors on the device.

        Raises:
            TypeError, ValueError: Bad input, before any computation; see :func:`make_train_step`.

        Example:
            >>> import torch, ltfunc
            >>> m = ltfunc.models.lenet300(seed=0)
            >>> step = ltfunc.make_train_step(m, ltfunc.optim.sgd(lr=0.1), compile=False)
            >>> batch = (torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))
            >>> state, metrics = step(step.init(ltfunc.get_params(m)), None, batch, 0.1)
            >>> state.iteration, sorted(metrics)
            (1, ['accuracy', 'loss'])
        """
        fs = self._pack(state)
        iteration = check_int("train_step", "state.iteration", state.iteration, 0)
        fs, metrics = self._flat_step(fs, mask, batch, lr)
        return self._unpack(fs, iteration + 1), metrics

    # Internal flat path ------------------------------------------------------------------------
    def _pack(self, state: TrainState, *, func: str = "train_step") -> FlatState:
        """``state`` in the flat layout; free for the state this step handed out last.

        Any other state is checked (params, optimizer state, buffers against the model) and
        copied into new flat tensors; the buffers are referenced, not copied. ``func`` names
        the caller in error messages. Raises ``TypeError``/``ValueError`` like the step.
        """
        if not isinstance(state, TrainState):
            raise TypeError(
                f"{func}: state must be a TrainState (from step.init), got {type(state).__name__}"
            )
        last, params, buffers = self._last, state.params, state.buffers
        names = self.layout.names
        if last is not None and handed_out(params, state.opt_state, names, last.params, last.opt_leaves):
            fs = last.flat
            if same_buffers(buffers, last.buffers):
                return fs
            return fs._replace(buffers=self._check_buffers(func, "state.buffers", buffers, fs.params.device))
        first = self._check_params(func, "state.params", params)
        flat = self.layout.flatten(params).detach()
        flat_opt = self._flatten_state(func, state.opt_state, flat)
        return FlatState(flat, flat_opt, self._check_buffers(func, "state.buffers", buffers, first.device))

    def _unpack(self, fs: FlatState, iteration: int) -> TrainState:
        """A :class:`TrainState` of dict views into ``fs`` (no copy), remembered for :meth:`_pack`."""
        params = self.layout.views(fs.params)
        opt_state = _state_views(fs.opt_state, self.layout)
        leaves = optree.tree_leaves(opt_state, none_is_leaf=True)
        self._last = _Given(tuple(params.values()), leaves, tuple(fs.buffers.items()), fs)
        return TrainState(params, opt_state, iteration, fs.buffers)

    def _flat_step(
        self, fs: FlatState, mask: Mask | None, batch: Batch, lr: float | Tensor, *, func: str = "train_step"
    ) -> tuple[FlatState, Metrics]:
        """One masked step on a :class:`FlatState` from :meth:`_pack` or a previous call.

        ``fs`` is trusted (only its params tensor is checked); the mask, the batch and the lr
        are checked as for the step, cheaply (the mask once per object, the lr once per value).
        """
        if not isinstance(fs, FlatState):
            raise TypeError(f"{func}: state must be a FlatState, got {type(fs).__name__}")
        flat = fs.params
        if not isinstance(flat, Tensor) or flat.shape != (self.layout.numel,) or not flat.is_floating_point():
            raise ValueError(
                f"{func}: state.params must be a 1-D float tensor of {self.layout.numel} elements "
                "(from step._pack)"
            )
        flat_mask = self._flat_mask(func, mask, flat)
        x, y = self._check_batch(func, batch, flat)
        lr_t = self._lr_tensor(func, lr, flat)
        if self._cma_modules and self.compiled:
            self._check_traceable(func)
        produced = self._produced
        if produced is None or produced[0] is not flat or produced[1] is not flat_mask:
            flat = flat * flat_mask  # params from elsewhere, or a new mask: prune them once
        new_flat, new_opt, loss, accuracy, new_bufs = self._fn(
            flat, fs.opt_state, flat_mask, x, y, lr_t, fs.buffers
        )
        self._produced = (new_flat, flat_mask)
        if self._example_shape is None:
            self._example_shape = tuple(x.shape[1:])
        return FlatState(new_flat, new_opt, new_bufs), {"loss": loss, "accuracy": accuracy}

    # Checks -------------------------------------------------------------------------------------
    def _check_params(self, func: str, name: str, params: Any) -> Tensor:
        """Check params against the model (keys, shapes, float, one dtype and device); return the first."""
        if not isinstance(params, Mapping):
            raise TypeError(
                f"{func}: {name} must be a dict of float tensors keyed like the model's parameters, "
                f"got {type(params).__name__}"
            )
        names = self.layout.names
        if len(params) != len(names) or any(n not in params for n in names):
            missing = [n for n in names if n not in params]
            extra = [k for k in params if k not in names]
            raise ValueError(
                f"{func}: {name} keys do not match the model's parameters: missing {missing}, "
                f"unexpected {extra}"
            )
        first = params[names[0]]
        for n, shape in zip(names, self.layout.shapes, strict=True):
            t = params[n]
            if not isinstance(t, Tensor) or not t.is_floating_point():
                what = t.dtype if isinstance(t, Tensor) else type(t).__name__
                raise TypeError(f"{func}: {name}[{n!r}] must be a float tensor, got {what}")
            if t.shape != shape:
                raise ValueError(
                    f"{func}: {name}[{n!r}] has shape {tuple(t.shape)}, the model expects {tuple(shape)}"
                )
            if t.dtype != first.dtype or t.device != first.device:
                raise ValueError(
                    f"{func}: all params must share one dtype and device; {name}[{n!r}] is "
                    f"{t.dtype} on {t.device}, {name}[{names[0]!r}] is {first.dtype} on {first.device}"
                )
        return first

    def _flatten_state(self, func: str, opt_state: Any, flat: Tensor) -> OptState:
        spec = optree.tree_structure(opt_state, none_is_leaf=True)
        if self._state_spec is None:
            self._state_spec = optree.tree_structure(
                self.optimizer.init(self.layout.views(flat)), none_is_leaf=True
            )
        if spec != self._state_spec:
            raise TypeError(
                f"{func}: state.opt_state does not have the structure of this step's optimizer state "
                f"({self.optimizer.name}): expected {self._state_spec}, got {spec}; "
                "use step.init(params), or optimizer.init(params) with the step's optimizer"
            )
        return flatten_state(func, opt_state, self.layout, flat)

    def _check_buffers(self, func: str, name: str, buffers: Any, device: torch.device) -> Buffers:
        """A new dict of ``buffers`` (in the model's order) after checking them against the model's."""
        if not isinstance(buffers, Mapping):
            raise TypeError(
                f"{func}: {name} must be a dict of tensors (ltfunc.get_buffers(model); {{}} for models "
                f"without buffers), got {type(buffers).__name__}"
            )
        specs = self._buffer_specs
        if len(buffers) != len(specs) or any(k not in buffers for k in specs):
            missing = [k for k in specs if k not in buffers]
            extra = [k for k in buffers if k not in specs]
            hint = " (step.init(params) fills them in: ltfunc.get_buffers(model))" if missing else ""
            raise ValueError(
                f"{func}: {name} keys do not match the model's buffers: missing {missing}, "
                f"unexpected {extra}{hint}"
            )
        for k, (shape, dtype) in specs.items():
            b = buffers[k]
            if not isinstance(b, Tensor):
                raise TypeError(f"{func}: {name}[{k!r}] must be a tensor, got {type(b).__name__}")
            if b.shape != shape or b.dtype != dtype:
                raise ValueError(
                    f"{func}: {name}[{k!r}] is {b.dtype} with shape {tuple(b.shape)}, the model has "
                    f"{dtype} with shape {tuple(shape)}"
                )
            if b.device != device:
                raise ValueError(f"{func}: {name}[{k!r}] is on {b.device} but params are on {device}")
        return {k: buffers[k] for k in specs}

    def _check_traceable(self, func: str) -> None:
        cumulative = [name or "(the model)" for name, m in self._cma_modules if m.training]
        if cumulative:
            raise ValueError(
                f"{func}: normalization layers {cumulative} have momentum=None (a cumulative average of "
                "the batch statistics), which torch.compile cannot trace in training mode (it reads "
                "num_batches_tracked on the host); make the step with compile=False or give them a "
                "numeric momentum"
            )

    def _flat_mask(self, func: str, mask: Any, flat: Tensor) -> Tensor:
        for cached, device, dtype, flat_mask in self._masks:
            if cached is mask and device == flat.device and dtype == flat.dtype:
                # The flat copy is cached by identity: a mask edited in place must not keep
                # training under its old values (a few int reads per step).
                _masks._check_unmodified(func, mask)
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
        if not x.is_floating_point():
            # ltfunc's own pipeline never gets here: batches() normalizes uint8 CIFAR pixels
            raise TypeError(
                f"{func}: batch x has dtype {x.dtype}; the step needs floating-point inputs. "
                f"Normalize/convert them first (e.g. x.to({flat.dtype}) / 255, or load the data "
                "with ltfunc.load_dataset and iterate ltfunc.batches)"
            )
        if x.dtype != flat.dtype:
            raise ValueError(f"{func}: batch x has dtype {x.dtype} but params are {flat.dtype}")
        if self._example_shape is not None and tuple(x.shape[1:]) != self._example_shape:
            raise ValueError(
                f"{func}: batch x has per-example shape {tuple(x.shape[1:])}, but this step was "
                f"first used with {self._example_shape}"
            )
        return x, y

    def _lr_tensor(self, func: str, lr: Any, flat: Tensor) -> Tensor:
        cached = self._lr
        if isinstance(lr, Tensor):
            if lr.dim() != 0 or not lr.is_floating_point():
                raise ValueError(
                    f"{func}: lr must be a float or a 0-d float tensor, got {lr.dtype} {tuple(lr.shape)}"
                )
            if lr.device != flat.device:
                raise ValueError(f"{func}: lr is on {lr.device} but params are on {flat.device}")
            if cached is None or cached[0] is not lr:
                if lr.device.type == "cpu":  # reading a CPU value is not a device sync
                    check_lr(func, lr)
                self._lr = (lr, lr.device, None)
            return lr if lr.dtype == torch.float32 else lr.to(torch.float32)
        if isinstance(lr, bool) or not isinstance(lr, (int, float)):
            raise TypeError(
                f"{func}: lr must be a float or a 0-d float tensor, got {type(lr).__name__} {lr!r}"
            )
        if cached is not None and cached[2] is not None and cached[0] == lr and cached[1] == flat.device:
            return cached[2]
        value = check_lr(func, lr)
        tensor = torch.tensor(value, dtype=torch.float32, device=flat.device)
        self._lr = (value, flat.device, tensor)
        return tensor


def make_train_step(
    model: nn.Module,
    optimizer: Optimizer,
    loss_fn: LossFn = F.cross_entropy,
    *,
    compile: bool = True,
    grad_reduce: Callable[[Tensor], Tensor] | None = None,
) -> TrainStep:
    """Make the masked training step ``state, metrics = step(state, mask, (x, y), lr)``.

    The step returns a new :class:`TrainState` (params with pruned weights exactly 0, the new
    optimizer state, ``iteration + 1``, the updated buffers) and ``{"loss", "accuracy"}`` of
    the batch before the update as 0-d tensors on the device (nothing is synchronized with
    the host). ``mask=None`` trains densely. Params, buffers, batch and lr must be on one
    device; the computation runs there (CPU or CUDA). Inputs are never modified. Make the
    first state with :meth:`TrainStep.init`.

    Make one step per model/optimizer/loss and reuse it: changing the mask, the learning
    rate (float or 0-d tensor), the buffers' values or resetting the optimizer state does
    not recompile (switching the model between train and eval mode does, once per mode).

    Buffers (BatchNorm running statistics, ``num_batches_tracked``) travel in the state: the
    forward pass reads ``state.buffers`` and the new state holds what a BatchNorm layer in
    training mode would have written into its running statistics (same values as an
    ``nn.Module`` step); in eval mode they come back unchanged. Pass them on to
    :func:`ltfunc.evaluation.evaluate` (which runs the model in eval mode, i.e. on those
    statistics). Default masks (:func:`ltfunc.masks.ones`) never cover normalization
    parameters. BatchNorm with ``momentum=None`` (cumulative average) trains only with
    ``compile=False``.

    Args:
        model: Defines the computation; its own parameters and buffers are not used or
            changed (its buffers' keys, shapes and dtypes are what ``state.buffers`` must
            have). It runs in whatever train/eval mode it is in.
        optimizer: A functional optimizer (:mod:`ltfunc.optim`).
        loss_fn: ``loss_fn(logits, y) -> scalar`` (a batch mean); default cross-entropy.
        compile: ``torch.compile`` the step (default, ``fullgraph=True``). ``False`` runs the
            same function eagerly (same results up to float rounding; for debugging).
        grad_reduce: Data-parallel training: ``grad_reduce(t) -> t'``, the mean of a 1-D tensor
            across processes (e.g. :meth:`ltfunc.distributed.DataParallel.mean`; traceable when
            compiled), applied once per step to the gradients, loss and accuracy concatenated,
            before the mask and the update. ``None`` (default): one process.

    Returns:
        A :class:`TrainStep`.

    Raises:
        TypeError: ``model`` not a module, ``optimizer`` not an :class:`Optimizer`,
            ``loss_fn`` or ``grad_reduce`` not callable, ``compile`` not a bool.
        ValueError: A model without parameters.

    Calling the step raises (before any computation) ``TypeError``/``ValueError`` for a
    state that is not a :class:`TrainState`, params that are not a dict of float tensors
    matching the model (keys, shapes, one dtype and device), buffers that do not match the
    model's (keys, shapes, dtypes, device), an optimizer state of another structure, a mask
    that is not a :class:`~ltfunc.masks.Mask` or does not fit (keys, shapes, device), a
    batch that is not an ``(x, y)`` pair on the params' device with int64 labels, a negative
    or non-finite lr, or BatchNorm with ``momentum=None`` in training mode under compile.

    Example:
        >>> import torch, ltfunc
        >>> model = ltfunc.models.lenet300(seed=0)
        >>> opt = ltfunc.optim.adam(lr=1e-3)
        >>> step = ltfunc.make_train_step(model, opt, compile=False)
        >>> params = ltfunc.get_params(model)
        >>> mask = ltfunc.prune.magnitude(params, ltfunc.masks.ones(params), rate=0.5)
        >>> batch = (torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,)))
        >>> state, metrics = step(step.init(params), mask, batch, 1e-3)
        >>> p = state.params
        >>> bool((p["fc1.weight"][~mask["fc1.weight"]] == 0).all()), metrics["loss"].shape
        (True, torch.Size([]))

        With BatchNorm in training mode the state carries the running statistics:

        >>> bn_net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
        >>> bn_step = ltfunc.make_train_step(bn_net, ltfunc.optim.sgd(lr=0.1), compile=False)
        >>> xy = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
        >>> state, _ = bn_step(bn_step.init(ltfunc.get_params(bn_net)), None, xy, 0.1)
        >>> int(state.buffers["1.num_batches_tracked"]), int(bn_net[1].num_batches_tracked)
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
    check_callable(func, "loss_fn", loss_fn, "callable(logits, y) -> loss")
    check_bool(func, "compile", compile)
    check_callable(func, "grad_reduce", grad_reduce, "callable(tensor) -> tensor", optional=True)
    if not any(True for _ in model.parameters()):
        raise ValueError(f"{func}: {type(model).__name__} has no parameters to train")
    return TrainStep(model, optimizer, loss_fn, compile=compile, grad_reduce=grad_reduce)


def _reduce_grads(
    reduce: Callable[[Tensor], Tensor], layout: FlatLayout, grads: Params, loss: Tensor, accuracy: Tensor
) -> tuple[Params, Tensor, Tensor]:
    """``reduce`` (a mean across processes) of the gradients, loss and accuracy as one flat tensor."""
    parts = [grads[n].reshape(-1) for n in layout.names]
    flat = reduce(torch.cat([*parts, loss.detach().reshape(1), accuracy.reshape(1).to(loss.dtype)]))
    n = layout.numel
    return layout.views(flat[:n]), flat[n], flat[n + 1]
