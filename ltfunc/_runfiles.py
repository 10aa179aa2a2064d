"""The run directory's JSON records: atomic text and JSON files, ``metrics.jsonl`` and ``summary.json``.

:mod:`ltfunc.rundir` owns the layout and re-exports everything here; other modules use these
through it. Kept apart so each module holds one idea (paths, weights and locking there; the
records' fields, checks and atomic writes here).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .params import atomic_write_bytes

__all__ = [
    "METRICS_FILE",
    "METRIC_FIELDS",
    "SUMMARY_FIELDS",
    "MetricsLog",
    "read_json",
    "read_metrics",
    "read_summary",
    "summarize_round",
    "write_json",
    "write_text",
]

METRIC_FIELDS: tuple[str, ...] = (
    "iteration",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "density",
)
"""Keys of one ``metrics.jsonl`` line, in order."""

SUMMARY_FIELDS: tuple[str, ...] = (
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
"""Keys of ``summary.json``, in order (``summary.csv`` and report rows have ``condition`` in front)."""


_NOT_NONE = ("density", "weights_remaining_pct")
METRICS_FILE = "metrics.jsonl"
"""A round's evaluation records, one JSON object per line."""


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    data = text.encode("utf-8")
    atomic_write_bytes(path, lambda tmp: Path(tmp).write_bytes(data))


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(func: str, path: Path, *, hint: str = "") -> Any:
    """Parse a JSON file; ``ValueError`` naming the file (and ``hint``) when it is corrupt."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{func}: {path} is corrupt: it is not valid JSON ({e}){hint}") from e


def _nan_to_inf(v: Any) -> float:
    return math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def summarize_round(
    history: Sequence[Mapping[str, Any]], *, round: int, density: float, wall_seconds: float
) -> dict[str, Any]:
    """The ``summary.json`` of a round from its evaluation records.

    The early-stop iteration is the evaluation with the lowest validation loss (the earliest
    on ties); the test accuracy is reported at that iteration.

    Args:
        history: The round's ``metrics.jsonl`` records, in order (at least one).
        round: Round index.
        density: Fraction of prunable weights kept.
        wall_seconds: Time the round took.

    Returns:
        A dict with the keys :data:`SUMMARY_FIELDS`.

    Raises:
        ValueError: If ``history`` is empty.

    Example:
        >>> from ltfunc.rundir import summarize_round
        >>> h = [{"iteration": 100, "val_loss": 0.3, "test_accuracy": 0.95},
        ...      {"iteration": 200, "val_loss": 0.2, "test_accuracy": 0.96},
        ...      {"iteration": 300, "val_loss": 0.25, "test_accuracy": 0.97}]
        >>> s = summarize_round(h, round=1, density=0.8, wall_seconds=1.0)
        >>> s["early_stop_iteration"], s["test_accuracy_at_early_stop"], s["best_test_accuracy"]
        (200, 0.96, 0.97)
    """
    if not history:
        raise ValueError("summarize_round: history is empty; a round needs at least one evaluation")
    best = min(range(len(history)), key=lambda i: (_nan_to_inf(history[i].get("val_loss")), i))
    es = history[best]
    return {
        "round": round,
        "density": density,
        "weights_remaining_pct": 100.0 * density,
        "early_stop_iteration": es["iteration"],
        "val_loss_at_early_stop": es.get("val_loss"),
        "test_accuracy_at_early_stop": es.get("test_accuracy"),
        "best_test_accuracy": max(float(h["test_accuracy"]) for h in history),
        "last_test_accuracy": history[-1]["test_accuracy"],
        "wall_seconds": wall_seconds,
    }


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_summary(func: str, path: Path, condition: str, k: int) -> dict[str, Any]:
    """A ``summary.json`` as a row ``{"condition", **SUMMARY_FIELDS}``, checked field by field.

    ``val_loss_at_early_stop``, absent from some older runs, reads as ``None``.
    """
    data = read_json(func, path)
    if not isinstance(data, dict):
        raise ValueError(f"{func}: {str(path)!r} must hold a JSON object, got {type(data).__name__}")
    required = [f for f in SUMMARY_FIELDS if f != "val_loss_at_early_stop"]
    missing = [key for key in required if key not in data]
    if missing:
        raise ValueError(f"{func}: {str(path)!r} lacks the field(s) {', '.join(missing)}")
    if data["round"] != k or isinstance(data["round"], bool):
        raise ValueError(f"{func}: {str(path)!r} says round={data['round']!r} but lies in round_{k}")
    row = {"condition": condition, **{key: data.get(key) for key in SUMMARY_FIELDS}}
    for key in SUMMARY_FIELDS[1:]:
        v = row[key]
        if not (_is_number(v) or (v is None and key not in _NOT_NONE)):
            raise ValueError(f"{func}: {str(path)!r} field {key}={v!r} must be a number")
    return row


def read_metrics(func: str, path: Path, *, finished: bool = True) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl``; a truncated last line is tolerated only in an unfinished round."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{func}: {path} is unreadable ({e})") from e
    out = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            if not finished and i == len(lines):
                break  # being written when the run stopped
            raise ValueError(f"{func}: {str(path)!r} line {i} is not valid JSON ({e})") from e
        if not isinstance(obj, dict):
            raise ValueError(f"{func}: {str(path)!r} line {i} must be a JSON object")
        out.append(obj)
    return out


class MetricsLog:
    """Appends one JSON line per evaluation while a round runs (visible live), then rewrites it whole."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "w", encoding="utf-8")

    def append(self, record: Mapping[str, Any]) -> None:
        rec = dict(record)
        self.records.append(rec)
        self._fh.write(json.dumps(rec) + "\n")
        self._fh.flush()

    def finish(self) -> None:
        self.close()
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
