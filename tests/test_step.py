"""The masked training step: semantics, pruned weights stay zero, compile once, state, bad input, eval."""

from __future__ import annotations

import copy
import gc
import itertools
import weakref

import pytest
import torch
import torch.nn.functional as F
from helpers import ConvBN, train_reference, tree_allclose, tree_clone
from torch import nn

import ltfunc
from ltfunc import masks, optim
from ltfunc._flat import FlatState
from ltfunc.evaluation import evaluate, make_eval_step
from ltfunc.step import TrainState, TrainStep, make_train_step

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
    step(
        step.init(ltfunc.get_params(lenet)), None, lenet_batches(1)[0], 1e-3
    )  # compile now, not inside a test
    return step


@pytest.fixture(scope="module")
def nesterov_wd() -> optim.Optimizer:
    return optim.sgd(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2)


@pytest.fixture(scope="module")
def compiled_sgd(nesterov_wd: optim.Optimizer) -> TrainStep:
    torch.manual_seed(0)
    model = TinyMLP()
    step = make_train_step(model, nesterov_wd)
    step(step.init(ltfunc.get_params(model)), None, tiny_batches(1)[0], 0.05)
    return step


def run(step, state, mask, batches, lrs):
    losses = []
    for batch, lr in zip(batches, lrs, strict=True):
        state, metrics = step(state, mask, batch, lr)
        losses.append(metrics["loss"])
    return state, torch.stack(losses)


# Semantics ---------------------------------------------------------------------------------
def test_matches_torch_optim_with_masked_grads_and_weights() -> None:
    """The step equals the classic loop: mask grads, torch.optim step, re-mask weights."""
    torch.manual_seed(0)
    model = TinyMLP()
    p0 = ltfunc.get_params(model)
    mask = random_mask(p0, 0.5, seed=1)
    batches = tiny_batches(30)
    # reference: a torch module trained with torch.optim.Adam(weight_decay) and masking
    ref, opt, _ = train_reference(
        model, lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.01), mask, batches
    )
    translated = optim.from_torch(opt)
    step = make_train_step(model, translated, compile=False)
    got, _ = run(step, TrainState(p0, translated.init(p0)), mask, batches, [0.01] * len(batches))
    assert tree_allclose(got.params, ltfunc.get_params(ref), rtol=1e-5, atol=1e-6)
    assert got.iteration == len(batches)


def test_metrics_are_the_loss_and_accuracy_of_the_masked_params_before_the_update() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    p = ltfunc.get_params(model)
    mask = random_mask(p, 0.3, seed=2)
    x, y = tiny_batches(1)[0]
    step = make_train_step(model, optim.sgd(), compile=False)
    _, metrics = step(step.init(p), mask, (x, y), 0.1)
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
    out_dense, m_dense = step(step.init(p), mask, batch, 1e-3)
    out_masked, m_masked = step(step.init(masks.apply(mask, p)), mask, batch, 1e-3)
    assert torch.equal(m_dense["loss"], m_masked["loss"])
    assert ltfunc.tree_equal(out_dense.params, out_masked.params)
    assert torch.count_nonzero(pruned_values(out_dense.params, mask)) == 0


def test_mask_none_is_dense() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    p = ltfunc.get_params(model)
    step = make_train_step(model, optim.sgd(), compile=False)
    batches = tiny_batches(3)
    dense, _ = run(step, step.init(p), None, batches, [0.1] * 3)
    ones, _ = run(step, step.init(p), masks.ones(p), batches, [0.1] * 3)
    assert ltfunc.tree_equal(dense, ones)
    assert all(torch.count_nonzero(v) == v.numel() for v in dense.params.values())


