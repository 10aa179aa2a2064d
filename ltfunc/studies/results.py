"""Writing a study's results: ``rounds.csv``, ``runs.csv``, the figures and ``results.md``.

:func:`ltfunc.studies.collect` gathers the finished rounds and hands them here; ``results.md``
holds the settings, the deviations from the paper, the progress of every seed, the result
tables, the comparison with the paper's numbers (the study's checked claims: only those that
hold on the rows are printed, the others are named as failing), the figures and the machines.
Every file is written atomically.
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import report
from ..config import ImpConfig
from ..params import atomic_write_bytes
from ..ticket import BASELINES
from .claims import VERDICTS, ClaimCheck, Table, check_claims
from .machine import _describe_machine, _read_machines, machine_info
from .registry import (
    Study,
    _fmt_setting,
    _prunable,
    deviations,
    expected_densities,
    protocol_deviations,
    study_configs,
)
from .state import _expected_rounds, _SeedState

__all__ = ["ROUND_FIELDS", "RUN_FIELDS", "comparison_checks"]

ROUND_FIELDS: tuple[str, ...] = (
    "condition",
    "round",
    "n_seeds",
    "seeds",
    "weights_remaining_pct_mean",
    "weights_remaining_pct_std",
    "early_stop_iteration_mean",
    "early_stop_iteration_std",
    "test_accuracy_at_early_stop_mean",
    "test_accuracy_at_early_stop_std",
    "wall_seconds_mean",
)
"""Columns of ``rounds.csv`` (accuracies as fractions in [0, 1]; std = sample std over seeds)."""

RUN_FIELDS: tuple[str, ...] = ("seed", *report.SUMMARY_FIELDS)
"""Columns of ``runs.csv``."""

_CONDITION_NAMES = {"ticket": "ticket", "reinit": "random reinit", "random_prune": "random pruning"}


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _pct(v: Any, std: Any = None) -> str:
    if _num(v) is None:
        return "—"
    text = f"{100 * v:.2f}"
    return text if _num(std) is None else f"{text} ± {100 * std:.2f}"


def _it(v: Any, std: Any = None) -> str:
    if _num(v) is None:
        return "—"
    text = f"{v:.0f}"
    return text if _num(std) is None else f"{text} ± {std:.0f}"


def _secs(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.3g} s"


def _md_table(header: Sequence[str], body: Sequence[Sequence[str]], *, text_columns: int = 0) -> str:
    """A markdown table; the first ``text_columns`` columns left-aligned, the others right-aligned."""
    align = [":---" if i < text_columns else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _write_text(path: Path, text: str) -> Path:
    data = text.encode("utf-8")
    atomic_write_bytes(path, lambda tmp: Path(tmp).write_bytes(data))
    return path


def _no_early_stop(rows: Sequence[Mapping[str, Any]], iterations: int) -> bool:
    """Whether every round of every seed stopped at its last evaluation (no early stop at all)."""
    return bool(rows) and all(
        _num(r["early_stop_iteration_mean"]) == iterations and not _num(r["early_stop_iteration_std"])
        for r in rows
    )


def _acc_words(rows: Sequence[Mapping[str, Any]], iterations: int) -> str:
    """What the accuracy columns are: at the early stop, or after ``iterations`` when none stopped early."""
    return f"after {iterations:,} iterations" if _no_early_stop(rows, iterations) else "at early stop"


# --------------------------------------------------------------------------------------------
# writing


_OUTPUT_PATTERNS = ("rounds.csv", "runs.csv", "accuracy.png", "early_stop.png", "curves_*.png", "results.md")
"""The files a study writes into its output folder (stale ones are removed on every write)."""


def _previous_runs(out_dir: Path) -> int:
    """The number of (seed, condition, round) rows in an existing ``out_dir/runs.csv`` (0: none)."""
    path = out_dir / "runs.csv"
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return sum(1 for _ in csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return 0


def _check_no_regression(
    func: str, out_dir: Path, runs: Path, finished: int, force: bool, *, when_done: bool = False
) -> None:
    """Refuse to replace results of more finished rounds with fewer, unless ``force``.

    ``when_done``: ``finished`` counts the rounds the runs will have once every seed is done
    (checked before training), not the rounds finished now.
    """
    previous = _previous_runs(out_dir)
    if finished < previous and not force:
        have = f"will have at most {finished} when finished" if when_done else f"have only {finished}"
        raise ValueError(
            f"{func}: out {str(out_dir)!r} holds results of {previous} finished rounds but the runs "
            f"in {str(runs)!r} {have}; wrong runs_dir (--runs-dir) or seeds (--seeds)? Pass "
            "force=True (--force) to replace them, or choose another out (--out)"
        )


def _write_results(
    s: Study,
    states: Sequence[_SeedState],
    rows: Sequence[Mapping[str, Any]],
    run_rows: Sequence[Mapping[str, Any]],
    out_dir: Path,
    *,
    command: str,
    all_seeds: Sequence[int],
    overrides: Mapping[str, int],
    finished: int,
    expected: int,
) -> tuple[Path, ...]:
    """Write ``rounds.csv``, ``runs.csv``, the figures and ``results.md`` (last) into ``out_dir``.

    The files are written into a temporary folder inside ``out_dir`` first, then moved into
    place (``results.md`` last); the study's files of an earlier write that this one does not
    produce (figures of a condition without finished rounds now) are removed, so ``out_dir``
    holds one consistent set. Other files in ``out_dir`` are left alone.

    Args: as for :func:`_write_files`.

    Returns:
        The files written, ``results.md`` last.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".results-tmp-", dir=out_dir))
    try:
        staged = _write_files(
            s,
            states,
            rows,
            run_rows,
            stage,
            command=command,
            all_seeds=all_seeds,
            overrides=overrides,
            finished=finished,
            expected=expected,
        )
        names = {p.name for p in staged}
        for p in staged[:-1]:
            os.replace(p, out_dir / p.name)
        for pattern in _OUTPUT_PATTERNS:
            for old in out_dir.glob(pattern):
                if old.name not in names and old.is_file():
                    old.unlink()
        os.replace(staged[-1], out_dir / staged[-1].name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return tuple(out_dir / p.name for p in staged)


def _write_files(
    s: Study,
    states: Sequence[_SeedState],
    rows: Sequence[Mapping[str, Any]],
    run_rows: Sequence[Mapping[str, Any]],
    out_dir: Path,
    *,
    command: str,
    all_seeds: Sequence[int],
    overrides: Mapping[str, int],
    finished: int,
    expected: int,
) -> tuple[Path, ...]:
    """Write ``rounds.csv``, ``runs.csv``, the figures and ``results.md`` (last) into ``out_dir``.

    Args:
        s: The study.
        states: Every expected seed's run directory and finished rounds.
        rows: The ``rounds.csv`` rows (:data:`ROUND_FIELDS`).
        run_rows: The ``runs.csv`` rows (:data:`RUN_FIELDS`).
        out_dir: The output folder.
        command: The ``ltfunc reproduce`` command line quoted in ``results.md``.
        all_seeds: The seeds the study expects.
        overrides: The overridden settings that differ from the study's.
        finished: (seed, condition, round) triples finished.
        expected: (seed, condition, round) triples the study needs.

    Returns:
        The files written, ``results.md`` last.
    """
    from ..plot import plot_curves, plot_early_stop, plot_runs

    with_rounds = [st for st in states if any(st.finished.values())]
    iterations = study_configs(s, all_seeds[:1], overrides=overrides)[0].iterations
    acc_words = _acc_words(rows, iterations)
    files = [
        report.write_csv(rows, out_dir / "rounds.csv", fieldnames=ROUND_FIELDS),
        report.write_csv(run_rows, out_dir / "runs.csv", fieldnames=RUN_FIELDS),
    ]

    # figures
    complete = finished == expected
    status = "" if complete else " (partial)"
    figures: dict[str, Path] = {}
    if with_rounds:
        n = len(with_rounds)
        spread = f"mean ± std over {n} seeds" if n > 1 else "1 seed"
        dirs = [st.run_dir for st in with_rounds]
        figures["accuracy"] = plot_runs(
            dirs,
            out_dir / "accuracy.png",
            # with no early stop, the accuracy at the early stop is the last evaluation's
            metric="last_test_accuracy"
            if _no_early_stop(rows, iterations)
            else "test_accuracy_at_early_stop",
            title=f"{s.title}: test accuracy {acc_words}\n{spread}{status}",
        ).path
        figures["early_stop"] = plot_early_stop(
            dirs, out_dir / "early_stop.png", title=f"{s.title}: early-stop iteration\n{spread}{status}"
        ).path
        first = with_rounds[0]
        for cond in ("ticket", *BASELINES[:1]):
            done = first.finished.get(cond, ())
            if not done:
                continue
            chosen = [k for k in s.curve_rounds if k in done]
            figures[f"curves_{cond}"] = plot_curves(
                first.run_dir,
                out_dir / f"curves_{cond}.png",
                rounds=chosen if len(chosen) >= 2 else None,  # None: up to 5 finished rounds, spread
                condition=cond,
            ).path
    files += figures.values()

    text = _results_markdown(
        s,
        states,
        rows,
        run_rows,
        figures,
        out_dir,
        command=command,
        all_seeds=all_seeds,
        overrides=overrides,
        finished=finished,
        expected=expected,
    )
    files.append(_write_text(out_dir / "results.md", text))
    return tuple(files)


def _results_markdown(
    s: Study,
    states: Sequence[_SeedState],
    rows: Sequence[Mapping[str, Any]],
    run_rows: Sequence[Mapping[str, Any]],
    figures: Mapping[str, Path],
    out_dir: Path,
    *,
    command: str,
    all_seeds: Sequence[int],
    overrides: Mapping[str, int],
    finished: int,
    expected: int,
) -> str:
    from .. import __version__

    config = study_configs(s, all_seeds[:1], overrides=overrides)[0]
    densities = expected_densities(config)
    prunable = sum(numel for _, numel, _ in _prunable(config.model))
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    no_early_stop = _no_early_stop(rows, config.iterations)
    md: list[str] = [f"# Reproduction: {s.title}", ""]

    if finished == expected:
        md.append(
            f"**Status: complete** — all {len(all_seeds)} seeds finished all {config.rounds} pruning "
            f"rounds of every condition ({finished} trained rounds)."
        )
    else:
        md.append(
            f"**Status: PARTIAL** — {finished} of {expected} rounds (seed × condition × round) are "
            "finished; the numbers below cover only the finished rounds and will change. "
            f"Refresh with `{command} --collect-only`."
        )
    md += [
        "",
        f"Generated by `{command}` (ltfunc {__version__}) on {now}. "
        "Accuracies are test accuracies at the early-stop iteration (the evaluation with the "
        "lowest validation loss), in percent, as mean ± sample std over the seeds that finished "
        "the round"
        + (
            f"; here every round of every seed has its lowest validation loss at the last evaluation, "
            f"so they are accuracies after {config.iterations:,} iterations, not at an early stop."
            if no_early_stop
            else "."
        ),
        "",
        "## Settings",
        "",
        f"- model: {_fmt_setting('model', config.model)} ({prunable:,} prunable weights), "
        f"{_fmt_setting('init', config.init)} initialization",
        f"- data: {_fmt_setting('dataset', config.dataset)}, {config.val_size:,} training images held "
        "out for validation (early stopping), the full test set for test accuracy",
        f"- training: {_fmt_setting('optimizer', config.optimizer)}, learning rate {config.lr:g}, "
        f"batch {config.batch_size}, {config.iterations:,} iterations per round, evaluation every "
        f"{config.eval_every} iterations",
        f"- pruning: {_rates_text(config)} of the surviving weights per round, {config.scope}-wise, "
        + (
            "survivors reset to θ0"
            if config.rewind == 0
            else f"survivors rewound to iteration {config.rewind}"
        )
        + f"; {config.rounds} rounds → {100 * densities[-1]:.3g}% of the weights remain",
        "- conditions: ticket (iterative magnitude pruning), random reinit (the ticket's mask, a "
        "fresh initialization), random pruning (a random mask with the ticket's per-layer counts, "
        "the ticket's starting weights)",
        f"- seeds: {', '.join(map(str, all_seeds))}",
        f"- paper's settings: {s.reference_source}",
        "",
        "## Deviations from the paper",
        "",
    ]
    devs = deviations(s, all_seeds, overrides)
    md += (
        [f"- {d}" for d in devs] if devs else ["- Settings: none; every setting listed above is the paper's."]
    )
    protocol = protocol_deviations(s, all_seeds)
    if protocol:
        md += ["", "Beyond the settings, in how trials are counted and the data is split:", ""]
        md += [f"- {d}" for d in protocol]
    md += ["", "## Progress", ""]
    conds = list(_expected_rounds(config))
    body = []
    for st in states:
        cells = [str(st.seed), f"`{st.run_dir}`"]
        cells += [f"{len(st.finished[c])}/{len(st.expected[c])}" for c in conds]
        done = all(len(st.finished[c]) == len(st.expected[c]) for c in conds)
        cells.append("finished" if done else "partial" if st.started else "not started")
        body.append(cells)
    header = ["seed", "run directory", *(f"{_CONDITION_NAMES[c]} rounds" for c in conds), "state"]
    md.append(_md_table(header, body, text_columns=2))
    md += ["", "## Results", ""]
    if not rows:
        md += ["No round has finished yet.", ""]
    else:
        md += [_results_table(rows, conds, no_early_stop, config.iterations), ""]
        md += [_differences(rows, conds, _acc_words(rows, config.iterations)), ""]
    md += _comparison_section(s, rows, run_rows, config.iterations, overrides)
    md += ["## The paper's setup", "", f"> {s.reference_text}", ""]
    md += _figures_section(figures, out_dir, _acc_words(rows, config.iterations))
    md += _machine_section(states, run_rows)
    return "\n".join(md).rstrip() + "\n"


def _rates_text(config: ImpConfig) -> str:
    r = config.rates()
    parts: dict[str, None] = {}
    for name, _, kind in _prunable(config.model):
        parts.setdefault(f"{kind} {100 * r.resolve(name, kind):g}%", None)
    return ", ".join(parts)


def _by_key(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int], Mapping[str, Any]]:
    return {(r["condition"], r["round"]): r for r in rows}


