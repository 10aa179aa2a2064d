"""The training steps being compared, each wrapped as a :class:`Runner`.

Every runner starts from the same initial weights (``ltfunc.models.build(name, seed=0)``), the
same mask (layer-wise magnitude pruning to :data:`SPARSITY`) and the same hyper-parameters, so
the masked variants compute the same training trajectory; :func:`check_against_reference`
verifies that before any of them is timed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

import ltfunc
from ltfunc.data import NORMALIZATION
from ltfunc.masks import Mask

MODELS: tuple[str, ...] = ("lenet300", "conv2")
OPTIMIZERS: tuple[str, ...] = ("momentum", "adam")
BATCH = 60
"""Frankle & Carbin's mini-batch size for LeNet-300-100 and Conv-2."""
SPARSITY = 0.8
"""Fraction of each layer's weights pruned in the masked variants (the cost is that of a dense step)."""
HPARAMS: dict[str, dict[str, float]] = {
    "momentum": {"lr": 0.01, "momentum": 0.9},
    "adam": {"lr": 1.2e-3},
    "sgd-wd": {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4},
}
"""Hyper-parameters shared by every implementation (torch.optim, ltfunc.optim, optax).
``"sgd-wd"`` is the CIFAR recipe's SGD (open_lth: lr 0.1, momentum 0.9, weight decay 1e-4)."""
MNIST_SHAPE: tuple[int, int, int] = (1, 28, 28)
CIFAR_SHAPE: tuple[int, int, int] = (3, 32, 32)

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
    ),
]
"""Device parametrization: CUDA rows are skipped (with the reason) where there is no GPU."""

Feed: TypeAlias = tuple[Any, Any] | Iterator[tuple[Any, Any]]
"""A fixed ``(x, y)`` batch, or an iterator of batches (fetching is then part of the timing)."""

Measure: TypeAlias = Callable[..., None]
"""The ``measure`` fixture: ``measure(runner, feed, *, model, device, variant, optimizer)``."""


@dataclass(frozen=True)
class Runner:
    """One way of taking a training step on a batch.

    Attributes:
        step: ``step(x, y)`` takes one training step and returns the loss (without a host sync).
        weights: The current effective (masked) parameters, keyed like ``model.named_parameters()``.
        sync: Blocks until all queued device work of this runner is done.
        convert: Turns a torch ``(x, y)`` batch into the runner's own batch type (identity
            for torch runners; JAX arrays for the JAX runner). Done once, outside the timing.
    """

    step: Callable[[Any, Any], Any]
    weights: Callable[[], dict[str, Tensor]]
    sync: Callable[[], None]
    convert: Callable[[Tensor, Tensor], tuple[Any, Any]] = lambda x, y: (x, y)


def device_sync(device: torch.device) -> Callable[[], None]:
    """A function that waits for ``device`` (a no-op on the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def make_model(name: str, device: torch.device) -> nn.Module:
    """The benchmark model ``name`` with its seed-0 initial weights on ``device``."""
    return ltfunc.models.build(name, seed=0).to(device)


def make_mask(model: nn.Module) -> Mask:
    """Layer-wise magnitude mask at :data:`SPARSITY` of the model's prunable weights (initial values).

    The model's own prunable set (:func:`ltfunc.masks.ones` of the module): VGG and ResNet keep
    their output layer dense.
    """
    params = ltfunc.get_params(model)
    return ltfunc.prune.magnitude(params, ltfunc.masks.ones(model), sparsity=SPARSITY)


def fixed_batch(
    device: torch.device, batch: int = BATCH, seed: int = 0, shape: tuple[int, ...] = MNIST_SHAPE
) -> tuple[Tensor, Tensor]:
    """A synthetic batch of inputs ``(batch, *shape)``: MNIST-shaped by default, :data:`CIFAR_SHAPE`
    for the CIFAR models (kernels do not care about the pixel values)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *shape, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    return x.to(device), y.to(device)


def torch_optimizer(name: str, params: Any) -> torch.optim.Optimizer:
    """``torch.optim`` with the shared hyper-parameters (PyTorch's default implementation choice)."""
    if name in ("momentum", "sgd-wd"):
        return torch.optim.SGD(params, **HPARAMS[name])
    return torch.optim.Adam(params, **HPARAMS[name])


def _masked_module(name: str, device: torch.device, mask: Mask | None) -> nn.Module:
    model = make_model(name, device)
    if mask is not None:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in mask:
                    p.mul_(mask[n])
    return model


