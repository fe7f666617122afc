"""SQLAlchemy 2.0 models: the tracking schema.

Portable across SQLite and PostgreSQL (no dialect-specific types).  NaN values are stored as NULL in the
float columns of summaries (SQLite cannot hold NaN) and read back as NaN; ``nan_count`` says how many there
were.  History values live in float64 blobs, where NaN is itself.  The schema is created and evolved only
by the Alembic migrations in ``migrations/``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Experiment(Base):
    """A named collection of runs (one ``expsvc run`` invocation, or several with the same name)."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)


class ExperimentTag(Base):
    """A tag of an experiment (``expsvc experiments tag``; ``--where "tag = 'baseline'"``)."""

    __tablename__ = "experiment_tags"

    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(100), primary_key=True)

    __table_args__ = (Index("ix_experiment_tags_tag", "tag"),)


class ExperimentNote(Base):
    """A dated note on an experiment (``expsvc experiments note``)."""

    __tablename__ = "experiment_notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False, index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)


class Run(Base):
    """One seed of one configuration.

    ``status``: queued | running | finished | diverged | failed | interrupted.  ``group_key`` is a hash
    of the configuration without the seed, so the seeds of one configuration share it.
    """

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4().hex
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False, index=True
    )
    group_key: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    seed: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration: Mapped[float | None] = mapped_column(Float)  # seconds of training
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    expsvc_version: Mapped[str | None] = mapped_column(String(32))
    numpy_version: Mapped[str | None] = mapped_column(String(32))
    updates: Mapped[int | None] = mapped_column(Integer)  # optimizer steps applied
    epochs: Mapped[int | None] = mapped_column(Integer)  # epochs started
    converged: Mapped[bool | None] = mapped_column(Boolean)  # stopped by the tolerance rule
    steps_per_epoch: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("ix_runs_experiment_created", "experiment_id", "created_at"),)


class RunParam(Base):
    """A run's flattened configuration, typed for filtering: numbers in ``value_num``, text in ``value_text``."""

    __tablename__ = "run_params"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value_text: Mapped[str | None] = mapped_column(Text)
    value_num: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index("ix_run_params_key_num", "key", "value_num"),)


class MetricChunk(Base):
    """Consecutive points of one metric of one run: steps ``first_step`` … ``first_step + count - 1``.

    ``data`` holds the ``count`` values as little-endian float64 (NaN and ±inf kept as they are); one row per
    flush, so logging a step costs a few bytes instead of a row (see :mod:`expsvc.store.history`).
    """

    __tablename__ = "metric_chunks"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    first_step: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    count: Mapped[int] = mapped_column(Integer, nullable=False)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class MetricSummary(Base):
    """Summary of one metric of one run, kept up to date with every history flush.

    Single-valued metrics (test accuracy...) are summaries with ``count = 1``.  ``min``/``max``/``mean``
    ignore NaN; ``last`` is the last value logged (NULL if it was NaN).
    """

    __tablename__ = "metric_summaries"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    first: Mapped[float | None] = mapped_column(Float)
    last: Mapped[float | None] = mapped_column(Float)
    last_step: Mapped[int | None] = mapped_column(Integer)
    min: Mapped[float | None] = mapped_column(Float)
    min_step: Mapped[int | None] = mapped_column(Integer)
    max: Mapped[float | None] = mapped_column(Float)
    max_step: Mapped[int | None] = mapped_column(Integer)
    mean: Mapped[float | None] = mapped_column(Float)
    count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    nan_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    __table_args__ = (Index("ix_metric_summaries_key", "key"),)


class RunComponent(Base):
    """A component a run used (its spec) and the plugin, package and version that provided it."""

    __tablename__ = "run_components"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    spec: Mapped[str] = mapped_column(Text, nullable=False)
    plugin: Mapped[str] = mapped_column(String(200), nullable=False)
    package: Mapped[str | None] = mapped_column(String(200))
    version: Mapped[str | None] = mapped_column(String(64))


class RunArtifact(Base):
    """A binary artifact of a run; ``kind = 'params'`` holds the final parameters (an ``.npz`` blob)."""

    __tablename__ = "run_artifacts"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Study(Base):
    """An ``expsvc tune`` study: its tuning and confirmation experiments, its definition, and the selection.

    ``status``: tuning | confirming | done.  ``spec`` is the study's definition (optimizers, grid, tuning and
    confirmation seeds, the selection metric, the shared run settings); ``rule`` says in words how each
    optimizer's configuration was chosen and ``selection`` holds the choices (NULL until tuning is complete).
    """

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    tuning_experiment_id: Mapped[int | None] = mapped_column(ForeignKey("experiments.id", ondelete="SET NULL"))
    confirmation_experiment_id: Mapped[int | None] = mapped_column(
        ForeignKey("experiments.id", ondelete="SET NULL"))
    rule: Mapped[str | None] = mapped_column(Text)
    selection: Mapped[dict[str, Any] | None] = mapped_column(JSON)
