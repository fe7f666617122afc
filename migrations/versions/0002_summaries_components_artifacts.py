"""Metric summaries, run components and run artifacts; summaries backfilled from the history.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the columns this revision reads and writes (never import the live models here).
history = sa.table(
    "metric_history",
    sa.column("run_id", sa.String),
    sa.column("key", sa.String),
    sa.column("step", sa.Integer),
    sa.column("value", sa.Float),
)
SUMMARY_COLUMNS = (
    "run_id", "key", "first", "last", "last_step", "min", "min_step", "max", "max_step", "mean", "count",
    "nan_count",
)  # fmt: skip


def upgrade() -> None:
    """Create the three tables, then summarise every (run, key) of the existing history."""
    summaries = op.create_table(
        "metric_summaries",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("first", sa.Float()),
        sa.Column("last", sa.Float()),
        sa.Column("last_step", sa.Integer()),
        sa.Column("min", sa.Float()),
        sa.Column("min_step", sa.Integer()),
        sa.Column("max", sa.Float()),
        sa.Column("max_step", sa.Integer()),
        sa.Column("mean", sa.Float()),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("nan_count", sa.Integer(), nullable=False),
    )
    op.create_index("ix_metric_summaries_key", "metric_summaries", ["key"])
    op.create_table(
        "run_components",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("plugin", sa.String(200), nullable=False),
        sa.Column("package", sa.String(200)),
        sa.Column("version", sa.String(64)),
    )
    op.create_table(
        "run_artifacts",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("meta", sa.JSON()),
    )
    assert summaries is not None
    op.execute(backfill_statement(summaries))


def backfill_statement(summaries: sa.Table) -> sa.Insert:
    """INSERT ... SELECT summarising metric_history per (run_id, key); NULL values are NaN.

    first/last are the values at the smallest/largest step (NULL if NaN); min/max/mean ignore NULLs;
    min_step/max_step are the earliest steps holding the min/max; nan_count counts the NULLs.
    """
    g = (
        sa.select(
            history.c.run_id,
            history.c.key,
            sa.func.min(history.c.step).label("first_step"),
            sa.func.max(history.c.step).label("last_step"),
            sa.func.min(history.c.value).label("min_value"),
            sa.func.max(history.c.value).label("max_value"),
            sa.func.avg(history.c.value).label("mean_value"),
            sa.func.count().label("n"),
            sa.func.count(history.c.value).label("n_values"),
        )
        .group_by(history.c.run_id, history.c.key)
        .subquery("g")
    )
    h = history.alias("h")
    same = sa.and_(h.c.run_id == g.c.run_id, h.c.key == g.c.key)

    def value_at(step: sa.ColumnElement) -> sa.ScalarSelect:
        return sa.select(h.c.value).where(same, h.c.step == step).scalar_subquery()

    def first_step_of(value: sa.ColumnElement) -> sa.ScalarSelect:
        return sa.select(sa.func.min(h.c.step)).where(same, h.c.value == value).scalar_subquery()

    select = sa.select(
        g.c.run_id,
        g.c.key,
        value_at(g.c.first_step),
        value_at(g.c.last_step),
        g.c.last_step,
        g.c.min_value,
        first_step_of(g.c.min_value),
        g.c.max_value,
        first_step_of(g.c.max_value),
        sa.cast(g.c.mean_value, sa.Float),
        g.c.n,
        g.c.n - g.c.n_values,
    )
    return summaries.insert().from_select([summaries.c[name] for name in SUMMARY_COLUMNS], select)


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_table("run_artifacts")
    op.drop_table("run_components")
    op.drop_index("ix_metric_summaries_key", table_name="metric_summaries")
    op.drop_table("metric_summaries")
