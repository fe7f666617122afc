"""The ``--where`` grammar: valid filters against a real SQLite store, hostile inputs, and a property test
that the compiled SQL selects exactly the runs a Python evaluation of the same predicate selects."""

from __future__ import annotations

import fnmatch
import math
import operator
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from expsvc.analysis.grammar import (
    MAX_DEPTH,
    MAX_LENGTH,
    GrammarError,
    evaluate,
    parse,
    parse_field,
    tokenize,
)
from expsvc.store import RunStore, read
from expsvc.store.models import ExperimentTag
from expsvc.store.query import compile_node
from expsvc.store.vocab import STATS
from tests import store_fixtures as fixtures

OPTS = ["adam", "sgd", "mini_bgd", "AdamW"]
LRS = [0.1, 0.01, 1e-3]
STATUSES = ["finished", "finished", "diverged", "failed", "queued"]


def _runs() -> list[dict[str, Any]]:
    """The reference runs (Python view) stored in the database."""
    out = []
    i = 0
    for oi, opt in enumerate(OPTS):
        for li, lr in enumerate(LRS):
            for seed in range(3):
                status = STATUSES[(oi + li + seed) % len(STATUSES)]
                params: dict[str, Any] = {"optimizer": opt, "lr": lr, "batch_size": 16 * (1 + seed % 2),
                                          "dataset": "points"}
                if opt == "sgd":
                    params["momentum"] = 0.9 if seed else 0.0
                acc = None if status != "finished" else round(0.5 + 0.1 * ((i * 7) % 5), 2)
                loss = [1.0 + oi, 0.5 + 0.1 * li, 0.2 + 0.01 * seed] if status != "queued" else []
                if status == "diverged":
                    loss = [1.0, 3.0, math.nan]
                out.append({
                    "params": params, "seed": seed, "status": status, "i": i,
                    "updates": None if status == "queued" else 100 + 10 * i,
                    "duration": None if status == "queued" else 0.5 * (i % 4),
                    "experiment": "alpha" if oi < 2 else "beta",
                    "acc": acc, "loss": loss,
                })
                i += 1
    return out


RUNS = _runs()
TAGS = {"alpha": ("baseline", "paper:fig2"), "beta": ()}
"""The experiments' tags (``tag`` is a set-valued field: alpha has two, beta none)."""


