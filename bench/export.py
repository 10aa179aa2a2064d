"""Inference latency of exported tickets (``ltfunc.export.export_sparse``) vs the dense model.

LeNet-300-100 and Conv-2 (ltfunc's defaults: 1x28x28 inputs), every prunable layer pruned to
the same density (100, 51, 21, 7, 3.6, 1.4%), batch 1 and 256, ``torch.no_grad()``. Variants,
all in one process and interleaved in short windows (``bench.facade.windows``: 20 windows of
about 50 ms, 5 windows where one forward takes over 0.5 s; min and median µs per forward
over the windows):

- ``dense``: the model with the masked weights (what ``ltfunc.call(model, apply(mask, params))``
  costs; a dense layer's time does not depend on how many of its weights are zero);
- ``csr``: ``export_sparse(..., layout="csr")``: every masked Linear layer CSR, convs dense;
- ``csr+convs`` (Conv-2): the convolutions too, as ``F.unfold`` + CSR matmul;
- ``bsr (block mask)``: ``layout="bsr"`` on a *block-structured* mask of the same density
  (whole ``b x b`` blocks, ``b`` the layer's BSR block side), the case BSR is for;
- ``auto``: ``export_sparse``'s default (CSR from 95% sparsity up, see ``ltfunc.export``).

The ``speed-up`` column is the dense median over the variant's median; the ``verdict`` column
says ``no speed-up`` wherever the variant is not faster than the dense model. ``max |Δ|`` is
the largest difference of the variant's outputs from the dense masked model's. A variant
that converted no layer (``auto`` on a dense layer) says ``no layer converted``: it is the
dense model again, and its time differs from the dense row only by noise.

On CUDA (``--device cuda``) a 2:4 section compares the dense model in float16 with a 2:4 mask
against ``layout="semi_structured"`` (layers whose shape the 2:4 kernels cannot take stay
dense: the ``sparse layers`` column says how many were converted).

Run ``python -m bench.export [--quick] [--device cpu|cuda] [--threads N] [--out FILE.md]``;
it prints a markdown table (no assertion). ``--quick`` (the smoke test): densities 100% and
3.6%, batch 1 and 32, two short windows.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

import ltfunc
from bench.facade import windows
from ltfunc import masks
from ltfunc.export import describe, export_sparse

MODELS: dict[str, Callable[[], nn.Module]] = {
    "lenet300": lambda: ltfunc.models.lenet300(seed=0),
    "conv2": lambda: ltfunc.models.conv2(seed=0),
}
DENSITIES = (1.0, 0.51, 0.21, 0.07, 0.036, 0.014)
BATCHES = (1, 256)
QUICK_DENSITIES = (1.0, 0.036)
QUICK_BATCHES = (1, 32)
WINDOW_SECONDS = 0.05


class Row(NamedTuple):
    """One measured variant."""

    model: str
    batch: int
    density: float
    variant: str
    sparse_layers: str
    min_us: float
    median_us: float
    speedup: float
    max_diff: float


def random_mask(params: dict[str, torch.Tensor], density: float, seed: int = 0) -> masks.Mask:
    """Every prunable layer keeps ``density`` of its weights, uniformly at random."""
    gen = torch.Generator().manual_seed(seed)
    return masks.Mask(
        {k: torch.rand(params[k].shape, generator=gen) < density for k in masks.prunable_names(params)}
    )


def block_side(shape: Sequence[int]) -> int:
    """The BSR block side ``export_sparse`` picks: the largest of 16, 8, 4, 2, 1 dividing both."""
    rows, cols = shape[0], int(torch.tensor(shape[1:]).prod())
    return next(b for b in (16, 8, 4, 2, 1) if rows % b == 0 and cols % b == 0)


def block_mask(params: dict[str, torch.Tensor], density: float, seed: int = 0) -> masks.Mask:
    """Every prunable layer keeps ``density`` of its ``b x b`` blocks (as a 2-D matrix)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k in masks.prunable_names(params):
        shape = params[k].shape
        rows, cols = shape[0], params[k][0].numel()
        b = block_side(shape)
        blocks = torch.rand(rows // b, cols // b, generator=gen) < density
        out[k] = blocks.repeat_interleave(b, 0).repeat_interleave(b, 1).reshape(shape)
    return masks.Mask(out)


def two_four_mask(params: dict[str, torch.Tensor], seed: int = 0) -> masks.Mask:
    """2 kept of every 4 consecutive weights along the input dimension, in every prunable layer."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k in masks.prunable_names(params):
        rows, cols = params[k].shape[0], params[k][0].numel()
        keep = torch.rand(rows, cols // 4, 4, generator=gen).argsort(-1) < 2
        out[k] = keep.reshape(params[k].shape)
    return masks.Mask(out)


def _converted(module: nn.Module) -> str:
    rows = describe(module)
    sparse = [r for r in rows if r.layout != "dense"]
    return f"{len(sparse)}/{len(rows)}" + (f" {sparse[0].layout}" if sparse else "")


def _time_group(
    modules: dict[str, nn.Module], x: torch.Tensor, quick: bool
) -> dict[str, tuple[float, float, float]]:
    """``{variant: (min µs, median µs, max |Δ| to the first variant)}``, interleaved windows."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    outs = {}
    slowest = 1e-6
    with torch.no_grad():
        for name, mod in list(modules.items()):  # warm-up, output check, a per-call time estimate
            try:
                mod(x)
                sync()
            except RuntimeError as e:  # e.g. a sparse kernel this device lacks: say so, go on
                print(f"bench.export: {name} skipped at batch {x.shape[0]}: {e}", file=sys.stderr)
                del modules[name]
                continue
            t = time.perf_counter()
            outs[name] = mod(x)
            sync()
            slowest = max(slowest, time.perf_counter() - t)
        per_window = 1 if quick else max(1, int(WINDOW_SECONDS / slowest))

        def runner(mod: nn.Module) -> Callable[[], None]:
            def run() -> None:
                mod(x)
                sync()

            return run

        n_windows = 2 if quick else (20 if slowest < 0.5 else 5)  # im2col at batch 256 takes seconds
        times = windows({k: runner(m) for k, m in modules.items()}, n_windows, per_window)
    ref = next(iter(outs.values())).float()
    return {
        k: (min(v), statistics.median(v), float((outs[k].float() - ref).abs().max()))
        for k, v in times.items()
    }


def measure(
    model_name: str,
    densities: Sequence[float],
    batches: Sequence[int],
    *,
    device: str = "cpu",
    quick: bool = False,
) -> list[Row]:
    """The rows of one model: every density and batch, every variant (see the module docstring)."""
    model = MODELS[model_name]().to(device).eval()
    params = ltfunc.get_params(model)
    in_shape = (1, 28, 28)
    rows: list[Row] = []
    for density in densities:
        mask = random_mask(params, density).to(device)
        bmask = block_mask(params, density).to(device)
        modules = {
            "dense": export_sparse(model, params, mask, layout="dense"),
            "csr": export_sparse(model, params, mask, layout="csr"),
        }
        if model_name == "conv2":
            modules["csr+convs"] = export_sparse(model, params, mask, layout="csr", convs=True)
        modules["bsr (block mask)"] = export_sparse(model, params, bmask, layout="bsr")
        modules["auto"] = export_sparse(model, params, mask)
        dense_block = export_sparse(model, params, bmask, layout="dense")
        for batch in batches:
            x = torch.randn(batch, *in_shape, device=device)
            timed = _time_group(modules, x, quick)
            # the BSR variant runs another mask: its outputs are compared with its own dense model
            bsr_diff = math.nan
            if "bsr (block mask)" in timed:
                with torch.no_grad():
                    bsr_diff = float((modules["bsr (block mask)"](x) - dense_block(x)).abs().max())
            base = timed["dense"][1]
            for name, (lo, med, diff) in timed.items():
                diff = bsr_diff if name.startswith("bsr") else diff
                conv = _converted(modules[name])
                rows.append(Row(model_name, batch, density, name, conv, lo, med, base / med, diff))
    return rows


def measure_2_4(model_name: str, batches: Sequence[int], *, quick: bool = False) -> list[Row]:
    """CUDA only: the dense float16 model with a 2:4 mask vs ``layout="semi_structured"``."""
    model = MODELS[model_name]().to("cuda", torch.float16).eval()
    params = ltfunc.get_params(model)
    mask = two_four_mask(params).to("cuda")
    modules = {
        "dense fp16 (2:4 mask)": export_sparse(model, params, mask, layout="dense"),
        "semi_structured fp16": export_sparse(model, params, mask, layout="semi_structured"),
    }
    rows = []
    for batch in batches:
        x = torch.randn(batch, 1, 28, 28, device="cuda", dtype=torch.float16)
        timed = _time_group(modules, x, quick)
        base = timed["dense fp16 (2:4 mask)"][1]
        for name, (lo, med, diff) in timed.items():
            rows.append(
                Row(model_name, batch, 0.5, name, _converted(modules[name]), lo, med, base / med, diff)
            )
    return rows


def verdict(row: Row) -> str:
    """``"baseline"``, ``"no layer converted"`` (the dense model again), ``"no speed-up"`` (not
    faster than dense) or e.g. ``"1.80x faster"``."""
    if row.variant == "dense" or row.variant.startswith("dense "):
        return "baseline"
    if row.sparse_layers.startswith("0/"):
        return "no layer converted"
    return "no speed-up" if row.speedup <= 1.0 else f"{row.speedup:.2f}x faster"


def format_table(rows: Sequence[Row]) -> str:
    """The rows as a markdown table, then one line per (model, batch) on where there is no speed-up."""
    lines = [
        "| model | batch | density | variant | sparse layers | min µs | median µs | speed-up | verdict "
        "| max abs diff |",
        "|---|---:|---:|---|---|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.batch} | {100 * r.density:.1f}% | {r.variant} | {r.sparse_layers} | "
            f"{r.min_us:.1f} | {r.median_us:.1f} | {r.speedup:.2f} | {verdict(r)} | {r.max_diff:.1e} |"
        )
    lines.append("")
    groups = sorted({(r.model, r.batch, r.variant) for r in rows if verdict(r) != "baseline"})
    for model, batch, variant in groups:
        slow = [r for r in rows if (r.model, r.batch, r.variant) == (model, batch, variant)]
        slow = [r for r in slow if verdict(r) != "no layer converted"]
        if not slow:
            continue
        none = [f"{100 * r.density:.1f}%" for r in slow if verdict(r) == "no speed-up"]
        if len(none) == len(slow):
            lines.append(f"- {model}, batch {batch}, {variant}: **no speed-up** at any density measured")
        elif none:
            lines.append(f"- {model}, batch {batch}, {variant}: no speed-up at {', '.join(none)}")
        else:
            lines.append(f"- {model}, batch {batch}, {variant}: faster at every density measured")
    return "\n".join(lines)


def machine() -> str:
    """One line: torch version, threads, device."""
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA"
    return f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {dev}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.export``: measure, print (and optionally write) the markdown table."""
    ap = argparse.ArgumentParser(prog="python -m bench.export", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 densities, batch 1 and 32, 2 windows")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N)")
    ap.add_argument("--models", default="lenet300,conv2", help="comma-separated: lenet300, conv2")
    ap.add_argument("--out", default=None, help="also write the table to this markdown file")
    ns = ap.parse_args(argv)
    if ns.threads:
        torch.set_num_threads(ns.threads)
    if ns.device == "cuda" and not torch.cuda.is_available():
        print("bench.export: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    if ns.device == "cuda":
        torch.backends.cuda.matmul.fp32_precision = "ieee"  # no TF32: the same math as the CPU rows
    densities = QUICK_DENSITIES if ns.quick else DENSITIES
    batches = QUICK_BATCHES if ns.quick else BATCHES
    rows: list[Row] = []
    names = [n for n in ns.models.split(",") if n]
    for name in names:
        rows += measure(name, densities, batches, device=ns.device, quick=ns.quick)
    text = f"Exported-ticket inference latency ({machine()}; µs per forward, no_grad)\n\n"
    text += format_table(rows)
    if ns.device == "cuda":
        semi = [r for n in names for r in measure_2_4(n, batches, quick=ns.quick)]
        text += "\n\n2:4 semi-structured (float16, 50% density)\n\n" + format_table(semi)
    print(text)
    if ns.out:
        Path(ns.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
