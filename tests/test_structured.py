"""Structured tickets: N:M and block pruning (ltfunc.structured, prune, ticket, config, CLI, report)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import assert_bit_identical, tree_clone

import ltfunc
from ltfunc import cli, masks, prune, report, structured
from ltfunc.config import LATER_FIELDS, ImpConfig, config_diff
from ltfunc.experiment import run_imp
from ltfunc.structured import NM, Block

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- brute-force references


def nm_groups_ref(shape: tuple[int, ...], m: int) -> list[list[tuple[int, ...]]]:
    """Index tuples of every N:M group: m consecutive input channels at one (out, *kernel) position."""
    out, cin, rest = shape[0], shape[1], shape[2:]
    groups = []
    for o in range(out):
        for pos in itertools.product(*(range(r) for r in rest)):
            for g in range(cin // m):
                groups.append([(o, c, *pos) for c in range(g * m, (g + 1) * m)])
    return groups


def nm_keep_ref(w: torch.Tensor, alive: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The n largest |w| survivors of every group (the brute-force N:M selection)."""
    keep = torch.zeros(w.shape, dtype=torch.bool)
    for idx in nm_groups_ref(tuple(w.shape), m):
        surv = [i for i in idx if alive[i]]
        for i in sorted(surv, key=lambda i: abs(float(w[i])))[-n:]:
            keep[i] = True
    return keep


def group_counts_ref(mask: torch.Tensor, m: int) -> list[int]:
    return [sum(bool(mask[i]) for i in idx) for idx in nm_groups_ref(tuple(mask.shape), m)]


def blocks_ref(w: torch.Tensor, r: int, c: int) -> dict[tuple[int, int], torch.Tensor]:
    """Every r x c block of the 2-D view (out, in*kh*kw), by (block row, block column)."""
    two = w.reshape(w.shape[0], -1)
    return {
        (i, j): two[i * r : (i + 1) * r, j * c : (j + 1) * c]
        for i in range(two.shape[0] // r)
        for j in range(two.shape[1] // c)
    }


def kept_blocks_ref(mask: torch.Tensor, r: int, c: int) -> set[tuple[int, int]]:
    """The kept blocks; asserts that every block is kept or pruned whole."""
    kept = set()
    for key, b in blocks_ref(mask, r, c).items():
        assert bool(b.all()) or not bool(b.any()), f"block {key} is partly pruned"
        if bool(b.all()):
            kept.add(key)
    return kept


def half_up(x: float) -> int:
    return math.floor(x + 0.5)


def weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(4, 8, 3, 3, generator=g),
        "conv.bias": torch.randn(4, generator=g),
        "fc1.weight": torch.randn(6, 16, generator=g),
        "fc2.weight": torch.randn(4, 8, generator=g),
    }


def prunable(p: dict[str, torch.Tensor]) -> masks.Mask:
    return masks.ones({k: v for k, v in p.items() if k.endswith("weight")})


# ---------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("2:4", NM(2, 4)), (" 1:8 ", NM(1, 8)), ("Block:4X8", Block(4, 8)), ("none", None), (None, None)],
)
def test_parse(spec: Any, expected: Any) -> None:
    assert structured.parse(spec) == expected
    if expected is not None:
        assert structured.parse(str(expected)) == expected  # the canonical spelling parses back
    assert NM(1, 2) != Block(1, 2)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("4:4", "needs 1 <= N < M"),
        ("5:4", "needs 1 <= N < M"),
        ("0:4", "needs 1 <= N < M"),
        ("2-4", "does not parse"),
        ("block:4", "does not parse"),
        ("block:0x4", "needs R, C >= 1"),
        ("", "does not parse"),
    ],
)
def test_bad_specs_are_refused_naming_the_value(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"parse: spec={spec!r}.*{message}"):
        structured.parse(spec)
    p = weights()
    with pytest.raises(ValueError, match=f"magnitude: structure={spec!r}"):
        prune.magnitude(p, prunable(p), rate=0.5, structure=spec)
    with pytest.raises(TypeError, match="parse: spec must be a string"):
        structured.parse(4)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- N:M


