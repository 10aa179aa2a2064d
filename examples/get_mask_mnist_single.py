"""Step 2a: one-shot magnitude pruning of the trained network (the seed's ``get_mask_mnist_single.py``).

Loads ``OUT/ckpt.pt`` from ``train_mnist.py``, prunes ``--prune-percent`` of the fc weights by
magnitude in one shot (``--mode layer``: within each layer; ``global``: one threshold over
all fc layers; conv kernels: none here) and saves ``OUT/masks_<percent>_<mode>_1.pt`` as
``{"masks": masks}``, the seed's format.

Run: ``python examples/get_mask_mnist_single.py [--prune-percent 0.8] [--mode layer]``.
"""

from __future__ import annotations

import torch
from _common import add_prune_args, masks_file, parser, require

import ltfunc
from ltfunc import LotteryTicket


def main(argv: list[str] | None = None) -> ltfunc.Mask:
    p = parser(__doc__.splitlines()[0])
    add_prune_args(p, prune_itr=1)
    args = p.parse_args(argv)

    model = ltfunc.models.lenet300().to(args.device)
    trained_weights = torch.load(require(args.out / "ckpt.pt", "train_mnist.py"), map_location=args.device)[
        "net"
    ]
    model.load_state_dict(trained_weights)

    LT = LotteryTicket(model, args.device)  # no optimizer/criterion needed for single-shot masks
    masks = LT.get_masks_by_single_shot(0, args.prune_percent, args.mode)

    for name, m in masks.items():
        print(f"{name}: kept {int(m.sum())}/{m.numel()} ({m.float().mean().item():.1%})")
    path = masks_file(args.out, args.prune_percent, args.mode, args.prune_itr)
    torch.save({"masks": masks}, path)
    print(f"saved {path}")
    return masks


if __name__ == "__main__":
    main()