def _summaries(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if run["loss"]:
        out["loss"] = fixtures.series_summary(run["loss"])
    if run["acc"] is not None:
        out["test_accuracy"] = {"last": run["acc"], "min": run["acc"], "max": run["acc"], "first": run["acc"],
                                "mean": run["acc"]}
    return out


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path: Path = tmp_path_factory.mktemp("grammar") / "runs.db"
    engine = fixtures.create_db(f"sqlite:///{path}")
    with Session(engine) as s:
        exps = {name: fixtures.add_experiment(s, name) for name in ("alpha", "beta")}
        s.add_all([ExperimentTag(experiment_id=exps["alpha"], tag=t) for t in TAGS["alpha"]])
        for run in RUNS:
            summaries: dict[str, Any] = {"test_accuracy": run["acc"]} if run["acc"] is not None else {}
            run["id"] = fixtures.add_run(
                s, exps[run["experiment"]], seed=run["seed"], status=run["status"], params=run["params"],
                history={"loss": run["loss"]} if run["loss"] else None, summaries=summaries,
                updates=run["updates"], duration=run["duration"],
                created_at=fixtures.T0 + timedelta(seconds=run["i"]),
            )
            run["group"] = fixtures.group_key(run["params"])
            run["summaries"] = _summaries(run)
        s.commit()
    with RunStore.open(f"sqlite:///{path}") as store:
        yield store
    engine.dispose()


def _select(store: RunStore, where: str, check: bool = False) -> set[str]:
    """The runs a filter selects, through the id query and through the listing query (which joins more
    tables: a filter must mean the same inside it)."""
    ids = set(read.run_ids(store, where=where, check=check))
    assert {r.id for r in read.runs(store, where=where, check=check)} == ids, where
    return ids


def _py(pred: Any) -> set[str]:
    return {r["id"] for r in RUNS if pred(r)}


# ----------------------------------------------------------------------------------------- valid filters
VALID: list[tuple[str, Any]] = [
    ("params.optimizer = 'adam'", lambda r: r["params"]["optimizer"] == "adam"),
    ('params.optimizer = "sgd"', lambda r: r["params"]["optimizer"] == "sgd"),
    ("params.lr < 0.05", lambda r: r["params"]["lr"] < 0.05),
    ("params.lr <= 1e-2", lambda r: r["params"]["lr"] <= 0.01),
    ("params.lr = 1E-3", lambda r: r["params"]["lr"] == 1e-3),
    ("params.lr > -1", lambda r: True),
    ("params.lr != 0.1", lambda r: r["params"]["lr"] != 0.1),
    ("params.momentum >= 0.5", lambda r: r["params"].get("momentum", -1) >= 0.5),
    ("not params.momentum >= 0.5", lambda r: not r["params"].get("momentum", -1) >= 0.5),
    ("params.momentum != 0.9", lambda r: "momentum" in r["params"] and r["params"]["momentum"] != 0.9),
    ("params.batch_size in (16)", lambda r: r["params"]["batch_size"] == 16),
    ("params.optimizer in ('adam', 'sgd')", lambda r: r["params"]["optimizer"] in ("adam", "sgd")),
    ("params.optimizer not in ('adam', 'sgd')", lambda r: r["params"]["optimizer"] not in ("adam", "sgd")),
    ("params.optimizer like 'adam%'", lambda r: r["params"]["optimizer"].lower().startswith("adam")),
    ("params.optimizer not like '%a%'", lambda r: "a" not in r["params"]["optimizer"].lower()),
    ("params.optimizer like 's_d'", lambda r: r["params"]["optimizer"] == "sgd"),
    ("params.lr like '0.0%'", lambda r: repr(r["params"]["lr"]).startswith("0.0")),
    ("status = 'finished'", lambda r: r["status"] == "finished"),
    ("STATUS = 'finished' AND seed = 0", lambda r: r["status"] == "finished" and r["seed"] == 0),
    ("status in ('failed', 'diverged') or seed >= 2",
     lambda r: r["status"] in ("failed", "diverged") or r["seed"] >= 2),
    ("not (status = 'finished')", lambda r: r["status"] != "finished"),
    ("updates > 150", lambda r: r["updates"] is not None and r["updates"] > 150),
    ("not updates > 150", lambda r: not (r["updates"] is not None and r["updates"] > 150)),
    ("duration >= 1", lambda r: r["duration"] is not None and r["duration"] >= 1),
    ("experiment = 'beta'", lambda r: r["experiment"] == "beta"),
    ("experiment like 'AL%'", lambda r: r["experiment"] == "alpha"),
    ("metrics.accuracy >= 0.7", lambda r: r["acc"] is not None and r["acc"] >= 0.7),
    ("metrics.test_accuracy >= 0.7", lambda r: r["acc"] is not None and r["acc"] >= 0.7),
    ("last(accuracy) < 0.7", lambda r: r["acc"] is not None and r["acc"] < 0.7),
    ("metrics.loss < 0.25", lambda r: bool(r["loss"]) and math.isfinite(r["loss"][-1]) and r["loss"][-1] < 0.25),
    ("min(loss) < 0.25", lambda r: bool(r["loss"]) and min(v for v in r["loss"] if math.isfinite(v)) < 0.25),
    ("max(loss) > 2.5", lambda r: bool(r["loss"]) and max(v for v in r["loss"] if math.isfinite(v)) > 2.5),
    ("first(loss) = 1", lambda r: bool(r["loss"]) and r["loss"][0] == 1.0),
    ("mean(metrics.loss) > 1", lambda r: bool(r["loss"]) and _mean(r["loss"]) > 1),
    ("group = '" + fixtures.group_key(RUNS[0]["params"]) + "'", lambda r: r["params"] == RUNS[0]["params"]),
    ("((seed = 1))", lambda r: r["seed"] == 1),
    ("seed = 1 and (status = 'finished' or not params.lr < 0.05)",
     lambda r: r["seed"] == 1 and (r["status"] == "finished" or not r["params"]["lr"] < 0.05)),
    ("not not seed = 2", lambda r: r["seed"] == 2),
    ("params.nonexistent = 1", lambda r: False),
    ("not params.nonexistent = 1", lambda r: True),
    ("params.optimizer = 'o''brien'", None),  # two adjacent strings: an error (no SQL-style doubling)
    ("params.optimizer = 'it\\'s'", lambda r: False),
    ("seed = 1 or seed = 2 and status = 'queued'",
     lambda r: r["seed"] == 1 or (r["seed"] == 2 and r["status"] == "queued")),
    ("params.lr == 0.1", lambda r: r["params"]["lr"] == 0.1),
    ("params.lr <> 0.1", lambda r: r["params"]["lr"] != 0.1),
    ("seed in (-1, +2)", lambda r: r["seed"] == 2),
    ("duration >= .5", lambda r: r["duration"] is not None and r["duration"] >= 0.5),
]


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite)


