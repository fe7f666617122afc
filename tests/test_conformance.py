"""Closed-form conformance checks of the built-ins against the torch-conformance doc (C1-C9), pure numpy.

Each test names the doc item it proves.  These hold without any torch fixture; ``test_torch_parity``
adds the reference trajectories.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from expsvc.builtins.activations import Sigmoid, Tanh, stable_sigmoid
from expsvc.builtins.layers import Linear
from expsvc.builtins.losses import MSE, BCEWithLogits, CrossEntropy, SumSquared
from expsvc.builtins.optimizers import SGD, Adam, AdamW, MiniBGD
from expsvc.builtins.schedulers import Constant, Cosine, StepLR
from expsvc.core import DataSplit, Optimizer, Sequential, batch_indices, steps_per_epoch
from tests._numerics import StoredOrder, blobs, drive, net_2531, one_param_buffer, train

# --------------------------------------------------------------------------------------------- C1 Linear


def linear_model(in_features: int, out_features: int, seeds: list[int], bias: bool = True) -> Sequential:
    """A one-layer model built with one generator per seed."""
    return Sequential([Linear(out_features, bias=bias)]).build(
        in_features, [np.random.default_rng(s) for s in seeds]
    )


@pytest.mark.parametrize("in_features", [1, 2, 5, 64])
def test_c1_linear_init_within_bounds(in_features: int) -> None:
    """W and b are drawn from U(−1/√in, 1/√in)."""
    model = linear_model(in_features, 7, [0, 1, 2])
    bound = 1 / math.sqrt(in_features)
    weight, bias = model.parameters()
    assert weight.value.shape == (3, 7, in_features) and bias.value.shape == (3, 7)
    for p in (weight, bias):
        assert np.all(np.abs(p.value) <= bound)
        assert np.max(np.abs(p.value)) > 0.5 * bound  # actually spread over the interval


def test_c1_linear_init_mean_and_variance() -> None:
    """On a large layer W has mean ≈ 0 and variance ≈ 1/(3·in) (uniform on ±1/√in)."""
    fan_in = 400
    weight, bias = linear_model(fan_in, 500, [3]).parameters()
    w = weight.value.ravel()
    var = 1 / (3 * fan_in)
    assert abs(w.mean()) < 5 * math.sqrt(var / w.size)
    assert abs(w.var() / var - 1) < 0.02
    assert abs(bias.value.var() / var - 1) < 0.25  # only 500 draws


def test_c1_same_seed_same_params_and_independent_weight_bias() -> None:
    """Same seed → identical parameters; another seed → different ones; b is not a copy of W's draws."""
    a = linear_model(6, 4, [11]).buffer
    b = linear_model(6, 4, [11]).buffer
    c = linear_model(6, 4, [12]).buffer
    assert a is not None and b is not None and c is not None
    np.testing.assert_array_equal(a.value, b.value)
    assert not np.array_equal(a.value, c.value)
    weight, bias = linear_model(6, 4, [11]).parameters()
    assert not np.isin(bias.value, weight.value).any()


@pytest.mark.parametrize("bias", [True, False])
def test_c1_linear_forward_backward_formulas(bias: bool) -> None:
    """forward x·Wᵀ + b; backward dW = dzᵀx, db = Σ dz, dx = dz·W — per replica."""
    rng = np.random.default_rng(0)
    model = linear_model(4, 3, [0, 1], bias=bias)
    layer = model.layers[0]
    x, dz = rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 5, 3))
    model.zero_grad()
    y = model.forward(x)
    dx = model.backward(dz)
    for r in range(2):
        w = layer.weight.value[r]
        expected = x[r] @ w.T + (layer.bias.value[r] if bias else 0.0)
        np.testing.assert_allclose(y[r], expected, rtol=0, atol=1e-15)
        np.testing.assert_allclose(layer.weight.grad[r], dz[r].T @ x[r], rtol=0, atol=1e-14)
        np.testing.assert_allclose(dx[r], dz[r] @ w, rtol=0, atol=1e-15)
        if bias:
            np.testing.assert_allclose(layer.bias.grad[r], dz[r].sum(0), rtol=0, atol=1e-15)
    assert (layer.bias is None) == (not bias)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_c1_linear_rejects_bad_width(bad: Any) -> None:
    """out_features must be a positive integer."""
    with pytest.raises(ValueError):
        Linear(bad)


