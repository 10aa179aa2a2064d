"""Reproduce the lottery-ticket studies of Frankle & Carbin (2019) and ship their results.

A *study* (:data:`STUDIES`) is an :class:`ltfunc.experiment.ImpConfig` at the paper's settings,
a list of seeds, the paper's reference settings (to list deviations from) and the paper's
reference numbers. :func:`reproduce` runs every seed in turn with :func:`ltfunc.run_imp`
(resumable: finished rounds are kept, an interrupted one is redone) into::

    RUNS_DIR/<prefix>-seed<k>/        one run directory per seed (layout in docs/design.md)
        machines.json                 the machines that trained this run (CPU, cores, torch, device)

and then :func:`collect` writes the evidence into ``OUT`` (default ``docs/results/<prefix>``)::

    rounds.csv        per condition and round: weights remaining, early-stop iteration and test
                      accuracy at early stop (mean and std over seeds), seeds, wall-clock seconds
    runs.csv          one row per (seed, condition, round) with the summary.json fields
    accuracy.png      test accuracy at early stop vs weights remaining, ticket / reinit / random
                      pruning, error bars = one std over seeds
    early_stop.png    early-stop iteration vs weights remaining
    curves_ticket.png, curves_reinit.png
                      test accuracy during training for a few rounds of the first seed
    results.md        tables, figures, deviations from the paper, the machine and whether the
                      results are complete or partial

``<prefix>`` is the study name, with the overridden settings appended when some are changed
(``lenet-mnist-iterations300-rounds2``), so shortened runs never mix with the full study.
Collection only reads finished rounds, so it can run (``collect_only=True``,
``ltfunc reproduce STUDY --collect-only``) while the runs are still going; every file is
written atomically.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import os
import platform
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import torch

from . import report
from ._errors import check_choice
from .experiment import ImpConfig, RunResult, config_diff, round_dir, run_imp
from .masks import ones
from .models import build
from .params import atomic_write_bytes
from .prune import layer_kinds
from .ticket import BASELINES

__all__ = [
    "OVERRIDABLE",
    "ROUND_FIELDS",
    "RUN_FIELDS",
    "STUDIES",
    "CollectResult",
    "Study",
    "collect",
    "deviations",
    "expected_densities",
    "get_study",
    "machine_info",
    "reproduce",
    "run_name",
    "run_study",
    "study_configs",
]

PathLike = str | os.PathLike[str]

OVERRIDABLE: tuple[str, ...] = ("iterations", "rounds", "eval_every", "val_size")
"""Study settings that may be overridden; every override is recorded as a deviation."""

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

_AGG_METRICS = (
    "weights_remaining_pct",
    "early_stop_iteration",
    "test_accuracy_at_early_stop",
    "wall_seconds",
)
_NOT_STUDY = ("device", "compile")  # config fields that may differ between the seeds' machines
_SEED_DIR = re.compile(r"^(?P<prefix>.+)-seed(?P<seed>\d+)$")
_LABELS = {
    "model": "model",
    "dataset": "dataset",
    "init": "initialization",
    "optimizer": "optimizer",
    "lr": "learning rate",
    "batch_size": "batch size",
    "iterations": "training iterations per round",
    "val_size": "validation examples held out of the training set",
    "eval_every": "evaluation every (iterations)",
    "conv_rate": "conv pruning rate per round",
    "fc_rate": "fc pruning rate per round",
    "output_rate": "output-layer pruning rate per round",
    "scope": "pruning scope",
    "schedule": "pruning schedule",
    "rewind": "reset / rewind iteration (0 = reset to θ0)",
    "rounds": "pruning rounds",
}
_PRETTY = {
    "mnist": "MNIST",
    "fashion-mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "lenet300": "LeNet-300-100",
    "conv2": "Conv-2",
    "glorot_normal": "Glorot normal",
    "adam": "Adam",
}
_CONDITION_NAMES = {"ticket": "ticket", "reinit": "random reinit", "random_prune": "random pruning"}


# --------------------------------------------------------------------------------------------
# studies


@dataclass(frozen=True)
class Study:
    """One reproducible study: the paper's settings as an :class:`ImpConfig` and what to compare to.

    Args:
        name: Registry key and run-directory prefix (``"lenet-mnist"``).
        title: Human-readable title.
        config: The study's config (its ``seed`` is replaced per seed).
        seeds: Default seeds.
        min_seeds: Fewest seeds the study asks for (fewer is listed as a deviation).
        reference: The paper's settings, ``{ImpConfig field: value}``; a config value that
            differs is listed as a deviation (``dataset`` may name a dataset ltfunc lacks).
        reference_source: Where ``reference`` comes from.
        reference_min_pct: Weights remaining (%) the paper prunes down to (``None``: not
            compared; say so in ``notes``).
        reference_text: The paper's reported results (markdown), quoted as reference only.
        notes: Deviations that are not a single config value (markdown bullets).
        curve_rounds: Rounds whose training curves are plotted (those that finished).

    Example:
        >>> from ltfunc.reproduce import STUDIES
        >>> s = STUDIES["lenet-mnist"]
        >>> s.config.model, s.config.iterations, s.seeds
        ('lenet300', 50000, (0, 1, 2))
    """

    name: str
    title: str
    config: ImpConfig
    seeds: tuple[int, ...]
    min_seeds: int
    reference: Mapping[str, Any]
    reference_source: str
    reference_min_pct: float | None
    reference_text: str
    notes: tuple[str, ...] = ()
    curve_rounds: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "reference", MappingProxyType(dict(self.reference)))

    def __hash__(self) -> int:
        return hash((self.name, self.config))


_FRANKLE_CARBIN = (
    "Frankle & Carbin, *The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural Networks*, ICLR 2019"
)

STUDIES: dict[str, Study] = {
    "lenet-mnist": Study(
        name="lenet-mnist",
        title="LeNet-300-100 on MNIST",
        config=ImpConfig(
            model="lenet300",
            dataset="mnist",
            rounds=15,  # 15 rounds of fc 20% / output 10% leave 3.58% of the weights (14: 4.47%)
            rate=0.2,
            fc_rate=0.2,
            output_rate=0.1,
            scope="layer",
            schedule="rate",
            rewind=0,
            iterations=50_000,
            optimizer="adam",
            lr=1.2e-3,
            batch_size=60,
            eval_every=100,
            val_size=5000,
            init="glorot_normal",
            baselines=BASELINES,
        ),
        seeds=(0, 1, 2),
        min_seeds=3,
        reference={
            "model": "lenet300",
            "dataset": "mnist",
            "init": "glorot_normal",
            "optimizer": "adam",
            "lr": 1.2e-3,
            "batch_size": 60,
            "iterations": 50_000,
            "val_size": 5000,
            "eval_every": 100,
            "fc_rate": 0.2,
            "output_rate": 0.1,
            "scope": "layer",
            "schedule": "rate",
            "rewind": 0,
        },
        reference_source=f"{_FRANKLE_CARBIN}: Figure 2 (LeNet row) and Section 2",
        reference_min_pct=3.6,
        reference_text=(
            f"{_FRANKLE_CARBIN}, LeNet-300-100 on MNIST (iterative pruning, reset to θ0; the paper "
            "averages five trials and shows 100, 51.3, 21.1, 7.0, 3.6 and 1.9% weights remaining in "
            "Figure 3): winning tickets reach an early-stop test accuracy at or above the dense "
            "network's (about 98%) down to about 3.6-7% of the weights remaining, and learn faster "
            "(an earlier early-stop iteration) than the dense network until about 3.6%. Randomly "
            "reinitialized subnetworks degrade steadily from about 98% as they are pruned and fall "
            "well below the winning tickets once fewer than about 20% of the weights remain."
        ),
        curve_rounds=(0, 3, 7, 12, 15),  # 100, 51.3, 21.1, 7.0, 3.6 % weights: the paper's Figure 3
    ),
    "conv2-fashion": Study(
        name="conv2-fashion",
        title="Conv-2 on Fashion-MNIST",
        config=ImpConfig(
            model="conv2",
            dataset="fashion-mnist",
            rounds=5,  # conv 10% / fc 20% / output 10% per round: 33.1% of the weights after 5
            rate=0.2,
            conv_rate=0.1,
            fc_rate=0.2,
            output_rate=0.1,
            scope="layer",
            schedule="rate",
            rewind=0,
            iterations=600,
            optimizer="adam",
            lr=2e-4,
            batch_size=60,
            eval_every=150,
            val_size=2000,
            init="glorot_normal",
            baselines=BASELINES,
        ),
        seeds=(0, 1),
        min_seeds=2,
        reference={
            "model": "conv2",
            "dataset": "cifar10",
            "init": "glorot_normal",
            "optimizer": "adam",
            "lr": 2e-4,
            "batch_size": 60,
            "iterations": 20_000,
            "val_size": 5000,
            "conv_rate": 0.1,
            "fc_rate": 0.2,
            "output_rate": 0.1,
            "scope": "layer",
            "schedule": "rate",
            "rewind": 0,
        },
        reference_source=f"{_FRANKLE_CARBIN}: Figure 2 (Conv-2 row), trained on CIFAR-10",
        reference_min_pct=None,
        reference_text=(
            f"{_FRANKLE_CARBIN} train Conv-2 on CIFAR-10, not Fashion-MNIST, so their numbers are not "
            "directly comparable. What they report for their fully connected and convolutional "
            "networks on MNIST and CIFAR-10: iterative pruning finds winning tickets that are less "
            "than 10-20% of the original size; above that size the winning tickets learn faster "
            "than the original network (earlier early-stop iteration) and reach higher test "
            "accuracy, while randomly reinitialized subnetworks of the same structure learn slower "
            "and lose accuracy as they are pruned."
        ),
        notes=(
            "Fashion-MNIST (28×28 grayscale) instead of CIFAR-10 (32×32 RGB): conv1 has 1 input "
            "channel and fc1 sees 64·14·14 features, so the network has fewer weights than the "
            "paper's CIFAR-10 Conv-2 (4.3M; see *prunable weights* above).",
            "A much shorter study than the paper's Conv-2 experiments, sized to the 2-core CPU it "
            "ran on (one Conv-2 training step takes about 0.17 s there, one evaluation of "
            "12,000 images about 8 s): 600 iterations per round (about 0.65 epochs) instead of "
            "20,000, and 5 pruning rounds, down to 33% of the weights, where the paper prunes Conv-2 "
            "to below 10%. It shows the conv/fc/output rates, the ticket and both baselines on a "
            "convolutional network; it cannot show where Conv-2 tickets stop winning. 600 "
            "iterations are too few for the validation loss to reach its minimum, so the early stop "
            "is the last evaluation and the accuracies compare how far each network gets in the "
            "same short training.",
            "Evaluated every 150 iterations on 2,000 held-out validation images and the 10,000 test "
            "images, which keeps evaluation to about a quarter of a round's time.",
        ),
        curve_rounds=(0, 1, 2, 3, 4, 5),
    ),
}
"""The reproducible studies by name (``ltfunc reproduce NAME``)."""


def get_study(name: str | Study) -> Study:
    """The :class:`Study` registered under ``name`` (a :class:`Study` is returned as is).

    Args:
        name: A key of :data:`STUDIES`.

    Returns:
        The study.

    Raises:
        ValueError: Unknown name (the message lists the valid ones).

    Example:
        >>> from ltfunc.reproduce import get_study
        >>> get_study("conv2-fashion").config.conv_rate
        0.1
        >>> get_study("resnet")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ValueError: get_study: study='resnet' is not supported. Supported: 'lenet-mnist', 'conv2-fashion'
    """
    if isinstance(name, Study):
        return name
    check_choice("get_study", "study", name, tuple(STUDIES))
    return STUDIES[name]


def _check_seeds(func: str, seeds: Any) -> tuple[int, ...]:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        raise TypeError(f"{func}: seeds must be a sequence of ints, got {type(seeds).__name__} {seeds!r}")
    out = tuple(seeds)
    if not out:
        raise ValueError(f"{func}: seeds is empty; give at least one seed")
    for s in out:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"{func}: seeds must be ints >= 0, got {s!r} in {list(out)}")
    if len(set(out)) != len(out):
        raise ValueError(f"{func}: seeds has repeated entries: {list(out)}")
    return out


def _check_overrides(func: str, overrides: Any) -> dict[str, int]:
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise TypeError(f"{func}: overrides must be a dict of setting -> int, got {type(overrides).__name__}")
    out = {}
    for k, v in overrides.items():
        if k not in OVERRIDABLE:
            raise ValueError(
                f"{func}: overrides key {k!r} is not supported. "
                f"Supported: {', '.join(map(repr, OVERRIDABLE))}"
            )
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{func}: overrides[{k!r}] must be an int >= 1, got {v!r}")
        out[k] = v
    return {k: out[k] for k in OVERRIDABLE if k in out}


def study_configs(
    study: str | Study,
    seeds: Sequence[int] | None = None,
    *,
    overrides: Mapping[str, int] | None = None,
    device: str | None = None,
    compile: bool | None = None,
) -> tuple[ImpConfig, ...]:
    """The :class:`ImpConfig` of every seed of a study.

    Args:
        study: A name of :data:`STUDIES` or a :class:`Study`.
        seeds: The seeds (default: the study's).
        overrides: ``{setting: int}`` for settings in :data:`OVERRIDABLE` (``iterations``,
            ``rounds``, ``eval_every``, ``val_size``); ``None`` values are ignored.
        device: Where to train (default: the study's, ``"cpu"``).
        compile: ``torch.compile`` the training step (default: the study's, ``True``).

    Returns:
        One config per seed, in the order of ``seeds``.

    Raises:
        ValueError: Unknown study, bad seeds or overrides (names them), or an invalid config.
        TypeError: Arguments of the wrong type.

    Example:
        >>> from ltfunc.reproduce import study_configs
        >>> cfgs = study_configs("lenet-mnist", [0, 1], overrides={"iterations": 300})
        >>> [(c.seed, c.iterations, c.rounds) for c in cfgs]
        [(0, 300, 15), (1, 300, 15)]
    """
    func = "study_configs"
    s = get_study(study)
    chosen = s.seeds if seeds is None else _check_seeds(func, seeds)
    changes: dict[str, Any] = dict(_check_overrides(func, overrides))
    if device is not None:
        changes["device"] = device
    if compile is not None:
        changes["compile"] = compile
    base = s.config.to_dict()
    return tuple(ImpConfig.from_dict({**base, **changes, "seed": seed}) for seed in chosen)


def run_name(study: str | Study, overrides: Mapping[str, int] | None = None) -> str:
    """The run-directory prefix of a study: its name, plus the overridden settings.

    Overrides equal to the study's own setting are left out. Run directories are
    ``RUNS_DIR/<prefix>-seed<k>`` and the default output folder is ``docs/results/<prefix>``.

    Args:
        study: A name of :data:`STUDIES` or a :class:`Study`.
        overrides: As for :func:`study_configs`.

    Returns:
        ``"<study>"`` or ``"<study>-<setting><value>-..."`` (settings in :data:`OVERRIDABLE` order,
        underscores dropped).

    Raises:
        ValueError: Unknown study or bad overrides.

    Example:
        >>> from ltfunc.reproduce import run_name
        >>> run_name("lenet-mnist"), run_name("lenet-mnist", {"rounds": 2, "iterations": 300})
        ('lenet-mnist', 'lenet-mnist-iterations300-rounds2')
    """
    s = get_study(study)
    changed = _changed_overrides(s, _check_overrides("run_name", overrides))
    return "-".join([s.name, *(f"{k.replace('_', '')}{v}" for k, v in changed.items())])


def _changed_overrides(study: Study, overrides: Mapping[str, int]) -> dict[str, int]:
    return {k: v for k, v in overrides.items() if getattr(study.config, k) != v}


# --------------------------------------------------------------------------------------------
# expected densities and deviations


@functools.cache
def _prunable(model: str) -> tuple[tuple[str, int, str], ...]:
    """``(name, number of weights, kind)`` of every prunable tensor of a built-in model."""
    mask = ones(build(model, seed=0))
    kinds = layer_kinds(mask)
    return tuple((name, m.numel(), kinds[name]) for name, m in mask.items())


def expected_densities(config: ImpConfig) -> tuple[float, ...]:
    """The fraction of prunable weights kept after each round ``0 .. rounds`` (no training).

    Each round removes ``floor(rate * survivors + 0.5)`` weights of every layer (layer scope) or
    group of layers (global scope), exactly as :func:`ltfunc.prune.magnitude` does, so this is
    the density every condition of the run will report.

    Args:
        config: An experiment config with ``schedule="rate"``.

    Returns:
        ``rounds + 1`` densities, starting at ``1.0``.

    Raises:
        TypeError: ``config`` is not an :class:`ImpConfig`.
        ValueError: ``config.schedule`` is not ``"rate"``.

    Example:
        >>> from ltfunc.experiment import ImpConfig
        >>> from ltfunc.reproduce import expected_densities
        >>> d = expected_densities(ImpConfig(rounds=15, fc_rate=0.2, output_rate=0.1))
        >>> round(100 * d[1], 3), round(100 * d[15], 3)
        (80.038, 3.583)
    """
    func = "expected_densities"
    if not isinstance(config, ImpConfig):
        raise TypeError(f"{func}: config must be an ImpConfig, got {type(config).__name__}")
    if config.schedule != "rate":
        raise ValueError(
            f"{func}: config.schedule={config.schedule!r} is not supported. Supported: 'rate' "
            "(fractions of the survivors); read the densities of a 'sparsity' run from its summaries"
        )
    rates = config.rates()
    units: dict[str, list[float]] = {}  # unit -> [rate, kept]
    for name, numel, kind in _prunable(config.model):
        frac, group = rates.resolve_with_group(name, kind)
        key = group if config.scope == "global" else f"layer:{name}"
        units.setdefault(key, [frac, 0])[1] += numel
    total = sum(numel for _, numel, _ in _prunable(config.model))
    out = [1.0]
    for _ in range(config.rounds):
        for unit in units.values():
            unit[1] -= math.floor(unit[0] * unit[1] + 0.5)
        out.append(sum(u[1] for u in units.values()) / total)
    return tuple(out)


def _fmt_setting(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return _PRETTY.get(value, value)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if key.endswith("_rate"):
        return f"{100 * value:g}%"
    return f"{value:g}"


def deviations(
    study: str | Study, seeds: Sequence[int] | None = None, overrides: Mapping[str, int] | None = None
) -> tuple[str, ...]:
    """Human-readable deviations of a study run from the paper's settings.

    Lists, in order: every setting of the config that differs from :attr:`Study.reference`
    (marked when set on the command line); overridden settings the paper does not fix; the
    study's fixed notes (:attr:`Study.notes`); pruning that stops short of
    :attr:`Study.reference_min_pct`; and fewer seeds than :attr:`Study.min_seeds`.

    Args:
        study: A name of :data:`STUDIES` or a :class:`Study`.
        seeds: The seeds (default: the study's).
        overrides: As for :func:`study_configs`.

    Returns:
        One markdown sentence per deviation (empty when the run follows the paper).

    Raises:
        ValueError: Unknown study, bad seeds or overrides.

    Example:
        >>> from ltfunc.reproduce import deviations
        >>> deviations("lenet-mnist")
        ()
        >>> for line in deviations("lenet-mnist", [0], {"iterations": 300}):
        ...     print(line)
        training iterations per round: 300 here, 50,000 in the paper (set on the command line).
        seeds: 1 (0); the study asks for at least 3.
    """
    func = "deviations"
    s = get_study(study)
    chosen = s.seeds if seeds is None else _check_seeds(func, seeds)
    ovr = _changed_overrides(s, _check_overrides(func, overrides))
    config = study_configs(s, chosen[:1], overrides=ovr)[0]
    lines = []
    for key, ref in s.reference.items():
        ours = getattr(config, key)
        if ours != ref:
            where = " (set on the command line)" if key in ovr else ""
            lines.append(
                f"{_LABELS.get(key, key)}: {_fmt_setting(key, ours)} here, "
                f"{_fmt_setting(key, ref)} in the paper{where}."
            )
    for key, value in ovr.items():
        if key in s.reference:
            continue
        lines.append(
            f"{_LABELS.get(key, key)}: {_fmt_setting(key, value)} (set on the command line; the "
            f"study's setting is {_fmt_setting(key, getattr(s.config, key))})."
        )
    lines += s.notes
    final_pct = 100.0 * expected_densities(config)[-1]
    if s.reference_min_pct is not None and final_pct > s.reference_min_pct:
        lines.append(
            f"pruning stops after {config.rounds} rounds at {final_pct:.3g}% weights remaining; the "
            f"paper prunes to {s.reference_min_pct:g}% or fewer."
        )
    if len(chosen) < s.min_seeds:
        lines.append(
            f"seeds: {len(chosen)} ({', '.join(map(str, chosen))}); "
            f"the study asks for at least {s.min_seeds}."
        )
    return tuple(lines)


# --------------------------------------------------------------------------------------------
# machines


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """A description of this machine for the results: CPU, cores, threads, torch, device.

    Args:
        device: The training device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...); for a CUDA
            device its name is added.

    Returns:
        ``{"cpu", "cores", "torch_threads", "torch", "python", "platform", "device"}`` plus
        ``"gpu"`` for CUDA devices (JSON-ready).

    Example:
        >>> from ltfunc.reproduce import machine_info
        >>> info = machine_info()
        >>> sorted(info)
        ['cores', 'cpu', 'device', 'platform', 'python', 'torch', 'torch_threads']
    """
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _describe_machine(m: Mapping[str, Any], *, training: bool = True) -> str:
    text = f"{m.get('cpu', 'unknown CPU')}, {m.get('cores', '?')} cores"
    if m.get("torch_threads") is not None:
        text += f" ({m['torch_threads']} torch thread{'s' if m['torch_threads'] != 1 else ''})"
    text += f", torch {m.get('torch', '?')}, Python {m.get('python', '?')}, {m.get('platform', '?')}"
    if training:
        device = m.get("device", "cpu")
        text += f"; device {m['gpu']} ({device})" if m.get("gpu") else f"; device {device}"
    return text


def _read_machines(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "machines.json"
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"collect: {path} is corrupt ({e}); delete it (it only describes machines)") from e
    machines = data.get("machines") if isinstance(data, dict) else None
    if not isinstance(machines, list):
        raise ValueError(f"collect: {path} must hold {{'machines': [...]}}; delete it to start afresh")
    return [m for m in machines if isinstance(m, dict)]


def _record_machine(run_dir: Path, machine: Mapping[str, Any]) -> None:
    machines = _read_machines(run_dir)
    if dict(machine) not in machines:
        machines.append(dict(machine))
        data = (json.dumps({"machines": machines}, indent=2) + "\n").encode("utf-8")
        atomic_write_bytes(run_dir / "machines.json", lambda tmp: Path(tmp).write_bytes(data))


# --------------------------------------------------------------------------------------------
# running


def _holds(run_dir: Path, config: ImpConfig) -> bool:
    """Whether ``run_dir`` holds a run of exactly ``config``."""
    try:
        old = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(old, dict) and not config_diff(old, config.to_dict())


def _check_path(func: str, name: str, value: Any) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{func}: {name} must be a path, got {type(value).__name__} {value!r}")
    return Path(value)


def run_study(
    study: str | Study,
    seeds: Sequence[int] | None = None,
    *,
    runs_dir: PathLike = "runs",
    overrides: Mapping[str, int] | None = None,
    data_root: PathLike | None = None,
    device: str | None = None,
    compile: bool | None = None,
    progress: bool = True,
    download: bool | None = None,
) -> tuple[RunResult, ...]:
    """Run (or resume) every seed of a study in turn into ``RUNS_DIR/<prefix>-seed<k>``.

    Each seed is one :func:`ltfunc.run_imp` call (ticket rounds and both baselines); finished
    rounds are skipped, an unfinished round is redone from its start. The machine is added to
    the run's ``machines.json``.

    Args:
        study: A name of :data:`STUDIES` or a :class:`Study`.
        seeds: The seeds (default: the study's).
        runs_dir: Parent folder of the run directories.
        overrides: As for :func:`study_configs` (recorded as deviations by :func:`collect`).
        data_root: Folder holding ``mnist/`` and ``fashion-mnist/`` (see :func:`ltfunc.load_dataset`).
        device: Where to train (default ``"cpu"``).
        compile: ``torch.compile`` the step (default ``True``).
        progress: Show progress bars (and a line per seed on stderr).
        download: Passed to :func:`ltfunc.run_imp`.

    Returns:
        The :class:`ltfunc.experiment.RunResult` of every seed.

    Raises:
        ValueError, TypeError: Bad arguments, or a run directory that holds another config
            (raised by :func:`ltfunc.run_imp` before any training).
        FileNotFoundError: The dataset is missing.
        FloatingPointError: Training diverged.

    Example:
        >>> from ltfunc.reproduce import run_study
        >>> results = run_study("lenet-mnist", [0], overrides={"iterations": 300})  # doctest: +SKIP
    """
    func = "run_study"
    runs = _check_path(func, "runs_dir", runs_dir)
    if not isinstance(progress, bool):
        raise TypeError(f"{func}: progress must be a bool, got {progress!r}")
    s = get_study(study)
    ovr = _check_overrides(func, overrides)
    configs = study_configs(s, seeds, overrides=ovr, device=device, compile=compile)
    prefix = run_name(s, ovr)
    results = []
    for i, config in enumerate(configs):
        run_dir = runs / f"{prefix}-seed{config.seed}"
        if progress:
            print(
                f"reproduce {s.name}: seed {config.seed} ({i + 1}/{len(configs)}) -> {run_dir}",
                file=sys.stderr,
                flush=True,
            )
        try:
            results.append(
                run_imp(config, run_dir, data_root=data_root, progress=progress, download=download)
            )
        finally:
            if _holds(run_dir, config):  # the run started (and maybe trained) on this machine
                _record_machine(run_dir, machine_info(config.device))
    return tuple(results)


# --------------------------------------------------------------------------------------------
# collecting


class CollectResult(NamedTuple):
    """What :func:`collect` wrote and how far the study is."""

    out: Path
    """The output folder."""
    files: tuple[Path, ...]
    """The files written, ``results.md`` last."""
    rows: tuple[dict[str, Any], ...]
    """The ``rounds.csv`` rows (:data:`ROUND_FIELDS`)."""
    seeds: tuple[int, ...]
    """The seeds the study expects (requested ones plus any found in ``runs_dir``)."""
    finished: int
    """(seed, condition, round) triples finished."""
    expected: int
    """(seed, condition, round) triples the study needs."""

    @property
    def complete(self) -> bool:
        """Whether every seed finished every round of every condition."""
        return self.finished == self.expected


class _SeedState(NamedTuple):
    seed: int
    run_dir: Path
    started: bool
    finished: dict[str, tuple[int, ...]]  # condition -> finished rounds
    expected: dict[str, tuple[int, ...]]  # condition -> rounds the study needs


def _expected_rounds(config: ImpConfig) -> dict[str, tuple[int, ...]]:
    out = {"ticket": tuple(range(config.rounds + 1))}
    for b in config.baselines:
        out[b] = tuple(range(1, config.rounds + 1))
    return out


def _seed_states(func: str, prefix: str, runs: Path, configs: Mapping[int, ImpConfig]) -> list[_SeedState]:
    states = []
    for seed, config in sorted(configs.items()):
        run_dir = runs / f"{prefix}-seed{seed}"
        expected = _expected_rounds(config)
        cfg_path = run_dir / "config.json"
        if not cfg_path.is_file():
            states.append(_SeedState(seed, run_dir, False, {c: () for c in expected}, expected))
            continue
        try:
            old = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{func}: {cfg_path} is corrupt ({e})") from e
        if not isinstance(old, dict):
            raise ValueError(f"{func}: {cfg_path} must hold a JSON object")
        diff = {k: v for k, v in config_diff(old, config.to_dict()).items() if k not in _NOT_STUDY}
        if diff:
            lines = "; ".join(f"{k}: {a!r} there, {b!r} expected" for k, (a, b) in diff.items())
            raise ValueError(
                f"{func}: {run_dir} holds a run with another config than this study's ({lines}); "
                "move it away or pass the matching overrides"
            )
        finished = {
            c: tuple(k for k in ks if (round_dir(run_dir, c, k) / "summary.json").is_file())
            for c, ks in expected.items()
        }
        states.append(_SeedState(seed, run_dir, True, finished, expected))
    return states


def _found_seeds(runs: Path, prefix: str) -> set[int]:
    if not runs.is_dir():
        return set()
    found = set()
    for p in runs.iterdir():
        m = _SEED_DIR.match(p.name)
        if m and m.group("prefix") == prefix and (p / "config.json").is_file():
            found.add(int(m.group("seed")))
    return found


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


def _command(
    study: Study, seeds: Sequence[int], overrides: Mapping[str, int], runs: Path, out: Path | None
) -> str:
    """The ``ltfunc reproduce`` command line of these arguments (defaults left out)."""
    parts = ["ltfunc", "reproduce", study.name]
    if tuple(seeds) != study.seeds:
        parts += ["--seeds", ",".join(map(str, seeds))]
    for k, v in overrides.items():
        parts += [f"--{k.replace('_', '-')}", str(v)]
    if runs != Path("runs"):
        parts += ["--runs-dir", runs.as_posix()]
    if out is not None:
        parts += ["--out", out.as_posix()]
    return " ".join(parts)


def collect(
    study: str | Study,
    seeds: Sequence[int] | None = None,
    *,
    runs_dir: PathLike = "runs",
    out: PathLike | None = None,
    overrides: Mapping[str, int] | None = None,
) -> CollectResult:
    """Write the CSVs, figures and ``results.md`` of a study from its finished rounds.

    Reads ``RUNS_DIR/<prefix>-seed<k>`` for the requested seeds and any other seed of the same
    prefix found there. Seeds not started yet and unfinished rounds are listed as such and the
    results are labelled *partial* until every seed finished every round. Every file is
    written atomically; ``results.md`` is written last.

    Args:
        study: A name of :data:`STUDIES` or a :class:`Study`.
        seeds: The seeds the study should have (default: the study's).
        runs_dir: Parent folder of the run directories.
        out: Output folder (default ``docs/results/<prefix>``).
        overrides: The overrides the runs were made with (selects ``<prefix>``).

    Returns:
        :class:`CollectResult`.

    Raises:
        ValueError: Unknown study, bad seeds or overrides, a run directory of this prefix
            that holds another config, or a corrupt summary file (named).
        TypeError: Arguments of the wrong type.

    Example:
        >>> import tempfile
        >>> from ltfunc.reproduce import collect
        >>> root = tempfile.mkdtemp()
        >>> res = collect("lenet-mnist", runs_dir=f"{root}/runs", out=f"{root}/out")
        >>> res.complete, res.finished, res.expected, [p.name for p in res.files]
        (False, 0, 138, ['rounds.csv', 'runs.csv', 'results.md'])
    """
    from .plot import plot_curves, plot_early_stop, plot_runs

    func = "collect"
    s = get_study(study)
    runs = _check_path(func, "runs_dir", runs_dir)
    requested = s.seeds if seeds is None else _check_seeds(func, seeds)
    ovr = _changed_overrides(s, _check_overrides(func, overrides))
    prefix = run_name(s, ovr)
    out_dir = Path("docs") / "results" / prefix if out is None else _check_path(func, "out", out)
    command = _command(s, requested, ovr, runs, None if out is None else out_dir)
    all_seeds = tuple(sorted(set(requested) | _found_seeds(runs, prefix)))
    configs = dict(zip(all_seeds, study_configs(s, all_seeds, overrides=ovr), strict=True))
    states = _seed_states(func, prefix, runs, configs)
    finished = sum(len(v) for st in states for v in st.finished.values())
    expected = sum(len(v) for st in states for v in st.expected.values())
    with_rounds = [st for st in states if any(st.finished.values())]

    # per-run rows and the aggregate over seeds
    run_rows: list[dict[str, Any]] = []
    seeds_of: dict[tuple[str, int], list[int]] = {}
    for st in with_rounds:
        for row in report.summary_rows(st.run_dir):
            if row["round"] in st.finished.get(row["condition"], ()):
                run_rows.append({"seed": st.seed, **row})
                seeds_of.setdefault((row["condition"], row["round"]), []).append(st.seed)
    agg = report.aggregate([st.run_dir for st in with_rounds], metrics=_AGG_METRICS) if with_rounds else []
    rows = [
        {
            "condition": a["condition"],
            "round": a["round"],
            "n_seeds": a["n"],
            "seeds": ";".join(map(str, seeds_of.get((a["condition"], a["round"]), []))),
            **{f"{m}_{x}": a[f"{m}_{x}"] for m in _AGG_METRICS[:3] for x in ("mean", "std")},
            "wall_seconds_mean": a["wall_seconds_mean"],
        }
        for a in agg
        if (a["condition"], a["round"]) in seeds_of
    ]
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
            dirs, out_dir / "accuracy.png", title=f"{s.title}: test accuracy at early stop\n{spread}{status}"
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
        overrides=ovr,
        finished=finished,
        expected=expected,
    )
    files.append(_write_text(out_dir / "results.md", text))
    return CollectResult(out_dir, tuple(files), tuple(rows), all_seeds, finished, expected)


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
    from . import __version__

    config = study_configs(s, all_seeds[:1], overrides=overrides)[0]
    densities = expected_densities(config)
    prunable = sum(numel for _, numel, _ in _prunable(config.model))
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
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
        "the round.",
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
    md += [f"- {d}" for d in devs] if devs else ["- None: every setting listed above is the paper's."]
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
        md += [_results_table(rows, conds), "", _differences(rows, conds), ""]
    md += ["## The paper's reference numbers", "", f"> {s.reference_text}", ""]
    md += _figures_section(figures, out_dir)
    md += _machine_section(states, run_rows)
    return "\n".join(md).rstrip() + "\n"


def _rates_text(config: ImpConfig) -> str:
    r = config.rates()
    parts = {}
    for name, _, kind in _prunable(config.model):
        parts.setdefault(f"{kind} {100 * r.resolve(name, kind):g}%", None)
    return ", ".join(parts)


def _by_key(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int], Mapping[str, Any]]:
    return {(r["condition"], r["round"]): r for r in rows}


def _results_table(rows: Sequence[Mapping[str, Any]], conds: Sequence[str]) -> str:
    by = _by_key(rows)
    header = ["round", "weights %"]
    header += [f"{_CONDITION_NAMES[c]} acc %" for c in conds]
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


def _differences(rows: Sequence[Mapping[str, Any]], conds: Sequence[str]) -> str:
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
            f"test accuracy at early stop, early-stop iteration "
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


def _figures_section(figures: Mapping[str, Path], out_dir: Path) -> list[str]:
    captions = {
        "accuracy": "Test accuracy at early stop vs weights remaining (error bars: one std over seeds)",
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


# --------------------------------------------------------------------------------------------
# the one-call entry point


def reproduce(
    study: str | Study,
    seeds: Sequence[int] | None = None,
    *,
    runs_dir: PathLike = "runs",
    out: PathLike | None = None,
    overrides: Mapping[str, int] | None = None,
    data_root: PathLike | None = None,
    device: str | None = None,
    compile: bool | None = None,
    progress: bool = True,
    download: bool | None = None,
    collect_only: bool = False,
) -> CollectResult:
    """Run (resumably) every seed of a study, then :func:`collect` its results (``ltfunc reproduce``).

    Args:
        study: A name of :data:`STUDIES` or a :class:`Study`.
        seeds: The seeds (default: the study's).
        runs_dir: Parent folder of the run directories ``<prefix>-seed<k>``.
        out: Output folder (default ``docs/results/<prefix>``).
        overrides: ``{setting: int}`` for :data:`OVERRIDABLE` settings; recorded as deviations
            and appended to ``<prefix>``.
        data_root: Folder holding ``mnist/`` and ``fashion-mnist/``.
        device: Where to train (default ``"cpu"``).
        compile: ``torch.compile`` the step (default ``True``).
        progress: Progress bars and a line per seed on stderr.
        download: Passed to :func:`ltfunc.run_imp`.
        collect_only: Train nothing; collect whatever rounds have finished.

    Returns:
        :class:`CollectResult`.

    Raises:
        ValueError, TypeError: Bad arguments (unknown study: the message lists the valid ones),
            or a run directory with another config.
        FileNotFoundError: The dataset is missing.
        FloatingPointError: Training diverged.

    Example:
        >>> import tempfile
        >>> from ltfunc.reproduce import reproduce
        >>> root = tempfile.mkdtemp()
        >>> res = reproduce("conv2-fashion", runs_dir=f"{root}/runs", out=f"{root}/out", collect_only=True)
        >>> res.seeds, res.complete, "PARTIAL" in (res.out / "results.md").read_text()
        ((0, 1), False, True)
    """
    func = "reproduce"
    s = get_study(study)
    if not isinstance(collect_only, bool):
        raise TypeError(f"{func}: collect_only must be a bool, got {collect_only!r}")
    ovr = _check_overrides(func, overrides)
    chosen = s.seeds if seeds is None else _check_seeds(func, seeds)
    study_configs(s, chosen, overrides=ovr, device=device, compile=compile)  # validate before any work
    if not collect_only:
        run_study(
            s,
            chosen,
            runs_dir=runs_dir,
            overrides=ovr,
            data_root=data_root,
            device=device,
            compile=compile,
            progress=progress,
            download=download,
        )
    return collect(s, chosen, runs_dir=runs_dir, out=out, overrides=ovr)
