"""Which rounds of a study's run directories have finished (read, never written, here).

A run directory ``RUNS_DIR/<prefix>-seed<k>`` belongs to a study when its ``config.json``
matches the study's config for seed ``k``; a round has finished when its ``summary.json``
exists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from .. import rundir
from ..config import ImpConfig, config_diff

__all__: list[str] = []

_NOT_STUDY = ("device", "compile")  # config fields that may differ between the seeds' machines
_SEED_DIR = re.compile(r"^(?P<prefix>.+)-seed(?P<seed>\d+)$")


def _holds(run_dir: Path, config: ImpConfig) -> bool:
    """Whether ``run_dir`` holds a run of exactly ``config``."""
    if not (run_dir / "config.json").is_file():
        return False
    try:
        old = rundir.read_config_dict("_holds", run_dir)
    except ValueError:  # corrupt or of another format: not this run
        return False
    return not config_diff(old, config.to_dict())


class _SeedState(NamedTuple):
    """One seed's run directory: whether it started and which rounds finished."""

    seed: int
    run_dir: Path
    started: bool
    finished: dict[str, tuple[int, ...]]  # condition -> finished rounds
    expected: dict[str, tuple[int, ...]]  # condition -> rounds the study needs


def _expected_rounds(config: ImpConfig) -> dict[str, tuple[int, ...]]:
    """Condition -> the rounds a run of ``config`` trains (ticket from 0, baselines from 1)."""
    out = {"ticket": tuple(range(config.rounds + 1))}
    for b in config.baselines:
        out[b] = tuple(range(1, config.rounds + 1))
    return out


def _seed_states(func: str, prefix: str, runs: Path, configs: Mapping[int, ImpConfig]) -> list[_SeedState]:
    """The state of ``runs/<prefix>-seed<k>`` for every seed of ``configs``, sorted by seed.

    Raises:
        ValueError: A run directory with a corrupt ``config.json`` or another config (device
            and compile may differ).
    """
    states = []
    for seed, config in sorted(configs.items()):
        run_dir = runs / f"{prefix}-seed{seed}"
        expected = _expected_rounds(config)
        cfg_path = run_dir / "config.json"
        if not cfg_path.is_file():  # not started
            states.append(_SeedState(seed, run_dir, False, {c: () for c in expected}, expected))
            continue
        old = rundir.read_config_dict(func, run_dir)
        diff = {k: v for k, v in config_diff(old, config.to_dict()).items() if k not in _NOT_STUDY}
        if diff:
            lines = "; ".join(f"{k}: {a!r} there, {b!r} expected" for k, (a, b) in diff.items())
            raise ValueError(
                f"{func}: {run_dir} holds a run with another config than this study's ({lines}); "
                "move it away or pass the matching overrides"
            )
        finished = {
            c: tuple(k for k in ks if rundir.is_finished(run_dir, c, k)) for c, ks in expected.items()
        }
        states.append(_SeedState(seed, run_dir, True, finished, expected))
    return states


def _found_seeds(runs: Path, prefix: str) -> set[int]:
    """The seeds ``k`` of the started run directories ``runs/<prefix>-seed<k>``."""
    if not runs.is_dir():
        return set()
    found = set()
    for p in runs.iterdir():
        m = _SEED_DIR.match(p.name)
        if m and m.group("prefix") == prefix and (p / "config.json").is_file():
            found.add(int(m.group("seed")))
    return found
