"""Member throughput: K training runs as one vmapped step vs K single steps vs K processes.

For LeNet-300-100 and Conv-2 (batch 60 per member, MNIST-shaped random data, Adam, an 80%
random mask) and K = 1, 2, 4, 8, 16 members, the throughput in **member-steps per second**
(K members advanced by one step each = K member-steps) of

(a) ``members``: one compiled :class:`ltfunc.members.MembersStep` advancing all K members per
    call (each member its own batch, params, optimizer state and mask), through the flat path
    :func:`ltfunc.members_train.train_members_round` uses;
(b) ``sequential``: one compiled :func:`ltfunc.make_train_step` step called K times, once per
    member, through the flat path :func:`ltfunc.fit` uses (one step object alternates between
    K states, so it re-masks each member's params on entry: one elementwise product per step);
(c) ``processes``: K worker processes (``multiprocessing`` spawn), each with
    ``torch.set_num_threads(1)`` and its own compiled step, training its own member; the wall
    time of a fixed number of steps, all workers started together after their warm-up
    (process start and compilation excluded), repeated a few times.

(a) and (b) run in this process (``--threads N``: ``torch.set_num_threads(N)``), interleaved in
short windows (:func:`bench.facade.windows`); the table gives the best window and the median
window, and the page faults per member-step. ``--malloc both`` (the default) runs (a) and (b)
twice: here with :func:`ltfunc.allocator.reuse_freed_memory` (what the ``ltfunc`` command and
its workers use) and in a child process with glibc left as it is, the two processes taking
turns window by window (only one runs at a time); without glibc the default is ``system``.
(c) runs with the former and gives the best and the median repeat. Ratios compare medians.
On CUDA (``--device cuda``) only (a) and (b) run, synchronized at the window edges.

Run ``python -m bench.members [--quick] [--threads N] [--models lenet300,conv2] [--ks 1,2,4]
[--windows 20] [--steps 40] [--malloc reuse|system|both]``
on a quiet machine; it prints a markdown table and the machine (no assertion).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

import ltfunc
import ltfunc.allocator
from bench.facade import windows
from bench.malloc import Turns, beside_child, faults
from bench.report import print_result
from ltfunc.members import make_members_step

BATCH = 60
LR = 1.2e-3
KS = (1, 2, 4, 8, 16)
MODELS = {"lenet300": "LeNet-300-100", "conv2": "Conv-2"}
N_DATA = 4
"""Distinct batches cycled through per member (random data: the values do not change the cost)."""


def member(
    name: str, i: int, device: str
) -> tuple[torch.nn.Module, dict[str, torch.Tensor], ltfunc.masks.Mask]:
    """Member ``i``'s model, params (seed ``i``) and 80% random mask."""
    model = ltfunc.models.build(name, seed=i).to(device)
    params = ltfunc.get_params(model)
    mask = ltfunc.prune.random(params, ltfunc.masks.ones(params), rate=0.2, seed=i)
    return model, params, mask


