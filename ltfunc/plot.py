"""Figures from run directories: accuracy / early stopping vs weights remaining, training curves.

Figures are drawn on a standalone :class:`matplotlib.figure.Figure` with the Agg canvas (no
pyplot, no global state, never shown) and written atomically (temp file + ``os.replace``).
Each function returns a :class:`PlotResult` holding the PNG path and the exact data drawn, so
callers and tests can check what a figure shows without reading pixels.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullLocator

from . import rundir
from .params import atomic_write_bytes
from .report import CONDITIONS, METRICS, PathLike, _aggregate, _as_run_dirs, _study_key

__all__ = [
    "CURVE_METRICS",
    "RUN_METRICS",
    "PlotResult",
    "Series",
    "plot_curves",
    "plot_early_stop",
    "plot_runs",
]

RUN_METRICS: tuple[str, ...] = tuple(m for m in METRICS if m not in ("density", "weights_remaining_pct"))
"""Per-round metrics :func:`plot_runs` can put on the y axis."""

CURVE_METRICS: tuple[str, ...] = ("test_accuracy", "val_accuracy", "test_loss", "val_loss", "train_loss")
"""``metrics.jsonl`` fields :func:`plot_curves` can put on the y axis."""

_LABELS = {
    "early_stop_iteration": "early-stop iteration",
    "test_accuracy_at_early_stop": "test accuracy at early stop",
    "best_test_accuracy": "best test accuracy",
    "last_test_accuracy": "last test accuracy",
    "wall_seconds": "wall-clock seconds per round",
    "test_accuracy": "test accuracy",
    "val_accuracy": "validation accuracy",
    "test_loss": "test loss",
    "val_loss": "validation loss",
    "train_loss": "training loss",
}
_STYLES = {"ticket": "-", "reinit": "--", "random_prune": ":"}
_MAX_TICKS = 9
_DEFAULT_CURVES = 5


class Series(NamedTuple):
    """One drawn line: x, y and the error bars (``None`` when the line has none)."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    yerr: tuple[float, ...] | None


class PlotResult(NamedTuple):
    """What a plot function wrote: the PNG path and ``{legend label: Series}`` in legend order."""

    path: Path
    series: dict[str, Series]


# --------------------------------------------------------------------------------------------
# helpers


def _check_out_png(func: str, out_png: Any) -> Path:
    if not isinstance(out_png, (str, os.PathLike)):
        raise TypeError(f"{func}: out_png must be a path, got {type(out_png).__name__} {out_png!r}")
    out = Path(out_png)
    if out.suffix.lower() != ".png":
        raise ValueError(f"{func}: out_png={str(out)!r} must end with .png")
    if out.is_dir():
        raise ValueError(f"{func}: out_png={str(out)!r} is a directory; pass a file name ending with .png")
    return out


def _check_metric(func: str, metric: Any, allowed: tuple[str, ...]) -> str:
    if metric not in allowed:
        raise ValueError(f"{func}: metric={metric!r} is not supported. Supported: {', '.join(allowed)}")
    return metric


