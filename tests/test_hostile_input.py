"""Bad input, generated from the code's own definitions (issue 16, "done when" 3 and findings 4-6, 15-17).

Every option and argument of every command (read from the Typer app: types, ranges, choices, flags) and
every argument of every registered component (read from the registry: signatures and their type hints)
gets values that are wrong for it.  Each must end with exit code 2, exactly one line on stderr, no
traceback, the store's bytes unchanged and no file created.  A new flag or component is covered without
touching this file; a new free-text option gets the empty value (never allowed) until it is given a role
below, which adds values that are wrong for what it means (that cannot be read from a type).

Cases run in-process through typer's ``CliRunner`` (the app's own ``main``: the error handling is the
same code as the console script's); one case per command also runs as a real process.
"""

from __future__ import annotations

import inspect
import math
import os
import sqlite3
import subprocess
import sys
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import typer.main
from typer.testing import CliRunner

from expsvc.cli import build_app
from expsvc.plugins import load_plugins
from expsvc.registry import KINDS, argument_hints, fits

LONG = "x" * 100_000
"""A value far too long to echo (finding 16)."""


# ------------------------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class Store:
    folder: Path
    path: Path
    url: str
    experiment: str
    run_id: str


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A real store with one small experiment (2 runs), made once for the whole module."""
    folder = tmp_path_factory.mktemp("hostile-store")
    path = folder / "store.db"
    url = f"sqlite:///{path}"
    res = CliRunner().invoke(build_app(), ["run", "-q", "--opt", "adamw", "--seeds", "2", "--epochs", "2",
                                           "--name", "base", "--db", url])
    assert res.exit_code == 0, res.output
    with sqlite3.connect(path) as conn:
        run_id = conn.execute("SELECT id FROM runs ORDER BY id LIMIT 1").fetchone()[0]
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return Store(folder, path, url, "base", run_id)


def _snapshot(store: Store, cwd: Path) -> tuple[bytes, list[str], list[str]]:
    return store.path.read_bytes(), sorted(os.listdir(cwd)), sorted(os.listdir(store.folder))


def _assert_refused(res: Any, what: str) -> None:
    """Exit 2, one line on stderr starting with ``error:``, no traceback, nothing huge echoed."""
    assert res.exception is None or isinstance(res.exception, SystemExit), f"{what}: {res.exception!r}"
    assert res.exit_code == 2, f"{what}: exit {res.exit_code}: {res.output[-2000:]}"
    lines = res.stderr.splitlines()
    assert len(lines) == 1, f"{what}: {res.stderr[-2000:]}"
    assert lines[0].startswith("error: "), f"{what}: {lines[0][:300]}"
    assert "Traceback" not in res.output, what
    assert len(lines[0]) <= 1100, f"{what}: echoed {len(lines[0])} characters"


_COMMAND: list[Any] = []


def _invoke(args: list[str]) -> Any:
    """Run the app's click command in-process (built once: typer rebuilds it on every call otherwise)."""
    if not _COMMAND:
        _COMMAND.append(typer.main.get_command(build_app()))
    with mock.patch("typer.testing._get_command", lambda app: _COMMAND[0]):
        return CliRunner().invoke(build_app(), args)


# ------------------------------------------------------------------------------- the CLI's definitions


def _commands() -> Iterator[tuple[tuple[str, ...], Any]]:
    """``(path, command)`` for every leaf command of the app."""
    def walk(path: tuple[str, ...], cmd: Any) -> Iterator[tuple[tuple[str, ...], Any]]:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in sorted(subs.items()):
                yield from walk((*path, name), sub)
        else:
            yield path, cmd
    yield from walk((), typer.main.get_command(build_app()))


def _root_params() -> list[Any]:
    return list(typer.main.get_command(build_app()).params)


def _flag(param: Any) -> str:
    return max(param.opts, key=lambda o: (o.startswith("--"), len(o)))


