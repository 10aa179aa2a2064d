"""CIFAR-scale lottery tickets end to end, on a tiny CIFAR-10 written in the real file format.

Every new model family (LeNet-5, Conv-4/6, VGG with and without BatchNorm, the CIFAR ResNets,
ResNet-18) runs through :func:`ltfunc.run_imp` with the CIFAR recipe's moving parts switched on:
global pruning, rewinding to iteration 2, augmentation, SGD with momentum and weight decay and a
multistep schedule with warm-up. The runs are a few iterations of batch 8 and evaluate on 32
images: they check the plumbing (which weights are pruned, what is rewound, what is saved and
resumed), not accuracy. The fixture files are not the official ones, so they load with
``verify=False`` (``run_imp(..., verify=False)``, ``ltfunc imp --no-verify``), which is a run
option and never reaches ``config.json``.

The ResNet-20 run is also made by ``ltfunc imp`` in a subprocess that is killed with SIGKILL in
the middle of ticket round 1 and run again: the resumed run must equal the uninterrupted one
bit for bit (masks, weights, BatchNorm statistics, metrics). ``ltfunc report`` and
``ltfunc plot`` then read it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest
import torch
from helpers import write_cifar
from test_experiment import assert_same_results

import ltfunc
from ltfunc import masks, rundir
from ltfunc.cli import main
from ltfunc.config import ImpConfig
from ltfunc.experiment import run_imp
from ltfunc.rundir import load_round, read_config, round_dir
from ltfunc.studies import expected_densities

ROOT = Path(__file__).resolve().parents[1]

# 5 x 60 training images (32 held out for validation: 268 left), 32 test images
RECIPE: dict[str, Any] = {
    "dataset": "cifar10",
    "rounds": 2,
    "rate": 0.2,
    "scope": "global",
    "rewind": 2,
    "iterations": 6,
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "batch_size": 8,
    "eval_every": 3,
    "val_size": 32,
    "seed": 0,
    "lr_schedule": "multistep",
    "milestones": (4,),
    "warmup": 2,
    "gamma": 0.1,
    "augment": True,
    "compile": False,
}
RECIPE_CLI = [
    "imp", "--dataset", "cifar10", "--rounds", "2", "--rate", "0.2", "--scope", "global",
    "--rewind", "2", "--iterations", "6", "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9",
    "--weight-decay", "1e-4", "--batch-size", "8", "--eval-every", "3", "--val-size", "32",
    "--seed", "0", "--lr-schedule", "multistep", "--milestones", "4", "--warmup", "2",
    "--gamma", "0.1", "--augment", "--no-compile", "--no-verify", "--quiet",
]  # fmt: skip

OUTPUT_LAYER = {
    "vgg11": "fc.weight",
    "vgg16_bn": "fc.weight",
    "resnet20": "fc.weight",
    "resnet18": "linear.weight",
}
"""VGG and ResNet keep their output layer dense (their ``prunable_names()``)."""

# (model, extra config): one model per family (LeNet-5 compiled); ResNet-20 runs the whole recipe
# (2 rounds, both baselines), the others one round with one baseline or none; the big ones
# (several seconds each on a CPU) are marked slow
CASES = [
    pytest.param(
        "lenet5", {"model_kwargs": {"in_channels": 3, "image_size": 32}, "compile": True}, id="lenet5"
    ),
    pytest.param("conv4", {"rounds": 1, "baselines": ("random_prune",)}, id="conv4"),
    pytest.param("conv6", {"rounds": 1, "baselines": ("reinit",)}, id="conv6"),
    pytest.param("vgg11", {"rounds": 1, "baselines": ()}, id="vgg11", marks=pytest.mark.slow),
    pytest.param("vgg16_bn", {"rounds": 1, "baselines": ()}, id="vgg16_bn", marks=pytest.mark.slow),
    pytest.param("resnet20", {}, id="resnet20"),
    pytest.param("resnet18", {"rounds": 1, "baselines": ()}, id="resnet18", marks=pytest.mark.slow),
]


def config_of(model: str, **extra: Any) -> ImpConfig:
    return ImpConfig(**{**RECIPE, "model": model, **extra})


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_cifar(root, "cifar10", per_file=60, n_test=32)
    return root


@pytest.fixture(scope="module")
def resnet20_run(cifar_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted ResNet-20 run, in this process (shared by two tests)."""
    run = tmp_path_factory.mktemp("runs") / "resnet20"
    run_imp(config_of("resnet20"), run, data_root=cifar_root, progress=False, verify=False)
    return run