def _new_figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=(7.0, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Figure, out: Path, dpi: int) -> Path:
    atomic_write_bytes(out, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    return out


def _check_dpi(func: str, dpi: Any) -> int:
    if isinstance(dpi, bool) or not isinstance(dpi, int) or not 10 <= dpi <= 1200:
        raise ValueError(f"{func}: dpi must be an int in [10, 1200], got {dpi!r}")
    return dpi


def _config_labels(groups: list[list[Path]], configs: list[list[dict[str, Any]]]) -> list[str]:
    """A legend label per study: its shared ``name``, else ``model/dataset``; made unique by
    appending the config values that tell studies with the same base label apart."""
    bases = []
    for paths, cfgs in zip(groups, configs, strict=True):
        names = {c.get("name") for c in cfgs}
        name = next(iter(names)) if len(names) == 1 else None
        if isinstance(name, str) and name:
            bases.append(name)
        elif cfgs[0].get("model") is not None and cfgs[0].get("dataset") is not None:
            bases.append(f"{cfgs[0]['model']}/{cfgs[0]['dataset']}")
        else:
            bases.append(paths[0].name)
    labels = list(bases)
    for base in set(bases):
        idx = [i for i, b in enumerate(bases) if b == base]
        if len(idx) < 2:
            continue
        studies = [json.loads(_study_key(configs[i][0])) for i in idx]
        keys = sorted({k for s in studies for k in s})
        differ = [k for k in keys if len({json.dumps(s.get(k), sort_keys=True) for s in studies}) > 1]
        for i, s in zip(idx, studies, strict=True):
            labels[i] = f"{base} ({', '.join(f'{k}={s.get(k)}' for k in differ)})"
    return labels


def _weights_axis(ax: Any, xs: Iterable[float]) -> None:
    """Log-scaled, inverted x axis (100% → 1%) with ticks at the plotted weight levels."""
    levels = sorted({float(x) for x in xs if x > 0 and math.isfinite(x)}, reverse=True)
    ax.set_xscale("log")
    if levels:
        step = max(1, math.ceil(len(levels) / _MAX_TICKS))
        ax.set_xlim(levels[0] * 1.15, levels[-1] / 1.15)  # inverted: larger on the left
        ax.xaxis.set_major_locator(FixedLocator(levels[::step]))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        ax.xaxis.set_minor_locator(NullLocator())
    else:
        ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")


# --------------------------------------------------------------------------------------------
# per-round metrics vs weights remaining


def _plot_vs_weights(
    func: str, run_dirs: Any, out_png: Any, metric: str, title: str | None, dpi: int
) -> PlotResult:
    out = _check_out_png(func, out_png)
    _check_metric(func, metric, RUN_METRICS)
    _check_dpi(func, dpi)
    if title is not None and not isinstance(title, str):
        raise TypeError(f"{func}: title must be a str or None, got {type(title).__name__}")
    paths = _as_run_dirs(func, run_dirs)

    # group the run directories by study (config with seeds and bookkeeping removed)
    order: dict[str, int] = {}
    groups: list[list[Path]] = []
    configs: list[list[dict[str, Any]]] = []
    for p in paths:
        config = rundir.read_config_dict(func, p)
        key = _study_key(config)
        if key not in order:
            order[key] = len(groups)
            groups.append([])
            configs.append([])
        groups[order[key]].append(p)
        configs[order[key]].append(config)
    labels = _config_labels(groups, configs)

    series: dict[str, Series] = {}
    drawn: list[tuple[int, str, str]] = []  # (study index, condition, series label)
    for group_i, (paths_g, label) in enumerate(zip(groups, labels, strict=True)):
        rows = _aggregate(paths_g, ["weights_remaining_pct", metric])
        for cond in dict.fromkeys(r["condition"] for r in rows):
            sel = [r for r in rows if r["condition"] == cond]
            drawn.append((group_i, cond, f"{label}: {cond}"))
            series[f"{label}: {cond}"] = Series(
                x=tuple(r["weights_remaining_pct_mean"] for r in sel),
                y=tuple(r[f"{metric}_mean"] for r in sel),
                yerr=tuple(r[f"{metric}_std"] for r in sel) if len(paths_g) > 1 else None,
            )
    if not series:
        raise ValueError(f"{func}: no finished rounds in {', '.join(repr(str(p)) for p in paths)}")

    fig, ax = _new_figure()
    for i, (group_i, cond, name) in enumerate(drawn):
        s = series[name]
        if len(groups) == 1:  # one study: a colour per condition
            color = f"C{CONDITIONS.index(cond) if cond in CONDITIONS else i}"
        else:  # several studies: a colour per study, a line style per condition
            color = f"C{group_i % 10}"
        yerr = None if s.yerr is None else np.nan_to_num(np.asarray(s.yerr, dtype=float))
        ax.errorbar(
            s.x,
            s.y,
            yerr=yerr,
            label=name,
            color=color,
            linestyle=_STYLES.get(cond, "-."),
            marker="o",
            markersize=3.5,
            capsize=3,
        )
    _weights_axis(ax, (x for s in series.values() for x in s.x))
    ax.set_ylabel(_LABELS[metric])
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small")
    n_runs = max(len(g) for g in groups)
    if title is None and n_runs > 1:
        title = f"mean ± std over {n_runs} seeds" if all(len(g) == n_runs for g in groups) else "mean ± std"
    if title:
        ax.set_title(title)
    return PlotResult(_save(fig, out, dpi), series)


def plot_runs(
    run_dirs: PathLike | Iterable[PathLike],
    out_png: PathLike,
    *,
    metric: str = "test_accuracy_at_early_stop",
    title: str | None = None,
    dpi: int = 120,
) -> PlotResult:
    """Plot a per-round metric vs % weights remaining, one line per condition and study.

    The x axis is log-scaled and inverted like the lottery-ticket paper (100% on the left).
    Run directories whose configs differ only in the seed (see :func:`ltfunc.report.aggregate`)
    form one study: its line is the mean over the seeds with error bars of one sample std
    (``ddof=1``; a round only one seed finished has a NaN std, drawn as no bar). A study with a
    single run has no error bars.

    Args:
        run_dirs: Run directories (a single path is accepted too).
        out_png: Destination ``.png`` file; parent folders are created; replaced atomically.
        metric: The y value, one of :data:`RUN_METRICS`. Default: test accuracy at early stop.
        title: Figure title. Default: ``"mean ± std over N seeds"`` when seeds are averaged.
        dpi: Resolution of the PNG.

    Returns:
        :class:`PlotResult`; its ``series`` maps ``"<study label>: <condition>"`` to the drawn
        :class:`Series` (x = mean weights remaining %, y = mean metric, yerr = std or ``None``).
        The study label is the config's ``name`` when all its runs share one, else
        ``model/dataset``, with ``(key=value, ...)`` appended when two studies would look alike.

    Raises:
        TypeError: If a path argument is not a path.
        FileNotFoundError: If a run directory does not exist.
        ValueError: If ``out_png`` does not end with ``.png``, ``metric`` or ``dpi`` is not
            allowed, a run directory is repeated or is not a run directory, a summary file is
            corrupt, or no run has a finished round.

    Example:
        >>> import tempfile
        >>> from ltfunc.report import _example_run
        >>> from ltfunc.plot import plot_runs
        >>> root = tempfile.mkdtemp()
        >>> runs = [_example_run(f"{root}/s{s}", seed=s) for s in range(2)]
        >>> res = plot_runs(runs, f"{root}/acc.png")
        >>> list(res.series)
        ['lenet300/mnist: ticket', 'lenet300/mnist: reinit', 'lenet300/mnist: random_prune']
        >>> res.series["lenet300/mnist: ticket"].x
        (100.0, 80.0, 64.0)
        >>> res.path.name
        'acc.png'
    """
    return _plot_vs_weights("plot_runs", run_dirs, out_png, metric, title, dpi)


def plot_early_stop(
    run_dirs: PathLike | Iterable[PathLike], out_png: PathLike, *, title: str | None = None, dpi: int = 120
) -> PlotResult:
    """Plot the early-stop iteration vs % weights remaining (like the paper's Figure 4, left).

    Same grouping, axes, error bars and return value as :func:`plot_runs` with
    ``metric="early_stop_iteration"``.

    Args:
        run_dirs: Run directories (a single path is accepted too).
        out_png: Destination ``.png`` file; replaced atomically.
        title: Figure title (default as in :func:`plot_runs`).
        dpi: Resolution of the PNG.

    Returns:
        :class:`PlotResult` with y = mean early-stop iteration per round.

    Raises:
        TypeError, FileNotFoundError, ValueError: As :func:`plot_runs`.

    Example:
        >>> import tempfile
        >>> from ltfunc.report import _example_run
        >>> from ltfunc.plot import plot_early_stop
        >>> root = tempfile.mkdtemp()
        >>> res = plot_early_stop(_example_run(f"{root}/run"), f"{root}/es.png")
        >>> res.series["lenet300/mnist: ticket"].y, res.series["lenet300/mnist: ticket"].yerr
        ((300.0, 300.0, 300.0), None)
    """
    return _plot_vs_weights("plot_early_stop", run_dirs, out_png, "early_stop_iteration", title, dpi)


# --------------------------------------------------------------------------------------------
# training curves


def _spread(items: Sequence[int], n: int) -> list[int]:
    """At most ``n`` items evenly spread over ``items``, always the first and the last."""
    if len(items) <= n:
        return list(items)
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in dict.fromkeys(idx.tolist())]