def _annotation(param: Any) -> Any:
    desc = getattr(param, "type_descriptor", None)
    return getattr(desc, "annotation", None)


def _base(ann: Any) -> Any:
    """``int`` for ``int | None`` or ``list[int]``; the annotation itself otherwise."""
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    if typing.get_origin(ann) in (list, tuple) or (args and len(args) == 1):
        return _base(args[0])
    return ann


def _choices(param: Any) -> list[Any] | None:
    desc = getattr(param, "type_descriptor", None)
    return list(desc.choices) if desc is not None and getattr(desc, "is_choice", False) else None


# What a wrong value is for free text, by role (a type cannot say it); {store}, {folder} and {cwd} are filled in.
ROLES: dict[str, list[str]] = {
    "url": ["", "nosuchdialect://host/db", "sqlite:///{folder}", "sqlite:///{folder}/store.db?mode=ro", LONG],
    "experiment": ["no-such-experiment", LONG],
    "run": ["zzzzzzzz", LONG],
    "where": ["params.lr <", "no_such_field = 1", "params.lr = ", LONG],
    "sort": ["no_such_key", "-", LONG],
    "status": ["nonsense", LONG],
    "choice": ["no-such-choice", LONG],
    "metric": ["no_such_metric", "min(", LONG],
    "group": ["no_such_key", LONG],
    "baseline": ["no-such-group", LONG],
    "spec:optimizer": ["no_such_optimizer", "adamw(", "adamw(lr=1,lr=2)", "adamw(lr=True)", "adamw(lr=1e999)",
                       "adamw(lr=-1)", "adamw(bogus=1)", "sgd(momentum=[])", "sgd(momentum=[0.9, 'x'])",
                       "sgd(momentum=0.9, nesterov=[True, False])", "sgd(momentum=[-1, 0.5])",
                       "adamw(lr=logspace(1e-4, 0.1, 0))", "adamw(lr=logspace(1e-4, 0.1))",
                       "adamw(lr=linspace(0, 1, 2))",
                       "adamw(weight_decay=linspace(0, 1, 100001))", "adamw(lr=logspace(-1, 1, 3))", LONG],
    "spec:model": ["no_such_layer", "linear(", "linear(0)", "linear(5), tanh,", "linear(True)",
                   "linear(linspace(1, 3, 3))",
                   "linear(1000000000000), tanh, linear(1)", LONG],
    "spec:loss": ["no_such_loss", "mse(reduction='bogus')", "cross_entropy", LONG],
    "spec:dataset": ["no_such_dataset", "points(n_train=0)", "points(seed=-1)", "random_regression(n=1000000000)",
                     "file('{folder}')", "file('missing.npz')", LONG],
    "spec:schedule": ["no_such_schedule", "step(step_size=0)", "step(step_size=[])", "step(step_size=[2, 'x'])",
                      "cosine(t_max=[0, 5])", LONG],
    "spec:component": ["no_such_component", "linear(", "linear(100000000000)", LONG],
    "number": ["abc", "-1", "nan", "inf", "1e999", ""],
    "lr": ["abc", "-1", "nan", "inf", "1e999", "", "logspace(1e-4, 0.1)", "logspace(1e-4, 0.1, 0)",
           "linspace(-1, 1, 3)", "logspace(1e-4, 0.1, 100001)", "logspace(-1, 1, 5)", "logspace(1e-4, 0.1, 2.5)"],
    "count": ["abc", "0", "-1", "1.5", ""],
    "target": ["val_loss < 0.3", "no_such_metric <= 1", "test_accuracy >= 0.5", "loss <= nan", "<= 1", LONG],
    "fraction": ["abc", "-0.1", "1", "1.5", "nan", "inf", ""],
    "every": ["abc", "-1", "1.5", "", "9" * 5000],
    "select": ["", "min(test_loss)", "test_accuracy", "min(loss)", "max(val_nope)", "updates", "min(", LONG],
    "name": ["", "   "],
    "input-file": ["missing.toml", "{folder}", ""],
    "output-file": ["{folder}", ""],
    "directory": ["{cwd}/no-such-plugins-dir"],
    "kind": ["no_such_kind", LONG],
    "scheduler-address": ["tcp://127.0.0.1:1"],
    "plugin-name": ["", "Bad-Name", "1abc", "a/b", "tanh", LONG],
    "new-folder": ["", "{store}", "{folder}"],
    "host": ["", "no such host", "[::1", LONG],
    "text": [""],
}

