"""The built-ins reproduce PyTorch 2.13's numbers (fixtures from ``scripts/make_torch_fixtures.py``).

torch is never imported: each 2-5-3-1 run is rebuilt with expsvc from the stored dataset, initial
parameters and per-epoch batch orders, and compared step by step with torch's losses and parameters.
Components (layers, activations, losses) and schedules are compared case by case.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from expsvc.builtins.optimizers import AdamW
from expsvc.core import DataSplit, Optimizer, Sequential
from tests._numerics import (
    ACTIVATIONS,
    FIXTURES,
    LAYERS,
    LOSSES,
    OPTIMIZERS,
    SCHEDULERS,
    StoredOrder,
    manifest,
    max_abs,
    net_2531,
    npz,
    record_steps,
    train,
)

RUNS = list(manifest()["net"]["runs"])
NET = "net_2531.npz"

# Asserted tolerances: the acceptance criteria for float64, the doc's C6/C7 figures for float32
# parameters (the float32 loss bound is ours).  Measured with numpy 2 against torch 2.13.0 (AVX512), max over
# all checkpoints of the 2,000-step runs: float64 |Δθ| ≤ 6.7e-16 (SGD family), ≤ 3.3e-15 (Adam/AdamW),
# 3.2e-14 (Adam+AMSGrad); per-step loss ≤ 1.4e-15.  float32 |Δθ| ≤ 5.4e-7 (SGD family), ≤ 1.6e-5 (Adam
# family); loss ≤ 6e-7.  Layers/losses: ≤ 3e-14 (float64), ≤ 1.2e-7 (float32 Linear).
F64_PARAM_TOL, F64_LOSS_TOL = 1e-10, 1e-12
F32_PARAM_TOL = {"mini_bgd": 1e-5, "sgd": 1e-5, "adam": 5e-5, "adamw": 5e-5}
F32_LOSS_TOL = 1e-5
COMPONENT_TOL = {"float64": 1e-12, "float32": 1e-6}


def build_injected(dtype: str) -> Sequential:
    """The 2-5-3-1 net with torch's initial parameters written into each ``Parameter.value``."""
    model = net_2531().build(2, [np.random.default_rng(0)], dtype=np.dtype(dtype))
    init = npz(NET)["init"]
    offset = 0
    for p in model.parameters():
        p.value[0] = init[offset : offset + p.size].reshape(p.shape)
        offset += p.size
    assert model.buffer is not None and offset == model.buffer.size == init.size
    return model


def optimizer_for(run: str) -> Optimizer:
    """The expsvc optimizer of a stored run."""
    spec = manifest()["net"]["runs"][run]
    return OPTIMIZERS[spec["optimizer"]](**spec["kwargs"])


def run_like_torch(
    run: str, dtype: str, optimizer: Optimizer | None = None
) -> tuple[np.ndarray, np.ndarray, Any]:
    """Replay a stored run in expsvc: per-step losses ``(steps,)``, parameters after every step
    ``(steps, P)``, and the order stand-in (to count epochs)."""
    spec = manifest()["net"]["runs"][run]
    z = npz(NET)
    model = build_injected(dtype)
    opt = optimizer if optimizer is not None else optimizer_for(run)
    sched_spec = spec.get("scheduler")
    scheduler = SCHEDULERS[sched_spec["name"]](**sched_spec["kwargs"]) if sched_spec else None
    steps: list[np.ndarray] = []
    record_steps(opt, steps)
    order = StoredOrder(z["perms"])
    data = DataSplit(z["x"], z["y"], z["x"], z["y"], task="binary")
    result = train(
        model,
        opt,
        data,
        [order],
        epochs=manifest()["net"]["epochs"],
        batch_size=manifest()["net"]["batch_size"],
        scheduler=scheduler,
    )
    return result.history[0], np.stack(steps)[:, 0, :], order


@cache
def replay(run: str, dtype: str) -> tuple[np.ndarray, np.ndarray, Any]:
    """Cached :func:`run_like_torch` with the run's own optimizer."""
    return run_like_torch(run, dtype)


def param_deviation(params: np.ndarray, run: str, dtype: str) -> float:
    """max |Δθ| against torch over every stored checkpoint (including the final parameters)."""
    z = npz(NET)
    ref = z[f"{dtype}/{run}/params"]
    ours = params[z["checkpoint_steps"] - 1]
    return max_abs(ours, ref)


