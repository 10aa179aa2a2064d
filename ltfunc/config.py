"""The experiment config: :class:`ImpConfig`, everything that determines an IMP run's results.

It is saved as the run directory's ``config.json`` (:mod:`ltfunc.rundir`); :func:`config_diff`
lists what differs between two saved configs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ._checks import check_bool, check_choice, check_fraction, check_int, check_number
from .data import DATASETS
from .models import INITS, MODELS
from .optim import OPTIMIZERS, Optimizer, build
from .prune import SCOPES, Rates
from .ticket import BASELINES, SCHEDULES

__all__ = ["BOOKKEEPING", "ImpConfig", "config_diff"]

BOOKKEEPING: tuple[str, ...] = ("ltfunc_version", "config_hash", "format_version")
"""Keys of ``config.json`` that are not config fields (ignored by :func:`config_diff`)."""

_FUNC = "ImpConfig"


@dataclass(frozen=True)
class ImpConfig:
    """Everything that determines an IMP experiment's results (saved as ``config.json``).

    Every field has a default; the defaults are Frankle & Carbin's LeNet-300-100 on MNIST
    (Adam 1.2e-3, batch 60, 50k iterations, 20% per round, 5000 validation examples).

    Args:
        model: A name of :data:`ltfunc.models.MODELS` (``"lenet300"``, ``"conv2"``).
        dataset: A name of :data:`ltfunc.data.DATASETS` (``"mnist"``, ``"fashion-mnist"``).
        rounds: Pruning rounds after the dense round 0 (``>= 1``).
        rate: Fraction pruned per round for every prunable layer not covered below.
        conv_rate: Rate of conv kernels (``None``: ``rate``).
        fc_rate: Rate of fully connected weights (``None``: ``rate``).
        output_rate: Rate of the output layer (``None``: ``fc_rate``, else ``rate``);
            Frankle & Carbin prune it at half the fc rate.
        overrides: ``{parameter name: rate}`` for single parameters.
        scope: ``"layer"`` (each layer by its rate) or ``"global"`` (one threshold per group).
        schedule: ``"rate"`` prunes a fraction of the survivors each round; ``"sparsity"``
            prunes to the cumulative target ``1 - (1 - rate) ** k`` of all weights at round k.
        rewind: ``0`` resets survivors to θ0 (Frankle & Carbin); ``k > 0`` rewinds them to the
            dense weights at iteration ``k`` and retrains from iteration ``k`` (Frankle et al.,
            2020). Must be ``< iterations``.
        iterations: Training iterations of every round.
        optimizer: A name of :data:`ltfunc.optim.OPTIMIZERS`.
        lr: Learning rate (constant).
        momentum: Momentum for ``"sgd"`` / ``"momentum"`` (must be 0 for Adam/AdamW; 0 with
            ``"momentum"`` stands for its default 0.9, which is what ``to_dict`` records).
        weight_decay: Weight decay (L2 for SGD/Adam, decoupled for AdamW).
        batch_size: Training batch size.
        eval_every: Evaluate every this many iterations (and always at the last one).
        val_size: Training examples held out for validation / early stopping (``>= 1``).
        seed: Seed of θ0, the data order and the baselines' draws.
        baselines: Any of ``"reinit"``, ``"random_prune"`` (tuple; may be empty).
        init: Init scheme of :data:`ltfunc.models.INITS`.
        device: Where to train (``"cpu"``, ``"cuda"``, ...).
        compile: ``torch.compile`` the training step (compiled once for the whole run) and
            the evaluation's forward pass.

    Raises:
        TypeError: A field of the wrong type.
        ValueError: A field out of range or an unknown name (lists the valid ones).

    Example:
        >>> from ltfunc.config import ImpConfig
        >>> cfg = ImpConfig(rounds=3, iterations=500, output_rate=0.1)
        >>> cfg.rates()
        Rates(default=0.2, conv=None, fc=None, output=0.1, overrides={})
        >>> ImpConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    model: str = "lenet300"
    dataset: str = "mnist"
    rounds: int = 10
    rate: float = 0.2
    conv_rate: float | None = None
    fc_rate: float | None = None
    output_rate: float | None = None
    overrides: Mapping[str, float] = field(default_factory=dict)
    scope: str = "layer"
    schedule: str = "rate"
    rewind: int = 0
    iterations: int = 50_000
    optimizer: str = "adam"
    lr: float = 1.2e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 60
    eval_every: int = 100
    val_size: int = 5000
    seed: int = 0
    baselines: tuple[str, ...] = BASELINES
    init: str = "glorot_normal"
    device: str = "cpu"
    compile: bool = True

    def __post_init__(self) -> None:
        check_choice(_FUNC, "model", self.model, tuple(MODELS))
        check_choice(_FUNC, "dataset", self.dataset, DATASETS)
        check_choice(_FUNC, "optimizer", self.optimizer, tuple(OPTIMIZERS))
        check_choice(_FUNC, "scope", self.scope, SCOPES)
        check_choice(_FUNC, "schedule", self.schedule, SCHEDULES)
        check_choice(_FUNC, "init", self.init, INITS)
        check_int(_FUNC, "rounds", self.rounds, 1)
        check_int(_FUNC, "iterations", self.iterations, 1)
        check_int(_FUNC, "rewind", self.rewind, 0)
        if self.rewind >= self.iterations:
            raise ValueError(
                f"{_FUNC}: rewind={self.rewind} is beyond the training length iterations={self.iterations}; "
                f"rewind must be in [0, {self.iterations - 1}] (0 resets to θ0)"
            )
        check_int(_FUNC, "batch_size", self.batch_size, 1)
        check_int(_FUNC, "eval_every", self.eval_every, 1)
        check_int(
            _FUNC, "val_size (examples held out of the 60000 training images)", self.val_size, 1, 59_999
        )
        check_int(_FUNC, "seed", self.seed, 0)
        check_fraction(_FUNC, "rate", self.rate)
        for name in ("conv_rate", "fc_rate", "output_rate"):
            if getattr(self, name) is not None:
                check_fraction(_FUNC, name, getattr(self, name))
        if not isinstance(self.overrides, Mapping):
            raise TypeError(
                f"{_FUNC}: overrides must be a dict of parameter name -> rate, got {self.overrides!r}"
            )
        for k, v in self.overrides.items():
            if not isinstance(k, str):
                raise TypeError(f"{_FUNC}: overrides keys must be parameter names (str), got {k!r}")
            check_fraction(_FUNC, f"overrides[{k!r}]", v)
        object.__setattr__(
            self, "overrides", MappingProxyType({k: float(v) for k, v in self.overrides.items()})
        )
        check_number(_FUNC, "lr", self.lr, low=0.0, open_low=True)
        check_number(_FUNC, "momentum", self.momentum, low=0.0)
        check_number(_FUNC, "weight_decay", self.weight_decay, low=0.0)
        if self.optimizer == "momentum" and self.momentum == 0:
            object.__setattr__(self, "momentum", 0.9)  # the optimizer's default, recorded explicitly
        if self.momentum and self.optimizer not in ("sgd", "momentum"):
            raise ValueError(
                f"{_FUNC}: momentum={self.momentum!r} only applies to optimizer 'sgd' or 'momentum', "
                f"not {self.optimizer!r}; leave momentum at 0"
            )
        if isinstance(self.baselines, str) or not isinstance(self.baselines, Sequence):
            raise TypeError(f"{_FUNC}: baselines must be a tuple of names, got {self.baselines!r}")
        for b in self.baselines:
            check_choice(_FUNC, "baselines entry", b, BASELINES)
        if len(set(self.baselines)) != len(self.baselines):
            raise ValueError(f"{_FUNC}: baselines has repeated entries: {list(self.baselines)}")
        object.__setattr__(self, "baselines", tuple(self.baselines))
        if not isinstance(self.device, str) or not self.device:
            raise TypeError(
                f"{_FUNC}: device must be a device name such as 'cpu' or 'cuda', got {self.device!r}"
            )
        check_bool(_FUNC, "compile", self.compile)
        for name in ("rate", "conv_rate", "fc_rate", "output_rate", "lr", "momentum", "weight_decay"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, float(v))

    def __hash__(self) -> int:
        return hash(self.config_hash())

    def __reduce__(self) -> tuple[Callable[..., ImpConfig], tuple[dict[str, Any]]]:
        # copy / pickle through to_dict (the read-only overrides mapping does not pickle)
        return (ImpConfig.from_dict, (self.to_dict(),))

    # ----------------------------------------------------------------------------------------
    def rates(self) -> Rates:
        """The per-round pruning fractions as an :class:`ltfunc.Rates`.

        Returns:
            ``Rates(default=rate, conv=conv_rate, fc=fc_rate, output=output_rate, overrides)``.

        Example:
            >>> from ltfunc.config import ImpConfig
            >>> ImpConfig(rate=0.2, output_rate=0.1).rates().resolve("fc3.weight", "output")
            0.1
        """
        return Rates(
            default=self.rate,
            conv=self.conv_rate,
            fc=self.fc_rate,
            output=self.output_rate,
            overrides=dict(self.overrides),
        )

    def make_optimizer(self) -> Optimizer:
        """The :class:`ltfunc.optim.Optimizer` this config trains with.

        Returns:
            ``ltfunc.optim.build(optimizer, lr=..., weight_decay=...)``, with ``momentum=``
            for ``"sgd"`` / ``"momentum"``.

        Example:
            >>> from ltfunc.config import ImpConfig
            >>> ImpConfig(optimizer="sgd", momentum=0.9).make_optimizer().name
            'sgd'
        """
        kwargs: dict[str, Any] = {"lr": self.lr, "weight_decay": self.weight_decay}
        if self.optimizer in ("sgd", "momentum"):
            kwargs["momentum"] = self.momentum
        return build(self.optimizer, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (tuples as lists, overrides as a dict).

        Returns:
            ``{field: value}`` in field order.

        Example:
            >>> from ltfunc.config import ImpConfig
            >>> d = ImpConfig().to_dict(); d["baselines"], d["overrides"]
            (['reinit', 'random_prune'], {})
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, Mapping):
                v = dict(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImpConfig:
        """Build a config from :meth:`to_dict` output (missing fields take their defaults).

        Args:
            data: ``{field: value}``; the bookkeeping keys of ``config.json``
                (``ltfunc_version``, ``config_hash``) are ignored.

        Returns:
            The config.

        Raises:
            TypeError: If ``data`` is not a mapping.
            ValueError: Unknown keys (lists the valid fields) or invalid values.

        Example:
            >>> from ltfunc.config import ImpConfig
            >>> ImpConfig.from_dict({"rounds": 3, "baselines": ["reinit"]}).baselines
            ('reinit',)
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"ImpConfig.from_dict: data must be a dict, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in names and k not in BOOKKEEPING]
        if unknown:
            raise ValueError(
                f"ImpConfig.from_dict: unknown field(s) {unknown}. Supported: {', '.join(names)}"
            )
        kwargs = {k: v for k, v in data.items() if k in names}
        if isinstance(kwargs.get("baselines"), list):
            kwargs["baselines"] = tuple(kwargs["baselines"])
        return cls(**kwargs)

    def config_hash(self) -> str:
        """A 12-hex-digit digest of :meth:`to_dict` (the default run-directory name).

        Returns:
            The first 12 hex digits of the SHA-256 of the canonical JSON of :meth:`to_dict`;
            equal configs give equal hashes on every platform.

        Example:
            >>> from ltfunc.config import ImpConfig
            >>> ImpConfig(seed=1).config_hash() != ImpConfig(seed=2).config_hash()
            True
        """
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Fields whose values differ between two config dicts (bookkeeping keys ignored).

    Args:
        old: A config dict (e.g. a ``config.json``).
        new: Another one.

    Returns:
        ``{field: (old value, new value)}``; a missing key shows as ``None``.

    Raises:
        TypeError: If ``old`` or ``new`` is not a mapping.

    Example:
        >>> from ltfunc.config import ImpConfig, config_diff
        >>> config_diff(ImpConfig().to_dict(), ImpConfig(rate=0.3).to_dict())
        {'rate': (0.2, 0.3)}
    """
    for name, value in (("old", old), ("new", new)):
        if not isinstance(value, Mapping):
            raise TypeError(f"config_diff: {name} must be a config mapping, got {type(value).__name__}")
    keys = [k for k in (*old, *(k for k in new if k not in old)) if k not in BOOKKEEPING]
    return {k: (old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)}
