"""Tests for ltfunc.experiment: ImpConfig, the run directory, run_imp on real MNIST, resume, bad input."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import pickle
import re
import shutil
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
from ltfunc import masks, rundir
from ltfunc.config import ImpConfig, config_diff
from ltfunc.experiment import run_imp
from ltfunc.models import init_params
from ltfunc.rundir import METRIC_FIELDS, SUMMARY_FIELDS, load_round, read_config, round_dir, summarize_round
from ltfunc.ticket import derive_seed
from ltfunc.trainer import Weights
from tests.helpers import tiny_dataset

ROOT = Path(__file__).resolve().parents[1]

# The short run most tests read: 3 rounds of 50 iterations at 20% per round, layer scope.
SMALL = {
    "rounds": 3,
    "rate": 0.2,
    "iterations": 50,
    "eval_every": 25,
    "val_size": 1000,
    "seed": 0,
    "compile": False,
}
SMALL_CLI = [
    "imp", "--rounds", "3", "--rate", "0.2", "--iterations", "50", "--eval-every", "25",
    "--val-size", "1000", "--seed", "0", "--no-compile", "--quiet",
]  # fmt: skip
PRUNABLE = {"fc1.weight": 784 * 300, "fc2.weight": 300 * 100, "fc3.weight": 100 * 10}


def expected_kept(total: int, rounds: int, rate: float = 0.2) -> list[int]:
    """Survivors per round when each round removes floor(rate * kept + 0.5) of the survivors."""
    kept = [total]
    for _ in range(rounds):
        kept.append(kept[-1] - math.floor(rate * kept[-1] + 0.5))
    return kept


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summary_without_time(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    data.pop("wall_seconds")
    return data


def assert_same_results(a: Path, b: Path, config: ImpConfig) -> None:
    """Identical masks, weights (params and buffers), metrics and summaries (except wall time)
    in two run dirs."""
    for condition in ("ticket", *config.baselines):
        for k in range(0 if condition == "ticket" else 1, config.rounds + 1):
            ra, rb = round_dir(a, condition, k), round_dir(b, condition, k)
            assert masks.load(ra / "mask.safetensors") == masks.load(rb / "mask.safetensors"), (condition, k)
            for f in ("rewind.safetensors", "final.safetensors"):
                assert ltfunc.tree_equal(ltfunc.load_tree(ra / f), ltfunc.load_tree(rb / f)), (
                    condition,
                    k,
                    f,
                )
            la, lb = load_round(a, condition, k), load_round(b, condition, k)
            assert ltfunc.tree_equal((la.start, la.final), (lb.start, lb.final)), (condition, k)
            assert ltfunc.tree_equal(la.rewind_point, lb.rewind_point), (condition, k)
            assert read_metrics(ra / "metrics.jsonl") == read_metrics(rb / "metrics.jsonl"), (condition, k)
            assert summary_without_time(ra / "summary.json") == summary_without_time(rb / "summary.json")


@pytest.fixture(scope="module")
def small_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "small"
    run_imp(ImpConfig(**SMALL), run, data_root=data_root, progress=False)
    return run


# ---------------------------------------------------------------------------- ImpConfig


def test_config_defaults_are_the_papers_lenet_settings() -> None:
    cfg = ImpConfig()
    assert (cfg.model, cfg.dataset, cfg.optimizer, cfg.lr, cfg.batch_size) == (
        "lenet300",
        "mnist",
        "adam",
        1.2e-3,
        60,
    )
    assert (cfg.iterations, cfg.val_size, cfg.rate, cfg.rewind) == (50_000, 5000, 0.2, 0)
    assert cfg.baselines == ("reinit", "random_prune")


def test_config_round_trips_through_json_and_hash_tracks_fields() -> None:
    cfg = ImpConfig(rounds=4, output_rate=0.1, overrides={"fc1.weight": 0.3}, baselines=("reinit",))
    data = json.loads(json.dumps(cfg.to_dict()))
    assert ImpConfig.from_dict(data) == cfg
    assert ImpConfig.from_dict(data).config_hash() == cfg.config_hash()
    assert ImpConfig(rounds=5).config_hash() != ImpConfig(rounds=4).config_hash()
    with pytest.raises(TypeError):
        cfg.overrides["fc2.weight"] = 0.5  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.rounds = 9  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(cfg)) == cfg and copy.deepcopy(cfg) == cfg
    assert len({cfg, ImpConfig.from_dict(data), ImpConfig()}) == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"rounds": 0}, ValueError, ["rounds", ">= 1", "0"]),
        (
            {"rewind": 100, "iterations": 100},
            ValueError,
            ["rewind=100", "beyond the training length", "[0, 99]"],
        ),
        ({"model": "resnet"}, ValueError, ["model='resnet'", "'lenet300'", "'conv2'"]),
        ({"dataset": "imagenet"}, ValueError, ["dataset='imagenet'", "'mnist'", "'fashion-mnist'"]),
        ({"optimizer": "lion"}, ValueError, ["optimizer='lion'", "'adam'", "'sgd'"]),
        ({"rate": 1.0}, ValueError, ["rate", "[0, 1)"]),
        ({"scope": "net"}, ValueError, ["scope='net'", "'global'"]),
        ({"baselines": ("reinit", "shuffle")}, ValueError, ["'shuffle'", "'random_prune'"]),
        ({"momentum": 0.9}, ValueError, ["momentum", "'sgd'"]),
        ({"val_size": 0}, ValueError, ["val_size"]),
        ({"rounds": 2.0}, TypeError, ["rounds must be an int"]),
        ({"lr": 0.0}, ValueError, ["lr must be", "(0.0, inf)", "got 0.0"]),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, Any], error: type, words: list[str]) -> None:
    with pytest.raises(error) as info:
        ImpConfig(**kwargs)
    msg = str(info.value)
    assert msg.startswith("ImpConfig:")
    for w in words:
        assert w in msg


def test_config_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['epochs'\].*rounds"):
        ImpConfig.from_dict({"epochs": 3})


def test_config_diff_lists_changed_fields() -> None:
    assert config_diff(ImpConfig().to_dict(), ImpConfig(rate=0.3, seed=2).to_dict()) == {
        "rate": (0.2, 0.3),
        "seed": (0, 2),
    }
    assert config_diff({"rate": 0.2, "config_hash": "a"}, {"config_hash": "b"}) == {"rate": (0.2, None)}
    with pytest.raises(TypeError, match=r"config_diff: new must be a config mapping, got list"):
        config_diff(ImpConfig().to_dict(), [("rate", 0.3)])


def test_config_make_optimizer_builds_the_configured_optimizer() -> None:
    sgd = ImpConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4).make_optimizer()
    assert (sgd.name, sgd.lr, sgd.hyperparams["momentum"], sgd.hyperparams["weight_decay"]) == (
        "sgd",
        0.1,
        0.9,
        1e-4,
    )
    adam = ImpConfig().make_optimizer()
    assert (adam.name, adam.lr, adam.hyperparams["weight_decay"]) == ("adam", 1.2e-3, 0.0)
    assert ImpConfig(optimizer="momentum").make_optimizer().hyperparams["momentum"] == 0.9
    assert (
        ImpConfig(optimizer="adamw", weight_decay=0.01).make_optimizer().hyperparams["weight_decay"] == 0.01
    )


def test_summarize_round_early_stops_at_the_minimal_validation_loss() -> None:
    history = [
        {"iteration": 10, "val_loss": 0.5, "test_accuracy": 0.90},
        {"iteration": 20, "val_loss": 0.2, "test_accuracy": 0.93},
        {"iteration": 30, "val_loss": 0.2, "test_accuracy": 0.95},  # tie: the earliest wins
        {"iteration": 40, "val_loss": 0.3, "test_accuracy": 0.94},
    ]
    s = summarize_round(history, round=2, density=0.64, wall_seconds=3.0)
    assert list(s) == list(SUMMARY_FIELDS)
    assert s["early_stop_iteration"] == 20 and s["test_accuracy_at_early_stop"] == 0.93
    assert s["val_loss_at_early_stop"] == 0.2
    assert s["best_test_accuracy"] == 0.95 and s["last_test_accuracy"] == 0.94
    assert s["weights_remaining_pct"] == pytest.approx(64.0)
    with pytest.raises(ValueError, match="history is empty"):
        summarize_round([], round=0, density=1.0, wall_seconds=0.0)


# ---------------------------------------------------------------------------- a real run


def test_run_directory_layout(small_run: Path) -> None:
    cfg = read_config(small_run)
    assert cfg == ImpConfig(**SMALL)
    stored = json.loads((small_run / "config.json").read_text())
    assert stored["config_hash"] == cfg.config_hash() and stored["ltfunc_version"] == ltfunc.__version__
    assert stored["format_version"] == rundir.FORMAT_VERSION == 2
    assert (small_run / "init.safetensors").is_file()
    for condition, first in (("ticket", 0), ("reinit", 1), ("random_prune", 1)):
        assert sorted(p.name for p in (small_run / condition).iterdir()) == [
            f"round_{k}" for k in range(first, 4)
        ]
        for k in range(first, 4):
            rd = round_dir(small_run, condition, k)
            names = {p.name for p in rd.iterdir()}
            assert names == {
                "mask.safetensors",
                "rewind.safetensors",
                "final.safetensors",
                "metrics.jsonl",
                "summary.json",
            }
            records = read_metrics(rd / "metrics.jsonl")
            assert [r["iteration"] for r in records] == [25, 50]
            assert all(list(r) == list(METRIC_FIELDS) for r in records)
            assert all(0.0 <= r["test_accuracy"] <= 1.0 and math.isfinite(r["val_loss"]) for r in records)
            summary = json.loads((rd / "summary.json").read_text())
            assert list(summary)[: len(SUMMARY_FIELDS)] == list(SUMMARY_FIELDS) and summary["round"] == k
            assert set(summary) - set(SUMMARY_FIELDS) == {"mask_sha256", "mask_kept", "mask_total"}
            r = load_round(small_run, condition, k)
            assert r.start.buffers == {} and r.final.buffers == {}  # LeNet has no buffers
    lines = (small_run / "summary.csv").read_text().splitlines()
    assert lines[0] == ",".join(("condition", *SUMMARY_FIELDS))
    assert [tuple(line.split(",")[:2]) for line in lines[1:]] == [
        ("ticket", "0"), ("ticket", "1"), ("ticket", "2"), ("ticket", "3"),
        ("reinit", "1"), ("reinit", "2"), ("reinit", "3"),
        ("random_prune", "1"), ("random_prune", "2"), ("random_prune", "3"),
    ]  # fmt: skip


def test_imp_reaches_the_expected_densities_exactly(small_run: Path) -> None:
    per_layer = {name: expected_kept(total, 3) for name, total in PRUNABLE.items()}
    assert per_layer["fc3.weight"] == [1000, 800, 640, 512]
    assert per_layer["fc1.weight"] == [235200, 188160, 150528, 120422]  # 30105.6 rounds to 30106
    all_weights = sum(PRUNABLE.values())
    for k in range(4):
        mask = masks.load(round_dir(small_run, "ticket", k) / "mask.safetensors")
        counts = masks.counts(mask)
        assert {n: counts[n].kept for n in PRUNABLE} == {n: per_layer[n][k] for n in PRUNABLE}
        assert masks.density(mask) == pytest.approx(0.8**k, abs=2 / all_weights)
        summary = json.loads((round_dir(small_run, "ticket", k) / "summary.json").read_text())
        assert summary["density"] == masks.density(mask)
        assert summary["weights_remaining_pct"] == pytest.approx(100 * 0.8**k, abs=1e-3)
        for r in read_metrics(round_dir(small_run, "ticket", k) / "metrics.jsonl"):
            assert r["density"] == masks.density(mask)


def test_masks_are_nested_and_follow_the_previous_rounds_magnitudes(small_run: Path) -> None:
    for k in range(1, 4):
        prev = load_round(small_run, "ticket", k - 1)
        cur = masks.load(round_dir(small_run, "ticket", k) / "mask.safetensors")
        assert masks.intersect(prev.mask, cur) == cur  # pruned weights stay pruned
        for name in PRUNABLE:
            kept = prev.final.params[name][cur[name]].abs()
            dropped = prev.final.params[name][prev.mask[name] & ~cur[name]].abs()
            assert dropped.max() <= kept.min()  # the smallest survivors were removed


def test_reset_restores_theta0_on_the_survivors(small_run: Path) -> None:
    theta0 = ltfunc.load_tree(small_run / "init.safetensors")
    assert ltfunc.tree_equal(theta0, ltfunc.get_params(ltfunc.models.lenet300(seed=0)))
    assert ltfunc.tree_equal(load_round(small_run, "ticket", 0).rewind_point, Weights(theta0, {}))
    for k in range(4):
        r = load_round(small_run, "ticket", k)
        assert ltfunc.tree_equal(r.start, Weights(masks.apply(r.mask, theta0), {}))
        assert not ltfunc.tree_equal(r.final, r.start)  # it did train
        for name in PRUNABLE:
            assert torch.all(r.final.params[name][~r.mask[name]] == 0)  # pruned weights stayed 0


def test_reinit_baseline_keeps_the_mask_with_a_fresh_init(small_run: Path) -> None:
    theta0 = ltfunc.load_tree(small_run / "init.safetensors")
    model = ltfunc.models.lenet300(seed=0)
    for k in range(1, 4):
        ticket, base = load_round(small_run, "ticket", k), load_round(small_run, "reinit", k)
        assert base.mask == ticket.mask
        fresh = init_params(model, derive_seed(0, "reinit", k))
        assert ltfunc.tree_equal(base.start, Weights(masks.apply(ticket.mask, fresh), {}))
        for name in PRUNABLE:
            alive = ticket.mask[name]
            assert not torch.equal(base.start.params[name][alive], theta0[name][alive])
    # every round draws its own init
    r1, r2 = load_round(small_run, "reinit", 1), load_round(small_run, "reinit", 2)
    both = r2.mask["fc2.weight"]
    assert not torch.equal(r1.start.params["fc2.weight"][both], r2.start.params["fc2.weight"][both])


def test_random_prune_baseline_matches_counts_with_another_mask_on_theta0(small_run: Path) -> None:
    theta0 = ltfunc.load_tree(small_run / "init.safetensors")
    for k in range(1, 4):
        ticket, base = load_round(small_run, "ticket", k), load_round(small_run, "random_prune", k)
        ct, cb = masks.counts(ticket.mask), masks.counts(base.mask)
        assert {n: cb[n].kept for n in PRUNABLE} == {n: ct[n].kept for n in PRUNABLE}
        assert base.mask != ticket.mask
        overlap = masks.counts(masks.intersect(base.mask, ticket.mask))["fc1.weight"].kept
        # an independent random mask overlaps the ticket in about density^2 of the weights
        assert overlap / PRUNABLE["fc1.weight"] == pytest.approx(0.8 ** (2 * k), abs=0.01)
        assert ltfunc.tree_equal(base.start, Weights(masks.apply(base.mask, theta0), {}))


def test_early_stopping_summary_agrees_with_the_metrics(small_run: Path) -> None:
    for condition, k in (("ticket", 0), ("ticket", 3), ("reinit", 2), ("random_prune", 1)):
        rd = round_dir(small_run, condition, k)
        records = read_metrics(rd / "metrics.jsonl")
        summary = json.loads((rd / "summary.json").read_text())
        best = min(records, key=lambda r: r["val_loss"])
        assert summary["early_stop_iteration"] == best["iteration"]
        assert summary["test_accuracy_at_early_stop"] == best["test_accuracy"]
        assert summary["val_loss_at_early_stop"] == best["val_loss"]
        assert summary["last_test_accuracy"] == records[-1]["test_accuracy"]
    # 50 Adam steps already learn MNIST far above chance (10%)
    dense = json.loads((round_dir(small_run, "ticket", 0) / "summary.json").read_text())
    assert dense["last_test_accuracy"] > 0.8


def test_same_config_and_seed_reproduce_masks_and_metrics(
    small_run: Path, data_root: Path, tmp_path: Path
) -> None:
    cfg = ImpConfig(**SMALL)
    result = run_imp(cfg, tmp_path / "again", data_root=data_root, progress=False)
    assert len(result.trained) == 10 and result.resumed == ()
    assert_same_results(small_run, tmp_path / "again", cfg)
    # the returned rows are summary.csv's: condition + every summary field, val_loss_at_early_stop too
    assert [list(r) for r in result.rows] == [["condition", *SUMMARY_FIELDS]] * 10
    for row in result.rows:
        summary = json.loads(
            (round_dir(small_run, row["condition"], row["round"]) / "summary.json").read_text()
        )
        assert row["val_loss_at_early_stop"] == summary["val_loss_at_early_stop"]
        assert math.isfinite(row["val_loss_at_early_stop"])


def test_resume_skips_finished_rounds_and_redoes_an_interrupted_one(
    small_run: Path, data_root: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    # as if killed in ticket round 3: its summary is missing and a metrics line is cut short
    (round_dir(run, "ticket", 3) / "summary.json").unlink()
    for b in ("reinit", "random_prune"):
        shutil.rmtree(round_dir(run, b, 3))
    with open(round_dir(run, "ticket", 3) / "metrics.jsonl", "a") as fh:
        fh.write('{"iteration": 75, "train_lo')
    result = run_imp(ImpConfig(**SMALL), run, data_root=data_root, progress=False)
    assert result.trained == (("ticket", 3), ("reinit", 3), ("random_prune", 3))
    assert ("ticket", 2) in result.resumed and len(result.resumed) == 7
    assert_same_results(small_run, run, ImpConfig(**SMALL))
    assert [r["condition"] for r in result.rows].count("ticket") == 4


def test_a_changed_config_refuses_to_resume_unless_forced(
    small_run: Path, data_root: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    changed = ImpConfig(**{**SMALL, "rate": 0.5, "rounds": 1, "iterations": 10, "baselines": ()})
    with pytest.raises(ValueError) as info:
        run_imp(changed, run, data_root=data_root, progress=False)
    msg = str(info.value)
    assert "different config" in msg and "rate: 0.2 in the directory, 0.5 now" in msg and "rounds" in msg
    assert "force" in msg
    assert (round_dir(run, "ticket", 3) / "summary.json").is_file()  # nothing was touched
    with pytest.raises(ValueError, match="already holds this run"):
        run_imp(ImpConfig(**SMALL), run, data_root=data_root, resume=False, progress=False)
    result = run_imp(changed, run, data_root=data_root, force=True, progress=False)
    assert result.trained == (("ticket", 0), ("ticket", 1))
    assert read_config(run) == changed
    assert not (run / "reinit").exists() and not round_dir(run, "ticket", 2).exists()
    counts = masks.counts(masks.load(round_dir(run, "ticket", 1) / "mask.safetensors"))
    assert counts["fc3.weight"].kept == 500


def test_a_corrupt_checkpoint_names_the_file_and_finished_rounds_stay_usable(
    small_run: Path, data_root: Path, tmp_path: Path
) -> None:
    from ltfunc.report import summary_rows

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    for condition in ("ticket", "reinit", "random_prune"):
        (round_dir(run, condition, 3) / "summary.json").unlink()
    final = round_dir(run, "ticket", 2) / "final.safetensors"
    final.write_bytes(final.read_bytes()[:1000])  # truncated
    with pytest.raises(ValueError) as info:
        run_imp(ImpConfig(**SMALL), run, data_root=data_root, progress=False)
    assert str(final) in str(info.value) and "corrupt or truncated" in str(info.value)
    rows = summary_rows(run)
    assert [(r["condition"], r["round"]) for r in rows][:3] == [("ticket", 0), ("ticket", 1), ("ticket", 2)]
    assert len(rows) == 7
    with pytest.raises(ValueError, match=r"final\.safetensors"):
        load_round(run, "ticket", 2)
    # a corrupt config.json is named too
    (run / "config.json").write_text('{"model": "lenet')
    with pytest.raises(ValueError, match=r"config\.json is corrupt"):
        run_imp(ImpConfig(**SMALL), run, data_root=data_root, progress=False)


def test_rewinding_restores_the_weights_of_iteration_k(data_root: Path, tmp_path: Path) -> None:
    from ltfunc.data import load_dataset
    from ltfunc.step import make_train_step
    from ltfunc.trainer import make_trainer, train_round

    cfg = ImpConfig(
        **{
            **SMALL,
            "rounds": 1,
            "iterations": 30,
            "eval_every": 15,
            "rewind": 10,
            "baselines": ("random_prune",),
        }
    )
    run = tmp_path / "rewind"
    run_imp(cfg, run, data_root=data_root, progress=False)
    point = load_round(run, "ticket", 0).rewind_point
    assert ltfunc.tree_equal(
        point.params, ltfunc.load_tree(round_dir(run, "ticket", 0) / "rewind_point.safetensors")
    )
    # recompute the dense weights after 10 iterations with the same pieces
    model = ltfunc.models.lenet300(seed=0)
    theta0 = Weights.of(model)
    ds = load_dataset("mnist", data_root, val_size=1000, split_seed=0, download=False)
    trainer = make_trainer(
        make_train_step(model, cfg.make_optimizer(), compile=False),
        ds.train,
        iterations=10,
        batch_size=60,
        lr=cfg.lr,
    )
    assert ltfunc.tree_equal(point, train_round(trainer, theta0, masks.ones(theta0.params)).final)
    assert not ltfunc.tree_equal(point, theta0)
    r1 = load_round(run, "ticket", 1)
    assert ltfunc.tree_equal(r1.start, Weights(masks.apply(r1.mask, point.params), {}))
    # training resumed at the rewind iteration: evaluations at 15 and 30 only
    assert [r["iteration"] for r in r1.history] == [15, 30]
    base = load_round(run, "random_prune", 1)
    assert ltfunc.tree_equal(base.start, Weights(masks.apply(base.mask, point.params), {}))


# ---------------------------------------------------------------------------- bad input


def test_run_dir_that_is_a_file_fails_before_training(data_root: Path, tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        run_imp(ImpConfig(**SMALL), f, data_root=data_root, progress=False)
    with pytest.raises(ValueError, match="not writable"):
        run_imp(ImpConfig(**SMALL), f / "run", data_root=data_root, progress=False)
    assert f.read_text() == "x"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores directory permissions")
def test_run_dir_that_is_not_writable_fails_before_training(data_root: Path, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="not writable"):
            run_imp(ImpConfig(**SMALL), ro / "run", data_root=data_root, progress=False)
    finally:
        ro.chmod(0o700)


def test_missing_data_root_says_where_it_looked(tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        run_imp(ImpConfig(**SMALL), tmp_path / "run", data_root=nowhere, download=False, progress=False)
    assert str(nowhere / "mnist") in str(info.value) and "--data-root" in str(info.value)
    assert not (tmp_path / "run" / "config.json").exists()


def test_unknown_override_fails_before_training(data_root: Path, tmp_path: Path) -> None:
    cfg = ImpConfig(**{**SMALL, "overrides": {"fc9.weight": 0.3}})
    with pytest.raises(
        ValueError, match=r"fc9\.weight.*prunable: \['fc1.weight', 'fc2.weight', 'fc3.weight'\]"
    ):
        run_imp(cfg, tmp_path / "run", data_root=data_root, progress=False)
    assert not (tmp_path / "run" / "ticket").exists()


def test_foreign_directory_without_config_is_not_mixed(data_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "ticket").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no config\.json"):
        run_imp(ImpConfig(**SMALL), run, data_root=data_root, progress=False)


def test_run_imp_rejects_a_non_config() -> None:
    with pytest.raises(TypeError, match="run_imp: config must be an ImpConfig"):
        run_imp({"rounds": 1}, "runs/x")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- kill -9 and resume


@pytest.mark.slow
def test_kill_9_mid_round_then_rerun_matches_an_uninterrupted_run(
    small_run: Path, data_root: Path, tmp_path: Path
) -> None:
    cmd = [
        sys.executable,
        "-m",
        "ltfunc",
        *SMALL_CLI,
        "--data-root",
        str(data_root),
        "--runs-dir",
        str(tmp_path),
        "--name",
        "k",
    ]
    # Same thread count as this process (which made small_run): float reductions split across
    # threads differently, so only equal thread counts give bit-identical weights.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    run = tmp_path / "k"
    target = round_dir(run, "ticket", 1) / "metrics.jsonl"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (round_dir(run, "ticket", 0) / "summary.json").is_file()
    assert not (round_dir(run, "ticket", 1) / "summary.json").is_file()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "ticket" in done.stdout and (run / "plot.png").is_file()
    assert read_config(run) == ImpConfig(**SMALL)
    assert_same_results(small_run, run, ImpConfig(**SMALL))


@pytest.mark.slow
def test_compiled_runs_are_deterministic(data_root: Path, tmp_path: Path) -> None:
    """torch.compile on the CPU: same config and seed give bit-identical masks and metrics."""
    cfg = ImpConfig(**{**SMALL, "rounds": 2, "iterations": 30, "eval_every": 15, "compile": True})
    for name in ("a", "b"):
        run_imp(cfg, tmp_path / name, data_root=data_root, progress=False)
    assert_same_results(tmp_path / "a", tmp_path / "b", cfg)
    # and the masks follow the same per-layer counts as the eager run's
    kept = masks.counts(masks.load(round_dir(tmp_path / "a", "ticket", 2) / "mask.safetensors"))
    assert kept["fc1.weight"].kept == expected_kept(PRUNABLE["fc1.weight"], 2)[2]


# ---------------------------------------------------------------------------- run-directory lock


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_run_directory_in_use_is_refused_before_anything_is_touched(
    small_run: Path, data_root: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    (round_dir(run, "ticket", 3) / "summary.json").unlink()  # unfinished: a writer would redo it
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    # held by a live process (this one) on this host
    lock = {"pid": os.getpid(), "host": socket.gethostname(), "since": "2026-01-01T00:00:00"}
    (run / ".lock").write_text(json.dumps(lock))
    in_use = rf"run_imp: .*run is in use by process {os.getpid()}.*delete .*\.lock"
    with pytest.raises(ValueError, match=in_use):
        run_imp(ImpConfig(**SMALL), run, data_root=data_root, progress=False)
    with pytest.raises(ValueError, match="is in use by process"):  # force does not override a live lock
        run_imp(ImpConfig(**SMALL), run, data_root=data_root, progress=False, force=True)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != ".lock"} == before
    assert json.loads((run / ".lock").read_text()) == lock  # the other process's lock is left alone


def test_a_stale_lock_is_taken_over_and_the_lock_is_released_after_the_run(
    small_run: Path, data_root: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    (round_dir(run, "random_prune", 3) / "summary.json").unlink()
    (run / ".lock").write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "since": "x"}))
    result = run_imp(ImpConfig(**SMALL), run, data_root=data_root, progress=False)
    assert result.trained == (("random_prune", 3),)
    assert not (run / ".lock").exists()
    # released on failure too: a diverging run raises, and the next run is not locked out
    (round_dir(run, "random_prune", 3) / "summary.json").unlink()
    with pytest.raises(FloatingPointError):
        run_imp(ImpConfig(**{**SMALL, "lr": 1e30}), run, data_root=data_root, progress=False, force=True)
    assert not (run / ".lock").exists()


def test_make_config_trainer_follows_the_config_and_validates() -> None:
    from ltfunc.data import Dataset
    from ltfunc.experiment import make_config_trainer

    x, y = torch.randn(40, 1, 28, 28), torch.randint(0, 10, (40,))
    ds = Dataset("mnist", (x, y), (x[:8], y[:8]), (x, y))
    cfg = ImpConfig(**{**SMALL, "optimizer": "momentum", "lr": 0.05, "batch_size": 8, "seed": 4})
    t = make_config_trainer(cfg, ltfunc.models.lenet300(seed=0), ds)
    assert (t.iterations, t.batch_size, t.lr, t.data_seed, t.eval_every) == (50, 8, 0.05, 4, 25)
    assert t.step.optimizer.name == "momentum"  # the trainer trains with its step's optimizer
    assert (t.step.optimizer.lr, t.step.compiled) == (0.05, False)
    weights = Weights.of(ltfunc.models.lenet300(seed=0))
    assert sorted(t.evaluate(weights, masks.ones(weights.params))) == [
        "test_accuracy", "test_loss", "val_accuracy", "val_loss",
    ]  # fmt: skip
    with pytest.raises(ValueError, match=r"make_config_trainer: splits='valid' is not supported"):
        make_config_trainer(cfg, ltfunc.models.lenet300(), ds, splits=("valid",))
    with pytest.raises(TypeError, match="make_config_trainer: config must be an ImpConfig"):
        make_config_trainer({"rounds": 1}, ltfunc.models.lenet300(), ds)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- BatchNorm: resume with buffers


def bn_mlp(init: str = "glorot_normal", seed: int | None = None) -> torch.nn.Module:
    """Flatten -> Linear(784, 64) -> BatchNorm1d(64) -> ReLU -> Linear(64, 10), drawn from ``seed``."""
    assert init in ltfunc.models.INITS
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0 if seed is None else seed)
        return torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(784, 64),
            torch.nn.BatchNorm1d(64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 10),
        )


BN_SMALL = {
    "model": "bn_mlp",
    "rounds": 3,
    "rate": 0.2,
    "iterations": 40,
    "eval_every": 20,
    "rewind": 10,
    "val_size": 1000,
    "seed": 0,
    "compile": False,
}


class Interrupted(Exception):
    """Stands in for a crash in the middle of a round."""


def interrupt_in(monkeypatch: pytest.MonkeyPatch, condition: str, k: int) -> None:
    """Make round ``k`` of ``condition`` raise right after its first evaluation record is logged."""
    start_round = rundir.start_round

    def start_then_fail(run: Path, cond: str, kk: int) -> rundir.MetricsLog:
        log = start_round(run, cond, kk)
        if (cond, kk) == (condition, k):
            append = log.append

            def append_then_fail(record: dict[str, Any]) -> None:
                append(record)
                raise Interrupted(f"{cond} round {kk}")

            log.append = append_then_fail  # type: ignore[method-assign]
        return log

    monkeypatch.setattr(rundir, "start_round", start_then_fail)


def test_a_resumed_batchnorm_run_with_rewinding_matches_an_uninterrupted_one(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The acceptance test: BatchNorm running statistics are saved and restored with the weights."""
    monkeypatch.setitem(ltfunc.models.MODELS, "bn_mlp", bn_mlp)
    cfg = ImpConfig(**BN_SMALL)
    whole = run_imp(cfg, tmp_path / "whole", data_root=data_root, progress=False)
    assert len(whole.trained) == 10

    run = tmp_path / "resumed"
    with monkeypatch.context() as mp:  # crash in the middle of ticket round 2
        interrupt_in(mp, "ticket", 2)
        with pytest.raises(Interrupted):
            run_imp(cfg, run, data_root=data_root, progress=False)
    assert rundir.is_finished(run, "random_prune", 1) and not rundir.is_finished(run, "ticket", 2)
    assert len(read_metrics(round_dir(run, "ticket", 2) / "metrics.jsonl")) == 1
    with monkeypatch.context() as mp:  # resume, and crash again in a baseline of round 2
        interrupt_in(mp, "random_prune", 2)
        with pytest.raises(Interrupted):
            run_imp(cfg, run, data_root=data_root, progress=False)
    assert rundir.is_finished(run, "reinit", 2) and not rundir.is_finished(run, "random_prune", 2)
    assert not (run / ".lock").exists()
    result = run_imp(cfg, run, data_root=data_root, progress=False)
    assert result.trained == (("random_prune", 2), ("ticket", 3), ("reinit", 3), ("random_prune", 3))

    # same masks, params and buffers, metrics and accuracies as the uninterrupted run
    assert_same_results(tmp_path / "whole", run, cfg)
    without_time = [{k: v for k, v in r.items() if k != "wall_seconds"} for r in whole.rows]
    assert [{k: v for k, v in r.items() if k != "wall_seconds"} for r in result.rows] == without_time

    # the buffers are real BatchNorm statistics: the test fails if they are not saved and restored
    names = ["2.running_mean", "2.running_var", "2.num_batches_tracked"]
    theta0 = load_round(run, "ticket", 0)
    assert list(Weights.of(bn_mlp(seed=0)).buffers) == names
    assert int(theta0.start.buffers["2.num_batches_tracked"]) == 0
    point = theta0.rewind_point
    assert list(point.buffers) == names and int(point.buffers["2.num_batches_tracked"]) == 10
    assert torch.count_nonzero(point.buffers["2.running_mean"]) > 0
    for condition in ("ticket", *cfg.baselines):
        for k in range(0 if condition == "ticket" else 1, cfg.rounds + 1):
            r = load_round(run, condition, k)
            assert list(r.final.buffers) == names, (condition, k)
            # the dense round and the rounds rewound to iteration 10 count 40 batches; reinit
            # restarts from the model's own statistics at iteration 10, so it counts 30
            tracked = 30 if condition == "reinit" else 40
            assert int(r.final.buffers["2.num_batches_tracked"]) == tracked, (condition, k)
            assert torch.count_nonzero(r.final.buffers["2.running_mean"]) > 0, (condition, k)
            assert not torch.equal(r.final.buffers["2.running_var"], torch.ones(64)), (condition, k)
            if k:
                start_tracked = 0 if condition == "reinit" else 10
                assert int(r.start.buffers["2.num_batches_tracked"]) == start_tracked, (condition, k)
    # the accuracies are those of the saved statistics: re-evaluating the saved weights gives them
    ds = ltfunc.load_dataset("mnist", data_root, val_size=1000, download=False)
    r = load_round(run, "ticket", 3)
    loss, acc = ltfunc.evaluate(bn_mlp(seed=0), r.final.params, r.mask, ds.test, buffers=r.final.buffers)
    assert (loss, acc) == (r.history[-1]["test_loss"], r.history[-1]["test_accuracy"])
    assert acc > 0.5
    # every finished round was skipped, the ticket rounds and their baselines alike
    assert result.resumed == (
        ("ticket", 0),
        ("ticket", 1),
        ("reinit", 1),
        ("random_prune", 1),
        ("ticket", 2),
        ("reinit", 2),
    )


