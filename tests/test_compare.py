"""``compare``: grouping, baselines, diverged/failed counts, n = 1 / n = 0 groups, JSON = table, and the
query CLI (``runs``, ``show``, ``compare``) end to end on a synthetic store."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from expsvc.analysis import compare as cmp
from expsvc.analysis import render
from expsvc.analysis.compare import CompareError, find_baseline, group_runs, parse_metric
from expsvc.cli.analysis import register
from expsvc.store import RunStore, read
from tests import store_fixtures as fixtures

LOSS = {"mini_bgd": [0.40, 0.42, 0.38, 0.41, 0.39], "adamw": [0.37, 0.40, 0.35, 0.38, 0.36]}


def _app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)
    register(app)
    return app


def invoke(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(_app(), list(args), input=input)


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, Any]:
    """Experiment 'opt': mini_bgd (5 finished), adamw (5 finished), sgd (1 finished, 1 diverged, 1 failed),
    adam (2 queued); experiment 'other': 2 runs."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    engine = fixtures.create_db(url)
    with Session(engine) as s:
        exp = fixtures.add_experiment(s, "opt")
        t = 0

        def add(opt: str, seed: int, status: str = "finished", loss: float | None = None, acc: float = 0.9,
                **kw: Any) -> str:
            nonlocal t
            t += 1
            params = {"optimizer": opt, "lr": 0.01, "batch_size": 32, "dataset": "points"}
            hist = None
            kw.setdefault("updates", 100 + seed)
            if loss is not None:
                hist = {"loss": [1.0, 0.6, loss] if status != "diverged" else [1.0, 5.0, math.nan]}
            return fixtures.add_run(s, exp, seed=seed, status=status, params=params, history=hist,
                                    summaries={"test_accuracy": acc, "train_loss": loss}
                                    if status == "finished" else {},
                                    created_at=fixtures.T0 + timedelta(seconds=t), **kw)

        for opt in ("mini_bgd", "adamw"):
            for seed, v in enumerate(LOSS[opt]):
                add(opt, seed, loss=v, acc=0.8 + 0.01 * seed + (0.05 if opt == "adamw" else 0), components=True)
        add("sgd", 0, loss=0.5)
        add("sgd", 1, "diverged", loss=1.0, error="loss became non-finite (nan) at step 2")
        add("sgd", 2, "failed", error="stale: worker vanished")
        add("adam", 0, "queued", updates=None)
        add("adam", 1, "queued", updates=None)
        other = fixtures.add_experiment(s, "other", fixtures.T0 - timedelta(days=1))
        fixtures.add_run(s, other, seed=0, params={"optimizer": "sgd", "lr": 0.1}, history={"loss": [1, 0.5]})
        fixtures.add_run(s, other, seed=1, params={"optimizer": "sgd", "lr": 0.1}, history={"loss": [1, 0.4]})
        s.commit()
    return url, engine


def _groups(engine: Any, by: list[str] | None = None) -> list[cmp.Group]:
    with RunStore.open(str(engine.url)) as store:
        return group_runs(read.records(store, experiment_ids=[1]), by)


def test_groups_are_labelled_by_what_varies(store: tuple[str, Any]) -> None:
    groups = _groups(store[1])
    assert [g.label for g in groups] == ["optimizer=mini_bgd", "optimizer=adamw", "optimizer=sgd",
                                         "optimizer=adam"]
    assert [g.short for g in groups] == ["mini_bgd", "adamw", "sgd", "adam"]
    by = _groups(store[1], ["optimizer", "lr"])
    assert by[0].label == "optimizer=mini_bgd, lr=0.01"
    with pytest.raises(CompareError, match="did you mean 'optimizer'"):
        _groups(store[1], ["optimiser"])


def test_baseline_matching(store: tuple[str, Any]) -> None:
    groups = _groups(store[1])
    assert find_baseline(groups, None) == 0
    assert find_baseline(groups, "adamw") == 1
    assert find_baseline(groups, "optimizer=sgd") == 2
    with pytest.raises(CompareError, match="matches no group"):
        find_baseline(groups, "rmsprop")


