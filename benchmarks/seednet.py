"""Sections 1 and 2: the seed net (2-5-3-1 tanh, BCE with logits, batch 50, 300 points) in steps per second.

Contenders, all float64, all starting from the same initial parameters and stepping through the same
in-order batches (no shuffling, ``tol = 0``, so every contender does exactly the same updates):

* **expsvc** — :class:`expsvc.core.Trainer` with one replica (``R = 1``), the built-in components.
* **numpy floor (flat)** — a hand-written numpy loop: plain 2-D arrays, ``x @ W.T + b``, manual backward,
  the parameters and gradients as 2-D views of one flat vector so the optimizer update is one set of
  in-place ufunc calls (the way the engine does it).  This is the floor the T1 target uses.
* **numpy textbook** — the same loop with one array per parameter and the optimizer looping over them
  (what most hand-written loops look like); shown for reference.
* **torch** — torch CPU eager, one thread: ``nn.Sequential``, ``BCEWithLogitsLoss``, ``torch.optim.AdamW`` /
  ``SGD`` with ``foreach=False``; skipped when torch is not importable.

Every contender records every step's loss, as the engine does.  After timing, the final parameters of all
contenders are compared (they agree to ~1e-12: they compute the same thing).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.timing import Stats, interleaved

BATCH = 50
LR = 1e-3
BETAS = (0.9, 0.999)
EPS = 1e-8
WEIGHT_DECAY = 1e-2  # torch's AdamW default, and the engine's
OPTIMIZERS = ("adamw", "mini_bgd")
TORCH_INSTALL = "pip install torch==2.13.0"


@dataclass
class SeedData:
    """The seed experiment's training set: ``x (300, 2)`` float64, ``y (300, 1)`` float64 0/1."""

    x: np.ndarray
    y: np.ndarray

    @property
    def batches(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """In-order batches of ``BATCH`` rows (views)."""
        n = len(self.x)
        return [(self.x[s : s + BATCH], self.y[s : s + BATCH]) for s in range(0, n, BATCH)]


def seed_data() -> SeedData:
    """The ``points`` dataset with its defaults (what ``expsvc run`` trains on)."""
    from expsvc.builtins.datasets import Points

    split = Points().load()
    return SeedData(np.ascontiguousarray(split.x_train, np.float64), np.ascontiguousarray(split.y_train, np.float64))


def torch_available() -> bool:
    """Whether torch imports here."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------------------ expsvc


def _expsvc_components(optimizer: str, seeds: list[int]) -> tuple[Any, Any, Any, list[np.random.Generator]]:
    """A built 2-5-3-1 model for ``seeds``, its loss, optimizer and order generators."""
    from expsvc.builtins.activations import Tanh
    from expsvc.builtins.layers import Linear
    from expsvc.builtins.losses import BCEWithLogits
    from expsvc.builtins.optimizers import AdamW, MiniBGD
    from expsvc.core import Sequential, replica_streams

    init, order = replica_streams(seeds)
    model = Sequential([Linear(5), Tanh(), Linear(3), Tanh(), Linear(1)]).build(2, init)
    opt = AdamW(lr=LR) if optimizer == "adamw" else MiniBGD(lr=LR)
    return model, BCEWithLogits(), opt, order


def expsvc_trainer(optimizer: str, seeds: list[int], data: SeedData, epochs: int) -> Any:
    """A ready :class:`~expsvc.core.Trainer` for the seed net (``tol = 0``, in-order batches)."""
    from expsvc.core import DataSplit, Trainer

    model, loss, opt, order = _expsvc_components(optimizer, seeds)
    split = DataSplit(data.x, data.y, data.x, data.y, task="binary", classes=2)
    return Trainer(model, loss, opt, split, order, epochs=epochs, batch_size=BATCH)


def initial_params() -> list[np.ndarray]:
    """Seed 0's initial ``[W1, b1, W2, b2, W3, b3]`` as the engine draws them (shared by every contender)."""
    model, _, _, _ = _expsvc_components("adamw", [0])
    return [p.value[0].copy() for p in model.parameters()]


def run_expsvc(optimizer: str, data: SeedData, epochs: int) -> tuple[float, int, np.ndarray]:
    """Seconds of ``Trainer.run`` (R = 1), steps done, final flat parameters."""
    trainer = expsvc_trainer(optimizer, [0], data, epochs)
    start = time.perf_counter()
    result = trainer.run()
    seconds = time.perf_counter() - start
    return seconds, int(result.updates[0]), trainer.model.buffer.value[0].copy()


# ------------------------------------------------------------------------------------------- numpy floors


def run_numpy_flat(
    optimizer: str, data: SeedData, epochs: int, params0: list[np.ndarray]
) -> tuple[float, int, np.ndarray]:
    """The flat numpy floor: seconds, steps, final flat parameters."""
    flat = np.concatenate([p.ravel() for p in params0])
    grad = np.zeros_like(flat)
    views, gviews, offset = [], [], 0
    for p in params0:
        views.append(flat[offset : offset + p.size].reshape(p.shape))
        gviews.append(grad[offset : offset + p.size].reshape(p.shape))
        offset += p.size
    w1, b1, w2, b2, w3, b3 = views
    gw1, gb1, gw2, gb2, gw3, gb3 = gviews
    m, v, tmp, denom = (np.zeros_like(flat) for _ in range(4))
    batches = data.batches
    losses = np.empty(epochs * len(batches))
    beta1, beta2 = BETAS
    adamw = optimizer == "adamw"
    t = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for x, y in batches:
            h1 = np.tanh(x @ w1.T + b1)
            h2 = np.tanh(h1 @ w2.T + b2)
            z = h2 @ w3.T + b3
            n = z.size
            losses[t] = (np.logaddexp(0.0, z) - z * y).sum() / n  # torch's BCE-with-logits, mean
            dz = (1.0 / (1.0 + np.exp(-z)) - y) / n
            np.matmul(dz.T, h2, out=gw3)
            dz.sum(0, out=gb3)
            dh2 = dz @ w3
            dh2 *= 1.0 - h2 * h2
            np.matmul(dh2.T, h1, out=gw2)
            dh2.sum(0, out=gb2)
            dh1 = dh2 @ w2
            dh1 *= 1.0 - h1 * h1
            np.matmul(dh1.T, x, out=gw1)
            dh1.sum(0, out=gb1)
            t += 1
            if adamw:  # torch's single-tensor AdamW, operation by operation
                flat *= 1.0 - LR * WEIGHT_DECAY
                np.subtract(grad, m, out=tmp)
                tmp *= 1.0 - beta1
                m += tmp  # m.lerp_(g, 1 - β1)
                v *= beta2
                np.multiply(grad, 1.0 - beta2, out=tmp)
                tmp *= grad
                v += tmp  # v.mul_(β2).addcmul_(g, g, 1 - β2)
                step_size = LR / (1.0 - beta1**t)
                np.sqrt(v, out=denom)
                denom /= (1.0 - beta2**t) ** 0.5
                denom += EPS
                np.multiply(m, -step_size, out=tmp)
                tmp /= denom
                flat += tmp  # θ.addcdiv_(m, denom, -step_size)
            else:
                np.multiply(grad, -LR, out=tmp)
                flat += tmp
    return time.perf_counter() - start, t, flat


def run_numpy_textbook(
    optimizer: str, data: SeedData, epochs: int, params0: list[np.ndarray]
) -> tuple[float, int, np.ndarray]:
    """The textbook numpy loop (one array per parameter): seconds, steps, final flat parameters."""
    params = [p.copy() for p in params0]
    w1, b1, w2, b2, w3, b3 = params
    ms = [np.zeros_like(p) for p in params]
    vs = [np.zeros_like(p) for p in params]
    batches = data.batches
    losses = np.empty(epochs * len(batches))
    beta1, beta2 = BETAS
    adamw = optimizer == "adamw"
    t = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for x, y in batches:
            h1 = np.tanh(x @ w1.T + b1)
            h2 = np.tanh(h1 @ w2.T + b2)
            z = h2 @ w3.T + b3
            n = z.size
            losses[t] = (np.logaddexp(0.0, z) - z * y).sum() / n
            dz = (1.0 / (1.0 + np.exp(-z)) - y) / n
            dh2 = (dz @ w3) * (1.0 - h2 * h2)
            dh1 = (dh2 @ w2) * (1.0 - h1 * h1)
            grads = [dh1.T @ x, dh1.sum(0), dh2.T @ h1, dh2.sum(0), dz.T @ h2, dz.sum(0)]
            t += 1
            if adamw:
                step_size = LR / (1.0 - beta1**t)
                bc2_sqrt = (1.0 - beta2**t) ** 0.5
                for p, g, m, v in zip(params, grads, ms, vs, strict=True):
                    p *= 1.0 - LR * WEIGHT_DECAY
                    m += (g - m) * (1.0 - beta1)
                    v *= beta2
                    v += (1.0 - beta2) * g * g
                    p += (-step_size * m) / (np.sqrt(v) / bc2_sqrt + EPS)
            else:
                for p, g in zip(params, grads, strict=True):
                    p += -LR * g
    return time.perf_counter() - start, t, np.concatenate([p.ravel() for p in params])


# ------------------------------------------------------------------------------------------------ torch


def run_torch(optimizer: str, data: SeedData, epochs: int, params0: list[np.ndarray]) -> tuple[float, int, np.ndarray]:
    """torch eager on one thread: seconds, steps, final flat parameters."""
    import torch

    torch.set_num_threads(1)
    net = torch.nn.Sequential(
        torch.nn.Linear(2, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)
    ).double()
    with torch.no_grad():
        for p, value in zip(net.parameters(), params0, strict=True):
            p.copy_(torch.from_numpy(value))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    if optimizer == "adamw":
        opt = torch.optim.AdamW(net.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY,
                                foreach=False)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=LR, foreach=False)
    from benchmarks.widenet import torch_steps

    batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in data.batches]
    seconds, t = torch_steps(net, batches, epochs, loss_fn, opt)
    flat = np.concatenate([p.detach().numpy().ravel() for p in net.parameters()])
    return seconds, t, flat


