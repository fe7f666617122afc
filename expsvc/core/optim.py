"""Optimizers and learning-rate schedules, and the per-replica hyper-parameter contract of a grid.

A group trains R replicas: the grid points of a hyper-parameter grid times the seeds.  An optimizer that
lists constructor arguments in :attr:`Optimizer.per_replica` may receive each of them as a *column*: a
float64 array ``(R, 1)`` (row ``r`` is replica ``r``'s value) that broadcasts against the ``(R, P)`` buffer;
a tuple argument (Adam's ``betas``) arrives as a tuple of columns.  Only the arguments that differ between
the group's grid points arrive as columns; the others stay plain numbers.  An optimizer that lists nothing
gets one instance per grid point, each bound to its own rows (:class:`PointOptimizers`): plain scalar code
keeps working and gives the same numbers.  Schedules are always called per grid point, with plain numbers.

Bit-identity with a run alone: ``+ - * /`` and ``sqrt`` are correctly rounded, so a column gives every row the
number a scalar gives.  Anything else (``**``, ``cos``) on a hyper-parameter is computed in Python per row with
:func:`each`, the same code a scalar run executes; a column is cast to the buffer's dtype (:func:`cast`) the
way numpy casts a Python float operand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from expsvc.core.params import ParamBuffer

if TYPE_CHECKING:
    from expsvc.core.rng import ReplicaRandom

Hyper = Any
"""A hyper-parameter value: a Python float, or a float64 column ``(R, 1)`` (one value per replica)."""


def hyper(value: Any) -> Hyper:
    """A constructor argument as a hyper-parameter: ``float(value)``, or a float64 ``(R, 1)`` column."""
    if isinstance(value, np.ndarray):
        return np.asarray(value, dtype=np.float64).reshape(-1, 1)
    return float(value)


def is_column(value: Any) -> bool:
    """Whether a hyper-parameter holds one value per replica."""
    return isinstance(value, np.ndarray)


def each(fn: Callable[..., float], *values: Hyper) -> Hyper:
    """``fn(*values)`` with plain floats; with columns, ``fn`` applied row by row in Python (bit-identical to
    the scalar computation of each row, whatever ``fn`` does) and returned as a float64 column."""
    for v in values:
        if isinstance(v, np.ndarray):
            break
    else:
        return fn(*values)
    rows = [np.broadcast_to(v, (len(v), 1)).ravel().tolist() if is_column(v) else None for v in values]
    size = max(len(r) for r in rows if r is not None)
    cols = [r if r is not None else [v] * size for r, v in zip(rows, values, strict=True)]
    return np.array([fn(*vals) for vals in zip(*cols, strict=True)], dtype=np.float64).reshape(-1, 1)


def cast(value: Hyper, dtype: np.dtype) -> Hyper:
    """A column cast to ``dtype`` (as numpy casts a Python float operand against a ``dtype`` array)."""
    return value.astype(dtype, copy=False) if isinstance(value, np.ndarray) else value


def check_all(name: str, value: Hyper, ok: Callable[[float], bool], allowed: str) -> None:
    """A ValueError naming ``name`` unless ``ok`` holds for the value (every row of a column)."""
    for v in (np.ravel(value).tolist() if is_column(value) else [value]):
        if not ok(v):
            raise ValueError(f"{name} must be {allowed}, got {v!r}")


def any_nonzero(value: Hyper) -> bool:
    """Whether some replica's value is not zero (a term can be skipped only when it is zero in every row)."""
    return bool(np.any(value != 0)) if isinstance(value, np.ndarray) else bool(value)


