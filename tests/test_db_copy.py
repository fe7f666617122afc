"""``expsvc db copy``: SQLite -> PostgreSQL -> SQLite round-trips experiments exactly; copying again adds nothing."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from expsvc.runner.api import Experiment
from expsvc.store import NewRun, RunStore, StoreError
from expsvc.store import experiments as exps
from expsvc.store.copy import copy_experiments
from expsvc.store.engine import as_utc
from expsvc.store.models import Base
from tests.conftest import run_cli

TABLES = ("experiments", "runs", "run_params", "metric_chunks", "metric_summaries", "run_components",
          "run_artifacts", "experiment_tags", "experiment_notes")


def dump(url: str) -> dict[str, list[tuple]]:
    """Every row of every table, with store-local ids replaced by names, datetimes in UTC and NaN-safe floats."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    out: dict[str, list[tuple]] = {}
    with engine.connect() as conn:
        names = dict(conn.execute(sa.text("SELECT id, name FROM experiments")).all())
        for name in TABLES:
            table = Base.metadata.tables[name]
            rows = []
            for row in conn.execute(sa.select(table)):
                values = dict(row._mapping)
                if name in ("experiments", "experiment_notes"):
                    values.pop("id")
                if "experiment_id" in values:
                    values["experiment_id"] = names[values["experiment_id"]]
                rows.append(tuple(sorted((k, _plain(v)) for k, v in values.items())))
            out[name] = sorted(rows, key=repr)
    engine.dispose()
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, float) and math.isnan(value):
        return "NaN"  # never stored (NaN is NULL), but compare safely anyway
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def make_source(url: str) -> None:
    """Two experiments: trained runs (finished and diverged), NaN history and summaries, and a queued run."""
    spec = {"dataset": "linear_1d", "model": "linear(4), linear(1)", "loss": "sum_squared", "optimizer": "sgd",
            "lr": [0.03, 0.01], "seeds": 4, "epochs": 15, "batch_size": 3, "tol": 0}
    Experiment(**spec, name="laptop").run(db=url, jobs=1)
    Experiment(**{**spec, "lr": 0.01, "seeds": 2}, name="other", description="second one").run(db=url, jobs=1)
    with RunStore.open(url) as store:
        exp = store.get_or_create_experiment("laptop")
        (extra, _queued) = store.create_runs(exp, [
            NewRun(seed=99, group_key="manual", config={"note": "nan values", "x": [1.5, None]},
                   params={"lr": float("nan"), "flag": True, "big": 2**53 + 1}),
            NewRun(seed=100, group_key="manual", config={}, params={}),
        ])
        store.append_history("accuracy", [(extra, 0, np.array([0.5, np.nan, -0.0, 1e-300, np.inf, -np.inf]))])
        store.log_values(extra, {"test_loss": float("nan"), "test_accuracy": 0.25})
        store.save_params(extra, {"w": np.arange(6, dtype=np.float32).reshape(2, 3)})
        store.finish_run(extra, "failed", error="a failure\nwith two lines")
        exps.set_tags(store, "laptop", add=["baseline", "paper:fig2"])
        exps.add_note(store, "laptop", "first try; lr 0.03 is too large")


def test_round_trip_sqlite_postgres_sqlite_is_exact(tmp_path: Path, pg_url: str) -> None:
    source = f"sqlite:///{tmp_path / 'laptop.db'}"
    back = f"sqlite:///{tmp_path / 'back.db'}"
    make_source(source)
    original = dump(source)
    assert any(np.isnan(np.frombuffer(row_value(r, "data"), "<f8")).any() for r in original["metric_chunks"])

    to_pg = copy_experiments(source, pg_url, batch_runs=3)  # several batches
    assert (to_pg.copied, to_pg.present, to_pg.unfinished) == (11, 0, 1)
    assert to_pg.created == ["laptop", "other"]
    to_sqlite = copy_experiments(pg_url, back)
    assert (to_sqlite.copied, to_sqlite.present) == (11, 0)

    queued_run = next(r for r in original["runs"] if row_value(r, "status") == "queued")
    expected = dict(original)  # everything but the queued run (left for a later copy)
    expected["runs"] = [r for r in original["runs"] if r is not queued_run]
    queued_id = row_value(queued_run, "id")
    expected["run_params"] = [r for r in original["run_params"] if row_value(r, "run_id") != queued_id]
    for url in (pg_url, back):
        copied = dump(url)
        for name in TABLES:
            assert copied[name] == expected[name], (url, name)
    with RunStore.open(back) as store:
        extra = next(r for r in _runs(store) if r.seed == 99)
        _steps, values = store.history(extra.id, "accuracy")
        np.testing.assert_array_equal(values, [0.5, np.nan, -0.0, 1e-300, np.inf, -np.inf])
        assert math.isnan(store.params([extra.id])[extra.id]["lr"])
        assert store.load_params(extra.id)["w"].dtype == np.float32

    again = copy_experiments(source, pg_url)
    assert (again.copied, again.present, again.rows) == (0, 11, {})
    assert dump(pg_url) == {name: expected[name] for name in TABLES}
    assert copy_experiments(pg_url, back).copied == 0


