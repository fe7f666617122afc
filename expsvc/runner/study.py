"""Studies (``expsvc tune``): a fair optimizer comparison as two run plans, never a third orchestrator.

::

    StudySpec ─ tuning_plan ─ RunPlan ─ execute ─┐     every optimizer × grid point × tuning seed (0..T-1),
                                                 │     trained on train, evaluated on validation
              select (validation summaries only) ┤     per optimizer: the best mean over the tuning seeds
    choices ─ confirmation_plan ─ RunPlan ─ execute    each choice on fresh seeds (T..T+N-1), tested on test

Both plans go through :func:`~expsvc.runner.plan.validate` and :func:`~expsvc.runner.plan.execute` like
``expsvc run``; ``--resume`` rebuilds them with :func:`~expsvc.runner.plan.from_store`.  The study row
(:mod:`expsvc.store.studies`) links the two experiments and holds the rule and the choices.

Selection reads only summaries whose key starts with ``val_`` (test data answers, never chooses).  A grid
point any of whose tuning runs diverged, failed or lacks a finite value loses; equal means go to the
smaller learning rate, then to the first point in grid order.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from expsvc.analysis.compare import CompareError, Metric, parse_metric
from expsvc.errors import ExpsvcError
from expsvc.runner.plan import PlannedRun, RunPlan, validate
from expsvc.runner.spec import (
    GRID_KEYS,
    MAX_SEED,
    MAX_SEEDS,
    ExperimentSpec,
    RunConfig,
    SpecValidationError,
    grid_points,
    split_lr,
)
from expsvc.specs import ComponentSpec, parse

STUDY_DEFAULTS: dict[str, Any] = {"tune_seeds": 3, "seeds": 10, "select": "min(val_loss)", "val_split": 0.2,
                                  "eval_every": 1}
"""What ``expsvc tune`` sets unless told: 3 tuning seeds, 10 confirmation seeds, the lowest validation loss
over the evaluations, a 20 % validation split evaluated every epoch."""
STUDY_KEYS = ("tune_seeds", "select")
"""Keys of a study that an experiment does not have."""
SINGLE_KEYS = tuple(k for k in GRID_KEYS if k not in ("optimizer", "lr"))
"""Keys that take one value in a study: its grid is over the optimizers and their hyper-parameters."""
MAX_NAME = 180
"""Longest study name: its experiments are NAME-tuning and NAME-confirmation (experiment names hold 200)."""
TIE_RULE = "equal means go to the smaller learning rate, then to the first point in grid order"


def _fail(key: str, value: Any, allowed: str) -> SpecValidationError:
    return SpecValidationError(f"{key}: {value!r} is not allowed; expected {allowed}")


def select_metric(text: Any) -> Metric:
    """``--select``: a validation summary (``min(val_loss)``, ``max(val_accuracy)``, ``val_loss`` = its last
    value, ``:lower``/``:higher`` to set the direction).  A test metric is refused: test data answers, never
    chooses; so is anything not measured on the validation set."""
    if not isinstance(text, str) or not text.strip():
        raise _fail("select", text, "a validation metric such as 'min(val_loss)' or 'max(val_accuracy)'")
    try:
        metric = parse_metric(text)
    except CompareError as err:
        raise SpecValidationError(f"select: {err}") from None
    key = metric.field.key
    if metric.field.kind != "summary":
        raise _fail("select", text, "a validation metric such as 'min(val_loss)' (a summary, not a run column)")
    if key.startswith("test_"):
        raise SpecValidationError(f"select: {text!r} reads the test set; test data answers, never chooses — "
                                  f"select on validation data, e.g. 'min(val_loss)'")
    if not key.startswith("val_"):
        raise SpecValidationError(f"select: {text!r} is not measured on validation data; expected a val_* metric "
                                  f"such as 'min(val_loss)' or 'max(val_accuracy)'")
    return metric


def rule_text(metric: Metric, tune_seeds: int) -> str:
    """The selection rule in words (printed and stored)."""
    best = "lowest" if metric.lower_is_better else "highest"
    stat = {"last": "last evaluated value", "min": "minimum over its evaluations",
            "max": "maximum over its evaluations", "mean": "mean over its evaluations",
            "first": "first evaluated value"}.get(metric.field.stat, metric.field.stat)
    return (f"per optimizer, the grid point with the {best} mean over {tune_seeds} tuning seed(s) of each run's "
            f"{stat} of {metric.field.key} (validation data only); a point with a diverged or failed run or a "
            f"missing value loses; {TIE_RULE}")


@dataclass
class StudySpec:
    """A validated study: the optimizers (as given: one entry may hold a grid of its own arguments), the
    settings every run shares, the tuning and confirmation seeds, and the selection metric."""

    name: str
    optimizers: list[str]
    values: dict[str, Any]
    tune_seeds: list[int]
    seeds: list[int]
    select: str
    tuning: ExperimentSpec = field(repr=False)

    @property
    def metric(self) -> Metric:
        return select_metric(self.select)

    @property
    def rule(self) -> str:
        return rule_text(self.metric, len(self.tune_seeds))

    def as_dict(self) -> dict[str, Any]:
        """The stored form (what ``--resume`` rebuilds the study from)."""
        return {"name": self.name, "optimizers": self.optimizers, "values": self.values,
                "tune_seeds": self.tune_seeds, "seeds": self.seeds, "select": self.select}

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> StudySpec:
        values = {**stored["values"], "optimizer": stored["optimizers"], "tune_seeds": len(stored["tune_seeds"]),
                  "seeds": stored["seeds"], "select": stored["select"], "name": stored["name"]}
        return from_values(values)

    def entry_of(self, config: RunConfig) -> str | None:
        """The optimizer entry a tuning configuration belongs to."""
        return self._entries.get(config.optimizer)

    @functools.cached_property
    def _entries(self) -> dict[ComponentSpec, str]:
        out: dict[ComponentSpec, str] = {}
        for text in self.optimizers:
            for point in grid_points("optimizer", text, parse(text, "optimizer")):
                out.setdefault(split_lr(point)[0], text)
        return out


def _seed_count(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SEEDS:
        raise _fail(key, value, f"a count from 1 to {MAX_SEEDS:,}")
    return value


def from_values(values: dict[str, Any], source: str = "study") -> StudySpec:
    """Validate a study given as flags or TOML values: the experiment keys of ``expsvc run`` plus
    ``tune_seeds`` and ``select`` (defaults :data:`STUDY_DEFAULTS`).  Every problem is one line."""
    from expsvc.errors import did_you_mean
    from expsvc.runner.spec import ALIASES, DEFAULTS

    allowed = [*DEFAULTS, *STUDY_KEYS]
    given: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = ALIASES.get(raw_key, raw_key)
        if key not in allowed:
            raise SpecValidationError(f"{source}: unknown key {raw_key!r}{did_you_mean(raw_key, allowed)}; "
                                      f"allowed: {', '.join(allowed)}")
        if value is not None:
            given[key] = value
    merged = {**STUDY_DEFAULTS, **given}
    tune = _seed_count("tune_seeds", merged.pop("tune_seeds"))
    tune_seeds = list(range(tune))
    raw = merged.pop("seeds")
    if isinstance(raw, list | tuple):
        if not raw:
            raise _fail("seeds", raw, "a count >= 1 or a list of confirmation seeds")
        seeds = [s for s in raw if isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED]
        if len(seeds) != len(raw) or len(set(seeds)) != len(seeds):
            raise _fail("seeds", raw, f"distinct integer seeds from 0 to {MAX_SEED}")
        overlap = sorted(set(seeds) & set(tune_seeds))
        if overlap:
            raise SpecValidationError(
                f"seeds: {overlap[:5]} {'is' if len(overlap) == 1 else 'are'} also tuning seed(s) (0..{tune - 1}); "
                f"confirmation seeds must be fresh: pick seeds >= {tune}, or give a count")
    else:
        count = _seed_count("seeds", raw)
        if tune + count - 1 > MAX_SEED:
            raise _fail("seeds", raw, "fewer seeds")
        seeds = list(range(tune, tune + count))
    select = merged.pop("select")
    select_metric(select)
    optimizers = merged.pop("optimizer", None) or DEFAULTS["optimizer"]
    optimizers = [optimizers] if isinstance(optimizers, str) else list(optimizers)
    if merged.get("val_split") == 0:
        raise _fail("val_split", 0, "a fraction 0 < F < 1: a study selects on validation data")
    name = merged.pop("name", None) or f"tune-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise _fail("name", name if len(str(name)) <= 60 else f"{str(name)[:40]}...",
                    f"a non-empty string of at most {MAX_NAME} characters")
    tuning = ExperimentSpec.from_dict({**merged, "optimizer": optimizers, "seeds": tune_seeds,
                                       "name": f"{name}-tuning"}, source=source)
    for key in SINGLE_KEYS:
        if len(tuning.grid[key]) > 1:
            raise SpecValidationError(f"{key}: a study takes one value (its grid is over the optimizers, their "
                                      f"arguments and lr); run one study per {key}")
    texts = [str(parse(t, "optimizer")) if isinstance(t, str) else t for t in optimizers]
    if len(set(texts)) != len(texts):
        raise _fail("optimizer", optimizers, "each optimizer once")
    spec = StudySpec(name, texts, {k: v for k, v in merged.items() if k != "description"}, tune_seeds, seeds,
                     select, tuning)
    points: dict[ComponentSpec, str] = {}
    for text in texts:
        for point in grid_points("optimizer", text, parse(text, "optimizer")):
            other = points.setdefault(split_lr(point)[0], text)
            if other != text:
                raise SpecValidationError(f"optimizer: {text!r} and {other!r} share the grid point "
                                          f"{split_lr(point)[0]}; give each configuration to one optimizer")
    return spec


# --------------------------------------------------------------------------------------------- the plans
def _plan(configs: Sequence[RunConfig], seeds: Sequence[int], name: str, *, db: str | None,
          plugins_dir: str | None, vectorize: bool, jobs: int | None) -> RunPlan:
    from expsvc.runner.executors import LocalExecutor
    from expsvc.store import default_url

    runs = [PlannedRun(c, s) for c in configs for s in seeds]
    return RunPlan(db or default_url(), list(configs), runs, plugins_dir, name, None, vectorize=vectorize,
                   jobs=LocalExecutor(jobs).jobs)


def tuning_plan(spec: StudySpec, *, db: str | None = None, plugins_dir: str | None = None, vectorize: bool = True,
                jobs: int | None = None) -> RunPlan:
    """Every optimizer × grid point × tuning seed, validated (the grid vectorised on the replica axis)."""
    plan = _plan(spec.tuning.configs(), spec.tune_seeds, f"{spec.name}-tuning", db=db, plugins_dir=plugins_dir,
                 vectorize=vectorize, jobs=jobs)
    plan = validate(plan)
    check_select(spec, plan)
    return plan


def confirmation_plan(spec: StudySpec, choices: Sequence[Choice], *, db: str | None = None,
                      plugins_dir: str | None = None, vectorize: bool = True, jobs: int | None = None) -> RunPlan:
    """Each optimizer's chosen configuration on the confirmation seeds, validated."""
    configs = [RunConfig.from_dict(c.config) for c in choices]
    return validate(_plan(configs, spec.seeds, f"{spec.name}-confirmation", db=db, plugins_dir=plugins_dir,
                          vectorize=vectorize, jobs=jobs))


