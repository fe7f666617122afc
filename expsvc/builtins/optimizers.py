"""Built-in optimizers, in torch's operation order, acting on a model's whole ``(R, P)`` buffer at once.

Every update is element-wise, so replicas never mix.  Temporaries are allocated once in ``bind``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from expsvc.core.optim import Optimizer
from expsvc.core.params import ParamBuffer
from expsvc.hookspecs import hookimpl


def _non_negative(**values: float) -> None:
    for key, value in values.items():
        if not value >= 0:
            raise ValueError(f"{key} must be >= 0, got {value!r}")


class MiniBGD(Optimizer):
    """Plain minibatch gradient descent: ``θ ← θ − lr·g``."""

    name = "mini_bgd"

    def bind(self, buffer: ParamBuffer) -> None:
        super().bind(buffer)
        self._tmp = np.empty_like(buffer.value)

    def step(self) -> None:
        buf = self.buffer
        np.multiply(buf.grad, -self.lr, out=self._tmp)
        buf.value += self._tmp


class SGD(Optimizer):
    """torch ``SGD``: ``g ← g + λθ``; momentum buffer ``b ← g`` on the first step, then
    ``b ← μb + (1−τ)g``; ``g ← g + μb`` (Nesterov) or ``g ← b``; ``θ ← θ − lr·g``."""

    name = "sgd"

    def __init__(
        self,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(lr)
        _non_negative(momentum=momentum, dampening=dampening, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov requires momentum > 0 and dampening = 0")
        self.momentum, self.dampening = float(momentum), float(dampening)
        self.weight_decay, self.nesterov = float(weight_decay), bool(nesterov)

    def bind(self, buffer: ParamBuffer) -> None:
        super().bind(buffer)
        self._g = np.empty_like(buffer.value)
        self._tmp = np.empty_like(buffer.value)
        self.momentum_buffer: np.ndarray | None = None

    def step(self) -> None:
        buf, g, tmp = self.buffer, self._g, self._tmp
        if self.weight_decay:
            np.multiply(buf.value, self.weight_decay, out=g)
            g += buf.grad
        else:
            g[...] = buf.grad
        if self.momentum:
            if self.momentum_buffer is None:
                self.momentum_buffer = g.copy()
            else:
                b = self.momentum_buffer
                b *= self.momentum
                np.multiply(g, 1 - self.dampening, out=tmp)
                b += tmp
            if self.nesterov:
                np.multiply(self.momentum_buffer, self.momentum, out=tmp)
                g += tmp
            else:
                g[...] = self.momentum_buffer
        g *= -self.lr
        buf.value += g

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
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {tuple(betas)!r}")
        _non_negative(eps=eps, weight_decay=weight_decay)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps, self.weight_decay, self.amsgrad = float(eps), float(weight_decay), bool(amsgrad)

    def bind(self, buffer: ParamBuffer) -> None:
        super().bind(buffer)
        self.t = 0
        self.m = np.zeros_like(buffer.value)
        self.v = np.zeros_like(buffer.value)
        self.v_max = np.zeros_like(buffer.value) if self.amsgrad else None
        self._g = np.empty_like(buffer.value)
        self._tmp = np.empty_like(buffer.value)
        self._denom = np.empty_like(buffer.value)

    def step(self) -> None:
        buf, m, v, tmp, denom = self.buffer, self.m, self.v, self._tmp, self._denom
        self.t += 1
        lr, wd, b1, b2 = self.lr, self.weight_decay, self.beta1, self.beta2
        g = buf.grad
        if wd:
            if self.decoupled:
                buf.value *= 1 - lr * wd
            else:
                g = np.multiply(buf.value, wd, out=self._g)
                g += buf.grad
        np.subtract(g, m, out=tmp)
        tmp *= 1 - b1
        m += tmp
        v *= b2
        np.multiply(g, 1 - b2, out=tmp)
        tmp *= g
        v += tmp
        step_size = lr / (1 - b1**self.t)
        bias_correction2_sqrt = (1 - b2**self.t) ** 0.5
        if self.v_max is not None:
            np.maximum(self.v_max, v, out=self.v_max)
            np.sqrt(self.v_max, out=denom)
        else:
            np.sqrt(v, out=denom)
        denom /= bias_correction2_sqrt
        denom += self.eps
        np.multiply(m, -step_size, out=tmp)
        tmp /= denom
        buf.value += tmp

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