@pytest.mark.parametrize(
    "opt",
    [
        optim.sgd(lr=0.05, momentum=0.9, weight_decay=0.01),
        optim.sgd(lr=0.05, momentum=0.9, dampening=0.5, weight_decay=0.01),
        optim.sgd(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
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
    state, _ = run(step, step.init(p), None, batches[:20], [opt.lr] * 20)
    s = state.opt_state
    assert all(torch.count_nonzero(v) > 0 for v in (s.momentum if hasattr(s, "momentum") else s.mu).values())
    mask = random_mask(state.params, 0.4, seed=4)
    state, _ = run(step, state, mask, batches[20:], [opt.lr] * 20)  # same state: no reset
    p = state.params
    assert torch.count_nonzero(pruned_values(p, mask)) == 0
    kept = torch.cat([p[k][m] for k, m in mask.items()])
    assert torch.count_nonzero(kept) == kept.numel()  # the survivors still train


def test_pruned_weights_stay_exactly_zero_compiled(compiled_adam: TrainStep, compiled_sgd: TrainStep) -> None:
    for step, make_batches in ((compiled_adam, lenet_batches), (compiled_sgd, tiny_batches)):
        opt = step.optimizer
        batches = make_batches(60, seed=5)
        state, _ = run(step, step.init(ltfunc.get_params(step.model)), None, batches[:20], [opt.lr] * 20)
        mask = random_mask(state.params, 0.2, seed=6)
        state, _ = run(step, state, mask, batches[20:], [opt.lr] * 40)
        assert torch.count_nonzero(pruned_values(state.params, mask)) == 0, opt.name
        assert int(state.opt_state.count) == 60 and state.iteration == 60


def test_step_does_not_modify_its_inputs(compiled_adam: TrainStep, adam_l2: optim.Optimizer) -> None:
    p = ltfunc.get_params(compiled_adam.model)
    mask = random_mask(p, 0.5, seed=7)
    batch = lenet_batches(1, seed=7)[0]
    state, _ = compiled_adam(compiled_adam.init(p), None, batch, 1e-3)  # non-trivial state
    before = tree_clone((state, dict(mask.items()), batch))
    new, _ = compiled_adam(state, mask, batch, 1e-3)  # fed back: views of the step's own buffers
    assert ltfunc.tree_equal((state, dict(mask.items()), batch), before)
    assert not tree_allclose(new.params, state.params)
    assert (state.iteration, new.iteration) == (1, 2)


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
        state = TrainState(p0, adam_l2.init(p0))
        losses = []
        for i, (mask, lr, reset) in enumerate(schedule):
            if reset:
                state = state._replace(opt_state=adam_l2.init(state.params))
            for batch in batches[2 * i : 2 * i + 2]:
                state, metrics = step(state, mask, batch, lr)
                losses.append(metrics["loss"])
        results.append((state.params, state.opt_state, torch.stack(losses)))
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
    state = compiled_adam.init(ltfunc.get_params(compiled_adam.model))
    batches = itertools.cycle(lenet_batches(4, seed=11))
    lrs = [1e-3, torch.tensor(3e-4), 1e-4, 0.0, torch.tensor(2e-3, dtype=torch.float64)]
    for round_ in range(4):  # e.g. IMP rounds: a new mask and a fresh optimizer state each
        mask = random_mask(state.params, 0.8**round_, seed=20 + round_)
        state = compiled_adam.init(state.params)
        for lr in lrs:  # an lr schedule within the round
            state, _ = compiled_adam(state, mask, next(batches), lr)
        # the internal flat path (a fresh copy, flattened) shares the same compiled code
        fs, _ = compiled_adam._flat_step(compiled_adam._pack(tree_clone(state)), mask, next(batches), 1e-3)
        state = compiled_adam._unpack(fs, state.iteration + 1)
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


# The state, fed back and fresh; the internal flat path ----------------------------------------
def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def test_fed_back_states_and_fresh_copies_give_the_same_results() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    opt = optim.sgd(lr=0.05, momentum=0.9)
    p0 = ltfunc.get_params(model)
    mask = random_mask(p0, 0.5, seed=12)
    batches = tiny_batches(6, seed=12)
    step = make_train_step(model, opt, compile=False)
    fed, _ = run(step, step.init(p0), mask, batches, [0.05] * 6)
    state = step.init(p0)
    for batch in batches:  # copies defeat the identity fast path every time
        state, _ = step(tree_clone(state), mask, batch, 0.05)
    assert ltfunc.tree_equal(fed, state)  # params, optimizer state, iteration and buffers
    # a returned state is packed for free (its params are views of the flat buffer), a copy is flattened
    assert _storage(step._pack(state).params) == _storage(state.params["fc1.weight"])
    assert _storage(step._pack(tree_clone(state)).params) != _storage(state.params["fc1.weight"])


def test_a_changed_tensor_in_a_returned_state_is_used() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    step = make_train_step(model, optim.sgd(lr=0.1), compile=False)
    batch = tiny_batches(1)[0]
    state, _ = step(step.init(ltfunc.get_params(model)), None, batch, 0.1)
    edited = dict(state.params)
    edited["fc2.bias"] = torch.full_like(state.params["fc2.bias"], 3.0)
    out, _ = step(state._replace(params=edited), None, batch, 0.0)  # lr 0: the params pass through
    assert torch.equal(out.params["fc2.bias"], edited["fc2.bias"])
    assert torch.equal(out.params["fc1.weight"], state.params["fc1.weight"])


def test_outputs_are_a_train_state_of_dict_pytrees_of_the_optimizer_state_type() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    opt = optim.adam()
    p = ltfunc.get_params(model)
    step = make_train_step(model, opt, compile=False)
    out, _ = step(step.init(p, iteration=4), None, tiny_batches(1)[0], 1e-3)
    assert isinstance(out, TrainState) and out.iteration == 5 and out.buffers == {}
    assert type(out.params) is dict and list(out.params) == list(p)
    assert all(out.params[k].shape == p[k].shape for k in p)
    s = out.opt_state
    assert isinstance(s, optim.AdamState) and list(s.mu) == list(p) and s.mu["fc1.weight"].shape == (16, 12)
    ltfunc.save_tree(ltfunc.snapshot(out.params), __import__("tempfile").mktemp(suffix=".safetensors"))


def test_init_makes_a_fresh_state_and_checks_its_arguments() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    opt = optim.adam()
    p = ltfunc.get_params(model)
    step = make_train_step(model, opt, compile=False)
    state = step.init(p)
    assert isinstance(state, TrainState) and state.iteration == 0 and state.buffers == {}
    assert all(state.params[k] is p[k] for k in p)  # not copied
    assert ltfunc.tree_equal(state.opt_state, opt.init(p))
    assert step.init(p, iteration=7).iteration == 7
    with pytest.raises(
        TypeError,
        match=r"init: params must be a dict of float tensors keyed like the model's parameters, got list",
    ):
        step.init(list(p.values()))
    with pytest.raises(ValueError, match=r"init: params keys do not match the model's parameters"):
        step.init({k: v for k, v in p.items() if k != "fc2.bias"})
    with pytest.raises(ValueError, match="init: iteration must be an int >= 0, got -1"):
        step.init(p, iteration=-1)
    with pytest.raises(TypeError, match="init: buffers must be a dict of tensors"):
        step.init(p, buffers=[torch.zeros(1)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"init: buffers keys do not match the model's buffers: .*\['x'\]"):
        step.init(p, buffers={"x": torch.zeros(1)})


def test_internal_flat_path_equals_the_public_call() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    opt = optim.adamw(lr=0.01)
    p0 = ltfunc.get_params(model)
    mask = random_mask(p0, 0.6, seed=13)
    batches = tiny_batches(5, seed=13)
    step = make_train_step(model, opt, compile=False)
    public, losses = run(step, step.init(p0), mask, batches, [0.01] * 5)
    fs = step._pack(step.init(p0))
    assert isinstance(fs, FlatState) and fs.params.shape == (sum(v.numel() for v in p0.values()),)
    assert fs.buffers == {}
    flat_losses = []
    for batch in batches:
        fs, metrics = step._flat_step(fs, mask, batch, 0.01)
        flat_losses.append(metrics["loss"])
    assert torch.equal(losses, torch.stack(flat_losses))
    assert ltfunc.tree_equal(public, step._unpack(fs, 5))


def test_pack_and_unpack_round_trip() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    opt = optim.adam()
    p = ltfunc.get_params(model)
    step = make_train_step(model, opt, compile=False)
    s = opt.init(p)._replace(count=torch.tensor(7))
    back = step._unpack(step._pack(TrainState(p, s, 3)), 3)
    assert ltfunc.tree_equal(back, TrainState(p, s, 3))
    with pytest.raises(TypeError, match="train_step: state must be a TrainState"):
        step._pack((p, s))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="train_step: state must be a FlatState"):
        step._flat_step((p, s), None, tiny_batches(1)[0], 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"train_step: state\.params must be a 1-D float tensor of 293"):
        step._flat_step(FlatState(torch.zeros(5), s, {}), None, tiny_batches(1)[0], 0.1)
    with pytest.raises(ValueError, match=r"fit: state\.params keys do not match"):
        step._pack(TrainState({k: v for k, v in p.items() if k != "fc2.bias"}, s), func="fit")
    with pytest.raises(TypeError, match=r"train_step: state\.opt_state does not have the structure"):
        step._pack(TrainState(p, optim.sgd(momentum=0.9).init(p)))


def test_no_host_sync_inside_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    opt = optim.sgd(lr=0.1, momentum=0.9, dampening=0.1)
    p = ltfunc.get_params(model)
    mask = random_mask(p, 0.5, seed=14)
    step = make_train_step(model, opt, compile=False)
    batch = tiny_batches(1)[0]
    state, _ = step(step.init(p), mask, batch, 0.1)  # caches warm (mask, lr)

    def forbidden(*args, **kwargs):
        raise AssertionError("host sync inside the step")

    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    state, metrics = step(state, mask, batch, 0.1)
    monkeypatch.undo()
    assert metrics["loss"].shape == () and state.iteration == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda_with_device_following_the_params() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    opt = optim.adam(lr=0.01)
    p_cpu = ltfunc.get_params(model)
    mask = random_mask(p_cpu, 0.5, seed=15)
    batches = tiny_batches(4)
    eager = make_train_step(model, opt, compile=False)
    ref, _ = run(eager, eager.init(p_cpu), mask, batches, [0.01] * 4)
    p = {k: v.cuda() for k, v in p_cpu.items()}
    step = make_train_step(model, opt)
    out, metrics = run(
        step, step.init(p), mask.to("cuda"), [(x.cuda(), y.cuda()) for x, y in batches], [0.01] * 4
    )
    assert metrics.device.type == "cuda" and out.opt_state.count.device.type == "cuda"
    assert tree_allclose({k: v.cpu() for k, v in out.params.items()}, ref.params, rtol=1e-4, atol=1e-5)
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
            "state",
            lambda p, s, m, b: (p, s),
            TypeError,
            "train_step: state must be a TrainState .from step.init., got tuple",
        ),
        (
            "params",
            lambda p, s, m, b: list(p.values()),
            TypeError,
            "train_step: state.params must be a dict of float tensors",
        ),
        (
            "params",
            lambda p, s, m, b: {**p, "fc1.weight": p["fc1.weight"].long()},
            TypeError,
            r"train_step: state.params\['fc1.weight'\] must be a float tensor, got torch.int64",
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
            r"state.params\['fc1.bias'\] has shape \(3,\), the model expects \(16,\)",
        ),
        (
            "params",
            lambda p, s, m, b: {**p, "fc1.bias": p["fc1.bias"].double()},
            ValueError,
            "all params must share one dtype and device",
        ),
        (
            "iteration",
            lambda p, s, m, b: -1,
            ValueError,
            "train_step: state.iteration must be an int >= 0, got -1",
        ),
        ("iteration", lambda p, s, m, b: 1.0, TypeError, "train_step: state.iteration must be an int"),
        (
            "buffers",
            lambda p, s, m, b: None,
            TypeError,
            r"train_step: state.buffers must be a dict of tensors \(ltfunc.get_buffers\(model\); \{\} for",
        ),
        (
            "buffers",
            lambda p, s, m, b: {"running_mean": torch.zeros(3)},
            ValueError,
            r"train_step: state.buffers keys do not match the model's buffers: missing \[\], "
            r"unexpected \['running_mean'\]",
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
        (
            "lr",
            lambda p, s, m, b: -1e-3,
            ValueError,
            r"train_step: lr must be a finite number in \[0.0, inf\), got -0.001",
        ),
        (
            "lr",
            lambda p, s, m, b: float("nan"),
            ValueError,
            r"train_step: lr must be a finite number in \[0.0, inf\), got nan",
        ),
        (
            "lr",
            lambda p, s, m, b: float("inf"),
            ValueError,
            r"train_step: lr must be a finite number in \[0.0, inf\), got inf",
        ),
        (
            "lr",
            lambda p, s, m, b: torch.tensor(-1.0),
            ValueError,
            r"train_step: lr must be a finite number in \[0.0, inf\)",
        ),
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
            "train_step: lr must be a float or a 0-d float tensor, got str '1e-3'",
        ),
        (
            "opt_state",
            lambda p, s, m, b: optim.sgd().init(p),
            TypeError,
            r"train_step: state.opt_state does not have the structure of this step's optimizer state "
            r"\(adam\)",
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
    args = {
        "params": p,
        "opt_state": s,
        "iteration": 0,
        "buffers": {},
        "mask": mask,
        "batch": batch,
        "lr": 1e-3,
    }
    args[field] = make(p, s, mask, batch)
    state = args["state"] if field == "state" else TrainState(*(args[k] for k in TrainState._fields))
    before = tree_clone((p, s))
    with pytest.raises(exc, match=match):
        step(state, args["mask"], args["batch"], args["lr"])
    assert ltfunc.tree_equal((p, s), before)


def test_bad_input_to_the_compiled_step_does_not_compile(compiled_adam: TrainStep, adam_l2) -> None:
    state = compiled_adam.init(ltfunc.get_params(compiled_adam.model))
    x, y = lenet_batches(1)[0]
    n = compiled_adam.num_compiles
    with pytest.raises(ValueError, match="batch x has per-example shape"):
        compiled_adam(state, None, (x.reshape(BATCH, 784), y), 1e-3)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        compiled_adam(state, None, (x, y), -1.0)
    assert compiled_adam.num_compiles == n


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"model": "lenet"}, TypeError, "make_train_step: model must be a torch.nn.Module, got str"),
        ({"optimizer": "adam"}, TypeError, "make_train_step: optimizer must be an ltfunc.optim.Optimizer"),
        ({"optimizer": None}, TypeError, "translate torch.optim ones with ltfunc.optim.from_torch"),
        ({"loss_fn": 3}, TypeError, "make_train_step: loss_fn must be callable"),
        ({"compile": "yes"}, TypeError, "make_train_step: compile must be a bool"),
        ({"buffers": {}}, TypeError, "unexpected keyword argument 'buffers'"),  # buffers live in the state
        ({"model": nn.ReLU()}, ValueError, "make_train_step: ReLU has no parameters to train"),
    ],
)
def test_make_train_step_rejects_bad_arguments(kwargs, exc, match) -> None:
    args = {
        "model": TinyMLP(),
        "optimizer": optim.sgd(),
        "loss_fn": F.cross_entropy,
        "compile": False,
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
        ({"batch_size": 0}, ValueError, "evaluate: batch_size must be an int >= 1, got 0"),
        ({"batch_size": 2.0}, TypeError, "evaluate: batch_size must be an int, got float 2.0"),
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


# BatchNorm: the state carries the buffers, the step returns the updated ones ----------------
def bn_batches(n: int, seed: int = 0, size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, 1, 28, 28, generator=g) + 0.5, torch.randint(0, 10, (size,), generator=g))
        for _ in range(n)
    ]