def validation_keys(plan: RunPlan) -> list[str]:
    """The validation summaries the tuning runs will record: ``val_loss`` and ``val_<metric>`` for every metric
    of the dataset's task."""
    from expsvc.plugins import get_system
    from expsvc.runner.build import load_dataset, metrics_for
    from expsvc.runner.spec import dataset_for

    system = get_system(plan.plugins_dir)
    config = plan.configs[0]
    data = load_dataset(system, dataset_for(config, plan.runs[0].seed))[0]
    return ["val_loss", *(f"val_{m}" for m in metrics_for(system, data.task))]


def check_select(spec: StudySpec, plan: RunPlan) -> None:
    """Refuse a ``--select`` metric the tuning runs will not summarise, before anything is written."""
    known = validation_keys(plan)
    key = spec.metric.field.key
    if key not in known:
        from expsvc.errors import did_you_mean

        raise SpecValidationError(f"select: {spec.select!r}: the tuning runs do not measure {key!r}"
                                  f"{did_you_mean(key, known)}; known: {', '.join(known)}")


# ------------------------------------------------------------------------------------------- selection
@dataclass
class Point:
    """One grid point of one optimizer on the tuning seeds: its selection values by seed."""

    optimizer: str
    config: RunConfig
    index: int  # position in grid order
    values: dict[int, float]
    expected: int
    diverged: int = 0
    failed: int = 0

    @property
    def valid(self) -> bool:
        """Every tuning seed finished with a finite value."""
        return len(self.values) == self.expected and not self.diverged and not self.failed

    @property
    def mean(self) -> float:
        return sum(self.values.values()) / len(self.values) if self.values else math.nan

    def settings(self, keys: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"lr": self.config.lr}
        out.update({k: self.config.optimizer.kwargs.get(k) for k in keys if k != "lr"})
        return out


