"""Tests for ltfunc.sweep: grid expansion and its errors, the local / Ray / Slurm (submitit) executors
against runs made one by one, resume after a killed sweep, the root lock, report and plot of a root."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ltfunc import report, rundir
from ltfunc.cli import main
from ltfunc.config import ImpConfig
from ltfunc.experiment import run_imp
from ltfunc.sweep import (
    SPEC_FILE,
    expand_grid,
    format_sweep_table,
    is_sweep_root,
    plot_sweep,
    run_sweep,
    sweep_rows,
)
from tests.test_experiment import assert_same_results

ROOT = Path(__file__).resolve().parents[1]

BASE: dict[str, Any] = {
    "model": "tests.test_experiment:tiny_mlp",
    "dataset": "tests.test_experiment:tiny_dataset",
    "rounds": 2,
    "iterations": 20,
    "eval_every": 10,
    "val_size": 50,
    "batch_size": 16,
    "baselines": ["reinit"],
    "compile": False,
}
SPEC: dict[str, Any] = {"base": BASE, "grid": {"rate": [0.2, 0.5], "seed": [0, 1]}}
NAMES = ["rate=0.2-seed0", "rate=0.2-seed1", "rate=0.5-seed0", "rate=0.5-seed1"]
ALL_ROUNDS = {("ticket", 0), ("ticket", 1), ("reinit", 1), ("ticket", 2), ("reinit", 2)}


def finished_rounds(run: Path) -> set[tuple[str, int]]:
    return {(c, k) for c, k in ALL_ROUNDS if rundir.is_finished(run, c, k)}


def rows_without_time(rows: Any) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four runs made one by one with run_imp, in this process."""
    out = tmp_path_factory.mktemp("one-by-one")
    for name, config in expand_grid(SPEC):
        run_imp(config, out / name, progress=False)
    return out


@pytest.fixture(scope="module")
def local_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("sweep") / "local"
    return root, run_sweep(SPEC, root, workers=2, progress=False)


# ---------------------------------------------------------------------------- the grid


def test_expand_grid_names_order_and_values() -> None:
    spec = {"base": {**BASE, "rewind": 5}, "grid": {"seed": [3, 4], "rate": [0.2, 0.5], "lr": [1e-3]}}
    runs = expand_grid(spec)
    assert [n for n, _ in runs] == [
        "rate=0.2,lr=0.001-seed3",
        "rate=0.2,lr=0.001-seed4",
        "rate=0.5,lr=0.001-seed3",
        "rate=0.5,lr=0.001-seed4",
    ]  # seed last (varies fastest), the other keys in the spec's order
    assert [(c.rate, c.lr, c.seed, c.rewind) for _, c in runs] == [
        (0.2, 1e-3, 3, 5),
        (0.2, 1e-3, 4, 5),
        (0.5, 1e-3, 3, 5),
        (0.5, 1e-3, 4, 5),
    ]
    assert [n for n, _ in expand_grid({"grid": {"seed": [0, 1]}})] == ["seed0", "seed1"]
    # a preset as base and as a grid key; unsafe characters replaced; the base seed in the name
    runs = expand_grid(
        {"base": {"preset": "lenet300-mnist", "seed": 7}, "grid": {"model_kwargs": [{"a": 1}]}}
    )
    assert [n for n, _ in runs] == ["model_kwargs=__a__1_-seed7"]
    assert runs[0][1].lr == 1.2e-3 and runs[0][1].seed == 7
    # values whose names differ only in replaced characters get a digest of the point appended
    names = [n for n, _ in expand_grid({"grid": {"model_kwargs": [{"a": "x:y"}, {"a": "x/y"}]}})]
    assert len(set(names)) == 2 and all(n.startswith("model_kwargs=__a___x_y__-") for n in names)
    runs = expand_grid({"base": {"iterations": 100}, "grid": {"preset": ["lenet300-mnist", "conv2-cifar10"]}})
    assert [(n, c.model, c.iterations) for n, c in runs] == [
        ("preset=lenet300-mnist-seed0", "lenet300", 100),
        ("preset=conv2-cifar10-seed0", "conv2", 100),
    ]


def test_a_spec_file_in_toml_and_json_expands_alike(tmp_path: Path) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text("[base]\nrounds = 2\n[grid]\nrate = [0.2, 0.5]\nseed = [0, 1]\n")
    js = tmp_path / "s.json"
    js.write_text(json.dumps({"base": {"rounds": 2}, "grid": {"rate": [0.2, 0.5], "seed": [0, 1]}}))
    assert expand_grid(toml) == expand_grid(js) == expand_grid(str(js))
    assert len(expand_grid(toml)) == 4


