"""Private: the executors of :func:`ltfunc.sweep.run_sweep` (``local``, ``ray``, ``slurm``).

Each executor runs a list of :class:`Task` s, one :func:`ltfunc.run_imp` call each, and returns
``{task name: RunResult or the exception it raised}``. ``ray`` and ``submitit`` are imported
only inside their executors (extras ``ltfunc[ray]`` / ``ltfunc[slurm]``); the core never
imports them. Every task sets its own torch thread count and runs without progress bars; the
parent prints one line per finished run.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from ._checks import check_choice, check_int, check_number
from .experiment import RunResult
from .parallel import _init_worker

Outcome = RunResult | BaseException
"""What a task ends with: its :class:`~ltfunc.experiment.RunResult` or the exception it raised."""

EXECUTORS: tuple[str, ...] = ("local", "ray", "slurm")
"""The executors of :func:`ltfunc.sweep.run_sweep`."""

RAY_CONNECT_TIMEOUT_S = 5.0
"""Seconds :func:`check_ray_address` waits for a TCP connection to a Ray cluster's address."""


class Task(NamedTuple):
    """One run of a sweep, as sent to a worker (picklable: the config travels as its dict)."""

    name: str
    config: dict[str, Any]
    run_dir: str
    data_root: str | None
    force: bool
    verify: bool
    threads: int


def run_task(task: Task) -> RunResult:
    """Run one task in this process: its share of the cores (``task.threads``,
    ``ltfunc.parallel._use_threads``), malloc keeping freed memory
    (:func:`ltfunc.allocator.reuse_freed_memory`) and :func:`ltfunc.run_imp`."""
    from . import allocator
    from .config import ImpConfig
    from .experiment import run_imp
    from .parallel import _use_threads

    _use_threads(task.threads)
    allocator.at_entry()
    return run_imp(
        ImpConfig.from_dict(task.config),
        task.run_dir,
        data_root=task.data_root,
        force=task.force,
        progress=False,
        download=False,
        verify=task.verify,
    )


def missing_extra(func: str, package: str, extra: str, executor: str) -> ImportError:
    """The ImportError raised when an executor's optional package is not installed."""
    return ImportError(
        f"{func}: executor={executor!r} needs the {package} package, which is not installed; "
        f"pip install 'ltfunc[{extra}]'"
    )


