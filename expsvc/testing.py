"""Conformance checks for plugin authors: does a component keep the contracts expsvc relies on?

``check_layer``, ``check_loss``, ``check_optimizer``, ``check_scheduler``, ``check_dataset`` and
``check_metric`` take a component class (instantiated with ``**arguments``) or a spec string of a registered
component (``"dropout(0.3)"``) and verify, property by property:

* **gradcheck** — ``backward`` against central differences in float64, in training and eval mode, with the
  layer's random streams rewound so a stochastic layer is one fixed function;
* **replica independence** — a group of R = 3 replicas gives, bit for bit, what three R = 1 groups of the
  same seeds give, and a NaN in one replica leaves the others untouched;
* **dtype** — float32 in, float32 out (and float32 state);
* **determinism** — same seed, same numbers (randomness only from the documented streams);
* **no input mutation** — inputs and upstream gradients are not written to;
* **shapes** — the shape ``build_shape`` reports is the shape ``forward`` returns;
* **pickling** — a new instance survives ``pickle`` and its copy computes the same numbers (the process and
  Dask executors send components to workers);
* **arguments** — a wrong argument is refused with one clear error (a ``ValueError``/``TypeError`` or a
  type hint), not accepted silently and not some other exception;
* optimizers: **learning rate** (the ``lr`` the training loop sets is the one used) and the **grid contract**
  (arguments listed in ``per_replica`` arrive as one value per replica); schedules: **value** (a finite
  number >= 0) and **stateless**; datasets:
  **split** (``load()`` keeps the :class:`~expsvc.core.data.DataSplit` contract).

Each ``check_*`` returns the list of :class:`Finding` and raises :class:`ConformanceError` (an
``AssertionError``, so pytest shows it as a test failure) naming every property that failed and how to fix
it.  :func:`run_checks` returns the findings without raising (what ``expsvc check`` prints).

Also a pytest plugin (entry point ``pytest11``): its fixture ``expsvc_check`` is :func:`check`, which picks
the check by the component's kind.
"""

from __future__ import annotations

import inspect
import math
import pickle
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from expsvc.core import Dataset, Layer, Loss, Metric, Optimizer, Scheduler, Sequential
from expsvc.core.data import split_problem
from expsvc.core.gradcheck import gradcheck_layer, gradcheck_loss
from expsvc.core.rng import component_roots, replica_streams

SEEDS = (3, 14, 15)
"""The run seeds of the checked replicas (R = 3; each also alone, R = 1)."""

FIXES: dict[str, str] = {
    "gradcheck": "make backward() return dL/dx of the last forward and add each parameter's gradient into "
                 "param.grad (check both train=True and train=False paths)",
    "replica independence": "never reduce or draw across the replica axis (axis 0): compute per row, and draw "
                            "random numbers only from self.random (one generator per replica), never from "
                            "numpy.random or a generator of your own",
    "dtype": "compute in the input's dtype: allocate with x.dtype / buffer.dtype (np.zeros_like, "
             "np.empty(shape, dtype=...)), never with numpy's float64 default",
    "determinism": "draw randomness only from the documented streams (self.random for layers and "
                   "optimizers, self.rng() for datasets), never from numpy.random's global state or the clock",
    "no input mutation": "do not write into the arrays you are given (use out-of-place operations: y = x * m, "
                         "not x *= m)",
    "shapes": "return from build_shape(in_shape) exactly the per-sample shape forward() produces; forward "
              "keeps the leading (R, B) axes",
    "pickling": "keep only picklable state (no lambdas, locks, open files, generators of modules); make "
                "such things lazily or implement __getstate__",
    "arguments": "validate arguments in __init__ and raise ValueError naming the value and what is allowed "
                 "(or annotate the argument's type: expsvc refuses other types before calling you)",
    "learning rate": "read self.lr at every step(): the training loop sets it from the schedule each epoch",
    "grid contract": "an argument listed in per_replica may arrive as a float64 column (R, 1): use it in "
                     "element-wise arithmetic against (R, P) arrays, never one row of it or a reduction",
    "value": "return a plain finite number >= 0 from lr(base_lr, epoch) (the training loop converts it with float())",
    "stateless": "compute lr(base_lr, epoch) from its arguments only: a grid calls every point's schedule, "
                 "in any order",
    "split": "return a DataSplit of numeric arrays: x (N, ...) with the same feature shape in train and test, "
             "one target row per input, a task among binary, multiclass, regression",
}
"""How to fix each property (appended to every failure)."""


@dataclass(frozen=True)
class Finding:
    """The verdict of one property: ``problem`` is None when it holds."""

    component: str
    property: str
    problem: str | None = None
    skipped: str | None = None

    @property
    def passed(self) -> bool:
        return self.problem is None

    def message(self) -> str:
        """One line: what failed and how to fix it (or that it passed / was skipped)."""
        if self.problem is None:
            return f"{self.component}: {self.property}: " + (f"skipped ({self.skipped})" if self.skipped else "ok")
        return f"{self.component}: {self.property} failed: {self.problem}. Fix: {FIXES[self.property]}"


