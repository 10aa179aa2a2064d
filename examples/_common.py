"""Shared command-line plumbing of the MNIST examples (data folder, output folder, device, loaders).

Kept tiny on purpose: each example script reads top to bottom like the seed's, and only the
argument parsing and the torchvision ``DataLoader`` set-up live here.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torchvision import datasets, transforms

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_data_root() -> Path:
    """``$LTFUNC_DATA_ROOT``, else ``../shared/data`` beside the repository if it holds MNIST,
    else ``~/.cache/ltfunc/data`` (MNIST is downloaded there on first use)."""
    env = os.environ.get("LTFUNC_DATA_ROOT")
    if env:
        return Path(env).expanduser()
    shared = REPO_ROOT.parent / "shared" / "data"
    if (shared / "mnist").is_dir():
        return shared
    return Path.home() / ".cache" / "ltfunc" / "data"


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every example shares."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--data-root",
        type=Path,
        default=default_data_root(),
        help="folder holding mnist/ in torchvision layout (downloaded there if missing)",
    )
    p.add_argument("--out", type=Path, default=Path("examples_out"), help="folder for weights, masks, logs")
    p.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="'cpu', 'cuda' or 'cuda:N'"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the initialization and data order")
    p.add_argument("--lr", type=float, default=1.2e-3, help="Adam learning rate")
    p.add_argument("--batch-size", type=int, default=60, help="training batch size")
    p.add_argument("--eval-batch-size", type=int, default=500, help="evaluation batch size")
    p.add_argument("--no-compile", action="store_true", help="run the training step eagerly")
    return p


def compile_mode(args: argparse.Namespace) -> bool | str:
    """The facade's ``compile=``: ``"auto"`` (eager until compiling pays off); ``--no-compile``: False."""
    return False if args.no_compile else "auto"


def add_prune_args(p: argparse.ArgumentParser, prune_itr: int | None) -> None:
    """Options naming a mask: prune percent, mode and (unless ``prune_itr`` is None) the number of
    pruning rounds, ``--prune-itr``, defaulting to ``prune_itr``."""
    p.add_argument("--prune-percent", type=float, default=0.8, help="total fraction of fc weights pruned")
    p.add_argument(
        "--mode", choices=("layer", "global"), default="layer", help="layer-wise or global ranking"
    )
    if prune_itr is not None:
        p.add_argument(
            "--prune-itr", type=int, default=prune_itr, help="number of pruning rounds of the mask"
        )


def require(path: Path, made_by: str) -> Path:
    """``path`` if it exists, else exit with a message naming the script that writes it."""
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: run {made_by} first (with the same --out and options)")
    return path


def load_net(out: Path, name: str, device: str) -> dict[str, torch.Tensor]:
    """The ``"net"`` state_dict saved by ``train_mnist.py`` in ``out / name`` (``init.pt``/``ckpt.pt``)."""
    return torch.load(require(out / name, "train_mnist.py"), map_location=device)["net"]


def masks_file(out: Path, prune_percent: float, mode: str, prune_itr: int) -> Path:
    """Where the mask of a (percent, mode, rounds) setting is saved (the seed's naming)."""
    return out / f"masks_{prune_percent}_{mode}_{prune_itr}.pt"


def save_masks(masks: Mapping[str, torch.Tensor], path: Path) -> None:
    """Print the kept count of every mask and save them to ``path`` as ``{"masks": masks}``."""
    for name, m in masks.items():
        print(f"{name}: kept {int(m.sum())}/{m.numel()} ({m.float().mean().item():.1%})")
    torch.save({"masks": masks}, path)
    print(f"saved {path}")


def mnist_loaders(
    data_root: Path, batch_size: int, eval_batch_size: int, seed: int
) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    """Plain torchvision MNIST loaders, exactly as the seed builds them (``ToTensor`` only)."""
    root = data_root / "mnist"
    download = not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    transform = transforms.Compose([transforms.ToTensor()])
    try:
        train_data = datasets.MNIST(str(root), train=True, download=download, transform=transform)
        test_data = datasets.MNIST(str(root), train=False, download=download, transform=transform)
    except RuntimeError as e:
        raise SystemExit(
            f"MNIST is not in {root} and could not be downloaded ({e}). Pass --data-root naming the "
            "folder that holds mnist/MNIST/raw/ (or set $LTFUNC_DATA_ROOT)."
        ) from e
    train_loader = torch.utils.data.DataLoader(
        train_data,
        batch_size=batch_size,
        shuffle=True,
        num_workers=0,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )
    test_loader = torch.utils.data.DataLoader(
        test_data, batch_size=eval_batch_size, shuffle=False, num_workers=0, drop_last=False
    )
    return train_loader, test_loader
