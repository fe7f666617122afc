"""Ctrl-C at any moment of a command, imports included: exit 130, one line (with the runner's "stopping" line
before it once training has begun), no traceback (issue 16, finding 9).

Real processes and real SIGINTs.  The delays are counted from the moment the entry module has installed its
handler (the child says so on stderr), which ``main`` does before importing anything but the standard
library: what happens before that is the Python interpreter's own start-up.
"""

from __future__ import annotations

import ast
import importlib.metadata
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

ENTRY = """
import sys
import expsvc.__main__ as entry
entry.install()
sys.stderr.write("started\\n")
sys.stderr.flush()
sys.argv = ["expsvc", *sys.argv[1:]]
entry.run()
"""

DELAYS = [0.0, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5]


@pytest.mark.parametrize("delay", DELAYS)
def test_ctrl_c_early_in_a_command_exits_130_with_one_line(tmp_path: Path, delay: float) -> None:
    args = ["run", "-q", "--opt", "adamw", "--seeds", "1", "--epochs", "100000", "--tol", "0",
            "--db", f"sqlite:///{tmp_path / 'int.db'}"]
    proc = subprocess.Popen([sys.executable, "-c", ENTRY, *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline() == "started\n"
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()  # never leave a training process behind if the test fails
        proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    lines = err.splitlines()
    # once training has begun (late delays, or a fast machine), the runner first says it is stopping
    if len(lines) == 2:
        assert lines[0].startswith("stopping: "), err
    assert len(lines) in (1, 2) and lines[-1].startswith("interrupted"), err
    assert out == ""


def test_main_installs_the_handler_before_anything_else(monkeypatch: pytest.MonkeyPatch) -> None:
    import expsvc.__main__ as entry

    calls: list[str] = []
    monkeypatch.setattr(entry, "install", lambda: calls.append("install"))
    monkeypatch.setattr(entry, "run", lambda: calls.append("run"))
    entry.main()
    assert calls == ["install", "run"]


def test_the_console_script_enters_where_the_handler_is_installed_first() -> None:
    """The ``expsvc`` script must run :func:`expsvc.__main__.main` (handler first, heavy imports after)."""
    text = (REPO / "pyproject.toml").read_text()
    assert 'expsvc = "expsvc.__main__:main"' in text
    scripts = [ep for ep in importlib.metadata.entry_points(group="console_scripts") if ep.name == "expsvc"]
    assert all(ep.value == "expsvc.__main__:main" for ep in scripts)


def test_importing_the_entry_module_imports_nothing_heavy() -> None:
    """Before the handler is installed only the standard library may load (the window a Ctrl-C can hit)."""
    code = ("import sys; before = set(sys.modules); import expsvc.__main__, expsvc.interrupts; "
            "print(sorted(m for m in set(sys.modules) - before if not m.startswith('expsvc')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    new = ast.literal_eval(out)  # a printed list of module names
    heavy = [m for m in new if m.split(".")[0] in ("typer", "click", "numpy", "pluggy", "rich", "sqlalchemy")]
    assert heavy == []