@pytest.mark.parametrize(
    ("spec", "error", "words"),
    [
        (
            {"base": {"rate": 0.2}, "grid": {"colour": [1]}},
            ValueError,
            ["unknown key(s) ['colour'] in [grid]", "rewind", "seed", "preset"],
        ),
        ({"base": {"lrr": 1.0}, "grid": {"seed": [0]}}, ValueError, ["unknown key(s) ['lrr'] in [base]"]),
        ({"base": {"rounds": 2}}, ValueError, ["grid is empty", "no runs"]),
        ({"grid": {}}, ValueError, ["grid is empty"]),
        ({"grid": {"seed": [0], "rate": []}}, ValueError, ["grid.rate is an empty list", "no runs"]),
        ({"grid": {"rate": 0.2}}, TypeError, ["grid.rate must be a list", "rate = [0.2]"]),
        ({"grid": {"seed": [0, 0]}}, ValueError, ["grid.seed repeats a value"]),
        ({"base": {"seed": 1}, "grid": {"seed": [0]}}, ValueError, ["['seed'] in both [base] and [grid]"]),
        ({"grid": {"rate": [0.2, 1.5]}}, ValueError, ["run rate=1.5-seed0", "rate must be in [0, 1)"]),
        ({"grid": {"preset": ["nope"]}}, ValueError, ["run preset=nope", "nope"]),
        ({"grids": {"seed": [0]}}, ValueError, ["unknown top-level key(s) ['grids']"]),
        ({"base": [1], "grid": {"seed": [0]}}, TypeError, ["[base] must be a table"]),
        (
            {"base": {"optimizer": "momentum"}, "grid": {"momentum": [0.0, 0.9]}},
            ValueError,
            ["have the same config"],
        ),
    ],
)
def test_bad_specs_are_refused_naming_the_problem(
    spec: dict[str, Any], error: type, words: list[str], tmp_path: Path
) -> None:
    with pytest.raises(error) as info:
        expand_grid(spec)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    with pytest.raises(error):  # run_sweep refuses it before touching the root
        run_sweep(spec, tmp_path / "root", progress=False)
    assert not (tmp_path / "root").exists()


def test_the_cli_refuses_a_bad_spec_with_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text("[grid]\nlearning_rate = [0.1]\n")
    assert main(["sweep", str(spec), "--root", str(tmp_path / "root")]) == 2
    err = capsys.readouterr().err
    assert "ltfunc: error:" in err and "learning_rate" in err and "lr" in err
    assert main(["sweep", str(tmp_path / "missing.toml"), "--root", str(tmp_path / "root")]) == 2
    assert "no such sweep file" in capsys.readouterr().err
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"address": "auto"}, ["address='auto' (--address) applies to executor 'ray' only"]),
        ({"partition": "gpu"}, ["partition='gpu' (--partition) applies to executor 'slurm' only"]),
        ({"time_min": 5}, ["(--time) applies to executor 'slurm' only"]),
        ({"gpus_per_run": 1}, ["gpus_per_run=1 (--gpus-per-run) applies to executors 'ray' and 'slurm'"]),
        ({"executor": "dask"}, ["executor='dask' is not supported", "'local', 'ray', 'slurm'"]),
        ({"workers": 0}, ["workers must be an int >= 1"]),
    ],
)
def test_bad_executor_options_are_refused_before_any_work(
    options: dict[str, Any], words: list[str], tmp_path: Path
) -> None:
    with pytest.raises(ValueError) as info:
        run_sweep(SPEC, tmp_path / "root", progress=False, **options)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    assert not (tmp_path / "root").exists()


def test_an_unreachable_ray_address_is_refused_naming_it(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="ray is not installed (pip install 'ltfunc[ray]')")
    with pytest.raises(ValueError) as info:
        run_sweep(SPEC, tmp_path / "root", executor="ray", address="127.0.0.1:9", progress=False)
    assert "address='127.0.0.1:9' (--address) is unreachable" in str(info.value)
    assert not (tmp_path / "root").exists()


# ---------------------------------------------------------------------------- executors