class ConformanceError(AssertionError):
    """One or more properties failed; ``findings`` holds every verdict, the message every failure."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        super().__init__("\n".join(f.message() for f in findings if not f.passed))


class _Failed(Exception):
    """A property does not hold (raised inside a property's function)."""


class _Skip(Exception):
    """A property that does not apply to this component (the reason is reported)."""


# ------------------------------------------------------------------------------------------ components


@dataclass
class _Subject:
    """What is checked: a factory of fresh instances, its class, its label and its registration."""

    kind: str
    cls: type
    make: Callable[[], Any]
    label: str
    registration: Any
    spec: Any


def _subject(component: type | str, kind: str, arguments: dict[str, Any]) -> _Subject:
    """A factory for ``component`` (a class, or a spec string resolved through the installed plugins)."""
    from expsvc.registry import Registration, base_class, instantiate
    from expsvc.specs import ComponentSpec, parse

    kinds = ("layer", "activation") if kind == "layer" else (kind,)
    if isinstance(component, str):
        from expsvc.plugins import get_system

        spec = parse(component, kind)
        if arguments:
            spec = ComponentSpec(spec.name, spec.args, {**spec.kwargs, **arguments})
        reg = get_system().registry.resolve(kinds, spec.name)
        return _Subject(kind, reg.cls, lambda: instantiate(reg, spec, reg.kind), str(spec), reg, spec)
    if not (isinstance(component, type) and issubclass(component, base_class(kind))):
        raise TypeError(f"check_{kind} takes a subclass of expsvc.{base_class(kind).__name__} or a spec string, "
                        f"not {component!r}")
    name = getattr(component, "name", "") or component.__name__
    spec = ComponentSpec(name, (), dict(arguments))
    reg = Registration(kinds[0], name, component, "(under test)")
    return _Subject(kind, component, lambda: component(**arguments), str(spec), reg, spec)


@contextmanager
def _plugin(what: str) -> Iterator[None]:
    """Plugin code that raises fails the property with the exception's first line."""
    from expsvc.registry import describe_exception

    try:
        with np.errstate(all="ignore"):
            yield
    except _Failed:
        raise
    except Exception as err:  # plugin code may raise anything; the property reports it
        raise _Failed(f"{what} raised {describe_exception(err)}") from err


def _same(a: Any, b: Any) -> bool:
    """Bit-for-bit equality of two lists of arrays (NaN equals NaN)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if not np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
            return False
    return True


def _rows(results: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Per-replica results (each with a leading axis of 1) stacked into one group's (R, ...)."""
    return [np.concatenate(parts, axis=0) for parts in zip(*results, strict=True)]


def _pick(arrays: list[np.ndarray], rows: list[int]) -> list[np.ndarray]:
    return [np.asarray(a)[rows] for a in arrays]


def _first_diff(a: list[np.ndarray], b: list[np.ndarray], names: list[str]) -> str:
    for name, x, y in zip(names, a, b, strict=False):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape:
            return f"{name} has shape {x.shape} instead of {y.shape}"
        if x.dtype != y.dtype:
            return f"{name} has dtype {x.dtype} instead of {y.dtype}"
        if not np.array_equal(x, y, equal_nan=True):
            with np.errstate(all="ignore"):
                dev = float(np.nanmax(np.abs(x.astype(np.float64) - y.astype(np.float64)), initial=0.0))
            return f"{name} differs (largest difference {dev:.3g})"
    return "the results differ"


# ---------------------------------------------------------------------------------------------- layers


def _layer_model(layer: Layer, in_shape: tuple[int, ...], seeds: tuple[int, ...], dtype: Any) -> Sequential:
    init, _ = replica_streams(seeds)
    return Sequential([layer]).build(in_shape, init, dtype=dtype, random_roots=component_roots(seeds))


def _layer_inputs(in_shape: tuple[int, ...], batch: int, replicas: int = len(SEEDS)) -> list[np.ndarray]:
    """Two steps' inputs ``(R, B, *in_shape)`` (away from 0, where relu-like kinks are)."""
    rng = np.random.default_rng(2024)
    out = []
    for _ in range(2):
        x = rng.standard_normal((replicas, batch, *in_shape))
        out.append(x + 0.1 * np.where(x >= 0, 1.0, -1.0))
    return out


def _upstream(y: np.ndarray) -> np.ndarray:
    """A fixed upstream gradient for outputs ``y``: the same pattern in every replica."""
    per_replica = np.cos(np.arange(math.prod(y.shape[1:]), dtype=np.float64) * 0.7).reshape(y.shape[1:])
    return np.ascontiguousarray(np.broadcast_to(per_replica, y.shape), dtype=y.dtype)  # C order, as losses give


NAMES = ["output", "input gradient", "parameter gradients", "parameters", "state"]


def _layer_trace(layer: Layer, in_shape: tuple[int, ...], seeds: tuple[int, ...], xs: list[np.ndarray],
                 train: bool, dtype: Any = np.float64) -> list[np.ndarray]:
    """Two forward/backward steps of ``layer`` alone on ``xs``: outputs, input and parameter gradients, state."""
    with _plugin("build"):
        model = _layer_model(layer, in_shape, seeds, dtype)
    buf = model.buffer
    assert buf is not None
    out: list[np.ndarray] = []
    for x in xs:
        with _plugin("forward/backward"):
            model.zero_grad()
            y = np.array(model.forward(x.astype(dtype), train))
            dx = np.array(model.backward(_upstream(y)))
        out += [y, dx, buf.grad.copy(), buf.value.copy(), buf.state.copy()]
    return out


@dataclass
class _LayerCheck:
    subject: _Subject
    in_shape: tuple[int, ...]
    batch: int
    tol: float

    def gradcheck(self) -> None:
        for train in (True, False):
            with _plugin("gradcheck"):
                result = gradcheck_layer(self.subject.make(), in_shape=self.in_shape, train=train, tol=self.tol)
            if not result.passed:
                worst = max(result.errors, key=lambda k: result.errors[k])
                raise _Failed(f"in {'training' if train else 'eval'} mode the gradient of {worst!r} is off by "
                              f"{result.errors[worst]:.3g} (relative; tolerance {self.tol:g})")

    def replica_independence(self) -> None:
        xs = _layer_inputs(self.in_shape, self.batch)
        n = len(SEEDS)
        for train in (True, False):
            group = _layer_trace(self.subject.make(), self.in_shape, SEEDS, xs, train)
            alone = _rows([_layer_trace(self.subject.make(), self.in_shape, (s,), [x[r:r + 1] for x in xs], train)
                           for r, s in enumerate(SEEDS)])
            if not _same(group, alone):
                raise _Failed(f"R = {n} differs from {n} runs of R = 1 in {'training' if train else 'eval'} "
                              f"mode: {_first_diff(group, alone, NAMES * 2)}")
        poisoned = [x.copy() for x in xs]
        poisoned[0][1] = np.nan
        group = _layer_trace(self.subject.make(), self.in_shape, SEEDS, xs, True)
        hit = _layer_trace(self.subject.make(), self.in_shape, SEEDS, poisoned, True)
        if not _same(_pick(hit, [0, 2]), _pick(group, [0, 2])):
            raise _Failed("a NaN in replica 1's input changed replicas 0 and 2: "
                          f"{_first_diff(_pick(hit, [0, 2]), _pick(group, [0, 2]), NAMES * 2)}")

    def dtype(self) -> None:
        xs = _layer_inputs(self.in_shape, self.batch)
        for train in (True, False):
            trace = _layer_trace(self.subject.make(), self.in_shape, SEEDS, xs, train, np.float32)
            for name, a in zip(NAMES * 2, trace, strict=True):
                if a.size and a.dtype != np.float32:
                    raise _Failed(f"float32 input gives a {a.dtype} {name} in {'training' if train else 'eval'} "
                                  "mode")

    def determinism(self) -> None:
        xs = _layer_inputs(self.in_shape, self.batch)
        a = _layer_trace(self.subject.make(), self.in_shape, SEEDS, xs, True)
        b = _layer_trace(self.subject.make(), self.in_shape, SEEDS, xs, True)
        if not _same(a, b):
            raise _Failed(f"two instances with the same seeds give different numbers: {_first_diff(a, b, NAMES * 2)}")

    def no_input_mutation(self) -> None:
        layer = self.subject.make()
        with _plugin("build"):
            model = _layer_model(layer, self.in_shape, SEEDS, np.float64)
        x = _layer_inputs(self.in_shape, self.batch)[0]
        kept = x.copy()
        with _plugin("forward"):
            y = model.forward(x, True)
        if not np.array_equal(x, kept):
            raise _Failed("forward() wrote into its input x")
        dy = _upstream(np.asarray(y)).copy()
        kept_dy = dy.copy()
        with _plugin("backward"):
            model.backward(dy)
        if not np.array_equal(dy, kept_dy):
            raise _Failed("backward() wrote into its upstream gradient dy")

    def shapes(self) -> None:
        layer = self.subject.make()
        with _plugin("build"):
            model = _layer_model(layer, self.in_shape, SEEDS, np.float64)
        x = _layer_inputs(self.in_shape, self.batch)[0]
        for train in (True, False):
            with _plugin("forward/backward"):
                y = np.asarray(model.forward(x, train))
                dx = np.asarray(model.backward(_upstream(y)))
            expected = (len(SEEDS), self.batch, *(model.out_shape or ()))
            if y.shape != expected:
                raise _Failed(f"build_shape{self.in_shape} reports output {model.out_shape} but forward returns "
                              f"{y.shape[2:]} (full shape {y.shape}, expected {expected})")
            if dx.shape != x.shape:
                raise _Failed(f"backward returns shape {dx.shape} for an input of shape {x.shape}")

    def pickling(self) -> None:
        _pickles(self.subject.make(), "the new instance")
        xs = _layer_inputs(self.in_shape, self.batch)
        copy = _pickles(self.subject.make(), "the new instance")
        if not _same(_layer_trace(copy, self.in_shape, SEEDS, xs, True),
                     _layer_trace(self.subject.make(), self.in_shape, SEEDS, xs, True)):
            raise _Failed("an unpickled copy computes different numbers than the original")


def _pickles(obj: Any, what: str) -> Any:
    from expsvc.registry import describe_exception

    try:
        return pickle.loads(pickle.dumps(obj))
    except Exception as err:  # anything pickle raises on the plugin's state is the finding
        raise _Failed(f"{what} does not pickle: {describe_exception(err)}") from err


# ---------------------------------------------------------------------------------------------- losses


@dataclass
class _LossCheck:
    subject: _Subject
    out_features: int
    batch: int
    tol: float

    def _sample(self, loss: Loss, dtype: Any = np.float64) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(7)
        with _plugin("sample_input/sample_target"):
            pred = np.asarray(loss.sample_input(rng, (len(SEEDS), self.batch, self.out_features)))
            target = np.asarray(loss.sample_target(rng, pred.shape))
        if target.dtype.kind == "f":
            target = target.astype(dtype)
        return pred.astype(dtype), target

    def _trace(self, pred: np.ndarray, target: np.ndarray) -> list[np.ndarray]:
        loss = self.subject.make()
        with _plugin("forward/backward"):
            value = np.array(loss.forward(pred, target))
            grad = np.array(loss.backward())
        return [value, grad]

    def gradcheck(self) -> None:
        with _plugin("gradcheck"):
            result = gradcheck_loss(self.subject.make(), out_features=self.out_features, tol=self.tol)
        if not result.passed:
            raise _Failed(f"the gradient with respect to the prediction is off by {result.max_error:.3g} "
                          f"(relative; tolerance {self.tol:g})")

    def replica_independence(self) -> None:
        pred, target = self._sample(self.subject.make())
        group = self._trace(pred, target)
        alone = _rows([self._trace(pred[r:r + 1], target[r:r + 1]) for r in range(len(SEEDS))])
        if not _same(group, alone):
            raise _Failed(f"R = 3 differs from 3 runs of R = 1: {_first_diff(group, alone, ['loss', 'gradient'])} "
                          "(backward must be the gradient of the sum over replicas, not the mean)")
        poisoned = pred.copy()
        poisoned[1] = np.nan
        hit = self._trace(poisoned, target)
        if not _same(_pick(hit, [0, 2]), _pick(group, [0, 2])):
            raise _Failed("a NaN in replica 1's prediction changed replicas 0 and 2: "
                          f"{_first_diff(_pick(hit, [0, 2]), _pick(group, [0, 2]), ['loss', 'gradient'])}")

    def dtype(self) -> None:
        pred, target = self._sample(self.subject.make(), np.float32)
        value, grad = self._trace(pred, target)
        for name, a in (("loss", value), ("gradient", grad)):
            if a.dtype != np.float32:
                raise _Failed(f"float32 predictions give a {a.dtype} {name}")

    def determinism(self) -> None:
        pred, target = self._sample(self.subject.make())
        a, b = self._trace(pred, target), self._trace(pred, target)
        if not _same(a, b):
            raise _Failed(f"the same inputs give different numbers: {_first_diff(a, b, ['loss', 'gradient'])}")

    def no_input_mutation(self) -> None:
        pred, target = self._sample(self.subject.make())
        kept = pred.copy(), target.copy()
        self._trace(pred, target)
        if not np.array_equal(pred, kept[0]):
            raise _Failed("forward()/backward() wrote into the prediction")
        if not np.array_equal(target, kept[1]):
            raise _Failed("forward()/backward() wrote into the target")

    def shapes(self) -> None:
        pred, target = self._sample(self.subject.make())
        value, grad = self._trace(pred, target)
        if value.shape != (len(SEEDS),):
            raise _Failed(f"forward returns shape {value.shape}; expected one loss per replica {(len(SEEDS),)}")
        if grad.shape != pred.shape:
            raise _Failed(f"backward returns shape {grad.shape} for predictions of shape {pred.shape}")

    def pickling(self) -> None:
        copy = _pickles(self.subject.make(), "the new instance")
        pred, target = self._sample(copy)
        with _plugin("forward/backward"):
            a = [np.array(copy.forward(pred, target)), np.array(copy.backward())]
        if not _same(a, self._trace(pred, target)):
            raise _Failed("an unpickled copy computes different numbers than the original")


# ------------------------------------------------------------------------------------------ optimizers


def _probe_model(seeds: tuple[int, ...], dtype: Any) -> Sequential:
    """A small model to optimize: one linear layer 4 → 3 (15 parameters per replica)."""
    from expsvc.builtins.layers import Linear

    return _layer_model(Linear(3), (4,), seeds, dtype)


STEPS = 4


def _grads(replicas: int = len(SEEDS)) -> np.ndarray:
    """Gradients for :data:`STEPS` steps ``(STEPS, R, 15)``, different in every replica and step."""
    return np.random.default_rng(11).standard_normal((STEPS, replicas, 15))


@dataclass
class _OptimizerCheck:
    subject: _Subject

    def _trace(self, opt: Optimizer, seeds: tuple[int, ...], grads: np.ndarray, dtype: Any = np.float64,
               lr: Any = None) -> list[np.ndarray]:
        model = _probe_model(seeds, dtype)
        buf = model.buffer
        assert buf is not None
        out = []
        with _plugin("bind/step"):
            opt.bind(buf)
            for g in grads:
                if lr is not None:
                    opt.lr = lr
                buf.grad[...] = g
                opt.step()
                out.append(buf.value.copy())
        return out

    def replica_independence(self) -> None:
        grads = _grads()
        group = self._trace(self.subject.make(), SEEDS, grads)
        alone = _rows([self._trace(self.subject.make(), (s,), grads[:, r:r + 1]) for r, s in enumerate(SEEDS)])
        names = [f"parameters after step {i + 1}" for i in range(STEPS)]
        if not _same(group, alone):
            raise _Failed(f"R = 3 differs from 3 runs of R = 1: {_first_diff(group, alone, names)}")
        poisoned = grads.copy()
        poisoned[1, 1] = np.nan
        hit = self._trace(self.subject.make(), SEEDS, poisoned)
        if not _same(_pick(hit, [0, 2]), _pick(group, [0, 2])):
            raise _Failed("a NaN in replica 1's gradient changed replicas 0 and 2: "
                          f"{_first_diff(_pick(hit, [0, 2]), _pick(group, [0, 2]), names)}")

    def _stepped(self, dtype: Any, after: Callable[[Any, np.ndarray], None] | None = None) -> tuple[Any, Sequential]:
        """A new optimizer bound to the probe model and stepped through :func:`_grads` (``after(buffer, g)``
        is called after each step)."""
        opt, model = self.subject.make(), _probe_model(SEEDS, dtype)
        buf = model.buffer
        assert buf is not None
        with _plugin("bind/step"):
            opt.bind(buf)
            for g in _grads():
                buf.grad[...] = g
                opt.step()
                if after is not None:
                    after(buf, g)
        return opt, model

    def dtype(self) -> None:
        opt, model = self._stepped(np.float32)
        buf = model.buffer
        assert buf is not None
        if buf.value.dtype != np.float32 or not all(np.shares_memory(p.value, buf.value) for p in model.parameters()):
            raise _Failed("step() replaced buffer.value (the parameters are views of it) instead of updating it "
                          "in place")
        for name, a in _arrays(opt):
            if a.dtype == np.float64 and a.size >= buf.value.size:
                raise _Failed(f"on a float32 model the optimizer keeps float64 state {name!r} {a.shape}")

    def determinism(self) -> None:
        grads = _grads()
        a = self._trace(self.subject.make(), SEEDS, grads)
        b = self._trace(self.subject.make(), SEEDS, grads)
        if not _same(a, b):
            raise _Failed("two instances with the same seeds give different numbers: "
                          f"{_first_diff(a, b, [f'parameters after step {i + 1}' for i in range(STEPS)])}")

    def no_input_mutation(self) -> None:
        def unchanged(buf: Any, g: np.ndarray) -> None:
            if not np.array_equal(buf.grad, g):
                raise _Failed("step() wrote into buffer.grad (the gradients are the optimizer's input)")

        self._stepped(np.float64, unchanged)

    def learning_rate(self) -> None:
        grads = _grads()
        model = _probe_model(SEEDS, np.float64)
        assert model.buffer is not None
        before = model.buffer.value.copy()
        frozen = self._trace(self.subject.make(), SEEDS, grads, lr=0.0)
        if not all(np.array_equal(v, before) for v in frozen):
            raise _Failed("with lr set to 0 by the training loop, step() still moved the parameters")
        moved = self._trace(self.subject.make(), SEEDS, grads)
        if all(np.array_equal(v, before) for v in moved):
            raise _Failed("with its default lr and non-zero gradients, step() never moved the parameters")

    def pickling(self) -> None:
        copy = _pickles(self.subject.make(), "the new instance")
        if not _same(self._trace(copy, SEEDS, _grads()), self._trace(self.subject.make(), SEEDS, _grads())):
            raise _Failed("an unpickled copy computes different numbers than the original")

    def grid_contract(self) -> None:
        _check_grid(self.subject, self._trace)


def _arrays(obj: Any) -> Iterator[tuple[str, np.ndarray]]:
    """Arrays held by ``obj``'s attributes (directly or in lists, tuples and dicts one level down)."""
    for key, value in vars(obj).items():
        if key == "buffer":
            continue
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list | tuple) \
            else [(None, value)]
        for sub, v in items:
            if isinstance(v, np.ndarray):
                yield (key if sub is None else f"{key}[{sub!r}]"), v


