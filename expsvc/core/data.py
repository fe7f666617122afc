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
    ``(N,)`` int for multiclass, ``(N, D)`` float for regression.

    ``x_val``/``y_val`` are the validation set, or None: a dataset may give its own (``file(...)``'s
    ``x_val``/``y_val`` arrays), or :func:`hold_out` draws one from the training rows (``--val-split``)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str
    classes: int | None = None
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    @property
    def has_validation(self) -> bool:
        return self.x_val is not None and self.y_val is not None

    def splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{"train": (x, y), "val": ..., "test": ...}`` (``val`` only when there is a validation set)."""
        out = {"train": (self.x_train, self.y_train)}
        if self.x_val is not None and self.y_val is not None:
            out["val"] = (self.x_val, self.y_val)
        out["test"] = (self.x_test, self.y_test)
        return out

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
    if (data.x_val is None) != (data.y_val is None):
        return "returned only one of x_val and y_val; a validation set needs both (or neither)"
    names = ("x_train", "y_train", "x_test", "y_test") + (("x_val", "y_val") if data.has_validation else ())
    for name in names:
        value = getattr(data, name)
        if not isinstance(value, np.ndarray):
            return f"returned {name} of type {type(value).__name__}, not a numpy array"
        if value.dtype.kind not in "biuf":
            return f"returned {name} of dtype {value.dtype}, not numbers"
        if value.ndim == 0 or len(value) == 0:
            return f"returned {name} of shape {value.shape}; every split needs at least one row"
    if data.x_train.ndim < 2 or data.x_train.shape[1:] != data.x_test.shape[1:] or 0 in data.x_train.shape:
        return f"returned inputs of shapes {data.x_train.shape} and {data.x_test.shape}; expected (N, F) for both"
    if data.x_val is not None and data.x_val.shape[1:] != data.x_train.shape[1:]:
        return f"returned x_val of shape {data.x_val.shape}; expected the training inputs' {data.x_train.shape[1:]}"
    for split in ("train", "val", "test") if data.has_validation else ("train", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        if len(x) != len(y):
            return f"returned {len(x)} {split} inputs but {len(y)} targets"
    if data.task not in TASKS:
        return f"returned task {data.task!r}; expected one of {', '.join(TASKS)}"
    return None


def hold_out(data: DataSplit, fraction: float, seed: int) -> DataSplit:
    """``data`` with ``round(fraction × N)`` of its N training rows moved to a validation set.

    The rows are drawn from the validation stream of ``seed`` (the dataset's seed,
    :func:`~expsvc.core.rng.validation_stream`): never from a run seed, so every configuration and seed of an
    experiment holds out the same rows, and re-runs too.  Both parts keep the rows' original order; the
    test set is untouched.  ``fraction`` 0 returns ``data`` itself (the arrays, not copies).  Raises
    ``ValueError`` (one line) if the split would leave the validation or the training set empty, or if the
    dataset already has its own validation set."""
    if fraction == 0:
        return data
    from expsvc.core.rng import validation_stream

    if data.has_validation:
        raise ValueError(f"the dataset has its own validation set ({len(data.x_val)} rows); "  # type: ignore[arg-type]
                         f"val_split {fraction:g} would hold out a second one: drop val_split")
    n = len(data.x_train)
    n_val = round(fraction * n)
    if not 0 < n_val < n:
        empty = "validation" if n_val == 0 else "training"
        raise ValueError(f"val_split {fraction:g} of {n} training rows leaves the {empty} set empty; "
                         f"expected a fraction holding out from 1 to {n - 1} rows")
    held = np.zeros(n, dtype=bool)
    held[validation_stream(seed).permutation(n)[:n_val]] = True
    return DataSplit(data.x_train[~held], data.y_train[~held], data.x_test, data.y_test, data.task, data.classes,
                     data.x_train[held], data.y_train[held])


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
