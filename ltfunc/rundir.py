"""The run directory: the one owner of its layout, file formats, lock and atomic writes.

Every other module (``run_imp``, ``report``, ``plot``, the studies) reads and writes run
directories only through this module. Layout (``format_version`` 2)::

    RUN_DIR/config.json              ImpConfig.to_dict() + {"ltfunc_version", "config_hash", "format_version"}
    RUN_DIR/init.safetensors         θ0: params and buffers (see "weights files" below)
    RUN_DIR/<condition>/round_<k>/   condition: ticket (k = 0 .. rounds), reinit, random_prune (k >= 1)
        mask.safetensors             the mask trained in this round
        rewind.safetensors           the weights the round started from
        final.safetensors            the trained weights at the end of the round
        metrics.jsonl                one JSON object per evaluation (METRIC_FIELDS)
        summary.json                 written last = the round is finished (SUMMARY_FIELDS, plus
                                     mask_sha256 / mask_kept / mask_total: the mask's checksum
                                     and counts, checked by load_round; absent in older runs)
    RUN_DIR/ticket/round_0/rewind_point.safetensors   the dense weights at iteration ``rewind``
                                                      (only when ``rewind > 0``)
    RUN_DIR/summary.csv              one row per finished (condition, round): condition + SUMMARY_FIELDS
    RUN_DIR/.lock                    while a process writes the run: {"pid", "host", "since"}

Weights files hold a model's params and buffers (BatchNorm running statistics) in one
safetensors file; the buffers' names are listed in its metadata (``ltfunc.buffers``). Files
of format 1 (no ``format_version`` in ``config.json``) hold params only and load with empty
buffers; a newer format than this version knows is refused with a message naming it.

Every file is written atomically (temp file + ``os.replace``); ``summary.json`` is written last,
so a round without it is unfinished and is redone from its start on resume. ``metrics.jsonl``
grows one line per evaluation while a round runs (a line cut short by a kill belongs to an
unfinished round) and is rewritten whole before ``summary.json``. Resuming checks every finished
round's mask first and reads weights only of the last finished ticket round (while ticket rounds
remain); a finished round's baselines need only its mask, so the weights of finished rounds may
be deleted to save space.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from . import masks as _masks
from ._checks import check_choice, check_int
from ._lock import LOCK_FILE, _lock_holder, lock  # noqa: F401 (re-exported)
from ._runfiles import (  # also re-exported: rundir is the run directory's one entry point
    METRIC_FIELDS,
    METRICS_FILE,
    SUMMARY_FIELDS,
    MetricsLog,
    read_json,
    read_metrics,
    read_summary,
    summarize_round,
    write_json,
    write_text,
)
from .config import ImpConfig, config_diff
from .params import load_tree, read_metadata, save_tree, tree_shapes
from .ticket import CONDITIONS, RoundResult
from .trainer import Weights

__all__ = [
    "FORMAT_VERSION",
    "LOCK_FILE",
    "METRIC_FIELDS",
    "SUMMARY_FIELDS",
    "load_round",
    "read_config",
    "round_dir",
    "summarize_round",
    "write_config",
]

PathLike = str | os.PathLike[str]

FORMAT_VERSION = 2
"""The run-directory format this version writes (``config.json``'s ``format_version``).
1: no ``format_version`` field, weights files hold params only. 2: weights files hold
params and buffers."""

_OWNED = ("config.json", "init.safetensors", "summary.csv", "plot.png", *CONDITIONS)
_BUFFERS_KEY = "ltfunc.buffers"
_BOOKKEEPING = ("config_hash", "ltfunc_version")  # written by write_config: an ltfunc run
_ROUND_RE = re.compile(r"^round_(\d+)$")


# --------------------------------------------------------------------------------------------
# paths and small files


def round_dir(run_dir: PathLike, condition: str, k: int) -> Path:
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
        >>> from ltfunc.rundir import round_dir
        >>> round_dir("runs/x", "ticket", 2).as_posix()
        'runs/x/ticket/round_2'
    """
    check_choice("round_dir", "condition", condition, CONDITIONS)
    check_int("round_dir", "k", k, 0)
    return Path(run_dir) / condition / f"round_{k}"


_REDO = (
    ". Delete it (and, if it belongs to a round, that round's folder) to redo it, or start over "
    "with force=True / --force"
)


# --------------------------------------------------------------------------------------------
# config.json


def write_config(run_dir: PathLike, config: ImpConfig) -> Path:
    """Write ``run_dir/config.json``: the config's fields plus ``ltfunc_version``, ``config_hash``
    and ``format_version``.

    Args:
        run_dir: The run directory (created if needed).
        config: The config.

    Returns:
        The path of ``config.json`` (written atomically).

    Raises:
        TypeError: ``config`` is not an :class:`~ltfunc.config.ImpConfig`.

    Example:
        >>> import json, tempfile
        >>> from ltfunc.config import ImpConfig
        >>> from ltfunc.rundir import write_config
        >>> path = write_config(tempfile.mkdtemp(), ImpConfig(rounds=2))
        >>> data = json.loads(path.read_text())
        >>> data["rounds"], len(data["config_hash"]), data["format_version"]
        (2, 12, 2)
    """
    from . import __version__

    if not isinstance(config, ImpConfig):
        raise TypeError(f"write_config: config must be an ImpConfig, got {type(config).__name__}")
    data = {
        **config.to_dict(),
        "ltfunc_version": __version__,
        "config_hash": config.config_hash(),
        "format_version": FORMAT_VERSION,
    }
    path = Path(run_dir) / "config.json"
    write_json(path, data)
    return path


def read_config_dict(func: str, run_dir: Path) -> dict[str, Any]:
    """``config.json`` as a dict, after checking it is a JSON object of a format this version reads."""
    path = run_dir / "config.json"
    data = read_json(func, path, hint=_REDO)
    if not isinstance(data, dict):
        raise ValueError(f"{func}: {path} must hold a JSON object, got {type(data).__name__}")
    version = data.get("format_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ValueError(
            f"{func}: {path} has format_version={version!r}, but this ltfunc reads run directories "
            f"of format 1 to {FORMAT_VERSION}; read it with the ltfunc version that wrote it "
            f"({data.get('ltfunc_version', 'unknown')})"
        )
    return data


def read_config(run_dir: PathLike) -> ImpConfig:
    """The :class:`~ltfunc.config.ImpConfig` stored in ``run_dir/config.json``.

    Args:
        run_dir: A run directory.

    Returns:
        The config.

    Raises:
        FileNotFoundError: No ``config.json``.
        ValueError: The file is corrupt, of an unknown format version, or holds an invalid
            config (names the file).

    Example:
        >>> import tempfile
        >>> from ltfunc.config import ImpConfig
        >>> from ltfunc.rundir import read_config, write_config
        >>> d = tempfile.mkdtemp(); _ = write_config(d, ImpConfig(rounds=2))
        >>> read_config(d).rounds
        2
    """
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"read_config: {path} does not exist; is {run_dir} a run directory?")
    data = read_config_dict("read_config", Path(run_dir))
    try:
        return ImpConfig.from_dict(data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"read_config: {path} does not hold a valid ImpConfig ({e})") from e


