"""Stacking pytrees along a new leading "member" dimension, and back (for :mod:`ltfunc.members`).

:func:`stack` / :func:`unstack` turn a list of pytrees into one stacked pytree and back (like
``torch.func.stack_module_state``, for any optree pytree: params dicts, optimizer states,
buffers, masks); :func:`stack_states` / :func:`unstack_state` do it for whole train states.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optree
import torch
from torch import Tensor

from ._checks import check_int
from .step import TrainState

__all__ = ["stack", "stack_states", "unstack", "unstack_state"]


# ---------------------------------------------------------------------------
def _path_str(path: tuple[Any, ...]) -> str:
    return "".join(f"[{p!r}]" for p in path) or "(the whole tree)"


def _check_stackable(func: str, name: str, trees: Sequence[Any]) -> tuple[list[list[Any]], Any]:
    """Leaves per member and member 0's treespec; the ``ValueError`` names the member and key."""
    if isinstance(trees, (str, bytes, Mapping)) or not isinstance(trees, Sequence):
        raise TypeError(
            f"{func}: {name} must be a list of pytrees (one per member), got {type(trees).__name__}"
        )
    if len(trees) < 1:
        raise ValueError(f"{func}: {name} must hold at least one member (K >= 1), got an empty list")
    paths0, leaves0, spec0 = optree.tree_flatten_with_path(trees[0], none_is_leaf=True)
    all_leaves = []
    for i, tree in enumerate(trees):
        paths, leaves, spec = optree.tree_flatten_with_path(tree, none_is_leaf=True)
        if spec != spec0:
            missing = [_path_str(p) for p in paths0 if p not in set(paths)]
            extra = [_path_str(p) for p in paths if p not in set(paths0)]
            detail = (
                f"missing keys {missing}, unexpected keys {extra}"
                if missing or extra
                else (f"structure {spec} differs from member 0's {spec0}")
            )
            raise ValueError(f"{func}: {name}[{i}] does not stack with {name}[0]: {detail}")
        for path, leaf, ref in zip(paths, leaves, leaves0, strict=True):
            if not isinstance(leaf, Tensor):
                raise TypeError(
                    f"{func}: {name}[{i}]{_path_str(path)} must be a tensor, got {type(leaf).__name__}"
                )
            if leaf.shape != ref.shape or leaf.dtype != ref.dtype or leaf.device != ref.device:
                raise ValueError(
                    f"{func}: {name}[{i}]{_path_str(path)} is {leaf.dtype} {tuple(leaf.shape)} on "
                    f"{leaf.device} but {name}[0]{_path_str(path)} is {ref.dtype} {tuple(ref.shape)} "
                    f"on {ref.device}: members must have the same keys, shapes, dtypes and device"
                )
        all_leaves.append(leaves)
    return all_leaves, spec0


def stack(trees: Sequence[Any], *, name: str = "trees", func: str = "stack") -> Any:
    """Stack K pytrees of the same structure into one whose tensors have a leading dimension K.

    Works for any optree pytree of tensors: params and buffer dicts, optimizer states,
    :class:`~ltfunc.masks.Mask` (a stacked mask holds ``(K, *shape)`` bool tensors).

    Args:
        trees: A list of K >= 1 pytrees with the same keys, shapes, dtypes and device.
        name: What ``trees`` is called in error messages.
        func: The caller's name in error messages.

    Returns:
        A new pytree of the same structure, each tensor ``torch.stack`` ed (a copy).

    Raises:
        TypeError: ``trees`` not a list, a leaf that is not a tensor.
        ValueError: An empty list; a member whose keys, shapes, dtypes or device differ from
            member 0's (the message names the member index and the key).

    Example:
        >>> import torch
        >>> s = stack([{"w": torch.zeros(2)}, {"w": torch.ones(2)}])
        >>> s["w"].shape
        torch.Size([2, 2])
        >>> stack([{"w": torch.zeros(2)}, {"v": torch.zeros(2)}])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: stack: trees[1] does not stack with trees[0]: missing keys ["['w']"], ...
    """
    all_leaves, spec = _check_stackable(func, name, trees)
    stacked = [torch.stack(parts) for parts in zip(*all_leaves, strict=True)]
    return optree.tree_unflatten(spec, stacked)


