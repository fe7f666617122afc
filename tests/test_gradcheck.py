"""Every built-in backward agrees with central differences (float64, max relative error ≤ 1e-7), a wrong
backward is caught, and the whole 2-5-3-1 tanh + BCE network's gradient is right at init and after training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from expsvc.builtins.activations import Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from expsvc.builtins.layers import Linear
from expsvc.builtins.losses import MSE, BCEWithLogits, CrossEntropy, SumSquared
from expsvc.builtins.optimizers import Adam
from expsvc.core import Layer, Loss, Sequential, gradcheck, gradcheck_layer, gradcheck_loss
from expsvc.core.params import Parameter
from tests._numerics import blobs, net_2531, train

TOL = 1e-7


class CrossEntropyIgnoring(CrossEntropy):
    """Cross-entropy whose gradcheck targets include one ignored sample per replica."""

    def sample_target(self, rng: np.random.Generator, pred_shape: tuple[int, ...]) -> np.ndarray:
        """Random class indices with the second sample set to ``ignore_index``."""
        target = super().sample_target(rng, pred_shape)
        target[:, 1] = self.ignore_index
        return target


class CrossEntropyProbabilities(CrossEntropy):
    """Cross-entropy checked on probability targets."""

    def sample_target(self, rng: np.random.Generator, pred_shape: tuple[int, ...]) -> np.ndarray:
        """Random rows of class probabilities."""
        return rng.dirichlet(np.ones(pred_shape[-1]), size=pred_shape[:-1])


LAYER_CASES = [
    pytest.param(Linear(3), id="linear"),
    pytest.param(Linear(5, bias=False), id="linear_no_bias"),
    pytest.param(Linear(1), id="linear_1"),
    pytest.param(Tanh(), id="tanh"),
    pytest.param(Sigmoid(), id="sigmoid"),
    pytest.param(ReLU(), id="relu"),
    pytest.param(LeakyReLU(), id="leaky_relu"),
    pytest.param(LeakyReLU(0.2), id="leaky_relu_0.2"),
    pytest.param(Softmax(), id="softmax"),
    pytest.param(Identity(), id="identity"),
]

PW, W = [0.5, 2.0, 3.0], [1.0, 0.25, 2.0]
LOSS_CASES = [
    pytest.param(BCEWithLogits(), id="bce"),
    pytest.param(BCEWithLogits(pos_weight=PW), id="bce_pos_weight"),
    pytest.param(BCEWithLogits(weight=W), id="bce_weight"),
    pytest.param(BCEWithLogits(pos_weight=PW, weight=W), id="bce_pos_weight_weight"),
    pytest.param(BCEWithLogits(pos_weight=PW, weight=W, reduction="sum"), id="bce_pos_weight_weight_sum"),
    pytest.param(CrossEntropy(), id="cross_entropy"),
    pytest.param(CrossEntropy(label_smoothing=0.1), id="cross_entropy_smoothing"),
    pytest.param(CrossEntropy(weight=W), id="cross_entropy_weight"),
    pytest.param(CrossEntropy(weight=W, label_smoothing=0.1), id="cross_entropy_weight_smoothing"),
    pytest.param(CrossEntropy(weight=W, label_smoothing=0.1, reduction="sum"), id="cross_entropy_sum"),
    pytest.param(CrossEntropyIgnoring(weight=W, label_smoothing=0.1), id="cross_entropy_ignored_sample"),
    pytest.param(CrossEntropyProbabilities(), id="cross_entropy_probabilities"),
    pytest.param(
        CrossEntropyProbabilities(weight=W, label_smoothing=0.2), id="cross_entropy_prob_weight_smooth"
    ),
    pytest.param(MSE(), id="mse"),
    pytest.param(MSE(reduction="sum"), id="mse_sum"),
    pytest.param(SumSquared(), id="sum_squared"),
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("layer", LAYER_CASES)
def test_builtin_layers_and_activations_pass_gradcheck(layer: Layer, seed: int) -> None:
    """Input and parameter gradients of each layer/activation agree with central differences."""
    result = gradcheck(layer, seed=seed)
    assert result.passed, result
    assert result.max_error <= TOL
    expected = {"input"} | {p.name for p in layer.parameters()}
    assert set(result.errors) == expected


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("loss", LOSS_CASES)
def test_builtin_losses_pass_gradcheck(loss: Loss, seed: int) -> None:
    """The gradient of Σ_r loss_r with respect to the prediction agrees with central differences."""
    result = gradcheck(loss, seed=seed)
    assert result.passed, result
    assert result.max_error <= TOL


class BadSquare(Layer):
    """y = x²  with a wrong backward (missing the factor 2)."""

    name = "bad_square"

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        """Square."""
        self.x = x
        return x * x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Wrong on purpose: dy·x instead of 2·dy·x."""
        return dy * self.x


