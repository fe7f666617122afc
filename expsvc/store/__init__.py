"""The run store: runs, params, metric history and summaries in SQL (SQLite or PostgreSQL).

``RunStore.open(url)`` validates, creates or migrates the database (see :mod:`expsvc.store.migrate`);
the schema is :mod:`expsvc.store.models`.
"""

from __future__ import annotations

from expsvc.store.engine import StoreError, default_url
from expsvc.store.models import (
    Experiment,
    MetricChunk,
    MetricSummary,
    Run,
    RunArtifact,
    RunComponent,
    RunParam,
)
from expsvc.store.store import STATUSES, ComponentRecord, NewRun, RunStore

__all__ = [
    "STATUSES",
    "ComponentRecord",
    "Experiment",
    "MetricChunk",
    "MetricSummary",
    "NewRun",
    "Run",
    "RunArtifact",
    "RunComponent",
    "RunParam",
    "RunStore",
    "StoreError",
    "default_url",
]