def _module_weights(model: nn.Module) -> Callable[[], dict[str, Tensor]]:
    return lambda: {n: p.detach() for n, p in model.named_parameters()}


def dense_eager(name: str, device: torch.device, optimizer: str) -> Runner:
    """``nn.Module`` + ``torch.optim``, no mask: the step everyone has."""
    model = make_model(name, device)
    opt = torch_optimizer(optimizer, model.parameters())

    def step(x: Tensor, y: Tensor) -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    return Runner(step, _module_weights(model), device_sync(device))


def masked_eager_torch(name: str, device: torch.device, optimizer: str, mask: Mask | None) -> Runner:
    """Seed style, pure torch: weights pre-masked, ``grad.mul_(mask)`` before ``optimizer.step()``.

    This is also the reference every other runner is checked against (with ``mask=None`` it
    is plain dense training).
    """
    model = _masked_module(name, device, mask)
    opt = torch_optimizer(optimizer, model.parameters())
    pairs = [(p, mask[n]) for n, p in model.named_parameters() if mask is not None and n in mask]

    def step(x: Tensor, y: Tensor) -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        with torch.no_grad():
            for p, m in pairs:
                p.grad.mul_(m)
        opt.step()
        return loss.detach()

    return Runner(step, _module_weights(model), device_sync(device))


def seed_numpy(name: str, device: torch.device, optimizer: str, mask: Mask) -> Runner:
    """Seed style as the seed repositories write it: the gradient goes to numpy and back.

    ``grad.cpu().numpy() * mask`` (float64 numpy masks, as ``np.where(..., 0., 1.)`` makes
    them), then ``torch.from_numpy(...).to(device, dtype=torch.float32)``, then ``optimizer.step()``.
    """
    model = _masked_module(name, device, mask)
    opt = torch_optimizer(optimizer, model.parameters())
    np_masks = {n: mask[n].cpu().numpy().astype(np.float64) for n in mask}

    def step(x: Tensor, y: Tensor) -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        for n, p in model.named_parameters():
            if n in np_masks:
                grad = p.grad.data.cpu().numpy() * np_masks[n]
                p.grad.data = torch.from_numpy(grad).to(device, dtype=torch.float32)
        opt.step()
        return loss.detach()

    return Runner(step, _module_weights(model), device_sync(device))


def prunable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``Linear`` / ``Conv2d`` modules whose weights are pruned."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def hooks(name: str, device: torch.device, optimizer: str, method: str) -> tuple[Runner, Mask]:
    """``torch.nn.utils.prune`` forward-pre-hooks (``weight = weight_orig * weight_mask``) + ``torch.optim``.

    Args:
        name: Model name.
        device: Device.
        optimizer: ``"momentum"`` or ``"adam"``.
        method: ``"l1"`` (``l1_unstructured`` on each layer) or ``"global"`` (``global_unstructured``).

    Returns:
        The runner and the mask torch's pruning chose (to check the runner against).
    """
    model = make_model(name, device)
    layers = prunable_modules(model)
    if method == "l1":
        for _, mod in layers:
            torch_prune.l1_unstructured(mod, "weight", amount=SPARSITY)
    else:
        torch_prune.global_unstructured(
            [(mod, "weight") for _, mod in layers], pruning_method=torch_prune.L1Unstructured, amount=SPARSITY
        )
    mask = Mask({f"{n}.weight": mod.weight_mask.bool() for n, mod in layers})
    opt = torch_optimizer(optimizer, model.parameters())

    def step(x: Tensor, y: Tensor) -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.detach()

    def weights() -> dict[str, Tensor]:
        out = {}
        for n, p in model.named_parameters():
            if n.endswith("_orig"):
                base = n[: -len("_orig")]
                module = model.get_submodule(base.rsplit(".", 1)[0])
                out[base] = (p * module.weight_mask).detach()
            else:
                out[n] = p.detach()
        return out

    return Runner(step, weights, device_sync(device)), mask


def ltfunc_optimizer(optimizer: str) -> Any:
    """The ``ltfunc.optim`` optimizer with the shared hyper-parameters."""
    from ltfunc import optim

    if optimizer in ("momentum", "sgd-wd"):
        return optim.sgd(**HPARAMS[optimizer])
    return optim.adam(**HPARAMS[optimizer])


