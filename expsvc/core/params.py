"""Parameters and the flat buffer that holds them.

Every parameter of a model lives in one buffer of shape ``(R, P)``: row ``r`` holds all ``P`` numbers of
replica ``r``.  A :class:`Parameter`'s ``value`` and ``grad`` are views ``(R, *shape)`` into that buffer, so
an optimizer can update a whole model with a few ufunc calls on ``buffer.value`` / ``buffer.grad`` while
layers see ordinary arrays.  Rows never mix, which keeps replicas independent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

Init = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]
"""Draws one replica's initial value of the given shape from that replica's own generator."""


class Parameter:
    """A trainable array with a leading replica axis and its accumulated gradient.

    ``value`` and ``grad`` have shape ``(R, *shape)``.  Backward passes *add* into ``grad``;
    :meth:`ParamBuffer.zero_grad` clears all gradients at once.  ``buffer`` is the :class:`ParamBuffer`
    holding the arrays (``None`` until one is allocated).  ``writes_grad``: the owning layer *writes* this
    gradient at its first backward after a ``zero_grad`` (see :class:`ParamBuffer`), so clearing it is
    skipped.  ``trainable=False`` marks *state* (batch norm's running statistics): saved and restored with
    the parameters, never touched by an optimizer (it lives in :attr:`ParamBuffer.state`, has no gradient).
    """

    __slots__ = ("buffer", "grad", "init", "name", "shape", "trainable", "value", "writes_grad")

    def __init__(
        self, name: str, shape: tuple[int, ...], init: Init, writes_grad: bool = False, trainable: bool = True
    ) -> None:
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.init = init
        self.writes_grad = bool(writes_grad)
        self.trainable = bool(trainable)
        self.value: np.ndarray = np.empty((0, *self.shape))
        self.grad: np.ndarray = np.empty((0, *self.shape))
        self.buffer: ParamBuffer | None = None

    @property
    def size(self) -> int:
        """Numbers per replica."""
        return math.prod(self.shape)

    def __repr__(self) -> str:
        return f"Parameter({self.name!r}, shape={self.shape}, replicas={self.value.shape[0]})"


class ParamBuffer:
    """One ``(R, P)`` buffer for values and one for gradients; parameters are views into them.

    ``zero_count`` counts :meth:`zero_grad` calls.  A layer that is the only writer of its parameters'
    gradients may compare it with the count at its own last backward: if it changed, the gradients are
    still all zero, and the layer may *write* them (``out=``) instead of adding into them — the same numbers,
    one ufunc call less per tensor (``linear`` does this).

    Non-trainable parameters (``trainable=False``) are held apart in ``state`` ``(R, S)`` and listed in
    ``states``: optimizers see only ``value``/``grad`` and ``params``.
    """

    def __init__(self, params: Sequence[Parameter], replicas: int, dtype: np.dtype | type = np.float64) -> None:
        self.params = [p for p in params if p.trainable]
        self.states = [p for p in params if not p.trainable]
        self.replicas = int(replicas)
        self.dtype = np.dtype(dtype)
        self.size = sum(p.size for p in self.params)
        self.value = np.zeros((self.replicas, self.size), dtype=self.dtype)
        self.grad = np.zeros((self.replicas, self.size), dtype=self.dtype)
        self.offsets: list[int] = []
        offset = 0
        for p in self.params:
            self.offsets.append(offset)
            end = offset + p.size
            p.value = self.value[:, offset:end].reshape(self.replicas, *p.shape)
            p.grad = self.grad[:, offset:end].reshape(self.replicas, *p.shape)
            p.buffer = self
            offset = end
        self.state = np.zeros((self.replicas, sum(p.size for p in self.states)), dtype=self.dtype)
        offset = 0
        for p in self.states:
            end = offset + p.size
            p.value = self.state[:, offset:end].reshape(self.replicas, *p.shape)
            p.grad = np.empty((self.replicas, 0))
            p.buffer = self
            offset = end
        self.zero_count = 0
        self.random_roots: list[np.random.SeedSequence] | None = None
        """Each replica's root of the layers' random streams (set by ``Sequential.build``); the optimizer's
        stream is its sibling (:attr:`expsvc.core.optim.Optimizer.random`)."""
        self._clear: list[tuple[int, int]] = []  # column spans zero_grad fills: parameters that are added into
        for p, start in zip(self.params, self.offsets, strict=True):
            if p.writes_grad:
                continue
            if self._clear and self._clear[-1][1] == start:
                self._clear[-1] = (self._clear[-1][0], start + p.size)
            else:
                self._clear.append((start, start + p.size))

    def initialize(self, rngs: Sequence[np.random.Generator]) -> None:
        """Fill replica ``r`` from ``rngs[r]``, parameter by parameter in model order, then the state arrays
        (whose inits should draw nothing: a constant, as torch's running statistics)."""
        if len(rngs) != self.replicas:
            raise ValueError(f"need {self.replicas} generators, got {len(rngs)}")
        for r, rng in enumerate(rngs):
            for p in self.params:
                p.value[r] = p.init(rng, p.shape)
            for p in self.states:
                p.value[r] = p.init(rng, p.shape)

    def zero_grad(self) -> None:
        """Clear every gradient that backward adds into (one fill when they are contiguous); the others
        (``writes_grad``) are written by their layer's next backward."""
        grad = self.grad
        for start, end in self._clear:
            if end - start == grad.shape[1]:
                grad.fill(0.0)
            else:
                grad[:, start:end].fill(0.0)
        self.zero_count += 1

    def named(self) -> dict[str, np.ndarray]:
        """Each parameter's and state array's value ``(R, *shape)`` by its qualified name."""
        return {p.name: p.value for p in (*self.params, *self.states)}

    def __repr__(self) -> str:
        return f"ParamBuffer(replicas={self.replicas}, size={self.size}, dtype={self.dtype})"
