"""Data-parallel IMP (ltfunc.distributed): 2 gloo processes on localhost against one process.

The multi-process tests start real processes: ``torchrun`` (``python -m torch.distributed.run
--standalone``) for the launch path users take, and two plain processes with torchrun's
environment variables for the failure tests (without torchrun's agent, which would stop the
surviving rank itself: here the surviving rank has to notice and stop on its own).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import ltfunc
from ltfunc import distributed, rundir
from ltfunc.data import Split, batches
from tests.helpers import tiny_dataset

ROOT = Path(__file__).resolve().parents[1]


def tiny_mlp(width: int = 16, seed: int | None = None) -> torch.nn.Module:
    """A model factory for the subprocesses (given by import path)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0 if seed is None else seed)
        return torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, width), torch.nn.ReLU(), torch.nn.Linear(width, 10)
        )


ARGS = [
    "imp", "--model", "tests.test_distributed:tiny_mlp", "--dataset", "tests.test_distributed:tiny_dataset",
    "--val-size", "40", "--batch-size", "16", "--eval-every", "10", "--rounds", "2", "--no-compile",
    "--quiet", "--optimizer", "adam", "--lr", "0.01",
]  # fmt: skip


SHORT = ["--rounds", "1", "--baselines", "none"]  # a ticket round after the dense one, no baselines


