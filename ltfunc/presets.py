"""Published lottery-ticket recipes as named :class:`~ltfunc.ImpConfig` presets, with their sources.

``ltfunc imp --preset NAME`` starts from a preset; ``ltfunc presets`` lists them. Every field
of a preset can be overridden (``--preset resnet20-cifar10 --iterations 100``); precedence:
``ImpConfig`` defaults < preset < ``--config`` file < flags on the command line.

Overriding a preset's ``iterations`` without its ``milestones`` / ``warmup`` / ``rewind``
scales those with the training length (``milestone · new / old``, rounded; see
:func:`preset_config`), so a short run keeps the shape of the recipe.

Sources are quoted next to each preset. What a preset chose where a source is silent or
where ltfunc differs is in its ``notes``.

Example:
    >>> from ltfunc.presets import PRESETS
    >>> sorted(PRESETS)[:2]
    ['conv2-cifar10', 'conv4-cifar10']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .config import ImpConfig

__all__ = ["PRESETS", "Preset", "format_presets", "get_preset", "preset_config"]

_FC = "Frankle & Carbin, The Lottery Ticket Hypothesis, ICLR 2019"
_LMC = (
    "Frankle, Dziugaite, Roy & Carbin, Linear Mode Connectivity and the Lottery Ticket Hypothesis, ICML 2020"
)
_OPEN_LTH = "facebookresearch/open_lth"

_CIFAR_EPOCH = 391
"""open_lth's iterations per CIFAR-10 epoch at batch 128: ceil(50000 / 128) (a DataLoader
without drop_last; ``datasets/registry.py: iterations_per_epoch``)."""


@dataclass(frozen=True)
class Preset:
    """A named recipe: :class:`~ltfunc.ImpConfig` fields and where each comes from."""

    name: str
    """The preset's name (``ltfunc imp --preset NAME``)."""
    title: str
    """Model and dataset in words."""
    fields: Mapping[str, Any]
    """The :class:`~ltfunc.ImpConfig` fields it sets (the rest keep their defaults)."""
    sources: tuple[str, ...]
    """Where the settings come from: paper, section / figure / table, or code file."""
    notes: tuple[str, ...] = field(default=())
    """Choices where the sources are silent, and where ltfunc's setting differs."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))

    def config(self, **overrides: Any) -> ImpConfig:
        """The preset's :class:`~ltfunc.ImpConfig`, with ``overrides`` (see :func:`preset_config`)."""
        return preset_config(self.name, overrides)


def _fc_conv(name: str, model: str, lr: float, iterations: int, conv_rate: float, fig: str) -> Preset:
    kwargs = {"model_kwargs": {"in_channels": 3, "image_size": 32}} if model == "conv2" else {}
    return Preset(
        name=name,
        title=f"{model.capitalize()} on CIFAR-10 (Frankle & Carbin)",
        fields={
            "model": model,
            "dataset": "cifar10",
            "init": "glorot_normal",
            "optimizer": "adam",
            "lr": lr,
            "batch_size": 60,
            "iterations": iterations,
            "rate": 0.2,
            "conv_rate": conv_rate,
            "fc_rate": 0.2,
            "output_rate": 0.1,
            "scope": "layer",
            "rewind": 0,
            "rounds": 20,
            "eval_every": 100,
            "val_size": 5000,
            "augment": True,
            **kwargs,
        },
        sources=(
            f"{_FC}, Figure 2 ({fig} row): Adam {lr:g}, batch 60, {iterations // 1000}K iterations, "
            f"pruning rates conv {conv_rate:.0%}, fc 20%, output 10% per round",
            f"{_FC}, Section 2 / Appendix: Gaussian Glorot init, 5,000 training examples held out "
            "for validation (early stopping), layer-wise pruning, reset to θ0",
        ),
        notes=(
            "augment=True (random crop with 4-pixel padding and horizontal flip) follows the "
            "CIFAR recipe of this project; we could not confirm from the paper that Frankle & "
            "Carbin augmented the Conv-2/4/6 data: pass --no-augment for unaugmented training",
            "rounds=20 and eval_every=100 are our choices (the paper plots pruning to a few percent "
            "of the weights and evaluates periodically)",
        ),
    )


