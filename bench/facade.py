"""Drop-in speed: the seed's ``LotteryTicket`` (re-implemented in ``bench/seed_style.py``) vs ltfunc's facade.

Four measurements, each comparing its variants in one run:

0. ``compile``: the facade's time to its first step and its steady step time, eager and
   compiled (compile cache cold, then warm), in fresh processes; the break-even step count
   behind ``compile="auto"`` (:data:`ltfunc.lottery.AUTO_COMPILE_STEPS`).

1. ``iteration``: µs per ``train_on_batch`` on LeNet-300-100 (Adam, 80% layer-wise mask, batch
   60), variants interleaved in short windows in one process (min and median over the
   windows): the seed class, the facade and ltfunc's own compiled step on pre-loaded batches;
   the seed class and the facade fed by ``DataLoader(MNIST, ToTensor)``; the facade fed by
   ``ltfunc.preload(loader)``.
2. ``masks``: wall-clock of one ``get_masks_by_iteration(4, 0, 0.2, loader, 150)`` call with a
   ``DataLoader`` (the seed's example settings at 150 batches per round), interleaved repeats.
3. ``scripts``: wall-clock of whole example scripts in fresh processes (imports, data, model,
   compilation included): ``bench/facade_scripts.py`` with the seed class, with ltfunc's facade,
   and with the facade plus the one ``preload`` line; the compile cache cold (a fresh
   ``TORCHINDUCTOR_CACHE_DIR``) and warm.

Run ``python -m bench.facade [--quick] [--part compile,iteration,masks,scripts]``; it prints tables of
times and ratios (no assertion). ``bench/README.md`` records a run.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

import ltfunc
from bench.seed_style import SeedStyleLotteryTicket

ROOT = Path(__file__).resolve().parents[1]
BATCH = 60
LR = 1.2e-3


def data_root() -> Path:
    for root in (ltfunc.data.resolve_root(), ROOT.parent / "shared" / "data"):
        if (root / "mnist" / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return root
    raise SystemExit("real MNIST not found: set LTFUNC_DATA_ROOT")


def mnist_loader(root: Path, seed: int = 0) -> torch.utils.data.DataLoader:
    """The seed's training loader: torchvision MNIST, ``ToTensor`` only, shuffled, batch 60."""
    from torchvision import datasets, transforms

    ds = datasets.MNIST(str(root / "mnist"), train=True, download=False, transform=transforms.ToTensor())
    gen = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, drop_last=True, generator=gen)


def cycle(loader: Any) -> Iterator[Any]:
    while True:
        yield from loader


def make_pair(mask_fraction: float = 0.8) -> tuple[SeedStyleLotteryTicket, ltfunc.LotteryTicket]:
    """The seed class and the facade on identical LeNet-300-100 copies with the same 80% mask."""
    model = ltfunc.models.lenet300(seed=0)
    init = copy.deepcopy(model.state_dict())
    seed_model, facade_model = copy.deepcopy(model), copy.deepcopy(model)
    seed = SeedStyleLotteryTicket(
        seed_model, "cpu", torch.optim.Adam(seed_model.parameters(), lr=LR), torch.nn.CrossEntropyLoss(), init
    )
    facade = ltfunc.LotteryTicket(
        facade_model, "cpu", torch.optim.Adam(facade_model.parameters(), lr=LR), torch.nn.CrossEntropyLoss(),
        init, compile=True,
    )  # fmt: skip
    masks = facade.get_masks_by_single_shot(0.0, mask_fraction, "layer")
    facade.set_masks(masks).train_init().train()
    seed.set_masks({k: v.numpy().astype("float64") for k, v in masks.items()}).train_init().train()
    return seed, facade


