"""What ``expsvc runs`` and ``expsvc compare`` import: start-up is most of their time (benchmark target T6).

Checked in fresh interpreters through ``sys.modules`` (never by timing): ``runs`` needs neither numpy, the
comparison (statistics, scipy) nor the ``--where`` grammar, and no command needs pydantic to parse its
options.  Plus the contract of the CLI's plain option coercion: the same values and error types as typer's own
(the messages are expsvc's one-line style).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer

from tests import store_fixtures as fixtures

_PROBE = """
import json, sys
import typer, typer.core, typer.main
before = set(sys.modules)
from expsvc.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit_:
    code = exit_.code
else:
    code = 0
print(json.dumps({"code": code, "before": sorted(before), "after": sorted(sys.modules)}))
"""

HEAVY_FOR_RUNS = ("numpy", "scipy", "scipy.special", "expsvc.analysis.compare", "expsvc.analysis.stats",
                  "expsvc.analysis.grammar", "expsvc.analysis.plots", "matplotlib")


@pytest.fixture()
def store_url(tmp_path: Path) -> str:
    """A small store: 20 runs (4 configurations × 5 seeds) of 5 steps each."""
    url = f"sqlite:///{tmp_path / 'weight.db'}"
    engine = fixtures.create_db(url)
    try:
        fixtures.populate_benchmark(engine, runs=20, steps=5)
    finally:
        engine.dispose()
    return url


def _modules_after(*args: str) -> dict[str, Any]:
    """Run ``expsvc ARGS`` in a fresh interpreter; its exit code and the modules loaded before and after."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"code": out["code"], "before": set(out["before"]), "after": set(out["after"])}


def test_runs_imports_no_statistics_grammar_or_pydantic(store_url: str) -> None:
    got = _modules_after("runs", "--db", store_url)
    assert got["code"] == 0
    assert not [m for m in HEAVY_FOR_RUNS if m in got["after"]]
    if "pydantic" not in got["before"]:  # a typer that imports pydantic by itself is not ours to fix
        assert "pydantic" not in got["after"]


def test_runs_with_where_and_sort_still_works(store_url: str) -> None:
    got = _modules_after("runs", "--db", store_url, "--where", "params.lr > 0", "--sort", "-min(loss)", "-n", "3")
    assert got["code"] == 0
    assert "expsvc.analysis.grammar" in got["after"]
    assert "expsvc.analysis.compare" not in got["after"]


def test_compare_parses_its_options_without_pydantic(store_url: str) -> None:
    got = _modules_after("compare", "--db", store_url, "-m", "final_loss", "-m", "min(loss)", "--format", "csv")
    assert got["code"] == 0
    if "pydantic" not in got["before"]:
        assert "pydantic" not in got["after"]


# ---------------------------------------------------------------------------- plain option coercion
def _params() -> dict[str, Any]:
    """The parameters of a small typer command, built the way the expsvc app builds its own."""
    from expsvc.cli.common import PlainValuesGroup

    app = typer.Typer(cls=PlainValuesGroup)

    @app.command()
    def cmd(
        text: Annotated[str | None, typer.Option()] = None,
        count: Annotated[int | None, typer.Option()] = None,
        many: Annotated[list[str] | None, typer.Option()] = None,
        ints: Annotated[list[int] | None, typer.Option()] = None,
        ratio: Annotated[float, typer.Option()] = 0.5,
        seed: Annotated[int, typer.Option()] = 0,
        bounded: Annotated[int, typer.Option(min=1, max=9)] = 3,
    ) -> None:
        """A command."""

    @app.command()
    def other() -> None:
        """A second command, so that the app is a group."""

    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands["cmd"].params}  # type: ignore[attr-defined]


CASES = [
    ("text", None), ("text", "adamw"), ("text", ""), ("text", " spaced "), ("text", "0.5"),
    ("count", None), ("count", "5"), ("count", "0"), ("count", "-3"), ("count", "007"), ("count", " 4"),
    ("count", "2.0"), ("count", "abc"), ("count", "99999999999999999999999"), ("count", "5_0"),
    ("many", None), ("many", ()), ("many", ("a", "b b", "")), ("many", "a"),
    ("ints", None), ("ints", ("1", "2")),
    ("ratio", 0.5), ("ratio", "1e-3"), ("ratio", "nan"),
    ("seed", 0), ("seed", "12"), ("bounded", 3), ("bounded", "5"), ("bounded", "12"),
]


def _outcome(fn: Any, value: Any) -> tuple[str, Any]:
    try:
        result = fn(value)
    except Exception as err:  # the error typer reports (type and message) is part of the contract
        return "error", (type(err).__name__, str(err))
    return "value", (type(result).__name__, repr(result))  # repr: nan == nan


@pytest.mark.parametrize(("name", "value"), CASES)
def test_plain_coercion_matches_typer(name: str, value: Any) -> None:
    pytest.importorskip("typer._coercion", reason="typer without lazily built runtime coercion")
    from typer._coercion import build_runtime_param

    from expsvc.cli.common import _PlainValues, bad_number_message

    param = _params()[name]
    if not hasattr(param, "type_descriptor"):
        pytest.skip("typer without type descriptors")
    ctx = None  # coerce only hands it on to BadParameter
    plain = _PlainValues(param)
    full = build_runtime_param(param.type_descriptor)
    got = _outcome(lambda v: plain.coerce(v, param, ctx), value)
    want = _outcome(lambda v: full.coerce(v, param, ctx), value)
    if value == "" or (isinstance(value, tuple) and "" in value):  # expsvc refuses empty values typer takes
        assert got == ("error", ("BadParameter", "an empty value is not allowed"))
        return
    if want[0] == "error":  # same error type; the message is expsvc's one-line style, naming the value
        assert got[0] == "error" and got[1][0] == want[1][0]
        numeric = bad_number_message(value, param.type_descriptor.annotation) is not None
        assert (repr(str(value)) in got[1][1]) if numeric else got == want
    else:
        assert got == want


def test_group_gives_every_parameter_plain_coercion() -> None:
    pytest.importorskip("typer._coercion", reason="typer without lazily built runtime coercion")
    from expsvc.cli.common import _PlainValues

    params = _params()
    if not hasattr(next(iter(params.values())), "_runtime_param"):
        pytest.skip("typer without lazily built runtime coercion")
    assert all(isinstance(p._runtime_param, _PlainValues) for p in params.values())


def test_option_values_through_the_plain_group(store_url: str) -> None:
    from typer.testing import CliRunner

    from expsvc.cli.analysis import register
    from expsvc.cli.common import PlainValuesGroup

    app = typer.Typer(cls=PlainValuesGroup, pretty_exceptions_enable=False)
    register(app)
    ok = CliRunner().invoke(app, ["runs", "--db", store_url, "--limit", "3", "--csv"])
    assert ok.exit_code == 0, ok.output
    assert len(ok.output.splitlines()) == 4  # header + 3 runs
    bad = CliRunner().invoke(app, ["runs", "--db", store_url, "--limit", "abc"])
    assert bad.exit_code == 2
    assert bad.output == "error: --limit: 'abc' is not an integer\n"
    assert CliRunner().invoke(app, ["runs", "--help"]).exit_code == 0
