"""Synthetic run directories in the documented layout (docs/design.md), for report/plot tests.

Written independently of ltfunc.experiment so the readers are tested against the contract:

    RUN/config.json
    RUN/<condition>/round_<k>/{metrics.jsonl, summary.json}
    RUN/summary.csv
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

CONDS = ("ticket", "reinit", "random_prune")
ITERATIONS = (100, 200, 300, 400, 500)
SUMMARY_KEYS = (
    "round",
    "density",
    "weights_remaining_pct",
    "early_stop_iteration",
    "val_loss_at_early_stop",
    "test_accuracy_at_early_stop",
    "best_test_accuracy",
    "last_test_accuracy",
    "wall_seconds",
)


def density_of(k: int, rate: float = 0.2) -> float:
    """Fraction of weights left after k rounds that each prune ``rate`` of the survivors."""
    return (1.0 - rate) ** k


def curve(acc: float, es: int, it: int) -> tuple[float, float]:
    """(test accuracy, val loss) at iteration ``it`` of a run that peaks at ``es`` with ``acc``."""
    return acc - 0.002 * abs(it - es) / 100, 0.05 + 0.01 * abs(it - es) / 100


def write_round(
    run: Path,
    condition: str,
    k: int,
    *,
    acc: float,
    es: int,
    density: float,
    wall: float = 2.5,
    finished: bool = True,
    val_accuracy: bool = True,
) -> dict[str, Any]:
    """Write one round's metrics.jsonl (and summary.json when ``finished``); return the summary."""
    rd = run / condition / f"round_{k}"
    rd.mkdir(parents=True, exist_ok=True)
    lines = []
    for it in ITERATIONS:
        test_acc, val_loss = curve(acc, es, it)
        lines.append(
            {
                "iteration": it,
                "train_loss": 0.3 - it / 5000,
                "val_loss": val_loss,
                "val_accuracy": (test_acc - 0.001) if val_accuracy else None,
                "test_loss": val_loss + 0.01,
                "test_accuracy": test_acc,
                "density": density,
            }
        )
    (rd / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    summary = {
        "round": k,
        "density": density,
        "weights_remaining_pct": 100.0 * density,
        "early_stop_iteration": es,
        "val_loss_at_early_stop": curve(acc, es, es)[1],
        "test_accuracy_at_early_stop": acc,
        "best_test_accuracy": acc,
        "last_test_accuracy": curve(acc, es, ITERATIONS[-1])[0],
        "wall_seconds": wall,
    }
    if finished:
        (rd / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return summary


def make_run(
    run: Path,
    *,
    seed: int = 0,
    rounds: int = 3,
    conditions: Iterable[str] = CONDS,
    acc: Callable[[str, int], float] = lambda cond, k: 0.98 - 0.01 * CONDS.index(cond) - 0.001 * k,
    es: Callable[[str, int], int] = lambda cond, k: 300,
    config: dict[str, Any] | None = None,
    unfinished: bool = False,
) -> Path:
    """A run directory with finished rounds 0..rounds of ``ticket`` and 1..rounds of baselines.

    With ``unfinished`` a round ``rounds + 1`` of ``ticket`` has metrics but no summary.json.
    """
    run.mkdir(parents=True, exist_ok=True)
    cfg = {
        "model": "lenet300",
        "dataset": "mnist",
        "rounds": rounds,
        "rate": 0.2,
        "rewind": 0,
        "seed": seed,
        "ltfunc_version": "0.1.0",
        "config_hash": f"hash{seed}",
    }
    cfg.update(config or {})
    (run / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    summaries = []
    for cond in conditions:
        for k in range(0 if cond == "ticket" else 1, rounds + 1):
            s = write_round(run, cond, k, acc=acc(cond, k), es=es(cond, k), density=density_of(k))
            summaries.append({"condition": cond, **s})
    if unfinished:
        write_round(
            run, "ticket", rounds + 1, acc=0.5, es=100, density=density_of(rounds + 1), finished=False
        )
    with open(run / "summary.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["condition", *SUMMARY_KEYS])
        writer.writeheader()
        writer.writerows(summaries)
    return run


def snapshot_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to check that readers never write)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