def plot_curves(
    run_dir: PathLike,
    out_png: PathLike,
    *,
    rounds: Iterable[int] | None = None,
    condition: str = "ticket",
    metric: str = "test_accuracy",
    dpi: int = 120,
) -> PlotResult:
    """Plot a metric vs training iteration from ``metrics.jsonl``, one line per round.

    Args:
        run_dir: One run directory.
        out_png: Destination ``.png`` file; parent folders are created; replaced atomically.
        rounds: Which rounds to draw. Default: up to 5 finished rounds spread evenly from the
            first to the last (all rounds with metrics if none is finished yet).
        condition: The condition folder (``"ticket"``, ``"reinit"``, ``"random_prune"``...).
        metric: The y value, one of :data:`CURVE_METRICS`. Evaluations that recorded it as
            ``null`` are left out.
        dpi: Resolution of the PNG.

    Returns:
        :class:`PlotResult`; ``series`` maps ``"round <k> (<w>% weights)"`` (``w`` = weights
        remaining with 3 significant digits, from ``summary.json`` or else from the metrics'
        ``density``; ``"round <k>"`` when neither is known) to x = iterations, y = metric
        values, yerr = ``None``.

    Raises:
        TypeError: If a path is not a path or ``rounds`` is not an iterable of ints.
        FileNotFoundError: If ``run_dir`` does not exist.
        ValueError: If ``out_png`` does not end with ``.png``; ``condition``, a round or
            ``metric`` is not available (the message lists what is); ``rounds`` is empty; a
            metrics line is corrupt (names file and line); or no selected round recorded
            ``metric``.

    Example:
        >>> import tempfile
        >>> from ltfunc.report import _example_run
        >>> from ltfunc.plot import plot_curves
        >>> root = tempfile.mkdtemp()
        >>> res = plot_curves(_example_run(f"{root}/run", rounds=2), f"{root}/curves.png")
        >>> list(res.series)
        ['round 0 (100% weights)', 'round 1 (80% weights)', 'round 2 (64% weights)']
        >>> res.series["round 1 (80% weights)"].x
        (100.0, 200.0, 300.0)
    """
    func = "plot_curves"
    out = _check_out_png(func, out_png)
    _check_metric(func, metric, CURVE_METRICS)
    _check_dpi(func, dpi)
    path = rundir.open_run(func, run_dir)
    conditions = rundir.round_dirs(path)
    if condition not in conditions:
        available = ", ".join(conditions) or "none"
        raise ValueError(
            f"{func}: condition={condition!r} has no rounds in {str(path)!r}. Available: {available}"
        )
    with_metrics = {k: rd for k, rd in conditions[condition].items() if (rd / "metrics.jsonl").is_file()}
    if not with_metrics:
        raise ValueError(f"{func}: no metrics.jsonl under {str(path / condition)!r}")
    if rounds is None:
        finished = [k for k, rd in with_metrics.items() if (rd / "summary.json").is_file()]
        chosen = _spread(finished or list(with_metrics), _DEFAULT_CURVES)
    else:
        if isinstance(rounds, (str, bytes)) or not isinstance(rounds, Iterable):
            raise TypeError(f"{func}: rounds must be an iterable of ints, got {type(rounds).__name__}")
        chosen = list(rounds)
        if not chosen:
            raise ValueError(f"{func}: rounds is empty; pass None for the default or some round numbers")
        for k in chosen:
            if isinstance(k, bool) or not isinstance(k, int):
                raise TypeError(f"{func}: rounds must hold ints, got {type(k).__name__} {k!r}")
            if k not in with_metrics:
                raise ValueError(
                    f"{func}: round {k} of {condition!r} has no metrics.jsonl. "
                    f"Available: {', '.join(map(str, with_metrics))}"
                )
        chosen = list(dict.fromkeys(chosen))

    series: dict[str, Series] = {}
    for k in chosen:
        rd = with_metrics[k]
        summary_file = rd / "summary.json"
        records = rundir.read_metrics(func, rd / "metrics.jsonl", finished=summary_file.is_file())
        pct = None
        if summary_file.is_file():
            summary = rundir.read_json(func, summary_file)
            if isinstance(summary, Mapping) and isinstance(
                summary.get("weights_remaining_pct"), (int, float)
            ):
                pct = float(summary["weights_remaining_pct"])
        if pct is None:
            densities = [r["density"] for r in records if isinstance(r.get("density"), (int, float))]
            pct = 100.0 * densities[-1] if densities else None
        points = [
            (float(r["iteration"]), float(r[metric]))
            for r in records
            if isinstance(r.get(metric), (int, float)) and isinstance(r.get("iteration"), (int, float))
        ]
        label = f"round {k}" if pct is None else f"round {k} ({pct:.3g}% weights)"
        series[label] = Series(x=tuple(p[0] for p in points), y=tuple(p[1] for p in points), yerr=None)
    if not any(s.x for s in series.values()):
        raise ValueError(
            f"{func}: metric={metric!r} was not recorded in rounds {chosen} of {str(path / condition)!r}"
        )

    fig, ax = _new_figure()
    for name, s in series.items():
        ax.plot(s.x, s.y, label=name, linewidth=1.3)
    ax.set_xlabel("training iteration")
    ax.set_ylabel(_LABELS[metric])
    ax.set_title(f"{condition}: {_LABELS[metric]} during training")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return PlotResult(_save(fig, out, dpi), series)
