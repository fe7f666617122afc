"""Built-in layers with parameters."""

from __future__ import annotations

import math

import numpy as np

from expsvc.core.layer import Layer
from expsvc.hookspecs import hookimpl


def uniform_init(bound: float):
    """``U(-bound, bound)`` drawn from the replica's generator."""

    def init(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return rng.uniform(-bound, bound, size=shape)

    return init


class Linear(Layer):
    """Affine map ``y = x Wᵀ + b`` (torch ``nn.Linear``).

    Shapes: ``x (R, B, in)``, ``W (R, out, in)``, ``b (R, out)``, ``y (R, B, out)``.
    Init: ``W`` and ``b`` independently ``U(-1/√in, 1/√in)`` (torch's default).
    Backward: ``dW = dyᵀ x``, ``db = Σ_B dy``, ``dx = dy W`` (per replica).
    """

    name = "linear"

    def __init__(self, out_features: int, bias: bool = True) -> None:
        super().__init__()
        if isinstance(out_features, bool) or not isinstance(out_features, int) or out_features < 1:
            raise ValueError(f"out_features must be a positive integer, got {out_features!r}")
        self.out_features = out_features
        self.use_bias = bool(bias)

    def build(self, in_features: int) -> int:
        init = uniform_init(1.0 / math.sqrt(in_features))
        self.weight = self.param("weight", (self.out_features, in_features), init)
        self.bias = self.param("bias", (self.out_features,), init) if self.use_bias else None
        return self.out_features

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        self.x = x
        y = np.matmul(x, self.weight.value.transpose(0, 2, 1))
        if self.bias is not None:
            y += self.bias.value[:, None, :]
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.weight.grad += np.matmul(dy.transpose(0, 2, 1), self.x)
        if self.bias is not None:
            self.bias.grad += dy.sum(axis=1)
        return np.matmul(dy, self.weight.value)

    def __repr__(self) -> str:
        return f"Linear({self.out_features}{'' if self.use_bias else ', bias=False'})"


@hookimpl
def register_layers(register) -> None:
    register(Linear)