def _config(iterations: int, *extra: str) -> ltfunc.ImpConfig:
    from ltfunc.cli import imp_config_from_args

    config, _ = imp_config_from_args([*ARGS, "--iterations", str(iterations), *extra])
    return config


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in distributed.ENV_VARS}
    path = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return {**env, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ranks(argv: list[str], cwd: Path, world: int = 2, per_rank: list[list[str]] | None = None) -> list[Any]:
    """``world`` plain processes with torchrun's environment (no agent), rank r given per_rank[r]."""
    port = str(_port())
    procs = []
    for r in range(world):
        env = _env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(r), WORLD_SIZE=str(world))
        env["LOCAL_RANK"] = str(r)
        extra = per_rank[r] if per_rank else []
        cmd = [sys.executable, "-m", "ltfunc", *argv, *extra]
        procs.append(
            subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    return procs


def _finish(procs: list[Any], timeout: float = 120) -> list[tuple[int, str]]:
    out = []
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        out.append((p.returncode, err))
    return out


def _same_run(a: Path, b: Path, *, exact: bool) -> None:
    rows = rundir.summary_rows("test", a)
    assert [(r["condition"], r["round"]) for r in rows] == [
        (r["condition"], r["round"]) for r in rundir.summary_rows("test", b)
    ]
    for condition, k in [(r["condition"], r["round"]) for r in rows]:
        ra = rundir.load_round(a, condition, k, device="cpu")
        rb = rundir.load_round(b, condition, k, device="cpu")
        assert all(torch.equal(ra.mask[n], rb.mask[n]) for n in ra.mask), (condition, k)
        for n, t in ra.final.params.items():
            if exact:
                assert torch.equal(t, rb.final.params[n]), (condition, k, n)
            else:
                torch.testing.assert_close(t, rb.final.params[n], rtol=1e-4, atol=1e-5)
        la = [
            json.loads(x) for x in (a / condition / f"round_{k}" / "metrics.jsonl").read_text().splitlines()
        ]
        lb = [
            json.loads(x) for x in (b / condition / f"round_{k}" / "metrics.jsonl").read_text().splitlines()
        ]
        assert [r["iteration"] for r in la] == [r["iteration"] for r in lb] == [10, 20]
        for x, y in zip(la, lb, strict=True):
            for key, v in x.items():
                assert y[key] == v if exact else y[key] == pytest.approx(v, rel=1e-4, abs=1e-5), key


# in one process ---------------------------------------------------------------------------------


def test_shards_of_every_batch_make_the_batch() -> None:
    split = Split(torch.rand(40, 3, 8, 8), torch.arange(40))
    for augment in (False, True):
        full = list(itertools.islice(batches(split, 8, seed=3, augment=augment, start=2), 6))
        parts = [
            list(itertools.islice(batches(split, 8, seed=3, augment=augment, start=2, shard=(r, 4)), 6))
            for r in range(4)
        ]
        for i, (x, y) in enumerate(full):
            assert torch.equal(torch.cat([p[i][0] for p in parts]), x)
            assert torch.equal(torch.cat([p[i][1] for p in parts]), y)
            assert parts[1][i][0].shape[0] == 2


def test_bad_shards_are_refused() -> None:
    split = Split(torch.rand(40, 4), torch.arange(40))
    with pytest.raises(ValueError, match=r"batches: shard=\(0, 3\).*divisible by the world size 3"):
        batches(split, 8, seed=0, shard=(0, 3))
    with pytest.raises(ValueError, match="drop_last=True"):
        batches(split, 8, seed=0, shard=(0, 2), drop_last=False)
    with pytest.raises(ValueError, match="shard rank"):
        batches(split, 8, seed=0, shard=(2, 2))
    with pytest.raises(TypeError, match="shard must be None or a"):
        batches(split, 8, seed=0, shard=[0, 2])  # type: ignore[arg-type]


def test_grad_reduce_sees_grads_loss_and_accuracy_once_per_step() -> None:
    model = tiny_mlp()
    seen: list[torch.Tensor] = []

    def reduce(t: torch.Tensor) -> torch.Tensor:
        seen.append(t.clone())
        return t * 0.5  # a stand-in mean across 2 ranks whose other rank has zero gradients

    plain = ltfunc.make_train_step(model, ltfunc.optim.sgd(lr=0.1), compile=False)
    halved = ltfunc.make_train_step(model, ltfunc.optim.sgd(lr=0.1), compile=False, grad_reduce=reduce)
    half_lr = ltfunc.make_train_step(model, ltfunc.optim.sgd(lr=0.05), compile=False)
    params = ltfunc.get_params(model)
    ds = tiny_dataset()
    batch = (ds.train.x[:8], ds.train.y[:8])
    a, ma = halved(halved.init(params), None, batch, 0.1)
    b, _ = half_lr(half_lr.init(params), None, batch, 0.05)
    _, mp = plain(plain.init(params), None, batch, 0.1)
    assert len(seen) == 1 and seen[0].shape == (halved.layout.numel + 2,)
    assert seen[0][-2] == mp["loss"] and seen[0][-1] == mp["accuracy"]
    assert ma["loss"] == mp["loss"] * 0.5 and ma["accuracy"] == mp["accuracy"] * 0.5
    torch.testing.assert_close(a.params, b.params)
    with pytest.raises(TypeError, match="make_train_step: grad_reduce must be None or callable"):
        ltfunc.make_train_step(model, ltfunc.optim.sgd(), grad_reduce=3)  # type: ignore[arg-type]


def test_bad_input_is_refused_before_any_process_group() -> None:
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    config = _config(20)
    with pytest.raises(ValueError, match=r"world size 2 .* does not divide --batch-size 15"):
        distributed.join_torchrun(dataclasses.replace(config, batch_size=15), environ=env)
    with pytest.raises(ValueError, match="device='cuda' with backend='gloo' is not supported"):
        distributed.join_torchrun(dataclasses.replace(config, device="cuda"), backend="gloo", environ=env)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="backend='nccl' needs CUDA"):
            distributed.join_torchrun(config, backend="nccl", environ=env)
        with pytest.raises(ValueError, match="no CUDA"):
            distributed.join_torchrun(dataclasses.replace(config, device="cuda"), environ=env)
    with pytest.raises(
        ValueError, match=r"backend='mpi' is not supported\. Supported: 'auto', 'gloo', 'nccl'"
    ):
        distributed.join_torchrun(config, backend="mpi", environ=env)
    with pytest.raises(ValueError, match=r"--dist-timeout must be a finite number in \(0.0"):
        distributed.join_torchrun(config, timeout=0, environ=env)
    with pytest.raises(ValueError, match="not started by torchrun"):
        distributed.init(environ={"WORLD_SIZE": "2", "RANK": "0"})
    assert distributed.join_torchrun(config, environ={}) is None
    assert not torch.distributed.is_initialized()
    one = distributed.DataParallel(0, 1, 0, "gloo", 1.0)
    step = ltfunc.make_train_step(tiny_mlp(), ltfunc.optim.sgd(), compile=False)
    with pytest.raises(ValueError, match="make_trainer: the world size 2 does not divide batch_size=15"):
        ltfunc.make_trainer(
            step, tiny_dataset().train, iterations=2, batch_size=15, parallel=one._replace(world_size=2)
        )
    with pytest.raises(ValueError, match=r"grad_reduce=parallel\.mean"):
        ltfunc.make_trainer(
            step, tiny_dataset().train, iterations=2, batch_size=16, parallel=one._replace(world_size=2)
        )


