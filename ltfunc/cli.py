"""The ``ltfunc`` command line: ``imp``, ``prune``, ``report``, ``plot``, ``reproduce`` and ``presets``.

``ltfunc imp`` runs (or resumes) an IMP experiment into ``RUNS_DIR/NAME`` (see
:func:`ltfunc.run_imp`), then prints the report table and writes ``plot.png``
into the run directory. Options come from, in increasing priority: the defaults of
:class:`ltfunc.ImpConfig`, a ``--preset`` (:mod:`ltfunc.presets`), a ``--config`` file
(TOML, or JSON), and the flags given on the command line. The recipe options (lr schedule,
augmentation, presets, TensorBoard) are defined in :mod:`ltfunc.cli_args`.

``ltfunc reproduce STUDY`` runs a study of :data:`ltfunc.studies.STUDIES` at the paper's
settings (every seed in turn, resumable) and writes its CSVs, figures and ``results.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import allocator, distributed, masks, params, prune, report
from ._export_cli import add_export_parser, cmd_export
from .cli_args import (
    RUN_KEY_TYPES,
    add_dist_args,
    add_parallel_args,
    add_presets_parser,
    add_recipe_args,
    add_structure_arg,
    baselines_arg,
    check_float_weights,
    check_outputs,
    cmd_presets,
    config_file_values,
    dataset_arg,
    download_flag,
    fraction_arg,
    load_weights,
    model_arg,
    override_arg,
)
from .config import ImpConfig, build_model
from .data import load_dataset
from .experiment import make_config_trainer, run_imp
from .instability import add_instability_parser, cmd_instability, cmd_overlap
from .models import INITS
from .optim import OPTIMIZERS
from .parallel import run_many
from .studies.cli import add_reproduce_parser, cmd_reproduce
from .sweep_cli import add_sweep_parser, sweep_command
from .ticket import BASELINES
from .trainer import Weights, train_round

__all__ = ["build_parser", "imp_config_from_args", "main"]

PROG = "ltfunc"
_RUN_KEYS = tuple(RUN_KEY_TYPES)
"""Keys a --config file may hold besides the ImpConfig fields."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the description's line breaks."""


def _add_rate_args(p: argparse.ArgumentParser, d: Any) -> None:
    cfg = ImpConfig.__dataclass_fields__
    p.add_argument(
        "--rate",
        type=fraction_arg,
        default=d(cfg["rate"].default),
        help="fraction of the surviving weights pruned (each round, for imp) in every prunable layer "
        "not covered by the options below",
    )
    p.add_argument(
        "--conv-rate", type=fraction_arg, default=d(None), help="rate of conv kernels (None: --rate)"
    )
    p.add_argument(
        "--fc-rate", type=fraction_arg, default=d(None), help="rate of fully connected weights (None: --rate)"
    )
    p.add_argument(
        "--output-rate",
        type=fraction_arg,
        default=d(None),
        help="rate of the output layer (None: --fc-rate, else --rate); Frankle & Carbin use half the fc rate",
    )
    p.add_argument(
        "--override",
        dest="overrides",
        action="append",
        type=override_arg,
        default=d(None),
        metavar="NAME=RATE",
        help="rate of one parameter, e.g. fc1.weight=0.3 (repeatable)",
    )
    p.add_argument(
        "--scope",
        choices=("layer", "global"),
        default=d(cfg["scope"].default),
        help="prune each layer by its rate, or with one threshold across the layers of a group",
    )
    add_structure_arg(p, d)


