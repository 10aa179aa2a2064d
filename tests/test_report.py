"""ltfunc.report against synthetic run directories written in the documented layout."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from synthetic_runs import CONDS, density_of, make_run, snapshot_files, write_round

from ltfunc import report
from ltfunc.report import AGGREGATE_FIELDS, SUMMARY_FIELDS, aggregate, format_table, summary_rows, write_csv

# per-seed accuracies and early-stop iterations, indexed [seed][condition][round]
RNG = np.random.default_rng(1234)
ACC = 0.95 + 0.03 * RNG.random((3, 3, 4))
ES = 100 * RNG.integers(1, 6, size=(3, 3, 4))


def seed_run(root: Path, seed: int, **kw: object) -> Path:
    return make_run(
        root / f"seed{seed}",
        seed=seed,
        acc=lambda c, k: float(ACC[seed, CONDS.index(c), k]),
        es=lambda c, k: int(ES[seed, CONDS.index(c), k]),
        **kw,  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------------------------------------
# summary_rows


def test_summary_rows_values_order_and_columns(tmp_path: Path) -> None:
    run = seed_run(tmp_path, 1, unfinished=True)
    rows = summary_rows(run)
    # ticket 0..3, reinit 1..3, random_prune 1..3; the unfinished ticket round 4 is ignored
    assert [(r["condition"], r["round"]) for r in rows] == (
        [("ticket", k) for k in range(4)]
        + [("reinit", k) for k in (1, 2, 3)]
        + [("random_prune", k) for k in (1, 2, 3)]
    )
    for r in rows:
        assert tuple(r) == SUMMARY_FIELDS
        c, k = CONDS.index(r["condition"]), r["round"]
        written = json.loads((run / r["condition"] / f"round_{k}" / "summary.json").read_text())
        assert r["density"] == pytest.approx(0.8**k)
        assert r["weights_remaining_pct"] == pytest.approx(100 * 0.8**k)
        assert r["early_stop_iteration"] == ES[1, c, k]
        assert r["test_accuracy_at_early_stop"] == pytest.approx(ACC[1, c, k])
        assert r["last_test_accuracy"] == written["last_test_accuracy"]
        assert r["best_test_accuracy"] == written["best_test_accuracy"]
        assert r["wall_seconds"] == 2.5


def test_summary_rows_other_condition_sorted_after_known(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r", rounds=1, conditions=("random_prune", "ticket"))
    write_round(run, "magnitude_late", 1, acc=0.9, es=200, density=density_of(1))
    write_round(run, "another", 1, acc=0.9, es=200, density=density_of(1))
    (run / "notes").mkdir()  # no round_<k> folders: not a condition
    (run / "ticket" / "round_x").mkdir()  # not a round folder
    conds = list(dict.fromkeys(r["condition"] for r in summary_rows(run)))
    assert conds == ["ticket", "random_prune", "another", "magnitude_late"]


def test_summary_rows_rounds_sorted_numerically(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r", rounds=11, conditions=("ticket",))
    assert [r["round"] for r in summary_rows(run)] == list(range(12))


def test_summary_rows_empty_run(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert summary_rows(tmp_path) == []


def test_summary_rows_missing_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=r"summary_rows: run directory .*nope.* does not exist"):
        summary_rows(missing)


def test_summary_rows_not_a_run_dir(tmp_path: Path) -> None:
    (tmp_path / "ticket" / "round_0").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"summary_rows: .* is not a run directory \(no config.json\)") as e:
        summary_rows(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_summary_rows_file_and_bad_type(tmp_path: Path) -> None:
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match=r"summary_rows: run_dir .*file.txt"):
        summary_rows(f)
    with pytest.raises(TypeError, match="summary_rows: run_dir must be a path, got int 3"):
        summary_rows(3)  # type: ignore[arg-type]


def test_summary_rows_corrupt_json_names_file(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r", rounds=2)
    bad = run / "reinit" / "round_2" / "summary.json"
    bad.write_text('{"round": 2, "density": 0.6')  # truncated
    with pytest.raises(ValueError, match="is not valid JSON") as e:
        summary_rows(run)
    assert str(bad) in str(e.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("test_accuracy_at_early_stop"), "lacks the field"),
        (lambda s: s.update(round=7), "says round=7 but lies in round_1"),
        (lambda s: s.update(density="0.8"), "field density='0.8' must be a number"),
        (lambda s: s.update(weights_remaining_pct=None), "field weights_remaining_pct=None must be a number"),
    ],
)
def test_summary_rows_invalid_summary(tmp_path: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    run = make_run(tmp_path / "r", rounds=1, conditions=("ticket",))
    path = run / "ticket" / "round_1" / "summary.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as e:
        summary_rows(run)
    assert str(path) in str(e.value)


def test_summary_rows_accepts_null_metrics(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r", rounds=0, conditions=("ticket",))
    path = run / "ticket" / "round_0" / "summary.json"
    data = json.loads(path.read_text())
    data["early_stop_iteration"] = None
    path.write_text(json.dumps(data))
    assert summary_rows(run)[0]["early_stop_iteration"] is None


def test_readers_never_write_into_run_dirs(tmp_path: Path) -> None:
    runs = [seed_run(tmp_path, s, unfinished=True) for s in range(3)]
    before = snapshot_files(tmp_path)
    for r in runs:
        format_table(summary_rows(r))
    format_table(aggregate(runs))
    assert snapshot_files(tmp_path) == before


# ---------------------------------------------------------------------------------------------
# format_table


def test_format_table_contents_and_alignment(tmp_path: Path) -> None:
    run = seed_run(tmp_path, 0)
    rows = summary_rows(run)
    text = format_table(rows)
    lines = text.split("\n")
    header = lines[0].split("  ")
    assert [h.strip() for h in header if h.strip()] == [
        "condition",
        "round",
        "weights %",
        "early-stop it",
        "test acc @ES %",
        "best test acc %",
        "last test acc %",
        "wall s",
    ]
    assert set(lines[1]) == {"-", " "}
    body = [ln for ln in lines[2:] if ln]
    assert len(body) == len(rows)
    # conditions are separated by one blank line each
    assert lines.count("") == 2
    # every non-blank line has the same width and the numeric columns end where the header ends
    assert len({len(ln) for ln in lines if ln}) == 1
    ends = [lines[0].index(h) + len(h) for h in ("round", "weights %", "early-stop it", "test acc @ES %")]
    for ln, r in zip(body, rows, strict=True):
        c, k = CONDS.index(r["condition"]), r["round"]
        cells = ln.split()
        assert cells[0] == r["condition"]
        assert int(cells[1]) == k
        assert float(cells[2]) == pytest.approx(100 * 0.8**k, abs=0.005)
        assert int(cells[3]) == ES[0, c, k]
        assert float(cells[4]) == pytest.approx(100 * ACC[0, c, k], abs=0.005)
        for end in ends:
            assert ln[end - 1] != " " and (end == len(ln) or ln[end] == " ")


def test_format_table_missing_values_and_empty() -> None:
    row = dict.fromkeys(SUMMARY_FIELDS)
    row.update(condition="ticket", round=0, density=1.0, weights_remaining_pct=100.0)
    line = format_table([row]).split("\n")[2]
    assert line.split() == ["ticket", "0", "100.00", "-", "-", "-", "-", "-"]
    assert format_table([]) == "(no finished rounds)"


def test_format_table_aggregate_rows(tmp_path: Path) -> None:
    runs = [seed_run(tmp_path, s) for s in range(3)]
    text = format_table(aggregate(runs))
    lines = text.split("\n")
    assert lines[0].split("  ")[0].strip() == "condition" and " n " in lines[0]
    first = lines[2]  # ticket, round 0
    mean = 100 * ACC[:, 0, 0].mean()
    std = 100 * ACC[:, 0, 0].std(ddof=1)
    assert f"{mean:.2f} ± {std:.2f}" in first
    assert first.split()[:3] == ["ticket", "0", "3"]


def test_format_table_bad_rows() -> None:
    with pytest.raises(TypeError, match="format_table: rows must be a list of dicts"):
        format_table("ticket")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"format_table: rows\[0\] lacks the key\(s\) density"):
        format_table([{k: 1 for k in SUMMARY_FIELDS if k != "density"}])


# ---------------------------------------------------------------------------------------------
# aggregate


def test_aggregate_matches_numpy(tmp_path: Path) -> None:
    runs = [seed_run(tmp_path, s) for s in range(3)]
    rows = aggregate(runs)
    assert [tuple(r) for r in rows] == [AGGREGATE_FIELDS] * len(rows)
    assert [(r["condition"], r["round"]) for r in rows] == [
        (r["condition"], r["round"]) for r in summary_rows(runs[0])
    ]
    for r in rows:
        c, k = CONDS.index(r["condition"]), r["round"]
        assert r["n"] == 3
        np.testing.assert_allclose(r["test_accuracy_at_early_stop_mean"], ACC[:, c, k].mean(), rtol=1e-12)
        np.testing.assert_allclose(r["test_accuracy_at_early_stop_std"], ACC[:, c, k].std(ddof=1), rtol=1e-9)
        np.testing.assert_allclose(r["early_stop_iteration_mean"], ES[:, c, k].mean(), rtol=1e-12)
        np.testing.assert_allclose(r["early_stop_iteration_std"], ES[:, c, k].std(ddof=1), rtol=1e-9)
        np.testing.assert_allclose(r["weights_remaining_pct_mean"], 100 * 0.8**k, rtol=1e-12)
        assert r["weights_remaining_pct_std"] == pytest.approx(0.0, abs=1e-12)


def test_aggregate_counts_only_finished_rounds(tmp_path: Path) -> None:
    # same study (config rounds=3), but seeds 1 and 2 were interrupted after rounds 2 and 1
    runs = [seed_run(tmp_path, s, rounds=3 - s, config={"rounds": 3}) for s in range(3)]
    rows = {(r["condition"], r["round"]): r for r in aggregate(runs)}
    assert rows[("ticket", 1)]["n"] == 3
    assert rows[("ticket", 2)]["n"] == 2
    np.testing.assert_allclose(
        rows[("ticket", 2)]["test_accuracy_at_early_stop_std"], ACC[:2, 0, 2].std(ddof=1)
    )
    one = rows[("ticket", 3)]
    assert one["n"] == 1
    assert one["test_accuracy_at_early_stop_mean"] == pytest.approx(ACC[0, 0, 3])
    assert math.isnan(one["test_accuracy_at_early_stop_std"])


def test_aggregate_custom_metrics_and_single_path(tmp_path: Path) -> None:
    run = seed_run(tmp_path, 2)
    rows = aggregate(run, metrics=["best_test_accuracy"])
    assert set(rows[0]) == {"condition", "round", "n", "best_test_accuracy_mean", "best_test_accuracy_std"}
    assert rows[0]["best_test_accuracy_mean"] == pytest.approx(ACC[2, 0, 0])


def test_aggregate_ignores_seed_name_and_bookkeeping(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", seed=0, config={"name": "a", "device": "cpu", "split_seed": 1})
    b = make_run(tmp_path / "b", seed=1, config={"name": "b", "device": "cuda", "split_seed": 2})
    assert aggregate([a, b])[0]["n"] == 2


def test_aggregate_rejects_different_studies(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", seed=0)
    b = make_run(tmp_path / "b", seed=1, config={"rewind": 100})
    with pytest.raises(ValueError, match=r"aggregate: .*b' is not the same study as .*a'"):
        aggregate([a, b])


def test_aggregate_bad_inputs(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a")
    with pytest.raises(ValueError, match="aggregate: run_dirs is empty"):
        aggregate([])
    with pytest.raises(ValueError, match=r"aggregate: run directory .* is given twice"):
        aggregate([a, tmp_path / "a" / ".." / "a"])
    with pytest.raises(
        ValueError, match=r"aggregate: metrics entry 'accuracy' is not supported. Supported: density"
    ):
        aggregate([a], metrics=["accuracy"])
    with pytest.raises(TypeError, match="aggregate: metrics must be a non-empty sequence"):
        aggregate([a], metrics="density")
    with pytest.raises(FileNotFoundError, match=r"aggregate: run directory .*missing"):
        aggregate([a, tmp_path / "missing"])
    (tmp_path / "c").mkdir()
    with pytest.raises(ValueError, match=r"aggregate: .*c' is not a run directory"):
        aggregate([a, tmp_path / "c"])


# ---------------------------------------------------------------------------------------------
# write_csv


def test_write_csv_round_trip(tmp_path: Path) -> None:
    runs = [seed_run(tmp_path, s, rounds=1) for s in range(2)]
    rows = aggregate(runs)
    out = write_csv(rows, tmp_path / "out" / "agg.csv")
    assert out == tmp_path / "out" / "agg.csv"
    with open(out, newline="") as fh:
        back = list(csv.DictReader(fh))
    assert [list(b) for b in back] == [list(AGGREGATE_FIELDS)] * len(rows)
    for b, r in zip(back, rows, strict=True):
        assert b["condition"] == r["condition"] and int(b["round"]) == r["round"]
        assert (
            float(b["test_accuracy_at_early_stop_mean"]) == r["test_accuracy_at_early_stop_mean"]
        )  # exact repr
    assert sorted(os.listdir(out.parent)) == ["agg.csv"]  # no temp files left behind


def test_write_csv_summary_rows_none_and_nan(tmp_path: Path) -> None:
    rows = [{"a": 1, "b": None, "c": math.nan}]
    text = write_csv(rows, tmp_path / "x.csv").read_text()
    assert text == "a,b,c\n1,,\n"


def test_write_csv_empty_needs_fieldnames(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="write_csv: rows is empty and fieldnames is None"):
        write_csv([], tmp_path / "x.csv")
    assert (
        write_csv([], tmp_path / "x.csv", fieldnames=SUMMARY_FIELDS).read_text()
        == ",".join(SUMMARY_FIELDS) + "\n"
    )


def test_write_csv_mismatched_keys_leaves_old_file(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("old\n")
    with pytest.raises(ValueError, match=r"write_csv: rows\[1\] has the keys \['a'\], expected the columns"):
        write_csv([{"a": 1, "b": 2}, {"a": 3}], path)
    assert path.read_text() == "old\n"


def test_write_csv_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.csv"
    path.write_text("old\n")

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(report.os, "replace", failing_replace)  # report and params share `os`
    with pytest.raises(OSError, match="disk full"):
        write_csv([{"a": 1}], path)
    assert path.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["x.csv"]