def sgd_momentum(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-3)


@pytest.fixture(scope="module")
def bn_model() -> nn.Module:
    torch.manual_seed(3)
    return ConvBN()


@pytest.fixture(scope="module")
def compiled_bn(bn_model: nn.Module) -> TrainStep:
    opt = optim.sgd(lr=0.05, momentum=0.9, weight_decay=1e-3)
    step = make_train_step(bn_model, opt)
    step(step.init(ltfunc.get_params(bn_model)), None, bn_batches(1)[0], 0.05)  # compile now
    return step


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_batchnorm_step_matches_a_torch_module_in_training_mode(
    bn_model: nn.Module, compiled_bn: TrainStep, compiled: bool
) -> None:
    """Params, running means/variances and num_batches_tracked follow nn.Module + torch.optim."""
    p0, b0 = ltfunc.get_params(bn_model), ltfunc.get_buffers(bn_model)
    mask = random_mask(p0, 0.5, seed=30)
    assert list(mask) == ["conv.weight", "fc1.weight", "fc2.weight"]  # BatchNorm is never masked
    batches = bn_batches(5, seed=31)
    ref, torch_opt, ref_losses = train_reference(bn_model, sgd_momentum, mask, batches)
    opt = optim.from_torch(torch_opt)
    step = compiled_bn if compiled else make_train_step(bn_model, opt, compile=False)
    state = TrainState(p0, opt.init(p0), 0, b0)
    before = tree_clone((p0, b0))
    losses = []
    for batch in batches:
        state, metrics = step(state, mask, batch, 0.05)
        losses.append(float(metrics["loss"]))
    p, b = state.params, state.buffers
    assert ltfunc.tree_equal((p0, b0), before)  # the given buffers were not updated in place
    ref_buffers = ltfunc.get_buffers(ref)
    assert int(ref_buffers["bn.num_batches_tracked"]) == 5
    assert ltfunc.tree_equal(
        {k: v for k, v in b.items() if "num_batches" in k},
        {k: v for k, v in ref_buffers.items() if "num_batches" in k},
    )
    # running statistics moved away from their init (0 mean, 1 variance), and like the reference's
    assert not torch.allclose(b["bn1.running_var"], torch.ones(32), atol=1e-2)
    assert tree_allclose(b, ref_buffers, rtol=1e-4, atol=1e-6)
    assert tree_allclose(p, ltfunc.get_params(ref), rtol=1e-4, atol=1e-6)
    assert losses == pytest.approx(ref_losses, rel=1e-5)
    assert torch.count_nonzero(pruned_values(p, mask)) == 0
    if compiled:
        assert step.num_compiles == 1


