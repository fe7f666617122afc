"""Outputs never destroy: not the store, its sidecars or backups, a folder, a FIFO, nor a file of another kind.

The output options are discovered from the Typer app itself, so a new command's ``--out`` is covered by
:func:`test_no_output_option_writes_over_the_store` without anyone listing it here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import expsvc
from expsvc import files
from expsvc.cli import _register_builtin_commands, app
from tests.conftest import run_cli

OUTPUT_NAME = re.compile(r"^--?(o|out|output|outfile|plot|save|write|dest|destination|html|png)(-.*)?$")


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, (*path, name))
    return found


def output_options() -> list[tuple[tuple[str, ...], str, Any]]:
    """(command path, option name, command) of every option that names a file to write, in every command."""
    _register_builtin_commands()
    root = typer.main.get_command(app)  # typer's own (vendored) click: parameters are told apart by type name
    out = []
    for path, command in _commands(root):
        for param in command.params:
            if param.param_type_name != "option" or getattr(param, "is_flag", False):
                continue
            if param.metavar == "FILE" or any(OUTPUT_NAME.match(n) for n in param.opts):
                out.append((path, param.opts[0], command))
    return out


def _required_args(command: Any, run_id: str) -> list[str]:
    """Values for a command's required arguments (a run id is the only kind the query commands take)."""
    return [run_id for p in command.params if p.param_type_name == "argument" and p.required]


