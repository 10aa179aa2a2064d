"""Resumable IMP experiments: a config, a run directory of atomic checkpoints, and ``run_imp``.

A run directory (layout in ``docs/design.md``)::

    RUN_DIR/config.json              ImpConfig.to_dict() + {"ltfunc_version", "config_hash"}
    RUN_DIR/init.safetensors         θ0
    RUN_DIR/<condition>/round_<k>/   condition: ticket (k = 0 .. rounds), reinit, random_prune (k >= 1)
        mask.safetensors  rewind.safetensors  final.safetensors  metrics.jsonl  summary.json
    RUN_DIR/ticket/round_0/rewind_point.safetensors   the dense weights at iteration ``rewind``
                                                      (only when ``rewind > 0``)
    RUN_DIR/summary.csv
    RUN_DIR/.lock                    while a process writes the run: {"pid", "host", "since"}

Every file is written atomically (temp file + ``os.replace``); ``summary.json`` is written last,
so a round without it is unfinished and is redone from its start on resume. ``metrics.jsonl``
grows one line per evaluation while a round runs (a line cut short by a kill belongs to an
unfinished round and is discarded when that round is redone) and is rewritten whole before
``summary.json``. The mask of round ``k + 1`` is a pure function of round ``k``'s mask and final
weights, so a resumed run reproduces an uninterrupted one exactly.

The baselines start at round 1: their round 0 would be the dense ticket round 0 itself.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import torch

from . import masks as _masks
from ._errors import check_choice, check_fraction
from ._types import Params
from .data import DATASETS, Dataset, load_dataset
from .masks import Mask
from .models import INITS, MODELS, build
from .optim import OPTIMIZERS, Optimizer
from .params import atomic_write_bytes, get_params, load_tree, save_tree
from .prune import Rates
from .step import make_train_step
from .ticket import (
    BASELINES,
    SCHEDULES,
    RoundResult,
    Trainer,
    baseline_round,
    dense_round,
    imp_round,
    make_evaluator,
    make_trainer,
)

__all__ = [
    "METRIC_FIELDS",
    "SUMMARY_FIELDS",
    "ImpConfig",
    "RunResult",
    "config_diff",
    "default_run_name",
    "load_round",
    "make_config_trainer",
    "make_optimizer",
    "read_config",
    "round_dir",
    "run_imp",
    "summarize_round",
    "write_config",
]

SCOPES: tuple[str, ...] = ("layer", "global")
"""Values of ``ImpConfig.scope``."""

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
"""Keys of ``summary.json``, in order (``summary.csv`` has ``condition`` in front)."""

_BOOKKEEPING = ("ltfunc_version", "config_hash")
_OWNED = ("config.json", "init.safetensors", "summary.csv", "plot.png", "ticket", *BASELINES)
_FUNC = "ImpConfig"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_int(name: str, value: Any, low: int, high: int | None = None, what: str = "") -> None:
    if not _is_int(value):
        raise TypeError(f"{_FUNC}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{_FUNC}: {name} must be {allowed}{what}, got {value!r}")


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
        >>> from ltfunc.experiment import ImpConfig
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
        _check_int("rounds", self.rounds, 1)
        _check_int("iterations", self.iterations, 1)
        _check_int("rewind", self.rewind, 0)
        if self.rewind >= self.iterations:
            raise ValueError(
                f"{_FUNC}: rewind={self.rewind} is beyond the training length iterations={self.iterations}; "
                f"rewind must be in [0, {self.iterations - 1}] (0 resets to θ0)"
            )
        _check_int("batch_size", self.batch_size, 1)
        _check_int("eval_every", self.eval_every, 1)
        _check_int("val_size", self.val_size, 1, 59_999, " (examples held out of the 60000 training images)")
        _check_int("seed", self.seed, 0)
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
        for name in ("lr", "momentum", "weight_decay"):
            v = getattr(self, name)
            if not _is_real(v):
                raise TypeError(f"{_FUNC}: {name} must be a float, got {type(v).__name__} {v!r}")
            if not math.isfinite(v) or v < 0 or (name == "lr" and v == 0):
                raise ValueError(
                    f"{_FUNC}: {name} must be a finite number {'> 0' if name == 'lr' else '>= 0'}, got {v!r}"
                )
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
        if not isinstance(self.compile, bool):
            raise TypeError(f"{_FUNC}: compile must be a bool, got {self.compile!r}")
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
            >>> from ltfunc.experiment import ImpConfig
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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (tuples as lists, overrides as a dict).

        Returns:
            ``{field: value}`` in field order.

        Example:
            >>> from ltfunc.experiment import ImpConfig
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
            >>> from ltfunc.experiment import ImpConfig
            >>> ImpConfig.from_dict({"rounds": 3, "baselines": ["reinit"]}).baselines
            ('reinit',)
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"ImpConfig.from_dict: data must be a dict, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in names and k not in _BOOKKEEPING]
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
            >>> from ltfunc.experiment import ImpConfig
            >>> ImpConfig(seed=1).config_hash() != ImpConfig(seed=2).config_hash()
            True
        """
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# run-directory layout and files