def test_compare_counts_statuses_and_handles_small_groups(store: tuple[str, Any]) -> None:
    result = cmp.compare_groups(_groups(store[1]), cmp.DEFAULT_METRICS, experiment="opt")
    base, adamw, sgd, adam = result.groups
    assert (base.n_completed, base.n_expected) == (5, 5)
    assert (sgd.n_completed, sgd.n_diverged, sgd.n_failed, sgd.n_expected) == (1, 1, 1, 3)
    assert (adam.n_completed, adam.n_unfinished) == (0, 2)
    final = "final loss"
    assert base.summaries[final].mean == pytest.approx(sum(LOSS["mini_bgd"]) / 5)
    c = adamw.comparisons[final]
    assert c is not None and c.method == "paired" and c.n == 5 and c.wins == 5
    assert adamw.sentences[final].startswith("adamw reached a lower final loss than mini_bgd in 5 of 5 seeds, by ")
    assert "(95 % CI, paired by seed), p" in adamw.sentences[final]
    # n = 1: its value, no interval
    assert sgd.summaries[final].n == 1 and sgd.summaries[final].mean == 0.5
    assert "no interval is possible" in sgd.sentences[final]
    # n = 0: nothing but the counts
    assert adam.summaries[final].n == 0 and "no completed runs" in adam.sentences[final]
    assert adamw.sentences["test accuracy"].startswith("adamw reached a higher test accuracy")
    assert adamw.sentences["updates to converge"].startswith("adamw and mini_bgd had the same mean")


def test_json_carries_the_numbers_of_the_table(store: tuple[str, Any]) -> None:
    result = cmp.compare_groups(_groups(store[1]), cmp.DEFAULT_METRICS, experiment="opt")
    data = json.loads(render.compare_json(result))
    rows = render.compare_rows(result)
    for m in data["metrics"]:
        for g, row in zip(data["groups"], rows[m["label"]], strict=True):
            s = g["metrics"][m["label"]]
            assert row[0] == g["name"] and row[1] == str(s["n"])
            if s["n"] >= 2:
                assert row[2] == f"{render.fmt(s['mean'])} ± {render.fmt(s['ci'])}"
                assert row[3] == render.fmt(s["std"])
                assert row[5].startswith(render.fmt(s["iqm"]))
            assert row[4] == render.fmt(s["median"]) and row[6] == render.fmt(s["min"])
            c = s["vs_baseline"]
            if c and c["method"] != "none":
                assert row[8].startswith(f"{render.fmt(c['diff'])} ± {render.fmt(c['ci'])}")
    # JSON numbers equal the objects' numbers exactly
    assert data["groups"][1]["metrics"]["final loss"]["mean"] == result.groups[1].summaries["final loss"].mean
    # CSV too
    lines = list(csv.DictReader(io.StringIO(render.compare_csv(result))))
    first = next(r for r in lines if r["group"] == "optimizer=adamw" and r["metric"] == "final loss")
    assert float(first["mean"]) == result.groups[1].summaries["final loss"].mean


def test_metric_specs() -> None:
    assert parse_metric("accuracy").field.key == "test_accuracy"
    assert not parse_metric("accuracy").lower_is_better
    assert parse_metric("min(loss)").label == "min loss"
    assert parse_metric("final_loss").label == "final loss"
    assert parse_metric("updates").lower_is_better
    assert not parse_metric("custom:higher").lower_is_better
    for bad in ("status", "params.lr", "x:sideways", "min(loss"):
        with pytest.raises(CompareError):
            parse_metric(bad)


# ----------------------------------------------------------------------------------------------- CLI
def test_cli_compare_table_markdown_json_csv(store: tuple[str, Any], tmp_path: Path) -> None:
    url = store[0]
    res = invoke("compare", "--db", url, "--experiment", "opt")
    assert res.exit_code == 0, res.output
    assert "adamw reached a lower final loss than mini_bgd in 5 of 5 seeds" in res.output
    assert "Method" in res.output and "seed 20240601" in res.output
    md = invoke("compare", "--db", url, "-e", "opt", "--format", "markdown", "--baseline", "adamw")
    assert md.exit_code == 0 and "| group | n |" in md.output and "mini_bgd reached a higher final loss" in md.output
    js = invoke("compare", "--db", url, "-e", "opt", "--format", "json", "--metric", "min(loss)", "-m", "accuracy")
    data = json.loads(js.stdout)
    assert [m["label"] for m in data["metrics"]] == ["min loss", "test accuracy"]
    cs = invoke("compare", "--db", url, "-e", "opt", "--format", "csv", "--by", "optimizer")
    assert cs.exit_code == 0 and cs.output.startswith("experiment,group,baseline")
    png = tmp_path / "curves.png"
    pl = invoke("compare", "--db", url, "-e", "opt", "--plot", str(png))
    assert pl.exit_code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("args", "needle"), [
    (["--format", "xml"], "--format 'xml'"),
    (["--baseline", "rmsprop"], "matches no group"),
    (["--metric", "tset_accuracy"], "did you mean 'test_accuracy'"),
    (["--by", "optimiser"], "did you mean 'optimizer'"),
    (["--by", ","], "--by"),
    (["--experiment", "nope"], "nope"),
])
def test_cli_compare_errors_are_one_line(store: tuple[str, Any], args: list[str], needle: str) -> None:
    res = invoke("compare", "--db", store[0], *args)
    assert res.exit_code == 2
    assert needle in res.output and "Traceback" not in res.output
    assert res.output.startswith("error: ")


