"""Optimizers and learning-rate schedules."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from expsvc.core.params import ParamBuffer

if TYPE_CHECKING:
    from expsvc.core.rng import ReplicaRandom


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

    @property
    def random(self) -> ReplicaRandom:
        """This optimizer's per-replica random streams (once bound; see :class:`~expsvc.core.rng.ReplicaRandom`):
        the only randomness an optimizer may use, so replicas stay independent and reproducible.  Replica
        ``r`` draws from its run seed's child :data:`~expsvc.core.rng.OPTIMIZER_KEY`, which nothing else uses::

            noise = self.random.normal(self.buffer.value.shape[1:], self.buffer.dtype)   # (R, P)

        Made on first use after each :meth:`bind` (kept with the buffer it was made for).
        """
        from expsvc.core.rng import ReplicaRandom, roots_of

        cached = getattr(self, "_random", None)
        if cached is not None and cached[0] is self.buffer:
            return cached[1]
        if self.buffer is None:
            raise RuntimeError(f"{self!r}: random streams exist once the optimizer is bound to a model")
        if not hasattr(self.buffer, "random_roots"):  # never guess a stream: a wrong one would pass unnoticed
            raise RuntimeError(f"{self!r}: the buffer it is bound to ({type(self.buffer).__name__}) carries no "
                               "random_roots, so its per-replica streams are unknown")
        roots = self.buffer.random_roots
        if roots is None:  # a ParamBuffer made outside Sequential.build (tests): roots from generators 0..R-1
            import numpy as np

            roots = roots_of([np.random.default_rng(r) for r in range(self.buffer.value.shape[0])])
        random = ReplicaRandom.for_optimizer(roots)
        self._random = (self.buffer, random)
        return random

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