@pytest.mark.parametrize(("where", "pred"), VALID, ids=[w for w, _ in VALID])
def test_valid_filters_select_the_right_runs(db: Any, where: str, pred: Any) -> None:
    if pred is None:
        with pytest.raises(GrammarError):
            parse(where)
        return
    assert _select(db, where) == _py(pred)
    # the Python reference semantics agree too
    node = parse(where)
    assert {r["id"] for r in RUNS if evaluate(node, _as_eval(r))} == _py(pred)


def _as_eval(r: dict[str, Any]) -> dict[str, Any]:
    return {"params": r["params"], "summaries": r["summaries"], "status": r["status"], "seed": r["seed"],
            "updates": r["updates"], "duration": r["duration"], "experiment": r["experiment"],
            "group": r["group"], "id": r["id"], "epochs": 10, "tags": TAGS[r["experiment"]]}


def test_literals_are_bound_parameters_not_sql() -> None:
    compiled = str(compile_node(parse("params.optimizer = 'x; DROP TABLE runs' and seed = 3")).compile())
    assert "DROP" not in compiled and "3" not in compiled
    assert ":" in compiled  # bound parameters


def test_listing_applies_the_filter_and_the_limits(db: Any) -> None:
    rows = read.runs(db, where="status = 'finished'", sort="-metrics.accuracy", limit=5)
    assert len(rows) == 5
    accs = [r.test_accuracy for r in rows]
    assert accs == sorted(accs, reverse=True)
    assert set(read.run_ids(db, where="seed = 0")) == _py(lambda r: r["seed"] == 0)


def test_unknown_keys_get_did_you_mean_when_checked(db: Any) -> None:
    with pytest.raises(GrammarError, match="did you mean 'momentum'"):
        read.runs(db, where="params.momentun > 0")
    with pytest.raises(GrammarError, match="did you mean 'test_accuracy'"):
        read.runs(db, where="metrics.test_acuracy > 0")


# ---------------------------------------------------------------------------------------- hostile inputs
HOSTILE = [
    "", "   ", "\t\n", ";", "status = 'finished'; DROP TABLE runs", "; DROP TABLE runs", "DROP TABLE runs",
    "status = 'x' -- comment", "-- comment", "/* c */ seed = 1", "seed = 1 /* c */", "status = 'a' OR 1=1",
    "1 = 1", "' OR '1'='1", "\" OR \"\"=\"", "status = 'unterminated", 'status = "unterminated',
    "status = 'bad escape \\q'", "status = 'trailing backslash\\", "params.", "params..lr = 1", "params.lr. = 1",
    "metrics = 1", "param.lr > 1", "metric.loss < 1", "maxx(loss) < 1", "min(loss < 1", "min() < 1",
    "min(1) < 1", "sum(loss) > 1", "stauts = 'finished'", "seed = 'a'", "status = 1", "status like 1",
    "metrics.loss = 'abc'", "seed ==", "seed =", "seed", "seed 1", "seed = = 1", "= 1", "and seed = 1",
    "seed = 1 and", "seed = 1 or", "not", "seed = 1 not", "(seed = 1", "seed = 1)", "((seed = 1)", "()",
    "seed in ()", "seed in (1,)", "seed in (1, 'a')", "seed in 1", "seed not 1", "seed in (1 2)",
    "seed = 1e999", "seed = -1e999", "seed = 1" + "0" * 400, "seed = 1.5.5", "seed = 12abc", "seed = 0x10",
    "seed = 1e", "seed = --1", "seed = - 'a'", "séed = 1", "status = 'fïnished'", "status = '完成'",
    "seed = １", "seed\u00a0= 1", "seed = 1\x00", "\x00", "status = 'a' \u202e", "😀", "status = '😀'",
    "params.lr < 0.01 ; SELECT * FROM runs", "status = 'x' UNION SELECT id FROM runs",
    "seed = 1 and (SELECT 1)", "exec('x')", "__import__('os')", "params.__class__ = 1", "seed != !1",
    "seed ! = 1", "seed => 1", "seed =< 1", "seed >< 1", "seed like", "status like 'a' escape '!'",
    "status like 'a%' and", "status is null", "seed between 1 and 2", "status = `x`", "status = [x]",
    "status = @x", "status = $1", "status = ?", "status = :x", "seed = 1 && seed = 2", "seed = 1 || seed = 2",
    "(" * (MAX_DEPTH + 1) + "seed = 1" + ")" * (MAX_DEPTH + 1), "not " * (MAX_DEPTH + 1) + "seed = 1",
    "seed = 1 " + "and seed = 1 " * 400, "status = '" + "a" * (MAX_LENGTH + 10) + "'",
    "(" * 5000, ")" * 10, "seed in (" + ",".join(["1"] * 900) + ")",
]