def round_dir(run_dir: str | os.PathLike[str], condition: str, k: int) -> Path:
    """The folder of round ``k`` of ``condition`` (``ticket``, ``reinit``, ``random_prune``).

    Args:
        run_dir: A run directory.
        condition: ``"ticket"`` or a baseline name.
        k: Round index (0 is the dense round of the ticket).

    Returns:
        ``run_dir/condition/round_k``.

    Raises:
        ValueError: Unknown condition or a negative round.

    Example:
        >>> from ltfunc.experiment import round_dir
        >>> round_dir("runs/x", "ticket", 2).as_posix()
        'runs/x/ticket/round_2'
    """
    check_choice("round_dir", "condition", condition, ("ticket", *BASELINES))
    if not _is_int(k) or k < 0:
        raise ValueError(f"round_dir: k must be an int >= 0, got {k!r}")
    return Path(run_dir) / condition / f"round_{k}"


def default_run_name(config: ImpConfig) -> str:
    """The run-directory name used when none is given: the config hash.

    Args:
        config: The experiment config.

    Returns:
        ``config.config_hash()``.

    Raises:
        TypeError: ``config`` is not an :class:`ImpConfig`.

    Example:
        >>> from ltfunc.experiment import ImpConfig, default_run_name
        >>> len(default_run_name(ImpConfig()))
        12
    """
    if not isinstance(config, ImpConfig):
        raise TypeError(f"default_run_name: config must be an ImpConfig, got {type(config).__name__}")
    return config.config_hash()


def _write_text(path: Path, text: str) -> None:
    data = text.encode("utf-8")
    atomic_write_bytes(path, lambda tmp: Path(tmp).write_bytes(data))


def _write_json(path: Path, obj: Any) -> None:
    _write_text(path, json.dumps(obj, indent=2) + "\n")


def _read_json(func: str, path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(
            f"{func}: {path} is corrupt or unreadable ({e}). Delete it (and, if it belongs to a "
            "round, that round's folder) to redo it, or start over with force=True / --force"
        ) from e


def _load_checkpoint(func: str, path: Path, device: str, *, is_mask: bool = False) -> Any:
    """Load a safetensors checkpoint, turning any failure into an error that names the file."""
    try:
        return _masks.load(path, device=device) if is_mask else load_tree(path, device=device)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"{func}: checkpoint {path} is missing, corrupt or truncated ({e}). The finished rounds "
            f"before it are intact; delete {path.parent} and the rounds after it to redo them, or "
            "start over with force=True / --force"
        ) from e


def read_config(run_dir: str | os.PathLike[str]) -> ImpConfig:
    """The :class:`ImpConfig` stored in ``run_dir/config.json``.

    Args:
        run_dir: A run directory.

    Returns:
        The config.

    Raises:
        FileNotFoundError: No ``config.json``.
        ValueError: The file is corrupt or holds an invalid config (names the file).

    Example:
        >>> import tempfile
        >>> from ltfunc.experiment import ImpConfig, read_config, write_config
        >>> d = tempfile.mkdtemp(); _ = write_config(d, ImpConfig(rounds=2))
        >>> read_config(d).rounds
        2
    """
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"read_config: {path} does not exist; is {run_dir} a run directory?")
    data = _read_json("read_config", path)
    try:
        return ImpConfig.from_dict(data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"read_config: {path} does not hold a valid ImpConfig ({e})") from e


