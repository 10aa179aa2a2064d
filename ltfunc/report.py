"""Read finished IMP run directories: per-round summary rows, text tables, seed aggregates, CSV.

Everything here only *reads* a run directory in the layout of ``docs/design.md``::

    RUN_DIR/config.json
    RUN_DIR/<condition>/round_<k>/{metrics.jsonl, summary.json}

A round is finished when its ``summary.json`` exists; unfinished rounds are ignored. The
conditions are the sub-folders that hold ``round_<k>`` folders (``ticket``, ``reinit``,
``random_prune``, in that order, then any other name alphabetically).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import rundir
from .config import BOOKKEEPING
from .params import atomic_write_bytes
from .ticket import CONDITIONS

__all__ = [
    "AGGREGATE_FIELDS",
    "AGGREGATE_METRICS",
    "CONDITIONS",
    "METRICS",
    "SUMMARY_FIELDS",
    "aggregate",
    "format_table",
    "run_structure",
    "summary_rows",
    "write_csv",
]

PathLike = str | os.PathLike[str]


SUMMARY_FIELDS: tuple[str, ...] = ("condition", *rundir.SUMMARY_FIELDS)
"""Columns of :func:`summary_rows` rows, in order: ``condition`` + ``summary.json``'s fields."""

METRICS: tuple[str, ...] = SUMMARY_FIELDS[2:]
"""Numeric per-round fields that :func:`aggregate` can average over seeds."""

AGGREGATE_METRICS: tuple[str, ...] = (
    "weights_remaining_pct",
    "early_stop_iteration",
    "test_accuracy_at_early_stop",
)
"""The metrics :func:`aggregate` summarizes by default."""

AGGREGATE_FIELDS: tuple[str, ...] = (
    "condition",
    "round",
    "n",
    *(f"{m}_{s}" for m in AGGREGATE_METRICS for s in ("mean", "std")),
)
"""Columns of the default :func:`aggregate` rows, in order."""

_NON_STUDY_KEYS = frozenset({"name", "device", "compile", "data_root", *BOOKKEEPING})


# --------------------------------------------------------------------------------------------
# reading run directories


def summary_rows(run_dir: PathLike) -> list[dict[str, Any]]:
    """One row per finished (condition, round) of a run directory, read from ``summary.json``.

    Rounds without ``summary.json`` are unfinished and skipped; conditions come in the order
    ``ticket``, ``reinit``, ``random_prune`` (others after, alphabetically), rounds ascending.

    Args:
        run_dir: A run directory (holds ``config.json``).

    Returns:
        A list of dicts with the keys :data:`SUMMARY_FIELDS`: ``condition`` (str), ``round``
        (int), ``density`` (fraction of weights kept), ``weights_remaining_pct`` (percent),
        ``early_stop_iteration``, ``val_loss_at_early_stop``, ``test_accuracy_at_early_stop``,
        ``best_test_accuracy``,
        ``last_test_accuracy`` (accuracies as fractions in [0, 1], as written by the run) and
        ``wall_seconds``. The metric values may be ``None`` when the run recorded none.

    Raises:
        TypeError: If ``run_dir`` is not a path.
        FileNotFoundError: If ``run_dir`` does not exist.
        NotADirectoryError: If ``run_dir`` is a file.
        ValueError: If ``run_dir`` has no ``config.json``, or a ``summary.json`` is not valid
            JSON, lacks a field, has a non-numeric field or a ``round`` that does not match its
            folder (the message names the file).

    Example:
        >>> import tempfile
        >>> from ltfunc.report import _example_run, summary_rows
        >>> run = _example_run(tempfile.mkdtemp(), rounds=2)
        >>> [(r["condition"], r["round"], r["weights_remaining_pct"]) for r in summary_rows(run)][:3]
        [('ticket', 0, 100.0), ('ticket', 1, 80.0), ('ticket', 2, 64.0)]
    """
    return rundir.summary_rows("summary_rows", rundir.open_run("summary_rows", run_dir))