def windows(
    variants: dict[str, Callable[[], None]],
    n_windows: int,
    per_window: int,
    sync: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """µs per iteration of each variant, over ``n_windows`` interleaved windows of ``per_window``.

    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each window's clock starts and stops,
    so queued device work is counted in its window.
    """
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(n_windows):
        for name, run in variants.items():
            if sync is not None:
                sync()
            t = time.perf_counter()
            for _ in range(per_window):
                run()
            if sync is not None:
                sync()
            times[name].append((time.perf_counter() - t) / per_window * 1e6)
    return times


def part_iteration(root: Path, quick: bool) -> list[tuple[str, float, float]]:
    gen = torch.Generator().manual_seed(0)
    from torchvision import datasets

    raw = datasets.MNIST(str(root / "mnist"), train=True, download=False)
    idx = torch.randperm(60000, generator=gen)[: 50 * BATCH].reshape(50, BATCH)
    x_all = raw.data.unsqueeze(1).float().div(255)
    batches = [(x_all[i], raw.targets[i]) for i in idx]
    seed, facade = make_pair()
    step = facade.train_step
    flat = facade._engine.flat_state()
    pre = iter(cycle(batches))
    loaders = {k: cycle(mnist_loader(root, s)) for s, k in enumerate(("seed", "facade"))}
    preloaded = cycle(ltfunc.preload(mnist_loader(root, 2)))

    def own_step() -> None:
        nonlocal flat
        x, y = next(pre)
        flat, metrics = step._flat_step(flat, facade.masks, (x, y), LR)
        torch.stack([metrics["loss"], metrics["accuracy"]]).tolist()  # the facade's one host sync

    variants: dict[str, Callable[[], None]] = {
        "seed class, pre-loaded batches": lambda: seed.train_on_batch(*next(pre)),
        "facade, pre-loaded batches": lambda: facade.train_on_batch(*next(pre)),
        "ltfunc step, pre-loaded batches": own_step,
        "seed class, DataLoader(ToTensor)": lambda: seed.train_on_batch(*next(loaders["seed"])),
        "facade, DataLoader(ToTensor)": lambda: facade.train_on_batch(*next(loaders["facade"])),
        "facade, ltfunc.preload(DataLoader)": lambda: facade.train_on_batch(*next(preloaded)),
    }
    for run in variants.values():  # warm-up: compilation and the first epoch's set-up
        for _ in range(3):
            run()
    times = windows(variants, 6 if quick else 30, 10 if quick else 20)
    return [(k, min(v), statistics.median(v)) for k, v in times.items()]


def part_masks(root: Path, quick: bool) -> list[tuple[str, float, float]]:
    itrs = 30 if quick else 150

    def seed_call(finish_epochs: bool) -> Callable[[], None]:
        def run() -> None:
            seed, _ = make_pair()
            seed.finish_epochs = finish_epochs
            seed.get_masks_by_iteration(4, 0.0, 0.2, mnist_loader(root), itrs, "layer")

        return run

    def facade_call(compile: Any) -> Callable[[], None]:
        def run() -> None:
            _, facade = make_pair()
            facade._compile = compile
            facade._rebuild_engine(keep_state=False)
            facade.get_masks_by_iteration(4, 0.0, 0.2, mnist_loader(root), itrs, "layer")

        return run

    variants = {
        "seed class": seed_call(False),
        "seed class, whole epochs (as the seed)": seed_call(True),
        'facade, compile="auto"': facade_call("auto"),
        "facade, compile=True": facade_call(True),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(2 if quick else 3):
        for name, run in variants.items():
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
    return [(k, min(v), statistics.median(v)) for k, v in times.items()]


SCRIPTS = (
    ("train 300 its", ["train", "--iterations", "300"]),
    ("train 2000 its + eval", ["train", "--iterations", "2000", "--evals", "1"]),
    ("get_masks_by_iteration 4 x 150", ["masks", "--prune-itr", "4", "--train-itrs", "150"]),
    ("prune-train 900 its + 3 evals", ["train", "--iterations", "900", "--evals", "3", "--masked"]),
)
IMPLS = ("seed", "ltfunc", "ltfunc-preload")


def part_scripts(root: Path, quick: bool) -> list[tuple[str, str, str, float]]:
    """Best wall-clock of each script per implementation, runs interleaved; a cold run gets a
    fresh compile cache, a warm run the cache its implementation's first run filled."""
    rows = []
    scripts = SCRIPTS[:1] if quick else SCRIPTS
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory() as tmp:
        for s_i, (label, args) in enumerate(scripts):
            best: dict[tuple[str, str], float] = {}
            for r in range(repeats):
                for impl in IMPLS:
                    for cache in ("-",) if impl == "seed" else ("cold", "warm"):
                        name = f"{s_i}-{impl}-{r}" if cache == "cold" else f"{s_i}-{impl}-warm"
                        env = {
                            **os.environ,
                            "TORCHINDUCTOR_CACHE_DIR": str(Path(tmp) / name),
                            "PYTHONPATH": str(ROOT),
                        }
                        cmd = [sys.executable, str(ROOT / "bench" / "facade_scripts.py"), *args]
                        cmd += ["--impl", impl, "--data-root", str(root)]
                        t = time.perf_counter()
                        subprocess.run(cmd, check=True, env=env, capture_output=True)
                        key = (impl, cache)
                        best[key] = min(best.get(key, float("inf")), time.perf_counter() - t)
            rows += [(label, impl, cache, t) for (impl, cache), t in best.items()]
    return rows


_FIRST_STEP = """
import sys, time, torch, ltfunc
torch.set_num_threads(1)
t0 = time.perf_counter()
model = ltfunc.models.lenet300(seed=0)
opt = torch.optim.Adam(model.parameters(), lr=1.2e-3)
LT = ltfunc.LotteryTicket(model, "cpu", opt, compile={"0": False, "1": True}.get(sys.argv[1], "auto"))
g = torch.Generator().manual_seed(0)
xs, ys = torch.rand(20, 60, 1, 28, 28, generator=g), torch.randint(0, 10, (20, 60), generator=g)
batches = list(zip(xs, ys))
LT.train()
t = time.perf_counter(); LT.train_on_batch(*batches[0]); first = time.perf_counter() - t
times = []
for _ in range(15):
    t = time.perf_counter()
    for x, y in batches: LT.train_on_batch(x, y)
    times.append((time.perf_counter() - t) / len(batches))
print(first, min(times))
"""


def part_compile(quick: bool) -> list[tuple[str, float, float]]:
    """Time to the first step and the steady step time, eager vs compiled, cold and warm cache."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": tmp, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        variants = (
            ("eager functional step (compile=False)", "0"),
            ('module mode (compile="auto", first steps)', "auto"),
            ("compiled, cold cache", "1"),
            ("compiled, warm cache", "1"),
        )
        for label, flag in variants:
            out = subprocess.run(
                [sys.executable, "-c", _FIRST_STEP, flag], check=True, env=env, capture_output=True, text=True
            ).stdout.split()
            rows.append((label, float(out[0]), float(out[1]) * 1e6))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a short run (checks that everything works)")
    p.add_argument("--part", default="compile,iteration,masks,scripts")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    root = data_root()
    parts = args.part.split(",")
    if "iteration" in parts:
        rows = part_iteration(root, args.quick)
        base = dict((k, med) for k, _, med in rows)
        print("\nµs per train_on_batch (min / median over interleaved windows; x = seed class / variant)")
        for k, lo, med in rows:
            ref = base[
                "seed class, DataLoader(ToTensor)"
                if "DataLoader" in k or "preload" in k
                else "seed class, pre-loaded batches"
            ]
            print(f"  {k:38s} {lo:8.0f} {med:8.0f}   x{ref / med:5.2f}")
    if "compile" in parts:
        rows = part_compile(args.quick)
        print("\nfacade, LeNet-300-100 Adam batch 60, 1 thread: first step (s) and steady step (µs)")
        for k, first, step in rows:
            print(f"  {k:38s} first {first:7.2f} s   steady {step:7.0f} µs")
        eager = rows[1][2]  # what compile="auto" runs before it compiles
        for k, first, step in rows[2:]:
            gain = (eager - step) * 1e-6
            if gain > 0:
                print(f"  break-even vs module mode ({k}): {(first - rows[1][1]) / gain:7.0f} steps")
    if "masks" in parts:
        rows = part_masks(root, args.quick)
        seed = rows[0][2]
        print(
            "\nget_masks_by_iteration(4, 0, 0.2, DataLoader, 150) wall-clock s "
            "(min / median; x = seed / variant)"
        )
        for k, lo, med in rows:
            print(f"  {k:38s} {lo:8.2f} {med:8.2f}   x{seed / med:5.2f}")
    if "scripts" in parts:
        rows = part_scripts(root, args.quick)
        print("\nwhole scripts, wall-clock s in a fresh process (best of runs; x = seed / variant)")
        seed_t = {label: t for label, impl, _, t in rows if impl == "seed"}
        for label, impl, cache, t in rows:
            print(f"  {label:32s} {impl:16s} cache {cache:5s} {t:7.1f}   x{seed_t[label] / t:5.2f}")


if __name__ == "__main__":
    main()
