"""Tests of expsvc.store.RunStore on real SQLite files and PostgreSQL databases (and real processes for concurrency
and crashes): every test that takes ``store`` or ``db_url`` runs on both backends."""

from __future__ import annotations

import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from expsvc.store import ComponentRecord, NewRun, RunStore, StoreError, default_url, migrate
from expsvc.store.history import summarize
from expsvc.store.models import Experiment, MetricChunk, MetricSummary, Run, RunArtifact, RunComponent, RunParam

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def db_url(store_url: str) -> str:
    """A new store on each backend (SQLite file, PostgreSQL database): see ``store_url`` in conftest."""
    return store_url


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def integrity_ok(url: str) -> bool:
    """SQLite's integrity_check on a SQLite store (PostgreSQL has no equivalent to run: True)."""
    if not is_sqlite(url):
        return True
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        return conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


@pytest.fixture
def store(db_url: str):
    with RunStore.open(db_url) as opened:
        yield opened


def new_runs(n: int, **params: object) -> list[NewRun]:
    return [
        NewRun(seed=i, group_key="g0", config={"seed": i, "lr": 0.1}, params={"seed": i, **params}) for i in range(n)
    ]


def make_runs(store: RunStore, n: int = 2, experiment: str = "exp", **params: object) -> list[str]:
    exp_id = store.get_or_create_experiment(experiment)
    return store.create_runs(exp_id, new_runs(n, **params))


def count(store: RunStore, model: type) -> int:
    with store.session() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(model)) or 0


def expected_summary(steps: np.ndarray, values: np.ndarray) -> dict[str, object]:
    """The reference summary, computed with numpy's NaN-aware functions."""
    finite = ~np.isnan(values)
    out: dict[str, object] = {
        "first": None if np.isnan(values[0]) else values[0],
        "last": None if np.isnan(values[-1]) else values[-1],
        "last_step": int(steps[-1]),
        "count": int(values.size),
        "nan_count": int((~finite).sum()),
    }
    if finite.any():
        out |= {
            "min": np.nanmin(values),
            "min_step": int(steps[np.nanargmin(values)]),
            "max": np.nanmax(values),
            "max_step": int(steps[np.nanargmax(values)]),
            "mean": np.nanmean(values),
        }
    else:
        out |= {"min": None, "min_step": None, "max": None, "max_step": None, "mean": None}
    return out


def assert_summary(actual: dict[str, object], expected: dict[str, object]) -> None:
    assert set(actual) == {
        "first", "last", "last_step", "min", "min_step", "max", "max_step", "mean", "count", "nan_count"
    }  # fmt: skip
    for name, want in expected.items():
        got = actual[name]
        if want is None:
            assert got is None, name
        elif isinstance(want, int):
            assert got == want, name
        else:
            assert got == pytest.approx(float(want), rel=1e-12), name


# ----------------------------------------------------------------------------------------- connections


def test_default_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXPSVC_DB", raising=False)
    assert default_url() == "sqlite:///experiments.db"
    monkeypatch.setenv("EXPSVC_DB", "sqlite:///elsewhere.db")
    assert default_url() == "sqlite:///elsewhere.db"


def test_open_uses_default_url_relative_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EXPSVC_DB", raising=False)
    with RunStore.open() as opened:
        assert opened.url == "sqlite:///experiments.db"
    assert (tmp_path / "experiments.db").is_file()


def test_sqlite_pragmas(tmp_path: Path) -> None:
    with RunStore.open(f"sqlite:///{tmp_path / 'runs.db'}") as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_current_revision_is_head(store: RunStore) -> None:
    assert store.current_revision() == migrate.head() == "0005"


def test_session_commits_and_rolls_back(store: RunStore) -> None:
    exp_id = store.get_or_create_experiment("exp")
    with store.session() as session:
        assert session.get(Run, "missing") is None
    with pytest.raises(RuntimeError), store.session(write=True) as session:
        session.get(Experiment, exp_id).description = "changed"
        session.flush()
        raise RuntimeError("boom")
    assert store.resolve_experiment("exp").description is None
    with store.session() as session:
        session.get(Experiment, exp_id).description = "kept"
    assert store.resolve_experiment("exp").description == "kept"