# ------------------------------------------------------------------------------------ C2 Tanh / Sigmoid


def test_c2_tanh_and_sigmoid_formulas() -> None:
    """tanh and σ forward; backward from the cached output, dy·(1−y²) and dy·σ(1−σ)."""
    x = np.linspace(-8, 8, 33).reshape(1, 3, 11)
    dy = np.cos(x)
    tanh, sig = Tanh(), Sigmoid()
    y = tanh.forward(x)
    np.testing.assert_array_equal(y, np.tanh(x))
    np.testing.assert_array_equal(tanh.backward(dy), dy * (1 - y * y))
    s = sig.forward(x)
    np.testing.assert_allclose(s, 1 / (1 + np.exp(-x)), rtol=1e-15, atol=0)
    np.testing.assert_array_equal(sig.backward(dy), dy * s * (1 - s))


def test_c2_stable_sigmoid_extremes() -> None:
    """σ(±1000) is exactly 1 / 0 with no overflow warning; σ(x) + σ(−x) = 1."""
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = stable_sigmoid(np.array([-1000.0, -40.0, 0.0, 40.0, 1000.0]))
    assert s[0] == 0.0 and s[-1] == 1.0 and s[2] == 0.5
    x = np.linspace(-30, 30, 61)
    np.testing.assert_allclose(stable_sigmoid(x) + stable_sigmoid(-x), 1.0, rtol=0, atol=1e-15)


# ------------------------------------------------------------------------------------ C3 BCEWithLogits


