"""Section 4: what tracking costs.

* The default job (``expsvc.run(optimizer=["mini_bgd", "adamw"], seeds=5)``: 2 groups × 5 seeds of the
  2-5-3-1 net, 200 epochs, tol 1e-5), in-process, ``jobs=1`` and ``jobs=2``, with history logging on and off
  ("off" patches :meth:`expsvc.runner.execute.StoreHooks.flush` to a no-op; everything else — validation,
  run records, metrics, parameters — still happens).  Each repetition writes into a fresh copy of an
  already-migrated store, so schema creation is not part of the figure.
* ``RunStore.append_history`` throughput: rows per second for calls of 10 runs × 1,000 points.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.timing import Stats, interleaved


def _template(tmp: Path) -> Path:
    """An empty, migrated store file to copy for every repetition."""
    from expsvc.store import RunStore

    path = tmp / "template.db"
    if not path.exists():
        RunStore.open(f"sqlite:///{path}", create=True).close()
    return path


def fresh_stores(tmp: Path) -> Callable[[], str]:
    """A function returning the URL of a new copy of one migrated store in ``tmp`` at every call."""
    template = _template(tmp)
    counter = iter(range(10**6))

    def fresh() -> str:
        path = tmp / f"job-{next(counter)}.db"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"

    return fresh


class _NoFlush:
    """Context manager: ``StoreHooks.flush`` does nothing inside (history logging off)."""

    def __enter__(self) -> None:
        from expsvc.runner import execute

        self._original = execute.StoreHooks.flush
        execute.StoreHooks.flush = lambda self, history, counts: None  # type: ignore[method-assign]

    def __exit__(self, *exc: object) -> None:
        from expsvc.runner import execute

        execute.StoreHooks.flush = self._original  # type: ignore[method-assign]


def default_job(db_url: str, jobs: int, **extra: Any) -> float:
    """Wall seconds of the default job into ``db_url`` (in-process API call; ``extra`` spec values added)."""
    import expsvc

    start = time.perf_counter()
    result = expsvc.run(optimizer=["mini_bgd", "adamw"], seeds=5, db=db_url, jobs=jobs, **extra)
    seconds = time.perf_counter() - start
    statuses = result.statuses()
    if statuses.get("failed") or statuses.get("interrupted"):
        raise RuntimeError(f"default job did not complete: {statuses}")
    return seconds


def section_logging(reps: int, jobs_list: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """Wall time of the default job with history logging on and off, per ``jobs``; rows written."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="expsvc-bench-") as name:
        fresh = fresh_stores(Path(name))

        def on(jobs: int) -> float:
            return default_job(fresh(), jobs)

        def off(jobs: int) -> float:
            with _NoFlush():
                return default_job(fresh(), jobs)

        for jobs in jobs_list:
            cases = {"history on": lambda j=jobs: on(j), "history off": lambda j=jobs: off(j)}
            out[f"jobs={jobs}"] = interleaved(cases, reps, unit="s")
        url = fresh()
        default_job(url, 1)
        out["history_rows"] = _history_rows(url)
    return out


def _history_rows(url: str) -> int:
    """Loss points one default job writes (the rows that logging costs)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT coalesce(sum(count), 0) FROM metric_chunks").scalar_one())
    finally:
        engine.dispose()


def section_append(reps: int, calls: int = 5, runs: int = 10, points: int = 1000) -> Stats:
    """Rows per second of ``RunStore.append_history`` with ``runs`` × ``points`` rows per call."""
    from expsvc.store import NewRun, RunStore

    with tempfile.TemporaryDirectory(prefix="expsvc-bench-") as name:
        url = f"sqlite:///{Path(name) / 'append.db'}"
        store = RunStore.open(url, create=True)
        try:
            exp = store.get_or_create_experiment("append-bench")
            ids = store.create_runs(exp, [NewRun(seed=s, group_key="g", config={"seed": s}, params={})
                                          for s in range(runs)])
            rng = np.random.default_rng(0)
            written = [0]

            def one_rep() -> float:
                start = time.perf_counter()
                for _ in range(calls):
                    first = written[0]
                    store.append_history("loss", [(i, first, rng.random(points)) for i in ids])
                    written[0] += points
                return calls * runs * points / (time.perf_counter() - start)

            return interleaved({"append_history": one_rep}, reps, unit="rows/s", higher=True)["append_history"]
        finally:
            store.close()


PG_ADMIN_URL = os.environ.get("EXPSVC_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
"""A superuser connection to a PostgreSQL server's ``postgres`` database (override: ``EXPSVC_BENCH_PG_URL``)."""


def section_history_writes(repeats: int = 5) -> dict[str, Any]:
    """``append_history`` rows/s (10 runs × 1,000 points per call) on a SQLite file and, when the server is
    reachable, on a scratch PostgreSQL database created and dropped here; the reason when it is not."""
    from sqlalchemy import create_engine, make_url
    from sqlalchemy.pool import NullPool

    from expsvc.store.bench import bench_history_writes

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="expsvc-bench-") as name:
        out["sqlite"] = bench_history_writes(f"sqlite:///{Path(name) / 'writes.db'}", repeats=repeats)
        out["sqlite"].pop("url", None)  # a temporary path of this machine
    database = f"expsvc_bench_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(PG_ADMIN_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                              connect_args={"connect_timeout": 5})
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{database}"')
    except Exception as err:  # no psycopg, or no server: report why, keep the rest of the suite
        out["postgresql"] = {"skipped": str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}
        return out
    try:
        url = make_url(PG_ADMIN_URL).set(database=database).render_as_string(hide_password=False)
        out["postgresql"] = bench_history_writes(url, repeats=repeats)
        out["postgresql"]["url"] = "postgresql (scratch database on the local server)"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.dispose()
    return out
