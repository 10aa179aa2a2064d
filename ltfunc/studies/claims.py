"""Checked claims: how a study's results compare with the paper, generated from the numbers.

A :class:`Claim` states one comparison with the paper: what the paper reports (and where), a
verdict (``"agrees"``, ``"differs"`` or ``"cannot tell"``), our side as text generated from the
rows of ``rounds.csv`` / ``runs.csv``, and a predicate over those rows that must hold for the
text and the verdict to be true. :func:`check_claims` evaluates every claim of a study;
``results.md`` prints only the claims that hold and names the others as failing, so its prose
cannot contradict its own table. The claims of each study live in :mod:`ltfunc.studies.paper`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["VERDICTS", "Claim", "ClaimCheck", "Row", "Table", "check_claims", "failing_claims"]

VERDICTS: tuple[str, ...] = ("agrees", "differs", "cannot tell")
"""The verdicts a claim may give, in the order ``results.md`` lists them."""

_PCT_TOLERANCE = 0.6  # a requested weights-remaining % matches a round within this many points


def _float(v: Any) -> float | None:
    """A CSV cell or a number as a float; empty, ``None`` and NaN are ``None``."""
    if v is None or v == "":
        return None
    out = float(v)
    return None if math.isnan(out) else out


class Row(NamedTuple):
    """One condition at one round, aggregated over seeds (a ``rounds.csv`` row, typed)."""

    condition: str
    round: int
    pct: float
    """Weights remaining, %."""
    acc: float
    """Mean test accuracy (a fraction) at the early stop."""
    acc_std: float
    """Sample std over seeds of ``acc`` (0 for a single seed)."""
    es: float
    """Mean early-stop iteration."""
    es_std: float
    n: int
    """Seeds averaged."""


class Table:
    """The rows a claim is checked against: ``rounds.csv`` rows and, optionally, ``runs.csv`` rows.

    Rows are found by condition and weights remaining (the round within 0.6 points of the
    requested %), so claims name the paper's sparsities (``21.1``), not round indices.

    Args:
        rows: ``rounds.csv`` rows (strings or numbers).
        run_rows: ``runs.csv`` rows (per seed); claims that need them fail without them.
        iterations: Training iterations per round of the study.

    Raises:
        KeyError: (from the accessors) a requested row is missing; :func:`check_claims` reports
            it as a failing claim.

    Example:
        >>> from ltfunc.studies.claims import Table
        >>> t = Table([
        ...     {"condition": "ticket", "round": "0", "n_seeds": "2", "weights_remaining_pct_mean": "100",
        ...      "test_accuracy_at_early_stop_mean": "0.98", "test_accuracy_at_early_stop_std": "0.001",
        ...      "early_stop_iteration_mean": "5000", "early_stop_iteration_std": "100"}])
        >>> t.dense.acc, t.get("ticket", 100.0).es
        (0.98, 5000.0)
    """

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        run_rows: Sequence[Mapping[str, Any]] = (),
        *,
        iterations: int | None = None,
    ) -> None:
        self.rows: list[Row] = []
        for r in rows:
            acc, es = _float(r["test_accuracy_at_early_stop_mean"]), _float(r["early_stop_iteration_mean"])
            if acc is None or es is None:
                continue
            self.rows.append(
                Row(
                    str(r["condition"]),
                    int(r["round"]),
                    float(r["weights_remaining_pct_mean"]),
                    acc,
                    _float(r.get("test_accuracy_at_early_stop_std")) or 0.0,
                    es,
                    _float(r.get("early_stop_iteration_std")) or 0.0,
                    int(r["n_seeds"]),
                )
            )
        self.run_rows = list(run_rows)
        self.iterations = iterations

    def get(self, condition: str, pct: float) -> Row:
        """The row of ``condition`` whose weights remaining is within 0.6 points of ``pct``."""
        for r in self.rows:
            if r.condition == condition and abs(r.pct - pct) <= _PCT_TOLERANCE:
                return r
        raise KeyError(f"no {condition} row at {pct:g}% of the weights")

    @property
    def dense(self) -> Row:
        """The dense network (ticket, round 0)."""
        for r in self.rows:
            if r.condition == "ticket" and r.round == 0:
                return r
        raise KeyError("no dense (ticket round 0) row")

    def pruned(self, condition: str, *, above: float = 0.0, upto: float = 100.0) -> list[Row]:
        """Pruned rows (round > 0) of ``condition`` with ``above < pct <= upto``, densest first."""
        out = [
            r for r in self.rows if r.condition == condition and r.round > 0 and above < r.pct <= upto + 1e-9
        ]
        if not out:
            raise KeyError(f"no {condition} rows between {above:g}% and {upto:g}% of the weights")
        return sorted(out, key=lambda r: -r.pct)

    def per_seed(self, condition: str, pct: float, metric: str) -> dict[int, float]:
        """``{seed: value}`` of a ``runs.csv`` metric for the round of ``condition`` at ``pct``."""
        k = self.get(condition, pct).round
        out = {
            int(r["seed"]): float(r[metric])
            for r in self.run_rows
            if str(r["condition"]) == condition and int(r["round"]) == k
        }
        if not out:
            raise KeyError(f"no per-seed {metric} of {condition} at {pct:g}% (runs.csv rows missing)")
        return out


def larger_std(a: Row, b: Row, metric: str = "acc") -> float:
    """The larger of the two rows' stds of ``metric`` (``"acc"`` or ``"es"``)."""
    return max(getattr(a, f"{metric}_std"), getattr(b, f"{metric}_std"))