def test_there_are_at_least_fifty_hostile_inputs() -> None:
    assert len(set(HOSTILE)) >= 50


@pytest.mark.parametrize("where", HOSTILE, ids=[repr(h)[:40] for h in HOSTILE])
def test_hostile_input_is_a_clean_error_or_a_correct_result(db: Any, where: str) -> None:
    before = read.row_counts(db)
    try:
        ids = _select(db, where, check=True)
    except GrammarError as err:
        text = str(err)
        assert 1 <= len(text.splitlines()) <= 3, text
        assert "Traceback" not in text
        if len(text.splitlines()) == 3:
            _msg, shown, caret = text.splitlines()
            assert caret.strip() == "^"
            assert len(caret) - 1 <= len(shown)
    else:
        node = parse(where)
        assert ids == {r["id"] for r in RUNS if evaluate(node, _as_eval(r))}
    assert read.row_counts(db) == before


def test_error_messages_point_at_the_offending_token() -> None:
    with pytest.raises(GrammarError) as info:
        parse("status = 'x'; DROP TABLE runs")
    msg, shown, caret = str(info.value).splitlines()
    assert "';'" in msg
    assert shown.strip() == "status = 'x'; DROP TABLE runs"
    assert shown[caret.index("^")] == ";"
    with pytest.raises(GrammarError, match=r"did you mean 'params'"):
        parse("param.lr > 1")
    with pytest.raises(GrammarError, match=r"did you mean 'max'"):
        parse("maxx(loss) > 1")
    with pytest.raises(GrammarError, match=r"did you mean 'status'"):
        parse("stauts = 'x'")
    with pytest.raises(GrammarError, match="out of range"):
        parse("seed > 1e400")
    with pytest.raises(GrammarError, match="nested too deeply"):
        parse("(" * 40 + "seed = 1" + ")" * 40)
    with pytest.raises(GrammarError, match="limit is 2,000"):
        parse("seed = 1 and " * 200 + "seed = 1")
    with pytest.raises(GrammarError, match="empty 'in"):
        parse("seed in ()")


def test_long_expressions_show_a_window_around_the_error() -> None:
    text = "seed = 1 and " * 100 + "seed = ;"
    with pytest.raises(GrammarError) as info:
        parse(text)
    _, shown, caret = str(info.value).splitlines()
    assert len(shown) <= 80
    assert shown[caret.index("^")] == ";"


def test_tokens_and_fields() -> None:
    kinds = [t.kind for t in tokenize("min(loss) >= -1.5e-3 and params.a.b in ('x', \"y\")")]
    assert kinds == ["ident", "(", "ident", ")", "op", "sign", "number", "keyword", "ident", "keyword", "(",
                     "string", ",", "string", ")", "end"]
    assert str(parse_field("metrics.accuracy")) == "metrics.test_accuracy"
    assert str(parse_field("min(f1)")) == "min(test_f1)"
    assert parse_field("params.optimizer.lr").key == "optimizer.lr"
    with pytest.raises(GrammarError):
        parse_field("seed = 1")


# ------------------------------------------------------------------------------------------ property test
NUM_FIELDS = {"params.lr": [*LRS, 0.05, 1.0], "params.momentum": [0.0, 0.5, 0.9], "seed": [0, 1, 2, 3],
              "updates": [100, 150, 200, 400], "metrics.accuracy": [0.5, 0.6, 0.75, 0.9],
              "min(loss)": [0.2, 0.25, 0.5, 1.0], "params.batch_size": [16, 32]}
