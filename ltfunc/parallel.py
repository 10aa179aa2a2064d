"""Many trainings at once: the rounds of one or more IMP runs over worker processes or vmapped.

Once round ``k - 1`` of a ticket is trained, round ``k``'s mask is known, so the ticket's
round ``k`` and its random-reinit and random-pruning baselines are independent trainings;
the runs of different seeds are independent altogether. :func:`run_many` schedules these
trainings as tasks ``(run, condition, round)`` (the ticket rounds first: they are the
critical path), either over a pool of single-threaded worker processes, one per core, or as
the members of one vmapped step (:mod:`ltfunc.members_train`). Each task reads what it needs
from its run directory (θ0, the previous ticket round, the rewind point) and saves its round
there through :mod:`ltfunc.rundir`, exactly as :func:`ltfunc.run_imp` does: the layout per
seed and condition is unchanged, a killed worker (or a killed parent) leaves every finished
round on disk, and re-running the same command resumes.

Why processes on a CPU: a LeNet-sized step does not fill two cores, and stacking K runs in one
vmapped step does not remove FLOPs or bytes there (``bench/members.py``), while one
single-threaded run per core uses every core. On a GPU, stacking the trainings as vmapped
members of one step is the lever.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import functools
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple

import torch

from . import allocator, rundir
from ._checks import check_bool, check_callable, check_choice, check_int
from .config import ImpConfig
from .data import Dataset
from .experiment import RecordSink, RunResult, _Progress, _Saver, load_config_dataset, open_run, run_imp
from .ticket import _finish, _Plan, _plan_baseline, _plan_dense, _plan_ticket, _run_plan
from .trainer import Trainer

__all__ = ["AUTO_MIN_ITERATIONS", "PARALLEL", "available_cores", "choose_parallel", "run_many"]

PARALLEL: tuple[str, ...] = ("auto", "sequential", "processes", "vmap")
"""How :func:`run_many` runs the trainings: ``"auto"`` (see :func:`choose_parallel`),
``"sequential"`` (one :func:`ltfunc.run_imp` after the other, in this process),
``"processes"`` (worker processes, one single-threaded worker per core by default) or
``"vmap"`` (the ready trainings that share an architecture and recipe as members of one
vmapped step in this process, :func:`ltfunc.members_train.train_members_round`)."""


class _Task(NamedTuple):
    run: int
    condition: str
    round: int


class _Spec(NamedTuple):
    """What a worker needs to train one task (picklable)."""

    config: dict[str, Any]
    run_dir: str
    condition: str
    round: int
    data_root: str | None
    download: bool | None
    verify: bool


def available_cores() -> int:
    """The number of CPU cores this process may run on.

    Returns:
        ``len(os.sched_getaffinity(0))`` where the platform has it, else ``os.cpu_count()``.

    Example:
        >>> from ltfunc.parallel import available_cores
        >>> available_cores() >= 1
        True
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


AUTO_MIN_ITERATIONS = 20_000
"""``parallel="auto"`` on a CPU spreads the trainings over processes only when they add up to
at least this many iterations: below it, starting the workers (importing torch, loading the
data, compiling the step in each) takes longer than the second core saves (measured in
``bench/parallel.py``; see ``bench/README.md``)."""


