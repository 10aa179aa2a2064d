"""Sparse training mode: step time against density, dense-masked vs sparse vs the dense floor.

    python -m bench.sparse [--quick] [--models lenet300,conv2] [--densities 1,0.07]
                           [--windows 20] [--per-window 20] [--threads 1] [--out bench]

For each model (batch 60, Adam) and each density of the prunable weights (100, 51, 21, 7,
3.6, 1.4%; a layer-wise magnitude mask of the initial weights), three callables are timed in
interleaved windows (``bench.facade.windows``; min and median over the windows):

- ``dense-masked``: ``ltfunc.make_train_step`` (compiled), the mask as a tensor input;
- ``sparse``: ``ltfunc.make_sparse_train_step(..., sparse="on")`` (compiled once per
  density: its pattern is baked in), Linear weights held as values (convolutions dense-masked);
- ``floor``: the dense bare-matmul floor (``bench.cases.floor``: forward + backward kernels
  of the dense layers, no loss, no optimizer), the same at every density.

It prints a markdown table (µs per step, ratios to the floor, optimizer-state floats of each
mode) and writes ``sparse_step.png`` (step time vs density, log-log) to ``--out``. Every
sparse step is first checked against the dense-masked step (same loss after 3 steps, to
float tolerance). ``--quick``: eager steps, two low densities, a few short windows — a
smoke test, not a measurement.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optree
import torch
from torch import Tensor

import ltfunc
from bench import cases
from bench.facade import windows
from ltfunc.masks import Mask
from ltfunc.sparse_step import make_sparse_train_step

DENSITIES = (1.0, 0.51, 0.21, 0.07, 0.036, 0.014)
"""Densities of the prunable weights (issue #14)."""

QUICK_DENSITIES = (0.036,)


_DENSE: dict[tuple[str, bool], Any] = {}


def density_mask(model: torch.nn.Module, density: float) -> Mask:
    """Layer-wise magnitude mask of ``model``'s prunable weights keeping ``density`` of each layer."""
    params = ltfunc.get_params(model)
    out = {}
    for name, keep in ltfunc.masks.ones(model).items():
        w = params[name].abs().reshape(-1)
        k = round(density * w.numel())
        flat = torch.zeros(w.numel(), dtype=torch.bool)
        if k:
            flat[torch.topk(w, k).indices] = True
        out[name] = flat.view(keep.shape)
    return ltfunc.masks.from_dict(out)


def state_floats(opt_state: Any) -> int:
    """Number of floats in an optimizer state (the per-parameter tensors and the counter)."""
    return sum(t.numel() for t in optree.tree_leaves(opt_state) if isinstance(t, Tensor))


def _runner(step: Any, params: Any, mask: Mask, x: Tensor, y: Tensor) -> tuple[Callable[[], None], Any]:
    holder = {"fs": step._pack(step.init(params))}
    lr = 1.2e-3

    def run() -> None:
        holder["fs"], _ = step._flat_step(holder["fs"], mask, (x, y), lr)

    return run, holder


def variants(
    name: str, density: float, *, compile: bool
) -> tuple[dict[str, Callable[[], None]], dict[str, int]]:
    """The timed callables at one density and the optimizer-state floats of each mode."""
    device = torch.device("cpu")
    model = cases.make_model(name, device)
    params = ltfunc.get_params(model)
    mask = density_mask(model, density)
    x, y = cases.fixed_batch(device)
    opt = ltfunc.optim.adam(lr=1.2e-3)
    key = (name, compile)
    if key not in _DENSE:  # one dense step per model: masks are tensor inputs, no recompiles
        _DENSE[key] = ltfunc.make_train_step(model, opt, compile=compile)
    dense = _DENSE[key]
    sparse = make_sparse_train_step(model, opt, mask, sparse="on", compile=compile)
    _check_same(dense, sparse, params, mask, x, y)
    run_dense, hd = _runner(dense, params, mask, x, y)
    run_sparse, hs = _runner(sparse, params, mask, x, y)
    floor = cases.floor(name, device)
    out = {"dense-masked": run_dense, "sparse": run_sparse, "floor": lambda: floor.step(x, y)}
    for run in out.values():  # compile and warm up outside the timing
        for _ in range(3):
            run()
    floats = {"dense-masked": state_floats(hd["fs"].opt_state), "sparse": state_floats(hs["fs"].opt_state)}
    return out, floats


def _check_same(dense: Any, sparse: Any, params: Any, mask: Mask, x: Tensor, y: Tensor) -> None:
    sd, ss = dense.init(params), sparse.init(params)
    for _ in range(3):
        sd, md = dense(sd, mask, (x, y), 1.2e-3)
        ss, ms = sparse(ss, mask, (x, y), 1.2e-3)
    if not torch.allclose(md["loss"], ms["loss"], rtol=1e-4, atol=1e-5):
        raise AssertionError(f"bench.sparse: sparse loss {float(ms['loss'])} != dense {float(md['loss'])}")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Step time vs density, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        mine = [r for r in rows if r["model"] == model]
        dens = [100 * r["density"] for r in mine]
        for key, style in (("dense-masked", "o-"), ("sparse", "s-"), ("floor", "k--")):
            ax.plot(dens, [r[key] for r in mine], style, label=key)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("density of the prunable weights (%)")
        ax.set_ylabel("µs per training step (min over windows)")
        ax.set_title(f"{model}, batch {cases.BATCH}, Adam")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; return one row per (model, density)."""
    p = argparse.ArgumentParser(
        prog="python -m bench.sparse",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="eager, two densities, short windows (a smoke test)")
    p.add_argument("--models", default="lenet300,conv2")
    p.add_argument(
        "--densities", default=None, help="comma-separated fractions (default: 1,.51,.21,.07,.036,.014)"
    )
    p.add_argument("--windows", type=int, default=20)
    p.add_argument("--per-window", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="bench", help="folder for sparse_step.png")
    ns = p.parse_args(argv)
    torch.set_num_threads(ns.threads)
    compile = not ns.quick
    densities = QUICK_DENSITIES if ns.quick else DENSITIES
    if ns.densities is not None:
        densities = tuple(float(d) for d in ns.densities.split(","))
    n_windows, per_window = (2, 2) if ns.quick else (ns.windows, ns.per_window)
    rows: list[dict[str, Any]] = []
    print(
        f"\nsparse training mode: batch {cases.BATCH}, Adam, {'eager' if ns.quick else 'compiled'}, "
        f"{ns.threads} thread(s), {n_windows} interleaved windows of {per_window} steps; "
        f"torch {torch.__version__}, {platform.machine()}\n"
    )
    print(
        "| model | density % | dense-masked µs | sparse µs | floor µs | sparse / floor | "
        "dense-masked / floor | opt-state floats dense | sparse |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in ns.models.split(","):
        for density in densities:
            runs, floats = variants(name, density, compile=compile)
            times = windows(runs, n_windows, per_window)
            low = {k: min(ts) for k, ts in times.items()}
            row = {"model": name, "density": density, **low}
            row["median"] = {k: statistics.median(ts) for k, ts in times.items()}
            rows.append(row)
            print(
                f"| {name} | {100 * density:g} | {low['dense-masked']:.0f} | {low['sparse']:.0f} | "
                f"{low['floor']:.0f} | {low['sparse'] / low['floor']:.2f} | "
                f"{low['dense-masked'] / low['floor']:.2f} | {floats['dense-masked']} | {floats['sparse']} |",
                flush=True,
            )
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(rows, out / "sparse_step.png")
    print(f"\nplot: {out / 'sparse_step.png'}")
    if not all(math.isfinite(r["sparse"]) for r in rows):  # pragma: no cover
        raise AssertionError("bench.sparse: a non-finite time")
    return rows


if __name__ == "__main__":
    main()
