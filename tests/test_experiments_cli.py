"""Issue 15, finding 12: ``--version``, defaults in help, ``components NAME``, ``expsvc experiments`` with tags
usable in ``--where``, and the experiment description shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from expsvc.cli import app
from tests.conftest import run_cli


def test_version() -> None:
    from expsvc import __version__

    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"expsvc {__version__}"


def _commands(group: typer.Typer) -> list[list[str]]:
    """Every command path of the CLI (``[]`` is the root), from the app's own definition."""
    import typer.main

    from expsvc.cli import _register_builtin_commands

    if not any(c.name == "run" for c in app.registered_commands):
        _register_builtin_commands()
    root = typer.main.get_command(group)
    paths: list[list[str]] = [[]]

    def walk(cmd: object, path: list[str]) -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            paths.append([*path, name])
            walk(sub, [*path, name])

    walk(root, [])
    return paths


@pytest.mark.parametrize("path", _commands(app), ids=lambda p: " ".join(p) or "expsvc")
def test_help_has_readable_metavars(path: list[str]) -> None:
    """No help shows typer's ``<list[str]>`` (every command, generated from the app itself)."""
    res = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    assert "<list[" not in res.output and "default: {" not in res.output, res.output


def test_run_help_shows_the_real_defaults() -> None:
    from expsvc.runner.spec import DEFAULTS

    out = " ".join(run_cli("run", "--help", env={"COLUMNS": "200"}).stdout.split())
    assert "(default: mini_bgd, adamw)" in out
    assert f"(default: '{DEFAULTS['model']}')" in out
    assert f"(default: {DEFAULTS['dataset']};" in out
    assert "the data is the same for every seed unless --data-seed" in out


def test_components_show_defaults_and_one_component() -> None:
    listing = run_cli("components", "dataset", env={"COLUMNS": "200"})
    assert listing.returncode == 0 and "seed=0, n_train=200, n_test=100, noise=0.1" in listing.stdout
    one = run_cli("components", "moons", env={"COLUMNS": "100"})
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith("moons (dataset)") and "noise=0.1" in one.stdout and "half circles" in one.stdout
    assert "circles (dataset)" not in one.stdout  # one component, not the list
    assert max(len(line) for line in one.stdout.splitlines()) <= 100
    bad = run_cli("components", "moon")
    assert bad.returncode == 2 and "did you mean 'moons'" in bad.stderr and "Traceback" not in bad.stderr


# ------------------------------------------------------------------------------------ experiments
def make_store(folder: Path) -> str:
    """Experiments 'study' (described in its TOML file: 2 optimizers x 2 seeds) and 'other' (1 run)."""
    db = f"sqlite:///{folder / 'runs.db'}"
    spec = folder / "study.toml"
    spec.write_text('name = "study"\ndescription = "AdamW vs Mini-BGD, two seeds"\noptimizer = ["mini_bgd", '
                    '"adamw"]\nseeds = 2\nepochs = 20\n')
    assert run_cli("run", str(spec), "--db", db, "-q").returncode == 0
    assert run_cli("run", "--name", "other", "--opt", "sgd", "--seeds", "1", "--epochs", "5", "--db", db,
                   "-q").returncode == 0
    return db


@pytest.fixture
def url(tmp_path: Path) -> str:
    return make_store(tmp_path)


@pytest.fixture(scope="module")
def tagged(tmp_path_factory: pytest.TempPathFactory) -> str:
    """:func:`make_store` with 'study' renamed 'seed-study' and tagged 'baseline'."""
    db = make_store(tmp_path_factory.mktemp("tagged"))
    assert run_cli("experiments", "rename", "study", "seed-study", "--db", db).returncode == 0
    assert run_cli("experiments", "tag", "seed-study", "baseline", "--db", db).returncode == 0
    return db


def test_experiments_list_describe_rename_tag_note(url: str) -> None:
    listing = run_cli("experiments", "--db", url, env={"COLUMNS": "80"})
    assert listing.returncode == 0, listing.stderr
    assert "study" in listing.stdout and "AdamW vs Mini-BGD" in listing.stdout  # the stored description, shown
    assert max(len(line) for line in listing.stdout.splitlines()) <= 80
    assert run_cli("experiments", "tag", "study", "baseline", "paper:fig2", "--db", url).returncode == 0
    assert run_cli("experiments", "note", "study", "lr 1e-3 is too small for mini_bgd", "--db", url).returncode == 0
    assert run_cli("experiments", "rename", "study", "seed-study", "--db", url).returncode == 0
    desc = run_cli("experiments", "describe", "seed-study", "--db", url)
    assert desc.returncode == 0, desc.stderr
    for needle in ("description: AdamW vs Mini-BGD", "tags: baseline, paper:fig2", "runs: 4 (4 finished)",
                   "lr 1e-3 is too small for mini_bgd"):
        assert needle in desc.stdout
    data = json.loads(run_cli("experiments", "--json", "--tag", "baseline", "--db", url).stdout)
    assert [e["name"] for e in data] == ["seed-study"] and data[0]["tags"] == ["baseline", "paper:fig2"]
    assert run_cli("experiments", "describe", "seed-study", "--clear", "--db", url).returncode == 0
    assert json.loads(run_cli("experiments", "describe", "seed-study", "--json", "--db", url).stdout)[
        "description"] is None
    assert run_cli("experiments", "tag", "seed-study", "paper:fig2", "--remove", "--db", url).returncode == 0
    # bad input: one line, exit 2, nothing written
    for args, needle in ((["rename", "seed-study", "other"], "exists already"),
                         (["rename", "seed-stud", "x"], "did you mean 'seed-study'"),
                         (["tag", "seed-study", "two words"], "is not allowed"),
                         (["tag", "seed-study", "nope", "--remove"], "has no tag 'nope'"),
                         (["note", "seed-study", "  "], "must not be empty")):
        res = run_cli("experiments", *args, "--db", url)
        assert res.returncode == 2 and needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    final = json.loads(run_cli("experiments", "--json", "--db", url).stdout)
    assert [(e["name"], e["tags"]) for e in final] == [("seed-study", ["baseline"]), ("other", [])]


@pytest.mark.parametrize(("where", "expected"), [
    ("tag = 'baseline'", {"seed-study"}),
    ("tag != 'baseline'", {"other"}),
    ("tag in ('x', 'baseline')", {"seed-study"}),
    ("tag not in ('baseline')", {"other"}),
    ("tag like 'base%'", {"seed-study"}),
    ("tag not like 'base%'", {"other"}),
    ("not tag = 'baseline' and params.optimizer = 'sgd'", {"other"}),
])
def test_tags_in_where(tagged: str, where: str, expected: set[str]) -> None:
    res = run_cli("runs", "--where", where, "--json", "--db", tagged)
    assert res.returncode == 0, res.stderr
    assert {r["experiment"] for r in json.loads(res.stdout)} == expected


def test_tag_conditions_match_the_reference_evaluator() -> None:
    """The SQL compiler and ``evaluate`` agree on the set semantics of ``tag``."""
    from expsvc.analysis.grammar import evaluate, parse

    run = {"tags": ["baseline", "paper:fig2"]}
    assert evaluate(parse("tag = 'baseline'"), run) and not evaluate(parse("tag != 'baseline'"), run)
    assert evaluate(parse("tag like 'paper:%'"), run) and not evaluate(parse("tag not in ('paper:fig2')"), run)
    assert evaluate(parse("tag != 'x'"), {"tags": []}) and not evaluate(parse("tag = 'x'"), {})
