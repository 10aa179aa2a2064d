"""Data-parallel step scaling: 1 → 2 processes (gloo, 1 thread each) for LeNet-300-100.

``python -m bench.distributed [--quick] [--no-compile] [--steps N] [--batches 60,120]``

For each global batch ``b`` and each world size ``W`` in (1, 2) it starts ``W`` worker
processes with torchrun's environment variables (``OMP_NUM_THREADS=1`` each), which build
LeNet-300-100 and the masked step of :func:`ltfunc.make_train_step` (with
``grad_reduce=parallel.mean`` when ``W > 1``) and time ``steps`` steps on a fixed batch of
``b / W`` examples, between barriers. Each worker also times the all-reduce alone (one mean of
a flat tensor of the gradients' size, 266,612 floats), the part of a step that bucketing or
overlap with the backward pass could hide at best. Rank 0 prints one JSON line; the table
shows ms per step, the ratio 2 processes / 1 process (< 1: faster) and the all-reduce's share.

This machine: the processes share its CPU cores with whatever else runs; with 2 cores and
other load, 2 processes cannot beat one (see ``docs/cluster.md``). ``--quick`` only checks
that the code runs (batch 60, 3 steps, eager): its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _worker(batch: int, steps: int, warmup: int, compile: bool) -> None:
    import torch
    import torch.distributed as dist

    import ltfunc
    from ltfunc import distributed

    parallel = distributed.init(device="cpu", timeout=600) if "WORLD_SIZE" in os.environ else None
    world = 1 if parallel is None else parallel.world_size
    model = ltfunc.models.lenet300(seed=0)
    reduce = None if parallel is None or world == 1 else parallel.mean
    step = ltfunc.make_train_step(model, ltfunc.optim.sgd(lr=0.1), compile=compile, grad_reduce=reduce)
    params = ltfunc.get_params(model)
    mask = ltfunc.prune.magnitude(params, ltfunc.masks.ones(params), rate=0.5)
    g = torch.Generator().manual_seed(1 + (0 if parallel is None else parallel.rank))
    local = batch // world
    xy = (torch.randn(local, 1, 28, 28, generator=g), torch.randint(0, 10, (local,), generator=g))
    fs = step._pack(step.init(params))

    def barrier() -> None:
        if world > 1:
            dist.barrier()

    for _ in range(warmup):
        fs, metrics = step._flat_step(fs, mask, xy, 0.1)
    metrics["loss"].item()
    barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        fs, metrics = step._flat_step(fs, mask, xy, 0.1)
    metrics["loss"].item()
    barrier()
    step_s = (time.perf_counter() - t0) / steps
    reduce_s = 0.0
    if reduce is not None:
        flat = torch.randn(step.layout.numel + 2)
        out = reduce(flat) + 0  # waits for the collective
        barrier()
        t0 = time.perf_counter()
        for _ in range(steps):
            out = reduce(flat) + 0
        barrier()
        reduce_s = (time.perf_counter() - t0) / steps
        del out
    if parallel is None or parallel.lead:
        row = {"batch": batch, "world": world, "compiled": compile, "steps": steps}
        row |= {"step_ms": step_s * 1e3, "allreduce_ms": reduce_s * 1e3}
        print(json.dumps(row), flush=True)
    distributed.shutdown(parallel)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(batch: int, world: int, steps: int, warmup: int, compile: bool) -> dict[str, Any]:
    """Start ``world`` workers for a global ``batch`` and return rank 0's row."""
    if batch % world:
        raise ValueError(f"bench.distributed: world size {world} does not divide batch {batch}")
    argv = [sys.executable, "-m", "bench.distributed", "--worker", "--batches", str(batch)]
    argv += ["--steps", str(steps), "--warmup", str(warmup)] + ([] if compile else ["--no-compile"])
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    base["OMP_NUM_THREADS"] = "1"
    base["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), base.get("PYTHONPATH")) if p)
    port = str(_port())
    procs = []
    for rank in range(world):
        env = dict(base)
        if world > 1:
            env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "RANK": str(rank)}
            env |= {"WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)}
        procs.append(
            subprocess.Popen(
                argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    outs = [p.communicate(timeout=1800) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode:
            raise RuntimeError(f"bench.distributed: a worker failed ({p.returncode}): {err[-2000:]}")
    return dict(json.loads(outs[0][0].strip().splitlines()[-1]))


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as a text table with the 2-process / 1-process ratio per batch."""
    one = {r["batch"]: r["step_ms"] for r in rows if r["world"] == 1}
    lines = ["batch  processes  ms/step  ratio vs 1 process  all-reduce ms (share of step)"]
    for r in rows:
        ratio = r["step_ms"] / one[r["batch"]] if r["batch"] in one else float("nan")
        share = f"{r['allreduce_ms']:.3f} ({r['allreduce_ms'] / r['step_ms']:.0%})" if r["world"] > 1 else "-"
        lines.append(f"{r['batch']:>5}  {r['world']:>9}  {r['step_ms']:>7.3f}  {ratio:>18.2f}  {share}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark (or, with ``--worker``, one worker process); print and return the rows."""
    p = argparse.ArgumentParser(prog="python -m bench.distributed", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: batch 60, 3 steps, eager")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="eager steps")
    p.add_argument("--steps", type=int, default=200, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first (compiles)")
    p.add_argument("--batches", default="60,120", help="global batch sizes, comma-separated")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    batches = [int(b) for b in ns.batches.split(",")]
    if ns.worker:
        _worker(batches[0], ns.steps, ns.warmup, ns.compile)
        return []
    if ns.quick:
        batches, ns.steps, ns.warmup, ns.compile = [60], 3, 1, False
    rows = [measure(b, w, ns.steps, ns.warmup, ns.compile) for b in batches for w in (1, 2)]
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
