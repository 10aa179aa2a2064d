"""Structured sparsity patterns: N:M groups and R×C blocks (the geometry behind ``structure=``).

A structure is given as a string and parsed once (:func:`parse`):

* ``"N:M"`` (:class:`NM`, ``1 <= N < M``): groups of ``M`` consecutive weights along the
  *input* dimension, dim 1 of a weight ``(out, in, *kernel)``. For a Linear weight
  ``(out, in)`` that is its last dimension; for a conv weight ``(out, in, kh, kw)`` a group is
  ``M`` consecutive input channels at one ``(out, kh, kw)`` position — the layout NVIDIA's
  2:4 sparse tensor cores (and apex's ASP) use for convolutions. Needs ``in % M == 0``. A mask
  *is* N:M when every group keeps exactly ``N`` weights (:func:`satisfies`).
* ``"block:RxC"`` (:class:`Block`): the weight's 2-D view ``(out, in·kh·kw)`` (a row-major
  reshape; a Linear weight is its own view) is tiled into blocks of ``R`` rows (outputs) by
  ``C`` columns (inputs). Needs ``out % R == 0`` and ``in·kh·kw % C == 0``. A block is scored
  by the L2 norm of its surviving weights; a mask *is* block-structured when it is a union
  of whole blocks.
* ``None``, ``"none"`` or ``"unstructured"``: no structure.

How pruning uses them (rates, rounds, scope) is :func:`ltfunc.prune.magnitude`'s contract;
this module holds the parsing, the shape checks and the group / block views.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ._checks import check_mask

__all__ = ["NM", "Block", "Structure", "parse", "satisfies"]


@dataclass(frozen=True)
class NM:
    """N:M sparsity: every ``m`` consecutive weights along the input dimension keep ``n``.

    Example:
        >>> from ltfunc.structured import NM
        >>> str(NM(2, 4))
        '2:4'
    """

    n: int
    m: int

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"


@dataclass(frozen=True)
class Block:
    """Block sparsity: whole ``rows`` × ``cols`` blocks of the weight's 2-D view are pruned.

    Example:
        >>> from ltfunc.structured import Block
        >>> str(Block(4, 4))
        'block:4x4'
    """

    rows: int
    cols: int

    def __str__(self) -> str:
        return f"block:{self.rows}x{self.cols}"


Structure = NM | Block
"""A parsed structure (:func:`parse`)."""

_NM_RE = re.compile(r"^(\d+):(\d+)$")
_BLOCK_RE = re.compile(r"^block:(\d+)x(\d+)$")
_NONE = ("none", "unstructured")
_ALLOWED = "'N:M' with 1 <= N < M (e.g. '2:4'), 'block:RxC' with R, C >= 1 (e.g. 'block:4x4') or None"


def _parse(func: str, name: str, spec: Any) -> Structure | None:
    """:func:`parse` with the caller's name and argument in the messages."""
    if spec is None or isinstance(spec, (NM, Block)):
        s = spec
    elif not isinstance(spec, str):
        raise TypeError(f"{func}: {name} must be a string such as '2:4' or 'block:4x4' or None, got {spec!r}")
    else:
        text = spec.strip().lower()
        nm, block = _NM_RE.match(text), _BLOCK_RE.match(text)
        if text in _NONE:
            s = None
        elif nm:
            s = NM(int(nm[1]), int(nm[2]))
        elif block:
            s = Block(int(block[1]), int(block[2]))
        else:
            raise ValueError(f"{func}: {name}={spec!r} does not parse; allowed: {_ALLOWED}")
    if isinstance(s, NM):
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (s.n, s.m))
        if not ok or not 1 <= s.n < s.m:
            raise ValueError(
                f"{func}: {name}={spec!r} is not a valid N:M structure: it needs 1 <= N < M "
                f"(N={s.n!r}, M={s.m!r}); allowed: {_ALLOWED}"
            )
    elif isinstance(s, Block):
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (s.rows, s.cols))
        if not ok or s.rows < 1 or s.cols < 1:
            raise ValueError(
                f"{func}: {name}={spec!r} is not a valid block structure: it needs R, C >= 1 "
                f"(R={s.rows!r}, C={s.cols!r}); allowed: {_ALLOWED}"
            )
    return s