# two processes ------------------------------------------------------------------------------------


def test_two_ranks_with_half_batches_train_like_one_process(tmp_path: Path) -> None:
    one = ltfunc.run_imp(_config(20), tmp_path / "one", progress=False)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    argv = [*ARGS, "--iterations", "20", "--runs-dir", str(tmp_path), "--name", "two"]
    done = subprocess.run(
        [*cmd, "-m", "ltfunc", *argv], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=150
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ticket" in done.stdout  # rank 0 printed the report
    two = tmp_path / "two"
    assert json.loads((two / "config.json").read_text())["config_hash"] == one.config.config_hash()
    assert not (two / ".lock").exists()
    _same_run(one.run_dir, two, exact=False)


def test_a_killed_rank_stops_the_other_and_a_relaunch_resumes(tmp_path: Path) -> None:
    argv = [
        *ARGS,
        "--iterations",
        "20",
        *SHORT,
        "--runs-dir",
        str(tmp_path),
        "--name",
        "a",
        "--dist-timeout",
        "10",
    ]
    procs = _ranks(argv, tmp_path)
    first = tmp_path / "a" / "ticket" / "round_0" / "summary.json"
    deadline = time.monotonic() + 90
    while not first.exists():
        assert procs[0].poll() is None and time.monotonic() < deadline, _finish(procs)
        time.sleep(0.02)
    procs[1].send_signal(signal.SIGKILL)  # mid-round: rank 0 is in ticket round 1 (or saving round 0)
    killed = time.monotonic()
    (code, err), _ = _finish(procs, timeout=60)
    waited = time.monotonic() - killed
    assert code != 0 and waited < 10 + 15, waited  # the timeout, plus this busy machine's slack
    assert "rank 0 of 2 lost contact with the other ranks" in err and "10 s timeout" in err, err[-2000:]
    assert "launch the same command again to resume" in err
    assert rundir.is_finished(tmp_path / "a", "ticket", 0)
    assert not rundir.is_finished(tmp_path / "a", "ticket", 1)
    assert not (tmp_path / "a" / ".lock").exists()

    results = _finish(_ranks(argv, tmp_path))
    assert all(code == 0 for code, _ in results), results
    uninterrupted = ltfunc.run_imp(_config(20, *SHORT), tmp_path / "one", progress=False)
    _same_run(uninterrupted.run_dir, tmp_path / "a", exact=False)


def test_mismatched_configs_are_refused_on_every_rank(tmp_path: Path) -> None:
    argv = [*ARGS, "--iterations", "20", *SHORT, "--runs-dir", str(tmp_path), "--name", "m"]
    results = _finish(_ranks(argv, tmp_path, per_rank=[["--seed", "1"], ["--seed", "2"]]))
    for code, err in results:
        assert code == 2, err[-2000:]
        assert "run_imp: the ranks were given different configs (seed: rank 0 1, rank 1 2)" in err, err[
            -2000:
        ]
    assert not (tmp_path / "m").exists()  # refused before anything was written


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("LTFUNC_TEST_DIST_COMPILE"),
    reason="compiles the step in 3 processes (minutes on a busy CPU); set LTFUNC_TEST_DIST_COMPILE=1",
)
def test_two_compiled_ranks_train_like_one_compiled_process(tmp_path: Path) -> None:
    argv = [a for a in ARGS if a != "--no-compile"] + ["--iterations", "20", *SHORT]
    one = ltfunc.run_imp(
        dataclasses.replace(_config(20, *SHORT), compile=True), tmp_path / "one", progress=False
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "ltfunc",
    ]
    done = subprocess.run(
        [*cmd, *argv, "--runs-dir", str(tmp_path), "--name", "two"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _same_run(one.run_dir, tmp_path / "two", exact=False)
