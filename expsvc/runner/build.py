"""Turn a :class:`RunConfig` (or the rows of a grid group) into live components through the plugin registry.

A grid group's rows share everything but the optimizer's and the schedule's numeric arguments (and the
seed).  Its optimizer is one instance taking per-replica columns for the arguments that vary, when they are
all in the optimizer's ``per_replica``; otherwise one instance per grid point bound to its rows
(:class:`~expsvc.core.optim.PointOptimizers`).  Its schedule is one instance per grid point
(:class:`~expsvc.core.optim.PointSchedules`).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from expsvc.core import Dataset, DataSplit, Loss, Optimizer, Scheduler, Sequential, ShapeError, replica_streams
from expsvc.core.data import hold_out, split_problem
from expsvc.core.layer import fmt_shape
from expsvc.core.optim import PointOptimizers, PointSchedules
from expsvc.core.rng import component_roots
from expsvc.errors import ExpsvcError
from expsvc.plugins import PluginSystem
from expsvc.registry import PluginFailure, Registration, instantiate, plugin_code
from expsvc.runner.budget import ModelShapes, check_memory, dataset_bytes, model_shapes, training_bytes
from expsvc.runner.spec import RunConfig, dataset_for, numeric, shares_data
from expsvc.specs import ComponentSpec

MODEL_KINDS = ("layer", "activation")


@dataclass
class Components:
    """Everything one group needs to train, plus where each piece came from."""

    data: DataSplit
    model: Sequential
    loss: Loss
    optimizer: Optimizer
    scheduler: Scheduler
    metrics: dict[str, Any]
    order_rngs: list[np.random.Generator]
    provenance: list[tuple[Registration, ComponentSpec]] = field(default_factory=list)
    shapes: ModelShapes | None = None


@dataclass(frozen=True)
class Point:
    """A grid point of a group: its optimizer (with its ``lr``), its schedule and its rows ``[start, stop)``."""

    optimizer: ComponentSpec
    schedule: ComponentSpec
    lr: float
    start: int
    stop: int


def points(configs: Sequence[RunConfig]) -> list[Point]:
    """The grid points of a group's rows: consecutive rows with the same optimizer, lr and schedule."""
    out: list[Point] = []
    for row, config in enumerate(configs):
        assert config.lr is not None, "the plan resolves every learning rate first"
        opt = config.optimizer.with_defaults(lr=config.lr)
        if out and (out[-1].optimizer, out[-1].schedule) == (opt, config.schedule):
            out[-1] = Point(opt, config.schedule, config.lr, out[-1].start, row + 1)
        else:
            out.append(Point(opt, config.schedule, config.lr, row, row + 1))
    return out


def resolved_arguments(reg: Registration, spec: ComponentSpec) -> dict[str, object]:
    """Every constructor argument of ``spec``, defaults filled in (empty if the signature cannot bind it)."""
    try:
        bound = inspect.signature(reg.cls).bind(*spec.args, **spec.kwargs)
    except (TypeError, ValueError):
        return {}
    bound.apply_defaults()
    return dict(bound.arguments)


def default_lr(system: PluginSystem, optimizer: ComponentSpec) -> float:
    """The optimizer's own default learning rate (its ``lr`` parameter's default; 1e-3 without one)."""
    reg = system.registry.resolve("optimizer", optimizer.name)
    try:
        param = inspect.signature(reg.cls).parameters.get("lr")
    except (TypeError, ValueError):
        param = None
    default = None if param is None else param.default
    return float(default) if isinstance(default, int | float) and not isinstance(default, bool) else 1e-3


def _column(values: list[object], sizes: list[int]) -> object:
    """Per-point values as per-replica columns: a float64 ``(R, 1)`` array, or a tuple of them for tuples."""
    if isinstance(values[0], tuple):
        return tuple(_column([v[i] for v in values], sizes) for i in range(len(values[0])))  # type: ignore[index]
    return np.repeat(np.array(values, dtype=np.float64), sizes).reshape(-1, 1)