def unstack(stacked: Any, k: int) -> Any:
    """Member ``k`` of a stacked pytree (views ``t[k]``, no copy).

    Args:
        stacked: A pytree whose tensors have a leading dimension K (from :func:`stack`).
        k: The member index, ``0 <= k < K``.

    Returns:
        The pytree with each tensor replaced by ``t[k]``.

    Raises:
        TypeError: ``k`` not an int, a leaf that is not a tensor of at least one dimension.
        ValueError: ``k`` out of range.

    Example:
        >>> import torch
        >>> unstack({"w": torch.tensor([[1.0], [2.0]])}, 1)
        {'w': tensor([2.])}
    """
    func = "unstack"
    leaves, spec = optree.tree_flatten(stacked, none_is_leaf=True)
    if not leaves or not all(isinstance(t, Tensor) and t.dim() >= 1 for t in leaves):
        raise TypeError(f"{func}: stacked must be a pytree of tensors with a leading member dimension")
    check_int(func, "k", k, 0, leaves[0].shape[0] - 1)
    return optree.tree_unflatten(spec, [t[k] for t in leaves])


def stack_states(states: Sequence[TrainState]) -> TrainState:
    """Stack K members' :class:`~ltfunc.step.TrainState` s (same iteration) into one stacked state.

    Args:
        states: K >= 1 train states of one model and optimizer, at the same iteration.

    Returns:
        ``TrainState(stack(params), stack(opt_states), iteration, stack(buffers))``.

    Raises:
        TypeError: Not a list of TrainStates.
        ValueError: Members that do not stack (the message names the member index and the
            key: different keys, shapes, dtypes, devices, optimizer state structures) or at
            different iterations.

    Example:
        >>> import torch, ltfunc
        >>> opt = ltfunc.optim.sgd(momentum=0.9)
        >>> ps = [{"w": torch.zeros(3)}, {"w": torch.ones(3)}]
        >>> s = stack_states([TrainState(p, opt.init(p)) for p in ps])
        >>> s.params["w"].shape, s.opt_state.count.shape
        (torch.Size([2, 3]), torch.Size([2]))
    """
    func = "stack_states"
    if isinstance(states, TrainState) or not isinstance(states, Sequence):
        raise TypeError(f"{func}: states must be a list of TrainStates, got {type(states).__name__}")
    for i, s in enumerate(states):
        if not isinstance(s, TrainState):
            raise TypeError(f"{func}: states[{i}] must be a TrainState, got {type(s).__name__}")
    if not states:
        raise ValueError(f"{func}: states must hold at least one member (K >= 1), got an empty list")
    its = [s.iteration for s in states]
    if any(it != its[0] for it in its):
        raise ValueError(f"{func}: all members must be at the same iteration, got {its}")
    return TrainState(
        stack([dict(s.params) for s in states], name="params", func=func),
        stack([s.opt_state for s in states], name="opt_states", func=func),
        its[0],
        stack([dict(s.buffers) for s in states], name="buffers", func=func),
    )


def unstack_state(states: TrainState, k: int) -> TrainState:
    """Member ``k`` of a stacked :class:`~ltfunc.step.TrainState` (views, no copy).

    The result is an ordinary one-member state: :func:`ltfunc.make_train_step` 's step,
    :func:`ltfunc.evaluate` and the savers take it.

    Args:
        states: A stacked state (from :meth:`MembersStep.init` or a :class:`MembersStep` call).
        k: The member index, ``0 <= k < K``.

    Returns:
        ``TrainState(params[k], opt_state[k], iteration, buffers[k])``.

    Raises:
        TypeError: ``states`` not a TrainState, ``k`` not an int.
        ValueError: ``k`` out of range.

    Example:
        >>> import torch, ltfunc
        >>> opt = ltfunc.optim.sgd()
        >>> z = {"w": torch.zeros(2)}
        >>> s = stack_states([TrainState({"w": torch.full((2,), i)}, opt.init(z)) for i in (0.0, 1.0, 2.0)])
        >>> unstack_state(s, 2).params["w"]
        tensor([2., 2.])
    """
    if not isinstance(states, TrainState):
        raise TypeError(f"unstack_state: states must be a TrainState, got {type(states).__name__}")
    p = unstack(dict(states.params), k)
    s = unstack(states.opt_state, k)
    b = unstack(dict(states.buffers), k) if states.buffers else {}
    return TrainState(p, s, states.iteration, b)


# The step -----------------------------------------------------------------------------------
