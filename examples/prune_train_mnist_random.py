"""Step 4: the control, the same mask from a fresh random init (seed: ``prune_train_mnist_random.py``).

Identical to ``prune_train_mnist.py`` except that the survivors are reset to a *new* random
initialization (``--reinit-seed``) instead of the original one. A winning ticket trains
faster and/or reaches a higher accuracy than this control. Logs to ``OUT/log_<tag>_random.jsonl``.

Run: ``python examples/prune_train_mnist_random.py [--prune-itr 1] [--train-itrs 8000]``.
"""

from __future__ import annotations

import copy

import torch
from _common import add_prune_args, masks_file, mnist_loaders, parser, require
from prune_train_mnist import train_loop

import ltfunc
from ltfunc import LotteryTicket


def main(argv: list[str] | None = None) -> float:
    p = parser(__doc__.splitlines()[0])
    add_prune_args(p, prune_itr=1)
    p.add_argument("--train-itrs", type=int, default=1000, help="training batches (the seed used 8000)")
    p.add_argument("--eval-itrs", type=int, default=250, help="evaluate every this many batches")
    p.add_argument("--reinit-seed", type=int, default=12345, help="seed of the fresh random initialization")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    tag = f"{args.prune_percent}_{args.mode}_{args.prune_itr}_random"

    train_loader, test_loader = mnist_loaders(
        args.data_root, args.batch_size, args.eval_batch_size, args.seed
    )
    model = ltfunc.models.lenet300(seed=args.reinit_seed).to(args.device)
    init_weights = copy.deepcopy(model.state_dict())  # a new random initialization
    masks_path = masks_file(args.out, args.prune_percent, args.mode, args.prune_itr)
    masks_path = require(masks_path, "get_mask_mnist_single.py or get_mask_mnist_itr.py")
    masks = torch.load(masks_path, map_location=args.device)["masks"]

    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    LT = LotteryTicket(
        model, args.device, optimizer, criterion, init_weights, masks, compile=not args.no_compile
    )
    LT.train_init()
    print(f"[{tag}] training the random re-init: {LT.masks.density():.1%} of the prunable weights remain")

    test_acc = train_loop(LT, train_loader, test_loader, args.train_itrs, args.eval_itrs, args.out, tag)
    print(f"[{tag}] final test accuracy {test_acc:.4f}")
    return test_acc


if __name__ == "__main__":
    main()
