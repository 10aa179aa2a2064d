"""Data-parallel IMP on ``torch.distributed``, launched with ``torchrun`` (gloo on CPU, nccl on CUDA).

::

    torchrun --standalone --nproc-per-node 2 -m ltfunc imp --batch-size 60 ...   # the CLI does all this
    parallel = ltfunc.distributed.init(device="cpu")        # in each process torchrun starts
    run_imp(config, run_dir, parallel=parallel)             # every rank calls it; rank 0 writes
    ltfunc.distributed.shutdown(parallel)

What changes with ``W`` processes (ranks), and what does not:

* Every rank draws the same global batch order (the config's seed) and trains on its
  contiguous shard ``[rank * b / W, (rank + 1) * b / W)`` of each global batch of ``b``
  examples (``ltfunc.data.batches(..., shard=(rank, W))``): ``W`` ranks with ``b / W``
  examples each see exactly the examples one process with ``b`` sees.
* The masked step averages the gradients across ranks with one all-reduce of one flat tensor
  (the gradients, the loss and the accuracy concatenated) between the backward pass and the
  optimizer update (``make_train_step(..., grad_reduce=parallel.mean)``); it is traceable,
  so the compiled step stays one graph. Every rank then applies the same update: params,
  optimizer states, masks and records are the same on every rank and equal to a
  one-process run with batch ``b`` up to float rounding (the sum is taken in another order).
* BatchNorm normalizes with the statistics of the rank's shard (``b / W`` examples, as in
  PyTorch's ``DistributedDataParallel`` without ``SyncBatchNorm``); the running statistics
  are averaged across ranks at every evaluation point and at the end of each round, so every
  rank evaluates and saves the same buffers.
* Every rank evaluates (the same weights on the same splits: the same records); only rank 0
  writes the run directory and holds its lock. Rank 0 reads the run directory (the resume
  point) and sends what it read to the others, so the other ranks need no access to it.
* Configs are compared across ranks before anything is read or trained (a mismatch names the
  differing fields on every rank); every round's mask is checksummed (sha256) on every rank
  and compared.
* Failure: a rank that dies closes its connections and the others fail at their next
  collective at once; a rank that hangs makes the others fail after ``timeout`` seconds
  (default :data:`DEFAULT_TIMEOUT`, ``ltfunc imp --dist-timeout``). Either way every surviving
  rank raises :class:`DistributedError` naming itself, the timeout and the run directory, and
  exits. Rounds are saved atomically when they finish, so the run directory stays resumable:
  launching the same command again resumes after the last finished round, as in one process.
  (``torchrun`` itself also stops the other workers when one exits with an error.)
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import timedelta
from typing import Any, NamedTuple, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from ._checks import check_choice, check_number
from ._types import Buffers
from .masks import Mask, _digest

__all__ = [
    "BACKENDS",
    "DEFAULT_TIMEOUT",
    "DataParallel",
    "DistributedError",
    "check_same",
    "env_world",
    "init",
    "join_torchrun",
    "mask_digest",
    "shutdown",
]

T = TypeVar("T")

DEFAULT_TIMEOUT = 300.0
"""Seconds a rank waits in a collective for the others before it gives up (``--dist-timeout``).

A rank that dies is noticed at once (its connections close); the timeout bounds the wait for
one that hangs. It must exceed the longest time one rank can spend between two collectives
while another waits: the first compilation of the step, an evaluation, rank 0's round saves.
"""

BACKENDS = ("auto", "gloo", "nccl")
"""``"auto"``: gloo on CPU, nccl on CUDA."""

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""The environment variables ``torchrun`` sets in every process it starts."""

_COMM_WORDS = ("gloo", "nccl", "c10d", "connection", "timed out", "timeout", "broken pipe", "processgroup")


class DistributedError(RuntimeError):
    """A data-parallel run failed across ranks: a rank died or hangs, or ranks disagree (masks)."""


class DataParallel(NamedTuple):
    """This process's place in a data-parallel run (from :func:`init`).

    Example:
        >>> import torch
        >>> p = DataParallel(rank=0, world_size=1, local_rank=0, backend="gloo", timeout=60.0)
        >>> p.lead, p.mean(torch.ones(2))
        (True, tensor([1., 1.]))
    """

    rank: int
    """This process's rank, ``0 .. world_size - 1``; rank 0 writes the run directory."""
    world_size: int
    """Number of processes."""
    local_rank: int
    """Rank on this node (the CUDA device index with nccl)."""
    backend: str
    """``"gloo"`` or ``"nccl"``."""
    timeout: float
    """Seconds a collective waits for the other ranks."""

    @property
    def lead(self) -> bool:
        """Whether this is rank 0 (the one that reads and writes the run directory)."""
        return self.rank == 0

    def mean(self, t: Tensor) -> Tensor:
        """The mean of ``t`` over the ranks (a sum all-reduce divided by the world size).

        Functional (``t`` is not modified) and traceable by ``torch.compile``: this is the
        ``grad_reduce`` of a data-parallel :func:`ltfunc.make_train_step`.

        Args:
            t: A float tensor of the same shape on every rank.

        Returns:
            The mean, a new tensor (``t`` itself when ``world_size == 1``).
        """
        if self.world_size == 1:
            return t
        import torch.distributed._functional_collectives as funcol

        return funcol.all_reduce(t, "sum", dist.group.WORLD) / self.world_size  # type: ignore[arg-type]


