"""The run store: runs, params, metric history and summaries in SQL (SQLite or PostgreSQL).

``RunStore.open(url)`` validates, creates or migrates the database (see :mod:`expsvc.store.migrate`);
the schema is :mod:`expsvc.store.models` (the store's own business: callers read through
:mod:`expsvc.store.read` and get plain results).
"""

from __future__ import annotations

from expsvc.store.engine import StoreError, default_url
from expsvc.store.store import STATUSES, ComponentRecord, NewRun, RunStore

__all__ = [
    "STATUSES",
    "ComponentRecord",
    "NewRun",
    "RunStore",
    "StoreError",
    "default_url",
]
