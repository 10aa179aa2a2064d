"""The single masked step against JAX and against a roofline floor, interleaved in one process.

    python -m bench.floor [--quick] [--model lenet300|conv2] [--windows 30] [--threads 1,2]

Variants, all on one fixed batch of 60 (Adam, 80% of each layer's weights pruned), timed in
short interleaved windows (``bench.facade.windows``) so the machine's drift hits all of them
alike; each is reported as the minimum and the median over the windows, with the spread
(max / min of the windows):

- ``ltfunc``: ``make_train_step(..., compile=True)`` called with its ``TrainState`` fed back;
- ``ltfunc (fit path)``: the same step as ``ltfunc.fit`` and every IMP round drive it, on its
  internal flat state (no ``TrainState`` packed and unpacked per call);
- ``jax``: the same masked step in JAX + optax, ``jax.jit`` with donated buffers (XLA keeps
  its own thread pool: ``--threads`` does not change it; see ``bench/README.md``);
- ``matmul floor``: the bare forward + backward kernels (``bench.cases.floor``);
- ``roofline floor``: the matmul floor plus one pass over the bytes the optimizer update must
  read and write (params, gradients, Adam's two moments and the mask in; params and moments
  out: ``BYTES_PER_WEIGHT``), timed as one ``copy_`` of that many bytes (the machine's copy
  bandwidth at that working-set size).

Prints a markdown table per thread count with the ratios ltfunc / jax and ltfunc / roofline
(aims of issue #13: <= 1.0x JAX and <= 1.5x the roofline floor).
"""

from __future__ import annotations

import argparse
import platform
import statistics
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from bench import cases
from bench.facade import windows

BYTES_PER_WEIGHT = 4 * 4 + 1 + 4 * 3
"""What an Adam update over the flat layout must move per weight: params, gradients, the two
moments (float32) and the bool mask in; params and the two moments out."""


def _optimizer_pass(name: str) -> Callable[[], None]:
    """One pass over the bytes an Adam update must move, at the machine's copy bandwidth.

    A ``copy_`` of a uint8 buffer reads and writes half of ``BYTES_PER_WEIGHT`` bytes per
    weight each: the same traffic as the update, in the same cache level, with one kernel
    launch and no arithmetic. What a perfectly fused update could cost, no less.
    """
    n = sum(p.numel() for p in cases.make_model(name, torch.device("cpu")).parameters())
    half = n * BYTES_PER_WEIGHT // 2
    src, dst = torch.ones(half, dtype=torch.uint8), torch.empty(half, dtype=torch.uint8)

    def run() -> None:
        dst.copy_(src)

    return run


def _fit_path(name: str, mask: Any, x: Tensor, y: Tensor) -> Callable[[], None]:
    """The step as ``ltfunc.fit`` drives it: on its flat state, without a TrainState per call."""
    import ltfunc
    from ltfunc.step import make_train_step

    model = cases.make_model(name, torch.device("cpu"))
    step = make_train_step(model, cases.ltfunc_optimizer("adam"), compile=True)
    state = [step._pack(step.init(ltfunc.masks.apply(mask, ltfunc.get_params(model))))]
    lr = cases.HPARAMS["adam"]["lr"]

    def run() -> None:
        state[0], _ = step._flat_step(state[0], mask, (x, y), lr)

    return run


def variants(name: str) -> dict[str, Callable[[], None]]:
    """The timed callables (each one training step, or the floor's kernels)."""
    device = torch.device("cpu")
    mask = cases.make_mask(cases.make_model(name, device))
    x, y = cases.fixed_batch(device)
    out: dict[str, Callable[[], None]] = {}
    ours = cases.ltfunc_runner(name, device, "adam", mask, compile=True)
    out["ltfunc"] = lambda: ours.step(x, y)
    out["ltfunc (fit path)"] = _fit_path(name, mask, x, y)
    try:
        from bench.jax_cases import jax_runner

        jr = jax_runner(name, device, "adam", mask)
        jx, jy = jr.convert(x, y)

        def jax_step() -> None:
            jr.step(jx, jy)
            jr.sync()

        out["jax"] = jax_step
    except ImportError:  # pragma: no cover - jax not installed
        pass
    fl = cases.floor(name, device)
    out["matmul floor"] = lambda: fl.step(x, y)
    opt = _optimizer_pass(name)

    def roofline() -> None:
        fl.step(x, y)
        opt()

    out["roofline floor"] = roofline
    for run in out.values():  # compile and warm up outside the timing
        for _ in range(5):
            run()
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few short windows (a smoke test, not a measurement)")
    p.add_argument("--model", default="lenet300", choices=("lenet300", "conv2"))
    p.add_argument("--windows", type=int, default=30)
    p.add_argument("--per-window", type=int, default=50)
    p.add_argument("--threads", default="1,2")
    ns = p.parse_args(argv)
    n_windows, per_window = (3, 3) if ns.quick else (ns.windows, ns.per_window)
    runs = variants(ns.model)
    print(f"\n{ns.model}, batch 60, Adam, 80% pruned; torch {torch.__version__}, {platform.machine()}")
    for threads in (int(t) for t in ns.threads.split(",")):
        torch.set_num_threads(threads)
        times = windows(runs, n_windows, per_window)
        print(f"\n{threads} torch thread(s), {n_windows} interleaved windows of {per_window} steps\n")
        print("| variant | µs min | µs median | spread (max/min) |")
        print("|---|---|---|---|")
        for k, ts in times.items():
            print(f"| {k} | {min(ts):.0f} | {statistics.median(ts):.0f} | {max(ts) / min(ts):.2f} |")
        med = {k: statistics.median(ts) for k, ts in times.items()}
        low = {k: min(ts) for k, ts in times.items()}
        for ours in ("ltfunc", "ltfunc (fit path)"):
            for ref in ("jax", "roofline floor", "matmul floor"):
                if ref in med:
                    print(
                        f"\n{ours} / {ref}: {low[ours] / low[ref]:.2f}x (min), "
                        f"{med[ours] / med[ref]:.2f}x (median)",
                        end="",
                    )
        print()


if __name__ == "__main__":
    main()
