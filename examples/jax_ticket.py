"""Find a lottery ticket with ltfunc (PyTorch), export it to JAX and evaluate it there.

One short round of the lottery-ticket procedure on real MNIST with LeNet-300-100:

1. train the dense network briefly (Adam, ltfunc's masked training step);
2. prune the smallest-magnitude weights of each layer (80% by default);
3. reset the survivors to their initial values and retrain the sparse network briefly;
4. evaluate the ticket on the test set in PyTorch (``ltfunc.evaluate``), export the
   params and the mask to JAX through DLPack (``ltfunc.interop.jax``) and evaluate it there
   with the pure JAX forward pass; both must count the same number of correct predictions.

Needs the JAX extra: ``pip install 'ltfunc[jax]'``. Run from the repository root::

    python examples/jax_ticket.py --data-root ../shared/data

Exit status 0 when both frameworks agree on every prediction, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import ltfunc
from ltfunc import evaluate, make_train_step, masks
from ltfunc.data import Split, batches, load_dataset
from ltfunc.interop import jax as lj
from ltfunc.optim import adam

ROOT = Path(__file__).resolve().parents[1]


def default_data_root() -> Path:
    """$LTFUNC_DATA_ROOT, else ``../shared/data`` beside the repository."""
    env = os.environ.get("LTFUNC_DATA_ROOT")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults give a run of well under a minute on a laptop CPU)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=default_data_root(), help="folder holding mnist/")
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    p.add_argument("--iterations", type=int, default=500, help="dense training steps")
    p.add_argument("--retrain-iterations", type=int, default=500, help="steps to retrain the ticket")
    p.add_argument("--sparsity", type=float, default=0.8, help="fraction of each layer's weights pruned")
    p.add_argument("--batch-size", type=int, default=60)
    p.add_argument("--lr", type=float, default=1.2e-3, help="Adam learning rate")
    p.add_argument("--test-size", type=int, default=None, help="evaluate on the first N test images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    return p.parse_args(argv)


def train(step, params, mask, split, iterations: int, args: argparse.Namespace, seed: int):
    """``iterations`` masked Adam steps from ``params``; returns the trained params."""
    state = step.init(params)  # a fresh Adam state
    lr = torch.tensor(args.lr)
    data = batches(split, args.batch_size, seed=seed)
    for _ in range(iterations):
        state, _ = step(state, mask, next(data), lr)
    return state.params


def main(argv: list[str] | None = None) -> int:
    """Run the example; returns the exit status."""
    args = parse_args(argv)
    start = time.perf_counter()
    ds = load_dataset(args.dataset, args.data_root)
    test = (
        ds.test if args.test_size is None else Split(ds.test.x[: args.test_size], ds.test.y[: args.test_size])
    )

    model = ltfunc.models.lenet300(seed=args.seed)
    theta0 = ltfunc.get_params(model)
    step = make_train_step(model, adam(lr=args.lr), compile=args.compile)

    dense_mask = masks.ones(theta0)
    trained = train(step, theta0, dense_mask, ds.train, args.iterations, args, seed=args.seed)
    mask = ltfunc.prune.magnitude(trained, dense_mask, sparsity=args.sparsity)
    ticket = train(
        step, masks.apply(mask, theta0), mask, ds.train, args.retrain_iterations, args, args.seed + 1
    )
    total = masks.counts(mask)["__all__"]
    print(
        f"ticket: LeNet-300-100 on {args.dataset}, {args.iterations} + {args.retrain_iterations} steps, "
        f"{total.kept:,} of {total.total:,} prunable weights kept ({100 * total.density:.2f}%)"
    )

    # PyTorch evaluation.
    n = test.size
    pt_loss, pt_acc = evaluate(model, ticket, mask, test)
    pt_pred = ltfunc.call(model, masks.apply(mask, ticket), test.x).argmax(1)

    # Export to JAX: params zero-copy through DLPack, the mask in jaxpruner's convention.
    jparams = lj.to_jax(ticket)
    jmask = lj.to_jaxpruner(mask, ticket)
    shared = sum(lj.shares_memory(ticket[k], jparams[k]) for k in ticket)
    jax_loss, jax_acc = lj.evaluate(jparams, test.x, test.y, mask=jmask)
    jax_pred = np.asarray(lj.predict(lj.mask_params(jparams, jmask), lj.to_jax(test.x)))

    pt_correct, jax_correct = round(pt_acc * n), round(jax_acc * n)
    differ = int((jax_pred != pt_pred.numpy()).sum())
    identical = pt_correct == jax_correct and differ == 0
    note = " (JAX copied the views into ltfunc's flat buffer that are not 64-byte aligned)"
    print(
        f"exported to JAX: {shared} of {len(ticket)} tensors zero-copy{note if shared < len(ticket) else ''}"
    )
    print(f"PyTorch: loss {pt_loss:.4f}  accuracy {pt_acc:.4f}  ({pt_correct} of {n} correct)")
    print(f"JAX:     loss {jax_loss:.4f}  accuracy {jax_acc:.4f}  ({jax_correct} of {n} correct)")
    print(f"predictions that differ: {differ}; identical: {identical}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
