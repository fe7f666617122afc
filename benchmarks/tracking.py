"""Section 4: what tracking costs.

* The default job (``expsvc.run(optimizer=["mini_bgd", "adamw"], seeds=5)``: 2 groups × 5 seeds of the
  2-5-3-1 net, 200 epochs, tol 1e-5), in-process, ``jobs=1`` and ``jobs=2``, with history logging on and off
  ("off" patches :meth:`expsvc.runner.execute.StoreHooks.flush` to a no-op; everything else — validation,
  run records, metrics, parameters — still happens).  Each repetition writes into a fresh copy of an
  already-migrated store, so schema creation is not part of the figure.
* ``RunStore.append_history`` throughput: rows per second for calls of 10 runs × 1,000 points.
"""

from __future__ import annotations

import shutil
import tempfile
import time
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


class _NoFlush:
    """Context manager: ``StoreHooks.flush`` does nothing inside (history logging off)."""

    def __enter__(self) -> None:
        from expsvc.runner import execute

        self._original = execute.StoreHooks.flush
        execute.StoreHooks.flush = lambda self, history, counts: None  # type: ignore[method-assign]

    def __exit__(self, *exc: object) -> None:
        from expsvc.runner import execute

        execute.StoreHooks.flush = self._original  # type: ignore[method-assign]


def default_job(db_url: str, jobs: int) -> float:
    """Wall seconds of the default job into ``db_url`` (in-process API call)."""
    import expsvc

    start = time.perf_counter()
    result = expsvc.run(optimizer=["mini_bgd", "adamw"], seeds=5, db=db_url, jobs=jobs)
    seconds = time.perf_counter() - start
    statuses = result.statuses()
    if statuses.get("failed") or statuses.get("interrupted"):
        raise RuntimeError(f"default job did not complete: {statuses}")
    return seconds


def section_logging(reps: int, jobs_list: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """Wall time of the default job with history logging on and off, per ``jobs``; rows written."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="expsvc-bench-") as name:
        tmp = Path(name)
        template = _template(tmp)
        counter = iter(range(10**6))

        def fresh() -> str:
            path = tmp / f"job-{next(counter)}.db"
            shutil.copyfile(template, path)
            return f"sqlite:///{path}"

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
            return int(conn.exec_driver_sql("SELECT count(*) FROM metric_history").scalar_one())
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
