"""The machinery under :class:`ltfunc.LotteryTicket`: its steps, its state, the auto-compile policy.

Private. The facade trains the user's module in place: every step runs on the step's flat
state (``ltfunc._flat``) and copies the new weights and buffers back into the module with one
``torch._foreach_copy_`` each, so the module is always current. ``compile="auto"`` runs the
eager step until the work ahead is long enough for compiling to pay off
(:data:`AUTO_COMPILE_STEPS`; the measurements behind it are in ``bench/README.md``), then the
compiled one, from a step count that does not depend on timing, so a run is reproducible.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import masks as _masks
from ._checks import check_bool
from ._flat import FlatState
from ._types import Batch, Buffers, LossFn, Params
from .loaders import PreloadedLoader, try_preload
from .masks import Mask
from .optim import AdamState, MomentumState, Optimizer, OptState, SGDState, from_torch
from .params import get_buffers
from .step import TrainState, TrainStep, make_train_step

CompileMode = bool | Literal["auto"]

AUTO_COMPILE_STEPS = 15_000
"""``compile="auto"``: compile when a call will take at least this many steps (``train_all``,
``get_masks_by_iteration``), or once this many steps have run eagerly (``train_on_batch``
loops). Measured on LeNet-300-100 (``bench/README.md``, "Facade"): the eager module mode saves
about 1.0-1.2 ms per step over the seed's class and a cold compilation costs about 14 s, so
after 15,000 steps the time saved covers even a cold compilation and the facade never falls
behind the seed's class; with a warm compile cache compiling would pay off after about 5,000."""


class BatchResult(NamedTuple):
    """What :meth:`LotteryTicket.train_on_batch` returns, unpackable like the seed's 3-tuple.

    ``loss`` is the criterion's value on the batch (before the update), ``accuracy`` the
    fraction of correct top-1 predictions in ``[0, 1]`` and ``correct`` their number. Python
    numbers by default; 0-d tensors with ``sync=False``.
    """

    loss: float | Tensor
    accuracy: float | Tensor
    correct: int | Tensor


def check_compile(func: str, compile: Any) -> CompileMode:
    """``True``, ``False`` or ``"auto"``."""
    if compile == "auto" and isinstance(compile, str):
        return "auto"
    check_bool(func, "compile", compile)
    return bool(compile)


def resolve_device(func: str, device: Any) -> torch.device:
    """A usable ``torch.device`` from ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a device."""
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


def check_loader(func: str, loader: Any, name: str) -> None:
    """A re-iterable of batches (a one-shot iterator would be exhausted after one epoch)."""
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


def check_criterion(func: str, criterion: Any) -> LossFn:
    """The loss: ``criterion`` if callable, cross-entropy for ``None``."""
    if criterion is None:
        return F.cross_entropy
    if not callable(criterion):
        raise TypeError(
            f"{func}: criterion must be a callable loss(outputs, targets) such as "
            f"nn.CrossEntropyLoss(), or None for cross-entropy; got {type(criterion).__name__}"
        )
    return criterion


def functional_optimizer(func: str, optimizer: Any, model: nn.Module, default: Optimizer) -> Optimizer:
    """The ltfunc optimizer for the facade's ``optimizer`` argument (``None``: ``default``)."""
    if optimizer is None:
        return default
    if isinstance(optimizer, Optimizer):
        return optimizer
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"{func}: optimizer must be a torch.optim.Optimizer (SGD, Adam, AdamW), an "
            f"ltfunc.optim.Optimizer or None, got {type(optimizer).__name__}"
        )
    in_opt = {id(p) for group in optimizer.param_groups for p in group["params"]}
    in_model = {id(p) for p in model.parameters()}
    if in_opt - in_model:
        raise ValueError(
            f"{func}: optimizer holds {len(in_opt - in_model)} parameter(s) that are not "
            f"parameters of {type(model).__name__} (was it built for another model?)"
        )
    if in_model - in_opt:
        raise ValueError(
            f"{func}: optimizer covers only {len(in_opt)} of the model's {len(in_model)} "
            "parameters; the facade trains all of them: build it over model.parameters()"
        )
    try:
        return from_torch(optimizer)
    except ValueError as e:
        raise ValueError(f"{func}: cannot use optimizer {type(optimizer).__name__}: {e}") from e