def write_config(run_dir: str | os.PathLike[str], config: ImpConfig) -> Path:
    """Write ``run_dir/config.json``: the config's fields plus ``ltfunc_version`` and ``config_hash``.

    Args:
        run_dir: The run directory (created if needed).
        config: The config.

    Returns:
        The path of ``config.json`` (written atomically).

    Raises:
        TypeError: ``config`` is not an :class:`ImpConfig`.

    Example:
        >>> import json, tempfile
        >>> from ltfunc.experiment import ImpConfig, write_config
        >>> path = write_config(tempfile.mkdtemp(), ImpConfig(rounds=2))
        >>> data = json.loads(path.read_text()); data["rounds"], len(data["config_hash"])
        (2, 12)
    """
    from . import __version__

    if not isinstance(config, ImpConfig):
        raise TypeError(f"write_config: config must be an ImpConfig, got {type(config).__name__}")

    data = {**config.to_dict(), "ltfunc_version": __version__, "config_hash": config.config_hash()}
    path = Path(run_dir) / "config.json"
    _write_json(path, data)
    return path


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
        >>> from ltfunc.experiment import ImpConfig, config_diff
        >>> config_diff(ImpConfig().to_dict(), ImpConfig(rate=0.3).to_dict())
        {'rate': (0.2, 0.3)}
    """
    for name, value in (("old", old), ("new", new)):
        if not isinstance(value, Mapping):
            raise TypeError(f"config_diff: {name} must be a config mapping, got {type(value).__name__}")
    keys = [k for k in (*old, *(k for k in new if k not in old)) if k not in _BOOKKEEPING]
    return {k: (old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)}


def _probe_writable(func: str, run_dir: Path) -> None:
    """Raise a clear error unless ``run_dir`` is (or can become) a writable directory."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"{func}: run directory {run_dir} is a file, not a directory; choose another path")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"{func}: run directory {run_dir} is not writable ({e}); choose another path") from e


def _clear_run(run_dir: Path) -> None:
    """Remove everything ltfunc writes into a run directory (nothing else)."""
    for name in _OWNED:
        p = run_dir / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for p in run_dir.glob(".*.tmp-*"):
        p.unlink()


LOCK_FILE = ".lock"
"""Held in a run directory while a process writes into it: ``{"pid", "host", "since"}``."""


def _lock_holder(path: Path) -> dict[str, Any] | None:
    """The lock's owner, or ``None`` when the lock is stale (its process is gone) or missing."""
    try:
        raw = path.read_text(encoding="utf-8")
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(raw)
        pid, host = int(holder["pid"]), str(holder["host"])
    except (ValueError, KeyError, TypeError):
        # being written right now by its owner, or garbage left by a crash
        return {"pid": "?", "host": "?", "since": "?"} if age < 10 else None
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, owned by another user
    return holder


