"""The Python API (notebooks and the CLI alike): ``Experiment``, ``run`` and ``load_model``.

>>> import expsvc
>>> result = expsvc.run(optimizer=["mini_bgd", "adamw"], seeds=5, db="sqlite:///experiments.db")
>>> model = expsvc.load_model(result.run_ids[0], db="sqlite:///experiments.db")
>>> expsvc.runner.api.resume(result.experiment, db="sqlite:///experiments.db")  # re-run what did not finish
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from expsvc.core import DataSplit, Loss, Sequential
from expsvc.errors import ExpsvcError
from expsvc.plugins import get_system
from expsvc.runner.build import build, check, load_dataset
from expsvc.runner.execute import GroupOutcome, GroupTask, Progress, group_tasks
from expsvc.runner.executors import Executor, LocalExecutor
from expsvc.runner.spec import GRID_KEYS, ExperimentSpec, RunConfig, dataset_for, shares_data


@dataclass
class GroupResult:
    """A configuration and the outcome of each of its seeds."""

    config: RunConfig
    label: str
    outcomes: list[Any]

    def values(self, key: str) -> np.ndarray:
        got = [o.final_loss if key == "final_loss" else o.updates if key == "updates" else o.metrics.get(key)
               for o in self.outcomes if o.status in ("finished", "diverged")]
        return np.array([np.nan if v is None else v for v in got], dtype=float)


@dataclass
class ExperimentResult:
    """What ``Experiment.run`` returns: where the runs are, and a short outcome per group."""

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


class Experiment:
    """A validated experiment spec that can be run against a store."""

    def __init__(self, spec: ExperimentSpec | None = None, **values: Any) -> None:
        self.spec = spec if spec is not None else ExperimentSpec.from_dict(values, source="experiment")
        self._validated: dict[str | None, list[RunConfig]] = {}

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> Experiment:
        return cls(ExperimentSpec.from_file(path, overrides))

    def label(self, config: RunConfig) -> str:
        """``optimizer=adamw, lr=0.01`` from the grid keys that vary (or the optimizer alone)."""
        keys = self.spec.varying() or ["optimizer"]
        return ", ".join(f"{k}={getattr(config, k)}" for k in keys)

    def validate(self, plugins_dir: str | None = None) -> list[RunConfig]:
        """Resolve every component and try one forward pass per configuration; raise one-line errors.

        Done once per plugins folder: ``run`` reuses the result of an earlier call.
        """
        if plugins_dir in self._validated:
            return self._validated[plugins_dir]
        system = get_system(plugins_dir)
        configs = self.spec.configs()
        data: dict[str, DataSplit] = {}
        for config in configs:
            dataset = dataset_for(config, self.spec.seeds[0])
            if dataset not in data:
                data[dataset] = load_dataset(system, dataset)[0]
            check(system, config, data[dataset], replicas=len(self.spec.seeds) if shares_data(config) else 1)
        self._validated[plugins_dir] = configs
        return configs

    def run(
        self,
        *,
        db: str | None = None,
        jobs: int | None = None,
        vectorize: bool = True,
        executor: Executor | None = None,
        plugins_dir: str | None = None,
        progress: Progress | None = None,
    ) -> ExperimentResult:
        """Validate, record every run as queued, execute the groups, return their outcomes.

        Ctrl-C marks every unfinished run ``interrupted`` and re-raises ``KeyboardInterrupt``.
        """
        from expsvc.store import NewRun, RunStore, default_url

        configs = self.validate(plugins_dir)
        url = db or default_url()
        store = RunStore.open(url, create=True)
        try:
            name = self.spec.name or f"run-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
            groups = [
                [NewRun(seed=seed, group_key=config.group_key, config={**config.as_dict(), "seed": seed},
                        params=config.params()) for seed in self.spec.seeds]
                for config in configs
            ]  # the experiment and all its queued runs commit together, or nothing is written
            experiment_id, run_ids = store.create_experiment_runs(name, self.spec.description, groups)
            all_ids = [i for ids in run_ids for i in ids]
            tasks = group_tasks(url, configs, self.spec.seeds, run_ids, vectorize, plugins_dir)
            store.engine.dispose()
            runner = executor or LocalExecutor(jobs)
            try:
                outcomes = runner.run(tasks, progress)
            except KeyboardInterrupt:
                store.mark_unfinished(all_ids, "interrupted", "interrupted by the user (Ctrl-C)")
                raise
        finally:
            store.close()
        return ExperimentResult(name, experiment_id, url, self._groups(configs, run_ids, outcomes))

    def _groups(self, configs: Sequence[RunConfig], run_ids: Sequence[Sequence[str]],
                outcomes: Sequence[GroupOutcome]) -> list[GroupResult]:
        by_id = {o.run_id: o for g in outcomes for o in g.runs}
        return [GroupResult(c, self.label(c), [by_id[i] for i in ids]) for c, ids in zip(configs, run_ids, strict=True)]


@dataclass
class ResumeGroup:
    """A configuration to run again and its runs (id, seed) that did not finish."""

    config: RunConfig
    runs: list[tuple[str, int]]


@dataclass
class ResumePlan:
    """What ``expsvc run --resume`` will run again: the unfinished runs of one experiment, by configuration."""

    experiment: str
    experiment_id: int
    url: str
    counts: dict[str, int]
    groups: list[ResumeGroup]
    plugins_dir: str | None = None

    @property
    def run_ids(self) -> list[str]:
        return [run_id for g in self.groups for run_id, _ in g.runs]

    def label(self, config: RunConfig) -> str:
        """The grid keys that differ between the resumed configurations (or the optimizer alone)."""
        keys = [k for k in GRID_KEYS if len({getattr(g.config, k) for g in self.groups}) > 1] or ["optimizer"]
        return ", ".join(f"{k}={getattr(config, k)}" for k in keys)

    def tasks(self, vectorize: bool = True) -> list[GroupTask]:
        """One task per configuration (its resumed seeds vectorised) or, without vectorisation, one per seed."""
        tasks: list[GroupTask] = []
        for group in self.groups:
            chunks = [group.runs] if vectorize and shares_data(group.config) else [[run] for run in group.runs]
            for chunk in chunks:
                tasks.append(GroupTask(len(tasks), self.url, group.config, tuple(seed for _, seed in chunk),
                                       tuple(run_id for run_id, _ in chunk), self.plugins_dir))
        return tasks

    def run(self, *, jobs: int | None = None, vectorize: bool = True, executor: Executor | None = None,
            progress: Progress | None = None) -> ExperimentResult:
        """Reset the planned runs (history, summaries, components, artifacts, status) and execute them again."""
        from expsvc.store import RunStore

        store = RunStore.open(self.url, create=False)
        try:
            reset = set(store.reset_runs(self.run_ids))
            self.groups = [ResumeGroup(g.config, [r for r in g.runs if r[0] in reset]) for g in self.groups]
            self.groups = [g for g in self.groups if g.runs]
            tasks = self.tasks(vectorize)
            store.engine.dispose()
            runner = executor or LocalExecutor(jobs)
            try:
                outcomes = runner.run(tasks, progress)
            except KeyboardInterrupt:
                store.mark_unfinished(self.run_ids, "interrupted", "interrupted by the user (Ctrl-C)")
                raise
        finally:
            store.close()
        by_id = {o.run_id: o for g in outcomes for o in g.runs}
        groups = [GroupResult(g.config, self.label(g.config), [by_id[run_id] for run_id, _ in g.runs])
                  for g in self.groups]
        return ExperimentResult(self.experiment, self.experiment_id, self.url, groups)


def plan_resume(experiment: str, *, db: str | None = None, plugins_dir: str | None = None) -> ResumePlan:
    """Find the runs of ``experiment`` that did not finish (stale ``running`` ones count) and validate their configs."""
    from expsvc.store import RunStore, default_url

    url = db or default_url()
    store = RunStore.open(url, create=False)  # marks stale running runs failed first
    try:
        found = store.resolve_experiment(experiment)
        runs = store.resumable_runs(found.id)
        counts = store.status_counts(found.id)
    finally:
        store.close()
    groups: dict[str, ResumeGroup] = {}
    for run in runs:
        try:
            config = RunConfig.from_dict(run.config)
        except (KeyError, TypeError):
            raise ExpsvcError(f"run {run.id[:8]} has no complete configuration; it cannot be resumed") from None
        groups.setdefault(run.group_key, ResumeGroup(config, [])).runs.append((run.id, int(run.seed)))
    system = get_system(plugins_dir)
    data: dict[str, DataSplit] = {}
    for group in groups.values():
        dataset = dataset_for(group.config, group.runs[0][1])
        if dataset not in data:
            data[dataset] = load_dataset(system, dataset)[0]
        check(system, group.config, data[dataset])
    return ResumePlan(found.name, found.id, url, counts, list(groups.values()), plugins_dir)


def resume(experiment: str, *, db: str | None = None, jobs: int | None = None, vectorize: bool = True,
           executor: Executor | None = None, plugins_dir: str | None = None,
           progress: Progress | None = None) -> ExperimentResult:
    """Run again, with their stored config and seed, the runs of ``experiment`` that did not finish."""
    plan = plan_resume(experiment, db=db, plugins_dir=plugins_dir)
    return plan.run(jobs=jobs, vectorize=vectorize, executor=executor, progress=progress)


def run(spec: str | Path | dict[str, Any] | None = None, *, db: str | None = None, jobs: int | None = None,
        vectorize: bool = True, plugins_dir: str | None = None, **values: Any) -> ExperimentResult:
    """Run an experiment from a TOML file path, a dict of spec values, or keyword values."""
    if isinstance(spec, str | Path):
        experiment = Experiment.from_file(spec, **values)
    else:
        experiment = Experiment(**{**(spec or {}), **values})
    return experiment.run(db=db, jobs=jobs, vectorize=vectorize, plugins_dir=plugins_dir)


@dataclass
class LoadedModel:
    """A trained run, rebuilt for predictions: one replica with its final parameters."""

    run_id: str
    config: dict[str, Any]
    model: Sequential
    loss: Loss
    data: DataSplit

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """Raw model outputs ``(N, O)`` for inputs ``(N, *in_shape)``, in eval mode."""
        xs = np.asarray(x, dtype=self.model.buffer.dtype)[None]  # type: ignore[union-attr]
        with np.errstate(all="ignore"):
            return self.model.forward(xs, train=False)[0]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions (labels or values) for inputs ``(N, F)``."""
        return self.loss.predict(self.outputs(x)[None])[0]


def load_model(run_id: str, db: str | None = None, plugins_dir: str | None = None) -> LoadedModel:
    """Rebuild the model of a recorded run (any unique id prefix) from its stored final parameters."""
    from expsvc.store import RunStore

    store = RunStore.open(db, create=False)
    try:
        run = store.resolve_run(run_id)
        config = dict(run.config)
        arrays = store.load_params(run.id)
    finally:
        store.close()
    comps = build(get_system(plugins_dir), RunConfig.from_dict(config), [int(config.get("seed", 0))])
    for p in comps.model.tensors():
        if p.name not in arrays:
            raise ExpsvcError(f"run {run.id[:8]}: stored parameters lack {p.name!r}; cannot rebuild the model")
        p.value[0] = arrays[p.name]
    return LoadedModel(run.id, config, comps.model, comps.loss, comps.data)
