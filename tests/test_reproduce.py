"""Tests for ltfunc.studies and `ltfunc reproduce`: study registry, deviations, and an end-to-end
smoke run on real MNIST at tiny settings (2 rounds, 30 iterations, 2 seeds)."""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
from pathlib import Path

import matplotlib.image
import pytest

from ltfunc.cli import build_parser, main
from ltfunc.config import ImpConfig
from ltfunc.rundir import write_config
from ltfunc.studies import (
    ROUND_FIELDS,
    RUN_FIELDS,
    STUDIES,
    collect,
    deviations,
    expected_densities,
    get_study,
    run_name,
    study_configs,
)

# LeNet-300-100 prunable weights and Frankle & Carbin's per-round rates (hidden 20%, output 10%)
LENET_LAYERS = ((784 * 300, 0.2), (300 * 100, 0.2), (100 * 10, 0.1))
# Conv-2 on 28x28x1: two 3x3 convs (10%), fc 64*14*14 -> 256 -> 256 (20%), output 256 -> 10 (10%)
CONV2_LAYERS = (
    (64 * 1 * 9, 0.1),
    (64 * 64 * 9, 0.1),
    (64 * 14 * 14 * 256, 0.2),
    (256 * 256, 0.2),
    (2560, 0.1),
)

TINY = ["--iterations", "30", "--rounds", "2", "--eval-every", "10", "--val-size", "500"]
PREFIX = "lenet-mnist-iterations30-rounds2-evalevery10-valsize500"
CONDITIONS = {"ticket": (0, 1, 2), "reinit": (1, 2), "random_prune": (1, 2)}
FIGURES = ("accuracy.png", "early_stop.png", "curves_ticket.png", "curves_reinit.png")


def densities_by_hand(layers: tuple[tuple[int, float], ...], rounds: int) -> list[float]:
    """Each round removes floor(rate * survivors + 0.5) weights of every layer."""
    kept = [n for n, _ in layers]
    total = sum(kept)
    out = [1.0]
    for _ in range(rounds):
        kept = [k - math.floor(r * k + 0.5) for k, (_, r) in zip(kept, layers, strict=True)]
        out.append(sum(kept) / total)
    return out


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def summary_mtimes(runs: Path) -> dict[str, int]:
    return {str(p.relative_to(runs)): p.stat().st_mtime_ns for p in sorted(runs.rglob("summary.json"))}


def reproduce_args(runs: Path, out: Path, data_root: Path, *extra: str) -> list[str]:
    return [
        "reproduce",
        "lenet-mnist",
        *TINY,
        "--no-compile",
        "--runs-dir",
        str(runs),
        "--out",
        str(out),
        "--data-root",
        str(data_root),
        *extra,
    ]


