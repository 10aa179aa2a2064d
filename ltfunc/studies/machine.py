"""The machines that train and collect a study: a JSON-ready description, ``machines.json``.

:func:`machine_info` describes this machine (CPU, cores, torch threads, torch, Python, device);
:func:`ltfunc.studies.run_study` adds it to each run directory's ``machines.json``, and
``results.md`` names every machine a seed was trained on.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..params import atomic_write_bytes

__all__ = ["machine_info"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """A description of this machine for the results: CPU, cores, threads, torch, device.

    Args:
        device: The training device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...); for a CUDA
            device its name is added.

    Returns:
        ``{"cpu", "cores", "torch_threads", "torch", "python", "platform", "device"}`` plus
        ``"gpu"`` for CUDA devices (JSON-ready).

    Example:
        >>> from ltfunc.studies import machine_info
        >>> info = machine_info()
        >>> sorted(info)
        ['cores', 'cpu', 'device', 'platform', 'python', 'torch', 'torch_threads']
    """
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _describe_machine(m: Mapping[str, Any], *, training: bool = True) -> str:
    text = f"{m.get('cpu', 'unknown CPU')}, {m.get('cores', '?')} cores"
    if m.get("torch_threads") is not None:
        text += f" ({m['torch_threads']} torch thread{'s' if m['torch_threads'] != 1 else ''})"
    text += f", torch {m.get('torch', '?')}, Python {m.get('python', '?')}, {m.get('platform', '?')}"
    if training:
        device = m.get("device", "cpu")
        text += f"; device {m['gpu']} ({device})" if m.get("gpu") else f"; device {device}"
    return text


def _read_machines(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "machines.json"
    if not path.is_file():
        return []
    try:  # rundir: machines.json is the studies' own file in the run directory
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"collect: {path} is corrupt ({e}); delete it (it only describes machines)") from e
    machines = data.get("machines") if isinstance(data, dict) else None
    if not isinstance(machines, list):
        raise ValueError(f"collect: {path} must hold {{'machines': [...]}}; delete it to start afresh")
    return [m for m in machines if isinstance(m, dict)]


def _record_machine(run_dir: Path, machine: Mapping[str, Any]) -> None:
    machines = _read_machines(run_dir)
    if dict(machine) not in machines:
        machines.append(dict(machine))
        data = (json.dumps({"machines": machines}, indent=2) + "\n").encode("utf-8")
        atomic_write_bytes(run_dir / "machines.json", lambda tmp: Path(tmp).write_bytes(data))