@dataclass
class Choice:
    """An optimizer's chosen configuration, its score on the tuning seeds and the varying settings."""

    optimizer: str
    config: dict[str, Any]
    settings: dict[str, Any]
    score: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Selection:
    """What selection decided: the choices, the points it weighed, and the warnings."""

    rule: str
    choices: list[Choice]
    points: list[Point]
    varying: dict[str, list[str]]  # optimizer -> the settings that vary over its grid
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        """The stored form (``studies.selection``)."""
        return {"rule": self.rule, "choices": {c.optimizer: c.to_dict() for c in self.choices},
                "warnings": self.warnings}


def points_of(spec: StudySpec, records: Sequence[Any], metric: Metric) -> list[Point]:
    """The tuning runs (read-API records) as grid points, in grid order, with their selection values."""
    order = {c: i for i, c in enumerate(spec.tuning.configs())}
    points: dict[RunConfig, Point] = {}
    for rec in records:
        config = RunConfig.from_dict(rec.config)
        entry = spec.entry_of(config)
        if entry is None:
            continue
        point = points.get(config)
        if point is None:
            bare = dataclasses.replace(config, lr=None) if config not in order else config
            index = order.get(config, order.get(bare, len(order)))
            point = points[config] = Point(entry, config, index, {}, len(spec.tune_seeds))
        if rec.status == "diverged":
            point.diverged += 1
        elif rec.status == "failed":
            point.failed += 1
        elif rec.status == "finished":
            value = metric.value(rec)
            if value is not None:
                point.values[int(rec.seed)] = value
    return sorted(points.values(), key=lambda p: (spec.optimizers.index(p.optimizer), p.index,
                                                  p.config.lr or 0.0))


