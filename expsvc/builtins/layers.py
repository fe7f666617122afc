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


def normal_init(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal values (the seed experiments' ``randn`` weights)."""
    return rng.standard_normal(size=shape)


def constant_init(value: float):
    """Every entry equal to ``value`` (the seed experiments' "w starts at 1.0")."""

    def init(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return np.full(shape, value, dtype=np.float64)

    return init




class Linear(Layer):
    """Affine map ``y = x Wᵀ + b`` (torch ``nn.Linear``).

    Shapes: ``x (R, B, in)``, ``W (R, out, in)``, ``b (R, out)``, ``y (R, B, out)``.
    Init (``init``): ``"uniform"`` (default) draws ``W`` and ``b`` independently from ``U(-1/√in, 1/√in)``,
    torch's default; ``"normal"`` draws standard normal values; a number sets every entry to it.
    Backward: ``dW = dyᵀ x``, ``db = Σ_B dy``, ``dx = dy W`` (per replica).
    """

    name = "linear"

    def __init__(self, out_features: int, bias: bool = True, init: str | float = "uniform") -> None:
        super().__init__()
        if isinstance(out_features, bool) or not isinstance(out_features, int) or out_features < 1:
            raise ValueError(f"out_features must be a positive integer, got {out_features!r}")
        numeric = isinstance(init, int | float) and not isinstance(init, bool) and math.isfinite(init)
        if not numeric and init not in ("uniform", "normal"):
            raise ValueError(f"init must be 'uniform', 'normal' or a finite number, got {init!r}")
        self.out_features = out_features
        self.use_bias = bool(bias)
        self.init = init

    def build(self, in_features: int) -> int:
        if self.init == "uniform":
            init = uniform_init(1.0 / math.sqrt(in_features))
        elif self.init == "normal":
            init = normal_init
        else:
            init = constant_init(float(self.init))
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
        extra = ("" if self.use_bias else ", bias=False") + ("" if self.init == "uniform" else f", init={self.init!r}")
        return f"Linear({self.out_features}{extra})"


@hookimpl
def register_layers(register) -> None:
    register(Linear)
