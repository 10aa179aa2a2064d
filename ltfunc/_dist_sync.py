"""Agreement between the ranks of a data-parallel run: collectives on Python objects and checks.

Rank 0 computes or reads, the others receive (:func:`agree`); checks that must hold on every
rank (:func:`check_all`, :func:`check_same`, :func:`check_configs`), the buffers averaged
across ranks (:func:`sync_buffers`), and how a failed collective is reported
(:func:`failures`, :class:`DistributedError`). The process group itself (``init``,
``shutdown``, ``torchrun``) is :mod:`ltfunc.distributed`, which re-exports these.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist

from ._types import Buffers
from .masks import Mask, _digest

if TYPE_CHECKING:
    from .distributed import DataParallel

T = TypeVar("T")

_COMM_WORDS = ("gloo", "nccl", "c10d", "connection", "timed out", "timeout", "broken pipe", "processgroup")


class DistributedError(RuntimeError):
    """A data-parallel run failed across ranks: a rank died or hangs, or ranks disagree (masks)."""


def _dumps(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _loads(blob: bytes, device: torch.device) -> Any:
    # rank 0's own objects (checked before it sent them): full unpickling is intended here
    return torch.load(io.BytesIO(blob), map_location=device, weights_only=False)


def _local_device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return dev


def _remote_error(kind: type, message: str, rank: int) -> Exception:
    base = kind if isinstance(kind, type) and issubclass(kind, (ValueError, TypeError, OSError)) else None
    text = f"{message} [raised on rank {rank}]"
    if base is None:
        return DistributedError(text)
    try:
        return base(text)
    except Exception:  # an exception class with another constructor
        return DistributedError(text)


def agree(
    func: str, parallel: DataParallel | None, compute: Callable[[], T], *, device: str | torch.device = "cpu"
) -> T:
    """Run ``compute`` on rank 0 and give every rank its result, or raise its error on every rank.

    How rank 0's reads of the run directory (the resume point) reach the other ranks; tensors
    arrive on ``device``. Every rank must call it at the same point. Without ``parallel`` (or
    with one rank) it just returns ``compute()``.

    Args:
        func: The caller, for messages.
        parallel: From :func:`init`, or ``None``.
        compute: What rank 0 runs (its result must pickle with ``torch.save``).
        device: Where the other ranks receive tensors (``"cuda"``: the rank's own GPU).

    Returns:
        Rank 0's result, on every rank.

    Raises:
        Exception: Rank 0's error: the same exception on rank 0; on the others one of the same
            kind (``ValueError``, ``TypeError``, ``OSError``; else :class:`DistributedError`)
            with the message and ``[raised on rank 0]``.

    Example:
        >>> agree("f", None, lambda: 3)
        3
    """
    if parallel is None or parallel.world_size == 1:
        return compute()
    error: Exception | None = None
    box: list[Any] = [None]
    if parallel.lead:
        try:
            value: Any = compute()
            box[0] = _dumps(("ok", value))
        except Exception as e:
            error = e
            box[0] = _dumps(("error", type(e), str(e)))
    dist.broadcast_object_list(box, src=0)
    if parallel.lead:
        if error is not None:
            raise error
        return value
    payload = _loads(box[0], _local_device(device))
    if payload[0] == "error":
        raise _remote_error(payload[1], payload[2], 0)
    return payload[1]


def check_all(func: str, parallel: DataParallel | None, compute: Callable[[], T]) -> T:
    """Run ``compute`` on every rank; if it fails on any rank, raise on every rank.

    The failing rank raises its own error; the others raise one of the same kind naming that
    rank (so no rank is left waiting for a collective). Every rank must call it.

    Args:
        func: The caller, for messages.
        parallel: From :func:`init`, or ``None``.
        compute: What every rank runs (e.g. loading the dataset).

    Returns:
        This rank's result.

    Raises:
        Exception: The first failing rank's error, on every rank (see :func:`agree`).

    Example:
        >>> check_all("f", None, lambda: 3)
        3
    """
    if parallel is None or parallel.world_size == 1:
        return compute()
    error: Exception | None = None
    try:
        value = compute()
    except Exception as e:
        error = e
    gathered: list[Any] = [None] * parallel.world_size
    status = None if error is None else (type(error), str(error))
    dist.all_gather_object(gathered, status)
    if error is not None:
        raise error
    for rank, got in enumerate(gathered):
        if got is not None:
            raise _remote_error(got[0], got[1], rank)
    return value


def check_same(func: str, parallel: DataParallel | None, what: str, value: str) -> None:
    """Check that ``value`` (a digest) is the same on every rank; raise on every rank if not.

    Args:
        func: The caller, for the message.
        parallel: From :func:`init` (``None``: nothing to check).
        what: What ``value`` describes (``"mask of ticket round 2"``).
        value: A string, e.g. :func:`mask_digest`.

    Raises:
        DistributedError: The ranks hold different values (each rank's is listed).

    Example:
        >>> check_same("f", None, "mask", "abc")
    """
    if parallel is None or parallel.world_size == 1:
        return
    gathered: list[Any] = [None] * parallel.world_size
    dist.all_gather_object(gathered, value)
    if any(v != gathered[0] for v in gathered):
        shown = ", ".join(f"rank {r}: {str(v)[:16]}" for r, v in enumerate(gathered))
        raise DistributedError(f"{func}: the ranks disagree on the {what} ({shown}); the ranks diverged")


def check_configs(func: str, parallel: DataParallel | None, config: Any, batch_size: int) -> None:
    """Compare ``config`` (an :class:`ltfunc.ImpConfig`) across ranks, and the batch's split.

    Args:
        func: The caller, for messages.
        parallel: From :func:`init`, or ``None`` (nothing to check).
        config: This rank's config.
        batch_size: The global batch size.

    Raises:
        ValueError: On every rank, before anything is read or trained: the ranks were given
            different configs (the differing fields are named), or the world size does not
            divide ``batch_size``.

    Example:
        >>> check_configs("f", None, None, 60)
    """
    if parallel is None:
        return
    if parallel.world_size > 1:
        from .config import config_diff

        mine = config.to_dict()
        gathered: list[Any] = [None] * parallel.world_size
        dist.all_gather_object(gathered, mine)
        for rank, other in enumerate(gathered):
            diff = config_diff(gathered[0], other)
            if diff:
                shown = ", ".join(f"{k}: rank 0 {a!r}, rank {rank} {b!r}" for k, (a, b) in diff.items())
                raise ValueError(
                    f"{func}: the ranks were given different configs ({shown}); launch every rank with "
                    "the same command"
                )
    if batch_size % parallel.world_size:
        raise ValueError(
            f"{func}: the world size {parallel.world_size} does not divide batch_size={batch_size}: every "
            f"rank trains on batch_size / world_size examples; use a batch size that is a multiple of "
            f"{parallel.world_size} or another number of processes"
        )


def mask_digest(mask: Mask) -> str:
    """sha256 of a mask's names, shapes and values (what ranks compare every round).

    Args:
        mask: The mask.

    Returns:
        64 hex digits (the ``mask_sha256`` of a round's ``summary.json``).

    Example:
        >>> import torch
        >>> from ltfunc.masks import Mask
        >>> len(mask_digest(Mask({"w": torch.ones(3, dtype=torch.bool)})))
        64
    """
    return _digest(mask)


def sync_buffers(parallel: DataParallel | None, buffers: Buffers) -> Buffers:
    """Float buffers (BatchNorm running statistics) averaged across ranks; others unchanged.

    One all-reduce of the concatenated float buffers (in float64); a new dict, the input is
    not modified. Every rank must call it.

    Args:
        parallel: From :func:`init`, or ``None`` (a copy of the dict, nothing averaged).
        buffers: The model's buffers (same keys and shapes on every rank).

    Returns:
        The buffers with float ones replaced by their mean over the ranks.

    Example:
        >>> sync_buffers(None, {})
        {}
    """
    floats = [k for k, v in buffers.items() if v.is_floating_point()]
    if parallel is None or parallel.world_size == 1 or not floats:
        return dict(buffers)
    flat = torch.cat([buffers[k].detach().reshape(-1).to(torch.float64) for k in floats])
    dist.all_reduce(flat)
    flat = flat / parallel.world_size
    out = dict(buffers)
    offset = 0
    for k in floats:
        b = buffers[k]
        out[k] = flat[offset : offset + b.numel()].view(b.shape).to(b.dtype)
        offset += b.numel()
    return out


def is_collective_failure(exc: BaseException) -> bool:
    """Whether ``exc`` looks like a failed or timed-out collective (a peer died or hangs).

    gloo, nccl and the compiled step report those as ``RuntimeError`` (``DistError``) whose
    message names the transport (``Connection reset by peer``, ``Timed out waiting 5000ms``,
    ``c10d_functional_wait_tensor ... failed``).

    Args:
        exc: The exception.

    Returns:
        ``True`` for a communication failure (never for a :class:`DistributedError`).

    Example:
        >>> is_collective_failure(RuntimeError("Timed out waiting 5000ms for recv operation"))
        True
    """
    if isinstance(exc, DistributedError):
        return False
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(w in text for w in _COMM_WORDS)


def collective_error(func: str, parallel: DataParallel, exc: BaseException, run_dir: Any) -> DistributedError:
    """The clear error a rank raises when a collective failed (another rank died or hangs).

    Args:
        func: The caller, for the message.
        parallel: This rank.
        exc: The failure (its first line is quoted).
        run_dir: The run directory, named as the place to resume from.

    Returns:
        :class:`DistributedError` naming the rank, the timeout and the run directory.

    Example:
        >>> from ltfunc.distributed import DataParallel
        >>> p = DataParallel(0, 2, 0, "gloo", 10.0)
        >>> str(collective_error("run_imp", p, RuntimeError("Connection closed by peer"), "runs/x"))[:44]
        'run_imp: rank 0 of 2 lost contact with the o'
    """
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return DistributedError(
        f"{func}: rank {parallel.rank} of {parallel.world_size} lost contact with the other ranks: a "
        f"collective failed or waited longer than the {parallel.timeout:g} s timeout (--dist-timeout), "
        f"most likely because another rank died or hangs ({first}). Every finished round is saved in "
        f"{run_dir}: launch the same command again to resume"
    )


@contextmanager
def lead_only(
    func: str, parallel: DataParallel | None, make: Callable[[], AbstractContextManager[Any]]
) -> Iterator[None]:
    """Enter the context ``make()`` (e.g. the run directory's lock) on rank 0 only.

    If rank 0 cannot enter it, every rank raises its error. Without ``parallel``: ``make()``.

    Args:
        func: The caller, for messages.
        parallel: From :func:`init`, or ``None``.
        make: Makes the context manager (called on rank 0 only).

    Raises:
        Exception: Rank 0's error entering the context, on every rank (see :func:`agree`).

    Example:
        >>> from contextlib import nullcontext
        >>> with lead_only("f", None, nullcontext):
        ...     pass
    """
    with ExitStack() as stack:
        if parallel is None:
            stack.enter_context(make())
        else:
            agree(func, parallel, lambda: (stack.enter_context(make()), None)[1])
        yield


@contextmanager
def failures(func: str, parallel: DataParallel | None, run_dir: Any) -> Iterator[None]:
    """Turn a failed collective inside the block into :func:`collective_error`'s clear error.

    Other errors pass unchanged. Without ``parallel`` it does nothing.

    Args:
        func: The caller, for the message.
        parallel: From :func:`init`, or ``None``.
        run_dir: The run directory, named in the message.

    Raises:
        DistributedError: A collective inside the block failed (:func:`is_collective_failure`).

    Example:
        >>> with failures("f", None, "runs/x"):
        ...     pass
    """
    try:
        yield
    except Exception as e:
        if parallel is not None and is_collective_failure(e):
            raise collective_error(func, parallel, e, run_dir) from e
        raise
