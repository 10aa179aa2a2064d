"""Tests for ltfunc.presets and `ltfunc imp --preset` / `ltfunc presets`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import ltfunc
from ltfunc import masks
from ltfunc.cli import imp_config_from_args, main
from ltfunc.config import ImpConfig
from ltfunc.presets import PRESETS, Preset, format_presets, get_preset, preset_config


def fake_cifar(root: Any = None, device: str = "cpu", val_size: int = 0) -> ltfunc.data.Dataset:
    """CIFAR-shaped random data (3x32x32, 10 classes), for running CIFAR presets without CIFAR."""
    from ltfunc.data import Dataset, Split

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(260, 3, 32, 32, generator=g), torch.randint(0, 10, (260,), generator=g)
    return Dataset(
        "fake-cifar",
        Split(x[val_size:200], y[val_size:200]),
        Split(x[:val_size], y[:val_size]),
        Split(x[200:], y[200:]),
    )


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


# ---------------------------------------------------------------------------- the presets


def test_the_required_presets_exist() -> None:
    for name in (
        "lenet300-mnist",
        "conv2-cifar10",
        "conv4-cifar10",
        "conv6-cifar10",
        "resnet20-cifar10",
        "vgg16-cifar10",
    ):
        assert name in PRESETS
        assert PRESETS[name].name == name


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_a_valid_config_and_model(name: str) -> None:
    p = PRESETS[name]
    assert isinstance(p, Preset) and p.sources and all(isinstance(s, str) and s for s in p.sources)
    cfg = p.config()
    assert cfg == preset_config(name) == ImpConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    for field, value in p.fields.items():
        got = getattr(cfg, field)
        assert (dict(got) if field == "model_kwargs" else got) == (
            tuple(value) if isinstance(value, list) else value
        ), field
    model = cfg.make_model()
    image = (1, 28, 28) if cfg.dataset == "mnist" else (3, 32, 32)
    assert model(torch.zeros(2, *image)).shape == (2, 10)
    assert len(masks.ones(model)) >= 3
    if "cifar10" in name:
        assert cfg.dataset == "cifar10" and cfg.augment is True
    with pytest.raises(TypeError):
        p.fields["lr"] = 1.0  # type: ignore[index]


def test_frankle_carbin_presets_follow_figure_2() -> None:
    expected = {  # name: (lr, iterations, conv rate)
        "lenet300-mnist": (1.2e-3, 50_000, None),
        "conv2-cifar10": (2e-4, 20_000, 0.1),
        "conv4-cifar10": (3e-4, 25_000, 0.1),
        "conv6-cifar10": (3e-4, 30_000, 0.15),
    }
    for name, (lr, iterations, conv) in expected.items():
        c = PRESETS[name].config()
        assert (c.optimizer, c.lr, c.batch_size, c.iterations) == ("adam", lr, 60, iterations), name
        assert (c.conv_rate, c.fc_rate, c.output_rate, c.scope, c.rewind) == (conv, 0.2, 0.1, "layer", 0), (
            name
        )
        assert (c.init, c.val_size, c.lr_schedule, c.warmup) == ("glorot_normal", 5000, "constant", 0), name
        assert any("Figure 2" in s for s in PRESETS[name].sources)


@pytest.mark.parametrize(("name", "model"), [("resnet20-cifar10", "resnet20"), ("vgg16-cifar10", "vgg16_bn")])
def test_open_lth_presets_follow_its_default_hparams(name: str, model: str) -> None:
    c = PRESETS[name].config()
    assert (c.model, c.dataset, c.init) == (model, "cifar10", "open_lth")
    assert (c.optimizer, c.lr, c.momentum, c.weight_decay, c.nesterov) == ("sgd", 0.1, 0.9, 1e-4, False)
    assert c.batch_size == 128 and c.iterations == 160 * 391 == 62_560
    assert (c.lr_schedule, c.milestones, c.gamma, c.warmup) == ("multistep", (31_280, 46_920), 0.1, 0)
    assert (c.rate, c.scope, c.rewind, c.augment) == (0.2, "global", 2000, True)
    sched = c.make_schedule()
    assert [round(sched(it), 6) for it in (0, 31_279, 31_280, 46_920, 62_559)] == [
        0.1,
        0.1,
        0.01,
        0.001,
        0.001,
    ]
    assert any("open_lth" in s and "default_hparams" in s for s in PRESETS[name].sources)
    assert any("rewind" in n for n in PRESETS[name].notes)


# ---------------------------------------------------------------------------- overrides


def test_overrides_replace_fields_and_a_shorter_run_scales_the_recipe() -> None:
    c = preset_config("resnet20-cifar10", {"iterations": 100})
    assert (c.iterations, c.milestones, c.rewind, c.lr) == (100, (50, 75), 3, 0.1)
    c = preset_config("resnet20-cifar10", {"iterations": 100, "milestones": (90,), "rewind": 0})
    assert (c.milestones, c.rewind) == ((90,), 0)  # given explicitly: not scaled
    c = preset_config(
        "resnet20-cifar10", {"iterations": 1000, "warmup": 0, "lr_schedule": "cosine", "milestones": ()}
    )
    assert (c.lr_schedule, c.milestones, c.rewind) == ("cosine", (), 32)
    c = preset_config("vgg16-cifar10", {"lr": 0.05, "warmup": 1000})
    assert (c.lr, c.warmup, c.iterations) == (0.05, 1000, 62_560)
    c = preset_config("lenet300-mnist", {"iterations": 500, "overrides": {"fc1.weight": 0.3}})
    assert (c.iterations, c.rewind, dict(c.overrides)) == (500, 0, {"fc1.weight": 0.3})
    c = preset_config("resnet20-cifar10", {"iterations": 4})
    assert (c.milestones, c.rewind) == ((2, 3), 0)
    assert preset_config("resnet20-cifar10", {"iterations": 3}).milestones == (2,)  # 1.5 and 2.25 collide
    assert PRESETS["conv6-cifar10"].config(rounds=2).rounds == 2


def test_bad_overrides_and_unknown_presets() -> None:
    with pytest.raises(
        ValueError, match=r"unknown preset 'resnet18-imagenet'\. Presets: lenet300-mnist, .*vgg16-cifar10"
    ):
        preset_config("resnet18-imagenet")
    with pytest.raises(ValueError, match=r"unknown preset"):
        get_preset("nope")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['epochs'\]"):
        preset_config("lenet300-mnist", {"epochs": 3})
    with pytest.raises(ValueError, match=r"ImpConfig: .*warm-up of 200 iterations is longer"):
        preset_config("resnet20-cifar10", {"iterations": 100, "warmup": 200})


# ---------------------------------------------------------------------------- the command line


def test_cli_precedence_defaults_preset_config_file_flags(tmp_path: Path) -> None:
    cfg, opts = imp_config_from_args(["imp", "--preset", "resnet20-cifar10", "--iterations", "100"])
    assert cfg == preset_config("resnet20-cifar10", {"iterations": 100})
    assert opts["run_dir"] == Path("runs") / cfg.config_hash() and opts["tensorboard"] is None
    toml = tmp_path / "exp.toml"
    toml.write_text('preset = "vgg16-cifar10"\nlr = 0.05\nrounds = 3\niterations = 1000\nname = "v"\n')
    cfg, opts = imp_config_from_args(["imp", "--config", str(toml), "--rounds", "2"])
    assert (cfg.model, cfg.lr, cfg.rounds, cfg.iterations, cfg.weight_decay) == (
        "vgg16_bn",
        0.05,
        2,
        1000,
        1e-4,
    )
    assert cfg.milestones == (500, 750)  # the file's iterations scale the preset's milestones
    assert opts["run_dir"] == Path("runs/v")
    # --preset on the command line wins over the file's preset; the file still wins over the preset
    cfg, _ = imp_config_from_args(
        ["imp", "--config", str(toml), "--preset", "resnet20-cifar10", "--no-augment"]
    )
    assert (cfg.model, cfg.lr, cfg.rounds, cfg.augment) == ("resnet20", 0.05, 3, False)
    # without a preset the defaults stay ImpConfig's
    assert imp_config_from_args(["imp"])[0] == ImpConfig()


def test_cli_unknown_preset_lists_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run_cli(["imp", "--preset", "resnet50-imagenet"], capsys)
    assert rc == 2 and "unknown preset 'resnet50-imagenet'" in err
    for name in PRESETS:
        assert name in err
    rc, _, err = run_cli(["presets", "nope"], capsys)
    assert rc == 2 and "unknown preset 'nope'" in err


def test_presets_command_lists_names_and_sources(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(["presets"], capsys)
    assert rc == 0 and out == format_presets() + "\n"
    for p in PRESETS.values():
        assert f"{p.name}: {p.title}" in out
        for s in p.sources:
            assert s in out
    assert "Frankle & Carbin" in out and "open_lth" in out and "models/cifar_resnet.py" in out
    rc, out, _ = run_cli(["presets", "resnet20-cifar10"], capsys)
    assert rc == 0 and "milestones = (31280, 46920)" in out and "note: rewind=2000" in out
    assert "vgg16-cifar10" not in out


def test_a_cifar_preset_runs_end_to_end_on_a_short_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "imp", "--preset", "resnet20-cifar10", "--dataset", "tests.test_presets:fake_cifar",
        "--iterations", "12", "--rounds", "1", "--eval-every", "6", "--val-size", "20", "--batch-size", "16",
        "--baselines", "none", "--no-compile", "--quiet", "--runs-dir", str(tmp_path), "--name", "r20",
    ]  # fmt: skip
    rc, out, err = run_cli(args, capsys)
    assert rc == 0, err
    saved = json.loads((tmp_path / "r20" / "config.json").read_text())
    assert saved["model"] == "resnet20" and saved["milestones"] == [6, 9] and saved["rewind"] == 0
    assert saved["augment"] is True and saved["lr_schedule"] == "multistep"
    assert "ticket" in out and (tmp_path / "r20" / "ticket" / "round_1" / "summary.json").is_file()
