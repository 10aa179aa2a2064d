"""K independent training runs ("members") in one ``torch.func.vmap``'ed, optionally compiled step.

::

    vstep = make_members_step(model, optimizer)                  # a MembersStep
    states = vstep.init([params_0, params_1, params_2])          # stacked TrainState, K = 3
    states, metrics = vstep(states, masks, (x, y), lr)           # x: (K, B, ...), y: (K, B)
    member = unstack_state(states, 1)                            # member 1's own TrainState

Stacked state. A stacked :class:`~ltfunc.step.TrainState` holds every member's params,
optimizer state and buffers with a leading dimension ``K`` (``params["fc1.weight"]`` has
shape ``(K, 300, 784)``, Adam's ``count`` shape ``(K,)``); ``iteration`` is one python int
shared by all members. :func:`stack` / :func:`unstack` turn a list of pytrees into one
stacked pytree and back (like ``torch.func.stack_module_state``, for any optree pytree:
params dicts, optimizer states, buffers, masks); :func:`stack_states` /
:func:`unstack_state` do it for whole train states.

Same numbers as one run. The step vmaps the very function that
:func:`ltfunc.make_train_step` runs for one member (``ltfunc.step.TrainStep``'s pure core, on
the flat layout of :mod:`ltfunc._flat`; a single member runs it without ``vmap``): each
member's loss, masked gradients, optimizer update (any :mod:`ltfunc.optim` optimizer: its
``update`` is a pure function over dict pytrees) and BatchNorm statistics are those of
training it alone with ``make_train_step`` on the same batches, up to float rounding of the
batched kernels.

Per member: a mask (a list of K masks, one mask shared by all, or a stacked mask), a batch
(``(K, B, ...)`` inputs, so each member keeps its own data order; or one batch shared by all
with ``shared_batch=True``) and a learning rate (a float, or a ``(K,)`` tensor). Masks,
learning rates and optimizer states are tensor inputs: new masks and lr values never
recompile (``num_compiles``).

Memory. :meth:`MembersStep.init` estimates what K members need
(:meth:`MembersStep.estimate_memory`: stacked params, optimizer states, buffers, masks and
gradients, and with ``batch_shape=`` one batch's activations per member) and refuses more
members than the device's available memory holds, saying how many fit. Whole rounds of K
members: :func:`ltfunc.members_train.train_members_round`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import optree
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _members_memory as _memory
from . import masks as _masks
from ._checks import check_bool, check_callable, check_int, check_lr
from ._flat import (
    FLAT_KEY,
    FlatLayout,
    _is_param_dict,
    _state_views,
    compile_step,
    handed_out,
    same_buffers,
)
from ._types import Batch, Buffers, LossFn
from .masks import Mask
from .optim import Optimizer, OptState
from .stacking import _check_stackable, stack, stack_states, unstack, unstack_state
from .step import TrainState, TrainStep

__all__ = ["MembersStep", "make_members_step", "stack", "stack_states", "unstack", "unstack_state"]

MembersMetrics = dict[str, Tensor]
"""``{"loss": (K,) tensor, "accuracy": (K,) tensor}`` of one step (on the device)."""


class _Flat(NamedTuple):
    """A stacked state in the flat layout: ``(K, N)`` params, flat-form optimizer state, buffers."""

    params: Tensor
    opt_state: OptState
    buffers: Buffers


class _Given(NamedTuple):
    params: tuple[Tensor, ...]
    opt_leaves: list[Any]
    buffers: tuple[tuple[str, Tensor], ...]
    flat: _Flat


class MembersStep:
    """The vmapped step of :func:`make_members_step`: ``states, metrics = vstep(states, masks, batches, lr)``.

    Attributes:
        model: The module that defines the computation (its own tensors are not used).
        optimizer: The functional optimizer every member uses.
        loss_fn: The batch-mean loss.
        compiled: Whether the vmapped step is ``torch.compile``'d.
        shared_batch: Whether all members train on one shared batch.
        layout: Where each parameter lives in a member's flat row (``ltfunc._flat.FlatLayout``).

    Example:
        >>> import ltfunc
        >>> vstep = make_members_step(ltfunc.models.lenet300(), ltfunc.optim.sgd())
        >>> vstep
        MembersStep(LeNet300, optimizer='sgd', eager, per-member batches, 6 tensors / 266610 weights)
    """

    def __init__(
        self, model: nn.Module, optimizer: Optimizer, loss_fn: LossFn, *, compile: bool, shared_batch: bool
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.compiled = compile
        self.shared_batch = shared_batch
        # One member's step, eager: its pure core is what is vmapped, its checks are reused.
        self._one = TrainStep(model, optimizer, loss_fn, compile=False)
        self.layout: FlatLayout = self._one.layout
        core = self._one._make_core()
        xdim = None if shared_batch else 0
        vcore = torch.func.vmap(core, in_dims=(0, 0, 0, xdim, xdim, 0, 0))

        def members_step(
            flat: Tensor,
            opt_state: OptState,
            flat_mask: Tensor,
            x: Tensor,
            y: Tensor,
            lr: Tensor,
            buffers: Buffers,
        ) -> Any:
            if flat.shape[0] > 1:
                return vcore(flat, opt_state, flat_mask, x, y, lr, buffers)
            # One member: its step as it is (a size-1 vmap only adds batching overhead).
            xy = (x, y) if shared_batch else (x[0], y[0])
            bufs = {n: b[0] for n, b in buffers.items()}
            out = core(flat[0], optree.tree_map(lambda t: t[0], opt_state), flat_mask[0], *xy, lr[0], bufs)
            return optree.tree_map(lambda t: t.unsqueeze(0), out)

        self._compiles = [0]
        self._fn: Callable[..., Any] = compile_step(members_step, self._compiles) if compile else members_step
        self._masks: tuple[tuple[Any, ...], int, torch.dtype, torch.device, Tensor] | None = None
        self._lr: tuple[Any, int, torch.device, Tensor] | None = None
        self._produced: tuple[Tensor, Tensor] | None = None
        self._last: _Given | None = None
        self._member_bytes: dict[tuple[torch.dtype, tuple[int, ...] | None], tuple[int, int]] = {}

    @property
    def num_compiles(self) -> int:
        """How many graphs ``torch.compile`` has built for this step (0 when eager)."""
        return self._compiles[0]

    def __repr__(self) -> str:
        mode = "compiled" if self.compiled else "eager"
        batch = "shared batch" if self.shared_batch else "per-member batches"
        return (
            f"MembersStep({type(self.model).__name__}, optimizer={self.optimizer.name!r}, {mode}, {batch}, "
            f"{len(self.layout.names)} tensors / {self.layout.numel} weights)"
        )

    # Public ---------------------------------------------------------------------------------
    def init(
        self,
        params: Sequence[Mapping[str, Tensor]],
        buffers: Sequence[Mapping[str, Tensor]] | None = None,
        *,
        iteration: int = 0,
        batch_shape: Sequence[int] | None = None,
    ) -> TrainState:
        """A stacked :class:`~ltfunc.step.TrainState` of K members with fresh optimizer states.

        Before stacking, the memory the K members need (:meth:`estimate_memory`) is compared
        with what is available on the params' device: free GPU memory on CUDA, ``MemAvailable``
        of ``/proc/meminfo`` on the CPU (no check where neither can be read); too many members
        are refused with the number that fits.

        Args:
            params: K >= 1 params pytrees (each keyed like the model's parameters; one dtype
                and device for all).
            buffers: K buffer pytrees, or ``None``: copies of the model's own buffers for
                every member (``{}`` for models without buffers).
            iteration: The (shared) iteration count to start from.
            batch_shape: One member's input batch shape ``(B, ...)``, to count the
                activations in the memory check; ``None``: params, optimizer state, buffers,
                masks and gradients only.

        Returns:
            ``TrainState(stacked params, stacked optimizer.init states, iteration, stacked
            buffers)``; every tensor has a leading dimension K (copies of the inputs).

        Raises:
            TypeError: ``params`` / ``buffers`` not lists of dicts of tensors.
            ValueError: K < 1, a member that does not match the model or does not stack
                with member 0 (the message names the member index and the key), a
                ``buffers`` list of another length; more members than fit in the device's
                available memory (the message says how many fit).

        Example:
            >>> import ltfunc
            >>> vstep = make_members_step(ltfunc.models.lenet300(), ltfunc.optim.adam())
            >>> ps = [ltfunc.get_params(ltfunc.models.lenet300(seed=s)) for s in range(3)]
            >>> states = vstep.init(ps)
            >>> states.params["fc1.weight"].shape, states.opt_state.count.shape, states.iteration
            (torch.Size([3, 300, 784]), torch.Size([3]), 0)
        """
        func = "members.init"
        check_int(func, "iteration", iteration, 0)
        if isinstance(params, Mapping) or not isinstance(params, Sequence):
            raise TypeError(
                f"{func}: params must be a list of params dicts (one per member), got {type(params).__name__}"
            )
        if len(params) < 1:
            raise ValueError(f"{func}: params must hold at least one member (K >= 1), got an empty list")
        _check_stackable(func, "params", [dict(p) if isinstance(p, Mapping) else p for p in params])
        firsts = [self._one._check_params(func, f"params[{i}]", p) for i, p in enumerate(params)]
        first = firsts[0]
        k = len(params)
        if buffers is None:
            model_bufs = {n: b.to(first.device) for n, b in self.model.named_buffers()}
            bufs = [model_bufs] * k
        else:
            if isinstance(buffers, Mapping) or not isinstance(buffers, Sequence) or len(buffers) != k:
                raise ValueError(
                    f"{func}: buffers must be None or a list of {k} buffer dicts (one per member)"
                )
            bufs = [
                self._one._check_buffers(func, f"buffers[{i}]", b, first.device)
                for i, b in enumerate(buffers)
            ]
        self._check_memory(func, k, first.dtype, first.device, _memory.check_batch_shape(func, batch_shape))
        plist = [dict(p) for p in params]
        opt = stack([self.optimizer.init(p) for p in plist], name="opt_states", func=func)
        return TrainState(
            stack(plist, name="params", func=func), opt, iteration, stack(bufs, name="buffers", func=func)
        )

    def __call__(
        self, states: TrainState, masks: Any, batches: Batch, lr: float | Tensor
    ) -> tuple[TrainState, MembersMetrics]:
        """One masked step of every member: ``(new_states, metrics)``.

        Args:
            states: A stacked state from :meth:`init`, :func:`stack_states` or a previous call
                (a returned state costs nothing to feed back; any other is checked and
                flattened once).
            masks: One mask per member: a list of K :class:`~ltfunc.masks.Mask` (or ``None``
                = dense) with the same keys; one Mask (or ``None``) shared by all; or a
                stacked Mask (:func:`stack` of K masks, ``(K, *shape)`` tensors).
            batches: ``(x, y)``: ``x`` of shape ``(K, B, ...)``, ``y`` int64 ``(K, B)``
                (``(B, ...)`` and ``(B,)`` with ``shared_batch=True``), on the params' device.
            lr: A float (every member) or a float tensor of shape ``()`` or ``(K,)``
                (per-member learning rates).

        Returns:
            The new stacked state (``iteration + 1``; params and optimizer state are views
            into the step's stacked flat buffers) and ``{"loss", "accuracy"}``, ``(K,)``
            tensors of each member's batch before the update.

        Raises:
            TypeError, ValueError: Bad input, before any computation (states, masks, batch
                or lr of the wrong type, shape, K or device; masks that do not stack or do
                not fit the model, naming the member index and key; a negative lr).

        Example:
            >>> import torch, ltfunc
            >>> m = ltfunc.models.lenet300(seed=0)
            >>> vstep = make_members_step(m, ltfunc.optim.sgd(lr=0.1))
            >>> states = vstep.init([ltfunc.get_params(m)] * 2)
            >>> xy = (torch.randn(2, 8, 1, 28, 28), torch.randint(0, 10, (2, 8)))
            >>> states, metrics = vstep(states, None, xy, torch.tensor([0.1, 0.05]))
            >>> states.iteration, metrics["loss"].shape
            (1, torch.Size([2]))
        """
        func = "members_step"
        fs, _ = self._pack(func, states)
        iteration = check_int(func, "states.iteration", states.iteration, 0)
        fs, metrics = self._flat_step(func, fs, masks, batches, lr)
        return self._unpack(fs, iteration + 1), metrics

    def _flat_step(
        self, func: str, fs: _Flat, masks: Any, batches: Batch, lr: float | Tensor
    ) -> tuple[_Flat, MembersMetrics]:
        """One step on a flat stacked state from :meth:`_pack` or a previous call (all inputs checked
        first; the mask and lr checks are cached by identity)."""
        k = fs.params.shape[0]
        flat_mask = self._flat_mask(func, masks, fs.params)
        x, y = self._check_batch(func, batches, fs.params)
        lr_t = self._lr_tensor(func, lr, k, fs.params.device)
        if self._one._cma_modules and self.compiled:
            self._one._check_traceable(func)
        flat = fs.params
        produced = self._produced
        if produced is None or produced[0] is not flat or produced[1] is not flat_mask:
            flat = flat * flat_mask
        new_flat, new_opt, loss, acc, new_bufs = self._fn(
            flat, fs.opt_state, flat_mask, x, y, lr_t, fs.buffers
        )
        self._produced = (new_flat, flat_mask)
        return _Flat(new_flat, new_opt, new_bufs), {"loss": loss, "accuracy": acc}

    def estimate_memory(
        self, k: int, *, batch_shape: Sequence[int] | None = None, dtype: torch.dtype = torch.float32
    ) -> int:
        """An estimate of the bytes one step of K members needs (what :meth:`init` checks).

        Per member: params, optimizer state and buffers twice (a step's new ones exist next
        to its inputs), the flat mask and the gradients (one value per weight each); with
        ``batch_shape``, also the activations: twice the bytes of every operation output
        (views and in-place results not counted) of the model's forward pass over one
        ``(B, ...)`` batch (kept for the backward pass, plus their gradients), and the batch.
        The forward pass is traced once on the meta device (no memory, no computation); a
        model that cannot run there counts no activations. Compiled kernels fuse and free
        intermediate results, so this errs on the high side.

        Args:
            k: Number of members (``>= 1``).
            batch_shape: One member's input batch shape ``(B, ...)``, or ``None``.
            dtype: The params' floating-point dtype.

        Returns:
            Bytes, an int.

        Raises:
            TypeError, ValueError: ``k`` not an int ``>= 1``, a ``batch_shape`` that is not
                a tuple of ints ``>= 1``, a ``dtype`` that is not a floating-point dtype.

        Example:
            >>> import ltfunc
            >>> vstep = make_members_step(ltfunc.models.lenet300(), ltfunc.optim.sgd())
            >>> vstep.estimate_memory(2)  # SGD: params x 2, mask, grads (+ the step counters)
            8531552
            >>> round(vstep.estimate_memory(2, batch_shape=(60, 1, 28, 28)) / 2**20, 1)  # MiB
            9.2
        """
        func = "estimate_memory"
        check_int(func, "k", k, 1)
        shape = _memory.check_batch_shape(func, batch_shape)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"{func}: dtype must be a floating-point torch.dtype, got {dtype!r}")
        state, acts = self._per_member(dtype, shape)
        return k * (state + acts)

    def _per_member(self, dtype: torch.dtype, batch_shape: tuple[int, ...] | None) -> tuple[int, int]:
        """(state bytes, activation bytes) of one member, cached; see :meth:`estimate_memory`."""
        key = (dtype, batch_shape)
        if key not in self._member_bytes:
            self._member_bytes[key] = _memory.member_bytes(
                self.model, self.optimizer, self.layout, self._one._buffer_specs, dtype, batch_shape
            )
        return self._member_bytes[key]

    def _check_memory(
        self, func: str, k: int, dtype: torch.dtype, device: torch.device, batch_shape: tuple[int, ...] | None
    ) -> None:
        """Refuse K members whose estimated memory exceeds what ``device`` has available."""
        _memory.check_memory(func, k, self._per_member(dtype, batch_shape), device, batch_shape)

    # Flat form ------------------------------------------------------------------------------
    def _flatten(self, tree: Mapping[str, Tensor], k: int) -> Tensor:
        return torch.cat([tree[n].reshape(k, -1) for n in self.layout.names], 1)

    def _pack(self, func: str, states: Any) -> tuple[_Flat, int]:
        if not isinstance(states, TrainState):
            raise TypeError(
                f"{func}: states must be a stacked TrainState (from vstep.init), got {type(states).__name__}"
            )
        last, params, buffers = self._last, states.params, states.buffers
        names = self.layout.names
        if (
            last is not None
            and handed_out(params, states.opt_state, names, last.params, last.opt_leaves)
            and same_buffers(buffers, last.buffers)
        ):
            return last.flat, last.flat.params.shape[0]
        first = self._check_stacked_params(func, params)
        k = first.shape[0]
        flat = self._flatten(params, k).detach()
        opt = self._flatten_state(func, states.opt_state, k, flat)
        bufs = self._check_stacked_buffers(func, buffers, k, flat.device)
        return _Flat(flat, opt, bufs), k

    def _unpack(self, fs: _Flat, iteration: int) -> TrainState:
        params = self.layout.views(fs.params)
        opt = _state_views(fs.opt_state, self.layout)
        leaves = optree.tree_leaves(opt, none_is_leaf=True)
        self._last = _Given(tuple(params.values()), leaves, tuple(fs.buffers.items()), fs)
        return TrainState(params, opt, iteration, fs.buffers)

    # Checks ---------------------------------------------------------------------------------
    def _check_stacked_params(self, func: str, params: Any) -> Tensor:
        if not isinstance(params, Mapping):
            raise TypeError(
                f"{func}: states.params must be a dict of stacked tensors, got {type(params).__name__}"
            )
        lay = self.layout
        missing = [n for n in lay.names if n not in params]
        extra = [n for n in params if n not in lay.names]
        if missing or extra:
            raise ValueError(
                f"{func}: states.params keys do not match the model's parameters: missing {missing}, "
                f"unexpected {extra}"
            )
        first = params[lay.names[0]]
        if not isinstance(first, Tensor) or first.dim() < 1:
            raise TypeError(f"{func}: states.params[{lay.names[0]!r}] must be a stacked float tensor")
        k = first.shape[0]
        if k < 1:
            raise ValueError(f"{func}: states hold no members (K = 0); K must be >= 1")
        for n, shape in zip(lay.names, lay.shapes, strict=True):
            t = params[n]
            if not isinstance(t, Tensor) or not t.is_floating_point():
                raise TypeError(f"{func}: states.params[{n!r}] must be a float tensor")
            if tuple(t.shape) != (k, *shape):
                raise ValueError(
                    f"{func}: states.params[{n!r}] has shape {tuple(t.shape)}, expected {(k, *shape)} "
                    f"(K = {k} members of {tuple(shape)})"
                )
            if t.dtype != first.dtype or t.device != first.device:
                raise ValueError(
                    f"{func}: all params must share one dtype and device; {n!r} is {t.dtype} on {t.device}"
                )
        return first

    def _flatten_state(self, func: str, opt_state: Any, k: int, flat: Tensor) -> OptState:
        one = self._one
        if one._state_spec is None:
            one._state_spec = optree.tree_structure(
                self.optimizer.init(self.layout.views(flat[0])), none_is_leaf=True
            )
        spec = optree.tree_structure(opt_state, none_is_leaf=True)
        if spec != one._state_spec:
            raise TypeError(
                f"{func}: states.opt_state does not have the structure of this step's optimizer state "
                f"({self.optimizer.name}): expected {one._state_spec}, got {spec}"
            )
        lay = self.layout

        def convert(node: Any) -> Any:
            if _is_param_dict(node, lay.names):
                for n, shape in zip(lay.names, lay.shapes, strict=True):
                    t = node[n]
                    if tuple(t.shape) != (k, *shape) or t.device != flat.device:
                        raise ValueError(
                            f"{func}: states.opt_state tensor for {n!r} has shape {tuple(t.shape)} on "
                            f"{t.device}; expected {(k, *shape)} on {flat.device}"
                        )
                return {FLAT_KEY: self._flatten(node, k).to(flat.dtype)}
            if isinstance(node, Tensor) and (
                node.dim() < 1 or node.shape[0] != k or node.device != flat.device
            ):
                raise ValueError(
                    f"{func}: states.opt_state holds a tensor of shape {tuple(node.shape)} on {node.device}; "
                    f"every optimizer-state tensor needs a leading member dimension {k} on {flat.device}"
                )
            return node

        return optree.tree_map(
            convert,
            opt_state,
            is_leaf=lambda n: _is_param_dict(n, lay.names) or isinstance(n, Tensor),
            none_is_leaf=True,
        )

    def _check_stacked_buffers(self, func: str, buffers: Any, k: int, device: torch.device) -> Buffers:
        specs = self._one._buffer_specs
        if not isinstance(buffers, Mapping):
            raise TypeError(
                f"{func}: states.buffers must be a dict of stacked tensors, got {type(buffers).__name__}"
            )
        missing = [b for b in specs if b not in buffers]
        extra = [b for b in buffers if b not in specs]
        if missing or extra:
            raise ValueError(
                f"{func}: states.buffers keys do not match the model's buffers: missing {missing}, "
                f"unexpected {extra}"
            )
        for name, (shape, dtype) in specs.items():
            b = buffers[name]
            if (
                not isinstance(b, Tensor)
                or tuple(b.shape) != (k, *shape)
                or b.dtype != dtype
                or b.device != device
            ):
                got = (
                    f"{b.dtype} {tuple(b.shape)} on {b.device}" if isinstance(b, Tensor) else type(b).__name__
                )
                raise ValueError(
                    f"{func}: states.buffers[{name!r}] is {got}; expected {dtype} {(k, *shape)} on {device}"
                )
        return {name: buffers[name] for name in specs}

    def _flat_mask(self, func: str, masks: Any, flat: Tensor) -> Tensor:
        k = flat.shape[0]
        key = tuple(masks) if isinstance(masks, (list, tuple)) else (masks,)
        cached = self._masks
        if (
            cached is not None
            and len(cached[0]) == len(key)
            and all(a is b for a, b in zip(cached[0], key, strict=True))
            and cached[1:4] == (k, flat.dtype, flat.device)
        ):
            for m in key:
                if m is not None:
                    _masks._check_unmodified(func, m)
            return cached[4]
        lay = self.layout
        if isinstance(masks, (list, tuple)):
            if len(masks) != k:
                raise ValueError(f"{func}: masks must hold one mask per member (K = {k}), got {len(masks)}")
            for i, m in enumerate(masks):
                if m is not None and not isinstance(m, Mask):
                    raise TypeError(
                        f"{func}: masks[{i}] must be an ltfunc Mask or None, got {type(m).__name__}"
                    )
            given = [m for m in masks if m is not None]
            if given:  # None (dense) members stand in as member 0's keys
                _check_stackable(func, "masks", [given[0] if m is None else m for m in masks])
            rows = [self._one._flat_mask(func, m, flat[0]) for m in masks]
            flat_mask = torch.stack(rows)
        elif masks is None or isinstance(masks, Mask):
            if (
                masks is not None
                and masks
                and all(
                    t.dim() == len(lay.shapes[lay.names.index(n)]) + 1
                    for n, t in masks.items()
                    if n in lay.names
                )
            ):
                flat_mask = self._stacked_mask(func, masks, k, flat)
            else:
                flat_mask = self._one._flat_mask(func, masks, flat[0]).expand(k, -1).contiguous()
        else:
            raise TypeError(
                f"{func}: masks must be a list of K Masks, one Mask, a stacked Mask or None, "
                f"got {type(masks).__name__}"
            )
        self._masks = (key, k, flat.dtype, flat.device, flat_mask)
        return flat_mask

    def _stacked_mask(self, func: str, mask: Mask, k: int, flat: Tensor) -> Tensor:
        lay = self.layout
        for n, t in mask.items():
            if n not in lay.names:
                raise ValueError(f"{func}: masks has key {n!r} that is not a parameter of the model")
            want = (k, *lay.shapes[lay.names.index(n)])
            if tuple(t.shape) != want or t.device != flat.device:
                raise ValueError(
                    f"{func}: stacked masks[{n!r}] has shape {tuple(t.shape)} on {t.device}; expected {want} "
                    f"on {flat.device}"
                )
        _masks._check_unmodified(func, mask)
        parts = [
            mask[n].reshape(k, -1).to(flat.dtype)
            if n in mask
            else torch.ones(k, c, dtype=flat.dtype, device=flat.device)
            for n, c in zip(lay.names, lay.numels, strict=True)
        ]
        return torch.cat(parts, 1)

    def _check_batch(self, func: str, batches: Any, flat: Tensor) -> tuple[Tensor, Tensor]:
        if not isinstance(batches, (tuple, list)) or len(batches) != 2:
            raise TypeError(
                f"{func}: batches must be an (x, y) pair of tensors, got {type(batches).__name__}"
            )
        x, y = batches
        for name, t in (("x", x), ("y", y)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{func}: batch {name} must be a tensor, got {type(t).__name__}")
            if t.device != flat.device:
                raise ValueError(f"{func}: batch {name} is on {t.device} but params are on {flat.device}")
        k = flat.shape[0]
        lead = () if self.shared_batch else (k,)
        what = "(B,)" if self.shared_batch else f"(K={k}, B)"
        if y.dtype != torch.int64 or y.dim() != len(lead) + 1 or tuple(y.shape[: len(lead)]) != lead:
            raise ValueError(
                f"{func}: batch y must be an int64 tensor of shape {what}, got {y.dtype} {tuple(y.shape)}"
            )
        if x.dim() < y.dim() or x.shape[: y.dim()] != y.shape:
            raise ValueError(
                f"{func}: batch x has shape {tuple(x.shape)}, which does not start with y's shape "
                f"{tuple(y.shape)}"
            )
        if x.is_floating_point() and x.dtype != flat.dtype:
            raise ValueError(f"{func}: batch x has dtype {x.dtype} but params are {flat.dtype}")
        return x, y

    def _lr_tensor(self, func: str, lr: Any, k: int, device: torch.device) -> Tensor:
        cached = self._lr
        if cached is not None and cached[1] == k and cached[2] == device and _same_lr(cached[0], lr):
            return cached[3]
        if isinstance(lr, Tensor):
            if not lr.is_floating_point() or lr.shape not in ((), (k,)):
                raise ValueError(
                    f"{func}: lr must be a float tensor of shape () or ({k},), "
                    f"got {lr.dtype} {tuple(lr.shape)}"
                )
            if lr.device != device:
                raise ValueError(f"{func}: lr is on {lr.device} but params are on {device}")
            if lr.device.type == "cpu":
                for i, v in enumerate(lr.reshape(-1).tolist()):
                    check_lr(func, v, name=f"lr[{i}]" if lr.dim() else "lr")
            t = lr.to(torch.float32).expand(k).contiguous()  # strides as for (K,) lrs: no recompile
        else:
            if isinstance(lr, bool) or not isinstance(lr, (int, float)):
                raise TypeError(
                    f"{func}: lr must be a float or a float tensor of shape (K,), got {type(lr).__name__}"
                )
            t = torch.full((k,), check_lr(func, lr), dtype=torch.float32, device=device)
        self._lr = (lr, k, device, t)
        return t


def _same_lr(cached: Any, lr: Any) -> bool:
    """The lr cached last: the same object, or a python number of the same value (a schedule's
    float is a new object every step)."""
    if cached is lr:
        return True
    number = (int, float)
    return (
        isinstance(lr, number)
        and isinstance(cached, number)
        and not isinstance(lr, bool)
        and not isinstance(cached, bool)
        and cached == lr
    )


def make_members_step(
    model: nn.Module,
    optimizer: Optimizer,
    loss_fn: LossFn = F.cross_entropy,
    *,
    compile: bool = False,
    shared_batch: bool = False,
) -> MembersStep:
    """Make the step that trains K members at once: ``states, metrics = vstep(states, masks, batches, lr)``.

    Each member is one independent run (own params, mask, optimizer state, buffers, batch
    stream and learning rate); one call advances all of them with one ``torch.func.vmap``
    of :func:`ltfunc.make_train_step` 's masked step, so each member gets what training it
    alone would give (to float rounding). Make the first state with :meth:`MembersStep.init`
    (or :func:`stack_states`) and take a member out with :func:`unstack_state`.

    Args:
        model: Defines the computation; its own parameters and buffers are not used.
        optimizer: A functional optimizer (:mod:`ltfunc.optim`), used by every member.
        loss_fn: ``loss_fn(logits, y) -> scalar`` batch mean; default cross-entropy.
        compile: ``torch.compile`` the vmapped step (fullgraph, compiled once: new masks,
            lr values and optimizer states do not recompile; a new K or batch shape does).
        shared_batch: All members train on one batch ``(x[B, ...], y[B])`` instead of one
            batch each (``(x[K, B, ...], y[K, B])``).

    Returns:
        A :class:`MembersStep`.

    Raises:
        TypeError: ``model`` not a module, ``optimizer`` not an ``Optimizer``, ``loss_fn``
            not callable, ``compile`` / ``shared_batch`` not bools.
        ValueError: A model without parameters.

    Example:
        >>> import torch, ltfunc
        >>> m = ltfunc.models.lenet300(seed=0)
        >>> vstep = make_members_step(m, ltfunc.optim.adam(lr=1e-3))
        >>> ps = [ltfunc.get_params(ltfunc.models.lenet300(seed=s)) for s in (0, 1)]
        >>> masks = [ltfunc.masks.ones(p) for p in ps]
        >>> xy = (torch.randn(2, 16, 1, 28, 28), torch.randint(0, 10, (2, 16)))
        >>> states, metrics = vstep(vstep.init(ps), masks, xy, 1e-3)
        >>> unstack_state(states, 1).params["fc1.weight"].shape, metrics["accuracy"].shape
        (torch.Size([300, 784]), torch.Size([2]))
    """
    func = "make_members_step"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{func}: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"{func}: optimizer must be an ltfunc.optim.Optimizer, got {type(optimizer).__name__}"
        )
    check_callable(func, "loss_fn", loss_fn, "callable(logits, y) -> loss")
    check_bool(func, "compile", compile)
    check_bool(func, "shared_batch", shared_batch)
    if not any(True for _ in model.parameters()):
        raise ValueError(f"{func}: {type(model).__name__} has no parameters to train")
    return MembersStep(model, optimizer, loss_fn, compile=compile, shared_batch=shared_batch)
