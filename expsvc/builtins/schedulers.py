"""Built-in learning-rate schedules (torch's closed forms), stepped once per epoch."""

from __future__ import annotations

import math

from expsvc.core.optim import Scheduler
from expsvc.hookspecs import hookimpl


def _positive_int(name: str, value: object) -> int:
    """``value`` when it is a positive integer (a bool is not); a ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class Constant(Scheduler):
    """The base learning rate throughout."""

    name = "constant"

    def lr(self, base_lr: float, epoch: int) -> float:
        return base_lr


class StepLR(Scheduler):
    """torch ``StepLR``: ``base · γ^⌊epoch / step_size⌋``."""

    name = "step"

    def __init__(self, step_size: int, gamma: float = 0.1) -> None:
        self.step_size, self.gamma = _positive_int("step_size", step_size), float(gamma)

    def lr(self, base_lr: float, epoch: int) -> float:
        return base_lr * self.gamma ** (epoch // self.step_size)

    def __repr__(self) -> str:
        return f"StepLR(step_size={self.step_size}, gamma={self.gamma})"


class Cosine(Scheduler):
    """torch ``CosineAnnealingLR`` in closed form: ``η_min + (base − η_min)(1 + cos(π·e/T_max))/2``
    (periodic beyond ``T_max``, like torch)."""

    name = "cosine"

    def __init__(self, t_max: int, eta_min: float = 0.0) -> None:
        self.t_max, self.eta_min = _positive_int("t_max", t_max), float(eta_min)

    def lr(self, base_lr: float, epoch: int) -> float:
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.t_max)) / 2

    def __repr__(self) -> str:
        return f"Cosine(t_max={self.t_max}, eta_min={self.eta_min})"


@hookimpl
def register_schedulers(register) -> None:
    for cls in (Constant, StepLR, Cosine):
        register(cls)
