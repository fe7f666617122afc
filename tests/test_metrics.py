"""The built-in metrics against hand-computed values, several replicas at once, and a brute-force
per-replica reference written from the definitions."""

from __future__ import annotations

import numpy as np
import pytest

from expsvc.builtins import metrics as m
from expsvc.builtins.losses import BCEWithLogits, CrossEntropy
from expsvc.core import Metric

ACC, PREC, REC, F1, MSE = m.Accuracy(), m.Precision(), m.Recall(), m.F1(), m.MeanSquaredError()

# ----------------------------------------------------------------------------------------- binary, R = 4

BIN_TARGET = np.array([1, 1, 1, 0, 0, 0, 1, 0], dtype=np.float64).reshape(-1, 1)  # (N, 1) as datasets
BIN_PRED = np.array(
    [
        [1, 1, 1, 0, 0, 0, 1, 0],  # perfect
        [1, 0, 1, 1, 0, 0, 0, 0],  # TP 2, FP 1, FN 2, TN 3
        [0, 0, 0, 0, 0, 0, 0, 0],  # no predicted positives: precision 0/0 -> 0
        [1, 1, 1, 1, 1, 1, 1, 1],  # everything positive
    ],
    dtype=np.int64,
)[..., None]  # (R, N, 1) as bce_with_logits predicts


def test_binary_hand_computed() -> None:
    np.testing.assert_allclose(ACC(BIN_PRED, BIN_TARGET), [1.0, 5 / 8, 4 / 8, 4 / 8])
    np.testing.assert_allclose(PREC(BIN_PRED, BIN_TARGET), [1.0, 2 / 3, 0.0, 4 / 8])
    np.testing.assert_allclose(REC(BIN_PRED, BIN_TARGET), [1.0, 2 / 4, 0.0, 1.0])
    np.testing.assert_allclose(F1(BIN_PRED, BIN_TARGET), [1.0, 4 / 7, 0.0, 2 / 3])


def test_binary_zero_division_is_zero() -> None:
    target = np.zeros((4, 1))
    pred = np.array([[0, 0, 0, 0], [0, 1, 0, 0]])[..., None]
    np.testing.assert_allclose(ACC(pred, target), [1.0, 0.75])
    for metric in (PREC, REC, F1):  # no actual positives: recall 0/0, F1 0/0 (and precision 0/0 or 0/1)
        np.testing.assert_array_equal(metric(pred, target), [0.0, 0.0])


def test_binary_accepts_int_targets_and_bool_predictions() -> None:
    pred = BIN_PRED.astype(bool)
    np.testing.assert_allclose(F1(pred, BIN_TARGET.astype(np.int64)), [1.0, 4 / 7, 0.0, 2 / 3])
    np.testing.assert_allclose(ACC(pred, BIN_TARGET.astype(np.int64)), [1.0, 5 / 8, 4 / 8, 4 / 8])


# ------------------------------------------------------------------------------------- multiclass, R = 3

MC_TARGET = np.array([0, 0, 1, 1, 2, 2], dtype=np.int64)  # (N,)
MC_PRED = np.array(
    [
        [0, 1, 1, 1, 2, 0],  # class 0: P 1/2 R 1/2; class 1: P 2/3 R 1; class 2: P 1 R 1/2
        [0, 0, 0, 0, 0, 0],  # class 0: P 2/6 R 1; classes 1, 2: never predicted (P 0/0 -> 0), R 0
        [3, 3, 1, 1, 2, 2],  # class 3 only predicted: it counts (P 0, R 0/0 -> 0); class 0: P 0/0, R 0
    ],
    dtype=np.int64,
)  # (R, N) as cross_entropy predicts


def test_multiclass_hand_computed_macro_average() -> None:
    np.testing.assert_allclose(ACC(MC_PRED, MC_TARGET), [4 / 6, 2 / 6, 4 / 6])
    np.testing.assert_allclose(PREC(MC_PRED, MC_TARGET), [(1 / 2 + 2 / 3 + 1) / 3, (2 / 6) / 3, 2 / 4])
    np.testing.assert_allclose(REC(MC_PRED, MC_TARGET), [(1 / 2 + 1 + 1 / 2) / 3, 1 / 3, 2 / 4])
    f1_class = [1 / 2, 2 * 2 / (3 + 2), 2 * 1 / (1 + 2)]  # 2·TP / (predicted + support) per class
    np.testing.assert_allclose(F1(MC_PRED, MC_TARGET), [sum(f1_class) / 3, (4 / 8) / 3, 2 / 4])