TEXT_FIELDS = {"params.optimizer": [*OPTS, "ADAM", "x"], "status": [*STATUSES, "running"],
               "experiment": ["alpha", "beta"]}
PATTERNS = ["adam%", "%gd", "s_d", "%", "A%", "%a%", "fin%", "be__"]
OPS = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
       ">=": operator.ge}


def _value(run: dict[str, Any], name: str) -> Any:
    if name.startswith("params."):
        return run["params"].get(name[7:])
    if name == "metrics.accuracy":
        return run["acc"]
    if name == "min(loss)":
        finite = [v for v in run["loss"] if math.isfinite(v)]
        return min(finite) if finite else None
    return run[name]


def _num_literal(v: float) -> st.SearchStrategy[str]:
    return st.sampled_from([repr(v), f"{v:e}", f"{v:g}"])


def _compare() -> st.SearchStrategy[tuple[str, Any]]:
    def num(draw_field: str) -> st.SearchStrategy[tuple[str, Any]]:
        return st.tuples(st.sampled_from(list(OPS)), st.sampled_from(NUM_FIELDS[draw_field]).flatmap(_num_literal)
                         ).map(lambda t: (f"{draw_field} {t[0]} {t[1]}", _leaf(draw_field, OPS[t[0]], float(t[1]))))

    def text(field: str) -> st.SearchStrategy[tuple[str, Any]]:
        return st.one_of(
            st.tuples(st.sampled_from(["=", "!="]), st.sampled_from(TEXT_FIELDS[field]), st.booleans()).map(
                lambda t: (f"{field} {t[0]} {_quote(t[1], t[2])}", _leaf(field, OPS[t[0]], t[1]))),
            st.tuples(st.lists(st.sampled_from(TEXT_FIELDS[field]), min_size=1, max_size=3), st.booleans()).map(
                lambda t: (f"{field} {'not in' if t[1] else 'in'} ({', '.join(_quote(v, True) for v in t[0])})",
                           _in_leaf(field, t[0], t[1]))),
            st.tuples(st.sampled_from(PATTERNS), st.booleans()).map(
                lambda t: (f"{field} {'not like' if t[1] else 'like'} '{t[0]}'", _like_leaf(field, t[0], t[1]))),
        )

    return st.one_of(*[num(f) for f in NUM_FIELDS], *[text(f) for f in TEXT_FIELDS])


def _quote(s: str, single: bool) -> str:
    return f"'{s}'" if single else f'"{s}"'


def _leaf(field: str, op: Any, lit: Any) -> Any:
    def pred(r: dict[str, Any]) -> bool:
        v = _value(r, field)
        if v is None or isinstance(v, str) != isinstance(lit, str):
            return False
        return bool(op(v, lit))
    return pred


def _in_leaf(field: str, values: list[str], negated: bool) -> Any:
    def pred(r: dict[str, Any]) -> bool:
        v = _value(r, field)
        return v is not None and ((v in values) != negated)
    return pred


def _like_leaf(field: str, pattern: str, negated: bool) -> Any:
    rx = re.compile(fnmatch.translate(pattern.replace("%", "*").replace("_", "?")), re.IGNORECASE)

    def pred(r: dict[str, Any]) -> bool:
        v = _value(r, field)
        return v is not None and ((rx.match(v) is not None) != negated)
    return pred


def _combine(children: st.SearchStrategy[tuple[str, Any]]) -> st.SearchStrategy[tuple[str, Any]]:
    def both(op: str) -> st.SearchStrategy[tuple[str, Any]]:
        def make(t: tuple[tuple[str, Any], tuple[str, Any]]) -> tuple[str, Any]:
            (ta, pa), (tb, pb) = t
            if op == "and":
                return f"({ta}) and ({tb})", lambda r: pa(r) and pb(r)
            return f"({ta}) or ({tb})", lambda r: pa(r) or pb(r)
        return st.tuples(children, children).map(make)

    return st.one_of(both("and"), both("or"),
                     children.map(lambda t: (f"not ({t[0]})", lambda r: not t[1](r))))


