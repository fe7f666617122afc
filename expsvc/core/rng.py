"""Per-replica random streams."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RUN_DOMAIN = 0x65787073
"""Spawn key that separates a run seed's streams from anything else seeded with the same number.

A dataset generated with ``default_rng(seed).spawn(2)`` and a run with the same ``seed`` would otherwise
draw identical numbers (inputs equal to initial weights, row for row), silently correlating data and init.
"""


def replica_streams(seeds: Sequence[int]) -> tuple[list[np.random.Generator], list[np.random.Generator]]:
    """For each seed, two independent generators spawned from ``SeedSequence(seed)`` (in the run domain): one
    for parameter initialisation, one for batch order.  A replica's numbers depend on its own seed only, so
    a vectorised group equals the same seeds run one by one."""
    init, order = [], []
    for seed in seeds:
        a, b = np.random.SeedSequence(int(seed), spawn_key=(RUN_DOMAIN,)).spawn(2)
        init.append(np.random.default_rng(a))
        order.append(np.random.default_rng(b))
    return init, order
