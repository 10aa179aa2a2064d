"""The ``ltfunc`` command line, part 2: argument types, config files, recipe options, ``presets``.

Split out of :mod:`ltfunc.cli` (which builds the parser and runs the commands): the argument
types (rates, baselines, seeds, ``--model`` / ``--dataset`` as registry names or import paths,
``--milestones``, ``--model-kwargs``); reading ``--config`` files; the ``imp`` options
``--lr-schedule``, ``--warmup``, ``--milestones``, ``--gamma``, ``--nesterov``, ``--augment``,
``--model-kwargs``, ``--preset``, ``--tensorboard``; and ``ltfunc presets``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ._checks import check_output_path
from .config import ImpConfig, is_import_path
from .data import DATASETS, ENV_ROOT
from .models import MODELS
from .params import load_tree
from .schedules import SCHEDULES
from .sparse_step import SPARSE_MODES
from .structured import _parse as _parse_structure
from .ticket import BASELINES

__all__ = [
    "add_presets_parser",
    "add_recipe_args",
    "add_structure_arg",
    "baselines_arg",
    "check_outputs",
    "cmd_presets",
    "config_file_values",
    "dataset_arg",
    "fraction_arg",
    "json_object_arg",
    "milestones_arg",
    "model_arg",
    "override_arg",
    "read_config_file",
    "seeds_arg",
    "structure_arg",
]


def fraction_arg(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}") from None
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return v


def override_arg(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=RATE such as fc1.weight=0.3, got {text!r}")
    return name, fraction_arg(value)


def baselines_arg(text: str) -> tuple[str, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in BASELINES]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown baseline(s) {', '.join(bad)}. "
            f"Supported: {', '.join(BASELINES)} (comma-separated) or none"
        )
    return names


def seeds_arg(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated ints such as 0,1,2, got {text!r}"
        ) from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct ints >= 0 such as 0,1,2, got {text!r}")
    return seeds


def read_config_file(path: str) -> dict[str, Any]:
    """The mapping stored in a TOML (Python >= 3.11) or JSON config file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--config: no such file: {p}")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"--config: {p} is not valid JSON ({e})") from e
    else:
        try:
            import tomllib
        except ImportError:  # Python 3.10 has no tomllib (and tomli is not a dependency)
            raise ValueError(
                f"--config: reading TOML ({p}) needs Python >= 3.11 (tomllib); on Python "
                f"{sys.version_info.major}.{sys.version_info.minor} write the same keys to a .json file"
            ) from None
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"--config: {p} is not valid TOML ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"--config: {p} must hold a table/object of options, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def check_outputs(ns: argparse.Namespace) -> None:
    """Refuse an output path of a parsed command that cannot be written, before any work.

    Raises:
        ValueError: naming the option and the path (a directory where a file is wanted, a
            path under a file, a parent folder without write permission).
    """
    func = f"ltfunc {ns.command}"
    if ns.command == "prune":
        check_output_path(func, "-o/--output", ns.output)
        if ns.save_weights:
            check_output_path(func, "--save-weights", ns.save_weights)
    elif ns.command == "report" and ns.csv:
        check_output_path(func, "--csv", ns.csv)
    elif ns.command == "plot":
        check_output_path(func, "-o/--output", ns.output, suffix=".png")
    elif ns.command == "reproduce" and ns.out is not None:
        check_output_path(func, "--out", ns.out, folder=True)


RUN_KEY_TYPES = {
    "name": "a string (the run directory name) or null (the config hash)",
    "runs_dir": "a string (a folder path)",
    "data_root": "a string (a folder path) or null",
    "tensorboard": "a string (a folder path) or null",
    "preset": "a string (a name from `ltfunc presets`) or null",
    "seeds": "a list of distinct ints >= 0 (one run per seed, NAME-seed<k>) or null",
}
"""The run options (not ImpConfig fields) a --config file may give, and what each may be."""


