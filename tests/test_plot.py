"""ltfunc.plot: valid PNGs, atomic writes, and the exact series drawn from synthetic run dirs."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest
from synthetic_runs import CONDS, ITERATIONS, curve, make_run, snapshot_files, write_round

from ltfunc import plot
from ltfunc.plot import PlotResult, Series, plot_curves, plot_early_stop, plot_runs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# per-seed accuracies and early-stop iterations, indexed [seed][condition][round]
RNG = np.random.default_rng(7)
ACC = 0.95 + 0.03 * RNG.random((3, 3, 5))
ES = 100 * RNG.integers(1, 6, size=(3, 3, 5))


def seed_run(root: Path, seed: int, **kw: Any) -> Path:
    return make_run(
        root / f"seed{seed}",
        seed=seed,
        rounds=4,
        acc=lambda c, k: float(ACC[seed, CONDS.index(c), k]),
        es=lambda c, k: int(ES[seed, CONDS.index(c), k]),
        **kw,
    )


def assert_valid_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = matplotlib.image.imread(path)
    h, w = img.shape[:2]
    assert 200 <= h <= 3000 and 200 <= w <= 3000
    assert img.shape[2] in (3, 4)
    assert float(img[..., :3].std()) > 0.01  # not a blank canvas


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Capture the Figure objects the plot functions save."""
    captured: list[Any] = []
    save = plot._save

    def spy(fig: Any, out: Path, dpi: int) -> Path:
        captured.append(fig)
        return save(fig, out, dpi)

    monkeypatch.setattr(plot, "_save", spy)
    return captured


# ---------------------------------------------------------------------------------------------
# plot_runs


def test_plot_runs_three_seeds_mean_std(tmp_path: Path, figures: list[Any]) -> None:
    runs = [seed_run(tmp_path / "runs", s) for s in range(3)]
    before = snapshot_files(tmp_path / "runs")
    out = tmp_path / "figs" / "acc.png"
    res = plot_runs(runs, out)
    assert isinstance(res, PlotResult) and res.path == out
    assert_valid_png(out)
    assert sorted(os.listdir(out.parent)) == ["acc.png"]  # no temp file left
    assert snapshot_files(tmp_path / "runs") == before  # run dirs untouched
    assert list(res.series) == [f"lenet300/mnist: {c}" for c in CONDS]
    for c_i, cond in enumerate(CONDS):
        s = res.series[f"lenet300/mnist: {cond}"]
        assert isinstance(s, Series)
        ks = np.arange(0 if cond == "ticket" else 1, 5)
        np.testing.assert_allclose(s.x, 100 * 0.8**ks, rtol=1e-12)
        np.testing.assert_allclose(s.y, ACC[:, c_i, ks].mean(axis=0), rtol=1e-12)
        assert s.yerr is not None
        np.testing.assert_allclose(s.yerr, ACC[:, c_i, ks].std(axis=0, ddof=1), rtol=1e-9)
    # the axes: log-scaled, inverted (100 % on the left), one drawn line per series
    (ax,) = figures[0].axes
    assert ax.get_xscale() == "log"
    left, right = ax.get_xlim()
    assert left > 100 > 0.8**4 * 100 > right
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(res.series)
    assert ax.get_title() == "mean ± std over 3 seeds"


def test_plot_runs_groups_by_config_without_seed(tmp_path: Path) -> None:
    seeds = [seed_run(tmp_path, s, config={"name": "lenet-study"}) for s in range(3)]
    conv = make_run(
        tmp_path / "conv",
        rounds=2,
        config={"model": "conv2", "dataset": "fashion-mnist"},
        acc=lambda c, k: 0.9 - 0.01 * k,
    )
    res = plot_runs([seeds[0], conv, seeds[1], seeds[2]], tmp_path / "both.png")
    assert list(res.series) == [f"lenet-study: {c}" for c in CONDS] + [
        f"conv2/fashion-mnist: {c}" for c in CONDS
    ]
    np.testing.assert_allclose(res.series["lenet-study: reinit"].y, ACC[:, 1, 1:].mean(axis=0), rtol=1e-12)
    single = res.series["conv2/fashion-mnist: ticket"]
    assert single.yerr is None  # one run: no error bars
    np.testing.assert_allclose(single.x, [100.0, 80.0, 64.0])
    np.testing.assert_allclose(single.y, [0.9, 0.89, 0.88])