def choose_parallel(configs: Sequence[ImpConfig], *, cores: int | None = None) -> str:
    """The way :func:`run_many` runs ``configs`` when asked for ``parallel="auto"``.

    When at least two trainings can run at once (two runs, or one run with a baseline):
    ``"vmap"`` when the runs train on a GPU (a LeNet-sized step uses a sliver of it; K
    members in one step cost little more than one); ``"processes"`` on a CPU with at least
    two cores when the trainings add up to :data:`AUTO_MIN_ITERATIONS` or more (stacking does
    not remove FLOPs or bytes on a CPU, while one single-threaded run per core uses every
    core: ``bench/members.py``, ``bench/parallel.py``); else ``"sequential"``.

    Args:
        configs: The runs' configs.
        cores: Cores to plan for (default :func:`available_cores`).

    Returns:
        ``"vmap"``, ``"processes"`` or ``"sequential"``.

    Example:
        >>> from ltfunc import ImpConfig
        >>> from ltfunc.parallel import choose_parallel
        >>> choose_parallel([ImpConfig()], cores=2), choose_parallel([ImpConfig()], cores=1)
        ('processes', 'sequential')
        >>> choose_parallel([ImpConfig(iterations=100)], cores=2), choose_parallel([ImpConfig(device="cuda")])
        ('sequential', 'vmap')
    """
    cores = available_cores() if cores is None else cores
    if not (len(configs) > 1 or any(c.baselines for c in configs)):
        return "sequential"
    kinds = {torch.device(c.device).type for c in configs}
    if kinds == {"cuda"}:
        return "vmap"
    work = sum(c.iterations * (1 + c.rounds * (1 + len(c.baselines))) for c in configs)
    return "processes" if kinds == {"cpu"} and cores >= 2 and work >= AUTO_MIN_ITERATIONS else "sequential"


# Worker side ------------------------------------------------------------------------------------
_CONTEXTS: dict[str, tuple[torch.nn.Module, Trainer]] = {}
"""Per worker process: the model and trainer of each config (its seed set to 0): the step is
compiled once per architecture and reused by every task, seed and round the worker gets."""


def _use_threads(threads: int) -> None:
    """A worker's share of the cores: torch's intra-op threads and inductor's compile workers.

    Inductor compiles in a pool of ``compile_threads`` subprocesses (one per core by default)
    that it starts at the first compile. In a worker with one core to itself that pool only
    competes with the other workers' start-up (``bench/README.md``, "A study's rounds"), so it
    gets the worker's share too, unless ``TORCHINDUCTOR_COMPILE_THREADS`` is set.
    """
    n = max(1, threads)
    torch.set_num_threads(n)
    if "TORCHINDUCTOR_COMPILE_THREADS" in os.environ:
        return
    config = sys.modules.get("torch._inductor.config")
    if config is None:  # read by inductor's config when it is first imported
        os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = str(n)
    else:
        config.compile_threads = n  # type: ignore[attr-defined]


def _init_worker(threads: int, parent: int | None = None) -> None:
    """Pool worker start-up: its share of the cores (``_use_threads``), malloc keeping freed
    memory (:mod:`ltfunc.allocator`) and (Linux) death with the process ``parent`` that started it."""
    _use_threads(threads)
    allocator.at_entry()
    if sys.platform.startswith("linux"):
        try:  # PR_SET_PDEATHSIG = 1: a killed parent does not leave workers writing its runs
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl
            pass
    if parent is not None and os.getppid() != parent:  # it died while this worker was starting
        os._exit(1)


def _context_key(config: ImpConfig) -> str:
    from dataclasses import replace

    return replace(config, seed=0).config_hash()  # the seed only sets θ0 (read from disk) and the data order


def _context(config: ImpConfig, load: Callable[[], Dataset]) -> tuple[torch.nn.Module, Trainer]:
    """The model and trainer of ``config`` (made once per process and architecture; its seed's data order)."""
    from .experiment import make_config_trainer

    key = _context_key(config)
    if key not in _CONTEXTS:
        model = config.make_model().to(config.device)
        _CONTEXTS[key] = (model, make_config_trainer(config, model, load()))
    model, trainer = _CONTEXTS[key]
    return model, trainer._replace(data_seed=config.seed)


def _plan_task(
    func: str, config: ImpConfig, run: Path, condition: str, k: int, model: torch.nn.Module
) -> _Plan:
    """What a task trains, read from its run directory (as :func:`ltfunc.run_imp` would make it)."""
    if k == 0:
        theta0 = rundir.load_weights(func, rundir.init_path(run), config.device)
        return _plan_dense(model, theta0, config.rewind, None)
    point = rundir.load_rewind_point(func, run, config.rewind, config.device)
    seed, rewind, structure = config.seed, config.rewind, config.structure
    if condition != "ticket" and rundir.is_finished(run, "ticket", k):  # its mask, no weights
        mask = rundir.load_round_mask(run, "ticket", k, device=config.device)
        return _plan_baseline(condition, k, mask, point, model, seed, rewind, structure)
    previous = rundir.load_round(run, "ticket", k - 1, device=config.device)
    ticket = _plan_ticket(
        previous, point, config.rates(), config.scope, config.schedule, config.rewind, config.structure
    )
    if condition == "ticket":
        return ticket
    return _plan_baseline(condition, k, ticket.mask, point, model, seed, rewind, structure)


