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

(``get_masks_by_iteration`` also takes the seed source's keyword names ``prune_itrs=`` and
``train_iter=``.)

Underneath, masks are immutable :class:`ltfunc.Mask` pytrees from :func:`ltfunc.prune.magnitude`,
training is one ``torch.compile``'d masked step (:func:`ltfunc.step.make_train_step`) with a
functional optimizer translated from the ``torch.optim`` one, and the loops of
:meth:`LotteryTicket.get_masks_by_iteration` / :meth:`LotteryTicket.train_all` are
:func:`ltfunc.train.fit`. The wrapped module stays the source of truth: every step reads its
parameters and buffers and writes the results back into them (BatchNorm running statistics
included), so ``LT.model`` can be evaluated, saved or edited between steps exactly as with
the seed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import masks as _masks
from ._checks import check_choice, check_fraction, check_int
from ._flat import FlatState
from ._types import Batch, Buffers, DeviceLike, LossFn, Params
from .masks import Mask
from .optim import Optimizer, adam, from_torch
from .params import get_buffers
from .prune import SCOPES, Rates, Scope, magnitude
from .step import TrainState, TrainStep, make_train_step
from .train import fit

__all__ = ["DEFAULT_LR", "BatchResult", "LotteryTicket"]

DEFAULT_LR: float = 1.2e-3
"""Learning rate of the default optimizer (Adam, as in the seed's MNIST examples)."""

# Masks returned by the facade are saved the seed's way, ``torch.save({"masks": masks}, f)``, and
# read back with ``torch.load(f)``, whose default ``weights_only=True`` unpickler only rebuilds
# allow-listed classes. ``Mask`` pickles as ``Mask(dict_of_bool_tensors)``: safe to allow.
if hasattr(torch.serialization, "add_safe_globals"):
    torch.serialization.add_safe_globals([Mask])


class BatchResult(NamedTuple):
    """What :meth:`LotteryTicket.train_on_batch` returns, unpackable like the seed's 3-tuple.

    ``loss`` is the criterion's value on the batch (before the update), ``accuracy`` the
    fraction of correct top-1 predictions in ``[0, 1]`` and ``correct`` their number. Python
    numbers by default; 0-d tensors with ``sync=False``.
    """

    loss: float | Tensor
    accuracy: float | Tensor
    correct: int | Tensor


def _resolve_device(device: Any) -> torch.device:
    func = "LotteryTicket"
    if not isinstance(device, (str, torch.device)):
        raise TypeError(
            f"{func}: device must be 'cpu', 'cuda', 'cuda:N' or a torch.device, "
            f"got {type(device).__name__} {device!r}"
        )
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"{func}: device={device!r} is not a valid device string ({e})") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{func}: device={device!r} but CUDA is not available on this machine "
                "(torch.cuda.is_available() is False); use device='cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"{func}: device={device!r} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    try:
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as e:
        raise ValueError(f"{func}: device={device!r} is not usable here ({e})") from e
    return dev


def _one_of(func: str, name: str, value: Any, alias: str, alias_value: Any) -> Any:
    """``value`` or the seed source's ``alias`` for it: exactly one must be given."""
    if value is not None and alias_value is not None:
        raise TypeError(f"{func}: got both {name}={value!r} and {alias}={alias_value!r}; give one of them")
    if value is None and alias_value is None:
        raise TypeError(f"{func}: missing argument {name} ({alias} in the seed's source)")
    return value if value is not None else alias_value


def _check_loader(func: str, loader: Any, name: str) -> None:
    if isinstance(loader, Iterator):
        raise TypeError(
            f"{func}: {name} must be re-iterable (a DataLoader or a list of (inputs, targets) batches), "
            f"got a one-shot iterator {type(loader).__name__}"
        )
    if not isinstance(loader, Iterable):
        raise TypeError(
            f"{func}: {name} must be an iterable of (inputs, targets) batches such as a "
            f"torch.utils.data.DataLoader, got {type(loader).__name__}"
        )


