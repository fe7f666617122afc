"""Small synthetic stores for tests and benchmarks: runs with params, summaries and histories, written directly.

The schema is created by the real store (migrations), then rows are inserted with SQLAlchemy, encoded the way
the store encodes them (numbers in ``value_num`` and ``value_text``, bools as 0/1 and ``true``/``false``).
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Engine, create_engine, event, insert
from sqlalchemy.orm import Session

from expsvc.store.history import encode as encode_history
from expsvc.store.history import summarize
from expsvc.store.models import (
    Experiment,
    MetricChunk,
    MetricSummary,
    Run,
    RunComponent,
    RunParam,
)
from expsvc.store.vocab import encode_param

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def create_db(url: str) -> Engine:
    """Create an empty store at ``url`` through :class:`RunStore` (migrations) and return a plain engine."""
    from expsvc.store import RunStore

    RunStore.open(url, create=True).close()
    engine = create_engine(url)
    if url.startswith("sqlite"):
        @event.listens_for(engine, "connect")
        def _fk(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA foreign_keys=ON")
    return engine


def group_key(params: dict[str, Any]) -> str:
    """A stable 16-hex hash of a configuration without its seed."""
    clean = {k: v for k, v in params.items() if k != "seed"}
    return hashlib.sha256(json.dumps(clean, sort_keys=True, default=str).encode()).hexdigest()[:16]


def series_summary(values: Sequence[float | None], steps: Sequence[int] | None = None) -> dict[str, Any]:
    """The summary row the store keeps for a logged series (None and ±inf are stored as NaN, as here)."""
    vals = np.asarray([math.nan if v is None or not math.isfinite(v) else float(v) for v in values], dtype=np.float64)
    return summarize(np.arange(vals.size) if steps is None else np.asarray(steps), vals)


def add_experiment(session: Session, name: str, created_at: datetime | None = None) -> int:
    """Insert an experiment; return its id."""
    exp = Experiment(name=name, created_at=created_at or T0)
    session.add(exp)
    session.flush()
    return exp.id


def add_run(
    session: Session, experiment_id: int, *, seed: int = 0, status: str = "finished",
    params: dict[str, Any] | None = None, summaries: dict[str, float | dict[str, Any] | None] | None = None,
    history: dict[str, Sequence[float | None]] | None = None, updates: int | None = 100, epochs: int | None = 10,
    duration: float | None = 1.0, steps_per_epoch: int | None = 10, error: str | None = None,
    created_at: datetime | None = None, run_id: str | None = None, components: bool = False,
    key: str | None = None,
) -> str:
    """Insert one run with its params, summaries (a float = a single value) and histories; return its id."""
    params = dict(params or {})
    rid = run_id or uuid.uuid4().hex
    created = created_at or T0
    session.add(Run(
        id=rid, experiment_id=experiment_id, group_key=key or group_key(params), seed=seed, status=status,
        config={**params, "seed": seed}, created_at=created, started_at=created + timedelta(seconds=1),
        ended_at=None if status in ("queued", "running") else created + timedelta(seconds=2),
        duration=duration, updates=updates, epochs=epochs, converged=status == "finished",
        steps_per_epoch=steps_per_epoch, error=error,
    ))
    session.flush()
    for k, v in params.items():
        text, num = encode_param(v)
        session.add(RunParam(run_id=rid, key=k, value_text=text, value_num=num))
    for k, vals in (history or {}).items():
        values = [math.nan if v is None or not math.isfinite(v) else float(v) for v in vals]
        if values:
            session.execute(insert(MetricChunk), [{"run_id": rid, "key": k, "first_step": 0, "count": len(values),
                                                   "data": encode_history(np.asarray(values))}])
        session.add(MetricSummary(run_id=rid, key=k, **series_summary(vals)))
    for k, v in (summaries or {}).items():
        if isinstance(v, dict):
            row = {"count": 1, "nan_count": 0, **v}
        else:
            finite = v is not None and math.isfinite(v)
            val = float(v) if finite and v is not None else None
            row = {"first": val, "last": val, "last_step": 0, "min": val, "min_step": 0 if finite else None,
                   "max": val, "max_step": 0 if finite else None, "mean": val, "count": 1,
                   "nan_count": 0 if finite else 1}
        session.add(MetricSummary(run_id=rid, key=k, **row))
    if components:
        for pos, (kind, name) in enumerate((("layer", "linear"), ("loss", "bce"), ("optimizer", "adamw"))):
            session.add(RunComponent(run_id=rid, position=pos, kind=kind, name=name, spec=name,
                                     plugin="expsvc.builtins", package="expsvc", version="0.1.0"))
    session.flush()
    return rid


def loss_curve(seed: int, steps: int, start: float = 1.0, rate: float = 0.01, noise: float = 0.01,
               floor: float = 0.05) -> list[float]:
    """A noisy exponentially decaying loss curve, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    curve = floor + (start - floor) * np.exp(-rate * t) * (1 + noise * rng.standard_normal(steps))
    return [float(v) for v in curve]


def populate_benchmark(engine: Engine, runs: int = 1000, steps: int = 1000, seeds: int = 5) -> list[str]:
    """A store of ``runs`` runs × ``steps`` loss steps (for timing ``expsvc runs``); returns the run ids."""
    ids = []
    opts = ["mini_bgd", "sgd", "adam", "adamw"]
    lrs = [0.1, 0.03, 0.01, 0.003, 0.001]
    with Session(engine) as s:
        exp = add_experiment(s, "bench")
        for i in range(runs):
            params = {"optimizer": opts[(i // seeds) % len(opts)], "lr": lrs[(i // (seeds * len(opts))) % len(lrs)],
                      "batch_size": 32, "dataset": "points", "model": "linear(1)", "epochs": 100}
            curve = loss_curve(i, steps)
            ids.append(add_run(s, exp, seed=i % seeds, params=params, history={"loss": curve},
                               summaries={"test_accuracy": 0.5 + 0.5 * (i % 7) / 7, "test_loss": curve[-1],
                                          "train_loss": curve[-1]},
                               created_at=T0 + timedelta(seconds=i), updates=steps))
        s.commit()
    return ids
