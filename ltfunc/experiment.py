"""Resumable IMP experiments: :func:`run_imp` runs an :class:`~ltfunc.config.ImpConfig` into a run directory.

A thin loop over :func:`ltfunc.imp` and :func:`ltfunc.baseline_round`: every finished round
is saved through :mod:`ltfunc.rundir` (which owns the layout); rounds already finished are
skipped on resume and an unfinished one is redone from its start. The mask of round ``k + 1``
is a pure function of round ``k``'s mask and final weights, and the saved weights hold the
buffers (BatchNorm statistics) too, so a resumed run reproduces an uninterrupted one exactly.

The baselines start at round 1: their round 0 would be the dense ticket round 0 itself.

Every evaluation record goes to the round's ``metrics.jsonl`` (the source of truth) and then
to an optional sink ``on_record(condition, round, record)``; :class:`TensorBoardSink` is one
(``ltfunc imp --tensorboard DIR``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from . import distributed, rundir
from ._checks import check_bool, check_callable, check_choice, check_path
from .config import ImpConfig, call_factory, is_import_path, resolve_factory
from .data import Dataset, load_dataset
from .distributed import DataParallel
from .masks import Mask, density, ones
from .step import make_train_step
from .ticket import Record, RoundResult, _baseline_of, imp
from .trainer import Trainer, Weights, make_evaluator, make_trainer

__all__ = [
    "RecordSink",
    "RunResult",
    "TensorBoardSink",
    "load_config_dataset",
    "make_config_trainer",
    "run_imp",
]

RecordSink = Callable[[str, int, Mapping[str, Any]], None]
"""``on_record(condition, round, record)``: called with every evaluation record of a round,
after it is written to ``metrics.jsonl`` (``record``: :data:`ltfunc.rundir.METRIC_FIELDS`)."""


class RunResult(NamedTuple):
    """What :func:`run_imp` returns."""

    run_dir: Path
    """The run directory."""
    config: ImpConfig
    """The config of the run."""
    rows: tuple[dict[str, Any], ...]
    """The rows of ``summary.csv`` (``condition`` + :data:`ltfunc.rundir.SUMMARY_FIELDS`), ticket first."""
    trained: tuple[tuple[str, int], ...]
    """``(condition, round)`` pairs this call trained."""
    resumed: tuple[tuple[str, int], ...]
    """``(condition, round)`` pairs that were already finished and were skipped."""


def make_config_trainer(
    config: ImpConfig,
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    splits: Sequence[str] = ("val", "test"),
    eval_every: int | None = None,
    parallel: DataParallel | None = None,
) -> Trainer:
    """The :class:`ltfunc.trainer.Trainer` a config describes, as :func:`run_imp` builds it.

    Its optimizer (:meth:`ImpConfig.make_optimizer`), its learning rate or schedule
    (:meth:`ImpConfig.make_schedule`: warm-up, milestones, cosine), the masked training step
    (compiled when ``config.compile``), the data order of ``config.seed`` (augmented with
    ``config.augment``) and an evaluator on ``splits``.

    Args:
        config: The experiment config.
        model: The module (``build(config.model, ...)``), on ``config.device``.
        dataset: The loaded dataset (:func:`ltfunc.load_dataset`), on ``config.device``.
        splits: Names of the dataset's splits to evaluate on (``"train"``, ``"val"``, ``"test"``).
        eval_every: Evaluation interval (``None``: ``config.eval_every``).
        parallel: Data-parallel training (:func:`ltfunc.distributed.init`): the step averages
            gradients across ranks and each rank trains on its shard of every batch.

    Returns:
        The trainer, for :func:`ltfunc.train_round` and the round functions.

    Raises:
        TypeError: ``config`` is not an :class:`ImpConfig`.
        ValueError: A split name other than ``"train"``, ``"val"``, ``"test"``.

    Example:
        >>> import torch, ltfunc
        >>> from ltfunc.experiment import make_config_trainer
        >>> x, y = torch.randn(40, 1, 28, 28), torch.randint(0, 10, (40,))
        >>> ds = ltfunc.data.Dataset("mnist", (x, y), None, (x, y))
        >>> cfg = ltfunc.ImpConfig(iterations=4, batch_size=8, eval_every=2, compile=False)
        >>> t = make_config_trainer(cfg, ltfunc.models.lenet300(seed=0), ds, splits=("test",))
        >>> (t.iterations, t.batch_size, t.eval_every)
        (4, 8, 2)
    """
    func = "make_config_trainer"
    if not isinstance(config, ImpConfig):
        raise TypeError(f"{func}: config must be an ImpConfig, got {type(config).__name__}")
    for name in splits:
        check_choice(func, "splits", name, ("train", "val", "test"))
    return make_trainer(
        make_train_step(
            model,
            config.make_optimizer(),
            compile=config.compile,
            grad_reduce=None if parallel is None else parallel.mean,
        ),
        dataset.train,
        iterations=config.iterations,
        batch_size=config.batch_size,
        lr=config.make_schedule(),
        data_seed=config.seed,
        eval_every=config.eval_every if eval_every is None else eval_every,
        evaluate=make_evaluator(model, {n: getattr(dataset, n) for n in splits}, compile=config.compile),
        augment=config.augment,
        parallel=parallel,
        sparse=config.sparse,
    )


def load_config_dataset(
    config: ImpConfig,
    data_root: str | os.PathLike[str] | None = None,
    *,
    download: bool | None = None,
    verify: bool = True,
) -> Dataset:
    """The dataset a config trains on, on ``config.device`` with ``config.val_size`` held out.

    A registry name goes to :func:`ltfunc.load_dataset`; an import path
    ``package.module:factory`` is called with those of ``root=``, ``device=``, ``val_size=``
    and ``download=`` it accepts and must return an :class:`ltfunc.data.Dataset`.
    ``verify`` is passed to :func:`ltfunc.load_dataset` (the MD5 check of the CIFAR files);
    a factory is not given it.

    Raises:
        TypeError: ``config`` not an :class:`ImpConfig`; a factory that does not return a
            :class:`ltfunc.data.Dataset`.
        ValueError, FileNotFoundError: From :func:`ltfunc.load_dataset` or the factory.

    Example:
        >>> from ltfunc import ImpConfig
        >>> from ltfunc.experiment import load_config_dataset
        >>> load_config_dataset(ImpConfig(), "../shared/data").name  # doctest: +SKIP
        'mnist'
    """
    func = "load_config_dataset"
    if not isinstance(config, ImpConfig):
        raise TypeError(f"{func}: config must be an ImpConfig, got {type(config).__name__}")
    if not is_import_path(config.dataset):
        return load_dataset(
            config.dataset,
            data_root,
            device=config.device,
            val_size=config.val_size,
            download=download,
            verify=verify,
        )
    factory = resolve_factory(func, "dataset", config.dataset)
    offered = {"root": data_root, "device": config.device, "val_size": config.val_size, "download": download}
    out = call_factory(func, factory, offered, {})
    if not isinstance(out, Dataset):
        raise TypeError(
            f"{func}: dataset={config.dataset!r} must return an ltfunc.data.Dataset, got {type(out).__name__}"
        )
    return out


class TensorBoardSink:
    """A :data:`RecordSink` that writes every evaluation to TensorBoard event files.

    Tags ``<condition>/round_<k>/<metric>`` (``ticket/round_3/test_accuracy``, ...) for every
    number of the record (train / val / test loss and accuracy, density) and
    ``<condition>/round_<k>/lr``, the learning rate of the step before the evaluation, with
    the iteration as the step. Needs the ``tensorboard`` package (``pip install
    'ltfunc[tensorboard]'``); imported only when a sink is made. The JSONL metrics stay the
    source of truth: this is a view of them.

    Args:
        log_dir: Folder for the event files (created).
        config: The run's config (for the learning rate).

    Raises:
        ImportError: ``tensorboard`` is not installed (the message says how to install it).

    Example:
        >>> from ltfunc import ImpConfig, run_imp
        >>> from ltfunc.experiment import TensorBoardSink
        >>> sink = TensorBoardSink("runs/tb/quick", ImpConfig(rounds=1, iterations=300))  # doctest: +SKIP
        >>> run_imp(sink.config, "runs/quick", on_record=sink)  # doctest: +SKIP
        >>> sink.close()  # doctest: +SKIP
    """

    def __init__(self, log_dir: str | os.PathLike[str], config: ImpConfig) -> None:
        func = "TensorBoardSink"
        path = check_path(func, "log_dir", log_dir)
        if not isinstance(config, ImpConfig):
            raise TypeError(f"{func}: config must be an ImpConfig, got {type(config).__name__}")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError(
                f"{func}: writing TensorBoard files needs the tensorboard package: "
                f"pip install 'ltfunc[tensorboard]' ({e})"
            ) from e
        self.config = config
        self.log_dir = path
        self._lr = config.make_schedule()
        self._writer = SummaryWriter(log_dir=str(path))

    def __call__(self, condition: str, k: int, record: Mapping[str, Any]) -> None:
        step = int(record["iteration"])
        prefix = f"{condition}/round_{k}"
        for name, value in record.items():
            if name != "iteration" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(f"{prefix}/{name}", float(value), step)
        lr = self._lr(max(step - 1, 0)) if callable(self._lr) else self._lr
        self._writer.add_scalar(f"{prefix}/lr", float(lr), step)

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()


class _Progress:
    """Optional tqdm bars: one over all rounds, one per round over iterations."""

    def __init__(self, enabled: bool, total_rounds: int) -> None:
        self.outer: Any = None
        self.bar: Any = None
        if enabled:
            from tqdm.auto import tqdm

            self._tqdm = tqdm
            self.outer = tqdm(total=total_rounds, desc="rounds", unit="round", dynamic_ncols=True)

    def start(self, label: str, iterations: int) -> Any:
        if self.outer is None:
            return None
        self.outer.set_description(label)
        self.bar = self._tqdm(total=iterations, desc=label, unit="it", leave=False, dynamic_ncols=True)
        return self.bar

    def end_round(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def advance(self, summary: Mapping[str, Any] | None = None) -> None:
        if self.outer is None:
            return
        if summary is not None and summary.get("test_accuracy_at_early_stop") is not None:
            self.outer.set_postfix(
                weights=f"{summary['weights_remaining_pct']:.1f}%",
                es_acc=f"{summary['test_accuracy_at_early_stop']:.4f}",
                refresh=False,
            )
        self.outer.update(1)

    def close(self) -> None:
        self.end_round()
        if self.outer is not None:
            self.outer.set_description("rounds", refresh=False)
            self.outer.close()


def _check_fits_data(func: str, config: ImpConfig, dataset: Dataset) -> None:
    """Settings that depend on the data, checked before the run directory is touched."""
    n_train = int(dataset.train[1].shape[0])
    if config.batch_size > n_train:
        raise ValueError(
            f"{func}: batch_size={config.batch_size} is larger than the {n_train} training examples left "
            f"after holding out val_size={config.val_size} of {config.dataset}; lower --batch-size or "
            "--val-size"
        )


def _check_overrides(func: str, config: ImpConfig, mask: Mask) -> None:
    unknown = [k for k in config.overrides if k not in mask]
    if unknown:
        raise ValueError(
            f"{func}: overrides name {unknown}, which are not prunable parameters of {config.model}; "
            f"prunable: {list(mask)}"
        )
    config.check_structure(mask, func=func)  # a factory's model is first seen here


class OpenedRun(NamedTuple):
    """What :func:`open_run` read from a run directory it is about to (re)start."""

    model: torch.nn.Module
    """The config's model, on its device (the template for baselines and evaluation)."""
    theta0: Weights
    """θ0: the saved ``init.safetensors`` of a resumed run, else the new model's weights."""
    done: int
    """Ticket rounds ``0 .. done - 1`` are finished."""
    previous: RoundResult | None
    """The last finished ticket round (``None`` when ``done == 0``)."""
    point: Weights | None
    """The rewind point (``None`` when ``done == 0``)."""