# --------------------------------------------------------------------------------------------
# text table


def _fmt_num(v: Any, spec: str, scale: float = 1.0) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v * scale, spec)


def _fmt_mean_std(row: Mapping[str, Any], metric: str, spec: str, scale: float = 1.0) -> str:
    mean = _fmt_num(row[f"{metric}_mean"], spec, scale)
    std = row[f"{metric}_std"]
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return mean
    return f"{mean} ± {_fmt_num(std, spec, scale)}"


def _check_rows(func: str, rows: Any, needed: Sequence[str]) -> list[Mapping[str, Any]]:
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Iterable):
        raise TypeError(f"{func}: rows must be a list of dicts, got {type(rows).__name__}")
    rows = list(rows)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"{func}: rows[{i}] must be a dict, got {type(row).__name__}")
        missing = [k for k in needed if k not in row]
        if missing:
            raise ValueError(f"{func}: rows[{i}] lacks the key(s) {', '.join(missing)}")
    return rows


def format_table(rows: Iterable[Mapping[str, Any]], *, structure: str | None = None) -> str:
    """Render rows as an aligned plain-text table (what ``ltfunc report`` prints).

    Accepts either :func:`summary_rows` rows (one run) or :func:`aggregate` rows (several
    seeds, shown as ``mean ± std`` with the number of runs ``n``). Weights remaining are in
    percent; accuracies are shown in percent with two decimals; missing values print as ``-``.
    A blank line separates conditions. A structured run's table starts with the line
    ``structure: <spec>`` (``structure``, e.g. from :func:`run_structure`).

    Args:
        rows: Rows from :func:`summary_rows` or :func:`aggregate` (detected by the ``n`` key).
        structure: The runs' pruning structure (``"2:4"``, ``"block:4x4"``); ``None``:
            unstructured, no extra line.

    Returns:
        The table as one string (no trailing newline); ``"(no finished rounds)"`` when
        ``rows`` is empty.

    Raises:
        TypeError: If ``rows`` is not an iterable of dicts.
        ValueError: If a row lacks a column the table needs.

    Example:
        >>> from ltfunc.report import format_table
        >>> row = {"condition": "ticket", "round": 1, "density": 0.8, "weights_remaining_pct": 80.0,
        ...        "early_stop_iteration": 4200, "test_accuracy_at_early_stop": 0.9812,
        ...        "best_test_accuracy": 0.9825, "last_test_accuracy": 0.9801, "wall_seconds": 61.5}
        >>> print(format_table([row]))
        condition  round  weights %  early-stop it  test acc @ES %  best test acc %  last test acc %  wall s
        ---------  -----  ---------  -------------  --------------  ---------------  ---------------  ------
        ticket         1      80.00           4200           98.12            98.25            98.01    61.5
    """
    rows = _check_rows("format_table", rows, ("condition", "round"))
    if structure is not None and not isinstance(structure, str):
        raise TypeError(f"format_table: structure must be a string such as '2:4' or None, got {structure!r}")
    if structure is not None:
        return f"structure: {structure}\n{format_table(rows)}"
    if not rows:
        return "(no finished rounds)"
    if "n" in rows[0]:
        needed = [f"{m}_{s}" for m in AGGREGATE_METRICS for s in ("mean", "std")]
        rows = _check_rows("format_table", rows, ("n", *needed))
        header = ["condition", "round", "n", "weights %", "early-stop it", "test acc @ES %"]
        body = [
            [
                str(r["condition"]),
                str(r["round"]),
                str(r["n"]),
                _fmt_mean_std(r, "weights_remaining_pct", ".2f"),
                _fmt_mean_std(r, "early_stop_iteration", ".0f"),
                _fmt_mean_std(r, "test_accuracy_at_early_stop", ".2f", 100.0),
            ]
            for r in rows
        ]
    else:
        shown = [f for f in SUMMARY_FIELDS if f != "val_loss_at_early_stop"]
        rows = _check_rows("format_table", rows, shown)
        header = [
            "condition",
            "round",
            "weights %",
            "early-stop it",
            "test acc @ES %",
            "best test acc %",
            "last test acc %",
            "wall s",
        ]
        body = [
            [
                str(r["condition"]),
                str(r["round"]),
                _fmt_num(r["weights_remaining_pct"], ".2f"),
                _fmt_num(r["early_stop_iteration"], ".0f"),
                _fmt_num(r["test_accuracy_at_early_stop"], ".2f", 100.0),
                _fmt_num(r["best_test_accuracy"], ".2f", 100.0),
                _fmt_num(r["last_test_accuracy"], ".2f", 100.0),
                _fmt_num(r["wall_seconds"], ".1f"),
            ]
            for r in rows
        ]
    widths = [max(len(h), *(len(line[i]) for line in body)) for i, h in enumerate(header)]

    def render(cells: list[str]) -> str:
        # the condition column is text (left-aligned), every other column is numeric
        out = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(out).rstrip()

    lines = [render(header), render(["-" * w for w in widths])]
    previous = None
    for r, cells in zip(rows, body, strict=True):
        if previous is not None and r["condition"] != previous:
            lines.append("")
        lines.append(render(cells))
        previous = r["condition"]
    return "\n".join(lines)