def _add_train_args(p: argparse.ArgumentParser, d: Any) -> None:
    cfg = ImpConfig.__dataclass_fields__
    p.add_argument(
        "--model",
        type=model_arg,
        default=d(cfg["model"].default),
        help="architecture: a name of ltfunc.models.MODELS or an import path package.module:factory "
        "(a callable returning an nn.Module; given init= and seed= if it takes them)",
    )
    p.add_argument(
        "--dataset",
        type=dataset_arg,
        default=d(cfg["dataset"].default),
        help="dataset: a name of ltfunc.data.DATASETS or an import path package.module:factory "
        "(a callable returning an ltfunc.data.Dataset)",
    )
    p.add_argument(
        "--iterations", type=int, default=d(cfg["iterations"].default), help="training iterations per round"
    )
    p.add_argument(
        "--optimizer", choices=tuple(OPTIMIZERS), default=d(cfg["optimizer"].default), help="optimizer"
    )
    p.add_argument(
        "--lr", type=float, default=d(cfg["lr"].default), help="learning rate (the schedule's peak)"
    )
    p.add_argument(
        "--momentum", type=float, default=d(cfg["momentum"].default), help="momentum (sgd / momentum only)"
    )
    p.add_argument("--weight-decay", type=float, default=d(cfg["weight_decay"].default), help="weight decay")
    p.add_argument("--batch-size", type=int, default=d(cfg["batch_size"].default), help="training batch size")
    p.add_argument(
        "--seed",
        type=int,
        default=d(cfg["seed"].default),
        help="seed of θ0, the data order and the baselines",
    )
    p.add_argument("--init", choices=INITS, default=d(cfg["init"].default), help="weight initialization")
    p.add_argument(
        "--device", default=d(cfg["device"].default), help="device to train on (cpu, cuda, cuda:1, ...)"
    )
    p.add_argument(
        "--no-compile",
        dest="compile",
        action="store_false",
        default=d(True),
        help="run the training step eagerly instead of torch.compile'ing it once (compile: %(default)s)",
    )
    p.add_argument(
        "--data-root",
        default=d(None),
        help="folder holding mnist/ and fashion-mnist/ in torchvision layout "
        "(None: $LTFUNC_DATA_ROOT, else ~/.cache/ltfunc/data, downloading there if missing)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        default=d(False),
        help="download the dataset into --data-root / $LTFUNC_DATA_ROOT if it is missing there",
    )
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        default=d(True),
        help="CIFAR: skip the MD5 check of the dataset files against the official checksums (for "
        "files in the same format that are not the official ones: test fixtures, subsets); a run "
        "option, not recorded in config.json (verify: %(default)s)",
    )
    p.add_argument(
        "--quiet", action="store_true", default=d(False), help="no progress bars (for CI and logs)"
    )


