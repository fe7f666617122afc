"""The shaped layers, BCELoss and the reference digits CNN reproduce PyTorch 2.13's float64 numbers
(fixtures ``shaped.npz`` and ``cnn_digits.npz`` from ``scripts/make_torch_fixtures.py``; torch is never
imported here).  Measured with numpy 2.4 against torch 2.13.0 (AVX512): components ≤ 7.1e-15; the CNN's 500
AdamW steps: losses ≤ 4.4e-16, parameters ≤ 6.3e-15."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from expsvc.builtins.activations import GLU, ReLU
from expsvc.builtins.datasets import Digits
from expsvc.builtins.layers import AvgPool2d, BatchNorm, Conv2d, Dropout, Flatten, Linear, MaxPool2d
from expsvc.builtins.losses import BCE, CrossEntropy
from expsvc.builtins.optimizers import AdamW
from expsvc.core import DataSplit, ReplicaRandom, Sequential, Trainer
from tests._numerics import StoredOrder, manifest, max_abs, npz, record_steps

LAYERS: dict[str, Any] = {"conv2d": Conv2d, "max_pool2d": MaxPool2d, "avg_pool2d": AvgPool2d, "flatten": Flatten,
                          "glu": GLU, "batch_norm": BatchNorm, "dropout": Dropout}
TORCH_PARAM = {"weight": "weight", "bias": "bias", "running_mean": "running_mean", "running_var": "running_var"}
TOL = 1e-12


class InjectedMask(ReplicaRandom):
    """Stands in for a dropout layer's streams: uniform numbers that reproduce torch's recorded keep mask
    (0 where torch kept an element, 1 where it dropped it)."""

    def __init__(self, keep: np.ndarray) -> None:
        super().__init__([])
        self.keep = keep

    def uniform(self, shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
        assert tuple(shape) == self.keep.shape
        return np.where(self.keep[None] == 1, 0.0, 1.0).astype(dtype)


def cases(loss: bool) -> list[Any]:
    return [pytest.param(c, id=c["case"]) for c in manifest()["shaped"] if bool(c.get("loss")) == loss]


@pytest.mark.parametrize("case", cases(loss=False))
def test_shaped_layers_match_torch(case: dict[str, Any]) -> None:
    """Outputs, input and parameter gradients, and batch norm's running statistics after the pass."""
    z, key = npz("shaped.npz"), case["case"]
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in case["kwargs"].items()}
    layer = LAYERS[case["name"]](**kwargs)
    x = z[f"{key}/x"]
    model = Sequential([layer]).build(x.shape[1:], [np.random.default_rng(0)])
    for p in model.tensors():
        short = p.name.rsplit(".", 1)[1]
        p.value[0] = z[f"{key}/{short}"]
    if case["name"] == "dropout":
        layer._random = InjectedMask(z[f"{key}/mask"])
    model.zero_grad()
    out = model.forward(x[None], train=case["train"])
    dx = model.backward(z[f"{key}/g"][None])
    assert max_abs(out[0], z[f"{key}/out"]) <= TOL
    assert max_abs(dx[0], z[f"{key}/dx"]) <= TOL
    for p in model.parameters():
        short = p.name.rsplit(".", 1)[1]
        assert max_abs(p.grad[0], z[f"{key}/d{short}"]) <= TOL, short
    for p in model.states():
        short = p.name.rsplit(".", 1)[1]
        assert max_abs(p.value[0], z[f"{key}/new_{short}"]) <= TOL, short


@pytest.mark.parametrize("case", cases(loss=True))
def test_bce_matches_torch(case: dict[str, Any]) -> None:
    """BCELoss on probabilities, including exactly 0 and 1 (torch's −100 log clamp) and 1e-9."""
    z, key = npz("shaped.npz"), case["case"]
    loss = BCE(**case["kwargs"])
    value = loss.forward(z[f"{key}/x"][None], z[f"{key}/target"][None])
    grad = loss.backward()
    assert max_abs(value[0], z[f"{key}/value"]) <= TOL
    assert max_abs(grad[0], z[f"{key}/dx"]) <= TOL


def test_reference_cnn_500_adamw_steps_match_torch() -> None:
    """conv-relu-maxpool-conv-relu-maxpool-flatten-linear, cross-entropy, AdamW lr 1e-3, batch 64, float64, from
    torch's initial parameters and batch orders: every step's loss and the parameters at each checkpoint
    within 1e-9 of torch."""
    z, spec = npz("cnn_digits.npz"), manifest()["cnn"]
    digits = Digits().load()
    x, y = digits.x_train[: spec["points"]], digits.y_train[: spec["points"]]
    model = Sequential([Conv2d(8, 3, padding=1), ReLU(), MaxPool2d(2), Conv2d(16, 3, padding=1), ReLU(),
                        MaxPool2d(2), Flatten(), Linear(10)]).build((1, 8, 8), [np.random.default_rng(0)])
    assert model.buffer is not None and model.buffer.size == z["init"].size
    model.buffer.value[0] = z["init"]
    opt = AdamW(**spec["optimizer"]["kwargs"])
    steps: list[np.ndarray] = []
    record_steps(opt, steps)
    trainer = Trainer(model, CrossEntropy(), opt, DataSplit(x, y, x, y, "multiclass", 10), [StoredOrder(z["perms"])],
                      epochs=spec["epochs"], batch_size=spec["batch_size"], shuffle=True)
    result = trainer.run()
    losses = result.history[0]
    assert losses.shape == z["losses"].shape == (500,)
    params = np.stack(steps)[:, 0][z["checkpoint_steps"] - 1]
    d_loss, d_param = max_abs(losses, z["losses"]), max_abs(params, z["params"])
    assert d_loss <= 1e-9 and d_param <= 1e-9, (d_loss, d_param)
    assert z["losses"][-1] < 0.2 < 2.0 < z["losses"][0]  # it learns
