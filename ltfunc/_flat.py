"""The flat layout behind :class:`ltfunc.step.TrainStep` (private).

Inside the step, the parameters, the optimizer's per-parameter state and the mask each live
in one flat 1-D buffer (:class:`FlatLayout`; the mask as floats): the model sees views into
them, the update runs per tensor on views and writes straight into slices of the flat
outputs, and the compiled function has a handful of tensor inputs whatever the model (few
guards, few buffers). This module holds that machinery: the layout, the conversions of
optimizer states between dict form (``{param name: tensor}`` leaves) and flat form
(``{"flat": tensor}`` leaves), :class:`FlatState`, and the compilation of the step (its own
dynamo cache, inductor's C++ wrapper on CPU). Every choice here was measured; see
``bench/README.md`` ("How the step got there").
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Mapping
from itertools import count as _counter
from typing import Any, NamedTuple

import optree
import torch
from torch import Tensor

from ._types import Buffers, Params
from .optim import OptState

__all__ = ["FLAT_KEY", "FlatLayout", "FlatState", "compile_step", "flatten_state", "unique_tag"]

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
        >>> layout.views(torch.zeros(4, 9))["w"].shape  # 4 stacked members
        torch.Size([4, 2, 3])
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
        """``{name: view into flat}`` (no copy); a ``(K, numel)`` flat (K stacked members) gives
        ``(K, *shape)`` views."""
        if flat.dim() == 2:
            return self._stacked_views(flat)
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

    def _stacked_views(self, flat: Tensor) -> Params:
        k = flat.shape[0]
        if torch.compiler.is_compiling() or flat.stride(1) != 1:
            return {
                n: flat[:, o : o + c].view(k, *s)
                for n, o, c, s in zip(self.names, self.offsets, self.numels, self.shapes, strict=True)
            }
        base, row = flat.storage_offset(), flat.stride(0)
        return {
            n: flat.as_strided((k, *s), (row, *st), base + o)
            for n, o, s, st in zip(self.names, self.offsets, self.shapes, self.strides, strict=True)
        }

    def flatten(self, tree: Mapping[str, Tensor]) -> Tensor:
        """A new flat tensor holding ``tree``'s tensors in layout order (a copy)."""
        return torch.cat([tree[n].reshape(-1) for n in self.names])


class FlatState(NamedTuple):
    """Params, optimizer state and buffers in a step's flat layout (its internal fast path).

    Made by ``TrainStep._pack``, advanced by ``TrainStep._flat_step``, turned back into a
    :class:`ltfunc.step.TrainState` (dict views, no copy) by ``TrainStep._unpack``.
    """

    params: Tensor
    """All parameters in one 1-D tensor (see :class:`FlatLayout`)."""
    opt_state: OptState
    """The optimizer's state for the one-leaf tree ``{"flat": params}``."""
    buffers: Buffers
    """The model's buffers (BatchNorm running statistics), read and returned updated by every
    step; ``{}`` for models without buffers."""


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
    # with an is_leaf callback, which matters on the per-step path of the public call.
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


def flatten_state(func: str, opt_state: OptState, layout: FlatLayout, flat: Tensor) -> OptState:
    """Check a dict-form optimizer state against ``layout`` / ``flat`` and flatten it (a copy).

    The structure was checked by the caller; this checks every per-parameter tensor's shape
    and device (and any other tensor's device) and converts the per-parameter dicts to
    ``{"flat": t}`` leaves of ``flat``'s dtype.

    Raises:
        ValueError: A tensor of the wrong shape or on another device than ``flat``.
    """
    names = layout.names

    def convert(node: Any) -> Any:
        if _is_param_dict(node, names):
            for n, shape in zip(names, layout.shapes, strict=True):
                t = node[n]
                if t.shape != shape or t.device != flat.device:
                    raise ValueError(
                        f"{func}: opt_state tensor for {n!r} has shape {tuple(t.shape)} on "
                        f"{t.device}; expected {tuple(shape)} on {flat.device}"
                    )
            return {FLAT_KEY: layout.flatten(node).to(flat.dtype)}
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


def unique_tag(prefix: str) -> str:
    """``prefix`` and a process-wide counter: the tag of one compiled function's own code object."""
    return f"{prefix}{next(_STEP_IDS)}"


