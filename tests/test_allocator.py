"""ltfunc.allocator: freed memory stays mapped, so a large buffer allocated again does not page-fault."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

import ltfunc.allocator
from ltfunc import cli

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)

# Allocates, fills and frees a 64 MiB tensor four times; prints the page faults of the last one.
_PROBE = """
import resource, sys
import torch
import ltfunc.allocator
if sys.argv[1] == "reuse":
    assert ltfunc.allocator.reuse_freed_memory()
elif sys.argv[1] == "entry":
    ltfunc.allocator.at_entry()
counts = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.ones(16 * 2**20)
    del t
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(counts[-1])
"""


def _faults(mode: str, **env: str) -> int:
    import os

    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
        timeout=120,
    )
    return int(out.stdout.split()[-1])


@glibc
def test_a_freed_large_buffer_is_reused_without_page_faults() -> None:
    pages = 64 * 2**20 // 4096
    assert _faults("system") > pages // 2  # glibc maps 64 MiB afresh on every allocation
    assert _faults("reuse") < pages // 20  # the freed pages are still mapped


@glibc
def test_the_entry_points_call_can_be_turned_off() -> None:
    pages = 64 * 2**20 // 4096
    assert _faults("entry") < pages // 20
    assert _faults("entry", LTFUNC_SYSTEM_MALLOC="1") > pages // 2
    assert _faults("entry", LTFUNC_SYSTEM_MALLOC="0") < pages // 20


def test_reuse_freed_memory_says_whether_it_applied() -> None:
    on_glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert ltfunc.allocator.reuse_freed_memory() is on_glibc
    assert ltfunc.allocator.reuse_freed_memory() is on_glibc  # again: no change, no error


def test_the_command_line_sets_it_up_before_its_work(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(ltfunc.allocator, "at_entry", lambda: calls.append("malloc") or True)
    assert cli.main(["report", "no/such/run"]) == 2
    assert calls == ["malloc"]


def test_worker_processes_set_it_up_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from ltfunc import _sweep_exec, parallel

    calls: list[object] = []
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "2")  # leaves inductor's config alone
    monkeypatch.setattr(ltfunc.allocator, "at_entry", lambda: calls.append("malloc") or True)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    parallel._init_worker(1)
    assert calls == [1, "malloc"]
    monkeypatch.setattr("ltfunc.experiment.run_imp", lambda *a, **k: calls.append("run"))
    _sweep_exec.run_task(_sweep_exec.Task("t", {}, "d", None, False, False, 2))
    assert calls[2:] == [2, "malloc", "run"]
