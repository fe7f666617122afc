"""Metric history in chunks: one ``metric_chunks`` row per (run, metric, flush), the values as float64 bytes.

Why chunks: a row per point costs SQLite ~2–3 µs to insert (PostgreSQL more), which made per-step logging
15–20 % of the default job's wall time; a flush of 500 steps × 5 seeds is now five rows.  Reading is a
``frombuffer`` per chunk.  Steps are implicit (``first_step + i``), so a chunk is always a run of
consecutive steps; chunks of one run and metric never overlap (checked on append).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

from expsvc.store.engine import StoreError
from expsvc.store.models import MetricChunk, Run
from expsvc.store.vocab import SUMMARY_FIELDS

DTYPE = np.dtype("<f8")
STEP_MIN, STEP_MAX = -(2**31), 2**31 - 1  # the step columns are 32-bit integers on every backend
IDS_PER_QUERY = 500

chunks = MetricChunk.__table__

Series = tuple[np.ndarray, np.ndarray]  # (steps int64, values float64), steps ascending


def encode(values: np.ndarray) -> bytes:
    """The ``data`` of a chunk: ``values`` as little-endian float64 bytes."""
    return np.ascontiguousarray(values, dtype=DTYPE).tobytes()


def decode(data: bytes) -> np.ndarray:
    """The float64 values of a chunk's ``data`` (a fresh, writable array in native byte order)."""
    return np.frombuffer(data, dtype=DTYPE).astype(np.float64)


def empty() -> Series:
    """A history with no points."""
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)


def assemble(parts: Sequence[tuple[int, bytes]]) -> Series:
    """One series from its chunks ``(first_step, data)`` in step order."""
    if not parts:
        return empty()
    values = [decode(data) for _, data in parts]
    steps = [np.arange(first, first + v.size, dtype=np.int64) for (first, _), v in zip(parts, values, strict=True)]
    return np.concatenate(steps), np.concatenate(values)


def check_steps(first: int, count: int) -> None:
    """Raise ``ValueError`` when steps ``first`` … ``first + count - 1`` do not fit the 32-bit step columns."""
    if first < STEP_MIN or first + count - 1 > STEP_MAX:
        raise ValueError(f"steps {first}..{first + count - 1} do not fit the 32-bit step column")


def overlaps(spans: Iterable[tuple[int, int]]) -> bool:
    """Whether any two ``(first_step, count)`` spans share a step."""
    end = None
    for first, count in sorted(spans):
        if end is not None and first < end:
            return True
        end = first + count if end is None else max(end, first + count)
    return False


def damaged(run_id: str, key: str, first: int, count: int, data: bytes) -> StoreError:
    """The one-line error for a chunk whose bytes do not hold its ``count`` float64 values."""
    return StoreError(
        f"run {run_id[:8]}: its stored history of {key!r} is damaged (the chunk from step {first} holds "
        f"{len(data)} bytes, not {count} float64 values); remove the run (`expsvc rm {run_id[:8]}`) or leave "
        "it out with --where"
    )


def read(db: Any, *where: sa.ColumnElement[bool], join_runs: bool = False) -> dict[str, dict[str, Series]]:
    """``{run_id: {key: (steps, values)}}`` of the chunks matching ``where`` (``db``: a Connection or Session).

    ``join_runs`` joins ``runs`` so ``where`` may name its columns (e.g. the experiment id).  A chunk whose
    bytes do not match its point count raises a StoreError naming the run (never a numpy traceback).
    """
    query = sa.select(chunks.c.run_id, chunks.c.key, chunks.c.first_step, chunks.c.count, chunks.c.data)
    if join_runs:
        query = query.join(Run.__table__, Run.__table__.c.id == chunks.c.run_id)
    query = query.where(*where).order_by(chunks.c.run_id, chunks.c.key, chunks.c.first_step)
    grouped: dict[str, dict[str, list[tuple[int, bytes]]]] = {}
    for run_id, key, first, count, data in db.execute(query):
        raw = bytes(data) if data is not None else b""
        if count is None or len(raw) != DTYPE.itemsize * int(count):
            raise damaged(run_id, key, int(first), int(count or 0), raw)
        grouped.setdefault(run_id, {}).setdefault(key, []).append((int(first), raw))
    return {run_id: {key: assemble(parts) for key, parts in keys.items()} for run_id, keys in grouped.items()}


