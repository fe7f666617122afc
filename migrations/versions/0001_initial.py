"""Initial schema: experiments, runs, run_params, metric_history.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the four tables of the first schema."""
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("description", sa.Text()),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "experiment_id",
            sa.Integer(),
            sa.ForeignKey("experiments.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("group_key", sa.String(16), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.Column("duration", sa.Float()),
        sa.Column("host", sa.String(255)),
        sa.Column("pid", sa.Integer()),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
        sa.Column("error", sa.Text()),
        sa.Column("expsvc_version", sa.String(32)),
        sa.Column("numpy_version", sa.String(32)),
        sa.Column("updates", sa.Integer()),
        sa.Column("epochs", sa.Integer()),
        sa.Column("converged", sa.Boolean()),
        sa.Column("steps_per_epoch", sa.Integer()),
    )
    op.create_index("ix_runs_experiment_id", "runs", ["experiment_id"])
    op.create_index("ix_runs_group_key", "runs", ["group_key"])
    op.create_index("ix_runs_status", "runs", ["status"])
    op.create_index("ix_runs_experiment_created", "runs", ["experiment_id", "created_at"])
    op.create_table(
        "run_params",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value_text", sa.Text()),
        sa.Column("value_num", sa.Float()),
    )
    op.create_index("ix_run_params_key_num", "run_params", ["key", "value_num"])
    op.create_table(
        "metric_history",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("step", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("value", sa.Float()),
    )


def downgrade() -> None:
    """Drop everything."""
    op.drop_table("metric_history")
    op.drop_index("ix_run_params_key_num", table_name="run_params")
    op.drop_table("run_params")
    op.drop_index("ix_runs_experiment_created", table_name="runs")
    op.drop_index("ix_runs_status", table_name="runs")
    op.drop_index("ix_runs_group_key", table_name="runs")
    op.drop_index("ix_runs_experiment_id", table_name="runs")
    op.drop_table("runs")
    op.drop_table("experiments")