def test_fixture_layout() -> None:
    """The stored run is 2,000 steps of batch 50 over 240 points: every epoch ends with a partial batch."""
    z, net = npz(NET), manifest()["net"]
    assert z["x"].shape == (240, 2) and z["y"].shape == (240, 1)
    assert set(np.unique(z["y"])) == {0.0, 1.0}
    assert z["perms"].shape == (net["epochs"], 240)
    assert all(sorted(p) == list(range(240)) for p in z["perms"][:5])
    assert net["steps"] == 2000 and z["checkpoint_steps"][-1] == 2000
    assert z["init"].shape == (2 * 5 + 5 + 5 * 3 + 3 + 3 + 1,)


@pytest.mark.parametrize("run", RUNS)
def test_2531_run_matches_torch_float64(run: str) -> None:
    """Every step's loss and the parameters at each checkpoint match torch's float64 run."""
    losses, params, order = replay(run, "float64")
    ref_losses = npz(NET)[f"float64/{run}/losses"]
    assert losses.shape == ref_losses.shape == (2000,)
    assert order.calls == manifest()["net"]["epochs"]  # one permutation per epoch
    d_loss = max_abs(losses, ref_losses)
    d_param = param_deviation(params, run, "float64")
    assert d_loss <= F64_LOSS_TOL, f"{run}: per-step loss off by {d_loss:.3g}"
    assert d_param <= F64_PARAM_TOL, f"{run}: parameters off by {d_param:.3g}"


@pytest.mark.parametrize("run", RUNS)
def test_2531_run_matches_torch_float32(run: str) -> None:
    """The same runs in float32 stay within the doc's float32 tolerances of torch's float32 run."""
    losses, params, _ = replay(run, "float32")
    ref_losses = npz(NET)[f"float32/{run}/losses"]
    d_loss = max_abs(losses, ref_losses)
    d_param = param_deviation(params, run, "float32")
    tol = F32_PARAM_TOL[manifest()["net"]["runs"][run]["optimizer"]]
    assert d_loss <= F32_LOSS_TOL, f"{run}: float32 loss off by {d_loss:.3g}"
    assert d_param <= tol, f"{run}: float32 parameters off by {d_param:.3g}"


@pytest.mark.parametrize("run", [r for r in RUNS if "scheduler" in manifest()["net"]["runs"][r]])
def test_scheduled_runs_use_torchs_learning_rates(run: str) -> None:
    """The closed-form schedule gives the lr torch's (recursive) scheduler used in each epoch."""
    spec = manifest()["net"]["runs"][run]
    sched = SCHEDULERS[spec["scheduler"]["name"]](**spec["scheduler"]["kwargs"])
    torch_lrs = npz(NET)[f"float64/{run}/lrs"]
    ours = np.array([sched.lr(spec["kwargs"]["lr"], e) for e in range(torch_lrs.size)])
    assert max_abs(ours, torch_lrs) <= 1e-12


class SeedVariantAdamW(AdamW):
    """The seed experiment's hand-written "AdamW" (conformance doc, C7 regression guard): a plain gradient
    step ``θ −= lr·g`` where the decay belongs, the update from the previous step's moments, no decay."""

    def step(self) -> None:
        """One update of the seed variant."""
        buf = self.buffer
        assert buf is not None
        g = buf.grad.copy()
        buf.value -= self.lr * g
        if self.t > 0:
            c1, c2 = 1 - self.beta1**self.t, 1 - self.beta2**self.t
            buf.value -= self.lr * (self.m / c1) / (np.sqrt(self.v / c2) + self.eps)
        self.t += 1
        self.m[...] = self.beta1 * self.m + (1 - self.beta1) * g
        self.v[...] = self.beta2 * self.v + (1 - self.beta2) * g * g


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(lambda: SeedVariantAdamW(lr=0.01), id="seed_variant_adamw"),
        pytest.param(lambda: AdamW(lr=0.01, eps=1e-7), id="keras_eps_1e-7"),
    ],
)
def test_parity_check_rejects_non_torch_adamw(variant: Any) -> None:
    """Regression guard: plausible but wrong AdamW ports FAIL the very check the built-in passes."""
    losses, params, _ = run_like_torch("adamw", "float64", optimizer=variant())
    d_param = param_deviation(params, "adamw", "float64")
    d_loss = max_abs(losses, npz(NET)["float64/adamw/losses"])
    assert d_param > F64_PARAM_TOL * 1e3 and d_loss > F64_LOSS_TOL * 1e3, (d_param, d_loss)