EXPRESSIONS = st.recursive(_compare(), _combine, max_leaves=8)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(expr=EXPRESSIONS)
def test_sql_filter_matches_python_evaluation(db: Any, expr: tuple[str, Any]) -> None:
    text, pred = expr
    assert _select(db, text) == _py(pred), text


# ------------------------------------------------------------------------- every field × every operator
def _literals(db: Any) -> dict[str, list[Any]]:
    """Values to compare each field of the grammar with (generated from the grammar's own field list)."""
    from expsvc.analysis.grammar import RUN_FIELDS

    sample = RUNS[4]
    run_values = {"status": "finished", "seed": 1, "updates": 150, "epochs": 10, "duration": 0.5,
                  "experiment": "alpha", "group": sample["group"], "id": sample["id"], "tag": "baseline"}
    assert set(run_values) == set(RUN_FIELDS), "a new run field needs a literal here"
    out: dict[str, list[Any]] = {name: [run_values[name]] for name in RUN_FIELDS}
    out["tag"] = ["baseline", "paper:fig2", "nope"]
    out["params.optimizer"] = ["sgd", 0.1]
    out["params.lr"] = [0.01, "0.01"]
    for stat in STATS:
        out[f"{stat}(loss)"] = [0.5]
    out["metrics.accuracy"] = [0.6]
    return out


def _literal(v: Any) -> str:
    return f"'{v}'" if isinstance(v, str) else repr(v)


def test_every_field_with_every_operator_matches_python(db: Any) -> None:
    """Every field × every comparison, ``in``/``not in``, ``like``/``not like``, through both the id query and
    the listing query (which joins ``experiments``: ``experiment = 'x'`` once failed there)."""
    from expsvc.analysis.grammar import OPERATORS

    checked = 0
    for name, values in _literals(db).items():
        for v in values:
            lit = _literal(v)
            wheres = [f"{name} {op} {lit}" for op in OPERATORS]
            wheres += [f"{name} in ({lit})", f"{name} not in ({lit}, {lit})"]
            if isinstance(v, str):
                wheres += [f"{name} like '{v[:2]}%'", f"{name} not like '%{v[-1:]}'"]
            for where in wheres:
                try:
                    node = parse(where)
                except GrammarError:
                    assert isinstance(v, str) != (name in ("status", "experiment", "tag", "group", "id")), where
                    continue
                want = {r["id"] for r in RUNS if evaluate(node, _as_eval(r))}
                assert _select(db, where) == want, where
                checked += 1
    assert checked > 100


def test_run_fields_of_the_grammar_all_have_a_column() -> None:
    from expsvc.analysis.grammar import RUN_FIELDS
    from expsvc.store.query import RUN_COLUMNS

    assert set(RUN_FIELDS) == set(RUN_COLUMNS)


@pytest.mark.parametrize("where", ["experiment = 'alpha'", "experiment like 'al%'", "experiment in ('alpha')",
                                   "experiment != 'beta' and seed = 0"])
def test_cli_runs_export_rm_filter_on_the_experiment(tmp_path: Path, db: Any, where: str) -> None:
    """``runs``, ``export`` and ``rm`` take ``--where "experiment = ..."`` (it used to end in a traceback)."""
    import json
    import shutil
    import subprocess
    import sys

    def expsvc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "expsvc", *args], capture_output=True, text=True, timeout=120)

    copy = tmp_path / "copy.db"
    source = db.url.removeprefix("sqlite:///")
    for suffix in ("", "-wal"):  # the module's store is open: recent pages may still be in the WAL
        if Path(source + suffix).exists():
            shutil.copy(source + suffix, str(copy) + suffix)
    url = f"sqlite:///{copy}"
    want = {r["id"] for r in RUNS if evaluate(parse(where), _as_eval(r))}
    res = expsvc("runs", "--db", url, "--where", where, "--json")
    assert res.returncode == 0, res.stderr
    assert {r["id"] for r in json.loads(res.stdout)} == want
    res = expsvc("export", "--db", url, "--where", where, "--format", "json")
    assert res.returncode == 0, res.stderr
    assert {r["id"] for r in json.loads(res.stdout)["runs"]} == want
    res = expsvc("rm", "--db", url, "--where", where, "--yes")
    assert res.returncode == 0, res.stderr
    with RunStore.open(url) as store:
        assert set(read.run_ids(store)) == {r["id"] for r in RUNS} - want
