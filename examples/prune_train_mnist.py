"""Step 3: retrain the ticket, the masked network reset to its init weights (seed: ``prune_train_mnist.py``).

Loads ``OUT/init.pt`` and ``OUT/masks_<percent>_<mode>_<prune_itr>.pt`` (``--prune-itr 1``:
the single-shot mask, ``4``: the iterative one), resets the survivors to their init values
(``LT.train_init()``) and trains with the user's own loop around ``LT.train_on_batch``. Logs
test accuracy to ``OUT/log_<tag>.jsonl`` and saves ``OUT/ckpt_<tag>.pt``.

Run: ``python examples/prune_train_mnist.py [--prune-itr 1] [--train-itrs 8000]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from _common import add_prune_args, compile_mode, load_net, masks_file, mnist_loaders, parser, require

import ltfunc
from ltfunc import LotteryTicket


def train_loop(
    LT: LotteryTicket,
    train_loader: torch.utils.data.DataLoader,
    test_loader: torch.utils.data.DataLoader,
    train_itrs: int,
    eval_itrs: int,
    out: Path,
    tag: str,
) -> float:
    """The seed's training loop: ``train_on_batch`` per batch, ``eval_all`` every ``eval_itrs``."""
    itr_index, test_acc = 1, 0.0
    with (out / f"log_{tag}.jsonl").open("w") as log:
        LT.train()
        while itr_index <= train_itrs:
            for inputs, targets in train_loader:
                loss, acc, _ = LT.train_on_batch(inputs, targets)
                if itr_index % eval_itrs == 0 or itr_index == train_itrs:
                    LT.eval()
                    test_loss, test_acc = LT.eval_all(test_loader)
                    print(
                        f"[{tag}] itr: {itr_index}/{train_itrs}, loss={loss:.4f}, acc={acc:.3f}, "
                        f"test_loss={test_loss:.4f}, test_acc={test_acc:.4f}"
                    )
                    record = {
                        "itr": itr_index,
                        "train_loss": loss,
                        "test_loss": test_loss,
                        "test_acc": test_acc,
                    }
                    log.write(json.dumps(record) + "\n")
                    state = {"net": LT.model.state_dict(), "acc": test_acc, "itr": itr_index}
                    torch.save(state, out / f"ckpt_{tag}.pt")
                    LT.train()  # return to train state
                itr_index += 1
                if itr_index > train_itrs:
                    break
    return test_acc


def add_retrain_args(p: argparse.ArgumentParser) -> None:
    """The options of steps 3 and 4: the mask to load, training and evaluation iterations."""
    add_prune_args(p, prune_itr=1)
    p.add_argument("--train-itrs", type=int, default=1000, help="training batches (the seed used 8000)")
    p.add_argument("--eval-itrs", type=int, default=250, help="evaluate every this many batches")


def retrain(
    args: argparse.Namespace,
    model: torch.nn.Module,
    init_weights: dict[str, torch.Tensor],
    tag: str,
    what: str,
) -> float:
    """Steps 3 and 4: load the mask, reset the survivors of ``model`` to ``init_weights`` and train."""
    masks_path = masks_file(args.out, args.prune_percent, args.mode, args.prune_itr)
    masks_path = require(masks_path, "get_mask_mnist_single.py or get_mask_mnist_itr.py")
    masks = torch.load(masks_path, map_location=args.device)["masks"]
    train_loader, test_loader = mnist_loaders(
        args.data_root, args.batch_size, args.eval_batch_size, args.seed
    )

    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    LT = LotteryTicket(
        model, args.device, optimizer, criterion, init_weights, masks, compile=compile_mode(args)
    )
    LT.train_init()  # survivors <- init weights, pruned weights <- 0, fresh optimizer state
    print(f"[{tag}] training {what}: {ltfunc.masks.density(LT.masks):.1%} of the prunable weights remain")

    test_acc = train_loop(LT, train_loader, test_loader, args.train_itrs, args.eval_itrs, args.out, tag)
    print(f"[{tag}] final test accuracy {test_acc:.4f}")
    return test_acc


def main(argv: list[str] | None = None) -> float:
    p = parser(__doc__.splitlines()[0])
    add_retrain_args(p)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    init_weights = load_net(args.out, "init.pt", args.device)
    model = ltfunc.models.lenet300().to(args.device)
    tag = f"{args.prune_percent}_{args.mode}_{args.prune_itr}"
    return retrain(args, model, init_weights, tag, "the ticket")


if __name__ == "__main__":
    main()
