"""The Python API (notebooks and the CLI alike): ``Experiment``, ``run`` and ``load_model``.

>>> import expsvc
>>> result = expsvc.run(optimizer=["mini_bgd", "adamw"], seeds=5, db="sqlite:///experiments.db")
>>> model = expsvc.load_model(result.run_ids[0], db="sqlite:///experiments.db")
>>> expsvc.runner.api.resume(result.experiment, db="sqlite:///experiments.db")  # re-run what did not finish

Both paths go through one :class:`~expsvc.runner.plan.RunPlan` (built, validated, executed in ``plan.py``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from expsvc.core import DataSplit, Loss, Sequential
from expsvc.errors import ExpsvcError
from expsvc.plugins import get_system
from expsvc.runner import plan as plans
from expsvc.runner.build import build, default_lr
from expsvc.runner.execute import Progress
from expsvc.runner.executors import Executor
from expsvc.runner.plan import ExperimentResult, GroupResult, RunPlan
from expsvc.runner.spec import ExperimentSpec, RunConfig


class Experiment:
    """A validated experiment spec that can be run against a store (through a :class:`RunPlan`)."""

    def __init__(self, spec: ExperimentSpec | None = None, **values: Any) -> None:
        self.spec = spec if spec is not None else ExperimentSpec.from_dict(values, source="experiment")
        self._plans: dict[tuple[Any, ...], RunPlan] = {}

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> Experiment:
        return cls(ExperimentSpec.from_file(path, overrides))

    def plan(self, *, db: str | None = None, plugins_dir: str | None = None, vectorize: bool = True,
             group_by_config: bool = False, jobs: int | None = None) -> RunPlan:
        """A fresh copy of the validated plan for ``db`` (validated once per set of options: ``run`` reuses an
        earlier ``validate``/``plan``; each copy records its own runs)."""
        from expsvc.store import default_url

        key = (plugins_dir, vectorize, group_by_config, jobs)
        if key not in self._plans:
            self._plans[key] = plans.from_spec(self.spec, db=db, plugins_dir=plugins_dir, vectorize=vectorize,
                                               group_by_config=group_by_config, jobs=jobs)
        done = self._plans[key]
        return dataclasses.replace(done, url=db or default_url(), runs=list(done.runs))

    def validate(self, plugins_dir: str | None = None) -> list[RunConfig]:
        """Resolve every component and try each structure once; raise one-line errors.  Returns the
        configurations (learning rates resolved)."""
        return self.plan(plugins_dir=plugins_dir).configs

    def label(self, config: RunConfig) -> str:
        """``optimizer=adamw, lr=0.01`` from the grid keys that vary (or the optimizer alone)."""
        return self.plan().label(config)

    def run(
        self,
        *,
        db: str | None = None,
        jobs: int | None = None,
        vectorize: bool = True,
        group_by_config: bool = False,
        executor: Executor | None = None,
        plugins_dir: str | None = None,
        progress: Progress | None = None,
    ) -> ExperimentResult:
        """Validate, record every run as queued, execute the groups, return their outcomes.

        Ctrl-C marks every unfinished run ``interrupted`` and re-raises ``KeyboardInterrupt``.
        """
        plan = self.plan(db=db, plugins_dir=plugins_dir, vectorize=vectorize, group_by_config=group_by_config,
                         jobs=jobs)
        return plans.execute(plan, executor=executor, progress=progress)


def plan_resume(experiment: str, *, db: str | None = None, plugins_dir: str | None = None, vectorize: bool = True,
                group_by_config: bool = False, jobs: int | None = None) -> RunPlan:
    """The validated plan of the runs of ``experiment`` that did not finish (stale ``running`` ones count)."""
    return plans.from_store(experiment, db=db, plugins_dir=plugins_dir, vectorize=vectorize,
                            group_by_config=group_by_config, jobs=jobs)


def resume(experiment: str, *, db: str | None = None, jobs: int | None = None, vectorize: bool = True,
           executor: Executor | None = None, plugins_dir: str | None = None,
           progress: Progress | None = None) -> ExperimentResult:
    """Run again, with their stored config and seed, the runs of ``experiment`` that did not finish."""
    plan = plan_resume(experiment, db=db, plugins_dir=plugins_dir, vectorize=vectorize, jobs=jobs)
    return plans.execute(plan, executor=executor, progress=progress)


def run(spec: str | Path | dict[str, Any] | None = None, *, db: str | None = None, jobs: int | None = None,
        vectorize: bool = True, group_by_config: bool = False, plugins_dir: str | None = None,
        **values: Any) -> ExperimentResult:
    """Run an experiment from a TOML file path, a dict of spec values, or keyword values."""
    if isinstance(spec, str | Path):
        experiment = Experiment.from_file(spec, **values)
    else:
        experiment = Experiment(**{**(spec or {}), **values})
    return experiment.run(db=db, jobs=jobs, vectorize=vectorize, group_by_config=group_by_config,
                          plugins_dir=plugins_dir)


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
    system = get_system(plugins_dir)
    stored = RunConfig.from_dict(config)
    if stored.lr is None:  # every stored run records its learning rate; this only guards a hand-edited one
        stored = dataclasses.replace(stored, lr=default_lr(system, stored.optimizer))
    comps = build(system, stored, [int(config.get("seed", 0))])
    for p in comps.model.tensors():
        if p.name not in arrays:
            raise ExpsvcError(f"run {run.id[:8]}: stored parameters lack {p.name!r}; cannot rebuild the model")
        p.value[0] = arrays[p.name]
    return LoadedModel(run.id, config, comps.model, comps.loss, comps.data)


__all__ = ["Experiment", "ExperimentResult", "GroupResult", "LoadedModel", "RunPlan", "load_model", "plan_resume",
           "resume", "run"]
