"""Smaller CLI surfaces: gradcheck over every registered built-in, components, db commands, failed runs."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import pytest

from expsvc.core import gradcheck
from expsvc.plugins import load_plugins
from tests.conftest import run_cli

# Built-ins that cannot be made without arguments (a new one missing here fails the test below loudly).
REQUIRED_ARGS = {"linear": "linear(3)", "conv2d": "conv2d(3, 3, padding=1)", "max_pool2d": "max_pool2d(2)",
                 "avg_pool2d": "avg_pool2d(2)"}


def builtin_specs() -> list[str]:
    system = load_plugins()
    specs = []
    for kind in ("layer", "activation", "loss"):
        for reg in system.registry.registrations(kind):
            if system.provenance(reg).source == "builtin":
                specs.append(REQUIRED_ARGS.get(reg.name, reg.name))
    return sorted(specs)


@pytest.mark.parametrize("spec", builtin_specs())
def test_every_registered_builtin_passes_gradcheck(spec: str) -> None:
    component = load_plugins().registry.create(("layer", "activation", "loss"), spec)
    result = gradcheck(component)
    assert result.passed and result.max_error <= 1e-7, result.errors


def test_gradcheck_cli_reports_each_tensor() -> None:
    proc = run_cli("gradcheck", "linear(4)")
    assert proc.returncode == 0
    assert "input" in proc.stdout and "weight" in proc.stdout and "bias" in proc.stdout and "passed" in proc.stdout
    conv = run_cli("gradcheck", "conv2d(4, 3, padding=1)", "--shape", "3,6,6")
    assert conv.returncode == 0 and "0.conv2d.weight" in conv.stdout and "passed" in conv.stdout
    flat = run_cli("gradcheck", "conv2d(4, 3)", "--shape", "12")
    assert flat.returncode == 2 and "needs image inputs" in flat.stderr and "(12,)" in flat.stderr
    bad = run_cli("gradcheck", "adamw")
    assert bad.returncode == 2 and bad.stderr.startswith("error: gradcheck: 'adamw' is an optimizer")
    assert "`expsvc check 'adamw'`" in bad.stderr  # an optimizer's contract is checked by `expsvc check`
    unknown = run_cli("gradcheck", "nosuch")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: unknown layer or activation or loss 'nosuch'")


def test_components_lists_kinds_and_rejects_unknown_kind() -> None:
    proc = run_cli("components", "optimizer")
    assert proc.returncode == 0 and "adamw" in proc.stdout and "weight_decay" in proc.stdout
    bad = run_cli("components", "optimiser")
    assert bad.returncode == 2 and "did you mean 'optimizer'" in bad.stderr


def test_db_current_and_upgrade(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    missing = run_cli("db", "current", "--db", db)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    created = run_cli("db", "upgrade", "--db", db)
    assert created.returncode == 0 and "-> 0005" in created.stdout
    again = run_cli("db", "upgrade", "--db", db)
    assert again.returncode == 0 and "already at 0005" in again.stdout
    current = run_cli("db", "current", "--db", db)
    assert current.returncode == 0 and "revision 0005 (head 0005)" in current.stdout


def test_corrupt_database_is_one_line_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "experiments.db"
    path.write_bytes(b"this is not a database" * 100)
    before = path.read_bytes()
    for args in (["runs"], ["run", "--seeds", "1", "--epochs", "1", "-q"], ["compare"]):
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, args
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "not a SQLite database" in lines[0], proc.stderr
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["experiments.db"]


def test_exception_in_training_marks_runs_failed_with_traceback(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "flaky.py").write_text(textwrap.dedent('''
        from expsvc import Layer, hookimpl

        class Flaky(Layer):
            """Identity that raises on its 100th forward pass during training."""
            name = "flaky"
            calls = 0
            def forward(self, x, train=True):
                if train:
                    Flaky.calls += 1
                    if Flaky.calls == 100:
                        raise RuntimeError("flaky layer gave up")
                return x
            def backward(self, dy):
                return dy

        @hookimpl
        def register_activations(register):
            register(Flaky)
    '''))
    proc = run_cli("run", "--opt", "adamw", "--seeds", "2", "--tol", "0", "-q", "-j", "1",
                   "--model", "linear(5), flaky, linear(1)", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    with sqlite3.connect(tmp_path / "experiments.db") as conn:
        rows = conn.execute("SELECT status, error FROM runs").fetchall()
        points = conn.execute("SELECT coalesce(sum(count), 0) FROM metric_chunks").fetchone()[0]
    assert len(rows) == 2 and all(s == "failed" for s, _ in rows)
    assert all("Traceback" in e and "flaky layer gave up" in e for _, e in rows)
    assert points == 2 * 99  # every loss computed before the failure was kept
