"""The sweep executors' overhead per run (``ltfunc.sweep.run_sweep``): local processes vs Ray, tiny runs.

A run here is tiny (a 192-16-2 MLP on 300 synthetic examples, a few iterations per round), so
what a sweep adds to it dominates: starting worker processes (spawn: a fresh Python importing
torch and ltfunc), sending the task, the run directory's files and the result back, and for
Ray starting the local instance. The same N runs are made

- ``in-process``: one :func:`ltfunc.run_imp` after another in this process (the floor; a
  first run warms the imports up and is not counted);
- ``local``: ``run_sweep(executor="local", workers=W)``, a fresh process pool;
- ``ray``: ``run_sweep(executor="ray", workers=W)``, which starts and stops a local Ray
  instance of W CPUs (reported with and without that start-up, measured separately as
  ``ray.init`` + ``ray.shutdown``).

Each sweep writes into a fresh root, so every run trains. Printed: wall seconds, seconds per
run, and the overhead per run over in-process, ``(wall - in-process wall / W) / N`` (W runs at
a time). Run ``python -m bench.sweep [--quick] [--runs N] [--workers W]`` from the repository
root on a quiet machine; nothing is asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ltfunc.config import ImpConfig
from ltfunc.data import Dataset, Split
from ltfunc.experiment import run_imp
from ltfunc.sweep import expand_grid, run_sweep


def tiny_mlp(seed: int | None = None) -> torch.nn.Module:
    """A 192-16-2 MLP (the runs' model, by import path ``bench.sweep:tiny_mlp``)."""
    if seed is not None:
        torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(192, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)
    )


def tiny_data(device: str = "cpu", val_size: int = 0) -> Dataset:
    """300 synthetic 3x8x8 images whose class is the sign of one pixel (``bench.sweep:tiny_data``)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 3, 8, 8, generator=g).to(device)
    y = (x[:, 0, 4, 4] > 0).long()
    return Dataset(
        "tiny",
        Split(x[val_size:200], y[val_size:200]),
        Split(x[:val_size], y[:val_size]),
        Split(x[200:], y[200:]),
    )


def spec(runs: int, iterations: int) -> dict[str, Any]:
    """A sweep of ``runs`` seeds of one tiny config (2 rounds, one baseline: 5 rounds per run)."""
    base = {
        "model": "bench.sweep:tiny_mlp",
        "dataset": "bench.sweep:tiny_data",
        "rounds": 2,
        "rate": 0.5,
        "iterations": iterations,
        "eval_every": iterations,
        "val_size": 50,
        "batch_size": 16,
        "baselines": ["reinit"],
        "compile": False,
    }
    return {"base": base, "grid": {"seed": list(range(runs))}}


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(*, runs: int, workers: int, iterations: int, ray: bool) -> list[tuple[str, float, float, float]]:
    """``[(mode, wall s, s per run, overhead s per run over in-process)]``."""
    sweep = spec(runs, iterations)
    configs: list[ImpConfig] = [c for _, c in expand_grid(sweep)]
    rows: list[tuple[str, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_imp(configs[0], root / "warm-up", progress=False)
        floor = _timed(
            lambda: [run_imp(c, root / f"in-process/{i}", progress=False) for i, c in enumerate(configs)]
        )
        rows.append(("in-process", floor, floor / runs, 0.0))

        def add(mode: str, wall: float, parallel: int) -> None:
            rows.append((mode, wall, wall / runs, (wall - floor / parallel) / runs))

        add(
            "local, 1 worker",
            _timed(lambda: run_sweep(sweep, root / "local-1", workers=1, progress=False)),
            1,
        )
        if workers > 1:
            wall = _timed(lambda: run_sweep(sweep, root / "local-w", workers=workers, progress=False))
            add(f"local, {workers} workers", wall, workers)
        if ray:
            import ray as ray_module

            def start_stop() -> None:
                ray_module.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
                ray_module.shutdown()

            start = _timed(start_stop)
            wall = _timed(
                lambda: run_sweep(sweep, root / "ray", executor="ray", workers=workers, progress=False)
            )
            add(f"ray, {workers} CPUs (with its start)", wall, workers)
            add(f"ray, {workers} CPUs (without its start)", wall - start, workers)
    return rows


def main(argv: list[str] | None = None) -> list[tuple[str, float, float, float]]:
    """Parse the options, measure, print the table; returns its rows."""
    p = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 runs of 5 iterations per round (a smoke test)")
    p.add_argument("--runs", type=int, default=None, help="runs in the sweep (default 8; quick 2)")
    p.add_argument("--workers", type=int, default=2, help="runs at a time (local processes, Ray CPUs)")
    p.add_argument("--iterations", type=int, default=None, help="iterations per round (default 50; quick 5)")
    p.add_argument("--no-ray", action="store_true", help="leave Ray out (it is left out when not installed)")
    ns = p.parse_args(argv)
    runs = ns.runs or (2 if ns.quick else 8)
    iterations = ns.iterations or (5 if ns.quick else 50)
    ray = not ns.no_ray and importlib.util.find_spec("ray") is not None
    rows = measure(runs=runs, workers=ns.workers, iterations=iterations, ray=ray)
    print(f"{runs} tiny runs (5 rounds of {iterations} iterations each), {ns.workers} at a time")
    print(f"{'mode':38s} {'wall s':>8s} {'s/run':>8s} {'overhead s/run':>15s}")
    for mode, wall, per_run, overhead in rows:
        print(f"{mode:38s} {wall:8.2f} {per_run:8.2f} {overhead:15.2f}")
    if not ray:
        print("(ray: not measured; pip install 'ltfunc[ray]')")
    return rows


if __name__ == "__main__":
    main()