@contextmanager
def _run_lock(func: str, run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` for the block; refuse (``ValueError``) while another process holds it.

    A lock whose process is gone (same host, dead pid) is taken over. Two processes writing
    into one run directory would interleave rounds and summaries.
    """
    path = run_dir / LOCK_FILE
    mine = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _lock_holder(path)
            if holder is None:
                path.unlink(missing_ok=True)
                continue
            raise ValueError(
                f"{func}: {run_dir} is in use by process {holder.get('pid')} on {holder.get('host')!r} "
                f"(since {holder.get('since')}); wait for it to finish, or delete {path} if that "
                "process is gone"
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(mine, fh)
        break
    else:
        raise ValueError(f"{func}: could not take the lock {path}; another process keeps recreating it")
    try:
        yield
    finally:
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("pid") == mine["pid"]:
                path.unlink()
        except (OSError, ValueError):
            pass


def _check_run_dir(func: str, run_dir: Path, config: ImpConfig, *, resume: bool, force: bool) -> str:
    """Check ``run_dir`` for ``config`` (changing nothing): ``"resume"``, ``"fresh"`` or ``"clear"``."""
    _probe_writable(func, run_dir)
    cfg_path = run_dir / "config.json"
    has_config = cfg_path.is_file()
    ours = [n for n in _OWNED if (run_dir / n).exists()]
    if force:
        return "clear"
    if not has_config:
        if ours:
            raise ValueError(
                f"{func}: {run_dir} holds {ours} but no config.json, so it cannot be resumed; "
                "start over with force=True / --force or choose another directory"
            )
        return "fresh"
    old = _read_json(func, cfg_path)
    if not isinstance(old, dict):
        raise ValueError(
            f"{func}: {cfg_path} does not hold a JSON object; start over with force=True / --force"
        )
    diff = config_diff(old, config.to_dict())
    if diff:
        lines = "; ".join(f"{k}: {a!r} in the directory, {b!r} now" for k, (a, b) in diff.items())
        raise ValueError(
            f"{func}: {run_dir} holds a run with a different config ({lines}). Refusing to mix them: "
            "use another directory (--name), or pass force=True / --force to delete that run and start over"
        )
    if not resume:
        raise ValueError(
            f"{func}: {run_dir} already holds this run; pass resume=True to continue it or "
            "force=True / --force to start over"
        )
    return "resume"


# --------------------------------------------------------------------------------------------
# metrics and summaries


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
        >>> from ltfunc.experiment import summarize_round
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


def _read_metrics(func: str, path: Path) -> list[dict[str, Any]]:
    """Records of a finished round's metrics.jsonl (every line must parse)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{func}: {path} is corrupt or unreadable ({e})") from e


class _MetricsLog:
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
        _write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def _write_summary_csv(run_dir: Path) -> None:
    rows = []
    for condition in ("ticket", *BASELINES):
        cdir = run_dir / condition
        if not cdir.is_dir():
            continue
        found = []
        for rd in cdir.glob("round_*"):
            suffix = rd.name[len("round_") :]
            if suffix.isdigit() and (rd / "summary.json").is_file():
                found.append((int(suffix), rd / "summary.json"))
        for _, path in sorted(found):
            summary = _read_json("run_imp", path)
            rows.append({"condition": condition, **{k: summary.get(k) for k in SUMMARY_FIELDS}})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["condition", *SUMMARY_FIELDS], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    _write_text(run_dir / "summary.csv", buf.getvalue())


# --------------------------------------------------------------------------------------------
# running


class RunResult(NamedTuple):
    """What :func:`run_imp` returns."""

    run_dir: Path
    """The run directory."""
    config: ImpConfig
    """The config of the run."""
    rows: tuple[dict[str, Any], ...]
    """The rows of ``summary.csv``: ``condition`` + :data:`SUMMARY_FIELDS`, ticket rounds first."""
    trained: tuple[tuple[str, int], ...]
    """``(condition, round)`` pairs this call trained."""
    resumed: tuple[tuple[str, int], ...]
    """``(condition, round)`` pairs that were already finished and were skipped."""


def make_optimizer(config: ImpConfig) -> Optimizer:
    """The :class:`ltfunc.optim.Optimizer` a config asks for.

    Args:
        config: The experiment config (``optimizer``, ``lr``, ``momentum``, ``weight_decay``).

    Returns:
        ``OPTIMIZERS[config.optimizer](lr=..., weight_decay=...)``, with ``momentum=`` for
        ``"sgd"`` / ``"momentum"``.

    Raises:
        TypeError: ``config`` is not an :class:`ImpConfig`.

    Example:
        >>> from ltfunc.experiment import ImpConfig, make_optimizer
        >>> callable(make_optimizer(ImpConfig(optimizer="sgd", momentum=0.9)).update)
        True
    """
    if not isinstance(config, ImpConfig):
        raise TypeError(f"make_optimizer: config must be an ImpConfig, got {type(config).__name__}")
    kwargs: dict[str, Any] = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.optimizer in ("sgd", "momentum"):
        kwargs["momentum"] = config.momentum
    return OPTIMIZERS[config.optimizer](**kwargs)


def make_config_trainer(
    config: ImpConfig,
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    splits: Sequence[str] = ("val", "test"),
    eval_every: int | None = None,
) -> Trainer:
    """The :class:`ltfunc.ticket.Trainer` a config describes, as :func:`run_imp` builds it.

    Its optimizer (:func:`make_optimizer`), the masked training step (compiled when
    ``config.compile``), the data order of ``config.seed`` and an evaluator on ``splits``.

    Args:
        config: The experiment config.
        model: The module (``build(config.model, ...)``), on ``config.device``.
        dataset: The loaded dataset (:func:`ltfunc.load_dataset`), on ``config.device``.
        splits: Names of the dataset's splits to evaluate on (``"val"``, ``"test"``).
        eval_every: Evaluation interval (``None``: ``config.eval_every``).

    Returns:
        The trainer, for :func:`ltfunc.ticket.train_round` and the round functions.

    Raises:
        TypeError: ``config`` is not an :class:`ImpConfig`.
        ValueError: A split name other than ``"train"``, ``"val"``, ``"test"``.

    Example:
        >>> import torch, ltfunc
        >>> from ltfunc.experiment import ImpConfig, make_config_trainer
        >>> x, y = torch.randn(40, 1, 28, 28), torch.randint(0, 10, (40,))
        >>> ds = ltfunc.data.Dataset("mnist", (x, y), None, (x, y))
        >>> cfg = ImpConfig(iterations=4, batch_size=8, eval_every=2, compile=False)
        >>> t = make_config_trainer(cfg, ltfunc.models.lenet300(seed=0), ds, splits=("test",))
        >>> (t.iterations, t.batch_size, t.eval_every)
        (4, 8, 2)
    """
    func = "make_config_trainer"
    if not isinstance(config, ImpConfig):
        raise TypeError(f"{func}: config must be an ImpConfig, got {type(config).__name__}")
    for name in splits:
        check_choice(func, "splits", name, ("train", "val", "test"))
    optimizer = make_optimizer(config)
    return make_trainer(
        make_train_step(model, optimizer, compile=config.compile),
        optimizer,
        dataset.train,
        iterations=config.iterations,
        batch_size=config.batch_size,
        lr=config.lr,
        data_seed=config.seed,
        eval_every=config.eval_every if eval_every is None else eval_every,
        evaluate=make_evaluator(model, {n: getattr(dataset, n) for n in splits}, compile=config.compile),
    )


def load_round(
    run_dir: str | os.PathLike[str], condition: str, k: int, *, device: str | torch.device = "cpu"
) -> Any:
    """Read a finished round back as a :class:`ltfunc.ticket.RoundResult`.

    Args:
        run_dir: A run directory.
        condition: ``"ticket"``, ``"reinit"`` or ``"random_prune"``.
        k: Round index.
        device: Where to put the tensors.

    Returns:
        ``RoundResult(condition, k, mask, start, final, history, rewind_point)``;
        ``rewind_point`` is set for ticket round 0 (θ0, or θk when the run rewinds).

    Raises:
        FileNotFoundError: The round is not finished (no ``summary.json``).
        ValueError: A corrupt or truncated file (named in the message).

    Example:
        >>> from ltfunc.experiment import load_round
        >>> load_round("no/such/run", "ticket", 0)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        FileNotFoundError: load_round: no/such/run/ticket/round_0 is not a finished round
    """
    func = "load_round"
    rd = round_dir(run_dir, condition, k)
    if not (rd / "summary.json").is_file():
        raise FileNotFoundError(f"{func}: {rd} is not a finished round (no summary.json)")
    dev = str(device)
    point = None
    if condition == "ticket" and k == 0:
        rp = rd / "rewind_point.safetensors"
        point = _load_checkpoint(func, rp if rp.is_file() else Path(run_dir) / "init.safetensors", dev)
    return RoundResult(
        condition,
        k,
        _load_checkpoint(func, rd / "mask.safetensors", dev, is_mask=True),
        _load_checkpoint(func, rd / "rewind.safetensors", dev),
        _load_checkpoint(func, rd / "final.safetensors", dev),
        tuple(_read_metrics(func, rd / "metrics.jsonl")),
        point,
    )


class _Progress:
    """Optional tqdm bars: one over all rounds, one per round over iterations."""

    def __init__(self, enabled: bool, total_rounds: int) -> None:
        self.enabled = enabled
        self.outer = None
        if enabled:
            from tqdm.auto import tqdm

            self._tqdm = tqdm
            self.outer = tqdm(total=total_rounds, desc="rounds", unit="round", dynamic_ncols=True)

    @contextmanager
    def round(self, label: str, iterations: int) -> Iterator[Any]:
        if not self.enabled:
            yield None
            return
        if self.outer is not None:
            self.outer.set_description(label)
        bar = self._tqdm(total=iterations, desc=label, unit="it", leave=False, dynamic_ncols=True)
        try:
            yield bar
        finally:
            bar.close()

    def advance(self, summary: Mapping[str, Any] | None = None) -> None:
        if self.outer is None:
            return
        if summary is not None and summary.get("test_accuracy_at_early_stop") is not None:
            self.outer.set_postfix(
                weights=f"{summary['weights_remaining_pct']:.1f}%",
                es_acc=f"{summary['test_accuracy_at_early_stop']:.4f}",
                refresh=False,
            )
        self.outer.update(1)

    def close(self) -> None:
        if self.outer is not None:
            self.outer.set_description("rounds", refresh=False)
            self.outer.close()


def _check_overrides(func: str, config: ImpConfig, mask: Mask) -> None:
    unknown = [k for k in config.overrides if k not in mask]
    if unknown:
        raise ValueError(
            f"{func}: overrides name {unknown}, which are not prunable parameters of {config.model}; "
            f"prunable: {list(mask)}"
        )


def run_imp(
    config: ImpConfig,
    run_dir: str | os.PathLike[str],
    *,
    data_root: str | os.PathLike[str] | None = None,
    resume: bool = True,
    force: bool = False,
    progress: bool = True,
    download: bool | None = None,
) -> RunResult:
    """Run (or resume) an IMP experiment with its baselines into ``run_dir``.

    Trains the dense ticket round 0, then for ``k = 1 .. rounds``: the ticket round ``k``
    (prune round ``k - 1``'s trained weights, reset/rewind, retrain) and each baseline of it.
    The training step is created (and compiled) once for the whole run. Each finished round
    is saved as in the module docstring; rounds already finished in ``run_dir`` are skipped,
    an unfinished one is redone from its start.

    Args:
        config: The experiment.
        run_dir: The run directory (created if needed).
        data_root: Folder holding ``mnist/`` and ``fashion-mnist/``; default
            ``$LTFUNC_DATA_ROOT``, else ``~/.cache/ltfunc/data``.
        resume: Continue a run of the same config found in ``run_dir`` (else refuse to touch it).
        force: Delete a run found in ``run_dir`` (whatever its config) and start over.
        progress: Show tqdm progress bars.
        download: Passed to :func:`ltfunc.data.load_dataset` (``None``: download if missing).

    Returns:
        :class:`RunResult`.

    Raises:
        TypeError: ``config`` is not an :class:`ImpConfig`.
        ValueError: ``run_dir`` is a file or not writable; it holds a run with another config
            (the message lists the differing fields) or, with ``resume=False``, any run; a
            checkpoint needed to resume is corrupt (the message names it); an override names
            no prunable parameter; another live process is writing ``run_dir`` (it holds
            ``run_dir/.lock``; a lock left by a dead process is taken over). All raised
            before any training.
        FileNotFoundError: The dataset is missing (the message says where it looked).
        FloatingPointError: Training diverged (NaN/inf loss).

    Example:
        >>> from ltfunc.experiment import ImpConfig, run_imp
        >>> result = run_imp(ImpConfig(rounds=2, iterations=300), "runs/quick")  # doctest: +SKIP
        >>> [(r["condition"], r["round"]) for r in result.rows][:3]  # doctest: +SKIP
        [('ticket', 0), ('ticket', 1), ('reinit', 1)]
    """
    func = "run_imp"
    if not isinstance(config, ImpConfig):
        raise TypeError(f"{func}: config must be an ImpConfig, got {type(config).__name__}")
    if not isinstance(run_dir, (str, os.PathLike)):
        raise TypeError(f"{func}: run_dir must be a path, got {type(run_dir).__name__} {run_dir!r}")
    for name, flag in (("resume", resume), ("force", force), ("progress", progress)):
        if not isinstance(flag, bool):
            raise TypeError(f"{func}: {name} must be a bool, got {flag!r}")
    run = Path(run_dir)
    mode = _check_run_dir(func, run, config, resume=resume, force=force)
    with _run_lock(func, run):
        resuming = mode == "resume"

        dataset = load_dataset(
            config.dataset,
            data_root,
            device=config.device,
            val_size=config.val_size,
            split_seed=0,
            download=download,
        )
        model = build(config.model, init=config.init, seed=config.seed).to(config.device)
        init_path = run / "init.safetensors"
        if resuming and init_path.is_file():
            theta0 = _load_checkpoint(func, init_path, config.device)
        else:
            theta0 = get_params(model)
        dense = _masks.ones(theta0)
        _check_overrides(func, config, dense)
        # everything is checked: only now touch the directory
        if mode == "clear":
            _clear_run(run)
        for stale in run.glob(".*.tmp-*"):  # temp files of a write that was killed
            stale.unlink()
        if not resuming:
            write_config(run, config)
        if not init_path.is_file():
            save_tree(theta0, init_path)

        trainer = make_config_trainer(config, model, dataset)
        rates = config.rates()
        trained: list[tuple[str, int]] = []
        resumed: list[tuple[str, int]] = []
        cache: dict[str, Any] = {}

        def finished(condition: str, k: int) -> bool:
            return (round_dir(run, condition, k) / "summary.json").is_file()

        def ticket(k: int) -> RoundResult:
            if cache.get("ticket") is None or cache["ticket"].round != k:
                cache["ticket"] = load_round(run, "ticket", k, device=config.device)
            return cache["ticket"]

        def rewind_point() -> Params:
            if "point" not in cache:
                path = round_dir(run, "ticket", 0) / "rewind_point.safetensors"
                cache["point"] = _load_checkpoint(func, path, config.device) if config.rewind else theta0
            return cache["point"]

        def train(condition: str, k: int, make: Callable[..., RoundResult]) -> None:
            rd = round_dir(run, condition, k)
            if rd.exists():
                shutil.rmtree(rd)  # an unfinished round is redone from its start
            log = _MetricsLog(rd / "metrics.jsonl")
            begin = time.perf_counter()
            try:
                with bars.round(
                    f"{condition} round {k}", config.iterations - (config.rewind if k else 0)
                ) as bar:
                    result = make(on_record=log.append, progress=bar)
            finally:
                log.close()
            summary = summarize_round(
                result.history,
                round=k,
                density=result.mask.density(),
                wall_seconds=time.perf_counter() - begin,
            )
            _masks.save(result.mask, rd / "mask.safetensors")
            save_tree(result.start, rd / "rewind.safetensors")
            save_tree(result.final, rd / "final.safetensors")
            if result.rewind_point is not None and config.rewind:
                save_tree(result.rewind_point, rd / "rewind_point.safetensors")
            log.finish()
            _write_json(rd / "summary.json", summary)
            _write_summary_csv(run)
            trained.append((condition, k))
            if condition == "ticket":
                cache["ticket"] = result
            bars.advance(summary)

        total = config.rounds + 1 + config.rounds * len(config.baselines)
        bars = _Progress(progress, total)
        try:
            for k in range(config.rounds + 1):
                if finished("ticket", k):
                    resumed.append(("ticket", k))
                    bars.advance()
                elif k == 0:
                    train(
                        "ticket", 0, partial(dense_round, trainer, theta0, rewind=config.rewind, mask=dense)
                    )
                    if config.rewind:
                        cache["point"] = cache["ticket"].rewind_point
                else:
                    make = partial(
                        imp_round,
                        trainer,
                        ticket(k - 1),
                        rewind_point(),
                        rate=rates,
                        scope=config.scope,
                        schedule=config.schedule,
                        rewind=config.rewind,
                    )
                    train("ticket", k, make)
                for condition in config.baselines if k else ():
                    if finished(condition, k):
                        resumed.append((condition, k))
                        bars.advance()
                        continue
                    make = partial(
                        baseline_round,
                        trainer,
                        condition,
                        ticket(k),
                        rewind_point(),
                        model=model,
                        seed=config.seed,
                        rewind=config.rewind,
                    )
                    train(condition, k, make)
        finally:
            bars.close()
        _write_summary_csv(run)
        rows = _read_csv_rows(run / "summary.csv")
        return RunResult(run, config, tuple(rows), tuple(trained), tuple(resumed))


def _read_csv_rows(path: Path) -> list[dict[str, Any]]:
    """summary.csv rows with numbers parsed back (empty cells as None)."""

    def parse(key: str, v: str) -> Any:
        if key == "condition":
            return v
        if v == "":
            return None
        return int(v) if key in ("round", "early_stop_iteration") else float(v)

    with open(path, encoding="utf-8", newline="") as fh:
        return [{k: parse(k, v) for k, v in row.items()} for row in csv.DictReader(fh)]