def test_multiclass_ignores_classes_absent_from_target_and_predictions() -> None:
    target = np.array([0, 0, 2, 2])
    pred = np.array([[0, 0, 2, 2], [0, 2, 2, 2]])
    np.testing.assert_allclose(PREC(pred, target), [1.0, (1 + 2 / 3) / 2])
    np.testing.assert_allclose(REC(pred, target), [1.0, (1 / 2 + 1) / 2])
    np.testing.assert_allclose(F1(pred, target), [1.0, (2 / 3 + 4 / 5) / 2])


def test_multiclass_rejects_negative_class_indices() -> None:
    with pytest.raises(ValueError, match="class indices must be >= 0"):
        PREC(np.array([[0, -1]]), np.array([0, 1]))


# ------------------------------------------------------------------------------------- regression, R = 3


def test_mse_hand_computed() -> None:
    target = np.array([[0.0, 0.0], [1.0, 2.0], [3.0, -1.0]])  # (N, D)
    pred = np.stack([target, target + np.array([[1, 0], [0, 0], [0, -2]]), np.zeros_like(target)])  # (R, N, D)
    np.testing.assert_allclose(MSE(pred, target), [0.0, (1 + 4) / 6, (1 + 4 + 9 + 1) / 6])


# ------------------------------------------------------------------------------------------------ general


def _reference(pred: np.ndarray, target: np.ndarray, kind: str) -> np.ndarray:
    """Per replica, per sample, straight from the definitions (scikit-learn's with zero_division=0)."""
    out = []
    for p in pred:
        p, t = p.ravel().tolist(), target.ravel().tolist()
        labels = [1] if target.ndim == 2 else sorted(set(p) | set(t))
        scores = []
        for c in labels:
            tp = sum(1 for a, b in zip(p, t, strict=True) if a == c and b == c)
            fp = sum(1 for a, b in zip(p, t, strict=True) if a == c and b != c)
            fn = sum(1 for a, b in zip(p, t, strict=True) if a != c and b == c)
            num, den = {"precision": (tp, tp + fp), "recall": (tp, tp + fn), "f1": (2 * tp, 2 * tp + fp + fn)}[kind]
            scores.append(num / den if den else 0.0)
        out.append(sum(scores) / len(scores))
    return np.array(out)


@pytest.mark.parametrize("seed", range(20))
def test_vectorised_equals_per_sample_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    replicas, n, classes = int(rng.integers(1, 6)), int(rng.integers(1, 40)), int(rng.integers(2, 6))
    cases = [
        (rng.integers(0, 2, (replicas, n, 1)), rng.integers(0, 2, (n, 1)).astype(np.float64)),
        (rng.integers(0, classes, (replicas, n)), rng.integers(0, classes, n)),
    ]
    for pred, target in cases:
        np.testing.assert_allclose(ACC(pred, target), (pred == target).reshape(replicas, -1).mean(axis=1))
        for metric in (PREC, REC, F1):
            np.testing.assert_allclose(metric(pred, target), _reference(pred, target, metric.name))
        # replica r's value depends only on replica r's predictions
        np.testing.assert_allclose(F1(pred[-1:], target), F1(pred, target)[-1:])


def test_works_on_loss_predictions() -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 10, 1))
    target = (rng.uniform(size=(10, 1)) > 0.5).astype(np.float64)
    pred = BCEWithLogits().predict(logits)
    np.testing.assert_allclose(ACC(pred, target), ((logits > 0) == target).mean(axis=(1, 2)))
    scores = rng.standard_normal((3, 10, 4))
    labels = rng.integers(0, 4, 10)
    np.testing.assert_allclose(ACC(CrossEntropy().predict(scores), labels), (scores.argmax(-1) == labels).mean(1))


@pytest.mark.parametrize("metric", [ACC, PREC, REC, F1, MSE])
def test_shape_mismatch_is_a_clear_error(metric: Metric) -> None:
    with pytest.raises(ValueError, match=rf"{metric.name}: predictions of shape \(4, 1\) do not fit targets"):
        metric(np.zeros((4, 1)), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="leading replica axis"):
        metric(np.zeros((2, 5)), np.zeros((4,)))