def as_mask(func: str, masks: Any, model: nn.Module, device: torch.device) -> Mask:
    """An ltfunc ``Mask`` on ``device`` from a Mask or a seed-style dict of 0/1 tensors/arrays."""
    if isinstance(masks, Mask):
        mask = masks
    elif isinstance(masks, Mapping):
        try:
            mask = _masks.from_dict(masks)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"{func}: masks must map parameter names to 0/1 tensors or arrays ({e})") from e
    else:
        raise TypeError(
            f"{func}: masks must be an ltfunc Mask or a dict of parameter name -> 0/1 "
            f"tensor/array, got {type(masks).__name__}"
        )
    mask = mask.to(device)
    params = {name: p.detach() for name, p in model.named_parameters()}
    _masks.check_compatible(mask, params, func)
    not_float = [k for k in mask if not params[k].is_floating_point()]
    if not_float:
        raise TypeError(f"{func}: masks cover non floating point parameters {not_float}")
    return mask


def check_init_weights(
    func: str, init_weights: Any, model: nn.Module, device: torch.device
) -> dict[str, Tensor]:
    """A copy on ``device`` of a ``state_dict`` that matches ``model``'s keys and shapes."""
    if not isinstance(init_weights, Mapping):
        raise TypeError(
            f"{func}: init_weights must be the model's state_dict() (a mapping of names to "
            f"tensors), got {type(init_weights).__name__}"
        )
    expected = model.state_dict()
    missing = [k for k in expected if k not in init_weights]
    unexpected = [k for k in init_weights if k not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{func}: init_weights does not match {type(model).__name__}.state_dict(): "
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
    return {k: v.detach().to(device, dtype=expected[k].dtype, copy=True) for k, v in init_weights.items()}


def one_of(func: str, name: str, value: Any, alias: str, alias_value: Any) -> Any:
    """``value`` or the seed source's ``alias`` for it: exactly one must be given."""
    if value is not None and alias_value is not None:
        raise TypeError(f"{func}: got both {name}={value!r} and {alias}={alias_value!r}; give one of them")
    if value is None and alias_value is None:
        raise TypeError(f"{func}: missing argument {name} ({alias} in the seed's source)")
    return value if value is not None else alias_value


def fast_loader(
    func: str, loader: Iterable[Any], cache: MutableMapping[Any, PreloadedLoader | None], device: torch.device
) -> Iterable[Any]:
    """``loader`` pre-loaded into memory (:func:`ltfunc.preload`) when it can be, once per loader.

    A ``DataLoader`` that cannot be pre-loaded is iterated as given, after one warning saying
    why; other iterables (lists of batches) are iterated as given.
    """
    if not isinstance(loader, torch.utils.data.DataLoader):  # e.g. a list of batches
        return loader
    if loader in cache:
        return cache[loader] or loader
    fast, why = try_preload(loader, device)
    if fast is None:
        warnings.warn(
            f"{func}: iterating the loader as given ({why.removeprefix('preload: ')})", stacklevel=4
        )
    cache[loader] = fast
    return fast or loader


def to_device(func: str, inputs: Any, targets: Any, device: torch.device) -> Batch:
    """``(inputs, targets)`` checked (tensors, one batch size) and moved to ``device``."""
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
    return inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)


