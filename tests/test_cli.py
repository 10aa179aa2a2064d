"""Tests for the ltfunc command line (ltfunc.cli, python -m ltfunc, the console script)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ltfunc
from ltfunc import masks
from ltfunc.cli import build_parser, imp_config_from_args, main
from ltfunc.config import ImpConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--rounds",
    "1",
    "--iterations",
    "20",
    "--eval-every",
    "10",
    "--val-size",
    "500",
    "--no-compile",
    "--quiet",
]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def cli_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny finished run made by `ltfunc imp` (ticket rounds 0-1 and both baselines)."""
    runs = tmp_path_factory.mktemp("cli")
    assert main(["imp", *TINY, "--data-root", str(data_root), "--runs-dir", str(runs), "--name", "tiny"]) == 0
    return runs / "tiny"


# ---------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", [[], ["imp"], ["prune"], ["report"], ["plot"], ["presets"]])
def test_help_documents_every_option_with_defaults(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    parser = build_parser()
    if not command:
        for sub in ("imp", "prune", "report", "plot", "presets"):
            assert sub in text
        return
    sub = parser._subparsers._group_actions[0].choices[command[0]]  # type: ignore[union-attr]
    for action in sub._actions:
        for flag in action.option_strings:
            assert flag in text, flag
    if command[0] == "imp":
        for default in (
            "(default: 0.2)",
            "(default: 50000)",
            "(default: adam)",
            "(default: 0.0012)",
            "(default: runs)",
        ):
            assert default in text, default


def test_python_dash_m_and_the_console_script(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "ltfunc", "--help"], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert out.returncode == 0 and "imp" in out.stdout and "prune" in out.stdout
    script = Path(sys.executable).with_name("ltfunc")
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable} (pip install -e .)")
    out = subprocess.run([str(script), "imp", "--help"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0 and "--rewind" in out.stdout


# ---------------------------------------------------------------------------- config files and flags


def test_flags_map_onto_imp_config() -> None:
    args = (
        "imp --model conv2 --rounds 4 --rate 0.3 --conv-rate 0.1 --fc-rate 0.2 --output-rate 0.05 "
        "--override fc1.weight=0.4 --scope global --schedule sparsity --rewind 100 --iterations 1000 "
        "--optimizer sgd --momentum 0.9 --lr 0.01 --batch-size 32 --seed 3 --eval-every 50 --val-size 2000 "
        "--baselines reinit --init kaiming_normal --no-compile --runs-dir out --name n"
    )
    cfg, opts = imp_config_from_args(args.split())
    assert cfg == ImpConfig(
        model="conv2", rounds=4, rate=0.3, conv_rate=0.1, fc_rate=0.2, output_rate=0.05,
        overrides={"fc1.weight": 0.4}, scope="global", schedule="sparsity", rewind=100, iterations=1000,
        optimizer="sgd", momentum=0.9, lr=0.01, batch_size=32, seed=3, eval_every=50, val_size=2000,
        baselines=("reinit",), init="kaiming_normal", compile=False,
    )  # fmt: skip
    assert opts["run_dir"] == Path("out/n")
    none, _ = imp_config_from_args(["imp", "--baselines", "none"])
    assert none.baselines == ()
    default, opts = imp_config_from_args(["imp"])
    assert default == ImpConfig() and opts["run_dir"] == Path("runs") / ImpConfig().config_hash()


def test_config_file_is_overridden_by_explicit_flags(tmp_path: Path) -> None:
    toml = tmp_path / "exp.toml"
    toml.write_text(
        'model = "lenet300"\nrounds = 5\nrate = 0.3\noutput_rate = 0.1\niterations = 2000\n'
        'baselines = ["random_prune"]\nname = "from-file"\n[overrides]\n"fc1.weight" = 0.25\n'
    )
    cfg, opts = imp_config_from_args(["imp", "--config", str(toml), "--rounds", "2", "--rate", "0.2"])
    assert (cfg.rounds, cfg.rate) == (2, 0.2)  # flags win
    assert (cfg.output_rate, cfg.iterations, cfg.baselines) == (0.1, 2000, ("random_prune",))  # file
    assert dict(cfg.overrides) == {"fc1.weight": 0.25}
    assert opts["run_dir"] == Path("runs/from-file")
    # a flag equal to the default still overrides the file
    cfg, _ = imp_config_from_args(["imp", "--config", str(toml), "--rate", "0.2", "--iterations", "50000"])
    assert cfg.iterations == 50000
    jsn = tmp_path / "exp.json"
    jsn.write_text(json.dumps({"rounds": 5, "rate": 0.3, "iterations": 2000}))
    cfg, _ = imp_config_from_args(["imp", "--config", str(jsn)])
    assert (cfg.rounds, cfg.rate, cfg.iterations) == (5, 0.3, 2000)


def test_config_file_and_flag_runs_write_the_same_config_json(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "exp.toml"
    toml.write_text(
        "rounds = 1\niterations = 20\neval_every = 10\nval_size = 500\ncompile = false\n"
        'rate = 0.3\nbaselines = []\noptimizer = "sgd"\nlr = 0.05\n'
    )
    common = ["--data-root", str(data_root), "--runs-dir", str(tmp_path), "--quiet"]
    flags = ["--rounds", "1", "--iterations", "20", "--eval-every", "10", "--val-size", "500", "--no-compile",
             "--rate", "0.3", "--baselines", "none", "--optimizer", "sgd", "--lr", "0.05"]  # fmt: skip
    assert run_cli(["imp", "--config", str(toml), *common, "--name", "file"], capsys)[0] == 0
    assert run_cli(["imp", *flags, *common, "--name", "flags"], capsys)[0] == 0
    a = json.loads((tmp_path / "file" / "config.json").read_text())
    b = json.loads((tmp_path / "flags" / "config.json").read_text())
    assert a == b and a["rate"] == 0.3 and a["baselines"] == []


def test_toml_without_tomllib_asks_for_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "exp.toml"
    toml.write_text("rounds = 2\n")
    monkeypatch.setitem(sys.modules, "tomllib", None)  # as on Python 3.10
    rc, _, err = run_cli(["imp", "--config", str(toml)], capsys)
    assert rc == 2 and "needs Python >= 3.11" in err and ".json" in err


def test_bad_config_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = 3\n")
    rc, _, err = run_cli(["imp", "--config", str(bad)], capsys)
    assert rc == 2 and "unknown key(s) ['epochs']" in err and "rounds" in err
    bad.write_text("rounds = [\n")
    rc, _, err = run_cli(["imp", "--config", str(bad)], capsys)
    assert rc == 2 and "not valid TOML" in err
    rc, _, err = run_cli(["imp", "--config", str(tmp_path / "missing.toml")], capsys)
    assert rc == 2 and "no such file" in err


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--model", "resnet"], ["invalid choice: 'resnet'", "lenet300", "conv2"]),
        (["--dataset", "cifar"], ["invalid choice: 'cifar'", "mnist", "fashion-mnist"]),
        (["--optimizer", "lion"], ["invalid choice: 'lion'", "adam", "sgd"]),
        (["--rate", "1.5"], ["fraction in [0, 1)"]),
        (["--baselines", "shuffle"], ["unknown baseline(s) shuffle", "reinit", "random_prune"]),
    ],
)
def test_argparse_rejects_bad_names(
    args: list[str], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["imp", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err


def test_bad_values_exit_2_with_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run_cli(["imp", "--rounds", "0", "--runs-dir", str(tmp_path)], capsys)
    assert rc == 2 and "ltfunc: error: ImpConfig: rounds must be an int >= 1, got 0" in err
    rc, _, err = run_cli(
        ["imp", "--rewind", "500", "--iterations", "500", "--runs-dir", str(tmp_path)], capsys
    )
    assert rc == 2 and "rewind=500 is beyond the training length iterations=500" in err
    assert not any(tmp_path.iterdir())


def test_missing_data_root_says_where_it_looked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nowhere = tmp_path / "nowhere"
    rc, _, err = run_cli(
        ["imp", *TINY, "--data-root", str(nowhere), "--runs-dir", str(tmp_path / "r")], capsys
    )
    assert rc == 2 and str(nowhere / "mnist") in err and "--data-root" in err and "download" in err


def test_run_dir_that_is_a_file(data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "taken").write_text("")
    args = ["imp", *TINY, "--data-root", str(data_root), "--runs-dir", str(tmp_path), "--name", "taken"]
    rc, _, err = run_cli(args, capsys)
    assert rc == 2 and "is a file, not a directory" in err


# ---------------------------------------------------------------------------- subcommands


def test_imp_prints_the_report_and_writes_a_plot(cli_run: Path) -> None:
    assert (cli_run / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (cli_run / "summary.csv").is_file()
    assert sorted(p.name for p in (cli_run / "ticket").iterdir()) == ["round_0", "round_1"]


def test_imp_rerun_resumes_without_training(
    cli_run: Path, data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (cli_run / "ticket" / "round_1" / "summary.json").read_text()
    args = ["imp", *TINY, "--data-root", str(data_root), "--runs-dir", str(cli_run.parent), "--name", "tiny"]
    rc, out, _ = run_cli(args, capsys)
    assert rc == 0
    assert (cli_run / "ticket" / "round_1" / "summary.json").read_text() == before
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["condition", "round", "weights"]
    assert [ln.split()[:2] for ln in lines if ln.startswith(("ticket", "reinit", "random_prune"))] == [
        ["ticket", "0"], ["ticket", "1"], ["reinit", "1"], ["random_prune", "1"],
    ]  # fmt: skip
    rc, _, err = run_cli([*args[:-2], "--name", "tiny", "--rate", "0.5"], capsys)
    assert rc == 2 and "different config" in err and "rate" in err


def test_report_and_csv(cli_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(["report", str(cli_run), "--csv", str(tmp_path / "rows.csv")], capsys)
    assert rc == 0 and "ticket" in out and "random_prune" in out and "80.00" in out
    rows = (tmp_path / "rows.csv").read_text().splitlines()
    assert rows[0].startswith("condition,round") and len(rows) == 5
    rc, _, err = run_cli(["report", str(tmp_path / "nothing")], capsys)
    assert rc == 2 and "does not exist" in err


def test_plot(cli_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_png = tmp_path / "acc.png"
    rc, out, _ = run_cli(["plot", str(cli_run), "-o", str(out_png)], capsys)
    assert rc == 0 and out_png.read_bytes()[:4] == b"\x89PNG" and str(out_png) in out
    rc, _, err = run_cli(["plot", str(cli_run), "-o", str(tmp_path / "acc.jpg")], capsys)
    assert rc == 2 and ".png" in err


def test_prune_given_weights(cli_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = cli_run / "ticket" / "round_0" / "final.safetensors"
    out_mask = tmp_path / "m.safetensors"
    args = [
        "prune",
        "--weights",
        str(weights),
        "--fc-rate",
        "0.2",
        "--output-rate",
        "0.1",
        "-o",
        str(out_mask),
    ]
    rc, out, _ = run_cli(args, capsys)
    assert rc == 0
    mask = masks.load(out_mask)
    theta = ltfunc.load_tree(weights)
    assert mask == ltfunc.prune.magnitude(theta, masks.ones(theta), rate=ltfunc.Rates(fc=0.2, output=0.1))
    table = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines() if ln.startswith(("fc", "total"))}
    assert table["fc1.weight"][:2] == ["188160", "235200"]
    assert table["fc3.weight"][:2] == ["900", "1000"]
    # prune further from that mask, to a target sparsity of 50%
    m2 = tmp_path / "m2.safetensors"
    args = [
        "prune",
        "--weights",
        str(weights),
        "--mask",
        str(out_mask),
        "--rate",
        "0.5",
        "--sparsity",
        "-o",
        str(m2),
    ]
    assert run_cli(args, capsys)[0] == 0
    assert masks.counts(masks.load(m2))["fc2.weight"].kept == 15000


def test_prune_trains_dense_first(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_mask, out_w = tmp_path / "m.safetensors", tmp_path / "w.safetensors"
    args = ["prune", "--iterations", "20", "--no-compile", "--quiet", "--data-root", str(data_root),
            "--rate", "0.5", "-o", str(out_mask), "--save-weights", str(out_w)]  # fmt: skip
    rc, out, _ = run_cli(args, capsys)
    assert rc == 0 and "trained 20 iterations: test accuracy" in out
    mask, w = masks.load(out_mask), ltfunc.load_tree(out_w)
    assert masks.counts(mask)["fc3.weight"].kept == 500
    theta0 = ltfunc.get_params(ltfunc.models.lenet300(seed=0))
    assert not ltfunc.tree_equal(w, masks.apply(mask, theta0))  # trained, then masked
    assert all(float(w[n][~mask[n]].abs().sum()) == 0.0 for n in mask)


def test_prune_bad_weights_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"not a checkpoint")
    rc, _, err = run_cli(["prune", "--weights", str(bad), "-o", str(tmp_path / "m.safetensors")], capsys)
    assert rc == 2 and str(bad) in err


# ------------------------------------------------------------ recipes: schedules, models by path, TensorBoard


def test_recipe_flags_map_onto_imp_config() -> None:
    args = [
        "imp", "--optimizer", "sgd", "--momentum", "0.9", "--nesterov", "--lr", "0.1", "--iterations", "1000",
        "--lr-schedule", "multistep", "--milestones", "500,750", "--gamma", "0.2", "--warmup", "50",
        "--augment", "--model", "tests.test_experiment:tiny_mlp", "--model-kwargs", '{"width": 8}',
        "--dataset", "tests.test_experiment:tiny_dataset", "--tensorboard", "tb", "--name", "n",
    ]  # fmt: skip
    cfg, opts = imp_config_from_args(args)
    assert cfg == ImpConfig(
        optimizer="sgd", momentum=0.9, nesterov=True, lr=0.1, iterations=1000, lr_schedule="multistep",
        milestones=(500, 750), gamma=0.2, warmup=50, augment=True, model="tests.test_experiment:tiny_mlp",
        model_kwargs={"width": 8}, dataset="tests.test_experiment:tiny_dataset",
    )  # fmt: skip
    assert opts["tensorboard"] == Path("tb/n")
    cfg, _ = imp_config_from_args(["imp", "--lr-schedule", "cosine", "--iterations", "100", "--no-augment"])
    assert (cfg.lr_schedule, cfg.augment, cfg.milestones) == ("cosine", False, ())


def test_recipe_keys_in_a_config_file(tmp_path: Path) -> None:
    toml = tmp_path / "exp.toml"
    toml.write_text(
        'optimizer = "sgd"\nmomentum = 0.9\nlr_schedule = "multistep"\nmilestones = [100, 200]\n'
        'iterations = 300\naugment = true\ntensorboard = "tb"\nname = "f"\n[model_kwargs]\nnum_classes = 10\n'
    )
    cfg, opts = imp_config_from_args(["imp", "--config", str(toml), "--milestones", "150"])
    assert (cfg.milestones, cfg.augment, dict(cfg.model_kwargs)) == ((150,), True, {"num_classes": 10})
    assert opts["tensorboard"] == Path("tb/f")
    jsn = tmp_path / "exp.json"
    jsn.write_text(json.dumps({"lr_schedule": "multistep", "milestones": "100,200", "iterations": 300}))
    assert imp_config_from_args(["imp", "--config", str(jsn)])[0].milestones == (100, 200)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--milestones", "1e3,2e3"], ["--milestones", "comma-separated iterations"]),
        (["--model-kwargs", "{width: 8}"], ["--model-kwargs", "JSON object"]),
        (["--model-kwargs", "[8]"], ["--model-kwargs", "JSON object"]),
        (["--lr-schedule", "poly"], ["invalid choice: 'poly'", "multistep", "cosine"]),
        (["--dataset", "cifar"], ["invalid choice: 'cifar'", "package.module:name"]),
    ],
)
def test_argparse_rejects_bad_recipe_flags(
    args: list[str], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["imp", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--model", "no_such_pkg.nets:mlp"], ["model='no_such_pkg.nets:mlp'", "cannot import"]),
        (["--model", "tests.test_experiment:NOT_CALLABLE"], ["callable factory"]),
        (["--lr-schedule", "multistep", "--milestones", "100,50"], ["strictly increasing"]),
        (["--lr-schedule", "multistep", "--milestones", "60000"], ["beyond the training length of 50000"]),
        (["--warmup", "60000"], ["warm-up of 60000 iterations is longer"]),
        (["--nesterov"], ["nesterov=True needs optimizer 'sgd'"]),
    ],
)
def test_bad_recipes_exit_2_before_any_work(
    args: list[str], words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = run_cli(["imp", *args, "--runs-dir", str(tmp_path)], capsys)
    assert rc == 2 and err.startswith("ltfunc: error: ImpConfig:"), err
    for w in words:
        assert w in err, (w, err)
    assert not any(tmp_path.iterdir())


def test_imp_with_a_model_by_path_and_tensorboard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip(
        "tensorboard", reason="tensorboard is not installed (pip install 'ltfunc[tensorboard]')"
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = [
        "imp", "--model", "tests.test_experiment:tiny_mlp", "--model-kwargs", '{"width": 8}',
        "--dataset", "tests.test_experiment:tiny_dataset", "--val-size", "50", "--batch-size", "16",
        "--rounds", "1", "--iterations", "20", "--eval-every", "10", "--baselines", "random_prune",
        "--optimizer", "sgd", "--lr", "0.05", "--lr-schedule", "cosine", "--no-compile", "--quiet",
        "--runs-dir", str(tmp_path / "runs"), "--name", "tb", "--tensorboard", str(tmp_path / "tb"),
    ]  # fmt: skip
    rc, _, err = run_cli(args, capsys)
    assert rc == 0, err
    saved = json.loads((tmp_path / "runs" / "tb" / "config.json").read_text())
    assert saved["model"] == "tests.test_experiment:tiny_mlp" and saved["model_kwargs"] == {"width": 8}
    events = EventAccumulator(str(tmp_path / "tb" / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for prefix in ("ticket/round_0", "ticket/round_1", "random_prune/round_1"):
        for metric in ("test_accuracy", "val_loss", "train_loss", "density", "lr"):
            assert f"{prefix}/{metric}" in tags
    assert [s.step for s in events.Scalars("ticket/round_1/test_accuracy")] == [10, 20]
    assert events.Scalars("ticket/round_0/lr")[-1].value == pytest.approx(
        0.05 * 0.5 * (1 + math.cos(math.pi * 19 / 20))
    )
    # a rerun resumes (nothing trained, nothing new written) and the sink is closed cleanly
    assert run_cli(args, capsys)[0] == 0


def test_prune_refuses_integer_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    weights = {
        k: (v * 100).to(torch.int64) for k, v in ltfunc.get_params(ltfunc.models.lenet300(seed=0)).items()
    }
    torch.save(weights, tmp_path / "w.pt")
    rc, _, err = run_cli(
        ["prune", "--weights", str(tmp_path / "w.pt"), "-o", str(tmp_path / "m.safetensors"), "--quiet"],
        capsys,
    )
    assert rc == 2 and "non-floating weights fc1.weight (torch.int64)" in err
    assert not (tmp_path / "m.safetensors").exists()


def test_unexpected_errors_are_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import ltfunc.cli as cli

    def boom(_ns: object) -> int:
        raise RuntimeError("index out of bounds: 0 <= tmp11 < 10L\nmore compiled-code detail")

    monkeypatch.setattr(cli, "_cmd_report", boom)
    rc, _, err = run_cli(["report", "somewhere"], capsys)
    assert rc == 2
    assert err.strip() == (
        "ltfunc: error: RuntimeError: index out of bounds: 0 <= tmp11 < 10L "
        "(set LTFUNC_DEBUG=1 for the traceback)"
    )
    monkeypatch.setenv("LTFUNC_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["report", "somewhere"])


def test_a_seed_beyond_64_bits_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run_cli(["imp", "--seed", str(2**64), "--quiet"], capsys)
    assert rc == 2 and "seed must be an int in [0, 9223372036854775807]" in err


def test_unwritable_output_paths_name_the_option_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from synthetic_runs import make_run

    run = make_run(tmp_path / "run")
    folder = tmp_path / "folder"
    folder.mkdir()
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    cases = [
        (["prune", "--weights", str(afile), "-o", str(folder)], "-o/--output", folder),
        (["report", str(run), "--csv", str(folder)], "--csv", folder),
        (["report", str(run), "--csv", str(afile / "x.csv")], "--csv", afile / "x.csv"),
        (["plot", str(run), "-o", str(folder / "..")], "-o/--output", folder / ".."),
        (["plot", str(run), "-o", str(afile / "x.png")], "-o/--output", afile / "x.png"),
        (["reproduce", "lenet-mnist", "--collect-only", "--out", str(afile)], "--out", afile),
    ]
    for args, option, path in cases:
        rc, out, err = run_cli(args, capsys)
        assert rc == 2, args
        assert out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ltfunc: error:"), err
        assert option in err and str(path) in err, err
        assert ".tmp-" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert list(folder.iterdir()) == [] and afile.read_text() == "x"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"baselines": "reinit,bogus"}, "baselines: unknown baseline(s) bogus. Supported: reinit"),
        ({"milestones": "a,b"}, "milestones: expected comma-separated iterations"),
        ({"name": 5}, "name must be a string (the run directory name) or null"),
        ({"runs_dir": ["a"]}, "runs_dir must be a string (a folder path), got list"),
        ({"data_root": 3}, "data_root must be a string (a folder path) or null, got int 3"),
        ({"tensorboard": 1}, "tensorboard must be a string (a folder path) or null"),
        ({"preset": 3}, "preset must be a string (a name from `ltfunc presets`) or null"),
    ],
)
def test_config_file_values_of_the_wrong_type_name_the_key(
    entry: dict[str, object], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(entry))
    runs = tmp_path / "runs"
    rc, out, err = run_cli(["imp", "--config", str(cfg), "--runs-dir", str(runs), "--quiet"], capsys)
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ltfunc: error: --config: {cfg}: "), err
    assert expected in lines[0], err
    assert not runs.exists()