# ---------------------------------------------------------------------------------------------- writing


def test_get_or_create_experiment_is_idempotent(store: RunStore) -> None:
    first = store.get_or_create_experiment("exp", "a description")
    assert store.get_or_create_experiment("exp") == first
    assert store.get_or_create_experiment("other") != first
    exp = store.resolve_experiment("exp")
    assert exp.description == "a description"
    assert exp.created_at.tzinfo is not None
    with pytest.raises(StoreError, match="must not be empty"):
        store.get_or_create_experiment("  ")


def test_get_or_create_experiment_under_concurrency(db_url: str) -> None:
    """Eight stores race to create the same ten experiments: one row each, every caller gets its id."""
    with RunStore.open(db_url):
        pass  # the schema exists; the race is about the experiment rows
    names = [f"exp-{i}" for i in range(10)]
    barrier = threading.Barrier(8)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with RunStore.open(db_url) as own:
                barrier.wait(timeout=30)
                results.append([own.get_or_create_experiment(name) for name in names])
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(results) == 8 and all(ids == results[0] for ids in results)
    with RunStore.open(db_url) as store:
        assert count(store, Experiment) == 10


def test_create_runs_and_typed_params(store: RunStore) -> None:
    exp_id = store.get_or_create_experiment("exp")
    params = {
        "lr": 0.1,
        "epochs": 20,
        "big": 2**60 + 1,
        "shuffle": True,
        "bias": False,
        "optimizer": "sgd",
        "digits": "32",
        "nothing": None,
        "np_int": np.int64(7),
        "np_float": np.float32(0.5),
        "np_bool": np.bool_(True),
    }
    ids = store.create_runs(exp_id, [NewRun(seed=3, group_key="abcd", config={"a": [1, 2]}, params=params)])
    assert len(ids) == 1 and len(ids[0]) == 32 and int(ids[0], 16) >= 0
    run = store.resolve_run(ids[0])
    assert (run.status, run.seed, run.group_key, run.config) == ("queued", 3, "abcd", {"a": [1, 2]})
    assert run.created_at.tzinfo is not None
    with store.session() as session:
        rows = {r.key: (r.value_text, r.value_num) for r in session.scalars(sa.select(RunParam))}
    assert rows["lr"] == ("0.1", 0.1)
    assert rows["epochs"] == ("20", 20.0)
    assert rows["shuffle"] == ("true", 1.0) and rows["bias"] == ("false", 0.0)
    assert rows["optimizer"] == ("sgd", None) and rows["digits"] == ("32", None)
    assert rows["nothing"] == (None, None)
    got = store.params(ids)[ids[0]]
    assert got == {
        "lr": 0.1,
        "epochs": 20,
        "big": 2**60 + 1,
        "shuffle": True,
        "bias": False,
        "optimizer": "sgd",
        "digits": "32",
        "nothing": None,
        "np_int": 7,
        "np_float": 0.5,
        "np_bool": True,
    }
    assert type(got["epochs"]) is int and type(got["shuffle"]) is bool and type(got["lr"]) is float
    assert store.create_runs(exp_id, []) == []


def test_create_runs_in_unknown_experiment(store: RunStore) -> None:
    with pytest.raises(StoreError, match="cannot create runs in experiment 999"):
        store.create_runs(999, new_runs(1))
    exp_id = store.get_or_create_experiment("exp")
    with pytest.raises(StoreError, match="not JSON-serialisable: Object of type set"):
        store.create_runs(exp_id, [NewRun(seed=0, group_key="g", config={"a": {1, 2}}, params={})])
    assert count(store, Run) == 0


def test_start_runs(store: RunStore) -> None:
    ids = make_runs(store, 2)
    store.start_runs(ids, host="h1", pid=os.getpid(), expsvc_version="0.1.0", numpy_version="2.0", steps_per_epoch=5)
    for run_id in ids:
        run = store.resolve_run(run_id)
        assert (run.status, run.host, run.pid, run.expsvc_version, run.numpy_version, run.steps_per_epoch) == (
            "running",
            "h1",
            os.getpid(),
            "0.1.0",
            "2.0",
            5,
        )
        assert run.started_at is not None and run.heartbeat_at == run.started_at