def test_batchnorm_flat_path_carries_the_buffers_like_the_public_call(bn_model: nn.Module) -> None:
    opt = optim.adam(lr=1e-2)
    step = make_train_step(bn_model, opt, compile=False)
    p0, b0 = ltfunc.get_params(bn_model), ltfunc.get_buffers(bn_model)
    batches = bn_batches(3, seed=32)
    state = step.init(p0, buffers=b0)
    for batch in batches:
        state, _ = step(state, None, batch, 1e-2)
    fs = step._pack(step.init(p0, buffers=b0))
    assert fs.buffers["bn.running_mean"] is b0["bn.running_mean"]  # not copied
    for batch in batches:
        fs, _ = step._flat_step(fs, None, batch, 1e-2)
    assert ltfunc.tree_equal(step._unpack(fs, 3), state)
    assert int(fs.buffers["bn1.num_batches_tracked"]) == 3


def test_batchnorm_buffers_are_carried_and_updated_in_the_state(
    bn_model: nn.Module, compiled_bn: TrainStep
) -> None:
    """Every step reads state.buffers and returns the updated ones; nothing else is touched."""
    own = ltfunc.get_buffers(bn_model)
    start = compiled_bn.init(ltfunc.get_params(bn_model))
    assert ltfunc.tree_equal(start.buffers, own)  # init: copies of the model's buffers
    assert all(start.buffers[k] is not v for k, v in ltfunc.get_buffers(bn_model, copy=False).items())
    before = tree_clone(start)
    one, _ = compiled_bn(start, None, bn_batches(1, seed=37)[0], 0.05)
    two, _ = compiled_bn(one, None, bn_batches(1, seed=38)[0], 0.05)  # fed back
    assert [int(s.buffers["bn.num_batches_tracked"]) for s in (start, one, two)] == [0, 1, 2]
    for k in ("bn.running_mean", "bn1.running_var"):
        assert not torch.equal(one.buffers[k], start.buffers[k]) and not torch.equal(
            two.buffers[k], one.buffers[k]
        )
    assert ltfunc.tree_equal(start, before) and ltfunc.tree_equal(ltfunc.get_buffers(bn_model), own)
    # an edited buffer in a returned state is what the next step reads
    edited = {**one.buffers, "bn.num_batches_tracked": torch.tensor(41)}
    again, _ = compiled_bn(one._replace(buffers=edited), None, bn_batches(1, seed=38)[0], 0.05)
    assert int(again.buffers["bn.num_batches_tracked"]) == 42
    assert compiled_bn.num_compiles == 1


