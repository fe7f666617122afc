"""The Dask executor: identical histories to the local executor, a lost worker fails its runs, resume completes them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from expsvc.runner.api import Experiment
from expsvc.runner.dask import DaskError, DaskExecutor, absolute_task, run_group_task
from expsvc.runner.execute import GroupTask
from expsvc.runner.spec import ExperimentSpec
from expsvc.store import NewRun, RunStore
from tests.conftest import CUBE_PLUGIN, REPO, expand_chunks, run_cli

pytest.importorskip("distributed")



@pytest.fixture(scope="module")
def cluster() -> Iterator[DaskExecutor]:
    """One LocalCluster (2 worker processes, 1 thread each) shared by this module's in-process tests."""
    executor = DaskExecutor(n_workers=2, threads_per_worker=1)
    executor.start()
    yield executor
    executor.close()


def loss_histories(url: str) -> dict[tuple[int, str], np.ndarray]:
    """Loss history per (seed, group_key)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        rows = expand_chunks(conn.exec_driver_sql(
            "SELECT r.seed, r.group_key, h.first_step, h.data FROM metric_chunks h JOIN runs r ON r.id = h.run_id "
            "WHERE h.key = 'loss' ORDER BY r.seed, r.group_key, h.first_step").all())
    engine.dispose()
    out: dict[tuple[int, str], list[float]] = {}
    for seed, group_key, _step, value in rows:
        out.setdefault((seed, group_key), []).append(value)
    return {key: np.array(values) for key, values in out.items()}


def test_dask_histories_equal_the_local_executor(cluster: DaskExecutor, store_url: str, tmp_path: Path) -> None:
    """Workers write straight to the store (SQLite file or PostgreSQL); a local plugin reaches them by path."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "cube.py").write_text(CUBE_PLUGIN)
    spec = {"optimizer": ["mini_bgd", "adamw(weight_decay=0.1)"], "model": ["linear(4), tanh, linear(1)",
            "linear(3), cube, linear(1)"], "seeds": 3, "epochs": 25, "shuffle": True, "name": "same"}
    local = f"sqlite:///{tmp_path / 'local.db'}"
    Experiment(**spec).run(db=local, jobs=1)
    events: list[tuple[int, int, int]] = []
    result = Experiment(**spec).run(db=store_url, executor=cluster, progress=lambda *e: events.append(e))
    assert result.statuses() == {"finished": 12}
    reference, distributed = loss_histories(local), loss_histories(store_url)
    assert len(reference) == 12 and distributed.keys() == reference.keys()
    for key, values in reference.items():
        np.testing.assert_array_equal(distributed[key], values, err_msg=str(key))
    with RunStore.open(store_url) as store, store.session() as session:
        pids = set(session.scalars(sa.text("SELECT DISTINCT pid FROM runs")))
    assert os.getpid() not in pids  # trained on the workers
    time.sleep(0.5)  # events travel through the scheduler
    assert {index for index, _, _ in events} <= {0, 1, 2, 3} and events


def test_a_second_attempt_at_started_runs_fails_them(tmp_path: Path) -> None:
    """If a scheduler re-runs a task after its worker died, the task refuses (its history was partly written)."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    config = ExperimentSpec.from_dict({"optimizer": "sgd", "epochs": 2}).configs()[0]
    with RunStore.open(url) as store:
        exp = store.get_or_create_experiment("retry")
        ids = store.create_runs(exp, [NewRun(s, config.group_key, {**config.as_dict(), "seed": s}, {}) for s in (0, 1)])
        store.start_runs(ids, host="elsewhere", pid=1, expsvc_version="0", numpy_version="0")
    outcome = run_group_task(GroupTask(0, url, config, (0, 1), tuple(ids)))
    assert [o.status for o in outcome.runs] == ["failed", "failed"]
    with RunStore.open(url, mark_stale=False) as store:
        runs = [store.resolve_run(run_id) for run_id in ids]
    assert all(r.status == "failed" and r.error.startswith("dask worker lost") for r in runs)


def test_after_ctrl_c_a_late_dask_task_never_trains(tmp_path: Path) -> None:
    """Cancelling is asynchronous: at Ctrl-C the queued runs are marked first, so a task picked up late refuses."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    config = ExperimentSpec.from_dict({"optimizer": "sgd", "epochs": 2}).configs()[0]
    with RunStore.open(url) as store:
        exp = store.get_or_create_experiment("stop")
        new = [NewRun(s, config.group_key, {**config.as_dict(), "seed": s}, {}) for s in (0, 1)]
        queued, running = store.create_runs(exp, new), store.create_runs(exp, new)
        store.start_runs(running, host="elsewhere", pid=1, expsvc_version="0", numpy_version="0")
    tasks = [GroupTask(0, url, config, (0, 1), tuple(queued)), GroupTask(1, url, config, (0, 1), tuple(running))]
    DaskExecutor._never_start(tasks)
    with RunStore.open(url, mark_stale=False) as store:
        assert set(store.statuses(queued).values()) == {"interrupted"}
        assert set(store.statuses(running).values()) == {"running"}  # its worker stops it (or finishes it)
    outcome = run_group_task(tasks[0])
    assert [o.status for o in outcome.runs] == ["failed", "failed"]  # refused, not trained
    with RunStore.open(url, mark_stale=False) as store:
        assert set(store.statuses(queued).values()) == {"interrupted"}
        assert store.point_counts(queued) == {}