def varying_settings(points: Sequence[Point]) -> list[str]:
    """The settings that vary over one optimizer's grid: ``lr`` and numeric optimizer arguments."""
    keys = []
    if len({p.config.lr for p in points}) > 1:
        keys.append("lr")
    names = sorted({k for p in points for k in p.config.optimizer.kwargs})
    for k in names:
        if len({repr(p.config.optimizer.kwargs.get(k)) for p in points}) > 1:
            keys.append(k)
    return keys or ["lr"]


def select(spec: StudySpec, records: Sequence[Any]) -> Selection:
    """Per optimizer, the grid point with the best mean of the selection metric over the tuning seeds
    (:data:`TIE_RULE`; invalid points lose), with the warnings a careful researcher wants."""
    from expsvc.analysis import stats

    metric = spec.metric
    points = points_of(spec, records, metric)
    choices: list[Choice] = []
    warnings: list[str] = []
    varying: dict[str, list[str]] = {}
    sign = 1.0 if metric.lower_is_better else -1.0
    for entry in spec.optimizers:
        mine = [p for p in points if p.optimizer == entry]
        keys = varying[entry] = varying_settings(mine)
        bad = [p for p in mine if not p.valid]
        if bad:
            counts = ", ".join(f"{_settings_text(p.settings(keys))}: {_bad_text(p)}" for p in bad)
            warnings.append(f"{entry}: {len(bad)} of {len(mine)} grid points lose (diverged, failed or no value): "
                            f"{counts}")
        ranked = sorted((p for p in mine if p.valid), key=lambda p: (sign * p.mean, p.config.lr or 0.0, p.index))
        if not ranked:
            warnings.append(f"{entry}: no grid point finished every tuning seed with a value; it is left out of "
                            f"the confirmation (try smaller learning rates)")
            continue
        best = ranked[0]
        choices.append(Choice(entry, best.config.as_dict(), best.settings(keys), best.mean, len(best.values)))
        for key in keys:
            grid = sorted({p.settings(keys)[key] for p in mine if p.settings(keys)[key] is not None})
            value = best.settings(keys)[key]
            if len(grid) > 1 and value in (grid[0], grid[-1]):
                edge = "smallest" if value == grid[0] else "largest"
                way = "downward" if edge == "smallest" else "upward"
                warnings.append(f"{entry}: the chosen {key}={value:.3g} is the {edge} value of its grid; the best may "
                                f"lie beyond it — extend the grid {way}")
        if len(ranked) > 1:
            second = ranked[1]
            c = stats.compare(second.values, best.values, metric.lower_is_better)
            lo, hi = c.diff - c.ci, c.diff + c.ci
            if not (math.isfinite(c.ci) and (lo > 0 or hi < 0)):
                warnings.append(
                    f"{entry}: the best ({_settings_text(best.settings(keys))}, {best.mean:.4g}) and the second-best "
                    f"({_settings_text(second.settings(keys))}, {second.mean:.4g}) are not distinguishable on "
                    f"{len(best.values)} tuning seed(s) (95 % interval of the paired difference includes 0)")
    return Selection(spec.rule, choices, points, varying, warnings)