def bce_reference(x: np.ndarray, y: np.ndarray, p: Any = None, w: Any = None) -> np.ndarray:
    """The doc's elementwise BCE loss, written independently (float64, moderate logits only)."""
    sig = 1 / (1 + np.exp(-x))
    p = 1.0 if p is None else np.asarray(p)
    w = 1.0 if w is None else np.asarray(w)
    return -w * (p * y * np.log(sig) + (1 - y) * np.log(1 - sig))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"pos_weight": [0.5, 2.0, 3.0]},
        {"weight": [1.0, 0.25, 2.0]},
        {"pos_weight": [0.5, 2.0, 3.0], "weight": [1.0, 0.25, 2.0], "reduction": "sum"},
    ],
)
def test_c3_bce_formula_and_gradient(kwargs: dict[str, Any]) -> None:
    """Value = mean (over all elements) or sum of the textbook per-element loss; gradient as in the doc."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(2, 4, 3)), rng.uniform(size=(2, 4, 3))
    loss = BCEWithLogits(**kwargs)
    value, grad = loss.forward(x, y), loss.backward()
    elem = bce_reference(x, y, kwargs.get("pos_weight"), kwargs.get("weight"))
    n = 12 if kwargs.get("reduction", "mean") == "mean" else 1
    np.testing.assert_allclose(value, elem.reshape(2, -1).sum(1) / n, rtol=1e-13)
    sig = 1 / (1 + np.exp(-x))
    p = np.asarray(kwargs.get("pos_weight", 1.0))
    w = np.asarray(kwargs.get("weight", 1.0))
    np.testing.assert_allclose(grad, ((p * y + 1 - y) * sig - p * y) * w / n, rtol=1e-13, atol=1e-16)


def test_c3_bce_default_arguments() -> None:
    """Defaults match torch: no weights, mean reduction."""
    loss = BCEWithLogits()
    assert loss.pos_weight is None and loss.weight is None and loss.reduction == "mean"


def test_c3_bce_extreme_logits_are_finite() -> None:
    """x = ±1000 gives losses of exactly 1000 (wrong side) or 0 (right side) and finite gradients."""
    x = np.array([[[1000.0], [-1000.0], [1000.0], [-1000.0]]])
    y = np.array([[[1.0], [0.0], [0.0], [1.0]]])
    loss = BCEWithLogits(reduction="sum")
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = loss.forward(x, y)
    grad = loss.backward()
    assert value[0] == 2000.0
    np.testing.assert_array_equal(grad[0, :, 0], [0.0, 0.0, 1.0, -1.0])
    for i in range(4):
        single = BCEWithLogits().forward(x[:, i : i + 1], y[:, i : i + 1])[0]
        assert single == (0.0 if i < 2 else 1000.0)


@pytest.mark.parametrize("loss", [BCEWithLogits(), MSE(), SumSquared()])
def test_c3_c5_shape_mismatch_raises(loss: Any) -> None:
    """Input and target must have identical shapes (no silent broadcasting of (B,1) against (B,))."""
    with pytest.raises(ValueError, match="identical"):
        loss.forward(np.zeros((1, 4, 1)), np.zeros((1, 4)))


def test_reduction_must_be_known() -> None:
    """Unknown reductions are refused."""
    for cls in (BCEWithLogits, MSE, CrossEntropy):
        with pytest.raises(ValueError):
            cls(reduction="avg")


# ------------------------------------------------------------------------------------- C4 CrossEntropy


def ce_reference(x: np.ndarray, y: np.ndarray, w: np.ndarray, eps: float, ignore: int = -100) -> float:
    """The doc's index-target cross-entropy (mean), sample by sample."""
    classes = x.shape[-1]
    num = den = smooth = 0.0
    for xi, yi in zip(x, y, strict=True):
        if yi == ignore:
            continue
        lp = xi - xi.max() - math.log(np.exp(xi - xi.max()).sum())
        num += -w[yi] * lp[yi]
        smooth += -(w * lp).sum()
        den += w[yi]
    return (1 - eps) * num / den + eps / classes * smooth / den


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_c4_cross_entropy_formula(eps: float, weighted: bool) -> None:
    """Index targets with label smoothing, class weights and one ignored sample; mean over Σ w_y."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 6, 4))
    y = np.array([[0, 3, 1, -100, 2, 3]])
    w = np.array([1.0, 2.0, 0.5, 1.5]) if weighted else np.ones(4)
    loss = CrossEntropy(weight=list(w) if weighted else None, label_smoothing=eps)
    value = loss.forward(x, y)
    np.testing.assert_allclose(value[0], ce_reference(x[0], y[0], w, eps), rtol=1e-14)
    grad = loss.backward()
    assert np.all(grad[0, 3] == 0.0)  # the ignored sample gets no gradient
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    onehot = np.eye(4)[np.where(y < 0, 0, y)]
    mask = (y != -100)[..., None]
    den = (w[np.where(y < 0, 0, y)] * mask[..., 0]).sum()
    expected = (
        ((1 - eps) * (p - onehot) * w[np.where(y < 0, 0, y)][..., None] + eps / 4 * (p * w.sum() - w))
        * mask
        / den
    )
    np.testing.assert_allclose(grad, expected, rtol=1e-13, atol=1e-16)


def test_c4_probability_targets() -> None:
    """Probability targets: y ← y(1−ε) + ε/C, loss = −Σ_c w_c y_c lp_c averaged over the batch."""
    rng = np.random.default_rng(3)
    x, t = rng.normal(size=(1, 5, 3)), rng.dirichlet(np.ones(3), size=(1, 5))
    w = np.array([1.0, 3.0, 0.5])
    value = CrossEntropy(weight=list(w), label_smoothing=0.2).forward(x, t)
    lp = x - x.max(-1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
    ts = t * 0.8 + 0.2 / 3
    np.testing.assert_allclose(value[0], -(w * ts * lp).sum() / 5, rtol=1e-14)


def test_c4_c9_all_targets_ignored_gives_nan_like_torch() -> None:
    """All targets ignored with mean reduction: loss NaN (0/0) and a zero gradient, as torch does; the other
    replica is unaffected."""
    x = np.random.default_rng(4).normal(size=(2, 3, 4))
    y = np.array([[-100, -100, -100], [0, 1, 2]])
    loss = CrossEntropy(label_smoothing=0.1)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = loss.forward(x, y)
        grad = loss.backward()
    assert np.isnan(value[0]) and np.isfinite(value[1])
    assert np.all(grad[0] == 0.0) and np.all(np.isfinite(grad[1]))
    alone = CrossEntropy(label_smoothing=0.1)
    assert alone.forward(x[1:], y[1:])[0] == value[1]
    np.testing.assert_array_equal(alone.backward()[0], grad[1])


def test_c4_cross_entropy_validation() -> None:
    """Weight length must equal the class count; smoothing in [0, 1]; class indices in range."""
    with pytest.raises(ValueError):
        CrossEntropy(weight=[1.0, 2.0]).forward(np.zeros((1, 2, 3)), np.zeros((1, 2), dtype=np.int64))
    with pytest.raises(ValueError):
        CrossEntropy(label_smoothing=1.5)
    with pytest.raises(ValueError):
        CrossEntropy().forward(np.zeros((1, 2, 3)), np.array([[0, 3]]))


# ---------------------------------------------------------------------------------------------- C5 MSE


def test_c5_mse_and_sum_squared() -> None:
    """MSE: mean((x−y)²) over all elements, grad 2(x−y)/numel; sum reduction and SumSquared: no division."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4, 3))
    d = x - y
    mse = MSE()
    np.testing.assert_allclose(mse.forward(x, y), (d**2).reshape(2, -1).mean(1), rtol=1e-15)
    np.testing.assert_allclose(mse.backward(), 2 * d / 12, rtol=1e-15)
    total = MSE(reduction="sum")
    np.testing.assert_allclose(total.forward(x, y), (d**2).reshape(2, -1).sum(1), rtol=1e-15)
    np.testing.assert_allclose(total.backward(), 2 * d, rtol=1e-15)
    ss = SumSquared()
    np.testing.assert_allclose(ss.forward(x, y), (d**2).reshape(2, -1).sum(1), rtol=1e-15)
    np.testing.assert_allclose(ss.backward(), 2 * d, rtol=1e-15)
    assert MSE().reduction == "mean"