def build_parser(*, explicit_only: bool = False) -> argparse.ArgumentParser:
    """The ``ltfunc`` argument parser.

    Args:
        explicit_only: Give every ``imp`` option the default ``argparse.SUPPRESS``, so a
            parsed namespace holds only the options given on the command line (used to let
            flags override a ``--config`` file).

    Returns:
        The parser (subcommands ``imp``, ``prune``, ``report``, ``plot``, ``reproduce``, ``presets``).

    Example:
        >>> from ltfunc.cli import build_parser
        >>> ns = build_parser().parse_args(["imp", "--rounds", "3", "--rate", "0.2"])
        >>> ns.command, ns.rounds, ns.rate, ns.scope
        ('imp', 3, 0.2, 'layer')
    """

    def d(value: Any) -> Any:
        return argparse.SUPPRESS if explicit_only else value

    cfg = ImpConfig.__dataclass_fields__
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Functional lottery-ticket experiments on PyTorch.",
        formatter_class=_HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    imp = sub.add_parser(
        "imp",
        help="iterative magnitude pruning with reset/rewinding and baselines (resumable)",
        description=(
            "Train dense (round 0), then ROUNDS times: prune, reset the survivors to θ0 (or rewind\n"
            "them to iteration --rewind) and retrain; plus the random-reinit and random-pruning\n"
            "baselines of every round. Re-running the same command resumes after the last finished\n"
            "round. Ends by printing the report table and writing RUNS_DIR/NAME/plot.png."
        ),
        formatter_class=_HelpFormatter,
    )
    imp.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="TOML (Python >= 3.11) or JSON file of ImpConfig fields (and name, runs_dir, data_root); "
        "flags given on the command line override it",
    )
    imp.add_argument(
        "--rounds", type=int, default=d(cfg["rounds"].default), help="pruning rounds after round 0"
    )
    _add_rate_args(imp, d)
    imp.add_argument(
        "--schedule",
        choices=("rate", "sparsity"),
        default=d(cfg["schedule"].default),
        help="'rate': prune RATE of the survivors each round; 'sparsity': reach 1-(1-RATE)^k of all weights",
    )
    imp.add_argument(
        "--rewind",
        type=int,
        default=d(cfg["rewind"].default),
        help="0 resets survivors to θ0; k > 0 rewinds them to the dense weights at iteration k",
    )
    _add_train_args(imp, d)
    add_recipe_args(imp, d)
    imp.add_argument(
        "--eval-every",
        type=int,
        default=d(cfg["eval_every"].default),
        help="evaluate every this many iterations",
    )
    imp.add_argument(
        "--val-size",
        type=int,
        default=d(cfg["val_size"].default),
        help="training examples held out for validation (early stopping)",
    )
    imp.add_argument(
        "--baselines",
        type=baselines_arg,
        default=d(",".join(BASELINES)),
        help="comma-separated baselines to train beside the ticket (reinit, random_prune), or none",
    )
    add_parallel_args(imp, d)
    imp.add_argument("--runs-dir", default=d("runs"), help="parent folder of run directories")
    imp.add_argument("--name", default=d(None), help="run directory name (None: the config hash)")
    imp.add_argument(
        "--force",
        action="store_true",
        default=d(False),
        help="delete an existing run in the directory (e.g. with another config) and start over",
    )
    add_dist_args(imp, d)

    prune = sub.add_parser(
        "prune",
        help="one-shot magnitude pruning of given or freshly trained weights; saves the mask",
        description=(
            "Load weights (--weights, a .safetensors file or a state_dict saved with torch.save)\n"
            "or train the model dense first, prune them once at the given rates, save the mask\n"
            "and print the per-layer counts."
        ),
        formatter_class=_HelpFormatter,
    )
    prune.add_argument(
        "--weights", default=None, metavar="FILE", help="weights to prune (None: train dense first)"
    )
    prune.add_argument(
        "--mask", default=None, metavar="FILE", help="existing mask to prune further (None: all weights)"
    )
    _add_rate_args(prune, lambda v: v)
    prune.add_argument(
        "--sparsity",
        action="store_true",
        help="read the rates as target sparsities of all weights instead of fractions of the survivors",
    )
    _add_train_args(prune, lambda v: v)
    prune.add_argument("-o", "--output", default="mask.safetensors", help="where to save the mask")
    prune.add_argument(
        "--save-weights", default=None, metavar="FILE", help="also save the (trained) weights here"
    )

    report = sub.add_parser(
        "report",
        help="print the summary table of run directories",
        description="Print one row per finished (condition, round); several runs of one study are\n"
        "shown as mean ± std over the seeds.",
        formatter_class=_HelpFormatter,
    )
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    report.add_argument("--csv", default=None, metavar="FILE", help="also write the rows to this CSV file")
    report.add_argument("--overlap", action="store_true", help="print the tickets' mask overlap (Jaccard)")

    plot = sub.add_parser(
        "plot",
        help="plot test accuracy (or another metric) vs weights remaining",
        description="One line per condition and study; seeds of one study are averaged.",
        formatter_class=_HelpFormatter,
    )
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    plot.add_argument("-o", "--output", required=True, metavar="PNG", help="output .png file")
    plot.add_argument(
        "--metric", default="test_accuracy_at_early_stop", help="per-round metric of summary.json to plot"
    )
    plot.add_argument("--title", default=None, help="figure title")
    add_reproduce_parser(sub, _HelpFormatter)
    add_presets_parser(sub, _HelpFormatter)
    add_export_parser(sub, _HelpFormatter)
    add_sweep_parser(sub, _HelpFormatter)
    add_instability_parser(sub, _HelpFormatter)
    return parser