# ---------------------------------------------------------------------------- run directories of format 1


OLD_RUNS = ROOT / "docs" / "results"


@pytest.mark.parametrize(
    "study", ["lenet-mnist/runs/lenet-mnist-seed0", "conv2-fashion/runs/conv2-fashion-seed0"]
)
def test_committed_run_directories_of_format_1_still_read(study: str) -> None:
    from ltfunc.report import summary_rows
    from tests.synthetic_runs import snapshot_files

    run = OLD_RUNS / study
    before = snapshot_files(run)
    assert "format_version" not in json.loads((run / "config.json").read_text())  # written before it
    cfg = read_config(run)
    rows = summary_rows(run)
    assert [list(r) for r in rows] == [["condition", *SUMMARY_FIELDS]] * len(rows)
    expected = [("ticket", k) for k in range(cfg.rounds + 1)] + [
        (b, k) for b in cfg.baselines for k in range(1, cfg.rounds + 1)
    ]
    assert [(r["condition"], r["round"]) for r in rows] == expected
    assert all(0.0 < r["test_accuracy_at_early_stop"] <= 1.0 for r in rows)
    assert snapshot_files(run) == before  # reading writes nothing


def test_load_round_reads_a_format_1_run_with_empty_buffers(tmp_path: Path) -> None:
    """The committed LeNet run keeps θ0 and the masks as format 1 wrote them; its rounds' weights
    files were not kept, so they are written here the way format 1 wrote them (params only)."""
    src = OLD_RUNS / "lenet-mnist" / "runs" / "lenet-mnist-seed0"
    run = tmp_path / "old"
    run.mkdir()
    for name in ("config.json", "init.safetensors", "summary.csv"):
        shutil.copy(src / name, run / name)
    theta0 = ltfunc.load_tree(src / "init.safetensors")
    for k in (0, 1):
        shutil.copytree(round_dir(src, "ticket", k), round_dir(run, "ticket", k))
        mask = masks.load(round_dir(run, "ticket", k) / "mask.safetensors")
        ltfunc.save_tree(masks.apply(mask, theta0), round_dir(run, "ticket", k) / "rewind.safetensors")
        trained = {n: t * 1.5 for n, t in masks.apply(mask, theta0).items()}
        ltfunc.save_tree(trained, round_dir(run, "ticket", k) / "final.safetensors")
    r0, r1 = load_round(run, "ticket", 0), load_round(run, "ticket", 1)
    assert ltfunc.tree_equal(r0.rewind_point, Weights(theta0, {}))  # θ0 of format 1, buffers {}
    assert r1.mask == masks.load(src / "ticket" / "round_1" / "mask.safetensors")
    assert masks.density(r1.mask) == pytest.approx(
        json.loads((src / "ticket/round_1/summary.json").read_text())["density"]
    )
    assert ltfunc.tree_equal(r1.start, Weights(masks.apply(r1.mask, theta0), {}))
    assert r1.final.buffers == {} and list(r1.final.params) == list(theta0)
    assert list(r1.history) == read_metrics(src / "ticket" / "round_1" / "metrics.jsonl")
    assert read_config(run) == read_config(src)