@pytest.mark.parametrize("n_m", [(2, 4), (1, 4), (3, 8), (1, 2)])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_nm_is_exact_and_keeps_the_largest_of_every_group(n_m: tuple[int, int], scope: str) -> None:
    n, m = n_m
    p = weights(1)
    start = prunable(p)
    before_p, before_m = tree_clone(p), tree_clone(dict(start))
    out = prune.magnitude(p, start, sparsity=1 - n / m, structure=f"{n}:{m}", scope=scope)  # type: ignore[arg-type]
    for name, mask in out.items():
        assert set(group_counts_ref(mask, m)) == {n}, name  # exactly n in every group of m
        assert torch.equal(mask, nm_keep_ref(p[name], start[name], n, m)), name
    assert structured.satisfies(out, f"{n}:{m}") == dict.fromkeys(out, True)
    # a target beyond N/M stops at exact N:M; a mask at N:M stays as it is
    assert prune.magnitude(p, start, sparsity=0.9, structure=f"{n}:{m}", scope=scope) == out  # type: ignore[arg-type]
    assert prune.magnitude(p, out, rate=0.5, structure=f"{n}:{m}", scope=scope) == out  # type: ignore[arg-type]
    # pure: inputs untouched, the result shares no storage with them
    assert_bit_identical(p, before_p)
    assert_bit_identical(dict(start), before_m)
    assert all(out[k].data_ptr() != start[k].data_ptr() for k in out)