# ------------------------------------------------------------------------------------- the study's phases
def start(spec: StudySpec, *, db: str | None = None, jobs: int | None = None, resuming: bool = False
          ) -> RunPlan | None:
    """The tuning phase's plan: new — validated, then the study recorded (nothing is written before the
    validation passed); resumed — the study's experiments linked by name (an interruption may have come before
    the link) and the unfinished tuning runs (None when none is left)."""
    from expsvc.store import RunStore
    from expsvc.store import studies as stored

    if not resuming:
        plan = tuning_plan(spec, db=db, jobs=jobs)
        with RunStore.open(db) as store:
            stored.create_study(store, spec.name, spec.as_dict(), spec.rule)
        return plan
    with RunStore.open(db, create=False) as store:
        for role in ("tuning", "confirmation"):
            stored.link(store, spec.name, role, f"{spec.name}-{role}")
        record = stored.get_study(store, spec.name)
    if record.tuning_experiment is None:
        return tuning_plan(spec, db=db, jobs=jobs)
    return _unfinished(record.tuning_experiment, db, jobs)


def link(spec: StudySpec, role: str, db: str | None) -> None:
    """Link the phase's experiment (``tuning`` or ``confirmation``) to the study, once it exists."""
    from expsvc.store import RunStore
    from expsvc.store import studies as stored

    with RunStore.open(db, create=False) as store:
        stored.link(store, spec.name, role, f"{spec.name}-{role}")


