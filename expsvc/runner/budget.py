"""Memory estimates from shapes, checked before any work: a size that cannot fit is refused in one line.

The budget is :func:`expsvc.errors.memory_limit` (80 % of physical memory; ``EXPSVC_MEMORY_LIMIT``
overrides it).  Estimates count the big arrays of one group (one process): the data, the model's
parameters with their gradients, final snapshot and optimizer state, the activations of a forward and
backward pass over the largest of a batch and the evaluation sets, and the epoch's gathered batches.
The per-step loss history is not counted: it grows with the steps actually run (a generous ``--epochs``
with ``tol`` costs nothing until the steps happen).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from expsvc.core import Dataset, DataSplit, Layer, Sequential
from expsvc.errors import MEMORY_ENV, ExpsvcError, format_bytes, memory_limit

PARAM_COPIES = 5
"""Value, gradient, final snapshot and two optimizer state arrays (Adam's moments) per parameter."""
ACTIVATION_COPIES = 2
"""Each layer's output kept for backward, plus the gradient flowing back through it."""
LOAD_COPIES = 2
"""A generated dataset holds about twice its arrays while drawing them."""


class TooLarge(ExpsvcError):
    """A size that does not fit the memory budget."""


def check_memory(what: str, nbytes: float | None) -> None:
    """Refuse ``what`` if it needs more than the memory budget (nothing happens for an unknown size)."""
    limit = memory_limit()
    if nbytes is None or limit is None or nbytes <= limit:
        return
    raise TooLarge(
        f"{what} needs about {format_bytes(nbytes)} of memory, more than the limit of {format_bytes(limit)} "
        f"(set {MEMORY_ENV}, e.g. '16GiB' or '90%', to change it)"
    )


def dataset_bytes(dataset: Dataset) -> int | None:
    """The dataset's own estimate of what ``load()`` allocates (None when it cannot tell before loading)."""
    hint = dataset.memory_hint()
    return None if hint is None else int(hint) * LOAD_COPIES


@dataclass(frozen=True)
class ModelShapes:
    """What a model declares for an input shape: parameters (and state arrays) per replica and every layer's
    output size (the product of its per-sample output shape)."""

    params: int
    widths: tuple[int, ...]


def model_shapes(layers: Sequence[Layer], in_shape: int | tuple[int, ...]) -> ModelShapes:
    """Declare every layer's parameters for per-sample inputs of ``in_shape`` (as ``Sequential.build`` does,
    through the same shape inference) without allocating them; the count and sizes size the model before any
    memory is committed.  A misfit raises :class:`~expsvc.core.ShapeError`."""
    try:
        shapes = Sequential(layers).infer_shapes(in_shape)
        params = sum(math.prod(p.shape) for layer in layers for p in getattr(layer, "_params", []))
    finally:
        for layer in layers:
            layer._params = []
    return ModelShapes(params, tuple(math.prod(s) for s in shapes[1:]))


def training_bytes(shapes: ModelShapes, data: DataSplit, replicas: int, dtype: str) -> int:
    """Bytes one group of ``replicas`` needs to train and evaluate (see the module docstring)."""
    item = np.dtype(dtype).itemsize
    features = math.prod(data.x_train.shape[1:])
    targets = math.prod(data.y_train.shape[1:])
    n_train, n_test = len(data.x_train), len(data.x_test)
    rows = max(n_train, n_test)  # evaluation runs on the whole sets at once (more rows than any batch)
    params = replicas * shapes.params * item * PARAM_COPIES
    activations = replicas * rows * (features + sum(shapes.widths)) * item * ACTIVATION_COPIES
    batches = replicas * n_train * (features + targets) * item
    data_bytes = sum(a.nbytes for a in (data.x_train, data.y_train, data.x_test, data.y_test, data.x_val, data.y_val)
                     if a is not None)
    return params + activations + batches + data_bytes


def replicas_within(shapes: ModelShapes, data: DataSplit, dtype: str) -> int | None:
    """How many replicas of one group fit the memory budget (None: no limit known); at least 1 (one replica
    that does not fit is refused by :func:`check_memory` when the group is built)."""
    limit = memory_limit()
    if limit is None:
        return None
    fixed = training_bytes(shapes, data, 0, dtype)
    per_replica = max(1, training_bytes(shapes, data, 1, dtype) - fixed)
    return max(1, int((limit - fixed) // per_replica))