def open_run(func: str, config: ImpConfig, run: Path, mode: str, dataset: Dataset) -> OpenedRun:
    """Check and read a run directory, then prepare it for training (the caller holds its lock).

    Everything that can fail is checked and read first (the config fits the data and the
    model, every finished round's summary, the last finished ticket round, the rewind
    point); only then is the directory touched: cleared when ``mode == "clear"``, stale
    temporary files removed, ``config.json`` and ``init.safetensors`` written when missing.

    Args:
        func: The public caller's name (for messages).
        config: The run's config.
        run: The run directory.
        mode: :func:`ltfunc.rundir.check_writable`'s answer (``"new"``, ``"resume"``, ``"clear"``).
        dataset: The loaded dataset (:func:`load_config_dataset`).

    Returns:
        :class:`OpenedRun`.

    Raises:
        ValueError: The config does not fit the data or the model; a corrupt checkpoint or
            summary (the message names the file).
    """
    resuming = mode == "resume"
    _check_fits_data(func, config, dataset)
    model = config.make_model().to(config.device)
    if resuming and rundir.init_path(run).is_file():
        theta0 = rundir.load_weights(func, rundir.init_path(run), config.device)
    else:
        theta0 = Weights.of(model)
    _check_overrides(func, config, ones(model))
    if resuming:  # every finished round's summary.json and mask is checked now, before any training
        rundir.summary_rows(func, run)
        rundir.check_masks(func, run)
    done = 0  # ticket rounds 0 .. done-1 are finished
    while resuming and done <= config.rounds and rundir.is_finished(run, "ticket", done):
        done += 1
    # the last finished ticket round's weights, if a ticket round is still to train
    previous = (
        rundir.load_round(run, "ticket", done - 1, device=config.device)
        if 0 < done <= config.rounds
        else None
    )
    point = rundir.load_rewind_point(func, run, config.rewind, config.device) if done else None
    # everything is checked and read: only now touch the directory
    if mode == "clear":
        rundir.clear(run)
    rundir.remove_stale_temps(run)
    if not resuming:
        rundir.write_config(run, config)
    rundir.save_init(run, theta0)
    return OpenedRun(model, theta0, done, previous, point)


