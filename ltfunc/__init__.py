"""ltfunc: functional lottery-ticket research on PyTorch.

A model becomes a parameter pytree (:mod:`ltfunc.params`), a mask is an immutable pytree of
bool tensors (:class:`Mask`) made by pure pruning functions (:mod:`ltfunc.prune`), and training
is one compiled masked step (:func:`make_train_step`) driven by :func:`fit` and scored by
:func:`evaluate`. On top sit the IMP toolkit (:func:`imp`, :func:`reset_to`, :func:`next_mask`,
the round functions and :class:`Trainer`), resumable experiments (:func:`run_imp` with an
:class:`ImpConfig`, run directories owned by :mod:`ltfunc.rundir`) and the seed-compatible
:class:`LotteryTicket` facade. ``docs/design.md`` has the module map.

The reporting and plotting modules (``ltfunc.report``, ``ltfunc.plot``: matplotlib), the
interop (``ltfunc.interop``: JAX, ``torch.nn.utils.prune``) and the paper studies
(``ltfunc.studies``) are imported on first use (``ltfunc.plot`` works without an import line).
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from . import data, masks, models, optim, params, prune
from .config import ImpConfig
from .data import Dataset, Split, batches, load_dataset
from .evaluation import evaluate
from .experiment import RunResult, run_imp
from .loaders import preload
from .lottery import LotteryTicket
from .masks import Mask
from .optim import Optimizer
from .parallel import run_many
from .params import call, get_buffers, get_params, load_into, load_tree, save_tree, snapshot, tree_equal
from .prune import Rates
from .rundir import load_round
from .step import TrainState, TrainStep, make_train_step
from .ticket import RoundResult, baseline_round, dense_round, imp, imp_round, next_mask, reset_to
from .train import fit
from .trainer import Trainer, Weights, make_evaluator, make_trainer, train_round

__all__ = [
    "Dataset",
    "ImpConfig",
    "LotteryTicket",
    "Mask",
    "Optimizer",
    "Rates",
    "RoundResult",
    "RunResult",
    "Split",
    "TrainState",
    "TrainStep",
    "Trainer",
    "Weights",
    "baseline_round",
    "batches",
    "call",
    "data",
    "dense_round",
    "evaluate",
    "fit",
    "get_buffers",
    "get_params",
    "imp",
    "imp_round",
    "load_dataset",
    "load_into",
    "load_round",
    "load_tree",
    "make_evaluator",
    "make_train_step",
    "make_trainer",
    "masks",
    "models",
    "next_mask",
    "optim",
    "params",
    "preload",
    "prune",
    "reset_to",
    "run_imp",
    "run_many",
    "save_tree",
    "snapshot",
    "train_round",
    "tree_equal",
]

_LAZY = frozenset(
    {
        "allocator",
        "cli",
        "config",
        "evaluation",
        "experiment",
        "export",
        "instability",
        "interop",
        "augment",
        "cifar",
        "loaders",
        "lmc",
        "lottery",
        "mnist",
        "members",
        "members_train",
        "parallel",
        "structured",
        "plot",
        "presets",
        "report",
        "rundir",
        "schedules",
        "sparse_step",
        "stacking",
        "step",
        "studies",
        "sweep",
        "ticket",
        "train",
        "trainer",
    }
)


def __getattr__(name: str) -> Any:
    # submodules not imported above (plot needs matplotlib, interop may need JAX) load on first use
    if name in _LAZY:
        return import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


try:
    __version__ = version("ltfunc")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
