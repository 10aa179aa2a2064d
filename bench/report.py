"""Turn pytest-benchmark results into µs/step with ratios to the baselines and the floor.

Printed at the end of ``python -m pytest bench`` by ``bench/conftest.py``; for a saved run:

    python -m pytest bench -q --benchmark-json bench-results.json
    python -m bench.report bench-results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata
from typing import Any, NamedTuple


class Variant(NamedTuple):
    """How one benchmark row is labelled and what it is compared with."""

    label: str
    kind: str  # "floor", "step" or "iteration"
    baseline: str | None  # variant whose µs/step (same optimizer) is the "× baseline" denominator


VARIANTS: dict[str, Variant] = {
    "floor": Variant("floor: bare fwd+bwd kernels (addmm/relu/mm)", "floor", None),
    "dense-eager": Variant("dense eager nn.Module + torch.optim", "step", "dense-eager"),
    "hooks-l1": Variant("torch prune hooks, l1_unstructured/layer", "step", "dense-eager"),
    "hooks-global": Variant("torch prune hooks, global_unstructured", "step", "dense-eager"),
    "seed-numpy": Variant("seed: grad*mask via numpy round trip", "step", "dense-eager"),
    "seed-torch": Variant("seed: grad.mul_(mask), eager torch", "step", "dense-eager"),
    "ltfunc-eager": Variant("ltfunc step, eager (compile=False)", "step", "dense-eager"),
    "ltfunc-compiled": Variant("ltfunc step, compiled, masked", "step", "dense-eager"),
    "ltfunc-compiled-dense": Variant("ltfunc step, compiled, mask=None", "step", "dense-eager"),
    "jax-jit": Variant("JAX + optax masked step, jax.jit", "step", "dense-eager"),
    "iter-ltfunc": Variant("iteration: ltfunc batches + compiled step", "iteration", "iter-dataloader"),
    "iter-dataloader": Variant("iteration: DataLoader(ToTensor) + eager", "iteration", "iter-dataloader"),
    "iter-dataloader-seed": Variant(
        "iteration: DataLoader + seed numpy step", "iteration", "iter-dataloader"
    ),
}
"""Every benchmark variant, in report order."""


class Row(NamedTuple):
    """One line of the report."""

    model: str
    device: str
    variant: str
    optimizer: str
    us_per_step: float
    vs_baseline: float | None
    vs_floor: float | None


def us_per_step(record: dict[str, Any]) -> float:
    """Median µs of one step (or iteration) of a pytest-benchmark record made by ``bench/conftest.py``."""
    return record["stats"]["median"] / record["extra_info"]["steps_per_round"] * 1e6


def build_rows(records: Iterable[dict[str, Any]]) -> list[Row]:
    """Per-step times and ratios for every record that carries ltfunc bench ``extra_info``.

    ``vs_baseline``: this row / the baseline row of the same model, device and optimizer
    (dense eager for steps, the DataLoader loop for whole iterations). ``vs_floor``: this
    row / the floor of the same model and device.
    """
    times: dict[tuple[str, str, str, str], float] = {}
    for r in records:
        info = r.get("extra_info") or {}
        if info.get("variant") not in VARIANTS:
            continue
        times[(info["model"], info["device"], info["variant"], info["optimizer"])] = us_per_step(r)
    order = list(VARIANTS)
    rows = []
    for (model, device, variant, opt), us in sorted(
        times.items(), key=lambda kv: (kv[0][0], kv[0][1], order.index(kv[0][2]), kv[0][3])
    ):
        base_name = VARIANTS[variant].baseline
        base = times.get((model, device, base_name, opt)) if base_name else None
        fl = times.get((model, device, "floor", "-"))
        rows.append(
            Row(model, device, variant, opt, us, us / base if base else None, us / fl if fl else None)
        )
    return rows


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_table(rows: Sequence[Row]) -> str:
    """Rows grouped by model and device, as fixed-width text."""
    out: list[str] = []
    header = f"  {'variant':<44} {'optim':<9} {'µs/step':>10} {'x baseline':>11} {'x floor':>8}"
    group = None
    for row in rows:
        if (row.model, row.device) != group:
            group = (row.model, row.device)
            out += ["", f"{row.model} · batch 60 · {row.device}", header]
        out.append(
            f"  {VARIANTS[row.variant].label:<44} {row.optimizer:<9} {row.us_per_step:>10.1f} "
            f"{_ratio(row.vs_baseline):>11} {_ratio(row.vs_floor):>8}"
        )
    return "\n".join(out)


class Aim(NamedTuple):
    """A target ratio that the report measures (never asserts)."""

    text: str
    numerator: tuple[str, str]  # (variant, optimizer)
    denominator: tuple[str, str]
    bound: float
    at_most: bool  # True: ratio <= bound is met; False: ratio >= bound is met


AIMS: tuple[Aim, ...] = (
    Aim("compiled masked Adam / JAX+optax jit", ("ltfunc-compiled", "adam"), ("jax-jit", "adam"), 1.10, True),
    Aim("compiled masked SGD-m / floor", ("ltfunc-compiled", "momentum"), ("floor", "-"), 1.25, True),
    Aim(
        "compiled masked Adam / dense eager", ("ltfunc-compiled", "adam"), ("dense-eager", "adam"), 1.0, True
    ),
    Aim(
        "compiled masked SGD-m / dense eager",
        ("ltfunc-compiled", "momentum"),
        ("dense-eager", "momentum"),
        1.0,
        True,
    ),
    Aim("compiled masked Adam / prune hooks", ("ltfunc-compiled", "adam"), ("hooks-l1", "adam"), 1.0, True),
    Aim(
        "compiled masked Adam / compiled dense",
        ("ltfunc-compiled", "adam"),
        ("ltfunc-compiled-dense", "adam"),
        1.05,
        True,
    ),
    Aim(
        "DataLoader iteration / ltfunc iteration",
        ("iter-dataloader", "adam"),
        ("iter-ltfunc", "adam"),
        4.0,
        False,
    ),
)
"""The targets of the design (measured and reported, not asserted)."""


def format_aims(rows: Sequence[Row]) -> str:
    """One line per aim and (model, device) where both sides were measured."""
    times = {(r.model, r.device, r.variant, r.optimizer): r.us_per_step for r in rows}
    groups = sorted({(r.model, r.device) for r in rows})
    out = ["", "aims (measured, not asserted):"]
    for aim in AIMS:
        for model, device in groups:
            num = times.get((model, device, *aim.numerator))
            den = times.get((model, device, *aim.denominator))
            if num is None or den is None:
                continue
            ratio = num / den
            met = ratio <= aim.bound if aim.at_most else ratio >= aim.bound
            sign = "<=" if aim.at_most else ">="
            out.append(
                f"  {aim.text:<40} {model:<9} {device:<5} {ratio:6.2f}x  "
                f"(aim {sign} {aim.bound:.2f}x: {'met' if met else 'NOT met'})"
            )
    if len(out) == 2:
        out.append("  (no aim has both of its rows in this run)")
    return "\n".join(out)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_summary() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, threads, library versions, GPU."""
    import torch

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "jax": _version("jax"),
        "optax": _version("optax"),
    }
    return info


