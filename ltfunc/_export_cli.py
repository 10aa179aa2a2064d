"""The ``ltfunc export`` subcommand: a round of a run directory to a sparse inference module.

Split out of :mod:`ltfunc.export` (the conversion itself); :mod:`ltfunc.cli` adds the parser
and dispatches to :func:`cmd_export`.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from ._checks import check_device, check_int, check_output_path
from ._types import Params
from .export import LAYOUTS, export_sparse, format_description
from .params import atomic_write_bytes

__all__ = ["add_export_parser", "cmd_export"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def add_export_parser(sub: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """The ``export`` subcommand of ``ltfunc`` (see :func:`cmd_export`)."""
    p = sub.add_parser(
        "export",
        help="export a round's weights and mask as a sparse inference module (torch.save file)",
        description=(
            "Load round K of a run directory (its trained weights and mask), build the model of the\n"
            "run's config.json, convert its pruned layers to a sparse layout and torch.save the module\n"
            "(load it with torch.load(FILE, weights_only=False); ltfunc must be importable)."
        ),
        formatter_class=formatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
    p.add_argument(
        "--round", type=int, required=True, dest="round_k", metavar="K", help="round index (required)"
    )
    p.add_argument(
        "--condition",
        default="ticket",
        choices=("ticket", "reinit", "random_prune"),
        help="which run of the round",
    )
    p.add_argument(
        "--weights",
        default="final",
        choices=("final", "rewind"),
        help="the round's trained (final) or starting (rewind) weights",
    )
    p.add_argument(
        "--layout",
        default="auto",
        choices=LAYOUTS,
        help="auto: CSR from 95%% sparsity on the CPU, 2:4 on CUDA",
    )
    p.add_argument("--blocksize", type=int, default=None, help="bsr block side (None: per layer)")
    p.add_argument(
        "--min-sparsity",
        type=float,
        default=None,
        help="layers below stay dense (None: 0.95 for auto on the CPU, else 0)",
    )
    p.add_argument(
        "--convs",
        action="store_true",
        help="also convert convolutions (im2col; slower than dense where measured)",
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=tuple(_DTYPES),
        help="dtype of the exported weights (semi_structured: float16/bfloat16)",
    )
    p.add_argument("--device", default="cpu", help="device of the exported module")
    p.add_argument("-o", "--output", required=True, metavar="FILE.pt", help="where to save the module")


def cmd_export(ns: argparse.Namespace) -> int:
    """``ltfunc export RUN_DIR --round K [...] -o FILE.pt``: export, save, print the layer table.

    Returns:
        0; errors raise (``ltfunc.cli.main`` prints them).

    Raises:
        ValueError, FileNotFoundError: An output path that cannot be written, a run directory
            or round that does not exist, or what :func:`export_sparse` refuses.
    """
    from .rundir import load_round, open_run, read_config

    func = "ltfunc export"
    out = check_output_path(func, "-o/--output", ns.output)
    run_dir = open_run(func, ns.run_dir)
    device = check_device(func, ns.device, "--device")
    check_int(func, "--round", ns.round_k, 0)
    model = read_config(run_dir).make_model()
    result = load_round(run_dir, ns.condition, ns.round_k, device=device)
    weights = result.final if ns.weights == "final" else result.start
    dtype = _DTYPES[ns.dtype]
    params: Params = {k: v.to(dtype) for k, v in weights.params.items()}
    bufs = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in weights.buffers.items()}
    module = export_sparse(
        model.to(dtype),
        params,
        result.mask,
        layout=ns.layout,
        blocksize=ns.blocksize,
        buffers=bufs,
        min_sparsity=ns.min_sparsity,
        convs=ns.convs,
    )
    atomic_write_bytes(out, lambda tmp: torch.save(module, tmp))
    print(format_description(module))
    print(f"\nexport: {out}")
    return 0
