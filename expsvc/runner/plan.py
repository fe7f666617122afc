"""The run plan: one object for new runs and ``--resume``, built per source, validated once, executed once.

::

    ExperimentSpec ─ from_spec ─┐                        ┌─ bars()   (the CLI's progress display)
                                ├─ validate ─ RunPlan ───┤
    stored runs ── from_store ──┘                        └─ execute ─ tasks() ─ Executor ─ ExperimentResult

A plan holds the configurations (component specs parsed, learning rates resolved) and every run (config,
seed, run id once queued).  Runs are grouped by *structure*: runs that differ only in the numeric arguments
of the optimizer and the schedule (and in seed) train as one vectorised group, R = grid points × seeds
(:func:`structure`); model, dataset, loss, batch size, epochs, dtype, shuffle, the optimizer's and the
schedule's kind and their non-numeric arguments (``nesterov``, ``amsgrad``) split groups, and with
``data_seed = "run"`` so does the seed (each seed draws its own data).  ``group_by_config`` keeps the older
grouping (one group per configuration, its seeds vectorised) and ``vectorize=False`` runs every run alone.
A group larger than the memory budget allows (:func:`~expsvc.runner.budget.replicas_within`, shared by the
``jobs`` workers) is split into consecutive chunks, and while there are fewer tasks than workers the largest
task is halved if each half holds enough work to pay for a worker (:data:`MIN_SPLIT_WORK`): deterministic
(shapes and sizes only), and the numbers never depend on it (no operation mixes replicas).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from expsvc.core import DataSplit
from expsvc.errors import ExpsvcError
from expsvc.plugins import PluginSystem, get_system
from expsvc.registry import instantiate
from expsvc.runner.budget import replicas_within
from expsvc.runner.build import check, default_lr, load_dataset
from expsvc.runner.execute import GroupOutcome, GroupTask, Progress, RunOutcome
from expsvc.runner.executors import Executor, LocalExecutor
from expsvc.runner.spec import GRID_KEYS, ExperimentSpec, RunConfig, dataset_for, numeric, shares_data
from expsvc.specs import ComponentSpec

MIN_SPLIT_WORK = 20_000_000
"""Least work (epochs × samples × parameters, summed over its replicas) a half of a split task must hold: about
0.1 s of training, more than a forked worker costs to start (the seed net's 9 × 5 grid, 200 epochs: 22 replicas
× 1.7M each, split at ``-j 2``; its 5 seeds alone: not split)."""


@dataclass(frozen=True)
class PlannedRun:
    """One run of a plan: its configuration, its seed and (once queued or when resumed) its id."""

    config: RunConfig
    seed: int
    run_id: str = ""


@dataclass
class PlanGroup:
    """Runs that train as one vectorised group (before memory and core splitting into tasks)."""

    key: str
    runs: list[PlannedRun]


@dataclass
class GroupResult:
    """A configuration and the outcome of each of its seeds."""

    config: RunConfig
    label: str
    outcomes: list[RunOutcome]

    def values(self, key: str) -> np.ndarray:
        got = [o.final_loss if key == "final_loss" else o.updates if key == "updates" else o.metrics.get(key)
               for o in self.outcomes if o.status in ("finished", "diverged")]
        return np.array([np.nan if v is None else v for v in got], dtype=float)


@dataclass
class ExperimentResult:
    """What executing a plan returns: where the runs are, and a short outcome per configuration."""

    experiment: str
    experiment_id: int
    url: str
    groups: list[GroupResult]
    interrupted: bool = False

    @property
    def run_ids(self) -> list[str]:
        return [o.run_id for g in self.groups for o in g.outcomes]

    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for g in self.groups:
            for o in g.outcomes:
                counts[o.status] = counts.get(o.status, 0) + 1
        return counts


def _structural(spec: ComponentSpec) -> ComponentSpec:
    """``spec`` without its numeric arguments (those may differ between the replicas of a group)."""
    return ComponentSpec(spec.name, tuple(a if not numeric(a) else "#" for a in spec.args),
                         {k: v for k, v in spec.kwargs.items() if not numeric(v)})


@functools.lru_cache(maxsize=1 << 16)
def structure(config: RunConfig) -> str:
    """The grouping key: the configuration without the learning rate and the numeric optimizer and schedule
    arguments."""
    bare = dataclasses.replace(config, lr=None, optimizer=_structural(config.optimizer),
                               schedule=_structural(config.schedule))
    return json.dumps(bare.as_dict(), sort_keys=True)


@dataclass
class RunPlan:
    """Every run to execute, its configuration and its group; see the module docstring."""

    url: str
    configs: list[RunConfig]
    runs: list[PlannedRun]
    plugins_dir: str | None = None
    experiment: str | None = None
    description: str | None = None
    experiment_id: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    resuming: bool = False
    vectorize: bool = True
    group_by_config: bool = False
    jobs: int = 1
    max_rows: dict[str, int | None] = field(default_factory=dict)
    row_work: dict[str, int] = field(default_factory=dict)
    """Per structure, the work of one replica: epochs × training samples × parameters (splitting a task to
    feed another worker is worth its fork only above :data:`MIN_SPLIT_WORK`)."""

    @property
    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.runs]

    def _key(self, index: int, run: PlannedRun) -> str:
        if not self.vectorize:
            return f"run {index}"
        key = run.config.group_key if self.group_by_config else structure(run.config)
        return key if shares_data(run.config) else f"{key} seed {run.seed}"

    @property
    def groups(self) -> list[PlanGroup]:
        """The vectorised groups, in the order of their first run."""
        groups: dict[str, PlanGroup] = {}
        for i, run in enumerate(self.runs):
            key = self._key(i, run)
            groups.setdefault(key, PlanGroup(key, [])).runs.append(run)
        return list(groups.values())

    def layout(self) -> list[list[PlannedRun]]:
        """The runs of each task: groups split to the memory budget, then halved while workers would idle."""
        chunks: list[list[PlannedRun]] = []
        for group in self.groups:
            limit = self.max_rows.get(structure(group.runs[0].config)) or len(group.runs)
            chunks += [group.runs[s : s + limit] for s in range(0, len(group.runs), limit)]
        while 0 < len(chunks) < self.jobs:
            largest = max(range(len(chunks)), key=lambda i: len(chunks[i]))
            runs = chunks[largest]
            if len(runs) < 2 or len(runs) // 2 * self.row_work.get(structure(runs[0].config), 0) < MIN_SPLIT_WORK:
                break
            half = (len(runs) + 1) // 2
            chunks[largest : largest + 1] = [runs[:half], runs[half:]]
        return chunks

    def tasks(self, vectorize: bool | None = None) -> list[GroupTask]:
        """The executor's tasks (run ids must be known: after :func:`execute` queued them, or when resuming)."""
        plan = self if vectorize is None else dataclasses.replace(self, vectorize=vectorize)
        tasks = []
        for i, runs in enumerate(plan.layout()):
            configs = tuple(r.config for r in runs)
            tasks.append(GroupTask(i, self.url, configs[0], tuple(r.seed for r in runs),
                                   tuple(r.run_id for r in runs), self.plugins_dir,
                                   configs if len(set(configs)) > 1 else ()))
        return tasks

    def varying(self) -> list[str]:
        """The grid keys whose values differ between the configurations (they label results and bars)."""
        return [k for k in GRID_KEYS if len({getattr(c, k) for c in self.configs}) > 1]

    def label(self, config: RunConfig, keys: Sequence[str] | None = None) -> str:
        """``optimizer=adamw, lr=0.01`` from the grid keys that vary between the configurations (or the
        optimizer alone); pass ``keys`` (:meth:`varying`) when labelling many configurations."""
        keys = (self.varying() if keys is None else keys) or ["optimizer"]
        return ", ".join(f"{k}={config.text(k)}" for k in keys)

    def bars(self) -> list[tuple[str, int]]:
        """One progress bar per task, as executed: its label and its epochs."""
        keys = [k for k in self.varying() if k != "lr"]
        out = []
        for runs in self.layout():
            first = runs[0].config
            config = dataclasses.replace(first, optimizer=_structural(first.optimizer),
                                         schedule=_structural(first.schedule))
            head = ", ".join(f"{k}={config.text(k)}" for k in keys) or config.text("optimizer")
            configs = len({r.config for r in runs})
            seeds = len(runs) // configs
            size = (f"{len(runs)} seeds" if configs == 1 else f"{configs} configs x {seeds} seeds"
                    if configs * seeds == len(runs) else f"{len(runs)} runs of {configs} configs")
            out.append((f"{head} ({size})", config.epochs))
        return out