def _check_grid(subject: _Subject, trace: Callable[..., list[np.ndarray]]) -> None:
    """The grid contract: each argument an optimizer lists in ``per_replica`` may arrive as a float64 column
    ``(R, 1)``; a group given the column ``[a, b, c]`` must equal, bit for bit, three runs given ``a``, ``b``
    and ``c`` as plain numbers.  (An optimizer that lists nothing gets one instance per grid point: nothing to
    check.)"""
    names = tuple(getattr(subject.cls, "per_replica", ()) or ())
    if not names:
        raise _Skip("lists no per_replica arguments: the runner gives each grid point its own instance")
    params = inspect.signature(subject.cls).parameters
    spec_kwargs = dict(subject.spec.kwargs)
    grads = _grads()
    for name in names:
        default = spec_kwargs.get(name, params[name].default if name in params else inspect.Parameter.empty)
        if isinstance(default, bool) or not isinstance(default, int | float):
            continue  # tuple arguments (betas) and required ones: not varied here
        values = [float(default) * f for f in (1.0, 0.5, 2.0)] if default else [0.0, 0.01, 0.1]
        column = np.array(values, dtype=np.float64).reshape(-1, 1)
        with _plugin(f"__init__ with {name} as a column"):
            grouped = subject.cls(*subject.spec.args, **{**spec_kwargs, name: column})
        group = trace(grouped, SEEDS, grads)
        alone = _rows([trace(subject.cls(*subject.spec.args, **{**spec_kwargs, name: v}), (s,), grads[:, r:r + 1])
                       for r, (s, v) in enumerate(zip(SEEDS, values, strict=True))])
        if not _same(group, alone):
            raise _Failed(f"{name} given per replica as {values} differs from runs given each value alone: "
                          f"{_first_diff(group, alone, [f'parameters after step {i + 1}' for i in range(STEPS)])}")


