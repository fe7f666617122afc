"""Evaluation metrics, computed per replica."""

from __future__ import annotations

from typing import ClassVar

import numpy as np


class Metric:
    """Base class of metrics: ``__call__(pred, target)`` returns one value per replica, shape ``(R,)``.

    ``pred`` comes from :meth:`Loss.predict` with shape ``(R, N, ...)``; ``target`` is the dataset's
    ``(N, ...)`` array.  ``tasks`` lists the dataset tasks the metric applies to.
    """

    name: ClassVar[str] = ""
    tasks: ClassVar[tuple[str, ...]] = ("binary", "multiclass", "regression")

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
