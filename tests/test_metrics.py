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