# --------------------------------------------------------------------------------------------
# config files and merging


def imp_config_from_args(argv: Sequence[str]) -> tuple[ImpConfig, dict[str, Any]]:
    """The :class:`ImpConfig` and run options an ``ltfunc imp`` command line asks for.

    Precedence: ``ImpConfig`` defaults < ``--preset`` (or ``preset`` in the file) < ``--config``
    file < flags given on the command line. Overriding a preset's ``iterations`` scales its
    milestones, warm-up and rewind iteration unless they are given too
    (:func:`ltfunc.presets.preset_config`).

    Args:
        argv: The arguments after ``ltfunc`` (starting with ``"imp"``).

    Returns:
        ``(config, options)`` where ``options`` holds ``run_dir``, ``data_root``, ``download``,
        ``verify``, ``force``, ``quiet`` and ``tensorboard`` (a folder or ``None``).

    Raises:
        SystemExit: On arguments argparse rejects (after printing usage).
        FileNotFoundError, ValueError, TypeError: A missing or invalid config file or values.

    Example:
        >>> from ltfunc.cli import imp_config_from_args
        >>> cfg, opts = imp_config_from_args(["imp", "--rounds", "2", "--iterations", "100", "--name", "x"])
        >>> cfg.rounds, cfg.iterations, opts["run_dir"].as_posix()
        (2, 100, 'runs/x')
    """
    ns = build_parser().parse_args(list(argv))
    explicit = vars(build_parser(explicit_only=True).parse_args(list(argv)))
    fields = [f.name for f in dataclasses.fields(ImpConfig)]
    values: dict[str, Any] = {}
    run: dict[str, Any] = {
        "name": None,
        "runs_dir": "runs",
        "data_root": None,
        "tensorboard": None,
        "preset": None,
        "seeds": None,
    }
    if ns.config is not None:
        values, run = config_file_values(ns.config, fields, run)
    for k, v in explicit.items():
        if k == "overrides":
            values["overrides"] = {**values.get("overrides", {}), **dict(v)}
        elif k in fields:
            values[k] = v
        elif k in _RUN_KEYS:
            run[k] = v
    if run["preset"] is not None:
        from .presets import preset_config

        config = preset_config(run["preset"], values)
    else:
        config = ImpConfig(**values)
    name = run["name"] or config.config_hash()
    runs = [(config, Path(run["runs_dir"]) / name)]
    if run.get("seeds") is not None:
        if "seed" in values:
            raise ValueError("ltfunc imp: give --seed or --seeds (seeds in --config), not both")
        configs = [dataclasses.replace(config, seed=s) for s in run["seeds"]]
        root = Path(run["runs_dir"])
        runs = [(c, root / f"{run['name'] or c.config_hash()}-seed{c.seed}") for c in configs]
    options = {
        "runs": runs,
        "parallel": ns.parallel,
        "workers": ns.workers,
        "run_dir": runs[0][1],
        "data_root": run["data_root"],
        "download": ns.download,
        "verify": ns.verify,
        "force": ns.force,
        "quiet": ns.quiet,
        "tensorboard": None if run["tensorboard"] is None else Path(run["tensorboard"]) / name,
        "dist_timeout": ns.dist_timeout,
        "dist_backend": ns.dist_backend,
    }
    return config, options


# --------------------------------------------------------------------------------------------
# commands


