"""Step 2a: one-shot magnitude pruning of the trained network (the seed's ``get_mask_mnist_single.py``).

Loads ``OUT/ckpt.pt`` from ``train_mnist.py``, prunes ``--prune-percent`` of the fc weights by
magnitude in one shot (``--mode layer``: within each layer; ``global``: one threshold over
all fc layers; conv kernels: none here) and saves ``OUT/masks_<percent>_<mode>_1.pt`` as
``{"masks": masks}``, the seed's format.

Run: ``python examples/get_mask_mnist_single.py [--prune-percent 0.8] [--mode layer]``.
"""

from __future__ import annotations

from _common import add_prune_args, load_net, masks_file, parser, save_masks

import ltfunc
from ltfunc import LotteryTicket


def main(argv: list[str] | None = None) -> ltfunc.Mask:
    p = parser(__doc__.splitlines()[0])
    add_prune_args(p, prune_itr=None)  # one shot: the mask file always ends in _1
    args = p.parse_args(argv)

    model = ltfunc.models.lenet300().to(args.device)
    model.load_state_dict(load_net(args.out, "ckpt.pt", args.device))

    LT = LotteryTicket(model, args.device)  # no optimizer/criterion needed for single-shot masks
    masks = LT.get_masks_by_single_shot(0, args.prune_percent, args.mode)

    save_masks(masks, masks_file(args.out, args.prune_percent, args.mode, 1))
    return masks


if __name__ == "__main__":
    main()