def config_file_values(
    path: str, fields: Sequence[str], run: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ImpConfig values and run options (``name``, ``runs_dir``, ...) of a ``--config`` file.

    Args:
        path: The file (TOML or JSON, see :func:`read_config_file`).
        fields: The ImpConfig field names.
        run: The run options' defaults (keys: those of ``RUN_KEY_TYPES``); updated in place.

    Returns:
        ``(values, run)``.

    Raises:
        ValueError: Unknown keys, or a value of the wrong type or not allowed (one line naming
            the key and what is allowed).
    """
    data = read_config_file(path)
    unknown = [k for k in data if k not in fields and k not in RUN_KEY_TYPES]
    if unknown:
        raise ValueError(
            f"--config: {path} has unknown key(s) {unknown}. "
            f"Supported: {', '.join((*fields, *RUN_KEY_TYPES))}"
        )
    values: dict[str, Any] = {}
    for k, v in data.items():
        if k == "seeds" and v is not None:
            text = ",".join(str(x) for x in v) if isinstance(v, list) else v
            bad = not isinstance(v, (list, str)) or any(type(x) is not int for x in v if isinstance(v, list))
            try:
                run[k] = None if bad else seeds_arg(text)
            except argparse.ArgumentTypeError:
                bad = True
            if bad:
                raise ValueError(f"--config: {path}: seeds must be {RUN_KEY_TYPES[k]}, got {v!r}")
        elif k in RUN_KEY_TYPES:
            optional = k != "runs_dir"
            if not (isinstance(v, str) and v) and not (optional and v is None):
                raise ValueError(
                    f"--config: {path}: {k} must be {RUN_KEY_TYPES[k]}, got {type(v).__name__} {v!r}"
                )
            run[k] = v
        else:
            values[k] = v
    for key, parse in (("baselines", baselines_arg), ("milestones", milestones_arg)):
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
        elif isinstance(values.get(key), str):
            try:
                values[key] = parse(values[key])
            except argparse.ArgumentTypeError as e:
                raise ValueError(f"--config: {path}: {key}: {e}") from None
    return values, run


def _name_or_path(kind: str, names: Callable[[], tuple[str, ...]]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text in names() or is_import_path(text):
            return text
        choices = ", ".join(repr(n) for n in names())
        raise argparse.ArgumentTypeError(
            f"invalid choice: {text!r} (choose from {choices}, or a {kind} factory 'package.module:name')"
        )

    parse.__name__ = kind  # argparse names the type in its messages
    return parse


model_arg = _name_or_path("model", lambda: tuple(MODELS))
"""``--model``: a name of :data:`ltfunc.models.MODELS` or an import path ``package.module:factory``."""
dataset_arg = _name_or_path("dataset", lambda: tuple(DATASETS))
"""``--dataset``: a name of :data:`ltfunc.data.DATASETS` or an import path ``package.module:factory``."""


def milestones_arg(text: str) -> tuple[int, ...]:
    """``--milestones 1000,2000``: comma-separated iterations (``none`` or empty: no milestones)."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated iterations such as 32000,48000, got {text!r}"
        ) from None


