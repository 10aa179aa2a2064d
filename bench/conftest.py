"""pytest-benchmark plumbing: options, devices, calibrated timing, and the ratio report."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from bench import report
from bench.cases import BATCH, Feed, Measure, Runner


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ltfunc bench")
    group.addoption("--bench-rounds", type=int, default=20, help="timed rounds per benchmark (default 20)")
    group.addoption(
        "--bench-min-time",
        type=float,
        default=0.05,
        help="seconds each timed round should last; steps per round are calibrated to it (default 0.05)",
    )
    group.addoption(
        "--bench-threads",
        type=int,
        default=None,
        help="torch.set_num_threads(N) for the run (default: torch's)",
    )


def pytest_configure(config: pytest.Config) -> None:
    threads = config.getoption("--bench-threads", default=None)
    if threads:
        torch.set_num_threads(threads)
    if torch.cuda.is_available():
        # Full float32 everywhere (no TF32), like the JAX rows, so every row does the same math.
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        torch.backends.cudnn.conv.fp32_precision = "ieee"


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    machine_info["ltfunc_bench"] = report.machine_summary()


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    session = getattr(config, "_benchmarksession", None)
    if session is None or session.disabled or not session.benchmarks:
        return
    records = [b.as_dict(include_data=False) for b in session.benchmarks if not b.has_error]
    terminalreporter.write_line("")
    for line in report.format_report(records, report.machine_summary()).splitlines():
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder holding torchvision's ``mnist/``: ltfunc's default root, else ``../shared/data``."""
    import ltfunc.data

    candidates = [ltfunc.data.resolve_root(), Path(__file__).resolve().parents[2] / "shared" / "data"]
    for root in candidates:
        if (root / "mnist" / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return root
    pytest.skip(
        "real MNIST not found (looked in " + ", ".join(map(str, candidates)) + "): set LTFUNC_DATA_ROOT "
        "to a folder holding mnist/ in torchvision layout"
    )


@pytest.fixture
def measure(benchmark: Any, request: pytest.FixtureRequest) -> Measure:
    """Time ``runner`` with pytest-benchmark's pedantic mode, compile/warm-up excluded.

    ``measure(runner, feed, model=..., device=..., variant=..., optimizer=...)``: ``feed`` is
    a fixed ``(x, y)`` batch (step benchmarks) or an iterator of batches (whole iterations,
    the fetch is timed). Steps per round are calibrated so a round lasts ``--bench-min-time``;
    the runner is synchronized at the end of each round, so queued GPU work is counted.
    """
    rounds = request.config.getoption("--bench-rounds")
    min_time = request.config.getoption("--bench-min-time")

    def run(runner: Runner, feed: Feed, *, model: str, device: str, variant: str, optimizer: str) -> None:
        if isinstance(feed, tuple):
            x, y = feed

            def steps(k: int) -> None:
                for _ in range(k):
                    runner.step(x, y)
                runner.sync()

        else:
            it = feed

            def steps(k: int) -> None:
                for _ in range(k):
                    runner.step(*next(it))
                runner.sync()

        steps(2)
        start = time.perf_counter()
        steps(3)
        per_step = (time.perf_counter() - start) / 3
        k = max(1, min(10_000, math.ceil(min_time / max(per_step, 1e-9))))
        benchmark.group = f"{model} · batch {BATCH} · {device}"
        benchmark.extra_info.update(
            {
                "model": model,
                "device": device,
                "batch": BATCH,
                "variant": variant,
                "kind": report.VARIANTS[variant].kind,
                "optimizer": optimizer,
                "steps_per_round": k,
                "torch_threads": torch.get_num_threads(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            }
        )
        benchmark.pedantic(steps, args=(k,), rounds=rounds, warmup_rounds=1, iterations=1)

    return run
