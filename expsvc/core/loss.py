"""Losses: one value per replica, gradients of the *sum* over replicas."""

from __future__ import annotations

from typing import ClassVar

import numpy as np


class Loss:
    """Base class of losses.

    ``forward(pred, target)`` takes ``pred`` of shape ``(R, B, O)`` and a target whose leading axes are
    ``(R, B)``; it returns the loss of each replica, shape ``(R,)``.  ``backward()`` returns
    ``d(sum_r loss_r)/d pred`` — replicas are summed, never averaged, so each replica's gradient is exactly
    the one it would get alone.  ``predict(out)`` turns model outputs into predictions for metrics
    (labels for classification, values for regression).
    """

    name: ClassVar[str] = ""
    task: ClassVar[str] = "regression"
    """The kind of target the loss expects: ``binary``, ``multiclass`` or ``regression``."""

    def forward(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self) -> np.ndarray:
        raise NotImplementedError

    def predict(self, out: np.ndarray) -> np.ndarray:
        """Predictions from outputs ``(R, N, O)``; regression losses return the outputs themselves."""
        return out

    def sample_input(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Random valid model outputs of ``shape`` (gradient checks); probabilities for a loss on them."""
        return rng.standard_normal(shape)

    def sample_target(self, rng: np.random.Generator, pred_shape: tuple[int, ...]) -> np.ndarray:
        """A valid random target for outputs of ``pred_shape`` (used by gradient checks)."""
        return rng.standard_normal(pred_shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