def unpack_batch(func: str, batch: Any) -> tuple[Any, Any]:
    """``(inputs, targets)`` of a loader's batch."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(f"{func}: each batch must be an (inputs, targets) pair, got {type(batch).__name__}")
    return batch[0], batch[1]


class Engine:
    """The facade's training state: steps (eager and compiled), flat state, write-back to the module.

    Under ``compile="auto"``, until compiling pays off, the steps run in *module mode*: the
    module itself, an internal copy of the user's ``torch.optim`` optimizer (same class and
    hyper-parameters; the user's is never stepped), gradients and weights masked with foreach
    ops. That is the fastest eager masked step (ltfunc's functional step is faster only once
    compiled). At the switch its optimizer state is translated into ltfunc's functional state
    (:func:`module_state_to_functional`), and the compiled step continues from it.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        criterion: LossFn,
        compile: CompileMode,
        source: Any = None,
    ) -> None:
        self.model, self.optimizer, self.criterion, self.mode = model, optimizer, criterion, compile
        self._source = source  # the user's optimizer argument: a torch optimizer, an ltfunc one or None
        self._module_opt: torch.optim.Optimizer | None = None  # module mode's optimizer, while active
        self._module_count = 0  # optimizer steps taken in module mode since the last reset
        self._module_mask: tuple[Mask, list[tuple[Tensor, Tensor]]] | None = None
        self.steps: dict[bool, TrainStep] = {}
        self.taken = 0  # steps run by this engine (the auto policy counts them)
        self._compiled_shape: tuple[int, ...] | None = None  # the one batch shape the compiled step runs
        self._example: tuple[tuple[int, ...], torch.dtype] | None = None
        self._outputs: int | None = None  # the model's output size (for the label check), once known
        self._labels_checked = False
        self._flat: FlatState | None = None  # None: a fresh optimizer state at the next step
        self._synced: tuple[tuple[int, int], ...] | None = None
        self._has_buffers = any(True for _ in model.buffers())
        names = [n for n, _ in model.named_parameters()]
        owners = dict(model.named_modules())
        # (module, attribute) of every parameter, in the step's order: cheap to re-read each step
        self._param_slots = [(owners[n.rpartition(".")[0]], n.rpartition(".")[2]) for n in names]
        self._buffer_slots = {
            n: (owners[n.rpartition(".")[0]], n.rpartition(".")[2]) for n, _ in model.named_buffers()
        }

    # steps --------------------------------------------------------------------------------
    def step(self, compiled: bool) -> TrainStep:
        """The eager or the compiled step (made on first use; they share the flat layout)."""
        if compiled not in self.steps:
            self.steps[compiled] = make_train_step(
                self.model, self.optimizer, self.criterion, compile=compiled
            )
        return self.steps[compiled]

    def current(self) -> TrainStep:
        """The step the facade reports (``LT.train_step``): the compiled one once it exists."""
        return self.steps.get(True) or self.step(self.mode is True)

    def _module_mode(self, horizon: int) -> bool:
        """Whether the next steps run on the module (``"auto"`` before compiling, torch/default optimizer)."""
        return (
            self.mode == "auto"
            and not self._wants_compiled(horizon)
            and not isinstance(self._source, Optimizer)
            and (self._flat is None or self._module_opt is not None)
        )

    def _module_optimizer(self) -> torch.optim.Optimizer:
        if self._module_opt is None:
            self._module_opt = torch_twin(self._source, self.model, self.optimizer)
            self._module_count = 0
        return self._module_opt

    def _masked(self, mask: Mask) -> list[tuple[Tensor, Tensor]]:
        """``(parameter, float mask)`` pairs; a new mask prunes the module's weights once."""
        _masks._check_unmodified("LotteryTicket", mask)  # a cached mask edited in place is refused
        if self._module_mask is None or self._module_mask[0] is not mask:
            own = dict(self.model.named_parameters())
            pairs: list[tuple[Tensor, Tensor]] = [(own[n], m.to(own[n].dtype)) for n, m in mask.items()]
            with torch.no_grad():
                if pairs:
                    torch._foreach_mul_([p for p, _ in pairs], [m for _, m in pairs])
            self._module_mask = (mask, pairs)
        return self._module_mask[1]

    def _module_step(self, mask: Mask, batch: Batch, lr: float) -> dict[str, Tensor]:
        """One masked step of the module: masked gradients, the optimizer, the mask re-applied."""
        opt = self._module_optimizer()
        pairs = self._masked(mask)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = batch
        opt.zero_grad(set_to_none=True)
        out = self.model(x)
        loss = self.criterion(out, y)
        loss.backward()
        with torch.no_grad():
            grads = [(p.grad, m) for p, m in pairs if p.grad is not None]
            if grads:
                torch._foreach_mul_([g for g, _ in grads], [m for _, m in grads])
            opt.step()
            if pairs:
                torch._foreach_mul_([p for p, _ in pairs], [m for _, m in pairs])
            accuracy = (out.argmax(-1) == y).to(loss.dtype).mean()
        self._module_count += 1
        self._synced = None  # the module changed: a functional state must be re-read from it
        return {"loss": loss.detach(), "accuracy": accuracy}

    def _leave_module_mode(self) -> None:
        """Hand module mode's optimizer state over to the functional (compiled) step, once."""
        if self._module_opt is None:
            return
        step = self.current()
        opt_state = module_state_to_functional(
            self._module_opt, self.model, self.optimizer, self._module_count
        )
        self._flat = step._pack(TrainState(self.params(), opt_state, 0, self.buffers()))._replace(buffers={})
        self._synced = self._signature()
        self._module_opt, self._module_mask = None, None

    def _wants_compiled(self, horizon: int) -> bool:
        if self.mode == "auto":
            return self.taken >= AUTO_COMPILE_STEPS or horizon >= AUTO_COMPILE_STEPS
        return self.mode

    def check_batch(self, func: str, x: Tensor) -> None:
        """The per-example shape and dtype stay those of the first batch (no recompilation storm)."""
        example = (tuple(x.shape[1:]), x.dtype)
        if self._example is None:
            self._example = example
        elif example != self._example:
            raise ValueError(
                f"{func}: inputs have per-example shape {example[0]} and dtype {example[1]}, but the first "
                f"batch had {self._example[0]} and {self._example[1]}; the facade trains one input shape "
                "(make another LotteryTicket for other inputs)"
            )

    def check_labels(self, func: str, x: Tensor, y: Tensor) -> None:
        """Targets must be class labels in ``[0, model outputs)``.

        Reading ``y.min()/max()`` is a host sync on an accelerator, so there the check runs on
        the first batch only; CPU batches (no sync) are checked every time. An out-of-range
        label would otherwise fail inside the compiled step with an unreadable device assert.
        """
        if self._labels_checked and y.device.type != "cpu":
            return
        if not isinstance(y, Tensor) or y.dtype != torch.int64 or not y.numel():
            return  # other target types are the step's to refuse
        if self._outputs is None:
            was_training = self.model.training
            try:
                self.model.eval()  # one example, no grad, eval mode: no statistics are updated
                with torch.no_grad():
                    out = self.model(x[:1])
            finally:
                self.model.train(was_training)
            self._outputs = int(out.shape[-1]) if isinstance(out, Tensor) and out.dim() == 2 else 0
        lo, hi = (int(v) for v in torch.stack([y.min(), y.max()]).tolist())
        if lo < 0 or (self._outputs and hi >= self._outputs):
            limit = self._outputs or "the number of classes"
            raise ValueError(
                f"{func}: targets lie in [{lo}, {hi}], but class labels must be in [0, {limit}) "
                f"(the model has {limit} outputs)"
            )
        self._labels_checked = True

    def _checked(self, func: str, batches: Iterator[Batch]) -> Iterator[Batch]:
        for x, y in batches:
            self.check_labels(func, x, y)
            yield x, y

    # state --------------------------------------------------------------------------------
    def params(self) -> Params:
        """The module's parameters as detached tensors that share its storage."""
        return {name: p.detach() for name, p in self.model.named_parameters()}

    def buffers(self) -> Buffers:
        """The module's buffers, sharing its storage; ``{}`` if it has none."""
        return get_buffers(self.model, copy=False) if self._has_buffers else {}

    def _param_tensors(self) -> list[Tensor]:
        return [getattr(m, a) for m, a in self._param_slots]

    def _signature(self) -> tuple[tuple[int, int], ...]:
        return tuple((p._version, p.data_ptr()) for p in self._param_tensors())

    def flat_state(self) -> FlatState:
        """The flat state for the module's current parameters (re-read if the user changed them)."""
        step = self.current()
        if self._flat is None:
            self._flat = step._pack(step.init(self.params(), buffers=self.buffers()))
        elif self._signature() != self._synced:
            opt_state = step._unpack(self._flat, 0).opt_state
            self._flat = step._pack(TrainState(self.params(), opt_state, 0, self.buffers()))
        return self._flat._replace(buffers=self.buffers())

    def commit(self, state: FlatState) -> None:
        """Keep ``state`` and copy its params and buffers into the module."""
        views = self.current().layout.views(state.params)
        targets = self._param_tensors()
        with torch.no_grad():
            torch._foreach_copy_(targets, list(views.values()))
            if state.buffers:
                own = [getattr(*self._buffer_slots[n]) for n in state.buffers]
                torch._foreach_copy_(own, list(state.buffers.values()))
        self._flat = state._replace(buffers={})  # the module holds the buffers now
        self._synced = self._signature()

    def reset_optimizer(self) -> None:
        """A fresh optimizer state at the next step."""
        self._flat, self._synced = None, None
        self._module_opt, self._module_mask = None, None

    def saved(self) -> tuple[Any, ...]:
        module = None
        if self._module_opt is not None:
            module = (copy.deepcopy(self._module_opt.state_dict()), self._module_count)
        return self._flat, self._synced, module

    def restore(self, saved: tuple[Any, ...]) -> None:
        self._flat, self._synced, module = saved
        self._module_opt, self._module_mask = None, None
        if module is not None:
            self._module_optimizer().load_state_dict(module[0])
            self._module_count = module[1]

    # running ------------------------------------------------------------------------------
    def run_batch(self, func: str, mask: Mask, batch: Batch, lr: float) -> dict[str, Tensor]:
        """One masked step on ``batch``; the module is updated."""
        self.check_batch(func, batch[0])
        self.check_labels(func, batch[0], batch[1])
        if self._module_mode(0):
            metrics = self._module_step(mask, batch, lr)
            self.taken += 1
            return metrics
        self._leave_module_mode()
        compiled = self._wants_compiled(0)
        if compiled:
            shape = tuple(batch[0].shape)
            if self._compiled_shape is None:
                self._compiled_shape = shape
            compiled = shape == self._compiled_shape  # other batch sizes run eagerly: no recompiles
        state, metrics = self.step(compiled)._flat_step(self.flat_state(), mask, batch, lr, func=func)
        self.commit(state)
        self.taken += 1
        return metrics

    def run_fit(
        self, func: str, mask: Mask, batches: Iterator[Batch], iterations: int, lr: float, horizon: int
    ) -> None:
        """``iterations`` masked steps over ``batches`` (``ltfunc.fit``); the module is updated.

        ``horizon``: the steps the caller will take in all (for ``compile="auto"``).
        """
        from .train import fit

        if self._module_mode(horizon):
            self._module_fit(func, mask, batches, iterations, lr)
            return
        self._leave_module_mode()
        step = self.step(self._wants_compiled(horizon))
        state = step._unpack(self.flat_state(), 0)
        state = fit(step, state, mask, self._checked(func, batches), iterations, lr=lr)
        self.commit(step._pack(state))  # fit's own result: no copy
        self.taken += iterations

    def _module_fit(
        self, func: str, mask: Mask, batches: Iterator[Batch], iterations: int, lr: float
    ) -> None:
        losses = []
        for i, (x, y) in enumerate(self._checked(func, batches)):
            if i == iterations:
                break
            losses.append(self._module_step(mask, (x, y), lr)["loss"])
            self.taken += 1
        if len(losses) < iterations:
            raise ValueError(f"{func}: batches ran out after {len(losses)} of {iterations} iterations")
        bad = ~torch.isfinite(torch.stack(losses)) if losses else None
        if bad is not None and bool(bad.any()):
            first = int(bad.to(torch.int8).argmax())
            raise FloatingPointError(
                f"{func}: the training loss became {float(losses[first])} at step {first + 1} of this call, "
                "the first non-finite loss; lower the learning rate or check the data"
            )


