"""Built-in losses, following torch's definitions.  ``pred`` is ``(R, B, O)``; each returns ``(R,)``.

Reductions are per replica: ``mean`` divides by that replica's number of elements (or total class
weight for ``cross_entropy``), ``sum`` does not.  ``backward`` is the gradient of ``Σ_r loss_r``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from expsvc.core.loss import Loss
from expsvc.hookspecs import hookimpl

REDUCTIONS = ("mean", "sum")


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    return reduction


def _check_same_shape(pred: np.ndarray, target: np.ndarray, name: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"{name}: the model outputs shape {pred.shape[1:]} per batch but the target has "
            f"{target.shape[1:]}; they must be identical"
        )


_WEIGHTS: dict[tuple[int, np.dtype, bool], np.ndarray] = {}


def _per_replica(a: np.ndarray, mean: bool = False) -> np.ndarray:
    """``(R, ...) → (R,)``: each replica's sum (or mean) as a dot product with a ones (or ``1/n``) vector.

    One BLAS dot per replica: at batch 50 ``ndarray.dot`` takes ~0.8 µs against ~2 µs for ``add.reduce``
    followed by a division (it rounds differently, by ~1e-16 relative).  With several replicas the stacked
    ``matmul`` makes the same dot call for each row, so a replica's value does not depend on R (a single
    matrix–vector product would use a blocked kernel whose rounding does).
    """
    rows = a.reshape(a.shape[0], -1)
    key = (rows.shape[1], rows.dtype, mean)
    weights = _WEIGHTS.get(key)
    if weights is None:
        if len(_WEIGHTS) > 64:  # many distinct batch sizes: start over rather than grow
            _WEIGHTS.clear()
        weights = _WEIGHTS[key] = np.full(key[0], 1.0 / key[0] if mean else 1.0, dtype=rows.dtype)
    if rows.shape[0] == 1:
        return rows.dot(weights)
    return np.matmul(rows[:, None, :], weights)[:, 0]


def _weighted(grad: np.ndarray, weight: np.ndarray | None, reduction: str) -> np.ndarray:
    """``grad`` times the element ``weight`` (if any), divided by the elements per replica for ``mean``
    (in place)."""
    if weight is not None:
        grad *= weight.astype(grad.dtype, copy=False)
    if reduction == "mean":
        grad /= float(grad.size // grad.shape[0])
    return grad


def _optional_array(value: float | Sequence[float] | None) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=np.float64)


class BCEWithLogits(Loss):
    """torch ``BCEWithLogitsLoss``: ``l = (1−y)·x − (1 + (p−1)·y)·logσ(x)`` (times ``weight``), with
    ``logσ(x) = min(x,0) − log1p(e^−|x|)`` — finite for logits of ±1000.

    Gradient: ``σ(x) − y``, or ``(p·y + 1 − y)·σ(x) − p·y`` with ``pos_weight``; times ``weight``;
    divided by the number of elements for ``mean``.  Predictions: ``x > 0``.
    """

    name = "bce_with_logits"
    task = "binary"

    def __init__(
        self,
        pos_weight: float | Sequence[float] | None = None,
        reduction: str = "mean",
        weight: float | Sequence[float] | None = None,
    ) -> None:
        self.pos_weight = _optional_array(pos_weight)
        self.weight = _optional_array(weight)
        self.reduction = _check_reduction(reduction)

    def forward(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Per-replica loss ``(R,)``; caches ``softplus(x) = log(1 + eˣ)`` for backward.

        ``softplus(x) = logaddexp(0, x)`` is one stable ufunc (``max(0, x) + log1p(e^−|x|)``, the operations
        of torch's ``logσ``).  Since ``−logσ(x) = softplus(x) − x``, the unweighted loss is simply
        ``softplus(x) − x·y``: three ufunc calls instead of the eight of the textbook form.
        """
        if pred.shape != target.shape:
            _check_same_shape(pred, target, self.name)
        self.x, self.y = pred, target
        softplus = self.softplus = np.logaddexp(0.0, pred)
        if self.pos_weight is None:
            loss = np.multiply(pred, target)
            np.subtract(softplus, loss, out=loss)
        else:  # (1 − y)·x − (1 + (p − 1)·y)·logσ(x), with −logσ(x) = softplus(x) − x
            log_weight = (self.pos_weight.astype(pred.dtype, copy=False) - 1) * target + 1
            loss = (1 - target) * pred + log_weight * (softplus - pred)
        if self.weight is not None:
            loss *= self.weight.astype(pred.dtype, copy=False)
        return _per_replica(loss, mean=self.reduction == "mean")

    def backward(self) -> np.ndarray:
        """Gradient ``(R, B, O)`` of the summed loss, with ``σ(x) = exp(x − softplus(x))`` from the forward
        pass: two ufunc calls, and the exponent is ≤ 0, so nothing overflows and the hot path needs no
        error-state switching."""
        x, y = self.x, self.y
        grad = np.subtract(x, self.softplus)
        np.exp(grad, out=grad)
        if self.pos_weight is not None:
            t = self.pos_weight.astype(grad.dtype, copy=False) * y
            grad *= t + 1 - y
            grad -= t
        else:
            grad -= y
        return _weighted(grad, self.weight, self.reduction)

    def predict(self, out: np.ndarray) -> np.ndarray:
        return (out > 0).astype(np.int64)

    def sample_target(self, rng: np.random.Generator, pred_shape: tuple[int, ...]) -> np.ndarray:
        """Soft binary targets in ``[0, 1]``."""
        return rng.uniform(0.0, 1.0, size=pred_shape)


