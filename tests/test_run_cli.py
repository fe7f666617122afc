"""``expsvc run`` end to end: real SQLite files, real subprocesses, real signals."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, expand_chunks, run_cli


def db_rows(path: Path, sql: str, *args: object) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, args).fetchall()


POINTS = "SELECT coalesce(sum(count), 0) FROM metric_chunks"  # history points stored


def history(path: Path) -> dict[tuple[int, str], np.ndarray]:
    """Loss history per (seed, configuration), as float arrays (NULL -> NaN)."""
    rows = expand_chunks(db_rows(path, """
        SELECT r.seed, r.group_key, h.first_step, h.data FROM metric_chunks h JOIN runs r ON r.id = h.run_id
        WHERE h.key = 'loss' ORDER BY r.seed, r.group_key, h.first_step"""))
    out: dict[tuple[int, str], list[float]] = {}
    for seed, opt, _step, value in rows:
        out.setdefault((seed, opt), []).append(value)
    return {k: np.array(v) for k, v in out.items()}


def test_default_job_in_an_empty_directory(tmp_path: Path) -> None:
    proc = run_cli("run", "--opt", "mini_bgd", "--opt", "adamw", "--seeds", "5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "expsvc compare" in proc.stdout
    db = tmp_path / "experiments.db"
    assert db.is_file()
    assert db_rows(db, "SELECT status, count(*) FROM runs GROUP BY status") == [("finished", 10)]
    runs = db_rows(db, "SELECT id, updates, steps_per_epoch FROM runs")
    for run_id, updates, per_epoch in runs:
        assert updates > 0 and per_epoch > 0
        (points,) = db_rows(db, "SELECT sum(count) FROM metric_chunks WHERE run_id = ? AND key = 'loss'", run_id)[0]
        assert points == updates  # one loss per update, nothing lost
        keys = {k for (k,) in db_rows(db, "SELECT key FROM metric_summaries WHERE run_id = ?", run_id)}
        assert {"loss", "test_accuracy", "train_accuracy", "train_precision", "train_recall", "test_loss"} <= keys
        summary = db_rows(db, "SELECT count, min, max, first, last FROM metric_summaries WHERE run_id = ? "
                              "AND key = 'loss'", run_id)[0]
        assert summary[0] == updates and summary[1] <= summary[4] <= summary[2]
        comps = db_rows(db, "SELECT kind, name, plugin, package, version FROM run_components WHERE run_id = ?",
                        run_id)
        kinds = {c[0] for c in comps}
        assert {"dataset", "layer", "activation", "loss", "optimizer", "scheduler", "metric"} <= kinds
        assert all(c[3] == "expsvc" and c[4] for c in comps)
        assert db_rows(db, "SELECT count(*) FROM run_artifacts WHERE run_id = ? AND kind = 'params'", run_id)[0][0]
    assert db_rows(db, "PRAGMA integrity_check") == [("ok",)]


def test_same_spec_twice_and_every_execution_mode_give_identical_histories(tmp_path: Path) -> None:
    args = ["run", "--opt", "mini_bgd", "--opt", "adamw(weight_decay=0.1)", "--seeds", "3", "--epochs", "30",
            "--shuffle", "-q"]
    results = {}
    for label, extra in {"a": ["-j", "1"], "b": ["-j", "1"], "novec": ["--no-vectorize", "-j", "1"],
                         "j2": ["-j", "2"], "novec-j2": ["--no-vectorize", "-j", "2"]}.items():
        db = tmp_path / f"{label}.db"
        proc = run_cli(*args, *extra, "--db", f"sqlite:///{db}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        results[label] = history(db)
    reference = results["a"]
    assert len(reference) == 6
    for label, hist in results.items():
        assert hist.keys() == reference.keys(), label
        for key in reference:
            assert hist[key].shape == reference[key].shape
            np.testing.assert_allclose(hist[key], reference[key], rtol=0, atol=1e-12, err_msg=label)


def test_diverging_lr_marks_only_that_run_and_siblings_are_unchanged(tmp_path: Path) -> None:
    db = tmp_path / "div.db"
    common = ["--opt", "sgd", "--seeds", "3", "--epochs", "20", "--tol", "0", "-q", "-j", "1",
              "--model", "linear(4), linear(1)", "--loss", "mse", "--dataset", "linear_1d", "--batch-size", "3"]
    proc = run_cli("run", *common, "--lr", "0.01", "--lr", "1.0", "--db", f"sqlite:///{db}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    statuses = db_rows(db, "SELECT p.value_num, r.status, r.error FROM runs r JOIN run_params p "
                           "ON p.run_id = r.id AND p.key = 'lr' ORDER BY p.value_num, r.seed")
    assert [s for lr, s, _ in statuses if lr == 0.01] == ["finished"] * 3
    diverged = [(s, e) for lr, s, e in statuses if lr == 1.0]
    assert all(s == "diverged" and "non-finite" in e for s, e in diverged)
    # the stable runs equal the same seeds run without the diverging configuration beside them
    alone = tmp_path / "alone.db"
    proc = run_cli("run", *common, "--lr", "0.01", "--db", f"sqlite:///{alone}", cwd=tmp_path)
    assert proc.returncode == 0
    both, single = history(db), history(alone)
    for key, values in single.items():
        np.testing.assert_array_equal(both[key], values)


def test_one_replica_diverging_leaves_its_siblings_bitwise_unchanged(tmp_path: Path) -> None:
    """Within one vectorised group: seeds whose init makes the loss blow up stop alone."""
    from expsvc.runner.api import Experiment

    exp = Experiment(dataset="linear_1d", model="linear(4), linear(1)", loss="sum_squared", optimizer="sgd",
                     lr=0.03, seeds=8, epochs=40, batch_size=3, tol=0)
    group = exp.run(db=f"sqlite:///{tmp_path / 'v.db'}", jobs=1).groups[0]
    statuses = {o.seed: o.status for o in group.outcomes}
    assert "diverged" in statuses.values() and "finished" in statuses.values()
    alone = Experiment(dataset="linear_1d", model="linear(4), linear(1)", loss="sum_squared", optimizer="sgd",
                       lr=0.03, seeds=[s for s, st in statuses.items() if st == "finished"], epochs=40,
                       batch_size=3, tol=0).run(db=f"sqlite:///{tmp_path / 'a.db'}", jobs=1).groups[0]
    by_seed = {o.seed: o for o in group.outcomes}
    for o in alone.outcomes:
        assert by_seed[o.seed].final_loss == o.final_loss and by_seed[o.seed].updates == o.updates


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPSVC_")}
    return subprocess.Popen([sys.executable, "-m", "expsvc", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _wait_for_points(db: Path, minimum: int, timeout: float = 60, runs: int = 1) -> None:
    """Wait until ``minimum`` points are stored, of at least ``runs`` different runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            try:
                stored = db_rows(db, "SELECT count(DISTINCT run_id), coalesce(sum(count), 0) FROM metric_chunks")
                if stored[0][0] >= runs and stored[0][1] >= minimum:
                    return
            except sqlite3.OperationalError:
                pass
        time.sleep(0.1)
    raise AssertionError("the run logged nothing in time")