def _open_lth(name: str, model: str, title: str, file: str, notes: tuple[str, ...]) -> Preset:
    return Preset(
        name=name,
        title=title,
        fields={
            "model": model,
            "dataset": "cifar10",
            "init": "open_lth",
            "optimizer": "sgd",
            "momentum": 0.9,
            "weight_decay": 1e-4,
            "lr": 0.1,
            "batch_size": 128,
            "iterations": 160 * _CIFAR_EPOCH,  # 62,560
            "lr_schedule": "multistep",
            "milestones": (80 * _CIFAR_EPOCH, 120 * _CIFAR_EPOCH),  # 31,280 and 46,920
            "gamma": 0.1,
            "warmup": 0,
            "rate": 0.2,
            "scope": "global",
            "rewind": 2000,
            "rounds": 20,
            "eval_every": _CIFAR_EPOCH,
            "val_size": 5000,
            "augment": True,
        },
        sources=(
            f"{_OPEN_LTH} {file}, default_hparams(): SGD lr 0.1, momentum 0.9, weight decay 1e-4, "
            "batch 128, training_steps 160ep, milestone_steps 80ep,120ep, gamma 0.1, no warmup_steps, "
            "model_init kaiming_normal + batchnorm_init uniform (ltfunc init 'open_lth'), "
            "sparse_global pruning_fraction 0.2",
            f"{_OPEN_LTH} datasets/registry.py: iterations_per_epoch = ceil(50000 / 128) = 391, so "
            "160 epochs = 62,560 iterations and the milestones are iterations 31,280 and 46,920; "
            "open_lth augments CIFAR-10 by default (do_not_augment=False: random crop + flip)",
            f"{_LMC}, Table 1: the same recipe (about 63K iterations, lr drops at about 32K and 48K, "
            "warm-up 0 in its standard variant); IMP with rewinding to an early iteration k",
        ),
        notes=(
            "rewind=2000 is our choice of an early rewinding iteration (about 3% of training); "
            "open_lth's default_hparams do not set one (it is a lottery-run argument): change it "
            "with --rewind",
            "val_size=5000: ltfunc holds out 5,000 training images for early stopping, so training "
            "sees 45,000 images (open_lth trains on all 50,000); the iteration counts are open_lth's",
            "rounds=20 and eval_every=391 (one open_lth epoch) are our choices",
            *notes,
        ),
    )


PRESETS: dict[str, Preset] = {
    "lenet300-mnist": Preset(
        name="lenet300-mnist",
        title="LeNet-300-100 on MNIST (Frankle & Carbin)",
        fields={
            "model": "lenet300",
            "dataset": "mnist",
            "init": "glorot_normal",
            "optimizer": "adam",
            "lr": 1.2e-3,
            "batch_size": 60,
            "iterations": 50_000,
            "rate": 0.2,
            "fc_rate": 0.2,
            "output_rate": 0.1,
            "scope": "layer",
            "rewind": 0,
            "rounds": 20,
            "eval_every": 100,
            "val_size": 5000,
        },
        sources=(
            f"{_FC}, Figure 2 (LeNet row): Adam 1.2e-3, batch 60, 50K iterations, fc 20% and "
            "output 10% per round",
            f"{_FC}, Section 2: layer-wise pruning, reset to θ0, Gaussian Glorot init, 5,000 "
            "training examples held out for validation, evaluation every 100 iterations",
        ),
        notes=(
            "rounds=20 (1.2% of the weights); the paper's Figure 3 goes to 3.6% (15 rounds), as "
            "`ltfunc reproduce lenet-mnist` does",
        ),
    ),
    "conv2-cifar10": _fc_conv("conv2-cifar10", "conv2", 2e-4, 20_000, 0.1, "Conv-2"),
    "conv4-cifar10": _fc_conv("conv4-cifar10", "conv4", 3e-4, 25_000, 0.1, "Conv-4"),
    "conv6-cifar10": _fc_conv("conv6-cifar10", "conv6", 3e-4, 30_000, 0.15, "Conv-6"),
    "resnet20-cifar10": _open_lth(
        "resnet20-cifar10",
        "resnet20",
        "ResNet-20 on CIFAR-10 (open_lth / Frankle et al. 2020)",
        "models/cifar_resnet.py",
        (
            "ltfunc's resnet20 leaves its output layer fc.weight dense (its prunable set, Frankle & "
            "Carbin's choice); open_lth's ResNet-20 default prunes it too (640 of ~270K weights)",
        ),
    ),
    "vgg16-cifar10": _open_lth(
        "vgg16-cifar10",
        "vgg16_bn",
        "VGG-16 (with BatchNorm) on CIFAR-10 (open_lth / Frankle et al. 2020)",
        "models/cifar_vgg.py",
        (
            "open_lth's cifar_vgg_16 always has BatchNorm: ltfunc model 'vgg16_bn'; its output "
            "layer fc.weight is not pruned (open_lth pruning_layers_to_ignore='fc.weight', the "
            "model's prunable set)",
            "no warm-up: open_lth's default; the LMC paper's 'Warmup' variant of VGG-16 (Table 1) "
            "adds a long linear warm-up; set --warmup ITERATIONS for it",
        ),
    ),
}
"""The presets by name."""