class BadBiasGrad(Linear):
    """Linear whose bias gradient is the batch mean instead of the sum."""

    name = "bad_bias"

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Correct except for the bias."""
        self.weight.grad += np.matmul(dy.transpose(0, 2, 1), self.x)
        assert self.bias is not None
        self.bias.grad += dy.mean(axis=1)
        return np.matmul(dy, self.weight.value)


class BadBCE(BCEWithLogits):
    """BCE whose mean gradient forgets to divide by the number of elements."""

    def backward(self) -> np.ndarray:
        """σ(x) − y without the 1/numel."""
        return 1 / (1 + np.exp(-self.x)) - self.y


@pytest.mark.parametrize(
    "component, wrong",
    [
        pytest.param(BadSquare(), "input", id="wrong_input_grad"),
        pytest.param(BadBiasGrad(3), "bias", id="wrong_param_grad"),
        pytest.param(BadBCE(), "input", id="wrong_loss_grad"),
    ],
)
def test_wrong_backward_fails_gradcheck(component: Any, wrong: str) -> None:
    """A deliberately wrong backward is reported, on the tensor that is wrong."""
    result = gradcheck(component)
    assert not result.passed
    worst = max(result.errors, key=result.errors.get)  # type: ignore[arg-type]
    assert worst.endswith(wrong) and result.errors[worst] > 1e-2


def test_gradcheck_rejects_non_components() -> None:
    """Only layers, activations and losses can be gradchecked."""
    with pytest.raises(TypeError):
        gradcheck(Adam())  # type: ignore[arg-type]


class Composite(Layer):
    """Several layers behaving as one (so ``gradcheck_layer`` can check a whole network's parameters)."""

    name = "composite"

    def __init__(self, layers: list[Layer]) -> None:
        super().__init__()
        self.layers = layers

    def build(self, in_features: int) -> int:
        """Build the inner layers and adopt their parameters."""
        width = in_features
        for i, layer in enumerate(self.layers):
            layer._params = []
            width = layer.build(width)
            for p in layer.parameters():
                p.name = f"{i}.{p.name}"
                self._params.append(p)
        return width

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        """Inner layers in order."""
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Inner layers in reverse."""
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy


def test_whole_2531_network_as_one_layer_passes_gradcheck() -> None:
    """The composed 2-5-3-1 tanh network: input and all six parameter tensors."""
    net = Composite([Linear(5), Tanh(), Linear(3), Tanh(), Linear(1)])
    result = gradcheck_layer(net, in_features=2, batch=6, replicas=3)
    assert result.passed, result
    assert len(result.errors) == 7 and result.max_error <= TOL


def network_gradient_error(model: Sequential, x: np.ndarray, y: np.ndarray, h: float = 1e-6) -> float:
    """Max relative error (gradcheck's definition, per replica) of d(Σ_r BCE_r)/dθ against central differences
    over every entry of the model's ``(R, P)`` buffer."""
    buf = model.buffer
    assert buf is not None
    loss = BCEWithLogits()

    def f() -> float:
        return float(loss.forward(model.forward(x), y).sum())

    buf.zero_grad()
    loss.forward(model.forward(x), y)
    model.backward(loss.backward())
    analytic = buf.grad.copy()
    numeric = np.zeros_like(analytic)
    for r in range(buf.replicas):
        for i in range(buf.size):
            old = buf.value[r, i]
            buf.value[r, i] = old + h
            plus = f()
            buf.value[r, i] = old - h
            minus = f()
            buf.value[r, i] = old
            numeric[r, i] = (plus - minus) / (2 * h)
    assert np.allclose(analytic, numeric, rtol=1e-3, atol=1e-5)
    scale = np.maximum(np.maximum(np.abs(analytic).max(1), np.abs(numeric).max(1)), 1e-12)
    return float((np.abs(analytic - numeric).max(1) / scale).max())


@pytest.mark.parametrize("burn_in_epochs", [0, 30])
def test_whole_2531_network_with_bce_gradient(burn_in_epochs: int) -> None:
    """Network + BCE gradient at init and after a short Adam burn-in (3 replicas, every parameter)."""
    data = blobs(60)
    model = net_2531().build(2, [np.random.default_rng(s) for s in range(3)])
    if burn_in_epochs:
        before = model.buffer.value.copy()  # type: ignore[union-attr]
        train(
            model,
            Adam(lr=0.02),
            data,
            [np.random.default_rng(10 + s) for s in range(3)],
            epochs=burn_in_epochs,
            batch_size=20,
        )
        assert np.max(np.abs(model.buffer.value - before)) > 0.1  # type: ignore[union-attr]
    rng = np.random.default_rng(5)
    idx = np.stack([rng.choice(60, 16, replace=False) for _ in range(3)])
    error = network_gradient_error(model, data.x_train[idx], data.y_train[idx])
    assert error <= TOL, error


def test_gradcheck_loss_direct_on_extreme_but_finite_logits() -> None:
    """BCE stays differentiable-checkable at large logits (|x| ≈ 30), where naive log(σ) loses precision."""
    result = gradcheck_loss(BCEWithLogits(), seed=3, h=1e-6)
    assert result.passed
    loss = BCEWithLogits()
    pred = np.array([[[30.0], [-30.0], [25.0]]])
    target = np.array([[[0.0], [1.0], [0.3]]])
    loss.forward(pred, target)
    analytic = loss.backward()
    numeric = np.zeros_like(pred)
    for i in range(3):
        plus, minus = pred.copy(), pred.copy()
        plus[0, i, 0] += 1e-5
        minus[0, i, 0] -= 1e-5
        numeric[0, i, 0] = (loss.forward(plus, target) - loss.forward(minus, target))[0] / 2e-5
    np.testing.assert_allclose(analytic, numeric, rtol=1e-7)


def test_parameter_views_are_checked_in_place() -> None:
    """Harness sanity: editing a Parameter's value changes the layer's output (views, not copies)."""
    layer = Linear(2)
    model = Sequential([layer]).build(3, [np.random.default_rng(0)])
    x = np.ones((1, 1, 3))
    before = model.forward(x).copy()
    p: Parameter = layer.weight
    p.value[0, 0, 0] += 1.0
    assert model.forward(x)[0, 0, 0] == pytest.approx(before[0, 0, 0] + 1.0)


def test_zero_grad_skips_only_gradients_their_layer_writes() -> None:
    """``linear`` writes its gradients at the first backward after ``zero_grad`` (``writes_grad``), so the buffer
    leaves them alone; a parameter that backward adds into is cleared; a second step's gradients equal a
    fresh model's, with no trace of the first."""
    from expsvc.core.params import ParamBuffer

    class Scale(Layer):  # adds into its gradient: must be cleared by zero_grad
        name = "scale"

        def build(self, in_features: int) -> int:
            self.s = self.param("s", (in_features,), lambda rng, shape: np.ones(shape))
            return in_features

        def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
            self.x = x
            return x * self.s.value[:, None, :]

        def backward(self, dy: np.ndarray) -> np.ndarray:
            self.s.grad += (dy * self.x).sum(axis=1)
            return dy * self.s.value[:, None, :]

    def grads_after(steps: int) -> np.ndarray:
        model = Sequential([Linear(4), Scale(), Tanh(), Linear(1)]).build(3, [np.random.default_rng(5)])
        x, y = np.random.default_rng(1).normal(size=(1, 8, 3)), np.ones((1, 8, 1))
        loss = BCEWithLogits()
        for _ in range(steps):
            model.zero_grad()
            loss.forward(model.forward(x), y)
            model.backward_params(loss.backward())
        return model.buffer.grad.copy()  # type: ignore[union-attr]

    buf = ParamBuffer([Parameter("a", (2,), np.zeros, writes_grad=True), Parameter("b", (3,), np.zeros),
                       Parameter("c", (1,), np.zeros), Parameter("d", (2,), np.zeros, writes_grad=True)], 2)
    assert buf._clear == [(2, 6)]  # b and c, merged into one span
    buf.grad[...] = 7.0
    buf.zero_grad()
    np.testing.assert_array_equal(buf.grad, [[7, 7, 0, 0, 0, 0, 7, 7]] * 2)
    np.testing.assert_array_equal(grads_after(2), grads_after(1))
