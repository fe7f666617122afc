"""Built-in datasets: synthetic 2-D classification sets, the seed experiments' data, and user files.

Target conventions (see :class:`expsvc.core.DataSplit`): ``x`` is float64 ``(N, F)``; binary targets are
float64 ``(N, 1)`` holding 0/1, multiclass targets int64 ``(N,)`` (``classes`` set), regression targets
float64 ``(N, D)``.

Randomness: every dataset takes ``seed`` and draws from ``numpy.random.default_rng(seed)``; the synthetic
sets spawn two child streams from it, one for the training set and one for the test set, so the test set
does not change with ``n_train`` or training-only options such as ``outliers``.  Classes are balanced (sizes
differ by at most one) and the rows are in random order, so in-order batches mix the classes.
"""

from __future__ import annotations

import csv
import math
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from expsvc.core.data import Dataset, DataSplit
from expsvc.errors import ExpsvcError, did_you_mean, path_problem
from expsvc.hookspecs import hookimpl

TASKS = ("binary", "multiclass", "regression")
MAX_INFERRED_CLASSES = 20
"""``file`` infers ``multiclass`` for integer targets with at most this many distinct values."""


# ----------------------------------------------------------------------------------------------- helpers


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        allowed = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def _number(name: str, value: Any, low: float, high: float, *, low_open: bool, high_open: bool) -> float:
    """``value`` as a float inside the interval, else a ValueError naming ``name`` and the interval."""
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    v = float(value) if ok else math.nan
    ok = ok and not math.isnan(v)
    ok = ok and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{name} must be a number in {lo}{low:g}, {high:g}{hi}, got {value!r}")
    return v


def _non_negative(name: str, value: Any) -> float:
    return _number(name, value, 0.0, math.inf, low_open=False, high_open=True)


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent training and test generators spawned from ``default_rng(seed)``."""
    train, test = np.random.default_rng(seed).spawn(2)
    return train, test


def _balanced_labels(rng: np.random.Generator, n: int, classes: int) -> np.ndarray:
    """``(n,)`` int64 labels, class sizes differing by at most one, in random order."""
    return rng.permutation(np.arange(n, dtype=np.int64) % classes)


def _binary(y: np.ndarray) -> np.ndarray:
    """0/1 labels ``(N,)`` -> float64 ``(N, 1)``."""
    return np.asarray(y, dtype=np.float64).reshape(-1, 1)


class _Generated(Dataset):
    """Synthetic dataset: ``load()`` draws ``n_train`` and ``n_test`` samples with :meth:`sample`."""

    classes: int | None = None
    """The number of classes (binary: 2, multiclass: an argument); ``None`` for regression."""

    def __init__(self, seed: int = 0, n_train: int = 200, n_test: int = 100) -> None:
        super().__init__(seed)
        self.n_train = _positive_int("n_train", n_train)
        self.n_test = _positive_int("n_test", n_test)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` samples ``(x (n, F), y)`` in the task's target convention."""
        raise NotImplementedError

    def memory_hint(self) -> int:
        """Bytes of the split: one sampled row's arrays times ``n_train + n_test`` rows."""
        x, y = self.sample(np.random.default_rng(0), 1)
        return (x.nbytes + y.nbytes) * (self.n_train + self.n_test)

    def load(self) -> DataSplit:
        train_rng, test_rng = _streams(self.seed)
        x_train, y_train = self.sample(train_rng, self.n_train)
        x_test, y_test = self.sample(test_rng, self.n_test)
        return DataSplit(x_train, y_train, x_test, y_test, self.task, self.classes)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


# ---------------------------------------------------------------------------------------- classification