# ------------------------------------------------------------------------------------------- schedules

EPOCHS = 12


@dataclass
class _SchedulerCheck:
    subject: _Subject

    def _values(self, sched: Scheduler, epochs: Any) -> list[float]:
        with _plugin("lr"):
            return [sched.lr(0.1, e) for e in epochs]

    def value(self) -> None:
        for e, v in enumerate(self._values(self.subject.make(), range(EPOCHS))):
            if isinstance(v, bool) or not isinstance(v, int | float | np.floating | np.integer):
                raise _Failed(f"lr(0.1, {e}) returned {type(v).__name__}, not a number")
            if not (math.isfinite(float(v)) and float(v) >= 0):
                raise _Failed(f"lr(0.1, {e}) returned {v!r}; a learning rate is a finite number >= 0")

    def determinism(self) -> None:
        a = self._values(self.subject.make(), range(EPOCHS))
        b = self._values(self.subject.make(), range(EPOCHS))
        if a != b:
            raise _Failed(f"two instances give different learning rates: {a} and {b}")

    def stateless(self) -> None:
        sched = self.subject.make()
        forward = self._values(sched, range(EPOCHS))
        backward = self._values(sched, reversed(range(EPOCHS)))[::-1]
        if forward != backward:
            raise _Failed("lr(base_lr, epoch) depends on earlier calls: epochs asked in reverse give "
                          f"{backward} instead of {forward}")

    def pickling(self) -> None:
        copy = _pickles(self.subject.make(), "the new instance")
        if self._values(copy, range(EPOCHS)) != self._values(self.subject.make(), range(EPOCHS)):
            raise _Failed("an unpickled copy gives different learning rates")


