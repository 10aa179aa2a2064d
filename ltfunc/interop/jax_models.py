"""JAX interop, models: pure-JAX twins of the built-in LeNet-300-100 and Conv-2.

Part of :mod:`ltfunc.interop.jax` (import the functions from there). JAX is imported on first
use, not when this module is imported.

:func:`apply` is a pure JAX forward pass of the built-in LeNet-300-100 and Conv-2 over the
exported params pytree (PyTorch layouts: NCHW inputs, OIHW kernels, Linear weights
``(out, in)``); :func:`infer_arch` tells which model a params pytree belongs to;
:func:`make_train_step` is a masked step with any optax optimizer, and :func:`evaluate`
returns ``(loss, accuracy)`` like :func:`ltfunc.evaluate`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from torch import Tensor

from .._checks import check_bool, check_callable, check_choice, check_int, check_mask_fits
from ..masks import Mask
from ._jax_common import require_jax
from .jax_arrays import to_jax

__all__ = [
    "ARCHITECTURES",
    "apply",
    "cross_entropy",
    "evaluate",
    "infer_arch",
    "make_train_step",
    "mask_params",
    "predict",
]


# Architectures and shape checks -----------------------------------------------------------------
_FC = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias")
ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "lenet300": _FC,
    "conv2": ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", *_FC),
}
"""Parameter names of each built-in model :func:`apply` can run (``ltfunc.models`` names)."""


def infer_arch(params: Mapping[str, Any]) -> str:
    """The built-in architecture whose parameter names ``params`` has.

    Args:
        params: A params pytree (torch or JAX).

    Returns:
        A key of :data:`ARCHITECTURES` (``"lenet300"`` or ``"conv2"``).

    Raises:
        TypeError: If ``params`` is not a mapping.
        ValueError: If its names are not exactly those of a built-in model.

    Example:
        >>> import ltfunc
        >>> from ltfunc.interop import jax as lj
        >>> lj.infer_arch(ltfunc.get_params(ltfunc.models.conv2()))
        'conv2'
    """
    return _arch("infer_arch", params, None)


def _arch(func: str, params: Any, arch: str | None) -> str:
    if not isinstance(params, Mapping):
        raise TypeError(f"{func}: params must be a dict of arrays, got {type(params).__name__}")
    keys = set(params)
    if arch is None:
        for name, names in ARCHITECTURES.items():
            if keys == set(names):
                return name
        raise ValueError(
            f"{func}: params has keys {sorted(keys)}, which are not those of a built-in model; "
            f"supported: {', '.join(f'{a} {list(n)}' for a, n in ARCHITECTURES.items())}"
        )
    check_choice(func, "arch", arch, tuple(ARCHITECTURES))
    expected = set(ARCHITECTURES[arch])
    if keys != expected:
        raise ValueError(
            f"{func}: params do not fit arch={arch!r}: missing {sorted(expected - keys)}, "
            f"unexpected {sorted(keys - expected)}"
        )
    return arch


def _shape(params: Mapping[str, Any], k: str) -> tuple[int, ...]:
    return tuple(int(d) for d in params[k].shape)


def _check_chain(func: str, params: Mapping[str, Any], layers: list[str], in_features: int) -> None:
    """Linear layers ``layers`` must chain: weight ``(out, in)``, bias ``(out,)``."""
    for layer in layers:
        w, b = _shape(params, f"{layer}.weight"), _shape(params, f"{layer}.bias")
        if len(w) != 2 or w[1] != in_features or b != (w[0],):
            raise ValueError(
                f"{func}: {layer}.weight/{layer}.bias have shapes {w}/{b}; expected "
                f"(out, {in_features}) and (out,) given the previous layer"
            )
        in_features = w[0]


def _check_input(func: str, arch: str, params: Mapping[str, Any], x: Any) -> None:
    shape = tuple(int(d) for d in x.shape)
    if arch == "lenet300":
        features = int(np.prod(shape[1:])) if len(shape) >= 2 else -1
        if len(shape) < 2:
            raise ValueError(f"{func}: x has shape {shape}; lenet300 needs (N, ...) inputs")
        _check_chain(func, params, ["fc1", "fc2", "fc3"], features)
        return
    w1, w2 = _shape(params, "conv1.weight"), _shape(params, "conv2.weight")
    if len(w1) != 4 or w1[2:] != (3, 3) or len(w2) != 4 or w2[1:] != (w1[0], 3, 3):
        raise ValueError(
            f"{func}: conv1.weight/conv2.weight have shapes {w1}/{w2}; Conv-2 needs OIHW 3x3 "
            "kernels with conv2's in-channels equal to conv1's out-channels"
        )
    for layer, w in (("conv1", w1), ("conv2", w2)):
        if _shape(params, f"{layer}.bias") != (w[0],):
            got = _shape(params, f"{layer}.bias")
            raise ValueError(f"{func}: {layer}.bias has shape {got}, expected ({w[0]},)")
    if len(shape) != 4 or shape[1] != w1[1]:
        raise ValueError(f"{func}: x has shape {shape}; conv2 needs NCHW input with C={w1[1]}")
    _check_chain(func, params, ["fc1", "fc2", "fc3"], w2[0] * (shape[2] // 2) * (shape[3] // 2))


# Forward pass, loss and masking -------------------------------------------------------------------
def _linear(jax: Any, x: Any, params: Mapping[str, Any], layer: str) -> Any:
    w, b = params[f"{layer}.weight"], params[f"{layer}.bias"]
    return jax.numpy.matmul(x, w.T, precision=jax.lax.Precision.HIGHEST) + b


def _conv3x3(jax: Any, x: Any, params: Mapping[str, Any], layer: str) -> Any:
    y = jax.lax.conv_general_dilated(
        x,
        params[f"{layer}.weight"],
        window_strides=(1, 1),
        padding=((1, 1), (1, 1)),
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
        precision=jax.lax.Precision.HIGHEST,
    )
    return y + params[f"{layer}.bias"][None, :, None, None]


def _forward(jax: Any, arch: str, params: Mapping[str, Any], x: Any) -> Any:
    relu = jax.nn.relu
    if arch == "conv2":
        x = relu(_conv3x3(jax, x, params, "conv1"))
        x = relu(_conv3x3(jax, x, params, "conv2"))
        x = jax.lax.reduce_window(x, -jax.numpy.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    x = x.reshape(x.shape[0], -1)  # NCHW flatten, same order as torch's x.flatten(1)
    x = relu(_linear(jax, x, params, "fc1"))
    x = relu(_linear(jax, x, params, "fc2"))
    return _linear(jax, x, params, "fc3")


def apply(params: Mapping[str, Any], x: Any, *, arch: str | None = None) -> Any:
    """Pure JAX forward pass of a built-in model (LeNet-300-100 or Conv-2): the logits.

    Matches ``ltfunc.call(model, params, x)`` of the PyTorch model to float tolerance. Works
    under ``jax.jit`` / ``jax.grad`` (the checks only read static shapes and names).

    Args:
        params: The exported params pytree (``to_jax(ltfunc.get_params(model))``; apply a
            mask first, e.g. ``to_jax(ltfunc.masks.apply(mask, params))`` or
            :func:`mask_params`). PyTorch layouts: Linear weights ``(out, in)``, conv kernels
            OIHW.
        x: Inputs as a JAX (or numpy) array: ``(N, 1, 28, 28)`` NCHW images; LeNet also takes
            any ``(N, ...)`` with 784 features per example.
        arch: ``"lenet300"`` or ``"conv2"``; ``None`` infers it from the parameter names.

    Returns:
        Logits ``(N, num_classes)``.

    Raises:
        ImportError: If JAX is not installed.
        TypeError: If ``params`` is not a mapping.
        ValueError: Names or shapes that do not form the model, or ``x`` of the wrong shape.

    Example:
        >>> import torch, ltfunc
        >>> from ltfunc.interop import jax as lj
        >>> model = ltfunc.models.lenet300(seed=0)
        >>> x = torch.randn(3, 1, 28, 28)
        >>> logits = lj.apply(lj.to_jax(ltfunc.get_params(model)), lj.to_jax(x))
        >>> torch.allclose(lj.from_jax(logits), model(x), atol=1e-5)
        True
    """
    jax = require_jax()
    arch = _arch("apply", params, arch)
    x = jax.numpy.asarray(x)
    _check_input("apply", arch, params, x)
    return _forward(jax, arch, params, x)


def predict(params: Mapping[str, Any], x: Any, *, arch: str | None = None) -> Any:
    """Predicted class of each example: ``argmax(apply(params, x), axis=-1)``.

    Args:
        params: See :func:`apply`.
        x: See :func:`apply`.
        arch: See :func:`apply`.

    Returns:
        An integer array ``(N,)``.

    Raises:
        ImportError, TypeError, ValueError: As :func:`apply`.

    Example:
        >>> import torch, ltfunc
        >>> from ltfunc.interop import jax as lj
        >>> p = lj.to_jax(ltfunc.get_params(ltfunc.models.lenet300(seed=0)))
        >>> lj.predict(p, lj.to_jax(torch.zeros(2, 784))).shape
        (2,)
    """
    jnp = require_jax().numpy
    return jnp.argmax(apply(params, x, arch=arch), axis=-1)


def cross_entropy(logits: Any, labels: Any) -> Any:
    """Mean softmax cross-entropy with integer labels, like ``torch.nn.functional.cross_entropy``.

    Args:
        logits: ``(N, C)`` array.
        labels: ``(N,)`` integer class indices.

    Returns:
        A scalar array.

    Raises:
        ImportError: If JAX is not installed.

    Example:
        >>> import jax.numpy as jnp
        >>> from ltfunc.interop import jax as lj
        >>> round(float(lj.cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3]))), 4)  # log(4)
        1.3863
    """
    jax = require_jax()
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jax.numpy.take_along_axis(logp, labels[:, None].astype(jax.numpy.int32), axis=-1).mean()


def mask_params(params: Mapping[str, Any], mask: Mapping[str, Any] | None) -> dict[str, Any]:
    """Zero the pruned entries of a JAX params (or gradients) pytree: ``p * mask``.

    Args:
        params: ``{name: array}``.
        mask: ``None`` (dense), ``to_jax(ltfunc_mask)`` or a jaxpruner-style pytree
            (:func:`to_jaxpruner`): ``{name: bool/0-1 array or None}`` over a subset of the
            names.

    Returns:
        A new dict; masked entries are ``p * mask`` in ``p``'s dtype, others unchanged.

    Raises:
        ImportError: If JAX is not installed.
        TypeError: If ``params`` or ``mask`` is not a mapping (an ltfunc ``Mask``: use
            :func:`to_jax` first).
        ValueError: Mask names not in ``params`` or shapes that differ.

    Example:
        >>> import jax.numpy as jnp
        >>> from ltfunc.interop import jax as lj
        >>> lj.mask_params({"w": jnp.array([3.0, 4.0])}, {"w": jnp.array([True, False])})["w"].tolist()
        [3.0, 0.0]
    """
    require_jax()
    _check_jax_mask("mask_params", params, mask)
    if mask is None:
        return dict(params)
    return {k: (v * mask[k].astype(v.dtype) if mask.get(k) is not None else v) for k, v in params.items()}


def _check_jax_mask(func: str, params: Any, mask: Any) -> None:
    if not isinstance(params, Mapping):
        raise TypeError(f"{func}: params must be a dict of arrays, got {type(params).__name__}")
    if mask is None:
        return
    if isinstance(mask, Mask) or not isinstance(mask, Mapping):
        raise TypeError(
            f"{func}: mask must be None or a dict of JAX arrays (convert an ltfunc Mask with "
            f"to_jax(mask) or to_jaxpruner(mask, params)), got {type(mask).__name__}"
        )
    check_mask_fits(func, "mask", mask, params)


# Training and evaluation ----------------------------------------------------------------------------
Step = Callable[[Any, Any, Any, tuple[Any, Any]], tuple[Any, Any, dict[str, Any]]]


def make_train_step(
    optimizer: Any,
    *,
    arch: str | None = None,
    loss_fn: Callable[[Any, Any], Any] | None = None,
    jit: bool = True,
) -> Step:
    """A masked training step in JAX, the counterpart of :func:`ltfunc.step.make_train_step`.

    ``step(params, opt_state, mask, (x, y)) -> (params, opt_state, metrics)``: ``params`` are
    masked on entry (a no-op for params that are already masked), the loss of
    ``apply(params, x)`` is differentiated, gradients of pruned weights are zeroed, the
    optimizer's update is added, and the mask is re-applied so pruned weights stay exactly 0.
    With ``optax.sgd(lr, momentum)`` this matches ltfunc's step with
    ``ltfunc.optim.sgd(lr, momentum)`` (PyTorch's SGD semantics) to float tolerance.

    Args:
        optimizer: An optax-style ``GradientTransformation``: ``init(params) -> state`` and
            ``update(grads, state, params) -> (updates, state)`` (the learning rate lives in
            the optimizer; use ``optax.inject_hyperparams`` to change it during training).
        arch: ``"lenet300"``, ``"conv2"`` or ``None`` (inferred from the parameter names).
        loss_fn: ``loss_fn(logits, labels) -> scalar``; default :func:`cross_entropy`.
        jit: Compile the step with ``jax.jit`` (default). A new mask of the same structure
            does not recompile.

    Returns:
        The step function. ``mask`` is ``None``, ``to_jax(mask)`` or a jaxpruner-style
        pytree; ``metrics`` is ``{"loss": scalar, "accuracy": scalar}`` of the batch,
        before the update.

    Raises:
        ImportError: If JAX is not installed.
        TypeError: If ``optimizer`` has no callable ``init``/``update``, or ``loss_fn`` is
            not callable.
        ValueError: Unknown ``arch``.

    Example:
        >>> import optax, torch, ltfunc
        >>> from ltfunc.interop import jax as lj
        >>> p = ltfunc.get_params(ltfunc.models.lenet300(seed=0))
        >>> mask = ltfunc.prune.magnitude(p, ltfunc.masks.ones(p), sparsity=0.9)
        >>> params, jmask = lj.to_jax(ltfunc.masks.apply(mask, p)), lj.to_jax(mask)
        >>> opt = optax.sgd(0.1)
        >>> step = lj.make_train_step(opt, jit=False)
        >>> x, y = lj.to_jax(torch.randn(8, 1, 28, 28)), lj.to_jax(torch.arange(8).int())
        >>> params, state, metrics = step(params, opt.init(params), jmask, (x, y))
        >>> bool(((params["fc1.weight"] != 0) == jmask["fc1.weight"]).all())  # pruned stay 0
        True
    """
    jax = require_jax()
    for name in ("init", "update"):
        if not callable(getattr(optimizer, name, None)):
            raise TypeError(
                f"make_train_step: optimizer must be an optax GradientTransformation with "
                f"callable init/update, got {type(optimizer).__name__} (ltfunc.optim optimizers "
                "are for torch; use e.g. optax.sgd)"
            )
    check_callable("make_train_step", "loss_fn", loss_fn, "callable(logits, labels) -> scalar", optional=True)
    if arch is not None:
        check_choice("make_train_step", "arch", arch, tuple(ARCHITECTURES))
    check_bool("make_train_step", "jit", jit)
    loss = loss_fn if loss_fn is not None else cross_entropy
    jnp = jax.numpy

    def step(
        params: Any, opt_state: Any, mask: Any, batch: tuple[Any, Any]
    ) -> tuple[Any, Any, dict[str, Any]]:
        _check_jax_mask("step", params, mask)
        x, y = batch
        params = mask_params(params, mask)  # like ltfunc's step: pruned weights are 0 in the forward

        def objective(p: Any) -> tuple[Any, Any]:
            logits = apply(p, x, arch=arch)
            return loss(logits, y), logits

        (value, logits), grads = jax.value_and_grad(objective, has_aux=True)(params)
        grads = mask_params(grads, mask)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = {k: (p + updates[k]).astype(p.dtype) for k, p in params.items()}
        params = mask_params(params, mask)
        accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == y).astype(jnp.float32))
        return params, opt_state, {"loss": value, "accuracy": accuracy}

    return jax.jit(step) if jit else step


@functools.lru_cache(maxsize=8)
def _eval_batch(arch: str) -> Any:
    jax = require_jax()
    jnp = jax.numpy

    def run(params: Any, x: Any, y: Any) -> tuple[Any, Any]:
        logits = _forward(jax, arch, params, x)
        logp = jax.nn.log_softmax(logits, axis=-1)
        nll = -jnp.take_along_axis(logp, y[:, None].astype(jnp.int32), axis=-1).sum()
        return nll, (jnp.argmax(logits, axis=-1) == y).sum()

    return jax.jit(run)


def evaluate(
    params: Mapping[str, Any],
    x: Any,
    y: Any,
    *,
    mask: Mapping[str, Any] | None = None,
    batch_size: int = 1000,
    arch: str | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a whole split, in JAX (like ``ltfunc.evaluate``).

    Args:
        params: JAX params pytree of a built-in model.
        x: Inputs (JAX, numpy or torch: torch tensors are converted with :func:`to_jax`).
        y: Integer labels ``(N,)`` (same kinds).
        mask: Optional mask applied to ``params`` first (see :func:`mask_params`).
        batch_size: Examples per jitted forward pass.
        arch: See :func:`apply`.

    Returns:
        ``(loss, accuracy)`` as Python floats; ``accuracy * N`` is the number correct.

    Raises:
        ImportError: If JAX is not installed.
        TypeError: Bad ``params``/``mask`` types or a non-int ``batch_size``.
        ValueError: Shape mismatches, empty or mismatched ``x``/``y``, ``batch_size < 1``.

    Example:
        >>> import torch, ltfunc
        >>> from ltfunc.interop import jax as lj
        >>> p = lj.to_jax(ltfunc.get_params(ltfunc.models.lenet300(seed=0)))
        >>> loss, acc = lj.evaluate(p, torch.zeros(10, 1, 28, 28), torch.zeros(10, dtype=torch.int32))
        >>> acc in (0.0, 1.0)
        True
    """
    jax = require_jax()
    jnp = jax.numpy
    check_int("evaluate", "batch_size", batch_size)
    if batch_size < 1:
        raise ValueError(f"evaluate: batch_size must be >= 1, got {batch_size}")
    arch = _arch("evaluate", params, arch)
    x, y = (to_jax(v, downcast=True) if isinstance(v, Tensor) else jnp.asarray(v) for v in (x, y))
    n = int(x.shape[0]) if x.ndim else 0
    if n == 0 or y.shape != (n,):
        raise ValueError(
            f"evaluate: need x of shape (N, ...) with N > 0 and y of shape (N,); got {x.shape} and {y.shape}"
        )
    _check_input("evaluate", arch, params, x[:1])
    params = mask_params(params, mask)
    run = _eval_batch(arch)
    nll, correct = 0.0, 0
    for start in range(0, n, batch_size):
        b_nll, b_correct = run(params, x[start : start + batch_size], y[start : start + batch_size])
        nll += float(b_nll)
        correct += int(b_correct)
    return nll / n, correct / n
