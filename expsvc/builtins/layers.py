"""Built-in layers: ``linear`` (flat inputs) and the shaped layers of images — ``conv2d``, ``max_pool2d``,
``avg_pool2d``, ``flatten``, ``dropout`` and ``batch_norm`` — with torch's semantics, defaults and init.

Images are NCHW: per-sample shape ``(C, H, W)``, arrays ``(R, B, C, H, W)``.  Every operation acts within a
replica (stacked matmuls, reductions along one replica's contiguous rows), so a replica's numbers do not
depend on how many replicas train with it.
"""

from __future__ import annotations

import math

import numpy as np

from expsvc.core.layer import Layer, Shape, ShapeError, fmt_shape
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
        # Every R multiplies by a contiguous copy of Wᵀ, refreshed every forward: stacked (R > 1) matmuls
        # with a transposed operand take numpy's slow path (~2x at R = 5), and BLAS's transposed and plain
        # kernels round differently once ``in`` is large (64 here), so R = 1 must take the same layout as
        # R = 5 for a replica to equal its run alone bit for bit.
        self._wt_copy = np.empty(self._views[1].shape, w.dtype)
        return self._views

    _wt_copy: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        """``x (R, B, in) → x Wᵀ + b (R, B, out)``; caches ``x`` for backward."""
        self.x = x
        views = self._views
        if views is None or views[0] is not self.weight.value:
            views = self._make_views()
        wt = self._wt_copy
        assert wt is not None
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


# ------------------------------------------------------------------------------------------ shaped layers


def _pair(name: str, value: int | tuple[int, int] | list[int], minimum: int) -> tuple[int, int]:
    """``3 → (3, 3)``; ``(3, 2)`` stays; anything else (or below ``minimum``) is a ValueError naming ``name``."""
    items = tuple(value) if isinstance(value, list | tuple) else (value, value)
    ok = len(items) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in items)
    if not ok:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind} or a pair of them, got {value!r}")
    return int(items[0]), int(items[1])


def _image(in_shape: Shape) -> tuple[int, int, int]:
    """``(C, H, W)`` from an image input shape, else a :class:`ShapeError` saying what is needed."""
    if len(in_shape) != 3:
        raise ShapeError(f"needs image inputs (channels, height, width) but gets {fmt_shape(in_shape)}")
    c, h, w = in_shape
    return c, h, w


def _windows_out(h: int, w: int, kernel: tuple[int, int], stride: tuple[int, int],
                 padding: tuple[int, int], in_shape: Shape) -> tuple[int, int]:
    """Output height and width of a sliding window (torch's floor rule), or a ShapeError when the kernel is
    larger than the padded input."""
    hp, wp = h + 2 * padding[0], w + 2 * padding[1]
    if kernel[0] > hp or kernel[1] > wp:
        raise ShapeError(
            f"kernel {kernel[0]}×{kernel[1]} is larger than its (padded) input {hp}×{wp} of {fmt_shape(in_shape)}"
        )
    return (hp - kernel[0]) // stride[0] + 1, (wp - kernel[1]) // stride[1] + 1


SINGLE_THREAD_MNK = 200_000
"""Largest ``m·n·k`` of one matrix product in the convolution: OpenBLAS runs products above ~262,144
(``65536 × GEMM_MULTITHREAD_THRESHOLD``) on all its threads, and for products this small the thread
hand-off costs far more than the arithmetic (10× slower steps measured on a busy 2-core machine)."""


