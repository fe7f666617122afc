"""Studies: ``studies`` (one row per ``expsvc tune`` study, linking its tuning and confirmation experiments).

A study is two experiments — tuning (every optimizer × grid point × tuning seed, evaluated on validation) and
confirmation (each optimizer's chosen configuration on fresh seeds, evaluated on test) — plus what ties them:
the study's definition (``spec``, JSON), the selection rule in words (``rule``) and each optimizer's choice
(``selection``, JSON, NULL until tuning is complete).  Deleting an experiment leaves the study with the link
cleared (``SET NULL``).  The downgrade drops the table (its rows with it); the experiments stay.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create studies."""
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("tuning_experiment_id", sa.Integer(), sa.ForeignKey("experiments.id", ondelete="SET NULL")),
        sa.Column("confirmation_experiment_id", sa.Integer(),
                  sa.ForeignKey("experiments.id", ondelete="SET NULL")),
        sa.Column("rule", sa.Text()),
        sa.Column("selection", sa.JSON()),
    )


def downgrade() -> None:
    """Drop studies."""
    op.drop_table("studies")