def open_run(func: str, run_dir: Any) -> Path:
    """``run_dir`` as a Path, after checking it is an existing run directory (holds config.json)."""
    if not isinstance(run_dir, (str, os.PathLike)):
        raise TypeError(f"{func}: run_dir must be a path, got {type(run_dir).__name__} {run_dir!r}")
    path = Path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"{func}: run directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"{func}: run_dir {str(path)!r} is not a directory")
    if not (path / "config.json").is_file():
        raise ValueError(
            f"{func}: {str(path)!r} is not a run directory (no config.json); "
            "pass the folder that `ltfunc imp` (ltfunc.run_imp) created"
        )
    read_config_dict(func, path)  # a corrupt config.json or an unknown format_version is refused here
    return path


# --------------------------------------------------------------------------------------------
# preparing a run directory for writing, and its lock


def _probe_writable(func: str, run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"{func}: run directory {run_dir} is a file, not a directory; choose another path")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"{func}: run directory {run_dir} is not writable ({e}); choose another path") from e


def check_writable(func: str, run_dir: Path, config: ImpConfig, *, resume: bool, force: bool) -> str:
    """Check ``run_dir`` for writing ``config``, changing nothing.

    Returns ``"resume"``, ``"fresh"`` or ``"clear"`` (with ``force``).
    """
    _probe_writable(func, run_dir)
    has_config = (run_dir / "config.json").is_file()
    ours = [n for n in _OWNED if (run_dir / n).exists()]
    if force:
        _check_forcible(func, run_dir, has_config)
        return "clear"
    if not has_config:
        if ours:
            raise ValueError(
                f"{func}: {run_dir} holds {ours} but no config.json, so it cannot be resumed; "
                "start over with force=True / --force or choose another directory"
            )
        return "fresh"
    old = read_config_dict(func, run_dir)
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


