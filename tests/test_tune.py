"""``expsvc tune`` (issue 11, "done when" 3 and 5): a study tunes on validation data, confirms on fresh seeds,
stores itself as one unit, and refuses bad input in one line.  Small problems: a few epochs of the seed net."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from expsvc.cli import build_app
from expsvc.runner import study as studies
from expsvc.store import RunStore, read
from expsvc.store.read import RunRecord
from expsvc.store.studies import get_study, list_studies

SMALL = ["--epochs", "15", "--batch-size", "40", "--tune-seeds", "2", "--seeds", "3"]


def tune(*args: str) -> Any:
    res = CliRunner().invoke(build_app(), ["tune", *args])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res


def _stored(url: str, name: str) -> Any:
    store = RunStore.open(url, create=False)
    try:
        return get_study(store, name)
    finally:
        store.close()


def _records(url: str, experiment: str) -> list[RunRecord]:
    store = RunStore.open(url, create=False)
    try:
        return read.records(store, experiment_ids=[store.resolve_experiment(experiment).id])
    finally:
        store.close()


# ------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any]:
    """One small study, run once: mini_bgd and adamw over a 3-point lr grid."""
    url = f"sqlite:///{tmp_path_factory.mktemp('tune') / 't.db'}"
    folder = Path(url.removeprefix("sqlite:///")).parent
    res = tune("--opt", "mini_bgd", "--opt", "adamw", "--lr", "logspace(0.01, 1, 3)", *SMALL, "--name", "s",
               "--db", url, "--wide", "--plot", str(folder / "sensitivity.png"))
    assert res.exit_code == 0, res.output
    return url, res


def test_the_sensitivity_table_the_choices_and_the_comparison_print(study: tuple[str, Any]) -> None:
    _, res = study
    out = res.stdout
    assert "learning-rate sensitivity on validation data (2 tuning seeds)" in out
    assert "min(val_loss) mean ± 95 % CI" in out
    assert out.count("* chosen") == 2
    assert "selection rule: per optimizer, the grid point with the lowest mean over 2 tuning seed(s)" in out
    assert "chosen: mini_bgd: lr=" in out and "chosen: adamw: lr=" in out
    assert "answer: confirmation runs (seeds 2..4) on test data" in out
    assert "test loss" in out and "Δ vs baseline" in out
    png = Path(study[0].removeprefix("sqlite:///")).parent / "sensitivity.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "(2 lines, 6 points)" in res.stderr


def test_confirmation_seeds_are_fresh_and_the_study_is_stored_as_one_unit(study: tuple[str, Any]) -> None:
    url, _ = study
    record = _stored(url, "s")
    assert record.status == "done"
    assert (record.tuning_experiment, record.confirmation_experiment) == ("s-tuning", "s-confirmation")
    assert record.rule is not None and "validation data only" in record.rule
    assert record.selection is not None
    choices = record.selection["choices"]
    assert set(choices) == {"mini_bgd", "adamw"}
    tuning = _records(url, "s-tuning")
    confirmation = _records(url, "s-confirmation")
    assert {r.seed for r in tuning} == {0, 1} and len(tuning) == 2 * 3 * 2
    assert {r.seed for r in confirmation} == {2, 3, 4} and len(confirmation) == 2 * 3
    # each confirmation run is its optimizer's chosen configuration, evaluated on test
    chosen = {c["config"]["optimizer"]: c["config"]["lr"] for c in choices.values()}
    assert {(r.config["optimizer"], r.config["lr"]) for r in confirmation} == set(chosen.items())
    assert all("test_loss" in r.summaries for r in confirmation)
    assert [s.name for s in list_studies(RunStore.open(url, create=False))] == ["s"]


def test_compare_plot_and_export_accept_the_study(study: tuple[str, Any], tmp_path: Path) -> None:
    url, _ = study
    res = CliRunner().invoke(build_app(), ["compare", "--study", "s", "--db", url, "--format", "json"])
    assert res.exit_code == 0, res.output
    assert '"s-confirmation"' in res.stdout
    res = CliRunner().invoke(build_app(), ["export", "--study", "s", "--db", url, "--out", str(tmp_path / "e.csv")])
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "e.csv").read_text().splitlines()) == 1 + 12 + 6  # tuning and confirmation runs
    res = CliRunner().invoke(build_app(), ["plot", "--study", "s", "--db", url, "--out", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_the_report_of_a_study_marks_each_chosen_value(study: tuple[str, Any], tmp_path: Path) -> None:
    """``report --study``: the confirmation's answer (test data), the tuning's sensitivity on the selection
    metric with each optimizer's chosen lr marked, the rule; the UI lists the study and serves the same page."""
    import json
    import re

    from expsvc.analysis.compare import parse_metric
    from expsvc.report import server

    url, _ = study
    out = tmp_path / "s.html"
    res = CliRunner().invoke(build_app(), ["report", "--study", "s", "--db", url, "--out", str(out)])
    assert res.exit_code == 0, res.output
    page = out.read_text()
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr]
    record = _stored(url, "s")
    assert data["experiment"] == "s-confirmation" and data["study"]["rule"] == record.rule
    view = data["sensitivity"]["views"][0]
    assert data["sensitivity"]["metric"] == parse_metric("min(val_loss)").label and view["param"] == "lr"
    chosen = {o["optimizer"]: o["chosen"] for o in view["optimizers"]}
    assert chosen == {c["optimizer"]: c["settings"]["lr"] for c in record.selection["choices"].values()}
    assert all(o["n"] == [2, 2, 2] for o in view["optimizers"])  # the tuning runs: 2 seeds per grid value
    refused = CliRunner().invoke(build_app(), ["report", "--study", "s", "-e", "x", "--db", url, "--out",
                                               str(tmp_path / "no.html")])
    assert refused.exit_code == 2 and not (tmp_path / "no.html").exists()
    store = server.open_read_only(url)
    try:
        listing = server.list_page(store)
        assert 'id="studies"' in listing and "/experiment?study=s" in listing
        served = server.report_page(store, {"study": ["s"]}, 5)
        assert json.loads(re.search(r'id="report-data">(.*?)</script>', served, re.S).group(1))[  # type: ignore[union-attr]
            "study"]["choices"] == data["study"]["choices"]
    finally:
        store.close()


