"""Built-in layers with parameters."""

from __future__ import annotations

import math

import numpy as np

from expsvc.core.layer import Layer
from expsvc.hookspecs import hookimpl


def uniform_init(bound: float):
    """``U(-bound, bound)`` drawn from the replica's generator."""

    def init(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return rng.uniform(-bound, bound, size=shape)

    return init


def normal_init(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal values (the seed experiments' ``randn`` weights)."""
    return rng.standard_normal(size=shape)


def constant_init(value: float):
    """Every entry equal to ``value`` (the seed experiments' "w starts at 1.0")."""

    def init(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return np.full(shape, value, dtype=np.float64)

    return init




class Linear(Layer):
    """Affine map ``y = x Wᵀ + b`` (torch ``nn.Linear``).

    Shapes: ``x (R, B, in)``, ``W (R, out, in)``, ``b (R, out)``, ``y (R, B, out)``.
    Init (``init``): ``"uniform"`` (default) draws ``W`` and ``b`` independently from ``U(-1/√in, 1/√in)``,
    torch's default; ``"normal"`` draws standard normal values; a number sets every entry to it.
    Backward: ``dW = dyᵀ x``, ``db = Σ_B dy``, ``dx = dy W`` (per replica).
    """

    name = "linear"

    def __init__(self, out_features: int, bias: bool = True, init: str | float = "uniform") -> None:
        super().__init__()
        if isinstance(out_features, bool) or not isinstance(out_features, int) or out_features < 1:
            raise ValueError(f"out_features must be a positive integer, got {out_features!r}")
        numeric = isinstance(init, int | float) and not isinstance(init, bool) and math.isfinite(init)
        if not numeric and init not in ("uniform", "normal"):
            raise ValueError(f"init must be 'uniform', 'normal' or a finite number, got {init!r}")
        self.out_features = out_features
        self.use_bias = bool(bias)
        self.init = init

    def build(self, in_features: int) -> int:
        if self.init == "uniform":
            init = uniform_init(1.0 / math.sqrt(in_features))
        elif self.init == "normal":
            init = normal_init
        else:
            init = constant_init(float(self.init))
        # _param_grads writes dW and db at the first backward after zero_grad: zero_grad skips them
        self.weight = self.param("weight", (self.out_features, in_features), init, writes_grad=True)
        self.bias = self.param("bias", (self.out_features,), init, writes_grad=True) if self.use_bias else None
        return self.out_features

    _views: tuple[np.ndarray, ...] | None = None
    _ones: np.ndarray | None = None

    def _make_views(self) -> tuple[np.ndarray, ...]:
        """``(W, Wᵀ (R, in, out), b (R, 1, out), db (R, 1, out))`` (the last two ``None`` without bias).

        These are views of the parameter buffer, made once per build: the optimizer updates the buffer in
        place, so they stay current, and a (re)build assigns new arrays to every parameter at once, which
        :meth:`forward` notices by the weight array's identity.  Re-creating them on every call would cost
        ~0.2 µs each on the hot path.
        """
        w, bias = self.weight.value, self.bias
        if bias is None:
            self._views = (w, w.transpose(0, 2, 1), None, None)
        else:
            self._views = (w, w.transpose(0, 2, 1), bias.value[:, None, :], bias.grad[:, None, :])
        # Stacked (R > 1) matmuls with a transposed operand take numpy's slow path (~2x at R = 5): those
        # replicas multiply by a contiguous copy of Wᵀ, refreshed every forward.
        self._wt_copy = np.empty(self._views[1].shape, w.dtype) if w.shape[0] > 1 else None
        return self._views

    _wt_copy: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        """``x (R, B, in) → x Wᵀ + b (R, B, out)``; caches ``x`` for backward."""
        self.x = x
        views = self._views
        if views is None or views[0] is not self.weight.value:
            views = self._make_views()
        wt = self._wt_copy
        if wt is None:
            wt = views[1]
        else:
            np.copyto(wt, views[1])
        y = np.matmul(x, wt)
        if views[2] is not None:
            y += views[2]
        return y

    _zero_count = -1  # the buffer's zero_count at this layer's last backward

    def _param_grads(self, dy: np.ndarray) -> None:
        """Add ``dW = dyᵀ x`` and ``db = Σ_B dy`` into the gradients.

        The first backward since the buffer's ``zero_grad`` writes them instead (``out=``): they are zero
        then, and this layer is their only writer, so the numbers are the same with one call less each.
        ``db`` is the product ``1ᵀ dy`` with a ones row ``(1, 1, B)``: one BLAS call, about half the time
        of ``dy.sum(axis=1)`` (a strided reduction) at the seed net's sizes.
        """
        dw, db = self.weight.grad, self._views[3]  # type: ignore[index]
        if db is not None:
            ones = self._ones
            if ones is None or ones.shape[2] != dy.shape[1] or ones.dtype != dy.dtype:
                ones = self._ones = np.ones((1, 1, dy.shape[1]), dtype=dy.dtype)
        buffer = self.weight.buffer
        if buffer is not None and buffer.zero_count != self._zero_count:
            self._zero_count = buffer.zero_count
            np.matmul(dy.transpose(0, 2, 1), self.x, out=dw)
            if db is not None:
                np.matmul(ones, dy, out=db)
        else:
            dw += np.matmul(dy.transpose(0, 2, 1), self.x)
            if db is not None:
                db += np.matmul(ones, dy)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Add the parameter gradients; return ``dx = dy W (R, B, in)``."""
        self._param_grads(dy)
        return np.matmul(dy, self._views[0])  # type: ignore[index]

    def backward_params(self, dy: np.ndarray) -> None:
        """Parameter gradients only: as the model's first layer, ``dx`` (one matmul) is not needed."""
        self._param_grads(dy)

    def __repr__(self) -> str:
        extra = ("" if self.use_bias else ", bias=False") + ("" if self.init == "uniform" else f", init={self.init!r}")
        return f"Linear({self.out_features}{extra})"


@hookimpl
def register_layers(register) -> None:
    register(Linear)