def test_tasks_reach_workers_with_absolute_paths(tmp_path: Path) -> None:
    config = ExperimentSpec.from_dict({}).configs()[0]
    task = absolute_task(GroupTask(0, "sqlite:///rel/runs.db", config, (0,), ("a" * 32,), "my_plugins"))
    assert task.url == f"sqlite:///{tmp_path / 'rel' / 'runs.db'}"
    assert task.plugins_dir == str(tmp_path / "my_plugins")
    default = absolute_task(GroupTask(0, "postgresql+psycopg://u@h/db", config, (0,), ("a" * 32,)))
    assert default.url == "postgresql+psycopg://u@h/db" and default.plugins_dir == str(tmp_path / "plugins")


def test_unreachable_scheduler() -> None:
    with pytest.raises(DaskError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9: "):
        DaskExecutor("tcp://127.0.0.1:9").start()
    with pytest.raises(DaskError, match="not a scheduler address"):
        DaskExecutor("tcp://nowhere").start()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--executor", "dask", "--scheduler", "tcp://127.0.0.1:9"], "cannot reach the Dask scheduler"),
        (["--executor", "dask", "--scheduler", "localhost"], "is not a scheduler address"),
        (["--executor", "dsk"], "--executor: unknown executor 'dsk' (did you mean 'dask'?); allowed: local, dask"),
        (["--scheduler", "tcp://127.0.0.1:8786"], "needs the dask executor"),
    ],
)
def test_bad_executor_input_is_one_line_exit_2_and_no_database(tmp_path: Path, args: list[str],
                                                                fragment: str) -> None:
    proc = run_cli("run", "--epochs", "2", *args, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and fragment in lines[0], proc.stderr
    assert not (tmp_path / "experiments.db").exists()


def test_missing_dask_is_a_one_line_hint(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['distributed'] = None; from expsvc.cli import main; "
            "main(['run', '--epochs', '2', '--executor', 'dask'])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: --executor dask needs dask.distributed, which is not installed; pip install 'expsvc[dask]'")


def _poll(url: str, sql: str, until: object, timeout: float = 120) -> list[tuple]:
    """Rows of ``sql`` once ``until(rows)`` holds."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                with engine.connect() as conn:
                    rows = [tuple(r) for r in conn.exec_driver_sql(sql)]
                if until(rows):  # type: ignore[operator]
                    return rows
            except sa.exc.DBAPIError:
                pass  # the schema is not there yet
            time.sleep(0.1)
    finally:
        engine.dispose()
    raise AssertionError(f"timed out waiting for {sql}")


@pytest.mark.slow
@pytest.mark.postgres
def test_killed_worker_fails_its_runs_and_resume_completes_them(pg_url: str, tmp_path: Path) -> None:
    """Two groups on a 2-worker LocalCluster; the worker of the long one is killed mid-training."""
    args = ["run", "--opt", "sgd", "--epochs", "20", "--epochs", "20000", "--seeds", "2", "--tol", "0", "-q",
            "--executor", "dask", "-j", "2", "--name", "sweep", "--db", pg_url]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPSVC_")}
    proc = subprocess.Popen([sys.executable, "-m", "expsvc", *args], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    long_runs = ("SELECT r.id, r.pid, r.status, coalesce(sum(h.count), 0) FROM runs r LEFT JOIN metric_chunks h "
                 "ON h.run_id = r.id WHERE r.config::jsonb ->> 'epochs' = '20000' GROUP BY r.id")
    try:
        rows = _poll(pg_url, long_runs, lambda rows: len(rows) == 2 and all(r[2] == "running" and r[3] >= 512
                                                                              for r in rows))
        os.kill(rows[0][1], signal.SIGKILL)  # the worker process training the long group
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err  # failed runs: exit 1, no traceback
    assert "Traceback" not in err
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        runs = conn.exec_driver_sql("SELECT id, status, error, config::jsonb ->> 'epochs', ended_at FROM runs").all()
    engine.dispose()
    short = {r[0]: r for r in runs if r[3] == "20"}
    lost = {r[0]: r for r in runs if r[3] == "20000"}
    assert {r[1] for r in short.values()} == {"finished"}
    assert all(r[1] == "failed" and r[2].startswith("dask worker lost: worker tcp://") for r in lost.values())

    resumed = run_cli("run", "--resume", "sweep", "--executor", "dask", "-j", "2", "-q", "--db", pg_url,
                      cwd=tmp_path, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        after = {r[0]: r for r in conn.exec_driver_sql(
            "SELECT r.id, r.status, r.updates, r.ended_at, (SELECT sum(h.count) FROM metric_chunks h "
            "WHERE h.run_id = r.id AND h.key = 'loss'), r.error FROM runs r").all()}
    engine.dispose()
    assert {r[1] for r in after.values()} == {"finished"}
    assert all(r[4] == r[2] for r in after.values())  # complete history: one loss per update
    assert all(after[run_id][2] == 20000 * 6 and after[run_id][5] is None for run_id in lost)
    assert all(after[run_id][3] == short[run_id][4] for run_id in short)  # untouched