def test_cli_runs_listing(store: tuple[str, Any]) -> None:
    url = store[0]
    res = invoke("runs", "--db", url)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split()[:4] == ["id", "experiment", "optimizer", "lr"]
    assert "failed (stale)" in res.output
    js = json.loads(invoke("runs", "--db", url, "--json", "--experiment", "opt").stdout)
    assert len(js) == 15 and js[0]["params"]["optimizer"] == "adam"  # newest first
    srt = json.loads(invoke("runs", "--db", url, "--json", "--sort", "-metrics.test_accuracy", "--limit", "3").stdout)
    every = invoke("runs", "--db", url, "--json", "--experiment", "opt", "-n", "9" * 30)  # beyond SQL's 64 bits
    assert every.exit_code == 0 and len(json.loads(every.stdout)) == 15
    assert [r["test_accuracy"] for r in srt] == sorted([r["test_accuracy"] for r in srt], reverse=True)
    flt = json.loads(invoke("runs", "--db", url, "--json", "--where", "params.optimizer = 'sgd' and seed = 1").stdout)
    assert {r["experiment"] for r in flt} == {"opt", "other"}
    st = json.loads(invoke("runs", "--db", url, "--json", "--status", "stale").stdout)
    assert len(st) == 1 and st[0]["status"] == "failed (stale)"
    cs = invoke("runs", "--db", url, "--csv", "--status", "diverged")
    assert cs.exit_code == 0 and len(cs.output.strip().splitlines()) == 2
    bad = invoke("runs", "--db", url, "--where", "seed = ")
    assert bad.exit_code == 2 and "expected a value" in bad.output
    for args, needle in ((["--status", "finnished"], "did you mean 'finished'"), (["--sort", "bogus"], "--sort"),
                         (["--limit", "0"], "--limit"), (["--json", "--csv"], "exclude")):
        res = invoke("runs", "--db", url, *args)
        assert res.exit_code == 2 and needle in res.output, res.output


def test_cli_show(store: tuple[str, Any]) -> None:
    url = store[0]
    rid = json.loads(invoke("runs", "--db", url, "--json", "--where", "params.optimizer = 'adamw' and seed = 0"
                            ).stdout)[0]["id"]
    res = invoke("show", rid[:6], "--db", url)
    assert res.exit_code == 0, res.output
    assert "finished" in res.output and "expsvc.builtins" in res.output and "test_accuracy" in res.output
    assert any(ch in res.output for ch in render.BLOCKS)
    js = json.loads(invoke("show", rid, "--db", url, "--json").stdout)
    assert js["id"] == rid and js["components"][0]["plugin"] == "expsvc.builtins"
    missing = invoke("show", "ffffffff", "--db", url)
    assert missing.exit_code == 2 and "no run" in missing.output


def test_sparkline() -> None:
    assert render.sparkline([3, 2, 1, 0]) == "█▆▃▁"
    assert render.sparkline([1, math.nan, 0]) == "█×▁"
    assert len(render.sparkline(list(range(1000)), width=40)) == 40
    assert render.sparkline([]) == ""


def test_summaries_do_not_depend_on_the_order_of_the_runs() -> None:
    """The IQM's bootstrap resamples by position: values must enter in seed order, whatever the query order."""
    from expsvc.analysis import compare as cmp

    records = [cmp.RunRecord(id=f"{i:032x}", experiment_id=1, experiment="x", seed=s, status="finished",
                             group_key="g", summaries={"train_loss": {"last": v}})
               for i, (s, v) in enumerate([(0, 0.61), (1, 0.47), (2, 0.54), (3, 0.55), (4, 0.59)])]
    metric = [cmp.parse_metric("final_loss")]
    forward = cmp.compare_groups(cmp.group_runs(records), metric, 0).to_dict()
    backward = cmp.compare_groups(cmp.group_runs(records[::-1]), metric, 0).to_dict()
    assert forward["groups"][0]["metrics"]["final loss"]["iqm_low"] is not None
    assert forward == backward
