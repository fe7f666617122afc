"""``expsvc run --resume``: exactly the runs that did not finish run again, grouped and vectorised, on both backends."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from expsvc.runner.api import Experiment, plan_resume, resume
from expsvc.store import RunStore
from expsvc.store.models import MetricChunk, Run
from tests.conftest import run_cli

SPEC = {"dataset": "linear_1d", "model": "linear(4), linear(1)", "loss": "sum_squared", "optimizer": "sgd",
        "lr": [0.03, 0.01], "seeds": 8, "epochs": 40, "batch_size": 3, "tol": 0, "name": "sweep"}
"""Two configurations x 8 seeds; with lr=0.03 some seeds diverge (a mix of finished and diverged runs)."""


def _drop_points_from(session: Session, run_id: str, step: int) -> None:
    """Cut a run's history at ``step`` (as if the process had died there): later chunks go, one is shortened."""
    for chunk in session.scalars(sa.select(MetricChunk).where(MetricChunk.run_id == run_id)).all():
        if chunk.first_step >= step:
            session.delete(chunk)
        elif chunk.first_step + chunk.count > step:
            chunk.count = step - chunk.first_step
            chunk.data = chunk.data[: 8 * chunk.count]


def snapshot(url: str) -> dict[str, tuple]:
    """Every run's row and its loss history, by run id."""
    with RunStore.open(url, mark_stale=False) as store, store.session() as session:
        runs = {r.id: r for r in session.scalars(sa.select(Run))}
        histories = store.histories(list(runs))
        return {
            run_id: (run.status, run.seed, run.group_key, run.updates, run.ended_at, run.error,
                     histories[run_id][1].tobytes())
            for run_id, run in runs.items()
        }


