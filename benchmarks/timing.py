"""Interleaved repetitions and their summary statistics.

Every section measures its contenders side by side in one process run: repetition ``k`` of every contender
runs before repetition ``k + 1`` of any (the order rotates each round), so slow drift of the machine (other
processes, thermal state) affects all contenders alike.  Each figure is reported as the median with the
min–max range over the repetitions.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    """Repeated measurements of one quantity (``unit`` says which; lower is better unless ``higher``)."""

    values: list[float]
    unit: str
    higher: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        """Median over the repetitions."""
        return float(statistics.median(self.values))

    @property
    def min(self) -> float:
        """Smallest repetition."""
        return float(min(self.values))

    @property
    def max(self) -> float:
        """Largest repetition."""
        return float(max(self.values))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: median, min, max, every value, the unit."""
        return {
            "median": self.median, "min": self.min, "max": self.max, "unit": self.unit, "reps": len(self.values),
            "values": list(self.values), **({"extra": self.extra} if self.extra else {}),
        }

    def text(self, digits: int = 3) -> str:
        """``median [min–max] unit`` with ``digits`` significant digits."""
        return f"{fmt(self.median, digits)} [{fmt(self.min, digits)}–{fmt(self.max, digits)}] {self.unit}"


def fmt(value: float | None, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits (thousands separated, no exponent for ordinary sizes)."""
    if value is None:
        return "—"
    if value == 0 or not 1e-3 <= abs(value) < 1e9:
        return f"{value:.{digits}g}"
    if abs(value) >= 10 ** (digits - 1):
        return f"{round(value):,}"
    return f"{value:.{digits}g}"


def paired_ratio(a: Stats, b: Stats, unit: str = "×") -> Stats:
    """``a_k / b_k`` for every round ``k`` of one :func:`interleaved` run: pairing the contenders round by round
    cancels drift that is slower than a round, so the median ratio is steadier than a ratio of medians."""
    if len(a.values) != len(b.values):
        raise ValueError("paired ratios need the same number of rounds")
    return Stats([x / y for x, y in zip(a.values, b.values, strict=True)], unit, higher=True)


def interleaved(
    cases: Mapping[str, Callable[[], float]],
    reps: int,
    *,
    unit: str,
    higher: bool = False,
    warmup: bool = True,
) -> dict[str, Stats]:
    """Run every case ``reps`` times, round-robin with a rotating start; each call returns one measurement.

    With ``warmup`` every case runs once first, unrecorded (imports, allocator and BLAS warm-up).  The garbage
    collector is collected before and disabled during each call, as ``timeit`` does.
    """
    names = list(cases)
    if warmup:
        for name in names:
            cases[name]()
    values: dict[str, list[float]] = {name: [] for name in names}
    for k in range(reps):
        order = names[k % len(names):] + names[: k % len(names)]
        for name in order:
            gc.collect()
            gc.disable()
            try:
                values[name].append(float(cases[name]()))
            finally:
                gc.enable()
    return {name: Stats(values[name], unit, higher) for name in names}


def wall(fn: Callable[[], object]) -> float:
    """Seconds of wall time of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
