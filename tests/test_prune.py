"""Tests for ltfunc.prune: exact counts, selection, purity, randomness and bad inputs.

Expected counts are computed here from the documented rule (removing ``floor(r * n + 0.5)``
of ``n`` surviving weights per layer / group; a target sparsity ``s`` of ``N`` weights keeps
``N - floor(s * N + 0.5)``), and the expected kept *sets* from an independent numpy
implementation of "remove the smallest |w|, ties: earlier layer, then earlier flat index".
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pytest
import torch
from helpers import assert_bit_identical, tree_clone
from torch import Tensor, nn

import ltfunc
from ltfunc import masks, prune
from ltfunc.masks import Mask

LENET_SIZES = {"fc1.weight": 300 * 784, "fc2.weight": 100 * 300, "fc3.weight": 10 * 100}
CONV2_SIZES = {
    "conv1.weight": 64 * 1 * 3 * 3,
    "conv2.weight": 64 * 64 * 3 * 3,
    "fc1.weight": 256 * 64 * 14 * 14,
    "fc2.weight": 256 * 256,
    "fc3.weight": 10 * 256,
}


# Independent reference -----------------------------------------------------------------------
def removed(n: int, r: float) -> int:
    """The documented rounding: floor(r * n + 0.5)."""
    return math.floor(r * n + 0.5)


def reference_keep(
    params: Mapping[str, Tensor], mask: Mapping[str, Tensor], groups: list[tuple[list[str], int]]
) -> dict[str, np.ndarray]:
    """numpy re-implementation: per group, drop the `remove` smallest |w| among survivors."""
    out = {k: mask[k].numpy().reshape(-1).copy() for k in mask}
    for names, remove in groups:
        mags, layer, flat = [], [], []
        for li, n in enumerate(names):
            idx = np.flatnonzero(out[n])
            mags.append(np.abs(params[n].detach().double().numpy().reshape(-1)[idx]))
            layer.append(np.full(idx.size, li))
            flat.append(idx)
        m, lay, fl = np.concatenate(mags), np.concatenate(layer), np.concatenate(flat)
        order = np.lexsort((fl, lay, m))[:remove]  # primary key: magnitude, then layer, then index
        for li, n in enumerate(names):
            out[n][fl[order][lay[order] == li]] = False
    return {k: out[k].reshape(tuple(mask[k].shape)) for k in out}


def kept(mask: Mask) -> dict[str, int]:
    return {k: int(v.sum()) for k, v in mask.items()}


def assert_subset(new: Mask, old: Mask) -> None:
    assert list(new) == list(old)
    for k in old:
        assert not (new[k] & ~old[k]).any(), f"{k}: a pruned weight came back"


def assert_matches_reference(new: Mask, ref: dict[str, np.ndarray]) -> None:
    for k, v in ref.items():
        assert np.array_equal(new[k].numpy(), v), f"{k}: kept set differs from the largest |w|"


@pytest.fixture(scope="module")
def lenet_params() -> dict[str, Tensor]:
    return ltfunc.get_params(ltfunc.models.lenet300(seed=0))


@pytest.fixture(scope="module")
def conv2_params() -> dict[str, Tensor]:
    return ltfunc.get_params(ltfunc.models.conv2(seed=0))


def small_params() -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(3)
    return {
        "a.weight": torch.randn(6, 5, generator=g),
        "a.bias": torch.randn(6, generator=g),
        "b.weight": torch.randn(4, 6, generator=g),
        "c.weight": torch.randn(3, 4, generator=g),
    }


# Rounding and basic selection -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "rate", "n_removed"),
    [(5, 0.5, 3), (10, 0.25, 3), (10, 0.15, 2), (7, 0.2, 1), (8, 0.2, 2), (3, 0.1, 0), (4, 0.0, 0)],
)
def test_rounding_is_half_up(n: int, rate: float, n_removed: int) -> None:
    # hand-computed: 2.5 -> 3 and 1.5 -> 2 (not banker's rounding), 1.4 -> 1, 1.6 -> 2, 0.3 -> 0
    p = {"w": torch.arange(1, n + 1, dtype=torch.float32).reshape(1, n)}
    new = prune.magnitude(p, masks.ones(p), rate=rate)
    assert int(new["w"].sum()) == n - n_removed
    # the smallest magnitudes (the first entries) are the ones removed
    assert not new["w"][0, :n_removed].any() and new["w"][0, n_removed:].all()


def test_magnitude_keeps_exactly_largest_abs_values() -> None:
    g = torch.Generator().manual_seed(0)
    n = 60
    mags = torch.randperm(n, generator=g).float() + 1.0  # distinct magnitudes 1..60
    signs = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    p = {"w": (mags * signs).reshape(6, 10)}
    new = prune.magnitude(p, masks.ones(p), rate=0.25)  # removes 15
    expected = (mags > 15).reshape(6, 10)
    assert torch.equal(new["w"], expected)
    # large negative weights are kept: it is |w| that counts
    assert new["w"].reshape(-1)[(mags * signs < -15)].all()


def test_already_pruned_weights_stay_pruned() -> None:
    p = small_params()
    old = masks.ones(p)
    # prune the *largest* weights of each layer by hand: magnitude must not bring them back
    old = Mask({k: p[k].abs() < p[k].abs().median() for k in old})
    new = prune.magnitude(p, old, rate=0.5)
    assert_subset(new, old)
    for k in old:
        assert int(new[k].sum()) == int(old[k].sum()) - removed(int(old[k].sum()), 0.5)
    ref = reference_keep(p, old, [([k], removed(int(old[k].sum()), 0.5)) for k in old])
    assert_matches_reference(new, ref)


def test_non_contiguous_mask_is_pruned() -> None:
    # regression: a clone of a transposed mask keeps its strides; writes must still land
    base = torch.ones(4, 3, dtype=torch.bool)
    mask = Mask({"w": base.t()})
    p = {"w": torch.arange(1, 13, dtype=torch.float32).reshape(3, 4)}
    new = prune.magnitude(p, mask, rate=0.5)
    assert torch.equal(new["w"], p["w"] > 6)
    assert base.all()


# Exact counts on LeNet-300-100 ----------------------------------------------------------------
def test_lenet_layer_scope_five_rounds(lenet_params: dict[str, Tensor]) -> None:
    mask = masks.ones(lenet_params)
    assert kept(mask) == LENET_SIZES and sum(LENET_SIZES.values()) == 266_200
    expected = dict(LENET_SIZES)
    for _ in range(5):
        old = mask
        mask = prune.magnitude(lenet_params, old, rate=0.2, scope="layer")
        expected = {k: n - removed(n, 0.2) for k, n in expected.items()}
        assert kept(mask) == expected
        assert_subset(mask, old)
        ref = reference_keep(lenet_params, old, [([k], removed(int(old[k].sum()), 0.2)) for k in old])
        assert_matches_reference(mask, ref)
    # first round by hand: 235200 * 0.8 = 188160; after five rounds each layer is ~0.8**5 = 32.8%
    assert expected["fc1.weight"] < 0.33 * LENET_SIZES["fc1.weight"]
    assert prune.kept_counts(lenet_params, masks.ones(lenet_params), rate=0.2)["fc1.weight"] == 188_160


def test_lenet_global_scope_five_rounds(lenet_params: dict[str, Tensor]) -> None:
    mask = masks.ones(lenet_params)
    total = 266_200
    names = list(mask)
    for _ in range(5):
        old = mask
        mask = prune.magnitude(lenet_params, old, rate=0.2, scope="global")
        total -= removed(total, 0.2)
        assert sum(kept(mask).values()) == total
        assert_subset(mask, old)
        ref = reference_keep(lenet_params, old, [(names, removed(sum(kept(old).values()), 0.2))])
        assert_matches_reference(mask, ref)


def test_global_scope_is_global_and_layer_scope_is_per_layer(lenet_params: dict[str, Tensor]) -> None:
    p = dict(lenet_params)
    # every |w| of fc2 is >= 1 > |w| of fc1 >= 0.01 > |w| of fc3
    p["fc1.weight"] = p["fc1.weight"].sign() * (0.01 + p["fc1.weight"].abs().clamp(max=0.9))
    p["fc2.weight"] = p["fc2.weight"].sign() * (1.0 + p["fc2.weight"].abs())
    p["fc3.weight"] = p["fc3.weight"].clamp(-1.0, 1.0) * 0.009
    g = prune.magnitude(p, masks.ones(p), rate=0.2, scope="global")
    lay = prune.magnitude(p, masks.ones(p), rate=0.2, scope="layer")
    gk, lk = kept(g), kept(lay)
    assert gk["fc2.weight"] == LENET_SIZES["fc2.weight"]  # nothing of the big layer is pruned
    assert gk["fc3.weight"] == 0  # the tiny layer goes entirely (1000 < 53240 removed)
    assert sum(gk.values()) == sum(lk.values()) == 266_200 - removed(266_200, 0.2)
    for k, n in LENET_SIZES.items():
        assert lk[k] == n - removed(n, 0.2)  # each layer keeps its own 80%


# Ties ----------------------------------------------------------------------------------------
def quantized(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(1)
    out = {}
    for k, v in params.items():
        levels = torch.randint(0, 3, v.shape, generator=g).float() * 0.5  # |w| in {0, .5, 1}
        out[k] = torch.where(torch.rand(v.shape, generator=g) < 0.5, -levels, levels)
    return out


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_tied_magnitudes_exact_and_deterministic(lenet_params: dict[str, Tensor], scope: str) -> None:
    p = quantized(lenet_params)
    mask = masks.ones(p)
    names = list(mask)
    expected = dict(LENET_SIZES)
    total = sum(LENET_SIZES.values())
    for _ in range(5):
        old = mask
        mask = prune.magnitude(p, old, rate=0.2, scope=scope)
        assert mask == prune.magnitude(p, old, rate=0.2, scope=scope)  # deterministic
        if scope == "layer":
            expected = {k: n - removed(n, 0.2) for k, n in expected.items()}
            assert kept(mask) == expected
            groups = [([k], removed(int(old[k].sum()), 0.2)) for k in names]
        else:
            total -= removed(total, 0.2)
            assert sum(kept(mask).values()) == total
            groups = [(names, removed(sum(kept(old).values()), 0.2))]
        assert_subset(mask, old)
        assert_matches_reference(mask, reference_keep(p, old, groups))


def test_all_equal_weights_remove_first_positions_first(lenet_params: dict[str, Tensor]) -> None:
    p = {k: torch.full_like(v, 0.3) for k, v in lenet_params.items()}
    lay = prune.magnitude(p, masks.ones(p), rate=0.2, scope="layer")
    for k, n in LENET_SIZES.items():
        r = removed(n, 0.2)
        flat = lay[k].reshape(-1)
        assert not flat[:r].any() and flat[r:].all()
    glob = prune.magnitude(p, masks.ones(p), rate=0.2, scope="global")
    r = removed(266_200, 0.2)  # 53240 < 235200: all taken from the first layer's first entries
    assert not glob["fc1.weight"].reshape(-1)[:r].any() and glob["fc1.weight"].reshape(-1)[r:].all()
    assert glob["fc2.weight"].all() and glob["fc3.weight"].all()


# Target sparsity -----------------------------------------------------------------------------
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_sparsity_targets_cumulative(lenet_params: dict[str, Tensor], scope: str) -> None:
    mask = masks.ones(lenet_params)
    for k in range(1, 6):
        s = k * 0.15  # cumulative target of all weights after round k
        old = mask
        mask = prune.magnitude(lenet_params, old, sparsity=s, scope=scope)
        assert_subset(mask, old)
        if scope == "layer":
            assert kept(mask) == {n: t - removed(t, s) for n, t in LENET_SIZES.items()}
        else:
            assert sum(kept(mask).values()) == 266_200 - removed(266_200, s)
    # a target at or below the current sparsity is a no-op, never a regrowth
    for s in (0.75, 0.5, 0.0):
        again = prune.magnitude(lenet_params, mask, sparsity=s, scope=scope)
        assert again == mask


def test_sparsity_with_rates_and_partially_pruned_layers(lenet_params: dict[str, Tensor]) -> None:
    start = prune.magnitude(lenet_params, masks.ones(lenet_params), rate=0.4, scope="layer")
    # fc1 is at 40% sparsity: a 30% target leaves it alone; fc3 (output) goes to 50%
    new = prune.magnitude(lenet_params, start, sparsity=ltfunc.Rates(fc=0.3, output=0.5))
    assert kept(new)["fc1.weight"] == kept(start)["fc1.weight"]
    assert kept(new)["fc2.weight"] == kept(start)["fc2.weight"]
    assert kept(new)["fc3.weight"] == 1000 - removed(1000, 0.5)
    assert new["fc1.weight"].equal(start["fc1.weight"])


# Rates with Conv-2 ---------------------------------------------------------------------------
def test_layer_kinds_conv2(conv2_params: dict[str, Tensor]) -> None:
    assert prune.layer_kinds(masks.ones(conv2_params)) == {
        "conv1.weight": "conv",
        "conv2.weight": "conv",
        "fc1.weight": "fc",
        "fc2.weight": "fc",
        "fc3.weight": "output",
    }


def test_rates_resolution() -> None:
    r = ltfunc.Rates(default=0.05, conv=0.1, fc=0.2, output=0.3, overrides={"x": 0.4})
    assert r.resolve("x", "fc") == 0.4
    assert r.resolve("a", "conv") == 0.1
    assert r.resolve("a", "fc") == 0.2
    assert r.resolve("a", "output") == 0.3
    assert r.resolve("a", "other") == 0.05
    assert ltfunc.Rates(fc=0.2).resolve("a", "output") == 0.2  # output falls back to fc
    assert ltfunc.Rates(fc=0.2).resolve("a", "conv") == 0.0  # conv falls back to default


def test_conv2_rates_layer_scope(conv2_params: dict[str, Tensor]) -> None:
    rates = ltfunc.Rates(conv=0.1, fc=0.2, output=0.1, overrides={"fc2.weight": 0.5})
    per_layer = {"conv1.weight": 0.1, "conv2.weight": 0.1, "fc1.weight": 0.2, "fc2.weight": 0.5}
    per_layer["fc3.weight"] = 0.1
    mask = masks.ones(conv2_params)
    expected = dict(CONV2_SIZES)
    for _ in range(2):
        old = mask
        mask = prune.magnitude(conv2_params, old, rate=rates, scope="layer")
        expected = {k: n - removed(n, per_layer[k]) for k, n in expected.items()}
        assert kept(mask) == expected
        assert_subset(mask, old)
    # hand check of round 1 for conv1: 576 * 0.1 = 57.6 -> 58 removed
    assert prune.kept_counts(conv2_params, masks.ones(conv2_params), rate=rates)["conv1.weight"] == 518


def test_conv2_rates_global_scope_groups(conv2_params: dict[str, Tensor]) -> None:
    rates = ltfunc.Rates(conv=0.1, fc=0.2, output=0.3, overrides={"fc2.weight": 0.5})
    old = masks.ones(conv2_params)
    new = prune.magnitude(conv2_params, old, rate=rates, scope="global")
    conv = ["conv1.weight", "conv2.weight"]
    groups = [
        (conv, removed(sum(CONV2_SIZES[k] for k in conv), 0.1)),
        (["fc1.weight"], removed(CONV2_SIZES["fc1.weight"], 0.2)),
        (["fc2.weight"], removed(CONV2_SIZES["fc2.weight"], 0.5)),
        (["fc3.weight"], removed(CONV2_SIZES["fc3.weight"], 0.3)),
    ]
    assert_matches_reference(new, reference_keep(conv2_params, old, groups))
    k = kept(new)
    assert k["conv1.weight"] + k["conv2.weight"] == 37_440 - removed(37_440, 0.1)
    assert k["fc2.weight"] == 65_536 - removed(65_536, 0.5)


def test_rates_unset_class_uses_default(conv2_params: dict[str, Tensor]) -> None:
    new = prune.magnitude(conv2_params, masks.ones(conv2_params), rate=ltfunc.Rates(fc=0.2))
    k = kept(new)
    assert k["conv1.weight"] == CONV2_SIZES["conv1.weight"]  # default 0: untouched
    assert k["conv2.weight"] == CONV2_SIZES["conv2.weight"]
    assert k["fc3.weight"] == 2560 - removed(2560, 0.2)  # output falls back to fc


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 0.3},
        {"sparsity": 0.6, "scope": "global"},
        {
            "rate": ltfunc.Rates(conv=0.1, fc=0.2, output=0.3, overrides={"fc2.weight": 0.5}),
            "scope": "global",
        },
        {"sparsity": ltfunc.Rates(conv=0.5, fc=0.7)},
    ],
)
def test_unchecked_core_equals_magnitude(conv2_params: dict[str, Tensor], kwargs: dict) -> None:
    """prune._magnitude (for callers that validated their inputs) is prune.magnitude minus the checks."""
    start = prune.magnitude(conv2_params, masks.ones(conv2_params), rate=0.2)
    assert prune._magnitude(conv2_params, start, **kwargs) == prune.magnitude(conv2_params, start, **kwargs)


# Purity --------------------------------------------------------------------------------------
def _calls(p: dict[str, Tensor], m: Mask) -> dict[str, object]:
    other = Mask({k: torch.rand(v.shape) < 0.7 for k, v in m.items()})
    return {
        "magnitude-layer": lambda: prune.magnitude(p, m, rate=0.3),
        "magnitude-global": lambda: prune.magnitude(p, m, rate=ltfunc.Rates(fc=0.3), scope="global"),
        "magnitude-sparsity": lambda: prune.magnitude(p, m, sparsity=0.6, scope="global"),
        "kept_counts": lambda: prune.kept_counts(p, m, rate=0.3),
        "random": lambda: prune.random(p, m, rate=0.3, seed=1),
        "random_like": lambda: prune.random_like(masks.intersect(m, other), within=m, seed=1),
        "apply": lambda: masks.apply(m, p),
        "intersect": lambda: masks.intersect(m, other),
    }


@pytest.mark.parametrize(
    "name",
    [
        "magnitude-layer",
        "magnitude-global",
        "magnitude-sparsity",
        "kept_counts",
        "random",
        "random_like",
        "apply",
        "intersect",
    ],
)
def test_inputs_are_bit_identical_after_call(name: str) -> None:
    p = small_params()
    m = Mask({k: torch.rand(v.shape) < 0.8 for k, v in p.items() if v.dim() == 2})
    calls = _calls(p, m)
    p_before, m_before = tree_clone(p), tree_clone(m)
    ptrs = {k: v.data_ptr() for k, v in m.items()}
    out = calls[name]()
    assert_bit_identical(p, p_before)
    assert_bit_identical(m, m_before)
    if isinstance(out, Mask):  # the result never aliases the input mask's storage
        assert all(out[k].data_ptr() != ptrs[k] for k in out)


# Random pruning ------------------------------------------------------------------------------
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_random_matches_magnitude_counts_and_respects_mask(
    lenet_params: dict[str, Tensor], scope: str
) -> None:
    old = prune.magnitude(lenet_params, masks.ones(lenet_params), rate=0.5, scope="layer")
    r = prune.random(lenet_params, old, rate=0.2, scope=scope, seed=0)
    m = prune.magnitude(lenet_params, old, rate=0.2, scope=scope)
    assert kept(r) == kept(m)
    assert_subset(r, old)
    assert r != m


def test_random_reproducible_from_seed_and_generator(lenet_params: dict[str, Tensor]) -> None:
    ones = masks.ones(lenet_params)
    a = prune.random(lenet_params, ones, rate=0.2, seed=7)
    assert a == prune.random(lenet_params, ones, rate=0.2, seed=7)
    assert a == prune.random(lenet_params, ones, rate=0.2, generator=torch.Generator().manual_seed(7))
    b = prune.random(lenet_params, ones, rate=0.2, seed=8)
    assert a != b
    assert not torch.equal(a["fc1.weight"], b["fc1.weight"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_random_refuses_a_cuda_generator(lenet_params: dict[str, Tensor]) -> None:
    cuda_gen = torch.Generator(device="cuda").manual_seed(0)
    with pytest.raises(ValueError, match=r"random: generator must be a CPU torch\.Generator"):
        prune.random(lenet_params, masks.ones(lenet_params), rate=0.2, generator=cuda_gen)


def test_random_ignores_magnitudes() -> None:
    # the first half of the layer has huge weights: magnitude keeps only it, random does not care
    w = torch.cat([torch.full((50, 20), 100.0), torch.full((50, 20), 0.01)]) * torch.randn(100, 20).sign()
    p = {"w": w}
    mag = prune.magnitude(p, masks.ones(p), rate=0.5)
    rnd = prune.random(p, masks.ones(p), rate=0.5, seed=0)
    assert mag["w"][:50].all() and not mag["w"][50:].any()
    first = int(rnd["w"][:50].sum())
    assert int(rnd["w"].sum()) == 1000
    assert 400 < first < 600  # hypergeometric: mean 500, sd ~11


def test_random_like_counts_within_seed() -> None:
    ref = prune.magnitude(small_params(), masks.ones(small_params()), rate=0.5)
    within = Mask({k: torch.rand(v.shape) < 0.8 for k, v in ref.items()})
    a = prune.random_like(ref, within=within, seed=3)
    assert kept(a) == kept(ref)
    assert_subset(a, within)
    assert a == prune.random_like(ref, within=within, seed=3)
    assert a != prune.random_like(ref, within=within, seed=4)
    full = prune.random_like(ref, seed=3)
    assert kept(full) == kept(ref)


def test_random_like_errors() -> None:
    ref = masks.from_dict({"w": [1, 1, 1, 0]})
    with pytest.raises(ValueError, match="random_like: layer 'w' needs 3"):
        prune.random_like(ref, within=masks.from_dict({"w": [1, 1, 0, 0]}), seed=0)
    with pytest.raises(ValueError, match="random_like: within"):
        prune.random_like(ref, within=masks.from_dict({"v": [1, 1, 1, 1]}), seed=0)
    with pytest.raises(TypeError, match="random_like: reference"):
        prune.random_like({"w": torch.ones(4, dtype=torch.bool)}, seed=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="random_like: within"):
        prune.random_like(ref, within={"w": torch.ones(4, dtype=torch.bool)}, seed=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="random_like: give seed="):
        prune.random_like(ref)
    with pytest.raises(TypeError, match="random_like: seed must be an int"):
        prune.random_like(ref, seed="1")  # type: ignore[arg-type]


# Bad input -----------------------------------------------------------------------------------
BAD_FRACTIONS = [
    (-0.1, ValueError),
    (1.0, ValueError),
    (1, ValueError),
    (1.5, ValueError),
    (float("nan"), ValueError),
    (float("inf"), ValueError),
    (True, TypeError),
    ("0.2", TypeError),
    ([0.2], TypeError),
]


def _check_raises_and_unchanged(
    fn: object, p: dict[str, Tensor], m: Mask, exc: type[Exception], *patterns: str
) -> None:
    p0, m0 = tree_clone(p), tree_clone(m)
    with pytest.raises(exc) as info:
        fn()  # type: ignore[operator]
    for pat in patterns:
        assert pat in str(info.value), f"{pat!r} not in {info.value}"
    assert_bit_identical(p, p0)
    assert_bit_identical(m, m0)


@pytest.mark.parametrize(("value", "exc"), BAD_FRACTIONS)
@pytest.mark.parametrize("func", ["magnitude", "random"])
@pytest.mark.parametrize("arg", ["rate", "sparsity"])
def test_bad_fraction(value: object, exc: type[Exception], func: str, arg: str) -> None:
    p = small_params()
    m = masks.ones(p)
    fn = getattr(prune, func)
    extra = {"seed": 0} if func == "random" else {}
    _check_raises_and_unchanged(lambda: fn(p, m, **{arg: value}, **extra), p, m, exc, f"{func}:", arg)


@pytest.mark.parametrize(("value", "exc"), BAD_FRACTIONS[:7])
def test_bad_fraction_inside_rates(value: object, exc: type[Exception]) -> None:
    p = small_params()
    m = masks.ones(p)
    for field in ("conv", "fc", "output", "default"):
        rates = ltfunc.Rates(**{field: value})  # type: ignore[arg-type]
        call = lambda r=rates: prune.magnitude(p, m, rate=r)  # noqa: E731
        _check_raises_and_unchanged(call, p, m, exc, "magnitude:", f"rate.{field}")
    rates = ltfunc.Rates(overrides={"b.weight": value})  # type: ignore[dict-item]
    call = lambda: prune.magnitude(p, m, sparsity=rates)  # noqa: E731
    _check_raises_and_unchanged(call, p, m, exc, "magnitude:", "sparsity.overrides['b.weight']")


def test_override_unknown_name() -> None:
    p = small_params()
    m = masks.ones(p)
    rates = ltfunc.Rates(fc=0.2, overrides={"nope.weight": 0.5})
    for func, extra in (("magnitude", {}), ("random", {"seed": 0})):
        fn = getattr(prune, func)
        call = lambda fn=fn, extra=extra: fn(p, m, rate=rates, **extra)  # noqa: E731
        _check_raises_and_unchanged(call, p, m, ValueError, f"{func}:", "overrides", "nope.weight")
    bad = ltfunc.Rates(overrides=[("a.weight", 0.1)])  # type: ignore[arg-type]
    call = lambda: prune.magnitude(p, m, rate=bad)  # noqa: E731
    _check_raises_and_unchanged(call, p, m, TypeError, "magnitude:", "overrides")


def test_mask_mismatches() -> None:
    p = small_params()
    m = masks.ones(p)
    extra_key = Mask({**m.to_dict(), "zzz.weight": torch.ones(2, 2, dtype=torch.bool)})
    wrong_shape = Mask({**m.to_dict(), "b.weight": torch.ones(6, 4, dtype=torch.bool)})
    import optree

    float_mask = optree.tree_map(lambda t: t.float(), m)
    assert isinstance(float_mask, Mask)
    cases = [
        (extra_key, ValueError, ("magnitude:", "zzz.weight")),
        (wrong_shape, ValueError, ("magnitude:", "mask['b.weight']", "(6, 4)")),
        (float_mask, TypeError, ("magnitude:", "mask['a.weight']", "bool")),
        (m.to("meta"), ValueError, ("magnitude:", "meta")),
        (m.to_dict(), TypeError, ("magnitude:", "mask must be an ltfunc Mask")),
    ]
    for bad, exc, pats in cases:
        _check_raises_and_unchanged(lambda b=bad: prune.magnitude(p, b, rate=0.2), p, m, exc, *pats)
        _check_raises_and_unchanged(
            lambda b=bad: prune.random(p, b, rate=0.2, seed=0), p, m, exc, "random:", *pats[1:]
        )


def test_nothing_prunable() -> None:
    for model in (nn.Sequential(nn.ReLU()), nn.Sequential(nn.BatchNorm1d(4))):
        with pytest.raises(ValueError, match="ones: nothing is prunable"):
            masks.ones(model)
        with pytest.raises(ValueError, match="ones: nothing is prunable"):
            masks.ones(ltfunc.get_params(model))
    p = ltfunc.get_params(nn.Sequential(nn.BatchNorm1d(4)))
    with pytest.raises(ValueError, match="magnitude: mask is empty"):
        prune.magnitude(p, Mask({}), rate=0.2)
    with pytest.raises(ValueError, match="random: mask is empty"):
        prune.random(p, Mask({}), rate=0.2, seed=0)


def test_non_floating_params() -> None:
    p = {"w": torch.arange(12).reshape(3, 4)}
    m = Mask({"w": torch.ones(3, 4, dtype=torch.bool)})
    _check_raises_and_unchanged(
        lambda: prune.magnitude(p, m, rate=0.2), p, m, TypeError, "magnitude:", "params['w']", "int64"
    )


def test_rate_and_sparsity_both_or_neither() -> None:
    p = small_params()
    m = masks.ones(p)
    for kw in ({}, {"rate": 0.2, "sparsity": 0.5}):
        for func, extra in (("magnitude", {}), ("random", {"seed": 0}), ("kept_counts", {})):
            fn = getattr(prune, func)
            call = lambda fn=fn, kw=kw, extra=extra: fn(p, m, **kw, **extra)  # noqa: E731
            _check_raises_and_unchanged(call, p, m, ValueError, f"{func}:", "rate=", "sparsity=")


def test_unknown_scope() -> None:
    p = small_params()
    m = masks.ones(p)
    call = lambda: prune.magnitude(p, m, rate=0.2, scope="per-layer")  # type: ignore[arg-type]  # noqa: E731
    _check_raises_and_unchanged(call, p, m, ValueError, "magnitude:", "scope='per-layer'", "Supported")


def test_random_seed_errors() -> None:
    p = small_params()
    m = masks.ones(p)
    _check_raises_and_unchanged(lambda: prune.random(p, m, rate=0.2), p, m, ValueError, "random:", "seed=")
    both = lambda: prune.random(p, m, rate=0.2, seed=1, generator=torch.Generator())  # noqa: E731
    _check_raises_and_unchanged(both, p, m, ValueError, "random:", "seed=", "generator=")
    for bad in (True, 1.5, "1"):
        call = lambda b=bad: prune.random(p, m, rate=0.2, seed=b)  # noqa: E731
        _check_raises_and_unchanged(call, p, m, TypeError, "random: seed must be an int")
    call = lambda: prune.random(p, m, rate=0.2, generator=3)  # type: ignore[arg-type]  # noqa: E731
    _check_raises_and_unchanged(call, p, m, TypeError, "random: generator")


def test_nan_among_survivors() -> None:
    p = small_params()
    p["b.weight"] = p["b.weight"].clone()
    p["b.weight"][0, 0] = float("nan")
    m = masks.ones(p)
    _check_raises_and_unchanged(
        lambda: prune.magnitude(p, m, rate=0.2), p, m, ValueError, "magnitude:", "b.weight", "NaN"
    )
    # a NaN at an already-pruned position does not matter
    pruned = Mask({**m.to_dict(), "b.weight": ~torch.isnan(p["b.weight"])})
    new = prune.magnitude(p, pruned, rate=0.2)
    assert int(new["b.weight"].sum()) == 23 - removed(23, 0.2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(lenet_params: dict[str, Tensor]) -> None:
    cpu_mask = prune.magnitude(lenet_params, masks.ones(lenet_params), rate=0.3, scope="global")
    cuda_params = {k: v.cuda() for k, v in lenet_params.items()}
    cuda_mask = prune.magnitude(cuda_params, masks.ones(cuda_params), rate=0.3, scope="global")
    assert all(v.is_cuda for v in cuda_mask.values())
    assert cuda_mask.to("cpu") == cpu_mask
    rnd = prune.random(cuda_params, cuda_mask, rate=0.2, seed=0)
    assert all(v.is_cuda for v in rnd.values())
    assert rnd.to("cpu") == prune.random(lenet_params, cpu_mask, rate=0.2, seed=0)
    with pytest.raises(ValueError, match=r"magnitude: mask.*is on cpu"):
        prune.magnitude(cuda_params, cpu_mask, rate=0.2)


def test_no_structure_is_the_unstructured_pruning(conv2_params: dict[str, torch.Tensor]) -> None:
    start = masks.ones(conv2_params)
    plain = prune.magnitude(conv2_params, start, rate=0.3, scope="global")
    for spec in (None, "none", "unstructured"):
        assert prune.magnitude(conv2_params, start, rate=0.3, scope="global", structure=spec) == plain
        assert prune.random(conv2_params, start, rate=0.3, seed=2, structure=spec) == prune.random(
            conv2_params, start, rate=0.3, seed=2
        )
