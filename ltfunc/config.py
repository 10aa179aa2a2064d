"""The experiment config: :class:`ImpConfig`, everything that determines an IMP run's results.

It is saved as the run directory's ``config.json`` (:mod:`ltfunc.rundir`); :func:`config_diff`
lists what differs between two saved configs.

Compatibility: the fields in :data:`LATER_FIELDS` were added after the first run directories
were written. :meth:`ImpConfig.to_dict` leaves each of them out while it has its default
value, so a config that does not use them has the same dict, ``config.json`` and
:meth:`~ImpConfig.config_hash` as before they existed, and :func:`config_diff` reads a
missing one as its default: old run directories resume and compare equal.

``model`` and ``dataset`` are registry names or import paths ``package.module:factory``
(:func:`build_model`, :func:`resolve_factory`); the path is what ``config.json`` records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

from . import schedules as lr_schedules
from ._checks import check_bool, check_choice, check_fraction, check_int, check_number
from .data import DATASETS, TRAIN_SIZE
from .masks import Mask, ones
from .models import INITS, MODELS, resolve_init
from .optim import OPTIMIZERS, Optimizer, build
from .prune import SCOPES, Rates, _check_structured_rounds
from .sparse_step import SPARSE_MODES
from .structured import _parse as _parse_structure
from .ticket import BASELINES, SCHEDULES, round_rates

__all__ = [
    "BOOKKEEPING",
    "LATER_FIELDS",
    "ImpConfig",
    "build_model",
    "call_factory",
    "config_diff",
    "is_import_path",
    "resolve_factory",
]

BOOKKEEPING: tuple[str, ...] = ("ltfunc_version", "config_hash", "format_version")
"""Keys of ``config.json`` that are not config fields (ignored by :func:`config_diff`)."""

LATER_FIELDS: tuple[str, ...] = (
    "lr_schedule",
    "warmup",
    "milestones",
    "gamma",
    "nesterov",
    "augment",
    "model_kwargs",
    "structure",
    "sparse",
)
"""Fields added after run directories of the first format were written: :meth:`ImpConfig.to_dict`
omits each while it is at its default, and :func:`config_diff` reads a missing one as its default."""

_FUNC = "ImpConfig"


@dataclass(frozen=True)
class ImpConfig:
    """Everything that determines an IMP experiment's results (saved as ``config.json``).

    Every field has a default; the defaults are Frankle & Carbin's LeNet-300-100 on MNIST
    (Adam 1.2e-3, batch 60, 50k iterations, 20% per round, 5000 validation examples).

    Args:
        model: A name of :data:`ltfunc.models.MODELS` (``"lenet300"``, ``"conv2"``, ...) or an
            import path ``package.module:factory`` of a callable returning an ``nn.Module``
            (called with ``init=`` / ``seed=`` where it accepts them, and ``model_kwargs``).
        dataset: A name of :data:`ltfunc.data.DATASETS` (``"mnist"``, ``"fashion-mnist"``, ...)
            or an import path ``package.module:factory`` of a callable returning an
            :class:`ltfunc.data.Dataset` (called with those of ``root=``, ``device=``,
            ``val_size=``, ``download=`` it accepts).
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
        lr: Learning rate (the peak of a schedule).
        momentum: Momentum for ``"sgd"`` / ``"momentum"`` (must be 0 for Adam/AdamW; 0 with
            ``"momentum"`` stands for its default 0.9, which is what ``to_dict`` records).
        weight_decay: Weight decay (L2 for SGD/Adam, decoupled for AdamW).
        batch_size: Training batch size.
        eval_every: Evaluate every this many iterations (and always at the last one).
        val_size: Training examples held out for validation / early stopping (``>= 1``).
        seed: Seed of θ0, the data order and the baselines' draws.
        baselines: Any of ``"reinit"``, ``"random_prune"`` (tuple; may be empty).
        init: Init scheme of :data:`ltfunc.models.INITS`; ``"paper"`` (default) is the model
            family's own (Glorot normal for LeNet / Conv-N, open_lth's for VGG and ResNet-20/32/56,
            Kaiming normal for ResNet-18/34) and is recorded as that scheme
            (:func:`ltfunc.models.resolve_init`).
        device: Where to train (``"cpu"``, ``"cuda"``, ...).
        compile: ``torch.compile`` the training step (compiled once for the whole run) and
            the evaluation's forward pass.
        lr_schedule: ``"constant"``, ``"multistep"`` (× ``gamma`` at each of ``milestones``) or
            ``"cosine"`` (to 0 at ``iterations``); see :mod:`ltfunc.schedules`.
        warmup: Iterations of linear lr warm-up from 0 (``0``: none), ``<= iterations``.
        milestones: ``"multistep"``: strictly increasing iterations ``< iterations``.
        gamma: ``"multistep"``: the lr factor per milestone, in ``(0, 1]``.
        nesterov: Nesterov momentum (``"sgd"`` / ``"momentum"`` with momentum > 0).
        augment: Augment the training batches (random crop and flip, on the device) where
            the dataset supports it.
        model_kwargs: Keyword arguments of the model factory (JSON values), e.g.
            ``{"num_classes": 100}``.
        structure: ``None`` (unstructured), ``"N:M"`` or ``"block:RxC"``: every round prunes
            under it and the random-pruning baseline draws masks of it (see
            :func:`ltfunc.prune.magnitude`); recorded in its canonical spelling. Checked
            against the prunable layers of a registry model here (of a factory's model when
            the run starts): it must fit every layer pruned at a rate > 0, and every round
            must be able to prune further (:meth:`check_structure`).
        sparse: Sparse training mode, ``"off"`` (default), ``"auto"`` or ``"on"``: each round's
            step holds the masked Linear weights as values on the round's mask
            (:func:`ltfunc.make_sparse_train_step`; same results to float rounding, one
            compile per round; convolutions run dense-masked).

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
    init: str = "paper"
    device: str = "cpu"
    compile: bool = True
    # LATER_FIELDS: left out of to_dict() while at their defaults (see the module docstring)
    lr_schedule: str = "constant"
    warmup: int = 0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    nesterov: bool = False
    augment: bool = False
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    structure: str | None = None
    sparse: str = "off"

    def __post_init__(self) -> None:
        if is_import_path(self.model):
            resolve_factory(_FUNC, "model", self.model)
        else:
            check_choice(_FUNC, "model", self.model, tuple(MODELS))
        if is_import_path(self.dataset):
            resolve_factory(_FUNC, "dataset", self.dataset)
        else:
            check_choice(_FUNC, "dataset", self.dataset, DATASETS)
        check_choice(_FUNC, "optimizer", self.optimizer, tuple(OPTIMIZERS))
        check_choice(_FUNC, "scope", self.scope, SCOPES)
        check_choice(_FUNC, "schedule", self.schedule, SCHEDULES)
        check_choice(_FUNC, "init", self.init, INITS)
        if self.model in MODELS:  # "paper": the family's own init, recorded as such
            object.__setattr__(self, "init", resolve_init(self.model, self.init))
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
        n_train = TRAIN_SIZE.get(self.dataset)
        if n_train is None:  # a dataset factory: its size is checked when it is loaded
            check_int(_FUNC, "val_size", self.val_size, 1)
        else:
            check_int(
                _FUNC,
                f"val_size (examples held out of the {n_train} training images of {self.dataset})",
                self.val_size,
                1,
                n_train - 1,
            )
        check_int(_FUNC, "seed", self.seed, 0, 2**63 - 1)
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
        self._check_training()
        for name in (
            "rate",
            "conv_rate",
            "fc_rate",
            "output_rate",
            "lr",
            "momentum",
            "weight_decay",
            "gamma",
        ):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, float(v))
        check_choice(_FUNC, "sparse", self.sparse, SPARSE_MODES)
        s = _parse_structure(_FUNC, "structure", self.structure)
        object.__setattr__(self, "structure", None if s is None else str(s))
        if s is not None and self.model in MODELS:
            self.check_structure(self.make_model(), func=_FUNC)

    def _check_training(self) -> None:
        """The LATER_FIELDS: lr schedule, Nesterov, augmentation, model_kwargs."""
        check_choice(_FUNC, "lr_schedule", self.lr_schedule, lr_schedules.SCHEDULES)
        check_int(_FUNC, "warmup", self.warmup, 0)
        if isinstance(self.milestones, (str, bytes)) or not isinstance(self.milestones, Sequence):
            raise TypeError(
                f"{_FUNC}: milestones must be a tuple of iterations such as (32000, 48000), "
                f"got {self.milestones!r}"
            )
        object.__setattr__(self, "milestones", tuple(self.milestones))
        check_number(_FUNC, "gamma", self.gamma, low=0.0, high=1.0, open_low=True)
        if self.lr_schedule == "multistep" and not self.milestones:
            raise ValueError(f"{_FUNC}: lr_schedule='multistep' needs milestones (iterations), got none")
        if self.lr_schedule != "multistep" and (self.milestones or self.gamma != 0.1):
            raise ValueError(
                f"{_FUNC}: milestones={list(self.milestones)} / gamma={self.gamma!r} only apply to "
                f"lr_schedule='multistep', not {self.lr_schedule!r}; leave them at () / 0.1"
            )
        self.make_schedule()  # milestones increasing and < iterations, warm-up <= iterations
        check_bool(_FUNC, "nesterov", self.nesterov)
        if self.nesterov and (self.optimizer not in ("sgd", "momentum") or not self.momentum):
            raise ValueError(
                f"{_FUNC}: nesterov=True needs optimizer 'sgd' or 'momentum' with momentum > 0, "
                f"got optimizer={self.optimizer!r}, momentum={self.momentum!r}"
            )
        check_bool(_FUNC, "augment", self.augment)
        kwargs = self.model_kwargs
        if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
            raise TypeError(f"{_FUNC}: model_kwargs must be a dict of str -> value, got {kwargs!r}")
        reserved = [k for k in ("init", "seed") if k in kwargs]
        if reserved:
            raise ValueError(f"{_FUNC}: model_kwargs must not hold {reserved}; use the fields init= / seed=")
        try:  # JSON values only (config.json); tuples become lists, as they come back from the file
            plain = json.loads(json.dumps(dict(kwargs), allow_nan=False))
        except (TypeError, ValueError) as e:
            raise TypeError(f"{_FUNC}: model_kwargs must hold JSON values only, got {kwargs!r} ({e})") from e
        object.__setattr__(self, "model_kwargs", MappingProxyType(plain))

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

    def check_structure(self, model: nn.Module | Mask, *, func: str = "ImpConfig.check_structure") -> None:
        """Refuse a ``structure`` that does not fit ``model`` or a round that could not prune further.

        Args:
            model: The model (its prunable weights are checked) or its starting mask.
            func: The caller's name, for messages.

        Raises:
            ValueError: The structure does not divide a layer pruned at a rate > 0 or cannot
                apply to it (names the layer, its shape and the structure), or a round up to
                ``rounds`` could not prune any layer further (says which ``rounds`` work).

        Example:
            >>> from ltfunc.config import ImpConfig
            >>> ImpConfig(rounds=4, structure=" 2:4 ").structure
            '2:4'
            >>> ImpConfig(rounds=5, structure="2:4")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ValueError: ImpConfig: with structure '2:4', round 5 cannot prune ...; use rounds <= 4 ...
        """
        if self.structure is None:
            return
        mask = model if isinstance(model, Mask) else ones(model)
        plans = [round_rates(self.rates(), k, self.schedule) for k in range(1, self.rounds + 1)]
        _check_structured_rounds(func, self.structure, mask, plans, self.scope)

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
            if self.nesterov:
                kwargs["nesterov"] = True
        return build(self.optimizer, **kwargs)

    def make_schedule(self) -> float | lr_schedules.Schedule:
        """The learning rate of every iteration: ``lr`` itself when constant, else a schedule.

        Returns:
            ``lr`` (a float) for ``lr_schedule="constant"`` without warm-up, else the
            :mod:`ltfunc.schedules` schedule (``schedules.build(lr_schedule, lr,
            total=iterations, warmup=..., milestones=..., gamma=...)``).

        Raises:
            ValueError: Milestones or a warm-up that do not fit ``iterations``.

        Example:
            >>> from ltfunc.config import ImpConfig
            >>> cfg = ImpConfig(optimizer="sgd", lr=0.1, iterations=1000, lr_schedule="multistep",
            ...                 milestones=(500, 750), warmup=100)
            >>> s = cfg.make_schedule(); round(s(50), 4), round(s(600), 4), round(s(800), 4)
            (0.05, 0.01, 0.001)
            >>> ImpConfig().make_schedule()
            0.0012
        """
        if self.lr_schedule == "constant" and not self.warmup:
            return self.lr
        try:
            return lr_schedules.build(
                self.lr_schedule,
                self.lr,
                total=self.iterations,
                warmup=self.warmup,
                milestones=self.milestones,
                gamma=self.gamma,
            )
        except ValueError as e:
            raise ValueError(f"{_FUNC}: {e}") from None

    def make_model(self) -> nn.Module:
        """A fresh model: :func:`build_model` of ``model`` with ``init``, ``seed`` and ``model_kwargs``.

        Returns:
            The module (on the CPU).

        Raises:
            TypeError: The factory rejects ``model_kwargs`` or does not return an ``nn.Module``.

        Example:
            >>> from ltfunc.config import ImpConfig
            >>> type(ImpConfig(model="conv2").make_model()).__name__
            'Conv2'
        """
        return build_model(self.model, init=self.init, seed=self.seed, model_kwargs=self.model_kwargs)

    def to_dict(self, *, defaults: bool = False) -> dict[str, Any]:
        """A JSON-ready dict of the fields (tuples as lists, mappings as dicts).

        Args:
            defaults: Also list the :data:`LATER_FIELDS` that are at their defaults (left out
                by default, so configs that do not use them keep their dict and hash).

        Returns:
            ``{field: value}`` in field order.

        Example:
            >>> from ltfunc.config import ImpConfig
            >>> d = ImpConfig().to_dict(); d["baselines"], d["overrides"], "warmup" in d
            (['reinit', 'random_prune'], {}, False)
            >>> ImpConfig(warmup=100).to_dict()["warmup"]
            100
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not defaults and f.name in LATER_FIELDS and v == _default(f.name):
                continue
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
        for key in ("baselines", "milestones"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
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
        ``{field: (old value, new value)}``; a missing key shows as ``None``, except a missing
        :data:`LATER_FIELDS` key, which stands for its default (a ``config.json`` written
        before the field existed).

    Raises:
        TypeError: If ``old`` or ``new`` is not a mapping.

    Example:
        >>> from ltfunc.config import ImpConfig, config_diff
        >>> config_diff(ImpConfig().to_dict(), ImpConfig(rate=0.3).to_dict())
        {'rate': (0.2, 0.3)}
        >>> config_diff(ImpConfig().to_dict(), ImpConfig().to_dict(defaults=True))
        {}
    """
    for name, value in (("old", old), ("new", new)):
        if not isinstance(value, Mapping):
            raise TypeError(f"config_diff: {name} must be a config mapping, got {type(value).__name__}")
    keys = [k for k in (*old, *(k for k in new if k not in old)) if k not in BOOKKEEPING]

    def get(d: Mapping[str, Any], k: str) -> Any:
        if k in d:
            return d[k]
        return _json_default(k) if k in LATER_FIELDS else None

    return {k: (get(old, k), get(new, k)) for k in keys if get(old, k) != get(new, k)}


