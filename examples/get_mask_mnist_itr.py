"""Step 2b: iterative magnitude pruning (the seed's ``get_mask_mnist_itr.py``).

Loads the trained weights (``OUT/ckpt.pt``) and the init weights (``OUT/init.pt``) from
``train_mnist.py``. Round 1 prunes ``prune_percent / prune_itr`` of the trained fc weights;
every later round resets the survivors to the init weights, retrains ``--train-itrs`` batches
and prunes again, to ``k * prune_percent / prune_itr`` after round ``k``. Saves
``OUT/masks_<percent>_<mode>_<prune_itr>.pt`` as ``{"masks": masks}``.

Run: ``python examples/get_mask_mnist_itr.py [--prune-itr 4] [--train-itrs 5000]``.
"""

from __future__ import annotations

import torch
from _common import add_prune_args, compile_mode, load_net, masks_file, mnist_loaders, parser, save_masks

import ltfunc
from ltfunc import LotteryTicket


def main(argv: list[str] | None = None) -> ltfunc.Mask:
    p = parser(__doc__.splitlines()[0])
    add_prune_args(p, prune_itr=4)
    p.add_argument("--train-itrs", type=int, default=300, help="batches per round (the seed used 5000)")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)

    train_loader, _ = mnist_loaders(args.data_root, args.batch_size, args.eval_batch_size, args.seed)
    model = ltfunc.models.lenet300().to(args.device)
    model.load_state_dict(load_net(args.out, "ckpt.pt", args.device))
    init_weights = load_net(args.out, "init.pt", args.device)

    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    LT = LotteryTicket(model, args.device, optimizer, criterion, init_weights, compile=compile_mode(args))

    masks = LT.get_masks_by_iteration(
        args.prune_itr, 0, args.prune_percent / args.prune_itr, train_loader, args.train_itrs, args.mode
    )

    save_masks(masks, masks_file(args.out, args.prune_percent, args.mode, args.prune_itr))
    return masks


if __name__ == "__main__":
    main()