def test_history_round_trip_with_nan(store: RunStore) -> None:
    (run_id,) = make_runs(store, 1)
    values = np.array([1.0, np.nan, 0.5, np.inf, -2.0])
    store.append_history("loss", [(run_id, 0, values)])
    with store.session() as session:
        (chunk,) = session.scalars(sa.select(MetricChunk)).all()
    assert (chunk.first_step, chunk.count, chunk.data) == (0, 5, values.astype("<f8").tobytes())  # one row
    steps, got = store.history(run_id)
    assert steps.dtype == np.int64 and got.dtype == np.float64
    np.testing.assert_array_equal(steps, np.arange(5))
    np.testing.assert_array_equal(got, values)  # NaN and inf come back as they went in
    empty_steps, empty_values = store.history(run_id, "accuracy")
    assert empty_steps.shape == empty_values.shape == (0,)


def test_append_history_updates_summaries_incrementally(store: RunStore) -> None:
    ids = make_runs(store, 3)
    rng = np.random.default_rng(0)
    full: dict[str, list[np.ndarray]] = {run_id: [] for run_id in ids}
    step = 0
    for batch in range(6):
        chunk = rng.normal(size=(3, 7))
        chunk[0, 0] = np.nan if batch == 0 else chunk[0, 0]  # the very first value is NaN
        chunk[1, 3] = np.nan
        if batch == 2:
            chunk[2, :] = np.nan  # an all-NaN chunk
            chunk[1, 2] = chunk[1, 1]  # a tie: the earliest step wins
        store.append_history("loss", [(run_id, step, chunk[i]) for i, run_id in enumerate(ids)])
        for i, run_id in enumerate(ids):
            full[run_id].append(chunk[i])
        step += 7
    summaries = store.summaries(ids)
    for run_id in ids:
        values = np.concatenate(full[run_id])
        steps = np.arange(values.size)
        assert_summary(summaries[run_id]["loss"], expected_summary(steps, values))
        assert summarize(steps, values) == pytest.approx(summaries[run_id]["loss"], nan_ok=True)
    assert summaries[ids[0]]["loss"]["first"] is None


def test_all_nan_history_summary(store: RunStore) -> None:
    (run_id,) = make_runs(store, 1)
    store.append_history("loss", [(run_id, 0, np.full(4, np.nan))])
    summary = store.summaries([run_id])[run_id]["loss"]
    assert summary | {} == {
        "first": None,
        "last": None,
        "last_step": 3,
        "min": None,
        "min_step": None,
        "max": None,
        "max_step": None,
        "mean": None,
        "count": 4,
        "nan_count": 4,
    }


def test_two_chunks_of_one_run_in_one_call_and_out_of_order(store: RunStore) -> None:
    (run_id,) = make_runs(store, 1)
    store.append_history("loss", [(run_id, 0, [3.0, 2.0]), (run_id, 2, [1.0, 5.0])])
    store.append_history("loss", [(run_id, 10, [0.5])])
    store.append_history("loss", [(run_id, 4, [-1.0, np.nan])])  # earlier steps than the last: recomputed
    steps, values = store.history(run_id)
    np.testing.assert_array_equal(steps, [0, 1, 2, 3, 4, 5, 10])
    assert_summary(store.summaries([run_id])[run_id]["loss"], expected_summary(steps, values))


def test_append_history_errors(store: RunStore) -> None:
    (run_id,) = make_runs(store, 1)
    store.append_history("loss", [(run_id, 0, np.ones(3))])
    with pytest.raises(StoreError, match="already has some of these steps"):
        store.append_history("loss", [(run_id, 2, np.ones(3))])
    with pytest.raises(StoreError, match="unknown run"):
        store.append_history("loss", [("f" * 32, 0, np.ones(3))])
    with pytest.raises(StoreError, match="1-D"):
        store.append_history("loss", [(run_id, 10, np.ones((2, 2)))])
    store.append_history("loss", [(run_id, 10, np.ones(0))])  # nothing to do
    assert len(store.history(run_id)[0]) == 3  # the failed calls left nothing behind
    assert store.summaries([run_id])[run_id]["loss"]["count"] == 3


