"""The study registry: each paper study's settings, seeds and reference, and what they imply.

:data:`STUDIES` maps a name to a :class:`Study`; :func:`study_configs` gives the
:class:`~ltfunc.config.ImpConfig` of every seed, :func:`run_name` the run-directory prefix,
:func:`expected_densities` the weights remaining after each round and :func:`deviations` the
differences from the paper's settings. Nothing here trains or touches the disk.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .._checks import check_choice, check_int
from ..config import ImpConfig
from ..masks import ones
from ..models import build
from ..presets import _scale, get_preset
from ..prune import layer_kinds
from ..ticket import BASELINES
from .claims import Claim
from .paper import CONV2_CLAIMS, LENET_CLAIMS

__all__ = [
    "OVERRIDABLE",
    "STUDIES",
    "Study",
    "deviations",
    "expected_densities",
    "get_study",
    "protocol_deviations",
    "run_name",
    "study_configs",
]

OVERRIDABLE: tuple[str, ...] = ("iterations", "rounds", "eval_every", "val_size")
"""Study settings that may be overridden; every override is recorded as a deviation."""

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
    "momentum": "momentum",
    "weight_decay": "weight decay",
    "lr_schedule": "learning-rate schedule",
    "milestones": "learning-rate drops at iterations",
    "gamma": "learning-rate factor per drop",
    "warmup": "learning-rate warm-up (iterations)",
    "augment": "data augmentation (random crop + flip)",
    "rate": "pruning rate per round",
}
_PRETTY = {
    "mnist": "MNIST",
    "fashion-mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "lenet300": "LeNet-300-100",
    "conv2": "Conv-2",
    "glorot_normal": "Glorot normal",
    "adam": "Adam",
    "resnet20": "ResNet-20",
    "vgg16_bn": "VGG-16 (BatchNorm)",
    "sgd": "SGD",
}


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
        reference_text: The paper's setup for this study (markdown), quoted in ``results.md``;
            the paper's numbers are in ``claims``.
        notes: Deviations that are not a single config value (markdown bullets).
        curve_rounds: Rounds whose training curves are plotted (those that finished).
        protocol: How the study's trials and data split differ from the paper's, beyond its
            settings (markdown bullets; ``{n_seeds}``, ``{seeds}`` and ``{val_size}`` are filled
            in by :func:`protocol_deviations`).
        claims: The comparison with the paper's numbers, each claim checked against the
            results (:mod:`ltfunc.studies.paper`).
        paper_trials: Trials the paper averages per point; fewer seeds are listed as a
            protocol deviation (``None``: not compared).

    Example:
        >>> from ltfunc.studies import STUDIES
        >>> s = STUDIES["lenet-mnist"]
        >>> s.config.model, s.config.iterations, s.seeds
        ('lenet300', 50000, (0, 1, 2, 3, 4))
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
    protocol: tuple[str, ...] = ()
    claims: tuple[Claim, ...] = ()
    paper_trials: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "reference", MappingProxyType(dict(self.reference)))

    def __hash__(self) -> int:
        return hash((self.name, self.config))


_FRANKLE_CARBIN = (
    "Frankle & Carbin, *The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural Networks*, ICLR 2019"
)

_TRIALS = (
    "trials: {n_seeds} seeds ({seeds}), one ticket each, where the paper averages five trials per "
    "point (Figures 3-5)."
)

_PROTOCOL = (
    "baselines: one random-reinit and one random-pruning draw per seed and round ({n_seeds} per "
    "point); for LeNet the paper reinitializes each ticket three times (15 per point, Section 2) and "
    "averages ten randomly sampled sparse networks per point (Figure 1).",
    "validation split: every seed holds out the same {val_size:,} training images (one split, drawn "
    "with a fixed seed independent of the training seed), so the spread over seeds leaves out the "
    "split's variation; the paper samples its validation set at random and does not say whether once "
    "or per trial.",
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
        seeds=(0, 1, 2, 3, 4),
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
            f"{_FRANKLE_CARBIN}, Section 2: LeNet-300-100 on MNIST, iterative pruning with reset to θ0. "
            "Winning tickets are averaged over five trials per point (Figures 3 and 4), each ticket is "
            "randomly reinitialized three times (15 per point, Section 2), and the randomly sampled "
            "sparse networks of Figure 1 are averaged over ten trials. Figure 3 shows 100, 51.3, 21.1, "
            "7.0, 3.6 and 1.9% of the weights remaining; the dense network reaches about 98% test "
            "accuracy (read off Figure 3 by eye). The numbers the paper states, next to ours, are in "
            "*Comparison with the paper* above."
        ),
        protocol=_PROTOCOL,
        paper_trials=5,
        claims=LENET_CLAIMS,
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
            f"{_FRANKLE_CARBIN} train Conv-2 on CIFAR-10, not Fashion-MNIST, for 20,000 iterations, so "
            "their numbers are not comparable with this study's. What they report for their fully "
            "connected and convolutional networks on MNIST and CIFAR-10 (abstract; Section 3 and "
            "Figure 5 for Conv-2): iterative pruning finds winning tickets that are less than 10-20% of "
            "the original size; above that size the winning tickets learn faster than the original "
            "network (earlier early-stop iteration) and reach higher test accuracy, while randomly "
            "reinitialized subnetworks of the same structure learn slower and lose accuracy as they "
            "are pruned."
        ),
        protocol=_PROTOCOL,
        paper_trials=5,
        claims=CONV2_CLAIMS,
        notes=(
            "Fashion-MNIST (28×28 grayscale) instead of CIFAR-10 (32×32 RGB): conv1 has 1 input "
            "channel and fc1 sees 64·14·14 features, so the network has fewer weights than the "
            "paper's CIFAR-10 Conv-2 (4.3M; see *prunable weights* above).",
            "A much shorter study than the paper's Conv-2 experiments, sized to the 2-core CPU it "
            "ran on (one Conv-2 training step takes about 0.17 s there, one evaluation of "
            "12,000 images about 8 s): 600 iterations per round (about 0.62 epochs of the 58,000 training "
            "images) instead of "
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

# --------------------------------------------------------------------------------------------
# CIFAR-10 studies of Frankle et al. 2020, built from the presets (ltfunc.presets)

_LMC = (
    "Frankle, Dziugaite, Roy & Carbin, *Linear Mode Connectivity and the Lottery Ticket "
    "Hypothesis*, ICML 2020"
)
_LMC_RECIPE: dict[str, Any] = {
    "dataset": "cifar10",
    "init": "open_lth",  # kaiming_normal + uniform BatchNorm weights
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "batch_size": 128,
    "iterations": 62_560,  # 160 epochs of 391 iterations
    "lr_schedule": "multistep",
    "milestones": (31_280, 46_920),  # epochs 80 and 120
    "gamma": 0.1,
    "warmup": 0,
    "augment": True,
    "scope": "global",
    "rate": 0.2,
    "val_size": 0,  # open_lth trains on all 50,000 images and evaluates on the test set
}
"""The LMC paper's standard CIFAR-10 recipe with open_lth's exact values (see the sources)."""
_FROM_MEMORY = (
    "(These numbers are quoted from memory of the paper and were not checked against it when "
    "this study was added.)"
)


def _preset_study(
    name: str, title: str, file: str, dense: str, density: str, curves: tuple[int, ...]
) -> Study:
    """A study at a preset's settings, with the LMC paper's Table 1 recipe as its reference."""
    preset = get_preset(name)
    config = preset.config()
    return Study(
        name=name,
        title=title,
        config=config,
        seeds=(0, 1, 2),
        min_seeds=3,
        reference={"model": config.model, **_LMC_RECIPE},
        reference_source=(
            f"{_LMC}: Table 1 (standard variant: SGD lr 0.1, momentum 0.9, batch 128, about 63K "
            f"iterations, lr ×0.1 at about 32K and 48K, no warm-up); facebookresearch/open_lth {file} "
            "default_hparams() for the exact iterations (160 epochs of 391), weight decay, init and "
            "global pruning of 20% per round"
        ),
        reference_min_pct=None,
        reference_text=(
            f"{_LMC}, Table 1 and Section 5: {title.split(' (')[0]} trained with this recipe reaches "
            f"{dense} test accuracy dense, and Table 1 lists {density} of the weights remaining as "
            "the sparsity at which the paper studies its IMP subnetworks. With rewinding to an early "
            "iteration of training, IMP subnetworks reach the dense accuracy at that sparsity; reset "
            "to iteration 0 (the original lottery-ticket procedure) they do not, and neither do the "
            f"random-pruning and random-reinitialization baselines. {_FROM_MEMORY}"
        ),
        notes=(
            *preset.notes,
            "A GPU study: each seed trains 21 ticket rounds and 40 baseline rounds of 62,560 "
            "iterations at batch 128. `--iterations N` shortens every round and scales the lr "
            "milestones and the rewind iteration with it; `--device cuda` trains on a GPU.",
            "Pruning depth: 20 rounds of 20% global pruning leave 1.2% of the prunable weights "
            "(rounds=20 is our choice, above); how far the paper prunes is not compared.",
        ),
        curve_rounds=curves,
    )


STUDIES["resnet20-cifar10"] = _preset_study(
    "resnet20-cifar10",
    "ResNet-20 on CIFAR-10 (Frankle et al. 2020)",
    "models/cifar_resnet.py",
    "91.7 ± 0.1%",
    "16.8%",
    (0, 4, 8, 14, 20),  # 100, 41.0, 16.8, 4.4, 1.2 % of the prunable weights
)
STUDIES["vgg16-cifar10"] = _preset_study(
    "vgg16-cifar10",
    "VGG-16 (BatchNorm) on CIFAR-10 (Frankle et al. 2020)",
    "models/cifar_vgg.py",
    "93.7 ± 0.1%",
    "1.5%",
    (0, 4, 8, 14, 19),  # 100, 41.0, 16.8, 4.4, 1.4 % of the prunable weights
)


def get_study(name: str | Study) -> Study:
    """The :class:`Study` registered under ``name`` (a :class:`Study` is returned as is).

    Args:
        name: A key of :data:`STUDIES`.

    Returns:
        The study.

    Raises:
        ValueError: Unknown name (the message lists the valid ones).

    Example:
        >>> from ltfunc.studies import get_study
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
    for i, s in enumerate(out):
        check_int(func, f"seeds[{i}]", s, low=0)
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
        out[k] = check_int(func, f"overrides[{k!r}]", v, low=1)
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
            ``rounds``, ``eval_every``, ``val_size``); ``None`` values are ignored. Another
            ``iterations`` scales the study's lr milestones, warm-up and rewind iteration with
            it, as :func:`ltfunc.presets.preset_config` does.
        device: Where to train (default: the study's, ``"cpu"``).
        compile: ``torch.compile`` the training step (default: the study's, ``True``).

    Returns:
        One config per seed, in the order of ``seeds``.

    Raises:
        ValueError: Unknown study, bad seeds or overrides (names them), or an invalid config.
        TypeError: Arguments of the wrong type.

    Example:
        >>> from ltfunc.studies import study_configs
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
    if changes.get("iterations", s.config.iterations) != s.config.iterations:
        # as for a preset: the lr milestones, warm-up and rewind iteration scale with the run
        old, new = s.config.iterations, changes["iterations"]
        base.update(
            {k: _scale(k, getattr(s.config, k), old, new) for k in ("milestones", "warmup", "rewind")}
        )
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
        >>> from ltfunc.studies import run_name
        >>> run_name("lenet-mnist"), run_name("lenet-mnist", {"rounds": 2, "iterations": 300})
        ('lenet-mnist', 'lenet-mnist-iterations300-rounds2')
    """
    s = get_study(study)
    changed = _changed_overrides(s, _check_overrides("run_name", overrides))
    return "-".join([s.name, *(f"{k.replace('_', '')}{v}" for k, v in changed.items())])


def _changed_overrides(study: Study, overrides: Mapping[str, int]) -> dict[str, int]:
    return {k: v for k, v in overrides.items() if getattr(study.config, k) != v}


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
        >>> from ltfunc.config import ImpConfig
        >>> from ltfunc.studies import expected_densities
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
    if isinstance(value, tuple):
        return ", ".join(_fmt_setting(key, v) for v in value) or "none"
    if key == "rate" or key.endswith("_rate"):
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
        >>> from ltfunc.studies import deviations
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


def protocol_deviations(study: str | Study, seeds: Sequence[int] | None = None) -> tuple[str, ...]:
    """How a study run's trials and data split differ from the paper's, beyond its settings.

    :func:`deviations` lists the settings that differ; these are the differences no setting
    expresses: how many trials each point averages, how many baseline draws each seed makes,
    and the validation split shared by all seeds (:attr:`Study.protocol`, filled in). The
    number of trials is listed when there are fewer seeds than the paper's
    (:attr:`Study.paper_trials`).

    Args:
        study: A name of :data:`STUDIES` or a :class:`Study`.
        seeds: The seeds (default: the study's).

    Returns:
        One markdown sentence per difference.

    Raises:
        ValueError: Unknown study or bad seeds.

    Example:
        >>> from ltfunc.studies import protocol_deviations
        >>> protocol_deviations("lenet-mnist")[0][:40]
        'baselines: one random-reinit and one ran'
        >>> protocol_deviations("lenet-mnist", [0, 1])[0][:25]
        'trials: 2 seeds (0, 1), o'
    """
    s = get_study(study)
    chosen = s.seeds if seeds is None else _check_seeds("protocol_deviations", seeds)
    fields = {
        "n_seeds": len(chosen),
        "seeds": ", ".join(map(str, chosen)),
        "val_size": s.config.val_size,
    }
    fewer = s.paper_trials is not None and len(chosen) < s.paper_trials
    lines = ((_TRIALS,) if fewer else ()) + tuple(s.protocol)
    return tuple(line.format(**fields) for line in lines)
