"""Metric history in chunks: ``metric_history`` (a row per point) becomes ``metric_chunks`` (a row per flush).

Each chunk holds consecutive steps ``first_step`` … ``first_step + count - 1`` of one metric of one run, its
values as little-endian float64 bytes (NaN, stored as NULL before, is NaN again).  The upgrade groups the
existing points into runs of consecutive steps; the downgrade expands chunks back into one row per point.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MAX_POINTS = 65_536  # points per converted chunk
RUNS_PER_READ = 50  # runs converted at a time (their points are held in memory)
VALUES = np.dtype("<f8")

# Frozen copies of the tables this revision reads and writes (never import the live models here).
history = sa.table(
    "metric_history",
    sa.column("run_id", sa.String),
    sa.column("key", sa.String),
    sa.column("step", sa.Integer),
    sa.column("value", sa.Float),
)
chunk_columns = (
    sa.column("run_id", sa.String),
    sa.column("key", sa.String),
    sa.column("first_step", sa.Integer),
    sa.column("count", sa.Integer),
    sa.column("data", sa.LargeBinary),
)
chunks = sa.table("metric_chunks", *chunk_columns)


def _create_chunks() -> None:
    op.create_table(
        "metric_chunks",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("first_step", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )


def _create_history() -> None:
    op.create_table(
        "metric_history",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("step", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("value", sa.Float()),
    )


def _grouped(rows: Iterator[sa.Row]) -> Iterator[dict]:
    """Chunk rows from point rows ordered by (run_id, key, step): a new chunk at every gap, metric or run."""
    current: tuple[str, str] | None = None
    first = last = 0
    values: list[float] = []

    def chunk() -> dict:
        data = np.array([np.nan if v is None else v for v in values], dtype=VALUES).tobytes()
        assert current is not None
        return {"run_id": current[0], "key": current[1], "first_step": first, "count": len(values), "data": data}

    for run_id, key, step, value in rows:
        if (run_id, key) != current or step != last + 1 or len(values) >= MAX_POINTS:
            if values:
                yield chunk()
            current, first, values = (run_id, key), step, []
        values.append(value)
        last = step
    if values:
        yield chunk()


def _convert(source: sa.TableClause, columns: Sequence[str], rows_of: Callable[[Iterator[sa.Row]], Iterator[dict]],
             target: sa.TableClause) -> None:
    """Rewrite ``source``'s rows as ``target``'s, a few runs at a time, in (run_id, key, step) order."""
    bind = op.get_bind()
    ids = list(bind.execute(sa.select(source.c.run_id).distinct().order_by(source.c.run_id)).scalars())
    for start in range(0, len(ids), RUNS_PER_READ):
        query = (
            sa.select(*(source.c[name] for name in columns))
            .where(source.c.run_id.in_(ids[start : start + RUNS_PER_READ]))
            .order_by(*(source.c[name] for name in columns[:3]))
        )
        rows = list(rows_of(iter(bind.execute(query))))
        if rows:
            bind.execute(target.insert(), rows)


def _points(rows: Iterator[sa.Row]) -> Iterator[dict]:
    """Point rows from chunk rows (run_id, key, first_step, data); NaN becomes NULL."""
    for run_id, key, first, data in rows:
        for i, v in enumerate(np.frombuffer(bytes(data), dtype=VALUES).tolist()):
            yield {"run_id": run_id, "key": key, "step": first + i, "value": None if v != v else v}


def upgrade() -> None:
    """Create metric_chunks, fill it from metric_history, drop metric_history."""
    _create_chunks()
    _convert(history, ("run_id", "key", "step", "value"), _grouped, chunks)
    op.drop_table("metric_history")


def downgrade() -> None:
    """Recreate metric_history with a row per point (NaN as NULL), drop metric_chunks."""
    _create_history()
    _convert(chunks, ("run_id", "key", "first_step", "data"), _points, history)
    op.drop_table("metric_chunks")