def test_a_newer_format_version_is_refused_by_every_reader(small_run: Path, tmp_path: Path) -> None:
    from ltfunc.report import summary_rows

    run = tmp_path / "future"
    shutil.copytree(small_run, run)
    data = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**data, "format_version": 99}))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    refused = r"format_version=99.*reads run directories of format 1 to 2"
    with pytest.raises(ValueError, match="read_config: .*" + refused):
        read_config(run)
    with pytest.raises(ValueError, match="summary_rows: .*" + refused):
        summary_rows(run)
    # refused before the dataset is even looked for, and nothing is touched
    with pytest.raises(ValueError, match="run_imp: .*" + refused):
        run_imp(ImpConfig(**SMALL), run, data_root=tmp_path / "nowhere", download=False, progress=False)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------------------- recipes: new config fields


def tiny_mlp(width: int = 16, seed: int | None = None) -> torch.nn.Module:
    """A model factory given by import path (no ``init`` argument: only ``seed`` is passed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0 if seed is None else seed)
        return torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, width), torch.nn.ReLU(), torch.nn.Linear(width, 10)
        )


tiny_mlp_v2 = tiny_mlp  # the same model under another import path
NOT_CALLABLE = 3


def not_a_model(seed: int | None = None) -> str:
    return "a model"


def not_a_dataset(val_size: int = 0) -> tuple[int, int]:
    return (1, 2)


TINY_RUN: dict[str, Any] = {
    "model": "tests.test_experiment:tiny_mlp",
    "dataset": "tests.test_experiment:tiny_dataset",
    "rounds": 2,
    "rate": 0.5,
    "iterations": 20,
    "eval_every": 10,
    "val_size": 50,
    "batch_size": 16,
    "baselines": ("reinit",),
    "compile": False,
}


@pytest.mark.parametrize("study", ["lenet-mnist", "conv2-fashion"])
def test_an_old_config_json_without_the_new_keys_compares_equal(study: str, tmp_path: Path) -> None:
    from ltfunc.config import LATER_FIELDS

    src = OLD_RUNS / study / "runs" / f"{study}-seed0" / "config.json"
    old = json.loads(src.read_text())
    assert not any(k in old for k in LATER_FIELDS)
    cfg = ImpConfig.from_dict(old)
    assert config_diff(old, cfg.to_dict()) == {} and config_diff(old, cfg.to_dict(defaults=True)) == {}
    assert cfg.config_hash() == old["config_hash"]  # the hash (default run-directory name) is unchanged
    assert not any(k in cfg.to_dict() for k in LATER_FIELDS)
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(src, run / "config.json")
    assert rundir.check_writable("run_imp", run, cfg, resume=True, force=False) == "resume"
    # a new field at a non-default value is a different config
    changed = dataclasses.replace(cfg, augment=True)
    assert config_diff(old, changed.to_dict()) == {"augment": (False, True)}
    with pytest.raises(ValueError, match=r"augment: False in the directory, True now"):
        rundir.check_writable("run_imp", run, changed, resume=True, force=False)


def test_the_new_fields_round_trip_and_count_in_the_hash() -> None:
    cfg = ImpConfig(
        optimizer="sgd", momentum=0.9, nesterov=True, lr=0.1, iterations=1000, lr_schedule="multistep",
        milestones=[500, 750], gamma=0.2, warmup=50, augment=True,
        model="tests.test_experiment:tiny_mlp", model_kwargs={"width": (4 * 2)},
    )  # fmt: skip
    assert cfg.milestones == (500, 750) and dict(cfg.model_kwargs) == {"width": 8}
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["milestones"] == [500, 750] and data["model_kwargs"] == {"width": 8}
    assert ImpConfig.from_dict(data) == cfg and ImpConfig.from_dict(data).config_hash() == cfg.config_hash()
    assert pickle.loads(pickle.dumps(cfg)) == cfg and copy.deepcopy(cfg) == cfg
    assert cfg.make_optimizer().hyperparams["nesterov"] is True
    for field, value in [("warmup", 10), ("augment", True), ("model_kwargs", {"num_classes": 10})]:
        assert ImpConfig(**{field: value}).config_hash() != ImpConfig().config_hash(), field
    assert ImpConfig(model_kwargs={"a": [1, 2]}) == ImpConfig(model_kwargs={"a": (1, 2)})  # JSON values
    with pytest.raises(TypeError):
        cfg.model_kwargs["width"] = 3  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        (
            {"model": "no_such_package.models:net"},
            ValueError,
            ["model='no_such_package.models:net'", "cannot import"],
        ),
        ({"model": "tests.test_experiment:nope"}, ValueError, ["has no 'nope'"]),
        ({"model": "tests.test_experiment:NOT_CALLABLE"}, TypeError, ["callable factory", "int"]),
        ({"model": ":net"}, ValueError, ["package.module:factory"]),
        (
            {"dataset": "no_such_package:data"},
            ValueError,
            ["dataset='no_such_package:data'", "cannot import"],
        ),
        ({"model_kwargs": {"width": object()}}, TypeError, ["model_kwargs must hold JSON values"]),
        ({"model_kwargs": {"seed": 1}}, ValueError, ["model_kwargs must not hold ['seed']"]),
        ({"model_kwargs": [("width", 3)]}, TypeError, ["model_kwargs must be a dict"]),
        ({"nesterov": True, "optimizer": "adam"}, ValueError, ["nesterov=True needs optimizer 'sgd'"]),
        ({"nesterov": True, "optimizer": "sgd"}, ValueError, ["momentum > 0"]),
        ({"augment": "yes"}, TypeError, ["augment must be a bool"]),
    ],
)
def test_bad_factories_and_new_fields_are_refused_by_the_config(
    kwargs: dict[str, Any], error: type, words: list[str]
) -> None:
    with pytest.raises(error) as info:
        ImpConfig(**kwargs)
    assert str(info.value).startswith("ImpConfig:")
    for w in words:
        assert w in str(info.value), (w, str(info.value))


@pytest.mark.parametrize(
    ("changes", "error", "words"),
    [
        ({"model": "tests.test_experiment:not_a_model"}, TypeError, ["must return a torch.nn.Module", "str"]),
        ({"model_kwargs": {"depth": 3}}, TypeError, ["tiny_mlp cannot be called with", "depth"]),
        (
            {"dataset": "tests.test_experiment:not_a_dataset"},
            TypeError,
            ["must return an ltfunc.data.Dataset"],
        ),
    ],
)
def test_factories_that_do_not_build_fail_before_any_work(
    changes: dict[str, Any], error: type, words: list[str], tmp_path: Path
) -> None:
    with pytest.raises(error) as info:
        run_imp(ImpConfig(**{**TINY_RUN, **changes}), tmp_path / "run", progress=False)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    assert not (tmp_path / "run" / "config.json").exists() and not (tmp_path / "run" / "ticket").exists()


def test_models_and_datasets_by_import_path_run_resume_and_refuse_a_changed_path(tmp_path: Path) -> None:
    cfg = ImpConfig(**{**TINY_RUN, "model_kwargs": {"width": 8}})
    run = tmp_path / "run"
    result = run_imp(cfg, run, progress=False)
    assert result.trained == (("ticket", 0), ("ticket", 1), ("reinit", 1), ("ticket", 2), ("reinit", 2))
    saved = read_config(run)
    assert saved.model == "tests.test_experiment:tiny_mlp" and dict(saved.model_kwargs) == {"width": 8}
    assert json.loads((run / "config.json").read_text())["dataset"] == "tests.test_experiment:tiny_dataset"
    final = load_round(run, "ticket", 2).final.params
    assert final["1.weight"].shape == (8, 192)  # model_kwargs reached the factory
    # θ0 is the factory's draw with the config's seed
    assert ltfunc.tree_equal(
        load_round(run, "ticket", 0).start.params, ltfunc.get_params(tiny_mlp(8, seed=0))
    )
    assert run_imp(cfg, run, progress=False).trained == ()  # resumes: all finished
    for changes, field in [
        ({"model": "tests.test_experiment:tiny_mlp_v2"}, "model"),
        ({"model_kwargs": {"width": 9}}, "model_kwargs"),
        ({"dataset": "tests.test_experiment:not_a_dataset"}, "dataset"),
    ]:
        with pytest.raises(ValueError, match=rf"different config \({field}: "):
            run_imp(dataclasses.replace(cfg, **changes), run, progress=False)
    assert read_config(run) == cfg


def test_augment_reaches_the_batch_stream() -> None:
    from ltfunc.experiment import make_config_trainer

    ds = tiny_dataset(val_size=50)
    finals = {}
    for augment in (False, True):
        cfg = ImpConfig(**{**TINY_RUN, "augment": augment})
        t = make_config_trainer(cfg, tiny_mlp(seed=0), ds)
        assert t.augment is augment
        w = Weights.of(tiny_mlp(seed=0))
        finals[augment] = ltfunc.train_round(t, w, masks.ones(w.params)).final.params
    assert not ltfunc.tree_equal(finals[False], finals[True])


# ---------------------------------------------------------------- weight decay never revives pruned weights


OPTIMIZERS_WITH_DECAY = {
    "sgd_momentum_wd": {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-2, "lr": 0.1},
    "sgd_nesterov_wd": {
        "optimizer": "sgd",
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5e-2,
        "lr": 0.1,
    },
    "adamw": {"optimizer": "adamw", "weight_decay": 5e-2, "lr": 1e-2},
    "adam_l2": {"optimizer": "adam", "weight_decay": 5e-2, "lr": 1e-2},
}


@pytest.mark.parametrize(
    ("name", "compile"),
    [*((name, False) for name in OPTIMIZERS_WITH_DECAY), ("sgd_momentum_wd", True)],  # compiled: same masking
)
def test_weight_decay_and_momentum_keep_pruned_weights_exactly_zero_in_the_step(
    name: str, compile: bool
) -> None:
    opt = ImpConfig(**OPTIMIZERS_WITH_DECAY[name]).make_optimizer()
    model = tiny_mlp(seed=0)
    params = ltfunc.get_params(model)  # NOT masked: the pruned weights start non-zero
    mask = ltfunc.prune.random(params, masks.ones(params), rate=0.5, seed=0)
    step = ltfunc.make_train_step(model, opt, compile=compile)
    ds = tiny_dataset()
    state = step.init(params)
    stream = ltfunc.data.batches(ds.train, 16, seed=0)
    for _ in range(4):  # 4 x 25 masked steps; check between them
        state = ltfunc.fit(step, state, mask, stream, 25, lr=opt.lr)
        for k, m in mask.items():
            assert torch.count_nonzero(state.params[k][~m]) == 0, (name, k)
            assert torch.count_nonzero(state.params[k][m]) == m.sum(), (name, k)  # survivors do train
    assert state.iteration == 100


@pytest.mark.parametrize("name", ["sgd_momentum_wd", "adamw"])
def test_weight_decay_never_revives_pruned_weights_in_whole_imp_rounds(name: str, tmp_path: Path) -> None:
    cfg = ImpConfig(**{**TINY_RUN, **OPTIMIZERS_WITH_DECAY[name], "iterations": 60, "rewind": 10})
    run_imp(cfg, tmp_path / "run", progress=False)
    for condition in ("ticket", "reinit"):
        for k in range(1 if condition == "reinit" else 0, cfg.rounds + 1):
            r = load_round(tmp_path / "run", condition, k)
            for p, m in r.mask.items():
                assert torch.count_nonzero(r.final.params[p][~m]) == 0, (condition, k, p)
                assert torch.count_nonzero(r.start.params[p][~m]) == 0, (condition, k, p)
            assert masks.density(r.mask) == pytest.approx(0.5**k, abs=0.01)


# ---------------------------------------------------------------------------- TensorBoard


def test_tensorboard_sink_writes_every_evaluation_with_its_tags(tmp_path: Path) -> None:
    pytest.importorskip(
        "tensorboard", reason="tensorboard is not installed (pip install 'ltfunc[tensorboard]')"
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ltfunc.experiment import TensorBoardSink

    cfg = ImpConfig(
        **{
            **TINY_RUN,
            "optimizer": "sgd",
            "lr": 0.1,
            "lr_schedule": "multistep",
            "milestones": (10,),
            "warmup": 5,
        }
    )
    sink = TensorBoardSink(tmp_path / "tb", cfg)
    seen: list[tuple[str, int, int]] = []

    def both(condition: str, k: int, record: Any) -> None:
        seen.append((condition, k, record["iteration"]))
        sink(condition, k, record)

    run_imp(cfg, tmp_path / "run", progress=False, on_record=both)
    sink.close()
    assert seen[:2] == [("ticket", 0, 10), ("ticket", 0, 20)] and len(seen) == 10
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for condition, k in [("ticket", 0), ("ticket", 1), ("ticket", 2), ("reinit", 1), ("reinit", 2)]:
        records = read_metrics(round_dir(tmp_path / "run", condition, k) / "metrics.jsonl")
        for metric in (
            "train_loss",
            "val_loss",
            "val_accuracy",
            "test_loss",
            "test_accuracy",
            "density",
            "lr",
        ):
            tag = f"{condition}/round_{k}/{metric}"
            assert tag in tags, tag
            scalars = events.Scalars(tag)
            assert [s.step for s in scalars] == [r["iteration"] for r in records], tag
            if metric == "lr":  # the lr of the last step before the evaluation: warm-up done, then x0.1 at 10
                assert [s.value for s in scalars] == pytest.approx([0.1, 0.01]), tag
            else:
                assert [s.value for s in scalars] == pytest.approx([r[metric] for r in records]), tag


def test_import_ltfunc_does_not_import_tensorboard() -> None:
    code = "import sys, ltfunc, ltfunc.experiment; print(any('tensorboard' in m for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_run_imp_rejects_a_sink_that_is_not_callable(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="run_imp: on_record must be None or callable"):
        run_imp(ImpConfig(**TINY_RUN), tmp_path / "run", on_record="tb")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- resume checks the masks


def test_load_round_refuses_a_mask_that_is_not_the_rounds(
    small_run: Path, tmp_path: Path, data_root: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    summary = json.loads((round_dir(run, "ticket", 3) / "summary.json").read_text())
    assert summary["mask_total"] == sum(PRUNABLE.values()) and len(summary["mask_sha256"]) == 64
    theirs = round_dir(run, "ticket", 2) / "mask.safetensors"
    ours = round_dir(run, "ticket", 3) / "mask.safetensors"
    shutil.copyfile(theirs, ours)  # a valid mask, but round 2's
    with pytest.raises(ValueError, match=r"ticket/round_3/mask.safetensors is not the mask this round"):
        load_round(run, "ticket", 3)
    with pytest.raises(ValueError, match="is not the mask this round"):  # resume uses load_round
        run_imp(ImpConfig(**SMALL), run, data_root=data_root, resume=True, progress=False)
    # older runs (no checksum) are checked by their density
    for key in ("mask_sha256", "mask_kept", "mask_total"):
        del summary[key]
    (round_dir(run, "ticket", 3) / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match=r"round_3/mask.safetensors keeps .* but .* says density"):
        load_round(run, "ticket", 3)
    shutil.copyfile(round_dir(small_run, "ticket", 3) / "mask.safetensors", ours)
    assert load_round(run, "ticket", 3).mask == load_round(small_run, "ticket", 3).mask


def test_load_round_names_a_mask_file_of_another_model(small_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    rd = round_dir(run, "reinit", 1)
    masks.save(masks.from_dict({"fc1.weight": torch.ones(5, 7)}), rd / "mask.safetensors")
    summary = json.loads((rd / "summary.json").read_text())
    del summary["mask_sha256"]
    summary["density"] = 1.0
    (rd / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match=r"reinit/round_1/mask.safetensors does not fit this run's model"):
        load_round(run, "reinit", 1)


def test_a_batch_larger_than_the_training_data_is_refused_before_the_directory_is_touched(
    data_root: Path, tmp_path: Path
) -> None:
    cfg = ImpConfig(**{**SMALL, "val_size": 59_990, "batch_size": 60})  # 10 training examples left
    with pytest.raises(
        ValueError, match=r"batch_size=60 is larger than the 10 training examples .*val_size=59990"
    ):
        run_imp(cfg, tmp_path / "run", data_root=data_root, progress=False)
    assert (
        not (tmp_path / "run" / "config.json").exists()
        and not (tmp_path / "run" / "init.safetensors").exists()
    )


def test_a_corrupt_summary_of_an_early_round_is_named_before_any_training(
    small_run: Path, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    for condition in ("ticket", "reinit", "random_prune"):  # round 3 is to be redone
        shutil.rmtree(round_dir(run, condition, 3))
    bad = round_dir(run, "reinit", 1) / "summary.json"
    bad.write_text('{"round": 1, "density"')
    trained: list[str] = []
    monkeypatch.setattr(ltfunc.ticket, "_train_round", lambda *a, **k: trained.append("x"))
    with pytest.raises(ValueError, match=rf"{re.escape(str(bad))} is corrupt"):
        run_imp(ImpConfig(**SMALL), run, data_root=data_root, progress=False)
    assert trained == []  # nothing was trained before the corrupt file was reported