def _train_task(spec: _Spec) -> None:
    """Train one round of one run and save it (in a worker process)."""
    config = ImpConfig.from_dict(spec.config)
    model, trainer = _context(
        config,
        lambda: load_config_dataset(config, spec.data_root, download=spec.download, verify=spec.verify),
    )
    run = Path(spec.run_dir)
    saver = _Saver(run, config, _Progress(False, 0), None)
    try:
        plan = _plan_task("run_many", config, run, spec.condition, spec.round, model)
        saver.save(_run_plan(trainer, plan, saver.hooks))
    finally:
        saver.abandon()


# Parent side ------------------------------------------------------------------------------------
def _check_runs(func: str, runs: Any) -> list[tuple[ImpConfig, Path]]:
    if not isinstance(runs, Sequence) or isinstance(runs, (str, bytes)) or not runs:
        raise TypeError(
            f"{func}: runs must be a non-empty sequence of (ImpConfig, run_dir) pairs, got {runs!r}"
        )
    out: list[tuple[ImpConfig, Path]] = []
    seen: dict[Path, int] = {}
    for i, pair in enumerate(runs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"{func}: runs[{i}] must be an (ImpConfig, run_dir) pair, got {pair!r}")
        config, path = pair
        if not isinstance(config, ImpConfig):
            raise TypeError(f"{func}: runs[{i}][0] must be an ImpConfig, got {type(config).__name__}")
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"{func}: runs[{i}][1] must be a path, got {type(path).__name__} {path!r}")
        run = Path(path)
        key = run.resolve()
        if key in seen:
            raise ValueError(
                f"{func}: runs[{seen[key]}] and runs[{i}] both write {run}; give each run its own directory"
            )
        seen[key] = i
        out.append((config, run))
    return out


class _Schedule:
    """Which tasks of which runs are finished, running, or ready (ticket rounds first)."""

    def __init__(self, configs: list[ImpConfig], runs: list[Path]) -> None:
        self.configs = configs
        self.finished: set[_Task] = set()
        self.running: set[_Task] = set()
        self.all: list[_Task] = []
        for i, (config, run) in enumerate(zip(configs, runs, strict=True)):
            for k in range(config.rounds + 1):
                for condition in ("ticket", *(config.baselines if k else ())):
                    task = _Task(i, condition, k)
                    self.all.append(task)
                    if rundir.is_finished(run, condition, k):
                        self.finished.add(task)
        self.resumed = set(self.finished)

    def ready(self) -> list[_Task]:
        def deps_met(t: _Task) -> bool:
            return t.round == 0 or _Task(t.run, "ticket", t.round - 1) in self.finished

        todo = [t for t in self.all if t not in self.finished and t not in self.running and deps_met(t)]
        # the ticket rounds are the critical path; then the oldest rounds, run by run
        return sorted(todo, key=lambda t: (t.condition != "ticket", t.round, t.run))

    def done(self) -> bool:
        return len(self.finished) == len(self.all)