def test_a_state_without_the_models_buffers_is_refused_before_any_work(
    bn_model: nn.Module, compiled_bn: TrainStep
) -> None:
    p = ltfunc.get_params(bn_model)
    state = TrainState(p, compiled_bn.optimizer.init(p))  # built by hand: buffers={}
    n = compiled_bn.num_compiles
    match = (
        r"train_step: state.buffers keys do not match the model's buffers: missing \['bn.running_mean', "
        r".*step.init\(params\) fills them in"
    )
    with pytest.raises(ValueError, match=match):
        compiled_bn(state, None, bn_batches(1, size=8)[0], 0.05)  # a new batch size: would compile
    assert compiled_bn.num_compiles == n


def test_batchnorm_in_eval_mode_trains_with_the_fixed_statistics(bn_model: nn.Module) -> None:
    frozen = copy.deepcopy(bn_model).eval()
    with torch.no_grad():
        frozen.bn.running_mean.fill_(0.2)
        frozen.bn1.running_var.fill_(3.0)
    p, b = ltfunc.get_params(frozen), ltfunc.get_buffers(frozen)
    opt = optim.sgd(lr=0.1)
    step = make_train_step(frozen, opt, compile=False)
    x, y = bn_batches(1, seed=33)[0]
    state = step.init(p)  # the model's statistics, copied
    assert ltfunc.tree_equal(state.buffers, b)
    out, metrics = step(state, None, (x, y), 0.1)
    with torch.no_grad():
        assert torch.allclose(metrics["loss"], F.cross_entropy(frozen(x), y))
    assert ltfunc.tree_equal(out.buffers, b) and out.buffers["bn.running_mean"] is not b["bn.running_mean"]
    assert not ltfunc.tree_equal(out.params, p)


