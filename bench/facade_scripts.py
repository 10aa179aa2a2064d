"""The seed's MNIST example workflow as two small scripts, for ``bench/facade.py`` to time whole.

``train``: LeNet-300-100 trained with ``train_on_batch`` in the seed's loop over a
``DataLoader(MNIST, ToTensor)`` (optionally under an 80% mask, as ``prune_train_mnist.py``),
with ``--evals`` evaluations of the test set spread over the run. ``masks``: one
``get_masks_by_iteration`` call (``get_mask_mnist_itr.py``). ``--impl`` picks the class: ``seed``
(``bench/seed_style.py``), ``ltfunc`` (``from ltfunc import LotteryTicket``: the import swap) or
``ltfunc-preload`` (the swap plus ``loader = ltfunc.preload(loader)``).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ltfunc
from bench.seed_style import SeedStyleLotteryTicket


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=("train", "masks"))
    p.add_argument("--impl", choices=("seed", "ltfunc", "ltfunc-preload"), required=True)
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--evals", type=int, default=0)
    p.add_argument("--masked", action="store_true")
    p.add_argument("--prune-itr", type=int, default=4)
    p.add_argument("--train-itrs", type=int, default=150)
    args = p.parse_args()
    torch.manual_seed(0)

    tf = transforms.Compose([transforms.ToTensor()])
    train = datasets.MNIST(str(args.data_root / "mnist"), train=True, download=False, transform=tf)
    test = datasets.MNIST(str(args.data_root / "mnist"), train=False, download=False, transform=tf)
    train_loader = torch.utils.data.DataLoader(train, batch_size=60, shuffle=True, drop_last=True)
    test_loader = torch.utils.data.DataLoader(test, batch_size=500)
    if args.impl == "ltfunc-preload":
        train_loader, test_loader = ltfunc.preload(train_loader), ltfunc.preload(test_loader)

    model = ltfunc.models.lenet300(seed=0)
    init = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=1.2e-3)
    criterion = torch.nn.CrossEntropyLoss()
    if args.impl == "seed":
        LT: object = SeedStyleLotteryTicket(model, "cpu", optimizer, criterion, init)
    else:
        LT = ltfunc.LotteryTicket(model, "cpu", optimizer, criterion, init)

    if args.command == "masks":
        LT.get_masks_by_iteration(  # type: ignore[attr-defined]
            args.prune_itr, 0, 0.8 / args.prune_itr, train_loader, args.train_itrs, "layer"
        )
        return
    if args.masked:
        masks = LT.get_masks_by_single_shot(0, 0.8, "layer")  # type: ignore[attr-defined]
        LT.set_masks(masks).train_init()  # type: ignore[attr-defined]
    LT.train()  # type: ignore[attr-defined]
    every = args.iterations // args.evals if args.evals else 0
    itr = 0
    while itr < args.iterations:
        for x, y in train_loader:
            LT.train_on_batch(x, y)  # type: ignore[attr-defined]
            itr += 1
            if every and itr % every == 0:
                print(itr, LT.eval_all(test_loader))  # type: ignore[attr-defined]
                LT.train()  # type: ignore[attr-defined]
            if itr == args.iterations:
                break


if __name__ == "__main__":
    main()