def run_many(
    runs: Sequence[tuple[ImpConfig, str | os.PathLike[str]]],
    *,
    parallel: str = "auto",
    workers: int | None = None,
    data_root: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: bool = True,
    download: bool | None = None,
    on_record: RecordSink | Sequence[RecordSink] | None = None,
    verify: bool = True,
) -> tuple[RunResult, ...]:
    """Run (or resume) several IMP runs, their rounds spread over worker processes.

    Each run is what :func:`ltfunc.run_imp` would make of it, in the same run directory
    layout (the trainings are the same functions on the same inputs; worker processes run
    single-threaded and vmapped members run batched kernels, so float results can differ
    from a multi-threaded run in the last bits).
    Every run directory is checked and locked, and every dataset loaded and checked, before
    any training. Resuming works as for :func:`ltfunc.run_imp`: finished rounds are kept,
    an unfinished one is redone from its start, also after a worker was killed. Workers are
    started with the ``spawn`` method and die with this process (Linux), so a script that
    calls ``run_many`` with ``"processes"`` must do it under ``if __name__ == "__main__":``.

    Args:
        runs: ``(config, run_dir)`` pairs (e.g. one per seed), each run in its own directory.
        parallel: One of :data:`PARALLEL`.
        workers: ``"processes"``: worker processes (default: one per core, at most as many as
            trainings can run at once), each with ``cores // workers`` threads (at least 1);
            ``"vmap"``: the most members in one step (default: all that can run at once).
        data_root: As for :func:`ltfunc.run_imp`.
        force: Delete runs found in the directories (whatever their config) and start over.
        progress: One tqdm bar over all trainings (``"sequential"``: :func:`ltfunc.run_imp`'s bars).
        download: As for :func:`ltfunc.run_imp`.
        on_record: ``on_record(condition, round, record)`` (one for all runs, or a sequence with
            one per run, e.g. :class:`ltfunc.experiment.TensorBoardSink`); with worker processes
            it is called in this process with a round's records when the round is finished.
        verify: As for :func:`ltfunc.run_imp`.

    Returns:
        One :class:`ltfunc.experiment.RunResult` per run, in the order of ``runs``.

    Raises:
        TypeError: ``runs`` is not a sequence of ``(ImpConfig, path)`` pairs; bad option types.
        ValueError: Two runs share a directory; an unknown ``parallel``; ``workers < 1``; any
            error :func:`ltfunc.run_imp` raises before training (another config in a
            directory, a lock held by a live process, a config that does not fit its data).
        RuntimeError: A worker process died (killed): the message names the trainings it
            interrupted; finished rounds are saved, re-run to resume.
        FloatingPointError: A training diverged (the others running at that time finish and
            are saved first).

    Example:
        >>> from ltfunc import ImpConfig
        >>> from ltfunc.parallel import run_many
        >>> runs = [(ImpConfig(seed=s, rounds=2, iterations=300), f"runs/quick-seed{s}") for s in (0, 1)]
        >>> results = run_many(runs, parallel="processes")  # doctest: +SKIP
    """
    func = "run_many"
    pairs = _check_runs(func, runs)
    check_choice(func, "parallel", parallel, PARALLEL)
    if workers is not None:
        check_int(func, "workers", workers, 1)
    check_bool(func, "force", force)
    check_bool(func, "progress", progress)
    check_bool(func, "verify", verify)
    sinks = _check_sinks(func, on_record, len(pairs))
    configs = [c for c, _ in pairs]
    how = choose_parallel(configs) if parallel == "auto" else parallel
    sparse = [i for i, c in enumerate(configs) if c.sparse != "off"]
    if how == "vmap" and sparse:
        raise ValueError(
            f"{func}: parallel='vmap' trains dense-masked members; runs[{sparse[0]}] asks for "
            f"sparse={configs[sparse[0]].sparse!r}: use parallel='processes' or 'sequential', or sparse='off'"
        )
    opts = _Options(data_root, force, progress, download, verify)
    if how == "sequential":
        return _sequential(func, pairs, opts, sinks)
    return _together(func, how, pairs, workers, opts, sinks)


def _check_sinks(func: str, on_record: Any, n: int) -> list[RecordSink | None]:
    if on_record is None or callable(on_record):
        return [on_record] * n
    if isinstance(on_record, Sequence) and not isinstance(on_record, str) and len(on_record) == n:
        for i, sink in enumerate(on_record):
            check_callable(func, f"on_record[{i}]", sink, "callable(condition, round, record)")
        return list(on_record)
    raise TypeError(
        f"{func}: on_record must be callable(condition, round, record), a sequence of {n} of them "
        f"(one per run) or None, got {on_record!r}"
    )