def ltfunc_runner(
    name: str, device: torch.device, optimizer: str, mask: Mask | None, *, compile: bool
) -> Runner:
    """``ltfunc.step.make_train_step`` (eager or ``torch.compile``d); ``mask=None`` is the dense step."""
    from ltfunc.step import make_train_step

    model = make_model(name, device)
    opt = ltfunc_optimizer(optimizer)
    params = ltfunc.get_params(model)
    if mask is not None:
        params = ltfunc.masks.apply(mask, params)
    train_step = make_train_step(model, opt, compile=compile)
    state = {"state": train_step.init(params)}
    lr = torch.tensor(HPARAMS[optimizer]["lr"], device=device)

    def step(x: Tensor, y: Tensor) -> Tensor:
        state["state"], metrics = train_step(state["state"], mask, (x, y), lr)  # the state fed back
        return metrics["loss"]

    return Runner(step, lambda: dict(state["state"].params), device_sync(device))


# ---------------------------------------------------------------- the floor


def floor(name: str, device: torch.device) -> Runner:
    """The bare kernels of the model's forward + backward, called directly, nothing else.

    LeNet-300-100: ``addmm`` + in-place ``relu`` forward; ``mm`` for weight and input
    gradients, a column sum for bias gradients, ``threshold_backward`` for the ReLUs,
    all into preallocated buffers. Conv-2 adds ``convolution`` / ``convolution_backward``
    and ``max_pool2d_with_indices`` (+ backward). No loss, no autograd, no optimizer:
    a lower bound that a full training step cannot beat.
    """
    model = make_model(name, device)
    params = {n: p.detach() for n, p in model.named_parameters()}
    x, _ = fixed_batch(device)
    dout = torch.randn(BATCH, 10, generator=torch.Generator().manual_seed(1)).to(device)
    mlp_names = [n for n, _ in prunable_modules(model) if n.startswith("fc")]
    mlp = _MlpFloor(
        [params[f"{n}.weight"] for n in mlp_names],
        [params[f"{n}.bias"] for n in mlp_names],
        input_grad=name != "lenet300",
    )
    if name == "lenet300":
        flat = x.flatten(1).contiguous()

        def step(_x: Any, _y: Any) -> None:
            mlp.backward(mlp.forward(flat, dout))

    else:
        conv = _ConvFloor(params)

        def step(_x: Any, _y: Any) -> None:
            feats = conv.forward(x)
            conv.backward(mlp.backward(mlp.forward(feats, dout)))

    return Runner(step, lambda: params, device_sync(device))


class _MlpFloor:
    """addmm/relu forward and mm backward of a ReLU MLP, into preallocated buffers."""

    def __init__(self, weights: list[Tensor], biases: list[Tensor], *, input_grad: bool) -> None:
        self.w, self.b = weights, biases
        self.input_grad = input_grad
        self.dw = [torch.empty_like(w) for w in weights]
        self.db = [torch.empty_like(b) for b in biases]
        self.outs: list[Tensor] = []
        self.grads: list[Tensor] = []
        self.inputs: list[Tensor] = []
        self.dout: Tensor | None = None

    def forward(self, x: Tensor, dout: Tensor) -> Tensor:
        if not self.outs:
            n = x.shape[0]
            self.outs = [x.new_empty(n, w.shape[0]) for w in self.w]
            self.grads = [x.new_empty(n, w.shape[1]) for w in self.w]
        self.inputs = [x]
        h = x
        for i, (w, b) in enumerate(zip(self.w, self.b, strict=True)):
            torch.addmm(b, h, w.t(), out=self.outs[i])
            h = self.outs[i]
            if i < len(self.w) - 1:
                h.relu_()
                self.inputs.append(h)
        self.dout = dout
        return h

    def backward(self, _logits: Tensor) -> Tensor:
        """Weight, bias and input gradients; returns the input gradient (``dout`` if not needed)."""
        assert self.dout is not None
        g = self.dout
        for i in reversed(range(len(self.w))):
            torch.mm(g.t(), self.inputs[i], out=self.dw[i])
            torch.sum(g, 0, out=self.db[i])
            if i == 0 and not self.input_grad:
                break
            gin = self.grads[i]
            torch.mm(g, self.w[i], out=gin)
            if i > 0:
                torch.ops.aten.threshold_backward.grad_input(gin, self.inputs[i], 0, grad_input=gin)
            g = gin
        return g