# Guards dynamo installs on the code it traced through (functions, modules, classes and
# constants reached from module globals): they cannot change while a step exists unless
# someone monkeypatches torch or ltfunc, which a compiled step does not follow (as with
# ``jax.jit``). Evaluating them on every call cost about 20 µs per step.
_CODE_GUARDS = frozenset(
    {
        "BUILTIN_MATCH",
        "CLASS_MATCH",
        "CLOSURE_MATCH",
        "CONSTANT_MATCH",
        "EQUALS_MATCH",
        "FUNCTION_MATCH",
        "ID_MATCH",
        "MODULE_MATCH",
        "SEQUENCE_LENGTH",
        "TYPE_MATCH",
    }
)


def _guard_filter(constants: tuple[str, ...]) -> Callable[[list[Any]], list[bool]]:
    """Dynamo's ``guard_filter_fn``: drop the guards on traced code and on ``constants``.

    ``constants`` name closure variables of the compiled function that are immutable for the
    step's life (its layout, parameter names, optimizer); guards on them are dropped too.
    Kept: every guard on the inputs (tensor metadata, dict keys, aliasing), on the model
    (``training``, hooks), on global state (grad mode, autocast, functorch) and on torch's
    global module hooks.
    """
    prefixes = tuple(c + sep for c in constants for sep in (".", "["))

    def keep(entries: list[Any]) -> list[bool]:
        return [
            not (
                (e.is_global and e.guard_type in _CODE_GUARDS and "_global_" not in e.name)
                or e.name in constants
                or e.name.startswith(prefixes)
            )
            for e in entries
        ]

    return keep


def compile_step(
    fn: Callable[..., Any], counter: list[int], *, constants: tuple[str, ...] = ()
) -> Callable[..., Any]:
    """``torch.compile`` a step core with its own dynamo cache, counting compilations in ``counter[0]``.

    ``fullgraph=True``, ``dynamic=False``, inductor; on CPU with inductor's C++ wrapper, which
    calls the kernels without the generated Python function's per-kernel overhead (about
    40 µs, 4%, per LeNet-300-100 step). Guards on traced code and on the immutable closure
    variables named in ``constants`` are not evaluated per call (see :func:`_guard_filter`).
    """
    inductor = torch._dynamo.lookup_backend("inductor")

    def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        counter[0] += 1
        on_cpu = all(t.device.type == "cpu" for t in example_inputs if isinstance(t, Tensor))
        patches = {"cpp_wrapper": True} if on_cpu else None
        return inductor(gm, example_inputs, config_patches=patches)  # type: ignore[call-arg]

    unique = _unique_function(fn, unique_tag("step"))
    options: dict[str, str | int | bool | Callable[..., Any]] | None = None
    if hasattr(torch.compiler, "skip_guard_on_globals_unsafe"):  # guard_filter_fn: torch >= 2.8
        options = {"guard_filter_fn": _guard_filter(constants)}
    return torch.compile(unique, backend=backend, fullgraph=True, dynamic=False, options=options)


def same_leaves(tree: Any, leaves: list[Any]) -> bool:
    """Whether ``tree``'s leaves are exactly (by identity) ``leaves``."""
    try:
        got = optree.tree_leaves(tree, none_is_leaf=True)
    except Exception:  # not a pytree at all: the caller's full check reports it
        return False
    return len(got) == len(leaves) and all(a is b for a, b in zip(got, leaves, strict=True))


def handed_out(
    params: Any,
    opt_state: Any,
    names: tuple[str, ...],
    last_params: tuple[Any, ...],
    last_opt_leaves: list[Any],
) -> bool:
    """Whether ``(params, opt_state)`` are, tensor for tensor, the ones a step handed out last."""
    return (
        isinstance(params, Mapping)
        and len(params) == len(names)
        and all(params.get(n) is t for n, t in zip(names, last_params, strict=True))
        and same_leaves(opt_state, last_opt_leaves)
    )


def same_buffers(buffers: Any, last: tuple[tuple[str, Any], ...]) -> bool:
    """Whether ``buffers`` are, tensor for tensor, the ``(name, tensor)`` pairs handed out last."""
    return (
        isinstance(buffers, Mapping)
        and len(buffers) == len(last)
        and all(buffers.get(k) is t for k, t in last)
    )