def component_cases(kind: str) -> list[Any]:
    """Fixture cases of one kind, as pytest params."""
    return [pytest.param(c, id=c["case"]) for c in manifest()["components"] if c["kind"] == kind]


@pytest.mark.parametrize("case", component_cases("layer") + component_cases("activation"))
def test_layers_and_activations_match_torch(case: dict[str, Any]) -> None:
    """Outputs, input gradients and parameter gradients with torch's weights copied in."""
    z, key, dtype = npz("components.npz"), case["case"], np.dtype(case["dtype"])
    if case["kind"] == "layer":
        layer = LAYERS[case["name"]](case["out_features"], **case["kwargs"])
    else:
        layer = ACTIVATIONS[case["name"]](**case["kwargs"])
    x = z[f"{key}/x"]
    model = Sequential([layer]).build(x.shape[1], [np.random.default_rng(0)], dtype=dtype)
    params = {p.name.rsplit(".", 1)[1]: p for p in model.parameters()}
    for name, p in params.items():
        p.value[0] = z[f"{key}/{name}"]
    model.zero_grad()
    out = model.forward(x[None].astype(dtype))
    dx = model.backward(z[f"{key}/g"][None].astype(dtype))
    tol = COMPONENT_TOL[case["dtype"]]
    assert out.dtype == dtype and dx.dtype == dtype
    assert max_abs(out[0], z[f"{key}/out"]) <= tol
    assert max_abs(dx[0], z[f"{key}/dx"]) <= tol
    for name, p in params.items():
        assert max_abs(p.grad[0], z[f"{key}/d{name}"]) <= tol, name


@pytest.mark.parametrize("case", component_cases("loss"))
def test_losses_match_torch(case: dict[str, Any]) -> None:
    """Loss values and input gradients (BCE ±1000 logits, pos_weight, weight, sum; CE smoothing, weights,
    ignored samples, probability targets; MSE) within 1e-12 of torch."""
    z, key = npz("components.npz"), case["case"]
    loss = LOSSES[case["name"]](**case["kwargs"])
    x, target = z[f"{key}/x"][None].copy(), z[f"{key}/target"][None]
    with np.errstate(invalid="ignore", divide="ignore"):
        value = loss.forward(x, target)
        grad = loss.backward()
    assert value.shape == (1,) and grad.shape == x.shape
    assert max_abs(value[0], z[f"{key}/value"]) <= 1e-12, (value[0], z[f"{key}/value"])
    assert max_abs(grad[0], z[f"{key}/dx"]) <= 1e-12


def scheduler_cases() -> list[Any]:
    """The stored torch scheduler sequences."""
    data = json.loads((FIXTURES / "schedulers.json").read_text())
    return [pytest.param(v, id=k) for k, v in data.items()]


@pytest.mark.parametrize("case", scheduler_cases())
def test_schedulers_match_torch_recursive_values(case: dict[str, Any]) -> None:
    """StepLR and CosineAnnealingLR closed forms agree with torch's per-epoch values (also past T_max)."""
    sched = SCHEDULERS[case["scheduler"]["name"]](**case["scheduler"]["kwargs"])
    ours = [sched.lr(case["base_lr"], e) for e in range(len(case["lrs"]))]
    assert max_abs(np.array(ours), np.array(case["lrs"])) <= 1e-12


def test_numeric_modules_do_not_import_torch() -> None:
    """The parity tests read fixtures only: importing them (in a fresh interpreter) never loads torch."""
    root = Path(__file__).resolve().parent.parent
    modules = [
        "tests._numerics",
        "tests.test_torch_parity",
        "tests.test_conformance",
        "tests.test_gradcheck",
        "tests.test_replicas",
        "tests.test_shaped_parity",
        "tests.test_shaped_layers",
    ]
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "assert 'torch' not in sys.modules\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
