"""Datasets, their train/test split, and the per-replica batch iterator."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class DataSplit:
    """Arrays of one dataset.  ``x_*`` is ``(N, F)`` (or ``(N, C, H, W)`` for images: ``(N, *input_shape)``);
    ``y_*`` is ``(N, 1)`` float for binary tasks,
    ``(N,)`` int for multiclass, ``(N, D)`` float for regression."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str
    classes: int | None = None

    @property
    def features(self) -> int:
        """The number of input values per sample (the width of flat inputs)."""
        return int(np.prod(self.x_train.shape[1:], dtype=np.int64))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The per-sample input shape: ``(F,)``, or ``(C, H, W)`` for images."""
        return tuple(int(s) for s in self.x_train.shape[1:])


class Dataset:
    """Base class of datasets: ``load()`` returns a :class:`DataSplit`, generated from ``seed``.

    The dataset seed is a parameter of the dataset (``points(seed=1)``), not of the run: every seed of an
    experiment trains on the same data and differs only in initialisation and batch order.
    """

    name: ClassVar[str] = ""
    task: ClassVar[str] = "regression"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def load(self) -> DataSplit:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"


def batch_indices(
    n: int, batch_size: int, order_rngs: Sequence[np.random.Generator], shuffle: bool
) -> Iterator[np.ndarray]:
    """One epoch of index batches ``(R, b)``: each replica permutes with its own generator when ``shuffle``
    (one permutation per epoch), batches of ``batch_size`` in order, the last partial batch kept."""
    order = epoch_order(n, order_rngs) if shuffle else np.broadcast_to(np.arange(n), (len(order_rngs), n))
    for start in range(0, n, batch_size):
        yield order[:, start : start + batch_size]


def epoch_order(n: int, order_rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """One epoch's sample order per replica, ``(R, n)``: each replica permutes with its own generator."""
    return np.stack([rng.permutation(n) for rng in order_rngs])


def steps_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)
