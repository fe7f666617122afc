"""``expsvc plugin new``: a plugin package that installs and passes its own tests unchanged.

One working example per kind (an element-wise scale layer, swish, log-cosh, Lion, linear warm-up, a noisy
sine dataset, mean absolute error), a ``pyproject.toml`` with the ``expsvc`` entry point, tests that run the
:mod:`expsvc.testing` conformance checks on the class and, once installed, on the registered name, and a
README.  Files are created, never replaced: the target folder must not exist or be empty.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from expsvc.errors import ExpsvcError

SCAFFOLD_KINDS = ("layer", "activation", "loss", "optimizer", "scheduler", "dataset", "metric")
NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

_HOOK = {"layer": "register_layers", "activation": "register_activations", "loss": "register_losses",
         "optimizer": "register_optimizers", "scheduler": "register_schedulers", "dataset": "register_datasets",
         "metric": "register_metrics"}
_CHECK = {"layer": "check_layer", "activation": "check_layer", "loss": "check_loss",
          "optimizer": "check_optimizer", "scheduler": "check_scheduler", "dataset": "check_dataset",
          "metric": "check_metric"}

_EXAMPLES: dict[str, tuple[str, str, str]] = {
    # kind: (imports from expsvc, what it is, the class body after ``name = ...``)
    "layer": ("Layer", "a learnable per-feature scale, ``y = x · w``", '''
    """Multiplies every input feature by its own learnable weight (initialised to 1).

    Shapes: input ``(R, B, *in_shape)``, output the same; the weight is ``(R, *in_shape)`` (one row per
    replica, declared in ``build_shape`` and allocated by the model).  Backward adds ``Σ_batch dy·x`` into
    the weight's gradient and returns ``dy·w``.
    """

    def __init__(self, init: float = 1.0) -> None:
        super().__init__()
        if isinstance(init, bool) or not isinstance(init, int | float) or not math.isfinite(init):
            raise ValueError(f"init must be a finite number, got {init!r}")
        self.init = float(init)

    def build_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        value = self.init
        self.weight = self.param("weight", in_shape, functools.partial(_constant, value))
        return tuple(in_shape)

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        self.x = x
        return x * self.weight.value[:, None]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.weight.grad += np.sum(dy * self.x, axis=1)
        return dy * self.weight.value[:, None]


def _constant(value: float, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """An initialiser that draws nothing (a module-level function, so the layer pickles)."""
    return np.full(shape, value)
'''),
    "activation": ("Layer", "swish, ``y = x · σ(βx)``", '''
    """Swish (SiLU for ``beta=1``): ``y = x·σ(βx)``, element-wise; any shape ``(R, B, ...)``.

    Backward: ``dx = dy·(σ(βx) + βx·σ(βx)·(1 − σ(βx)))``.
    """

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 < beta < math.inf:
            raise ValueError(f"beta must be a positive number, got {beta!r}")
        self.beta = float(beta)

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        z = np.asarray(self.beta, dtype=x.dtype) * x
        e = np.exp(-np.abs(z))
        self.x, self.s = x, np.where(z >= 0, 1 / (1 + e), e / (1 + e))
        return x * self.s

    def backward(self, dy: np.ndarray) -> np.ndarray:
        s, bx = self.s, np.asarray(self.beta, dtype=self.x.dtype) * self.x
        return dy * (s + bx * s * (1 - s))
'''),
    "loss": ("Loss", "log-cosh regression loss", '''
    """``mean(log(cosh(pred − target)))`` over the batch and outputs of each replica: ``(R,)``.

    ``pred`` is ``(R, B, O)``, ``target`` ``(R, B, O)``.  ``backward()`` is the gradient of the *sum* over
    replicas, ``tanh(pred − target) / (B·O)`` (never divided by R).
    """

    task = "regression"

    def forward(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        d = pred - target.astype(pred.dtype)
        self.d = d
        a = np.abs(d)  # log(cosh(d)) = |d| + log1p(e^(-2|d|)) - log 2, without overflow
        per = a + np.log1p(np.exp(-2 * a)) - np.asarray(np.log(2.0), dtype=pred.dtype)
        return per.reshape(per.shape[0], -1).mean(axis=1)

    def backward(self) -> np.ndarray:
        n = np.asarray(self.d[0].size, dtype=self.d.dtype)
        return np.tanh(self.d) / n
'''),
    "optimizer": ("Optimizer", "Lion (Chen et al. 2023)", '''
    """Lion: ``u = sign(β₁·m + (1 − β₁)·g)``, ``p ← p − lr·(u + λ·p)``, ``m ← β₂·m + (1 − β₂)·g``.

    Works on the whole ``(R, P)`` buffer at once: every operation is element-wise, so replicas never mix.
    Its state ``m`` is allocated in ``bind`` with the buffer's dtype.  ``self.lr`` is read at every step (the
    training loop sets it from the schedule); its default here, 1e-4, is Lion's own.
    """

    def __init__(self, lr: float = 1e-4, beta1: float = 0.9, beta2: float = 0.99,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr)
        for key, value in (("beta1", beta1), ("beta2", beta2)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
                raise ValueError(f"{key} must be in [0, 1), got {value!r}")
        if isinstance(weight_decay, bool) or not isinstance(weight_decay, int | float) or not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.beta1, self.beta2, self.weight_decay = float(beta1), float(beta2), float(weight_decay)

    def bind(self, buffer: ParamBuffer) -> None:
        super().bind(buffer)
        self.m = np.zeros_like(buffer.value)

    def step(self) -> None:
        assert self.buffer is not None
        p, g, m = self.buffer.value, self.buffer.grad, self.m
        update = np.sign(self.beta1 * m + (1 - self.beta1) * g)
        if self.weight_decay:
            update += self.weight_decay * p
        p -= self.lr * update
        m *= self.beta2
        m += (1 - self.beta2) * g
'''),
    "scheduler": ("Scheduler", "linear learning-rate warm-up", '''
    """``lr = base_lr · min(1, (epoch + 1) / epochs)``: a linear warm-up over the first ``epochs`` epochs.

    A function of its arguments only (no state): a grid calls each grid point's schedule, in any order.
    """

    def __init__(self, epochs: int = 5) -> None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
        self.epochs = epochs

    def lr(self, base_lr: float, epoch: int) -> float:
        return base_lr * min(1.0, (epoch + 1) / self.epochs)
'''),
    "dataset": ("Dataset", "a noisy sine wave (regression)", '''
    """``y = sin(x) + noise`` for ``x`` uniform in ``[−π, π]``: x ``(N, 1)``, y ``(N, 1)`` float64.

    Its randomness comes from ``self.rng()`` (``numpy.random.default_rng(seed)``) only, so the same seed
    always gives the same data.
    """

    task = "regression"

    def __init__(self, seed: int = 0, n_train: int = 200, n_test: int = 100, noise: float = 0.1) -> None:
        super().__init__(seed)
        for key, value in (("n_train", n_train), ("n_test", n_test)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000_000:
                raise ValueError(f"{key} must be an integer from 1 to 10,000,000, got {value!r}")
        if isinstance(noise, bool) or not isinstance(noise, int | float) or not 0 <= noise < math.inf:
            raise ValueError(f"noise must be a number >= 0, got {noise!r}")
        self.n_train, self.n_test, self.noise = n_train, n_test, float(noise)

    def memory_hint(self) -> int:
        return 2 * 8 * (self.n_train + self.n_test)

    def load(self) -> DataSplit:
        rng = self.rng()
        n = self.n_train + self.n_test
        x = rng.uniform(-math.pi, math.pi, size=(n, 1))
        y = np.sin(x) + self.noise * rng.standard_normal((n, 1))
        return DataSplit(x[: self.n_train], y[: self.n_train], x[self.n_train :], y[self.n_train :], self.task)
'''),
    "metric": ("Metric", "mean absolute error", '''
    """Mean absolute error per replica: ``pred (R, N, D)`` against ``target (N, D)`` → float64 ``(R,)``."""

    tasks = ("regression",)

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        pred, target = np.asarray(pred), np.asarray(target)
        if pred.shape[1:] != target.shape:
            raise ValueError(f"{self.name}: predictions {pred.shape} do not fit targets {target.shape}")
        diff = np.abs(pred.astype(np.float64) - target.astype(np.float64))
        return diff.reshape(diff.shape[0], -1).mean(axis=1)
'''),
}

_MODULE = Template('''"""$package: $what, an expsvc $kind plugin."""

from __future__ import annotations

${imports}from expsvc import hookimpl
from expsvc.core import $base$extra

__version__ = "0.1.0"


class $cls($base):$body

@hookimpl
def $hook(register) -> None:
    register($cls)
''')

_TESTS = Template('''"""$package's tests: the expsvc conformance checks (gradients, replica independence, dtype,
determinism, inputs untouched, shapes, pickling, argument validation)."""

from expsvc.plugins import load_plugins
from expsvc.testing import $check

from $module import $cls


def test_the_class_passes_the_conformance_checks() -> None:
    $check($cls)


def test_the_installed_plugin_is_registered_and_passes_by_name() -> None:
    system = load_plugins()
    info = system.info("$name")
    assert info is not None and info.status == "ok", info
    assert info.version == "0.1.0"
    $check("$name")
''')

_PYPROJECT = Template('''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$package"
version = "0.1.0"
description = "$what, an expsvc $kind plugin"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["expsvc", "numpy>=1.26"]

[project.optional-dependencies]
test = ["pytest>=8"]

[project.entry-points.expsvc]
$name = "$module"

[tool.setuptools]
py-modules = ["$module"]

[tool.ruff]
line-length = 120
''')

_README = Template('''# $package

$what, as an [expsvc](https://pypi.org/project/expsvc/) $kind plugin: the $kind `$name`.

```
pip install -e .            # registers the entry point `$name` in group `expsvc`
expsvc plugins              # lists $name with its version
expsvc components $name     # its arguments and documentation
expsvc check $name          # the conformance checks, from the command line
pytest                      # the same checks, from the tests
```

The component lives in `$module.py`; `tests/test_$name.py` runs `expsvc.testing.$check` on it.  Change
the example into your own $kind and keep the tests: they check what expsvc relies on (gradients, replicas
that never mix, float32 kept float32, same seed same numbers, inputs untouched, pickling, clear argument
errors).  The version in `pyproject.toml` is recorded with every run that uses the plugin.
''')


def check_name(name: str) -> str:
    """``name`` if it can name a package, a module and a component; else a one-line ExpsvcError."""
    if not isinstance(name, str) or not NAME.match(name):
        raise ExpsvcError(f"plugin name {name!r} is not allowed; use lower-case letters, digits and underscores, "
                          "starting with a letter, at most 40 characters (e.g. 'lion')")
    return name


def default_dir(name: str) -> Path:
    return Path(f"expsvc-{name.replace('_', '-')}")


def files_for(name: str, kind: str) -> dict[str, str]:
    """The scaffold's files (relative path -> text) for a plugin ``name`` of ``kind``."""
    check_name(name)
    if kind not in SCAFFOLD_KINDS:
        raise ExpsvcError(f"--kind {kind!r} is not a kind; kinds: {', '.join(SCAFFOLD_KINDS)}")
    base, what, body = _EXAMPLES[kind]
    module = f"expsvc_{name}"
    extra = {"optimizer": ", ParamBuffer", "dataset": ", DataSplit"}.get(kind, "")
    imports = {"layer": ["functools", "math"], "activation": ["math"], "dataset": ["math"]}.get(kind, [])
    imports += [] if kind == "scheduler" else ["numpy as np"]
    end = body.index('"""', body.index('"""') + 3) + 3  # after the class docstring
    words = {
        "imports": "".join(f"import {m}\n" + ("\n" if m == "math" else "")
                           for m in imports),
        "body": f'{body[:end]}\n\n    name = "{name}"{body[end:].rstrip()}\n',
        "name": name, "kind": kind, "what": what[0].upper() + what[1:], "base": base, "extra": extra,
        "cls": "".join(p.capitalize() for p in name.split("_") if p) or "Component",
        "hook": _HOOK[kind], "check": _CHECK[kind], "module": module,
        "package": f"expsvc-{name.replace('_', '-')}",
    }
    return {
        "pyproject.toml": _PYPROJECT.substitute(words),
        f"{module}.py": _MODULE.substitute(words),
        f"tests/test_{name}.py": _TESTS.substitute(words),
        "README.md": _README.substitute(words),
    }


def target_problem(folder: Path) -> str | None:
    """Why the scaffold cannot be written into ``folder`` (it exists and is not an empty directory), or None."""
    from expsvc.files import kind_of

    kind = kind_of(folder)
    if kind is None:
        return None
    if kind != "a directory":
        return f"is {'a file' if kind == 'file' else kind}"
    if any(folder.iterdir()):
        return "already exists and is not empty (nothing is ever overwritten)"
    return None


def write(folder: Path, name: str, kind: str) -> list[Path]:
    """Create the scaffold in ``folder`` (which must not exist or be empty); the files written."""
    files = files_for(name, kind)
    problem = target_problem(folder)
    if problem is not None:
        raise ExpsvcError(f"folder {str(folder)!r} {problem}; choose another with --dir")
    written = []
    try:
        for rel, text in files.items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "x", encoding="utf-8") as fh:  # "x": never replaces a file
                fh.write(text)
            written.append(path)
    except OSError as err:
        raise ExpsvcError(f"cannot write {str(folder)!r}: {err.strerror or err}") from None
    return written