def _modes(func: str, pairs: list[tuple[ImpConfig, Path]], force: bool) -> list[str]:
    return [rundir.check_writable(func, run, config, resume=True, force=force) for config, run in pairs]


def _load_datasets(pairs: list[tuple[ImpConfig, Path]], opts: _Options) -> list[Dataset]:
    cache: dict[tuple[Any, ...], Dataset] = {}
    out = []
    for config, _ in pairs:
        key = (config.dataset, config.val_size, config.device)
        if key not in cache:
            cache[key] = load_config_dataset(
                config, opts.data_root, download=opts.download, verify=opts.verify
            )
        out.append(cache[key])
    return out


class _Options(NamedTuple):
    """The run options :func:`run_many` passes on (as :func:`ltfunc.run_imp` takes them)."""

    data_root: Any
    force: bool
    progress: bool
    download: bool | None
    verify: bool


def _sequential(
    func: str, pairs: list[tuple[ImpConfig, Path]], opts: _Options, sinks: list[RecordSink | None]
) -> tuple[RunResult, ...]:
    from .experiment import _check_fits_data

    _modes(func, pairs, opts.force)  # every directory checked before the first run trains
    for (config, _), dataset in zip(pairs, _load_datasets(pairs, opts), strict=True):
        _check_fits_data(func, config, dataset)
    return tuple(
        run_imp(config, run, on_record=sink, **opts._asdict())
        for (config, run), sink in zip(pairs, sinks, strict=True)
    )


