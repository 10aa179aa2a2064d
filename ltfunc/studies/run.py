"""Running a study seed by seed, and collecting its finished rounds into results.

:func:`run_study` trains (or resumes) every seed with :func:`ltfunc.run_imp`; :func:`collect`
reads the finished rounds, aggregates them over seeds and writes the results
(:mod:`ltfunc.studies.results`); :func:`reproduce` does both (``ltfunc reproduce``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from .. import report
from .._checks import check_bool
from ..experiment import RunResult
from ..parallel import run_many
from .machine import _record_machine, machine_info
from .registry import (
    Study,
    _changed_overrides,
    _check_overrides,
    _check_seeds,
    get_study,
    run_name,
    study_configs,
)
from .results import _check_no_regression, _write_results
from .state import _found_seeds, _holds, _seed_states, _SeedState

__all__ = ["CollectResult", "collect", "reproduce", "run_study"]

PathLike = str | os.PathLike[str]

_AGG_METRICS = (
    "weights_remaining_pct",
    "early_stop_iteration",
    "test_accuracy_at_early_stop",
    "wall_seconds",
)


# --------------------------------------------------------------------------------------------
# running


def _check_path(func: str, name: str, value: Any) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{func}: {name} must be a path, got {type(value).__name__} {value!r}")
    return Path(value)


def run_study(
    study: str | Study,
    seeds: Sequence[int] | None = None,
    *,
    runs_dir: PathLike = "runs",
    overrides: Mapping[str, int] | None = None,
    data_root: PathLike | None = None,
    device: str | None = None,
    compile: bool | None = None,
    progress: bool = True,
    download: bool | None = None,
    parallel: str = "auto",
    workers: int | None = None,
) -> tuple[RunResult, ...]:
    """Run (or resume) every seed of a study into ``RUNS_DIR/<prefix>-seed<k>``.

    The seeds' runs (ticket rounds and both baselines) go to :func:`ltfunc.parallel.run_many`:
    on a CPU with two or more cores their trainings are spread over single-threaded worker
    processes, otherwise they run one after the other; finished rounds are skipped, an
    unfinished round is redone from its start. The machine is added to each run's
    ``machines.json``.

    Args:
        study: A name of :data:`STUDIES` or a :class:`Study`.
        seeds: The seeds (default: the study's).
        runs_dir: Parent folder of the run directories.
        overrides: As for :func:`study_configs` (recorded as deviations by :func:`collect`).
        data_root: Folder holding ``mnist/`` and ``fashion-mnist/`` (see :func:`ltfunc.load_dataset`).
        device: Where to train (default ``"cpu"``).
        compile: ``torch.compile`` the step (default ``True``).
        progress: Show progress bars (and a line per seed on stderr).
        download: Passed to :func:`ltfunc.run_imp`.
        parallel: ``"auto"``, ``"processes"`` or ``"sequential"`` (:func:`ltfunc.parallel.run_many`).
        workers: Worker processes (default: one per core).

    Returns:
        The :class:`ltfunc.experiment.RunResult` of every seed.

    Raises:
        ValueError, TypeError: Bad arguments, or a run directory that holds another config
            (raised by :func:`ltfunc.run_imp` before any training).
        FileNotFoundError: The dataset is missing.
        FloatingPointError: Training diverged.

    Example:
        >>> from ltfunc.studies import run_study
        >>> results = run_study("lenet-mnist", [0], overrides={"iterations": 300})  # doctest: +SKIP
    """
    func = "run_study"
    root = _check_path(func, "runs_dir", runs_dir)
    check_bool(func, "progress", progress)
    s = get_study(study)
    ovr = _check_overrides(func, overrides)
    configs = study_configs(s, seeds, overrides=ovr, device=device, compile=compile)
    prefix = run_name(s, ovr)
    runs = [(config, root / f"{prefix}-seed{config.seed}") for config in configs]
    if progress:
        for i, (config, run_dir) in enumerate(runs):
            where = f"seed {config.seed} ({i + 1}/{len(runs)}) -> {run_dir}"
            print(f"reproduce {s.name}: {where}", file=sys.stderr, flush=True)
    try:
        results = run_many(
            runs,
            parallel=parallel,
            workers=workers,
            data_root=data_root,
            progress=progress,
            download=download,
        )
    finally:
        for config, run_dir in runs:
            if _holds(run_dir, config):  # the run started (and maybe trained) on this machine
                _record_machine(run_dir, machine_info(config.device))
    return results


# --------------------------------------------------------------------------------------------
# collecting


class CollectResult(NamedTuple):
    """What :func:`collect` wrote and how far the study is."""

    out: Path
    """The output folder."""
    files: tuple[Path, ...]
    """The files written, ``results.md`` last."""
    rows: tuple[dict[str, Any], ...]
    """The ``rounds.csv`` rows (:data:`ROUND_FIELDS`)."""
    seeds: tuple[int, ...]
    """The seeds the study expects (requested ones plus any found in ``runs_dir``)."""
    finished: int
    """(seed, condition, round) triples finished."""
    expected: int
    """(seed, condition, round) triples the study needs."""

    @property
    def complete(self) -> bool:
        """Whether every seed finished every round of every condition."""
        return self.finished == self.expected


def _command(
    study: Study, seeds: Sequence[int], overrides: Mapping[str, int], runs: Path, out: Path | None
) -> str:
    """The ``ltfunc reproduce`` command line of these arguments (defaults left out)."""
    parts = ["ltfunc", "reproduce", study.name]
    if tuple(seeds) != study.seeds:
        parts += ["--seeds", ",".join(map(str, seeds))]
    for k, v in overrides.items():
        parts += [f"--{k.replace('_', '-')}", str(v)]
    if runs != Path("runs"):
        parts += ["--runs-dir", runs.as_posix()]
    if out is not None:
        parts += ["--out", out.as_posix()]
    return " ".join(parts)


def collect(
    study: str | Study,
    seeds: Sequence[int] | None = None,
    *,
    runs_dir: PathLike = "runs",
    out: PathLike | None = None,
    overrides: Mapping[str, int] | None = None,
    force: bool = False,
) -> CollectResult:
    """Write the CSVs, figures and ``results.md`` of a study from its finished rounds.

    Reads ``RUNS_DIR/<prefix>-seed<k>`` for the requested seeds and any other seed of the same
    prefix found there. Seeds not started yet and unfinished rounds are listed as such and the
    results are labelled *partial* until every seed finished every round. The files are
    written as one set (into a temporary folder, then moved into place, ``results.md`` last;
    figures an earlier write left and this one does not make are removed). Results in ``out``
    of more finished rounds than ``runs_dir`` holds now are not replaced unless ``force``.

    Args:
        study: A name of :data:`STUDIES` or a :class:`Study`.
        seeds: The seeds the study should have (default: the study's).
        runs_dir: Parent folder of the run directories.
        out: Output folder (default ``docs/results/<prefix>``).
        overrides: The overrides the runs were made with (selects ``<prefix>``).
        force: Replace results in ``out`` even where they hold more finished rounds.

    Returns:
        :class:`CollectResult`.

    Raises:
        ValueError: Unknown study, bad seeds or overrides, a run directory of this prefix
            that holds another config, a corrupt summary file (named), or results in ``out``
            of more finished rounds than the runs have (without ``force``).
        TypeError: Arguments of the wrong type.

    Example:
        >>> import tempfile
        >>> from ltfunc.studies import collect
        >>> root = tempfile.mkdtemp()
        >>> res = collect("lenet-mnist", runs_dir=f"{root}/runs", out=f"{root}/out")
        >>> res.complete, res.finished, res.expected, [p.name for p in res.files]
        (False, 0, 230, ['rounds.csv', 'runs.csv', 'results.md'])
    """
    func = "collect"
    s = get_study(study)
    check_bool(func, "force", force)
    requested = s.seeds if seeds is None else _check_seeds(func, seeds)
    ovr = _changed_overrides(s, _check_overrides(func, overrides))
    runs, out_dir, all_seeds, states = _study_state(func, s, requested, runs_dir, out, ovr)
    command = _command(s, requested, ovr, runs, None if out is None else out_dir)
    finished = sum(len(v) for st in states for v in st.finished.values())
    expected = sum(len(v) for st in states for v in st.expected.values())
    with_rounds = [st for st in states if any(st.finished.values())]

    # per-run rows and the aggregate over seeds
    run_rows: list[dict[str, Any]] = []
    seeds_of: dict[tuple[str, int], list[int]] = {}
    for st in with_rounds:
        for row in report.summary_rows(st.run_dir):
            if row["round"] in st.finished.get(row["condition"], ()):
                run_rows.append({"seed": st.seed, **row})
                seeds_of.setdefault((row["condition"], row["round"]), []).append(st.seed)
    agg = report.aggregate([st.run_dir for st in with_rounds], metrics=_AGG_METRICS) if with_rounds else []
    rows = [
        {
            "condition": a["condition"],
            "round": a["round"],
            "n_seeds": a["n"],
            "seeds": ";".join(map(str, seeds_of.get((a["condition"], a["round"]), []))),
            **{f"{m}_{x}": a[f"{m}_{x}"] for m in _AGG_METRICS[:3] for x in ("mean", "std")},
            "wall_seconds_mean": a["wall_seconds_mean"],
        }
        for a in agg
        if (a["condition"], a["round"]) in seeds_of
    ]
    _check_no_regression(func, out_dir, runs, len(run_rows), force)
    return CollectResult(
        out_dir,
        _write_results(
            s,
            states,
            rows,
            run_rows,
            out_dir,
            command=command,
            all_seeds=all_seeds,
            overrides=ovr,
            finished=finished,
            expected=expected,
        ),
        tuple(rows),
        all_seeds,
        finished,
        expected,
    )


def _study_state(
    func: str,
    s: Study,
    requested: Sequence[int],
    runs_dir: PathLike,
    out: PathLike | None,
    ovr: Mapping[str, int],
) -> tuple[Path, Path, tuple[int, ...], list[_SeedState]]:
    """``(runs, out_dir, all_seeds, states)``: the requested seeds and any other found in ``runs``."""
    runs = _check_path(func, "runs_dir", runs_dir)
    prefix = run_name(s, ovr)
    out_dir = Path("docs") / "results" / prefix if out is None else _check_path(func, "out", out)
    all_seeds = tuple(sorted(set(requested) | _found_seeds(runs, prefix)))
    configs = dict(zip(all_seeds, study_configs(s, all_seeds, overrides=ovr), strict=True))
    return runs, out_dir, all_seeds, _seed_states(func, prefix, runs, configs)


# --------------------------------------------------------------------------------------------
# the one-call entry point


def reproduce(
    study: str | Study,
    seeds: Sequence[int] | None = None,
    *,
    runs_dir: PathLike = "runs",
    out: PathLike | None = None,
    overrides: Mapping[str, int] | None = None,
    data_root: PathLike | None = None,
    device: str | None = None,
    compile: bool | None = None,
    progress: bool = True,
    download: bool | None = None,
    collect_only: bool = False,
    force: bool = False,
    parallel: str = "auto",
    workers: int | None = None,
) -> CollectResult:
    """Run (resumably) every seed of a study, then :func:`collect` its results (``ltfunc reproduce``).

    Args:
        study: A name of :data:`STUDIES` or a :class:`Study`.
        seeds: The seeds (default: the study's).
        runs_dir: Parent folder of the run directories ``<prefix>-seed<k>``.
        out: Output folder (default ``docs/results/<prefix>``).
        overrides: ``{setting: int}`` for :data:`OVERRIDABLE` settings; recorded as deviations
            and appended to ``<prefix>``.
        data_root: Folder holding ``mnist/`` and ``fashion-mnist/``.
        device: Where to train (default ``"cpu"``).
        compile: ``torch.compile`` the step (default ``True``).
        progress: Progress bars and a line per seed on stderr.
        download: Passed to :func:`ltfunc.run_imp`.
        collect_only: Train nothing; collect whatever rounds have finished.
        force: Replace results in ``out`` of more finished rounds than the runs have
            (see :func:`collect`).
        parallel: How the trainings run (see :func:`run_study`).
        workers: Worker processes (default: one per core).

    Returns:
        :class:`CollectResult`.

    Raises:
        ValueError, TypeError: Bad arguments (unknown study: the message lists the valid ones),
            or a run directory with another config.
        FileNotFoundError: The dataset is missing.
        FloatingPointError: Training diverged.

    Example:
        >>> import tempfile
        >>> from ltfunc.studies import reproduce
        >>> root = tempfile.mkdtemp()
        >>> res = reproduce("conv2-fashion", runs_dir=f"{root}/runs", out=f"{root}/out", collect_only=True)
        >>> res.seeds, res.complete, "PARTIAL" in (res.out / "results.md").read_text()
        ((0, 1), False, True)
    """
    func = "reproduce"
    s = get_study(study)
    check_bool(func, "collect_only", collect_only)
    check_bool(func, "force", force)
    ovr = _check_overrides(func, overrides)
    chosen = s.seeds if seeds is None else _check_seeds(func, seeds)
    study_configs(s, chosen, overrides=ovr, device=device, compile=compile)  # validate before any work
    if not collect_only:
        # Before hours of training: would even the complete study replace results of more rounds?
        runs, out_dir, _, states = _study_state(func, s, chosen, runs_dir, out, _changed_overrides(s, ovr))
        expected = sum(len(v) for st in states for v in st.expected.values())
        _check_no_regression(func, out_dir, runs, expected, force, when_done=True)
        run_study(
            s,
            chosen,
            runs_dir=runs_dir,
            overrides=ovr,
            data_root=data_root,
            device=device,
            compile=compile,
            progress=progress,
            download=download,
            parallel=parallel,
            workers=workers,
        )
    return collect(s, chosen, runs_dir=runs_dir, out=out, overrides=ovr, force=force)