@pytest.mark.parametrize(("stored", "new", "clash"), [
    ([(0, 3)], [(3, 2)], False),  # right after
    ([(0, 3)], [(2, 2)], True),  # the last stored step again
    ([(10, 5)], [(0, 10)], False),  # before, touching
    ([(10, 5)], [(0, 11)], True),  # before, one step into it
    ([(0, 5), (20, 5)], [(5, 15)], False),  # fills the gap exactly
    ([(0, 5), (20, 5)], [(12, 2)], False),  # inside the gap
    ([(0, 5), (20, 5)], [(5, 16)], True),  # the gap and one more
    ([(0, 5), (20, 5)], [(21, 1)], True),  # inside a stored chunk
    ([(0, 5), (20, 5)], [(-3, 100)], True),  # around everything
    ([], [(0, 3), (2, 3)], True),  # two new chunks of one call overlap each other
    ([(0, 3)], [(5, 3), (3, 2)], False),  # two new chunks, given in reverse order
])  # fmt: skip
def test_overlapping_steps_are_refused(
    store: RunStore, stored: list[tuple[int, int]], new: list[tuple[int, int]], clash: bool
) -> None:
    run_id, other = make_runs(store, 2)
    for first, n in stored:
        store.append_history("loss", [(run_id, first, np.ones(n))])
    store.append_history("loss", [(other, 0, np.ones(3))])
    chunks = [(run_id, first, np.full(n, 2.0)) for first, n in new] + [(other, 3, np.ones(1))]
    before = store.history(run_id)
    if clash:
        with pytest.raises(StoreError, match=rf"already has some of these steps \(runs {run_id[:8]}\)"):
            store.append_history("loss", chunks)
        np.testing.assert_array_equal(store.history(run_id)[0], before[0])
        assert store.point_counts([other]) == {other: 3}  # the whole call was refused
    else:
        store.append_history("loss", chunks)
        steps, values = store.history(run_id)
        assert steps.size == sum(n for _, n in stored + new) and np.all(np.diff(steps) > 0)
        assert_summary(store.summaries([run_id])[run_id]["loss"], expected_summary(steps, values))


def test_append_history_and_heartbeat_move_heartbeat(store: RunStore) -> None:
    ids = make_runs(store, 2)
    store.start_runs(ids, host="h", pid=1, expsvc_version="0", numpy_version="0")
    started = store.resolve_run(ids[0]).heartbeat_at
    time.sleep(0.01)
    store.append_history("loss", [(ids[0], 0, np.ones(2))])
    assert store.resolve_run(ids[0]).heartbeat_at > started
    assert store.resolve_run(ids[1]).heartbeat_at == started
    store.heartbeat([ids[1]])
    assert store.resolve_run(ids[1]).heartbeat_at > started


def test_histories_one_call(store: RunStore) -> None:
    ids = make_runs(store, 3)
    store.append_history("loss", [(ids[0], 0, [1.0, 2.0]), (ids[1], 5, [np.nan])])
    store.append_history("accuracy", [(ids[0], 0, [0.9])])
    result = store.histories([*ids, "0" * 32])
    assert set(result) == {*ids, "0" * 32}
    np.testing.assert_array_equal(result[ids[0]][0], [0, 1])
    np.testing.assert_array_equal(result[ids[0]][1], [1.0, 2.0])
    np.testing.assert_array_equal(result[ids[1]][0], [5])
    assert np.isnan(result[ids[1]][1]).all()
    assert result[ids[2]][0].size == 0
    np.testing.assert_array_equal(store.histories([ids[0]], "accuracy")[ids[0]][1], [0.9])


def test_log_values_upserts_single_valued_summaries(store: RunStore) -> None:
    (run_id,) = make_runs(store, 1)
    store.log_values(run_id, {"test_accuracy": 0.5, "test_loss": float("nan")})
    store.log_values(run_id, {"test_accuracy": 0.75})
    summaries = store.summaries([run_id])[run_id]
    acc = summaries["test_accuracy"]
    assert acc["count"] == 1 and acc["nan_count"] == 0
    assert acc["first"] == acc["last"] == acc["min"] == acc["max"] == acc["mean"] == 0.75
    assert summaries["test_loss"]["last"] is None and summaries["test_loss"]["nan_count"] == 1
    store.log_values(run_id, {})
    with pytest.raises(StoreError, match="unknown run"):
        store.log_values("0" * 32, {"x": 1.0})