def test_registration_names_and_tasks() -> None:
    registered: list[type] = []
    m.register_metrics(registered.append)
    assert {cls.name: cls.tasks for cls in registered} == {
        "accuracy": ("binary", "multiclass"),
        "precision": ("binary", "multiclass"),
        "recall": ("binary", "multiclass"),
        "f1": ("binary", "multiclass"),
        "mse": ("regression",),
    }
    assert all(issubclass(cls, Metric) for cls in registered)
    assert ACC(BIN_PRED, BIN_TARGET).shape == (4,) and MSE(np.zeros((2, 3, 1)), np.ones((3, 1))).dtype == float


# ------------------------------------------------------------- every loss × every metric that is defined
def _targets(task: str) -> np.ndarray:
    """Targets as the datasets of ``task`` hold them: binary 0/1 ``(N, 1)`` floats, class indices ``(N,)``,
    regression ``(N, 2)`` floats."""
    rng = np.random.default_rng(0)
    if task == "binary":
        return rng.integers(0, 2, size=(24, 1)).astype(np.float64)
    if task == "multiclass":
        return np.arange(24) % 3
    return rng.standard_normal((24, 2))


def _fitted_outputs(loss: object, y: np.ndarray, task: str) -> np.ndarray:
    """Outputs ``(2, N, O)`` that (nearly) minimise ``loss`` on ``y``, found by descending the loss's own
    ``backward`` from zero: what a perfectly trained model would output."""
    outputs = 3 if task == "multiclass" else y.shape[1]
    shape = (2, y.shape[0], outputs)
    sample = loss.sample_input(np.random.default_rng(0), shape)  # type: ignore[attr-defined]
    probabilities = bool(np.all((sample > 0) & (sample < 1)))  # a loss on probabilities (bce) stays in (0, 1)
    out = np.full(shape, 0.5 if probabilities else 0.0)
    target = np.broadcast_to(y, (2, *y.shape))
    for t in range(300):
        loss.forward(out, target)  # type: ignore[attr-defined]
        g = loss.backward()  # type: ignore[attr-defined]
        out -= (0.5 / (1 + 0.05 * t)) * g / (np.abs(g).max() + 1e-12)
        if probabilities:
            out = np.clip(out, 1e-6, 1 - 1e-6)
    return out


def test_every_loss_with_every_metric_of_its_tasks_scores_a_perfect_model() -> None:
    """Generated from the registry: each loss, on each dataset task the runner lets it train on (its own task;
    a regression loss also on binary targets), with each metric of that task.  A model whose outputs minimise
    the loss must get accuracy, precision, recall and F1 of 1 and an MSE near 0 — ``mse`` on binary moons used
    to compare float predictions with 0/1 labels and score 0."""
    from expsvc.plugins import get_system

    system = get_system()
    checked = set()
    for loss_name in system.registry.names("loss"):
        loss = system.registry.resolve("loss", loss_name).cls()
        own = loss.task
        for task in ("binary", "multiclass", "regression"):
            if task != own and not (own == "regression" and task != "multiclass"):  # as runner.build.check
                continue
            y = _targets(task)
            pred = loss.predict(_fitted_outputs(loss, y, task))
            for metric_name in system.registry.names("metric"):
                metric = system.registry.resolve("metric", metric_name).cls()
                if task not in metric.tasks:
                    continue
                got = metric(pred, y)
                if metric.name == "mse":
                    np.testing.assert_allclose(got, 0.0, atol=1e-2, err_msg=f"{loss_name} × {metric_name}")
                else:
                    np.testing.assert_allclose(got, 1.0, err_msg=f"{loss_name} × {metric_name} on {task}")
                checked.add((loss_name, metric_name, task))
    assert {("mse", "accuracy", "binary"), ("mse", "f1", "binary"), ("cross_entropy", "recall", "multiclass")
            } <= checked


def test_float_predictions_for_class_indices_are_refused() -> None:
    with pytest.raises(ValueError, match="class indices"):
        ACC(np.zeros((1, 4)), np.arange(4))