def _open_ranks(
    func: str, config: ImpConfig, run: Path, mode: str, dataset: Dataset, parallel: DataParallel | None
) -> OpenedRun:
    """:func:`open_run` on rank 0 (the one that reads and writes ``run``); the others get what it read."""
    if parallel is None or parallel.world_size == 1:
        return open_run(func, config, run, mode, dataset)
    kept: list[torch.nn.Module] = []

    def read() -> OpenedRun:
        opened = open_run(func, config, run, mode, dataset)
        kept.append(opened.model)
        return opened._replace(model=None)  # type: ignore[arg-type]  # built on every rank

    opened = distributed.agree(func, parallel, read, device=config.device)
    return opened._replace(model=kept[0] if kept else config.make_model().to(config.device))


class _Saver:
    """Opens a round's log and bar when it starts (:data:`ltfunc.ticket.RoundHooks`), saves it when done.

    With ``parallel``, every rank compares the round's mask checksum and only rank 0 writes.
    """

    def __init__(
        self,
        run: Path,
        config: ImpConfig,
        bars: _Progress,
        sink: RecordSink | None,
        parallel: DataParallel | None = None,
    ) -> None:
        self.run, self.config, self.bars, self.sink = run, config, bars, sink
        self.parallel = parallel
        self.lead = parallel is None or parallel.lead
        self.log: rundir.MetricsLog | None = None
        self.began = 0.0
        self.current = ("ticket", 0)
        self.trained: list[tuple[str, int]] = []

    def hooks(self, condition: str, k: int) -> tuple[Any, Any]:
        if not self.lead:
            return None, None
        self.log = rundir.start_round(self.run, condition, k)
        self.began = time.perf_counter()
        self.current = (condition, k)
        bar = self.bars.start(
            f"{condition} round {k}", self.config.iterations - (self.config.rewind if k else 0)
        )
        return self._append, bar

    def _append(self, record: Record) -> None:
        assert self.log is not None
        self.log.append(record)
        if self.sink is not None:
            self.sink(*self.current, record)

    def finished(self, condition: str, k: int) -> bool:
        """Whether round ``k`` of ``condition`` is finished (rank 0 reads it, every rank gets it)."""
        return distributed.agree("run_imp", self.parallel, lambda: rundir.is_finished(self.run, condition, k))

    def save(self, result: RoundResult) -> None:
        what = f"mask of {result.condition} round {result.round}"
        distributed.check_same("run_imp", self.parallel, what, distributed.mask_digest(result.mask))
        if not self.lead:
            self.trained.append((result.condition, result.round))
            return
        assert self.log is not None
        self.bars.end_round()
        summary = rundir.summarize_round(
            result.history,
            round=result.round,
            density=density(result.mask),
            wall_seconds=time.perf_counter() - self.began,
        )
        rundir.save_round(self.run, result, self.log, summary, rewind=self.config.rewind)
        self.log = None
        self.trained.append((result.condition, result.round))
        self.bars.advance(summary)

    def abandon(self) -> None:
        if self.log is not None:
            self.log.close()


