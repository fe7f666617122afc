"""Plugin code is the one untrusted boundary (issue 16, findings 3 and 14).

Whatever a plugin raises while expsvc checks it up front becomes one line naming the component and the
plugin, exit 2, nothing written; whatever it raises at import (even ``SystemExit``, ``KeyboardInterrupt``
or another ``BaseException``) isolates that plugin, while the user's own Ctrl-C still stops the program;
whatever it raises while training fails the runs with the reason printed (the traceback stays in ``show``).
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from expsvc.cli import build_app
from tests.conftest import run_cli

BAD_PLUGIN = '''
import numpy as np
from expsvc import Dataset, DataSplit, Layer, Loss, hookimpl


class _Raises(Layer):
    def backward(self, dy):
        return dy


class InitRuntime(_Raises):
    name = "init_runtime"
    def __init__(self):
        super().__init__()
        raise RuntimeError("init exploded")


class InitZero(_Raises):
    name = "init_zero"
    def __init__(self):
        super().__init__()
        1 / 0


class BuildFails(_Raises):
    name = "build_fails"
    def build(self, in_features):
        raise LookupError("no width")


class ForwardRuntime(_Raises):
    name = "forward_runtime"
    def forward(self, x, train=True):
        raise RuntimeError("forward exploded")


class ForwardExit(_Raises):
    name = "forward_exit"
    def forward(self, x, train=True):
        raise SystemExit(3)


class ForwardInterrupt(_Raises):
    name = "forward_interrupt"
    def forward(self, x, train=True):
        raise KeyboardInterrupt  # the plugin's own doing: no SIGINT arrived


class ForwardAttr(_Raises):
    name = "forward_attr"
    def forward(self, x, train=True):
        return x.no_such_attribute


class LossFails(Loss):
    name = "loss_fails"
    def forward(self, pred, target):
        raise ArithmeticError("loss exploded")


class LoadRaises(Dataset):
    name = "load_raises"
    def load(self):
        raise KeyError("missing")


class LoadNone(Dataset):
    name = "load_none"
    def load(self):
        return None


class LoadDict(Dataset):
    name = "load_dict"
    def load(self):
        return {"x": 1}


class LoadLists(Dataset):
    name = "load_lists"
    def load(self):
        return DataSplit([[1.0]], [[1.0]], [[1.0]], [[1.0]], "regression")


class LoadMismatch(Dataset):
    name = "load_mismatch"
    def load(self):
        return DataSplit(np.ones((5, 2)), np.ones((4, 1)), np.ones((2, 2)), np.ones((2, 1)), "regression")


class LoadEmpty(Dataset):
    name = "load_empty"
    def load(self):
        return DataSplit(np.ones((0, 2)), np.ones((0, 1)), np.ones((2, 2)), np.ones((2, 1)), "regression")


@hookimpl
def register_activations(register):
    for cls in (InitRuntime, InitZero, BuildFails, ForwardRuntime, ForwardExit, ForwardInterrupt, ForwardAttr):
        register(cls)


@hookimpl
def register_losses(register):
    register(LossFails)


@hookimpl
def register_datasets(register):
    for cls in (LoadRaises, LoadNone, LoadDict, LoadLists, LoadMismatch, LoadEmpty):
        register(cls)
'''

VALIDATION_CASES = [
    (["--model", "linear(3), init_runtime, linear(1)"], "init_runtime", "RuntimeError: init exploded"),
    (["--model", "linear(3), init_zero, linear(1)"], "init_zero", "ZeroDivisionError"),
    (["--model", "linear(3), build_fails, linear(1)"], "build_fails", "LookupError"),
    (["--model", "linear(3), forward_runtime, linear(1)"], "forward_runtime", "RuntimeError: forward exploded"),
    (["--model", "linear(3), forward_exit, linear(1)"], "forward_exit", "SystemExit: 3"),
    (["--model", "linear(3), forward_interrupt, linear(1)"], "forward_interrupt", "in forward: KeyboardInterrupt"),
    (["--model", "linear(3), forward_attr, linear(1)"], "forward_attr", "AttributeError"),
    (["--loss", "loss_fails"], "loss_fails", "ArithmeticError: loss exploded"),
    (["--dataset", "load_raises"], "load_raises", "KeyError"),
    (["--dataset", "load_none"], "load_none", "returned None, not a DataSplit"),
    (["--dataset", "load_dict"], "load_dict", "returned dict, not a DataSplit"),
    (["--dataset", "load_lists"], "load_lists", "not a numpy array"),
    (["--dataset", "load_mismatch"], "load_mismatch", "5 train inputs but 4 targets"),
    (["--dataset", "load_empty"], "load_empty", "at least one row"),
]


def invoke(*args: str) -> Any:
    return CliRunner().invoke(build_app(), list(args))


@pytest.fixture
def bad_plugin(tmp_path: Path) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "bad.py").write_text(BAD_PLUGIN)
    return folder


@pytest.mark.parametrize(("args", "component", "reason"), VALIDATION_CASES,
                         ids=[c[1] for c in VALIDATION_CASES])
def test_anything_a_plugin_raises_in_validation_is_one_line_and_nothing_is_written(
        bad_plugin: Path, tmp_path: Path, args: list[str], component: str, reason: str) -> None:
    loss = [] if "--loss" in args or "--dataset" in args else ["--loss", "mse"]
    extra = ["--loss", "mse", "--model", "linear(1)"] if "--dataset" in args else loss
    res = invoke("run", "-q", "--seeds", "2", "--epochs", "1", "--db", f"sqlite:///{tmp_path / 'x.db'}",
                 *args, *extra)
    assert res.exit_code == 2, res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert component in lines[0] and "'file:bad'" in lines[0] and reason in lines[0]
    assert "Traceback" not in res.output
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("body", [
    "raise KeyboardInterrupt", "raise SystemExit(4)", "import sys; sys.exit('bye')",
    "class Odd(BaseException):\n    pass\nraise Odd('odd')", "raise GeneratorExit", "raise MemoryError",
])
def test_a_plugin_raising_any_base_exception_at_import_is_isolated(tmp_path: Path, body: str) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "dies.py").write_text(body + "\n")
    (folder / "fine.py").write_text((Path(__file__).parent.parent / "plugins" / "softplus.py").read_text())
    listed = invoke("plugins", "--json")
    assert listed.exit_code == 0, listed.output
    infos = {p["name"]: p for p in json.loads(listed.stdout)}
    assert infos["file:dies"]["status"] == "error"
    assert infos["file:fine"]["status"] == "ok"
    warned = [line for line in listed.stderr.splitlines() if "file:dies" in line]
    assert len(warned) == 1 and "failed to load" in warned[0]
    from expsvc import plugins

    plugins.reset()
    ran = invoke("run", "-q", "--seeds", "1", "--epochs", "1", "--model", "linear(3), softplus, linear(1)",
                 "--db", f"sqlite:///{tmp_path / 'r.db'}")
    assert ran.exit_code == 0, ran.output
    assert "Traceback" not in ran.output
    assert [line for line in ran.stderr.splitlines() if "file:dies" in line] == warned


SLOW_IMPORT = """
import sys, time
sys.stderr.write("importing\\n"); sys.stderr.flush()
{body}
"""


@pytest.mark.parametrize("body", ["time.sleep(30)",
                                  "try:\n    time.sleep(30)\nexcept KeyboardInterrupt:\n    pass  # swallowed"])
def test_the_users_ctrl_c_during_a_plugin_import_stops_the_program(tmp_path: Path, body: str) -> None:
    """A KeyboardInterrupt from a real SIGINT is never isolated as a plugin failure, even if swallowed."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "slow.py").write_text(SLOW_IMPORT.format(body=body))
    proc = subprocess.Popen([sys.executable, "-m", "expsvc", "plugins"], cwd=tmp_path, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline() == "importing\n"
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, err
    assert err.strip() == "interrupted"
    assert out == ""


LATE_PLUGIN = '''
from expsvc import Layer, hookimpl


class Late(Layer):
    """Fine in the up-front check (train=False), raises once training starts."""
    name = "late"
    def forward(self, x, train=True):
        if train:
            raise ZeroDivisionError("late failure")
        return x
    def backward(self, dy):
        return dy


@hookimpl
def register_activations(register):
    register(Late)
'''


def test_a_run_time_failure_prints_its_reason_and_keeps_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "late.py").write_text(LATE_PLUGIN)
    url = f"sqlite:///{tmp_path / 'late.db'}"
    res = run_cli("run", "-q", "--seeds", "2", "--epochs", "2", "--db", url, "--model", "linear(3), late, linear(1)",
                  cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr  # two groups, one distinct reason
    assert lines[0].startswith("error: 4 of 4 runs failed: activation 'late' (plugin 'file:late') raised "
                               "ZeroDivisionError: late failure")
    run_id = lines[0].rsplit("expsvc show ", 1)[1].rstrip(")")
    shown = run_cli("show", run_id, "--db", url, "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "Traceback" in json.loads(shown.stdout)["error"]


def test_a_full_disk_during_a_run_prints_the_reason(tmp_path: Path) -> None:
    """Finding 14: a store write failing mid-run (here: a file size limit, as a full disk) is said on the
    terminal, exit 1, no traceback; the runs are marked failed."""
    url = f"sqlite:///{tmp_path / 'full.db'}"
    assert run_cli("run", "-q", "--opt", "adamw", "--seeds", "1", "--epochs", "1", "--db", url,
                   cwd=tmp_path).returncode == 0
    size = (tmp_path / "full.db").stat().st_size

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100_000, size + 100_000))

    res = run_cli("run", "-q", "--opt", "adamw", "--seeds", "10", "--epochs", "1000000", "--tol", "0", "--db", url,
                  cwd=tmp_path, preexec_fn=limit)
    assert res.returncode == 1, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 10 of 10 runs failed: database error on "), res.stderr
    assert "Traceback" not in res.stderr
