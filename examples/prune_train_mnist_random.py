"""Step 4: the control, the same mask from a fresh random init (seed: ``prune_train_mnist_random.py``).

Identical to ``prune_train_mnist.py`` except that the survivors are reset to a *new* random
initialization (``--reinit-seed``) instead of the original one. A winning ticket trains
faster and/or reaches a higher accuracy than this control. Logs to ``OUT/log_<tag>_random.jsonl``.

Run: ``python examples/prune_train_mnist_random.py [--prune-itr 1] [--train-itrs 8000]``.
"""

from __future__ import annotations

import copy

import torch
from _common import parser
from prune_train_mnist import add_retrain_args, retrain

import ltfunc


def main(argv: list[str] | None = None) -> float:
    p = parser(__doc__.splitlines()[0])
    add_retrain_args(p)
    p.add_argument("--reinit-seed", type=int, default=12345, help="seed of the fresh random initialization")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    model = ltfunc.models.lenet300(seed=args.reinit_seed).to(args.device)
    init_weights = copy.deepcopy(model.state_dict())  # a new random initialization
    tag = f"{args.prune_percent}_{args.mode}_{args.prune_itr}_random"
    return retrain(args, model, init_weights, tag, "the random re-init")


if __name__ == "__main__":
    main()