# ---------------------------------------------------------------------------------------------- sections

Runner = Callable[[str, SeedData, int], tuple[float, int, np.ndarray]]


def contenders(with_torch: bool) -> dict[str, tuple[Runner, float]]:
    """Each contender and the share of the epochs it runs per repetition (slow ones run fewer steps)."""
    params0 = initial_params()
    out: dict[str, tuple[Runner, float]] = {
        "expsvc": (run_expsvc, 1.0),
        "numpy floor (flat)": (lambda o, d, e: run_numpy_flat(o, d, e, params0), 1.0),
        "numpy textbook": (lambda o, d, e: run_numpy_textbook(o, d, e, params0), 0.5),
    }
    if with_torch:
        out["torch eager"] = (lambda o, d, e: run_torch(o, d, e, params0), 0.2)
    return out


def agreement(optimizer: str, data: SeedData, with_torch: bool, epochs: int = 20) -> dict[str, float]:
    """max |θ − θ_expsvc| of every other contender after the same ``epochs`` (they compute the same thing)."""
    runs = {name: fn(optimizer, data, epochs)[2] for name, (fn, _) in contenders(with_torch).items()}
    ref = runs.pop("expsvc")
    return {name: float(np.max(np.abs(flat - ref))) for name, flat in runs.items()}