def data(k: int, seed: int, device: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``N_DATA`` batches of K members: ``x (K, 60, 1, 28, 28)``, ``y (K, 60)``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(N_DATA):
        x = torch.randn(k, BATCH, 1, 28, 28, generator=g)
        out.append((x.to(device), torch.randint(0, 10, (k, BATCH), generator=g).to(device)))
    return out


def cycle(items: list[Any]) -> Iterator[Any]:
    while True:
        yield from items


def _variants(
    model: torch.nn.Module,
    opt: ltfunc.optim.Optimizer,
    step: ltfunc.TrainStep,
    mask: ltfunc.masks.Mask,
    params: list[dict[str, torch.Tensor]],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, Callable[[], None]]:
    """(a) and (b) for ``len(params)`` members, each call one step of every member."""
    k = len(params)
    vstep = make_members_step(model, opt, compile=True)
    fs, _ = vstep._pack("bench", vstep.init(params))
    masks = [mask] * k
    flats = [step._pack(step.init(p)) for p in params]
    feed_a, feed_b = cycle(batches), cycle(batches)

    def run_members() -> None:
        nonlocal fs
        fs, _ = vstep._flat_step("bench", fs, masks, next(feed_a), LR)

    def run_sequential() -> None:
        x, y = next(feed_b)
        for i in range(k):
            flats[i], _ = step._flat_step(flats[i], mask, (x[i], y[i]), LR)

    return {"members": run_members, "sequential": run_sequential}


def _counted(run: Callable[[], None], counter: list[int]) -> Callable[[], None]:
    """``run``, adding the page faults it causes to ``counter[0]``."""

    def call() -> None:
        before = faults()
        run()
        counter[0] += faults() - before

    return call


def in_process(
    name: str,
    ks: tuple[int, ...],
    quick: bool,
    device: str,
    n_windows: int = 20,
    steps: int = 40,
    malloc: str = "reuse",
    turns: Turns | None = None,
) -> list[dict[str, Any]]:
    """(a) and (b) for every K: member-steps/s of the best and the median window, page faults per member-step.

    ``n_windows`` windows of ``max(5, steps // K)`` calls per variant (4 of 2 with ``quick``).
    ``malloc``: ``"reuse"`` calls :func:`ltfunc.allocator.reuse_freed_memory` first,
    ``"system"`` leaves glibc as it is (the process must not have called it), ``"both"`` runs
    ``"reuse"`` here and ``"system"`` in a child process, the two taking turns window by
    window (rows of the child have ``malloc="system"``).
    """
    if malloc == "both":
        return beside_child(
            "bench.members",
            _system_child,
            (name, ks, quick, device, n_windows, steps, torch.get_num_threads()),
            lambda mine: in_process(name, ks, quick, device, n_windows, steps, "reuse", mine),
        )
    if malloc == "reuse" and not ltfunc.allocator.reuse_freed_memory():
        raise RuntimeError("bench.members: --malloc reuse needs glibc")
    if turns is not None:
        turns.take()
    kmax = max(ks)
    members = [member(name, i, device) for i in range(kmax)]
    model = members[0][0]
    opt = ltfunc.optim.adam(lr=LR)
    mask = members[0][2]  # one mask object for all: both variants hit their mask caches
    step = ltfunc.make_train_step(model, opt, compile=True)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    rows = []
    for k in ks:
        if turns is not None:
            turns.take()
        counts = {"members": [0], "sequential": [0]}
        variants = {
            v: _counted(run, counts[v])
            for v, run in _variants(
                model, opt, step, mask, [p for _, p, _ in members[:k]], data(k, k, device)
            ).items()
        }
        for run in variants.values():  # warm-up: compilation
            for _ in range(3):
                run()
        for f in counts.values():
            f[0] = 0
        n, per_window = (4, 2) if quick else (n_windows, max(5, steps // k))
        times: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(n):
            if turns is not None:
                turns.take()
            for v, us in windows(variants, 1, per_window, sync).items():
                times[v] += us
            if turns is not None:
                turns.give()
        for variant, us in times.items():
            rows.append(
                {
                    "model": name,
                    "k": k,
                    "variant": variant,
                    "malloc": malloc,
                    "best": k / (min(us) * 1e-6),
                    "median": k / (statistics.median(us) * 1e-6),
                    "faults": counts[variant][0] / (n * per_window * k),
                }
            )
    return rows


def _system_child(
    name: str,
    ks: tuple[int, ...],
    quick: bool,
    device: str,
    n_windows: int,
    steps: int,
    threads: int,
    conn: Any,
) -> None:
    """``in_process(..., malloc="system")`` taking turns with the parent; sends its rows when done."""
    torch.set_num_threads(threads)
    conn.send("ready")
    conn.send(in_process(name, ks, quick, device, n_windows, steps, "system", Turns(conn, holding=False)))


def _worker(name: str, i: int, steps: int, repeats: int, barrier: Any, out: Any) -> None:
    """(c): one member in its own single-threaded process; puts ``(i, [(start, end), ...])``."""
    torch.set_num_threads(1)
    ltfunc.allocator.reuse_freed_memory()  # as ltfunc's own workers do
    model, params, mask = member(name, i, "cpu")
    step = ltfunc.make_train_step(model, ltfunc.optim.adam(lr=LR), compile=True)
    flat = step._pack(step.init(params))
    feed = cycle([(x[0], y[0]) for x, y in data(1, 100 + i, "cpu")])
    for _ in range(3):  # warm-up: compilation
        flat, _ = step._flat_step(flat, mask, next(feed), LR)
    spans = []
    for _ in range(repeats):
        barrier.wait()
        start = time.perf_counter()
        for _ in range(steps):
            flat, metrics = step._flat_step(flat, mask, next(feed), LR)
        float(metrics["loss"])
        spans.append((start, time.perf_counter()))
    out.put((i, spans))


def processes(name: str, ks: tuple[int, ...], quick: bool, steps: int = 100) -> list[dict[str, Any]]:
    """(c) for every K: member-steps/s of the best and the median repeat (wall time of all K)."""
    ctx = mp.get_context("spawn")
    steps, repeats = (5, 2) if quick else (steps, 5)
    rows = []
    saved = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "TORCHINDUCTOR_COMPILE_THREADS")}
    os.environ.update({"OMP_NUM_THREADS": "1", "TORCHINDUCTOR_COMPILE_THREADS": "1"})  # the children's
    try:
        for k in ks:
            barrier, out = ctx.Barrier(k), ctx.Queue()
            procs = [
                ctx.Process(target=_worker, args=(name, i, steps, repeats, barrier, out)) for i in range(k)
            ]
            for p in procs:
                p.start()
            spans = dict(out.get(timeout=1800) for _ in procs)
            for p in procs:
                p.join(timeout=60)
                if p.exitcode != 0:
                    raise RuntimeError(f"bench.members: worker {p.name} exited with {p.exitcode}")
            walls = [
                max(spans[i][r][1] for i in range(k)) - min(spans[i][r][0] for i in range(k))
                for r in range(repeats)
            ]
            rates = [k * steps / w for w in walls]
            rows.append(
                {
                    "model": name,
                    "k": k,
                    "variant": "processes",
                    "malloc": "reuse",
                    "best": max(rates),
                    "median": statistics.median(rates),
                }
            )
    finally:
        for v, value in saved.items():
            if value is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = value
    return rows


def _rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table: member-steps/s (best / median), median ratios and page faults per member-step.

    One line per model, K and malloc setting (``reuse``: :func:`ltfunc.allocator.reuse_freed_memory`;
    ``system``: glibc as it is); (c) always runs with ``reuse``.
    """
    by = {(r["model"], r["k"], r["variant"], r["malloc"]): r for r in rows}
    has_c = any(r["variant"] == "processes" for r in rows)
    head = "| model | K | malloc | (a) members, 1 vmapped step | (b) K sequential steps |"
    head += " (c) K processes × 1 thread | (a)/(b) | (a)/(c) |" if has_c else " (a)/(b) |"
    head += " faults per member-step (a) / (b) |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    mallocs = [
        m for m in ("reuse", "system") if any(r["malloc"] == m and r["variant"] != "processes" for r in rows)
    ]
    for model, k in sorted(
        {(r["model"], r["k"]) for r in rows}, key=lambda mk: (list(MODELS).index(mk[0]), mk[1])
    ):
        for malloc in mallocs:
            a, b = by.get((model, k, "members", malloc)), by.get((model, k, "sequential", malloc))
            c = by.get((model, k, "processes", malloc))
            cells = [
                "—" if r is None else f"{_rate(r['best'])} / {_rate(r['median'])}"
                for r in ((a, b, c) if has_c else (a, b))
            ]
            for other in (b, c) if has_c else (b,):
                cells.append("—" if a is None or other is None else f"{a['median'] / other['median']:.2f}")
            cells.append(" / ".join("—" if r is None else f"{r['faults']:,.0f}" for r in (a, b)))
            lines.append(f"| {MODELS[model]} | {k} | {malloc} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m bench.members", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="K = 1, 2 and a few short windows (a smoke run)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N) for (a) and (b)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: lenet300,conv2")
    parser.add_argument("--ks", default=None, help="comma-separated member counts (default 1,2,4,8,16)")
    parser.add_argument("--device", default="cpu", help="device of (a) and (b); (c) runs on the CPU only")
    parser.add_argument("--no-processes", action="store_true", help="skip (c)")
    parser.add_argument("--windows", type=int, default=20, help="interleaved windows of (a) and (b)")
    parser.add_argument(
        "--malloc",
        choices=("reuse", "system", "both"),
        default="both" if platform.libc_ver()[0] == "glibc" else "system",
        help="allocator of (a) and (b): ltfunc.allocator's setting, glibc's, or both (taking turns)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=40,
        help="calls per window: max(5, STEPS // K); (c): 2.5 x STEPS per repeat",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {list(MODELS)}")
    ks = tuple(int(v) for v in args.ks.split(",")) if args.ks else ((1, 2) if args.quick else KS)
    rows: list[dict[str, Any]] = []
    for name in models:
        rows += in_process(name, ks, args.quick, args.device, args.windows, args.steps, args.malloc)
        if not args.no_processes and args.device == "cpu":
            rows += processes(name, ks, args.quick, max(5, round(args.steps * 2.5)))
    print_result(
        f"member-steps/s, best / median window ((c): repeat); batch {BATCH} per member, Adam, 80% mask; "
        f"(a), (b) on {args.device}, torch threads: {torch.get_num_threads()}",
        table(rows),
    )
    return rows


if __name__ == "__main__":
    main()
