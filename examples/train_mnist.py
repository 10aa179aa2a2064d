"""Step 1: train the dense FC 784-300-100-10 network on MNIST and save its init and trained weights.

The seed's ``example/train_mnist.py`` with ``from ltfunc import LotteryTicket``: Adam 1.2e-3,
batch 60, a plain torchvision ``DataLoader``. The facade with its default all-ones masks is a
dense trainer running ltfunc's compiled step. Writes (seed format, ``torch.save`` of dicts):

* ``OUT/init.pt``  ``{"net": state_dict before training, "itr": 0}``
* ``OUT/ckpt.pt``  ``{"net": trained state_dict, "acc": test accuracy, "itr": iterations}``

Run: ``python examples/train_mnist.py [--train-itrs 8000] [--out examples_out]``.
"""

from __future__ import annotations

import copy
import json

import torch
from _common import compile_mode, mnist_loaders, parser

import ltfunc
from ltfunc import LotteryTicket


def main(argv: list[str] | None = None) -> float:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--train-itrs", type=int, default=1000, help="training batches (the seed used 8000)")
    p.add_argument("--eval-itrs", type=int, default=250, help="evaluate every this many batches")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    train_loader, test_loader = mnist_loaders(
        args.data_root, args.batch_size, args.eval_batch_size, args.seed
    )
    model = ltfunc.models.lenet300(seed=args.seed).to(args.device)
    torch.save({"net": copy.deepcopy(model.state_dict()), "itr": 0}, args.out / "init.pt")

    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    LT = LotteryTicket(model, args.device, optimizer, criterion, compile=compile_mode(args))

    log = (args.out / "log_dense.jsonl").open("w")
    itr_index, test_acc = 1, 0.0
    LT.train()
    while itr_index <= args.train_itrs:
        for inputs, targets in train_loader:
            loss, acc, _ = LT.train_on_batch(inputs, targets)
            if itr_index % args.eval_itrs == 0 or itr_index == args.train_itrs:
                test_loss, test_acc = LT.eval_all(test_loader)
                print(
                    f"itr: {itr_index}/{args.train_itrs}, loss={loss:.4f}, acc={acc:.3f}, "
                    f"test_loss={test_loss:.4f}, test_acc={test_acc:.4f}"
                )
                record = {"itr": itr_index, "train_loss": loss, "test_loss": test_loss, "test_acc": test_acc}
                log.write(json.dumps(record) + "\n")
                torch.save(
                    {"net": model.state_dict(), "acc": test_acc, "itr": itr_index}, args.out / "ckpt.pt"
                )
            itr_index += 1
            if itr_index > args.train_itrs:
                break
    log.close()
    print(f"saved {args.out / 'init.pt'} and {args.out / 'ckpt.pt'} (test accuracy {test_acc:.4f})")
    return test_acc


if __name__ == "__main__":
    main()
