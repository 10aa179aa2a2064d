"""The ``ltfunc reproduce`` command: its parser and what it runs (see :func:`ltfunc.studies.reproduce`)."""

from __future__ import annotations

import argparse
from typing import Any

from .. import report
from ..cli_args import add_parallel_args, download_flag, seeds_arg
from .registry import STUDIES, get_study
from .run import reproduce

__all__ = ["add_reproduce_parser", "cmd_reproduce"]


def add_reproduce_parser(sub: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """The ``ltfunc reproduce`` subcommand's parser."""

    rep = sub.add_parser(
        "reproduce",
        help="reproduce a lottery-ticket study of the paper (resumable) and write its results",
        description=(
            "Run every seed of STUDY in turn into RUNS_DIR/<prefix>-seed<k> (resumable: run the same\n"
            "command again after an interruption), then write OUT/rounds.csv, runs.csv, the figures\n"
            "and results.md (with the deviations from the paper and whether the results are partial).\n"
            "<prefix> is STUDY, with the overridden settings appended. Studies: "
            + ", ".join(f"{k} ({v.title})" for k, v in STUDIES.items())
        ),
        formatter_class=formatter,
    )
    rep.add_argument("study", metavar="STUDY", help=f"the study: {', '.join(STUDIES)}")
    rep.add_argument(
        "--seeds", type=seeds_arg, default=None, help="comma-separated seeds (None: the study's, e.g. 0,1,2)"
    )
    rep.add_argument("--runs-dir", default="runs", help="parent folder of the run directories")
    rep.add_argument("--out", default=None, help="output folder (None: docs/results/<prefix>)")
    rep.add_argument(
        "--data-root",
        default=None,
        help="folder holding mnist/ and fashion-mnist/ in torchvision layout "
        "(None: $LTFUNC_DATA_ROOT, else ~/.cache/ltfunc/data, downloading there if missing)",
    )
    rep.add_argument("--download", action="store_true", help="download the dataset if it is missing")
    for name, what in (
        ("iterations", "training iterations per round"),
        ("rounds", "pruning rounds"),
        ("eval_every", "evaluation interval in iterations"),
        ("val_size", "training examples held out for validation"),
    ):
        rep.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            default=None,
            help=f"override the study's {what} (None: the study's); recorded as a deviation",
        )
    rep.add_argument("--device", default=None, help="device to train on (None: cpu)")
    rep.add_argument(
        "--no-compile",
        dest="compile",
        action="store_false",
        default=None,
        help="run the training step eagerly instead of torch.compile'ing it once",
    )
    rep.add_argument("--quiet", action="store_true", help="no progress bars")
    add_parallel_args(rep, lambda v: v, seeds=False)
    rep.add_argument(
        "--collect-only",
        action="store_true",
        help="train nothing: write the results of the rounds finished so far (e.g. while runs go on)",
    )
    rep.add_argument(
        "--force",
        action="store_true",
        help="replace results in --out that hold more finished rounds than the runs in --runs-dir",
    )


def cmd_reproduce(ns: argparse.Namespace) -> int:
    """Run ``ltfunc reproduce`` (parsed by :func:`add_reproduce_parser`); returns the exit status."""

    study = get_study(ns.study)  # an unknown name fails here, listing the valid ones
    overrides = {k: getattr(ns, k) for k in ("iterations", "rounds", "eval_every", "val_size")}
    result = reproduce(
        study,
        ns.seeds,
        runs_dir=ns.runs_dir,
        out=ns.out,
        overrides=overrides,
        data_root=ns.data_root,
        device=ns.device,
        compile=ns.compile,
        progress=not ns.quiet,
        download=download_flag(ns.download, ns.data_root),
        collect_only=ns.collect_only,
        force=ns.force,
        parallel=ns.parallel,
        workers=ns.workers,
    )
    print(report.format_table([{**r, "n": r["n_seeds"]} for r in result.rows]))
    state = (
        "complete" if result.complete else f"PARTIAL: {result.finished} of {result.expected} rounds finished"
    )
    print(f"\n{study.name}: {state}")
    for path in result.files:
        print(f"wrote {path}")
    return 0
