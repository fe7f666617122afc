"""Optimizers and learning-rate schedules."""

from __future__ import annotations

from typing import ClassVar

from expsvc.core.params import ParamBuffer


class Optimizer:
    """Base class of optimizers.

    :meth:`bind` attaches the optimizer to a model's :class:`ParamBuffer` (allocate state there);
    :meth:`step` updates ``buffer.value`` in place from ``buffer.grad``.  ``lr`` is a plain attribute the
    training loop sets from the schedule before each epoch.  Every operation must act element-wise or
    within one replica row, never across rows.
    """

    name: ClassVar[str] = ""

    def __init__(self, lr: float = 1e-3) -> None:
        if not lr >= 0:
            raise ValueError(f"lr must be >= 0, got {lr!r}")
        self.lr = float(lr)
        self.buffer: ParamBuffer | None = None

    def bind(self, buffer: ParamBuffer) -> None:
        self.buffer = buffer

    def step(self) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr})"


class Scheduler:
    """Base class of learning-rate schedules: ``lr(base_lr, epoch)`` for epoch 0, 1, ...

    Schedules are stepped once per epoch after the optimizer steps (torch's convention): epoch 0 uses
    the base learning rate of the optimizer, unless the schedule says otherwise.
    """

    name: ClassVar[str] = ""

    def lr(self, base_lr: float, epoch: int) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