def _default(name: str) -> Any:
    f: Any = ImpConfig.__dataclass_fields__[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _json_default(name: str) -> Any:
    """A LATER_FIELDS default as ``to_dict`` writes values (tuples as lists)."""
    v = _default(name)
    return list(v) if isinstance(v, tuple) else v


# --------------------------------------------------------------------------------------------
# factories given as import paths


def is_import_path(name: Any) -> bool:
    """Whether ``name`` is an import path ``package.module:attribute`` (not a registry name).

    Example:
        >>> from ltfunc.config import is_import_path
        >>> is_import_path("torchvision.models:resnet18"), is_import_path("lenet300")
        (True, False)
    """
    return isinstance(name, str) and ":" in name


def resolve_factory(func: str, argument: str, path: str) -> Callable[..., Any]:
    """The callable an import path ``package.module:attribute`` names (imports the module).

    Args:
        func: The caller's name, for messages.
        argument: The argument that holds the path (``"model"``, ``"dataset"``), for messages.
        path: ``package.module:name`` (``name`` may be dotted: ``module:Class.create``).

    Returns:
        The callable.

    Raises:
        ValueError: Not of the form ``module:name``, the module does not import, or it has no
            such attribute.
        TypeError: The object is not callable.

    Example:
        >>> from ltfunc.config import resolve_factory
        >>> resolve_factory("demo", "model", "ltfunc.models:conv2").__name__
        'conv2'
    """
    module_name, _, attr = path.partition(":")
    if not module_name or not attr or ":" in attr:
        raise ValueError(f"{func}: {argument}={path!r} must be an import path 'package.module:factory'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(
            f"{func}: {argument}={path!r}: cannot import module {module_name!r} ({e}); "
            "is its package installed or on PYTHONPATH?"
        ) from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{func}: {argument}={path!r}: module {module_name!r} has no {attr!r}") from None
    if not callable(obj):
        raise TypeError(
            f"{func}: {argument}={path!r} must name a callable factory, got a {type(obj).__name__}"
        )
    return obj


def call_factory(
    func: str, factory: Callable[..., Any], offered: Mapping[str, Any], kwargs: Mapping[str, Any]
) -> Any:
    """``factory(**kwargs, **offered)`` passing only the ``offered`` arguments it accepts.

    Raises:
        TypeError: ``kwargs`` that the factory does not accept (named in the message).
    """
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no signature (a builtin): pass kwargs only
        return factory(**kwargs)
    open_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = {k: v for k, v in offered.items() if open_kw or k in params}
    call = {**accepted, **kwargs}
    try:
        inspect.signature(factory).bind(**call)
    except TypeError as e:
        name = getattr(factory, "__qualname__", repr(factory))
        raise TypeError(f"{func}: {name} cannot be called with {sorted(call)} ({e})") from None
    return factory(**call)


def build_model(
    model: str,
    *,
    init: str = "glorot_normal",
    seed: int | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build a model from a registry name or an import path ``package.module:factory``.

    The factory is called with ``init=`` and ``seed=`` where it accepts them (or ``**kwargs``)
    and with every entry of ``model_kwargs``.

    Args:
        model: A name of :data:`ltfunc.models.MODELS` or an import path.
        init: Init scheme, passed as ``init=``.
        seed: Seed of the weights, passed as ``seed=``.
        model_kwargs: Further keyword arguments of the factory.

    Returns:
        The module.

    Raises:
        ValueError: An unknown name or a path that does not import.
        TypeError: The factory rejects the arguments, is not callable or does not return
            an ``nn.Module``.

    Example:
        >>> from ltfunc.config import build_model
        >>> type(build_model("ltfunc.models:lenet300", seed=0)).__name__
        'LeNet300'
    """
    func = "build_model"
    if is_import_path(model):
        factory = resolve_factory(func, "model", model)
    else:
        factory = MODELS[check_choice(func, "model", model, tuple(MODELS))]
    # "paper" means the factory's own default init: a factory of an import path is not told
    given = {"seed": seed} if init == "paper" and is_import_path(model) else {"init": init, "seed": seed}
    out = call_factory(func, factory, given, dict(model_kwargs or {}))
    if not isinstance(out, nn.Module):
        raise TypeError(f"{func}: model={model!r} must return a torch.nn.Module, got {type(out).__name__}")
    return out
