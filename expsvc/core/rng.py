"""Per-replica random streams.

Every seed of a run owns a :class:`numpy.random.SeedSequence` in the run domain; its children are the
replica's independent streams: child 0 initialises the parameters, child 1 orders the batches, and child 2
(:data:`COMPONENT_KEY`) is the root of the streams that layers draw from while training (dropout masks), and
child 3 (:data:`OPTIMIZER_KEY`) the optimizer's (noisy updates).  Layer ``i`` of the model gets the grandchild
``(COMPONENT_KEY, i)``, so adding a random layer changes neither the init, nor the batch order, nor another
random layer's numbers; the optimizer's stream is a sibling of all of them, so an optimizer that draws changes
nothing else either.  Datasets are not replicated: a dataset draws from its own ``seed`` argument
(:meth:`expsvc.core.data.Dataset.rng`), which ``data_seed = "run"`` sets to each run's seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RUN_DOMAIN = 0x65787073
"""Spawn key that separates a run seed's streams from anything else seeded with the same number.

A dataset generated with ``default_rng(seed).spawn(2)`` and a run with the same ``seed`` would otherwise
draw identical numbers (inputs equal to initial weights, row for row), silently correlating data and init.
"""

COMPONENT_KEY = 2
"""The run seed's child under which layers' training-time streams live (0: init, 1: batch order)."""

OPTIMIZER_KEY = 3
"""The run seed's child the optimizer's training-time stream comes from (a sibling of the layers' root)."""


VALIDATION_DOMAIN = 0x76616C69
"""Spawn key of the stream that draws the held-out validation rows (``--val-split``) from a dataset's seed:
separate from the run domain (no run seed ever touches it) and from the dataset's own ``default_rng(seed)``."""


def validation_stream(seed: int) -> np.random.Generator:
    """The generator that picks the validation rows of a dataset with ``seed``: the same for every run seed,
    configuration and re-run (optimizers are compared on identical data)."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(VALIDATION_DOMAIN,)))


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


def component_roots(seeds: Sequence[int]) -> list[np.random.SeedSequence]:
    """For each seed, the root of its components' streams: ``SeedSequence(seed)``'s child ``COMPONENT_KEY``
    in the run domain (a sibling of the init and order streams, which therefore do not change)."""
    return [np.random.SeedSequence(int(s), spawn_key=(RUN_DOMAIN, COMPONENT_KEY)) for s in seeds]


def roots_of(rngs: Sequence[np.random.Generator]) -> list[np.random.SeedSequence]:
    """Component roots for generators that were not made from run seeds (tests, gradcheck): the child
    ``COMPONENT_KEY`` of each generator's own seed sequence.  The generators' draws are not touched."""
    roots = []
    for r, rng in enumerate(rngs):
        seq = getattr(rng.bit_generator, "seed_seq", None)
        if not isinstance(seq, np.random.SeedSequence):
            seq = np.random.SeedSequence(r)
        roots.append(np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, COMPONENT_KEY)))
    return roots


def sibling_roots(roots: Sequence[np.random.SeedSequence], key: int) -> list[np.random.SeedSequence]:
    """For each component root (:func:`component_roots`, :func:`roots_of`), its sibling ``key`` under the same
    parent: ``sibling_roots(component_roots(seeds), OPTIMIZER_KEY)`` is each seed's child ``OPTIMIZER_KEY`` in
    the run domain."""
    return [np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key[:-1], int(key))) for root in roots]


class ReplicaRandom:
    """One generator per replica for one component: what a layer draws its training-time randomness from.

    ``draw`` methods return ``(R, *shape)`` arrays whose row ``r`` comes from replica ``r``'s generator
    only, so a replica's numbers do not depend on which other replicas train with it (vectorised runs equal
    runs one by one, bit for bit).  A layer gets its instance as ``self.random`` once the model is built::

        u = self.random.uniform((B, *shape), dtype)   # (R, B, *shape) in [0, 1)

    ``state()`` / ``set_state()`` save and restore every generator (gradcheck replays the same draws).
    """

    def __init__(self, generators: Sequence[np.random.Generator]) -> None:
        self.generators = list(generators)

    @classmethod
    def for_component(cls, roots: Sequence[np.random.SeedSequence], index: int) -> ReplicaRandom:
        """The streams of model component ``index``: child ``index`` of each replica's component root."""
        return cls([
            np.random.default_rng(np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, int(index))))
            for root in roots
        ])

    @classmethod
    def for_optimizer(cls, roots: Sequence[np.random.SeedSequence]) -> ReplicaRandom:
        """The optimizer's streams: each replica's run-domain child :data:`OPTIMIZER_KEY` (given the layers'
        roots, whose sibling it is)."""
        return cls([np.random.default_rng(seq) for seq in sibling_roots(roots, OPTIMIZER_KEY)])

    @property
    def replicas(self) -> int:
        return len(self.generators)

    def uniform(self, shape: tuple[int, ...], dtype: np.dtype | type = np.float64) -> np.ndarray:
        """``(R, *shape)`` uniform numbers in ``[0, 1)``, row ``r`` from replica ``r``'s generator (float32 and
        float64 draw natively; other dtypes draw float64 and convert)."""
        return self._draw("random", shape, dtype)

    def normal(self, shape: tuple[int, ...], dtype: np.dtype | type = np.float64) -> np.ndarray:
        """``(R, *shape)`` standard normal numbers, row ``r`` from replica ``r``'s generator (dtypes as
        :meth:`uniform`)."""
        return self._draw("standard_normal", shape, dtype)

    def _draw(self, method: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        dtype = np.dtype(dtype)
        native = dtype if dtype in (np.dtype(np.float32), np.dtype(np.float64)) else np.dtype(np.float64)
        out = np.empty((len(self.generators), *shape), dtype=native)
        for r, g in enumerate(self.generators):
            getattr(g, method)(out=out[r], dtype=native)
        return out if native == dtype else out.astype(dtype)

    def state(self) -> list[dict]:
        """Every generator's state (to replay the same draws)."""
        return [g.bit_generator.state for g in self.generators]

    def set_state(self, states: Sequence[dict]) -> None:
        for g, s in zip(self.generators, states, strict=True):
            g.bit_generator.state = s

    def __repr__(self) -> str:
        return f"ReplicaRandom(replicas={self.replicas})"