def _results_table(
    rows: Sequence[Mapping[str, Any]], conds: Sequence[str], no_early_stop: bool = False, iterations: int = 0
) -> str:
    by = _by_key(rows)
    header = ["round", "weights %"]
    acc = f"acc % after {iterations:,} it" if no_early_stop else "acc %"
    header += [f"{_CONDITION_NAMES[c]} {acc}" for c in conds]
    header += [f"{_CONDITION_NAMES[c]} early-stop it" for c in conds]
    header += ["seeds (" + "/".join(_CONDITION_NAMES[c] for c in conds) + ")", "s per ticket round"]
    body = []
    for k in sorted({r["round"] for r in rows}):
        cell = {c: by.get((c, k)) for c in conds}
        present = [r for r in cell.values() if r is not None]
        cells = [str(k), f"{present[0]['weights_remaining_pct_mean']:.4g}"]
        for metric, fmt in (("test_accuracy_at_early_stop", _pct), ("early_stop_iteration", _it)):
            cells += [
                "—" if r is None else fmt(r[f"{metric}_mean"], r[f"{metric}_std"]) for r in cell.values()
            ]
        cells.append("/".join("0" if r is None else str(r["n_seeds"]) for r in cell.values()))
        ticket = cell.get("ticket")
        wall = None if ticket is None else _num(ticket["wall_seconds_mean"])
        cells.append("—" if wall is None else _secs(wall))
        body.append(cells)
    return _md_table(header, body)