class Optimizer:
    """Base class of optimizers.

    :meth:`bind` attaches the optimizer to a model's :class:`ParamBuffer` (allocate state there);
    :meth:`step` updates ``buffer.value`` in place from ``buffer.grad``.  ``lr`` is a plain attribute the
    training loop sets from the schedule before each epoch: a float, or a float64 column ``(R, 1)`` when the
    replicas' learning rates differ and ``"lr"`` is in :attr:`per_replica`.  Every operation must act
    element-wise or within one replica row, never across rows.
    """

    name: ClassVar[str] = ""
    per_replica: ClassVar[tuple[str, ...]] = ()
    """Constructor arguments this optimizer takes as per-replica columns (see the module docstring)."""

    def __init__(self, lr: float = 1e-3) -> None:
        lr = hyper(lr)
        check_all("lr", lr, lambda v: v >= 0, ">= 0")
        self.lr = lr
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


class RowsBuffer:
    """Rows ``[start, stop)`` of a :class:`ParamBuffer`, for an optimizer instance of one grid point:
    ``value``, ``grad`` and ``state`` are views of those rows; the rest is the whole buffer's."""

    def __init__(self, buffer: ParamBuffer, start: int, stop: int) -> None:
        self.whole = buffer
        self.value = buffer.value[start:stop]
        self.grad = buffer.grad[start:stop]
        self.state = buffer.state[start:stop]
        self.replicas = stop - start
        self.dtype, self.size, self.offsets = buffer.dtype, buffer.size, buffer.offsets
        self.params, self.states = buffer.params, buffer.states
        # its rows' own streams, so a stochastic optimizer in a grid draws what it draws run alone
        self.random_roots = None if buffer.random_roots is None else buffer.random_roots[start:stop]


class PointOptimizers(Optimizer):
    """One instance of a scalar optimizer per grid point, each bound to its own rows of the buffer."""

    def __init__(self, optimizers: Sequence[Optimizer], rows: Sequence[tuple[int, int]]) -> None:
        self.optimizers, self.rows = list(optimizers), list(rows)
        self.buffer = None

    @property
    def lr(self) -> Hyper:  # type: ignore[override]
        sizes = [b - a for a, b in self.rows]
        return np.repeat(np.array([float(o.lr) for o in self.optimizers]), sizes).reshape(-1, 1)

    @lr.setter
    def lr(self, value: Hyper) -> None:
        for opt, (start, _) in zip(self.optimizers, self.rows, strict=True):
            opt.lr = float(value[start, 0]) if is_column(value) else value

    def bind(self, buffer: ParamBuffer) -> None:
        self.buffer = buffer
        for opt, (start, stop) in zip(self.optimizers, self.rows, strict=True):
            opt.bind(RowsBuffer(buffer, start, stop))  # type: ignore[arg-type]

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def __repr__(self) -> str:
        return f"PointOptimizers({self.optimizers!r})"


class Scheduler:
    """Base class of learning-rate schedules: ``lr(base_lr, epoch)`` for epoch 0, 1, ...

    Schedules are stepped once per epoch after the optimizer steps (torch's convention): epoch 0 uses
    the base learning rate of the optimizer, unless the schedule says otherwise.  In a grid every grid point
    has its own instance and base learning rate (:class:`PointSchedules`): a schedule sees plain numbers.
    """

    name: ClassVar[str] = ""

    def lr(self, base_lr: float, epoch: int) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PointSchedules(Scheduler):
    """The schedules of a grid group: per grid point a schedule, its base learning rate and its row count;
    :meth:`lrs` is the per-replica learning rate column of an epoch."""

    def __init__(self, points: Sequence[tuple[Scheduler, float, int]]) -> None:
        self.points = list(points)
        self._sizes = [n for _, _, n in self.points]

    def lrs(self, epoch: int) -> np.ndarray:
        values = [float(s.lr(base, epoch)) for s, base, _ in self.points]
        return np.repeat(np.array(values, dtype=np.float64), self._sizes).reshape(-1, 1)

    def lr(self, base_lr: float, epoch: int) -> float:
        raise TypeError("PointSchedules gives one learning rate per replica: call lrs(epoch)")

    def __repr__(self) -> str:
        return f"PointSchedules({[s for s, _, _ in self.points]!r})"
