"""One training step with glibc's malloc as it is vs :func:`ltfunc.allocator.reuse_freed_memory`.

For each model, the compiled masked step on the path ``ltfunc.fit`` drives (its flat state,
an 80% random mask, Adam for the MNIST-shaped models and the CIFAR recipe's SGD for the
CIFAR ones) runs in two processes: this one with :func:`ltfunc.allocator.reuse_freed_memory`
and a child with glibc left as it is. The two take turns window by window (only one runs at a
time, so both see the same machine), and each reports µs per step (min and median window) and
the page faults per step (``ru_minflt``).

Run ``python -m bench.malloc [--models lenet300,conv2,resnet20,vgg16_bn] [--windows 10]
[--steps 5] [--threads N]`` on a quiet machine; it prints a markdown table and the machine.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import ltfunc
import ltfunc.allocator
from bench.report import print_result

SHAPES = {
    "lenet300": ("LeNet-300-100", 60, (1, 28, 28), "adam"),
    "conv2": ("Conv-2", 60, (1, 28, 28), "adam"),
    "resnet20": ("ResNet-20", 128, (3, 32, 32), "sgd"),
    "vgg16_bn": ("VGG-16-BN", 128, (3, 32, 32), "sgd"),
}
"""name: (label, batch, input shape, optimizer)."""


class Turns:
    """Two processes taking turns over a pipe: only the one holding the turn runs (and times) work."""

    def __init__(self, conn: Any, holding: bool) -> None:
        self.conn, self.holding = conn, holding

    def take(self) -> None:
        if not self.holding:
            self.conn.recv()
            self.holding = True

    def give(self) -> None:
        self.conn.send(None)
        self.holding = False


def faults() -> int:
    """This process's minor page faults so far (``ru_minflt``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(name: str, n_windows: int, steps: int, turns: Turns, malloc: str) -> dict[str, Any]:
    """µs per step (min / median window) and page faults per step of ``name``'s fit-path step."""
    turns.take()
    label, batch, shape, opt_name = SHAPES[name]
    model = ltfunc.models.build(name, seed=0)
    params = ltfunc.get_params(model)
    mask = ltfunc.prune.random(params, ltfunc.masks.ones(params), rate=0.2, seed=0)
    opt = ltfunc.optim.adam() if opt_name == "adam" else ltfunc.optim.sgd(momentum=0.9, weight_decay=1e-4)
    step = ltfunc.make_train_step(model, opt, compile=True)
    g = torch.Generator().manual_seed(0)
    xy = (torch.randn(batch, *shape, generator=g), torch.randint(0, 10, (batch,), generator=g))
    fs = step._pack(step.init(params))
    for _ in range(3):  # compile and warm up
        fs, _ = step._flat_step(fs, mask, xy, 0.01)
    us, n_faults = [], 0
    for _ in range(n_windows):
        turns.take()
        f0, t0 = faults(), time.perf_counter()
        for _ in range(steps):
            fs, metrics = step._flat_step(fs, mask, xy, 0.01)
        float(metrics["loss"])
        us.append((time.perf_counter() - t0) / steps * 1e6)
        n_faults += faults() - f0
        turns.give()
    return {
        "model": label,
        "malloc": malloc,
        "min": min(us),
        "median": statistics.median(us),
        "faults": n_faults / (n_windows * steps),
        "weights": sum(p.numel() for p in params.values()),
    }


def _child(names: list[str], n_windows: int, steps: int, threads: int, conn: Any) -> None:
    """The glibc-as-is side: the same measurements, taking turns with the parent."""
    torch.set_num_threads(threads)
    conn.send("ready")  # imported: nothing more runs here outside this process's turns
    turns = Turns(conn, holding=False)
    conn.send([measure(name, n_windows, steps, turns, "system") for name in names])


def beside_child(
    name: str, target: Callable[..., None], args: tuple[Any, ...], here: Callable[[Turns], list[Any]]
) -> list[Any]:
    """``here(turns)`` in this process and ``target(*args, conn)`` in a spawned child, taking turns.

    The child is spawned before anything here changes malloc (glibc as it is there); it sends
    ``"ready"`` once imported, then takes turns and finally sends its rows. Returns here's rows,
    then the child's.
    """
    ctx = mp.get_context("spawn")
    mine, there = ctx.Pipe()
    child = ctx.Process(target=target, args=(*args, there))
    child.start()
    mine.recv()  # its start-up (imports) done before anything is timed here
    turns = Turns(mine, holding=True)
    rows = here(turns)
    turns.take()  # the child's last window
    rows += mine.recv()
    child.join(timeout=60)
    if child.exitcode != 0:
        raise RuntimeError(f"{name}: the glibc-as-is process exited with {child.exitcode}")
    return rows


def run(names: list[str], n_windows: int, steps: int) -> list[dict[str, Any]]:
    """Both sides for every model: rows of :func:`measure`, ``reuse`` first."""

    def here(turns: Turns) -> list[dict[str, Any]]:
        if not ltfunc.allocator.reuse_freed_memory():
            raise RuntimeError("bench.malloc needs glibc")
        return [measure(name, n_windows, steps, turns, "reuse") for name in names]

    return beside_child("bench.malloc", _child, (names, n_windows, steps, torch.get_num_threads()), here)


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per model, both allocators side by side."""
    head = (
        "| model | weights | µs/step, reuse (min / median) | µs/step, glibc as is (min / median) "
        "| reuse / as is (median) | page faults per step, reuse / as is |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|"]
    by = {(r["model"], r["malloc"]): r for r in rows}
    for model in dict.fromkeys(r["model"] for r in rows):
        a, b = by[(model, "reuse")], by[(model, "system")]
        lines.append(
            f"| {model} | {a['weights']:,} | {a['min']:,.0f} / {a['median']:,.0f} | "
            f"{b['min']:,.0f} / {b['median']:,.0f} | {a['median'] / b['median']:.2f} | "
            f"{a['faults']:,.0f} / {b['faults']:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m bench.malloc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(SHAPES), help=f"comma-separated: {','.join(SHAPES)}")
    parser.add_argument("--windows", type=int, default=10, help="windows per model and allocator")
    parser.add_argument("--steps", type=int, default=5, help="steps per window")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads(N) in both processes"
    )
    args = parser.parse_args(argv)
    names = [m for m in args.models.split(",") if m]
    unknown = [m for m in names if m not in SHAPES]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {list(SHAPES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(names, args.windows, args.steps)
    title = f"fit-path step, torch threads: {torch.get_num_threads()}; {args.steps} steps a window, in turns"
    print_result(title, table(rows))
    return rows


if __name__ == "__main__":
    main()
