"""Output for people: tables fit the terminal, ``runs`` keeps the columns that identify a run.

Real stores written by real ``expsvc run`` subprocesses (the default job and a sweep); every table command is
read at ``COLUMNS=80`` and ``COLUMNS=100`` and no line may be longer.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import click
import pytest
from sqlalchemy.orm import Session

from expsvc.analysis import render
from tests import store_fixtures as fixtures
from tests.conftest import run_cli

SWEEP = ["--opt", "sgd", "--opt", "sgd(momentum=0.9)", "--opt", "adamw", "--lr", "1e-3", "--lr", "1e-2",
         "--lr", "1e-1", "--dataset", "points", "--dataset", "moons", "--seeds", "2", "--epochs", "40"]
"""3 optimizers x 3 learning rates x 2 datasets x 2 seeds (36 runs; the issue's sweep had 9 lrs and 10 seeds)."""
JOBS = {"default": [], "sweep": SWEEP}


def longest(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, dict[int, str]]]:
    """Per job: its store URL and ``expsvc run``'s output at 80 and 100 columns."""
    out: dict[str, tuple[str, dict[int, str]]] = {}
    for name, args in JOBS.items():
        folder = tmp_path_factory.mktemp(name)
        url = f"sqlite:///{folder / 'runs.db'}"
        printed = {}
        for width in (80, 100):
            proc = run_cli("run", *args, "--db", url, "--name", f"{name}-{width}", "-j", "1",
                           env={"COLUMNS": str(width)})
            assert proc.returncode == 0, proc.stderr
            printed[width] = proc.stdout
        out[name] = (url, printed)
    return out


@pytest.mark.parametrize("job", list(JOBS))
@pytest.mark.parametrize("width", [80, 100])
def test_no_line_is_longer_than_the_terminal(stores: dict[str, tuple[str, dict[int, str]]], job: str,
                                             width: int) -> None:
    url, printed = stores[job]
    env = {"COLUMNS": str(width)}
    assert "final loss" in printed[width] and longest(printed[width]) <= width, printed[width]
    exp = f"{job}-{width}"
    ids = [r["id"] for r in json.loads(run_cli("runs", "--db", url, "-e", exp, "--json").stdout)]
    outputs = {
        "runs": run_cli("runs", "--db", url, env=env),
        "runs -e": run_cli("runs", "--db", url, "-e", exp, env=env),
        "compare": run_cli("compare", "--db", url, "-e", exp, env=env),
        "show": run_cli("show", ids[0], "--db", url, env=env),
    }
    for what, proc in outputs.items():
        assert proc.returncode == 0, proc.stderr
        assert longest(proc.stdout) <= width, f"{what}:\n{proc.stdout}"
    # nothing identifying is lost: every run id, every optimizer, the metrics and the sentences are there
    assert all(i[:8] in outputs["runs -e"].stdout for i in ids)
    for opt in ("sgd", "adamw") if job == "sweep" else ("mini_bgd", "adamw"):
        assert opt in outputs["runs -e"].stdout and opt in outputs["compare"].stdout
    if job == "sweep":  # what tells the configurations apart has a column, whatever the width
        head = [w for w in outputs["runs -e"].stdout.split() if w != "experiment"][:5]  # kept if it fits
        assert head[:4] == ["id", "optimizer", "lr", "dataset"] and head[4].startswith("optimizer."), head
    assert "final loss" in outputs["compare"].stdout and "Method:" in outputs["compare"].stdout
    assert "loss " in outputs["show"].stdout and "expsvc.builtins" in outputs["show"].stdout


def test_wide_and_pipes_keep_one_line_per_row(stores: dict[str, tuple[str, dict[int, str]]]) -> None:
    url, _ = stores["sweep"]
    narrow = run_cli("runs", "--db", url, "-e", "sweep-80", env={"COLUMNS": "80"}).stdout
    assert "left out to fit 80 columns" in narrow
    wide = run_cli("runs", "--db", url, "-e", "sweep-80", "--wide", env={"COLUMNS": "80"}).stdout
    piped = run_cli("runs", "--db", url, "-e", "sweep-80").stdout  # not a terminal, no COLUMNS: no limit
    for text in (wide, piped):
        lines = text.splitlines()
        assert lines[0].split()[-2:] == ["started", "(UTC)"] and len(lines) == 2 + 36  # header, rule, a row each
        assert "left out" not in text
    assert longest(wide) > 100


# ------------------------------------------------------------------------------ finding 9: runs columns
def test_runs_keeps_the_columns_that_identify_a_run(tmp_path: Path) -> None:
    """``runs -e lion-try -n 3`` printed three adamw runs without an optimizer column (they all agreed)."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    engine = fixtures.create_db(url)
    with Session(engine) as s:
        exp = fixtures.add_experiment(s, "lion-try")
        t = 0
        for opt in ("lion", "adamw"):
            for lr in (1e-3, 1e-2):
                for seed in range(2):
                    t += 1
                    fixtures.add_run(s, exp, seed=seed, params={"optimizer": opt, "lr": lr, "batch_size": 50},
                                     summaries={"loss": 0.5}, created_at=fixtures.T0 + timedelta(seconds=t))
        s.commit()
    engine.dispose()
    proc = run_cli("runs", "-e", "lion-try", "-n", "3", "--db", url, env={"COLUMNS": "100"})
    assert proc.returncode == 0, proc.stderr
    header, _, *rows = proc.stdout.splitlines()[:5]
    assert header.split()[:4] == ["id", "experiment", "optimizer", "lr"]
    assert all(" adamw " in row for row in rows)
    assert "batch_size" not in header  # the same everywhere: not identifying


# ------------------------------------------------------------------------ finding 11: the run summary
def test_run_summary_keeps_significant_digits(tmp_path: Path) -> None:
    """adam and adamw read ``0.0000 ± 0.0000`` when their losses were 1e-6."""
    assert render.mean_std([2.5e-6, 3.5e-6]) == "3e-06 ± 7.1e-07"
    assert render.mean_std([0.28, 0.29]) == "0.285 ± 0.0071"
    proc = run_cli("run", "--dataset", "linear_1d", "--loss", "mse", "--model", "linear(1)", "--opt", "adam",
                   "--opt", "adamw", "--lr", "0.05", "--epochs", "300", "--tol", "0", "--seeds", "3",
                   "--db", f"sqlite:///{tmp_path / 'runs.db'}", env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    assert "0.0000" not in proc.stdout
    losses = re.findall(r"optimizer=adamw?\s+3 finished\s+(\S+) ± (\S+)", proc.stdout)
    assert len(losses) == 2, proc.stdout
    for mean, std in losses:
        assert float(mean) > 0 and float(std) > 0  # significant digits, never rounded to nothing


def test_fit_table_wraps_then_drops_then_squeezes() -> None:
    header = ("group", "n", "mean", "detail")
    rows = [["optimizer=sgd(momentum=0.9), lr=0.001", "3", "0.25 ± 0.01", "x" * 30]]
    lines, hidden = render.fit_table(header, rows, width=50, drop=("detail",), wrap={"group": None})
    assert hidden == ["detail"] and max(len(click.unstyle(line)) for line in lines) <= 50
    assert "optimizer=sgd(momentum=0.9)," in "\n".join(lines)  # wrapped at spaces, words kept whole
    for width in (12, 25, 60, 200):
        lines, _ = render.fit_table(header, rows, width=width, wrap={"group": None}, squeeze={"group": 4})
        assert max(len(click.unstyle(line)) for line in lines) <= width
    lines, hidden = render.fit_table(header, rows, width=None, drop=("detail",))
    assert hidden == [] and len(lines) == 3