def test_plot_runs_labels_tell_alike_studies_apart(tmp_path: Path) -> None:
    # different names per seed -> model/dataset label; two studies differ in rewind only
    a = [make_run(tmp_path / f"a{s}", seed=s, config={"name": f"a{s}", "rewind": 0}) for s in range(2)]
    b = make_run(tmp_path / "b", config={"rewind": 500})
    res = plot_runs([*a, b], tmp_path / "x.png", metric="best_test_accuracy")
    labels = list(res.series)
    assert labels[0] == "lenet300/mnist (rewind=0): ticket"
    assert labels[3] == "lenet300/mnist (rewind=500): ticket"
    assert res.series["lenet300/mnist (rewind=0): ticket"].yerr == (0.0, 0.0, 0.0, 0.0)


def test_plot_runs_partial_seed_gives_nan_std(tmp_path: Path) -> None:
    runs = [seed_run(tmp_path, 0), make_run(tmp_path / "short", seed=1, rounds=2, config={"rounds": 4})]
    res = plot_runs(runs, tmp_path / "p.png")
    s = res.series["lenet300/mnist: ticket"]
    assert len(s.x) == 5
    assert s.y[3] == pytest.approx(ACC[0, 0, 3])  # only seed 0 finished round 3
    assert s.yerr is not None and math.isnan(s.yerr[3]) and not math.isnan(s.yerr[2])


def test_plot_early_stop_series(tmp_path: Path) -> None:
    runs = [seed_run(tmp_path, s) for s in range(3)]
    res = plot_early_stop(runs, tmp_path / "es.png")
    assert_valid_png(res.path)
    s = res.series["lenet300/mnist: random_prune"]
    np.testing.assert_allclose(s.y, ES[:, 2, 1:].mean(axis=0), rtol=1e-12)
    assert s.yerr is not None
    np.testing.assert_allclose(s.yerr, ES[:, 2, 1:].std(axis=0, ddof=1), rtol=1e-9)


