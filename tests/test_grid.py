"""Hyper-parameter grids on the replica axis: a grid group's every replica equals its run alone, bit for bit."""

from __future__ import annotations

import inspect
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from expsvc import specs
from expsvc.errors import ExpsvcError
from expsvc.plugins import load_plugins
from expsvc.runner import spec as spec_module
from expsvc.runner.api import Experiment, plan_resume, resume
from expsvc.runner.spec import ExperimentSpec
from expsvc.store import RunStore
from expsvc.store.models import MetricChunk, Run
from tests.conftest import run_cli
from tests.test_plugins import install_distribution

BASE = {"dataset": "points", "model": "linear(4), tanh, linear(1)", "loss": "bce_with_logits", "seeds": 3,
        "epochs": 6, "batch_size": 50, "tol": 0}
"""Small and short: the grid, not the training, is under test."""

GRID_VALUES: dict[str, list[Any]] = {
    "lr": [0.01, 0.05], "momentum": [0, 0.9], "dampening": [0, 0.5], "weight_decay": [0, 0.05],
    "betas": [(0.9, 0.999), (0.8, 0.99)], "eps": [1e-8, 1e-3], "step_size": [1, 2], "gamma": [0.5, 0.9],
    "t_max": [2, 3], "eta_min": [0, 0.001],
}
"""Two values per numeric hyper-parameter of a built-in; the test fails for a new one until it is listed."""
NEEDS = {"dampening": {"momentum": 0.9}, "step_size": {}, "t_max": {}}
REQUIRED = {"step": {"step_size": 2}, "cosine": {"t_max": 3}}


def _numeric_parameters(cls: type) -> list[str]:
    out = []
    for name, param in inspect.signature(cls).parameters.items():
        default = param.default
        if isinstance(default, bool) or name in ("nesterov", "amsgrad"):
            continue
        if default is inspect.Parameter.empty or default is None or isinstance(default, int | float | tuple):
            out.append(name)
    return out


def builtin_grids() -> tuple[list[str], list[str]]:
    """``(optimizers, schedules)``: for every built-in and each of its numeric hyper-parameters, a spec with a
    grid over that parameter (generated from the registry)."""
    system = load_plugins()
    optimizers, schedules = [], []
    for kind, out in (("optimizer", optimizers), ("scheduler", schedules)):
        for reg in system.registry.registrations(kind):
            if not reg.cls.__module__.startswith("expsvc.builtins."):
                continue
            for arg in _numeric_parameters(reg.cls):
                assert arg in GRID_VALUES, f"{reg.name}: no grid values for {arg!r}; add them to GRID_VALUES"
                fixed = {**REQUIRED.get(reg.name, {}), **NEEDS.get(arg, {})}
                fixed.pop(arg, None)
                args = [f"{k}={v!r}" for k, v in fixed.items()] + [f"{arg}={GRID_VALUES[arg]!r}"]
                out.append(f"{reg.name}({', '.join(args)})")
    return optimizers, schedules