def from_spec(spec: ExperimentSpec, *, db: str | None = None, plugins_dir: str | None = None,
              vectorize: bool = True, group_by_config: bool = False, jobs: int | None = None) -> RunPlan:
    """The plan of a new experiment: every configuration of ``spec`` times its seeds, validated."""
    from expsvc.store import default_url

    configs = spec.configs()
    runs = [PlannedRun(c, seed) for c in configs for seed in spec.seeds]
    plan = RunPlan(db or default_url(), configs, runs, plugins_dir, spec.name, spec.description,
                   vectorize=vectorize, group_by_config=group_by_config, jobs=_jobs(jobs))
    return validate(plan)


def from_store(experiment: str, *, db: str | None = None, plugins_dir: str | None = None, vectorize: bool = True,
               group_by_config: bool = False, jobs: int | None = None) -> RunPlan:
    """The plan of ``expsvc run --resume``: the runs of ``experiment`` that did not finish (stale ``running``
    ones count), with their stored configurations and seeds, validated."""
    from expsvc.store import RunStore, default_url

    url = db or default_url()
    store = RunStore.open(url, create=False)  # marks stale running runs failed first
    try:
        found = store.resolve_experiment(experiment)
        stored = store.resumable_runs(found.id)
        counts = store.status_counts(found.id)
    finally:
        store.close()
    runs = []
    for run in stored:
        try:
            config = RunConfig.from_dict(run.config)
        except (KeyError, TypeError):
            raise ExpsvcError(f"run {run.id[:8]} has no complete configuration; it cannot be resumed") from None
        runs.append(PlannedRun(config, int(run.seed), run.id))
    plan = RunPlan(url, list(dict.fromkeys(r.config for r in runs)), runs, plugins_dir, found.name,
                   experiment_id=found.id, counts=counts, resuming=True, vectorize=vectorize,
                   group_by_config=group_by_config, jobs=_jobs(jobs))
    return validate(plan)