class Points(_Generated):
    """The seed experiment's two-class 2-D points, binary: x ``(N, 2)`` float64, y ``(N, 1)`` 0/1.

    Class 0 is a Gaussian cluster (standard deviation ``noise``) around ``(−s/2, −s/2)``, class 1 around
    ``(+s/2, +s/2)``, ``s = separation``.  ``round(outliers·n_train)`` *training* points (half from each
    class, the odd one from class 1, at random rows) are drawn from the other class's cluster but keep their
    label, so no model reaches 100 % training accuracy; the test set is clean.  With the defaults the
    centres lie ``1.5·√2/0.8 ≈ 2.65`` standard deviations from the boundary ``x1 + x2 = 0`` (≈ 0.4 % of
    clean points across it), so the best training accuracy is a little under ``1 − outliers``.

    The seed experiment (MLP 2-5-3-1 with tanh, BCE with logits, AdamW lr 1e-3, in-order batches of 50,
    tol 1e-5) reaches train accuracy ≈ 0.94, test accuracy 1.0 and a final loss ≈ 0.29 after ~700–1000
    updates on the default data.  The final loss is the *last batch's* loss: with ``seed=0`` four of the
    15 outliers fall in the last batch of 50 (8 %), whose loss has its minimum (≈ entropy of 8 %) before
    the model's global optimum, and the tolerance stop fires near that turning point.  Other seeds put a
    different number of outliers in the last batch, which changes the final loss and the stop.
    """

    name = "points"
    task = "binary"
    classes = 2

    def __init__(
        self, seed: int = 0, n_train: int = 300, n_test: int = 100, outliers: float = 0.05, separation: float = 3.0,
        noise: float = 0.8,
    ) -> None:
        super().__init__(seed, n_train, n_test)
        self.outliers = _number("outliers", outliers, 0.0, 0.5, low_open=False, high_open=False)
        self.separation = _non_negative("separation", separation)
        self.noise = _non_negative("noise", noise)

    def _draw(self, rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` points with ``k`` outliers: x ``(n, 2)``, y ``(n, 1)`` and the sorted outlier rows ``(k,)``."""
        y = _balanced_labels(rng, n, 2)
        idx = np.sort(
            np.concatenate(
                [
                    rng.choice(np.flatnonzero(y == c), size=count, replace=False)
                    for c, count in ((0, k // 2), (1, k - k // 2))
                ]
            )
        ).astype(np.int64)
        region = y.copy()
        region[idx] = 1 - y[idx]
        h = self.separation / 2
        centres = np.array([[-h, -h], [h, h]])
        x = centres[region] + self.noise * rng.standard_normal((n, 2))
        return x, _binary(y), idx

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        x, y, _ = self._draw(rng, n, 0)
        return x, y

    def _split(self) -> tuple[DataSplit, np.ndarray]:
        train_rng, test_rng = _streams(self.seed)
        x, y, idx = self._draw(train_rng, self.n_train, round(self.outliers * self.n_train))
        x_test, y_test = self.sample(test_rng, self.n_test)
        return DataSplit(x, y, x_test, y_test, self.task, 2), idx

    def outlier_indices(self) -> np.ndarray:
        """Sorted row indices ``(k,)`` of the training outliers, ``k = round(outliers·n_train)``."""
        return self._split()[1]

    def load(self) -> DataSplit:
        return self._split()[0]


class _Noisy2D(_Generated):
    """The binary 2-D shapes: noise-free points from :meth:`shape`, plus Gaussian noise of standard deviation
    ``noise`` on both coordinates; x ``(N, 2)``, y ``(N, 1)``."""

    task = "binary"
    classes = 2

    def __init__(self, seed: int, n_train: int, n_test: int, noise: float) -> None:
        super().__init__(seed, n_train, n_test)
        self.noise = _non_negative("noise", noise)

    def shape(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` noise-free points ``(n, 2)`` and their labels ``(n,)`` (0 or 1), drawn from ``rng``."""
        raise NotImplementedError

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.shape(rng, n)
        return x + self.noise * rng.standard_normal((n, 2)), _binary(y)


class Moons(_Noisy2D):
    """Two interleaving half circles (scikit-learn's ``make_moons``), binary: x ``(N, 2)``, y ``(N, 1)``.

    Class 0: ``(cos t, sin t)``; class 1: ``(1 − cos t, 0.5 − sin t)``; ``t ~ U(0, π)``; plus Gaussian noise
    of standard deviation ``noise`` on both coordinates.
    """

    name = "moons"

    def __init__(self, seed: int = 0, n_train: int = 200, n_test: int = 100, noise: float = 0.1) -> None:
        super().__init__(seed, n_train, n_test, noise)

    def shape(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        y = _balanced_labels(rng, n, 2)
        t = rng.uniform(0.0, math.pi, n)
        upper = np.stack([np.cos(t), np.sin(t)], axis=1)
        return np.where((y == 0)[:, None], upper, np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1)), y


class Circles(_Noisy2D):
    """Two concentric circles (scikit-learn's ``make_circles``), binary: x ``(N, 2)``, y ``(N, 1)``.

    Class 0 on the unit circle, class 1 on the circle of radius ``factor``, angle ``~ U(0, 2π)``, plus
    Gaussian noise of standard deviation ``noise``.
    """

    name = "circles"

    def __init__(
        self, seed: int = 0, n_train: int = 200, n_test: int = 100, noise: float = 0.05, factor: float = 0.5
    ) -> None:
        super().__init__(seed, n_train, n_test, noise)
        self.factor = _number("factor", factor, 0.0, 1.0, low_open=True, high_open=True)

    def shape(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        y = _balanced_labels(rng, n, 2)
        angle = rng.uniform(0.0, 2 * math.pi, n)
        radius = np.where(y == 0, 1.0, self.factor)
        return radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1), y


class Xor(_Noisy2D):
    """The XOR problem, binary: x ``(N, 2)``, y ``(N, 1)``.

    Four Gaussian clusters (standard deviation ``noise``) at ``(±1, ±1)``; the label is 1 where the two
    coordinates of the cluster centre have different signs (not linearly separable).
    """

    name = "xor"

    def __init__(self, seed: int = 0, n_train: int = 200, n_test: int = 100, noise: float = 0.25) -> None:
        super().__init__(seed, n_train, n_test, noise)

    def shape(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        quadrant = _balanced_labels(rng, n, 4)
        signs = np.stack([quadrant & 1, quadrant >> 1], axis=1) * 2.0 - 1.0
        return signs, (signs[:, 0] != signs[:, 1]).astype(np.int64)


class Spirals(_Generated):
    """Interleaved spiral arms, one per class (the CS231n spiral set), multiclass: x ``(N, 2)``, y ``(N,)``.

    Arm ``c``: radius ``r ~ U(0, 1)``, angle ``2πc/classes + 4r + noise·N(0, 1)``, point
    ``(r·sin θ, r·cos θ)``.
    """

    name = "spirals"
    task = "multiclass"

    def __init__(
        self, seed: int = 0, n_train: int = 300, n_test: int = 150, classes: int = 3, noise: float = 0.2
    ) -> None:
        super().__init__(seed, n_train, n_test)
        self.classes = _positive_int("classes", classes, minimum=2)
        self.noise = _non_negative("noise", noise)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        y = _balanced_labels(rng, n, self.classes)
        r = rng.uniform(0.0, 1.0, n)
        theta = 2 * math.pi * y / self.classes + 4.0 * r + self.noise * rng.standard_normal(n)
        return np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1), y


class Blobs(_Generated):
    """Isotropic Gaussian clusters (scikit-learn's ``make_blobs``), multiclass: x ``(N, features)``, y ``(N,)``.

    The ``classes`` centres are drawn uniformly from ``[−box, box]^features`` (shared by both splits);
    each cluster has standard deviation ``noise``.
    """

    name = "blobs"
    task = "multiclass"

    def __init__(
        self, seed: int = 0, n_train: int = 300, n_test: int = 150, classes: int = 3, features: int = 2,
        noise: float = 1.0, box: float = 10.0,
    ) -> None:
        super().__init__(seed, n_train, n_test)
        self.classes = _positive_int("classes", classes, minimum=2)
        self.features = _positive_int("features", features)
        self.noise = _non_negative("noise", noise)
        self.box = _number("box", box, 0.0, math.inf, low_open=True, high_open=True)

    def centres(self) -> np.ndarray:
        """The cluster centres ``(classes, features)``."""
        rng = np.random.default_rng(self.seed)
        return rng.uniform(-self.box, self.box, (self.classes, self.features))

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        y = _balanced_labels(rng, n, self.classes)
        x = self.centres()[y] + self.noise * rng.standard_normal((n, self.features))
        return x, y


# -------------------------------------------------------------------------------------------- regression


class Linear1D(Dataset):
    """The seed linear experiment, regression: x = 1, 2, 3 with y = 2x (train, ``(3, 1)``); x = 4, y = 8
    (test, ``(1, 1)``).  Fixed data: ``seed`` is accepted and ignored."""

    name = "linear_1d"
    task = "regression"

    X_TRAIN = (1.0, 2.0, 3.0)
    X_TEST = (4.0,)

    def features_of(self, x: np.ndarray) -> np.ndarray:
        """Model inputs for raw ``x`` of shape ``(N, 1)``."""
        return x

    def load(self) -> DataSplit:
        x_train = np.array(self.X_TRAIN).reshape(-1, 1)
        x_test = np.array(self.X_TEST).reshape(-1, 1)
        return DataSplit(self.features_of(x_train), 2 * x_train, self.features_of(x_test), 2 * x_test, self.task)


class Quadratic1D(Linear1D):
    """The seed quadratic experiment: the same data as ``linear_1d`` (x = 1, 2, 3, y = 2x; test x = 4, y = 8),
    regression, for the model ``y = w1·x² + w2·x + b``.

    With ``expand=True`` (default) the inputs are ``(N, 2)`` columns ``[x², x]``, so ``linear(1)`` *is* that
    model (``weight = [w1, w2]``, ``bias = b``); with ``expand=False`` they are the raw ``x`` ``(N, 1)``.
    """

    name = "quadratic_1d"

    def __init__(self, seed: int = 0, expand: bool = True) -> None:
        super().__init__(seed)
        if not isinstance(expand, bool):
            raise ValueError(f"expand must be true or false, got {expand!r}")
        self.expand = expand

    def features_of(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([x * x, x], axis=1) if self.expand else x

    def __repr__(self) -> str:
        return f"Quadratic1D(seed={self.seed}, expand={self.expand})"


class RandomRegression(_Generated):
    """The seed two-layer ReLU experiment's data, regression: x ``(n, d_in)`` and y ``(n, d_out)``, both
    independent standard normal (so y is unrelated to x: there is nothing to generalise).

    Test split: a separate draw of ``n_test`` (default 16) samples from the test stream, only useful as a
    baseline for how a model fitted to noise behaves on new noise.
    """

    name = "random_regression"
    task = "regression"

    def __init__(self, seed: int = 0, n: int = 64, d_in: int = 1000, d_out: int = 10, n_test: int = 16) -> None:
        super().__init__(seed, n, n_test)
        self.n = self.n_train
        self.d_in = _positive_int("d_in", d_in)
        self.d_out = _positive_int("d_out", d_out)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.standard_normal((n, self.d_in))
        return x, rng.standard_normal((n, self.d_out))

    def __repr__(self) -> str:
        return (
            f"RandomRegression(seed={self.seed}, n={self.n}, d_in={self.d_in}, d_out={self.d_out}, "
            f"n_test={self.n_test})"
        )


# ------------------------------------------------------------------------------------------- real data


DATASETS_EXTRA = "pip install 'expsvc[datasets]'"


class Digits(Dataset):
    """The UCI optical-recognition handwritten digits as shipped inside scikit-learn (``load_digits``, read
    from the installed package, never downloaded): 1,797 grey images of 8×8 pixels, 10 classes, multiclass.

    ``images=True`` (default) gives x ``(N, 1, 8, 8)`` (NCHW, for ``conv2d``); ``images=False`` the flattened
    ``(N, 64)``.  Pixel values 0..16 are scaled to ``[0, 1]``.  The test split is stratified and fixed by
    ``seed``: in each class, ``round(test_fraction · n_class)`` images drawn with ``default_rng(seed)`` go to
    the test set (default 0.2: 359 test, 1,438 training images); training rows are in random order, so
    in-order batches mix the classes.  Needs scikit-learn (the ``datasets`` extra).
    """

    name = "digits"
    task = "multiclass"
    classes = 10

    def __init__(self, seed: int = 0, images: bool = True, test_fraction: float = 0.2) -> None:
        super().__init__(seed)
        if not isinstance(images, bool):
            raise ValueError(f"images must be true or false, got {images!r}")
        self.images = images
        self.test_fraction = _number("test_fraction", test_fraction, 0.0, 1.0, low_open=True, high_open=True)

    @staticmethod
    def raw() -> tuple[np.ndarray, np.ndarray]:
        """scikit-learn's arrays: images ``(1797, 8, 8)`` float64 0..16 and labels ``(1797,)``."""
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise ExpsvcError(
                f"dataset 'digits' needs scikit-learn, which is not installed: {DATASETS_EXTRA}"
            ) from None
        bunch = load_digits()
        return np.asarray(bunch.images, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)

    def load(self) -> DataSplit:
        images, labels = self.raw()
        rng = np.random.default_rng(self.seed)
        test = np.zeros(labels.size, dtype=bool)
        for c in range(self.classes):
            rows = np.flatnonzero(labels == c)
            test[rng.choice(rows, size=max(1, round(self.test_fraction * rows.size)), replace=False)] = True
        train_rows = rng.permutation(np.flatnonzero(~test))
        test_rows = np.flatnonzero(test)
        x = images[:, None] / 16.0 if self.images else images.reshape(len(images), -1) / 16.0
        return DataSplit(x[train_rows], labels[train_rows], x[test_rows], labels[test_rows], self.task, self.classes)

    def __repr__(self) -> str:
        return f"Digits(seed={self.seed}, images={self.images}, test_fraction={self.test_fraction})"


# -------------------------------------------------------------------------------------------------- files


class FileDataset(Dataset):
    """A user's CSV or NPZ file, split into train/test by a shuffle seeded with ``seed``.

    * CSV (``.csv``): a header row of column names, then numeric rows (empty fields count as missing).
    * NPZ (``.npz``): either arrays ``x`` (``(N, F)`` or ``(N,)``, or images ``(N, C, H, W)``) and a target
      array (``target``, default ``y``), or 1-D arrays of equal length used as named columns.  Images keep
      their shape (a model starts with ``conv2d``, or ``flatten`` before ``linear``).

    ``target`` names the target column/array (a list of names for several regression targets); by default
    ``y`` if there is one, else the last column.  All other columns are the inputs.  An NPZ with ``x`` may
    carry its own validation set as arrays ``x_val`` and ``<target>_val`` (``y_val``): they are kept out of
    the train/test split and become the validation set (``--val-split`` then cannot hold out another).
    ``test_fraction`` of the rows (at least one) go to the test set.  ``task`` is inferred unless given:
    values all 0/1 -> ``binary``; integers with at most 20 distinct values -> ``multiclass`` (class ``k`` is
    the ``k``-th smallest distinct value, i.e. labels 0..C−1 stay as they are); otherwise ``regression``.  Problems
    with the file raise :class:`~expsvc.errors.ExpsvcError` with a one-line message.
    """

    name = "file"
    task = "regression"  # the class default; an instance has the given or inferred task
    EXTENSIONS: ClassVar[tuple[str, ...]] = (".csv", ".npz")

    def __init__(
        self,
        path: str,
        target: str | Sequence[str] | None = None,
        test_fraction: float = 0.2,
        task: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if not isinstance(path, str | Path) or not str(path):
            raise ValueError(f"path must be a file name, got {path!r}")
        self.path = str(path)
        suffix = Path(self.path).suffix.lower()
        if suffix not in self.EXTENSIONS:
            raise ExpsvcError(
                f"dataset file {self.path!r}: unsupported extension {suffix or '(none)'!r}; "
                f"allowed: {', '.join(self.EXTENSIONS)}"
            )
        if target is not None and not isinstance(target, str):
            if not isinstance(target, list | tuple) or not target or not all(isinstance(t, str) for t in target):
                raise ValueError(f"target must be a column name or a list of names, got {target!r}")
            target = list(target)
        self.target = target
        self.test_fraction = _number("test_fraction", test_fraction, 0.0, 1.0, low_open=True, high_open=True)
        if task is not None and task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)} (or None to infer), got {task!r}")
        self.task_arg = task
        if task is not None:
            self.task = task  # type: ignore[misc]  # per instance: given, or inferred by load()
        self._n_val = 0  # rows of the file's own validation set (set by load)
        self.columns: list[str] = []
        """Input column names, known after :meth:`load` (``x0, x1, ...`` for an NPZ ``x`` array)."""
        self.labels: np.ndarray | None = None
        """Multiclass: the distinct target values, ``labels[k]`` being class ``k``; set by :meth:`load`."""

    def _fail(self, message: str) -> ExpsvcError:
        return ExpsvcError(f"dataset file {self.path!r}: {message}")

    # -- reading

    def _read_csv(self) -> tuple[list[str], np.ndarray]:
        """Header and values ``(rows, columns)``; empty fields and ``nan``/``na``/``null`` become NaN."""
        try:
            with open(self.path, newline="", encoding="utf-8-sig") as fh:
                reader = csv.reader(fh)
                rows = [(reader.line_num, r) for r in reader if any(cell.strip() for cell in r)]
        except (UnicodeDecodeError, csv.Error) as err:
            raise self._fail(f"not a readable UTF-8 CSV file ({err})") from None
        except OSError as err:
            raise self._fail(f"cannot read the file ({err.strerror or err})") from None
        if not rows:
            raise self._fail("the file is empty; expected a header row of column names, then numeric rows")
        header = [h.strip() for h in rows[0][1]]
        if any(not h for h in header):
            raise self._fail(f"column {header.index('') + 1} of the header row has no name")
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise self._fail(f"duplicate column name {dupes[0]!r} in the header row")
        if len(rows) == 1:
            raise self._fail("the file has a header row but no data rows")
        values = np.empty((len(rows) - 1, len(header)), dtype=np.float64)
        for i, (line, row) in enumerate(rows[1:], start=1):
            if len(row) != len(header):
                raise self._fail(
                    f"row {i} (line {line}) has {len(row)} fields but the header has {len(header)} columns"
                )
            for j, cell in enumerate(row):
                text = cell.strip()
                if not text or text.lower() in ("nan", "na", "null"):
                    values[i - 1, j] = np.nan
                    continue
                try:
                    values[i - 1, j] = float(text)
                except ValueError:
                    raise self._fail(
                        f"non-numeric value {text!r} in column {header[j]!r}, row {i} (line {line}); "
                        "all values must be numbers"
                    ) from None
        return header, values

    def _read_npz(self) -> dict[str, np.ndarray]:
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
            raise self._fail(f"not a readable .npz file ({err})") from None
        if not arrays:
            raise self._fail("the file is empty; expected arrays 'x' and 'y', or 1-D column arrays")
        for key, arr in arrays.items():
            if not isinstance(arr, np.ndarray):
                raise self._fail(f"not a readable .npz file (entry {key!r} is not a numpy array)")
            if arr.dtype.kind not in "biuf":
                raise self._fail(f"array {key!r} has non-numeric dtype {arr.dtype}; all arrays must be numbers")
        return arrays

    # -- assembling

    def _target_names(self, available: list[str], kind: str = "column") -> list[str]:
        if not available:
            raise self._fail(f"no target {kind}: the file holds only 'x'; add a target array 'y'")
        if self.target is None:
            return ["y"] if "y" in available else [available[-1]]
        names = [self.target] if isinstance(self.target, str) else list(self.target)
        for name in names:
            if name not in available:
                raise self._fail(
                    f"no target {kind} {name!r}{did_you_mean(name, available)}; "
                    f"available: {', '.join(available) or 'none'}"
                )
        return names

    def _check_finite(self, names: list[str], values: np.ndarray) -> None:
        for name, count in zip(names, np.isnan(values).sum(axis=0), strict=True):
            if count:
                raise self._fail(f"column {name!r} has {int(count)} missing or NaN value(s); fill or drop them")
        for name, count in zip(names, np.isinf(values).sum(axis=0), strict=True):
            if count:
                raise self._fail(f"column {name!r} has {int(count)} infinite value(s); values must be finite")

    def _csv_arrays(self) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        header, values = self._read_csv()
        targets = self._target_names(header)
        inputs = [h for h in header if h not in targets]
        x = values[:, [header.index(h) for h in inputs]]
        y = values[:, [header.index(t) for t in targets]]
        return x, y, inputs, targets

    def _npz_xy_arrays(self, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        targets = self._target_names([n for n in arrays if n != "x"], kind="array")
        x = np.asarray(arrays["x"], dtype=np.float64)
        x = x.reshape(-1, 1) if x.ndim == 1 else x
        if x.ndim not in (2, 4):
            raise self._fail(f"array 'x' must be (N,), (N, F) or images (N, C, H, W), got shape {arrays['x'].shape}")
        if x.shape[0] == 0:
            raise self._fail("the file has no data rows (array 'x' has 0 rows)")
        if x.ndim == 4 and min(x.shape[1:]) < 1:
            raise self._fail(f"image array 'x' has an empty axis: shape {arrays['x'].shape}")
        ys, names = [], []
        for t in targets:
            a = np.asarray(arrays[t], dtype=np.float64)
            if a.ndim == 0 or a.shape[0] != x.shape[0]:
                rows = f"{a.shape[0]} rows" if a.ndim else "no rows (it is a single number)"
                raise self._fail(f"array {t!r} has {rows} but 'x' has {x.shape[0]}; they must match")
            a = a.reshape(a.shape[0], -1)
            ys.append(a)
            names += [t] if a.shape[1] == 1 else [f"{t}[{i}]" for i in range(a.shape[1])]
        features = [f"x{i}" for i in range(x.shape[1])] if x.ndim == 2 else ["x"]
        return x, np.concatenate(ys, axis=1), features, names

    def _npz_column_arrays(self, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        names = list(arrays)
        for key, arr in arrays.items():
            if arr.ndim != 1:
                raise self._fail(
                    f"array {key!r} has shape {arr.shape}; without an 'x' array every array must be a 1-D column"
                )
        lengths = {key: arr.shape[0] for key, arr in arrays.items()}
        other = next((k for k in names if lengths[k] != lengths[names[0]]), None)
        if other is not None:
            raise self._fail(
                f"columns differ in length: {names[0]!r} has {lengths[names[0]]} rows, {other!r} has {lengths[other]}"
            )
        targets = self._target_names(names)
        inputs = [n for n in names if n not in targets]
        if not inputs:
            raise self._fail(f"no input columns: every column is a target ({', '.join(targets)})")
        x = np.stack([arrays[n] for n in inputs], axis=1).astype(np.float64)
        y = np.stack([arrays[t] for t in targets], axis=1).astype(np.float64)
        return x, y, inputs, targets

    def _validation(self, arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        """An NPZ's ``x_val``/``<target>_val`` arrays appended to ``x``/target (their row count returned, 0
        without them), so they are read, checked and encoded as the other rows are; :meth:`load` splits them
        off again.  Either without the other is refused."""
        target = self.target if isinstance(self.target, str) else "y"
        keys = ("x_val", f"{target}_val")
        if not any(k in arrays for k in keys):
            return arrays, 0
        missing = [k for k in keys if k not in arrays]
        if missing or "x" not in arrays or not isinstance(self.target, str | None):
            raise self._fail(f"a validation set needs arrays 'x', 'x_val', {target!r} and {keys[1]!r} "
                             f"(one target); {', '.join(map(repr, missing)) or 'x'} missing")
        rest = {k: v for k, v in arrays.items() if k not in keys}
        out = dict(rest)
        for name, val in (("x", arrays["x_val"]), (target, arrays[keys[1]])):
            if name not in rest:
                raise self._fail(f"array {keys[1]!r} has no training counterpart {name!r}")
            a = rest[name]
            if val.ndim != a.ndim or val.shape[1:] != a.shape[1:]:
                raise self._fail(f"array {name + '_val'!r} has shape {val.shape}; expected (N, *{a.shape[1:]}) "
                                 f"like {name!r}")
            out[name] = np.concatenate([a, val])
        return out, int(arrays["x_val"].shape[0])

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        """Inputs ``(N, F)`` and targets ``(N, D)`` as float64, with the input and target names (an NPZ's own
        validation rows last, their count in ``self._n_val``)."""
        problem = path_problem(self.path)
        if problem is not None:
            raise self._fail("no such file" if problem == "does not exist" else problem)
        self._n_val = 0
        if Path(self.path).suffix.lower() == ".csv":
            x, y, inputs, targets = self._csv_arrays()
        else:
            arrays, self._n_val = self._validation(self._read_npz())
            x, y, inputs, targets = self._npz_xy_arrays(arrays) if "x" in arrays else self._npz_column_arrays(arrays)
        if x.shape[0] == 0:
            raise self._fail("the file has no data rows")
        if x.shape[1] == 0:
            raise self._fail("no input columns besides the target")
        self._check_finite(inputs, x.reshape(-1, 1) if x.ndim > 2 else x)  # images: one array "x"
        self._check_finite(targets, y)
        return x, y, inputs, targets

    def _infer_task(self, y: np.ndarray) -> str:
        if y.shape[1] != 1:
            return "regression"
        values = np.unique(y)
        integral = bool(np.all(values == np.round(values)))
        if integral and np.all(np.isin(values, (0.0, 1.0))):
            return "binary"
        if integral and values.size <= MAX_INFERRED_CLASSES:
            return "multiclass"
        return "regression"

    def _targets_for(self, task: str, y: np.ndarray, names: list[str]) -> tuple[np.ndarray, int | None]:
        if task == "regression":
            return y, None
        if y.shape[1] != 1:
            raise self._fail(f"a {task} task needs one target column, got {len(names)} ({', '.join(names)})")
        values = np.unique(y)
        if task == "binary":
            if not np.all(np.isin(values, (0.0, 1.0))):
                shown = ", ".join(f"{v:g}" for v in values[:5])
                raise self._fail(f"binary targets must be 0 or 1, column {names[0]!r} has {shown}")
            return y.copy(), 2
        if not np.all(values == np.round(values)):
            bad = values[values != np.round(values)][0]
            raise self._fail(f"multiclass targets must be integers, column {names[0]!r} has {bad:g}")
        self.labels = values
        return np.searchsorted(values, y[:, 0]).astype(np.int64), int(values.size)

    def load(self) -> DataSplit:
        x, y, inputs, targets = self._arrays()
        self.columns = inputs
        task = self.task_arg or self._infer_task(y)
        self.task = task  # type: ignore[misc]
        y, classes = self._targets_for(task, y, targets)
        n = x.shape[0] - self._n_val
        x_val, y_val = (x[n:], y[n:]) if self._n_val else (None, None)
        x, y = x[:n], y[:n]
        n_test = max(1, round(self.test_fraction * n))
        if n - n_test < 1:
            raise self._fail(
                f"{n} row(s) are too few to split with test_fraction={self.test_fraction:g}; "
                "need at least one training and one test row"
            )
        order = np.random.default_rng(self.seed).permutation(n)
        test, train = order[:n_test], order[n_test:]
        return DataSplit(x[train], y[train], x[test], y[test], task, classes, x_val, y_val)

    def __repr__(self) -> str:
        return (
            f"FileDataset(path={self.path!r}, target={self.target!r}, test_fraction={self.test_fraction}, "
            f"task={self.task_arg!r}, seed={self.seed})"
        )


ALL = (Points, Moons, Circles, Xor, Spirals, Blobs, Linear1D, Quadratic1D, RandomRegression, Digits, FileDataset)


@hookimpl
def register_datasets(register) -> None:
    for cls in ALL:
        register(cls)