def _unpack(func: str, batch: Any) -> tuple[Any, Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(f"{func}: each batch must be an (inputs, targets) pair, got {type(batch).__name__}")
    return batch[0], batch[1]


class LotteryTicket:
    """The seed's ``LotteryTicket`` API (same methods, argument names and call patterns).

    ``model`` is trained in place and stays the source of truth. Every :meth:`train_on_batch`
    runs one compiled masked step (:func:`ltfunc.step.make_train_step`, flat fast path) and
    copies the new weights into ``model``'s parameters with one ``torch._foreach_copy_``
    (about 70 µs next to a 1.5-2 ms LeNet-300-100 step on a CPU core), so ``LT.model`` is
    always the up-to-date, masked network, ready to evaluate or ``torch.save``. Buffers are
    handled the same way: BatchNorm layers in training mode update their running statistics
    in ``model`` exactly as an ``nn.Module`` training step would (each step reads the model's
    current buffers and writes the new ones back). If the model's
    parameters are changed outside the facade (``load_state_dict``, in-place edits), the next
    step notices it (parameter version counters) and reads them back; the optimizer state is
    kept. The given ``torch.optim`` optimizer is only *read*: its hyper-parameters are
    translated by :func:`ltfunc.optim.from_torch` and its current learning rate
    (``param_groups[0]["lr"]``) is used at every step, so ``torch.optim.lr_scheduler``
    schedulers stepped by the user keep working (torch then warns once that
    ``lr_scheduler.step()`` ran before ``optimizer.step()``: harmless, the facade steps in
    its place). It is never stepped itself.

    Masks are :class:`ltfunc.Mask` objects: immutable ``{parameter name: bool tensor}``
    mappings, so ``masks["fc1.weight"]`` works, and ``torch.save({"masks": masks}, f)`` /
    ``torch.load(f)["masks"]`` round-trip them. Masks in the seed's own format (a dict of 0/1
    numpy arrays or tensors) are accepted by :meth:`set_masks` and the ``masks`` argument.
    Only the weights of ``nn.Linear`` and ``nn.Conv1d/2d/3d`` layers are pruned; biases and
    normalization (BatchNorm, LayerNorm) parameters never are. 2-D weights count as fully
    connected (``fc_prune_percent``), weights with more dimensions as conv kernels
    (``conv_prune_percent``).

    Where the facade differs from the seed (only where the seed had bugs): ``docs/migrating.md``.

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
        compile: ``torch.compile`` the training step (default). ``False`` runs it eagerly,
            which avoids the one-time compilation for very short runs.

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
        compile: bool = True,
    ) -> None:
        func = "LotteryTicket"
        if not isinstance(model, nn.Module):
            raise TypeError(f"{func}: model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(compile, bool):
            raise TypeError(f"{func}: compile must be a bool, got {compile!r}")
        self.device: torch.device = _resolve_device(device)
        self.model: nn.Module = model
        self._compile = compile
        self.criterion: LossFn = self._check_criterion(func, criterion)
        self.optimizer: torch.optim.Optimizer | Optimizer | None = None
        self.functional_optimizer: Optimizer
        self._set_optimizer(func, optimizer)
        model.to(self.device)  # in place: a torch optimizer built on model.parameters() stays valid
        self.init_weights: dict[str, Tensor] | None = None
        if init_weights is not None:
            self.set_init_weights(init_weights)
        self._masks: Mask = self.init_masks() if masks is None else self._as_mask(func, masks)
        self._step: TrainStep = self._make_step()
        # Params and optimizer state in the step's flat layout, as of the last step; ``None``
        # means "fresh optimizer state at the next step". ``_synced`` is the model's parameter
        # signature right after the last write-back: if it changed, the user edited the model
        # (load_state_dict, in-place ops, ``.data =``) and the params are re-read from it.
        self._flat: FlatState | None = None
        self._synced: tuple[tuple[int, int], ...] | None = None

    # ------------------------------------------------------------------------------------
    # configuration

    @staticmethod
    def _check_criterion(func: str, criterion: Any) -> LossFn:
        if criterion is None:
            return F.cross_entropy
        if not callable(criterion):
            raise TypeError(
                f"{func}: criterion must be a callable loss(outputs, targets) such as "
                f"nn.CrossEntropyLoss(), or None for cross-entropy; got {type(criterion).__name__}"
            )
        return criterion

    def _set_optimizer(self, func: str, optimizer: Any) -> None:
        if optimizer is None:
            self.functional_optimizer = adam(lr=DEFAULT_LR)
        elif isinstance(optimizer, Optimizer):
            self.functional_optimizer = optimizer
        elif isinstance(optimizer, torch.optim.Optimizer):
            self._check_optimizer_params(func, optimizer)
            try:
                self.functional_optimizer = from_torch(optimizer)
            except ValueError as e:
                raise ValueError(f"{func}: cannot use optimizer {type(optimizer).__name__}: {e}") from e
        else:
            raise TypeError(
                f"{func}: optimizer must be a torch.optim.Optimizer (SGD, Adam, AdamW), an "
                f"ltfunc.optim.Optimizer or None, got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer

    def _check_optimizer_params(self, func: str, optimizer: torch.optim.Optimizer) -> None:
        in_opt = {id(p) for group in optimizer.param_groups for p in group["params"]}
        in_model = {id(p) for p in self.model.parameters()}
        if in_opt - in_model:
            raise ValueError(
                f"{func}: optimizer holds {len(in_opt - in_model)} parameter(s) that are not "
                f"parameters of {type(self.model).__name__} (was it built for another model?)"
            )
        if in_model - in_opt:
            raise ValueError(
                f"{func}: optimizer covers only {len(in_opt)} of the model's {len(in_model)} "
                "parameters; the facade trains all of them: build it over model.parameters()"
            )

    def _make_step(self) -> TrainStep:
        # Every step is given the model's current buffers (``_buffers``; ``{}`` without any,
        # known here once) and its new buffers are copied back into the model (``_commit``).
        self._has_buffers = any(True for _ in self.model.buffers())
        return make_train_step(self.model, self.functional_optimizer, self.criterion, compile=self._compile)

    def _params(self) -> Params:
        """The module's parameters as detached tensors that share its storage."""
        return {name: p.detach() for name, p in self.model.named_parameters()}

    def _buffers(self) -> Buffers:
        """The model's buffers as detached tensors sharing its storage; ``{}`` if it has none."""
        return get_buffers(self.model, copy=False) if self._has_buffers else {}

    def _signature(self) -> tuple[tuple[int, int], ...]:
        return tuple((p._version, p.data_ptr()) for p in self.model.parameters())

    def _current_lr(self) -> float:
        """The torch optimizer's current lr (a scheduler may have changed it), else the default."""
        if isinstance(self.optimizer, torch.optim.Optimizer):
            lr = self.optimizer.param_groups[0]["lr"]
            return float(lr.item() if isinstance(lr, Tensor) else lr)
        return float(self.functional_optimizer.lr)

    def _flat_state(self) -> FlatState:
        """The step's flat state for the model's current parameters."""
        step = self._step
        if self._flat is None:  # a fresh optimizer state
            self._flat = step._pack(step.init(self._params(), buffers=self._buffers()))
        elif self._signature() != self._synced:
            opt_state = step._unpack(self._flat, 0).opt_state
            self._flat = step._pack(TrainState(self._params(), opt_state, 0, self._buffers()))
        return self._flat

    def _commit(self, state: FlatState) -> None:
        """Keep ``state`` and copy its params and buffers into the model (foreach copies)."""
        views = self._step.layout.views(state.params)
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            torch._foreach_copy_([params[n] for n in views], list(views.values()))
            if state.buffers:
                buffers = dict(self.model.named_buffers())
                torch._foreach_copy_([buffers[n] for n in state.buffers], list(state.buffers.values()))
        # the model now holds the buffers: the next step reads them from there
        self._flat = state._replace(buffers={})
        self._synced = self._signature()

    def _reset_optimizer_state(self) -> None:
        self._flat, self._synced = None, None

    def _as_mask(self, func: str, masks: Any) -> Mask:
        if isinstance(masks, Mask):
            mask = masks
        elif isinstance(masks, Mapping):
            try:
                mask = _masks.from_dict(masks)
            except (TypeError, ValueError, RuntimeError) as e:
                raise TypeError(
                    f"{func}: masks must map parameter names to 0/1 tensors or arrays ({e})"
                ) from e
        else:
            raise TypeError(
                f"{func}: masks must be an ltfunc Mask or a dict of parameter name -> 0/1 "
                f"tensor/array, got {type(masks).__name__}"
            )
        mask = mask.to(self.device)
        params = self._params()
        _masks.check_compatible(mask, params, func)
        not_float = [k for k in mask if not params[k].is_floating_point()]
        if not_float:
            raise TypeError(f"{func}: masks cover non floating point parameters {not_float}")
        return mask

    @property
    def train_step(self) -> TrainStep:
        """The :class:`ltfunc.step.TrainStep` the facade trains with (e.g. ``num_compiles``)."""
        return self._step

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
        self._masks = self._as_mask("set_masks", masks)
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
        func = "set_init_weights"
        if not isinstance(init_weights, Mapping):
            raise TypeError(
                f"{func}: init_weights must be the model's state_dict() (a mapping of names to "
                f"tensors), got {type(init_weights).__name__}"
            )
        expected = self.model.state_dict()
        missing = [k for k in expected if k not in init_weights]
        unexpected = [k for k in init_weights if k not in expected]
        if missing or unexpected:
            raise ValueError(
                f"{func}: init_weights does not match {type(self.model).__name__}.state_dict(): "
                f"missing keys {missing}, unexpected keys {unexpected}"
            )
        for k, v in init_weights.items():
            if not isinstance(v, Tensor):
                raise TypeError(f"{func}: init_weights[{k!r}] must be a tensor, got {type(v).__name__}")
            if tuple(v.shape) != tuple(expected[k].shape):
                raise ValueError(
                    f"{func}: init_weights[{k!r}] has shape {tuple(v.shape)}, the model expects "
                    f"{tuple(expected[k].shape)}"
                )
        self.init_weights = {
            k: v.detach().to(self.device, dtype=expected[k].dtype, copy=True) for k, v in init_weights.items()
        }
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
        self.criterion = self._check_criterion("set_criterion", criterion)
        self._step = self._make_step()
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
        self._step = self._make_step()
        self._reset_optimizer_state()
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
        prune_itr = _one_of(func, "prune_itr", prune_itr, "prune_itrs", prune_itrs)
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
            train_itrs = _one_of(func, "train_itrs", train_itrs, "train_iter", train_iter)
            check_int(func, "train_itrs", train_itrs, 1)
            _check_loader(func, train_loader, "train_loader")
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
        saved = (self._masks, self._flat, self._synced, self.model.training)
        try:
            for k in range(2, prune_itr + 1):
                self._masks = mask
                self.train_init()
                self._train_batches(func, train_loader, train_itrs)
                target = Rates(conv=k * conv, fc=k * fc)
                mask = magnitude(self._params(), mask, sparsity=target, scope=scope)
        finally:
            self.model.load_state_dict(saved_state)  # changes the signature: params re-read
            self._masks, self._flat, self._synced, was_training = saved
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
        self._reset_optimizer_state()
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
        if not isinstance(inputs, Tensor) or not isinstance(targets, Tensor):
            raise TypeError(
                f"{func}: inputs and targets must be tensors, got {type(inputs).__name__} and "
                f"{type(targets).__name__}"
            )
        if inputs.shape[:1] != targets.shape[:1]:
            raise ValueError(
                f"{func}: inputs and targets must have the same batch size, got shapes "
                f"{tuple(inputs.shape)} and {tuple(targets.shape)}"
            )
        return inputs.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)

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
        flat = self._flat_state()._replace(buffers=self._buffers())
        state, metrics = self._step._flat_step(flat, self._masks, batch, self._current_lr())
        self._commit(state)
        n = int(batch[1].shape[0])
        if not sync:
            acc_t = metrics["accuracy"]
            return BatchResult(metrics["loss"], acc_t, torch.round(acc_t * n).to(torch.int64))
        loss, acc = torch.stack([metrics["loss"].float(), metrics["accuracy"].float()]).tolist()
        return BatchResult(loss, acc, round(acc * n))

    def _device_batches(self, func: str, loader: Iterable[Any]) -> Iterator[Batch]:
        while True:
            empty = True
            for batch in loader:
                empty = False
                yield self._to_device(func, *_unpack(func, batch))
            if empty:
                raise ValueError(f"{func}: the loader yielded no batches")

    def _train_batches(self, func: str, loader: Iterable[Any], iterations: int) -> None:
        was_training = self.model.training
        self.model.train()
        try:
            state = self._step._unpack(self._flat_state(), 0)._replace(buffers=self._buffers())
            batches = self._device_batches(func, loader)
            state = fit(self._step, state, self._masks, batches, iterations, lr=self._current_lr())
            self._commit(self._step._pack(state))  # fit's own result: no copy
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
        _check_loader(func, train_loader, "train_loader")
        self._train_batches(func, train_loader, train_itrs)
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
                    x, y = self._to_device(func, *_unpack(func, batch))
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