def section_seed_net(reps: int, epochs: int, with_torch: bool) -> dict[str, Any]:
    """Section 1: steps/s of every contender, per optimizer, interleaved; plus their agreement."""
    data = seed_data()
    result: dict[str, Any] = {"epochs": epochs, "steps_per_epoch": len(data.batches), "optimizers": {}}
    for optimizer in OPTIMIZERS:
        cases = {}
        for name, (fn, share) in contenders(with_torch).items():
            ep = max(1, int(epochs * share))

            def case(fn: Runner = fn, ep: int = ep, optimizer: str = optimizer) -> float:
                seconds, steps, _ = fn(optimizer, data, ep)
                return steps / seconds

            cases[name] = case
        stats = interleaved(cases, reps, unit="steps/s", higher=True)
        result["optimizers"][optimizer] = {
            "stats": stats, "agreement": agreement(optimizer, data, with_torch),
        }
    return result


def section_five_seeds(reps: int, epochs: int) -> dict[str, Stats]:
    """Section 2: wall time (build + train, AdamW) of 5 seeds vectorised, 5 seeds one by one, and one seed."""
    data = seed_data()
    seeds = [0, 1, 2, 3, 4]

    def train(group: list[int]) -> None:
        expsvc_trainer("adamw", group, data, epochs).run()

    def vectorised() -> float:
        start = time.perf_counter()
        train(seeds)
        return time.perf_counter() - start

    def one_by_one() -> float:
        start = time.perf_counter()
        for s in seeds:
            train([s])
        return time.perf_counter() - start

    def one_seed() -> float:
        start = time.perf_counter()
        train([0])
        return time.perf_counter() - start

    cases = {"5 seeds vectorised (R=5)": vectorised, "5 seeds one by one (5 × R=1)": one_by_one,
             "1 seed (R=1)": one_seed}
    return interleaved(cases, reps, unit="s")
