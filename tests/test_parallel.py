"""Tests for ltfunc.parallel: a study's rounds over worker processes equal running them one by one."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from ltfunc import load_tree, masks, rundir, tree_equal
from ltfunc.config import ImpConfig
from ltfunc.experiment import run_imp
from ltfunc.parallel import choose_parallel, run_many
from tests.test_experiment import assert_same_results

ROOT = Path(__file__).resolve().parents[1]
TINY = ImpConfig(rounds=2, rate=0.5, iterations=30, eval_every=15, val_size=1000, compile=False)


@pytest.fixture
def one_thread() -> object:
    """Worker processes train single-threaded: the reference does too, so results are bit-equal."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield None
    torch.set_num_threads(before)


def test_processes_equal_sequential_runs_for_two_seeds(
    data_root: Path, tmp_path: Path, one_thread: object
) -> None:
    configs = [dataclasses.replace(TINY, seed=s) for s in (0, 1)]
    results = run_many(
        [(c, tmp_path / f"par-seed{c.seed}") for c in configs],
        parallel="processes",
        workers=2,
        data_root=data_root,
        progress=False,
    )
    for config, result in zip(configs, results, strict=True):
        ref = tmp_path / f"ref-seed{config.seed}"
        run_imp(config, ref, data_root=data_root, progress=False)
        assert_same_results(result.run_dir, ref, config)
        assert (result.run_dir / "summary.csv").read_text() != ""
        expected = {("ticket", k) for k in range(3)} | {(c, k) for c in config.baselines for k in (1, 2)}
        assert set(result.trained) == expected and result.resumed == ()
        assert [(r["condition"], r["round"]) for r in result.rows] == [
            (r["condition"], r["round"]) for r in rundir.summary_rows("t", ref)
        ]
    # a second call trains nothing: every round is finished
    again = run_many(
        [(c, tmp_path / f"par-seed{c.seed}") for c in configs],
        parallel="processes",
        data_root=data_root,
        progress=False,
    )
    assert all(r.trained == () and len(r.resumed) == 7 for r in again)