def _differences(
    rows: Sequence[Mapping[str, Any]], conds: Sequence[str], acc_words: str = "at early stop"
) -> str:
    """Our side of the comparison, computed from the data (differences of means; no verdicts)."""
    by = _by_key(rows)
    acc, es = "test_accuracy_at_early_stop_mean", "early_stop_iteration_mean"
    out = ["### Ticket vs baselines and vs the dense network (computed from the rows above)", ""]
    baselines = [c for c in conds if c != "ticket"]
    rounds = sorted(k for (c, k) in by if c == "ticket" and k > 0)
    body = []
    for k in rounds:
        t = by[("ticket", k)]
        cells = [str(k), f"{t['weights_remaining_pct_mean']:.4g}"]
        for b in baselines:
            other = by.get((b, k))
            cells.append("—" if other is None else f"{100 * (t[acc] - other[acc]):+.2f}")
        for b in baselines:
            other = by.get((b, k))
            cells.append("—" if other is None else f"{t[es] - other[es]:+.0f}")
        body.append(cells)
    if len({r["n_seeds"] for r in rows}) > 1:
        out += [
            "Rows average over different numbers of seeds (see the seeds column above), so a "
            "difference between such rows also mixes seed sets.",
            "",
        ]
    if body:
        header = ["round", "weights %"]
        header += [f"ticket − {_CONDITION_NAMES[b]} acc (pp)" for b in baselines]
        header += [f"ticket − {_CONDITION_NAMES[b]} early-stop it" for b in baselines]
        out += [_md_table(header, body), ""]
    dense = by.get(("ticket", 0))
    if dense is not None:
        out.append(
            f"- Dense network (round 0): {_pct(dense[acc], dense['test_accuracy_at_early_stop_std'])}% "
            f"test accuracy {acc_words}, early-stop iteration "
            f"{_it(dense[es], dense['early_stop_iteration_std'])} ({dense['n_seeds']} seed(s))."
        )
        at_least = [k for k in rounds if by[("ticket", k)][acc] >= dense[acc]]
        if at_least:
            k = max(at_least)
            out.append(
                f"- Lowest weights remaining at which the ticket's mean accuracy is at least the dense "
                f"network's: {by[('ticket', k)]['weights_remaining_pct_mean']:.4g}% (round {k}); "
                f"rounds at or above dense: {', '.join(map(str, at_least))}."
            )
        elif rounds:
            out.append("- No pruned round of the ticket reaches the dense network's mean accuracy.")
        earlier = [k for k in rounds if by[("ticket", k)][es] < dense[es]]
        out.append(
            "- Rounds whose ticket stops earlier (mean early-stop iteration) than the dense network: "
            + (", ".join(map(str, earlier)) if earlier else "none")
            + "."
        )
    for b in baselines:
        pairs = [k for k in rounds if (b, k) in by]
        if not pairs:
            continue
        above = [k for k in pairs if by[("ticket", k)][acc] > by[(b, k)][acc]]
        out.append(
            f"- Ticket mean accuracy above {_CONDITION_NAMES[b]} in {len(above)} of {len(pairs)} rounds"
            + (f" (rounds {', '.join(map(str, above))})" if above and len(above) < len(pairs) else "")
            + "."
        )
    return "\n".join(out)