LONG_RUN = ["run", "--opt", "adamw", "--seeds", "2", "--epochs", "1000000", "--tol", "0", "-q", "-j", "1"]


def test_sigkill_mid_run_keeps_flushed_points_and_the_run_becomes_stale(tmp_path: Path) -> None:
    proc = _start(LONG_RUN, tmp_path)
    db = tmp_path / "experiments.db"
    try:
        _wait_for_points(db, 2000)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    before = db_rows(db, POINTS)[0][0]
    assert db_rows(db, "PRAGMA integrity_check") == [("ok",)]
    listing = run_cli("runs", "--json", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    rows = db_rows(db, "SELECT status, error FROM runs")
    assert rows and all(s == "failed" and e.startswith("stale:") for s, e in rows)
    assert db_rows(db, POINTS)[0][0] == before >= 2000
    (count,) = db_rows(db, "SELECT sum(count) FROM metric_summaries WHERE key = 'loss'")[0]
    assert count == before  # summaries were written with the data


def test_sigint_marks_runs_interrupted_and_exits_130(tmp_path: Path) -> None:
    proc = _start(["run", "--opt", "adamw", "--opt", "sgd", "--seeds", "2", "--epochs", "1000000", "--tol", "0",
                   "-q", "-j", "2"], tmp_path)
    db = tmp_path / "experiments.db"
    _wait_for_points(db, 2000, runs=4)  # both groups are training
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    rows = db_rows(db, "SELECT status, count(*) FROM runs GROUP BY status")
    assert rows == [("interrupted", 4)]
    counts = db_rows(db, "SELECT h.run_id, sum(h.count), s.count FROM metric_chunks h JOIN metric_summaries s "
                         "ON s.run_id = h.run_id AND s.key = 'loss' GROUP BY h.run_id")
    assert len(counts) == 4 and all(n == c and n > 0 for _, n, c in counts)


@pytest.mark.slow
def test_four_concurrent_runs_on_one_file(tmp_path: Path) -> None:
    procs = [_start(["run", "--opt", opt, "--seeds", "3", "--epochs", "40", "--tol", "0", "-q", "-j", "1",
                     "--name", "shared"], tmp_path) for opt in ("sgd", "adam", "adamw", "mini_bgd")]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    db = tmp_path / "experiments.db"
    assert db_rows(db, "SELECT count(*) FROM experiments") == [(1,)]
    assert db_rows(db, "SELECT status, count(*) FROM runs GROUP BY status") == [("finished", 12)]
    (expected,) = db_rows(db, "SELECT sum(updates) FROM runs")[0]
    assert db_rows(db, POINTS)[0][0] == expected


BAD_INPUTS = [
    (["--opt", "adamww"], "did you mean 'adamw'"),
    (["--seeds", "99999999999999999999999"], "at most 10,000 seeds"),
    (["--seed", "1", "--seed", "2147483648"], "at most 2,147,483,647 (seeds are stored as 32-bit integers)"),
    (["--opt", "adamw(lr=)"], "optimizer"),
    (["--opt", "adamw(weight_dcay=0)"], "did you mean 'weight_decay'"),
    (["--lr", "-1"], "lr: -1.0 is not allowed"),
    (["--lr", "abc"], "--lr: 'abc' is not a number"),
    (["--epochs", "0"], "epochs: 0 is not allowed"),
    (["--epochs", "1.5"], "--epochs: '1.5' is not an integer"),
    (["--batch-size", "-3"], "batch_size: -3 is not allowed"),
    (["--seeds", "0"], "seeds: 0 is not allowed"),
    (["--seeds", "2", "--seed", "1"], "exclude each other"),
    (["--model", "linear(5), tanhh"], "did you mean 'tanh'"),
    (["--model", "linear(5,, tanh"], "model: invalid syntax"),
    (["--model", "linear(5), tanh, linear(3)"], "does not fit loss"),
    (["--loss", "cross_entropy"], "is for multiclass targets"),
    (["--dataset", "pointz"], "did you mean 'points'"),
    (["--dataset", "file(path='missing.csv', target='y')"], "missing.csv"),
    (["--schedule", "cosine"], "schedule"),
    (["--dtype", "float16"], "dtype: 'float16' is not allowed"),
    (["--tol", "-1"], "tol: -1.0 is not allowed"),
    (["--jobs", "0"], "--jobs"),
]


@pytest.mark.parametrize(("args", "fragment"), BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_no_database(tmp_path: Path, args: list[str], fragment: str) -> None:
    proc = run_cli("run", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], proc.stderr
    assert not (tmp_path / "experiments.db").exists()


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("optimiser = 'adamw'\n", "unknown key 'optimiser' (did you mean 'optimizer'?)"),
        ("lr = 'fast'\n", "lr: 'fast' is not allowed"),
        ("seeds = []\n", "seeds"),
        ("epochs = -5\n", "epochs: -5 is not allowed"),
        ("shuffle = 'yes'\n", "shuffle"),
        ("lr = [0.1, -0.2]\n", "lr: -0.2 is not allowed"),
        ("optimizer = 3\n", "optimizer: 3 is not allowed"),
        ("[section]\nlr = 1\n", "unknown table"),
        ("lr = = 1\n", "not valid TOML"),
    ],
)
def test_bad_experiment_files(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(content)
    proc = run_cli("run", str(path), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert not (tmp_path / "experiments.db").exists()


def test_missing_experiment_file(tmp_path: Path) -> None:
    proc = run_cli("run", "nope.toml", cwd=tmp_path)
    assert proc.returncode == 2 and "'nope.toml' does not exist" in proc.stderr


def test_flags_override_the_file(tmp_path: Path) -> None:
    proc = run_cli("run", str(REPO / "experiments" / "seed_points.toml"), "--opt", "adam", "--seeds", "2",
                   "--epochs", "3", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    db = tmp_path / "experiments.db"
    assert db_rows(db, "SELECT name FROM experiments") == [("seed_points",)]
    assert db_rows(db, "SELECT DISTINCT value_text FROM run_params WHERE key = 'optimizer'") == [("adam",)]
    assert db_rows(db, "SELECT count(*) FROM runs") == [(2,)]