def _chunks(m: int, per_row: int) -> list[tuple[int, int]]:
    """Row ranges of at most ``SINGLE_THREAD_MNK // per_row`` rows covering ``range(m)``."""
    step = max(1, SINGLE_THREAD_MNK // max(1, per_row))
    return [(s, min(s + step, m)) for s in range(0, m, step)]


def _matmul_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a (R, M, K) @ b (R, K, N)`` in row chunks small enough for one BLAS thread (each row's numbers are
    those of the whole product)."""
    parts = _chunks(a.shape[1], a.shape[2] * b.shape[2])
    if len(parts) == 1:
        return np.matmul(a, b)
    out = np.empty((a.shape[0], a.shape[1], b.shape[2]), dtype=np.result_type(a, b))
    for s, e in parts:
        np.matmul(a[:, s:e], b, out=out[:, s:e])
    return out


def _matmul_inner(a_t: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out += a_tᵀ @ b`` for ``a_t (R, M, P)``, ``b (R, M, Q)``: the long ``M`` summed in chunks, each
    product small enough for one BLAS thread."""
    for s, e in _chunks(a_t.shape[1], a_t.shape[2] * b.shape[2]):
        out += np.matmul(a_t[:, s:e].transpose(0, 2, 1), b[:, s:e])


class _Windows:
    """Index tables of a sliding window over a batch of images ``(B, C, H, W)``: gathering them turns a
    window operation into one ``np.take`` plus plain array maths (no Python loop over pixels, no strided
    copies with tiny inner loops).

    ``gather`` (forward) indexes the flattened input ``(R, B·C·H·W)`` with one extra column holding the
    padding value (index ``B·C·H·W``); ``layout`` ``"conv"`` orders the gathered values
    ``(B, Ho, Wo, C, kh, kw)`` (im2col rows), ``"pool"`` orders them ``(kh·kw, B, C, Ho, Wo)``.
    ``scatter`` (backward) is the transpose: for every input element, the positions of the gathered array
    that read it, ``(M, B·C·H·W)`` with ``M`` the most windows any element is in (padded with an index to a
    zero), so ``dx = take(d_gathered + [0], scatter).sum(over M)``.
    """

    def __init__(self, batch: int, in_shape: tuple[int, int, int], kernel: tuple[int, int],
                 stride: tuple[int, int], padding: tuple[int, int], layout: str) -> None:
        c, h, w = in_shape
        (kh, kw), (sh, sw), (p, q) = kernel, stride, padding
        ho, wo = (h + 2 * p - kh) // sh + 1, (w + 2 * q - kw) // sw + 1
        n_in = batch * c * h * w
        rows = (np.arange(ho) * sh)[:, None] + np.arange(kh)[None, :] - p  # (Ho, kh) input row, may be outside
        cols = (np.arange(wo) * sw)[:, None] + np.arange(kw)[None, :] - q  # (Wo, kw)
        b_, c_ = np.arange(batch), np.arange(c)
        if layout == "conv":  # (B, Ho, Wo, C, kh, kw)
            r = rows[None, :, None, None, :, None]
            k = cols[None, None, :, None, None, :]
            bb, cc = b_[:, None, None, None, None, None], c_[None, None, None, :, None, None]
        else:  # (kh, kw, B, C, Ho, Wo)
            r = rows.T[:, None, None, None, :, None]
            k = cols.T[None, :, None, None, None, :]
            bb, cc = b_[None, None, :, None, None, None], c_[None, None, None, :, None, None]
        inside = (r >= 0) & (r < h) & (k >= 0) & (k < w)
        flat = ((bb * c + cc) * h + np.clip(r, 0, h - 1)) * w + np.clip(k, 0, w - 1)
        self.gather = np.where(inside, flat, n_in).astype(np.intp).ravel()
        self.padded = bool(p or q)
        self.n_in, self.out_hw = n_in, (ho, wo)
        # the transpose: positions of `gather` that read each input element, sentinel len(gather) elsewhere
        valid = np.flatnonzero(self.gather < n_in)
        order = valid[np.argsort(self.gather[valid], kind="stable")]
        counts = np.bincount(self.gather[valid], minlength=n_in)
        m = int(counts.max(initial=0))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        slot = np.arange(order.size) - np.repeat(starts, counts)
        table = np.full((max(m, 1), n_in), self.gather.size, dtype=np.intp)
        table[slot, self.gather[order]] = order
        self.scatter = table.ravel()
        self.fanin = max(m, 1)

    def take(self, x: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """The gathered windows ``(R, len(gather))`` of ``x (R, B, C, H, W)``."""
        flat = x.reshape(x.shape[0], -1)
        if self.padded:
            flat = np.concatenate([flat, np.full((x.shape[0], 1), fill, dtype=x.dtype)], axis=1)
        return np.take(flat, self.gather, axis=1)

    def put(self, d: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
        """``dx (R, B, C, H, W)``: the gradient ``d (R, len(gather))`` of the gathered values summed back onto
        the elements they were read from."""
        r = d.shape[0]
        ext = np.concatenate([d.reshape(r, -1), np.zeros((r, 1), dtype=d.dtype)], axis=1)
        parts = np.take(ext, self.scatter, axis=1)
        if self.fanin == 1:
            return parts.reshape(x_shape)
        return parts.reshape(r, self.fanin, -1).sum(axis=1).reshape(x_shape)


class _Windowed(Layer):
    """A layer over image windows: keeps one :class:`_Windows` per batch size (the last batch of an epoch
    and evaluation differ), built on first use."""

    layout = "conv"

    def _windows(self, batch: int) -> _Windows:
        cache = self.__dict__.setdefault("_tables", {})
        win = cache.get(batch)
        if win is None:
            if len(cache) > 8:
                cache.clear()
            win = cache[batch] = _Windows(batch, self.in_shape, self.kernel, self.stride, self.padding, self.layout)
        return win


class Conv2d(_Windowed):
    """2-D convolution (torch ``nn.Conv2d``, cross-correlation, NCHW, ``groups = dilation = 1``).

    Shapes: ``x (R, B, C, H, W)``, ``W (R, O, C, kh, kw)``, ``b (R, O)``, ``y (R, B, O, Ho, Wo)`` with
    ``Ho = (H + 2p − kh) // s + 1``.  ``in_channels`` is learnt from the input shape.  Init (torch's default):
    ``W`` and ``b`` from ``U(−1/√fan_in, 1/√fan_in)``, ``fan_in = C·kh·kw``.

    Forward (im2col): one gather of every output position's window, ``cols (R, B·Ho·Wo, C·kh·kw)``, then one
    stacked matmul ``y = cols Wᵀ + b``.  Backward: ``dW = dyᵀ cols``, ``db = Σ dy``, ``dcols = dy W``, and
    ``dx`` sums ``dcols`` back onto the input (the transposed gather).
    """

    name = "conv2d"
    gradcheck_shape = (2, 5, 5)

    def __init__(self, out_channels: int, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] = 1,
                 padding: int | tuple[int, int] = 0, bias: bool = True) -> None:
        super().__init__()
        if isinstance(out_channels, bool) or not isinstance(out_channels, int) or out_channels < 1:
            raise ValueError(f"out_channels must be a positive integer, got {out_channels!r}")
        self.out_channels = out_channels
        self.kernel = _pair("kernel_size", kernel_size, 1)
        self.stride = _pair("stride", stride, 1)
        self.padding = _pair("padding", padding, 0)
        self.use_bias = bool(bias)

    def build_shape(self, in_shape: Shape) -> Shape:
        c, h, w = _image(in_shape)
        ho, wo = _windows_out(h, w, self.kernel, self.stride, self.padding, in_shape)
        kh, kw = self.kernel
        fan_in = c * kh * kw
        init = uniform_init(1.0 / math.sqrt(fan_in))
        self.in_shape, self.out_hw = (c, h, w), (ho, wo)
        self.__dict__.pop("_tables", None)
        self.weight = self.param("weight", (self.out_channels, c, kh, kw), init)
        self.bias = self.param("bias", (self.out_channels,), init) if self.use_bias else None
        return (self.out_channels, ho, wo)

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        """``x (R, B, C, H, W) → (R, B, O, Ho, Wo)``; caches the windows for backward."""
        r, b = x.shape[:2]
        self.x_shape = x.shape
        win = self._windows(b)
        o, (ho, wo) = self.out_channels, self.out_hw
        cols = self.cols = win.take(x).reshape(r, b * ho * wo, -1)
        w = self.weight.value.reshape(r, o, -1)
        y = _matmul_rows(cols, w.transpose(0, 2, 1).copy())
        out = np.empty((r, b, o, ho * wo), dtype=y.dtype)
        y = y.reshape(r, b, ho * wo, o).transpose(0, 1, 3, 2)
        if self.bias is not None:
            np.add(y, self.bias.value[:, None, :, None], out=out)
        else:
            np.copyto(out, y)
        return out.reshape(r, b, o, ho, wo)

    def _param_grads(self, dy: np.ndarray) -> np.ndarray:
        """Add ``dW`` and ``db``; return ``dy`` as ``(R, B·Ho·Wo, O)``."""
        r, b, o = dy.shape[:3]
        dyc = dy.reshape(r, b, o, -1)
        if self.bias is not None:
            self.bias.grad[...] += dyc.sum(axis=3).sum(axis=1)
        dym = np.ascontiguousarray(dyc.transpose(0, 1, 3, 2)).reshape(r, -1, o)
        _matmul_inner(dym, self.cols, self.weight.grad.reshape(r, o, -1))
        return dym

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Add the parameter gradients; return ``dx (R, B, C, H, W)``."""
        dym = self._param_grads(dy)
        r = dy.shape[0]
        dcols = _matmul_rows(dym, self.weight.value.reshape(r, self.out_channels, -1))
        return self._windows(dy.shape[1]).put(dcols, self.x_shape)

    def backward_params(self, dy: np.ndarray) -> None:
        """Parameter gradients only (first layer of the model: ``dx`` is not needed)."""
        self._param_grads(dy)

    def __repr__(self) -> str:
        extra = "" if self.stride == (1, 1) else f", stride={_short(self.stride)}"
        extra += "" if self.padding == (0, 0) else f", padding={_short(self.padding)}"
        extra += "" if self.use_bias else ", bias=False"
        return f"Conv2d({self.out_channels}, {_short(self.kernel)}{extra})"


def _short(pair: tuple[int, int]) -> int | tuple[int, int]:
    return pair[0] if pair[0] == pair[1] else pair


class _Pool2d(_Windowed):
    """Shared shape logic of the 2-D pools: ``kernel_size``, ``stride`` (default: the kernel), ``padding``
    (at most half the kernel, as torch requires); floor rule for the output size.  Windows are gathered as
    ``(R, kh·kw, B·C·Ho·Wo)``, so the reduction over a window is ``kh·kw − 1`` elementwise operations."""

    gradcheck_shape = (2, 4, 4)
    layout = "pool"

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.kernel = _pair("kernel_size", kernel_size, 1)
        self.stride = self.kernel if stride is None else _pair("stride", stride, 1)
        self.padding = _pair("padding", padding, 0)
        if self.padding[0] > self.kernel[0] // 2 or self.padding[1] > self.kernel[1] // 2:
            raise ValueError(f"padding must be at most half the kernel size, got padding {padding!r} for "
                             f"kernel {kernel_size!r}")

    def build_shape(self, in_shape: Shape) -> Shape:
        c, h, w = _image(in_shape)
        hp, wp = h + 2 * self.padding[0], w + 2 * self.padding[1]
        if self.kernel[0] > hp or self.kernel[1] > wp:
            raise ShapeError(
                f"its {self.kernel[0]}×{self.kernel[1]} window leaves output size 0 on input {fmt_shape(in_shape)}"
            )
        self.in_shape = (c, h, w)
        self.__dict__.pop("_tables", None)
        self.out_hw = ((hp - self.kernel[0]) // self.stride[0] + 1, (wp - self.kernel[1]) // self.stride[1] + 1)
        return (c, *self.out_hw)

    def _gather(self, x: np.ndarray, fill: float) -> np.ndarray:
        """``(R, kh·kw, B·C·Ho·Wo)`` windows of ``x``."""
        self.x_shape = x.shape
        return self._windows(x.shape[1]).take(x, fill).reshape(x.shape[0], self.kernel[0] * self.kernel[1], -1)

    def _out(self, y: np.ndarray) -> np.ndarray:
        r, b, c = self.x_shape[:3]
        return y.reshape(r, b, c, *self.out_hw)

    def __repr__(self) -> str:
        extra = "" if self.stride == self.kernel else f", stride={_short(self.stride)}"
        extra += "" if self.padding == (0, 0) else f", padding={_short(self.padding)}"
        return f"{type(self).__name__}({_short(self.kernel)}{extra})"


class MaxPool2d(_Pool2d):
    """torch ``nn.MaxPool2d(kernel_size, stride=kernel_size, padding=0)``: the maximum of each window
    (padding counts as −∞; NaN propagates).  ``(R, B, C, H, W) → (R, B, C, Ho, Wo)``.

    Backward routes each output's gradient to the *first* maximal element of its window (torch's rule for
    ties); overlapping windows add.
    """

    name = "max_pool2d"

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        win = self.win = self._gather(x, -np.inf)
        y = self.y = win.max(axis=1)
        return self._out(y)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        win, y = self.win, self.y
        g = dy.reshape(y.shape)
        d = np.zeros(win.shape, dtype=dy.dtype)
        free = np.ones(y.shape, dtype=bool)  # windows whose maximum has not been routed yet
        for k in range(win.shape[1]):
            hit = (win[:, k] == y) | (np.isnan(win[:, k]) & np.isnan(y))
            hit &= free
            free &= ~hit
            d[:, k] = g * hit
        return self._windows(dy.shape[1]).put(d, self.x_shape)


class AvgPool2d(_Pool2d):
    """torch ``nn.AvgPool2d(kernel_size, stride=kernel_size, padding=0)`` with its defaults
    (``count_include_pad=True``, ``ceil_mode=False``): each window's sum (in window order) divided by
    ``kh·kw``.  Backward spreads ``dy / (kh·kw)`` over each window."""

    name = "avg_pool2d"

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        win = self._gather(x, 0.0)
        y = win[:, 0].copy()
        for k in range(1, win.shape[1]):
            y += win[:, k]
        y /= self.kernel[0] * self.kernel[1]
        return self._out(y)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        r = dy.shape[0]
        g = dy.reshape(r, 1, -1) / (self.kernel[0] * self.kernel[1])
        d = np.broadcast_to(g, (r, self.kernel[0] * self.kernel[1], g.shape[2]))
        return self._windows(dy.shape[1]).put(d, self.x_shape)


class Flatten(Layer):
    """torch ``nn.Flatten()``: every per-sample axis into one, in C order: ``(R, B, C, H, W) → (R, B, C·H·W)``
    (so a following ``linear`` sees torch's feature order)."""

    name = "flatten"
    gradcheck_shape = (2, 3, 2)

    def build_shape(self, in_shape: Shape) -> Shape:
        return (math.prod(in_shape),)

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        self.x_shape = x.shape
        return x.reshape(*x.shape[:2], -1)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy.reshape(self.x_shape)


class Dropout(Layer):
    """torch ``nn.Dropout(p=0.5)``: in training, each element is zeroed with probability ``p`` and the rest
    scaled by ``1/(1−p)``; in eval mode the identity.  Any shape.

    The mask comes from the layer's own per-replica streams (:attr:`Layer.random`): element ``e`` of replica
    ``r`` is kept when ``u < 1 − p`` for ``u`` uniform from replica ``r``'s generator, so a replica's masks do
    not depend on the other replicas.  Backward: ``dx = dy · mask`` (the same scaled mask).
    """

    name = "dropout"

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        ok = isinstance(p, int | float) and not isinstance(p, bool) and 0.0 <= p <= 1.0
        if not ok:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        if not train or self.p == 0.0:
            self.mask = None
            return x
        if self.p == 1.0:
            self.mask = np.zeros_like(x)
            return self.mask.copy()
        keep = self.random.uniform(x.shape[1:], x.dtype) < 1.0 - self.p
        scale = np.asarray(1.0 / (1.0 - self.p), dtype=x.dtype)
        self.mask = mask = np.multiply(keep, scale, dtype=x.dtype)
        return x * mask

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy if self.mask is None else dy * self.mask

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"


class BatchNorm(Layer):
    """torch ``nn.BatchNorm1d`` / ``nn.BatchNorm2d``, picked by the input shape: ``(C,)`` and ``(C, L)``
    normalise each channel over the batch (and ``L``), ``(C, H, W)`` over the batch and the pixels.

    Training: per replica and channel, the batch mean ``μ`` and biased variance ``σ²`` over ``n`` values;
    ``y = (x − μ)/√(σ² + eps)·γ + β``; the running statistics move by ``momentum``:
    ``m ← (1 − momentum)·m + momentum·μ``, ``v ← (1 − momentum)·v + momentum·σ²·n/(n − 1)`` (torch's
    unbiased running variance).  Eval mode normalises with the running statistics.  Init: ``γ = 1``,
    ``β = 0``, running mean 0, running variance 1.  The running statistics are state arrays: saved with the
    run, restored by ``load_model``, never touched by the optimizer.

    Backward (training), with ``x̂ = (x − μ)·s``, ``s = 1/√(σ² + eps)``:
    ``dx = γ·s·(dy − mean(dy) − x̂·mean(dy·x̂))``, ``dγ = Σ dy·x̂``, ``dβ = Σ dy``; in eval
    ``dx = dy·γ/√(v + eps)``.
    """

    name = "batch_norm"

    def __init__(self, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True) -> None:
        super().__init__()
        if not (isinstance(eps, int | float) and not isinstance(eps, bool) and 0 < eps < math.inf):
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        if not (isinstance(momentum, int | float) and not isinstance(momentum, bool) and 0 <= momentum <= 1):
            raise ValueError(f"momentum must be a number in [0, 1], got {momentum!r}")
        self.eps, self.momentum, self.affine = float(eps), float(momentum), bool(affine)

    def build_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) not in (1, 2, 3):
            raise ShapeError(f"needs inputs (C,), (C, L) or (C, H, W) but gets {fmt_shape(in_shape)}")
        c = in_shape[0]
        self.channels = c
        if self.affine:
            self.weight = self.param("weight", (c,), lambda rng, shape: np.ones(shape))
            self.bias = self.param("bias", (c,), lambda rng, shape: np.zeros(shape))
        self.running_mean = self.state_array("running_mean", (c,), lambda rng, shape: np.zeros(shape))
        self.running_var = self.state_array("running_var", (c,), lambda rng, shape: np.ones(shape))
        return tuple(in_shape)

    def _channels_last(self, x: np.ndarray) -> np.ndarray:
        """``(R, C, n)``: each replica's channel values in one contiguous row (reductions along it are the
        same whatever R is)."""
        r, b, c = x.shape[:3]
        return np.ascontiguousarray(np.moveaxis(x.reshape(r, b, c, -1), 2, 1)).reshape(r, c, -1)

    def _shape(self, a: np.ndarray, ndim: int) -> np.ndarray:
        """Per-channel ``(R, C)`` values broadcastable against ``(R, B, C, ...)``."""
        return a.reshape(a.shape[0], 1, a.shape[1], *([1] * (ndim - 3)))

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        self.train = train
        if train:
            xc = self._channels_last(x)
            n = xc.shape[2]
            if n < 2:
                raise ValueError(f"{self.name} needs more than one value per channel in training, got a batch "
                                 f"of {x.shape[1]} (choose a larger batch size)")
            mean = xc.sum(axis=2) / n
            centred = xc - mean[..., None]
            var = np.square(centred).sum(axis=2) / n
            invstd = 1.0 / np.sqrt(var + self.eps)
            m = self.momentum
            self.running_mean.value[...] = (1 - m) * self.running_mean.value + m * mean
            self.running_var.value[...] = (1 - m) * self.running_var.value + m * (var * (n / (n - 1)))
        else:
            mean = self.running_mean.value
            invstd = 1.0 / np.sqrt(self.running_var.value + self.eps)
        mean, invstd = mean.astype(x.dtype, copy=False), invstd.astype(x.dtype, copy=False)
        self.invstd = self._shape(invstd, x.ndim)
        self.xhat = xhat = (x - self._shape(mean, x.ndim)) * self.invstd
        if not self.affine:
            return xhat
        return xhat * self._shape(self.weight.value, x.ndim) + self._shape(self.bias.value, x.ndim)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        xhat, ndim = self.xhat, dy.ndim
        if self.affine or self.train:
            dyc, xhc = self._channels_last(dy), self._channels_last(xhat)
            sum_dy = dyc.sum(axis=2)
            sum_dy_xhat = (dyc * xhc).sum(axis=2)
        if self.affine:
            self.weight.grad[...] += sum_dy_xhat
            self.bias.grad[...] += sum_dy
            gamma = self._shape(self.weight.value, ndim)
        if not self.train:
            return dy * (self.invstd * gamma if self.affine else self.invstd)
        n = dyc.shape[2]
        dx = dy - self._shape(sum_dy / n, ndim) - xhat * self._shape(sum_dy_xhat / n, ndim)
        dx *= self.invstd * gamma if self.affine else self.invstd
        return dx

    def __repr__(self) -> str:
        return f"BatchNorm(eps={self.eps}, momentum={self.momentum}{'' if self.affine else ', affine=False'})"


@hookimpl
def register_layers(register) -> None:
    for cls in (Linear, Conv2d, MaxPool2d, AvgPool2d, Flatten, Dropout, BatchNorm):
        register(cls)