def _comparison_section(
    s: Study,
    rows: Sequence[Mapping[str, Any]],
    run_rows: Sequence[Mapping[str, Any]],
    iterations: int,
    overrides: Mapping[str, int],
) -> list[str]:
    """The paper's numbers next to ours: the study's claims that hold, and the names of those that fail."""
    if not s.claims:
        return []
    md = ["## Comparison with the paper", ""]
    if overrides:
        changed = ", ".join(f"{k}={v}" for k, v in overrides.items())
        return [*md, f"Not compared: this run overrides the study's settings ({changed}).", ""]
    checks = comparison_checks(s, rows, run_rows, iterations)
    md += [
        "What the paper reports (section and figure; values read off a figure say so) next to ours, "
        "computed from the tables above, with a verdict. Each line is generated from `rounds.csv` and "
        "`runs.csv` and checked against them: a claim whose check fails is not printed but named below. "
        "*Within one std*: a difference of means no larger than the larger of the two conditions' "
        "stds over seeds.",
        "",
    ]
    held = [c for c in checks if c.holds]
    if held:
        body = [
            [c.claim.topic, c.claim.paper, c.claim.source, c.ours, f"**{c.claim.verdict}**"]
            for v in VERDICTS
            for c in held
            if c.claim.verdict == v
        ]
        md += [_md_table(["", "the paper", "source", "ours", "verdict"], body, text_columns=5), ""]
        for v in VERDICTS:
            notes = [c for c in held if c.claim.verdict == v and c.detail]
            if notes:
                md += [f"**{v.capitalize()}:**", ""]
                md += [f"- *{c.claim.topic}*: {c.detail}" for c in notes]
                md.append("")
    failed = [c for c in checks if not c.holds]
    if failed:
        md += ["**Claims that do not hold on these rows** (not printed above):", ""]
        md += [f"- `{c.claim.key}` ({c.claim.topic}): {c.error}" for c in failed]
        md.append("")
    return md


