"""Built-in feature layers: fixed, parameter-free maps of the inputs."""

from __future__ import annotations

import numpy as np

from expsvc.core.layer import Layer
from expsvc.hookspecs import hookimpl


class Polynomial(Layer):
    """Powers of each input feature, highest first: ``x -> [x^d, ..., x^2, x]`` per feature.

    Shapes ``(R, B, F) -> (R, B, F·d)``.  With ``linear(1)`` after it, ``polynomial(2)`` is the seed
    experiment's quadratic model ``y = w1·x² + w2·x + b``.  Backward: ``dx = Σ_k dy_k · k·x^(k−1)``.
    """

    name = "polynomial"

    def __init__(self, degree: int = 2) -> None:
        super().__init__()
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
            raise ValueError(f"degree must be a positive integer, got {degree!r}")
        self.degree = degree

    def build(self, in_features: int) -> int:
        return in_features * self.degree

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        self.x = x
        powers = [x**k for k in range(self.degree, 0, -1)]
        return np.concatenate(powers, axis=-1)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        f = self.x.shape[-1]
        dx = np.zeros_like(self.x)
        for i, k in enumerate(range(self.degree, 0, -1)):
            dx += dy[..., i * f : (i + 1) * f] * (k * self.x ** (k - 1))
        return dx

    def __repr__(self) -> str:
        return f"Polynomial({self.degree})"


@hookimpl
def register_layers(register) -> None:
    register(Polynomial)