def _jobs(jobs: int | None) -> int:
    return LocalExecutor(jobs).jobs


def validate(plan: RunPlan, system: PluginSystem | None = None) -> RunPlan:
    """Resolve each learning rate left to the optimizer's own default, then fail early, in one line, on what
    cannot run: every structure is built once on its data and tried forward; every grid point's optimizer and
    schedule are constructed.  Records how many replicas of each structure fit the memory budget."""
    system = system or get_system(plan.plugins_dir)
    resolved = {c: c if c.lr is not None else dataclasses.replace(c, lr=default_lr(system, c.optimizer))
                for c in plan.configs}
    plan.configs = list(dict.fromkeys(resolved.values()))
    plan.runs = [dataclasses.replace(r, config=resolved[r.config]) for r in plan.runs]
    data: dict[tuple[ComponentSpec, float], DataSplit] = {}
    seen: set[tuple[str, ComponentSpec]] = set()
    for config in plan.configs:
        for kind, what, spec in (("optimizer", "optimizer", config.optimizer.with_defaults(lr=config.lr)),
                                 ("scheduler", "schedule", config.schedule)):
            if (kind, spec) not in seen:
                seen.add((kind, spec))
                instantiate(system.registry.resolve(kind, spec.name), spec, what)
        key = structure(config)
        if key in plan.max_rows:
            continue
        dataset = (dataset_for(config, plan.runs[0].seed if plan.runs else 0), config.val_split)
        if dataset not in data:
            data[dataset] = load_dataset(system, *dataset)[0]
        shapes = check(system, config, data[dataset])
        fit = None if shapes is None else replicas_within(shapes, data[dataset], config.dtype)
        plan.max_rows[key] = None if fit is None else max(1, fit // max(1, min(plan.jobs, len(plan.runs))))
        if shapes is not None:
            plan.row_work[key] = config.epochs * len(data[dataset].x_train) * max(1, shapes.params)
    return plan


def execute(plan: RunPlan, *, executor: Executor | None = None, progress: Progress | None = None) -> ExperimentResult:
    """Record the plan's runs (new: the experiment and every run as ``queued``, in one transaction; resumed:
    reset), execute its tasks, return an outcome per configuration.  Ctrl-C marks every unfinished run
    ``interrupted`` and re-raises ``KeyboardInterrupt``."""
    from expsvc.store import NewRun, RunStore

    store = RunStore.open(plan.url, create=not plan.resuming)
    try:
        if plan.resuming:
            reset = set(store.reset_runs(plan.run_ids))
            plan.runs = [r for r in plan.runs if r.run_id in reset]
        else:
            plan.experiment = plan.experiment or f"run-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
            by_config: dict[RunConfig, list[int]] = {}
            for i, run in enumerate(plan.runs):
                by_config.setdefault(run.config, []).append(i)
            queued = [[NewRun(seed=plan.runs[i].seed, group_key=c.group_key,
                              config={**c.as_dict(), "seed": plan.runs[i].seed}, params=c.params()) for i in rows]
                      for c, rows in by_config.items()]
            plan.experiment_id, ids = store.create_experiment_runs(plan.experiment, plan.description, queued)
            for rows, run_ids in zip(by_config.values(), ids, strict=True):
                for i, run_id in zip(rows, run_ids, strict=True):
                    plan.runs[i] = dataclasses.replace(plan.runs[i], run_id=run_id)
        tasks = plan.tasks()
        store.engine.dispose()
        runner = executor or LocalExecutor(plan.jobs)
        try:
            outcomes = runner.run(tasks, progress)
        except KeyboardInterrupt:
            store.mark_unfinished(plan.run_ids, "interrupted", "interrupted by the user (Ctrl-C)")
            raise
    finally:
        store.close()
    assert plan.experiment is not None and plan.experiment_id is not None
    return ExperimentResult(plan.experiment, plan.experiment_id, plan.url, results(plan, outcomes))


def results(plan: RunPlan, outcomes: Sequence[GroupOutcome]) -> list[GroupResult]:
    """The outcomes by configuration, in the plan's order."""
    by_id = {o.run_id: o for g in outcomes for o in g.runs}
    out: dict[RunConfig, GroupResult] = {}
    keys = plan.varying()
    for run in plan.runs:
        if run.config not in out:
            out[run.config] = GroupResult(run.config, plan.label(run.config, keys), [])
        group = out[run.config]
        group.outcomes.append(by_id[run.run_id])
    return list(out.values())


__all__ = ["ExperimentResult", "GroupResult", "PlanGroup", "PlannedRun", "RunPlan", "execute", "from_spec",
           "from_store", "structure", "validate"]

