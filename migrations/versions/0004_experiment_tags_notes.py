"""Experiment tags and notes: ``experiment_tags`` (a row per tag) and ``experiment_notes`` (a row per note).

Tags label experiments for ``expsvc experiments tag`` and ``--where "tag = 'baseline'"``; notes are dated free
text added with ``expsvc experiments note``.  Both belong to their experiment (deleted with it).  The downgrade
drops both tables (their rows with them).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create experiment_tags and experiment_notes."""
    op.create_table(
        "experiment_tags",
        sa.Column("experiment_id", sa.Integer(), sa.ForeignKey("experiments.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("tag", sa.String(100), primary_key=True),
    )
    op.create_index("ix_experiment_tags_tag", "experiment_tags", ["tag"])
    op.create_table(
        "experiment_notes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("experiment_id", sa.Integer(), sa.ForeignKey("experiments.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
    )
    op.create_index("ix_experiment_notes_experiment_id", "experiment_notes", ["experiment_id"])


def downgrade() -> None:
    """Drop experiment_notes and experiment_tags."""
    op.drop_index("ix_experiment_notes_experiment_id", table_name="experiment_notes")
    op.drop_table("experiment_notes")
    op.drop_index("ix_experiment_tags_tag", table_name="experiment_tags")
    op.drop_table("experiment_tags")
