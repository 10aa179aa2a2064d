"""Instability analysis of an IMP run: error barrier vs rewind iteration, and mask overlap.

::

    result = instability_sweep("runs/lenet", rewind_points=[0, 100, 2000], rounds=[0, 3, 7])
    result.rows        # one row per (round, k): barrier, endpoint test errors, ...
    mask_overlaps(["runs/seed0", "runs/seed1"])   # Jaccard of the tickets' masks

For each chosen ticket round ``r`` of a finished run (its mask; round 0 is the dense network)
and each rewind iteration ``k`` (Frankle, Dziugaite, Roy & Carbin 2020, "Linear Mode
Connectivity and the Lottery Ticket Hypothesis", instability analysis of IMP subnetworks):

1. the start is the run's dense network at iteration ``k``: θ0 (``init.safetensors``) for
   ``k = 0``; the run's saved rewind point when ``k`` is the run's ``rewind``; otherwise θ0
   trained dense for ``k`` iterations with the run's own trainer and data order (once per
   ``k``, kept in memory while that ``k``'s rounds run);
2. it is reset to the round's mask (:func:`ltfunc.reset_to`);
3. two copies train the rest of the run's training (``config.iterations - k`` iterations,
   or ``T - k`` with ``iterations=T``; the run's optimizer, batch size and lr schedule from
   iteration ``k``) with two data orders (``seeds``) as one vmapped pair
   (:func:`ltfunc.lmc.instability`);
4. the error barrier between them is measured on the **test** split (as in the paper).

The masks are the run's own tickets: a run made with reset (``rewind = 0``) reuses its masks
for every ``k`` (the paper finds a mask per rewind iteration). Rows are written as each
finishes (``instability.json``, the source of truth, and ``instability.csv``, both atomic),
so a killed sweep resumes where it stopped; rows of other settings are refused.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import itertools
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from . import rundir
from ._checks import check_bool, check_int, check_path, check_seed
from .lmc import (
    DEFAULT_ALPHAS,
    OVERLAP_FIELDS,
    _check_alphas,
    _finished_rounds,
    _int_list,
    _ticket_mask,
    format_overlap,
    instability,
    mask_overlaps,
)
from .masks import density, ones
from .ticket import reset_to
from .trainer import Weights, train_round

__all__ = [
    "INSTABILITY_FIELDS",
    "SweepResult",
    "add_instability_parser",
    "cmd_instability",
    "cmd_overlap",
    "format_instability",
    "instability_sweep",
    "plot_instability",
]

INSTABILITY_FIELDS: tuple[str, ...] = (
    "round",
    "density",
    "rewind_iteration",
    "iterations",
    "barrier",
    "loss_barrier",
    "error_a",
    "error_b",
    "mean_endpoint_error",
    "max_error",
    "errors",
    "wall_seconds",
)
"""Columns of ``instability.csv`` (``errors``: the test error at each alpha, ``;``-separated)."""

JSON_NAME = "instability.json"
CSV_NAME = "instability.csv"
PNG_NAME = "instability.png"
EVAL_SPLIT = "test"


class SweepResult(NamedTuple):
    """What :func:`instability_sweep` returns."""

    out_dir: Path
    """The folder holding ``instability.json``, ``instability.csv`` and ``instability.png``."""
    settings: dict[str, Any]
    """What every row was computed with (the run's config hash, seeds, alphas, split, ...)."""
    rows: tuple[dict[str, Any], ...]
    """All rows in the folder (:data:`INSTABILITY_FIELDS`), sorted by (round, rewind_iteration)."""
    computed: tuple[tuple[int, int], ...]
    """``(round, k)`` pairs this call computed."""
    skipped: tuple[tuple[int, int], ...]
    """``(round, k)`` pairs already in the folder (not recomputed)."""
    plot: Path | None
    """The figure, or ``None`` (``plot=False``)."""


# ----------------------------------------------------------------------------------------------
# validation


def _check_rounds(func: str, run: Path, rounds: Any) -> list[int]:
    done = _finished_rounds(run)
    if rounds is None:
        if not done:
            raise ValueError(f"{func}: {run} has no finished ticket round")
        return done
    chosen = _int_list(func, "rounds", rounds, 0, 10**9, "is not a round index")
    missing = [r for r in chosen if r not in done]
    if missing:
        raise ValueError(
            f"{func}: rounds {missing} are not finished ticket rounds of {run}; it has rounds {done}"
        )
    return chosen


def _check_seeds(func: str, seeds: Any) -> tuple[int, int]:
    if not isinstance(seeds, (tuple, list)) or len(seeds) != 2:
        raise TypeError(f"{func}: seeds must be a pair of ints (two data orders), got {seeds!r}")
    return (
        check_seed(func, seeds[0], name="seeds[0]") or 0,
        check_seed(func, seeds[1], name="seeds[1]") or 0,
    )


def _read_existing(func: str, out_dir: Path, settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    path = out_dir / JSON_NAME
    if not path.is_file():
        return []
    data = rundir.read_json(func, path, hint=f"; delete {path} and {out_dir / CSV_NAME} to start over")
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or "settings" not in data:
        raise ValueError(f"{func}: {path} is not an instability file (no settings / rows)")
    old = data["settings"]
    diff = {k: (old.get(k), settings[k]) for k in settings if k != "run_dir" and old.get(k) != settings[k]}
    if diff:
        shown = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
        raise ValueError(
            f"{func}: {out_dir} holds instability rows of other settings ({shown}); "
            "choose another out folder or delete its instability files"
        )
    return [dict(r) for r in data["rows"]]


# ----------------------------------------------------------------------------------------------
# writing


def _csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(INSTABILITY_FIELDS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        out = {k: row.get(k) for k in INSTABILITY_FIELDS}
        out["errors"] = ";".join(repr(e) for e in row["errors"])
        writer.writerow(out)
    return buf.getvalue()


def _write(out_dir: Path, settings: Mapping[str, Any], rows: list[dict[str, Any]]) -> None:
    rows.sort(key=lambda r: (r["round"], r["rewind_iteration"]))
    rundir.write_json(out_dir / JSON_NAME, {"settings": dict(settings), "rows": rows})
    rundir.write_text(out_dir / CSV_NAME, _csv_text(rows))


# ----------------------------------------------------------------------------------------------
# the sweep


def instability_sweep(
    run_dir: str | os.PathLike[str],
    *,
    rewind_points: Sequence[int],
    rounds: Sequence[int] | None = None,
    seeds: tuple[int, int] = (0, 1),
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    iterations: int | None = None,
    out: str | os.PathLike[str] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    compile: bool | None = None,
    device: str | None = None,
    eval_batch_size: int = 1000,
    plot: bool = True,
    progress: bool = True,
) -> SweepResult:
    """Error barrier (instability) of an IMP run's tickets for each rewind iteration; resumable.

    For each ticket round ``r`` in ``rounds`` and each ``k`` in ``rewind_points``: the run's
    dense network at iteration ``k`` reset to round ``r``'s mask, trained twice for the rest
    of the run's training (``config.iterations - k`` iterations) with data orders ``seeds``,
    and the test-error barrier between the two copies measured at ``alphas`` (see the module
    docstring for where the weights at ``k`` come from). Pairs are run with ``k`` outer, in
    the order given (so the first ``k`` values finish first), and each finished row is
    written at once; pairs already in ``out`` are skipped.

    Args:
        run_dir: A finished (or partly finished) run directory of :func:`ltfunc.run_imp`.
        rewind_points: Rewind iterations ``k``, each in ``[0, T - 1]`` (``T``: ``iterations``).
        rounds: Finished ticket rounds to analyse (round 0: dense); default all finished ones.
        seeds: The two copies' data-order seeds.
        alphas: Interpolation weights in [0, 1] (default 0, 0.1, ..., 1).
        iterations: Training length ``T`` the copies train to (``T - k`` iterations each);
            default the run's ``config.iterations``. A shorter ``T`` is cheaper but is not the
            run's training (the lr schedule stays the run's, defined over its iterations).
        out: Output folder; default ``RUN_DIR/instability``.
        data_root: Where the run's dataset lives (as for :func:`ltfunc.run_imp`).
        compile: Compile the training steps; default the run's ``compile``.
        device: Where to train; default the run's ``device``.
        eval_batch_size: Evaluation batch size.
        plot: Write ``instability.png`` (:func:`plot_instability`) at the end.
        progress: Print one line per finished row (and the start of each ``k``) to stderr.

    Returns:
        :class:`SweepResult` ``(out_dir, settings, rows, computed, skipped, plot)``.

    Raises:
        TypeError: Arguments of the wrong type.
        ValueError: ``run_dir`` is not an ltfunc run; a rewind iteration outside
            ``[0, T - 1]``; a round that is not a finished ticket round;
            alphas outside [0, 1]; ``out`` holds rows of other settings or is held by another
            live process. All raised before any training or writing.
        FileNotFoundError: ``run_dir`` or the dataset is missing.

    Example:
        >>> from ltfunc.instability import instability_sweep
        >>> r = instability_sweep("runs/lenet", rewind_points=[0, 100], rounds=[0, 3])  # doctest: +SKIP
        >>> [(row["round"], row["rewind_iteration"], row["barrier"]) for row in r.rows]  # doctest: +SKIP
    """
    func = "instability_sweep"
    run = rundir.open_run(func, run_dir)
    config = rundir.read_config(run)
    total = config.iterations if iterations is None else check_int(func, "iterations", iterations, 1)
    ks = _int_list(
        func,
        "rewind_points",
        rewind_points,
        0,
        total - 1,
        f"is beyond the training length ({total} iterations)",
    )
    chosen = _check_rounds(func, run, rounds)
    seed_pair = _check_seeds(func, seeds)
    alpha_list = _check_alphas(func, alphas)
    out_dir = run / "instability" if out is None else check_path(func, "out", out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{func}: out={str(out_dir)!r} is a file; pass a folder")
    check_int(func, "eval_batch_size", eval_batch_size, 1)
    check_bool(func, "plot", plot)
    check_bool(func, "progress", progress)
    if compile is not None:
        check_bool(func, "compile", compile)
    if device is not None and not isinstance(device, str):
        raise TypeError(f"{func}: device must be a string such as 'cpu' or 'cuda', got {device!r}")
    config_dict = rundir.read_config_dict(func, run)
    settings = {
        "run_dir": str(run),
        "run_config_hash": config_dict.get("config_hash", config.config_hash()),
        "model": config.model,
        "dataset": config.dataset,
        "training_iterations": total,
        "run_rewind": config.rewind,
        "seeds": list(seed_pair),
        "alphas": list(alpha_list),
        "split": EVAL_SPLIT,
        "masks": "ticket",
    }
    rows = _read_existing(func, out_dir, settings)
    done = {(int(r["round"]), int(r["rewind_iteration"])) for r in rows}
    todo = [(k, r) for k in ks for r in chosen if (r, k) not in done]
    skipped = tuple((r, k) for k in ks for r in chosen if (r, k) in done)
    computed: list[tuple[int, int]] = []
    setup = _setup(run, config, data_root, compile, device) if todo else None  # data, θ0: before any write
    out_dir.mkdir(parents=True, exist_ok=True)
    with rundir.lock(func, out_dir):
        rows = _read_existing(func, out_dir, settings)  # again: another process may have added rows
        done = {(int(r["round"]), int(r["rewind_iteration"])) for r in rows}
        todo = [t for t in todo if (t[1], t[0]) not in done]
        skipped = tuple((r, k) for k in ks for r in chosen if (r, k) in done)
        if setup is not None and todo:
            computed = _sweep(run, setup, todo, settings, rows, out_dir, eval_batch_size, progress)
        png = plot_instability(rows, out_dir / PNG_NAME) if plot and rows else None
    rows.sort(key=lambda r: (r["round"], r["rewind_iteration"]))
    return SweepResult(out_dir, settings, tuple(rows), tuple(computed), skipped, png)


def _setup(
    run: Path, config: Any, data_root: Any, compile: bool | None, device: str | None
) -> tuple[Any, ...]:
    """The run's config (with the overrides), dataset, θ0 and trainer."""
    from .experiment import load_config_dataset, make_config_trainer

    changes = {k: v for k, v in (("compile", compile), ("device", device)) if v is not None}
    cfg = dataclasses.replace(config, **changes) if changes else config
    dataset = load_config_dataset(cfg, data_root)
    model = cfg.make_model().to(cfg.device)
    theta0 = rundir.load_weights("instability_sweep", rundir.init_path(run), cfg.device)
    return cfg, dataset, theta0, make_config_trainer(cfg, model, dataset, splits=(EVAL_SPLIT,))


def _sweep(
    run: Path,
    setup: tuple[Any, ...],
    todo: list[tuple[int, int]],
    settings: Mapping[str, Any],
    rows: list[dict[str, Any]],
    out_dir: Path,
    eval_batch_size: int,
    progress: bool,
) -> list[tuple[int, int]]:
    func = "instability_sweep"
    cfg, dataset, theta0, trainer = setup
    computed: list[tuple[int, int]] = []
    total = int(settings["training_iterations"])
    for k, group in itertools.groupby(todo, key=lambda t: t[0]):
        t0 = time.perf_counter()
        start = _dense_at(func, run, cfg, trainer, theta0, k)
        if progress:
            print(f"{func}: k={k}: dense start ready ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
        for _, r in group:
            t0 = time.perf_counter()
            mask = _ticket_mask(func, run, r, cfg.device)
            path = instability(
                trainer,
                reset_to(start, mask),
                mask,
                dataset.train,
                total - k,
                seeds=tuple(settings["seeds"]),
                start_iteration=k,
                eval_split=getattr(dataset, EVAL_SPLIT),
                alphas=settings["alphas"],
                eval_batch_size=eval_batch_size,
            )
            err_a, err_b = path.endpoint_errors
            row = {
                "round": r,
                "density": density(mask),
                "rewind_iteration": k,
                "iterations": total - k,
                "barrier": path.barrier,
                "loss_barrier": path.loss_barrier,
                "error_a": err_a,
                "error_b": err_b,
                "mean_endpoint_error": (err_a + err_b) / 2,
                "max_error": max(*path.errors, err_a, err_b),
                "errors": list(path.errors),
                "wall_seconds": time.perf_counter() - t0,
            }
            rows.append(row)
            _write(out_dir, settings, rows)
            computed.append((r, k))
            if progress:
                print(
                    f"{func}: round {r} ({100 * row['density']:.1f}% weights), k={k}: barrier "
                    f"{100 * path.barrier:.2f} pp, endpoint test errors {100 * err_a:.2f}% / "
                    f"{100 * err_b:.2f}% ({row['wall_seconds']:.0f} s)",
                    file=sys.stderr,
                )
    return computed


def _dense_at(func: str, run: Path, config: Any, trainer: Any, theta0: Weights, k: int) -> Weights:
    """The run's dense network at iteration ``k``: θ0, the saved rewind point, or θ0 trained ``k`` steps."""
    if k == 0:
        return theta0
    if k == config.rewind:
        return rundir.load_rewind_point(func, run, k, config.device)
    short = trainer._replace(iterations=k, eval_every=k, evaluate=None)
    return train_round(short, theta0, ones(theta0.params)).final


# ----------------------------------------------------------------------------------------------
# table and figure


def format_instability(rows: Sequence[Mapping[str, Any]]) -> str:
    """A text table: one line per density, the barrier (percentage points of test error) per ``k``.

    Args:
        rows: Rows of :func:`instability_sweep` (``round``, ``density``, ``rewind_iteration``,
            ``barrier``, ``mean_endpoint_error``).

    Returns:
        The table; each cell ``barrier (mean endpoint error)`` in percent, ``-`` where missing.

    Raises:
        TypeError: A row that is not a mapping.
        ValueError: A row without the needed keys.

    Example:
        >>> rows = [{"round": 0, "density": 1.0, "rewind_iteration": 0, "barrier": 0.001,
        ...          "mean_endpoint_error": 0.02}]
        >>> print(format_instability(rows))
        round  weights %  k=0
            0     100.00  0.10 (2.00)
    """
    func = "format_instability"
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"{func}: rows[{i}] must be a mapping, got {type(row).__name__}")
        missing = [
            k
            for k in ("round", "density", "rewind_iteration", "barrier", "mean_endpoint_error")
            if k not in row
        ]
        if missing:
            raise ValueError(f"{func}: rows[{i}] lacks {missing}")
    ks = sorted({int(r["rewind_iteration"]) for r in rows})
    cells = {(int(r["round"]), int(r["rewind_iteration"])): r for r in rows}
    dens = {int(r["round"]): float(r["density"]) for r in rows}
    head = ["round", "weights %", *(f"k={k}" for k in ks)]
    lines = []
    for rnd in sorted(dens):
        line = [str(rnd), f"{100 * dens[rnd]:.2f}"]
        for k in ks:
            c = cells.get((rnd, k))
            line.append(
                "-" if c is None else f"{100 * c['barrier']:.2f} ({100 * c['mean_endpoint_error']:.2f})"
            )
        lines.append(line)
    widths = [max(len(h), *(len(x[i]) for x in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = [h.rjust(w) if i < 2 else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths, strict=True))]
    out = ["  ".join(fmt).rstrip()]
    for x in lines:
        out.append(
            "  ".join(
                v.rjust(w) if i < 2 else v.ljust(w) for i, (v, w) in enumerate(zip(x, widths, strict=True))
            ).rstrip()
        )
    return "\n".join(out)


def plot_instability(
    rows: Sequence[Mapping[str, Any]], out_png: str | os.PathLike[str], *, dpi: int = 150
) -> Path:
    """Figure: error barrier vs rewind iteration ``k`` (symlog x axis), one line per density.

    matplotlib is imported on first use (figure on the Agg canvas, written atomically).

    Args:
        rows: Rows of :func:`instability_sweep`.
        out_png: Output file (``.png``).
        dpi: Resolution.

    Returns:
        The path written.

    Raises:
        TypeError, ValueError: Bad rows (see :func:`format_instability`), ``out_png`` not a
            ``.png`` path, ``dpi`` outside [10, 1200].

    Example:
        >>> import tempfile, pathlib
        >>> rows = [{"round": 0, "density": 1.0, "rewind_iteration": k, "barrier": 0.0,
        ...          "mean_endpoint_error": 0.02} for k in (0, 100)]
        >>> plot_instability(rows, pathlib.Path(tempfile.mkdtemp()) / "i.png").suffix
        '.png'
    """
    from .plot import _check_dpi, _check_out_png, _new_figure, _save

    func = "plot_instability"
    out = _check_out_png(func, out_png)
    _check_dpi(func, dpi)
    format_instability(rows)  # validates the rows
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    fig, ax = _new_figure()
    by_round: dict[int, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_round.setdefault(int(r["round"]), []).append(r)
    ks = sorted({int(r["rewind_iteration"]) for r in rows})
    for rnd in sorted(by_round):
        pts = sorted(by_round[rnd], key=lambda r: r["rewind_iteration"])
        label = f"{100 * float(pts[0]['density']):.1f}% weights" + (" (dense)" if rnd == 0 else "")
        ax.plot(
            [p["rewind_iteration"] for p in pts], [100 * p["barrier"] for p in pts], marker="o", label=label
        )
    positive = [k for k in ks if k > 0]
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
    ax.xaxis.set_major_locator(FixedLocator(ks))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("rewind iteration k (symlog)")
    ax.set_ylabel("test error barrier (percentage points)")
    ax.axhline(0.0, color="gray", linewidth=0.8)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, out, dpi)


# ----------------------------------------------------------------------------------------------
# command line


def _int_csv(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def _float_csv(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from e


def add_instability_parser(sub: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """The ``instability`` subcommand (``ltfunc instability RUN_DIR --rewind 0,100,2000``)."""
    p = sub.add_parser(
        "instability",
        help="error barrier between two data orders vs rewind iteration, for an IMP run's tickets",
        description=(
            "For each chosen ticket round (its mask; round 0 = dense) and each rewind iteration k: "
            "the run's dense network at iteration k, reset to the mask, trained twice for the rest "
            "of the run's training with two data orders; prints and writes the test-error barrier "
            "between the two (instability.json / .csv / .png in RUN_DIR/instability or --out). "
            "Resumable: finished rows are kept."
        ),
        formatter_class=formatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of `ltfunc imp`")
    p.add_argument("--rewind", type=_int_csv, required=True, metavar="K,K,...", help="rewind iterations k")
    p.add_argument(
        "--rounds", type=_int_csv, default=None, metavar="R,R,...", help="ticket rounds (default all)"
    )
    p.add_argument("--seeds", type=_int_csv, default=[0, 1], metavar="S,S", help="the two data-order seeds")
    p.add_argument(
        "--alphas", type=_float_csv, default=None, metavar="A,A,...", help="interpolation weights in [0, 1]"
    )
    p.add_argument(
        "--iterations", type=int, default=None, metavar="T", help="train the copies to T (default the run's)"
    )
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default RUN_DIR/instability)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="dataset folder ($LTFUNC_DATA_ROOT)")
    p.add_argument("--device", default=None, help="train on this device (default the run's)")
    p.add_argument(
        "--compile", default=None, action=argparse.BooleanOptionalAction, help="compile (default the run's)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def cmd_instability(ns: argparse.Namespace) -> int:
    """``ltfunc instability RUN_DIR ...``: run :func:`instability_sweep`, print its table."""
    result = instability_sweep(
        ns.run_dir,
        rewind_points=ns.rewind,
        rounds=ns.rounds,
        seeds=tuple(ns.seeds),
        alphas=DEFAULT_ALPHAS if ns.alphas is None else ns.alphas,
        iterations=ns.iterations,
        out=ns.out,
        data_root=ns.data_root,
        compile=ns.compile,
        device=ns.device,
        progress=not ns.quiet,
    )
    print("test error barrier, percentage points (mean endpoint test error, %)")
    print(format_instability(result.rows))
    print(f"\nrows: {result.out_dir / CSV_NAME}")
    if result.plot is not None:
        print(f"plot: {result.plot}")
    return 0


def cmd_overlap(ns: argparse.Namespace) -> int:
    """``ltfunc report --overlap RUN...``: print :func:`mask_overlaps` as a table (and ``--csv``)."""
    rows = mask_overlaps(ns.run_dirs)
    print(format_overlap(rows))
    if getattr(ns, "csv", None):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(OVERLAP_FIELDS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        rundir.write_text(Path(ns.csv), buf.getvalue())
        print(f"\ncsv: {ns.csv}")
    return 0