def json_object_arg(text: str) -> dict[str, Any]:
    """``--model-kwargs '{"num_classes": 100}'``: a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(
            f"expected a JSON object such as '{{\"num_classes\": 100}}' ({e})"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object such as '{{\"num_classes\": 100}}', got {text!r}"
        )
    return value


def structure_arg(text: str) -> str | None:
    """``--structure 2:4`` / ``block:4x4`` / ``none``: the canonical spec, or ``None``."""
    try:
        s = _parse_structure("structure", "structure", text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).partition(": ")[2]) from None
    return None if s is None else str(s)


def add_structure_arg(p: argparse.ArgumentParser, d: Callable[[Any], Any]) -> None:
    """``--structure`` (``imp`` and ``prune``): N:M or block pruning (:func:`ltfunc.prune.magnitude`)."""
    p.add_argument(
        "--structure",
        type=structure_arg,
        default=d(None),
        metavar="N:M|block:RxC",
        help="structured pruning: 'N:M' protects the N largest of every M consecutive weights along the "
        "input dimension (exactly N:M once the rates reach N/M); 'block:RxC' prunes whole RxC blocks "
        "by L2 norm; none: unstructured. Layers at rate 0 stay dense",
    )


def add_recipe_args(p: argparse.ArgumentParser, d: Callable[[Any], Any]) -> None:
    """The ``imp`` options of the lr schedule, Nesterov, augmentation, model kwargs, preset, TensorBoard."""
    cfg = ImpConfig.__dataclass_fields__
    p.add_argument(
        "--preset",
        default=d(None),
        metavar="NAME",
        help="start from a published recipe (`ltfunc presets` lists them); precedence: defaults < "
        "preset < --config file < flags. Overriding its --iterations scales its milestones, "
        "warm-up and rewind iteration unless those are given too",
    )
    p.add_argument(
        "--lr-schedule",
        choices=SCHEDULES,
        default=d(cfg["lr_schedule"].default),
        help="'constant'; 'multistep': lr x GAMMA at each of --milestones; 'cosine': to 0 at --iterations",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=d(cfg["warmup"].default),
        help="iterations of linear lr warm-up from 0 (0: none)",
    )
    p.add_argument(
        "--milestones",
        type=milestones_arg,
        default=d("none"),
        metavar="IT,IT,...",
        help="multistep: comma-separated iterations at which the lr is multiplied by --gamma",
    )
    p.add_argument("--gamma", type=float, default=d(cfg["gamma"].default), help="multistep: lr factor")
    p.add_argument(
        "--nesterov",
        action="store_true",
        default=d(False),
        help="Nesterov momentum (sgd / momentum with --momentum > 0)",
    )
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=d(False),
        help="augment the training batches (random crop + flip, on the device) where the dataset allows",
    )
    p.add_argument(
        "--model-kwargs",
        type=json_object_arg,
        default=d("{}"),
        metavar="JSON",
        help="keyword arguments of the model factory, e.g. '{\"num_classes\": 100}'",
    )
    p.add_argument(
        "--sparse",
        choices=SPARSE_MODES,
        default=d(cfg["sparse"].default),
        help="sparse training mode: hold masked Linear weights as values on each round's mask "
        "(same results to float rounding); 'auto': layers at low density, compiled steps only",
    )
    p.add_argument(
        "--tensorboard",
        default=d(None),
        metavar="DIR",
        help="also write every evaluation to TensorBoard event files in DIR/NAME (needs "
        "`pip install 'ltfunc[tensorboard]'`); metrics.jsonl stays the record",
    )


def add_dist_args(p: argparse.ArgumentParser, d: Callable[[Any], Any]) -> None:
    """``--dist-timeout`` and ``--dist-backend``: data-parallel runs under ``torchrun`` (docs/cluster.md)."""
    from .distributed import BACKENDS, DEFAULT_TIMEOUT

    p.add_argument(
        "--dist-timeout",
        type=float,
        default=d(DEFAULT_TIMEOUT),
        metavar="SECONDS",
        help="under torchrun: seconds a rank waits for the others in a collective before it stops "
        "with an error (a rank that dies is noticed at once)",
    )
    p.add_argument(
        "--dist-backend",
        choices=BACKENDS,
        default=d("auto"),
        help="under torchrun: the process-group backend (auto: gloo on cpu, nccl on cuda)",
    )


def add_presets_parser(sub: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """The ``presets`` subcommand."""
    p = sub.add_parser(
        "presets",
        help="list the published recipes for `ltfunc imp --preset NAME`, with their sources",
        description="Name, title and sources of every preset; with names, also their settings and notes.",
        formatter_class=formatter,
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="presets to show in full (default: list all)")


def cmd_presets(ns: argparse.Namespace) -> int:
    """``ltfunc presets [NAME...]``."""
    from .presets import format_presets

    names = list(ns.names) or None
    print(format_presets(names, detail=names is not None))
    return 0


def load_weights(path: str, device: str) -> dict[str, Any]:
    """A ``{name: tensor}`` dict from safetensors, or a torch.save'd state_dict (weights_only)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--weights: no such file: {p}")
    if p.suffix == ".safetensors":
        return load_tree(p, device=device)
    try:
        data = torch.load(p, map_location=device, weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        raise ValueError(
            f"--weights: {p} is neither a .safetensors file nor a loadable state_dict ({e})"
        ) from e
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"--weights: {p} must hold a state_dict (a dict of tensors)")
    return dict(data)


def check_float_weights(path: str, weights: Mapping[str, Any], names: Any) -> None:
    """Magnitude pruning ranks real weights: integer (or bool) tensors would be ranked by index."""
    bad = [k for k in names if k in weights and not weights[k].is_floating_point()]
    if bad:
        kinds = ", ".join(f"{k} ({weights[k].dtype})" for k in bad)
        raise ValueError(f"--weights: {path} holds non-floating weights {kinds}; pruning needs float weights")


def add_parallel_args(p: argparse.ArgumentParser, d: Callable[[Any], Any], *, seeds: bool = True) -> None:
    """``--seeds`` (with ``seeds``), ``--parallel``, ``--workers`` (:func:`ltfunc.parallel.run_many`)."""
    from .parallel import PARALLEL

    if seeds:
        p.add_argument(
            "--seeds",
            type=seeds_arg,
            default=d(None),
            help="comma-separated seeds: one run per seed into RUNS_DIR/NAME-seed<k> (NAME: --name, "
            "else each config's hash), trained together (see --parallel); instead of --seed",
        )
    p.add_argument(
        "--parallel",
        choices=PARALLEL,
        default=d("auto"),
        help="how the trainings run: 'processes' spreads a round's ticket and baselines (and the seeds) "
        "over single-threaded worker processes, one per core; 'sequential' trains one after the other "
        "with per-iteration progress bars; 'auto' picks processes on a CPU with >= 2 cores",
    )
    p.add_argument(
        "--workers", type=int, default=d(None), help="worker processes (None: one per core, as needed)"
    )


def download_flag(requested: bool, data_root: Any) -> bool | None:
    """``True`` when asked; ``None`` (download if missing) for the default folder; else ``False``."""
    if requested:
        return True
    return None if data_root is None and not os.environ.get(ENV_ROOT) else False
