"""Issue 15, finding 13: the data seed is fixed whatever the run seed (documented); ``--data-seed`` resamples it.

The default keeps today's numbers bit for bit; an integer draws every run's data with it; ``run`` draws each
run's data with the run's own seed, so seed s of ``--data-seed run`` equals seed s with ``--data-seed s``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from expsvc.runner.spec import DEFAULTS, ExperimentSpec, RunConfig, SpecValidationError, dataset_for
from expsvc.specs import parse
from tests.conftest import expand_chunks, run_cli


def histories(path: Path, experiment: str) -> dict[tuple[str, int], np.ndarray]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("""
            SELECT json_extract(r.config, '$.optimizer'), r.seed, h.first_step, h.data FROM metric_chunks h
            JOIN runs r ON r.id = h.run_id JOIN experiments e ON e.id = r.experiment_id
            WHERE e.name = ? AND h.key = 'loss' ORDER BY r.seed, h.first_step""", (experiment,)).fetchall()
    out: dict[tuple[str, int], list[float]] = {}
    for opt, seed, _step, value in expand_chunks(rows):
        out.setdefault((opt, seed), []).append(value)
    return {k: np.array(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data-seed") / "runs.db"
    common = ["--db", f"sqlite:///{path}", "--seeds", "2", "--epochs", "30", "-q"]
    for name, extra in (("default", []), ("zero", ["--data-seed", "0"]), ("one", ["--data-seed", "1"]),
                        ("per-run", ["--data-seed", "run"])):
        proc = run_cli("run", "--name", name, *extra, *common)
        assert proc.returncode == 0, proc.stderr
    return path


def test_default_keeps_the_data_and_the_numbers(store: Path) -> None:
    default, zero = histories(store, "default"), histories(store, "zero")
    assert default.keys() == zero.keys()
    for key in default:  # points' own seed is 0: the same data, bit for bit
        np.testing.assert_array_equal(default[key], zero[key])
    config = RunConfig.from_dict({**{k: v for k, v in DEFAULTS.items() if k in RunConfig.__dataclass_fields__
                                     and not isinstance(v, list)}, "optimizer": "adamw"})
    assert "data_seed" not in config.as_dict()  # the stored config and group key are what they were
    with sqlite3.connect(store) as conn:
        stored = conn.execute("SELECT DISTINCT json_extract(r.config, '$.data_seed') FROM runs r JOIN experiments e "
                              "ON e.id = r.experiment_id WHERE e.name = 'default'").fetchall()
        keys = {name: {k for (k,) in conn.execute(
            "SELECT DISTINCT group_key FROM runs r JOIN experiments e ON e.id = r.experiment_id WHERE e.name = ?",
            (name,))} for name in ("default", "zero")}
    assert stored == [(None,)] and keys["default"] != keys["zero"]  # --data-seed 0 is recorded, default is not


def test_data_seed_resamples_the_data(store: Path) -> None:
    default, one, per_run = histories(store, "default"), histories(store, "one"), histories(store, "per-run")
    for opt in ("mini_bgd", "adamw"):
        assert not np.array_equal(default[(opt, 0)], one[(opt, 0)])  # other data
        np.testing.assert_array_equal(per_run[(opt, 0)], default[(opt, 0)])  # seed 0 draws data seed 0
        np.testing.assert_array_equal(per_run[(opt, 1)], one[(opt, 1)])  # seed 1 draws data seed 1
    with sqlite3.connect(store) as conn:
        specs = conn.execute("""SELECT r.seed, c.spec, json_extract(r.config, '$.data_seed') FROM run_components c
            JOIN runs r ON r.id = c.run_id JOIN experiments e ON e.id = r.experiment_id
            WHERE e.name = 'per-run' AND c.kind = 'dataset' ORDER BY r.seed""").fetchall()
    # the stored spec names every argument (defaults filled in); its seed is the run's
    assert {(seed, parse(spec).name, parse(spec).kwargs["seed"], ds) for seed, spec, ds in specs} == {
        (0, "points", 0, "run"), (1, "points", 1, "run")}
    where = run_cli("runs", "--db", f"sqlite:///{store}", "--where", "params.data_seed = 'run'", "--json")
    assert where.returncode == 0 and where.stdout.count('"experiment": "per-run"') == 4


def test_data_seed_values_are_checked() -> None:
    config = RunConfig.from_dict({"dataset": "moons(noise=0.2)", "model": "m", "loss": "l", "optimizer": "sgd",
                                  "lr": 0.1, "epochs": 1, "batch_size": 1, "schedule": "c", "tol": 0.0,
                                  "shuffle": False, "dtype": "float64", "data_seed": "run"})
    assert str(dataset_for(config, 7)) == "moons(noise=0.2, seed=7)"
    for bad, needle in ((-1, "seed >= 0"), ("every", "an integer"), (1.5, "an integer")):
        with pytest.raises(SpecValidationError, match=needle):
            ExperimentSpec.from_dict({"data_seed": bad})
    with pytest.raises(SpecValidationError, match="sets its own seed"):
        ExperimentSpec.from_dict({"data_seed": 3, "dataset": "moons(seed=2)"})
    proc = run_cli("run", "--data-seed", "often")
    assert proc.returncode == 2 and "--data-seed: 'often' is not allowed" in proc.stderr
    help_text = " ".join(run_cli("run", "--help", env={"COLUMNS": "200"}).stdout.split())
    assert "the same data for every run seed" in help_text and "'run' resamples the data" in help_text