def format_machine(machine: dict[str, Any]) -> str:
    """The machine description as two lines."""
    return (
        f"machine: {machine.get('cpu')}, {machine.get('usable_cores')} usable of "
        f"{machine.get('logical_cores')} logical cores, {machine.get('platform')}\n"
        f"software: torch {machine.get('torch')} ({machine.get('torch_threads')} threads, "
        f"OMP_NUM_THREADS={machine.get('OMP_NUM_THREADS')}), python {machine.get('python')}, "
        f"jax {machine.get('jax')} (XLA_FLAGS={machine.get('XLA_FLAGS')}), optax {machine.get('optax')}, "
        f"GPU: {machine.get('cuda') or 'none'}"
    )


def print_result(title: str, table: str) -> None:
    """Print a standalone benchmark's result: its title line, its markdown table and the machine."""
    print(title)
    print()
    print(table)
    print()
    print(format_machine(machine_summary()))


def format_report(records: Iterable[dict[str, Any]], machine: dict[str, Any]) -> str:
    """The full report: machine, per-group table, aims.

    Args:
        records: pytest-benchmark records (``benchmarks`` of its JSON, or ``Metadata.as_dict()``).
        machine: A :func:`machine_summary` dict.

    Returns:
        Printable text.

    Example:
        >>> rec = lambda v, o, s: {"stats": {"median": s}, "extra_info": {"model": "lenet300",
        ...     "device": "cpu", "variant": v, "optimizer": o, "steps_per_round": 10}}
        >>> rows = build_rows([rec("floor", "-", 1e-3), rec("dense-eager", "adam", 4e-3),
        ...                    rec("ltfunc-compiled", "adam", 2e-3)])
        >>> [(r.variant, round(r.us_per_step), r.vs_baseline, r.vs_floor) for r in rows]
        [('floor', 100, None, 1.0), ('dense-eager', 400, 1.0, 4.0), ('ltfunc-compiled', 200, 0.5, 2.0)]
    """
    records = list(records)
    rows = build_rows(records)
    title = "ltfunc bench: median µs per training step (lower is better); x = ratio to baseline / floor"
    return "\n".join(
        [
            "=" * len(title),
            title,
            format_machine(machine),
            "baseline: dense eager (same optimizer) for steps, the DataLoader loop for whole iterations",
            format_table(rows),
            format_aims(rows),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Print the report of a ``--benchmark-json`` file."""
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("json", help="file written by pytest --benchmark-json")
    args = parser.parse_args(argv)
    with open(args.json, encoding="utf-8") as f:
        data = json.load(f)
    machine = data.get("machine_info", {}).get("ltfunc_bench") or {}
    print(format_report(data.get("benchmarks", []), machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