@dataclass(frozen=True)
class Claim:
    """One comparison with the paper, its text generated from the rows and checked by a predicate.

    Args:
        key: Short name (shown when the claim fails).
        topic: What is compared (``"ticket vs dense, early-stop iteration at 21.1%"``).
        paper: What the paper reports.
        source: Where: section and figure; values read off a figure say so.
        verdict: One of :data:`VERDICTS`.
        ours: Our numbers, generated from a :class:`Table` (short: goes in a table cell).
        detail: More of our numbers and the likely reasons (a sentence or two; may be empty).
        holds: Whether ``ours``, ``detail`` and ``verdict`` are true of the table.
    """

    key: str
    topic: str
    paper: str
    source: str
    verdict: str
    ours: Callable[[Table], str]
    holds: Callable[[Table], bool]
    detail: Callable[[Table], str] = lambda t: ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"Claim {self.key!r}: verdict {self.verdict!r} is not one of {VERDICTS}")


class ClaimCheck(NamedTuple):
    """A claim evaluated on a table."""

    claim: Claim
    holds: bool
    ours: str
    """Our side (empty when the claim does not hold)."""
    detail: str
    """Details and reasons (empty when the claim does not hold)."""
    error: str
    """Why the claim does not hold (empty when it holds)."""


def check_claims(claims: Sequence[Claim], table: Table) -> tuple[ClaimCheck, ...]:
    """Evaluate every claim on ``table``.

    A claim holds when its predicate returns ``True``; a missing row (``KeyError``) or a
    predicate that returns ``False`` makes it fail, and its text is not generated.

    Args:
        claims: The claims (e.g. a study's :attr:`~ltfunc.studies.Study.claims`).
        table: The rows.

    Returns:
        One :class:`ClaimCheck` per claim, in order.

    Example:
        >>> from ltfunc.studies.claims import Claim, Table, check_claims
        >>> t = Table([
        ...     {"condition": "ticket", "round": "0", "n_seeds": "1", "weights_remaining_pct_mean": "100",
        ...      "test_accuracy_at_early_stop_mean": "0.98", "early_stop_iteration_mean": "5000"}])
        >>> c = Claim("dense", "dense accuracy", "about 98%", "Figure 3, by eye", "agrees",
        ...           ours=lambda t: f"{100 * t.dense.acc:.2f}%",
        ...           holds=lambda t: abs(t.dense.acc - 0.98) < 0.003)
        >>> [(r.holds, r.ours) for r in check_claims([c], t)]
        [(True, '98.00%')]
        >>> check_claims([c], Table([]))[0].error
        "rows missing: 'no dense (ticket round 0) row'"
    """
    out = []
    for c in claims:
        try:
            ok = bool(c.holds(table))
            if ok:
                out.append(ClaimCheck(c, True, c.ours(table), c.detail(table), ""))
                continue
            error = "its check fails on these rows"
        except KeyError as e:
            error = f"rows missing: {e}"
        out.append(ClaimCheck(c, False, "", "", error))
    return tuple(out)


def failing_claims(checks: Sequence[ClaimCheck]) -> list[str]:
    """The keys of the claims that do not hold."""
    return [c.claim.key for c in checks if not c.holds]