def _cmd_imp(argv: Sequence[str]) -> int:
    from .plot import plot_runs

    config, opts = imp_config_from_args(argv)
    parallel = distributed.join_torchrun(config, backend=opts["dist_backend"], timeout=opts["dist_timeout"])
    lead = parallel is None or parallel.lead  # rank 0 writes and prints; the others are quiet
    opts["quiet"] = opts["quiet"] or not lead
    runs: list[tuple[Any, Path]] = opts["runs"]
    if not opts["quiet"]:
        for _, run_dir in runs:
            print(f"ltfunc imp: run directory {run_dir}", file=sys.stderr)
    sinks = []
    if opts["tensorboard"] is not None and lead:
        from .experiment import TensorBoardSink

        for c, run_dir in runs:
            folder = opts["tensorboard"] if len(runs) == 1 else opts["tensorboard"].parent / run_dir.name
            sinks.append(TensorBoardSink(folder, c))
            if not opts["quiet"]:
                print(f"ltfunc imp: TensorBoard event files in {folder}", file=sys.stderr)
    common = {
        "data_root": opts["data_root"],
        "force": opts["force"],
        "progress": not opts["quiet"],
        "download": download_flag(opts["download"], opts["data_root"]),
        "verify": opts["verify"],
    }
    try:
        if parallel is not None:  # under torchrun: one data-parallel run
            if len(runs) != 1:
                raise ValueError("ltfunc imp: under torchrun give one seed (--seed), not --seeds")
            sink = sinks[0] if sinks else None
            results = [run_imp(config, runs[0][1], on_record=sink, parallel=parallel, **common)]
        else:
            results = list(
                run_many(
                    runs,
                    parallel=opts["parallel"],
                    workers=opts["workers"],
                    on_record=sinks or None,
                    **common,
                )
            )
    finally:
        for sink in sinks:
            sink.close()
    distributed.shutdown(parallel)
    if not lead:
        return distributed.exit_rank(parallel, 0)
    for result in results:
        if result.resumed and not opts["quiet"]:
            kept = len(result.resumed)
            print(f"ltfunc imp: {result.run_dir}: resumed; {kept} finished round(s) kept", file=sys.stderr)
    dirs = [r.run_dir for r in results]
    rows = report.summary_rows(dirs[0]) if len(dirs) == 1 else report.aggregate(dirs)
    print(report.format_table(rows, structure=report.run_structure(dirs[0])))
    out = dirs[0] / "plot.png"
    if len(dirs) > 1:  # NAME-seed<k> -> NAME-seeds.png beside the runs
        out = dirs[0].parent / f"{dirs[0].name.rsplit('-seed', 1)[0]}-seeds.png"
    png = plot_runs(dirs, out)
    print(f"\nplot: {getattr(png, 'path', png)}")
    return distributed.exit_rank(parallel, 0)


def _cmd_prune(ns: argparse.Namespace) -> int:
    rates = prune.Rates(
        default=ns.rate,
        conv=ns.conv_rate,
        fc=ns.fc_rate,
        output=ns.output_rate,
        overrides=dict(ns.overrides or []),
    )
    model = build_model(ns.model, init=ns.init, seed=ns.seed).to(ns.device)
    theta = params.get_params(model)
    if ns.mask is not None:
        mask = masks.load(ns.mask, device=ns.device)
    else:
        mask = masks.ones(model)
    masks.check_compatible(mask, theta, "ltfunc prune --mask")
    if ns.weights is not None:
        loaded = load_weights(ns.weights, ns.device)
        missing = [k for k in mask if k not in loaded]
        if missing:
            raise ValueError(f"--weights: {ns.weights} lacks the parameters {missing} of {ns.model}")
        check_float_weights(ns.weights, loaded, theta)
        theta = {k: loaded.get(k, v).to(v.dtype) for k, v in theta.items()}
        masks.check_compatible(mask, theta, "ltfunc prune --weights")
    else:
        theta = _train_dense(ns, model, theta, mask)
    kwargs = {"sparsity": rates} if ns.sparsity else {"rate": rates}
    new = prune.magnitude(theta, mask, scope=ns.scope, structure=ns.structure, **kwargs)
    masks.save(new, ns.output)
    if ns.save_weights:
        params.save_tree(masks.apply(new, theta), ns.save_weights)
    counts = masks.counts(new)
    width = max(len(k) for k in counts)
    print(f"{'parameter'.ljust(width)}  {'kept':>9}  {'total':>9}  {'density %':>9}")
    for name, c in counts.items():
        label = "total" if name == "__all__" else name
        print(f"{label.ljust(width)}  {c.kept:>9}  {c.total:>9}  {100 * c.density:>9.2f}")
    print(f"\nmask: {ns.output}")
    return 0