def comparison_checks(
    study: Study,
    rows: Sequence[Mapping[str, Any]],
    run_rows: Sequence[Mapping[str, Any]] = (),
    iterations: int | None = None,
) -> tuple[ClaimCheck, ...]:
    """Check a study's claims (:attr:`Study.claims`) against its ``rounds.csv`` / ``runs.csv`` rows.

    Args:
        study: The study.
        rows: ``rounds.csv`` rows (strings as read by :class:`csv.DictReader`, or numbers).
        run_rows: ``runs.csv`` rows.
        iterations: Training iterations per round (default: the study's).

    Returns:
        One :class:`~ltfunc.studies.claims.ClaimCheck` per claim; ``holds`` is ``False`` for a
        claim its rows contradict or lack.
    """
    its = study.config.iterations if iterations is None else iterations
    return check_claims(study.claims, Table(rows, run_rows, iterations=its))


def _figures_section(
    figures: Mapping[str, Path], out_dir: Path, acc_words: str = "at early stop"
) -> list[str]:
    captions = {
        "accuracy": f"Test accuracy {acc_words} vs weights remaining (error bars: one std over seeds)",
        "early_stop": "Early-stop iteration vs weights remaining",
        "curves_ticket": "Test accuracy during training, ticket, a few rounds of the first seed",
        "curves_reinit": "Test accuracy during training, random reinit, a few rounds of the first seed",
    }
    md = ["## Figures", ""]
    if not figures:
        return [*md, "No figures yet (no round has finished).", ""]
    for key, path in figures.items():
        rel = os.path.relpath(path, out_dir)
        md += [f"**{captions[key]}**", "", f"![{captions[key]}]({Path(rel).as_posix()})", ""]
    md += [
        "Data: `rounds.csv` (per condition and round: mean and std over seeds), `runs.csv` (per seed).",
        "",
    ]
    return md


