"""Gradient checks: a component's own backward against central differences, in float64.

For a layer the checked scalar is ``f = sum(G * layer(x))`` with a fixed random upstream gradient ``G``;
for a loss it is ``f = sum_r loss_r(pred, target)``.  The error of each tensor (every parameter and the
input) is ``max|analytic - numeric| / max(max|analytic|, max|numeric|, 1e-12)`` — relative to the tensor's
scale, so entries whose true gradient is ~0 do not turn rounding noise into a failure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypedDict, Unpack

import numpy as np

from expsvc.core.layer import Layer, Sequential
from expsvc.core.loss import Loss


class CheckOptions(TypedDict, total=False):
    """Options every gradient check takes (keyword arguments; defaults in :data:`DEFAULTS`)."""

    replicas: int  # replicas checked at once (each with its own parameters)
    seed: int  # of the random inputs, upstream gradient and initialisation
    h: float  # central-difference step
    tol: float  # largest relative error that passes
    name: str | None  # reported name (default: the component's)


DEFAULTS = CheckOptions(replicas=2, seed=0, h=1e-6, tol=1e-7, name=None)


def _options(options: CheckOptions) -> tuple[int, int, float, float, str | None]:
    """``(replicas, seed, h, tol, name)``: the given options over :data:`DEFAULTS`."""
    o = {**DEFAULTS, **options}
    return o["replicas"], o["seed"], o["h"], o["tol"], o["name"]  # type: ignore[return-value]


@dataclass
class GradcheckResult:
    """Relative error per tensor (``input`` and each parameter) and the verdict against ``tol``."""

    name: str
    errors: dict[str, float] = field(default_factory=dict)
    allclose: bool = True
    tol: float = 1e-7

    @property
    def max_error(self) -> float:
        return max(self.errors.values(), default=0.0)

    @property
    def passed(self) -> bool:
        return self.allclose and self.max_error <= self.tol


def _relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(analytic), initial=0.0)), float(np.max(np.abs(numeric), initial=0.0)), 1e-12)
    return float(np.max(np.abs(analytic - numeric), initial=0.0) / scale)


def _numeric(f: Callable[[], float], array: np.ndarray, h: float) -> np.ndarray:
    """Central differences of ``f`` with respect to every entry of ``array`` (perturbed in place)."""
    grad = np.zeros(array.shape)
    it = np.nditer(array, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = array[i]
        array[i] = old + h
        plus = f()
        array[i] = old - h
        minus = f()
        array[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def _away_from_zero(x: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """Shift samples away from 0 so kinks (relu, leaky_relu) are not straddled by the difference."""
    return x + margin * np.where(x >= 0, 1.0, -1.0)


def gradcheck_layer(
    layer: Layer,
    *,
    in_features: int | None = None,
    in_shape: tuple[int, ...] | None = None,
    batch: int = 3,
    train: bool = True,
    **options: Unpack[CheckOptions],
) -> GradcheckResult:
    """Check ``layer``'s input and parameter gradients on a random ``(replicas, batch, *in_shape)`` input.

    ``in_shape`` (or ``in_features`` for a flat input) defaults to the layer's ``gradcheck_shape``.  A layer
    that draws randomness (dropout) draws the same numbers in every evaluation: its streams are rewound to
    one saved state before each forward pass, so the check sees one fixed function.  ``train=False`` checks
    eval mode (``forward(x, train=False)``).
    """
    replicas, seed, h, tol, name = _options(options)
    rng = np.random.default_rng(seed)
    shape = in_shape if in_shape is not None else (in_features,) if in_features is not None else layer.gradcheck_shape
    model = Sequential([layer]).build(tuple(shape), [np.random.default_rng(seed + 1 + r) for r in range(replicas)])
    assert model.buffer is not None
    x = _away_from_zero(rng.standard_normal((replicas, batch, *model.in_shape)))  # type: ignore[misc]
    streams = layer.random.state()

    def forward() -> np.ndarray:
        layer.random.set_state(streams)
        return layer.forward(x, train)

    out = forward()
    g = rng.standard_normal(out.shape)

    def f() -> float:
        return float(np.sum(g * forward()))

    model.zero_grad()
    forward()
    dx = layer.backward(g.copy())
    analytic = {"input": np.array(dx, dtype=float)}
    analytic.update({p.name: p.grad.copy() for p in model.parameters()})
    numeric = {"input": _numeric(f, x, h)}
    numeric.update({p.name: _numeric(f, p.value, h) for p in model.parameters()})
    return _result(name or layer.name or type(layer).__name__, analytic, numeric, tol)


def gradcheck_loss(
    loss: Loss, *, out_features: int = 3, batch: int = 4, **options: Unpack[CheckOptions]
) -> GradcheckResult:
    """Check ``loss``'s gradient with respect to its prediction, on random predictions and valid targets."""
    replicas, seed, h, tol, name = _options(options)
    rng = np.random.default_rng(seed)
    pred = loss.sample_input(rng, (replicas, batch, out_features))
    target = loss.sample_target(rng, pred.shape)

    def f() -> float:
        return float(np.sum(loss.forward(pred, target)))

    loss.forward(pred, target)
    analytic = {"input": np.array(loss.backward(), dtype=float)}
    numeric = {"input": _numeric(f, pred, h)}
    return _result(name or loss.name or type(loss).__name__, analytic, numeric, tol)


def _result(name: str, analytic: dict, numeric: dict, tol: float) -> GradcheckResult:
    result = GradcheckResult(name=name, tol=tol)
    for key, a in analytic.items():
        n = numeric[key]
        if a.shape != n.shape:
            result.errors[key] = float("inf")
            result.allclose = False
            continue
        result.errors[key] = _relative_error(a, n)
        result.allclose = result.allclose and bool(np.allclose(a, n, rtol=1e-3, atol=1e-5))
    return result


def gradcheck(component: Layer | Loss, **kwargs: object) -> GradcheckResult:
    """Dispatch to :func:`gradcheck_layer` or :func:`gradcheck_loss`."""
    if isinstance(component, Loss):
        return gradcheck_loss(component, **kwargs)  # type: ignore[arg-type]
    if isinstance(component, Layer):
        return gradcheck_layer(component, **kwargs)  # type: ignore[arg-type]
    raise TypeError(f"gradcheck takes a layer, activation or loss, not {type(component).__name__}")
