"""Vectorized members: one vmapped step gives each run's own results; stacking; bad input; compile once."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ltfunc
from ltfunc import masks, optim
from ltfunc.members import make_members_step, stack, stack_states, unstack, unstack_state
from ltfunc.step import TrainState, make_train_step
from tests.helpers import Tiny, TinyBN, tree_allclose

B = 8
STEPS = 4


def member_params(model: nn.Module, k: int) -> list[dict[str, torch.Tensor]]:
    out = []
    for i in range(k):
        torch.manual_seed(100 + i)
        m = type(model)()
        out.append(ltfunc.get_params(m))
    return out


def member_masks(params: list[dict[str, torch.Tensor]]) -> list[masks.Mask]:
    out = []
    for i, p in enumerate(params):
        rate = 0.2 * (i + 1) if i < 4 else 0.5
        out.append(ltfunc.prune.random(p, masks.ones(p), rate=rate, seed=i))
    return out


def member_data(k: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(steps, k, B, 12, generator=g), torch.randint(0, 5, (steps, k, B), generator=g)


OPTS = {"sgd_momentum": lambda: optim.sgd(lr=0.05, momentum=0.9), "adam": lambda: optim.adam(lr=0.01)}


@pytest.mark.parametrize("model_cls", [Tiny, TinyBN])
@pytest.mark.parametrize("opt_name", sorted(OPTS))
@pytest.mark.parametrize("k", [1, 3])
def test_each_member_matches_training_it_alone(model_cls: type[nn.Module], opt_name: str, k: int) -> None:
    model = model_cls()
    opt = OPTS[opt_name]()
    params = member_params(model, k)
    mks = member_masks(params)
    xs, ys = member_data(k, STEPS)
    lrs = (
        torch.tensor([0.05, 0.02, 0.01][:k])
        if opt_name == "sgd_momentum"
        else torch.tensor([0.01, 0.003, 0.001][:k])
    )
    vstep = make_members_step(model, opt)
    states = vstep.init(params)
    vloss = []
    for t in range(STEPS):
        states, metrics = vstep(states, mks, (xs[t], ys[t]), lrs)
        assert metrics["loss"].shape == (k,) and metrics["accuracy"].shape == (k,)
        vloss.append(metrics["loss"])
    assert states.iteration == STEPS
    one = make_train_step(model, opt, compile=False)
    for i in range(k):
        s = one.init(params[i])
        for t in range(STEPS):
            s, m = one(s, mks[i], (xs[t, i], ys[t, i]), float(lrs[i]))
            torch.testing.assert_close(m["loss"], vloss[t][i], rtol=1e-5, atol=1e-6)
        mine = unstack_state(states, i)
        assert tree_allclose(mine.params, s.params, rtol=1e-5, atol=1e-6)
        assert tree_allclose(mine.opt_state, s.opt_state, rtol=1e-5, atol=1e-6)
        assert tree_allclose(mine.buffers, s.buffers, rtol=1e-5, atol=1e-6)
        for n, mk in mks[i].items():  # pruned weights exactly 0
            assert bool((mine.params[n][~mk] == 0).all())
    if model_cls is TinyBN:
        assert states.buffers["bn.num_batches_tracked"].tolist() == [STEPS] * k
        if k > 1:  # each member has its own statistics
            assert not torch.equal(states.buffers["bn.running_mean"][0], states.buffers["bn.running_mean"][1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("model_cls", [Tiny, TinyBN])
def test_compiled_members_on_cuda_match_their_cpu_runs(model_cls: type[nn.Module]) -> None:
    model = model_cls()
    opt = optim.adam(lr=0.01)
    params = member_params(model, 3)
    mks = member_masks(params)
    xs, ys = member_data(3, STEPS)
    lrs = torch.tensor([0.01, 0.003, 0.001])
    cpu = make_members_step(model, opt)
    ref = cpu.init(params)
    for t in range(STEPS):
        ref, _ = cpu(ref, mks, (xs[t], ys[t]), lrs)
    cuda = torch.device("cuda")
    vstep = make_members_step(model.to(cuda), opt, compile=True)
    states = vstep.init([{n: v.to(cuda) for n, v in p.items()} for p in params])
    on = [m.to(cuda) for m in mks]
    for t in range(STEPS):
        states, metrics = vstep(states, on, (xs[t].to(cuda), ys[t].to(cuda)), lrs.to(cuda))
    assert metrics["loss"].device.type == "cuda" and vstep.num_compiles == 1
    got = optree_to_cpu(states)
    assert tree_allclose(got.params, ref.params, rtol=1e-4, atol=1e-5)
    assert tree_allclose(got.opt_state, ref.opt_state, rtol=1e-4, atol=1e-5)
    assert tree_allclose(got.buffers, ref.buffers, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_more_members_than_the_gpu_holds_are_refused_before_allocating() -> None:
    from ltfunc import _members_memory

    model = nn.Linear(4096, 4096, device="cuda")  # about 0.5 GB per member with Adam
    vstep = make_members_step(model, optim.adam())
    p = ltfunc.get_params(model)
    available = _members_memory.available_memory(torch.device("cuda"))
    assert available is not None
    k = available[0] // vstep.estimate_memory(1) + 2
    before = torch.cuda.memory_allocated()
    with pytest.raises(ValueError, match=r"members need about .*\(free memory of cuda.*members fit"):
        vstep.init([p] * k)
    assert torch.cuda.memory_allocated() == before


def optree_to_cpu(state: TrainState) -> TrainState:
    import optree

    return optree.tree_map(lambda t: t.cpu() if isinstance(t, torch.Tensor) else t, state, none_is_leaf=True)


def test_float_lr_shared_mask_stacked_mask_and_shared_batch_agree() -> None:
    model = Tiny()
    opt = optim.adam(lr=0.01)
    params = member_params(model, 3)
    mk = member_masks(params)[1]
    xs, ys = member_data(3, 2)
    x_same, y_same = xs[:, :1].expand(2, 3, B, 12), ys[:, :1].expand(2, 3, B)
    results = []
    for masks_arg, shared in (([mk, mk, mk], False), (mk, False), (stack([mk, mk, mk]), False), (mk, True)):
        vstep = make_members_step(model, opt, shared_batch=shared)
        states = vstep.init(params)
        for t in range(2):
            batch = (xs[t, 0], ys[t, 0]) if shared else (x_same[t], y_same[t])
            states, _ = vstep(states, masks_arg, batch, 0.01)
        results.append(states.params)
    for r in results[1:]:
        assert tree_allclose(results[0], r, rtol=0, atol=0)


def test_dense_none_members_and_feeding_back_other_states() -> None:
    model = Tiny()
    opt = optim.sgd(lr=0.1)
    params = member_params(model, 2)
    mk = member_masks(params)[0]
    x, y = member_data(2, 1)
    vstep = make_members_step(model, opt)
    a, _ = vstep(vstep.init(params), [None, mk], (x[0], y[0]), 0.1)
    # a state not handed out by this step (copies) is checked and flattened: same result
    b, _ = vstep(
        stack_states([unstack_state(vstep.init(params), i) for i in range(2)]), [None, mk], (x[0], y[0]), 0.1
    )
    assert tree_allclose(a.params, b.params, rtol=0, atol=0)
    one = make_train_step(model, opt, compile=False)
    s, _ = one(one.init(params[0]), None, (x[0, 0], y[0, 0]), 0.1)
    assert tree_allclose(unstack_state(a, 0).params, s.params)


def test_stacked_views_are_views_into_the_flat_rows() -> None:
    from ltfunc._flat import FlatLayout

    layout = FlatLayout.of({"w": torch.zeros(2, 3), "b": torch.zeros(3)})
    base = torch.arange(3 * 12, dtype=torch.float32).reshape(3, 12)
    for flat in (base[:, :9], base[:, 2:11], base.t().contiguous().t()[:, 1:10]):
        v = layout.views(flat)
        assert v["w"].shape == (3, 2, 3) and v["b"].shape == (3, 3)
        assert torch.equal(v["w"], flat[:, :6].reshape(3, 2, 3)) and torch.equal(v["b"], flat[:, 6:9])
    before = v["w"].clone()
    flat.add_(1.0)  # views, not copies
    assert torch.equal(v["w"], before + 1)
    # a members step hands out views into its stacked flat buffers
    model = Tiny()
    vstep = make_members_step(model, optim.adam(lr=0.01))
    x, y = member_data(2, 1)
    states, _ = vstep(vstep.init(member_params(model, 2)), None, (x[0], y[0]), 0.01)
    storages = {t.untyped_storage().data_ptr() for t in states.params.values()}
    assert len(storages) == 1 and states.opt_state.mu["fc1.weight"].shape == (2, 16, 12)


def test_float_lrs_of_equal_value_reuse_and_new_values_apply() -> None:
    model = Tiny()
    params = member_params(model, 2)
    x, y = member_data(2, 3)
    lrs = [0.1, float("0." + "1"), 0.05]  # equal floats as different objects, then a new value
    vstep = make_members_step(model, optim.sgd(lr=0.1))
    states = vstep.init(params)
    for t, lr in enumerate(lrs):
        states, _ = vstep(states, None, (x[t], y[t]), lr)
    ref = make_members_step(model, optim.sgd(lr=0.1))
    other = ref.init(params)
    for t, lr in enumerate(lrs):
        other, _ = ref(other, None, (x[t], y[t]), torch.tensor([lr, lr]))
    assert tree_allclose(states.params, other.params, rtol=0, atol=0)


def test_stack_unstack_roundtrip() -> None:
    trees = [{"w": torch.full((2, 3), float(i)), "b": torch.zeros(3)} for i in range(4)]
    s = stack(trees)
    assert s["w"].shape == (4, 2, 3)
    for i in range(4):
        assert tree_allclose(unstack(s, i), trees[i], rtol=0, atol=0)
    m = stack([masks.from_dict({"w": torch.rand(2, 3) > 0.5}) for _ in range(2)])
    assert isinstance(m, masks.Mask) and m["w"].shape == (2, 2, 3)
    st = stack_states(
        [TrainState({"w": torch.ones(2) * i}, optim.adam().init({"w": torch.ones(2)}), 5) for i in range(3)]
    )
    assert st.iteration == 5 and st.opt_state.mu["w"].shape == (3, 2)
    assert unstack_state(st, 2).params["w"].tolist() == [2.0, 2.0]


def test_bad_input() -> None:
    model = Tiny()
    vstep = make_members_step(model, optim.sgd(lr=0.1))
    params = member_params(model, 2)
    with pytest.raises(ValueError, match="K >= 1"):
        vstep.init([])
    with pytest.raises(ValueError, match=r"params\[1\].*'fc9.weight'"):
        vstep.init(
            [
                params[0],
                {**{k: v for k, v in params[1].items() if k != "fc1.weight"}, "fc9.weight": torch.zeros(1)},
            ]
        )
    with pytest.raises(ValueError, match=r"params\[1\]\['fc1.bias'\].*float64"):
        vstep.init([params[0], {**params[1], "fc1.bias": params[1]["fc1.bias"].double()}])
    with pytest.raises(ValueError, match=r"opt_states\[1\] does not stack"):
        stack_states(
            [
                TrainState(params[0], optim.sgd().init(params[0])),
                TrainState(params[1], optim.adam().init(params[1])),
            ]
        )
    with pytest.raises(ValueError, match="same iteration"):
        stack_states(
            [
                TrainState(params[0], optim.sgd().init(params[0]), 1),
                TrainState(params[1], optim.sgd().init(params[1]), 2),
            ]
        )
    with pytest.raises(ValueError, match="K >= 1"):
        stack([])
    states = vstep.init(params)
    x, y = member_data(2, 1)
    batch = (x[0], y[0])
    m0 = masks.ones(params[0])
    m_other = masks.ones(params[0], select=["fc1.weight"])
    with pytest.raises(ValueError, match=r"masks\[1\] does not stack.*fc2.weight"):
        vstep(states, [m0, m_other], batch, 0.1)
    with pytest.raises(ValueError, match="one mask per member"):
        vstep(states, [m0], batch, 0.1)
    with pytest.raises(TypeError, match=r"masks\[0\] must be an ltfunc Mask"):
        vstep(states, [{"fc1.weight": torch.ones(16, 12, dtype=torch.bool)}, m0], batch, 0.1)
    with pytest.raises(ValueError, match="batch y must be an int64 tensor of shape"):
        vstep(states, None, (x[0][:1], y[0][:1]), 0.1)
    with pytest.raises(ValueError, match=r"lr must be a float tensor of shape \(\) or \(2,\)"):
        vstep(states, None, batch, torch.tensor([0.1, 0.1, 0.1]))
    with pytest.raises(ValueError, match=r"lr\[1\]"):
        vstep(states, None, batch, torch.tensor([0.1, -0.1]))
    with pytest.raises(TypeError, match="stacked TrainState"):
        vstep(params, None, batch, 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"fc1.bias.*has shape \(2, 16\), expected \(1, 16\)"):
        vstep(
            states._replace(params={**states.params, "fc1.weight": states.params["fc1.weight"][:1]}),
            None,
            batch,
            0.1,
        )
    with pytest.raises(ValueError, match="k must be an int in"):
        unstack_state(states, 2)
    with pytest.raises(TypeError, match="optimizer"):
        make_members_step(model, torch.optim.SGD)  # type: ignore[arg-type]


def test_compiled_once_across_masks_lrs_and_states() -> None:
    model = Tiny()
    opt = optim.adam(lr=0.01)
    params = member_params(model, 2)
    mks = member_masks(params)
    xs, ys = member_data(2, 4)
    vstep = make_members_step(model, opt, compile=True)
    eager = make_members_step(model, opt)
    states, ref = vstep.init(params), eager.init(params)
    calls: list[tuple[object, float | torch.Tensor]] = [
        (mks, 0.01),
        (mks, torch.tensor([0.02, 0.005])),
        ([mks[1], mks[0]], torch.tensor([0.001, 0.003])),
        (masks.ones(params[0]), 0.5),
    ]
    for t, (m, lr) in enumerate(calls):
        states, metrics = vstep(states, m, (xs[t], ys[t]), lr)
        ref, ref_metrics = eager(ref, m, (xs[t], ys[t]), lr)
        torch.testing.assert_close(metrics["loss"], ref_metrics["loss"], rtol=1e-5, atol=1e-6)
    assert tree_allclose(states.params, ref.params, rtol=1e-4, atol=1e-5)
    states, _ = vstep(vstep.init(params), mks, (xs[0], ys[0]), 0.01)  # fresh optimizer states
    assert vstep.num_compiles == 1


@pytest.mark.parametrize("shared", [False, True])
def test_one_compiled_member_equals_its_single_step_and_more_members_still_vmap(shared: bool) -> None:
    model = TinyBN()
    opt = optim.adam(lr=0.01)
    params = member_params(model, 3)
    mks = member_masks(params)
    xs, ys = member_data(3, 2)
    vstep = make_members_step(model, opt, compile=True, shared_batch=shared)
    one = make_train_step(model, opt, compile=False)
    states, alone = vstep.init(params[:1]), one.init(params[0])
    for t in range(2):
        batch = (xs[t, 0], ys[t, 0])
        states, metrics = vstep(states, mks[:1], batch if shared else (xs[t, :1], ys[t, :1]), 0.01)
        alone, m = one(alone, mks[0], batch, 0.01)
        assert metrics["loss"].shape == (1,)
        torch.testing.assert_close(metrics["loss"][0], m["loss"], rtol=1e-5, atol=1e-6)
    mine = unstack_state(states, 0)
    assert tree_allclose(mine.params, alone.params, rtol=1e-5, atol=1e-6)
    assert tree_allclose(mine.opt_state, alone.opt_state, rtol=1e-5, atol=1e-6)
    assert tree_allclose(mine.buffers, alone.buffers, rtol=1e-5, atol=1e-6)
    three, _ = vstep(vstep.init(params), mks, (xs[0, 0], ys[0, 0]) if shared else (xs[0], ys[0]), 0.01)
    assert three.params["fc1.weight"].shape[0] == 3 and vstep.num_compiles == 2  # one graph per K