def read_runs(db: Any, run_ids: Sequence[str], key: str | None = None) -> dict[str, dict[str, Series]]:
    """:func:`read` for the given runs (all metrics, or only ``key``), ``IDS_PER_QUERY`` ids per query."""
    ids = list(dict.fromkeys(run_ids))
    out: dict[str, dict[str, Series]] = {}
    for start in range(0, len(ids), IDS_PER_QUERY):
        where = [chunks.c.run_id.in_(ids[start : start + IDS_PER_QUERY])]
        if key is not None:
            where.append(chunks.c.key == key)
        out.update(read(db, *where))
    return out


def point_counts(db: Any, run_ids: Sequence[str] | None = None, key: str | None = None) -> dict[str, int]:
    """run id → number of stored points (of ``key``, or of every metric); runs without points are left out."""
    query = sa.select(chunks.c.run_id, sa.func.sum(chunks.c.count)).group_by(chunks.c.run_id)
    if key is not None:
        query = query.where(chunks.c.key == key)
    if run_ids is None:
        return {run_id: int(n) for run_id, n in db.execute(query)}
    ids = list(dict.fromkeys(run_ids))
    out: dict[str, int] = {}
    for start in range(0, len(ids), IDS_PER_QUERY):
        part = query.where(chunks.c.run_id.in_(ids[start : start + IDS_PER_QUERY]))
        out.update({run_id: int(n) for run_id, n in db.execute(part)})
    return out


class SummaryState:
    """A metric summary being updated in memory, chunk by chunk."""

    __slots__ = ("count", "exists", "first", "last", "last_step", "max", "max_step", "mean", "min",
                 "min_step", "nan_count", "recompute")  # fmt: skip

    def __init__(self, row: Any | None) -> None:
        self.exists = row is not None
        self.recompute = False
        for name in SUMMARY_FIELDS:
            setattr(self, name, getattr(row, name) if row is not None else None)
        self.count = self.count or 0
        self.nan_count = self.nan_count or 0

    def add(self, steps: np.ndarray, values: np.ndarray, nan: np.ndarray) -> None:
        """Fold one chunk (increasing steps after ``last_step``) into the summary."""
        if self.count and self.last_step is not None and int(steps[0]) <= self.last_step:
            self.recompute = True  # out of order: recomputed from the stored history
        if self.count == 0:
            self.first = None if nan[0] else float(values[0])
        self.last = None if nan[-1] else float(values[-1])
        self.last_step = int(steps[-1])
        n_new = int(values.size - nan.sum())
        if n_new:
            i_min = int(np.nanargmin(values))
            i_max = int(np.nanargmax(values))
            if self.min is None or values[i_min] < self.min:
                self.min, self.min_step = float(values[i_min]), int(steps[i_min])
            if self.max is None or values[i_max] > self.max:
                self.max, self.max_step = float(values[i_max]), int(steps[i_max])
            n_old = self.count - self.nan_count
            with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: the mean is NaN, stored as NULL
                total = float(np.nansum(values)) + (self.mean * n_old if self.mean is not None and n_old else 0.0)
            mean = total / (n_old + n_new)
            self.mean = None if math.isnan(mean) else mean  # NULL in the summaries table
        self.count += int(values.size)
        self.nan_count += int(nan.sum())

    def row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SUMMARY_FIELDS}


def summarize(steps: np.ndarray, values: np.ndarray) -> dict[str, Any]:
    """The summary fields of a whole history (NaN-aware, like the incremental updates)."""
    state = SummaryState(None)
    if values.size:
        state.add(np.asarray(steps), np.asarray(values, dtype=np.float64), np.isnan(values))
    return state.row()
