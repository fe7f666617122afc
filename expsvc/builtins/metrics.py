"""Built-in metrics, one value per replica, vectorised over replicas and samples.

``pred`` is what :meth:`Loss.predict` returns, with a leading replica axis: int labels ``(R, N, 1)`` for
binary tasks (``bce_with_logits``), int class indices ``(R, N)`` for multiclass (``cross_entropy``), outputs
``(R, N, D)`` for regression.  ``target`` is the dataset's array without the replica axis: float 0/1
``(N, 1)``, int ``(N,)`` or float ``(N, D)``.  Every metric returns float64 ``(R,)``.

Classification metrics compare *labels*.  A loss for regression targets (``mse``, ``sum_squared``) trained on
binary 0/1 targets predicts numbers, not labels: its prediction ``p`` estimates P(y = 1), and the label is
``p > 0.5`` (the decision rule of a least-squares classifier).  :func:`labels` turns such predictions into
labels before any comparison, so accuracy is never a float compared with an integer.  Float predictions for
class indices (a ``(N,)`` target) have no such rule and are refused.

Precision, recall and F1 follow scikit-learn with ``zero_division=0``: a ratio whose denominator is 0
(no predicted positives for precision, no actual positives for recall, neither for F1) counts as 0.0.
Binary: the positive class is 1.  Multiclass: the macro average over the classes that occur in the target
or in that replica's predictions (scikit-learn's default label set), each class weighted equally.
"""

from __future__ import annotations

import numpy as np

from expsvc.core.metric import Metric
from expsvc.hookspecs import hookimpl


def _check(name: str, pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``pred`` as an array ``(R, *target.shape)`` and ``target``; a ValueError names mismatched shapes."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.ndim != target.ndim + 1 or pred.shape[1:] != target.shape:
        raise ValueError(
            f"{name}: predictions of shape {pred.shape} do not fit targets of shape {target.shape}; "
            "expected predictions (R, *target.shape) with a leading replica axis"
        )
    return pred, target


def labels(name: str, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``pred`` as integer labels: unchanged if they already are; floats for a binary ``(N, K)`` target become
    ``pred > 0.5``; floats for class indices are a ValueError naming the metric."""
    pred = np.asarray(pred)
    if pred.dtype.kind in "iub":
        return pred
    if np.asarray(target).ndim >= 2:
        return (pred > 0.5).astype(np.int64)
    raise ValueError(f"{name}: predictions are numbers (dtype {pred.dtype}) but the target holds class "
                     "indices; use a classification loss such as cross_entropy")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` element-wise, 0.0 where ``den == 0``."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def _binary_counts(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, predicted positives and actual positives per replica, each ``(R,)``."""
    r = pred.shape[0]
    p = (pred == 1).reshape(r, -1)
    t = (target == 1).reshape(-1)
    tp = (p & t).sum(axis=1)
    return tp, p.sum(axis=1), np.full(r, t.sum())


def _class_counts(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per replica and class ``(R, C)``: true positives, predicted count and actual count (support).

    Class indices must be non-negative integers; ``C`` is one more than the largest index seen.
    """
    r = pred.shape[0]
    p = pred.reshape(r, -1).astype(np.int64)
    t = target.reshape(-1).astype(np.int64)
    if p.min(initial=0) < 0 or t.min(initial=0) < 0:
        raise ValueError("class indices must be >= 0")
    c = int(max(p.max(initial=-1), t.max(initial=-1))) + 1
    offset = (np.arange(r, dtype=np.int64) * c)[:, None]
    predicted = np.bincount((p + offset).ravel(), minlength=r * c).reshape(r, c)
    hit = p == t
    tp = np.bincount((p + offset)[hit], minlength=r * c).reshape(r, c)
    support = np.broadcast_to(np.bincount(t, minlength=c), (r, c))
    return tp, predicted, support


def _macro(per_class: np.ndarray, predicted: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Mean ``(R,)`` of ``per_class (R, C)`` over the classes present in the target or the predictions."""
    present = (predicted > 0) | (support > 0)
    return _ratio((per_class * present).sum(axis=1), present.sum(axis=1))


class Accuracy(Metric):
    """Fraction of predictions equal to the target: binary ``(R, N, 1)`` vs ``(N, 1)``, multiclass
    ``(R, N)`` vs ``(N,)``; returns ``(R,)``."""

    name = "accuracy"
    tasks = ("binary", "multiclass")

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        pred, target = _check(self.name, pred, target)
        pred = labels(self.name, pred, target)
        r = pred.shape[0]
        if target.size == 0:
            return np.full(r, np.nan)
        return (pred == target).reshape(r, -1).mean(axis=1)


class _ClassMetric(Metric):
    """Precision-style metrics.  A target ``(N, 1)`` (or ``(N, K)``) is binary: every element is a sample,
    the positive class is 1.  A target ``(N,)`` holds class indices: macro average over classes."""

    tasks = ("binary", "multiclass")

    def score(self, tp: np.ndarray, predicted: np.ndarray, support: np.ndarray) -> np.ndarray:
        """The metric from counts of any shape (``(R,)`` or ``(R, C)``), 0.0 for 0/0."""
        raise NotImplementedError

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        pred, target = _check(self.name, pred, target)
        pred = labels(self.name, pred, target)
        if target.ndim == 1:
            tp, predicted, support = _class_counts(pred, target)
            return _macro(self.score(tp, predicted, support), predicted, support)
        return self.score(*_binary_counts(pred, target))


class Precision(_ClassMetric):
    """``TP / (TP + FP)`` per replica ``(R,)``: of the predicted positives, the fraction that are positive
    (0.0 when nothing is predicted positive); multiclass: macro average."""

    name = "precision"

    def score(self, tp: np.ndarray, predicted: np.ndarray, support: np.ndarray) -> np.ndarray:
        return _ratio(tp, predicted)


class Recall(_ClassMetric):
    """``TP / (TP + FN)`` per replica ``(R,)``: of the actual positives, the fraction predicted positive
    (0.0 when there are none); multiclass: macro average."""

    name = "recall"

    def score(self, tp: np.ndarray, predicted: np.ndarray, support: np.ndarray) -> np.ndarray:
        return _ratio(tp, support)


class F1(_ClassMetric):
    """``2·TP / (2·TP + FP + FN)`` (the harmonic mean of precision and recall) per replica ``(R,)``, 0.0
    when there are neither predicted nor actual positives; multiclass: macro average of per-class F1."""

    name = "f1"

    def score(self, tp: np.ndarray, predicted: np.ndarray, support: np.ndarray) -> np.ndarray:
        return _ratio(2 * tp, predicted + support)


class MeanSquaredError(Metric):
    """``mean((pred − target)²)`` over samples and outputs: ``(R, N, D)`` vs ``(N, D)`` -> ``(R,)``."""

    name = "mse"
    tasks = ("regression",)

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        pred, target = _check(self.name, pred, target)
        r = pred.shape[0]
        if target.size == 0:
            return np.full(r, np.nan)
        diff = pred.astype(np.float64) - target.astype(np.float64)
        return (diff * diff).reshape(r, -1).mean(axis=1)


ALL = (Accuracy, Precision, Recall, F1, MeanSquaredError)


@hookimpl
def register_metrics(register) -> None:
    for cls in ALL:
        register(cls)