def test_components_round_trip_and_replace(store: RunStore) -> None:
    (run_id,) = make_runs(store, 1)
    records = [
        ComponentRecord("layer", "linear", "linear(16)", "expsvc.builtins", "expsvc", "0.1.0"),
        ComponentRecord("loss", "mse", "mse", "my_plugin", None, None),
    ]
    store.set_components(run_id, records)
    assert store.components(run_id) == records
    store.set_components(run_id, records[1:])
    assert store.components(run_id) == records[1:]
    assert store.components("0" * 32) == []
    with pytest.raises(StoreError, match="unknown run"):
        store.set_components("0" * 32, records)


def test_params_blob_round_trip(store: RunStore) -> None:
    (run_id,) = make_runs(store, 1)
    arrays = {
        "0.weight": np.arange(12, dtype=np.float64).reshape(3, 4) / 7,
        "0.bias": np.zeros(4, dtype=np.float32),
        "steps": np.array(5, dtype=np.int64),
    }
    store.save_params(run_id, arrays)
    loaded = store.load_params(run_id)
    assert set(loaded) == set(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
        np.testing.assert_array_equal(loaded[name], array)
    with store.session() as session:
        artifact = session.scalars(sa.select(RunArtifact)).one()
    assert artifact.kind == "params" and artifact.meta["format"] == "npz"
    assert artifact.meta["arrays"]["0.weight"] == {"shape": [3, 4], "dtype": "<f8"}
    store.save_params(run_id, {"w": np.ones(2)})  # replaces
    assert list(store.load_params(run_id)) == ["w"]
    with pytest.raises(StoreError, match="no saved parameters"):
        store.load_params("0" * 32)


def test_finish_run(store: RunStore) -> None:
    ids = make_runs(store, 2)
    store.finish_run(ids[0], "finished", updates=100, epochs=10, converged=True, duration=1.5)
    run = store.resolve_run(ids[0])
    assert (run.status, run.updates, run.epochs, run.converged, run.duration, run.error) == (
        "finished",
        100,
        10,
        True,
        1.5,
        None,
    )
    assert run.ended_at is not None and run.ended_at.tzinfo is not None
    store.finish_run(ids[1], "diverged", error="loss is inf")
    assert store.resolve_run(ids[1]).error == "loss is inf"
    with pytest.raises(StoreError, match="status 'running'"):
        store.finish_run(ids[1], "running")
    with pytest.raises(StoreError, match="no such run"):
        store.finish_run("0" * 32, "failed")


def test_mark_unfinished_only_touches_queued_and_running(store: RunStore) -> None:
    ids = make_runs(store, 3)
    store.start_runs(ids[1:2], host="h", pid=1, expsvc_version="0", numpy_version="0")
    store.finish_run(ids[2], "finished")
    assert store.mark_unfinished(ids, error="interrupted by Ctrl-C") == 2
    statuses = [store.resolve_run(run_id).status for run_id in ids]
    assert statuses == ["interrupted", "interrupted", "finished"]
    assert store.resolve_run(ids[0]).error == "interrupted by Ctrl-C"
    assert store.mark_unfinished(ids, "failed") == 0
    with pytest.raises(StoreError):
        store.mark_unfinished(ids, "bogus")


def test_delete_runs_cascades(store: RunStore) -> None:
    ids = make_runs(store, 2, lr=0.1)
    for run_id in ids:
        store.append_history("loss", [(run_id, 0, np.ones(5))])
        store.log_values(run_id, {"test_accuracy": 1.0})
        store.set_components(run_id, [ComponentRecord("loss", "mse", "mse", "p", None, None)])
        store.save_params(run_id, {"w": np.ones(3)})
    tables = (RunParam, MetricChunk, MetricSummary, RunComponent, RunArtifact)
    before = {model: count(store, model) for model in tables}
    assert store.delete_runs([ids[0], "0" * 32]) == 1
    for model in tables:
        assert count(store, model) == before[model] // 2, model.__name__
    assert count(store, Run) == 1
    assert store.history(ids[1])[0].size == 5
    assert store.delete_runs([]) == 0


def test_reset_runs_clears_everything_a_run_recorded(store: RunStore) -> None:
    ids = make_runs(store, 5, lr=0.1)
    store.start_runs(ids, host="h", pid=1, expsvc_version="0", numpy_version="0", steps_per_epoch=3)
    for run_id in ids:
        store.append_history("loss", [(run_id, 0, np.ones(4))])
        store.log_values(run_id, {"test_accuracy": 1.0})
        store.set_components(run_id, [ComponentRecord("loss", "mse", "mse", "p", None, None)])
        store.save_params(run_id, {"w": np.ones(3)})
    store.finish_run(ids[0], "finished", updates=4)
    store.finish_run(ids[1], "diverged", error="loss is inf")
    store.finish_run(ids[2], "failed", error="dask worker lost")
    store.finish_run(ids[3], "interrupted", error="Ctrl-C")  # ids[4] stays running (not stale: resumed later)
    assert {r.id for r in store.resumable_runs(store.resolve_experiment("exp").id)} == set(ids[2:4])
    assert sorted(store.reset_runs(ids)) == sorted(ids[2:4])  # finished, diverged and running are untouched
    assert store.statuses([*ids, "0" * 32]) == dict(zip(ids, ["finished", "diverged", "queued", "queued", "running"],
                                                            strict=True))
    for run_id in ids[2:4]:
        run = store.resolve_run(run_id)
        assert (run.error, run.started_at, run.ended_at, run.updates, run.heartbeat_at) == (None,) * 5
        assert (run.host, run.pid) == (socket.gethostname(), os.getpid())  # queued by this process (mark_stale)
        assert store.history(run_id)[0].size == 0 and store.summaries([run_id])[run_id] == {}
        assert store.components(run_id) == []
        with pytest.raises(StoreError, match="no saved parameters"):
            store.load_params(run_id)
        assert store.params([run_id])[run_id] == {"seed": run.seed, "lr": 0.1}  # the config stays
    for run_id in (ids[0], ids[1], ids[4]):
        assert store.history(run_id)[0].size == 4 and store.components(run_id)
    assert store.status_counts(store.resolve_experiment("exp").id) == {
        "finished": 1, "diverged": 1, "queued": 2, "running": 1}
    assert store.reset_runs([]) == []


# ---------------------------------------------------------------------------------------------- reading


def test_resolve_experiment(store: RunStore) -> None:
    with pytest.raises(StoreError, match="no experiments"):
        store.resolve_experiment(None)
    first = store.get_or_create_experiment("baseline")
    second = store.get_or_create_experiment("wider")
    numeric = store.get_or_create_experiment(str(first + 10))
    assert store.resolve_experiment(None).id == numeric  # the latest created
    assert store.resolve_experiment("baseline").id == first
    assert store.resolve_experiment(str(second)).id == second  # by id
    assert store.resolve_experiment(str(first + 10)).id == numeric  # a name wins over an id
    with pytest.raises(StoreError, match=r"unknown experiment 'baselin' \(did you mean 'baseline'\?\)"):
        store.resolve_experiment("baselin")
    with pytest.raises(StoreError, match="unknown experiment 'zzz'"):
        store.resolve_experiment("zzz")


def test_resolve_run_by_prefix(store: RunStore) -> None:
    ids = make_runs(store, 20)
    run_id = ids[0]
    assert store.resolve_run(run_id).id == run_id
    assert store.resolve_run(run_id.upper()).id == run_id
    unique = next(n for n in range(1, 33) if sum(other.startswith(run_id[:n]) for other in ids) == 1)
    assert store.resolve_run(run_id[:unique]).id == run_id
    # 20 ids over 16 first characters: some first character is shared
    shared = next(c for c in "0123456789abcdef" if sum(i.startswith(c) for i in ids) > 1)
    with pytest.raises(StoreError, match=f"run prefix '{shared}' is ambiguous: .*, "):
        store.resolve_run(shared)
    missing = next(c * 6 for c in "0123456789abcdef" if not any(i.startswith(c * 6) for i in ids))
    with pytest.raises(StoreError, match="no run id starts with"):
        store.resolve_run(missing)
    for bad in ("", "xyz", "12%", "_"):
        with pytest.raises(StoreError, match="is not a run id"):
            store.resolve_run(bad)


def test_summaries_and_params_for_unknown_runs_are_empty(store: RunStore) -> None:
    assert store.summaries(["0" * 32]) == {"0" * 32: {}}
    assert store.params(["0" * 32]) == {"0" * 32: {}}


def test_many_ids_in_one_call(store: RunStore) -> None:
    ids = make_runs(store, 3)
    store.append_history("loss", [(run_id, 0, np.ones(2)) for run_id in ids])
    many = [f"{i:032x}" for i in range(1200)] + ids  # more ids than one IN list holds
    assert sum(v[0].size for v in store.histories(many).values()) == 6
    assert sum(len(v) for v in store.summaries(many).values()) == 3


# ------------------------------------------------------------------------------------------ stale runs


def _set_running(store: RunStore, run_id: str, *, host: str, pid: int, heartbeat: datetime) -> None:
    store.start_runs([run_id], host=host, pid=pid, expsvc_version="0", numpy_version="0")
    with store.session(write=True) as session:
        session.get(Run, run_id).heartbeat_at = heartbeat


def test_stale_runs_are_failed_on_open(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    here = socket.gethostname()
    now = datetime.now(UTC)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with RunStore.open(db_url) as store:
        ids = make_runs(store, 5)
        _set_running(store, ids[0], host=here, pid=dead.pid, heartbeat=now)  # process gone
        _set_running(store, ids[1], host="elsewhere", pid=1, heartbeat=now - timedelta(minutes=11))  # silent
        _set_running(store, ids[2], host=here, pid=os.getpid(), heartbeat=now)  # alive
        _set_running(store, ids[3], host="elsewhere", pid=1, heartbeat=now - timedelta(minutes=5))  # recent
    with RunStore.open(db_url, mark_stale=False) as store:
        assert store.resolve_run(ids[0]).status == "running"
    with RunStore.open(db_url) as store:
        runs = [store.resolve_run(run_id) for run_id in ids]
    assert [run.status for run in runs] == ["failed", "failed", "running", "running", "queued"]
    assert runs[0].error.startswith("stale:") and str(dead.pid) in runs[0].error
    assert runs[1].error.startswith("stale:") and "no heartbeat" in runs[1].error
    assert runs[0].ended_at is not None
    monkeypatch.setenv("EXPSVC_STALE_SECONDS", "60")
    with RunStore.open(db_url) as store:
        assert store.resolve_run(ids[3]).status == "failed"
        assert store.resolve_run(ids[2]).status == "running"
    monkeypatch.setenv("EXPSVC_STALE_SECONDS", "soon")
    with pytest.raises(StoreError, match="EXPSVC_STALE_SECONDS"):
        RunStore.open(db_url)


# --------------------------------------------------------------------------------- processes and speed

WORKER = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from expsvc.store import NewRun, RunStore

    url, go, worker = sys.argv[1], sys.argv[2], int(sys.argv[3])
    open(f"{go}.ready-{worker}", "w").close()
    while not os.path.exists(go):
        time.sleep(0.001)
    store = RunStore.open(url)
    exp = store.get_or_create_experiment("shared")
    runs = [NewRun(seed=s, group_key=f"w{worker}", config={"w": worker}, params={"seed": s}) for s in range(3)]
    ids = store.create_runs(exp, runs)
    store.start_runs(ids, host="h", pid=os.getpid(), expsvc_version="0", numpy_version="0")
    rng = np.random.default_rng(worker)
    for batch in range(20):
        store.append_history("loss", [(r, batch * 50, rng.normal(size=50)) for r in ids])
        store.append_history("accuracy", [(r, batch * 50, rng.uniform(size=50)) for r in ids])
    for r in ids:
        store.log_values(r, {"test_accuracy": 0.5})
        store.finish_run(r, "finished", updates=1000)
    store.close()
    """
)


def wait_until_ready(go: Path, n: int, timeout: float = 60.0) -> None:
    """Wait until ``n`` worker processes have imported everything and are waiting for ``go``."""
    deadline = time.monotonic() + timeout
    while len(list(go.parent.glob(f"{go.name}.ready-*"))) < n:
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.01)


@pytest.mark.slow
def test_four_concurrent_writer_processes(tmp_path: Path, db_url: str) -> None:
    url = db_url  # not created yet (a missing file, an empty database): the workers race to create it
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, str(go), str(w)], env=env, stderr=subprocess.PIPE, text=True
        )
        for w in range(4)
    ]
    wait_until_ready(go, 4)
    go.touch()  # all four start at once
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    with RunStore.open(url) as store:
        assert count(store, Experiment) == 1
        assert count(store, Run) == 12
        assert sum(store.point_counts().values()) == 4 * 3 * 2 * 20 * 50
        assert count(store, MetricSummary) == 12 * 3
        with store.session() as session:
            ids = list(session.scalars(sa.select(Run.id)))
        summaries = store.summaries(ids)
        assert all(s["loss"]["count"] == 1000 and s["accuracy"]["count"] == 1000 for s in summaries.values())
        assert {store.resolve_run(run_id).status for run_id in ids} == {"finished"}
    assert integrity_ok(url)


CRASHER = textwrap.dedent(
    """
    import os, socket, sys, time
    import numpy as np
    from expsvc.store import NewRun, RunStore

    store = RunStore.open(sys.argv[1])
    exp = store.get_or_create_experiment("crash")
    (run_id,) = store.create_runs(exp, [NewRun(seed=0, group_key="g", config={}, params={})])
    store.start_runs([run_id], host=socket.gethostname(), pid=os.getpid(), expsvc_version="0", numpy_version="0")
    print(run_id, flush=True)
    step = 0
    while True:
        store.append_history("loss", [(run_id, step, np.linspace(1.0, 0.0, 200))])
        step += 200
        print(step, flush=True)
    """
)


@pytest.mark.slow
def test_sigkill_mid_logging_loses_nothing_flushed(db_url: str) -> None:
    url = db_url
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHER, url], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    assert len(run_id) == 32, proc.stderr.read() if proc.stderr else ""
    flushed = 0
    while flushed < 4000:
        flushed = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert proc.stderr is not None
    proc.stderr.close()

    assert integrity_ok(url)
    with RunStore.open(url) as store:
        steps, values = store.history(run_id)
        assert steps.size >= flushed  # everything reported as flushed is there...
        np.testing.assert_array_equal(steps, np.arange(steps.size))  # ...with no gap or torn batch
        assert steps.size % 200 == 0
        np.testing.assert_array_equal(values, np.tile(np.linspace(1.0, 0.0, 200), steps.size // 200))
        assert store.summaries([run_id])[run_id]["loss"]["count"] == steps.size  # same transaction
        run = store.resolve_run(run_id)
    assert run.status == "failed"
    assert run.error.startswith("stale:")


def test_history_throughput(store: RunStore) -> None:
    """10 runs x 1,000 points per call (prints rows/s; no timing assertion)."""
    ids = make_runs(store, 10)
    rng = np.random.default_rng(1)
    timings = []
    for rep in range(5):
        chunks = [(run_id, rep * 1000, rng.normal(size=1000)) for run_id in ids]
        start = time.perf_counter()
        store.append_history("loss", chunks)
        timings.append(time.perf_counter() - start)
    best = min(timings)
    print(f"\nappend_history 10x1000 points: best {best * 1e3:.1f} ms = {10_000 / best:,.0f} rows/s")
    assert store.point_counts() == {run_id: 5_000 for run_id in ids}
    assert math.isfinite(best)


def test_bench_history_writes_reports_rows_per_second_and_cleans_up(db_url: str) -> None:
    from expsvc.store.bench import bench_history_writes

    result = bench_history_writes(db_url, runs=3, points=200, repeats=2)
    assert result["backend"] in ("sqlite", "postgresql") and result["rows_per_call"] == 600
    assert result["rows_per_s"] >= result["median_rows_per_s"] > 0
    print(f"\n{result['backend']}: {result['rows_per_s']:,.0f} rows/s")
    with RunStore.open(db_url) as store:
        assert count(store, Experiment) == count(store, Run) == count(store, MetricChunk) == 0