ROLE_OF: dict[str, str] = {
    "--db": "url", "--from": "url", "--to": "url",
    "--experiment": "experiment", "--resume": "experiment", "--study": "experiment",
    "RUN": "run", "RUNS_": "run",
    "--where": "where", "--sort": "sort", "--status": "status",
    "--format": "choice", "--kind": "choice", "--x": "choice", "--dtype": "choice", "--executor": "choice",
    "--metric": "metric", "--by": "group", "--baseline": "baseline",
    "--opt": "spec:optimizer", "--model": "spec:model", "--loss": "spec:loss", "--dataset": "spec:dataset",
    "--schedule": "spec:schedule", "NAME": "spec:component",
    "--lr": "lr", "--tol": "number", "--epochs": "count", "--batch-size": "count",
    "--val-split": "fraction", "--eval-every": "every", "--target": "target",
    "--tune-seeds": "count", "--seeds": "count", "--select": "select",
    "--name": "name", "FILE": "input-file", "--out": "output-file", "--plot": "output-file",
    "--plugins-dir": "directory", "KIND": "kind", "--scheduler": "scheduler-address",
    "--dir": "new-folder", "PLUGIN_NAME": "plugin-name", "--host": "host",
}
"""The role of each free-text parameter (by its long option or metavar)."""


def _name(param: Any) -> str:
    if param.param_type_name == "argument":
        return str(param.name).upper()
    return _flag(param)


def _text_params() -> list[tuple[tuple[str, ...], Any]]:
    out = [((), p) for p in _root_params()]
    out += [(path, p) for path, cmd in _commands() for p in cmd.params]
    return [(path, p) for path, p in out
            if not getattr(p, "is_flag", False) and _base(_annotation(p)) is str and not _choices(p)
            and _name(p) != "--help"]


def test_every_text_option_gets_bad_values() -> None:
    """Free text without a role still gets the value no option takes (empty); a role adds the deeper ones."""
    params = _text_params()
    assert params and all(_bad_text_values(p) for _, p in params)
    assert sum(_name(p) in ROLE_OF for _, p in params) >= len(ROLE_OF) - 2


def _bad_text_values(param: Any) -> list[str]:
    return ROLES.get(ROLE_OF.get(_name(param), ""), []) or ROLES["text"]


def _typed_bad_values(param: Any) -> list[str]:
    """Wrong values read from a parameter's definition: its type, range and choices."""
    if getattr(param, "is_flag", False):
        return []
    choices = _choices(param)
    if choices:
        return ["no-such-choice", LONG]
    info = param.type_descriptor.parameter_info
    base = _base(_annotation(param))
    low, high = info.min, info.max
    if base is int:
        values = ["abc", "1.5", "", "9" * 5000, LONG]
        values += [str(low - 1)] if low is not None else []
        values += [str(high + 1)] if high is not None else []
        return values
    if base is float:
        values = ["abc", "", "nan", LONG]
        values += [str(low - 1)] if low is not None else []
        values += [str(high + 1)] if high is not None else []
        return values
    return []


@dataclass(frozen=True)
class Case:
    command: tuple[str, ...]
    args: tuple[str, ...]

    def __str__(self) -> str:
        shown = [a if len(a) < 60 else f"<{len(a)} chars>" for a in self.args]
        return " ".join(shown)


