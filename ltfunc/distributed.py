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

import os
import sys
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, NamedTuple, NoReturn

import torch
import torch.distributed as dist
from torch import Tensor

from ._checks import check_choice, check_number
from ._dist_sync import DistributedError, check_same, mask_digest
from ._dist_sync import agree as agree  # the rank-agreement helpers, reached as distributed.<name>
from ._dist_sync import check_all as check_all
from ._dist_sync import check_configs as check_configs
from ._dist_sync import failures as failures
from ._dist_sync import lead_only as lead_only
from ._dist_sync import sync_buffers as sync_buffers

__all__ = [
    "BACKENDS",
    "DEFAULT_TIMEOUT",
    "DataParallel",
    "DistributedError",
    "check_same",
    "env_world",
    "exit_rank",
    "init",
    "join_torchrun",
    "mask_digest",
    "shutdown",
]

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
    """Leave the process group after a finished run (a failed run just exits: :func:`failed`).

    Every rank first waits for the others at a barrier, so no rank closes its connections
    while another is still in a collective.

    Args:
        parallel: From :func:`init`, or ``None`` (nothing to do).

    Returns:
        ``None``.

    Example:
        >>> shutdown(None)
    """
    if parallel is not None and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def exit_rank(parallel: DataParallel | None, code: int) -> int:
    """The exit status of a finished command; a rank under torchrun exits at once with it.

    After :func:`shutdown`, gloo's threads can still abort the interpreter's teardown
    ("terminate called without an active exception", status -6) on a busy machine, turning a
    finished run into a failed rank. A rank flushes its output and exits with ``code`` right
    away instead, as :func:`failed` does.

    Args:
        parallel: From :func:`init`, or ``None`` (one process: ``code`` is returned).
        code: The exit status.

    Returns:
        ``code`` (only without ``parallel``; otherwise the process exits).

    Example:
        >>> exit_rank(None, 0)
        0
    """
    if parallel is None:
        return code
    _exit_now(code)


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
        _exit_now(code)
    return code


def _exit_now(code: int) -> NoReturn:
    """Flush stdout and stderr and end the process with ``code``, skipping the interpreter's teardown."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