# ---------------------------------------------------------------------------------------------- C6 SGD


def test_c6_sgd_defaults() -> None:
    """torch's defaults: lr 1e-3, no momentum, dampening, decay or Nesterov."""
    sgd = SGD()
    assert (sgd.lr, sgd.momentum, sgd.dampening, sgd.weight_decay, sgd.nesterov) == (
        1e-3,
        0.0,
        0.0,
        0.0,
        False,
    )


def test_c6_hand_computed_momentum_with_dampening() -> None:
    """θ0 = 1, g ≡ 1, lr = .1, μ = .9, τ = .5: buffers 1.0 then 1.4; θ = 0.9 then 0.76."""
    sgd = SGD(lr=0.1, momentum=0.9, dampening=0.5)
    drive(sgd, [1.0], lambda t, th: np.ones(1), 1)
    np.testing.assert_allclose(sgd.momentum_buffer, [[1.0]], rtol=0, atol=1e-15)
    sgd2 = SGD(lr=0.1, momentum=0.9, dampening=0.5)
    thetas = drive(sgd2, [1.0], lambda t, th: np.ones(1), 2)
    np.testing.assert_allclose(sgd2.momentum_buffer, [[1.4]], rtol=0, atol=1e-15)
    np.testing.assert_allclose(np.ravel(thetas), [0.9, 0.76], rtol=0, atol=1e-15)


def test_c6_hand_computed_nesterov_and_weight_decay() -> None:
    """Nesterov with decay: g' = g + λθ; b = g' (then μb + g'); step g' + μb."""
    lr, mu, lam = 0.1, 0.9, 0.5
    theta, buf = 2.0, None
    expected = []
    for _ in range(3):
        g = 1.0 + lam * theta
        buf = g if buf is None else mu * buf + g
        theta = theta - lr * (g + mu * buf)
        expected.append(theta)
    got = drive(SGD(lr=lr, momentum=mu, nesterov=True, weight_decay=lam), [2.0], lambda t, th: np.ones(1), 3)
    np.testing.assert_allclose(np.ravel(got), expected, rtol=1e-15)