class _ConvFloor:
    """Conv-2's convolution / ReLU / max-pool kernels, forward and backward."""

    def __init__(self, params: dict[str, Tensor]) -> None:
        self.p = params
        self.saved: dict[str, Tensor] = {}

    def forward(self, x: Tensor) -> Tensor:
        p = self.p
        r1 = F.conv2d(x, p["conv1.weight"], p["conv1.bias"], padding=1).relu_()
        r2 = F.conv2d(r1, p["conv2.weight"], p["conv2.bias"], padding=1).relu_()
        pooled, idx = torch.ops.aten.max_pool2d_with_indices(r2, [2, 2], [2, 2])
        self.saved = {"x": x, "r1": r1, "r2": r2, "idx": idx, "pooled": pooled}
        return pooled.flatten(1)

    def backward(self, g: Tensor) -> None:
        s, p = self.saved, self.p
        aten = torch.ops.aten
        dp = g.view_as(s["pooled"])
        dr2 = aten.max_pool2d_with_indices_backward(
            dp, s["r2"], [2, 2], [2, 2], [0, 0], [1, 1], False, s["idx"]
        )
        dc2 = aten.threshold_backward(dr2, s["r2"], 0)
        conv_args = ([1, 1], [1, 1], [1, 1], False, [0, 0], 1)
        dr1, _, _ = aten.convolution_backward(
            dc2, s["r1"], p["conv2.weight"], [64], *conv_args, [True, True, True]
        )
        dc1 = aten.threshold_backward(dr1, s["r1"], 0)
        aten.convolution_backward(dc1, s["x"], p["conv1.weight"], [64], *conv_args, [False, True, True])


# ---------------------------------------------------------------- data pipelines


def dataloader_batches(
    root: Path, device: torch.device, batch: int = BATCH
) -> Iterator[tuple[Tensor, Tensor]]:
    """What the seed and its peers do: ``DataLoader`` over torchvision MNIST with ``ToTensor``.

    ``Normalize`` with MNIST's mean/std, ``shuffle=True``, ``num_workers=0`` (the seed's
    default), each batch moved to ``device``; restarted at every epoch end.
    """
    import torchvision
    from torchvision import transforms

    mean, std = NORMALIZATION["mnist"]
    ds = torchvision.datasets.MNIST(
        str(root / "mnist"),
        train=True,
        download=False,
        transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))]),
    )
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0)
    )
    while True:
        for x, y in loader:
            yield x.to(device), y.to(device)


# ---------------------------------------------------------------- checks


def check_against_reference(
    runner: Runner,
    name: str,
    device: torch.device,
    optimizer: str,
    mask: Mask | None,
    *,
    steps: int = 3,
    batch: int = BATCH,
    shape: tuple[int, ...] = MNIST_SHAPE,
) -> None:
    """Assert that ``runner`` trains exactly like the textbook masked step (and warm it up).

    Both start from the same weights; after ``steps`` steps on one batch their losses must
    agree to 1e-4 (relative), their logits on the batch to 5e-3, and every pruned weight of
    ``runner`` must be exactly zero.

    ``batch`` and ``shape`` give the batch's size and input shape (:func:`fixed_batch`).

    Raises:
        AssertionError: If the runner computes something else.
    """
    x, y = fixed_batch(device, batch, shape=shape)
    ref = masked_eager_torch(name, device, optimizer, mask)
    native = runner.convert(x, y)
    got = [float(runner.step(*native)) for _ in range(steps)]
    want = [float(ref.step(x, y)) for _ in range(steps)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg="losses differ from the reference")
    model = make_model(name, torch.device("cpu"))
    weights = {k: torch.as_tensor(v).detach().cpu() for k, v in runner.weights().items()}
    ref_weights = {k: v.detach().cpu() for k, v in ref.weights().items()}
    assert weights.keys() == ref_weights.keys(), (sorted(weights), sorted(ref_weights))
    logits = ltfunc.call(model, weights, x.cpu())
    ref_logits = ltfunc.call(model, ref_weights, x.cpu())
    torch.testing.assert_close(logits, ref_logits, rtol=1e-3, atol=5e-3)
    if mask is not None:
        for k, m in mask.items():
            pruned = weights[k][~m.cpu()]
            assert bool((pruned == 0).all()), f"{k}: {int((pruned != 0).sum())} pruned weights are not zero"
    runner.sync()