def _train_dense(ns: argparse.Namespace, model: Any, theta: Any, mask: Any) -> Any:
    """Train ``theta`` under ``mask`` for ``ns.iterations`` (the ``prune`` command without --weights)."""
    from tqdm.auto import tqdm

    config = ImpConfig(
        model=ns.model,
        dataset=ns.dataset,
        iterations=ns.iterations,
        optimizer=ns.optimizer,
        lr=ns.lr,
        momentum=ns.momentum,
        weight_decay=ns.weight_decay,
        batch_size=ns.batch_size,
        seed=ns.seed,
        init=ns.init,
        device=ns.device,
        compile=ns.compile,
    )
    ds = load_dataset(
        config.dataset,
        ns.data_root,
        device=config.device,
        download=download_flag(ns.download, ns.data_root),
        verify=ns.verify,
    )
    trainer = make_config_trainer(config, model, ds, splits=("test",), eval_every=config.iterations)
    bar = (
        None
        if ns.quiet
        else tqdm(total=config.iterations, desc="dense training", unit="it", dynamic_ncols=True)
    )
    try:
        out = train_round(trainer, Weights(theta, params.get_buffers(model)), mask, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    last = out.history[-1]
    print(f"trained {config.iterations} iterations: test accuracy {100 * last['test_accuracy']:.2f}%")
    return out.final.params


def _cmd_report(ns: argparse.Namespace) -> int:
    if ns.overlap:
        return cmd_overlap(ns)
    if len(ns.run_dirs) == 1:
        rows = report.summary_rows(ns.run_dirs[0])
    else:
        rows = report.aggregate(ns.run_dirs)
    print(report.format_table(rows, structure=report.run_structure(ns.run_dirs[0])))
    if ns.csv:
        report.write_csv(rows, ns.csv, fieldnames=None if rows else report.SUMMARY_FIELDS)
        print(f"\ncsv: {ns.csv}")
    return 0


def _cmd_plot(ns: argparse.Namespace) -> int:
    from .plot import plot_runs

    out = plot_runs(ns.run_dirs, ns.output, metric=ns.metric, title=ns.title)
    print(f"plot: {getattr(out, 'path', out)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ltfunc`` console script and ``python -m ltfunc``.

    Args:
        argv: Arguments after the program name (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 on bad input (the message is printed to stderr,
        starting with ``ltfunc: error:``), 1 when training diverged, 130 when interrupted.

    Example:
        >>> from ltfunc.cli import main
        >>> main(["report", "no/such/run"])
        2
    """
    args = list(sys.argv[1:] if argv is None else argv)
    ns = build_parser().parse_args(args)
    allocator.at_entry()  # large step buffers reuse mapped pages (LTFUNC_SYSTEM_MALLOC=1: not)
    try:
        check_outputs(ns)
        if (code := sweep_command(ns)) is not None:
            return code
        if ns.command == "imp":
            return _cmd_imp(args)
        if ns.command == "prune":
            return _cmd_prune(ns)
        if ns.command == "report":
            return _cmd_report(ns)
        if ns.command == "reproduce":
            return cmd_reproduce(ns)
        if ns.command == "presets":
            return cmd_presets(ns)
        if ns.command == "export":
            return cmd_export(ns)
        if ns.command == "instability":
            return cmd_instability(ns)
        return _cmd_plot(ns)
    except (ValueError, TypeError, OSError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return distributed.failed(2)
    except FloatingPointError as e:
        print(f"{PROG}: error: training diverged: {e}", file=sys.stderr)
        return distributed.failed(1)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; run the same command again to resume", file=sys.stderr)
        return distributed.failed(130)
    except Exception as e:  # torch / torchvision errors: one line, not a traceback
        if os.environ.get("LTFUNC_DEBUG"):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(
            f"{PROG}: error: {type(e).__name__}: {first} (set LTFUNC_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return distributed.failed(2)
