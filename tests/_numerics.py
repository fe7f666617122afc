"""Helpers shared by the numerical test modules (conformance, torch parity, gradcheck, replicas).

No torch here: the torch reference numbers are read from ``tests/fixtures/torch`` (written by
``scripts/make_torch_fixtures.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from expsvc.builtins.activations import Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from expsvc.builtins.layers import Linear
from expsvc.builtins.losses import MSE, BCEWithLogits, CrossEntropy, SumSquared
from expsvc.builtins.optimizers import SGD, Adam, AdamW, MiniBGD
from expsvc.builtins.schedulers import Constant, Cosine, StepLR
from expsvc.core import DataSplit, Optimizer, ParamBuffer, Parameter, Scheduler, Sequential, Trainer
from expsvc.core.train import TrainResult

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "torch"

LAYERS: dict[str, type] = {"linear": Linear}
ACTIVATIONS: dict[str, type] = {cls.name: cls for cls in (Tanh, Sigmoid, ReLU, LeakyReLU, Softmax, Identity)}
LOSSES: dict[str, type] = {cls.name: cls for cls in (BCEWithLogits, MSE, SumSquared, CrossEntropy)}
OPTIMIZERS: dict[str, type[Optimizer]] = {cls.name: cls for cls in (MiniBGD, SGD, Adam, AdamW)}
SCHEDULERS: dict[str, type[Scheduler]] = {cls.name: cls for cls in (Constant, StepLR, Cosine)}

# Every built-in optimizer, in each of its code paths: (id, class, kwargs).
OPTIMIZER_CONFIGS: list[tuple[str, type[Optimizer], dict[str, Any]]] = [
    ("mini_bgd", MiniBGD, {"lr": 0.05}),
    ("sgd", SGD, {"lr": 0.05}),
    ("sgd_wd", SGD, {"lr": 0.05, "weight_decay": 1e-2}),
    ("sgd_momentum", SGD, {"lr": 0.02, "momentum": 0.9}),
    ("sgd_dampening", SGD, {"lr": 0.02, "momentum": 0.9, "dampening": 0.5}),
    ("sgd_nesterov_wd", SGD, {"lr": 0.02, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2}),
    ("adam", Adam, {"lr": 0.01}),
    ("adam_l2", Adam, {"lr": 0.01, "weight_decay": 1e-2}),
    ("adam_amsgrad", Adam, {"lr": 0.01, "amsgrad": True}),
    ("adamw", AdamW, {"lr": 0.01}),
    ("adamw_amsgrad", AdamW, {"lr": 0.01, "amsgrad": True}),
]


@cache
def manifest() -> dict[str, Any]:
    """The fixture manifest (run configurations and component cases)."""
    return json.loads((FIXTURES / "manifest.json").read_text())


@cache
def npz(name: str) -> dict[str, np.ndarray]:
    """All arrays of one fixture archive, loaded eagerly (and once)."""
    with np.load(FIXTURES / name) as z:
        return {key: z[key] for key in z.files}


class StoredOrder:
    """Stands in for a replica's order generator: ``permutation(n)`` returns stored permutations in turn."""

    def __init__(self, perms: np.ndarray) -> None:
        self.perms = np.asarray(perms, dtype=np.int64)
        self.calls = 0

    def permutation(self, n: int) -> np.ndarray:
        """The next epoch's batch order."""
        perm = self.perms[self.calls]
        assert perm.shape == (n,)
        self.calls += 1
        return perm.copy()


def net_2531() -> Sequential:
    """Linear(2,5)-Tanh-Linear(5,3)-Tanh-Linear(3,1), unbuilt."""
    return Sequential([Linear(5), Tanh(), Linear(3), Tanh(), Linear(1)])


def blobs(n: int = 120, seed: int = 0) -> DataSplit:
    """A small 2-D binary dataset (two overlapping Gaussian blobs)."""
    rng = np.random.default_rng(seed)
    half = n // 2
    x = np.concatenate([rng.normal(-0.8, 1.0, (half, 2)), rng.normal(0.8, 1.0, (n - half, 2))])
    y = np.concatenate([np.zeros(half), np.ones(n - half)])[:, None]
    return DataSplit(x, y, x, y, task="binary")


def record_steps(optimizer: Optimizer, every_step: list[np.ndarray]) -> None:
    """Make ``optimizer.step`` append a copy of the whole ``(R, P)`` buffer after each update."""
    original = optimizer.step

    def step() -> None:
        original()
        assert optimizer.buffer is not None
        every_step.append(optimizer.buffer.value.copy())

    optimizer.step = step  # type: ignore[method-assign]


def train(
    model: Sequential,
    optimizer: Optimizer,
    data: DataSplit,
    order_rngs: Sequence[Any],
    *,
    epochs: int,
    batch_size: int = 50,
    scheduler: Scheduler | None = None,
    loss: Any = None,
    hooks: Any = None,
) -> TrainResult:
    """Run :class:`Trainer` with shuffling (one permutation per replica and epoch) and no early stop."""
    trainer = Trainer(
        model,
        loss if loss is not None else BCEWithLogits(),
        optimizer,
        data,
        order_rngs,
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        scheduler=scheduler,
    )
    return trainer.run(hooks)


def one_param_buffer(values: Sequence[float]) -> tuple[ParamBuffer, Parameter]:
    """A one-replica buffer holding one parameter vector (for driving an optimizer by hand)."""
    p = Parameter("theta", (len(values),), lambda rng, shape: np.zeros(shape))
    buf = ParamBuffer([p], replicas=1)
    p.value[0] = values
    return buf, p


def drive(
    optimizer: Optimizer, theta0: Sequence[float], grads: Callable[[int, np.ndarray], np.ndarray], steps: int
) -> list[np.ndarray]:
    """Step ``optimizer`` on a bare parameter with gradient ``grads(t, θ)``; θ after each step."""
    buf, p = one_param_buffer(theta0)
    optimizer.bind(buf)
    out = []
    for t in range(1, steps + 1):
        buf.zero_grad()
        p.grad[0] = grads(t, p.value[0].copy())
        optimizer.step()
        out.append(p.value[0].copy())
    return out


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    """max |a − b| (NaN-aware: any NaN on one side only counts as infinite)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.where(both_nan, 0.0, np.abs(a - b))
    return float(np.max(np.where(np.isnan(diff), np.inf, diff), initial=0.0))