def test_a_local_sweep_equals_the_runs_made_one_by_one(reference: Path, local_root: tuple[Path, Any]) -> None:
    root, result = local_root
    assert [r.run_dir.name for r in result.results] == NAMES and result.skipped == ()
    assert is_sweep_root(root) and not is_sweep_root(root / NAMES[0])
    for (name, config), r in zip(expand_grid(SPEC), result.results, strict=True):
        assert set(r.trained) == ALL_ROUNDS and r.config == config
        assert_same_results(root / name, reference / name, config)
        assert rows_without_time(r.rows) == rows_without_time(rundir.summary_rows("t", reference / name))
    record = json.loads((root / SPEC_FILE).read_text())
    assert record["spec"] == json.loads(json.dumps(SPEC)) and [r["name"] for r in record["runs"]] == NAMES
    assert not (root / ".lock").exists()
    # run again: every run is finished, nothing is started
    mtimes = {n: (root / n / "ticket" / "round_2" / "summary.json").stat().st_mtime_ns for n in NAMES}
    again = run_sweep(SPEC, root, progress=False)
    assert again.skipped == tuple(NAMES) and all(r.trained == () for r in again.results)
    assert [rows_without_time(r.rows) for r in again.results] == [
        rows_without_time(r.rows) for r in result.results
    ]
    assert mtimes == {n: (root / n / "ticket" / "round_2" / "summary.json").stat().st_mtime_ns for n in NAMES}


def test_a_ray_sweep_on_a_local_2_cpu_cluster_equals_the_runs_made_one_by_one(
    reference: Path, tmp_path: Path
) -> None:
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'ltfunc[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = run_sweep(SPEC, tmp_path / "ray", executor="ray", progress=False)
        assert ray.is_initialized()  # a Ray the caller started is left running
    finally:
        ray.shutdown()
    assert [r.run_dir.name for r in result.results] == NAMES
    for name, config in expand_grid(SPEC):
        assert_same_results(tmp_path / "ray" / name, reference / name, config)


def test_a_slurm_sweep_through_submitit_equals_the_runs_made_one_by_one(
    reference: Path, tmp_path: Path
) -> None:
    pytest.importorskip("submitit", reason="submitit is not installed (pip install 'ltfunc[slurm]')")
    spec = {"base": {**BASE, "rate": 0.5}, "grid": {"seed": [0, 1]}}
    # submitit's "debug" cluster runs the jobs in this process: the submission path without Slurm
    result = run_sweep(
        spec,
        tmp_path / "slurm",
        executor="slurm",
        slurm_cluster="debug",
        partition="p",
        time_min=5,
        progress=False,
    )
    assert [r.run_dir.name for r in result.results] == ["seed0", "seed1"]
    for (name, config), ref in zip(expand_grid(spec), ["rate=0.5-seed0", "rate=0.5-seed1"], strict=True):
        assert_same_results(tmp_path / "slurm" / name, reference / ref, config)
    assert any((tmp_path / "slurm" / "slurm").iterdir())  # submitit's job files


# ---------------------------------------------------------------------------- resume, lock, another spec


def test_a_killed_sweep_reruns_only_the_missing_runs_and_a_second_sweep_is_refused(
    reference: Path, tmp_path: Path
) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(SPEC))
    root = tmp_path / "root"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "ltfunc",
        "sweep",
        str(spec_file),
        "--root",
        str(root),
        "--workers",
        "1",
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not (root / SPEC_FILE).is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        # a second sweep into the root is refused while the first runs, and changes nothing
        record = (root / SPEC_FILE).read_bytes()
        with pytest.raises(ValueError, match=r"run_sweep: .*root is in use by process"):
            run_sweep(SPEC, root, workers=1, progress=False)
        assert (root / SPEC_FILE).read_bytes() == record
        while not any(finished_rounds(root / n) == ALL_ROUNDS for n in NAMES) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    before = {n: finished_rounds(root / n) for n in NAMES}
    done = [n for n in NAMES if before[n] == ALL_ROUNDS]
    assert 1 <= len(done) < len(NAMES), before
    deadline = time.monotonic() + 60  # the worker dies with the sweep (PR_SET_PDEATHSIG)
    while any(_lock_alive(root / n) for n in NAMES) and time.monotonic() < deadline:
        time.sleep(0.05)
    result = run_sweep(spec_file, root, workers=1, progress=False)
    assert result.skipped == tuple(done)
    for name, r in zip(NAMES, result.results, strict=True):
        assert set(r.trained) == ALL_ROUNDS - before[name], name  # only the missing rounds trained
        assert set(r.trained) | set(r.resumed) == ALL_ROUNDS
    for name, config in expand_grid(SPEC):
        assert_same_results(root / name, reference / name, config)


def _lock_alive(run: Path) -> bool:
    try:
        pid = json.loads((run / ".lock").read_text())["pid"]
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError):
        return False
    return True


