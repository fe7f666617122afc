"""Built-in optimizers, in torch's operation order, acting on a model's whole ``(R, P)`` buffer at once.

Every update is element-wise, so replicas never mix.  Temporaries are allocated once in ``bind``.  A large
buffer is updated in column blocks (:func:`blocks`): every pass of the update runs over one block before the
next block starts, so the block of every state array stays in cache.  Every element still goes through the
same operations, so the numbers equal a whole-array update bit for bit.

Every numeric hyper-parameter may be a per-replica column (:mod:`expsvc.core.optim`): the replicas of a grid
group each get their own value, and every row's numbers equal that value's run alone, bit for bit.  Derived
scalars are computed as the scalar code does: ``+ - * /`` on float64 columns round exactly as on Python floats,
and powers (bias corrections) are computed per row in Python (:func:`each`); then they are cast to the
buffer's dtype (:func:`cast`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from expsvc.core.optim import Hyper, Optimizer, any_nonzero, cast, check_all, each, hyper, is_column
from expsvc.core.params import ParamBuffer
from expsvc.hookspecs import hookimpl

CHUNK_BYTES = 1 << 17
"""Bytes per state array in one block (128 KiB).  AdamW makes 14 ufunc passes over its arrays; on whole
270k-parameter float32 buffers (several MB, more than a 2 MB L2) each pass streams from memory, in blocks
they stay in L2.  Models up to 16k float64 parameters per replica are a single block: small models make no
extra calls."""


def blocks(arrays: Sequence[np.ndarray | None], scratch: int = 0) -> list[tuple[np.ndarray | None, ...]]:
    """Column blocks of ``(R, P)`` arrays, about :data:`CHUNK_BYTES` each, plus ``scratch`` temporaries.

    Each block is a tuple of views of ``arrays`` (``None`` entries stay ``None``) followed by ``scratch``
    arrays of the block's shape.  The temporaries are shared by all blocks (views of one ``(R, width)``
    array each), so they stay in cache instead of being streamed like the state.
    """
    first = next(a for a in arrays if a is not None)
    rows, size = first.shape
    width = min(size, max(1, CHUNK_BYTES // (first.itemsize * rows)))
    temps = [np.empty((rows, width), dtype=first.dtype) for _ in range(scratch)]
    out = []
    for start in range(0, size, width):
        stop = min(start + width, size)
        views = tuple(None if a is None else a[:, start:stop] for a in arrays)
        out.append(views + tuple(t[:, : stop - start] for t in temps))
    return out


def _non_negative(**values: Hyper) -> None:
    for key, value in values.items():
        check_all(key, value, lambda v: v >= 0, ">= 0")


class MiniBGD(Optimizer):
    """Plain minibatch gradient descent: ``θ ← θ − lr·g``."""

    name = "mini_bgd"
    per_replica = ("lr",)

    def bind(self, buffer: ParamBuffer) -> None:
        super().bind(buffer)
        self._blocks = blocks([buffer.value, buffer.grad], scratch=1)

    def step(self) -> None:
        neg_lr = cast(-self.lr, self.buffer.dtype)  # type: ignore[union-attr]
        for value, grad, tmp in self._blocks:
            np.multiply(grad, neg_lr, out=tmp)
            value += tmp  # type: ignore[operator]


class SGD(Optimizer):
    """torch ``SGD``: ``g ← g + λθ``; momentum buffer ``b ← g`` on the first step, then
    ``b ← μb + (1−τ)g``; ``g ← g + μb`` (Nesterov) or ``g ← b``; ``θ ← θ − lr·g``."""

    name = "sgd"
    per_replica = ("lr", "momentum", "dampening", "weight_decay")

    def __init__(
        self,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(lr)
        momentum, dampening, weight_decay = hyper(momentum), hyper(dampening), hyper(weight_decay)
        _non_negative(momentum=momentum, dampening=dampening, weight_decay=weight_decay)
        if nesterov and (np.any(np.asarray(momentum) <= 0) or any_nonzero(dampening)):
            raise ValueError("nesterov requires momentum > 0 and dampening = 0")
        self.momentum, self.dampening = momentum, dampening
        self.weight_decay, self.nesterov = weight_decay, bool(nesterov)

    def bind(self, buffer: ParamBuffer) -> None:
        super().bind(buffer)
        self.momentum_buffer: np.ndarray | None = None
        self._momentum = np.empty_like(buffer.value) if any_nonzero(self.momentum) else None
        # rows without momentum (a column with zeros) keep g as it is, as torch does for momentum = 0
        self._plain = np.flatnonzero(self.momentum.ravel() == 0) if is_column(self.momentum) else None
        if self._plain is not None and not self._plain.size:
            self._plain = None
        self._blocks = blocks([buffer.value, buffer.grad, self._momentum], scratch=2)

    def step(self) -> None:
        dtype = self.buffer.dtype  # type: ignore[union-attr]
        neg_lr, wd, mu, damp = (cast(v, dtype) for v in (-self.lr, self.weight_decay, self.momentum,
                                                         1 - self.dampening))
        first, plain = self.momentum_buffer is None, self._plain
        for value, grad, b, g, tmp in self._blocks:
            if any_nonzero(wd):
                np.multiply(value, wd, out=g)
                g += grad  # type: ignore[operator]
            else:
                g[...] = grad  # type: ignore[index]
            if b is not None:
                if first:
                    b[...] = g
                else:
                    b *= mu
                    np.multiply(g, damp, out=tmp)
                    b += tmp
                if self.nesterov:
                    np.multiply(b, mu, out=tmp)
                    g += tmp  # type: ignore[operator]
                elif plain is None:
                    g[...] = b  # type: ignore[index]
                else:
                    b[plain] = g[plain]  # type: ignore[index]
                    g[...] = b  # type: ignore[index]
            g *= neg_lr  # type: ignore[operator]
            value += g  # type: ignore[operator]
        if self._momentum is not None and first:
            self.momentum_buffer = self._momentum

    def __repr__(self) -> str:
        return (
            f"SGD(lr={self.lr}, momentum={self.momentum}, dampening={self.dampening}, "
            f"weight_decay={self.weight_decay}, nesterov={self.nesterov})"
        )


class Adam(Optimizer):
    """torch ``Adam``: ``t += 1``; ``g ← g + λθ``; ``m ← m + (1−β1)(g − m)``; ``v ← β2·v + (1−β2)·g·g``;
    AMSGrad keeps ``v̂ = max(v̂, v)`` of the raw ``v``; ``denom = √v/√(1−β2^t) + ε``;
    ``θ ← θ + (−lr/(1−β1^t))·m / denom``."""

    name = "adam"
    per_replica = ("lr", "betas", "eps", "weight_decay")
    decoupled = False
    default_weight_decay = 0.0

    def __init__(
        self,
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float | None = None,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(lr)
        if weight_decay is None:
            weight_decay = self.default_weight_decay
        if len(betas) != 2:
            raise ValueError(f"betas must be two numbers in [0, 1), got {tuple(betas)!r}")
        self.beta1, self.beta2 = hyper(betas[0]), hyper(betas[1])
        for beta in (self.beta1, self.beta2):
            check_all("betas", beta, lambda b: 0.0 <= b < 1.0, "two numbers in [0, 1)")
        self.eps, self.weight_decay = hyper(eps), hyper(weight_decay)
        _non_negative(eps=self.eps, weight_decay=self.weight_decay)
        self.amsgrad = bool(amsgrad)
        self._columns = any(is_column(v) for v in (self.beta1, self.beta2, self.eps, self.weight_decay))

    def bind(self, buffer: ParamBuffer) -> None:
        super().bind(buffer)
        self.t = 0
        self.m = np.zeros_like(buffer.value)
        self.v = np.zeros_like(buffer.value)
        self.v_max = np.zeros_like(buffer.value) if self.amsgrad else None
        self._blocks = blocks([buffer.value, buffer.grad, self.m, self.v, self.v_max], scratch=3)

    def _grid_scalars(self, t: int) -> tuple[Hyper, ...]:
        """This step's ``(decay, neg_step_size, bias_correction2_sqrt, 1 − β1, 1 − β2, λ, β2, ε)`` with columns:
        ``+ - * /`` on float64 columns round as Python floats do, the powers go row by row (:func:`each`), and
        every column is cast to the buffer's dtype (as numpy casts a Python float)."""
        dtype = self.buffer.dtype  # type: ignore[union-attr]
        lr, wd, b1, b2 = self.lr, self.weight_decay, self.beta1, self.beta2
        values = (1 - lr * wd if any_nonzero(wd) and self.decoupled else None,
                  -(lr / each(lambda b1: 1 - b1**t, b1)), each(lambda b2: (1 - b2**t) ** 0.5, b2), 1 - b1, 1 - b2,
                  wd, b2, self.eps)
        return tuple(None if v is None else cast(v, dtype) for v in values)

    def step(self) -> None:
        self.t += 1
        t, lr, wd, b1, b2 = self.t, self.lr, self.weight_decay, self.beta1, self.beta2
        l2 = any_nonzero(wd) and not self.decoupled
        if self._columns or is_column(lr):
            decay, neg_step_size, bias_correction2_sqrt, one_minus_b1, one_minus_b2, wd, b2, eps = (
                self._grid_scalars(t))
        else:  # plain floats: the scalar run's own arithmetic, no per-step helpers on the hot path
            decay = 1 - lr * wd if wd and self.decoupled else None
            neg_step_size = -(lr / (1 - b1**t))
            bias_correction2_sqrt = (1 - b2**t) ** 0.5
            one_minus_b1, one_minus_b2, eps = 1 - b1, 1 - b2, self.eps
        for value, grad, m, v, v_max, g, tmp, denom in self._blocks:
            if decay is not None:  # AdamW: θ ← θ·(1 − lr·λ) first
                value *= decay  # type: ignore[operator]
            if l2:  # Adam's L2 penalty: g = g + λθ
                np.multiply(value, wd, out=g)
                g += grad  # type: ignore[operator]
            else:
                g = grad
            np.subtract(g, m, out=tmp)
            tmp *= one_minus_b1  # type: ignore[operator]
            m += tmp  # type: ignore[operator]  # m.lerp_(g, 1 − β1)
            v *= b2  # type: ignore[operator]
            np.multiply(g, one_minus_b2, out=tmp)
            tmp *= g  # type: ignore[operator]
            v += tmp  # type: ignore[operator]  # v.mul_(β2).addcmul_(g, g, 1 − β2)
            if v_max is not None:
                np.maximum(v_max, v, out=v_max)
                np.sqrt(v_max, out=denom)
            else:
                np.sqrt(v, out=denom)
            denom /= bias_correction2_sqrt  # type: ignore[operator]
            denom += eps  # type: ignore[operator]
            np.multiply(m, neg_step_size, out=tmp)
            tmp /= denom  # type: ignore[operator]
            value += tmp  # type: ignore[operator]  # θ.addcdiv_(m, denom, −step_size)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(lr={self.lr}, betas=({self.beta1}, {self.beta2}), eps={self.eps}, "
            f"weight_decay={self.weight_decay}, amsgrad={self.amsgrad})"
        )


class AdamW(Adam):
    """torch ``AdamW``: Adam with decoupled decay ``θ ← θ·(1 − lr·λ)`` applied first; ``λ`` defaults
    to 0.01."""

    name = "adamw"
    decoupled = True
    default_weight_decay = 1e-2


@hookimpl
def register_optimizers(register) -> None:
    for cls in (MiniBGD, SGD, Adam, AdamW):
        register(cls)
