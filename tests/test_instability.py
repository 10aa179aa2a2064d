"""Instability sweeps of an IMP run (ltfunc.instability), mask overlap across runs, their CLI."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

import ltfunc
from ltfunc import ImpConfig, masks, run_imp
from ltfunc.cli import main
from ltfunc.data import Dataset
from ltfunc.experiment import load_config_dataset, make_config_trainer
from ltfunc.instability import INSTABILITY_FIELDS, format_instability, instability_sweep, plot_instability
from ltfunc.lmc import OVERLAP_FIELDS, format_overlap, instability, mask_overlap, mask_overlaps
from ltfunc.rundir import init_path, load_weights, round_dir
from ltfunc.trainer import train_round


def tiny_mlp(seed: int | None = None) -> torch.nn.Module:
    """A model factory (import path): 3x8x8 inputs, one hidden layer."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0 if seed is None else seed)
        return torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)
        )


def missing_data(root: Any = None) -> Dataset:
    """A dataset factory whose files are missing."""
    raise FileNotFoundError("tiny data: no such files")


CONFIG: dict[str, Any] = {
    "model": "tests.test_instability:tiny_mlp",
    "dataset": "tests.helpers:tiny_dataset",
    "rounds": 2,
    "rate": 0.5,
    "iterations": 20,
    "eval_every": 10,
    "val_size": 50,
    "batch_size": 16,
    "lr": 0.01,
    "baselines": (),
    "compile": False,
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("instability")
    out = {}
    for name, extra in (("seed0", {}), ("seed1", {"seed": 1}), ("rewind5", {"rewind": 5})):
        out[name] = base / name
        run_imp(ImpConfig(**{**CONFIG, **extra}), out[name], progress=False)
    return out


def setup_of(run: Path) -> tuple[ImpConfig, Any, Dataset]:
    config = ltfunc.rundir.read_config(run)
    ds = load_config_dataset(config)
    return config, make_config_trainer(config, config.make_model(), ds, splits=("test",)), ds


def ticket_mask(run: Path, r: int) -> masks.Mask:
    return masks.load(round_dir(run, "ticket", r) / "mask.safetensors")


# ------------------------------------------------------------------------------------------ sweep


def test_rows_are_the_instability_of_the_reset_ticket_at_k(runs: dict[str, Path], tmp_path: Path) -> None:
    run = runs["seed0"]
    res = instability_sweep(run, rewind_points=[0, 5], rounds=[0, 2], out=tmp_path / "o", progress=False)
    assert res.computed == ((0, 0), (2, 0), (0, 5), (2, 5)) and res.skipped == ()
    assert [(r["round"], r["rewind_iteration"]) for r in res.rows] == [(0, 0), (0, 5), (2, 0), (2, 5)]
    _, trainer, ds = setup_of(run)
    theta0 = load_weights("t", init_path(run), "cpu")
    theta5 = train_round(
        trainer._replace(iterations=5, eval_every=5, evaluate=None), theta0, masks.ones(theta0.params)
    )
    for row in res.rows:
        mask = ticket_mask(run, row["round"])
        k = row["rewind_iteration"]
        start = ltfunc.reset_to(theta0 if k == 0 else theta5.final, mask)
        ref = instability(
            trainer, start, mask, ds.train, 20 - k, seeds=(0, 1), start_iteration=k, eval_split=ds.test
        )
        assert row["barrier"] == ref.barrier and row["errors"] == list(ref.errors)
        assert (row["error_a"], row["error_b"]) == ref.endpoint_errors
        assert row["iterations"] == 20 - k and row["density"] == masks.density(mask)
    assert res.settings["split"] == "test" and res.settings["seeds"] == [0, 1]
    # the files hold the same rows
    data = json.loads((tmp_path / "o" / "instability.json").read_text())
    assert data["rows"] == [dict(r) for r in res.rows] and data["settings"] == res.settings
    with open(tmp_path / "o" / "instability.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(INSTABILITY_FIELDS) and len(table) == 4
    assert [float(x) for x in table[3]["errors"].split(";")] == res.rows[3]["errors"]
    assert float(table[1]["barrier"]) == res.rows[1]["barrier"]
    assert res.plot == tmp_path / "o" / "instability.png" and res.plot.stat().st_size > 0
    assert not (tmp_path / "o" / ".lock").exists()


def test_identical_seeds_give_zero_barriers(runs: dict[str, Path], tmp_path: Path) -> None:
    res = instability_sweep(
        runs["seed0"], rewind_points=[3], rounds=[1], seeds=(4, 4), out=tmp_path, progress=False
    )
    (row,) = res.rows
    assert row["barrier"] == 0.0 and row["error_a"] == row["error_b"]


def test_default_out_and_all_rounds(runs: dict[str, Path]) -> None:
    run = runs["seed1"]
    res = instability_sweep(run, rewind_points=[19], plot=False, progress=False)
    assert res.out_dir == run / "instability" and res.plot is None
    assert [r["round"] for r in res.rows] == [0, 1, 2] and all(r["iterations"] == 1 for r in res.rows)
    shutil.rmtree(run / "instability")
    # a shorter training length T: the copies train T - k iterations
    short = instability_sweep(run, rewind_points=[0], rounds=[1], iterations=7, plot=False, progress=False)
    _, trainer, ds = setup_of(run)
    theta0, mask = load_weights("t", init_path(run), "cpu"), ticket_mask(run, 1)
    ref = instability(trainer, ltfunc.reset_to(theta0, mask), mask, ds.train, 7, eval_split=ds.test)
    assert short.rows[0]["iterations"] == 7 and short.rows[0]["errors"] == list(ref.errors)
    assert short.settings["training_iterations"] == 7
    shutil.rmtree(run / "instability")


def test_resume_skips_finished_rows_and_refuses_other_settings(runs: dict[str, Path], tmp_path: Path) -> None:
    run = runs["seed0"]
    first = instability_sweep(run, rewind_points=[2], rounds=[1], out=tmp_path, progress=False)
    again = instability_sweep(run, rewind_points=[2, 4], rounds=[1], out=tmp_path, progress=False)
    assert again.skipped == ((1, 2),) and again.computed == ((1, 4),)
    assert again.rows[0] == first.rows[0]  # kept, not recomputed
    before = (tmp_path / "instability.json").read_bytes()
    with pytest.raises(ValueError, match=r"other settings \(seeds: \[0, 1\] there, \[0, 2\] now"):
        instability_sweep(run, rewind_points=[2], rounds=[1], seeds=(0, 2), out=tmp_path, progress=False)
    with pytest.raises(ValueError, match="alphas"):
        instability_sweep(run, rewind_points=[2], rounds=[1], alphas=[0.0, 1.0], out=tmp_path, progress=False)
    assert (tmp_path / "instability.json").read_bytes() == before


def test_the_runs_rewind_point_is_reused(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = runs["rewind5"]

    def no_training(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the saved rewind point should be used")

    monkeypatch.setattr("ltfunc.instability.train_round", no_training)
    res = instability_sweep(run, rewind_points=[5], rounds=[2], out=tmp_path, progress=False)
    _, trainer, ds = setup_of(run)
    point = load_weights("t", round_dir(run, "ticket", 0) / "rewind_point.safetensors", "cpu")
    mask = ticket_mask(run, 2)
    ref = instability(
        trainer, ltfunc.reset_to(point, mask), mask, ds.train, 15, start_iteration=5, eval_split=ds.test
    )
    assert res.rows[0]["barrier"] == ref.barrier and res.rows[0]["errors"] == list(ref.errors)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        (
            {"rewind_points": [0, 20]},
            ValueError,
            ["rewind_points[1]=20", "beyond", "20 iterations", "0 <= value <= 19"],
        ),
        ({"rewind_points": [-1]}, ValueError, ["rewind_points[0]=-1"]),
        ({"rewind_points": [10], "iterations": 10}, ValueError, ["rewind_points[0]=10", "(10 iterations)"]),
        ({"rewind_points": [0], "iterations": 0}, ValueError, ["iterations"]),
        ({"rewind_points": []}, ValueError, ["rewind_points must not be empty"]),
        ({"rewind_points": [1.5]}, TypeError, ["rewind_points[0] must be an int"]),
        (
            {"rewind_points": [0], "rounds": [3]},
            ValueError,
            ["rounds [3]", "finished ticket rounds", "[0, 1, 2]"],
        ),
        ({"rewind_points": [0], "alphas": [0.0, 1.5]}, ValueError, ["alphas[1]", "1.5"]),
        ({"rewind_points": [0], "seeds": (0,)}, TypeError, ["seeds must be a pair"]),
    ],
)
def test_bad_input_is_refused_before_any_work(
    runs: dict[str, Path], tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], words: list[str]
) -> None:
    out = tmp_path / "never"
    with pytest.raises(error) as info:
        instability_sweep(runs["seed0"], out=out, progress=False, **kwargs)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    assert not out.exists()


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a run directory"):
        instability_sweep(tmp_path, rewind_points=[0])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        instability_sweep(tmp_path / "nope", rewind_points=[0])


def test_a_missing_dataset_is_named_before_anything_is_written(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ltfunc.rundir.write_config(run, ImpConfig(**{**CONFIG, "dataset": "tests.test_instability:missing_data"}))
    round_dir(run, "ticket", 0).mkdir(parents=True)
    (round_dir(run, "ticket", 0) / "summary.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no such files"):
        instability_sweep(run, rewind_points=[0], out=tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_table_and_figure(tmp_path: Path) -> None:
    rows = [
        {"round": r, "density": d, "rewind_iteration": k, "barrier": b, "mean_endpoint_error": 0.05}
        for r, d in ((0, 1.0), (3, 0.5))
        for k, b in ((0, 0.01), (100, 0.002))
    ][:3]
    text = format_instability(rows)
    assert text.splitlines()[0].split() == ["round", "weights", "%", "k=0", "k=100"]
    assert text.splitlines()[2].split() == ["3", "50.00", "1.00", "(5.00)", "-"]
    assert plot_instability(rows, tmp_path / "f.png").stat().st_size > 0
    with pytest.raises(ValueError, match=r"must end with \.png"):
        plot_instability(rows, tmp_path / "f.jpg")
    with pytest.raises(ValueError, match=r"rows\[0\] lacks \['barrier'\]"):
        format_instability([{"round": 0, "density": 1.0, "rewind_iteration": 0, "mean_endpoint_error": 0.1}])


# ------------------------------------------------------------------------------------------ overlap


def test_mask_overlaps_across_seeds_and_rounds(runs: dict[str, Path]) -> None:
    a, b = runs["seed0"], runs["seed1"]
    rows = mask_overlaps([a, b])
    assert all(list(r) == list(OVERLAP_FIELDS) for r in rows)
    overall = {
        (r["kind"], r["a"], r["round_a"], r["round_b"]): r["jaccard"] for r in rows if r["layer"] == "overall"
    }
    for r in (0, 1, 2):
        assert overall[("seeds", "seed0", r, r)] == mask_overlap(ticket_mask(a, r), ticket_mask(b, r)).overall
    assert overall[("seeds", "seed0", 0, 0)] == 1.0  # both dense
    assert overall[("seeds", "seed0", 2, 2)] < 1.0  # different seeds, different tickets
    for run, name in ((a, "seed0"), (b, "seed1")):
        for r in (1, 2):
            # IMP masks are nested: the Jaccard of consecutive rounds is kept(r) / kept(r - 1)
            kept = [masks.counts(ticket_mask(run, i))["__all__"].kept for i in (r - 1, r)]
            assert overall[("rounds", name, r - 1, r)] == pytest.approx(kept[1] / kept[0], rel=1e-12)
    layers = {r["layer"] for r in rows}
    assert layers == {"overall", *ticket_mask(a, 0)}
    text = format_overlap(rows)
    assert text.splitlines()[0].split()[:5] == ["kind", "a", "b", "rounds", "overall"]
    assert "seeds   seed0  seed1  2" in text and "rounds  seed1  seed1  1-2" in text
    only = mask_overlaps([a], rounds=[1, 2])
    assert {(r["kind"], r["round_a"], r["round_b"]) for r in only} == {("rounds", 1, 2)}
    with pytest.raises(ValueError, match=r"rounds \[7\]"):
        mask_overlaps([a], rounds=[7])
    with pytest.raises(TypeError, match="non-empty list"):
        mask_overlaps(str(a))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ CLI


def test_cli_instability_and_report_overlap(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = str(runs["seed0"])
    code = main(
        ["instability", run, "--rewind", "0,5", "--rounds", "2", "--out", str(tmp_path / "o"), "--quiet"]
    )
    out = capsys.readouterr().out
    assert code == 0 and "k=0" in out and "k=5" in out and "instability.csv" in out
    assert len(json.loads((tmp_path / "o" / "instability.json").read_text())["rows"]) == 2
    code = main(["instability", run, "--rewind", "25", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and "rewind_points[0]=25" in err and not (tmp_path / "bad").exists()
    code = main(["report", "--overlap", run, str(runs["seed1"]), "--csv", str(tmp_path / "ov.csv")])
    out = capsys.readouterr().out
    assert code == 0 and out.splitlines()[0].split()[:5] == ["kind", "a", "b", "rounds", "overall"]
    with open(tmp_path / "ov.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(mask_overlaps([run, runs["seed1"]]))


def test_cli_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["instability", "--help"])
    text = capsys.readouterr().out
    assert info.value.code == 0
    for flag in (
        "--rewind",
        "--rounds",
        "--seeds",
        "--alphas",
        "--out",
        "--data-root",
        "--device",
        "--compile",
    ):
        assert flag in text, flag


def test_shipped_lenet_results_are_consistent() -> None:
    """docs/results/lenet-instability: every row's barrier is its own errors' barrier, the CSV
    holds the JSON's rows, and every sweep there is of the same shipped run."""
    root = Path(__file__).resolve().parents[1] / "docs" / "results" / "lenet-instability"
    files = sorted(root.rglob("instability.json"))
    assert len(files) >= 4
    hashes = set()
    for path in files:
        data = json.loads(path.read_text())
        hashes.add(data["settings"]["run_config_hash"])
        rows = data["rows"]
        assert rows and [r["round"] for r in rows] == sorted(r["round"] for r in rows)
        for row in rows:
            e = row["errors"]
            assert len(e) == len(data["settings"]["alphas"])
            assert (row["error_a"], row["error_b"]) == (e[0], e[-1])
            assert row["barrier"] == pytest.approx(max(e) - (e[0] + e[-1]) / 2, abs=1e-12)
            assert row["iterations"] == data["settings"]["training_iterations"] - row["rewind_iteration"]
        with open(path.with_suffix(".csv"), newline="") as f:
            table = list(csv.DictReader(f))
        assert [(int(r["round"]), int(r["rewind_iteration"])) for r in table] == [
            (r["round"], r["rewind_iteration"]) for r in rows
        ]
    assert len(hashes) == 1  # every sweep is of the same shipped run