# -------------------------------------------------------------------------------------------- datasets


@dataclass
class _DatasetCheck:
    subject: _Subject

    def _load(self, dataset: Dataset) -> Any:
        with _plugin("load()"):
            data = dataset.load()
        problem = split_problem(data)
        if problem is not None:
            raise _Failed(f"load() {problem}")
        return data

    @staticmethod
    def _arrays(data: Any) -> list[np.ndarray]:
        return [data.x_train, data.y_train, data.x_test, data.y_test,
                *((data.x_val, data.y_val) if data.has_validation else ())]

    def split(self) -> None:
        self._load(self.subject.make())

    def determinism(self) -> None:
        names = ["x_train", "y_train", "x_test", "y_test", "x_val", "y_val"]
        dataset = self.subject.make()
        a = self._arrays(self._load(dataset))
        b = self._arrays(self._load(self.subject.make()))
        if not _same(a, b):
            raise _Failed(f"two instances with the same seed load different data: {_first_diff(a, b, names)}")
        c = self._arrays(self._load(dataset))
        if not _same(a, c):
            raise _Failed(f"loading twice gives different data: {_first_diff(a, c, names)}")

    def pickling(self) -> None:
        copy = _pickles(self.subject.make(), "the new instance")
        if not _same(self._arrays(self._load(copy)), self._arrays(self._load(self.subject.make()))):
            raise _Failed("an unpickled copy loads different data")


