"""The same masked training step in JAX + optax under ``jax.jit`` (imported only when JAX is installed)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from jax import lax

import ltfunc
from ltfunc.masks import Mask

from .cases import HPARAMS, Runner, make_model

Tree = dict[str, jax.Array]


def jax_device(device: torch.device) -> Any:
    """The JAX device matching a torch device (``jax.devices("gpu")`` raises when there is none)."""
    return jax.devices("gpu" if device.type == "cuda" else "cpu")[0]


def _dense(p: Tree, name: str, h: jax.Array) -> jax.Array:
    return h @ p[f"{name}.weight"].T + p[f"{name}.bias"]


def _lenet300(p: Tree, x: jax.Array) -> jax.Array:
    h = x.reshape(x.shape[0], -1)
    h = jax.nn.relu(_dense(p, "fc1", h))
    h = jax.nn.relu(_dense(p, "fc2", h))
    return _dense(p, "fc3", h)


def _conv(p: Tree, name: str, h: jax.Array) -> jax.Array:
    out = lax.conv_general_dilated(
        h, p[f"{name}.weight"], (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NCHW", "OIHW", "NCHW")
    )
    return out + p[f"{name}.bias"][None, :, None, None]


def _conv2(p: Tree, x: jax.Array) -> jax.Array:
    h = jax.nn.relu(_conv(p, "conv1", x))
    h = jax.nn.relu(_conv(p, "conv2", h))
    h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    h = h.reshape(h.shape[0], -1)
    h = jax.nn.relu(_dense(p, "fc1", h))
    h = jax.nn.relu(_dense(p, "fc2", h))
    return _dense(p, "fc3", h)


FORWARD = {"lenet300": _lenet300, "conv2": _conv2}


def jax_runner(name: str, device: torch.device, optimizer: str, mask: Mask) -> Runner:
    """Masked step in JAX: grads times mask, optax update, params times mask; jitted with donation.

    Starts from the same initial weights and mask as the torch runners (PyTorch layouts:
    ``(out, in)`` linear weights, NCHW / OIHW convolutions). Matmuls run in full float32
    (``jax_default_matmul_precision="float32"``), as PyTorch's do by default.
    """
    jax.config.update("jax_default_matmul_precision", "float32")
    dev = jax_device(device)
    forward = FORWARD[name]
    hp = HPARAMS[optimizer]
    tx = optax.sgd(hp["lr"], momentum=hp["momentum"]) if optimizer == "momentum" else optax.adam(hp["lr"])
    start = ltfunc.masks.apply(mask, ltfunc.get_params(make_model(name, torch.device("cpu"))))
    params = {k: jax.device_put(v.numpy(), dev) for k, v in start.items()}
    jmask = {k: jax.device_put(m.cpu().numpy().astype(np.float32), dev) for k, m in mask.items()}

    def loss_fn(p: Tree, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits = forward(p, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

    def step(p: Tree, s: Any, m: Tree, x: jax.Array, y: jax.Array) -> tuple[Tree, Any, dict[str, jax.Array]]:
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, x, y)
        grads = {k: g * m[k] if k in m else g for k, g in grads.items()}
        updates, s = tx.update(grads, s, p)
        p = optax.apply_updates(p, updates)
        p = {k: v * m[k] if k in m else v for k, v in p.items()}
        accuracy = (jnp.argmax(logits, -1) == y).mean()
        return p, s, {"loss": loss, "accuracy": accuracy}

    jstep = jax.jit(step, donate_argnums=(0, 1))
    state: dict[str, Any] = {"params": params, "opt": tx.init(params)}

    def run(x: Any, y: Any) -> jax.Array:
        state["params"], state["opt"], metrics = jstep(state["params"], state["opt"], jmask, x, y)
        return metrics["loss"]

    def convert(x: torch.Tensor, y: torch.Tensor) -> tuple[jax.Array, jax.Array]:
        return (
            jax.device_put(x.cpu().numpy(), dev),
            jax.device_put(y.cpu().numpy().astype(np.int32), dev),
        )

    def weights() -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.array(v)) for k, v in state["params"].items()}

    def sync() -> None:
        jax.block_until_ready(state["params"])

    return Runner(run, weights, sync, convert)