def test_c6_plain_sgd_and_mini_bgd_are_gradient_descent() -> None:
    """No momentum: θ ← θ − lr·g, identical for SGD and MiniBGD."""
    g = lambda t, th: np.array([0.3, -1.2]) * t  # noqa: E731
    a = drive(SGD(lr=0.1), [1.0, 2.0], g, 3)
    b = drive(MiniBGD(lr=0.1), [1.0, 2.0], g, 3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a[-1], [1.0 - 0.1 * 0.3 * 6, 2.0 + 0.1 * 1.2 * 6], rtol=1e-15)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: SGD(lr=0.1, nesterov=True), id="nesterov_without_momentum"),
        pytest.param(
            lambda: SGD(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), id="nesterov_dampening"
        ),
        pytest.param(lambda: SGD(lr=-0.1), id="sgd_negative_lr"),
        pytest.param(lambda: SGD(lr=0.1, momentum=-0.5), id="negative_momentum"),
        pytest.param(lambda: SGD(lr=0.1, weight_decay=-1e-3), id="sgd_negative_decay"),
        pytest.param(lambda: SGD(lr=0.1, momentum=0.5, dampening=-0.1), id="negative_dampening"),
        pytest.param(lambda: MiniBGD(lr=-1.0), id="mini_bgd_negative_lr"),
        pytest.param(lambda: Adam(lr=-1e-3), id="adam_negative_lr"),
        pytest.param(lambda: Adam(betas=(1.0, 0.999)), id="beta1_one"),
        pytest.param(lambda: Adam(betas=(0.9, -0.1)), id="beta2_negative"),
        pytest.param(lambda: Adam(betas=(0.9,)), id="one_beta"),
        pytest.param(lambda: Adam(eps=-1e-8), id="negative_eps"),
        pytest.param(lambda: AdamW(weight_decay=-0.01), id="adamw_negative_decay"),
        pytest.param(lambda: StepLR(step_size=0), id="steplr_zero_step"),
        pytest.param(lambda: Cosine(t_max=0), id="cosine_zero_tmax"),
    ],
)
def test_invalid_hyperparameters_raise_value_error(make: Any) -> None:
    """Validation mirrors torch's: each of these raises ValueError at construction."""
    with pytest.raises(ValueError):
        make()


# ------------------------------------------------------------------------------------ C7 Adam / AdamW


def test_c7_adam_and_adamw_defaults() -> None:
    """lr 1e-3, betas (0.9, 0.999), eps 1e-8, no AMSGrad; weight decay 0 for Adam, 0.01 for AdamW."""
    adam, adamw = Adam(), AdamW()
    for opt in (adam, adamw):
        assert (opt.lr, opt.beta1, opt.beta2, opt.eps, opt.amsgrad) == (1e-3, 0.9, 0.999, 1e-8, False)
    assert adam.weight_decay == 0.0 and adamw.weight_decay == 0.01
    assert AdamW(weight_decay=0.0).weight_decay == 0.0


@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_c7_step_one_closed_form(cls: type[Optimizer]) -> None:
    """At t = 1 (no decay): m/c1 = g and √v/√c2 = |g|, so Δθ = −lr·g/(|g| + ε)."""
    g = np.array([3.0, -0.5, 1e-9, -2e-8, 0.0, 1e4])
    theta0 = np.linspace(-1, 1, g.size)
    lr = 0.01
    opt = cls(lr=lr, weight_decay=0.0)
    (theta1,) = drive(opt, theta0, lambda t, th: g, 1)
    np.testing.assert_allclose(theta1 - theta0, -lr * g / (np.abs(g) + 1e-8), rtol=1e-12, atol=1e-18)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_c7_two_steps_by_hand(amsgrad: bool) -> None:
    """Two steps with g = 1 then 0.1 follow the doc's update, including AMSGrad's max of the raw v."""
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    theta, m, v, vmax = 0.5, 0.0, 0.0, 0.0
    expected = []
    for t, g in enumerate((1.0, 0.1), start=1):
        m = m + (1 - b1) * (g - m)
        v = b2 * v + (1 - b2) * g * g
        vmax = max(vmax, v)
        denom = math.sqrt(vmax if amsgrad else v) / math.sqrt(1 - b2**t) + eps
        theta = theta + (-lr / (1 - b1**t)) * m / denom
        expected.append(theta)
    got = drive(Adam(lr=lr, amsgrad=amsgrad), [0.5], lambda t, th: np.array([1.0 if t == 1 else 0.1]), 2)
    np.testing.assert_allclose(np.ravel(got), expected, rtol=1e-15)


