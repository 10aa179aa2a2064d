"""A study's rounds over worker processes vs one after the other: wall-clock of the same runs.

    python -m bench.parallel [--quick] [--seeds 0,1,2] [--rounds 2] [--iterations 1000] [--repeats 2]
                             [--eval-every N] [--one-thread]

Three seeds of LeNet-300-100 on MNIST (ticket + random reinit + random pruning per round, the
paper's optimizer and batch size, compiled step), run into fresh run directories by
:func:`ltfunc.parallel.run_many` with ``parallel="sequential"`` (one process, torch's default
threads) and ``parallel="processes"`` (one single-threaded worker per core). The two are
alternated ``--repeats`` times and the whole wall-clock is timed, start-up and compilation
included (what a user waits for). ``--eval-every`` sets how often each training evaluates
(default: twice per training; the LeNet study evaluates every 100 iterations, which makes
evaluation more than half of a training's time). The aim (issue #13): processes at <= 0.55x
sequential on 2 cores. ``--one-thread`` adds the sequential runs on one thread
(``torch.set_num_threads(1)``): processes against that show how near-linearly the workers use
the cores, apart from what torch's own second thread gives one process. Prints a markdown
table; needs MNIST under ``$LTFUNC_DATA_ROOT`` (or ../shared/data).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ltfunc.config import ImpConfig
from ltfunc.parallel import available_cores, run_many


def _data_root() -> str:
    for cand in (
        os.environ.get("LTFUNC_DATA_ROOT"),
        str(Path(__file__).resolve().parents[2] / "shared" / "data"),
    ):
        if cand and (Path(cand) / "mnist").is_dir():
            return cand
    raise SystemExit("bench.parallel: MNIST not found: set LTFUNC_DATA_ROOT")


ONE_THREAD = "sequential, 1 thread"
"""The reference mode of ``--one-thread``: ``parallel="sequential"`` with ``torch.set_num_threads(1)``."""


def measure(
    seeds: tuple[int, ...],
    rounds: int,
    iterations: int,
    repeats: int,
    eval_every: int | None = None,
    one_thread: bool = False,
) -> dict[str, list[float]]:
    """Wall seconds of each mode over ``repeats`` alternating repetitions (with ``one_thread``,
    also the sequential runs on one thread: what one core does alone)."""
    every = eval_every or max(1, iterations // 2)
    base = ImpConfig(rounds=rounds, iterations=iterations, eval_every=every, val_size=5000)
    root = _data_root()
    times: dict[str, list[float]] = {"sequential": [], "processes": []}
    if one_thread:
        times[ONE_THREAD] = []
    threads = torch.get_num_threads()
    for _ in range(repeats):
        for mode in times:
            folder = Path(tempfile.mkdtemp(prefix="bench-parallel-"))
            runs = [(dataclasses.replace(base, seed=s), folder / f"seed{s}") for s in seeds]
            torch.set_num_threads(1 if mode == ONE_THREAD else threads)
            t = time.perf_counter()
            how = "sequential" if mode == ONE_THREAD else mode
            run_many(runs, parallel=how, data_root=root, progress=False)
            times[mode].append(time.perf_counter() - t)
            torch.set_num_threads(threads)
            shutil.rmtree(folder)
    return times


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny settings (a smoke test, not a measurement)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=None, help="evaluate every N iterations")
    p.add_argument(
        "--one-thread",
        action="store_true",
        help="also time the sequential runs on one thread (how near-linear the processes use the cores)",
    )
    ns = p.parse_args(argv)
    seeds = tuple(int(s) for s in ns.seeds.split(","))
    if ns.quick:
        seeds, ns.rounds, ns.iterations, ns.repeats = seeds[:2], 1, 20, 1
    times = measure(seeds, ns.rounds, ns.iterations, ns.repeats, ns.eval_every, ns.one_thread)
    trainings = len(seeds) * (1 + 3 * ns.rounds)
    seq, par = min(times["sequential"]), min(times["processes"])
    print(
        f"\n{len(seeds)} seeds x (ticket + 2 baselines) x {ns.rounds} rounds + round 0 = "
        f"{trainings} trainings of {ns.iterations} iterations, evaluated every "
        f"{ns.eval_every or max(1, ns.iterations // 2)}; {available_cores()} cores, "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{ns.repeats} alternating repeat(s)\n"
    )
    print("| mode | wall s (min) | wall s (median) | x sequential (min / median) |")
    print("|---|---|---|---|")
    med = statistics.median(times["sequential"])
    for mode, ts in times.items():
        print(
            f"| {mode} | {min(ts):.1f} | {statistics.median(ts):.1f} | "
            f"{min(ts) / seq:.2f} / {statistics.median(ts) / med:.2f} |"
        )
    print(f"\naim <= 0.55x: {'met' if par / seq <= 0.55 else 'missed'} ({par / seq:.2f}x)")
    if ONE_THREAD in times:
        one = times[ONE_THREAD]
        print(
            f"processes / one-thread sequential: {par / min(one):.2f}x (min), "
            f"{statistics.median(times['processes']) / statistics.median(one):.2f}x (median); "
            f"one-thread / two-thread sequential: {min(one) / seq:.2f}x (min)"
        )


if __name__ == "__main__":
    main()