def row_value(row: tuple, key: str) -> Any:
    return dict(row)[key]


def _runs(store: RunStore) -> list[Any]:
    from expsvc.store.models import Run

    with store.session() as session:
        return list(session.scalars(sa.select(Run)))


def test_copy_selected_experiments_into_a_store_that_has_other_runs(tmp_path: Path) -> None:
    source, target = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    make_source(source)
    Experiment(optimizer="adam", seeds=2, epochs=3, name="laptop").run(db=target, jobs=1)  # same name, other runs
    report = copy_experiments(source, target, ["other"])
    assert (report.experiments, report.copied) == (["other"], 2)
    report = copy_experiments(source, target, ["laptop", "laptop"])
    assert (report.experiments, report.copied, report.created, report.unfinished) == (["laptop"], 9, [], 1)
    with RunStore.open(target) as store:
        assert len([r for r in _runs(store) if r.experiment_id == store.resolve_experiment("laptop").id]) == 2 + 9
        exps.set_tags(store, "laptop", add=["target-only"])
    copy_experiments(source, target, ["laptop"])  # again: tags and notes are not repeated
    with RunStore.open(target) as store:
        laptop = exps.describe(store, "laptop")
    assert laptop.tags == ["baseline", "paper:fig2", "target-only"]
    assert [n.text for n in laptop.notes] == ["first try; lr 0.03 is too large"]
    with pytest.raises(StoreError, match=r"unknown experiment 'lapto' \(did you mean 'laptop'\?\)"):
        copy_experiments(source, target, ["lapto"])
    with pytest.raises(StoreError, match="same database"):
        copy_experiments(source, f"sqlite:///{tmp_path / '.' / 'a.db'}")


def test_db_copy_cli(tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'a.db'}"
    make_source(source)
    proc = run_cli("db", "copy", "--from", source, "--to", "sqlite:///b.db", "-e", "other", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("copied 2 runs with 30 history points in 1 experiment(s) from sqlite:///")
    assert "other: 2 of 2 finished runs copied" in proc.stderr
    proc = run_cli("db", "copy", "--from", source, "--to", "sqlite:///b.db", "-q", cwd=tmp_path)
    assert "copied 9 runs" in proc.stdout and "(2 already there; 1 still queued/running" in proc.stdout
    for args, fragment in (
        (["--from", "sqlite:///missing.db", "--to", "sqlite:///c.db"], "no database exists at missing.db"),
        (["--from", source, "--to", "sqlite:///c.db", "-e", "nope"], "unknown experiment 'nope'"),
        (["--from", source, "--to", "postgresql+psycopg://postgres@127.0.0.1:9/x"], "connection failed"),
    ):
        proc = run_cli("db", "copy", *args, cwd=tmp_path)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and fragment in lines[0], proc.stderr
    assert not (tmp_path / "c.db").exists()


def test_a_study_is_copied_with_its_experiments_linked(tmp_path: Path) -> None:
    """``db copy`` once copied a study's two experiments but not the study: they arrived unlinked."""
    from expsvc.runner import study as studies
    from expsvc.store.studies import get_study

    source, target = f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 't.db'}"
    spec = studies.from_values({"optimizer": ["adamw"], "lr": [0.01, 0.1], "epochs": 3, "tune_seeds": 1,
                                "seeds": 2, "name": "st", "model": "linear(1)"})
    studies.run(spec, db=source)
    report = copy_experiments(source, target)
    assert report.studies == ["st"] and "1 study link(s) (st)" in report.summary()
    with RunStore.open(source) as src, RunStore.open(target) as dst:
        was, now = get_study(src, "st"), get_study(dst, "st")
    assert (now.tuning_experiment, now.confirmation_experiment) == ("st-tuning", "st-confirmation")
    assert (now.status, now.spec, now.rule, now.selection) == (was.status, was.spec, was.rule, was.selection)
    assert copy_experiments(source, target).studies == []  # present already: nothing repeated
    only = copy_experiments(source, f"sqlite:///{tmp_path / 'u.db'}", ["st-confirmation"])
    with RunStore.open(f"sqlite:///{tmp_path / 'u.db'}") as dst:
        partial = get_study(dst, "st")
    assert only.studies == ["st"] and (partial.tuning_experiment, partial.confirmation_experiment) == (
        None, "st-confirmation")