def test_nm_rounds_follow_the_rates_down_to_the_floor() -> None:
    """Each round prunes like unstructured IMP (same counts) but never a group's N largest."""
    p = weights(2)
    mask = prunable(p)
    plain = mask
    reached = False
    for k in range(1, 8):
        g = torch.Generator().manual_seed(100 + k)  # "retrained" weights: a new ranking each round
        p = {name: v + 0.3 * torch.randn(v.shape, generator=g) for name, v in p.items()}
        new = prune.magnitude(p, mask, rate=0.2, structure="2:4")
        plain = prune.magnitude(p, plain, rate=0.2)
        for name in new:
            floor = mask[name].numel() // 2
            kept = int(new[name].sum())
            # the unstructured count, unless that would go below the 2:4 floor
            assert kept == max(floor, half_up(0.8 * int(mask[name].sum()))), (k, name)
            assert min(group_counts_ref(new[name], 4)) >= 2
            assert not bool((new[name] & ~mask[name]).any())  # pruned weights stay pruned
            protected = nm_keep_ref(p[name], mask[name], 2, 4)
            assert bool(new[name][protected].all())  # the 2 largest survivors of each group stay
            removed = mask[name] & ~new[name]
            others = new[name] & ~protected
            if removed.any() and others.any():  # the lowest unprotected survivors went
                assert p[name].abs()[removed].max() <= p[name].abs()[others].min()
        at_floor = all(int(new[n].sum()) == new[n].numel() // 2 for n in new)
        assert all(structured.satisfies(new, "2:4").values()) == at_floor
        if at_floor and reached:
            assert new == mask  # a round at the floor changes nothing
        reached = reached or at_floor
        mask = new
    assert reached
    assert masks.density(plain) < masks.density(mask) == 0.5


def test_nm_global_scope_keeps_the_group_count() -> None:
    p = weights(3)
    start = prunable(p)
    out = prune.magnitude(p, start, rate=0.3, scope="global", structure="1:4")
    total = sum(v.numel() for v in start.values())
    assert sum(int(v.sum()) for v in out.values()) == total - half_up(0.3 * total)
    kept_abs = torch.cat([p[n].abs()[out[n] & ~nm_keep_ref(p[n], start[n], 1, 4)] for n in out])
    removed_abs = torch.cat([p[n].abs()[start[n] & ~out[n]] for n in out])
    assert removed_abs.max() <= kept_abs.min()  # one threshold across the layers


# ---------------------------------------------------------------------------- blocks


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("mode", ["rate", "sparsity"])
def test_block_masks_are_unions_of_the_largest_norm_blocks(scope: str, mode: str) -> None:
    p = weights(4)
    start = prunable(p)
    before = tree_clone(p)
    r, c = 2, 4
    out = prune.magnitude(p, start, structure="block:2x4", scope=scope, **{mode: 0.4})  # type: ignore[arg-type]
    norms = {(n, key): float(b.norm()) for n in out for key, b in blocks_ref(p[n], r, c).items()}
    kept = {(n, key) for n in out for key in kept_blocks_ref(out[n], r, c)}
    groups = [list(out)] if scope == "global" else [[n] for n in out]
    for names in groups:
        ours = {k: v for k, v in norms.items() if k[0] in names}
        n_kept = len([k for k in kept if k[0] in names])
        assert n_kept == len(ours) - half_up(0.4 * len(ours))  # from all blocks: rate and target agree
        assert max(v for k, v in ours.items() if k not in kept) <= min(
            v for k, v in ours.items() if k in kept
        )
    assert structured.satisfies(out, "block:2x4") == dict.fromkeys(out, True)
    assert_bit_identical(p, before)
    # the next round ranks only the surviving blocks, by the norm of their (new) weights
    p2 = {k: v.flip(0) for k, v in p.items()}
    again = prune.magnitude(p2, out, rate=0.5, structure="block:2x4")
    for n in out:
        alive = kept_blocks_ref(out[n], r, c)
        left = kept_blocks_ref(again[n], r, c)
        assert left <= alive and len(left) == len(alive) - half_up(0.5 * len(alive))
        b2 = blocks_ref(p2[n], r, c)
        if alive - left and left:
            assert max(float(b2[k].norm()) for k in alive - left) <= min(float(b2[k].norm()) for k in left)


# ---------------------------------------------------------------------------- bad input


def test_a_structure_that_does_not_divide_a_layer_names_it() -> None:
    p = {"a.weight": torch.randn(8, 8), "b.weight": torch.randn(10, 6), "c.weight": torch.randn(8, 3, 3, 3)}
    m = masks.ones(p)
    before = tree_clone(dict(m))
    with pytest.raises(
        ValueError, match=r"structure '2:4' does not divide layer 'b.weight' of shape \(10, 6\)"
    ):
        prune.magnitude(p, m, rate=0.5, structure="2:4")
    with pytest.raises(ValueError, match=r"layer 'c.weight' of shape \(8, 3, 3, 3\).*has 3 weights.*M=4"):
        prune.magnitude(p, m, rate=prune.Rates(default=0.5, overrides={"b.weight": 0.0}), structure="2:4")
    with pytest.raises(
        ValueError, match=r"'block:4x4' does not divide layer 'b.weight'.*\(10, 6\).*rows 10 % 4"
    ):
        prune.kept_counts(p, m, rate=0.5, structure="block:4x4")
    with pytest.raises(ValueError, match=r"random: structure '2:4' does not divide layer 'b.weight'"):
        prune.random(p, m, rate=0.5, structure="2:4", seed=0)
    assert_bit_identical(dict(m), before)
    # a layer at rate 0 is never pruned and needs not fit: it stays dense
    ok = prune.magnitude(
        p, m, rate=prune.Rates(default=0.5, overrides={"b.weight": 0.0, "c.weight": 0.0}), structure="2:4"
    )
    assert bool(ok["b.weight"].all()) and bool(ok["c.weight"].all())
    assert structured.satisfies(masks.Mask({"a.weight": ok["a.weight"]}), "2:4") == {"a.weight": True}


def test_a_structure_cannot_apply_to_a_1d_weight() -> None:
    p = {"w": torch.randn(8, 8), "bn.weight": torch.randn(8)}
    every = masks.Mask({k: torch.ones(v.shape, dtype=torch.bool) for k, v in p.items()})
    with pytest.raises(ValueError, match=r"cannot apply to layer 'bn.weight' of shape \(8,\).*1-D"):
        prune.magnitude(p, every, rate=0.5, structure="1:2")
    with pytest.raises(ValueError, match=r"satisfies: structure '1:2' cannot apply to layer 'bn.weight'"):
        structured.satisfies(every, "1:2")


def test_a_mask_the_structure_cannot_continue_from_is_refused() -> None:
    p = {"w": torch.randn(4, 8)}
    unstructured = prune.magnitude(p, masks.ones(p), rate=0.7)
    with pytest.raises(ValueError, match=r"mask\['w'\] has \d+ group\(s\) of 4 with fewer than 2 surviving"):
        prune.magnitude(p, unstructured, rate=0.1, structure="2:4")
    with pytest.raises(ValueError, match=r"mask\['w'\] is not a union of whole 2x2 blocks"):
        prune.magnitude(p, unstructured, rate=0.1, structure="block:2x2")
    nan = {"w": p["w"].clone()}
    nan["w"][0, 0] = math.nan
    with pytest.raises(ValueError, match=r"params\['w'\] contains NaN"):
        prune.magnitude(nan, masks.ones(p), rate=0.5, structure="2:4")


# ---------------------------------------------------------------------------- random baselines


@pytest.mark.parametrize("spec", ["2:4", "block:2x4"])
def test_random_masks_have_the_structure_and_the_counts(spec: str) -> None:
    p = weights(5)
    start = prunable(p)
    ticket = prune.magnitude(p, start, rate=0.5, structure=spec)
    r1 = prune.random(p, start, rate=0.5, structure=spec, seed=1)
    like = prune.random_like(ticket, seed=1, structure=spec)
    for r in (r1, like):
        assert prune.kept_counts(p, start, rate=0.5, structure=spec) == {
            k: int(v.sum()) for k, v in r.items()
        }
        assert structured.satisfies(r, spec) == dict.fromkeys(r, True)
        assert r != ticket
    assert like == prune.random_like(ticket, seed=1, structure=spec)  # seeded
    assert like != prune.random_like(ticket, seed=2, structure=spec)
    # counts a structure cannot give are refused
    with pytest.raises(ValueError, match=r"random_like: layer 'conv.weight' must keep"):
        prune.random_like(prune.magnitude(p, start, rate=0.9), seed=0, structure=spec)


def test_the_random_baseline_of_a_structured_round() -> None:
    model = ltfunc.models.lenet300(seed=0)
    theta0 = ltfunc.Weights.of(model)
    m = ltfunc.next_mask(theta0.params, masks.ones(theta0.params), round=1, rate=0.5, structure="2:4")
    assert m == prune.magnitude(theta0.params, masks.ones(theta0.params), rate=0.5, structure="2:4")
    rm, start = ltfunc.ticket.baseline_start("random_prune", m, theta0, model=model, seed=3, structure="2:4")
    assert all(structured.satisfies(rm, "2:4").values()) and rm != m
    assert masks.counts(rm) == masks.counts(m)
    assert bool((start.params["fc1.weight"][~rm["fc1.weight"]] == 0).all())
    with pytest.raises(ValueError, match="baseline_start: structure='x'"):
        ltfunc.ticket.baseline_start("random_prune", m, theta0, model=model, seed=3, structure="x")


# ---------------------------------------------------------------------------- IMP: rounds, config, run


class TinyConv(torch.nn.Module):
    """3x8x8 inputs: conv1 has 3 input channels (does not fit 2:4), the other layers do."""

    def __init__(self, seed: int | None = None) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0 if seed is None else seed)
            self.conv1 = torch.nn.Conv2d(3, 8, 3)
            self.conv2 = torch.nn.Conv2d(8, 8, 3)
            self.fc1 = torch.nn.Linear(8 * 4 * 4, 16)
            self.fc2 = torch.nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def tiny_conv(seed: int | None = None) -> torch.nn.Module:
    return TinyConv(seed)