def test_c7_adamw_decay_only_closed_form() -> None:
    """g ≡ 0: AdamW keeps m = v = 0 and θ_t = θ0·(1 − lr·λ)^t (repeated multiplication, ≈ closed form)."""
    lr, lam, steps = 0.05, 0.1, 60
    theta0 = np.array([1.0, -2.0, 0.25, 0.0])
    opt = AdamW(lr=lr, weight_decay=lam)
    got = np.array(drive(opt, theta0, lambda t, th: np.zeros_like(th), steps))
    assert np.all(opt.m == 0) and np.all(opt.v == 0)
    factor = 1 - lr * lam
    repeated = theta0.copy()
    for t in range(steps):
        repeated = repeated * factor
        np.testing.assert_array_equal(got[t], repeated)
    closed = theta0 * factor**steps
    assert np.max(np.abs(got[-1] - closed) / np.maximum(np.abs(closed), 1e-300)) <= 1e-14


def test_c7_adam_l2_decay_is_normalised_not_multiplicative() -> None:
    """Same λ in Adam (coupled L2): g = λθ goes through the moments, so each step is ≈ −lr·sign(θ)."""
    lr, lam = 1e-3, 0.1
    theta0 = np.array([1.0, -2.0, 0.25])
    got = np.array(drive(Adam(lr=lr, weight_decay=lam), theta0, lambda t, th: np.zeros_like(th), 10))
    steps = np.diff(np.vstack([theta0, got]), axis=0)
    np.testing.assert_allclose(steps, -lr * np.sign(theta0) * np.ones((10, 1)), rtol=1e-2)
    adamw = np.array(drive(AdamW(lr=lr, weight_decay=lam), theta0, lambda t, th: np.zeros_like(th), 10))
    assert np.max(np.abs(adamw - got)) > 1e-3


def test_c7_adam_and_adamw_train_differently() -> None:
    """With the same λ, Adam (L2 in the gradient) and AdamW (decoupled) give different network trajectories,
    and AdamW with λ = 0 is exactly Adam."""
    data = blobs(60)

    def final(opt: Optimizer) -> np.ndarray:
        model = net_2531().build(2, [np.random.default_rng(0)])
        train(model, opt, data, [np.random.default_rng(1)], epochs=5, batch_size=20)
        assert model.buffer is not None
        return model.buffer.value.copy()

    adam, adamw = final(Adam(lr=0.01, weight_decay=0.1)), final(AdamW(lr=0.01, weight_decay=0.1))
    assert np.max(np.abs(adam - adamw)) > 1e-4
    np.testing.assert_array_equal(final(Adam(lr=0.01)), final(AdamW(lr=0.01, weight_decay=0.0)))


# ------------------------------------------------------------------------------------------ C8 Schedules


