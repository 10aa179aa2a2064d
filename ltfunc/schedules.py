"""Learning-rate schedules: pure, composable, picklable functions of the iteration.

A schedule is called as ``schedule(iteration) -> lr`` with the number of steps taken before
the step (the iteration counted from 0 in every round), which is what :func:`ltfunc.fit` and
:func:`ltfunc.make_trainer` accept as ``lr=``. ``fit`` keeps the value in a device tensor
that is replaced only when the value changes, so a schedule never recompiles the step.

Every schedule is a small frozen dataclass: equal schedules compare equal, pickle, and
:func:`describe` turns one into a JSON-ready dict that :func:`from_description` reads back
(the run config records schedules by its fields, see :meth:`ltfunc.ImpConfig.make_schedule`).

- :func:`constant` — ``lr`` throughout.
- :func:`multistep` — ``lr · gamma ** (number of milestones <= iteration)`` (step decay).
- :func:`cosine` — cosine decay from ``lr`` to ``final`` over ``total`` iterations.
- :func:`warmup` — linear warm-up of any schedule: ``schedule(it) · min(1, it / iterations)``
  (open_lth's warm-up: the first step has lr 0); :func:`linear_warmup` is ``warmup(constant)``.
- :func:`epochs_to_iterations` / :func:`steps_per_epoch` — milestones given in epochs.
- :func:`build` — a schedule by name, as the config and CLI describe it; :func:`check_fits`
  validates a schedule against a training length.

Example:
    >>> from ltfunc import schedules
    >>> s = schedules.warmup(schedules.multistep(0.1, [300, 400], gamma=0.1), 100)
    >>> [round(s(it), 6) for it in (0, 50, 100, 299, 300, 400)]
    [0.0, 0.05, 0.1, 0.1, 0.01, 0.001]
    >>> schedules.describe(s)["name"], schedules.from_description(schedules.describe(s)) == s
    ('warmup', True)
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._checks import check_int, check_number

__all__ = [
    "SCHEDULES",
    "Constant",
    "Cosine",
    "MultiStep",
    "Warmup",
    "build",
    "check_fits",
    "constant",
    "cosine",
    "describe",
    "epochs_to_iterations",
    "from_description",
    "linear_warmup",
    "multistep",
    "steps_per_epoch",
    "warmup",
]

SCHEDULES: tuple[str, ...] = ("constant", "multistep", "cosine")
"""Names :func:`build` accepts (the config's ``lr_schedule``, CLI ``--lr-schedule``)."""


def _lr(func: str, value: Any, name: str = "lr") -> float:
    return check_number(func, name, value, low=0.0, open_low=True)


def _total(func: str, total: Any) -> int | None:
    return None if total is None else check_int(func, "total (the training length)", total, 1)


def _milestones(func: str, milestones: Any, total: int | None) -> tuple[int, ...]:
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
        raise TypeError(
            f"{func}: milestones must be a sequence of iterations such as [32000, 48000], got {milestones!r}"
        )
    out = tuple(check_int(func, f"milestones[{i}]", m, 1) for i, m in enumerate(milestones))
    for i in range(1, len(out)):
        if out[i] <= out[i - 1]:
            raise ValueError(
                f"{func}: milestones must be strictly increasing, got {list(out)} "
                f"(milestones[{i}]={out[i]} <= milestones[{i - 1}]={out[i - 1]})"
            )
    if total is not None and out and out[-1] >= total:
        raise ValueError(
            f"{func}: milestones {list(out)} reach beyond the training length of {total} iterations; "
            f"every milestone must be < {total} (a later one never applies)"
        )
    return out


@dataclass(frozen=True)
class Constant:
    """``lr`` at every iteration (see :func:`constant`)."""

    lr: float

    def __call__(self, iteration: int) -> float:
        return self.lr


@dataclass(frozen=True)
class MultiStep:
    """``lr · gamma ** k`` with ``k`` the number of milestones ``<= iteration`` (see :func:`multistep`)."""

    lr: float
    milestones: tuple[int, ...]
    gamma: float

    def __call__(self, iteration: int) -> float:
        return self.lr * self.gamma ** bisect.bisect_right(self.milestones, iteration)


@dataclass(frozen=True)
class Cosine:
    """Cosine decay from ``lr`` at iteration 0 to ``final`` at ``total`` (see :func:`cosine`)."""

    lr: float
    total: int
    final: float = 0.0

    def __call__(self, iteration: int) -> float:
        t = min(max(iteration, 0), self.total) / self.total
        return self.final + (self.lr - self.final) * 0.5 * (1.0 + math.cos(math.pi * t))


@dataclass(frozen=True)
class Warmup:
    """``schedule(it) · min(1, it / iterations)``: a linear warm-up in front of ``schedule``."""

    schedule: Callable[[int], float]
    iterations: int

    def __call__(self, iteration: int) -> float:
        return self.schedule(iteration) * min(1.0, iteration / self.iterations)


Schedule = Constant | MultiStep | Cosine | Warmup


def constant(lr: float) -> Constant:
    """A constant learning rate.

    Args:
        lr: The learning rate (``> 0``).

    Returns:
        The schedule.

    Raises:
        TypeError: ``lr`` not a number. ValueError: ``lr <= 0`` or not finite.

    Example:
        >>> from ltfunc.schedules import constant
        >>> constant(0.1)(12345)
        0.1
    """
    return Constant(_lr("constant", lr))


def multistep(
    lr: float, milestones: Sequence[int], gamma: float = 0.1, *, total: int | None = None
) -> MultiStep:
    """Step decay: the lr is multiplied by ``gamma`` at every milestone (in iterations).

    At iteration ``it`` the lr is ``lr · gamma ** k`` where ``k`` counts the milestones
    ``<= it`` (``torch.optim.lr_scheduler.MultiStepLR``, open_lth's ``milestone_steps``).
    Milestones in epochs: :func:`epochs_to_iterations`.

    Args:
        lr: The initial learning rate (``> 0``).
        milestones: Strictly increasing iterations ``>= 1`` (may be empty).
        gamma: The factor, in ``(0, 1]``.
        total: The training length, if known: every milestone must be ``< total``.

    Returns:
        The schedule.

    Raises:
        TypeError: Arguments of the wrong type.
        ValueError: ``lr <= 0``, ``gamma`` outside ``(0, 1]``, milestones not strictly
            increasing or beyond the training length.

    Example:
        >>> from ltfunc.schedules import multistep
        >>> s = multistep(0.1, [31280, 46920], 0.1)
        >>> [round(s(it), 6) for it in (0, 31279, 31280, 46920)]
        [0.1, 0.1, 0.01, 0.001]
    """
    func = "multistep"
    lr = _lr(func, lr)
    gamma = check_number(func, "gamma", gamma, low=0.0, high=1.0, open_low=True)
    return MultiStep(lr, _milestones(func, milestones, _total(func, total)), gamma)


def cosine(lr: float, total: int, final: float = 0.0) -> Cosine:
    """Cosine decay from ``lr`` at iteration 0 to ``final`` at iteration ``total`` (then constant).

    Args:
        lr: The initial learning rate (``> 0``).
        total: Iterations of the decay (``>= 1``), usually the training length.
        final: The final learning rate, in ``[0, lr]``.

    Returns:
        The schedule.

    Raises:
        TypeError: Arguments of the wrong type.
        ValueError: ``lr <= 0``, ``total < 1``, ``final`` outside ``[0, lr]``.

    Example:
        >>> from ltfunc.schedules import cosine
        >>> s = cosine(0.1, 100)
        >>> s(0), round(s(50), 6), s(100)
        (0.1, 0.05, 0.0)
    """
    func = "cosine"
    lr = _lr(func, lr)
    total = check_int(func, "total", total, 1)
    final = check_number(func, "final", final, low=0.0, high=lr)
    return Cosine(lr, total, final)


def warmup(schedule: Callable[[int], float], iterations: int, *, total: int | None = None) -> Warmup:
    """Linear warm-up in front of any schedule: ``schedule(it) · min(1, it / iterations)``.

    The factor rises linearly from 0 at iteration 0 to 1 at ``iterations`` (open_lth's
    ``warmup_steps``; Goyal et al., 2017), so the very first step takes lr 0.

    Args:
        schedule: The schedule to warm up (or a number: a constant lr).
        iterations: Warm-up length (``>= 1``).
        total: The training length, if known: the warm-up must not be longer.

    Returns:
        The schedule.

    Raises:
        TypeError: ``schedule`` neither callable nor a number; ``iterations`` not an int.
        ValueError: ``iterations < 1`` or longer than ``total``.

    Example:
        >>> from ltfunc.schedules import constant, warmup
        >>> s = warmup(constant(0.1), 4)
        >>> [round(s(it), 3) for it in range(6)]
        [0.0, 0.025, 0.05, 0.075, 0.1, 0.1]
    """
    func = "warmup"
    if not callable(schedule):
        schedule = Constant(_lr(func, schedule, "schedule (a schedule or a constant lr)"))
    check_int(func, "iterations (the warm-up length)", iterations, 1)
    total = _total(func, total)
    if total is not None and iterations > total:
        raise ValueError(
            f"{func}: the warm-up of {iterations} iterations is longer than the training length "
            f"of {total} iterations"
        )
    return Warmup(schedule, iterations)


def linear_warmup(lr: float, warmup_iterations: int, *, total: int | None = None) -> Warmup:
    """``warmup(constant(lr), warmup_iterations)``: linear from 0 to ``lr``, then constant.

    Raises:
        TypeError, ValueError: As :func:`constant` and :func:`warmup`.

    Example:
        >>> from ltfunc.schedules import linear_warmup
        >>> linear_warmup(0.2, 10)(5)
        0.1
    """
    return warmup(constant(lr), warmup_iterations, total=total)


_warmup = warmup  # build() has an argument named warmup


def steps_per_epoch(train_size: int, batch_size: int, *, drop_last: bool = True) -> int:
    """Iterations per epoch over ``train_size`` examples.

    Args:
        train_size: Training examples (``>= 1``).
        batch_size: Batch size, in ``[1, train_size]``.
        drop_last: ``True`` (what :func:`ltfunc.data.batches` does by default) counts full
            batches only; ``False`` counts the smaller last one too (open_lth, a DataLoader).

    Returns:
        ``train_size // batch_size``, or its ceiling with ``drop_last=False``.

    Example:
        >>> from ltfunc.schedules import steps_per_epoch
        >>> steps_per_epoch(50_000, 128), steps_per_epoch(50_000, 128, drop_last=False)
        (390, 391)
    """
    func = "steps_per_epoch"
    check_int(func, "train_size", train_size, 1)
    check_int(func, "batch_size", batch_size, 1, train_size)
    return train_size // batch_size if drop_last else -(-train_size // batch_size)


def epochs_to_iterations(epochs: int | Sequence[int], steps_per_epoch: int) -> Any:
    """Epochs (one or a sequence, e.g. milestones) to iterations: ``epochs · steps_per_epoch``.

    Args:
        epochs: An int ``>= 0`` or a sequence of them.
        steps_per_epoch: Iterations per epoch (``>= 1``, see :func:`steps_per_epoch`).

    Returns:
        An int for an int, a tuple for a sequence.

    Raises:
        TypeError: Not ints. ValueError: Negative values.

    Example:
        >>> from ltfunc.schedules import epochs_to_iterations
        >>> epochs_to_iterations([80, 120], 391), epochs_to_iterations(160, 391)
        ((31280, 46920), 62560)
    """
    func = "epochs_to_iterations"
    check_int(func, "steps_per_epoch", steps_per_epoch, 1)
    if isinstance(epochs, Sequence) and not isinstance(epochs, (str, bytes)):
        return tuple(check_int(func, f"epochs[{i}]", e, 0) * steps_per_epoch for i, e in enumerate(epochs))
    return check_int(func, "epochs", epochs, 0) * steps_per_epoch


def build(
    name: str,
    lr: float,
    *,
    total: int,
    warmup: int = 0,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    final: float = 0.0,
) -> Schedule:
    """A schedule by name, validated against the training length (what the config builds).

    Args:
        name: One of :data:`SCHEDULES`: ``"constant"``, ``"multistep"`` (uses ``milestones``
            and ``gamma``) or ``"cosine"`` (decays to ``final`` over ``total``).
        lr: The (peak) learning rate, ``> 0``.
        total: The training length in iterations (``>= 1``).
        warmup: Linear warm-up iterations in front of it (0: none), ``<= total``.
        milestones: For ``"multistep"``: strictly increasing iterations ``< total``.
        gamma: For ``"multistep"``: the factor in ``(0, 1]``.
        final: For ``"cosine"``: the final learning rate in ``[0, lr]``.

    Returns:
        The schedule (a :class:`Warmup` around it when ``warmup > 0``).

    Raises:
        TypeError: Arguments of the wrong type.
        ValueError: An unknown name (lists the valid ones), milestones given for another
            schedule, or any value out of range (see the factories).

    Example:
        >>> from ltfunc.schedules import build
        >>> build("multistep", 0.1, total=1000, milestones=[500], warmup=100)
        Warmup(schedule=MultiStep(lr=0.1, milestones=(500,), gamma=0.1), iterations=100)
    """
    func = "schedules.build"
    if name not in SCHEDULES:
        raise ValueError(f"{func}: lr_schedule={name!r} is not supported. Supported: {', '.join(SCHEDULES)}")
    total = check_int(func, "total (the training length)", total, 1)
    check_int(func, "warmup", warmup, 0)
    base: Schedule
    if name == "multistep":
        base = multistep(lr, milestones, gamma, total=total)
    else:
        if len(milestones):
            raise ValueError(
                f"{func}: milestones {list(milestones)} only apply to lr_schedule 'multistep', not {name!r}"
            )
        base = constant(lr) if name == "constant" else cosine(lr, total, final)
    return _warmup(base, warmup, total=total) if warmup else base


def check_fits(schedule: Callable[[int], float], iterations: int, *, func: str = "check_fits") -> None:
    """Check that a schedule of this module fits a training length of ``iterations``.

    Milestones must lie before the end of training and a warm-up must not be longer than it
    (a cosine shorter or longer than training is allowed). Other callables pass unchecked.

    Raises:
        ValueError: Naming the milestone or warm-up that does not fit.

    Example:
        >>> from ltfunc.schedules import check_fits, multistep
        >>> check_fits(multistep(0.1, [500]), 400)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: check_fits: milestones [500] reach beyond the training length of 400 iterations; ...
    """
    check_int(func, "iterations", iterations, 1)
    if isinstance(schedule, Warmup):
        if schedule.iterations > iterations:
            raise ValueError(
                f"{func}: the warm-up of {schedule.iterations} iterations is longer than the training "
                f"length of {iterations} iterations"
            )
        check_fits(schedule.schedule, iterations, func=func)
    elif isinstance(schedule, MultiStep):
        _milestones(func, schedule.milestones, iterations)


def describe(schedule: Callable[[int], float] | float) -> dict[str, Any]:
    """A JSON-ready description of a schedule of this module (a number: a constant).

    Returns:
        ``{"name": ..., <fields>}``; a warm-up nests its schedule under ``"schedule"``.

    Raises:
        TypeError: A callable that is not a schedule of this module.

    Example:
        >>> from ltfunc.schedules import describe, multistep
        >>> describe(multistep(0.1, [10, 20], 0.5))
        {'name': 'multistep', 'lr': 0.1, 'milestones': [10, 20], 'gamma': 0.5}
    """
    if isinstance(schedule, (int, float)) and not isinstance(schedule, bool):
        return {"name": "constant", "lr": float(schedule)}
    if isinstance(schedule, Constant):
        return {"name": "constant", "lr": schedule.lr}
    if isinstance(schedule, MultiStep):
        return {
            "name": "multistep",
            "lr": schedule.lr,
            "milestones": list(schedule.milestones),
            "gamma": schedule.gamma,
        }
    if isinstance(schedule, Cosine):
        return {"name": "cosine", "lr": schedule.lr, "total": schedule.total, "final": schedule.final}
    if isinstance(schedule, Warmup):
        return {"name": "warmup", "iterations": schedule.iterations, "schedule": describe(schedule.schedule)}
    raise TypeError(
        f"describe: {schedule!r} is not a schedule of ltfunc.schedules (constant, multistep, cosine, warmup)"
    )


def from_description(data: Mapping[str, Any]) -> Schedule:
    """The schedule a :func:`describe` dict describes (validated like the factories).

    Raises:
        TypeError: ``data`` not a mapping. ValueError: An unknown name or bad values.

    Example:
        >>> from ltfunc.schedules import from_description
        >>> from_description({"name": "cosine", "lr": 0.1, "total": 10})(10)
        0.0
    """
    func = "from_description"
    if not isinstance(data, Mapping):
        raise TypeError(f"{func}: data must be a dict from describe(), got {type(data).__name__}")
    kind = data.get("name")
    args = {k: v for k, v in data.items() if k != "name"}
    makers: dict[str, Callable[..., Schedule]] = {
        "constant": constant,
        "multistep": multistep,
        "cosine": cosine,
        "warmup": lambda schedule, iterations: warmup(from_description(schedule), iterations),
    }
    if kind not in makers:
        raise ValueError(f"{func}: name={kind!r} is not supported. Supported: {', '.join(makers)}")
    try:
        return makers[kind](**args)
    except TypeError as e:
        raise ValueError(f"{func}: bad fields {sorted(args)} for a {kind!r} schedule ({e})") from e