_SCALED = ("milestones", "warmup", "rewind")


def get_preset(name: str) -> Preset:
    """The preset called ``name``.

    Raises:
        ValueError: An unknown name (the message lists the valid ones).

    Example:
        >>> from ltfunc.presets import get_preset
        >>> get_preset("lenet300-mnist").fields["lr"]
        0.0012
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}. Presets: {', '.join(PRESETS)} (see `ltfunc presets`)")
    return PRESETS[name]


def preset_config(name: str, overrides: Mapping[str, Any] | None = None) -> ImpConfig:
    """A preset's :class:`~ltfunc.ImpConfig` with some fields overridden.

    ``overrides`` replace the preset's fields (``overrides`` of the pruning rates are merged
    into the preset's). When ``iterations`` is overridden and ``milestones``, ``warmup`` or
    ``rewind`` are not, those of the preset are scaled by ``new / old iterations`` (rounded;
    milestones and a warm-up stay ``>= 1``; milestones that collide or reach the end are
    dropped), so ``--preset resnet20-cifar10 --iterations 100`` gives milestones at 50 and 75.

    Args:
        name: A preset name.
        overrides: ``{field: value}`` of :class:`~ltfunc.ImpConfig`.

    Returns:
        The config.

    Raises:
        ValueError: An unknown preset (lists them), unknown fields or invalid values.
        TypeError: Values of the wrong type.

    Example:
        >>> from ltfunc.presets import preset_config
        >>> cfg = preset_config("resnet20-cifar10", {"iterations": 100})
        >>> cfg.milestones, cfg.rewind
        ((50, 75), 3)
    """
    preset = get_preset(name)
    given = dict(overrides or {})
    values = {**preset.fields, **given}
    if "overrides" in given and "overrides" in preset.fields:
        values["overrides"] = {**preset.fields["overrides"], **dict(given["overrides"])}
    old, new = preset.fields.get("iterations"), given.get("iterations")
    if isinstance(new, int) and isinstance(old, int) and new != old:
        for key in _SCALED:
            if key in preset.fields and key not in given:
                values[key] = _scale(key, preset.fields[key], old, new)
    return ImpConfig.from_dict(values)


def _scale(key: str, value: Any, old: int, new: int) -> Any:
    if key == "milestones":
        scaled = (max(1, round(m * new / old)) for m in value)
        return tuple(sorted({m for m in scaled if m < new}))
    if key == "warmup":
        return min(new, max(1, round(value * new / old))) if value else 0
    return min(new - 1, round(value * new / old))  # rewind: 0 stays 0


def format_presets(names: list[str] | None = None, *, detail: bool = False) -> str:
    """The text ``ltfunc presets`` prints: each preset's name, title and sources.

    Args:
        names: Presets to show (default: all).
        detail: Also list each preset's fields and notes.

    Returns:
        The text.

    Raises:
        ValueError: An unknown name.

    Example:
        >>> from ltfunc.presets import format_presets
        >>> print(format_presets(["lenet300-mnist"]).splitlines()[0])
        lenet300-mnist: LeNet-300-100 on MNIST (Frankle & Carbin)
    """
    blocks = []
    for name in names if names is not None else list(PRESETS):
        p = get_preset(name)
        lines = [f"{p.name}: {p.title}"]
        if detail:
            lines += [f"    {k} = {v!r}" for k, v in p.fields.items()]
        lines += [f"  source: {s}" for s in p.sources]
        if detail:
            lines += [f"  note: {n}" for n in p.notes]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