def tiny_data(root: Any = None, device: str = "cpu", val_size: int = 0) -> ltfunc.data.Dataset:
    from ltfunc.data import Dataset, Split

    g = torch.Generator().manual_seed(0)
    x = torch.randn(160, 3, 8, 8, generator=g).to(device)
    y = (x[:, 0, 4, 4] > 0).long()
    return Dataset(
        "tiny",
        Split(x[val_size:120], y[val_size:120]),
        Split(x[:val_size], y[:val_size]),
        Split(x[120:], y[120:]),
    )


TINY: dict[str, Any] = {
    "model": "tests.test_structured:tiny_conv",
    "dataset": "tests.test_structured:tiny_data",
    "iterations": 6,
    "eval_every": 3,
    "val_size": 20,
    "batch_size": 16,
    "compile": False,
}


def test_imp_refuses_rounds_that_cannot_prune_before_training() -> None:
    model = ltfunc.models.lenet300(seed=0)
    step = ltfunc.make_train_step(model, ltfunc.optim.sgd(lr=0.1), compile=False)
    t = ltfunc.make_trainer(
        step, (torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))), iterations=1, batch_size=8
    )
    w = ltfunc.Weights.of(model)
    with pytest.raises(
        ValueError, match=r"imp: with structure '2:4', round 5 cannot prune .*use rounds <= 4"
    ):
        ltfunc.imp(t, w, rounds=6, rate=0.2, structure="2:4")
    with pytest.raises(ValueError, match=r"round 2 cannot prune .*use rounds <= 1"):
        ltfunc.imp(t, w, rounds=2, rate=0.5, schedule="sparsity", structure="1:2", scope="global")
    with pytest.raises(ValueError, match=r"imp: structure 'block:4x4' does not divide layer 'fc3.weight'"):
        ltfunc.imp(t, w, rounds=1, rate=0.2, structure="block:4x4")
    rounds = list(ltfunc.imp(t, w, rounds=2, rate=0.2, structure="2:4"))
    assert [round(masks.density(r.mask), 4) for r in rounds] == [1.0, 0.8, 0.64]
    with pytest.raises(ValueError, match=r"imp_round: structure='3:3'"):
        ltfunc.imp_round(t, rounds[0], rounds[0].start, rate=0.2, structure="3:3")


