"""The same MNIST workflow with ltfunc's functional API: pure params, masks and one compiled step.

Steps 1-4 of the facade examples in one script, side by side with their ``LotteryTicket`` calls:

1. train the dense network from θ0                        (train_mnist.py)
2. prune ``--prune-percent`` of the fc weights by magnitude, in one shot and over
   ``--prune-itr`` rounds of reset-retrain-prune           (get_mask_mnist_single/_itr.py)
3. retrain the ticket: survivors reset to θ0              (prune_train_mnist.py)
4. retrain the same mask from a fresh random init         (prune_train_mnist_random.py)

Nothing here mutates a module: weights are ``{name: tensor}`` dicts, masks immutable
``ltfunc.Mask`` pytrees, training is ``ltfunc.train_round`` (``ltfunc.fit`` over on-device
batches from ``ltfunc.data``). Masks and weights are saved as safetensors in
``OUT/functional/``. (``ltfunc.imp`` / the ``ltfunc imp`` command run Frankle & Carbin's
IMP with baselines and resumable run folders; this script mirrors the seed's schedule.)

Run: ``python examples/functional_imp.py [--iterations 8000] [--prune-itr 4]``.
"""

from __future__ import annotations

import torch
from _common import default_data_root

import ltfunc
from ltfunc import Rates, Weights, data, masks, optim, prune, ticket


def main(argv: list[str] | None = None) -> dict[str, float]:
    import argparse
    from pathlib import Path

    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data-root", type=Path, default=default_data_root(), help="folder holding mnist/")
    p.add_argument("--out", type=Path, default=Path("examples_out"), help="output folder")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0, help="seed of θ0 and of the batch order")
    p.add_argument("--lr", type=float, default=1.2e-3, help="Adam learning rate")
    p.add_argument("--batch-size", type=int, default=60)
    p.add_argument("--iterations", type=int, default=1000, help="training iterations of every run")
    p.add_argument("--eval-every", type=int, default=250, help="evaluate the test set every N iterations")
    p.add_argument("--prune-percent", type=float, default=0.8, help="total fraction of fc weights pruned")
    p.add_argument("--mode", choices=("layer", "global"), default="layer")
    p.add_argument("--prune-itr", type=int, default=4, help="rounds of the iterative mask")
    p.add_argument("--reinit-seed", type=int, default=12345, help="seed of the random re-init control")
    p.add_argument("--no-compile", action="store_true", help="run the training step eagerly")
    args = p.parse_args(argv)
    out = args.out / "functional"

    ds = data.load_dataset("mnist", args.data_root, device=args.device)
    model = ltfunc.models.lenet300(seed=args.seed).to(args.device)  # only the architecture is used
    theta0 = Weights.of(model)  # params (and buffers, none here)
    opt = optim.adam(lr=args.lr)
    train_step = ltfunc.make_train_step(model, opt, compile=not args.no_compile)  # made once, reused
    trainer = ltfunc.make_trainer(
        train_step,
        ds.train,
        iterations=args.iterations,
        batch_size=args.batch_size,
        lr=args.lr,
        data_seed=args.seed,
        eval_every=args.eval_every,
        evaluate=ltfunc.make_evaluator(model, {"test": ds.test}),
    )
    dense_mask = masks.ones(theta0.params)

    def train(start: Weights, mask: ltfunc.Mask, name: str) -> ltfunc.trainer.RoundTraining:
        run = ltfunc.train_round(trainer, start, mask)
        for r in run.history:
            print(
                f"[{name}] itr {r['iteration']}: train_loss={r['train_loss']:.4f} "
                f"test_loss={r['test_loss']:.4f} test_acc={r['test_accuracy']:.4f}"
            )
        return run

    # 1. dense training                                   LT.train_on_batch(...) in a loop
    dense = train(theta0, dense_mask, "dense")
    ltfunc.save_tree(theta0.params, out / "init.safetensors")
    ltfunc.save_tree(dense.final.params, out / "trained.safetensors")

    # 2a. one-shot magnitude pruning                      LT.get_masks_by_single_shot(0, p, mode)
    fc_only = Rates(conv=0.0, fc=args.prune_percent)
    single = prune.magnitude(dense.final.params, dense_mask, sparsity=fc_only, scope=args.mode)
    masks.save(single, out / f"masks_{args.prune_percent}_{args.mode}_1.safetensors")

    # 2b. iterative pruning: prune to k·p/n, reset to θ0, retrain, repeat
    #     LT.get_masks_by_iteration(n, 0, p / n, loader, itrs, mode)
    per_round = args.prune_percent / args.prune_itr
    mask, trained = dense_mask, dense.final.params
    for k in range(1, args.prune_itr + 1):
        mask = prune.magnitude(trained, mask, sparsity=Rates(conv=0.0, fc=k * per_round), scope=args.mode)
        if k < args.prune_itr:
            trained = train(ltfunc.reset_to(theta0, mask), mask, f"round {k + 1}").final.params
    iterative = mask
    masks.save(iterative, out / f"masks_{args.prune_percent}_{args.mode}_{args.prune_itr}.safetensors")

    # 3. the ticket: survivors reset to θ0               LT.set_masks(masks).train_init(); train loop
    results = {"dense": dense.history[-1]["test_accuracy"]}
    for name, m in (("ticket (single-shot)", single), (f"ticket ({args.prune_itr} rounds)", iterative)):
        results[name] = train(ltfunc.reset_to(theta0, m), m, name).history[-1]["test_accuracy"]

    # 4. the control: same mask, fresh random init        LotteryTicket(..., new init_weights, masks)
    _, reinit_start = ticket.baseline_start("reinit", single, theta0, model=model, seed=args.reinit_seed)
    results["random reinit (single-shot)"] = train(reinit_start, single, "reinit").history[-1][
        "test_accuracy"
    ]

    print(f"\n{'condition':32s} {'weights left':>12s} {'test acc':>9s}")
    density = {"dense": 1.0}
    density.update(
        {k: masks.density(iterative if "rounds" in k else single) for k in results if k != "dense"}
    )
    for name, acc in results.items():
        print(f"{name:32s} {density[name]:12.1%} {acc:9.4f}")
    return results


if __name__ == "__main__":
    main()