def torch_twin(source: Any, model: nn.Module, functional: Optimizer) -> torch.optim.Optimizer:
    """A fresh ``torch.optim`` optimizer over ``model`` with the hyper-parameters of ``source``.

    ``source`` is the user's torch optimizer (same class, its first group's settings) or
    ``None`` (Adam with the functional default's ``lr``).
    """
    params = [p for _, p in model.named_parameters()]
    if source is None:
        return torch.optim.Adam(params, lr=functional.lr)
    accepted = inspect.signature(type(source).__init__).parameters
    group = {k: v for k, v in source.param_groups[0].items() if k != "params" and k in accepted}
    return type(source)(params, **group)


def module_state_to_functional(
    opt: torch.optim.Optimizer, model: nn.Module, functional: Optimizer, count: int
) -> OptState:
    """The ltfunc optimizer state equal to a ``torch.optim`` optimizer's (SGD, momentum, Adam, AdamW)."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    template = functional.init(params)
    device = next(iter(params.values())).device
    steps = torch.tensor(count, dtype=torch.int64, device=device)

    def slot(key: str) -> dict[str, Tensor]:
        own = dict(model.named_parameters())
        out = {}
        for n, p in own.items():
            value = opt.state.get(p, {}).get(key)
            out[n] = torch.zeros_like(p.detach()) if value is None else value.detach().clone()
        return out

    if isinstance(template, AdamState):
        return AdamState(steps, slot("exp_avg"), slot("exp_avg_sq"))
    if isinstance(template, MomentumState):
        return MomentumState(steps, slot("momentum_buffer"))
    if isinstance(template, SGDState):
        return SGDState(steps)
    raise TypeError(f"module_state_to_functional: unsupported optimizer state {type(template).__name__}")