def _fingerprint(folder: Path) -> dict[str, str]:
    """Every entry of ``folder`` (recursively) with the hash of its bytes (or its kind)."""
    found = {}
    for p in sorted(folder.rglob("*")):
        kind = files.kind_of(p)
        found[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest() if kind == "file" else kind
    return found


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A real store (one experiment, two runs) built once, copied per test."""
    folder = tmp_path_factory.mktemp("store")
    result = expsvc.run(optimizer=["adamw", "mini_bgd"], seeds=2, epochs=3, db=f"sqlite:///{folder / 'runs.db'}",
                        name="exp", jobs=1)
    return folder / "runs.db", result.run_ids[0]


def test_output_options_are_discovered() -> None:
    """The discovery finds the known outputs (a broken discovery would make the next test vacuous)."""
    found = {(" ".join(path), opt) for path, opt, _ in output_options()}
    assert {("export", "--out"), ("plot", "--out"), ("compare", "--plot")} <= found
    for path, opt, command in output_options():
        names = {o for p in command.params for o in getattr(p, "opts", [])}
        assert "--force" in names, f"{' '.join(path)} has {opt} but no --force"


def test_no_output_option_writes_over_the_store(template: tuple[Path, str], tmp_path: Path) -> None:
    """Every output option of every command, against the store, its sidecars and backups, a folder, a FIFO."""
    src, run_id = template
    work = tmp_path / "w"
    work.mkdir()
    store = work / "runs.db"
    shutil.copy(src, store)
    (work / "runs.db.bak-20260101-000000").write_bytes(src.read_bytes())
    (work / "folder").mkdir()
    (work / "folder" / "keep.txt").write_text("keep")
    os.mkfifo(work / "fifo.png")
    (work / "runs.db.lock").write_bytes(b"")
    targets = ["runs.db", "runs.db-wal", "runs.db-shm", "runs.db-journal", "runs.db.lock",
               "runs.db.bak-20260101-000000", "runs.db.bak-20991231-235959", "folder", "folder/", ".", "fifo.png",
               str(store)]
    before = _fingerprint(work)
    options = output_options()
    assert options
    cwd = os.getcwd()
    os.chdir(work)
    try:
        for path, opt, command in options:
            for target in targets:
                for force in ([], ["--force"]):
                    argv = [*path, *_required_args(command, run_id), opt, target, *force, "--db",
                            "sqlite:///runs.db"]
                    result = CliRunner().invoke(app, argv)
                    case = " ".join(argv)
                    assert result.exit_code == 2, f"{case}: exit {result.exit_code}\n{result.output}"
                    lines = [line for line in result.stderr.splitlines() if line.strip()]
                    assert len(lines) == 1 and lines[0].startswith("error: "), f"{case}: {result.stderr!r}"
                    assert "Traceback" not in result.output
                    assert _fingerprint(work) == before, f"{case} changed the folder"
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("args", [
    ["export", "--out", "experiments.db"],
    ["plot", "-e", "exp", "--out", "experiments.db"],
    ["compare", "-e", "exp", "--plot", "experiments.db"],
    ["export", "--history", "--out", "runs.csv", "--db", "sqlite:///runs.history.csv"],
])
def test_reported_cases_leave_the_store_whole(template: tuple[Path, str], tmp_path: Path, args: list[str]) -> None:
    """The issue's four commands, as real processes: exit 2, one line, the store's bytes unchanged."""
    src, _ = template
    name = "runs.history.csv" if "sqlite:///runs.history.csv" in args else "experiments.db"
    shutil.copy(src, tmp_path / name)
    digest = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "never writes an output over a store" in result.stderr
    assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == digest
    assert not (tmp_path / "runs.csv").exists()


def test_another_kind_of_file_needs_force(template: tuple[Path, str], tmp_path: Path) -> None:
    src, _ = template
    db = f"sqlite:///{src}"
    other = tmp_path / "other.db"
    shutil.copy(src, other)  # a SQLite database that is not the store read
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    runner = CliRunner()
    for target, fmt in ((other, "csv"), (notes, "json")):
        before = target.read_bytes()
        result = runner.invoke(app, ["export", "--format", fmt, "--out", str(target), "--db", db])
        assert result.exit_code == 2 and "pass --force" in result.stderr, result.output
        assert target.read_bytes() == before
    result = runner.invoke(app, ["export", "--format", "json", "--out", str(notes), "--force", "--db", db])
    assert result.exit_code == 0, result.output
    assert json.loads(notes.read_text())["runs"]
    # the same kind is simply replaced (re-running a command must not need --force)
    png = tmp_path / "loss.png"
    for _ in range(2):
        result = runner.invoke(app, ["plot", "-e", "exp", "--out", str(png), "--db", db])
        assert result.exit_code == 0, result.output
    assert png.read_bytes().startswith(b"\x89PNG")


def test_outputs_are_atomic(tmp_path: Path) -> None:
    """A write that fails half-way leaves the old file whole and no temporary file behind."""
    target = tmp_path / "runs.csv"
    target.write_text("old,data\n")
    os.chmod(target, 0o640)
    with pytest.raises(RuntimeError), files.atomic_open(target, "w") as fh:
        fh.write("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old,data\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv"]
    with files.atomic_open(target, "w") as fh:
        fh.write("new\n")
    assert target.read_text() == "new\n"
    assert oct(target.stat().st_mode & 0o777) == oct(0o640)  # the replaced file's permissions are kept
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    with files.atomic_open(link, "w") as fh:
        fh.write("through the link\n")
    assert link.is_symlink() and target.read_text() == "through the link\n"


def test_atomic_write_refuses_a_store_opened_by_this_process(template: tuple[Path, str]) -> None:
    """Even code that skips the CLI's check cannot replace a store this process has opened."""
    src, _ = template
    from expsvc.store import RunStore

    with RunStore.open(f"sqlite:///{src}", create=False):
        pass
    before = src.read_bytes()
    with pytest.raises(files.OutputError, match="store"), files.atomic_open(src, "w") as fh:
        fh.write("x")
    assert src.read_bytes() == before


def test_show_json_is_strict_for_a_diverged_run(tmp_path: Path) -> None:
    """``show --json`` writes non-finite values as null (like every other --json), never ``Infinity``."""
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    result = expsvc.run(optimizer=["sgd"], lr=1.0, seeds=1, epochs=20, tol=0, model="linear(4), linear(1)",
                        loss="mse", dataset="linear_1d", batch_size=3, db=db, name="boom", jobs=1)
    assert result.statuses() == {"diverged": 1}
    out = run_cli("show", result.run_ids[0][:8], "--json", "--db", db)
    assert out.returncode == 0, out.stderr

    def refuse(token: str) -> Any:
        raise AssertionError(f"non-strict JSON constant {token}")

    data = json.loads(out.stdout, parse_constant=refuse)
    assert data["status"] == "diverged"
    assert data["summaries"]["loss"]["last"] is None or isinstance(data["summaries"]["loss"]["last"], float)


@pytest.mark.slow
def test_plot_of_diverged_runs_prints_no_numpy_warning(tmp_path: Path) -> None:
    """Seeds that blow up (huge finite losses, then inf) draw without a RuntimeWarning on the terminal."""
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    result = expsvc.run(optimizer=["sgd"], lr=[0.01, 1.0], seeds=3, epochs=20, tol=0, model="linear(4), linear(1)",
                        loss="mse", dataset="linear_1d", batch_size=3, db=db, name="mixed", jobs=1)
    assert result.statuses() == {"finished": 3, "diverged": 3}
    for extra in ([], ["--x", "update"], ["--log-y"], ["--x", "update", "--log-y"]):
        out = run_cli("plot", "-e", "mixed", "--out", str(tmp_path / "loss.png"), *extra, "--db", db)
        assert out.returncode == 0, out.stderr
        assert "Warning" not in out.stderr and ".py:" not in out.stderr, (extra, out.stderr)
    out = run_cli("compare", "-e", "mixed", "--plot", str(tmp_path / "c.png"), "--db", db)
    assert out.returncode == 0 and "Warning" not in out.stderr, out.stderr
