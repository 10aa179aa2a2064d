"""The ``ltfunc sweep`` command, and ``ltfunc report`` / ``ltfunc plot`` of a sweep root.

Split out of :mod:`ltfunc.sweep`; :mod:`ltfunc.cli` adds the parser (:func:`add_sweep_parser`)
and lets :func:`sweep_command` handle what concerns sweeps.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import report
from .sweep import EXECUTORS, format_sweep_table, is_sweep_root, plot_sweep, run_sweep, sweep_rows

__all__ = ["add_sweep_parser", "sweep_command"]


# --------------------------------------------------------------------------------------------
# command line: `ltfunc sweep FILE`, and `ltfunc report` / `ltfunc plot` of a sweep root


def add_sweep_parser(sub: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """Add the ``sweep`` subcommand to the ``ltfunc`` parser's subparsers."""
    p = sub.add_parser(
        "sweep",
        help="run a grid of IMP runs (seeds, rates, rewind points, ...) under one root (resumable)",
        description=(
            "Expand the [grid] of FILE (TOML or JSON: a [base] table of config fields or preset, a\n"
            "[grid] table of field = [values]) into runs ROOT/<point>-seed<k>, skip those already\n"
            "finished and run the rest with the executor. Run the same command again to finish the\n"
            "missing runs. Ends by printing mean ± std over the seeds of each grid point\n"
            "(ltfunc report ROOT) and writing ROOT/plot.png."
        ),
        formatter_class=formatter,
    )
    p.add_argument("file", metavar="FILE", help="the sweep spec (.toml or .json)")
    p.add_argument("--root", default=None, help="the sweep root (None: runs/<FILE's stem>)")
    p.add_argument("--executor", choices=EXECUTORS, default="local", help="how the runs are executed")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="runs at a time (None: local: one per core; ray: all the local instance's CPUs)",
    )
    p.add_argument(
        "--address", default=None, help="ray: the cluster to join (auto, HOST:PORT; None: start one)"
    )
    p.add_argument("--partition", default=None, help="slurm: the partition")
    p.add_argument("--time", type=int, default=None, metavar="MIN", help="slurm: time limit per run (60)")
    p.add_argument("--gpus-per-run", type=float, default=None, metavar="G", help="ray / slurm: GPUs per run")
    p.add_argument(
        "--cpus-per-run",
        type=int,
        default=None,
        metavar="C",
        help="CPUs (torch threads) per run (None: local: cores // workers; ray / slurm: 1)",
    )
    p.add_argument(
        "--slurm-cluster",
        choices=("slurm", "local", "debug"),
        default=None,
        help="slurm: submitit's cluster (None: slurm where sbatch exists, else local subprocesses)",
    )
    p.add_argument("--data-root", default=None, help="folder of the datasets (None: $LTFUNC_DATA_ROOT)")
    p.add_argument("--download", action="store_true", help="download missing datasets before the runs")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="CIFAR: skip the MD5 check")
    p.add_argument(
        "--force",
        action="store_true",
        help="record this spec in a root that holds another sweep (runs with another config restart)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _cmd_sweep(ns: argparse.Namespace) -> int:
    root = Path(ns.root) if ns.root is not None else Path("runs") / Path(ns.file).stem
    result = run_sweep(
        ns.file,
        root,
        executor=ns.executor,
        workers=ns.workers,
        address=ns.address,
        partition=ns.partition,
        time_min=ns.time,
        gpus_per_run=ns.gpus_per_run,
        cpus_per_run=ns.cpus_per_run,
        slurm_cluster=ns.slurm_cluster,
        data_root=ns.data_root,
        download=ns.download,
        verify=ns.verify,
        force=ns.force,
        progress=not ns.quiet,
    )
    print(format_sweep_table(sweep_rows(root)))
    png = plot_sweep(root, root / "plot.png")
    trained = len(result.results) - len(result.skipped)
    print(f"\n{len(result.results)} run(s): {trained} run now, {len(result.skipped)} already finished")
    print(f"plot: {png.path}")
    return 0


def sweep_command(ns: argparse.Namespace) -> int | None:
    """Run ``ltfunc sweep``, or ``ltfunc report`` / ``plot`` of a sweep root; ``None`` for anything else.

    Raises:
        ValueError: A sweep root given to ``report`` / ``plot`` together with other folders.
    """
    if ns.command == "sweep":
        return _cmd_sweep(ns)
    if ns.command not in ("report", "plot") or not any(is_sweep_root(d) for d in ns.run_dirs):
        return None
    if len(ns.run_dirs) > 1:
        raise ValueError(f"ltfunc {ns.command}: pass a sweep root alone, got {ns.run_dirs}")
    root = ns.run_dirs[0]
    if ns.command == "plot":
        print(f"plot: {plot_sweep(root, ns.output, metric=ns.metric, title=ns.title).path}")
        return 0
    rows = sweep_rows(root)
    print(format_sweep_table(rows))
    if ns.csv:
        report.write_csv(rows, ns.csv, fieldnames=("point", *report.AGGREGATE_FIELDS))
        print(f"\ncsv: {ns.csv}")
    return 0