def test_config_structure_field() -> None:
    # an old config (no structure key) keeps its dict and hash; the value recorded before this field
    assert ImpConfig().config_hash() == "6ecab1ad76db"
    assert ImpConfig(structure="none") == ImpConfig() and "structure" in LATER_FIELDS
    assert "structure" not in ImpConfig().to_dict()
    old = json.loads((ROOT / "docs/results/lenet-mnist/runs/lenet-mnist-seed0/config.json").read_text())
    assert "structure" not in old and ImpConfig.from_dict(old).config_hash() == old["config_hash"]
    cfg = ImpConfig(rounds=4, structure=" 2:4 ")
    assert cfg.structure == "2:4" and cfg.to_dict()["structure"] == "2:4"
    assert (
        ImpConfig.from_dict(cfg.to_dict()) == cfg and cfg.config_hash() != ImpConfig(rounds=4).config_hash()
    )
    assert config_diff(ImpConfig(rounds=4).to_dict(), cfg.to_dict()) == {"structure": (None, "2:4")}
    with pytest.raises(ValueError, match=r"ImpConfig: with structure '2:4', round 5 .*use rounds <= 4"):
        ImpConfig(rounds=10, structure="2:4")
    with pytest.raises(
        ValueError,
        match=r"ImpConfig: structure '2:4' does not divide layer 'conv1.weight' of shape \(64, 1, 3, 3\)",
    ):
        ImpConfig(model="conv2", dataset="cifar10", rounds=2, structure="2:4")
    ok = ImpConfig(
        model="conv2", dataset="cifar10", rounds=2, structure="2:4", overrides={"conv1.weight": 0.0}
    )
    assert ok.structure == "2:4"
    with pytest.raises(ValueError, match=r"ImpConfig: structure='2:2'"):
        ImpConfig(structure="2:2")
    with pytest.raises(TypeError, match=r"ImpConfig: structure must be a string"):
        ImpConfig(structure=24)  # type: ignore[arg-type]