def _check_forcible(func: str, run_dir: Path, has_config: bool) -> None:
    """Refuse ``force`` on a directory that holds files but no ltfunc run (touching nothing).

    ``force`` restarts an ltfunc run: a ``config.json`` with ltfunc's bookkeeping keys
    (``config_hash``, ``ltfunc_version``), or, without one, a run cut short before it was
    written (``init.safetensors`` or a condition folder). An empty or new directory is fine.
    """
    written = init_path(run_dir).is_file() or any((run_dir / c).is_dir() for c in CONDITIONS)
    if has_config:
        try:
            data = read_json(func, run_dir / "config.json")
        except ValueError:  # corrupt: an ltfunc run only with ltfunc's other files beside it
            data = None
            if written:
                return
        if isinstance(data, dict) and all(k in data for k in _BOOKKEEPING):
            return
        raise ValueError(
            f"{func}: {run_dir / 'config.json'} is not an ltfunc run's config (no "
            f"{' / '.join(_BOOKKEEPING)}); force=True / --force only restarts a run directory that "
            "ltfunc wrote, and would overwrite this folder's files: choose another directory"
        )
    entries = [p.name for p in run_dir.iterdir() if not p.name.startswith(".")]
    if not entries or written:
        return
    raise ValueError(
        f"{func}: {run_dir} holds {sorted(entries)[:5]} but no ltfunc run (no config.json); "
        "force=True / --force only restarts a run directory that ltfunc wrote, and would overwrite "
        "this folder's files: choose another (new or empty) directory"
    )


def clear(run_dir: Path) -> None:
    """Remove everything ltfunc writes into a run directory (nothing else)."""
    for name in _OWNED:
        p = run_dir / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    remove_stale_temps(run_dir)


def remove_stale_temps(run_dir: Path) -> None:
    """Delete the temp files of atomic writes that a killed process left behind."""
    for p in run_dir.glob(".*.tmp-*"):
        p.unlink()


# --------------------------------------------------------------------------------------------
# weights files


def save_weights(weights: Weights, path: Path) -> None:
    """Save params and buffers in one safetensors file (the buffers' names in its metadata)."""
    tree = {**weights.params, **weights.buffers}
    save_tree(tree, path, metadata={_BUFFERS_KEY: json.dumps(list(weights.buffers))})


def load_weights(func: str, path: Path, device: str | torch.device) -> Weights:
    """Load :func:`save_weights` output (format 1: params only); errors name the file."""
    try:
        tree = load_tree(path, device=device)
        names = json.loads(read_metadata(path).get(_BUFFERS_KEY, "[]"))
    except (OSError, ValueError) as e:
        raise ValueError(_checkpoint_message(func, path, e)) from e
    buffers = {k: tree.pop(k) for k in names if k in tree}
    return Weights(tree, buffers)


def _load_mask(func: str, path: Path, device: str | torch.device) -> _masks.Mask:
    try:
        return _masks.load(path, device=device)
    except (OSError, ValueError) as e:
        raise ValueError(_checkpoint_message(func, path, e)) from e


def _checkpoint_message(func: str, path: Path, e: Exception) -> str:
    return (
        f"{func}: checkpoint {path} is missing, corrupt or truncated ({e}). The finished rounds "
        f"before it are intact; delete {path.parent} and the rounds after it to redo them, or "
        "start over with force=True / --force"
    )


def init_path(run_dir: Path) -> Path:
    """Where θ0 lives."""
    return run_dir / "init.safetensors"


def save_init(run_dir: Path, weights: Weights) -> None:
    """Write θ0 (params and buffers) unless it is there already."""
    if not init_path(run_dir).is_file():
        save_weights(weights, init_path(run_dir))


def load_rewind_point(func: str, run_dir: Path, rewind: int, device: str | torch.device) -> Weights:
    """The weights later rounds reset to: θ0 (``rewind == 0``) or the dense weights at ``rewind``."""
    if rewind == 0:
        return load_weights(func, init_path(run_dir), device)
    return load_weights(func, round_dir(run_dir, "ticket", 0) / "rewind_point.safetensors", device)


# --------------------------------------------------------------------------------------------
# rounds


def is_finished(run_dir: Path, condition: str, k: int) -> bool:
    """Whether round ``k`` of ``condition`` is finished (its ``summary.json`` exists)."""
    return (round_dir(run_dir, condition, k) / "summary.json").is_file()