def _labelled(path: Path, flip_test: bool) -> str:
    """An NPZ two-blob problem; with ``flip_test`` every test-set label (found by the dataset's own split) is
    flipped, training and validation rows untouched."""
    from expsvc.builtins.datasets import FileDataset

    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(-1, 0.7, (60, 2)), rng.normal(1, 0.7, (60, 2))])
    y = np.concatenate([np.zeros(60), np.ones(60)])
    np.savez(path, x=x, y=y)
    if flip_test:
        split = FileDataset(str(path)).load()
        test_rows = [int(np.flatnonzero((x == row).all(axis=1))[0]) for row in split.x_test]
        y = y.copy()
        y[test_rows] = 1 - y[test_rows]
        np.savez(path, x=x, y=y)
    return f"file({str(path)!r})"


def test_selection_reads_only_validation_data(tmp_path: Path) -> None:
    """Every test-set label changed: the selection (and the sensitivity table) do not move; the test answer does."""
    outs = {}
    for flip in (False, True):
        url = f"sqlite:///{tmp_path / f'{flip}.db'}"
        res = tune("--opt", "mini_bgd", "--opt", "adamw", "--lr", "logspace(0.01, 1, 3)", *SMALL, "--name", "v",
                   "--dataset", _labelled(tmp_path / "data.npz", flip), "--db", url, "--wide")
        assert res.exit_code == 0, res.output
        record = _stored(url, "v")
        accuracy = [r.summaries["test_accuracy"]["last"] for r in _records(url, "v-confirmation")]
        outs[flip] = (record.selection, res.stdout.split("answer:")[0], float(np.mean(accuracy)))
    assert outs[False][0] == outs[True][0]
    assert outs[False][1] == outs[True][1]
    assert outs[False][2] > 0.8 and outs[True][2] < 0.2  # the test labels did change


