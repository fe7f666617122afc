"""Per-replica random streams."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def replica_streams(seeds: Sequence[int]) -> tuple[list[np.random.Generator], list[np.random.Generator]]:
    """For each seed, two independent generators from ``SeedSequence(seed).spawn(2)``: one for parameter
    initialisation, one for batch order.  A replica's numbers depend on its own seed only, so a vectorised
    group equals the same seeds run one by one."""
    init, order = [], []
    for seed in seeds:
        a, b = np.random.SeedSequence(int(seed)).spawn(2)
        init.append(np.random.default_rng(a))
        order.append(np.random.default_rng(b))
    return init, order