def _grid_optimizer(system: PluginSystem, pts: Sequence[Point],
                    provenance: list[tuple[Registration, ComponentSpec]]) -> Optimizer:
    """One optimizer for a group's grid points (see the module docstring)."""
    reg = system.registry.resolve("optimizer", pts[0].optimizer.name)
    provenance.append((reg, pts[0].optimizer))
    if len(pts) == 1:
        return instantiate(reg, pts[0].optimizer, "optimizer")
    resolved = [resolved_arguments(reg, p.optimizer) for p in pts]
    varying = [k for k in resolved[0] if any(r.get(k) != resolved[0][k] for r in resolved)]
    per_replica = set(getattr(reg.cls, "per_replica", ()))
    if any(r.get(k) is None for r in resolved for k in varying):  # a None default the constructor resolves
        # (Adam's weight_decay): read the value the instance keeps under the argument's name
        for r, p in zip(resolved, pts, strict=True):
            for k in varying:
                if r.get(k) is None:
                    r[k] = getattr(instantiate(reg, p.optimizer, "optimizer"), k, None)
    columns_fit = all(numeric(r[k]) for r in resolved for k in varying)  # else one instance per point
    if resolved[0] and varying and set(varying) <= per_replica and columns_fit:
        sizes = [p.stop - p.start for p in pts]
        columns = {k: _column([r[k] for r in resolved], sizes) for k in varying}
        return instantiate(reg, pts[0].optimizer, "optimizer", columns)
    return PointOptimizers([instantiate(reg, p.optimizer, "optimizer") for p in pts], [(p.start, p.stop) for p in pts])


def _make(system: PluginSystem, kinds: str | tuple[str, ...], spec: ComponentSpec, what: str,
          provenance: list[tuple[Registration, ComponentSpec]]) -> Any:
    reg = system.registry.resolve(kinds, spec.name)
    provenance.append((reg, spec))
    return instantiate(reg, spec, what)


def load_dataset(system: PluginSystem, spec: ComponentSpec,
                 val_split: float = 0.0) -> tuple[DataSplit, Registration, ComponentSpec]:
    """Instantiate and load a dataset, turning its failures into one-line errors; ``val_split`` > 0 holds out
    that fraction of its training rows as validation (:func:`~expsvc.core.data.hold_out`, drawn from the
    dataset's seed, never a run's)."""
    text = str(spec)
    reg = system.registry.resolve("dataset", spec.name)
    dataset: Dataset = instantiate(reg, spec, "dataset")
    try:
        with plugin_code([(dataset, reg, spec)], "dataset", "load()", passthrough=(OSError, ValueError)):
            check_memory(f"dataset {text!r}", dataset_bytes(dataset))
            data = dataset.load()
    except (OSError, ValueError) as err:
        raise ExpsvcError(f"dataset {text!r}: {err}") from None
    problem = split_problem(data)
    if problem is not None:
        raise PluginFailure(f"dataset {text!r} (plugin {reg.plugin!r}): load() {problem}")
    try:
        data = hold_out(data, val_split, getattr(dataset, "seed", 0))
    except ValueError as err:
        raise ExpsvcError(f"dataset {text!r}: {err}") from None
    return data, reg, spec


def metrics_for(system: PluginSystem, task: str) -> dict[str, Any]:
    """Every registered metric that applies to ``task``, instantiated with its defaults."""
    out: dict[str, Any] = {}
    for name in system.registry.names("metric"):
        try:
            reg = system.registry.resolve("metric", name)
        except ExpsvcError:
            continue
        if reg.name == name and task in getattr(reg.cls, "tasks", ()):
            out[name] = instantiate(reg, ComponentSpec(name), "metric")
    return out


