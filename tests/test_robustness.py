"""Regression tests for robustness fixes found by probing the API and the CLI."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ltfunc
from ltfunc import masks, optim
from ltfunc.step import make_train_step


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 4)
        self.fc2 = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)


# 1. masks own their data; in-place edits are detected ----------------------------------------
def test_mask_copies_its_source() -> None:
    src = {"w": torch.ones(3, dtype=torch.bool)}
    m = masks.Mask(src)
    src["w"][:] = False
    assert bool(m["w"].all())


def test_mask_in_place_edit_is_detected_by_entry_points() -> None:
    m = masks.from_dict({"w": [1, 1, 0]})
    m["w"][0] = False
    for call in (
        lambda: masks.apply(m, {"w": torch.ones(3)}),
        lambda: masks.density(m),
        lambda: masks.counts(m),
        lambda: masks.intersect(m, m),
    ):
        with pytest.raises(ValueError, match="modified in place"):
            call()


@pytest.mark.parametrize("compile", [False, True])
def test_step_refuses_a_mask_edited_in_place_after_caching(compile: bool) -> None:
    model = _Tiny()
    step = make_train_step(model, optim.sgd(), compile=compile)
    params = ltfunc.get_params(model)
    mask = masks.ones(params)
    state = step.init(params)
    state, _ = step(state, mask, _batch(0), 0.1)  # caches the flat mask
    mask["fc1.weight"][:] = False
    with pytest.raises(ValueError, match=r"Mask was modified in place.*fc1.weight"):
        step(state, mask, _batch(1), 0.1)
    # a new mask built from the edited values works and prunes
    fresh = masks.from_dict(mask.to_dict())
    state, _ = step(state, fresh, _batch(1), 0.1)
    assert bool((state.params["fc1.weight"] == 0).all())


# 2. report / plot refuse two copies of one run -------------------------------------------------
def test_aggregate_refuses_two_copies_of_one_run(tmp_path) -> None:
    from ltfunc import report
    from ltfunc.report import _example_run

    a = _example_run(tmp_path / "a", seed=0, rounds=1)
    b = _example_run(tmp_path / "b", seed=0, rounds=1, name="renamed")  # bookkeeping differs only
    c = _example_run(tmp_path / "c", seed=1, rounds=1)
    with pytest.raises(ValueError, match=r"'.*a' and '.*b' hold the same run"):
        report.aggregate([a, b])
    with pytest.raises(ValueError, match="hold the same run"):
        report.aggregate([a, c, b])
    assert report.aggregate([a, c])[1]["n"] == 2


def test_plot_refuses_two_copies_of_one_run(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from ltfunc import plot
    from ltfunc.report import _example_run

    a = _example_run(tmp_path / "a", seed=3, rounds=1)
    b = _example_run(tmp_path / "b", seed=3, rounds=1)
    with pytest.raises(ValueError, match="hold the same run"):
        plot.plot_runs([a, b], tmp_path / "out.png")


# 5. taking over a stale lock is atomic ----------------------------------------------------------
def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_lock_takeover_has_exactly_one_winner(tmp_path) -> None:
    import json
    import multiprocessing as mp
    import queue
    import socket

    from ltfunc import rundir
    from tests.lock_race import race_for_lock

    # a fork server that has imported only the lock code: forking this process, which may hold
    # JAX's threads, could deadlock
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.lock_race"])
    n = 4
    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "since": "then"}
    for trial in range(10):
        run = tmp_path / f"r{trial}"
        run.mkdir()
        (run / rundir.LOCK_FILE).write_text(json.dumps(stale))
        start, done, wins = ctx.Barrier(n), ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=race_for_lock, args=(str(run), start, done, wins)) for _ in range(n)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        won = 0
        while True:
            try:
                won += wins.get(timeout=0.2)
            except queue.Empty:
                break
        assert won == 1, f"trial {trial}: {won} processes took the stale lock"
        assert not (run / rundir.LOCK_FILE).exists()


# 4. --force only restarts an ltfunc run -----------------------------------------------------------
def test_force_refuses_a_folder_that_is_not_an_ltfunc_run(tmp_path) -> None:
    from ltfunc import ImpConfig, rundir

    cfg = ImpConfig(rounds=1, iterations=10)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"model": "my own"}')
    (mine / "summary.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not an ltfunc run's config"):
        rundir.check_writable("run_imp", mine, cfg, resume=False, force=True)
    with pytest.raises(ValueError, match="not an ltfunc run's config"):
        ltfunc.run_imp(cfg, mine, force=True, progress=False)
    assert (mine / "config.json").read_text() == '{"model": "my own"}'
    assert (mine / "summary.csv").read_text() == "a,b\n1,2\n"
    (mine / "config.json").unlink()
    with pytest.raises(ValueError, match="no ltfunc run"):
        rundir.check_writable("run_imp", mine, cfg, resume=False, force=True)
    # an ltfunc run, an empty and a new directory are restarted
    run = tmp_path / "run"
    rundir.write_config(run, cfg)
    assert rundir.check_writable("run_imp", run, cfg, resume=False, force=True) == "clear"
    (tmp_path / "empty").mkdir()
    assert rundir.check_writable("run_imp", tmp_path / "empty", cfg, resume=False, force=True) == "clear"
    assert rundir.check_writable("run_imp", tmp_path / "new", cfg, resume=False, force=True) == "clear"


# 6. MNIST files are checked: MD5 (verify=True), truncation, label range ---------------------------
def _mnist_copy(data_root, tmp_path):
    import shutil

    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (data_root / "mnist" / "MNIST" / "raw").iterdir():
        if not f.name.endswith(".gz"):
            shutil.copyfile(f, raw / f.name)
    return raw


def test_mnist_with_altered_pixels_is_refused_unless_verify_false(data_root, tmp_path) -> None:
    from ltfunc.data import load_dataset

    raw = _mnist_copy(data_root, tmp_path)
    images = raw / "t10k-images-idx3-ubyte"
    data = bytearray(images.read_bytes())
    for i in range(5000, 5100):
        data[i] ^= 0xFF  # header intact, pixels changed
    images.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte has MD5 .*verify=False"):
        load_dataset("mnist", root=tmp_path, download=False)
    ds = load_dataset("mnist", root=tmp_path, download=False, verify=False, val_size=0)
    assert ds.test.x.shape[0] == 10000


def test_truncated_or_bad_mnist_files_name_the_file(data_root, tmp_path) -> None:
    from ltfunc.data import load_dataset

    raw = _mnist_copy(data_root, tmp_path)
    labels = raw / "train-labels-idx1-ubyte"
    good = labels.read_bytes()
    labels.write_bytes(good[:1000])
    for verify in (True, False):
        with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte is truncated or corrupt"):
            load_dataset("mnist", root=tmp_path, download=False, verify=verify)
    labels.write_bytes(b"garbage!" + good[8:])
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte is not an IDX file"):
        load_dataset("mnist", root=tmp_path, download=False, verify=False)
    bad = bytearray(good)
    bad[100] = 42  # a label outside [0, 10)
    labels.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match=r"training labels of mnist .* outside \[0, 10\)"):
        load_dataset("mnist", root=tmp_path, download=False, verify=False)


# 7. the step refuses integer inputs; the facade refuses out-of-range labels -------------------------
@pytest.mark.parametrize("compile", [False, True])
def test_step_refuses_uint8_inputs_with_a_clear_message(compile: bool) -> None:
    model = _Tiny()
    step = make_train_step(model, optim.sgd(), compile=compile)
    state = step.init(ltfunc.get_params(model))
    x = torch.randint(0, 255, (8, 6), dtype=torch.uint8)
    with pytest.raises(TypeError, match=r"batch x has dtype torch.uint8.*Normalize/convert"):
        step(state, None, (x, torch.zeros(8, dtype=torch.int64)), 0.1)


def test_facade_refuses_labels_outside_the_model_outputs() -> None:
    from ltfunc import LotteryTicket

    lt = LotteryTicket(_Tiny(), "cpu", compile=False)
    x, y = _batch()
    with pytest.raises(ValueError, match=r"targets lie in \[.*, 7\].*\[0, 3\)"):
        lt.train_on_batch(x, torch.full((8,), 7))
    with pytest.raises(ValueError, match=r"targets lie in \[-1"):
        lt.train_all([(x, torch.full((8,), -1))], train_itrs=1)
    lt.train_on_batch(x, y)  # in range: trains


def test_facade_refuses_a_mask_edited_in_place_in_every_mode() -> None:
    """Module mode (compile="auto") and the functional step both refuse an edited cached mask."""
    for mode in ("auto", False):
        model = ltfunc.models.lenet300(seed=0)
        LT = ltfunc.LotteryTicket(model, "cpu", compile=mode)  # type: ignore[arg-type]
        LT.set_masks(LT.get_masks_by_single_shot(0.0, 0.5, "layer")).train()
        x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
        LT.train_on_batch(x, y)  # the mask is cached now
        LT.masks["fc1.weight"][:] = False
        with pytest.raises(ValueError, match=r"Mask was modified in place \(mask\['fc1.weight'\]\)"):
            LT.train_on_batch(x, y)
