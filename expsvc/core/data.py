"""Datasets, their train/test split, and the per-replica batch iterator."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

MAX_SEED = 2**63 - 1
"""Largest dataset seed (any non-negative integer seeds numpy; this keeps seeds storable as 64-bit)."""


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
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer from 0 to {MAX_SEED:,}, got {seed!r}")
        self.seed = int(seed)

    def rng(self) -> np.random.Generator:
        """The dataset's generator, ``numpy.random.default_rng(self.seed)``: the only randomness a dataset may
        use, so the same seed gives the same data (the built-ins draw from it or from its ``spawn``).  A
        dataset is shared by the seeds of a vectorised group; with ``data_seed = "run"`` each run's seed
        becomes the dataset's ``seed``."""
        return np.random.default_rng(self.seed)

    def load(self) -> DataSplit:
        raise NotImplementedError

    def memory_hint(self) -> int | None:
        """Bytes of the arrays :meth:`load` will return, if known before loading (None: unknown).

        expsvc refuses a dataset whose hint exceeds the memory budget before loading it; datasets whose
        size follows from their arguments (generated ones) should say it.
        """
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"


TASKS = ("binary", "multiclass", "regression")


def split_problem(data: object) -> str | None:
    """What is wrong with a dataset's ``load()`` result (``"returned None, not a DataSplit"``...), or None.

    Checks the :class:`DataSplit` contract: numeric arrays, inputs ``(N, ...)`` with the same feature shape
    in both splits, targets with one row per input, at least one row in each split, a known task.
    """
    if not isinstance(data, DataSplit):
        return f"returned {'None' if data is None else type(data).__name__}, not a DataSplit"
    for name in ("x_train", "y_train", "x_test", "y_test"):
        value = getattr(data, name)
        if not isinstance(value, np.ndarray):
            return f"returned {name} of type {type(value).__name__}, not a numpy array"
        if value.dtype.kind not in "biuf":
            return f"returned {name} of dtype {value.dtype}, not numbers"
        if value.ndim == 0 or len(value) == 0:
            return f"returned {name} of shape {value.shape}; every split needs at least one row"
    if data.x_train.ndim < 2 or data.x_train.shape[1:] != data.x_test.shape[1:] or 0 in data.x_train.shape:
        return f"returned inputs of shapes {data.x_train.shape} and {data.x_test.shape}; expected (N, F) for both"
    for split in ("train", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        if len(x) != len(y):
            return f"returned {len(x)} {split} inputs but {len(y)} targets"
    if data.task not in TASKS:
        return f"returned task {data.task!r}; expected one of {', '.join(TASKS)}"
    return None


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