def build(system: PluginSystem, config: RunConfig, seeds: Sequence[int],
          data: DataSplit | None = None, replicas: int = 0, configs: Sequence[RunConfig] = ()) -> Components:
    """Build the components of one group of ``seeds`` (init from each seed's own stream; the data from
    :func:`~expsvc.runner.spec.dataset_for`, which all the seeds of a group share).  ``configs`` are the rows'
    configurations when they are the grid points of one structure (default: ``config`` for every row).

    Refuses, before allocating the model, a group that needs more memory than the budget; ``replicas``
    (if larger than ``len(seeds)``) sizes that check for a larger group than the one built."""
    rows = list(configs) or [config] * len(seeds)
    if not shares_data(config) and len(set(seeds)) > 1:
        raise ExpsvcError(f"data_seed {config.data_seed!r} gives each seed its own data: build one seed at a time")
    provenance: list[tuple[Registration, ComponentSpec]] = []
    data_reg = None
    dataset = dataset_for(config, seeds[0])
    if data is None:
        data, data_reg, data_spec = load_dataset(system, dataset, config.val_split)
        provenance.append((data_reg, data_spec))
    else:
        provenance.append((system.registry.resolve("dataset", dataset.name), dataset))
    layers = [_make(system, MODEL_KINDS, s, "model", provenance) for s in config.model]
    loss = _make(system, "loss", config.loss, "loss", provenance)
    pts = points(rows)
    optimizer = _grid_optimizer(system, pts, provenance)
    schedules = [_make(system, "scheduler", p.schedule, "schedule", provenance if i == 0 else [])
                 for i, p in enumerate(pts)]
    scheduler = schedules[0] if len(pts) == 1 else PointSchedules(
        [(s, p.lr, p.stop - p.start) for s, p in zip(schedules, pts, strict=True)])
    init_rngs, order_rngs = replica_streams(seeds)
    dtype = np.dtype(config.dtype)
    parts = [(layer, reg, spec) for layer, (reg, spec) in zip(layers, provenance[1:], strict=False)]
    with plugin_code(parts, "model", "build", passthrough=(ShapeError,)):
        shapes = model_shapes(layers, data.input_shape)
        group = max(len(seeds), replicas)
        check_memory(f"model {config.text('model')!r} on {config.text('dataset')!r} with {group} replica(s)",
                     training_bytes(shapes, data, group, config.dtype))
        model = Sequential(layers).build(data.input_shape, init_rngs, dtype=dtype,
                                         random_roots=component_roots(seeds))
    metrics = metrics_for(system, data.task)
    for name in metrics:
        provenance.append((system.registry.resolve("metric", name), ComponentSpec(name)))
    return Components(data, model, loss, optimizer, scheduler, metrics, order_rngs, provenance, shapes)


def check(system: PluginSystem, config: RunConfig, data: DataSplit, replicas: int = 1) -> ModelShapes | None:
    """Fail early, with one line, if a layer does not fit its input shape, if the model's outputs do not fit
    the loss and the dataset's targets, if a component's code raises, or if a group of ``replicas`` would not
    fit in memory."""
    try:
        comps = build(system, config, [0], data=data, replicas=replicas)
    except ShapeError as err:
        specs = config.model
        text = str(specs[err.position - 1]) if err.position and err.position <= len(specs) else repr(err.layer)
        raise ExpsvcError(
            f"model layer {err.position} {text!r} does not fit input shape {fmt_shape(err.in_shape)} "
            f"(from {'the dataset' if err.position == 1 else f'layer {(err.position or 1) - 1}'}): {err.reason}"
        ) from None
    n = min(len(data.x_train), config.batch_size, 4)
    x = np.asarray(data.x_train[None, :n], dtype=config.dtype)
    y = data.y_train[None, :n]
    task = getattr(comps.loss, "task", None)
    if task and task != data.task and not (task == "regression" and data.task != "multiclass"):
        raise ExpsvcError(
            f"loss {config.text('loss')!r} is for {task} targets but dataset {config.text('dataset')!r} is {data.task}"
        )
    target = y if y.dtype.kind in "iu" else y.astype(config.dtype)
    parts = [(obj, reg, spec) for obj, (reg, spec) in zip([*comps.model.layers, comps.loss], comps.provenance[1:],
                                                          strict=False)]
    try:
        with np.errstate(all="ignore"), plugin_code(parts, "model", "forward", passthrough=(ValueError, IndexError)):
            comps.loss.forward(comps.model.forward(x, train=False), target)
    except (ValueError, IndexError) as err:
        raise ExpsvcError(
            f"model {config.text('model')!r} does not fit loss {config.text('loss')!r} on {config.text('dataset')!r}: "
            f"{err}"
        ) from None
    return comps.shapes