def env_world(environ: Mapping[str, str] | None = None) -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from ``torchrun``'s environment, ``None`` outside it.

    Args:
        environ: The environment (default ``os.environ``).

    Returns:
        The triple when ``WORLD_SIZE`` is set, else ``None``.

    Raises:
        ValueError: ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` that are not integers in range.

    Example:
        >>> env_world({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
        (1, 2, 1)
        >>> env_world({}) is None
        True
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    try:
        world = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ValueError(
            "env_world: RANK, WORLD_SIZE and LOCAL_RANK must be integers, got "
            f"{[env.get(k) for k in ENV_VARS[:3]]}"
        ) from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(
            f"env_world: need WORLD_SIZE >= 1, 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0, "
            f"got RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}"
        )
    return rank, world, local


def resolve_backend(func: str, backend: str, device: str | torch.device) -> str:
    """The process-group backend for ``device``: ``"gloo"`` (CPU) or ``"nccl"`` (CUDA).

    Args:
        func: The caller, for messages.
        backend: One of :data:`BACKENDS`.
        device: The training device.

    Returns:
        ``"gloo"`` or ``"nccl"``.

    Raises:
        TypeError: ``backend`` not a str or ``device`` neither a str nor a device.
        ValueError: An unknown backend or device, gloo with a CUDA device, nccl without
            CUDA or with a CPU device.

    Example:
        >>> resolve_backend("init", "auto", "cpu")
        'gloo'
    """
    check_choice(func, "backend", backend, BACKENDS)
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"{func}: device must be a str or torch.device, got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"{func}: device={device!r} is not a device name ({e})") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"{func}: data-parallel training runs on cpu (gloo) or cuda (nccl), got {device!r}")
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError(
            f"{func}: backend='nccl' needs CUDA, which this machine does not have; use gloo on cpu"
        )
    if backend == "nccl" and dev.type != "cuda":
        raise ValueError(
            f"{func}: backend='nccl' needs device='cuda', got device={device!r}; use gloo on cpu"
        )
    if backend == "gloo" and dev.type == "cuda":
        raise ValueError(
            f"{func}: device={device!r} with backend='gloo' is not supported: use nccl (the default, "
            "'auto', on cuda)"
        )
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{func}: device={device!r} but this machine has no CUDA; use --device cpu (gloo)")
    return "nccl" if dev.type == "cuda" else "gloo"


def init(
    *,
    device: str | torch.device = "cpu",
    backend: str = "auto",
    timeout: float = DEFAULT_TIMEOUT,
    environ: Mapping[str, str] | None = None,
) -> DataParallel:
    """Join the data-parallel run ``torchrun`` started this process in (``init_process_group``).

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. With
    CUDA, each rank uses ``cuda:LOCAL_RANK`` (``torch.cuda.set_device``), so ``device="cuda"``
    means the rank's own GPU. Waits up to ``timeout`` seconds for all ranks to join. If the
    default process group already exists it is reused (it must match).

    Args:
        device: The training device: ``"cpu"`` or ``"cuda"`` (no index when several ranks share
            a node).
        backend: One of :data:`BACKENDS`; ``"auto"`` picks gloo on CPU and nccl on CUDA.
        timeout: Seconds a collective waits for the other ranks (> 0); see
            :data:`DEFAULT_TIMEOUT`.
        environ: The environment (default ``os.environ``).

    Returns:
        :class:`DataParallel`.

    Raises:
        TypeError: Arguments of the wrong type.
        ValueError: Not started by ``torchrun`` (no ``WORLD_SIZE``/``MASTER_ADDR``/
            ``MASTER_PORT``), ``timeout <= 0``, ``device="cuda"`` with gloo, nccl without CUDA,
            an indexed CUDA device with several ranks, fewer GPUs than local ranks, an existing
            process group of another size or backend.
        DistributedError: The other ranks did not join within ``timeout``.

    Example:
        >>> import ltfunc
        >>> parallel = ltfunc.distributed.init(device="cpu", timeout=60)  # doctest: +SKIP
    """
    func = "distributed.init"
    timeout = check_number(func, "timeout", timeout, low=0.0, open_low=True)
    chosen = resolve_backend(func, backend, device)
    env = os.environ if environ is None else environ
    found = env_world(env)
    missing = [k for k in ENV_VARS if k not in env]
    if found is None or (missing and not dist.is_initialized()):
        raise ValueError(
            f"{func}: this process was not started by torchrun: {missing} are not set; launch with "
            "`torchrun --standalone --nproc-per-node N -m ltfunc imp ...`"
        )
    rank, world, local = found
    dev = torch.device(device)
    if dev.type == "cuda":
        if dev.index is not None and world > 1:
            raise ValueError(
                f"{func}: device={str(device)!r} names one GPU for all {world} ranks; use device='cuda' "
                "(each rank uses cuda:LOCAL_RANK)"
            )
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"{func}: LOCAL_RANK={local} but this node has {torch.cuda.device_count()} GPU(s); start "
                "at most one process per GPU (--nproc-per-node)"
            )
        torch.cuda.set_device(local)
    if dist.is_initialized():
        have = (dist.get_rank(), dist.get_world_size(), str(dist.get_backend()))
        if have != (rank, world, chosen):
            raise ValueError(
                f"{func}: a process group already exists as (rank, world size, backend) {have}, "
                f"not {(rank, world, chosen)}"
            )
    else:
        try:
            dist.init_process_group(chosen, timeout=timedelta(seconds=timeout))
        except Exception as e:  # the store could not be reached / not all ranks joined
            raise DistributedError(
                f"{func}: rank {rank} of {world} could not join the process group at "
                f"{env.get('MASTER_ADDR')}:{env.get('MASTER_PORT')} within {timeout:g} s: {e}"
            ) from e
    return DataParallel(rank, world, local, chosen, timeout)


def join_torchrun(
    config: Any,
    *,
    backend: str = "auto",
    timeout: float = DEFAULT_TIMEOUT,
    environ: Mapping[str, str] | None = None,
) -> DataParallel | None:
    """:func:`init` for ``config`` (an :class:`ltfunc.ImpConfig`) when ``torchrun`` started this process.

    What ``ltfunc imp`` does first: outside ``torchrun`` (no ``WORLD_SIZE``) it returns
    ``None`` (one process); under it, the backend and the split of ``config.batch_size`` are
    checked before any process group is made, then :func:`init` joins the others.

    Args:
        config: The run's config (its ``device`` and ``batch_size``).
        backend: One of :data:`BACKENDS`.
        timeout: Seconds a collective waits for the other ranks.
        environ: The environment (default ``os.environ``).

    Returns:
        :class:`DataParallel`, or ``None`` outside ``torchrun``.

    Raises:
        ValueError: The world size does not divide ``config.batch_size``; and what
            :func:`init` raises (``--device cuda`` with gloo, nccl without CUDA, ...).
        DistributedError: The other ranks did not join within ``timeout``.

    Example:
        >>> import ltfunc
        >>> join_torchrun(ltfunc.ImpConfig(), environ={}) is None
        True
    """
    func = "ltfunc imp"
    found = env_world(environ)
    if found is None:
        return None
    world = found[1]
    resolve_backend(func, backend, config.device)
    check_number(func, "--dist-timeout", timeout, low=0.0, open_low=True)
    if config.batch_size % world:
        raise ValueError(
            f"{func}: the world size {world} (torchrun processes) does not divide --batch-size "
            f"{config.batch_size}: every rank trains on batch_size / world_size examples; use a batch "
            f"size that is a multiple of {world}"
        )
    return init(device=config.device, backend=backend, timeout=timeout, environ=environ)


def shutdown(parallel: DataParallel | None) -> None:
    """Leave the process group (after a finished run; a failed run just exits).

    Args:
        parallel: From :func:`init`, or ``None`` (nothing to do).

    Returns:
        ``None``.

    Example:
        >>> shutdown(None)
    """
    if parallel is not None and dist.is_initialized():
        dist.destroy_process_group()


def failed(code: int) -> int:
    """The exit status of a command that failed; under a joined process group, exit at once.

    A process that leaves with its gloo process group still open can abort in the group's
    teardown ("terminate called without an active exception", status -6) after the error
    was printed; leaving the group may block on a dead peer. So a failed rank flushes its
    output and exits with ``code`` right away, skipping that teardown.

    Args:
        code: The exit status.

    Returns:
        ``code`` (only when no process group is joined; otherwise the process exits).

    Example:
        >>> failed(2)
        2
    """
    if dist.is_available() and dist.is_initialized():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


# Collectives on Python objects ------------------------------------------------------------------


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