@pytest.fixture(scope="module")
def study(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`ltfunc reproduce lenet-mnist` end to end at tiny settings with seeds 0 and 1."""
    root = tmp_path_factory.mktemp("reproduce")
    runs, out = root / "runs", root / "out"
    assert main(reproduce_args(runs, out, data_root, "--seeds", "0,1", "--quiet")) == 0
    return {"runs": runs, "out": out}


# --------------------------------------------------------------------------------------------
# the study registry (no training)


def test_lenet_study_uses_the_paper_settings() -> None:
    s = get_study("lenet-mnist")
    c = s.config
    assert (c.model, c.dataset, c.init) == ("lenet300", "mnist", "glorot_normal")
    assert (c.optimizer, c.lr, c.batch_size, c.iterations) == ("adam", 1.2e-3, 60, 50_000)
    assert (c.val_size, c.eval_every, c.scope, c.schedule, c.rewind) == (5000, 100, "layer", "rate", 0)
    assert c.rates().resolve("fc1.weight", "fc") == 0.2 and c.rates().resolve("fc3.weight", "output") == 0.1
    assert set(c.baselines) == {"reinit", "random_prune"}
    assert len(s.seeds) >= 3 and s.seeds == (0, 1, 2)
    # the smallest number of rounds that reaches <= 3.6% of the weights (and >= 15 rounds)
    by_hand = densities_by_hand(LENET_LAYERS, c.rounds)
    assert c.rounds >= 15
    assert by_hand[-1] <= 0.036 < by_hand[-2]
    assert deviations("lenet-mnist") == ()
    assert [cfg.seed for cfg in study_configs("lenet-mnist")] == [0, 1, 2]


def test_conv2_study_rates_and_documented_deviations() -> None:
    s = get_study("conv2-fashion")
    c = s.config
    assert (c.model, c.dataset) == ("conv2", "fashion-mnist")
    r = c.rates()
    assert (
        r.resolve("conv1.weight", "conv"),
        r.resolve("fc1.weight", "fc"),
        r.resolve("fc3.weight", "output"),
    ) == (
        0.1,
        0.2,
        0.1,
    )
    assert len(s.seeds) >= 2 and c.iterations < 20_000
    text = "\n".join(deviations("conv2-fashion"))
    assert "Fashion-MNIST here, CIFAR-10 in the paper" in text
    assert f"{c.iterations:,} here, 20,000 in the paper" in text
    assert f"every {c.eval_every}" in text.lower()
    assert f"{c.val_size:,} here, 5,000 in the paper" in text


@pytest.mark.parametrize(("name", "layers"), [("lenet-mnist", LENET_LAYERS), ("conv2-fashion", CONV2_LAYERS)])
def test_expected_densities_follow_layerwise_rounding(
    name: str, layers: tuple[tuple[int, float], ...]
) -> None:
    config = STUDIES[name].config
    got = expected_densities(config)
    assert len(got) == config.rounds + 1
    assert got == pytest.approx(densities_by_hand(layers, config.rounds), abs=1e-12)


def test_overrides_change_the_prefix_and_are_deviations() -> None:
    assert run_name("lenet-mnist") == "lenet-mnist"
    assert run_name("lenet-mnist", {"iterations": 50_000}) == "lenet-mnist"  # the study's own value
    assert run_name("lenet-mnist", {"rounds": 2, "iterations": 30}) == "lenet-mnist-iterations30-rounds2"
    lines = deviations("lenet-mnist", [0, 1, 2], {"iterations": 30, "rounds": 2})
    assert "training iterations per round: 30 here, 50,000 in the paper (set on the command line)." in lines
    assert any("pruning stops after 2 rounds at 64.1% weights remaining" in d for d in lines)
    assert not any(d.startswith("seeds") for d in lines)
    assert deviations("lenet-mnist", [0, 1, 2], {"iterations": 50_000}) == ()
    cfgs = study_configs("conv2-fashion", [3], overrides={"eval_every": 100}, device="cpu", compile=False)
    assert (cfgs[0].seed, cfgs[0].eval_every, cfgs[0].compile, cfgs[0].iterations) == (3, 100, False, 600)


def test_bad_arguments_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=r"get_study: study='resnet'.*'lenet-mnist', 'conv2-fashion'"):
        get_study("resnet")
    with pytest.raises(ValueError, match=r"study_configs: seeds has repeated entries"):
        study_configs("lenet-mnist", [0, 0])
    with pytest.raises(ValueError, match=r"study_configs: overrides key 'lr' is not supported"):
        study_configs("lenet-mnist", overrides={"lr": 1})
    with pytest.raises(ValueError, match=r"overrides\['rounds'\] must be an int >= 1, got 0"):
        run_name("lenet-mnist", {"rounds": 0})
    assert main(["reproduce", "resnet-cifar"]) == 2
    err = capsys.readouterr().err
    assert "resnet-cifar" in err and "'lenet-mnist'" in err and "'conv2-fashion'" in err
    with pytest.raises(SystemExit) as info:
        main(["reproduce", "lenet-mnist", "--seeds", "0,x"])
    assert info.value.code == 2
    assert "comma-separated ints" in capsys.readouterr().err


def test_help_lists_every_reproduce_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["reproduce", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    sub = build_parser()._subparsers._group_actions[0].choices["reproduce"]  # type: ignore[union-attr]
    for action in sub._actions:
        for flag in action.option_strings:
            assert flag in text, flag
    assert "lenet-mnist" in text and "conv2-fashion" in text


def test_collect_refuses_a_run_with_another_config(tmp_path: Path) -> None:
    write_config(tmp_path / "runs" / "lenet-mnist-seed1", ImpConfig(lr=0.1, rounds=15, output_rate=0.1))
    with pytest.raises(ValueError, match=r"collect: .*lenet-mnist-seed1 holds a run with another config"):
        collect("lenet-mnist", runs_dir=tmp_path / "runs", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# end to end on real MNIST


def test_round_csv_columns_densities_and_seed_statistics(study: dict[str, Path]) -> None:
    fields, rows = read_csv(study["out"] / "rounds.csv")
    assert fields == list(ROUND_FIELDS)
    assert [(r["condition"], int(r["round"])) for r in rows] == [
        (c, k) for c, ks in CONDITIONS.items() for k in ks
    ]
    expected = densities_by_hand(LENET_LAYERS, 2)
    assert expected[0] == 1.0
    run_fields, run_rows = read_csv(study["out"] / "runs.csv")
    assert run_fields == list(RUN_FIELDS)
    assert len(run_rows) == 2 * 7
    for row in rows:
        k = int(row["round"])
        assert float(row["weights_remaining_pct_mean"]) == pytest.approx(100 * expected[k], abs=1e-9)
        assert float(row["weights_remaining_pct_std"]) == 0.0
        assert (row["n_seeds"], row["seeds"]) == ("2", "0;1")
        per_seed = [r for r in run_rows if (r["condition"], int(r["round"])) == (row["condition"], k)]
        assert sorted(r["seed"] for r in per_seed) == ["0", "1"]
        for metric in ("test_accuracy_at_early_stop", "early_stop_iteration"):
            values = [float(r[metric]) for r in per_seed]
            assert float(row[f"{metric}_mean"]) == pytest.approx(statistics.mean(values), abs=1e-12)
            assert float(row[f"{metric}_std"]) == pytest.approx(statistics.stdev(values), abs=1e-12)
        walls = [float(r["wall_seconds"]) for r in per_seed]
        assert float(row["wall_seconds_mean"]) == pytest.approx(statistics.mean(walls)) and min(walls) > 0
        for r in per_seed:
            assert float(r["density"]) == pytest.approx(expected[k], abs=1e-12)
            assert int(r["early_stop_iteration"]) in (10, 20, 30)  # evaluated every 10 of 30 iterations
            assert 0.5 < float(r["test_accuracy_at_early_stop"]) <= 1.0  # 30 Adam steps learn MNIST a bit


def test_per_run_rows_are_the_run_directories_summaries(study: dict[str, Path]) -> None:
    _, run_rows = read_csv(study["out"] / "runs.csv")
    for r in run_rows:
        path = study["runs"] / f"{PREFIX}-seed{r['seed']}" / r["condition"] / f"round_{r['round']}"
        summary = json.loads((path / "summary.json").read_text())
        assert float(r["test_accuracy_at_early_stop"]) == summary["test_accuracy_at_early_stop"]
        assert int(r["early_stop_iteration"]) == summary["early_stop_iteration"]
        config = json.loads((path.parents[1] / "config.json").read_text())
        assert (config["seed"], config["iterations"], config["rounds"]) == (int(r["seed"]), 30, 2)


def test_figures_are_valid_pngs(study: dict[str, Path]) -> None:
    for name in FIGURES:
        path = study["out"] / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300, name
        assert image.std() > 0.01, name  # not a blank canvas


def test_results_md_states_completion_deviations_and_machine(study: dict[str, Path]) -> None:
    text = (study["out"] / "results.md").read_text()
    assert "**Status: complete**" in text and "PARTIAL" not in text
    assert "training iterations per round: 30 here, 50,000 in the paper" in text
    assert "seeds: 2 (0, 1); the study asks for at least 3." in text
    assert "pruning stops after 2 rounds at 64.1% weights remaining" in text
    for name in FIGURES:
        assert f"]({name})" in text
    assert "torch" in text and "cores" in text and "trained seeds 0, 1 on:" in text
    assert "about 98%" in text  # the paper's numbers, quoted as reference
    # our side is computed: the ticket - reinit difference of means for round 1
    _, rows = read_csv(study["out"] / "rounds.csv")
    acc = {(r["condition"], r["round"]): float(r["test_accuracy_at_early_stop_mean"]) for r in rows}
    assert f"| 1 | 80.04 | {100 * (acc[('ticket', '1')] - acc[('reinit', '1')]):+.2f} |" in text
    machines = json.loads((study["runs"] / f"{PREFIX}-seed0" / "machines.json").read_text())["machines"]
    assert len(machines) == 1 and machines[0]["device"] == "cpu"


def test_collect_only_on_a_partial_run_then_resume(
    study: dict[str, Path], data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs, out = tmp_path / "runs", tmp_path / "out"
    shutil.copytree(study["runs"], runs)
    unfinished = runs / f"{PREFIX}-seed1" / "random_prune" / "round_2" / "summary.json"
    unfinished.unlink()  # as if the run had been killed during its last round
    before = summary_mtimes(runs)

    # --collect-only, asking for a third seed that has not started: trains nothing
    assert main(reproduce_args(runs, out, data_root, "--seeds", "0,1,2", "--collect-only", "--quiet")) == 0
    assert summary_mtimes(runs) == before and not (runs / f"{PREFIX}-seed2").exists()
    text = (out / "results.md").read_text()
    assert "**Status: PARTIAL** — 13 of 21 rounds" in text
    assert f"| 1 | `{runs / (PREFIX + '-seed1')}` | 3/3 | 2/2 | 1/2 | partial |" in text
    assert f"| 2 | `{runs / (PREFIX + '-seed2')}` | 0/3 | 0/2 | 0/2 | not started |" in text
    assert "the study asks for at least" not in text  # three seeds requested
    _, rows = read_csv(out / "rounds.csv")
    last = next(r for r in rows if (r["condition"], r["round"]) == ("random_prune", "2"))
    _, run_rows = read_csv(out / "runs.csv")
    seed0 = next(r for r in run_rows if (r["seed"], r["condition"], r["round"]) == ("0", "random_prune", "2"))
    assert (last["n_seeds"], last["seeds"], last["test_accuracy_at_early_stop_std"]) == ("1", "0", "")
    assert last["test_accuracy_at_early_stop_mean"] == seed0["test_accuracy_at_early_stop"]
    assert "PARTIAL" in capsys.readouterr().out

    # resuming trains only the unfinished round, with progress output
    assert main(reproduce_args(runs, out, data_root, "--seeds", "0,1")) == 0
    after = summary_mtimes(runs)
    key = str(unfinished.relative_to(runs))
    assert key in after and {k: v for k, v in after.items() if k != key} == before
    err = capsys.readouterr().err
    assert "reproduce lenet-mnist: seed 1 (2/2)" in err
    assert "**Status: complete**" in (out / "results.md").read_text()