def _bad_buffers():
    meta = torch.device("meta")
    return [
        (lambda b: list(b.values()), TypeError, "buffers must be a dict of tensors .* got list"),
        (
            lambda b: {k: v for k, v in b.items() if k != "bn.running_var"},
            ValueError,
            r"buffers keys do not match the model's buffers: missing \['bn.running_var'\], unexpected \[\]",
        ),
        (
            lambda b: {**b, "extra": torch.zeros(1)},
            ValueError,
            r"buffers keys do not match the model's buffers: missing \[\], unexpected \['extra'\]",
        ),
        (
            lambda b: {**b, "bn.running_mean": torch.zeros(5)},
            ValueError,
            r"buffers\['bn.running_mean'\] is torch.float32 with shape \(5,\), the model has "
            r"torch.float32 with shape \(4,\)",
        ),
        (
            lambda b: {**b, "bn.num_batches_tracked": torch.tensor(0.0)},
            ValueError,
            r"buffers\['bn.num_batches_tracked'\] is torch.float32 .* has torch.int64",
        ),
        (
            lambda b: {**b, "bn.running_var": [1.0] * 4},
            TypeError,
            r"buffers\['bn.running_var'\] must be a tensor",
        ),
        (
            lambda b: {**b, "bn.running_mean": b["bn.running_mean"].to(meta)},
            ValueError,
            r"buffers\['bn.running_mean'\] is on meta but params are on cpu",
        ),
    ]


