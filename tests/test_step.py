"""The masked training step: semantics, pruned weights stay zero, compile once, evaluation, bad input."""

from __future__ import annotations

import gc
import itertools
import weakref

import pytest
import torch
import torch.nn.functional as F
from helpers import tree_allclose, tree_clone
from torch import nn

import ltfunc
from ltfunc import masks, optim
from ltfunc.step import FlatState, TrainStep, evaluate, make_eval_step, make_train_step

BATCH = 32


class TinyMLP(nn.Module):
    """Small enough that eager tests are instant; 2-D weights are prunable."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def tiny_batches(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(BATCH, 12, generator=g), torch.randint(0, 5, (BATCH,), generator=g)) for _ in range(n)
    ]


def lenet_batches(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(BATCH, 1, 28, 28, generator=g), torch.randint(0, 10, (BATCH,), generator=g))
        for _ in range(n)
    ]


def random_mask(params: dict[str, torch.Tensor], density: float, seed: int) -> masks.Mask:
    g = torch.Generator().manual_seed(seed)
    return masks.Mask(
        {
            k: torch.rand(v.shape, generator=g) < density
            for k, v in params.items()
            if k in masks.prunable_names(params)
        }
    )


def pruned_values(params: dict[str, torch.Tensor], mask: masks.Mask) -> torch.Tensor:
    return torch.cat([params[k][~m] for k, m in mask.items()])


# Compiled steps are expensive to build: one per module, shared by the tests.
@pytest.fixture(scope="module")
def lenet() -> nn.Module:
    return ltfunc.models.lenet300(seed=0)


@pytest.fixture(scope="module")
def adam_l2() -> optim.Optimizer:
    return optim.adam(lr=1e-3, weight_decay=5e-4)


@pytest.fixture(scope="module")
def compiled_adam(lenet: nn.Module, adam_l2: optim.Optimizer) -> TrainStep:
    step = make_train_step(lenet, adam_l2)
    p = ltfunc.get_params(lenet)
    step(p, adam_l2.init(p), None, lenet_batches(1)[0], 1e-3)  # compile now, not inside a test
    return step


@pytest.fixture(scope="module")
def nesterov_wd() -> optim.Optimizer:
    return optim.sgd(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2)


@pytest.fixture(scope="module")
def compiled_sgd(nesterov_wd: optim.Optimizer) -> TrainStep:
    torch.manual_seed(0)
    model = TinyMLP()
    step = make_train_step(model, nesterov_wd)
    p = ltfunc.get_params(model)
    step(p, nesterov_wd.init(p), None, tiny_batches(1)[0], 0.05)
    return step


def run(step, params, opt_state, mask, batches, lrs):
    losses = []
    for batch, lr in zip(batches, lrs, strict=True):
        params, opt_state, metrics = step(params, opt_state, mask, batch, lr)
        losses.append(metrics["loss"])
    return params, opt_state, torch.stack(losses)


# Semantics ---------------------------------------------------------------------------------
def test_matches_torch_optim_with_masked_grads_and_weights() -> None:
    """The step equals the classic loop: mask grads, torch.optim step, re-mask weights."""
    torch.manual_seed(0)
    model = TinyMLP()
    p0 = ltfunc.get_params(model)
    mask = random_mask(p0, 0.5, seed=1)
    batches = tiny_batches(30)
    # reference: a torch module trained with torch.optim.Adam(weight_decay) and masking
    ref = TinyMLP()
    ltfunc.load_into(ref, masks.apply(mask, p0))
    opt = torch.optim.Adam(ref.parameters(), lr=0.01, weight_decay=0.01)
    named = dict(ref.named_parameters())
    for x, y in batches:
        opt.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        for k, m in mask.items():
            named[k].grad.mul_(m)
        opt.step()
        with torch.no_grad():
            for k, m in mask.items():
                named[k].mul_(m)
    translated = optim.from_torch(opt)
    step = make_train_step(model, translated, compile=False)
    got, _, _ = run(step, p0, translated.init(p0), mask, batches, [0.01] * len(batches))
    assert tree_allclose(got, ltfunc.get_params(ref), rtol=1e-5, atol=1e-6)


def test_metrics_are_the_loss_and_accuracy_of_the_masked_params_before_the_update() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    p = ltfunc.get_params(model)
    mask = random_mask(p, 0.3, seed=2)
    x, y = tiny_batches(1)[0]
    step = make_train_step(model, optim.sgd(), compile=False)
    _, _, metrics = step(p, optim.sgd().init(p), mask, (x, y), 0.1)
    logits = ltfunc.call(model, masks.apply(mask, p), x)
    assert set(metrics) == {"loss", "accuracy"}
    assert metrics["loss"].shape == () and metrics["accuracy"].shape == ()
    assert torch.allclose(metrics["loss"], F.cross_entropy(logits, y))
    assert torch.allclose(metrics["accuracy"], (logits.argmax(1) == y).float().mean())


def test_unmasked_input_params_are_pruned_in_the_forward_pass_and_output() -> None:
    """Dense θ0 + a new mask (IMP reset): the forward pass already sees pruned weights."""
    torch.manual_seed(0)
    model = TinyMLP()
    p = ltfunc.get_params(model)
    mask = random_mask(p, 0.5, seed=3)
    batch = tiny_batches(1)[0]
    step = make_train_step(model, optim.adam(), compile=False)
    out_dense, _, m_dense = step(p, optim.adam().init(p), mask, batch, 1e-3)
    out_masked, _, m_masked = step(masks.apply(mask, p), optim.adam().init(p), mask, batch, 1e-3)
    assert torch.equal(m_dense["loss"], m_masked["loss"])
    assert ltfunc.tree_equal(out_dense, out_masked)
    assert torch.count_nonzero(pruned_values(out_dense, mask)) == 0


def test_mask_none_is_dense() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    p = ltfunc.get_params(model)
    step = make_train_step(model, optim.sgd(), compile=False)
    batches = tiny_batches(3)
    dense, _, _ = run(step, p, optim.sgd().init(p), None, batches, [0.1] * 3)
    ones, _, _ = run(step, p, optim.sgd().init(p), masks.ones(p), batches, [0.1] * 3)
    assert ltfunc.tree_equal(dense, ones)
    assert all(torch.count_nonzero(v) == v.numel() for v in dense.values())


@pytest.mark.parametrize(
    "opt",
    [
        optim.sgd(lr=0.05, momentum=0.9, weight_decay=0.01),
        optim.sgd(lr=0.05, momentum=0.9, dampening=0.5, weight_decay=0.01),
        optim.momentum(lr=0.05, nesterov=True, weight_decay=0.01),
        optim.adam(lr=0.01, weight_decay=0.01),
        optim.adamw(lr=0.01, weight_decay=0.1),
    ],
    ids=["momentum_wd", "dampening_wd", "nesterov_wd", "adam_l2", "adamw"],
)
def test_pruned_weights_stay_exactly_zero_eager(opt: optim.Optimizer) -> None:
    """Momentum buffers and Adam moments built up before pruning must not revive weights."""
    torch.manual_seed(0)
    model = TinyMLP()
    p = ltfunc.get_params(model)
    step = make_train_step(model, opt, compile=False)
    batches = tiny_batches(40)
    # dense training first, so the optimizer state is non-zero everywhere
    p, s, _ = run(step, p, opt.init(p), None, batches[:20], [opt.lr] * 20)
    assert all(torch.count_nonzero(v) > 0 for v in (s.momentum if hasattr(s, "momentum") else s.mu).values())
    mask = random_mask(p, 0.4, seed=4)
    p, s, _ = run(step, p, s, mask, batches[20:], [opt.lr] * 20)  # same state: no reset
    assert torch.count_nonzero(pruned_values(p, mask)) == 0
    kept = torch.cat([p[k][m] for k, m in mask.items()])
    assert torch.count_nonzero(kept) == kept.numel()  # the survivors still train


def test_pruned_weights_stay_exactly_zero_compiled(compiled_adam: TrainStep, compiled_sgd: TrainStep) -> None:
    for step, make_batches in ((compiled_adam, lenet_batches), (compiled_sgd, tiny_batches)):
        opt = step.optimizer
        p = ltfunc.get_params(step.model)
        batches = make_batches(60, seed=5)
        p, s, _ = run(step, p, opt.init(p), None, batches[:20], [opt.lr] * 20)
        mask = random_mask(p, 0.2, seed=6)
        p, s, _ = run(step, p, s, mask, batches[20:], [opt.lr] * 40)
        assert torch.count_nonzero(pruned_values(p, mask)) == 0, opt.name
        assert int(s.count) == 60


def test_step_does_not_modify_its_inputs(compiled_adam: TrainStep, adam_l2: optim.Optimizer) -> None:
    p = ltfunc.get_params(compiled_adam.model)
    mask = random_mask(p, 0.5, seed=7)
    batch = lenet_batches(1, seed=7)[0]
    p, s, _ = compiled_adam(p, adam_l2.init(p), None, batch, 1e-3)  # non-trivial state
    before = tree_clone((p, s, dict(mask.items()), batch))
    new_p, _, _ = compiled_adam(p, s, mask, batch, 1e-3)
    assert ltfunc.tree_equal((p, s, dict(mask.items()), batch), before)
    assert not tree_allclose(new_p, p)


# Eager vs compiled, compile once ------------------------------------------------------------
def test_eager_and_compiled_agree_across_masks_lrs_and_resets(
    compiled_adam: TrainStep, lenet: nn.Module, adam_l2: optim.Optimizer
) -> None:
    eager = make_train_step(lenet, adam_l2, compile=False)
    p0 = ltfunc.get_params(lenet)
    batches = lenet_batches(12, seed=8)
    m1, m2 = random_mask(p0, 0.8, seed=9), random_mask(p0, 0.5, seed=10)
    schedule = [  # (mask, lr as float or tensor, reset the optimizer state before?)
        (None, 1e-3, False),
        (None, 2e-3, False),
        (m1, torch.tensor(5e-4), False),
        (m1, 5e-4, True),
        (m2, torch.tensor(1e-3), False),
        (m2, 0.0, False),
    ]
    results = []
    for step in (eager, compiled_adam):
        p, s = p0, adam_l2.init(p0)
        losses = []
        for i, (mask, lr, reset) in enumerate(schedule):
            if reset:
                s = adam_l2.init(p)
            for batch in batches[2 * i : 2 * i + 2]:
                p, s, metrics = step(p, s, mask, batch, lr)
                losses.append(metrics["loss"])
        results.append((p, s, torch.stack(losses)))
    (pe, se, le), (pc, sc, lc) = results
    assert torch.allclose(le, lc, rtol=1e-5, atol=1e-6)
    diffs = {k: float((pe[k] - pc[k]).abs().max()) for k in pe}
    # Adam divides by sqrt(v): where a gradient is ~0 the float noise of a different matmul
    # split (2 threads) moves a weight by up to ~1e-5; a wrong update moves it by ~lr = 1e-3.
    assert tree_allclose(pe, pc, rtol=1e-4, atol=5e-5), diffs
    assert tree_allclose(se, sc, rtol=1e-3, atol=1e-7)
    assert int(sc.count) == 6  # reset after 6 of the 12 steps


def test_no_recompilation_across_masks_lrs_and_optimizer_resets(
    compiled_adam: TrainStep, adam_l2: optim.Optimizer
) -> None:
    from torch._dynamo.utils import counters

    before_graphs = counters["stats"]["unique_graphs"]
    before_breaks = sum(counters["graph_break"].values())
    assert compiled_adam.num_compiles == 1
    p = ltfunc.get_params(compiled_adam.model)
    s = adam_l2.init(p)
    batches = itertools.cycle(lenet_batches(4, seed=11))
    lrs = [1e-3, torch.tensor(3e-4), 1e-4, 0.0, torch.tensor(2e-3, dtype=torch.float64)]
    for round_ in range(4):  # e.g. IMP rounds: a new mask and a fresh optimizer state each
        mask = random_mask(p, 0.8**round_, seed=20 + round_)
        s = adam_l2.init(p)
        for lr in lrs:  # an lr schedule within the round
            p, s, _ = compiled_adam(p, s, mask, next(batches), lr)
        # the flat fast path shares the same compiled code
        fs, _ = compiled_adam.flat_step(compiled_adam.pack(p, s), mask, next(batches), 1e-3)
        p, s = compiled_adam.unpack(fs)
    assert compiled_adam.num_compiles == 1
    assert counters["stats"]["unique_graphs"] == before_graphs
    assert sum(counters["graph_break"].values()) == before_breaks  # fullgraph: nothing broke


def test_each_step_has_its_own_compile_cache(lenet: nn.Module, adam_l2: optim.Optimizer) -> None:
    """Two steps of the same function do not share (and exhaust) one dynamo cache."""
    a = make_train_step(lenet, adam_l2)
    b = make_train_step(lenet, adam_l2)
    assert a._fn is not b._fn
    code_a = a._fn._torchdynamo_orig_callable.__code__  # type: ignore[attr-defined]
    code_b = b._fn._torchdynamo_orig_callable.__code__  # type: ignore[attr-defined]
    assert code_a is not code_b and code_a.co_code == code_b.co_code
    assert a.num_compiles == 0 and b.num_compiles == 0  # compiling is lazy


# Dict interface and the flat fast path --------------------------------------------------------
def test_fed_back_outputs_and_fresh_copies_give_the_same_results() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    opt = optim.momentum(lr=0.05)
    p0 = ltfunc.get_params(model)
    mask = random_mask(p0, 0.5, seed=12)
    batches = tiny_batches(6, seed=12)
    step = make_train_step(model, opt, compile=False)
    fed, s_fed, _ = run(step, p0, opt.init(p0), mask, batches, [0.05] * 6)
    p, s = p0, opt.init(p0)
    for batch in batches:  # copies defeat the identity fast path every time
        p, s, _ = step(tree_clone(p), tree_clone(s), mask, batch, 0.05)
    assert ltfunc.tree_equal(fed, p) and ltfunc.tree_equal(s_fed, s)


def test_a_changed_tensor_in_a_returned_dict_is_used() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    opt = optim.sgd(lr=0.1)
    p = ltfunc.get_params(model)
    step = make_train_step(model, opt, compile=False)
    batch = tiny_batches(1)[0]
    p, s, _ = step(p, opt.init(p), None, batch, 0.1)
    edited = dict(p)
    edited["fc2.bias"] = torch.full_like(p["fc2.bias"], 3.0)
    out, _, _ = step(edited, s, None, batch, 0.0)  # lr 0: the params pass through unchanged
    assert torch.equal(out["fc2.bias"], edited["fc2.bias"])
    assert torch.equal(out["fc1.weight"], p["fc1.weight"])


def test_outputs_are_dict_pytrees_of_the_optimizer_state_type() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    opt = optim.adam()
    p = ltfunc.get_params(model)
    step = make_train_step(model, opt, compile=False)
    out, s, _ = step(p, opt.init(p), None, tiny_batches(1)[0], 1e-3)
    assert type(out) is dict and list(out) == list(p)
    assert all(out[k].shape == p[k].shape for k in p)
    assert isinstance(s, optim.AdamState) and list(s.mu) == list(p) and s.mu["fc1.weight"].shape == (16, 12)
    ltfunc.save_tree(ltfunc.snapshot(out), __import__("tempfile").mktemp(suffix=".safetensors"))


def test_flat_fast_path_equals_dict_interface() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    opt = optim.adamw(lr=0.01)
    p0 = ltfunc.get_params(model)
    mask = random_mask(p0, 0.6, seed=13)
    batches = tiny_batches(5, seed=13)
    step = make_train_step(model, opt, compile=False)
    p_dict, s_dict, losses = run(step, p0, opt.init(p0), mask, batches, [0.01] * 5)
    fs = step.pack(p0)
    assert isinstance(fs, FlatState) and fs.params.shape == (sum(v.numel() for v in p0.values()),)
    flat_losses = []
    for batch in batches:
        fs, metrics = step.flat_step(fs, mask, batch, 0.01)
        flat_losses.append(metrics["loss"])
    p_flat, s_flat = step.unpack(fs)
    assert torch.equal(losses, torch.stack(flat_losses))
    assert ltfunc.tree_equal(p_dict, p_flat) and ltfunc.tree_equal(s_dict, s_flat)


def test_pack_and_unpack_round_trip() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    opt = optim.adam()
    p = ltfunc.get_params(model)
    step = make_train_step(model, opt, compile=False)
    s = opt.init(p)._replace(count=torch.tensor(7))
    back_p, back_s = step.unpack(step.pack(p, s))
    assert ltfunc.tree_equal(back_p, p) and ltfunc.tree_equal(back_s, s)
    with pytest.raises(TypeError, match="unpack: state must be a FlatState"):
        step.unpack((p, s))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"flat_step: state\.params must be a 1-D float tensor of 293"):
        step.flat_step(FlatState(torch.zeros(5), s), None, tiny_batches(1)[0], 0.1)


def test_no_host_sync_inside_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    opt = optim.sgd(lr=0.1, momentum=0.9, dampening=0.1)
    p = ltfunc.get_params(model)
    mask = random_mask(p, 0.5, seed=14)
    step = make_train_step(model, opt, compile=False)
    batch = tiny_batches(1)[0]
    p, s, _ = step(p, opt.init(p), mask, batch, 0.1)  # caches warm (mask, lr)

    def forbidden(*args, **kwargs):
        raise AssertionError("host sync inside the step")

    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    p, s, metrics = step(p, s, mask, batch, 0.1)
    monkeypatch.undo()
    assert metrics["loss"].shape == ()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda_with_device_following_the_params() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    opt = optim.adam(lr=0.01)
    p_cpu = ltfunc.get_params(model)
    mask = random_mask(p_cpu, 0.5, seed=15)
    batches = tiny_batches(4)
    ref, _, _ = run(
        make_train_step(model, opt, compile=False), p_cpu, opt.init(p_cpu), mask, batches, [0.01] * 4
    )
    p = {k: v.cuda() for k, v in p_cpu.items()}
    step = make_train_step(model, opt)
    out, s, metrics = run(
        step, p, opt.init(p), mask.to("cuda"), [(x.cuda(), y.cuda()) for x, y in batches], [0.01] * 4
    )
    assert metrics.device.type == "cuda" and s.count.device.type == "cuda"
    assert tree_allclose({k: v.cpu() for k, v in out.items()}, ref, rtol=1e-4, atol=1e-5)
    assert step.num_compiles == 1


# Bad input -------------------------------------------------------------------------------------
@pytest.fixture
def tiny_setup():
    torch.manual_seed(0)
    model = TinyMLP()
    opt = optim.adam()
    p = ltfunc.get_params(model)
    step = make_train_step(model, opt, compile=False)
    return step, p, opt.init(p), masks.ones(p), tiny_batches(1)[0]


def _bad_cases():
    x = torch.randn(BATCH, 12)
    y = torch.randint(0, 5, (BATCH,))
    meta = torch.device("meta")
    return [
        # (what to replace, value or function of (p, s, mask, batch), exception, message)
        (
            "params",
            lambda p, s, m, b: list(p.values()),
            TypeError,
            "train_step: params must be a dict of float tensors",
        ),
        (
            "params",
            lambda p, s, m, b: {**p, "fc1.weight": p["fc1.weight"].long()},
            TypeError,
            r"train_step: params\['fc1.weight'\] must be a float tensor, got torch.int64",
        ),
        (
            "params",
            lambda p, s, m, b: {k: v for k, v in p.items() if k != "fc2.bias"},
            ValueError,
            r"params keys do not match the model's parameters: missing \['fc2.bias'\]",
        ),
        (
            "params",
            lambda p, s, m, b: {**p, "fc1.bias": torch.zeros(3)},
            ValueError,
            r"params\['fc1.bias'\] has shape \(3,\), the model expects \(16,\)",
        ),
        (
            "params",
            lambda p, s, m, b: {**p, "fc1.bias": p["fc1.bias"].double()},
            ValueError,
            "all params must share one dtype and device",
        ),
        (
            "mask",
            lambda p, s, m, b: dict(m.items()),
            TypeError,
            "train_step: mask must be an ltfunc Mask or None, got dict",
        ),
        (
            "mask",
            lambda p, s, m, b: masks.Mask({**m, "other.weight": torch.ones(2, 2, dtype=torch.bool)}),
            ValueError,
            r"train_step: mask has keys \['other.weight'\] that are not in params",
        ),
        (
            "mask",
            lambda p, s, m, b: masks.Mask({**m, "fc1.weight": torch.ones(3, 3, dtype=torch.bool)}),
            ValueError,
            r"train_step: mask\['fc1.weight'\] has shape \(3, 3\)",
        ),
        (
            "mask",
            lambda p, s, m, b: m.to(meta),
            ValueError,
            r"train_step: mask\['fc1.weight'\] is on meta but params\['fc1.weight'\] is on cpu",
        ),
        ("batch", lambda p, s, m, b: x, TypeError, r"train_step: batch must be an \(x, y\) pair of tensors"),
        (
            "batch",
            lambda p, s, m, b: (x.to(meta), y),
            ValueError,
            "train_step: batch x is on meta but params are on cpu",
        ),
        (
            "batch",
            lambda p, s, m, b: (x, y.to(meta)),
            ValueError,
            "train_step: batch y is on meta but params are on cpu",
        ),
        (
            "batch",
            lambda p, s, m, b: (x, y.float()),
            ValueError,
            "train_step: batch y must be a 1-D int64 tensor",
        ),
        ("batch", lambda p, s, m, b: (x, y[:, None]), ValueError, r"with shape \(32, 1\)"),
        (
            "batch",
            lambda p, s, m, b: (x[:5], y),
            ValueError,
            r"batch x has shape \(5, 12\) but y has 32 labels",
        ),
        (
            "batch",
            lambda p, s, m, b: (x.double(), y),
            ValueError,
            "batch x has dtype torch.float64 but params are torch.float32",
        ),
        (
            "batch",
            lambda p, s, m, b: (x.numpy(), y),
            TypeError,
            "train_step: batch x must be a tensor, got ndarray",
        ),
        ("lr", lambda p, s, m, b: -1e-3, ValueError, "train_step: lr must be finite and >= 0, got -0.001"),
        (
            "lr",
            lambda p, s, m, b: float("nan"),
            ValueError,
            "train_step: lr must be finite and >= 0, got nan",
        ),
        (
            "lr",
            lambda p, s, m, b: float("inf"),
            ValueError,
            "train_step: lr must be finite and >= 0, got inf",
        ),
        ("lr", lambda p, s, m, b: torch.tensor(-1.0), ValueError, "train_step: lr must be finite and >= 0"),
        (
            "lr",
            lambda p, s, m, b: torch.tensor([1e-3]),
            ValueError,
            r"train_step: lr must be a float or a 0-d float tensor",
        ),
        (
            "lr",
            lambda p, s, m, b: "1e-3",
            TypeError,
            "train_step: lr must be a float or a 0-d tensor, got str",
        ),
        (
            "opt_state",
            lambda p, s, m, b: optim.sgd().init(p),
            TypeError,
            r"train_step: opt_state does not have the structure of this step's optimizer state \(adam\)",
        ),
        (
            "opt_state",
            lambda p, s, m, b: s._replace(count=s.count.to(meta)),
            ValueError,
            "train_step: opt_state holds a tensor on meta, params are on cpu",
        ),
    ]


@pytest.mark.parametrize(("field", "make", "exc", "match"), _bad_cases())
def test_bad_input_is_rejected_before_any_work(tiny_setup, field, make, exc, match) -> None:
    step, p, s, mask, batch = tiny_setup
    args = {"params": p, "opt_state": s, "mask": mask, "batch": batch, "lr": 1e-3}
    args[field] = make(p, s, mask, batch)
    before = tree_clone((p, s))
    with pytest.raises(exc, match=match):
        step(args["params"], args["opt_state"], args["mask"], args["batch"], args["lr"])
    assert ltfunc.tree_equal((p, s), before)


def test_bad_input_to_the_compiled_step_does_not_compile(compiled_adam: TrainStep, adam_l2) -> None:
    p = ltfunc.get_params(compiled_adam.model)
    x, y = lenet_batches(1)[0]
    n = compiled_adam.num_compiles
    with pytest.raises(ValueError, match="batch x has per-example shape"):
        compiled_adam(p, adam_l2.init(p), None, (x.reshape(BATCH, 784), y), 1e-3)
    with pytest.raises(ValueError, match="lr must be finite"):
        compiled_adam(p, adam_l2.init(p), None, (x, y), -1.0)
    assert compiled_adam.num_compiles == n


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"model": "lenet"}, TypeError, "make_train_step: model must be a torch.nn.Module, got str"),
        ({"optimizer": "adam"}, TypeError, "make_train_step: optimizer must be an ltfunc.optim.Optimizer"),
        ({"optimizer": None}, TypeError, "translate torch.optim ones with ltfunc.optim.from_torch"),
        ({"loss_fn": 3}, TypeError, "make_train_step: loss_fn must be callable"),
        ({"compile": "yes"}, TypeError, "make_train_step: compile must be a bool"),
        ({"buffers": [1]}, TypeError, "make_train_step: buffers must be a dict of tensors"),
        ({"model": nn.ReLU()}, ValueError, "make_train_step: ReLU has no parameters to train"),
    ],
)
def test_make_train_step_rejects_bad_arguments(kwargs, exc, match) -> None:
    args = {
        "model": TinyMLP(),
        "optimizer": optim.sgd(),
        "loss_fn": F.cross_entropy,
        "compile": False,
        "buffers": None,
    }
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        make_train_step(args.pop("model"), args.pop("optimizer"), args.pop("loss_fn"), **args)


# Evaluation --------------------------------------------------------------------------------------
def _split(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 12, generator=g), torch.randint(0, 5, (n,), generator=g)


def test_evaluate_equals_one_big_batch_with_a_partial_last_batch() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    p = ltfunc.get_params(model)
    x, y = _split(103)
    logits = ltfunc.call(model, p, x)
    loss, acc = evaluate(model, p, None, (x, y), batch_size=25)
    assert isinstance(loss, float) and isinstance(acc, float)
    assert loss == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
    assert acc == int((logits.argmax(1) == y).sum()) / 103  # exact: counts, not a float mean


def test_evaluate_applies_the_mask_and_restores_the_mode() -> None:
    torch.manual_seed(0)
    model = TinyMLP().train()
    p = ltfunc.get_params(model)
    mask = random_mask(p, 0.3, seed=16)
    before = tree_clone(p)
    split = _split(50)
    assert evaluate(model, p, mask, split, batch_size=7) == evaluate(
        model, masks.apply(mask, p), None, split, batch_size=7
    )
    assert evaluate(model, p, mask, split) != evaluate(model, p, None, split)
    assert model.training and ltfunc.tree_equal(p, before)


def test_evaluate_syncs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    p = ltfunc.get_params(model)
    calls = []
    real_tolist = torch.Tensor.tolist

    def counting_tolist(self):
        calls.append(1)
        return real_tolist(self)

    def forbidden(*args, **kwargs):
        raise AssertionError("per-batch host sync")

    monkeypatch.setattr(torch.Tensor, "tolist", counting_tolist)
    monkeypatch.setattr(torch.Tensor, "item", forbidden)
    evaluate(model, p, None, _split(100), batch_size=10)
    monkeypatch.undo()
    assert len(calls) == 1


def test_compiled_evaluation_matches_eager() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    p = ltfunc.get_params(model)
    split = _split(120)
    eager = evaluate(model, p, None, split, batch_size=40)
    compiled = evaluate(model, p, None, split, batch_size=40, compile=True)
    assert compiled == pytest.approx(eager, rel=1e-5)
    assert make_eval_step(model, compile=True) is make_eval_step(model, compile=True)  # cached per model
    # the cache does not keep the model alive
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


@pytest.mark.parametrize(
    ("change", "exc", "match"),
    [
        (
            {"split": (torch.randn(5, 12), torch.zeros(4, dtype=torch.long))},
            ValueError,
            r"split x has shape \(5, 12\)",
        ),
        (
            {"split": (torch.randn(0, 12), torch.zeros(0, dtype=torch.long))},
            ValueError,
            "evaluate: split is empty",
        ),
        (
            {"split": torch.randn(5, 12)},
            TypeError,
            r"evaluate: split must be an ltfunc.data.Split or an \(x, y\) pair",
        ),
        (
            {"split": (torch.randn(5, 12, device="meta"), torch.zeros(5, dtype=torch.long, device="meta"))},
            ValueError,
            "split is on meta but params are on cpu",
        ),
        ({"batch_size": 0}, ValueError, "evaluate: batch_size must be a positive int, got 0"),
        (
            {"mask": {"fc1.weight": torch.ones(16, 12, dtype=torch.bool)}},
            TypeError,
            "evaluate: mask must be an ltfunc Mask or None",
        ),
        ({"params": [torch.zeros(2)]}, TypeError, "evaluate: params must be a non-empty dict of tensors"),
        ({"model": "m"}, TypeError, "evaluate: model must be a torch.nn.Module"),
    ],
)
def test_evaluate_rejects_bad_input(change, exc, match) -> None:
    model = TinyMLP()
    args = {
        "model": model,
        "params": ltfunc.get_params(model),
        "mask": None,
        "split": _split(10),
        "batch_size": 4,
    }
    args.update(change)
    with pytest.raises(exc, match=match):
        evaluate(args["model"], args["params"], args["mask"], args["split"], batch_size=args["batch_size"])
