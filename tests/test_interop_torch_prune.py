"""ltfunc.interop.torch_prune: modules pruned with torch.nn.utils.prune <-> (params, Mask)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import ltfunc
from ltfunc import masks
from ltfunc.interop import torch_prune
from tests.helpers import tree_clone


def _lenet(seed: int = 0) -> nn.Module:
    return ltfunc.models.lenet300(seed=seed)


def _hooks(module: nn.Module) -> int:
    hooks = [h for m in module.modules() for h in m._forward_pre_hooks.values()]
    return sum(isinstance(h, prune.BasePruningMethod) for h in hooks)


def test_from_pruned_reads_original_names_masked_and_orig_values() -> None:
    model = _lenet()
    dense = ltfunc.get_params(model)
    prune.l1_unstructured(model.fc2, "weight", amount=0.3)
    params, mask = torch_prune.from_pruned(model)
    raw, mask_raw = torch_prune.from_pruned(model, masked=False)

    # Same names and order as the unpruned module, never "*_orig".
    assert list(params) == list(dense) == list(raw)
    assert list(mask) == ["fc2.weight"] == torch_prune.pruned_names(model)
    assert mask == mask_raw
    assert mask["fc2.weight"].dtype == torch.bool
    assert torch.equal(mask["fc2.weight"], model.fc2.weight_mask != 0)
    # 30% of 300*100 weights are gone, exactly the smallest magnitudes.
    assert masks.counts(mask)["fc2.weight"] == masks.LayerCount(21_000, 30_000)
    kept = dense["fc2.weight"].abs()[mask["fc2.weight"]]
    pruned = dense["fc2.weight"].abs()[~mask["fc2.weight"]]
    assert kept.min() >= pruned.max()
    # masked=True: orig * mask; masked=False: orig; untouched parameters as they were.
    assert torch.equal(params["fc2.weight"], dense["fc2.weight"] * mask["fc2.weight"])
    assert torch.equal(raw["fc2.weight"], dense["fc2.weight"])
    for name in dense:
        if name != "fc2.weight":
            assert torch.equal(params[name], dense[name]) and torch.equal(raw[name], dense[name])
    # Results are detached copies: changing them does not touch the module.
    params["fc2.bias"].add_(1.0)
    assert torch.equal(model.fc2.bias.detach(), dense["fc2.bias"])


def test_global_unstructured_matches_ltfunc_global_magnitude_and_forward() -> None:
    model = _lenet(1)
    reference = _lenet(1)
    dense = ltfunc.get_params(model)
    prune.global_unstructured(
        [(model.fc1, "weight"), (model.fc2, "weight"), (model.fc3, "weight")],
        pruning_method=prune.L1Unstructured,
        amount=0.8,
    )
    params, mask = torch_prune.from_pruned(model)

    # torch's global L1 pruning and ltfunc's global magnitude pruning pick the same weights:
    # 0.8 * 266200 = 212960 removed in both (no ties among random float weights).
    expected = ltfunc.prune.magnitude(dense, masks.ones(dense), sparsity=0.8, scope="global")
    assert mask == expected
    assert masks.counts(mask)["__all__"] == masks.LayerCount(266_200 - 212_960, 266_200)
    x = torch.randn(5, 1, 28, 28)
    assert torch.equal(model(x), ltfunc.call(reference, masks.apply(mask, params), x))
    assert torch.equal(model(x), ltfunc.call(reference, masks.apply(mask, dense), x))


def test_from_pruned_reads_orig_not_the_stale_attribute() -> None:
    model = _lenet()
    prune.random_unstructured(model.fc1, "weight", amount=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()  # updates fc1.weight_orig; fc1.weight is refreshed only by the next forward
    stale = model.fc1.weight.detach().clone()
    params, _ = torch_prune.from_pruned(model)
    fresh = model.fc1.weight_orig.detach() * model.fc1.weight_mask
    assert not torch.equal(stale, fresh)
    assert torch.equal(params["fc1.weight"], fresh)
    model(x)  # the hook refreshes the attribute; now they agree
    assert torch.equal(model.fc1.weight.detach(), params["fc1.weight"])


def test_repeated_torch_pruning_combines_masks() -> None:
    model = _lenet()
    prune.l1_unstructured(model.fc3, "weight", amount=0.5)
    prune.l1_unstructured(model.fc3, "weight", amount=0.5)  # half of the survivors again
    _, mask = torch_prune.from_pruned(model)
    assert masks.counts(mask)["fc3.weight"] == masks.LayerCount(250, 1000)


@pytest.mark.parametrize("build", [ltfunc.models.lenet300, ltfunc.models.conv2])
def test_apply_mask_round_trip(build) -> None:
    model = build(seed=3)
    dense = ltfunc.get_params(model)
    before = tree_clone(dense)
    mask = ltfunc.prune.random(dense, masks.ones(dense), sparsity=0.7, seed=0)

    pruned = torch_prune.apply_mask(model, mask)
    assert pruned is not model
    assert _hooks(model) == 0 and ltfunc.tree_equal(ltfunc.get_params(model), before)  # untouched
    assert torch_prune.pruned_names(pruned) == list(mask)
    for name in mask:
        owner, local = name.rsplit(".", 1)
        buf = pruned.get_submodule(owner).get_buffer(f"{local}_mask")
        assert torch.equal(buf != 0, mask[name])

    params, back = torch_prune.from_pruned(pruned)
    assert back == mask  # same keys, order and values
    assert ltfunc.tree_equal(params, masks.apply(mask, dense))
    assert list(params) == list(dense)
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(pruned(x), ltfunc.call(model, masks.apply(mask, dense), x))


def test_apply_mask_inplace_and_on_an_already_pruned_module() -> None:
    model = _lenet()
    dense = ltfunc.get_params(model)
    prune.l1_unstructured(model.fc1, "weight", amount=0.5)
    torch_mask = model.fc1.weight_mask != 0
    ours = ltfunc.prune.random(dense, masks.ones(dense, select=["fc1.weight"]), rate=0.5, seed=1)

    copy = torch_prune.apply_mask(model, ours)  # copies a pruned module (non-leaf attribute)
    _, combined = torch_prune.from_pruned(copy)
    assert torch.equal(combined["fc1.weight"], torch_mask & ours["fc1.weight"])
    _, unchanged = torch_prune.from_pruned(model)
    assert torch.equal(unchanged["fc1.weight"], torch_mask)

    same = torch_prune.apply_mask(model, ours, inplace=True)
    assert same is model
    _, now = torch_prune.from_pruned(model)
    assert now == combined


def test_make_permanent() -> None:
    model = _lenet()
    dense = ltfunc.get_params(model)
    mask = ltfunc.prune.magnitude(dense, masks.ones(dense), sparsity=0.9)
    pruned = torch_prune.apply_mask(model, mask)
    x = torch.randn(2, 1, 28, 28)
    expected = pruned(x)

    fixed = torch_prune.make_permanent(pruned)
    assert fixed is not pruned and _hooks(pruned) == 3  # the input is still pruned
    assert _hooks(fixed) == 0
    assert list(fixed.state_dict()) == list(model.state_dict())
    assert ltfunc.tree_equal(ltfunc.get_params(fixed), masks.apply(mask, dense))
    assert torch.equal(fixed(x), expected)

    same = torch_prune.make_permanent(pruned, inplace=True)
    assert same is pruned and _hooks(pruned) == 0 and torch_prune.pruned_names(pruned) == []


def test_torch_pruned_module_to_fresh_module_via_ltfunc_mask() -> None:
    source = ltfunc.models.conv2(seed=0)
    for layer in (source.conv1, source.conv2, source.fc1):
        prune.random_unstructured(layer, "weight", amount=0.6)
    _, mask = torch_prune.from_pruned(source)
    target = torch_prune.apply_mask(ltfunc.models.conv2(seed=1), mask)
    for layer in ("conv1", "conv2", "fc1"):
        assert torch.equal(target.get_submodule(layer).weight_mask, source.get_submodule(layer).weight_mask)


def test_top_level_parameters_and_bias_pruning() -> None:
    layer = nn.Linear(4, 3)
    prune.l1_unstructured(layer, "bias", amount=1)
    prune.l1_unstructured(layer, "weight", amount=6)
    params, mask = torch_prune.from_pruned(layer)
    assert list(params) == ["weight", "bias"]
    assert list(mask) == ["weight", "bias"]
    assert int(mask["weight"].sum()) == 6 and int(mask["bias"].sum()) == 2


def test_errors() -> None:
    model = _lenet()
    with pytest.raises(ValueError, match=r"from_pruned: module LeNet300 has no parameters pruned"):
        torch_prune.from_pruned(model)
    with pytest.raises(ValueError, match=r"make_permanent: module LeNet300 has no parameters pruned"):
        torch_prune.make_permanent(model)
    with pytest.raises(TypeError, match=r"from_pruned: module must be a torch.nn.Module"):
        torch_prune.from_pruned({"fc1.weight": torch.ones(1)})
    with pytest.raises(TypeError, match=r"from_pruned: masked must be a bool"):
        torch_prune.from_pruned(model, masked="yes")

    conv_mask = masks.ones(ltfunc.models.conv2())
    with pytest.raises(ValueError, match=r"apply_mask: mask has keys \['conv1.weight', 'conv2.weight'\]"):
        torch_prune.apply_mask(model, conv_mask, inplace=True)
    bad_shape = masks.Mask({"fc1.weight": torch.ones(784, 300, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"apply_mask: mask\['fc1.weight'\] has shape \(784, 300\)"):
        torch_prune.apply_mask(model, bad_shape, inplace=True)
    assert _hooks(model) == 0  # nothing was changed by the failed calls
    with pytest.raises(TypeError, match=r"apply_mask: mask must be an ltfunc Mask"):
        torch_prune.apply_mask(model, {"fc1.weight": torch.ones(300, 784, dtype=torch.bool)})

    prune.identity(model.fc1, "weight")
    with torch.no_grad():
        model.fc1.weight_mask.fill_(0.5)
    with pytest.raises(ValueError, match=r"from_pruned: fc1.weight_mask holds values other than 0 and 1"):
        torch_prune.from_pruned(model)