@pytest.mark.parametrize(("make", "exc", "match"), _bad_buffers())
def test_bad_buffers_are_rejected_by_the_step_and_init(bn_model: nn.Module, make, exc, match) -> None:
    opt = optim.sgd()
    step = make_train_step(bn_model, opt, compile=False)
    p, b = ltfunc.get_params(bn_model), ltfunc.get_buffers(bn_model)
    before = tree_clone((p, b))
    with pytest.raises(exc, match="train_step: state." + match):
        step(TrainState(p, opt.init(p), 0, make(b)), None, bn_batches(1)[0], 0.1)
    with pytest.raises(exc, match="init: " + match):
        step.init(p, buffers=make(b))
    assert ltfunc.tree_equal((p, b), before)


def test_evaluate_uses_the_given_running_statistics_in_eval_mode(bn_model: nn.Module) -> None:
    opt = optim.sgd(lr=0.05)
    step = make_train_step(bn_model, opt, compile=False)
    state = step.init(ltfunc.get_params(bn_model))
    for batch in bn_batches(4, seed=34):
        state, _ = step(state, None, batch, 0.05)
    p, b = state.params, state.buffers
    x, y = bn_batches(1, seed=35, size=40)[0]
    trained = copy.deepcopy(bn_model)
    ltfunc.load_into(trained, {**p, **b})
    with torch.no_grad():
        logits = trained.eval()(x)
    expected = (float(F.cross_entropy(logits, y)), int((logits.argmax(1) == y).sum()) / 40)
    assert bn_model.training
    got = evaluate(bn_model, p, None, (x, y), batch_size=16, buffers=b)
    assert got == pytest.approx(expected, rel=1e-5)
    assert bn_model.training  # the mode is restored
    # without the buffers, the model's own (initial) statistics are used: a different result
    assert evaluate(bn_model, p, None, (x, y), batch_size=16)[0] != pytest.approx(expected[0], rel=1e-3)
    # compiled: buffers are an input, so new statistics do not recompile
    from torch._dynamo.utils import counters

    assert evaluate(bn_model, p, None, (x, y), batch_size=20, buffers=b, compile=True) == pytest.approx(
        expected, rel=1e-5
    )
    graphs = counters["stats"]["unique_graphs"]
    ref_buffers = ltfunc.get_buffers(bn_model)
    evaluate(bn_model, p, None, (x, y), batch_size=20, buffers=ref_buffers, compile=True)
    evaluate(bn_model, p, None, (x, y), batch_size=20, compile=True)
    assert counters["stats"]["unique_graphs"] == graphs