def damage(url: str) -> dict[str, str]:
    """Leave runs as a crash would: failed with part of their history, interrupted, queued, stale, alive."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with RunStore.open(url, mark_stale=False) as store, store.session(write=True) as session:
        finished = list(session.scalars(
            sa.select(Run).where(Run.status == "finished").order_by(Run.group_key, Run.seed)))
        by_group: dict[str, list[Run]] = {}
        for run in finished:
            by_group.setdefault(run.group_key, []).append(run)
        first, second = sorted(by_group.values(), key=len)[-1], sorted(by_group.values(), key=len)[0]
        roles = {
            first[0].id: "failed",
            first[1].id: "interrupted",
            first[2].id: "queued",
            second[0].id: "stale",  # running, but its process on this host is gone
            second[1].id: "alive",  # running in this very process: not resumable
        }
        now = datetime.now(UTC)
        for run_id, role in roles.items():
            run = session.get(Run, run_id)
            if role in ("failed", "interrupted", "stale"):
                _drop_points_from(session, run_id, 50)
            if role == "failed":
                run.status, run.error = "failed", "dask worker lost: tcp://127.0.0.1:1 died"
            elif role == "interrupted":
                run.status, run.error = "interrupted", "interrupted by the user (Ctrl-C)"
            elif role == "queued":
                run.status, run.started_at, run.ended_at = "queued", None, None
            else:
                run.status, run.ended_at, run.host = "running", None, socket.gethostname()
                run.pid = dead.pid if role == "stale" else os.getpid()
                run.heartbeat_at = now - timedelta(seconds=5)
    return roles


def test_resume_reruns_exactly_the_unfinished_runs(store_url: str) -> None:
    Experiment(**SPEC).run(db=store_url, jobs=1)
    reference = snapshot(store_url)
    assert {"finished", "diverged"} <= {row[0] for row in reference.values()}
    roles = damage(store_url)
    before = snapshot(store_url)

    plan = plan_resume("sweep", db=store_url, jobs=1)
    resumed = {run_id for run_id, role in roles.items() if role != "alive"}
    assert set(plan.run_ids) == resumed
    assert [len(g.runs) for g in plan.groups] == [4]  # both learning rates and their seeds: one structure
    assert [len(t.seeds) for t in plan.tasks()] == [4] and len(plan.tasks(vectorize=False)) == 4
    by_config = plan_resume("sweep", db=store_url, jobs=1, group_by_config=True)
    assert sorted(len(t.seeds) for t in by_config.tasks()) == [1, 3]  # the older grouping: per configuration
    assert len(plan_resume("sweep", db=store_url, jobs=2).tasks()) == 1  # too little work to fork a 2nd worker

    result = resume("sweep", db=store_url, jobs=1)
    assert sorted(result.run_ids) == sorted(resumed)
    after = snapshot(store_url)
    for run_id, row in after.items():
        if run_id in resumed:
            # run again from scratch: the same status, updates and history as the first, complete run
            assert row[0] == reference[run_id][0] and row[5] is None
            assert row[3] == reference[run_id][3] and row[6] == reference[run_id][6]
            assert np.frombuffer(row[6]).size == row[3]
        else:
            assert row == before[run_id]  # finished, diverged and live runs are untouched
    alive = next(run_id for run_id, role in roles.items() if role == "alive")
    assert after[alive][0] == "running"
    with RunStore.open(store_url) as store:
        summaries = store.summaries(list(resumed))
        assert all(summaries[run_id]["loss"]["count"] == after[run_id][3] for run_id in resumed)
        assert all("test_loss" in summaries[run_id] for run_id in resumed)
        assert all(store.components(run_id) for run_id in resumed)
        assert all(store.load_params(run_id) for run_id in resumed)

    again = plan_resume("sweep", db=store_url)
    assert again.run_ids == [] and again.counts["running"] == 1


def test_resume_without_vectorisation_gives_the_same_histories(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    Experiment(**SPEC).run(db=url, jobs=1)
    reference = snapshot(url)
    roles = damage(url)
    resume("sweep", db=url, jobs=2, vectorize=False)
    after = snapshot(url)
    for run_id, role in roles.items():
        if role != "alive":
            assert after[run_id][6] == reference[run_id][6] and after[run_id][0] == reference[run_id][0]


def test_resume_cli(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    common = ["--dataset", "linear_1d", "--model", "linear(4), linear(1)", "--loss", "mse", "--opt", "sgd",
              "--seeds", "2", "--epochs", "5", "--batch-size", "3", "-q", "-j", "1", "--db", db]
    assert run_cli("run", *common, "--name", "small", cwd=tmp_path).returncode == 0
    done = run_cli("run", "--resume", "small", "--db", db, cwd=tmp_path)
    assert done.returncode == 0
    assert "nothing to resume: all 2 runs of experiment 'small' ended (2 finished)" in done.stdout
    with RunStore.open(db) as store, store.session(write=True) as session:
        run = session.scalars(sa.select(Run)).first()
        run.status, run.error = "failed", "boom"
        run_id = run.id
    proc = run_cli("run", "--resume", "small", "--db", db, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "resuming 1 of 2 runs of experiment 'small'" in proc.stderr
    assert "2 runs" not in proc.stdout and "1 runs in experiment 'small': 1 finished" in proc.stdout
    with RunStore.open(db) as store:
        assert store.resolve_run(run_id).status == "finished"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--resume", "smal"], "unknown experiment 'smal' (did you mean 'small'?)"),
        (["--resume", "small", "--opt", "adamw", "--seeds", "3"], "cannot be combined with --opt, --seeds"),
        (["--resume", "small", "--name", "other"], "cannot be combined with --name"),
        (["--resume", "small", "--executor", "dsak"], "unknown executor 'dsak' (did you mean 'dask'?)"),
    ],
)
def test_resume_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str], fragment: str) -> None:
    db = f"sqlite:///{tmp_path / 'b.db'}"
    with RunStore.open(db) as store:
        store.get_or_create_experiment("small")
    proc = run_cli("run", *args, "--db", db, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and fragment in lines[0], proc.stderr


def test_resume_of_a_missing_database_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("run", "--resume", "x", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no database exists" in proc.stderr
    assert not (tmp_path / "experiments.db").exists()