def _machine_section(states: Sequence[_SeedState], run_rows: Sequence[Mapping[str, Any]]) -> list[str]:
    md = ["## Machine and wall-clock", ""]
    seen: list[tuple[dict[str, Any], list[int]]] = []
    for st in states:
        if not st.started:
            continue
        for m in _read_machines(st.run_dir):
            for known, seeds in seen:
                if known == m:
                    seeds.append(st.seed)
                    break
            else:
                seen.append((m, [st.seed]))
    if seen:
        for m, seeds in seen:
            label = "seed" if len(seeds) == 1 else "seeds"
            md.append(f"- trained {label} {', '.join(map(str, seeds))} on: {_describe_machine(m)}")
    else:
        md.append("- training machine: not recorded yet")
    md.append(f"- collected on: {_describe_machine(machine_info(), training=False)}")
    walls = [r["wall_seconds"] for r in run_rows if _num(r.get("wall_seconds")) is not None]
    if walls:
        md.append(
            f"- wall-clock per round (all seeds and conditions, evaluations included): mean "
            f"{_secs(sum(walls) / len(walls))} s, min {_secs(min(walls))} s, max {_secs(max(walls))} s; "
            f"total {_duration(sum(walls))} over {len(walls)} finished rounds"
        )
    return [*md, ""]