def test_plot_runs_replaces_existing_png_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = seed_run(tmp_path, 0)
    out = tmp_path / "out" / "a.png"
    plot_runs(run, out)
    first = out.read_bytes()
    plot_runs(run, out, metric="last_test_accuracy")
    assert out.read_bytes() != first
    assert_valid_png(out)

    kept = out.read_bytes()

    def broken_savefig(self: Any, *args: Any, **kwargs: Any) -> None:
        Path(args[0]).write_bytes(b"\x89PNG partial")
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(plot.Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        plot_runs(run, out)
    assert out.read_bytes() == kept  # the old figure survives a failed write
    assert sorted(os.listdir(out.parent)) == ["a.png"]


def test_plot_runs_bad_inputs(tmp_path: Path) -> None:
    run = seed_run(tmp_path, 0)
    with pytest.raises(ValueError, match=r"plot_runs: out_png='.*a\.jpg' must end with \.png"):
        plot_runs(run, tmp_path / "a.jpg")
    with pytest.raises(
        ValueError, match=r"plot_runs: metric='density' is not supported\. Supported: early_stop"
    ):
        plot_runs(run, tmp_path / "a.png", metric="density")
    with pytest.raises(FileNotFoundError, match=r"plot_runs: run directory '.*nope' does not exist"):
        plot_runs([run, tmp_path / "nope"], tmp_path / "a.png")
    with pytest.raises(ValueError, match="plot_runs: run_dirs is empty"):
        plot_runs([], tmp_path / "a.png")
    with pytest.raises(ValueError, match="plot_runs: dpi must be an int"):
        plot_runs(run, tmp_path / "a.png", dpi=0)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"model": "lenet300"}))
    with pytest.raises(ValueError, match="plot_runs: no finished rounds in"):
        plot_runs(empty, tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()


# ---------------------------------------------------------------------------------------------
# plot_curves


def curve_run(tmp_path: Path) -> Path:
    run = make_run(
        tmp_path / "run", rounds=9, acc=lambda c, k: 0.98 - 0.002 * k, es=lambda c, k: 100 + 100 * (k % 5)
    )
    # round 10 is being trained: metrics so far, a half-written last line, no summary.json
    write_round(run, "ticket", 10, acc=0.9, es=200, density=0.8**10, finished=False)
    with open(run / "ticket" / "round_10" / "metrics.jsonl", "a") as fh:
        fh.write('{"iteration": 600, "test_acc')
    return run


def test_plot_curves_default_rounds(tmp_path: Path, figures: list[Any]) -> None:
    run = curve_run(tmp_path)
    res = plot_curves(run, tmp_path / "c.png")
    assert_valid_png(res.path)
    rounds = [int(label.split()[1]) for label in res.series]
    # five finished rounds spread from first to last; the unfinished round 10 is not a default
    assert len(rounds) == 5 and rounds[0] == 0 and rounds[-1] == 9
    assert rounds == sorted(set(rounds))
    assert max(np.diff(rounds)) - min(np.diff(rounds)) <= 1
    for k, (label, s) in zip(rounds, res.series.items(), strict=True):
        assert label == f"round {k} ({100 * 0.8**k:.3g}% weights)"
        assert s.x == tuple(float(i) for i in ITERATIONS)
        expected = [curve(0.98 - 0.002 * k, 100 + 100 * (k % 5), it)[0] for it in ITERATIONS]
        np.testing.assert_allclose(s.y, expected, rtol=1e-12)
        assert s.yerr is None
    (ax,) = figures[0].axes
    assert ax.get_xlabel() == "training iteration" and ax.get_ylabel() == "test accuracy"
    assert len(ax.get_lines()) == 5


def test_plot_curves_explicit_rounds_condition_metric(tmp_path: Path) -> None:
    run = curve_run(tmp_path)
    res = plot_curves(run, tmp_path / "c.png", rounds=[10, 3], metric="val_loss")
    assert list(res.series) == ["round 10 (10.7% weights)", "round 3 (51.2% weights)"]
    # the unfinished round's truncated last line is skipped
    np.testing.assert_allclose(
        res.series["round 10 (10.7% weights)"].y, [curve(0.9, 200, i)[1] for i in ITERATIONS]
    )
    res = plot_curves(run, tmp_path / "r.png", condition="reinit", rounds=(1,))
    np.testing.assert_allclose(
        res.series["round 1 (80% weights)"].y, [curve(0.978, 200, i)[0] for i in ITERATIONS]
    )


def test_plot_curves_skips_null_metric_values(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", rounds=1, conditions=("ticket",))
    write_round(run, "ticket", 1, acc=0.9, es=200, density=0.8, val_accuracy=False)
    with pytest.raises(
        ValueError, match=r"plot_curves: metric='val_accuracy' was not recorded in rounds \[1\]"
    ):
        plot_curves(run, tmp_path / "c.png", rounds=[1], metric="val_accuracy")
    res = plot_curves(run, tmp_path / "c.png", metric="val_accuracy")
    assert list(res.series) == ["round 0 (100% weights)", "round 1 (80% weights)"]
    assert res.series["round 1 (80% weights)"].x == ()
    assert len(res.series["round 0 (100% weights)"].x) == len(ITERATIONS)


def test_plot_curves_bad_inputs(tmp_path: Path) -> None:
    run = curve_run(tmp_path)
    with pytest.raises(
        ValueError, match=r"plot_curves: condition='lottery' has no rounds in .* Available: ticket"
    ):
        plot_curves(run, tmp_path / "c.png", condition="lottery")
    with pytest.raises(
        ValueError, match=r"plot_curves: round 42 of 'ticket' has no metrics.jsonl. Available: 0, 1"
    ):
        plot_curves(run, tmp_path / "c.png", rounds=[1, 42])
    with pytest.raises(ValueError, match="plot_curves: rounds is empty"):
        plot_curves(run, tmp_path / "c.png", rounds=[])
    with pytest.raises(TypeError, match="plot_curves: rounds must hold ints, got str '1'"):
        plot_curves(run, tmp_path / "c.png", rounds=["1"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="plot_curves: metric='accuracy' is not supported"):
        plot_curves(run, tmp_path / "c.png", metric="accuracy")
    bad = run / "ticket" / "round_2" / "metrics.jsonl"
    lines = bad.read_text().splitlines()
    lines[1] = lines[1][:-5]
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 2 is not valid JSON") as e:
        plot_curves(run, tmp_path / "c.png", rounds=[2])
    assert str(bad) in str(e.value)
    assert not (tmp_path / "c.png").exists()