def choose(spec: StudySpec, *, db: str | None = None, jobs: int | None = None
           ) -> tuple[Selection, RunPlan | None]:
    """Once tuning is complete: the selection (stored the first time; a resumed study confirms the stored
    choices) and the confirmation phase's plan (its unfinished runs when resumed; None when none is left)."""
    from expsvc.store import RunStore, read
    from expsvc.store import studies as stored

    with RunStore.open(db, create=False) as store:
        record = stored.get_study(store, spec.name)
        if record.tuning_experiment is None:
            raise ExpsvcError(f"study {spec.name!r} has no tuning runs; run it again with --resume {spec.name}")
        exp = store.resolve_experiment(record.tuning_experiment)
        selection = select(spec, read.records(store, experiment_ids=[exp.id], summary_keys=[spec.metric.field.key]))
        if record.selection is None:
            stored.set_selection(store, spec.name, selection.to_dict())
        else:
            selection.choices = [Choice(**c) for c in record.selection["choices"].values()]
    if not selection.choices:
        raise ExpsvcError("no optimizer has a grid point that finished every tuning seed; nothing to confirm")
    if record.confirmation_experiment is not None:
        return selection, _unfinished(record.confirmation_experiment, db, jobs)
    return selection, confirmation_plan(spec, selection.choices, db=db, jobs=jobs)


def finish(spec: StudySpec, store: Any) -> Any:
    """Mark the study done; compare's result on the confirmation runs' test metrics (the test counterpart of
    the selection metric, test loss and test accuracy, those measured)."""
    from expsvc.analysis.compare import compare_experiments
    from expsvc.store import read
    from expsvc.store import studies as stored

    stored.finish_study(store, spec.name)
    exp = store.resolve_experiment(f"{spec.name}-confirmation")
    known = read.summary_keys(store, [exp.id])
    wanted = [spec.metric.field.key.replace("val_", "test_", 1), "test_loss", "test_accuracy"]
    metrics = [k for k in dict.fromkeys(wanted) if k in known] or None
    return compare_experiments(store, {exp.id: exp.name}, metrics=metrics)[0]


def _unfinished(experiment: str, db: str | None, jobs: int | None) -> RunPlan | None:
    """The plan of the unfinished runs of one of the study's experiments (None when every run ended)."""
    from expsvc.runner.plan import from_store

    plan = from_store(experiment, db=db, jobs=jobs)
    return plan if plan.runs else None


def run(spec: StudySpec, *, db: str | None = None, jobs: int | None = None, resuming: bool = False) -> Any:
    """The whole study from Python (the CLI runs the same phases with progress bars): tuning, selection,
    confirmation; returns the selection and compare's result."""
    from expsvc.runner.plan import execute
    from expsvc.store import RunStore

    plan = start(spec, db=db, jobs=jobs, resuming=resuming)
    try:
        if plan is not None:
            execute(plan)
    finally:
        link(spec, "tuning", db)
    selection, plan = choose(spec, db=db, jobs=jobs)
    try:
        if plan is not None:
            execute(plan)
    finally:
        link(spec, "confirmation", db)
    with RunStore.open(db, create=False) as store:
        return selection, finish(spec, store)


def _settings_text(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, int | float) else f"{k}={v}" for k, v in settings.items())


def _bad_text(p: Point) -> str:
    parts = [f"{p.diverged} diverged" if p.diverged else "", f"{p.failed} failed" if p.failed else ""]
    missing = p.expected - len(p.values) - p.diverged - p.failed
    parts.append(f"{missing} without a value" if missing > 0 else "")
    return ", ".join(x for x in parts if x) or "incomplete"


__all__ = ["STUDY_DEFAULTS", "Choice", "Point", "Selection", "StudySpec", "check_select", "choose", "confirmation_plan",
           "finish", "from_values", "link", "points_of", "rule_text", "run", "select", "select_metric", "start",
           "tuning_plan", "validation_keys"]