def run_imp(
    config: ImpConfig,
    run_dir: str | os.PathLike[str],
    *,
    data_root: str | os.PathLike[str] | None = None,
    resume: bool = True,
    force: bool = False,
    progress: bool = True,
    download: bool | None = None,
    on_record: RecordSink | None = None,
    verify: bool = True,
    parallel: DataParallel | None = None,
) -> RunResult:
    """Run (or resume) an IMP experiment with its baselines into ``run_dir``.

    Trains the dense ticket round 0, then for ``k = 1 .. rounds``: the ticket round ``k``
    (prune round ``k - 1``'s trained weights, reset/rewind, retrain) and each baseline of it.
    The training step is created (and compiled) once for the whole run. Each finished round
    is saved (:mod:`ltfunc.rundir`); rounds already finished in ``run_dir`` are skipped, an
    unfinished one is redone from its start.

    Args:
        config: The experiment.
        run_dir: The run directory (created if needed).
        data_root: Folder holding ``mnist/`` and ``fashion-mnist/``; default
            ``$LTFUNC_DATA_ROOT``, else ``~/.cache/ltfunc/data``.
        resume: Continue a run of the same config found in ``run_dir`` (else refuse to touch it).
        force: Delete a run found in ``run_dir`` (whatever its config) and start over.
        progress: Show tqdm progress bars.
        download: Passed to :func:`ltfunc.load_dataset` (``None``: download if missing).
        on_record: ``on_record(condition, round, record)``, called with every evaluation
            record after it is written to the round's ``metrics.jsonl`` (e.g.
            :class:`TensorBoardSink`); records of rounds skipped on resume are not replayed.
        verify: Check the CIFAR files against their official MD5 checksums (passed to
            :func:`ltfunc.load_dataset`); ``False`` for files in the same format that are not
            the official ones (test fixtures, subsets). A run option like ``download``: it is
            not part of the config and not written to ``config.json``.
        parallel: Data-parallel training under ``torchrun`` (:func:`ltfunc.distributed.init`):
            every rank calls ``run_imp`` with the same config; each trains on its shard of
            every batch of ``config.batch_size``, gradients are averaged across ranks, only rank
            0 reads and writes ``run_dir`` (and holds its lock), every round's mask is checksummed
            and compared across ranks; every rank returns the same :class:`RunResult`. See
            :mod:`ltfunc.distributed` (BatchNorm statistics, failures) and ``docs/cluster.md``.

    Returns:
        :class:`RunResult`.

    Raises:
        TypeError: ``config`` is not an :class:`ImpConfig`; its model factory does not return
            an ``nn.Module`` or its dataset factory no :class:`ltfunc.data.Dataset`.
        ValueError: ``run_dir`` is a file or not writable; it holds a run with another config
            (the message lists the differing fields), of an unknown format version, or, with
            ``resume=False``, any run; a checkpoint needed to resume is corrupt (the message
            names it); an override names no prunable parameter; another live process is
            writing ``run_dir`` (it holds ``run_dir/.lock``; a lock left by a dead process is
            taken over). With ``parallel``: ranks given different configs (the differing
            fields named), a world size that does not divide ``config.batch_size``. All raised
            before any training, on every rank.
        FileNotFoundError: The dataset is missing (the message says where it looked).
        FloatingPointError: Training diverged (NaN/inf loss).
        ltfunc.distributed.DistributedError: With ``parallel``: another rank died or hung
            (a collective failed, or waited longer than ``parallel.timeout``), or the ranks'
            masks differ; ``run_dir`` keeps every finished round (run again to resume).

    Example:
        >>> from ltfunc import ImpConfig, run_imp
        >>> result = run_imp(ImpConfig(rounds=2, iterations=300), "runs/quick")  # doctest: +SKIP
        >>> [(r["condition"], r["round"]) for r in result.rows][:3]  # doctest: +SKIP
        [('ticket', 0), ('ticket', 1), ('reinit', 1)]
    """
    func = "run_imp"
    if not isinstance(config, ImpConfig):
        raise TypeError(f"{func}: config must be an ImpConfig, got {type(config).__name__}")
    if not isinstance(run_dir, (str, os.PathLike)):
        raise TypeError(f"{func}: run_dir must be a path, got {type(run_dir).__name__} {run_dir!r}")
    check_bool(func, "resume", resume)
    check_bool(func, "force", force)
    check_bool(func, "progress", progress)
    check_bool(func, "verify", verify)
    check_callable(func, "on_record", on_record, "callable(condition, round, record)", optional=True)
    if parallel is not None and not isinstance(parallel, DataParallel):
        raise TypeError(f"{func}: parallel must be None or a DataParallel (ltfunc.distributed.init())")
    run = Path(run_dir)
    lead = parallel is None or parallel.lead  # rank 0 reads and writes run_dir; the others are told
    with distributed.failures(func, parallel, run):
        distributed.check_configs(func, parallel, config, config.batch_size)  # every rank, before any work
        mode = distributed.agree(
            func, parallel, lambda: rundir.check_writable(func, run, config, resume=resume, force=force)
        )
    with (
        distributed.failures(func, parallel, run),
        distributed.lead_only(func, parallel, lambda: rundir.lock(func, run)),
    ):
        dataset = distributed.check_all(
            func, parallel, lambda: load_config_dataset(config, data_root, download=download, verify=verify)
        )
        model, theta0, done, previous, point = _open_ranks(func, config, run, mode, dataset, parallel)

        trainer = make_config_trainer(config, model, dataset, parallel=parallel)
        bars = _Progress(progress and lead, config.rounds + 1 + config.rounds * len(config.baselines))
        saver = _Saver(run, config, bars, on_record, parallel)
        resumed: list[tuple[str, int]] = []

        def baselines(k: int, mask: Mask, point: Weights) -> None:
            for condition in config.baselines:
                if saver.finished(condition, k):
                    resumed.append((condition, k))
                    bars.advance()
                    continue
                seed, rewind, structure = config.seed, config.rewind, config.structure
                saver.save(
                    _baseline_of(
                        trainer, condition, k, mask, point, model, seed, rewind, saver.hooks, structure
                    )
                )

        try:
            for k in range(done):  # finished ticket rounds: only their missing baselines
                resumed.append(("ticket", k))
                bars.advance()
                if k and any(not saver.finished(c, k) for c in config.baselines):
                    assert point is not None
                    mask = distributed.agree(  # the ticket's mask alone: its weights may be deleted
                        func,
                        parallel,
                        lambda k=k: rundir.load_round_mask(run, "ticket", k, device=config.device),  # type: ignore[misc]
                        device=config.device,
                    )
                    baselines(k, mask, point)
                elif k:  # every baseline of round k is finished
                    for condition in config.baselines:
                        resumed.append((condition, k))
                        bars.advance()
            if done <= config.rounds:
                rounds = imp(
                    trainer,
                    theta0,
                    rounds=config.rounds,
                    rate=config.rates(),
                    scope=config.scope,
                    schedule=config.schedule,
                    rewind=config.rewind,
                    previous=previous,
                    rewind_point=point,
                    hooks=saver.hooks,
                    structure=config.structure,
                )
                for result in rounds:
                    saver.save(result)
                    if result.rewind_point is not None:
                        point = result.rewind_point
                    if result.round:
                        assert point is not None
                        baselines(result.round, result.mask, point)
        finally:
            saver.abandon()
            bars.close()
        rows = distributed.agree(func, parallel, lambda: _write_summary(func, run))
        return RunResult(run, config, tuple(rows), tuple(saver.trained), tuple(resumed))


def _write_summary(func: str, run: Path) -> list[dict[str, Any]]:
    rundir.write_summary_csv(run)
    return rundir.summary_rows(func, run)