def condition_order(name: str) -> tuple[int, str]:
    """Display order of conditions: ticket, reinit, random_prune, then others alphabetically."""
    return (CONDITIONS.index(name), "") if name in CONDITIONS else (len(CONDITIONS), name)


def round_dirs(run_dir: Path) -> dict[str, dict[int, Path]]:
    """``{condition: {k: run_dir/condition/round_k}}``, conditions and rounds in display order."""
    found: dict[str, dict[int, Path]] = {}
    for cond in run_dir.iterdir():
        if not cond.is_dir() or cond.name.startswith("."):
            continue
        rounds = {}
        for rd in cond.iterdir():
            m = _ROUND_RE.match(rd.name)
            if m and rd.is_dir():
                rounds[int(m.group(1))] = rd
        if rounds:
            found[cond.name] = dict(sorted(rounds.items()))
    return {c: found[c] for c in sorted(found, key=condition_order)}


def summary_rows(func: str, run_dir: Path) -> list[dict[str, Any]]:
    """One row per finished (condition, round), in display order (see :func:`read_summary`)."""
    rows = []
    for condition, rounds in round_dirs(run_dir).items():
        for k, rd in rounds.items():
            summary = rd / "summary.json"
            if summary.is_file():
                rows.append(read_summary(func, summary, condition, k))
    return rows


def check_masks(func: str, run_dir: Path) -> None:
    """Check the mask of every finished round against its summary and the run's θ0 (before resuming).

    Raises ``ValueError`` naming the first mask file that is corrupt, another round's, or
    another model's; reads no weights. A deleted mask file is not an error here: only the
    rounds resuming reads from (ticket rounds with baselines left) need theirs.
    """
    for rounds in round_dirs(run_dir).values():
        for rd in rounds.values():
            if (rd / "summary.json").is_file() and (rd / "mask.safetensors").exists():
                _round_mask(func, run_dir, rd, "cpu")


def round_metrics(func: str, run_dir: Path, condition: str, k: int) -> list[dict[str, Any]]:
    """The evaluation records of a finished round (its ``metrics.jsonl``)."""
    return read_metrics(func, round_dir(run_dir, condition, k) / METRICS_FILE)


def start_round(run_dir: Path, condition: str, k: int) -> MetricsLog:
    """Empty round ``k``'s folder (an unfinished round is redone from its start) and open its log."""
    rd = round_dir(run_dir, condition, k)
    if rd.exists():
        shutil.rmtree(rd)
    return MetricsLog(rd / METRICS_FILE)


def save_round(
    run_dir: Path, result: RoundResult, log: MetricsLog, summary: Mapping[str, Any], *, rewind: int
) -> None:
    """Write a trained round's files, ``summary.json`` last, and refresh ``summary.csv``."""
    rd = round_dir(run_dir, result.condition, result.round)
    _masks.save(result.mask, rd / "mask.safetensors")
    summary = {**summary, **_masks._record(result.mask)}
    save_weights(result.start, rd / "rewind.safetensors")
    save_weights(result.final, rd / "final.safetensors")
    if result.rewind_point is not None and rewind:
        save_weights(result.rewind_point, rd / "rewind_point.safetensors")
    log.finish()
    write_json(rd / "summary.json", dict(summary))
    write_summary_csv(run_dir)


def _check_round_mask(func: str, path: Path, mask: _masks.Mask, summary: Path, run_dir: Path) -> None:
    """The mask of a finished round must be the one its summary describes and fit the run's θ0."""
    data = read_json(func, summary)
    total = _masks.counts(mask)["__all__"]
    if isinstance(data, dict):
        digest = data.get("mask_sha256")  # absent in runs written before ltfunc recorded it
        if digest is not None and digest != _masks._digest(mask):
            raise ValueError(
                f"{func}: {path} is not the mask this round trained with (its checksum differs from "
                f"the mask_sha256 in {summary}; kept {total.kept} of {total.total}, the summary says "
                f"{data.get('mask_kept')} of {data.get('mask_total')}); put the round's own mask back, "
                f"or delete {path.parent} and the rounds after it to redo them"
            )
        density = data.get("density")
        if digest is None and isinstance(density, (int, float)) and abs(density - total.density) > 1e-6:
            raise ValueError(
                f"{func}: {path} keeps {total.density:.6f} of the weights but {summary} says "
                f"density={density}; put the round's own mask back, or delete {path.parent} and the "
                "rounds after it to redo them"
            )
    init = init_path(run_dir)
    if init.is_file():
        shapes = tree_shapes(init)
        bad = [k for k, v in mask.items() if shapes.get(k) != tuple(v.shape)]
        if bad:
            raise ValueError(
                f"{func}: {path} does not fit this run's model (θ0 in {init}): "
                + ", ".join(f"{k} {tuple(mask[k].shape)} vs {shapes.get(k, 'missing')}" for k in bad[:5])
            )