def parse(spec: str | Structure | None) -> Structure | None:
    """Parse a structure spec once: ``"N:M"``, ``"block:RxC"`` or no structure.

    Args:
        spec: ``"N:M"`` (``1 <= N < M``), ``"block:RxC"`` (``R, C >= 1``; case and
            surrounding spaces ignored), ``None`` / ``"none"`` / ``"unstructured"``, or an
            already parsed :class:`NM` / :class:`Block`.

    Returns:
        :class:`NM`, :class:`Block` or ``None``; ``str()`` of it is the canonical spec.

    Raises:
        TypeError: ``spec`` is neither a string, a parsed structure nor ``None``.
        ValueError: A string that does not parse, ``N >= M``, ``N < 1`` or a block side < 1.

    Example:
        >>> from ltfunc.structured import parse
        >>> parse("2:4"), parse(" Block:4X8 "), parse("none")
        (NM(n=2, m=4), Block(rows=4, cols=8), None)
    """
    return _parse("parse", "spec", spec)


# --------------------------------------------------------------------------------------------
# shape checks


def _fit_error(func: str, s: Structure, name: str, shape: tuple[int, ...]) -> str | None:
    """Why structure ``s`` cannot apply to a weight of ``shape`` (``None`` when it can)."""
    where = f"{func}: structure '{s}' "
    hint = (
        f"; give the layer a rate of 0 to leave it dense (e.g. Rates(overrides={{{name!r}: 0.0}}), "
        f"--override {name}=0)"
    )
    if len(shape) < 2:
        return (
            f"{where}cannot apply to layer {name!r} of shape {shape}: N:M and block structures need a "
            f"2-D (Linear) or conv weight, not a {len(shape)}-D tensor; leave it out of the mask or give "
            f"it a rate of 0"
        )
    if isinstance(s, NM) and shape[1] % s.m:
        return (
            f"{where}does not divide layer {name!r} of shape {shape}: its input dimension (dim 1) has "
            f"{shape[1]} weights, not a multiple of M={s.m}{hint}"
        )
    if isinstance(s, Block):
        cols = 1
        for d in shape[1:]:
            cols *= d
        if shape[0] % s.rows or cols % s.cols:
            return (
                f"{where}does not divide layer {name!r} of shape {shape}: its 2-D view ({shape[0]}, {cols}) "
                f"is not a multiple of the block {s.rows}x{s.cols} (rows {shape[0]} % {s.rows} = "
                f"{shape[0] % s.rows}, columns {cols} % {s.cols} = {cols % s.cols}){hint}"
            )
    return None


def _check_fits(func: str, s: Structure, name: str, shape: tuple[int, ...]) -> None:
    msg = _fit_error(func, s, name, tuple(shape))
    if msg is not None:
        raise ValueError(msg)


def _check_pattern(func: str, s: Structure, name: str, alive: Tensor) -> None:
    """Refuse a mask that a structured round cannot continue from (see ``prune.magnitude``)."""
    if isinstance(s, NM):
        low = int((_groups(alive, s.m).sum(dim=1) < s.n).sum())
        if low:
            raise ValueError(
                f"{func}: mask[{name!r}] has {low} group(s) of {s.m} with fewer than {s.n} surviving "
                f"weights, so it cannot reach exact {s}; start from a dense mask or one pruned with "
                f"structure='{s}'"
            )
    else:
        blocks = _block_view(alive, s)
        partial = int((blocks.any(dim=(2, 3)) & ~blocks.all(dim=(2, 3))).sum())
        if partial:
            raise ValueError(
                f"{func}: mask[{name!r}] is not a union of whole {s.rows}x{s.cols} blocks "
                f"({partial} block(s) are partly pruned); start from a dense mask or one pruned with "
                f"structure='{s}'"
            )


# --------------------------------------------------------------------------------------------
# N:M groups


def _groups(t: Tensor, m: int) -> Tensor:
    """``(G, m)``: the N:M groups of ``t`` (``m`` consecutive entries of dim 1)."""
    return t.movedim(1, -1).reshape(-1, m)