def test_run_imp_refuses_a_misfit_factory_model_before_touching_the_run(tmp_path: Path) -> None:
    cfg = ImpConfig(**TINY, rounds=1, rate=0.5, structure="2:4")  # a factory's model: checked at run start
    with pytest.raises(ValueError, match=r"run_imp: structure '2:4' does not divide layer 'conv1.weight'"):
        run_imp(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize(
    ("spec", "settings"),
    [
        ("2:4", {"rounds": 2, "rate": 0.3, "overrides": {"conv1.weight": 0.0}}),
        ("block:4x1", {"rounds": 2, "rate": 0.5, "scope": "global", "schedule": "sparsity"}),
    ],
)
def test_a_structured_imp_run(spec: str, settings: dict[str, Any], tmp_path: Path, capsys: Any) -> None:
    cfg = ImpConfig(**TINY, **settings, structure=spec, baselines=("reinit", "random_prune"))
    run = tmp_path / "run"
    result = run_imp(cfg, run, progress=False)
    assert len(result.trained) == 7  # ticket 0..2, two baselines of rounds 1 and 2
    assert json.loads((run / "config.json").read_text())["structure"] == spec
    active = [n for n in masks.ones(cfg.make_model()) if n != "conv1.weight" or "overrides" not in settings]
    for k in (1, 2):
        ticket = ltfunc.load_round(run, "ticket", k).mask
        rand = ltfunc.load_round(run, "random_prune", k).mask
        assert masks.counts(rand) == masks.counts(ticket) and rand != ticket
        for m in (ticket, rand):
            sub = masks.Mask({n: m[n] for n in active})
            if spec == "2:4":
                counts = [min(group_counts_ref(sub[n], 4)) for n in active]
                assert min(counts) >= 2  # never below N in a group
                exact = structured.satisfies(sub, spec)
                assert all(exact.values()) == (k == 2)  # 0.7 of the weights, then the 2:4 floor (0.49 asked)
            else:
                assert structured.satisfies(sub, spec) == dict.fromkeys(active, True)
        if "overrides" in settings:
            assert bool(ticket["conv1.weight"].all())  # the layer at rate 0 stays dense
    if spec == "block:4x1":
        blocks = sum(v.numel() for v in ticket.values()) // 4  # round 2 targets 1 - 0.5**2 of all blocks
        assert sum(int(v.sum()) for v in ticket.values()) == 4 * (blocks - half_up(0.75 * blocks))
    # the report states the structure; resuming changes nothing
    assert report.run_structure(run) == spec
    table = report.format_table(report.summary_rows(run), structure=report.run_structure(run))
    assert table.splitlines()[0] == f"structure: {spec}"
    assert cli.main(["report", str(run)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"structure: {spec}"
    again = run_imp(cfg, run, progress=False)
    assert again.trained == () and len(again.resumed) == 7


def test_an_unstructured_run_resumes_and_its_report_is_unchanged(tmp_path: Path, capsys: Any) -> None:
    cfg = ImpConfig(**TINY, rounds=1, rate=0.5, baselines=())
    run = tmp_path / "run"
    run_imp(cfg, run, progress=False)
    saved = json.loads((run / "config.json").read_text())
    assert "structure" not in saved  # the config.json an older version wrote
    again = run_imp(ImpConfig.from_dict(saved), run, progress=False)
    assert again.trained == () and again.config.config_hash() == saved["config_hash"]
    assert report.run_structure(run) is None
    table = report.format_table(report.summary_rows(run), structure=report.run_structure(run))
    assert table == report.format_table(report.summary_rows(run)) and table.startswith("condition")


def test_cli_structure_option(tmp_path: Path, capsys: Any) -> None:
    cfg, _ = cli.imp_config_from_args(["imp", "--rounds", "4", "--structure", "2:4", "--name", "x"])
    assert cfg.structure == "2:4"
    cfg, _ = cli.imp_config_from_args(["imp", "--rounds", "4", "--structure", "none", "--name", "x"])
    assert cfg.structure is None
    with pytest.raises(SystemExit):
        cli.imp_config_from_args(["imp", "--structure", "4:2"])
    assert "needs 1 <= N < M" in capsys.readouterr().err
    # one-shot pruning from the command line
    theta = ltfunc.get_params(ltfunc.models.lenet300(seed=0))
    ltfunc.save_tree(theta, tmp_path / "w.safetensors")
    out = tmp_path / "m.safetensors"
    argv = ["prune", "--weights", str(tmp_path / "w.safetensors"), "--rate", "0.5", "--sparsity"]
    assert cli.main([*argv, "--structure", "2:4", "-o", str(out)]) == 0
    mask = masks.load(out)
    assert mask == prune.magnitude(theta, masks.ones(theta), sparsity=0.5, structure="2:4")
    assert all(structured.satisfies(mask, "2:4").values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("spec", ["2:4", "block:2x4"])
def test_structured_masks_on_cuda_equal_the_cpu_ones(spec: str) -> None:
    p = weights(6)
    start = prunable(p)
    cpu = prune.magnitude(p, start, rate=0.6, structure=spec, scope="global")
    gpu_p = {k: v.cuda() for k, v in p.items()}
    gpu = prune.magnitude(gpu_p, start.to("cuda"), rate=0.6, structure=spec, scope="global")
    assert all(v.device.type == "cuda" for v in gpu.values())
    assert gpu.to("cpu") == cpu
    drawn = prune.random_like(gpu, seed=0, structure=spec, within=start.to("cuda"))
    assert drawn.to("cpu") == prune.random_like(cpu, seed=0, structure=spec, within=start)
