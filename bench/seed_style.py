"""The hook-based LTH repos' ``LotteryTicket``, rewritten here as the speed baseline of the facade.

Our own code with the per-step behaviour of the seed's ``lib/LotteryTicket.py`` (as its public
source shows it): masks are float64 numpy arrays made by ``np.percentile`` thresholds, every
``train_on_batch`` sends each weight gradient to numpy, multiplies it by the mask and copies it
back before ``optimizer.step()``, and reads the loss and the number of correct predictions with
``.item()``; ``train_all`` prints one line per iteration and, by default unlike the seed,
stops after exactly ``train_itrs`` batches, so both sides do the same work
(``finish_epochs=True``: like the seed, it finishes every started epoch); ``train_init`` reloads the init
weights and the optimizer's saved state and multiplies the weights by the masks through numpy.
It exists only to be timed against :class:`ltfunc.LotteryTicket` (``bench/facade.py``).
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn


class SeedStyleLotteryTicket:
    """The seed's methods, their semantics and their per-step costs (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        device: str,
        optimizer: torch.optim.Optimizer,
        criterion: Any,
        init_weights: dict[str, torch.Tensor] | None = None,
        *,
        finish_epochs: bool = False,
    ) -> None:
        self.model, self.device, self.optimizer, self.criterion = model, device, optimizer, criterion
        self.init_weights = copy.deepcopy(init_weights)
        self._optimizer_init = copy.deepcopy(optimizer.state_dict())
        self.masks = self._ones()
        self.log = io.StringIO()  # the seed prints every iteration; kept off the terminal here
        self.finish_epochs = finish_epochs  # True: like the seed, train_all finishes the started epoch

    def _prunable(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if "weight" in n and p.dim() in (2, 4)]

    def _ones(self) -> dict[str, np.ndarray]:
        return {n: np.ones(tuple(p.shape)) for n, p in self._prunable()}

    def get_masks_by_single_shot(
        self, conv_p: float, fc_p: float, mode: str = "global"
    ) -> dict[str, np.ndarray]:
        weights = {n: p.detach().cpu().numpy() for n, p in self._prunable()}
        rate = {n: (fc_p if w.ndim == 2 else conv_p) for n, w in weights.items()}
        if mode == "layer":
            thresholds = {n: np.percentile(np.abs(w.ravel()), 100 * rate[n]) for n, w in weights.items()}
        else:
            groups: dict[int, list[np.ndarray]] = {}
            for w in weights.values():
                groups.setdefault(w.ndim, []).append(np.abs(w.ravel()))
            per_dim = {
                d: np.percentile(np.concatenate(ws), 100 * (fc_p if d == 2 else conv_p))
                for d, ws in groups.items()
            }
            thresholds = {n: per_dim[w.ndim] for n, w in weights.items()}
        return {n: np.where(np.abs(w) <= thresholds[n], 0.0, 1.0) for n, w in weights.items()}

    def get_masks_by_iteration(
        self,
        prune_itrs: int,
        conv_p: float,
        fc_p: float,
        loader: Iterable[Any],
        train_iter: int,
        mode: str = "global",
    ) -> dict[str, np.ndarray]:
        saved = copy.deepcopy(self.masks)
        self.masks = self.get_masks_by_single_shot(conv_p, fc_p, mode)
        for k in range(2, prune_itrs + 1):
            self.train_init()
            self.train_all(loader, train_iter)
            self.masks = self.get_masks_by_single_shot(k * conv_p, k * fc_p, mode)
        result, self.masks = self.masks, saved
        return result

    def train_on_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, float, int]:
        inputs, targets = inputs.to(self.device), targets.to(self.device)
        self.optimizer.zero_grad()
        outputs = self.model(inputs)
        loss = self.criterion(outputs, targets)
        loss.backward()
        for name, p in self._prunable():
            grad = p.grad.detach().cpu().numpy() * self.masks[name]
            p.grad = torch.from_numpy(grad).to(p.device, dtype=torch.float32)
        self.optimizer.step()
        correct = outputs.argmax(1).eq(targets).sum().item()
        return loss.item(), correct / targets.size(0), correct

    def train_all(self, loader: Iterable[Any], train_itrs: int) -> None:
        self.model.train()
        done = 0
        while done < train_itrs:
            for inputs, targets in loader:
                loss, acc, _ = self.train_on_batch(inputs, targets)
                done += 1
                print(f"itr: {done}/{train_itrs}, loss={loss}, acc={acc}", file=self.log)
                if done == train_itrs and not self.finish_epochs:
                    break

    def eval_all(self, loader: Iterable[Any]) -> tuple[float, float]:
        self.model.eval()
        loss_sum, correct, total, batches = 0.0, 0, 0, 0
        with torch.no_grad():
            for inputs, targets in loader:
                inputs, targets = inputs.to(self.device), targets.to(self.device)
                outputs = self.model(inputs)
                loss_sum += self.criterion(outputs, targets).item()
                correct += outputs.argmax(1).eq(targets).sum().item()
                total += targets.size(0)
                batches += 1
        return loss_sum / batches, correct / total

    def train_init(self) -> SeedStyleLotteryTicket:
        assert self.init_weights is not None
        self.model.load_state_dict(self.init_weights)
        self.optimizer.load_state_dict(self._optimizer_init)
        return self.prune_weights()

    def prune_weights(self) -> SeedStyleLotteryTicket:
        for name, p in self._prunable():
            p.data = torch.from_numpy(p.detach().cpu().numpy() * self.masks[name]).to(
                p.device, dtype=torch.float
            )
        return self

    def set_masks(self, masks: dict[str, np.ndarray]) -> SeedStyleLotteryTicket:
        self.masks = copy.deepcopy(masks)
        return self

    def train(self) -> nn.Module:
        return self.model.train()