# --------------------------------------------------------------------------------------------- metrics


def _metric_samples(task: str, replicas: int = len(SEEDS), n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Predictions ``(R, N, ...)`` and a target ``(N, ...)`` of a task (as the losses' ``predict`` gives)."""
    rng = np.random.default_rng(5)
    if task == "binary":
        return rng.integers(0, 2, (replicas, n, 1)), rng.integers(0, 2, (n, 1)).astype(np.float64)
    if task == "multiclass":
        return rng.integers(0, 3, (replicas, n)), rng.integers(0, 3, n)
    return rng.standard_normal((replicas, n, 2)), rng.standard_normal((n, 2))


@dataclass
class _MetricCheck:
    subject: _Subject

    def _tasks(self) -> list[str]:
        return [t for t in ("binary", "multiclass", "regression") if t in getattr(self.subject.cls, "tasks", ())]

    def _value(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        metric = self.subject.make()
        with _plugin("__call__"):
            return np.array(metric(pred, target))

    def replica_independence(self) -> None:
        for task in self._tasks():
            pred, target = _metric_samples(task)
            group = self._value(pred, target)
            alone = np.concatenate([self._value(pred[r:r + 1], target) for r in range(len(SEEDS))])
            if not _same([group], [alone]):
                raise _Failed(f"on {task} predictions R = 3 gives {group.tolist()} but 3 runs of R = 1 give "
                              f"{alone.tolist()}")
            if task == "regression":
                poisoned = pred.copy()
                poisoned[1] = np.nan
                hit = self._value(poisoned, target)
                if not _same([hit[[0, 2]]], [group[[0, 2]]]):
                    raise _Failed(f"a NaN in replica 1's predictions changed replicas 0 and 2: {hit.tolist()}")

    def determinism(self) -> None:
        for task in self._tasks():
            pred, target = _metric_samples(task)
            if not _same([self._value(pred, target)], [self._value(pred, target)]):
                raise _Failed(f"the same {task} predictions give different values")

    def no_input_mutation(self) -> None:
        for task in self._tasks():
            pred, target = _metric_samples(task)
            kept = pred.copy(), target.copy()
            self._value(pred, target)
            if not (np.array_equal(pred, kept[0]) and np.array_equal(target, kept[1])):
                raise _Failed(f"the metric wrote into its {task} predictions or target")

    def shapes(self) -> None:
        if not self._tasks():
            raise _Failed("tasks lists none of binary, multiclass, regression")
        for task in self._tasks():
            pred, target = _metric_samples(task)
            value = self._value(pred, target)
            if value.shape != (len(SEEDS),) or value.dtype.kind != "f":
                raise _Failed(f"on {task} predictions it returns {value.dtype} {value.shape}; expected one float "
                              f"per replica {(len(SEEDS),)}")

    def pickling(self) -> None:
        _pickles(self.subject.make(), "the new instance")


# ------------------------------------------------------------------------------------------- arguments


WRONG_VALUES: tuple[Any, ...] = ("not-a-value", 12345, [1, 2], {"a": 1})


def _bad_value(default: Any, hint: Any) -> Any:
    """A value of the wrong type for an argument: one its type hint refuses, else one unlike its default."""
    from expsvc.registry import fits

    if hint is not None:
        refused = [v for v in WRONG_VALUES if not fits(v, hint)]
        if refused:
            return refused[0]
    return [1, 2] if isinstance(default, str) else "not-a-value"


def _check_arguments(subject: _Subject) -> None:
    """Each argument given a value of the wrong type must be refused with one clear line (an ExpsvcError from
    the type hints or the component's own ValueError/TypeError), never accepted or failing otherwise."""
    from expsvc.errors import ExpsvcError
    from expsvc.registry import PluginFailure, argument_hints, instantiate
    from expsvc.specs import ComponentSpec

    try:
        params = list(inspect.signature(subject.cls).parameters.values())
    except (TypeError, ValueError):
        raise _Skip("its signature cannot be read") from None
    checked, hints = 0, argument_hints(subject.cls)
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.kind == p.POSITIONAL_ONLY:
            continue
        if p.default is None or isinstance(p.default, bool) or (p.default is not p.empty
                                                                and not isinstance(p.default, int | float | str)):
            continue  # None, flags and structured values: no single wrong type to try
        bad = _bad_value(p.default, hints.get(p.name))
        kwargs = {**subject.spec.kwargs, p.name: bad}
        spec = ComponentSpec(subject.spec.name, subject.spec.args[:_position(params, p)], kwargs)
        checked += 1
        try:
            instantiate(subject.registration, spec, subject.kind)
        except PluginFailure as err:
            raise _Failed(f"{p.name}={bad!r} made __init__ fail with something else than ValueError/TypeError "
                          f"({str(err).split(': ', 1)[-1]})") from None
        except ExpsvcError:
            continue
        raise _Failed(f"{p.name}={bad!r} was accepted")
    if not checked:
        raise _Skip("no argument with a single type to try")


def _position(params: list[inspect.Parameter], param: inspect.Parameter) -> int:
    """How many positional spec arguments precede ``param`` (positional ones after it are dropped)."""
    return [p.name for p in params].index(param.name)


# ---------------------------------------------------------------------------------------------- runner


def _findings(subject: _Subject, properties: list[tuple[str, Callable[[], None]]]) -> list[Finding]:
    out = []
    for name, fn in properties:
        try:
            fn()
        except _Skip as skip:
            out.append(Finding(subject.label, name, skipped=str(skip)))
        except _Failed as err:
            out.append(Finding(subject.label, name, problem=str(err)))
        else:
            out.append(Finding(subject.label, name))
    return out


def _properties(check: Any, subject: _Subject, names: list[str]) -> list[tuple[str, Callable[[], None]]]:
    props = [(n, getattr(check, n.replace(" ", "_"))) for n in names]
    return [*props, ("arguments", lambda: _check_arguments(subject))]


def run_checks(kind: str, component: type | str, *, in_shape: tuple[int, ...] | None = None, batch: int = 4,
               out_features: int = 3, tol: float = 1e-7, **arguments: Any) -> list[Finding]:
    """Every property of a component of ``kind`` (``layer``/``activation``, ``loss``, ``optimizer``,
    ``scheduler``, ``dataset``, ``metric``): the findings, without raising."""
    kind = "layer" if kind == "activation" else kind
    subject = _subject(component, kind, arguments)
    common = ["determinism", "pickling"]
    if kind == "layer":
        shape = tuple(in_shape or getattr(subject.cls, "gradcheck_shape", None) or (4,))
        layer = _LayerCheck(subject, shape, batch, tol)
        return _findings(subject, _properties(layer, subject, ["gradcheck", "replica independence", "dtype",
                                                               *common, "no input mutation", "shapes"]))
    if kind == "loss":
        loss = _LossCheck(subject, out_features, batch, tol)
        return _findings(subject, _properties(loss, subject, ["gradcheck", "replica independence", "dtype",
                                                              *common, "no input mutation", "shapes"]))
    if kind == "optimizer":
        opt = _OptimizerCheck(subject)
        return _findings(subject, _properties(opt, subject, ["replica independence", "dtype", *common,
                                                             "no input mutation", "learning rate",
                                                             "grid contract"]))
    if kind == "scheduler":
        return _findings(subject, _properties(_SchedulerCheck(subject), subject, ["value", *common, "stateless"]))
    if kind == "dataset":
        return _findings(subject, _properties(_DatasetCheck(subject), subject, ["split", *common]))
    if kind == "metric":
        return _findings(subject, _properties(_MetricCheck(subject), subject,
                                              ["replica independence", *common, "no input mutation", "shapes"]))
    raise ValueError(f"unknown kind {kind!r}; kinds: layer, activation, loss, optimizer, scheduler, dataset, metric")


def _raise_failures(findings: list[Finding]) -> list[Finding]:
    if not all(f.passed for f in findings):
        raise ConformanceError(findings)
    return findings


def check_layer(component: type | str, *, in_shape: tuple[int, ...] | None = None, batch: int = 4,
                tol: float = 1e-7, **arguments: Any) -> list[Finding]:
    """Check a layer or activation (``in_shape``: the per-sample input shape, default its
    ``gradcheck_shape``); raises :class:`ConformanceError` naming every failed property."""
    return _raise_failures(run_checks("layer", component, in_shape=in_shape, batch=batch, tol=tol, **arguments))


def check_loss(component: type | str, *, out_features: int = 3, batch: int = 4, tol: float = 1e-7,
               **arguments: Any) -> list[Finding]:
    """Check a loss on its own ``sample_input``/``sample_target`` of ``(3, batch, out_features)``."""
    return _raise_failures(run_checks("loss", component, out_features=out_features, batch=batch, tol=tol,
                                      **arguments))


def check_optimizer(component: type | str, **arguments: Any) -> list[Finding]:
    """Check an optimizer on a one-layer model (4 → 3) over a few steps of given gradients."""
    return _raise_failures(run_checks("optimizer", component, **arguments))


def check_scheduler(component: type | str, **arguments: Any) -> list[Finding]:
    """Check a learning-rate schedule over its first epochs."""
    return _raise_failures(run_checks("scheduler", component, **arguments))


def check_dataset(component: type | str, **arguments: Any) -> list[Finding]:
    """Check a dataset (loads it several times: give small sizes for a large one)."""
    return _raise_failures(run_checks("dataset", component, **arguments))


def check_metric(component: type | str, **arguments: Any) -> list[Finding]:
    """Check a metric on predictions of every task it lists."""
    return _raise_failures(run_checks("metric", component, **arguments))


def kind_of(cls: type) -> str:
    """The check kind of a component class (``layer`` for layers and activations)."""
    for kind, base in (("layer", Layer), ("loss", Loss), ("optimizer", Optimizer), ("scheduler", Scheduler),
                       ("dataset", Dataset), ("metric", Metric)):
        if isinstance(cls, type) and issubclass(cls, base):
            return kind
    raise TypeError(f"{cls!r} is not an expsvc component class")


def check(component: type, **arguments: Any) -> list[Finding]:
    """The matching ``check_*`` for a component class."""
    return _raise_failures(run_checks(kind_of(component), component, **arguments))


_pytest = sys.modules.get("pytest")  # the pytest plugin, when pytest is running (it loads this module itself)
if _pytest is not None:

    @_pytest.fixture
    def expsvc_check() -> Callable[..., list[Finding]]:
        """The conformance check of a component class: ``expsvc_check(MyLayer, p=0.3)``."""
        return check