def _baseline(path: tuple[str, ...], s: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Valid arguments for ``path`` (positionals by name, then options) that the bad value is added to."""
    db = ["--db", s["url"]]
    table: dict[tuple[str, ...], tuple[dict[str, str], list[str]]] = {
        ("gradcheck",): ({"NAME": "tanh"}, []),
        ("check",): ({"NAME": "tanh"}, []),
        ("plugin", "new"): ({"PLUGIN_NAME": "fresh"}, ["--kind", "activation"]),
        ("run",): ({}, ["-q", "--opt", "adamw", "--seeds", "1", "--epochs", "1", *db]),
        ("tune",): ({}, ["-q", "--opt", "adamw", "--lr", "0.1", "--tune-seeds", "1", "--seeds", "1", "--epochs", "1",
                         *db]),
        ("show",): ({"RUN": s["run_id"]}, db),
        ("plot",): ({}, ["-e", s["experiment"], "--out", f"{s['cwd']}/plot.png", *db]),
        ("export",): ({}, ["--out", f"{s['cwd']}/export.csv", *db]),
        ("rm",): ({"RUNS_": "zzzzzzzz"}, db),
        ("db", "copy"): ({}, ["--from", s["url"], "--to", f"sqlite:///{s['cwd']}/copy.db"]),
    }
    if path in table:
        return table[path]
    cmd = dict(_commands())[path]
    has_db = any(_name(p) == "--db" for p in cmd.params)
    return {}, (db if has_db else [])


def _cases(s: dict[str, str]) -> list[Case]:
    cases: list[Case] = []
    commands = dict(_commands())
    for value in _typed_bad_values_root() + [v.format(**s) for v in ROLES["directory"]]:
        cases.append(Case(("runs",), ("--plugins-dir", value, "runs", "--db", s["url"])))
    for path, cmd in commands.items():
        positionals, options = _baseline(path, s)
        for param in cmd.params:
            name = _name(param)
            if name == "--help":
                continue
            values = _typed_bad_values(param)
            if not values and not getattr(param, "is_flag", False):
                values = [v.format(**s) if v is not LONG else v for v in _bad_text_values(param)]
            if getattr(param, "is_flag", False):
                values = []
                cases.append(Case(path, (*path, *_argv(positionals), *options, f"{_flag(param)}=abc")))
            for value in values:
                if param.param_type_name == "argument":
                    args = (*path, *_argv({**positionals, name: value}, order=cmd.params), *options)
                else:
                    args = (*path, *_argv(positionals, order=cmd.params), *options, _flag(param), value)
                cases.append(Case(path, args))
    return cases


def _typed_bad_values_root() -> list[str]:
    return [v for p in _root_params() for v in _typed_bad_values(p)]


def _argv(positionals: dict[str, str], order: list[Any] | None = None) -> list[str]:
    if order is None:
        return list(positionals.values())
    names = [_name(p) for p in order if p.param_type_name == "argument"]
    return [positionals[n] for n in names if n in positionals]


def _fill(store: Store, cwd: Path) -> dict[str, str]:
    return {"url": store.url, "folder": str(store.folder), "cwd": str(cwd), "store": str(store.path),
            "experiment": store.experiment, "run_id": store.run_id}


def test_every_flag_of_every_command_refuses_bad_values(store: Store, tmp_path: Path) -> None:
    """All generated CLI cases in one test (fast: one process), each checked on its own."""
    s = _fill(store, tmp_path)
    cases = _cases(s)
    assert len(cases) > 150
    covered = {c.command for c in cases}
    assert covered >= {path for path, _ in _commands()}
    failures = []
    for case in cases:
        before = _snapshot(store, tmp_path)
        res = _invoke(list(case.args))
        try:
            _assert_refused(res, str(case))
            assert _snapshot(store, tmp_path) == before, f"{case}: the store or the working directory changed"
        except AssertionError as err:
            failures.append(str(err).splitlines()[0][:400])
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures)


# ------------------------------------------------------------------------------- the registry's definitions

FLAG_OF_KIND = {"layer": "--model", "activation": "--model", "loss": "--loss", "optimizer": "--opt",
                "scheduler": "--schedule", "dataset": "--dataset"}

WRONG_TYPE: list[Any] = ["text", True, 1.5, -1, [1, 2], None, {"a": 1}]
GRID_KINDS = ("optimizer", "scheduler")
"""Kinds whose numeric arguments take a list (a grid): their bad lists are empty, non-numeric or over a switch."""


def _literal(value: Any) -> str:
    return repr(value)


def _component_cases() -> list[tuple[str, str, str]]:
    """``(kind, flag, spec)``: for every component, an unknown argument, too many positional arguments, and
    for every hinted argument each value of the wrong type."""
    system = load_plugins()
    cases = []
    for kind in KINDS:
        flag = FLAG_OF_KIND.get(kind)
        if flag is None:
            continue
        for reg in system.registry.registrations(kind):
            if reg.plugin.startswith("file:"):
                continue
            name = reg.name
            cases.append((kind, flag, f"{name}(no_such_argument=1)"))
            sig = inspect.signature(reg.cls.__init__)
            params = [p for n, p in sig.parameters.items() if n != "self"]
            if not any(p.kind == p.VAR_POSITIONAL for p in params):
                cases.append((kind, flag, f"{name}({', '.join(['1'] * (len(params) + 1))})"))
            hints = argument_hints(reg.cls)
            required = {p.name: _valid(hints.get(p.name)) for p in params
                        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
            for arg, hint in hints.items():
                if arg not in sig.parameters:
                    continue
                for bad in WRONG_TYPE:
                    if fits(bad, hint):
                        continue
                    if isinstance(bad, list) and kind in GRID_KINDS:  # a list of numbers is a grid there:
                        for grid in ([], [1, "x"], [True, False]):  # empty, non-numeric, over a switch
                            kwargs = {**required, arg: grid}
                            cases.append((kind, flag, f"{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"))
                        continue
                    kwargs = {**required, arg: bad}
                    spec = f"{name}({', '.join(f'{k}={_literal(v)}' for k, v in kwargs.items())})"
                    cases.append((kind, flag, spec))
    return cases


def _valid(hint: Any) -> Any:
    """A value of type ``hint`` for required arguments that are not under test."""
    for candidate in ("data.npz", 3, 0.5, True, [1]):
        if hint is None or fits(candidate, hint):
            return candidate
    return 1


def test_every_argument_of_every_component_refuses_wrong_types(store: Store, tmp_path: Path) -> None:
    s = _fill(store, tmp_path)
    cases = _component_cases()
    assert len(cases) > 100
    assert {kind for kind, _, _ in cases} >= set(FLAG_OF_KIND)
    base = ["run", "-q", "--opt", "adamw", "--seeds", "1", "--epochs", "1", "--db", s["url"]]
    failures = []
    for kind, flag, spec in cases:
        value = f"linear(3), {spec}, linear(1)" if kind == "activation" else spec
        before = _snapshot(store, tmp_path)
        res = _invoke([*base, flag, value])
        try:
            _assert_refused(res, f"{flag} {value}")
            assert _snapshot(store, tmp_path) == before, f"{flag} {value}: the store or the directory changed"
        except AssertionError as err:
            failures.append(str(err).splitlines()[0][:400])
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures)


REAL_PROCESS = {("run",), ("runs",), ("gradcheck",), ("db", "copy")}
"""Commands whose first generated case also runs as a real process (the in-process path is the same code)."""


def test_one_bad_value_per_command_in_a_real_process(store: Store, tmp_path: Path) -> None:
    """The in-process cases are faithful: the console script gives the same one line and exit 2."""
    s = _fill(store, tmp_path)
    first: dict[tuple[str, ...], Case] = {}
    for case in _cases(s):
        if LONG not in case.args:
            first.setdefault(case.command, case)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPSVC_")}
    for case in [c for path, c in first.items() if path in REAL_PROCESS]:
        before = _snapshot(store, tmp_path)
        proc = subprocess.run([sys.executable, "-m", "expsvc", *case.args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, f"{case}: {proc.stderr}"
        assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: "), f"{case}: {proc.stderr}"
        assert _snapshot(store, tmp_path) == before, str(case)


# ------------------------------------------------------------------------------- named findings


@pytest.mark.parametrize(("args", "expected"), [
    (["run", "--seeds", "abc"], "error: --seeds: 'abc' is not an integer"),
    (["run", "--seed", "abc"], "error: --seed: 'abc' is not an integer"),
    (["run", "-j", "abc"], "error: --jobs: 'abc' is not an integer"),
    (["runs", "--limit", "abc"], "error: --limit: 'abc' is not an integer"),
    (["gradcheck", "tanh", "--tol", "abc"], "error: --tol: 'abc' is not a number"),
    (["run", "--epochs", "abc"], "error: --epochs: 'abc' is not an integer"),
])
def test_integer_flags_have_the_one_line_style(args: list[str], expected: str) -> None:
    """Finding 15: every numeric flag answers like ``--epochs abc`` (click's answer was four lines)."""
    res = _invoke(args)
    assert res.exit_code == 2
    assert res.stderr == expected + "\n"


@pytest.mark.parametrize("args", [
    ["gradcheck", "tanh", "--seed", "-1"], ["gradcheck", "linear(3)", "--seed", "-1"],
    ["gradcheck", "tanh", "--seed", str(2**64)], ["run", "--seed", "-1"], ["run", "--seeds", "-1"],
    ["run", "--dataset", "points(seed=-1)"], ["run", "--dataset", "moons(seed=1.5)"],
    ["run", "--dataset", "points(seed=True)"],
])
def test_every_seed_option_refuses_bad_seeds_in_one_line(args: list[str], tmp_path: Path) -> None:
    """Finding 5: ``gradcheck tanh --seed -1`` was a numpy traceback."""
    res = _invoke([*args, "--db", f"sqlite:///{tmp_path / 's.db'}"] if args[0] == "run" else args)
    _assert_refused(res, " ".join(args))
    assert "seed" in res.stderr
    assert not (tmp_path / "s.db").exists()


def _npz(path: Path, **arrays: Any) -> str:
    np.savez(path, **arrays)
    return str(path)


NPZ_CASES = {
    "only_x": ({"x": np.ones((10, 2))}, "holds only 'x'"),
    "zero_rows": ({"x": np.ones((0, 2)), "y": np.ones(0)}, "no data rows"),
    "zero_columns_rows": ({"a": np.ones(0), "b": np.ones(0)}, "no data rows"),
    "three_column_y": ({"x": np.ones((10, 2)), "y": np.arange(30.0).reshape(10, 3)}, "target has (4, 3)"),
    "mismatched_lengths": ({"x": np.ones((10, 2)), "y": np.ones(7)}, "'y' has 7 rows but 'x' has 10"),
    "mismatched_columns": ({"a": np.ones(10), "b": np.ones(7)}, "columns differ in length"),
    "string_dtype": ({"x": np.array([["a", "b"]] * 10), "y": np.ones(10)}, "non-numeric dtype"),
    "complex_dtype": ({"x": np.ones((10, 2)) + 1j, "y": np.ones(10)}, "non-numeric dtype"),
    "object_dtype": ({"x": np.array([[1, None]] * 10, dtype=object), "y": np.ones(10)}, "not a readable .npz"),
    "scalar_y": ({"x": np.ones((10, 2)), "y": np.float64(1)}, "'y' has no rows"),
    "three_d_x": ({"x": np.ones((10, 2, 2)), "y": np.ones(10)}, "must be (N,), (N, F) or images (N, C, H, W)"),
}


@pytest.mark.parametrize("case", sorted(NPZ_CASES))
def test_npz_edge_cases_are_one_clear_line(case: str, tmp_path: Path) -> None:
    """Finding 6: an NPZ holding only ``x``, 0 rows, a 3-column ``y``... (IndexError, numpy's own words)."""
    arrays, words = NPZ_CASES[case]
    path = _npz(tmp_path / f"{case}.npz", **arrays)
    res = _invoke(["run", "-q", "--seeds", "1", "--epochs", "1", "--loss", "mse", "--model", "linear(1)",
                   "--dataset", f"file({path!r})", "--db", f"sqlite:///{tmp_path / 'n.db'}"])
    _assert_refused(res, case)
    assert words in res.stderr, res.stderr
    assert not (tmp_path / "n.db").exists()


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_paths_that_are_not_files_say_what_they_are(kind: str, tmp_path: Path) -> None:
    """Finding 17: a TOML path or ``file(path=...)`` that is a directory or FIFO "did not exist"."""
    words = {"directory": "is a directory", "fifo": "is a FIFO"}[kind]
    for name in ("exp.toml", "data.npz"):
        path = tmp_path / name
        path.mkdir() if kind == "directory" else os.mkfifo(path)
    toml = _invoke(["run", str(tmp_path / "exp.toml"), "--db", f"sqlite:///{tmp_path / 'p.db'}"])
    _assert_refused(toml, "toml")
    assert words in toml.stderr and "does not exist" not in toml.stderr
    data = _invoke(["run", "-q", "--dataset", f"file({str(tmp_path / 'data.npz')!r})",
                    "--db", f"sqlite:///{tmp_path / 'p.db'}"])
    _assert_refused(data, "file()")
    assert words in data.stderr
    assert not (tmp_path / "p.db").exists()


@pytest.mark.parametrize(("opt", "words"), [
    ("adamw(lr=1e999)", "1e999 is not a finite number"),
    ("adamw(betas=(0.9, -1e999))", "is not a finite number"),
    ("adamw(lr=1,lr=2)", "argument 'lr' is given twice"),
    ("adamw(lr=True)", "lr=True is not allowed; expected a number > 0"),
    ("sgd(nesterov=1)", "nesterov=1 is not allowed; expected true or false"),
])
def test_wrong_words_in_specs(opt: str, words: str, tmp_path: Path) -> None:
    """Finding 17: 1e999 was reported as 'inf', duplicates took the last, True was used as 1."""
    res = _invoke(["run", "-q", "--opt", opt, "--db", f"sqlite:///{tmp_path / 'w.db'}"])
    _assert_refused(res, opt)
    assert words in res.stderr and "'inf'" not in res.stderr
    assert not (tmp_path / "w.db").exists()


def test_a_read_only_url_is_refused_before_anything_is_written(store: Store, tmp_path: Path) -> None:
    """Finding 17: ``--db "sqlite:///x.db?mode=ro"`` warned and wrote anyway."""
    before = _snapshot(store, tmp_path)
    res = _invoke(["run", "-q", "--seeds", "1", "--epochs", "1", "--db", f"{store.url}?mode=ro"])
    _assert_refused(res, "mode=ro")
    assert "'mode'" in res.stderr and "Warning" not in res.output
    assert _snapshot(store, tmp_path) == before
    fresh = _invoke(["run", "-q", "--seeds", "1", "--epochs", "1", "--db", f"sqlite:///{tmp_path / 'ro.db'}?mode=ro"])
    _assert_refused(fresh, "mode=ro on a new file")
    assert list(tmp_path.iterdir()) == []


def test_echoed_values_are_shortened(tmp_path: Path) -> None:
    """Finding 16: a 100,000-character value was echoed whole."""
    for args in (["run", "--opt", LONG], ["run", "--seeds", LONG], ["gradcheck", LONG],
                 ["run", "--model", f"linear({'9' * 100_000})"], ["run", "--name", "a b " * 30_000]):
        res = _invoke(args)
        assert res.exit_code == 2
        assert len(res.stderr) < 1100 and "characters" in res.stderr, res.stderr[:300]


@pytest.mark.parametrize("args", [
    ["run", "-q", "--model", "linear(1000000000000), tanh, linear(1)"],
    ["run", "-q", "--model", "linear(100000000), tanh, linear(1)"],
    ["run", "-q", "--dataset", "random_regression(n=1000000000)", "--loss", "mse", "--model", "linear(10)"],
    ["gradcheck", "linear(100000000000)"],
    ["gradcheck", "linear(100000)"],
])
def test_sizes_that_cannot_fit_are_refused_before_any_work(args: list[str], tmp_path: Path) -> None:
    """Finding 4: a MemoryError traceback (or hours of numeric differentiation) instead of one line."""
    res = _invoke([*args, "--db", f"sqlite:///{tmp_path / 'm.db'}"] if args[0] == "run" else args)
    _assert_refused(res, " ".join(args))
    assert "memory" in res.stderr or "at most" in res.stderr
    assert not (tmp_path / "m.db").exists()


def test_the_memory_limit_is_documented_and_overridable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["run", "-q", "--seeds", "1", "--epochs", "1", "--dataset", "random_regression(n=2000)", "--loss", "mse",
            "--model", "linear(10)", "--db", f"sqlite:///{tmp_path / 'l.db'}"]  # ~35 MB of data
    monkeypatch.setenv("EXPSVC_MEMORY_LIMIT", "10MB")
    small = _invoke(args)
    _assert_refused(small, "10MB")
    assert "EXPSVC_MEMORY_LIMIT" in small.stderr and "9.5 MiB" in small.stderr
    monkeypatch.setenv("EXPSVC_MEMORY_LIMIT", "lots")
    _assert_refused(_invoke(args), "lots")
    monkeypatch.setenv("EXPSVC_MEMORY_LIMIT", "1GiB")
    assert _invoke(args).exit_code == 0


@pytest.mark.parametrize("source", ["flag", "toml"])
def test_a_huge_epoch_count_runs_in_the_memory_of_the_steps_run(source: str, tmp_path: Path) -> None:
    """Finding 4: ``--epochs 1000000000`` (or a TOML ``epochs`` near 2**63) allocated the whole history up
    front and every run failed at start; with ``tol`` they now converge and finish."""
    url = f"sqlite:///{tmp_path / 'e.db'}"
    if source == "flag":
        args = ["run", "-q", "--opt", "adamw", "--seeds", "2", "--epochs", "1000000000", "--db", url]
    else:
        (tmp_path / "big.toml").write_text(f'optimizer = "adamw"\nseeds = 2\nepochs = {2**63 - 1}\n')
        args = ["run", str(tmp_path / "big.toml"), "-q", "--db", url]
    res = _invoke(args)
    assert res.exit_code == 0, res.output
    with sqlite3.connect(tmp_path / "e.db") as conn:
        statuses = [row[0] for row in conn.execute("SELECT status FROM runs")]
    assert statuses == ["finished", "finished"]


def test_the_history_grows_with_the_steps_run() -> None:
    """The trainer allocates history for the steps it runs, whatever ``epochs`` says."""
    from expsvc.core import Sequential, Trainer
    from expsvc.core.data import DataSplit
    from expsvc.core.rng import replica_streams
    from expsvc.plugins import get_system

    registry = get_system().registry
    init, order = replica_streams([0, 1])
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((20, 2)), rng.standard_normal((20, 1))
    data = DataSplit(x, y, x, y, "regression")
    model = Sequential([registry.create("layer", "linear(1)")]).build(2, init)
    trainer = Trainer(model, registry.create("loss", "mse"), registry.create("optimizer", "sgd(lr=0.01)"), data,
                      order, epochs=2**62, batch_size=5, tol=1e-3)
    assert trainer.history.nbytes < 1_000_000
    result = trainer.run()
    assert math.isfinite(result.history[0, 0]) and result.counts.max() < 100_000
