"""Turn a :class:`RunConfig` into live components through the plugin registry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from expsvc.core import Dataset, DataSplit, Loss, Optimizer, Scheduler, Sequential, ShapeError, replica_streams
from expsvc.core.data import split_problem
from expsvc.core.layer import fmt_shape
from expsvc.core.rng import component_roots
from expsvc.errors import ExpsvcError
from expsvc.plugins import PluginSystem
from expsvc.registry import PluginFailure, Registration, instantiate, plugin_code
from expsvc.runner.budget import check_memory, dataset_bytes, model_shapes, training_bytes
from expsvc.runner.spec import RunConfig, dataset_for, optimizer_spec, shares_data
from expsvc.specs import ComponentSpec, parse, parse_list

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


def _make(system: PluginSystem, kinds: str | tuple[str, ...], spec: ComponentSpec, what: str,
          provenance: list[tuple[Registration, ComponentSpec]]) -> Any:
    reg = system.registry.resolve(kinds, spec.name)
    provenance.append((reg, spec))
    return instantiate(reg, spec, what)


def load_dataset(system: PluginSystem, text: str) -> tuple[DataSplit, Registration, ComponentSpec]:
    """Instantiate and load a dataset, turning its failures into one-line errors."""
    spec = parse(text, "dataset")
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
          data: DataSplit | None = None, replicas: int = 0) -> Components:
    """Build the components of one group of ``seeds`` (init from each seed's own stream; the data from
    :func:`~expsvc.runner.spec.dataset_for`, which all the seeds of a group share).

    Refuses, before allocating the model, a group that needs more memory than the budget; ``replicas``
    (if larger than ``len(seeds)``) sizes that check for a larger group than the one built."""
    if not shares_data(config) and len(seeds) > 1:
        raise ExpsvcError(f"data_seed {config.data_seed!r} gives each seed its own data: build one seed at a time")
    provenance: list[tuple[Registration, ComponentSpec]] = []
    data_reg = None
    dataset = dataset_for(config, seeds[0])
    if data is None:
        data, data_reg, data_spec = load_dataset(system, dataset)
        provenance.append((data_reg, data_spec))
    else:
        spec = parse(dataset, "dataset")
        provenance.append((system.registry.resolve("dataset", spec.name), spec))
    layers = [_make(system, MODEL_KINDS, s, "model", provenance) for s in parse_list(config.model, "model")]
    loss = _make(system, "loss", parse(config.loss, "loss"), "loss", provenance)
    optimizer = _make(system, "optimizer", optimizer_spec(config), "optimizer", provenance)
    scheduler = _make(system, "scheduler", parse(config.schedule, "schedule"), "schedule", provenance)
    init_rngs, order_rngs = replica_streams(seeds)
    dtype = np.dtype(config.dtype)
    parts = [(layer, reg, spec) for layer, (reg, spec) in zip(layers, provenance[1:], strict=False)]
    with plugin_code(parts, "model", "build", passthrough=(ShapeError,)):
        shapes = model_shapes(layers, data.input_shape)
        group = max(len(seeds), replicas)
        check_memory(f"model {config.model!r} on {config.dataset!r} with {group} replica(s)",
                     training_bytes(shapes, data, group, config.dtype))
        model = Sequential(layers).build(data.input_shape, init_rngs, dtype=dtype,
                                         random_roots=component_roots(seeds))
    metrics = metrics_for(system, data.task)
    for name in metrics:
        provenance.append((system.registry.resolve("metric", name), ComponentSpec(name)))
    return Components(data, model, loss, optimizer, scheduler, metrics, order_rngs, provenance)


def check(system: PluginSystem, config: RunConfig, data: DataSplit, replicas: int = 1) -> None:
    """Fail early, with one line, if a layer does not fit its input shape, if the model's outputs do not fit
    the loss and the dataset's targets, if a component's code raises, or if a group of ``replicas`` would not
    fit in memory."""
    try:
        comps = build(system, config, [0], data=data, replicas=replicas)
    except ShapeError as err:
        specs = parse_list(config.model, "model")
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
            f"loss {config.loss!r} is for {task} targets but dataset {config.dataset!r} is {data.task}"
        )
    target = y if y.dtype.kind in "iu" else y.astype(config.dtype)
    parts = [(obj, reg, spec) for obj, (reg, spec) in zip([*comps.model.layers, comps.loss], comps.provenance[1:],
                                                          strict=False)]
    try:
        with np.errstate(all="ignore"), plugin_code(parts, "model", "forward", passthrough=(ValueError, IndexError)):
            comps.loss.forward(comps.model.forward(x, train=False), target)
    except (ValueError, IndexError) as err:
        raise ExpsvcError(
            f"model {config.model!r} does not fit loss {config.loss!r} on {config.dataset!r}: {err}"
        ) from None