def run_structure(run_dir: PathLike) -> str | None:
    """The pruning structure a run used, from its ``config.json`` (``None``: unstructured).

    Args:
        run_dir: A run directory.

    Returns:
        ``"2:4"``, ``"block:4x4"``, ... or ``None`` (also for runs written before the field).

    Raises:
        TypeError, FileNotFoundError, NotADirectoryError, ValueError: As in :func:`summary_rows`.

    Example:
        >>> import tempfile
        >>> from ltfunc.report import _example_run, run_structure
        >>> print(run_structure(_example_run(tempfile.mkdtemp(), rounds=1)))
        None
    """
    func = "run_structure"
    value = rundir.read_config_dict(func, rundir.open_run(func, run_dir)).get("structure")
    return None if value is None else str(value)


# --------------------------------------------------------------------------------------------
# aggregation over seeds


def _study_key(config: Mapping[str, Any]) -> str:
    """The config with seeds and bookkeeping removed, as canonical JSON (equal = same study)."""
    kept = {
        k: v
        for k, v in config.items()
        if k not in _NON_STUDY_KEYS and k != "seed" and not k.endswith("_seed")
    }
    return json.dumps(kept, sort_keys=True, default=str)


def _as_run_dirs(func: str, run_dirs: Any) -> list[Path]:
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    if not isinstance(run_dirs, Iterable):
        raise TypeError(f"{func}: run_dirs must be a list of paths, got {type(run_dirs).__name__}")
    paths = [rundir.open_run(func, d) for d in run_dirs]
    if not paths:
        raise ValueError(f"{func}: run_dirs is empty; pass at least one run directory")
    seen: dict[Path, Path] = {}
    for p in paths:
        resolved = p.resolve()
        if resolved in seen:
            raise ValueError(f"{func}: run directory {str(p)!r} is given twice")
        seen[resolved] = p
    # Two copies of one run (same config *and* seed) are not two seeds: averaging them would
    # report a spread of 0. Bookkeeping keys (name, device, compile, ...) do not make them differ.
    runs: dict[str, Path] = {}
    for p in paths:
        key = _run_key(rundir.read_config_dict(func, p))
        if key in runs:
            raise ValueError(
                f"{func}: run directories {str(runs[key])!r} and {str(p)!r} hold the same run (equal "
                "configs, same seed); pass each seed once (a copied run is not another seed)"
            )
        runs[key] = p
    return paths


