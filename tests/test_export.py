"""``export`` (CSV/JSON, with histories) and ``rm`` (ids, --where, --experiment, confirmation)."""

from __future__ import annotations

import csv
import json
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from expsvc.analysis.export import ExportError, export_data, export_runs
from expsvc.cli.analysis import register
from expsvc.files import OutputError
from expsvc.store import RunStore, read
from tests import store_fixtures as fixtures


def invoke(*args: str, input: str | None = None) -> Any:
    app = typer.Typer(pretty_exceptions_enable=False)
    register(app)
    return CliRunner().invoke(app, list(args), input=input)


@pytest.fixture
def db(tmp_path: Path) -> tuple[str, Any, list[str]]:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    engine = fixtures.create_db(url)
    ids = []
    with Session(engine) as s:
        a = fixtures.add_experiment(s, "a")
        b = fixtures.add_experiment(s, "b")
        for i in range(4):
            ids.append(fixtures.add_run(
                s, a if i < 3 else b, seed=i, params={"optimizer": "sgd", "lr": 0.1 * (i + 1), "shuffle": i % 2 == 0},
                history={"loss": [1.0, 0.5, math.nan if i == 2 else 0.25]},
                summaries={"test_accuracy": 0.5 + 0.1 * i}, components=True,
                status="diverged" if i == 2 else "finished", created_at=fixtures.T0 + timedelta(seconds=i)))
        s.commit()
    return url, engine, ids


def test_export_json_with_history(db: tuple[str, Any, list[str]], tmp_path: Path) -> None:
    _url, _engine, ids = db
    out = tmp_path / "runs.json"
    with RunStore.open(_url) as store:
        written = export_runs(store, ids, str(out), "json", history=True)
    assert written == [str(out)]
    data = json.loads(out.read_text())["runs"]
    assert [r["id"] for r in data] == ids
    assert data[0]["params"] == {"optimizer": "sgd", "lr": 0.1, "shuffle": True}
    assert data[1]["summaries"]["test_accuracy"]["last"] == pytest.approx(0.6)
    assert data[2]["history"]["loss"] == {"steps": [0, 1, 2], "values": [1.0, 0.5, None]}
    assert data[2]["summaries"]["loss"]["nan_count"] == 1 and data[2]["status"] == "diverged"


def test_export_csv_with_history_file(db: tuple[str, Any, list[str]], tmp_path: Path) -> None:
    url, _engine, ids = db
    out = tmp_path / "runs.csv"
    with RunStore.open(url) as store:
        written = export_runs(store, ids, str(out), "csv", history=True)
    assert written == [str(out), str(tmp_path / "runs.history.csv")]
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4
    assert rows[0]["params.lr"] == "0.1" and rows[0]["metrics.test_accuracy"] == "0.5"
    assert rows[0]["metrics.loss.last"] == "0.25" and rows[2]["metrics.loss.last"] == ""
    hist = list(csv.DictReader((tmp_path / "runs.history.csv").open()))
    assert len(hist) == 12 and hist[0] == {"run_id": ids[0], "key": "loss", "step": "0", "value": "1.0"}


def test_export_errors(db: tuple[str, Any, list[str]], tmp_path: Path) -> None:
    with RunStore.open(db[0]) as s:
        with pytest.raises(ExportError, match="--format"):
            export_runs(s, db[2], str(tmp_path / "x"), "xml")
        with pytest.raises(ExportError, match="second file"):
            export_runs(s, db[2], "-", "csv", history=True)
        with pytest.raises(OutputError, match="folder that does not exist"):
            export_runs(s, db[2], str(tmp_path / "missing" / "x.csv"), "csv")
        assert export_data(s, []) == []


def test_cli_export(db: tuple[str, Any, list[str]], tmp_path: Path) -> None:
    url, _, ids = db
    res = invoke("export", "--db", url, "--format", "json", "--where", "params.lr > 0.15", "--experiment", "a")
    assert res.exit_code == 0, res.output
    assert [r["id"] for r in json.loads(res.stdout)["runs"]] == ids[1:3]
    out = tmp_path / "all.csv"
    res = invoke("export", "--db", url, "--out", str(out))
    assert res.exit_code == 0 and len(out.read_text().splitlines()) == 5
    assert invoke("export", "--db", url, "--format", "yaml").exit_code == 2
    bad = invoke("export", "--db", url, "--where", "lr > 1")
    assert bad.exit_code == 2 and "unknown field 'lr'" in bad.output


def test_rm_by_id_where_and_experiment(db: tuple[str, Any, list[str]]) -> None:
    url, _engine, ids = db
    with RunStore.open(url) as store:
        before = read.row_counts(store)
    res = invoke("rm", ids[0][:8], "--db", url, "--yes")
    assert res.exit_code == 0 and "deleted 1 run" in res.output
    with RunStore.open(url) as store:
        after = read.row_counts(store)
    assert after["runs"] == before["runs"] - 1
    assert after["metric_chunks"] == before["metric_chunks"] - 1  # everything that belonged to it
    assert after["run_params"] == before["run_params"] - 3
    assert after["run_components"] == before["run_components"] - 3
    res = invoke("rm", "--where", "status = 'diverged'", "--db", url, "--yes")
    assert res.exit_code == 0 and "deleted 1 run" in res.output
    res = invoke("rm", "--where", "status = 'queued'", "--db", url, "--yes")
    assert res.exit_code == 0 and "nothing deleted" in res.output
    res = invoke("rm", "--experiment", "b", "--db", url, "--yes")
    assert res.exit_code == 0 and "deleted 1 run" in res.output
    with RunStore.open(url) as store:
        assert read.row_counts(store)["runs"] == 1


def test_rm_needs_confirmation(db: tuple[str, Any, list[str]]) -> None:
    url, _engine, ids = db
    res = invoke("rm", ids[1], "--db", url)  # CliRunner's stdin is not a terminal
    assert res.exit_code == 2 and "--yes" in res.output and "refusing" in res.output
    for args, needle in (([], "exactly one"), ([ids[1], "--where", "seed = 1"], "exactly one"),
                         (["zzz"], "not a run id"), (["--where", "seed ="], "expected a value"),
                         (["--experiment", "nope"], "nope")):
        res = invoke("rm", *args, "--db", url, "--yes")
        assert res.exit_code == 2 and needle in res.output, res.output
    with RunStore.open(url) as store:
        assert read.row_counts(store)["runs"] == 4


def test_rm_interactive_prompt(db: tuple[str, Any, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    from expsvc.cli import analysis

    url, _engine, ids = db
    monkeypatch.setattr(analysis, "_interactive", lambda: True)
    res = invoke("rm", ids[1], "--db", url, input="n\n")
    assert res.exit_code == 1 and "nothing deleted" in res.output
    res = invoke("rm", ids[1], "--db", url, input="y\n")
    assert res.exit_code == 0 and "deleted 1 run" in res.output