class BCE(Loss):
    """torch ``BCELoss`` on probabilities ``x ∈ [0, 1]`` (after a ``sigmoid``):
    ``l = −w·(y·log x + (1 − y)·log(1 − x))`` with each log clamped at ``−100`` (torch's clamp, so ``x = 0``
    or ``1`` gives a finite loss), mean or sum per replica.

    Gradient (torch's): ``w·(x − y) / max((1 − x)·x, 1e-12)``, divided by the number of elements for
    ``mean``.  Predictions: ``x > 0.5``.  Inputs outside ``[0, 1]`` are refused, as torch does.
    ``bce_with_logits`` is the numerically better choice; this one exists for models that end in ``sigmoid``.
    """

    name = "bce"
    task = "binary"
    EPSILON = 1e-12

    def __init__(self, weight: float | Sequence[float] | None = None, reduction: str = "mean") -> None:
        self.weight = _optional_array(weight)
        self.reduction = _check_reduction(reduction)

    def forward(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        _check_same_shape(pred, target, self.name)
        if np.any((pred < 0) | (pred > 1)):  # NaN passes: a diverged model ends as "diverged", not failed
            raise ValueError(f"{self.name}: inputs must be probabilities in [0, 1] (end the model with 'sigmoid', "
                             "or use 'bce_with_logits' on logits)")
        self.x, self.y = pred, target
        with np.errstate(divide="ignore"):
            log_x = np.maximum(np.log(pred), -100.0)
            log_1mx = np.maximum(np.log1p(-pred), -100.0)
        loss = -(target * log_x + (1 - target) * log_1mx)
        if self.weight is not None:
            loss *= self.weight.astype(pred.dtype, copy=False)
        return _per_replica(loss, mean=self.reduction == "mean")

    def backward(self) -> np.ndarray:
        x, y = self.x, self.y
        grad = (x - y) / np.maximum((1 - x) * x, self.EPSILON)
        return _weighted(grad, self.weight, self.reduction)

    def predict(self, out: np.ndarray) -> np.ndarray:
        return (out > 0.5).astype(np.int64)

    def sample_input(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return rng.uniform(0.05, 0.95, size=shape)

    sample_target = BCEWithLogits.sample_target


class MSE(Loss):
    """torch ``MSELoss``: ``mean((x − y)²)``; gradient ``(2/n)·(x − y)``."""

    name = "mse"
    task = "regression"

    def __init__(self, reduction: str = "mean") -> None:
        self.reduction = _check_reduction(reduction)

    def forward(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        _check_same_shape(pred, target, self.name)
        self.diff = pred - target
        return _per_replica(self.diff * self.diff, mean=self.reduction == "mean")

    def backward(self) -> np.ndarray:
        d = self.diff
        scale = 2.0 / (d.size // d.shape[0]) if self.reduction == "mean" else 2.0
        return scale * d


class SumSquared(Loss):
    """The seed experiments' loss: ``Σ (ŷ − y)²`` (summed, not averaged); gradient ``2(ŷ − y)``."""

    name = "sum_squared"
    task = "regression"

    def forward(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        _check_same_shape(pred, target, self.name)
        self.diff = pred - target
        return _per_replica(self.diff * self.diff)

    def backward(self) -> np.ndarray:
        return 2.0 * self.diff


class CrossEntropy(Loss):
    """torch ``CrossEntropyLoss`` on logits ``(R, B, C)``.

    Class-index targets ``(R, B)``: with ``lp = log_softmax(x)``, ``nll_i = −w_{y_i}·lp[i, y_i]`` and
    ``smooth_i = −Σ_c w_c·lp[i, c]`` (both zero where ``y_i = ignore_index``); ``mean`` divides both by
    ``D = Σ_i w_{y_i}``; ``loss = (1−ε)·NLL + (ε/C)·SMOOTH``.  All targets ignored gives NaN and a zero
    gradient, as in torch.
    Probability targets ``(R, B, C)``: ``y ← y(1−ε) + ε/C``, ``l_i = −Σ_c w_c·y_ic·lp_ic``, mean over B.
    Gradient (indices): ``[(1−ε)(p − onehot)·w_y + (ε/C)(p·Σ_c w_c − w)]·mask / D``.
    """

    name = "cross_entropy"
    task = "multiclass"

    def __init__(
        self,
        weight: Sequence[float] | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        self.weight = _optional_array(weight)
        self.ignore_index = int(ignore_index)
        self.reduction = _check_reduction(reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
        self.eps = float(label_smoothing)

    def _log_softmax(self, x: np.ndarray) -> np.ndarray:
        """``x − max − log Σ exp(x − max)`` over the classes (torch's order of operations)."""
        shifted = x - np.maximum.reduce(x, axis=-1, keepdims=True)
        return shifted - np.log(np.add.reduce(np.exp(shifted), axis=-1, keepdims=True))

    def forward(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        classes = pred.shape[-1]
        # Weights in the prediction's dtype: a float64 weight would promote the loss, its gradient and so
        # the whole backward pass of a float32 model to float64 (twice the time in every matmul).
        w = np.ones(classes, pred.dtype) if self.weight is None else self.weight.astype(pred.dtype, copy=False)
        if w.shape != (classes,):
            raise ValueError(f"{self.name}: weight has {w.shape[0]} entries but the model outputs {classes} classes")
        lp = self._log_softmax(pred)
        self.lp, self.w, self.target = lp, w, target
        if target.dtype.kind in "iu":
            if target.shape != pred.shape[:-1]:
                raise ValueError(f"{self.name}: class-index target shape {target.shape} does not fit {pred.shape}")
            mask = target != self.ignore_index
            idx = np.where(mask, target, 0)
            # One test for both bounds: negative indices wrap to huge unsigned values.
            if np.any(idx.astype(np.uint64) >= classes):
                raise ValueError(f"{self.name}: class indices must be in [0, {classes - 1}]")
            # Positions of each sample's target class in lp's flat view: plain indexing instead of
            # take/put_along_axis (which cost ~10 µs of index building per call).
            flat = idx.ravel() + classes * np.arange(idx.size)
            wy = w[idx] * mask
            nll = -lp.reshape(-1)[flat].reshape(idx.shape) * wy
            total = (1 - self.eps) * np.add.reduce(nll, axis=1)
            if self.eps:
                smooth = -(lp * w).sum(axis=-1) * mask
                total = total + (self.eps / classes) * smooth.sum(axis=1)
            self.mask, self.idx, self.wy, self.flat = mask, idx, wy, flat
            self.denom = np.add.reduce(wy, axis=1) if self.reduction == "mean" else np.ones(pred.shape[0], pred.dtype)
            return total / self.denom
        _check_same_shape(pred, target, self.name)
        t = target * (1 - self.eps) + self.eps / classes if self.eps else target
        self.soft = t
        total = -(w * t * lp).sum(axis=-1).sum(axis=1)
        self.denom = np.full(pred.shape[0], pred.shape[1] if self.reduction == "mean" else 1.0, pred.dtype)
        return total / self.denom

    def backward(self) -> np.ndarray:
        lp, w = self.lp, self.w
        p = np.exp(lp)
        classes = lp.shape[-1]
        if self.target.dtype.kind in "iu":
            diff = p.copy() if self.eps else p
            diff.reshape(-1)[self.flat] -= 1  # p − onehot (each sample's index once: no repeated positions)
            if self.eps:
                diff *= 1 - self.eps
            grad = diff * self.wy[..., None]
            if self.eps:
                grad += (self.eps / classes) * (p * w.sum() - w) * self.mask[..., None]
            # A replica whose targets are all ignored has loss 0/0 = NaN (as in torch) but gradient 0
            # (torch's too): its numerator is exactly 0, so divide it by 1 instead of 0.
            denom = np.where(self.mask.any(axis=1), self.denom, 1)
            return grad / denom[:, None, None]
        wt = w * self.soft
        grad = p * wt.sum(axis=-1, keepdims=True) - wt
        return grad / self.denom[:, None, None]

    def predict(self, out: np.ndarray) -> np.ndarray:
        return out.argmax(axis=-1)

    def sample_target(self, rng: np.random.Generator, pred_shape: tuple[int, ...]) -> np.ndarray:
        return rng.integers(0, pred_shape[-1], size=pred_shape[:-1])


@hookimpl
def register_losses(register) -> None:
    for cls in (BCEWithLogits, BCE, MSE, SumSquared, CrossEntropy):
        register(cls)