def test_evaluate_rejects_buffers_of_the_wrong_kind(bn_model: nn.Module) -> None:
    p, b = ltfunc.get_params(bn_model), ltfunc.get_buffers(bn_model)
    split = bn_batches(1)[0]
    with pytest.raises(TypeError, match="evaluate: buffers must be a dict of tensors or None, got list"):
        evaluate(bn_model, p, None, split, buffers=list(b.values()))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"evaluate: buffers\['bn.running_mean'\] is on meta"):
        evaluate(bn_model, p, None, split, buffers={**b, "bn.running_mean": b["bn.running_mean"].to("meta")})


def test_cumulative_average_batchnorm_trains_eagerly_and_is_a_clear_error_compiled() -> None:
    """momentum=None: running stats are the plain mean over batches, as in an nn.Module."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 6), nn.BatchNorm1d(6, momentum=None), nn.Linear(6, 5))
    batches = tiny_batches(3, seed=36)
    ref = copy.deepcopy(net)
    with torch.no_grad():
        for x, _ in batches:
            ref(x)  # lr 0 below: the weights stay, only the statistics move
    opt = optim.sgd()
    step = make_train_step(net, opt, compile=False)
    state = step.init(ltfunc.get_params(net))
    for batch in batches:
        state, _ = step(state, None, batch, 0.0)
    b = state.buffers
    assert tree_allclose(b, ltfunc.get_buffers(ref)) and int(b["1.num_batches_tracked"]) == 3
    compiled = make_train_step(net, opt)
    with pytest.raises(ValueError, match=r"train_step: normalization layers \['1'\] have momentum=None"):
        compiled(state, None, batches[0], 0.0)
    assert compiled.num_compiles == 0


# Guards: code and constants are not re-checked per call; inputs, the model and global state are
def test_guard_filter_drops_code_and_constant_guards_and_keeps_the_rest() -> None:
    from types import SimpleNamespace

    from ltfunc._flat import _guard_filter

    def entry(name: str, guard_type: str, is_global: bool = False) -> SimpleNamespace:
        return SimpleNamespace(name=name, guard_type=guard_type, is_global=is_global)

    entries = [
        entry("G['__import_torch'].func.grad_and_value", "CLOSURE_MATCH", True),  # traced code: dropped
        entry("G['__import_ltfunc_dot__flat'].FLAT_KEY", "CONSTANT_MATCH", True),
        entry("layout", "SEQUENCE_LENGTH"),  # a named constant and what is inside it: dropped
        entry("layout.shapes[0][1]", "CONSTANT_MATCH"),
        entry("optimizer.update.__closure__[0].cell_contents", "CONSTANT_MATCH"),
        entry("layouts", "TYPE_MATCH"),  # only a name that starts like a constant: kept
        entry("x", "TENSOR_MATCH"),  # inputs, model, global state, global hooks: kept
        entry("opt_state.mu", "DICT_KEYS_MATCH"),
        entry("model", "NOT_PRESENT_IN_GENERIC_DICT"),
        entry("", "GLOBAL_STATE"),
        entry("G['__import_torch_dot_nn_dot_modules_dot_module']._global_forward_hooks", "TYPE_MATCH", True),
        entry("G['x']", "DUPLICATE_INPUT", True),
    ]
    keep = _guard_filter(("layout", "optimizer"))(entries)
    assert keep == [False] * 5 + [True] * 7


def test_a_compiled_step_still_recompiles_for_what_its_guards_keep(bn_model: nn.Module) -> None:
    """The model's mode and the batch shape stay guarded: switching them compiles, as eager gives."""
    model = copy.deepcopy(bn_model)
    opt = optim.sgd(lr=0.05, momentum=0.9)
    compiled, eager = make_train_step(model, opt), make_train_step(model, opt, compile=False)
    state = compiled.init(ltfunc.get_params(model))
    batch = bn_batches(1, seed=5)[0]
    for mode, n in (("train", 1), ("eval", 2), ("train", 2)):
        getattr(model, mode)()
        got, m_got = compiled(state, None, batch, 0.05)
        want, m_want = eager(state, None, batch, 0.05)
        assert compiled.num_compiles == n, mode
        assert tree_allclose(got.params, want.params, rtol=1e-4, atol=1e-6), mode
        assert tree_allclose(got.buffers, want.buffers, rtol=1e-4, atol=1e-6), mode
        assert torch.allclose(m_got["loss"], m_want["loss"], rtol=1e-5), mode
    small = bn_batches(1, seed=6, size=8)[0]
    compiled(compiled.init(ltfunc.get_params(model)), None, small, 0.05)
    assert compiled.num_compiles == 3
