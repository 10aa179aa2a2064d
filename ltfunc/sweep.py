"""Sweeps: a grid of IMP runs under one root, resumable, run by a local / Ray / Slurm executor.

A sweep spec (a TOML or JSON file, or a dict) has a ``[base]`` table of
:class:`~ltfunc.config.ImpConfig` fields (and optionally ``preset = "..."``,
:mod:`ltfunc.presets`) and a ``[grid]`` table of field -> list of values::

    [base]
    preset = "lenet300-mnist"
    rounds = 5
    [grid]
    rate = [0.2, 0.4]
    rewind = [0, 500]
    seed = [0, 1, 2]

:func:`expand_grid` turns it into one config per point of the cartesian product (every config
is built, i.e. validated, before anything runs). :func:`run_sweep` runs each into
``ROOT/<point>-seed<k>`` (``rate=0.2,rewind=0-seed1``) with :func:`ltfunc.run_imp`: runs whose
rounds are all finished are skipped, the others are resumed. ``ROOT/sweep.json`` records the
spec and the run list (a different spec into the same root is refused without ``force``);
``ROOT/.lock`` refuses a second sweep into the root while one runs. :func:`sweep_rows` /
:func:`plot_sweep` aggregate a root: mean ± std over the seeds of each grid point
(``ltfunc report ROOT`` / ``ltfunc plot ROOT``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple

from . import _sweep_exec as ex
from . import report, rundir
from ._checks import check_bool, check_path
from ._lock import lock
from .config import ImpConfig, config_diff
from .experiment import RunResult
from .parallel import available_cores

__all__ = [
    "EXECUTORS",
    "SPEC_FILE",
    "SweepResult",
    "expand_grid",
    "format_sweep_table",
    "is_sweep_root",
    "load_spec",
    "plot_sweep",
    "run_sweep",
    "sweep_rows",
]

PathLike = str | os.PathLike[str]

EXECUTORS = ex.EXECUTORS
"""The executors :func:`run_sweep` can run the runs with: ``("local", "ray", "slurm")``."""

SPEC_FILE = "sweep.json"
"""The file in a sweep root that records the spec and the run list."""

_SPEC_KEYS = ("base", "grid")
_FIELDS = tuple(f.name for f in dataclasses.fields(ImpConfig))
_KEYS = (*_FIELDS, "preset")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]")
_MAX_NAME = 120
_FORMAT = 1


class SweepResult(NamedTuple):
    """What :func:`run_sweep` returns."""

    root: Path
    """The sweep root."""
    results: tuple[RunResult, ...]
    """One :class:`~ltfunc.experiment.RunResult` per run, in grid order (skipped runs too)."""
    skipped: tuple[str, ...]
    """Names of the runs that were already finished and were not started."""


# --------------------------------------------------------------------------------------------
# the spec and the grid


def load_spec(spec_or_path: Mapping[str, Any] | PathLike) -> dict[str, Any]:
    """The sweep spec: a dict as it is, or the table of a TOML / JSON file.

    Args:
        spec_or_path: A spec dict, or the path of a ``.toml`` (Python >= 3.11) / ``.json`` file.

    Returns:
        The spec as a plain dict (a copy).

    Raises:
        TypeError: Neither a mapping nor a path; a mapping holding other than JSON values.
        FileNotFoundError: No such file.
        ValueError: The file is not valid TOML / JSON or holds no table.

    Example:
        >>> from ltfunc.sweep import load_spec
        >>> load_spec({"grid": {"seed": [0, 1]}})
        {'grid': {'seed': [0, 1]}}
    """
    func = "load_spec"
    if isinstance(spec_or_path, Mapping):
        try:  # a plain copy, as it is recorded in sweep.json
            return json.loads(json.dumps(dict(spec_or_path), allow_nan=False))
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"{func}: the spec must hold JSON values (numbers, strings, lists, tables): {e}"
            ) from None
    path = check_path(func, "spec_or_path", spec_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"{func}: no such sweep file: {path}")
    from .cli_args import read_config_file

    try:
        return read_config_file(str(path))
    except ValueError as e:  # its messages name --config (the imp option); name the sweep file
        raise ValueError(f"{func}: {str(e).removeprefix('--config: ')}") from None


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _point_name(point: Mapping[str, Any]) -> str:
    """``key=value,...`` of a grid point (seed left out), file-system safe and of bounded length."""
    text = ",".join(f"{k}={_UNSAFE.sub('_', _fmt(v))}" for k, v in point.items())
    if len(text) > _MAX_NAME:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
        text = f"{text[: _MAX_NAME - 9]}-{digest}"
    return text


def _run_name(point_name: str, seed: int) -> str:
    return f"{point_name}-seed{seed}" if point_name else f"seed{seed}"


def _check_spec(func: str, spec: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    if not isinstance(spec, Mapping):
        raise TypeError(
            f"{func}: spec must be a dict with [base] and [grid] tables, got {type(spec).__name__}"
        )
    unknown = [k for k in spec if k not in _SPEC_KEYS]
    if unknown:
        raise ValueError(
            f"{func}: unknown top-level key(s) {unknown} in the sweep spec; allowed: a [base] table of "
            "config fields and a [grid] table of field -> list of values"
        )
    base, grid = spec.get("base", {}), spec.get("grid", {})
    for table, value in (("base", base), ("grid", grid)):
        if not isinstance(value, Mapping):
            raise TypeError(
                f"{func}: [{table}] must be a table of field -> value, got {type(value).__name__}"
            )
        bad = [k for k in value if k not in _KEYS]
        if bad:
            raise ValueError(
                f"{func}: unknown key(s) {bad} in [{table}]; valid keys are preset and the ImpConfig "
                f"fields: {', '.join(_FIELDS)}"
            )
    if not grid:
        raise ValueError(
            f"{func}: the grid is empty, so the sweep has no runs; add a [grid] table of field -> list "
            "of values, e.g. seed = [0, 1, 2]"
        )
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise TypeError(
                f"{func}: grid.{key} must be a list of values, got {type(values).__name__} {values!r}; "
                f"write {key} = [{json.dumps(values, default=str)}] for a single value"
            )
        if not values:
            raise ValueError(f"{func}: grid.{key} is an empty list, so the grid has no runs; give it values")
        seen = [json.dumps(v, sort_keys=True, default=str) for v in values]
        if len(set(seen)) != len(seen):
            raise ValueError(f"{func}: grid.{key} repeats a value: {list(values)}; list each value once")
    both = [k for k in grid if k in base]
    if both:
        raise ValueError(f"{func}: {both} in both [base] and [grid]; give each key in one table only")
    return dict(base), {k: list(v) for k, v in grid.items()}


def _build(func: str, values: dict[str, Any], label: str) -> ImpConfig:
    values = dict(values)
    preset = values.pop("preset", None)
    try:
        if preset is not None:
            from .presets import preset_config

            return preset_config(preset, values)
        return ImpConfig.from_dict(values)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{func}: run {label}: {e}") from None


def _expand(func: str, spec: Mapping[str, Any]) -> list[tuple[str, str, ImpConfig]]:
    """``[(point name, run name, config)]`` in grid order (the seeds of a point adjacent)."""
    base, grid = _check_spec(func, spec)
    keys = [k for k in grid if k != "seed"] + (["seed"] if "seed" in grid else [])
    combos = [dict(zip(keys, c, strict=True)) for c in itertools.product(*(grid[k] for k in keys))]
    points = [{k: v for k, v in values.items() if k != "seed"} for values in combos]
    pnames = [_point_name(p) for p in points]
    seen: dict[str, set[str]] = {}
    for pname, point in zip(pnames, points, strict=True):
        seen.setdefault(pname, set()).add(json.dumps(point, sort_keys=True))
    for i, (pname, point) in enumerate(zip(pnames, points, strict=True)):
        if len(seen[pname]) > 1:  # points whose names differ only in replaced characters
            blob = json.dumps(point, sort_keys=True).encode("utf-8")
            pnames[i] = f"{pname}-{hashlib.sha256(blob).hexdigest()[:6]}"
    runs: list[tuple[str, str, ImpConfig]] = []
    hashes: dict[str, str] = {}
    for pname, values in zip(pnames, combos, strict=True):
        label = _run_name(pname, values.get("seed", base.get("seed", 0)))  # the seed if it builds
        config = _build(func, {**base, **values}, label)
        name = _run_name(pname, config.seed)
        h = config.config_hash()
        if h in hashes:
            raise ValueError(
                f"{func}: runs {hashes[h]} and {name} have the same config (the values that differ are "
                "normalized to one, e.g. momentum 0 and 0.9 with optimizer 'momentum'); drop one of them"
            )
        hashes[h] = name
        runs.append((pname, name, config))
    return runs


def expand_grid(spec: Mapping[str, Any] | PathLike) -> list[tuple[str, ImpConfig]]:
    """The runs of a sweep spec: one config per point of the grid's cartesian product.

    ``[base]`` gives the fields shared by every run (``preset = "..."`` starts from a preset,
    :func:`ltfunc.presets.preset_config`), ``[grid]`` a list of values per field (``preset``
    may vary too). Every config is constructed, so a bad value fails here, naming the run.

    Args:
        spec: A spec dict ``{"base": {...}, "grid": {...}}`` or a TOML / JSON file.

    Returns:
        ``[(name, config)]`` in grid order, the seeds of one grid point adjacent. ``name`` is
        ``key=value,...-seed<k>`` over the grid keys other than ``seed`` in the spec's order
        (``seed<k>`` when only the seed varies), with characters other than letters, digits
        and ``._+=-`` replaced by ``_``.

    Raises:
        TypeError: ``spec`` or a table of the wrong type, a grid value that is not a list, a
            field of the wrong type.
        ValueError: An unknown key (lists the valid fields), an empty grid or an empty list
            (no runs), a value listed twice, a key in both tables, an invalid value (names
            the run), two runs with the same config.
        FileNotFoundError: ``spec`` names a missing file.

    Example:
        >>> from ltfunc.sweep import expand_grid
        >>> runs = expand_grid({"base": {"rounds": 2}, "grid": {"seed": [0, 1], "rate": [0.2, 0.5]}})
        >>> [name for name, _ in runs]
        ['rate=0.2-seed0', 'rate=0.2-seed1', 'rate=0.5-seed0', 'rate=0.5-seed1']
        >>> runs[3][1].rate, runs[3][1].seed, runs[3][1].rounds
        (0.5, 1, 2)
    """
    return [(name, config) for _, name, config in _expand("expand_grid", load_spec(spec))]


# --------------------------------------------------------------------------------------------
# the sweep root


def is_sweep_root(path: Any) -> bool:
    """Whether ``path`` is a sweep root (holds ``sweep.json`` and is no run directory).

    Example:
        >>> from ltfunc.sweep import is_sweep_root
        >>> is_sweep_root("no/such/folder")
        False
    """
    if not isinstance(path, (str, os.PathLike)):
        return False
    p = Path(path)
    return (p / SPEC_FILE).is_file() and not (p / "config.json").is_file()


def _record(spec: Mapping[str, Any], runs: Sequence[tuple[str, str, ImpConfig]]) -> dict[str, Any]:
    return {
        "format_version": _FORMAT,
        "spec": spec,
        "runs": [{"name": n, "point": p, "seed": c.seed, "config_hash": c.config_hash()} for p, n, c in runs],
    }


def _read_record(func: str, root: Path) -> dict[str, Any]:
    data = rundir.read_json(func, root / SPEC_FILE)
    if (
        not isinstance(data, dict)
        or data.get("format_version") != _FORMAT
        or not isinstance(data.get("runs"), list)
        or not all(isinstance(r, dict) and {"name", "point", "config_hash"} <= set(r) for r in data["runs"])
    ):
        raise ValueError(f"{func}: {root / SPEC_FILE} is not a sweep record of format {_FORMAT}")
    return data


def _check_root(func: str, root: Path, record: dict[str, Any], force: bool) -> None:
    """Refuse a root that is a run directory, a file, or holds another sweep (without ``force``)."""
    if root.exists() and not root.is_dir():
        raise ValueError(f"{func}: root {str(root)!r} is a file, not a directory; choose another path")
    if (root / "config.json").is_file():
        raise ValueError(f"{func}: root {str(root)!r} is a run directory, not a sweep root; choose another")
    if not (root / SPEC_FILE).is_file() or force:
        return
    old = _read_record(func, root)
    before = {(r["name"], r["config_hash"]) for r in old["runs"]}
    now = {(r["name"], r["config_hash"]) for r in record["runs"]}
    if before != now:
        gone = sorted(n for n, _ in before - now)[:5]
        new = sorted(n for n, _ in now - before)[:5]
        raise ValueError(
            f"{func}: {root} holds another sweep (runs only in it: {gone}; only in this spec: {new}). "
            "Refusing to mix them: choose another root, or pass force=True / --force to record this "
            "spec there (runs of the same config are kept, those with another config restart)"
        )


def _conflicts(root: Path, runs: Sequence[tuple[str, str, ImpConfig]]) -> dict[str, list[str]]:
    """``{run name: differing fields}`` of run directories that hold another config."""
    out = {}
    for _, name, config in runs:
        run = root / name
        if (run / "config.json").is_file():
            diff = config_diff(rundir.read_config_dict("run_sweep", run), config.to_dict())
            if diff:
                out[name] = sorted(diff)
    return out


def _finished(run: Path, config: ImpConfig) -> bool:
    if not (run / "summary.csv").is_file() or not (run / "config.json").is_file():
        return False
    if config_diff(rundir.read_config_dict("run_sweep", run), config.to_dict()):
        return False
    pairs = [("ticket", 0)] + [
        (c, k) for k in range(1, config.rounds + 1) for c in ("ticket", *config.baselines)
    ]
    return all(rundir.is_finished(run, c, k) for c, k in pairs)


def _finished_result(run: Path, config: ImpConfig) -> RunResult:
    rows = tuple(rundir.summary_rows("run_sweep", run))
    pairs = tuple((r["condition"], r["round"]) for r in rows)
    return RunResult(run, config, rows, (), pairs)


# --------------------------------------------------------------------------------------------
# running


def _fetch_data(configs: Sequence[ImpConfig], data_root: PathLike | None, verify: bool) -> None:
    """Download the registry datasets of the runs once, before the workers read them."""
    from .data import load_dataset

    for name in dict.fromkeys(c.dataset for c in configs if ":" not in c.dataset):
        load_dataset(name, data_root, download=True, verify=verify)


def run_sweep(
    spec: Mapping[str, Any] | PathLike,
    root: PathLike,
    *,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    partition: str | None = None,
    time_min: int | None = None,
    gpus_per_run: float | None = None,
    cpus_per_run: int | None = None,
    slurm_cluster: str | None = None,
    data_root: PathLike | None = None,
    download: bool = False,
    verify: bool = True,
    force: bool = False,
    progress: bool = True,
) -> SweepResult:
    """Run (or resume) every run of a sweep spec into ``root/<name>``, skipping finished ones.

    Each run is one :func:`ltfunc.run_imp` call (resumable: a finished round is never redone),
    made by the executor:

    - ``"local"``: a process pool (spawn) of ``workers`` processes (default: one per core of
      ``os.sched_getaffinity``, at most one per run), each with ``cpus_per_run`` torch threads
      (default ``cores // workers``). On Linux a worker dies with the sweep process.
    - ``"ray"``: a Ray task per run with ``num_cpus=cpus_per_run`` (default 1) and
      ``num_gpus=gpus_per_run`` (default 0); ``address="auto"`` / ``"HOST:PORT"`` joins a
      running cluster, else a local instance of ``workers * cpus_per_run`` CPUs (default:
      all cores) is started and shut down after.
    - ``"slurm"``: a ``submitit`` job per run (a job array, ``workers`` at a time), with
      ``partition``, ``time_min`` (default 60), ``cpus_per_run`` and ``gpus_per_run``; logs in
      ``root/slurm``. ``slurm_cluster`` picks submitit's cluster (``None``: Slurm where
      ``sbatch`` exists, else ``"local"`` subprocesses; ``"debug"``: in this process).

    The sweep process prints one line per finished run (``progress``), holds ``root/.lock``
    while it runs and must stay alive until the runs end. A run that fails does not stop the
    others; the failures are raised together at the end.

    Args:
        spec: A spec dict or TOML / JSON file (see :func:`expand_grid`).
        root: The sweep root (created).
        executor: One of :data:`EXECUTORS`.
        workers: Runs at a time (local processes, Ray CPUs / ``cpus_per_run``, Slurm array
            parallelism).
        address: Ray only: the cluster to join (``"auto"``, ``"HOST:PORT"``, ``"ray://HOST:PORT"``).
        partition: Slurm only: the partition.
        time_min: Slurm only: the time limit of a job in minutes.
        gpus_per_run: Ray / Slurm: GPUs per run (the config's ``device`` says where to train).
        cpus_per_run: CPUs (torch threads) per run.
        slurm_cluster: Slurm only: submitit's cluster (``"slurm"``, ``"local"``, ``"debug"``).
        data_root: Folder of the datasets (see :func:`ltfunc.load_dataset`).
        download: Download missing registry datasets once, in this process, before the runs
            start (the runs themselves never download).
        verify: Check the CIFAR files' MD5 checksums.
        force: Record this spec in a root that holds another sweep; run directories that hold
            another config are restarted (same-config runs are kept and resumed).
        progress: Print the sweep's lines on stderr (runs never show progress bars).

    Returns:
        :class:`SweepResult`.

    Raises:
        TypeError, ValueError: A bad spec (see :func:`expand_grid`) or option (an option of
            another executor, an unreachable Ray ``address`` naming ``--address``); ``root``
            is a file or a run directory, holds another sweep, or holds a run directory with
            another config (without ``force``); another live process runs a sweep into
            ``root`` (it holds ``root/.lock``). All raised before anything is written.
        ImportError: ``ray`` / ``submitit`` are not installed (names the pip extra).
        RuntimeError: Runs failed (lists them; the other runs finished and are kept).

    Example:
        >>> from ltfunc.sweep import run_sweep
        >>> spec = {"base": {"rounds": 2, "iterations": 300}, "grid": {"seed": [0, 1]}}
        >>> result = run_sweep(spec, "runs/sweep-demo", workers=2)  # doctest: +SKIP
        >>> [r.run_dir.name for r in result.results]  # doctest: +SKIP
        ['seed0', 'seed1']
    """
    func = "run_sweep"
    spec_d = load_spec(spec)
    runs = _expand(func, spec_d)
    root_p = check_path(func, "root", root)
    data_root = check_path(func, "data_root", data_root, optional=True)
    for name, flag in (("download", download), ("verify", verify), ("force", force), ("progress", progress)):
        check_bool(func, name, flag)
    opts = {
        "workers": workers,
        "address": address,
        "partition": partition,
        "time_min": time_min,
        "gpus_per_run": gpus_per_run,
        "cpus_per_run": cpus_per_run,
        "slurm_cluster": slurm_cluster,
    }
    ex.check_options(func, executor, opts)
    record = _record(spec_d, runs)
    _check_root(func, root_p, record, force)
    conflicts = _conflicts(root_p, runs)
    if conflicts and not force:
        lines = "; ".join(f"{n}: {', '.join(f)}" for n, f in list(conflicts.items())[:5])
        raise ValueError(
            f"{func}: run directories in {root_p} hold another config ({lines}); choose another root or "
            "pass force=True / --force to restart them"
        )
    pending = [(n, c) for _, n, c in runs if not _finished(root_p / n, c)]

    cores = available_cores()
    if executor == "local":
        n_workers = workers or max(1, min(len(pending), cores))
        threads = cpus_per_run or max(1, cores // n_workers)
    else:
        threads = cpus_per_run or 1
    with ExitStack() as stack:
        session = None
        if executor == "ray" and pending:  # connect before the root is touched: a bad address writes nothing
            num_cpus = None if workers is None else workers * threads
            session = stack.enter_context(ex.ray_session(func, address, num_cpus))
        root_p.mkdir(parents=True, exist_ok=True)
        with lock(func, root_p):
            rundir.write_json(root_p / SPEC_FILE, record)
            pending = [(n, c) for n, c in pending if not _finished(root_p / n, c)]
            if download and pending:
                _fetch_data([c for _, c in pending], data_root, verify)
            tasks = [
                ex.Task(
                    name=n,
                    config=c.to_dict(),
                    run_dir=str(root_p / n),
                    data_root=None if data_root is None else str(data_root),
                    force=force and n in conflicts,
                    verify=verify,
                    threads=threads,
                )
                for n, c in pending
            ]
            if progress:
                print(
                    f"ltfunc sweep: {len(runs)} run(s) in {root_p}: {len(runs) - len(tasks)} finished, "
                    f"{len(tasks)} to run ({executor})",
                    file=sys.stderr,
                )
            outcomes = _dispatch(executor, session, tasks, opts, progress) if tasks else {}
    failed = {n: o for n, o in outcomes.items() if isinstance(o, BaseException)}
    if failed:
        lines = "; ".join(f"{n}: {type(e).__name__}: {e}" for n, e in failed.items())
        raise RuntimeError(
            f"{func}: {len(failed)} of {len(tasks)} run(s) failed ({lines}); the other runs are kept: "
            "fix the cause and run the same sweep again to finish the missing runs"
        )
    results = []
    for _, name, config in runs:
        outcome = outcomes.get(name)
        results.append(outcome if isinstance(outcome, RunResult) else _finished_result(root_p / name, config))
    skipped = tuple(n for _, n, _ in runs if n not in outcomes)
    return SweepResult(root_p, tuple(results), skipped)


def _dispatch(
    executor: str, session: Any, tasks: list[ex.Task], opts: dict[str, Any], progress: bool
) -> dict[str, ex.Outcome]:
    if executor == "local":
        workers = opts["workers"] or max(1, min(len(tasks), available_cores()))
        return ex.run_local(tasks, workers, progress)
    if executor == "ray":
        return ex.run_ray(
            session,
            tasks,
            cpus_per_run=tasks[0].threads,
            gpus_per_run=float(opts["gpus_per_run"] or 0),
            progress=progress,
        )
    root = Path(tasks[0].run_dir).parent
    slurm = ex.make_slurm_executor(
        "run_sweep",
        root / "slurm",
        cluster=opts["slurm_cluster"],
        partition=opts["partition"],
        time_min=opts["time_min"] or 60,
        cpus_per_run=tasks[0].threads,
        gpus_per_run=int(opts["gpus_per_run"] or 0),
        workers=opts["workers"],
    )
    return ex.run_slurm(slurm, tasks, progress)


# --------------------------------------------------------------------------------------------
# reading a sweep root: mean ± std over the seeds of each grid point


def _open_root(func: str, root: Any) -> tuple[Path, dict[str, list[Path]]]:
    """The root and ``{point: [run directories that exist]}`` in grid order."""
    path = check_path(func, "root", root)
    if not path.is_dir():
        raise FileNotFoundError(f"{func}: sweep root {str(path)!r} does not exist or is not a directory")
    if not is_sweep_root(path):
        raise ValueError(
            f"{func}: {str(path)!r} is not a sweep root (no {SPEC_FILE}); pass the --root of a sweep"
        )
    points: dict[str, list[Path]] = {}
    for r in _read_record(func, path)["runs"]:
        runs = points.setdefault(str(r["point"]), [])
        if (path / r["name"] / "config.json").is_file():
            runs.append(path / r["name"])
    return path, points


def sweep_rows(root: PathLike, *, metrics: Sequence[str] = report.AGGREGATE_METRICS) -> list[dict[str, Any]]:
    """Mean ± sample std over the seeds of every grid point of a sweep root (started runs only).

    Args:
        root: A sweep root (holds ``sweep.json``).
        metrics: As for :func:`ltfunc.report.aggregate`.

    Returns:
        :func:`ltfunc.report.aggregate` rows of each grid point, in grid order, each with a
        first key ``point`` (the grid point's name: ``rate=0.2,rewind=0``; ``""`` when only
        the seed varies); ``n`` is the number of seeds that finished the round.

    Raises:
        TypeError: ``root`` is not a path.
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``root`` is not a sweep root, or a run's files are corrupt.

    Example:
        >>> import tempfile
        >>> from ltfunc.sweep import sweep_rows
        >>> sweep_rows(tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: sweep_rows: '...' is not a sweep root (no sweep.json); pass the --root of a sweep
    """
    _, points = _open_root("sweep_rows", root)
    rows: list[dict[str, Any]] = []
    for point, paths in points.items():
        if paths:
            rows.extend({"point": point, **row} for row in report.aggregate(paths, metrics=metrics))
    return rows


def format_sweep_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The text of :func:`sweep_rows`: one :func:`ltfunc.report.format_table` per grid point.

    Args:
        rows: Rows of :func:`sweep_rows`.

    Returns:
        Each point's name on a line of its own (``seed only`` when only the seed varies),
        then its table; ``"(no finished rounds)"`` without rows.

    Example:
        >>> from ltfunc.sweep import format_sweep_table
        >>> format_sweep_table([])
        '(no finished rounds)'
    """
    if not rows:
        return "(no finished rounds)"
    blocks = []
    for point in dict.fromkeys(r["point"] for r in rows):
        sel = [{k: v for k, v in r.items() if k != "point"} for r in rows if r["point"] == point]
        blocks.append(f"== {point or 'seed only'} ==\n{report.format_table(sel)}")
    return "\n\n".join(blocks)


def plot_sweep(
    root: PathLike,
    out_png: PathLike,
    *,
    metric: str = "test_accuracy_at_early_stop",
    title: str | None = None,
    dpi: int = 120,
) -> Any:
    """Plot a sweep root: one line per grid point and condition, mean ± std over its seeds.

    :func:`ltfunc.plot.plot_runs` over the sweep's started runs (runs that differ only in the
    seed are one line; the legend names the values that tell the points apart).

    Args:
        root: A sweep root.
        out_png: The ``.png`` to write.
        metric: As for :func:`ltfunc.plot.plot_runs`.
        title: Figure title (default: ``mean ± std over N seeds``).
        dpi: Resolution.

    Returns:
        The :class:`ltfunc.plot.PlotResult`.

    Raises:
        TypeError, FileNotFoundError, ValueError: As :func:`sweep_rows` and
            :func:`ltfunc.plot.plot_runs`; no run of the sweep has started.

    Example:
        >>> from ltfunc.sweep import plot_sweep
        >>> plot_sweep("runs/sweep-demo", "runs/sweep-demo/plot.png").path  # doctest: +SKIP
        PosixPath('runs/sweep-demo/plot.png')
    """
    from .plot import plot_runs

    path, points = _open_root("plot_sweep", root)
    runs = [p for paths in points.values() for p in paths]
    if not runs:
        raise ValueError(f"plot_sweep: no run of the sweep in {str(path)!r} has started yet")
    return plot_runs(runs, out_png, metric=metric, title=title, dpi=dpi)