def numbers(url: str, experiment: str) -> dict[tuple[str, int], tuple[Any, ...]]:
    """Per (configuration, seed): status, updates, loss history, summaries, final parameters."""
    with RunStore.open(url, mark_stale=False) as store:
        found = store.resolve_experiment(experiment)
        with store.session() as session:
            runs = {r.id: r for r in session.scalars(sa.select(Run).where(Run.experiment_id == found.id))}
        histories = store.histories(list(runs))
        summaries = store.summaries(list(runs))
        out = {}
        for run_id, run in runs.items():
            params = store.load_params(run_id)
            config = {k: v for k, v in run.config.items() if k != "seed"}
            out[(json.dumps(config, sort_keys=True), int(run.seed))] = (
                run.status, run.updates, histories[run_id][1].tobytes(), json.dumps(summaries[run_id], sort_keys=True),
                {k: v.tobytes() for k, v in sorted(params.items())})
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for key in a:
        assert a[key] == b[key], key


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_builtin_grid_equals_each_run_alone(tmp_path: Path, dtype: str) -> None:
    """Done-when 1: every built-in optimizer and schedule, a grid over each numeric hyper-parameter x 3 seeds."""
    optimizers, schedules = builtin_grids()
    assert {o.split("(")[0] for o in optimizers} >= {"mini_bgd", "sgd", "adam", "adamw"}
    assert {s.split("(")[0] for s in schedules} >= {"step", "cosine"}
    optimizers += ["sgd(momentum=[0, 0.9], dampening=0.5)", "sgd(momentum=[0.5, 0.9], nesterov=True)",
                   "adam(lr=[0.01, 0.05], amsgrad=True)",
                   "adamw(weight_decay=[0, 0.1], betas=[(0.9, 0.999), (0.5, 0.9)])"]
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    scheduled = {"optimizer": "sgd(momentum=0.9)", "schedule": schedules, "lr": [0.02, 0.04]}
    for name, spec in (("opt", {"optimizer": optimizers}), ("sched", scheduled)):
        values = {**BASE, **spec, "dtype": dtype}
        grid = Experiment(**values, name=f"{name}-grid")
        plan = grid.plan(db=url, jobs=1)
        assert len(plan.layout()) < len(plan.runs) / 6  # grid points really share groups
        grid.run(db=url, jobs=1)
        Experiment(**values, name=f"{name}-alone").run(db=url, jobs=1, vectorize=False)
        assert_same(numbers(url, f"{name}-grid"), numbers(url, f"{name}-alone"))