def test_resume_finishes_an_interrupted_study(tmp_path: Path) -> None:
    """Tuning done, then interrupted before selection: --resume selects once and confirms."""
    from expsvc.runner.plan import execute

    url = f"sqlite:///{tmp_path / 'r.db'}"
    spec = studies.from_values({"optimizer": ["adamw"], "lr": "logspace(0.01, 0.1, 2)", "epochs": 5, "tune_seeds": 2,
                                "seeds": 2, "name": "r"})
    plan = studies.start(spec, db=url)  # validated, the study recorded; then "interrupted" before any link
    assert plan is not None
    execute(plan)
    assert _stored(url, "r").selection is None
    res = tune("--resume", "r", "--db", url)
    assert res.exit_code == 0, res.output
    record = _stored(url, "r")
    assert record.status == "done" and set(record.selection["choices"]) == {"adamw"}
    assert {r.seed for r in _records(url, "r-confirmation")} == {2, 3}
    assert len(_records(url, "r-tuning")) == 4  # nothing re-run
    again = tune("--resume", "r", "--db", url)
    assert again.exit_code == 0 and len(_records(url, "r-confirmation")) == 2


def test_a_study_from_python(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    spec = studies.from_values({"optimizer": ["mini_bgd", "adamw"], "lr": [0.03, 0.3], "epochs": 5,
                                "tune_seeds": 2, "seeds": 3, "name": "p"})
    selection, result = studies.run(spec, db=url)
    assert {c.optimizer for c in selection.choices} == {"mini_bgd", "adamw"}
    assert [g.seeds for g in result.groups] == [[2, 3, 4], [2, 3, 4]] and result.experiments == ["p-confirmation"]
    assert _stored(url, "p").status == "done"


# --------------------------------------------------------------------------------------------- selection
def _rec(optimizer: str, lr: float, seed: int, value: float | None, status: str = "finished") -> RunRecord:
    config = {"dataset": "points", "model": "linear(1)", "loss": "bce_with_logits", "optimizer": optimizer,
              "lr": lr, "epochs": 5, "batch_size": 50, "schedule": "constant", "tol": 1e-5, "shuffle": False,
              "dtype": "float64", "val_split": 0.2, "eval_every": 1, "seed": seed}
    summaries = {} if value is None else {"val_loss": {"min": value, "last": value}}
    return RunRecord(id=f"{optimizer}{lr}{seed}", experiment_id=1, experiment="x-tuning", seed=seed, status=status,
                     group_key="g", config=config, summaries=summaries)


def _spec(lrs: list[float], optimizers: tuple[str, ...] = ("adamw",)) -> studies.StudySpec:
    return studies.from_values({"optimizer": list(optimizers), "lr": lrs, "tune_seeds": 3, "model": "linear(1)",
                                "epochs": 5, "name": "x"})


def _select(values: dict[float, list[float | None]], statuses: dict[float, str] | None = None) -> studies.Selection:
    lrs = list(values)
    records = [_rec("adamw", lr, seed, v, (statuses or {}).get(lr, "finished"))
               for lr, vs in values.items() for seed, v in enumerate(vs)]
    return studies.select(_spec(lrs), records)


@pytest.mark.parametrize(("best", "edge"), [(0.001, "smallest"), (0.1, "largest")])
def test_the_edge_of_grid_warning_fires_at_either_end(best: float, edge: str) -> None:
    values = {lr: [0.5, 0.52, 0.51] for lr in (0.001, 0.01, 0.1)}
    values[best] = [0.1, 0.11, 0.12]
    sel = _select(values)
    assert sel.choices[0].settings == {"lr": best}
    assert any(f"lr={best:g} is the {edge} value of its grid" in w for w in sel.warnings), sel.warnings
    inner = _select({0.001: [0.5, 0.5, 0.5], 0.01: [0.1, 0.11, 0.12], 0.1: [0.5, 0.52, 0.51]})
    assert not any("value of its grid" in w for w in inner.warnings)


def test_diverged_points_lose_ties_go_to_the_smaller_lr_and_close_calls_are_flagged() -> None:
    sel = _select({0.001: [0.3, 0.3, 0.3], 0.01: [0.3, 0.3, 0.3], 0.1: [0.01, None, 0.01]},
                  statuses={0.1: "diverged"})
    assert sel.choices[0].settings == {"lr": 0.001}  # 0.1 diverged (lost); 0.001 and 0.01 tie -> smaller lr
    assert any("1 of 3 grid points lose" in w and "lr=0.1: 3 diverged" in w for w in sel.warnings), sel.warnings
    assert any("not distinguishable" in w for w in sel.warnings)
    nan = _select({0.001: [0.3, 0.31, 0.29], 0.01: [0.2, None, 0.2]})  # a missing value loses too
    assert nan.choices[0].settings == {"lr": 0.001}
    clear = _select({0.001: [0.9, 0.91, 0.92], 0.01: [0.1, 0.12, 0.11], 0.1: [0.5, 0.55, 0.52]})
    assert not any("not distinguishable" in w for w in clear.warnings)


def test_the_sensitivity_table_says_which_points_lost() -> None:
    from expsvc.analysis import sensitivity

    sel = _select({0.001: [0.3, 0.31, 0.29], 0.01: [0.2, 0.21, 0.19], 0.1: [None, None, None]},
                  statuses={0.1: "diverged"})
    lines = sensitivity.table(sel, "min(val_loss)").splitlines()
    row = {line.split()[1]: line for line in lines[2:]}
    assert "* chosen" in row["0.01"] and "3 diverged" in row["0.1"] and "0/3" in row["0.1"]
    assert "0.3 ± " in row["0.001"] and "3/3" in row["0.001"]


def test_a_test_metric_never_chooses() -> None:
    with pytest.raises(studies.SpecValidationError, match="test data answers, never chooses"):
        studies.select_metric("min(test_loss)")
    assert studies.select_metric("max(val_accuracy)").lower_is_better is False
    assert math.isclose(_select({0.01: [1.0, 2.0, 3.0]}).choices[0].score, 2.0)


# ------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("args", "words"), [
    (["--select", "min(test_loss)"], "test data answers, never chooses"),
    (["--select", "min(loss)"], "not measured on validation data"),
    (["--select", "min(val_nope)"], "do not measure 'val_nope'"),
    (["--lr", "logspace(1, 0, 0)"], "number of points 0"),  # the malformed ranges, as written there
    (["--lr", "logspace(-1, 1, 5)"], "must be positive"),
    (["--lr", "logspace(0.1, 10, 1000000)"], "number of points"),
    (["--seed", "0", "--seed", "5"], "also tuning seed"),
    (["--tune-seeds", "0"], "tune_seeds: 0 is not allowed"),
    (["--val-split", "0"], "a study selects on validation data"),
    (["--dataset", "points", "--opt", "adamw", "--opt", "adamw"], "each optimizer once"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(args: list[str], words: str, tmp_path: Path) -> None:
    db = tmp_path / "bad.db"
    res = tune(*args, "--epochs", "2", "--db", f"sqlite:///{db}")
    assert res.exit_code == 2, res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], res.stderr
    assert not db.exists()


def test_a_study_file_with_an_unknown_key_is_one_line(tmp_path: Path) -> None:
    study = tmp_path / "study.toml"
    study.write_text('optimizer = ["adamw"]\ntune_seed = 2\n')
    res = tune(str(study), "--db", f"sqlite:///{tmp_path / 'u.db'}")
    assert res.exit_code == 2 and "unknown key 'tune_seed' (did you mean 'tune_seeds'?)" in res.stderr
    assert not (tmp_path / "u.db").exists()


def test_a_study_name_is_not_reused(study: tuple[str, Any]) -> None:
    url, _ = study
    path = Path(url.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as conn:
        before = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    res = tune("--opt", "adamw", "--lr", "0.1", "--epochs", "2", "--name", "s", "--db", url)
    assert res.exit_code == 2 and "a study named 's' exists already" in res.stderr
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == before