def test_records_reach_the_sink_once_per_round(data_root: Path, tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    config = dataclasses.replace(TINY, rounds=1)
    run_many(
        [(config, tmp_path / "r")],
        parallel="processes",
        data_root=data_root,
        progress=False,
        on_record=lambda c, k, rec: seen.append((c, k, rec["iteration"])),
    )
    assert sorted(seen) == sorted(
        (c, k, it)
        for c, k in [("ticket", 0), ("ticket", 1), ("reinit", 1), ("random_prune", 1)]
        for it in (15, 30)
    )


_KILLABLE = textwrap.dedent(
    """
    import sys, torch
    from ltfunc.config import ImpConfig
    from ltfunc.parallel import run_many
    torch.set_num_threads(1)
    config = ImpConfig(rounds=2, rate=0.5, iterations=400, eval_every=200, val_size=1000, compile=False)
    try:
        run = [(config, sys.argv[1])]
        run_many(run, parallel="processes", workers=2, data_root=sys.argv[2], progress=False)
    except RuntimeError as e:
        print("ERROR", e, flush=True)
        sys.exit(3)
    """
)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def test_a_killed_worker_is_named_and_the_run_resumes(
    data_root: Path, tmp_path: Path, one_thread: object
) -> None:
    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE, str(run), str(data_root)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not rundir.is_finished(run, "ticket", 0):  # kill a worker during round 1
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        time.sleep(1.0)
        workers = _children(proc.pid)
        assert workers, "no worker processes found"
        for pid in workers:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"multiprocessing" in cmd and b"resource_tracker" not in cmd:
                os.kill(pid, signal.SIGKILL)
                break
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, out
    assert "a worker process died while training" in out and "run the same command again to resume" in out
    assert rundir.is_finished(run, "ticket", 0)
    # re-running resumes: the finished rounds are kept and the result equals an uninterrupted run
    config = ImpConfig(rounds=2, rate=0.5, iterations=400, eval_every=200, val_size=1000, compile=False)
    (result,) = run_many(
        [(config, run)], parallel="processes", workers=2, data_root=data_root, progress=False
    )
    assert ("ticket", 0) in result.resumed and ("ticket", 2) in result.trained
    ref = tmp_path / "ref"
    run_imp(config, ref, data_root=data_root, progress=False)
    assert_same_results(run, ref, config)


def test_bad_input_is_refused_before_any_work(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="runs must be a non-empty sequence"):
        run_many([])
    with pytest.raises(TypeError, match=r"runs\[0\]\[0\] must be an ImpConfig"):
        run_many([("x", tmp_path / "a")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"runs\[0\] and runs\[1\] both write"):
        run_many([(TINY, tmp_path / "a"), (dataclasses.replace(TINY, seed=1), tmp_path / "a")])
    with pytest.raises(ValueError, match="parallel='threads'"):
        run_many([(TINY, tmp_path / "a")], parallel="threads")
    with pytest.raises(ValueError, match="workers"):
        run_many([(TINY, tmp_path / "a")], workers=0)
    # a directory holding another config stops everything before the other run trains
    run_imp(
        dataclasses.replace(TINY, rounds=1, iterations=10, eval_every=5),
        tmp_path / "b",
        data_root=data_root,
        progress=False,
    )
    with pytest.raises(ValueError, match="different config"):
        run_many([(TINY, tmp_path / "c"), (TINY, tmp_path / "b")], parallel="processes", data_root=data_root)
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_auto_choice() -> None:
    cpu = ImpConfig()
    assert (
        choose_parallel([dataclasses.replace(cpu, iterations=100)], cores=2) == "sequential"
    )  # too little work
    assert choose_parallel([cpu], cores=2) == "processes"
    assert choose_parallel([cpu], cores=1) == "sequential"
    assert choose_parallel([dataclasses.replace(cpu, baselines=())], cores=4) == "sequential"
    assert choose_parallel([cpu, dataclasses.replace(cpu, seed=1, baselines=())], cores=2) == "processes"
    assert choose_parallel([dataclasses.replace(cpu, device="cuda")], cores=2) == "vmap"
    assert choose_parallel([cpu, dataclasses.replace(cpu, device="cuda")], cores=2) == "sequential"


def test_a_worker_gives_inductor_its_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._inductor.config as inductor_config

    from ltfunc.parallel import _use_threads

    seen: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    monkeypatch.delenv("TORCHINDUCTOR_COMPILE_THREADS", raising=False)
    before = inductor_config.compile_threads
    with inductor_config.patch(compile_threads=8):  # restored on exit (monkeypatch would break it)
        _use_threads(1)
        assert seen == [1] and inductor_config.compile_threads == 1
        monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "3")  # the user's own setting wins
        _use_threads(2)
        assert seen == [1, 2] and inductor_config.compile_threads == 1
    assert inductor_config.compile_threads == before
    # in a fresh worker, inductor is not imported yet: its config reads the setting on import
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_COMPILE_THREADS"}
    code = (
        "import sys; from ltfunc.parallel import _use_threads; "
        "assert 'torch._inductor.config' not in sys.modules; _use_threads(1); "
        "import torch._inductor.config as c; print(c.compile_threads)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_cli_seeds_train_one_run_per_seed(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ltfunc import cli

    common = ["--rounds", "1", "--iterations", "20", "--eval-every", "10", "--val-size", "1000"]
    common += ["--no-compile", "--quiet", "--data-root", str(data_root), "--runs-dir", str(tmp_path)]
    assert cli.main(["imp", "--seeds", "3,4", "--name", "s", "--parallel", "processes", *common]) == 0
    out = capsys.readouterr().out
    for seed in (3, 4):
        assert rundir.read_config(tmp_path / f"s-seed{seed}").seed == seed
        assert rundir.is_finished(tmp_path / f"s-seed{seed}", "random_prune", 1)
    assert "± " in out and (tmp_path / "s-seeds.png").is_file()
    # the same seeds from a config file list; --seed with seeds is refused before any work
    cfg = tmp_path / "c.json"
    cfg.write_text('{"seeds": [3, 4], "name": "s"}')
    assert cli.main(["imp", "--config", str(cfg), "--parallel", "sequential", *common]) == 0
    assert cli.main(["imp", "--config", str(cfg), "--seed", "1", *common]) == 2
    assert "give --seed or --seeds" in capsys.readouterr().err
    cfg.write_text('{"seeds": [1, 1]}')
    assert cli.main(["imp", "--config", str(cfg), *common]) == 2
    assert "seeds must be a list of distinct ints" in capsys.readouterr().err


def test_processes_keep_the_structure(data_root: Path, tmp_path: Path, one_thread: object) -> None:
    config = dataclasses.replace(TINY, rounds=1, structure="2:4")
    (result,) = run_many(
        [(config, tmp_path / "par")], parallel="processes", data_root=data_root, progress=False
    )
    run_imp(config, tmp_path / "ref", data_root=data_root, progress=False)
    assert_same_results(result.run_dir, tmp_path / "ref", config)
    mask = rundir.load_round(result.run_dir, "random_prune", 1).mask
    groups = mask["fc1.weight"].reshape(300, -1, 4).sum(-1)
    assert bool((groups == 2).all())


def test_vmapped_members_equal_sequential_runs(data_root: Path, tmp_path: Path) -> None:
    configs = [dataclasses.replace(TINY, seed=s) for s in (0, 1)]
    seen: list[tuple[int, str, int]] = []
    sinks = [lambda c, k, rec, i=i: seen.append((i, c, k)) for i in range(2)]
    results = run_many(
        [(c, tmp_path / f"vm-seed{c.seed}") for c in configs],
        parallel="vmap",
        data_root=data_root,
        progress=False,
        on_record=sinks,
    )
    assert len(seen) == 2 * 7 * 2  # two records per round, 7 rounds per run, each to its run's sink
    for config, result in zip(configs, results, strict=True):
        assert_rounds_match_run_imp(result.run_dir, config, data_root, tmp_path / f"ref-seed{config.seed}")


def assert_rounds_match_run_imp(run: Path, config: ImpConfig, data_root: Path, ref: Path) -> None:
    """``run``'s rounds are those of :func:`run_imp` of ``config`` into ``ref``: the same masks,
    final weights and validation losses to float tolerance (vmapped kernels round differently)."""
    run_imp(config, ref, data_root=data_root, progress=False)
    for condition in ("ticket", *config.baselines):
        for k in range(0 if condition == "ticket" else 1, config.rounds + 1):
            a, b = rundir.load_round(run, condition, k), rundir.load_round(ref, condition, k)
            assert a.mask == b.mask, (condition, k)
            for key in a.final.params:
                assert torch.allclose(a.final.params[key], b.final.params[key], rtol=1e-4, atol=1e-5)
            for ra, rb in zip(a.history, b.history, strict=True):
                assert ra["iteration"] == rb["iteration"]
                assert ra["val_loss"] == pytest.approx(rb["val_loss"], rel=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_on_cuda_trains_compiled_vmapped_members_equal_to_sequential_runs(
    data_root: Path, tmp_path: Path
) -> None:
    configs = [dataclasses.replace(TINY, seed=s, device="cuda", compile=True) for s in (0, 1)]
    assert choose_parallel(configs) == "vmap"
    results = run_many(
        [(c, tmp_path / f"gpu-seed{c.seed}") for c in configs], data_root=data_root, progress=False
    )
    for config, result in zip(configs, results, strict=True):
        assert len(result.trained) == 7
        assert_rounds_match_run_imp(result.run_dir, config, data_root, tmp_path / f"ref-seed{config.seed}")


def test_a_killed_parent_takes_its_workers_along(data_root: Path, tmp_path: Path, one_thread: object) -> None:
    run = tmp_path / "parent"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE, str(run), str(data_root)], env=env, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while not rundir.is_finished(run, "ticket", 0):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        workers = [pid for pid in _children(proc.pid) if b"resource_tracker" not in _cmdline(pid)]
        assert workers
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 20
        while any(Path(f"/proc/{pid}").exists() and b"Z" not in _state(pid) for pid in workers):
            alive = [_cmdline(pid)[:200] for pid in workers if Path(f"/proc/{pid}").exists()]
            assert time.monotonic() < deadline, f"a worker outlived its killed parent: {alive}"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
    config = ImpConfig(rounds=2, rate=0.5, iterations=400, eval_every=200, val_size=1000, compile=False)
    (result,) = run_many(
        [(config, run)], parallel="processes", workers=2, data_root=data_root, progress=False
    )
    assert ("ticket", 0) in result.resumed
    ref = tmp_path / "ref"
    run_imp(config, ref, data_root=data_root, progress=False)
    assert_same_results(run, ref, config)


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().split(b") ", 1)[1][:1]
    except (OSError, IndexError):
        return b"Z"


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize("parallel", ["sequential", "processes"])
def test_baselines_resume_from_the_tickets_masks_when_their_weights_were_deleted(
    data_root: Path, tmp_path: Path, one_thread: object, parallel: str
) -> None:
    """Finished ticket rounds stripped of their weights (to save space) still give their baselines."""
    import shutil

    from tests.test_experiment import read_metrics, summary_without_time

    ref = tmp_path / "ref"
    run_imp(TINY, ref, data_root=data_root, progress=False)
    run = tmp_path / "stripped"
    shutil.copytree(ref, run)
    for k in range(TINY.rounds + 1):
        for f in ("rewind.safetensors", "final.safetensors"):
            (rundir.round_dir(run, "ticket", k) / f).unlink()
        for condition in TINY.baselines:
            if k:
                shutil.rmtree(rundir.round_dir(run, condition, k))
    (result,) = run_many([(TINY, run)], parallel=parallel, workers=2, data_root=data_root, progress=False)
    assert set(result.trained) == {(c, k) for c in TINY.baselines for k in (1, 2)}
    for condition in TINY.baselines:
        for k in (1, 2):
            a, b = rundir.round_dir(run, condition, k), rundir.round_dir(ref, condition, k)
            assert masks.load(a / "mask.safetensors") == masks.load(b / "mask.safetensors"), (condition, k)
            for f in ("rewind.safetensors", "final.safetensors"):
                assert tree_equal(load_tree(a / f), load_tree(b / f)), (condition, k, f)
            assert read_metrics(a / "metrics.jsonl") == read_metrics(b / "metrics.jsonl")
            assert summary_without_time(a / "summary.json") == summary_without_time(b / "summary.json")
    # a finished baseline's deleted mask is not needed: resuming trains nothing
    (rundir.round_dir(run, "reinit", 2) / "mask.safetensors").unlink()
    (again,) = run_many([(TINY, run)], parallel=parallel, workers=2, data_root=data_root, progress=False)
    assert again.trained == ()
    # a swapped ticket mask is named, not used
    m1 = rundir.round_dir(run, "ticket", 1) / "mask.safetensors"
    m1.write_bytes((rundir.round_dir(run, "ticket", 2) / "mask.safetensors").read_bytes())
    shutil.rmtree(rundir.round_dir(run, "reinit", 1))
    with pytest.raises(ValueError, match=r"round_1/mask\.safetensors"):
        run_many([(TINY, run)], parallel=parallel, workers=2, data_root=data_root, progress=False)