def test_third_party_scalar_optimizer_in_a_grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Done-when 2: an optimizer written for plain floats, installed as a real distribution, in a grid."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    install_distribution(site, "xp-heavy", "0.1.0", "xp_heavy", '''
        import math
        import numpy as np
        from expsvc.core.optim import Optimizer
        from expsvc.hookspecs import hookimpl

        class HeavyBall(Optimizer):
            """theta <- theta - lr * b, b <- beta * b + g, with a scalar-only bias correction."""
            name = "heavy_ball"

            def __init__(self, lr: float = 0.02, beta: float = 0.5) -> None:
                super().__init__(lr)
                if not isinstance(beta, float) or not 0 <= beta < 1:
                    raise ValueError("beta must be a float in [0, 1)")
                self.beta, self.t = beta, 0

            def bind(self, buffer):
                super().bind(buffer)
                self.b = np.zeros_like(buffer.value)

            def step(self):
                self.t += 1
                self.b *= self.beta
                self.b += self.buffer.grad
                self.buffer.value -= (self.lr / (1 - math.pow(self.beta, self.t) + 1e-3)) * self.b

        @hookimpl
        def register_optimizers(register):
            register(HeavyBall)
    ''')
    url = f"sqlite:///{tmp_path / 'p.db'}"
    values = {**BASE, "optimizer": ["heavy_ball(beta=[0.0, 0.5, 0.9])", "heavy_ball(lr=0.05)"]}
    grid = Experiment(**values, name="grid")
    assert [len(t.seeds) for t in grid.plan(db=url, jobs=1).tasks()] == [12]  # 4 points x 3 seeds, one group
    grid.run(db=url, jobs=1)
    Experiment(**values, name="alone").run(db=url, jobs=1, vectorize=False)
    got = numbers(url, "grid")
    assert_same(got, numbers(url, "alone"))
    assert len({v[2] for v in got.values()}) == 12  # every point and seed trained differently
    assert {json.loads(k)["lr"] for k, _ in got} == {0.02, 0.05}  # the plugin's own default lr, when not given


def test_a_diverging_grid_point_stops_only_its_replicas(tmp_path: Path) -> None:
    """Done-when 3: lr = 1000 diverges; the other points equal the grid without it, bit for bit."""
    url = f"sqlite:///{tmp_path / 'd.db'}"
    values = {**BASE, "optimizer": "sgd(momentum=0.9)", "loss": "sum_squared", "dataset": "linear_1d",
              "model": "linear(4), linear(1)", "batch_size": 5, "epochs": 20}
    Experiment(**values, lr=[0.001, 1000.0, 0.002], name="with").run(db=url, jobs=1)
    Experiment(**values, lr=[0.001, 0.002], name="without").run(db=url, jobs=1)
    with_bad, without = numbers(url, "with"), numbers(url, "without")
    bad = {k: v for k, v in with_bad.items() if json.loads(k[0])["lr"] == 1000.0}
    assert len(bad) == 3 and all(v[0] == "diverged" for v in bad.values())
    assert all(v[0] == "finished" for v in without.values())
    assert_same({k: v for k, v in with_bad.items() if k not in bad}, without)


def _kill_some(url: str, experiment: str) -> list[str]:
    """Mark a third of the runs interrupted and cut their history (what a killed process leaves)."""
    with RunStore.open(url, mark_stale=False) as store, store.session() as session:
        found = store.resolve_experiment(experiment)
        runs = list(session.scalars(sa.select(Run).where(Run.experiment_id == found.id).order_by(Run.id)))
        cut = runs[::3]
        for run in cut:
            run.status = "interrupted"
            for chunk in session.scalars(sa.select(MetricChunk).where(MetricChunk.run_id == run.id)):
                session.delete(chunk)
        session.commit()
        return [r.id for r in cut]


def test_every_executor_and_resume_give_the_same_grid(tmp_path: Path) -> None:
    """Done-when 4 (local): vectorised, --no-vectorize, -j 1, -j 2, --group-by-config, --resume."""
    url = f"sqlite:///{tmp_path / 'e.db'}"
    values = {**BASE, "optimizer": ["adamw(weight_decay=[0, 0.01])", "sgd(momentum=[0.5, 0.9])"],
              "lr": [0.01, 0.03]}
    Experiment(**values, name="j1").run(db=url, jobs=1)
    reference = numbers(url, "j1")
    for name, options in (("j2", {"jobs": 2}), ("alone", {"jobs": 2, "vectorize": False}),
                          ("by-config", {"jobs": 1, "group_by_config": True})):
        Experiment(**values, name=name).run(db=url, **options)
        assert_same(numbers(url, name), reference)
    cut = _kill_some(url, "j2")
    plan = plan_resume("j2", db=url, jobs=1)
    assert sorted(plan.run_ids) == sorted(cut) and len(plan.tasks()) == 2  # adamw rows, sgd rows
    resume("j2", db=url, jobs=2)
    assert_same(numbers(url, "j2"), reference)


def test_progress_shows_the_real_groups(tmp_path: Path) -> None:
    """The CLI's bars are the plan's tasks: one per group (halved for -j 2), sized as they run."""
    spec = ExperimentSpec.from_dict({**BASE, "optimizer": ["adamw", "sgd(momentum=[0.5, 0.9])"], "lr": [0.01, 0.03]})
    from expsvc.runner.plan import from_spec

    one = from_spec(spec, db=f"sqlite:///{tmp_path / 'x.db'}", jobs=1)
    assert one.bars() == [("optimizer=adamw (2 configs x 3 seeds)", 6), ("optimizer=sgd (4 configs x 3 seeds)", 6)]
    assert len(from_spec(spec, db="sqlite://", jobs=1, group_by_config=True).bars()) == 6
    assert len(from_spec(spec, db="sqlite://", jobs=1, vectorize=False).bars()) == 18
    grid = ExperimentSpec.from_dict({**BASE, "optimizer": "adamw", "lr": "logspace(1e-4, 0.1, 9)", "seeds": 5,
                                     "epochs": 200})
    halves = from_spec(grid, db="sqlite://", jobs=2)  # enough work: halved to feed both workers
    assert [len(t.seeds) for t in halves.tasks()] == [23, 22]
    assert halves.bars() == [("adamw (23 runs of 5 configs)", 200), ("adamw (22 runs of 5 configs)", 200)]
    small = ExperimentSpec.from_dict({**BASE, "optimizer": "adamw", "seeds": 5})
    assert len(from_spec(small, db="sqlite://", jobs=2).bars()) == 1  # too little work to pay for a fork


@pytest.mark.slow
def test_dask_gives_the_same_grid(tmp_path: Path) -> None:
    """Done-when 4 (Dask): the grid's groups as Dask tasks give the same numbers."""
    pytest.importorskip("distributed")
    from expsvc.runner.dask import DaskExecutor

    url = f"sqlite:///{tmp_path / 'k.db'}"
    values = {**BASE, "optimizer": "adamw(weight_decay=[0, 0.01])", "lr": [0.01, 0.03]}
    Experiment(**values, name="local").run(db=url, jobs=1)
    cluster = DaskExecutor(None, n_workers=1)
    cluster.start()
    try:
        Experiment(**values, name="dask").run(db=url, executor=cluster)
    finally:
        cluster.close()
    assert_same(numbers(url, "dask"), numbers(url, "local"))


@pytest.mark.slow
def test_resume_after_a_real_kill(tmp_path: Path) -> None:
    """Done-when 4: SIGKILL the CLI in the middle of a grid; --resume completes it with the same numbers."""
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    args = ["run", "-q", "--db", url, "--opt", "adamw", "--lr", "logspace(1e-3, 0.1, 3)", "--seeds", "2",
            "--epochs", "4000", "--tol", "0", "-j", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "expsvc", *args, "--name", "killed"], cwd=tmp_path)
    for _ in range(300):
        try:
            with RunStore.open(url, mark_stale=False) as store:
                if store.status_counts(store.resolve_experiment("killed").id).get("running"):
                    break
        except Exception:
            pass
        import time

        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = run_cli("run", "-q", "--db", url, "--resume", "killed", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert run_cli(*args, "--name", "whole", cwd=tmp_path).returncode == 0
    killed, whole = numbers(url, "killed"), numbers(url, "whole")
    # a summary's mean is accumulated flush by flush (by time): equal up to rounding, the rest bit for bit
    assert_same({k: v[:3] + v[4:] for k, v in killed.items()}, {k: v[:3] + v[4:] for k, v in whole.items()})
    for key, value in killed.items():
        ours, theirs = json.loads(value[3])["loss"], json.loads(whole[key][3])["loss"]
        assert ours.pop("mean") == pytest.approx(theirs.pop("mean"), rel=1e-12) and ours == theirs


def test_specs_are_parsed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Done-when 5: each spec text is parsed once, where it enters; the plan and execution pass parsed values."""
    calls: list[str] = []
    real = specs._tree

    def counting(text: str) -> Any:
        calls.append(text)
        return real(text)

    monkeypatch.setattr(specs, "_tree", counting)
    texts = {"dataset": "points", "model": "linear(4), tanh, linear(1)", "loss": "bce_with_logits",
             "optimizer": ["adamw(weight_decay=[0, 0.01])", "sgd"], "schedule": "step(step_size=2)"}
    url = f"sqlite:///{tmp_path / 'o.db'}"
    Experiment(**{**BASE, **texts}, name="once").run(db=url, jobs=1)
    assert sorted(calls) == sorted([texts["dataset"], texts["model"], texts["loss"], *texts["optimizer"],
                                    texts["schedule"]])
    _kill_some(url, "once")  # resuming parses each distinct stored text once, however many runs hold it
    spec_module._parsed.cache_clear()
    calls.clear()
    resume("once", db=url, jobs=1)
    assert len(calls) == len(set(calls)) and set(calls) <= {texts["dataset"], texts["model"], texts["loss"],
                                                           "adamw(weight_decay=0)", "adamw(weight_decay=0.01)",
                                                           "sgd", texts["schedule"]}


@pytest.mark.parametrize(("values", "needle"), [
    ({"optimizer": "sgd(momentum=[])"}, "momentum=[] in 'sgd(momentum=[])' is an empty grid"),
    ({"optimizer": "sgd(momentum=[0.5, 'x'])"}, "'x' cannot be a grid value"),
    ({"optimizer": "sgd(momentum=[0.5, {'a': 1}])"}, "{'a': 1} is not a number"),
    ({"optimizer": "sgd(momentum=0.9, nesterov=[True, False])"}, "True cannot be a grid value"),
    ({"optimizer": "adamw", "lr": "logspace(1e-4, 0.1, 1000)", "seeds": 101}, "at most 100,000 runs"),
    ({"model": "linear(logspace(1, 10, 2)), linear(1)"}, "ranges are allowed in optimizer and schedule arguments"),
    ({"lr": "logspace(1e-4, 0.1)"}, "expected a number or a range"),
    ({"lr": "logspace(1e-4, 0.1, 0)"}, "the number of points 0 is not allowed"),
    ({"lr": "sometimes"}, "expected a number or a range"),
])
def test_bad_grids_are_refused_in_one_line(values: dict[str, Any], needle: str) -> None:
    with pytest.raises(ExpsvcError) as err:
        ExperimentSpec.from_dict(values)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_grid_syntax_in_toml_and_flags(tmp_path: Path) -> None:
    """Lists and ranges in a TOML file and on the command line; a refused grid writes nothing, exit 2."""
    (tmp_path / "g.toml").write_text(textwrap.dedent('''
        optimizer = ["sgd(momentum=[0.8, 0.9, 0.99])", "adamw(weight_decay=linspace(0, 0.1, 3))"]
        lr = "logspace(1e-3, 0.01, 2)"
        seeds = 2
    '''))
    spec = ExperimentSpec.from_file(tmp_path / "g.toml")
    assert len(spec.configs()) == 12 and spec.grid["lr"] == [0.001, 0.01]
    assert [str(o) for o in spec.grid["optimizer"]][3:] == [f"adamw(weight_decay={w})" for w in (0.0, 0.05, 0.1)]
    db = tmp_path / "flags.db"
    bad = run_cli("run", "--db", f"sqlite:///{db}", "--opt", "sgd(nesterov=[True, False])", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "cannot be a grid value" in bad.stderr
    # numpy's exponent form is refused, naming the value form (never read as other numbers)
    exponents = run_cli("run", "--db", f"sqlite:///{db}", "--lr", "logspace(-4, -1, 4)", cwd=tmp_path)
    assert exponents.returncode == 2 and exponents.stderr.count("\n") == 1, exponents.stderr
    assert "must be positive (for 10^-4 .. 10^-1 write logspace(0.0001, 0.1, 4))" in exponents.stderr
    assert not db.exists()
    ok = run_cli("run", "-q", "--db", f"sqlite:///{db}", "--opt", "sgd(momentum=[0.5, 0.9])", "--lr",
                 "linspace(0.01, 0.02, 2)", "--seeds", "2", "--epochs", "2", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    with RunStore.open(f"sqlite:///{db}") as store, store.session() as session:
        stored = {(r.config["optimizer"], r.config["lr"]) for r in session.scalars(sa.select(Run))}
    assert stored == {(f"sgd(momentum={m})", lr) for m in (0.5, 0.9) for lr in (0.01, 0.02)}


def test_a_group_larger_than_the_memory_budget_is_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 45-replica group under a 1 MB budget runs as several chunks, with the numbers of the whole group."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    values = {**BASE, "optimizer": "adamw", "lr": "logspace(1e-3, 0.1, 9)", "seeds": 5, "epochs": 2}
    Experiment(**values, name="whole").run(db=url, jobs=1)
    monkeypatch.setenv("EXPSVC_MEMORY_LIMIT", "1MB")
    split = Experiment(**values, name="split")
    chunks = [len(t.seeds) for t in split.plan(db=url, jobs=1).tasks()]
    assert len(chunks) > 2 and sum(chunks) == 45 and len(set(chunks[:-1])) == 1  # consecutive, equal chunks
    split.run(db=url, jobs=1)
    assert_same(numbers(url, "split"), numbers(url, "whole"))