def _ungroup(g: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Inverse of :func:`_groups` for a tensor of ``shape``."""
    moved = (shape[0], *shape[2:], shape[1])
    return g.reshape(moved).movedim(-1, 1).contiguous()


def _nm_protected(scores: Tensor, alive: Tensor, s: NM) -> Tensor:
    """The ``n`` highest-scoring survivors of every group (ties: the later entry), shaped like ``alive``.

    Every group must hold at least ``n`` survivors (:func:`_check_pattern`).
    """
    gs = _groups(scores.detach().to("cpu", torch.float64), s.m)
    ga = _groups(alive.cpu(), s.m)
    key = torch.where(ga, gs, torch.full_like(gs, -torch.inf))
    top = torch.sort(key, dim=1, stable=True).indices[:, s.m - s.n :]
    keep = torch.zeros_like(ga).scatter_(1, top, True) & ga
    return _ungroup(keep, tuple(alive.shape)).to(alive.device)


# --------------------------------------------------------------------------------------------
# blocks


def _block_view(t: Tensor, s: Block) -> Tensor:
    """``(out/R, cols/C, R, C)``: the blocks of ``t``'s 2-D view ``(out, in·kh·kw)``."""
    two = t.reshape(t.shape[0], -1)
    rows, cols = two.shape
    return two.reshape(rows // s.rows, s.rows, cols // s.cols, s.cols).permute(0, 2, 1, 3)


def _block_alive(alive: Tensor, s: Block) -> Tensor:
    """``(out/R, cols/C)`` bool on the CPU: which blocks survive (the mask is a union of blocks)."""
    return _block_view(alive.cpu(), s).all(dim=(2, 3))


def _block_norms(weight: Tensor, alive: Tensor, s: Block) -> Tensor:
    """``(out/R, cols/C)`` float64 on the CPU: the L2 norm of every block's surviving weights."""
    w = weight.detach().to(torch.float64) * alive
    return _block_view(w, s).square().sum(dim=(2, 3)).sqrt().cpu()


def _expand_blocks(blocks: Tensor, shape: tuple[int, ...], s: Block) -> Tensor:
    """A bool tensor of ``shape`` from a ``(out/R, cols/C)`` block mask."""
    full = blocks.repeat_interleave(s.rows, dim=0).repeat_interleave(s.cols, dim=1)
    return full.reshape(shape).contiguous()


# --------------------------------------------------------------------------------------------
# checking masks


def satisfies(mask: Mapping[str, Tensor], structure: str | Structure) -> dict[str, bool]:
    """Whether each layer of ``mask`` has the structure exactly.

    Args:
        mask: An :class:`ltfunc.masks.Mask`.
        structure: ``"N:M"`` or ``"block:RxC"`` (see :func:`parse`).

    Returns:
        ``{name: bool}``: for N:M, every group of ``M`` (along the input dimension) keeps
        exactly ``N`` weights; for blocks, the layer is a union of whole ``R×C`` blocks.

    Raises:
        TypeError: ``mask`` is not a Mask; a bad ``structure`` type.
        ValueError: ``structure`` is ``None``-like or does not parse, or does not fit a
            layer's shape (the message names the layer).

    Example:
        >>> import ltfunc
        >>> from ltfunc.structured import satisfies
        >>> m = ltfunc.masks.from_dict({"w": [[1, 0, 0, 1, 1, 1, 0, 0]]})
        >>> satisfies(m, "2:4"), satisfies(m, "block:1x2")
        ({'w': True}, {'w': False})
    """
    func = "satisfies"
    check_mask(func, "mask", mask)
    s = _parse(func, "structure", structure)
    if s is None:
        raise ValueError(f"{func}: structure={structure!r} is no structure; allowed: {_ALLOWED}")
    out = {}
    for name, m in mask.items():
        _check_fits(func, s, name, tuple(m.shape))
        if isinstance(s, NM):
            out[name] = bool((_groups(m.cpu(), s.m).sum(dim=1) == s.n).all())
        else:
            blocks = _block_view(m.cpu(), s)
            out[name] = bool((blocks.all(dim=(2, 3)) == blocks.any(dim=(2, 3))).all())
    return out