def check_run(run: Path, config: ImpConfig) -> None:
    """Densities, rewinding, the dense output layer and never-masked BN/biases of every round."""
    model = config.make_model()
    prunable = masks.prunable_names(model)  # the model's own declaration
    params = dict(model.named_parameters())
    # global scope, one rate: each round removes floor(0.2 * survivors + 0.5) of all prunable weights
    kept = [sum(params[n].numel() for n in prunable)]
    for _ in range(config.rounds):
        kept.append(kept[-1] - math.floor(0.2 * kept[-1] + 0.5))
    densities = [n / kept[0] for n in kept]
    if not config.model_kwargs:  # the study registry's count (built with the default input shape)
        assert expected_densities(config) == pytest.approx(densities, abs=1e-15)
    output = OUTPUT_LAYER.get(config.model)
    if output is not None:  # VGG / ResNet: the output layer is a Linear weight that is never pruned
        assert output in params and output not in prunable
    norms = {
        f"{name}.{p}"
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)
        for p in ("weight", "bias")
    }
    assert norms.isdisjoint(prunable) and not any(n.endswith(".bias") for n in prunable)
    assert bool(norms) == any(k in config.model for k in ("_bn", "resnet"))

    dense = load_round(run, "ticket", 0)
    point = dense.rewind_point
    assert point is not None and dense.start.params.keys() == point.params.keys()
    for condition in ("ticket", *config.baselines):
        for k in range(0 if condition == "ticket" else 1, config.rounds + 1):
            r = load_round(run, condition, k)
            assert list(r.mask) == prunable, (condition, k)  # BN weights and biases are never masked
            assert masks.density(r.mask) == pytest.approx(densities[k], abs=1e-12), (condition, k)
            for name, m in r.mask.items():  # pruned weights stay exactly zero through training
                assert not r.final.params[name][~m].any(), (condition, k, name)
            if output is not None:  # the output layer stays dense: trained, not a zero in it
                assert bool(r.final.params[output].ne(0).all()), (condition, k)
            if condition == "ticket" and k:
                # rewound to the dense weights (and BN statistics) of iteration 2, then masked
                ref = masks.apply(r.mask, point.params)
                assert ltfunc.tree_equal(r.start.params, ref), k
                assert ltfunc.tree_equal(r.start.buffers, point.buffers), k
                if output is not None:
                    assert torch.equal(r.start.params[output], point.params[output])
            summary = json.loads((round_dir(run, condition, k) / "summary.json").read_text())
            assert 0.0 <= summary["test_accuracy_at_early_stop"] <= 1.0
            # every round (rewound ones train iterations 2..6) evaluates at iterations 3 and 6
            assert [rec["iteration"] for rec in r.history] == [3, 6], (condition, k)
    # the recipe is in config.json; the data verification (a run option) is not
    saved = json.loads((run / "config.json").read_text())
    assert saved["augment"] is True and saved["lr_schedule"] == "multistep" and saved["milestones"] == [4]
    assert saved["warmup"] == 2 and saved["scope"] == "global" and saved["rewind"] == 2
    assert "verify" not in saved and read_config(run) == config


# ---------------------------------------------------------------------------- every family


@pytest.mark.parametrize(("model", "extra"), CASES)
def test_imp_runs_each_model_family(
    model: str, extra: dict[str, Any], cifar_root: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    config = config_of(model, **extra)
    if model == "resnet20":
        run = request.getfixturevalue("resnet20_run")
    else:
        run = tmp_path / model
        result = run_imp(config, run, data_root=cifar_root, progress=False, verify=False)
        assert len(result.trained) == 1 + config.rounds * (1 + len(config.baselines))
    check_run(run, config)


def test_official_checksums_are_checked_unless_verify_is_off(cifar_root: Path, tmp_path: Path) -> None:
    config = config_of("lenet5", model_kwargs={"in_channels": 3, "image_size": 32}, rounds=1, baselines=())
    with pytest.raises(ValueError, match=r"has MD5 [0-9a-f]{32}, expected the official"):
        run_imp(config, tmp_path / "run", data_root=cifar_root, progress=False, download=False)
    assert not (tmp_path / "run" / "config.json").exists()  # refused before anything was written
    with pytest.raises(TypeError, match=r"run_imp: verify must be a bool"):
        run_imp(config, tmp_path / "run", data_root=cifar_root, verify="no")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- kill -9, resume, report, plot


def test_kill_9_mid_round_then_rerun_matches_an_uninterrupted_run(
    resnet20_run: Path, cifar_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cmd = [
        sys.executable, "-m", "ltfunc", *RECIPE_CLI, "--model", "resnet20",
        "--data-root", str(cifar_root), "--runs-dir", str(tmp_path), "--name", "k",
        "--parallel", "sequential",
    ]  # fmt: skip
    # one process with the same thread count as this one (which made resnet20_run): bit-identical weights
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    run = tmp_path / "k"
    target = round_dir(run, "ticket", 1) / "metrics.jsonl"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    if proc.poll() is not None:
        pytest.fail(f"the run ended before it could be killed: {proc.communicate()[1].decode()}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert rundir.is_finished(run, "ticket", 0) and not rundir.is_finished(run, "ticket", 1)
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ticket" in done.stdout and (run / "plot.png").is_file()
    config = config_of("resnet20")
    assert read_config(run) == config
    assert_same_results(resnet20_run, run, config)  # masks, weights + BN statistics, metrics
    check_run(run, config)

    assert main(["report", str(run)]) == 0
    table = capsys.readouterr().out
    assert "ticket" in table and "reinit" in table and "random_prune" in table
    png = tmp_path / "acc.png"
    assert main(["plot", str(run), "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.std() > 0.01