def write_summary_csv(run_dir: Path) -> None:
    """Rewrite ``summary.csv`` from the finished rounds' ``summary.json`` files."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["condition", *SUMMARY_FIELDS], lineterminator="\n")
    writer.writeheader()
    for row in summary_rows("write_summary_csv", run_dir):
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    write_text(run_dir / "summary.csv", buf.getvalue())


def _round_mask(func: str, run_dir: Path, rd: Path, device: str | torch.device) -> _masks.Mask:
    """The mask of the finished round in ``rd``, checked against its summary and the run's θ0."""
    if not (rd / "summary.json").is_file():
        raise FileNotFoundError(f"{func}: {rd} is not a finished round (no summary.json)")
    mask = _load_mask(func, rd / "mask.safetensors", device)
    try:
        _check_round_mask(func, rd / "mask.safetensors", mask, rd / "summary.json", run_dir)
    except OSError as e:
        raise ValueError(_checkpoint_message(func, rd / "mask.safetensors", e)) from e
    return mask


def load_round_mask(
    run_dir: PathLike, condition: str, k: int, *, device: str | torch.device = "cpu"
) -> _masks.Mask:
    """The mask of a finished round alone, checked as :func:`load_round` checks it.

    What a round's baselines need from its ticket: it reads no weights, so a run whose
    finished rounds' weights were deleted to save space still resumes its baselines.

    Args:
        run_dir: A run directory.
        condition: ``"ticket"``, ``"reinit"`` or ``"random_prune"``.
        k: Round index.
        device: Where to put the mask.

    Returns:
        The round's :class:`~ltfunc.masks.Mask`.

    Raises:
        FileNotFoundError: The round is not finished (no ``summary.json``).
        ValueError: A corrupt mask file, or one that is not the round's (named in the message).

    Example:
        >>> from ltfunc.rundir import load_round_mask
        >>> load_round_mask("no/such/run", "ticket", 1)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        FileNotFoundError: load_round_mask: no/such/run/ticket/round_1 is not a finished round
    """
    return _round_mask("load_round_mask", Path(run_dir), round_dir(run_dir, condition, k), device)


def load_round(
    run_dir: PathLike, condition: str, k: int, *, device: str | torch.device = "cpu"
) -> RoundResult:
    """Read a finished round back as a :class:`ltfunc.ticket.RoundResult`.

    Args:
        run_dir: A run directory.
        condition: ``"ticket"``, ``"reinit"`` or ``"random_prune"``.
        k: Round index.
        device: Where to put the tensors.

    Returns:
        ``RoundResult(condition, k, mask, start, final, history, rewind_point)`` with
        :class:`~ltfunc.trainer.Weights` (params and buffers); ``rewind_point`` is set for
        ticket round 0 (θ0, or θk when the run rewinds).

    Raises:
        FileNotFoundError: The round is not finished (no ``summary.json``).
        ValueError: A corrupt or truncated file (named in the message); a mask file that is not
            the round's (its checksum ``mask_sha256``, or for older runs its density, differs
            from ``summary.json``) or does not fit the run's θ0 (keys, shapes).

    Example:
        >>> from ltfunc.rundir import load_round
        >>> load_round("no/such/run", "ticket", 0)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        FileNotFoundError: load_round: no/such/run/ticket/round_0 is not a finished round
    """
    func = "load_round"
    rd = round_dir(run_dir, condition, k)
    mask = _round_mask(func, Path(run_dir), rd, device)
    point = None
    if condition == "ticket" and k == 0:
        rp = rd / "rewind_point.safetensors"
        point = load_weights(func, rp if rp.is_file() else init_path(Path(run_dir)), device)
    return RoundResult(
        condition,
        k,
        mask,
        load_weights(func, rd / "rewind.safetensors", device),
        load_weights(func, rd / "final.safetensors", device),
        tuple(round_metrics(func, Path(run_dir), condition, k)),
        point,
    )
