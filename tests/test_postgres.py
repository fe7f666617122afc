"""PostgreSQL specifics: the migration advisory lock, many concurrent ``expsvc run`` writers, the COPY path, URLs."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from expsvc.store import RunStore, StoreError, migrate
from tests.conftest import REPO, run_cli


def rows(url: str, sql: str) -> list[tuple]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(sql)]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_migrations_wait_for_the_advisory_lock(pg_url: str) -> None:
    """While another session holds expsvc's advisory lock, creating the schema waits; then it runs once."""
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    holder = engine.connect()
    holder.exec_driver_sql(f"SELECT pg_advisory_lock({migrate.PG_LOCK_KEY})")
    holder.commit()
    opened: list[str | None] = []
    thread = threading.Thread(target=lambda: opened.append(RunStore.open(pg_url).current_revision()))
    thread.start()
    try:
        time.sleep(1.0)
        assert thread.is_alive() and not opened  # blocked on the lock, nothing created meanwhile
        assert rows(pg_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
        waiting = rows(pg_url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        assert waiting == [(1,)]
    finally:
        holder.exec_driver_sql(f"SELECT pg_advisory_unlock({migrate.PG_LOCK_KEY})")
        holder.commit()
        holder.close()
        thread.join(timeout=60)
        engine.dispose()
    assert opened == [migrate.head()]
    assert rows(pg_url, "SELECT version_num FROM alembic_version") == [(migrate.head(),)]


@pytest.mark.postgres
def test_history_round_trips_exactly(pg_url: str) -> None:
    values = np.array([-0.0, 5e-324, np.finfo(float).max, -np.inf, np.nan, 1 / 3, np.nan])
    with RunStore.open(pg_url) as store:
        exp = store.get_or_create_experiment("exact")
        from expsvc.store import NewRun

        run_a, run_b = store.create_runs(exp, [NewRun(0, "g", {}, {}), NewRun(1, "g", {}, {})])
        store.append_history("loss", [(run_a, 2**31 - len(values), values), (run_b, 0, values[:2])])
        steps, got = store.history(run_a)
        np.testing.assert_array_equal(steps, np.arange(2**31 - len(values), 2**31))
        np.testing.assert_array_equal(got, values)  # bit-exact, NaN included
        assert math.copysign(1.0, got[0]) == -1.0  # the sign of zero survives
        ((data,),) = rows(pg_url, f"SELECT data FROM metric_chunks WHERE run_id = '{run_a}'")
        assert bytes(data) == values.astype("<f8").tobytes()
        assert store.summaries([run_a])[run_a]["loss"]["nan_count"] == 2
        with pytest.raises(StoreError, match="do not fit the 32-bit step column"):
            store.append_history("loss", [(run_b, 2**31, [1.0])])
        with pytest.raises(StoreError, match="already has some of these steps"):
            store.append_history("loss", [(run_b, 1, [1.0])])


WRITERS = 8


@pytest.mark.slow
def test_eight_concurrent_runs_on_one_store(store_url: str, tmp_path: Path) -> None:
    """Eight ``expsvc run`` processes add runs to one experiment at once: no error, nothing lost or doubled."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPSVC_")}
    args = ["run", "--opt", "sgd", "--seeds", "3", "--epochs", "40", "--tol", "0", "-q", "-j", "1", "--name",
            "shared", "--db", store_url]
    procs = [subprocess.Popen([sys.executable, "-m", "expsvc", *args, "--lr", str(0.01 * (i + 1))], cwd=tmp_path,
                              env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(WRITERS)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * WRITERS, errors
    assert not any(errors), errors
    assert rows(store_url, "SELECT count(*), min(name) FROM experiments") == [(1, "shared")]
    assert rows(store_url, "SELECT status, count(*) FROM runs GROUP BY status") == [("finished", 3 * WRITERS)]
    ((expected, n_runs),) = rows(store_url, "SELECT sum(updates), count(*) FROM runs")
    assert n_runs == 3 * WRITERS and expected == 3 * WRITERS * 40 * 6
    assert rows(store_url, "SELECT sum(count) FROM metric_chunks WHERE key = 'loss'") == [(expected,)]
    assert rows(store_url, "SELECT sum(count) FROM metric_summaries WHERE key = 'loss'") == [(expected,)]
    per_run = rows(store_url, "SELECT r.updates, sum(h.count), max(h.first_step + h.count - 1) FROM runs r "
                              "JOIN metric_chunks h ON h.run_id = r.id GROUP BY r.id")
    assert all(n == updates and last == updates - 1 for updates, n, last in per_run)
    assert rows(store_url, "SELECT count(DISTINCT value_num) FROM run_params WHERE key = 'lr'") == [(WRITERS,)]


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("postgresql+psycopg://postgres@127.0.0.1:9/x", 'connection to server at "127.0.0.1", port 9 failed'),
        ("postgresql+psycopg://postgres@127.0.0.1:5432/expsvc_no_such_db", 'database "expsvc_no_such_db"'),
        ("postgresql+psycopg://postgres@127.0.0.1:port/x", "invalid database URL"),
        ("postgresql+psycopg2://postgres@127.0.0.1/x", "expsvc uses psycopg 3"),
        ("postgresql+nodriver://postgres@127.0.0.1/x", "cannot use database URL"),
    ],
)
def test_bad_postgres_urls_are_one_line_exit_2(tmp_path: Path, url: str, fragment: str) -> None:
    commands = (["run", "--epochs", "2", "-q"], ["runs"], ["db", "upgrade"]) if ":9/" in url else (["run", "-q"],)
    for args in commands:
        proc = run_cli(*args, "--db", url, cwd=tmp_path)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and fragment in lines[0], (args, proc.stderr)


def test_missing_psycopg_is_a_one_line_install_hint(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['psycopg'] = None; from expsvc.cli import main; "
            "main(['run', '--epochs', '2', '-q', '--db', 'postgresql+psycopg://u@127.0.0.1/x'])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("error: cannot use postgresql+psycopg://u@127.0.0.1/x: the PostgreSQL driver "
                                   "psycopg 3 is not installed; pip install 'expsvc[postgres]'")
