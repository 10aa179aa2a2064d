"""Seed-compatible ``LotteryTicket``: the hook-based LTH workflow on ltfunc's functional core.

Code written for the ``lib.LotteryTicket`` class of the hook-based PyTorch repositories
("the seed") runs after changing its import to ``from ltfunc import LotteryTicket``::

    LT = LotteryTicket(model, device, optimizer, criterion)
    masks = LT.get_masks_by_single_shot(conv_prune_percent, fc_prune_percent, mode)
    masks = LT.set_init_weights(init_weights).get_masks_by_iteration(
        prune_itr, conv_prune_percent, fc_prune_percent, train_loader, train_itrs, mode)
    LT.set_init_weights(init_weights).set_masks(masks)
    LT.train_init()
    LT.train()
    for inputs, targets in train_loader:
        loss, acc, correct = LT.train_on_batch(inputs, targets)
    test_loss, test_acc = LT.eval_all(test_loader)

The wrapped module stays the source of truth; underneath run ltfunc's pure pruning
(:func:`ltfunc.prune.magnitude`), its masked step (:func:`ltfunc.make_train_step`) and
:func:`ltfunc.fit`. ``docs/migrating.md`` describes the differences from the seed and how to
make a user's own loop fast.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from . import masks as _masks
from ._checks import check_choice, check_fraction, check_int
from ._facade import (
    AUTO_COMPILE_STEPS,
    BatchResult,
    CompileMode,
    Engine,
    as_mask,
    check_compile,
    check_criterion,
    check_init_weights,
    check_loader,
    fast_loader,
    functional_optimizer,
    one_of,
    resolve_device,
    to_device,
    unpack_batch,
)
from ._types import Batch, DeviceLike, LossFn, Params
from .loaders import PreloadedLoader
from .masks import Mask
from .optim import Optimizer, adam
from .prune import SCOPES, Rates, Scope, magnitude
from .step import TrainStep

__all__ = ["AUTO_COMPILE_STEPS", "DEFAULT_LR", "BatchResult", "LotteryTicket"]

DEFAULT_LR: float = 1.2e-3
"""Learning rate of the default optimizer (Adam, as in the seed's MNIST examples)."""

# Masks returned by the facade are saved the seed's way, ``torch.save({"masks": masks}, f)``, and
# read back with ``torch.load(f)``, whose default ``weights_only=True`` unpickler only rebuilds
# allow-listed classes. ``Mask`` pickles as ``Mask(dict_of_bool_tensors)``: safe to allow.
if hasattr(torch.serialization, "add_safe_globals"):
    torch.serialization.add_safe_globals([Mask])


class LotteryTicket:
    r"""The seed's ``LotteryTicket`` API (same methods, argument names and call patterns).

    ``model`` is trained in place and stays the source of truth: after every step it holds the
    current, masked weights and BatchNorm statistics, ready to evaluate or ``torch.save``; edits
    made to it between steps are read back. The ``torch.optim`` optimizer is only read (its
    hyper-parameters and its current ``lr``, so ``lr_scheduler``\ s keep working), never
    stepped. Masks are immutable :class:`ltfunc.Mask` mappings; seed-style dicts of 0/1 arrays
    are accepted. Loaders over standard torchvision datasets are pre-loaded into memory by
    :meth:`train_all` and :meth:`get_masks_by_iteration` (:func:`ltfunc.preload`). How all
    this works, and where the facade differs from the seed: ``docs/migrating.md``.

    Args:
        model: The network (``nn.Module``); trained in place. It is moved to ``device``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.
        optimizer: A ``torch.optim.SGD`` (momentum, dampening, nesterov, weight decay),
            ``Adam`` or ``AdamW`` built over ``model.parameters()``, an ltfunc
            :class:`~ltfunc.optim.Optimizer`, or ``None`` for Adam with ``lr=DEFAULT_LR``.
        criterion: ``loss(outputs, targets) -> scalar`` (e.g. ``nn.CrossEntropyLoss()``), mean
            over the batch; ``None`` for cross-entropy.
        init_weights: The model's initial ``state_dict()`` (as in the seed's later versions);
            see :meth:`set_init_weights`.
        masks: Initial masks (as in the seed's later versions); see :meth:`set_masks`.
            Default: all ones (dense).
        compile: ``"auto"`` (default): run the step eagerly and compile it once the work ahead
            is long enough to pay for the compilation (:data:`AUTO_COMPILE_STEPS` steps in one
            call of :meth:`train_all` / :meth:`get_masks_by_iteration`, or after that many
            :meth:`train_on_batch` steps); the switch happens at a step count, not a time, so
            runs are reproducible. ``True`` compiles from the first step, ``False`` never.

    Raises:
        TypeError: ``model``, ``device``, ``optimizer``, ``criterion`` of the wrong type.
        ValueError: An unavailable device; a torch optimizer that ltfunc cannot translate
            (the message lists the supported ones) or that holds parameters other than
            ``model``'s; ``init_weights``/``masks`` that do not fit ``model``.

    Example:
        >>> import torch, ltfunc
        >>> from ltfunc.lottery import LotteryTicket
        >>> model = ltfunc.models.lenet300(seed=0)
        >>> opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        >>> LT = LotteryTicket(model, "cpu", opt, compile=False)
        >>> masks = LT.get_masks_by_single_shot(0.0, 0.8, "layer")
        >>> round(1 - masks["fc1.weight"].float().mean().item(), 3)
        0.8
    """

    def __init__(
        self,
        model: nn.Module,
        device: DeviceLike,
        optimizer: torch.optim.Optimizer | Optimizer | None = None,
        criterion: LossFn | None = None,
        init_weights: Mapping[str, Tensor] | None = None,
        masks: Mapping[str, Any] | None = None,
        *,
        compile: CompileMode = "auto",
    ) -> None:
        func = "LotteryTicket"
        if not isinstance(model, nn.Module):
            raise TypeError(f"{func}: model must be a torch.nn.Module, got {type(model).__name__}")
        self._compile = check_compile(func, compile)
        self.device: torch.device = resolve_device(func, device)
        self.model: nn.Module = model
        self.criterion: LossFn = check_criterion(func, criterion)
        self.optimizer: torch.optim.Optimizer | Optimizer | None = None
        self.functional_optimizer: Optimizer
        self._set_optimizer(func, optimizer)
        model.to(self.device)  # in place: a torch optimizer built on model.parameters() stays valid
        self.init_weights: dict[str, Tensor] | None = None
        if init_weights is not None:
            self.set_init_weights(init_weights)
        self._masks: Mask = (
            self.init_masks() if masks is None else as_mask(func, masks, self.model, self.device)
        )
        # the steps, the flat state as of the last step and the write-back into the model
        self._engine = Engine(
            self.model, self.functional_optimizer, self.criterion, self._compile, self.optimizer
        )
        # loaders already pre-loaded (or found not pre-loadable) by train_all / get_masks_by_iteration
        self._preloaded: weakref.WeakKeyDictionary[Any, PreloadedLoader | None] = weakref.WeakKeyDictionary()

    # ------------------------------------------------------------------------------------
    # configuration

    def _set_optimizer(self, func: str, optimizer: Any) -> None:
        default = adam(lr=DEFAULT_LR)
        self.functional_optimizer = functional_optimizer(func, optimizer, self.model, default)
        self.optimizer = optimizer

    def _rebuild_engine(self, *, keep_state: bool) -> None:
        """A new engine for a new criterion/optimizer; ``keep_state`` carries the optimizer state over."""
        old = self._engine
        self._engine = Engine(
            self.model, self.functional_optimizer, self.criterion, self._compile, self.optimizer
        )
        if keep_state:
            self._engine.restore(old.saved())
            self._engine.taken = old.taken

    def _params(self) -> Params:
        return self._engine.params()

    def _current_lr(self) -> float:
        """The torch optimizer's current lr (a scheduler may have changed it), else the default."""
        if isinstance(self.optimizer, torch.optim.Optimizer):
            lr = self.optimizer.param_groups[0]["lr"]
            return float(lr.item() if isinstance(lr, Tensor) else lr)
        return float(self.functional_optimizer.lr)

    @property
    def train_step(self) -> TrainStep:
        """The :class:`ltfunc.step.TrainStep` the facade trains with (e.g. ``num_compiles``)."""
        return self._engine.current()

    @property
    def masks(self) -> Mask:
        """The masks used by :meth:`train_init`, :meth:`prune_weights` and training."""
        return self._masks

    @masks.setter
    def masks(self, masks: Mapping[str, Any]) -> None:
        self.set_masks(masks)

    def set_masks(self, masks: Mapping[str, Any]) -> LotteryTicket:
        """Set the masks used from now on (not applied to the weights until training/``train_init``).

        Args:
            masks: An :class:`ltfunc.Mask` or a seed-style dict ``{param name: 0/1 tensor or
                numpy array}`` (nonzero keeps a weight). Keys must be parameter names of the
                model with matching shapes; parameters not in it are not masked.

        Returns:
            ``self``, for chaining.

        Raises:
            TypeError: Not a mapping, or values that are not tensors/arrays.
            ValueError: Keys that are not parameters of the model (masks for another model)
                or shape mismatches.

        Example:
            >>> import ltfunc
            >>> from ltfunc.lottery import LotteryTicket
            >>> LT = LotteryTicket(ltfunc.models.lenet300(), "cpu", compile=False)
            >>> ltfunc.masks.density(LT.set_masks(LT.get_masks_by_single_shot(0.0, 0.5, "global")).masks)
            0.5
        """
        self._masks = as_mask("set_masks", masks, self.model, self.device)
        return self

    def set_init_weights(self, init_weights: Mapping[str, Tensor]) -> LotteryTicket:
        """Store (a copy of) the weights that :meth:`train_init` resets to.

        Args:
            init_weights: The model's ``state_dict()`` saved before training (parameters and
                buffers), e.g. ``copy.deepcopy(model.state_dict())`` or ``torch.load(...)``.

        Returns:
            ``self``, for chaining.

        Raises:
            TypeError: Not a mapping of names to tensors.
            ValueError: Missing or unexpected keys, or shape mismatches (weights of another
                model).

        Example:
            >>> import copy, ltfunc
            >>> from ltfunc.lottery import LotteryTicket
            >>> model = ltfunc.models.lenet300(seed=0)
            >>> LT = LotteryTicket(model, "cpu", compile=False)
            >>> LT.set_init_weights(copy.deepcopy(model.state_dict())) is LT
            True
        """
        self.init_weights = check_init_weights("set_init_weights", init_weights, self.model, self.device)
        return self

    def set_criterion(self, criterion: LossFn | None) -> LotteryTicket:
        """Replace the loss (``None``: cross-entropy); the training step is rebuilt.

        Args:
            criterion: ``loss(outputs, targets) -> scalar`` or ``None``.

        Returns:
            ``self``.

        Raises:
            TypeError: If ``criterion`` is not callable.

        Example:
            >>> import torch, ltfunc
            >>> from ltfunc.lottery import LotteryTicket
            >>> LT = LotteryTicket(ltfunc.models.lenet300(), "cpu", compile=False)
            >>> LT.set_criterion(torch.nn.CrossEntropyLoss(label_smoothing=0.1)) is LT
            True
        """
        self.criterion = check_criterion("set_criterion", criterion)
        self._rebuild_engine(keep_state=True)
        return self

    def set_optimizer(self, optimizer: torch.optim.Optimizer | Optimizer | None) -> LotteryTicket:
        """Replace the optimizer; its state starts fresh and the training step is rebuilt.

        Args:
            optimizer: As in the constructor.

        Returns:
            ``self``.

        Raises:
            TypeError, ValueError: As in the constructor.

        Example:
            >>> import torch, ltfunc
            >>> from ltfunc.lottery import LotteryTicket
            >>> model = ltfunc.models.lenet300()
            >>> LT = LotteryTicket(model, "cpu", compile=False)
            >>> LT.set_optimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)) is LT
            True
        """
        self._set_optimizer("set_optimizer", optimizer)
        self._rebuild_engine(keep_state=False)
        return self

    # ------------------------------------------------------------------------------------
    # masks

    def init_masks(self) -> Mask:
        """All-ones masks over the prunable weights (Linear and Conv weights only).

        Returns:
            A dense :class:`ltfunc.Mask` on the facade's device.

        Example:
            >>> import ltfunc
            >>> from ltfunc.lottery import LotteryTicket
            >>> LT = LotteryTicket(ltfunc.models.lenet300(), "cpu", compile=False)
            >>> list(LT.init_masks())
            ['fc1.weight', 'fc2.weight', 'fc3.weight']
        """
        return _masks.ones(self.model)

    def _rates(self, func: str, conv_prune_percent: Any, fc_prune_percent: Any) -> tuple[float, float]:
        conv = check_fraction(func, "conv_prune_percent", conv_prune_percent)
        fc = check_fraction(func, "fc_prune_percent", fc_prune_percent)
        return conv, fc

    def get_masks_by_single_shot(
        self, conv_prune_percent: float, fc_prune_percent: float, mode: str = "global"
    ) -> Mask:
        """One-shot magnitude pruning of the model's current (trained) weights.

        Every Linear/Conv weight is ranked by ``|w|``; the lowest ``fc_prune_percent`` of the
        fully connected weights and ``conv_prune_percent`` of the conv kernels are pruned,
        either within each layer (``mode="layer"``) or with one threshold across all fc
        layers and one across all conv layers (``mode="global"``). Starts from a dense mask:
        :attr:`masks` is neither used nor changed.

        Args:
            conv_prune_percent: Fraction of conv-kernel weights to prune, in ``[0, 1)``.
            fc_prune_percent: Fraction of fully connected weights to prune, in ``[0, 1)``.
            mode: ``"global"`` or ``"layer"``.

        Returns:
            The new :class:`ltfunc.Mask`.

        Raises:
            TypeError: Percents that are not numbers.
            ValueError: Percents outside ``[0, 1)`` or an unknown ``mode``; NaN/inf weights.

        Example:
            >>> import ltfunc
            >>> from ltfunc.lottery import LotteryTicket
            >>> LT = LotteryTicket(ltfunc.models.lenet300(seed=0), "cpu", compile=False)
            >>> m = LT.get_masks_by_single_shot(0.0, 0.5, "layer")
            >>> [int(v.sum()) for v in m.values()]
            [117600, 15000, 500]
        """
        func = "get_masks_by_single_shot"
        conv, fc = self._rates(func, conv_prune_percent, fc_prune_percent)
        scope = cast(Scope, check_choice(func, "mode", mode, SCOPES))
        params = self._params()
        return magnitude(params, _masks.ones(self.model), rate=Rates(conv=conv, fc=fc), scope=scope)

    def get_masks_by_iteration(
        self,
        prune_itr: int | None = None,
        conv_prune_percent: float | None = None,
        fc_prune_percent: float | None = None,
        train_loader: Iterable[Any] | None = None,
        train_itrs: int | None = None,
        mode: str = "global",
        *,
        prune_itrs: int | None = None,
        train_iter: int | None = None,
    ) -> Mask:
        """Iterative magnitude pruning over ``prune_itr`` rounds, starting from the trained model.

        Round 1 prunes the model's current (trained) weights to ``p`` (like
        :meth:`get_masks_by_single_shot`). Each later round ``k`` resets the survivors to
        the init weights (:meth:`train_init`: pruned weights 0, fresh optimizer state),
        trains ``train_itrs`` batches from ``train_loader`` (cycling it as often as needed)
        and prunes the lowest-magnitude survivors until ``k * p`` of all weights are pruned
        (per layer or per fc/conv group, as ``mode`` says). After ``prune_itr`` rounds
        ``prune_itr * p`` of the weights are pruned. The model's weights, train/eval mode,
        :attr:`masks` and optimizer state are restored before returning.

        Args:
            prune_itr: Number of pruning rounds, ``>= 1`` (``1`` is one-shot pruning).
            conv_prune_percent: Fraction of conv weights pruned *per round*.
            fc_prune_percent: Fraction of fc weights pruned *per round*.
            train_loader: A re-iterable of ``(inputs, targets)`` batches (a ``DataLoader``).
            train_itrs: Batches trained in each round after the first, ``>= 1``.
            mode: ``"global"`` or ``"layer"``.
            prune_itrs: The seed source's keyword for ``prune_itr`` (give one of the two).
            train_iter: The seed source's keyword for ``train_itrs`` (give one of the two).

        Returns:
            The final :class:`ltfunc.Mask`.

        Raises:
            TypeError: Arguments of the wrong type (e.g. a one-shot iterator as loader), a
                missing argument, or both names of one argument.
            ValueError: Percents outside ``[0, 1)``, ``prune_itr * percent >= 1``, an unknown
                ``mode``, ``prune_itr``/``train_itrs`` below 1, an empty loader, or no init
                weights (call :meth:`set_init_weights` first) when ``prune_itr > 1``.
            FloatingPointError: If training diverges (NaN/inf loss).

        Example:
            >>> import copy, torch, ltfunc
            >>> from ltfunc.lottery import LotteryTicket
            >>> model = ltfunc.models.lenet300(seed=0)
            >>> init = copy.deepcopy(model.state_dict())
            >>> loader = [(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))]
            >>> LT = LotteryTicket(model, "cpu", compile=False).set_init_weights(init)
            >>> m = LT.get_masks_by_iteration(2, 0.0, 0.25, loader, 2, "layer")
            >>> round(1 - ltfunc.masks.density(m), 2)
            0.5
        """
        func = "get_masks_by_iteration"
        prune_itr = one_of(func, "prune_itr", prune_itr, "prune_itrs", prune_itrs)
        for name, value in (
            ("conv_prune_percent", conv_prune_percent),
            ("fc_prune_percent", fc_prune_percent),
        ):
            if value is None:
                raise TypeError(f"{func}: missing argument {name}")
        check_int(func, "prune_itr", prune_itr, 1)
        conv, fc = self._rates(func, conv_prune_percent, fc_prune_percent)
        for name, p in (("conv_prune_percent", conv), ("fc_prune_percent", fc)):
            if prune_itr * p >= 1.0:
                raise ValueError(
                    f"{func}: prune_itr * {name} = {prune_itr} * {p} = {prune_itr * p:g} must be < 1 "
                    "(the percents are per round and add up)"
                )
        scope = cast(Scope, check_choice(func, "mode", mode, SCOPES))
        if prune_itr > 1:
            train_itrs = one_of(func, "train_itrs", train_itrs, "train_iter", train_iter)
            check_int(func, "train_itrs", train_itrs, 1)
            check_loader(func, train_loader, "train_loader")
            if self.init_weights is None:
                raise ValueError(
                    f"{func}: prune_itr={prune_itr} needs the init weights to reset to: call "
                    "set_init_weights(init_weights) first (the model's state_dict() before training)"
                )

        mask = magnitude(
            self._params(), _masks.ones(self.model), sparsity=Rates(conv=conv, fc=fc), scope=scope
        )
        if prune_itr == 1:
            return mask
        assert train_loader is not None and train_itrs is not None  # checked above (prune_itr > 1)
        saved_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        saved = (self._masks, self._engine.saved(), self.model.training)
        try:
            for k in range(2, prune_itr + 1):
                self._masks = mask
                self.train_init()
                horizon = (prune_itr - k + 1) * train_itrs  # steps this search still takes
                self._train_batches(func, train_loader, train_itrs, horizon)
                target = Rates(conv=k * conv, fc=k * fc)
                mask = magnitude(self._params(), mask, sparsity=target, scope=scope)
        finally:
            self.model.load_state_dict(saved_state)  # changes the signature: params re-read
            self._masks, engine_state, was_training = saved
            self._engine.restore(engine_state)
            self.model.train(was_training)
        return mask

    # ------------------------------------------------------------------------------------
    # training

    def prune_weights(self) -> LotteryTicket:
        """Zero the masked weights of the model in place.

        Returns:
            ``self``.

        Example:
            >>> import ltfunc
            >>> from ltfunc.lottery import LotteryTicket
            >>> LT = LotteryTicket(ltfunc.models.lenet300(seed=0), "cpu", compile=False)
            >>> LT.set_masks(LT.get_masks_by_single_shot(0.0, 0.5, "layer")).prune_weights() is LT
            True
            >>> float((LT.model.fc1.weight == 0).float().mean())
            0.5
        """
        params = self._params()
        with torch.no_grad():
            for name, m in self._masks.items():
                params[name].masked_fill_(~m, 0.0)
        return self

    def train_init(self) -> LotteryTicket:
        """Reload the init weights, reset the optimizer state and apply the masks.

        Survivors take their init values, pruned weights become 0, buffers (BatchNorm running
        statistics) are reset with the rest of the ``state_dict``.

        Returns:
            ``self``.

        Raises:
            ValueError: If no init weights were given (:meth:`set_init_weights`).

        Example:
            >>> import copy, torch, ltfunc
            >>> from ltfunc.lottery import LotteryTicket
            >>> model = ltfunc.models.lenet300(seed=0)
            >>> init = copy.deepcopy(model.state_dict())
            >>> LT = LotteryTicket(model, "cpu", compile=False)
            >>> LT.train_all([(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))], 2) is LT
            True
            >>> masks = LT.get_masks_by_single_shot(0.0, 0.9, "global")
            >>> _ = LT.set_init_weights(init).set_masks(masks).train_init()
            >>> m, w = masks["fc2.weight"], model.fc2.weight.detach()
            >>> torch.equal(w[m], init["fc2.weight"][m]), bool((w[~m] == 0).all())
            (True, True)
        """
        if self.init_weights is None:
            raise ValueError(
                "train_init: no init weights to reset to; call set_init_weights(init_weights) with "
                "the model's state_dict() saved before training (or pass init_weights=...)"
            )
        self.model.load_state_dict(self.init_weights)
        self.prune_weights()
        self._engine.reset_optimizer()
        return self

    def train(self) -> LotteryTicket:
        """Switch the model to training mode (``model.train()``).

        Returns:
            ``self``.

        Example:
            >>> import ltfunc
            >>> from ltfunc.lottery import LotteryTicket
            >>> LT = LotteryTicket(ltfunc.models.lenet300(), "cpu", compile=False)
            >>> LT.eval().train().model.training
            True
        """
        self.model.train()
        return self

    def eval(self) -> LotteryTicket:
        """Switch the model to evaluation mode (``model.eval()``).

        Returns:
            ``self``.

        Example:
            >>> import ltfunc
            >>> from ltfunc.lottery import LotteryTicket
            >>> LT = LotteryTicket(ltfunc.models.lenet300(), "cpu", compile=False)
            >>> LT.eval().model.training
            False
        """
        self.model.eval()
        return self

    def _to_device(self, func: str, inputs: Any, targets: Any) -> Batch:
        return to_device(func, inputs, targets, self.device)

    def train_on_batch(self, inputs: Tensor, targets: Tensor, *, sync: bool = True) -> BatchResult:
        """One masked training step on ``(inputs, targets)``; the model is updated in place.

        Gradients of pruned weights are zeroed, the optimizer update is applied and the
        masks are re-applied, so pruned weights stay exactly 0. Inputs are moved to the
        facade's device. The model's current train/eval mode is used (call :meth:`train`).

        Args:
            inputs: A batch of inputs.
            targets: The matching targets.
            sync: ``True`` (default, the seed's behaviour) returns Python numbers, which waits
                for the step to finish; ``False`` returns 0-d tensors without a host sync.

        Returns:
            ``BatchResult(loss, accuracy, correct)``, unpackable as the seed's
            ``loss, acc, correct = LT.train_on_batch(inputs, targets)``; loss and accuracy
            are measured on the batch before the update, accuracy in ``[0, 1]``.

        Raises:
            TypeError: If inputs/targets are not tensors.
            ValueError: If their batch sizes differ.

        Example:
            >>> import torch, ltfunc
            >>> from ltfunc.lottery import LotteryTicket
            >>> LT = LotteryTicket(ltfunc.models.lenet300(seed=0), "cpu", compile=False)
            >>> x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
            >>> loss, acc, correct = LT.train().train_on_batch(x, y)
            >>> 0.0 <= acc <= 1.0 and correct == round(acc * 4) and loss > 0
            True
        """
        batch = self._to_device("train_on_batch", inputs, targets)
        metrics = self._engine.run_batch("train_on_batch", self._masks, batch, self._current_lr())
        n = int(batch[1].shape[0])
        if not sync:
            acc_t = metrics["accuracy"]
            return BatchResult(metrics["loss"], acc_t, torch.round(acc_t * n).to(torch.int64))
        loss, acc = torch.stack([metrics["loss"].float(), metrics["accuracy"].float()]).tolist()
        return BatchResult(loss, acc, round(acc * n))

    def _device_batches(self, func: str, loader: Iterable[Any]) -> Iterator[Batch]:
        loader = fast_loader(func, loader, self._preloaded, self.device)
        while True:
            empty = True
            for batch in loader:
                empty = False
                x, y = self._to_device(func, *unpack_batch(func, batch))
                self._engine.check_batch(func, x)
                yield x, y
            if empty:
                raise ValueError(f"{func}: the loader yielded no batches")

    def _train_batches(self, func: str, loader: Iterable[Any], iterations: int, horizon: int) -> None:
        was_training = self.model.training
        self.model.train()
        try:
            batches = self._device_batches(func, loader)
            self._engine.run_fit(func, self._masks, batches, iterations, self._current_lr(), horizon)
        finally:
            self.model.train(was_training)

    def train_all(self, train_loader: Iterable[Any], train_itrs: int = 5000) -> LotteryTicket:
        """Train exactly ``train_itrs`` masked steps, cycling ``train_loader`` (training mode).

        Args:
            train_loader: A re-iterable of ``(inputs, targets)`` batches.
            train_itrs: Number of steps, ``>= 1``.

        Returns:
            ``self``.

        Raises:
            TypeError: Loader of the wrong type.
            ValueError: ``train_itrs`` below 1 or an empty loader.
            FloatingPointError: If training diverges (NaN/inf loss).

        Example:
            >>> import torch, ltfunc
            >>> from ltfunc.lottery import LotteryTicket
            >>> LT = LotteryTicket(ltfunc.models.lenet300(seed=0), "cpu", compile=False)
            >>> loader = [(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))]
            >>> LT.train_all(loader, 3) is LT
            True
        """
        func = "train_all"
        check_int(func, "train_itrs", train_itrs, 1)
        check_loader(func, train_loader, "train_loader")
        self._train_batches(func, train_loader, train_itrs, train_itrs)
        return self

    def eval_all(self, test_loader: Iterable[Any]) -> tuple[float, float]:
        """Mean loss and accuracy of the model over all batches of ``test_loader``.

        The model runs in eval mode (no gradients); its previous mode is restored.

        Args:
            test_loader: An iterable of ``(inputs, targets)`` batches (a ``DataLoader``).

        Returns:
            ``(loss, accuracy)``: the criterion averaged over examples (each batch's mean
            weighted by its size) and the fraction of correct top-1 predictions in ``[0, 1]``.

        Raises:
            TypeError: Loader of the wrong type.
            ValueError: An empty loader.

        Example:
            >>> import torch, ltfunc
            >>> from ltfunc.lottery import LotteryTicket
            >>> LT = LotteryTicket(ltfunc.models.lenet300(seed=0), "cpu", compile=False)
            >>> loss, acc = LT.eval_all([(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))])
            >>> 0.0 <= acc <= 1.0
            True
        """
        func = "eval_all"
        if not isinstance(test_loader, Iterable):
            raise TypeError(
                f"{func}: test_loader must be an iterable of (inputs, targets) batches such as a "
                f"torch.utils.data.DataLoader, got {type(test_loader).__name__}"
            )
        was_training = self.model.training
        self.model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        total = 0
        try:
            with torch.no_grad():
                for batch in test_loader:
                    x, y = self._to_device(func, *unpack_batch(func, batch))
                    outputs = self.model(x)
                    n = int(y.shape[0])
                    loss_sum += self.criterion(outputs, y).double() * n
                    labels = y.argmax(1) if y.dim() == outputs.dim() else y
                    correct += (outputs.argmax(1) == labels).sum()
                    total += n
        finally:
            self.model.train(was_training)
        if total == 0:
            raise ValueError(f"{func}: test_loader yielded no examples")
        return float(loss_sum) / total, int(correct) / total

    def __repr__(self) -> str:
        opt = type(self.optimizer).__name__ if self.optimizer is not None else f"Adam(lr={DEFAULT_LR})"
        return (
            f"LotteryTicket(model={type(self.model).__name__}, device={self.device}, optimizer={opt}, "
            f"masks={self._masks!r})"
        )