class _Reporter:
    """One line on stderr per finished run: ``[k/n] name: trained N round(s) in S s``."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total, self.done, self.start = enabled, total, 0, time.perf_counter()

    def __call__(self, name: str, outcome: Outcome) -> None:
        self.done += 1
        if not self.enabled:
            return
        took = time.perf_counter() - self.start
        if isinstance(outcome, BaseException):
            first = (str(outcome).strip().splitlines() or [""])[0]
            what = f"FAILED: {type(outcome).__name__}: {first}"
        else:
            what = f"trained {len(outcome.trained)} round(s), {len(outcome.resumed)} were finished"
        print(f"ltfunc sweep: [{self.done}/{self.total}] {name}: {what} ({took:.1f} s)", file=sys.stderr)


def check_options(func: str, executor: str, opts: dict[str, Any]) -> None:
    """Executor options: types, ranges, and which executor each applies to."""
    check_choice(func, "executor", executor, EXECUTORS)
    for name in ("workers", "cpus_per_run", "time_min"):
        if opts[name] is not None:
            check_int(func, name, opts[name], 1)
    if opts["gpus_per_run"] is not None:
        check_number(func, "gpus_per_run", opts["gpus_per_run"], low=0.0)
        if executor == "slurm" and not float(opts["gpus_per_run"]).is_integer():
            raise ValueError(
                f"{func}: gpus_per_run must be a whole number for slurm, got {opts['gpus_per_run']!r}"
            )
    for name in ("address", "partition"):
        if opts[name] is not None and (not isinstance(opts[name], str) or not opts[name].strip()):
            raise TypeError(f"{func}: {name} must be a non-empty str or None, got {opts[name]!r}")
    if opts["slurm_cluster"] is not None:
        check_choice(func, "slurm_cluster", opts["slurm_cluster"], ("slurm", "local", "debug"))
    only = {"address": "ray", "partition": "slurm", "time_min": "slurm", "slurm_cluster": "slurm"}
    for name, owner in only.items():
        if opts[name] is not None and executor != owner:
            flag = "--" + name.replace("_min", "").replace("_", "-")
            raise ValueError(
                f"{func}: {name}={opts[name]!r} ({flag}) applies to executor {owner!r} only, not {executor!r}"
            )
    if executor == "local" and opts["gpus_per_run"]:
        raise ValueError(
            f"{func}: gpus_per_run={opts['gpus_per_run']!r} (--gpus-per-run) applies to executors 'ray' "
            "and 'slurm'; "
            "local runs train on the config's device (set device in [base])"
        )
    if executor == "ray" and opts["workers"] is not None and opts["address"] is not None:
        raise ValueError(
            f"{func}: workers={opts['workers']!r} sizes the local Ray instance run_sweep starts; with "
            f"address={opts['address']!r} the cluster has its own size: leave workers out"
        )
    package = {"ray": ("ray", "ray"), "slurm": ("submitit", "slurm")}.get(executor)
    if package is not None:
        import importlib.util

        if importlib.util.find_spec(package[0]) is None:
            raise missing_extra(func, package[0], package[1], executor)
    if executor == "ray":
        check_ray_address(func, opts["address"])


# --------------------------------------------------------------------------------------------
# local: a process pool


def run_local(tasks: Sequence[Task], workers: int, progress: bool) -> dict[str, Outcome]:
    """Run the tasks in a spawn-context process pool of ``workers`` processes."""
    report = _Reporter(progress, len(tasks))
    out: dict[str, Outcome] = {}
    threads = tasks[0].threads if tasks else 1
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(threads, os.getpid())
    ) as pool:
        futures = {pool.submit(run_task, t): t.name for t in tasks}
        try:
            for fut in cf.as_completed(futures):
                name = futures[fut]
                try:
                    out[name] = fut.result()
                except Exception as e:
                    out[name] = e
                report(name, out[name])
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return out


# --------------------------------------------------------------------------------------------
# ray: one task per run


def check_ray_address(func: str, address: str | None) -> None:
    """Refuse a Ray address that accepts no TCP connection within :data:`RAY_CONNECT_TIMEOUT_S`.

    ``None``, ``"auto"`` and ``"local"`` are not checked here (``ray.init`` resolves them).
    ``ray://host[:port]`` is a Ray client address (default port 10001); ``host[:port]`` is
    the cluster's GCS (default port 6379).
    """
    if address is None or address in ("auto", "local"):
        return
    if not isinstance(address, str) or not address.strip():
        raise TypeError(f"{func}: address must be a str such as 'auto' or 'HOST:6379', got {address!r}")
    text, default_port = address.strip(), 6379
    if text.startswith("ray://"):
        text, default_port = text[len("ray://") :], 10001
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, str(default_port)
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(
            f"{func}: address={address!r} (--address) is not HOST:PORT, ray://HOST:PORT or 'auto'"
        ) from None
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=RAY_CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        raise ValueError(
            f"{func}: address={address!r} (--address) is unreachable: no connection to {host}:{port} "
            f"within {RAY_CONNECT_TIMEOUT_S:g} s ({e}); start the cluster (`ray start --head`) and pass "
            "its address, or leave --address out to start a local Ray instance"
        ) from None


@contextmanager
def ray_session(func: str, address: str | None, num_cpus: int | None) -> Iterator[Any]:
    """Ray, initialized for the block: joins ``address`` or starts a local instance.

    Joins the cluster at ``address`` (``"auto"``: the one ``ray start`` runs on this machine),
    or, without one, starts a local instance of ``num_cpus`` CPUs (``None``: all) and shuts it
    down after the block; a Ray already initialized in this process is used as it is and left
    running. Yields the ``ray`` module.

    Raises:
        ImportError: ``ray`` is not installed (names the extra).
        ValueError: Ray cannot connect to ``address`` (names ``--address`` and the value).
    """
    try:
        import ray
    except ImportError:
        raise missing_extra(func, "ray", "ray", "ray") from None
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False}
        if address is not None:
            kwargs["address"] = address
        elif num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
        try:
            ray.init(**kwargs)
        except ConnectionError as e:
            raise ValueError(
                f"{func}: address={address!r} (--address) is unreachable: Ray cannot connect to it ({e})"
            ) from None
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def run_ray(
    ray: Any, tasks: Sequence[Task], *, cpus_per_run: float, gpus_per_run: float, progress: bool
) -> dict[str, Outcome]:
    """Run each task as a Ray task (``num_cpus=cpus_per_run``, ``num_gpus=gpus_per_run``), no retries."""
    remote = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)(run_task)
    pending = {remote.remote(t): t.name for t in tasks}
    report = _Reporter(progress, len(tasks))
    out: dict[str, Outcome] = {}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        name = pending.pop(done[0])
        try:
            out[name] = ray.get(done[0])
        except Exception as e:  # ray.exceptions.RayTaskError wraps the task's exception
            cause = getattr(e, "cause", None)
            out[name] = cause if isinstance(cause, BaseException) else e
        report(name, out[name])
    return out


# --------------------------------------------------------------------------------------------
# slurm: submitit jobs


def make_slurm_executor(
    func: str,
    folder: Path,
    *,
    cluster: str | None,
    partition: str | None,
    time_min: int,
    cpus_per_run: int,
    gpus_per_run: int,
    workers: int | None,
) -> Any:
    """A ``submitit.AutoExecutor`` writing its logs to ``folder``, with the sweep's job options."""
    try:
        import submitit
    except ImportError:
        raise missing_extra(func, "submitit", "slurm", "slurm") from None
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params: dict[str, Any] = {"name": "ltfunc-sweep", "timeout_min": time_min, "cpus_per_task": cpus_per_run}
    if gpus_per_run:
        params["gpus_per_node"] = gpus_per_run
    if partition is not None:
        params["slurm_partition"] = partition
    if workers is not None:
        params["slurm_array_parallelism"] = workers
    executor.update_parameters(**params)
    return executor


def run_slurm(executor: Any, tasks: Sequence[Task], progress: bool) -> dict[str, Outcome]:
    """Submit every task as one job (a job array where the cluster has them) and wait for all."""
    from submitit.helpers import as_completed

    with executor.batch():
        jobs = [executor.submit(run_task, t) for t in tasks]
    names = {id(job): t.name for job, t in zip(jobs, tasks, strict=True)}
    if progress:
        ids = ", ".join(str(j.job_id) for j in jobs[:3]) + (", ..." if len(jobs) > 3 else "")
        print(f"ltfunc sweep: submitted {len(jobs)} job(s) ({ids})", file=sys.stderr)
    report = _Reporter(progress, len(tasks))
    out: dict[str, Outcome] = {}
    for job in as_completed(jobs, poll_frequency=2.0):
        name = names[id(job)]
        try:
            out[name] = job.result()
        except Exception as e:
            out[name] = e
        report(name, out[name])
    return out