def test_c8_steplr_formula() -> None:
    """lr(e) = base·γ^⌊e/step_size⌋; torch's default γ = 0.1."""
    sched = StepLR(step_size=3)
    assert sched.gamma == 0.1
    for e in range(20):
        assert sched.lr(0.5, e) == pytest.approx(0.5 * 0.1 ** (e // 3), rel=1e-15)
    assert [StepLR(2, gamma=0.5).lr(1.0, e) for e in range(6)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_c8_cosine_formula_and_periodicity() -> None:
    """lr(e) = η_min + (base−η_min)(1+cos(πe/T))/2 for all e ≥ 0: η_min at T, back to base at 2T."""
    base, eta_min, t_max = 0.1, 1e-3, 10
    sched = Cosine(t_max=t_max, eta_min=eta_min)
    for e in range(4 * t_max + 3):
        expected = eta_min + (base - eta_min) * (1 + math.cos(math.pi * e / t_max)) / 2
        assert sched.lr(base, e) == pytest.approx(expected, rel=1e-15, abs=1e-18)
    assert sched.lr(base, 0) == base
    assert sched.lr(base, t_max) == pytest.approx(eta_min, rel=1e-12)
    assert sched.lr(base, 2 * t_max) == pytest.approx(base, rel=1e-15)
    for k in range(1, t_max):
        assert sched.lr(base, t_max + k) == pytest.approx(sched.lr(base, t_max - k), rel=1e-12)
    assert Cosine(t_max=5).eta_min == 0.0
    assert Constant().lr(0.3, 99) == 0.3


class LrRecorder(MiniBGD):
    """Gradient descent that records the lr of every step (to see when the trainer changes it)."""

    def bind(self, buffer: Any) -> None:
        """Bind and start an empty record."""
        super().bind(buffer)
        self.seen: list[float] = []

    def step(self) -> None:
        """Record, then step."""
        self.seen.append(self.lr)
        super().step()


def test_c8_schedule_stepped_once_per_epoch_after_the_updates() -> None:
    """Epoch 0 runs at the base lr; every update of epoch e uses lr(e)."""
    data = blobs(30)
    opt = LrRecorder(lr=0.2)
    model = net_2531().build(2, [np.random.default_rng(0)])
    train(
        model, opt, data, [np.random.default_rng(0)], epochs=5, batch_size=8, scheduler=StepLR(2, gamma=0.5)
    )
    per_epoch = steps_per_epoch(30, 8)
    assert opt.seen == [0.2 * 0.5 ** (e // 2) for e in range(5) for _ in range(per_epoch)]


def test_c8_adamw_decay_uses_the_scheduled_lr() -> None:
    """The decoupled decay factor is 1 − lr·λ with the lr the schedule set, not the base lr."""
    buf, p = one_param_buffer([2.0])
    opt = AdamW(lr=0.1, weight_decay=0.5)
    opt.bind(buf)
    opt.lr = Cosine(t_max=4).lr(0.1, 1)
    opt.step()
    assert p.value[0, 0] == 2.0 * (1 - opt.lr * 0.5)


# ----------------------------------------------------------------------------------- C9 Training loop


def test_c9_batches_keep_the_last_partial_batch() -> None:
    """One permutation per epoch, batches of B in order, the last partial batch kept."""
    orders = [
        StoredOrder(np.array([np.roll(np.arange(23), 5)])),
        StoredOrder(np.array([np.arange(23)[::-1]])),
    ]
    batches = list(batch_indices(23, 5, orders, shuffle=True))
    assert [b.shape for b in batches] == [(2, 5)] * 4 + [(2, 3)]
    np.testing.assert_array_equal(np.concatenate(batches, axis=1)[0], np.roll(np.arange(23), 5))
    np.testing.assert_array_equal(np.concatenate(batches, axis=1)[1], np.arange(23)[::-1])
    assert all(o.calls == 1 for o in orders)
    assert steps_per_epoch(23, 5) == 5 and steps_per_epoch(25, 5) == 5


class Frozen(Optimizer):
    """An optimizer that never moves the parameters (to read the loop's losses at fixed θ)."""

    name = "frozen"

    def step(self) -> None:
        """Do nothing."""


def test_c9_mean_loss_of_the_partial_batch_divides_by_its_real_size() -> None:
    """The recorded loss of each batch, including the short last one, is the mean over its real samples."""
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(23, 2)), rng.integers(0, 2, size=(23, 1)).astype(float)
    data = DataSplit(x, y, x, y, task="binary")
    model = net_2531().build(2, [np.random.default_rng(0)])
    perm = rng.permutation(23)
    result = train(model, Frozen(lr=1.0), data, [StoredOrder(perm[None])], epochs=1, batch_size=5)
    out = model.forward(x[None])[0, :, 0]
    elem = np.maximum(out, 0) - out * y[:, 0] + np.log1p(np.exp(-np.abs(out)))
    expected = [elem[perm[s : s + 5]].mean() for s in range(0, 23, 5)]
    np.testing.assert_allclose(result.history[0], expected, rtol=1e-13)
    assert len(expected) == 5 and perm[20:].size == 3


def test_c9_loss_gradient_of_a_partial_batch_divides_by_its_real_size() -> None:
    """BCE/MSE mean gradients use the batch's own element count (3, not the nominal 5)."""
    x, y = np.full((1, 3, 1), 0.0), np.ones((1, 3, 1))
    bce = BCEWithLogits()
    bce.forward(x, y)
    np.testing.assert_allclose(bce.backward(), np.full((1, 3, 1), -0.5 / 3), rtol=1e-15)
    mse = MSE()
    mse.forward(x, y)
    np.testing.assert_allclose(mse.backward(), np.full((1, 3, 1), -2.0 / 3), rtol=1e-15)