def _run_key(config: Mapping[str, Any]) -> str:
    """The config with bookkeeping removed but the seeds kept, as canonical JSON (equal = same run)."""
    kept = {k: v for k, v in config.items() if k not in _NON_STUDY_KEYS}
    return json.dumps(kept, sort_keys=True, default=str)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for fewer than two values)."""
    arr = np.asarray(values, dtype=np.float64)
    mean = float(arr.mean()) if arr.size else math.nan
    std = float(arr.std(ddof=1)) if arr.size >= 2 else math.nan
    return mean, std


def _aggregate(paths: Sequence[Path], metrics: Sequence[str]) -> list[dict[str, Any]]:
    per_key: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for p in paths:
        for r in summary_rows(p):
            per_key.setdefault((r["condition"], r["round"]), []).append(r)
    keys = sorted(per_key, key=lambda ck: (rundir.condition_order(ck[0]), ck[1]))
    out = []
    for cond, k in keys:
        group = per_key[(cond, k)]
        row: dict[str, Any] = {"condition": cond, "round": k, "n": len(group)}
        for m in metrics:
            vals = [math.nan if g[m] is None else float(g[m]) for g in group]
            row[f"{m}_mean"], row[f"{m}_std"] = _mean_std(vals)
        out.append(row)
    return out


def aggregate(
    run_dirs: PathLike | Iterable[PathLike], *, metrics: Sequence[str] = AGGREGATE_METRICS
) -> list[dict[str, Any]]:
    """Mean ± sample std over several run directories (seeds) of the same study.

    Runs are the same study when their ``config.json`` files are equal once the seeds
    (``seed`` and any ``*_seed`` key) and the bookkeeping keys (``name``, ``config_hash``,
    ``ltfunc_version``, ``device``, ``compile``, ``data_root``) are removed. A (condition, round)
    is aggregated over the runs that finished it.

    Args:
        run_dirs: Run directories (a single path is accepted too).
        metrics: Which :data:`METRICS` to summarize. Default: weights remaining, early-stop
            iteration and test accuracy at early stop.

    Returns:
        One dict per (condition, round), ordered like :func:`summary_rows`, with ``condition``,
        ``round``, ``n`` (number of runs that finished the round) and ``<metric>_mean``,
        ``<metric>_std`` per metric (for the default metrics the keys are
        :data:`AGGREGATE_FIELDS`). The std is the sample std (``ddof=1``); it is NaN when
        ``n == 1``. A metric a run recorded as ``None`` counts as NaN.

    Raises:
        TypeError: If ``run_dirs`` is not a path or an iterable of paths.
        FileNotFoundError: If a run directory does not exist.
        ValueError: If ``run_dirs`` is empty, repeats a directory (or holds two copies of one
            run: equal configs including the seed), is not a run directory, the
            runs are not the same study (names the first differing run), ``metrics`` names an
            unknown metric, or a summary file is corrupt (see :func:`summary_rows`).

    Example:
        >>> import tempfile
        >>> from ltfunc.report import _example_run, aggregate
        >>> root = tempfile.mkdtemp()
        >>> runs = [_example_run(f"{root}/s{s}", seed=s, rounds=1) for s in range(3)]
        >>> row = aggregate(runs)[1]
        >>> row["condition"], row["round"], row["n"], row["weights_remaining_pct_mean"]
        ('ticket', 1, 3, 80.0)
        >>> round(row["test_accuracy_at_early_stop_std"], 4)
        0.001
    """
    paths = _as_run_dirs("aggregate", run_dirs)
    if isinstance(metrics, str) or not isinstance(metrics, Sequence) or not metrics:
        raise TypeError(f"aggregate: metrics must be a non-empty sequence of names, got {metrics!r}")
    for m in metrics:
        if m not in METRICS:
            raise ValueError(
                f"aggregate: metrics entry {m!r} is not supported. Supported: {', '.join(METRICS)}"
            )
    keys = [_study_key(rundir.read_config_dict("aggregate", p)) for p in paths]
    for p, key in zip(paths[1:], keys[1:], strict=True):
        if key != keys[0]:
            raise ValueError(
                f"aggregate: {str(p)!r} is not the same study as {str(paths[0])!r} (their configs differ "
                "in more than the seed); aggregate one study at a time"
            )
    return _aggregate(paths, list(metrics))


# --------------------------------------------------------------------------------------------
# CSV


def write_csv(
    rows: Iterable[Mapping[str, Any]], path: PathLike, *, fieldnames: Sequence[str] | None = None
) -> Path:
    """Write rows to a CSV file atomically (temp file + ``os.replace``).

    ``None`` and NaN are written as empty cells; floats are written with ``repr`` precision.

    Args:
        rows: Dicts that all have the same keys (e.g. from :func:`summary_rows` or
            :func:`aggregate`).
        path: Destination file; parent folders are created.
        fieldnames: Column order. Default: the keys of the first row. Needed when ``rows`` is
            empty (then only the header is written), e.g. :data:`SUMMARY_FIELDS`.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: If ``rows`` is not an iterable of dicts or ``path`` not a path.
        ValueError: If a row's keys differ from ``fieldnames``, or ``rows`` is empty and no
            ``fieldnames`` were given.

    Example:
        >>> import tempfile, os
        >>> from ltfunc.report import write_csv
        >>> f = write_csv([{"round": 0, "acc": 0.98}, {"round": 1, "acc": None}],
        ...               os.path.join(tempfile.mkdtemp(), "s.csv"))
        >>> print(f.read_text().strip())
        round,acc
        0,0.98
        1,
    """
    rows = _check_rows("write_csv", rows, ())
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"write_csv: path must be a path, got {type(path).__name__} {path!r}")
    if fieldnames is None:
        if not rows:
            raise ValueError("write_csv: rows is empty and fieldnames is None; pass fieldnames=")
        fieldnames = list(rows[0])
    fieldnames = list(fieldnames)
    for i, row in enumerate(rows):
        if set(row) != set(fieldnames):
            raise ValueError(
                f"write_csv: rows[{i}] has the keys {sorted(row)}, expected the columns {sorted(fieldnames)}"
            )

    def cell(v: Any) -> Any:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return v

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: cell(row[k]) for k in fieldnames})
    data = buf.getvalue().encode("utf-8")
    out = Path(path)
    atomic_write_bytes(out, lambda tmp: Path(tmp).write_bytes(data))
    return out


# --------------------------------------------------------------------------------------------
# a tiny synthetic run directory for the examples


def _example_run(
    run_dir: PathLike, *, seed: int = 0, rounds: int = 2, name: str | None = None, model: str = "lenet300"
) -> Path:
    """Write a small, fake but layout-correct run directory (for the docstring examples only).

    Each round keeps 80% of the previous weights; accuracies depend on ``seed`` by ±0.1%.
    """
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    config = {"name": name, "model": model, "dataset": "mnist", "rounds": rounds, "seed": seed}
    rundir.write_json(run / "config.json", config)
    offsets = {"ticket": 0.0, "reinit": -0.01, "random_prune": -0.02}
    for condition, offset in offsets.items():
        for k in range(rounds + 1):
            if condition != "ticket" and k == 0:
                continue
            rd = rundir.round_dir(run, condition, k)
            density = 0.8**k
            acc = 0.97 + offset + 0.001 * seed
            metrics = [
                {"iteration": it, "test_accuracy": acc * it / 300, "density": density}
                for it in (100, 200, 300)
            ]
            rundir.write_text(rd / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics))
            summary = {
                "round": k,
                "density": density,
                "weights_remaining_pct": round(100.0 * density, 4),
                "early_stop_iteration": 300,
                "val_loss_at_early_stop": 0.1,
                "test_accuracy_at_early_stop": acc,
                "best_test_accuracy": acc,
                "last_test_accuracy": acc,
                "wall_seconds": 1.0,
            }
            rundir.write_json(rd / "summary.json", summary)
    return run