def test_another_spec_into_a_root_is_refused_unless_forced(
    local_root: tuple[Path, Any], tmp_path: Path
) -> None:
    pytest.importorskip("submitit", reason="submitit is not installed (pip install 'ltfunc[slurm]')")
    import shutil

    root = tmp_path / "root"
    shutil.copytree(local_root[0], root)
    other = {"base": {**BASE, "rate": 0.2}, "grid": {"seed": [0, 1, 2]}}
    with pytest.raises(
        ValueError, match=r"holds another sweep .*only in this spec: \['seed0', 'seed1', 'seed2'\]"
    ):
        run_sweep(other, root, progress=False)
    # a run directory that holds another config is refused too (here: the grid renamed to it)
    (root / SPEC_FILE).unlink()
    shutil.copytree(root / "rate=0.5-seed0", root / "seed0")
    with pytest.raises(ValueError, match=r"hold another config \(seed0: rate\)"):
        run_sweep(other, root, progress=False)
    assert not (root / SPEC_FILE).exists()
    shutil.copytree(root / "rate=0.2-seed1", root / "seed1")  # same config as other's seed1
    (root / SPEC_FILE).write_text(json.dumps({"format_version": 1, "spec": SPEC, "runs": []}))
    # forced (jobs in this process: submitit's debug cluster): seed1 is kept, seed0 (another
    # config) restarts, seed2 is new
    result = run_sweep(other, root, force=True, executor="slurm", slurm_cluster="debug", progress=False)
    assert result.skipped == ("seed1",)
    assert [set(r.trained) == ALL_ROUNDS for r in result.results] == [True, False, True]
    assert [r["name"] for r in json.loads((root / SPEC_FILE).read_text())["runs"]] == [
        "seed0",
        "seed1",
        "seed2",
    ]


# ---------------------------------------------------------------------------- report and plot


def test_report_and_plot_of_a_root_give_mean_and_std_over_seeds_per_grid_point(
    local_root: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = local_root
    rows = sweep_rows(root)
    assert [r["point"] for r in rows] == ["rate=0.2"] * 5 + ["rate=0.5"] * 5
    for point in ("rate=0.2", "rate=0.5"):
        runs = [root / f"{point}-seed{s}" for s in (0, 1)]
        mine = [{k: v for k, v in r.items() if k != "point"} for r in rows if r["point"] == point]
        assert mine == report.aggregate(runs)
        per_seed = [report.summary_rows(r) for r in runs]
        for i, row in enumerate(mine):
            accs = [s[i]["test_accuracy_at_early_stop"] for s in per_seed]
            assert row["n"] == 2
            assert row["test_accuracy_at_early_stop_mean"] == pytest.approx(float(np.mean(accs)))
            assert row["test_accuracy_at_early_stop_std"] == pytest.approx(float(np.std(accs, ddof=1)))
    text = format_sweep_table(rows)
    assert text.startswith("== rate=0.2 ==\n") and "\n== rate=0.5 ==\n" in text and "±" in text
    assert main(["report", str(root), "--csv", str(tmp_path / "s.csv")]) == 0
    assert capsys.readouterr().out.startswith(text)
    assert (tmp_path / "s.csv").read_text().splitlines()[0].startswith("point,condition,round,n,")
    res = plot_sweep(root, tmp_path / "p.png")
    assert len(res.series) == 4 and all(s.yerr is not None for s in res.series.values())
    assert main(["plot", str(root), "-o", str(tmp_path / "q.png")]) == 0 and (tmp_path / "q.png").is_file()
    assert main(["report", str(root), str(root / NAMES[0])]) == 2
    assert "pass a sweep root alone" in capsys.readouterr().err


def test_a_partial_root_reports_the_started_runs(tmp_path: Path, local_root: tuple[Path, Any]) -> None:
    import shutil

    root = tmp_path / "partial"
    root.mkdir()
    shutil.copy(local_root[0] / SPEC_FILE, root / SPEC_FILE)
    assert sweep_rows(root) == [] and format_sweep_table([]) == "(no finished rounds)"
    with pytest.raises(ValueError, match="no run of the sweep"):
        plot_sweep(root, tmp_path / "x.png")
    shutil.copytree(local_root[0] / NAMES[2], root / NAMES[2])
    rows = sweep_rows(root)
    assert {r["point"] for r in rows} == {"rate=0.5"} and all(r["n"] == 1 for r in rows)
    assert ImpConfig.from_dict(json.loads((root / NAMES[2] / "config.json").read_text())).rate == 0.5
