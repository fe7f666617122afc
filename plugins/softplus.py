"""Example drop-in plugin: a ``softplus`` activation, which expsvc does not ship.

Any ``.py`` file in the ``plugins/`` folder (or ``--plugins-dir``) is loaded as a plugin.  It registers
components through the same hooks as the built-ins and third-party packages:

    expsvc components activation          # lists softplus, from plugin file:softplus
    expsvc gradcheck "softplus(beta=2)"   # checks its backward against central differences
    expsvc run --model "linear(8), softplus, linear(1)"
"""

from __future__ import annotations

import numpy as np

from expsvc import Layer, hookimpl

__version__ = "1.0.0"


class Softplus(Layer):
    """torch ``Softplus``: ``y = log(1 + e^(βx)) / β``; backward ``dx = dy · σ(βx)``.

    Shapes ``(R, B, F) -> (R, B, F)``.  Computed as ``max(z, 0) + log1p(e^-|z|)`` with ``z = βx``, so it
    never overflows.
    """

    name = "softplus"

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta!r}")
        self.beta = float(beta)

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        z = self.beta * x
        self.z = z
        return (np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))) / self.beta

    def backward(self, dy: np.ndarray) -> np.ndarray:
        e = np.exp(-np.abs(self.z))
        sigmoid = np.where(self.z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return dy * sigmoid


@hookimpl
def register_activations(register) -> None:
    register(Softplus)