def _together(
    func: str,
    how: str,
    pairs: list[tuple[ImpConfig, Path]],
    workers: int | None,
    opts: _Options,
    sinks: list[RecordSink | None],
) -> tuple[RunResult, ...]:
    """``"processes"`` and ``"vmap"``: lock and open every run, then train the tasks as they become ready."""
    modes = _modes(func, pairs, opts.force)
    configs, runs = [c for c, _ in pairs], [r for _, r in pairs]
    with ExitStack() as stack:
        for run in runs:
            stack.enter_context(rundir.lock(func, run))
        datasets = _load_datasets(pairs, opts)
        for (config, run), mode, dataset in zip(pairs, modes, datasets, strict=True):
            open_run(func, config, run, mode, dataset)  # checks and reads first, then writes config and θ0
        schedule = _Schedule(configs, runs)
        width = max(len(c.baselines) + 1 for c in configs) * len(configs)
        cores = available_cores()
        n = workers if workers is not None else (width if how == "vmap" else max(1, min(cores, width)))
        bar = None
        if opts.progress:
            from tqdm.auto import tqdm

            what = f"{n} worker(s)" if how == "processes" else f"<= {n} vmapped member(s)"
            bar = tqdm(total=len(schedule.all), desc=f"{len(runs)} run(s), {what}", unit="round")
            bar.update(len(schedule.finished))
        trained: list[_Task] = []
        try:
            if how == "processes":
                root = None if opts.data_root is None else os.fspath(opts.data_root)
                specs = {
                    t: _Spec(
                        configs[t.run].to_dict(),
                        os.fspath(runs[t.run]),
                        t.condition,
                        t.round,
                        root,
                        opts.download,
                        opts.verify,
                    )
                    for t in schedule.all
                }
                _drive(func, schedule, specs, runs, n, max(1, cores // n), bar, sinks, trained)
            else:
                _drive_vmap(func, schedule, pairs, datasets, n, bar, sinks, trained)
        finally:
            if bar is not None:
                bar.close()
        results = []
        for i, (config, run) in enumerate(pairs):
            rundir.write_summary_csv(run)
            rows = rundir.summary_rows(func, run)
            done = tuple((t.condition, t.round) for t in trained if t.run == i)
            kept = tuple((t.condition, t.round) for t in schedule.all if t.run == i and t in schedule.resumed)
            results.append(RunResult(run, config, tuple(rows), done, kept))
        return tuple(results)


def _drive_vmap(
    func: str,
    schedule: _Schedule,
    pairs: list[tuple[ImpConfig, Path]],
    datasets: list[Dataset],
    n: int,
    bar: Any,
    sinks: list[RecordSink | None],
    trained: list[_Task],
) -> None:
    """Train the ready tasks that share a trainer and a start as vmapped members, up to ``n`` at once."""
    from .members_train import members_step_for, train_members_round

    vsteps: dict[tuple[str, int, bool], Any] = {}

    def group(t: _Task) -> tuple[str, int, int | None]:
        config = pairs[t.run][0]
        start, capture = (0, config.rewind) if t.round == 0 else (config.rewind, None)
        return _context_key(config), start, capture

    while not schedule.done():
        ready = schedule.ready()
        key = group(ready[0])
        tasks = [t for t in ready if group(t) == key][:n]
        trainers, plans, savers = [], [], []
        for t in tasks:
            config, run = pairs[t.run]
            model, trainer = _context(config, functools.partial(datasets.__getitem__, t.run))
            trainers.append(trainer)
            plans.append(_plan_task(func, config, run, t.condition, t.round, model))
            savers.append(_Saver(run, config, _Progress(False, 0), sinks[t.run]))
        shared = len({tr.data_seed for tr in trainers}) == 1
        vkey = (key[0], len(tasks), shared)
        if vkey not in vsteps:
            vsteps[vkey] = members_step_for(trainers)
        try:
            records = [saver.hooks(p.condition, p.round)[0] for saver, p in zip(savers, plans, strict=True)]
            outs = train_members_round(
                trainers,
                [p.start for p in plans],
                [p.mask for p in plans],
                start_iteration=key[1],
                capture_at=key[2],
                on_records=records,
                vstep=vsteps[vkey],
            )
            for t, saver, plan, out in zip(tasks, savers, plans, outs, strict=True):
                saver.save(_finish(plan, out))
                schedule.finished.add(t)
                trained.append(t)
                if bar is not None:
                    bar.update(1)
        finally:
            for saver in savers:
                saver.abandon()


def _drive(
    func: str,
    schedule: _Schedule,
    specs: dict[_Task, _Spec],
    runs: list[Path],
    n: int,
    threads: int,
    bar: Any,
    sinks: list[RecordSink | None],
    trained: list[_Task],
) -> None:
    """Keep ``n`` workers busy with ready tasks until every task is finished or one fails."""
    context = multiprocessing.get_context("spawn")
    pool = cf.ProcessPoolExecutor(
        max_workers=n, mp_context=context, initializer=_init_worker, initargs=(threads, os.getpid())
    )
    futures: dict[cf.Future[None], _Task] = {}
    failure: BaseException | None = None
    try:
        while not schedule.done():
            if failure is None:
                for task in schedule.ready()[: n - len(futures)]:
                    schedule.running.add(task)
                    futures[pool.submit(_train_task, specs[task])] = task
            if not futures:
                break
            finished, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
            for future in finished:
                task = futures.pop(future)
                schedule.running.discard(task)
                error = future.exception()
                if isinstance(error, cf.process.BrokenProcessPool):
                    interrupted = sorted({task, *futures.values()})
                    names = ", ".join(f"{t.condition} round {t.round} of {runs[t.run]}" for t in interrupted)
                    raise RuntimeError(
                        f"{func}: a worker process died while training {names}; every finished round "
                        "is saved: run the same command again to resume"
                    ) from error
                if error is not None:
                    failure = failure or error
                    getattr(error, "add_note", print)(
                        f"{func}: while training {task.condition} round {task.round} of {runs[task.run]}"
                    )
                    continue
                schedule.finished.add(task)
                trained.append(task)
                _replay(func, runs[task.run], task, sinks[task.run])
                if bar is not None:
                    bar.set_postfix_str(
                        f"{task.condition} {task.round} of {runs[task.run].name}", refresh=False
                    )
                    bar.update(1)
        if failure is not None:
            raise failure
    except BaseException:
        # stop what is still queued or running: unfinished rounds are redone on resume
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.kill()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _replay(func: str, run: Path, task: _Task, on_record: RecordSink | None) -> None:
    if on_record is None:
        return
    for record in rundir.round_metrics(func, run, task.condition, task.round):
        on_record(task.condition, task.round, record)
