"""The plugin author's kit (issue 14): ``expsvc.testing`` conformance checks, randomness for plugins,
``expsvc check`` and ``expsvc plugin new``.

* every registered built-in passes the checks (generated from the registry: a new built-in is covered, and
  one with required arguments fails here until it gets an example below), and so does plugins/softplus.py;
* for each property a deliberately broken component fails that property with its message;
* a dropout-like third-party layer and a noisy third-party optimizer, using the documented streams, give
  the same numbers alone, vectorised and with --no-vectorize;
* the scaffold of every kind passes its checks in-process (fast) and, installed into a fresh venv, its own
  tests and ``expsvc plugins`` (slow).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import expsvc
from expsvc import Dataset, Layer, Loss, Metric, Optimizer, Scheduler
from expsvc.core.data import DataSplit
from expsvc.plugins import load_plugins
from expsvc.registry import KINDS
from expsvc.scaffold import SCAFFOLD_KINDS, files_for, write
from expsvc.testing import (
    FIXES,
    ConformanceError,
    check_dataset,
    check_layer,
    check_loss,
    check_metric,
    check_optimizer,
    check_scheduler,
    run_checks,
)
from tests.conftest import REPO, run_cli

# ------------------------------------------------------------------------------------ dogfood: built-ins

EXAMPLES = {
    "linear": "linear(3)", "conv2d": "conv2d(4, 3)", "max_pool2d": "max_pool2d(2)", "avg_pool2d": "avg_pool2d(2)",
    "cosine": "cosine(t_max=5)", "step": "step(step_size=2)", "file": "file('data.csv')",
}
"""Arguments for the built-ins that have required ones (a new one fails the dogfood test until listed)."""


def _builtins() -> list[tuple[str, str]]:
    from expsvc.builtins import DEFAULT_PLUGINS

    system = load_plugins(plugins_dir=os.devnull)
    return sorted({(reg.kind, reg.name) for kind in KINDS for reg in system.registry.registrations(kind)
                   if reg.plugin in DEFAULT_PLUGINS})


@pytest.mark.parametrize(("kind", "name"), _builtins(), ids=[f"{k}-{n}" for k, n in _builtins()])
def test_every_builtin_passes_the_conformance_checks(kind: str, name: str, tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a,b,y\n1,2,0.5\n2,3,0.1\n3,1,0.7\n4,4,0.2\n5,0,0.9\n")
    import inspect

    from expsvc.plugins import get_system

    cls = get_system().registry.resolve(kind, name).cls
    required = [p.name for p in inspect.signature(cls).parameters.values()
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    assert not required or name in EXAMPLES, f"{kind} {name!r} has required arguments {required}: add it to EXAMPLES"
    findings = run_checks(kind, EXAMPLES.get(name, name))
    failed = [f.message() for f in findings if not f.passed]
    assert not failed, "\n".join(failed)
    assert len([f for f in findings if not f.skipped]) >= 3


def test_the_example_plugin_file_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPSVC_PLUGINS_DIR", str(REPO / "plugins"))
    findings = check_layer("softplus(beta=2)")
    assert {f.property for f in findings} >= {"gradcheck", "replica independence", "dtype", "pickling"}


# --------------------------------------------------------------------------- broken components, one each


class Scale(Layer):
    """A correct reference: ``y = x·w`` with a per-feature weight, and dropout-like noise from self.random."""

    name = "scale"

    def __init__(self, p: float = 0.25) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p < 1:
            raise ValueError(f"p must be in [0, 1), got {p!r}")
        self.p = float(p)

    def build_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        self.weight = self.param("weight", in_shape, _ones)
        return in_shape

    def mask(self, x: np.ndarray, train: bool) -> np.ndarray:
        if not train:
            return np.ones_like(x)
        keep = self.random.uniform(x.shape[1:], x.dtype) >= self.p
        return keep.astype(x.dtype) / np.asarray(1 - self.p, dtype=x.dtype)

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        self.x, self.m = x, self.mask(x, train)
        return x * self.m * self.weight.value[:, None]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.weight.grad += np.sum(dy * self.x * self.m, axis=1)
        return dy * self.m * self.weight.value[:, None]


def _ones(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return 1.0 + 0.1 * rng.standard_normal(shape)


class OwnGenerator(Scale):
    def __init__(self, p: float = 0.25) -> None:
        super().__init__(p)
        self.rng = np.random.default_rng(0)

    def mask(self, x: np.ndarray, train: bool) -> np.ndarray:
        keep = self.rng.random(x.shape) >= self.p
        return keep.astype(x.dtype) / np.asarray(1 - self.p, dtype=x.dtype)


class GlobalRandom(Scale):
    def mask(self, x: np.ndarray, train: bool) -> np.ndarray:
        return (np.random.random(x.shape) >= self.p).astype(x.dtype)


class CrossReplicaMean(Scale):
    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        return super().forward(x - x.mean(axis=0, keepdims=True), train)


class Float64Upcast(Scale):
    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        return super().forward(x, train) * np.ones(x.shape)


class WrongBackward(Scale):
    def backward(self, dy: np.ndarray) -> np.ndarray:
        return 2 * super().backward(dy)


class MutatesInput(Scale):
    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        y = super().forward(x.copy(), train)
        x *= 0.5
        return y


class Unpicklable(Scale):
    def __init__(self, p: float = 0.25) -> None:
        super().__init__(p)
        self.lock = threading.Lock()


class WrongShape(Scale):
    def build_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        super().build_shape(in_shape)
        return (in_shape[0] + 1, *in_shape[1:])


class Unvalidated(Scale):
    def __init__(self, p=0.25) -> None:  # no hint, no check: the point of this broken layer
        Layer.__init__(self)
        self.p = p


@pytest.mark.parametrize(("cls", "prop", "words"), [
    (OwnGenerator, "replica independence", "R = 3 differs from 3 runs of R = 1"),
    (GlobalRandom, "determinism", "two instances with the same seeds give different numbers"),
    (CrossReplicaMean, "replica independence", "differs"),
    (Float64Upcast, "dtype", "float32 input gives a float64 output"),
    (WrongBackward, "gradcheck", "is off by"),
    (MutatesInput, "no input mutation", "forward() wrote into its input x"),
    (Unpicklable, "pickling", "does not pickle"),
    (WrongShape, "shapes", "reports output"),
    (Unvalidated, "arguments", "p='not-a-value' was accepted"),
], ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_a_broken_layer_fails_its_property_with_a_message_saying_how_to_fix(cls: type, prop: str,
                                                                            words: str) -> None:
    with pytest.raises(ConformanceError) as info:
        check_layer(cls)
    failed = {f.property: f for f in info.value.findings if not f.passed}
    assert prop in failed, str(info.value)
    assert words in failed[prop].problem, failed[prop].problem  # type: ignore[operator]
    assert f"{prop} failed: " in str(info.value) and FIXES[prop] in str(info.value)


def test_the_reference_layer_passes_every_property() -> None:
    findings = check_layer(Scale, p=0.3)
    assert all(f.passed and not f.skipped for f in findings)
    assert len(findings) == 8


class Halve(Optimizer):
    """A correct reference with Gaussian noise from self.random and momentum state."""

    name = "halve"

    def bind(self, buffer: Any) -> None:
        super().bind(buffer)
        self.m = np.zeros_like(buffer.value)

    def update(self) -> np.ndarray:
        assert self.buffer is not None
        return self.buffer.grad + 0.01 * self.random.normal(self.buffer.value.shape[1:], self.buffer.dtype)

    def step(self) -> None:
        assert self.buffer is not None
        self.m *= 0.5
        self.m += self.update()
        self.buffer.value -= self.lr * self.m


class GlobalNormClip(Halve):
    def update(self) -> np.ndarray:
        assert self.buffer is not None
        return self.buffer.grad / max(1.0, float(np.linalg.norm(self.buffer.grad)))


class Float64State(Halve):
    def bind(self, buffer: Any) -> None:
        super().bind(buffer)
        self.m = np.zeros(buffer.value.shape)

    def step(self) -> None:
        assert self.buffer is not None
        self.m = 0.5 * self.m + self.update()
        self.buffer.value -= (self.lr * self.m).astype(self.buffer.dtype)


class MutatesGrad(Halve):
    def update(self) -> np.ndarray:
        assert self.buffer is not None
        self.buffer.grad *= 0.9
        return self.buffer.grad


class OwnNoise(Halve):
    def update(self) -> np.ndarray:
        assert self.buffer is not None
        return self.buffer.grad + 0.01 * np.random.default_rng().standard_normal(self.buffer.value.shape)


class FrozenLr(Halve):
    def __init__(self, lr: float = 1e-3) -> None:
        super().__init__(lr)
        self.base = float(lr)

    def step(self) -> None:
        assert self.buffer is not None
        self.buffer.value -= self.base * self.update()


class PerReplicaLr(Halve):
    """Declares the grid contract for ``lr`` (a column ``(R, 1)`` or a number) and keeps it."""

    per_replica = ("lr",)

    def __init__(self, lr: Any = 1e-3) -> None:
        self.lr = lr if isinstance(lr, np.ndarray) else float(lr)
        self.buffer = None


class IgnoresColumn(PerReplicaLr):
    def step(self) -> None:
        assert self.buffer is not None
        lr = float(np.ravel(self.lr)[0])  # the first replica's value for everyone
        self.m *= 0.5
        self.m += self.update()
        self.buffer.value -= lr * self.m


@pytest.mark.parametrize(("cls", "prop", "words"), [
    (GlobalNormClip, "replica independence", "R = 3 differs from 3 runs of R = 1"),
    (Float64State, "dtype", "keeps float64 state 'm'"),
    (MutatesGrad, "no input mutation", "wrote into buffer.grad"),
    (OwnNoise, "determinism", "different numbers"),
    (FrozenLr, "learning rate", "with lr set to 0"),
    (IgnoresColumn, "grid contract", "lr given per replica as"),
], ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_a_broken_optimizer_fails_its_property(cls: type, prop: str, words: str) -> None:
    with pytest.raises(ConformanceError) as info:
        check_optimizer(cls)
    failed = {f.property: f for f in info.value.findings if not f.passed}
    assert prop in failed and words in str(failed[prop].problem), str(info.value)


def test_the_reference_optimizers_pass_and_the_grid_contract_is_checked_when_declared() -> None:
    check_optimizer(Halve)
    findings = {f.property: f for f in check_optimizer(PerReplicaLr)}
    assert findings["grid contract"].passed and not findings["grid contract"].skipped
    assert findings["learning rate"].passed


class MeanOverReplicas(Loss):
    name = "mean_over_replicas"

    def forward(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        self.d = pred - target
        return np.mean(self.d**2, axis=(1, 2))

    def backward(self) -> np.ndarray:
        return 2 * self.d / self.d[0].size / self.d.shape[0]  # the mean over replicas, not their sum


class Float64Loss(Loss):
    name = "float64_loss"

    def forward(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        self.d = pred.astype(np.float64) - target
        return np.mean(self.d**2, axis=(1, 2))

    def backward(self) -> np.ndarray:
        return 2 * self.d / self.d[0].size


@pytest.mark.parametrize(("cls", "prop", "words"), [
    (MeanOverReplicas, "replica independence", "gradient of the sum over replicas"),
    (Float64Loss, "dtype", "float32 predictions give a float64"),
])
def test_a_broken_loss_fails_its_property(cls: type, prop: str, words: str) -> None:
    with pytest.raises(ConformanceError) as info:
        check_loss(cls)
    failed = {f.property: f for f in info.value.findings if not f.passed}
    assert prop in failed and words in str(failed[prop].problem), str(info.value)


class Counting(Scheduler):
    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def lr(self, base_lr: float, epoch: int) -> float:
        self.calls += 1
        return base_lr / self.calls


class Decays(Scheduler):
    name = "decays"

    def lr(self, base_lr: float, epoch: int) -> float:
        return base_lr - 0.02 * epoch  # negative from epoch 6


class GlobalNoiseData(Dataset):
    name = "global_noise"

    def load(self) -> DataSplit:
        x = np.random.random((10, 2))
        return DataSplit(x[:8], x[:8, :1], x[8:], x[8:, :1], "regression")


class NotASplit(Dataset):
    name = "not_a_split"

    def load(self) -> Any:
        return {"x": np.zeros(3)}


class PooledMetric(Metric):
    name = "pooled"
    tasks = ("regression",)

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        err = np.abs(pred - target)
        return np.full(pred.shape[0], err.mean())  # pooled over every replica


def test_broken_schedules_datasets_and_metrics_fail_their_property() -> None:
    for check, cls, prop, words in [
        (check_scheduler, Counting, "stateless", "depends on earlier calls"),
        (check_scheduler, Decays, "value", "a learning rate is a finite number >= 0"),
        (check_dataset, GlobalNoiseData, "determinism", "load different data"),
        (check_dataset, NotASplit, "split", "returned dict, not a DataSplit"),
        (check_metric, PooledMetric, "replica independence", "R = 3 gives"),
    ]:
        with pytest.raises(ConformanceError) as info:
            check(cls)
        failed = {f.property: f for f in info.value.findings if not f.passed}
        assert prop in failed and words in str(failed[prop].problem), str(info.value)


def test_a_spec_string_resolves_through_the_plugins_and_a_bad_one_is_one_line() -> None:
    assert check_layer("dropout(0.3)")
    from expsvc.errors import ExpsvcError

    with pytest.raises(ExpsvcError, match=r"unknown layer or activation 'dropoutt'.*did you mean 'dropout'"):
        check_layer("dropoutt")
    with pytest.raises(TypeError, match=r"check_layer takes a subclass of expsvc\.Layer"):
        check_layer(Halve)


def test_the_pytest_plugin_gives_every_suite_the_expsvc_check_fixture(expsvc_check: Any) -> None:
    """expsvc is installed here, so its ``pytest11`` entry point has loaded ``expsvc.testing`` as a plugin."""
    import importlib.metadata

    assert [e.value for e in importlib.metadata.entry_points(group="pytest11") if e.name == "expsvc"] == [
        "expsvc.testing"]
    assert len(expsvc_check(Scale)) == 8
    with pytest.raises(ConformanceError, match="pickling failed"):
        expsvc_check(Unpicklable)


# ----------------------------------------------------------------------------------- randomness for plugins

STOCHASTIC_PLUGIN = '''
import numpy as np
from expsvc import Layer, Optimizer, hookimpl

__version__ = "0.3.0"


class MyDropout(Layer):
    """A third-party dropout: its mask comes from self.random, one stream per replica."""

    name = "my_dropout"

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x, train=True):
        if not train:
            self.mask = None
            return x
        keep = self.random.uniform(x.shape[1:], x.dtype) >= self.p
        self.mask = keep.astype(x.dtype) / np.asarray(1 - self.p, dtype=x.dtype)
        return x * self.mask

    def backward(self, dy):
        return dy if self.mask is None else dy * self.mask


class NoisySGD(Optimizer):
    """SGD with Gaussian gradient noise from self.random (the optimizer's own per-replica stream)."""

    name = "noisy_sgd"

    def step(self):
        noise = self.random.normal(self.buffer.value.shape[1:], self.buffer.dtype)
        self.buffer.value -= self.lr * (self.buffer.grad + 0.1 * noise)


@hookimpl
def register_layers(register):
    register(MyDropout)


@hookimpl
def register_optimizers(register):
    register(NoisySGD)
'''


def test_stochastic_plugins_give_the_same_numbers_alone_vectorised_and_not(tmp_path: Path) -> None:
    """Done-when 3: a dropout-like plugin layer (and a noisy optimizer) on the documented streams: 3 seeds
    vectorised, the same with --no-vectorize, and each seed alone give identical metrics, bit for bit."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "stochastic.py").write_text(STOCHASTIC_PLUGIN)
    spec = dict(dataset="moons(n_train=60, n_test=30)", model="linear(8), tanh, my_dropout(0.3), linear(1)",
                optimizer="noisy_sgd", lr=0.1, epochs=4, batch_size=16, shuffle=True, tol=0, jobs=1,
                db=f"sqlite:///{tmp_path / 'runs.db'}")

    def outcomes(result: Any) -> dict[int, tuple[Any, ...]]:
        found = {}
        for group in result.groups:
            for o in group.outcomes:
                found[o.seed] = (o.final_loss, tuple(sorted(o.metrics.items())))
        return found

    together = outcomes(expsvc.run(seeds=[5, 6, 7], **spec))
    apart = outcomes(expsvc.run(seeds=[5, 6, 7], vectorize=False, **spec))
    alone = {}
    for s in (5, 6, 7):
        alone.update(outcomes(expsvc.run(seeds=[s], **spec)))
    assert together == apart == alone
    assert len({v[0] for v in together.values()}) == 3  # the seeds differ: the check is not vacuous
    baseline = outcomes(expsvc.run(seeds=[5, 6, 7], **{**spec, "model": "linear(8), tanh, linear(1)",
                                                       "optimizer": "sgd"}))
    assert baseline != together  # the plugins did draw (and change the numbers)


def test_the_optimizer_stream_is_a_new_sibling_that_changes_no_existing_stream() -> None:
    from expsvc.core.rng import (
        COMPONENT_KEY,
        OPTIMIZER_KEY,
        RUN_DOMAIN,
        ReplicaRandom,
        component_roots,
        replica_streams,
    )

    init, order = replica_streams([42])
    streams = [init[0].random(3), order[0].random(3),
               ReplicaRandom.for_component(component_roots([42]), 0).uniform((3,))[0]]
    opt = ReplicaRandom.for_optimizer(component_roots([42])).uniform((3,))[0]
    expected_opt = np.random.default_rng(np.random.SeedSequence(42, spawn_key=(RUN_DOMAIN, OPTIMIZER_KEY))).random(3)
    np.testing.assert_array_equal(opt, expected_opt)
    assert OPTIMIZER_KEY not in (0, 1, COMPONENT_KEY)
    assert all(not np.array_equal(opt, s) for s in streams)


def test_a_dataset_draws_from_its_own_seed() -> None:
    ds = Dataset(seed=9)
    np.testing.assert_array_equal(ds.rng().random(4), np.random.default_rng(9).random(4))


# ------------------------------------------------------------------------------------------- the CLI


def test_check_cli_passes_a_builtin_fails_a_broken_plugin_and_refuses_bad_input(tmp_path: Path) -> None:
    ok = run_cli("check", "dropout(0.3)", cwd=tmp_path)
    assert ok.returncode == 0 and "check dropout(0.3) (layer, plugin expsvc.builtins.layers): passed 8" in ok.stdout
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "bad.py").write_text(textwrap.dedent('''
        import numpy as np
        from expsvc import Layer, hookimpl

        class Doubler(Layer):
            name = "doubler"
            def forward(self, x, train=True):
                return 2 * x
            def backward(self, dy):
                return dy

        @hookimpl
        def register_activations(register):
            register(Doubler)
    '''))
    bad = run_cli("check", "doubler", cwd=tmp_path)
    assert bad.returncode == 1, bad.stderr
    assert "gradcheck             FAILED" in bad.stdout and "fix gradcheck: make backward()" in bad.stdout
    for args, words in [(["check", "nosuch"], "unknown layer"), (["check", "tanh", "--shape", "0"], "not a shape"),
                        (["check", "adamw", "--shape", "3"], "--shape applies to layers"),
                        (["check", "linear(100000000000)"], "numeric differentiation"),
                        (["gradcheck", "adamw"], "'adamw' is an optimizer, which has no backward to check; "
                                                 "`expsvc check 'adamw'` runs its conformance checks")]:
        res = run_cli(*args, cwd=tmp_path)
        assert res.returncode == 2 and res.stderr.startswith("error: ") and words in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


def test_plugin_new_writes_a_package_and_never_overwrites(tmp_path: Path) -> None:
    res = run_cli("plugin", "new", "lion", "--kind", "optimizer", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    folder = tmp_path / "expsvc-lion"
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "README.md", "expsvc_lion.py", "pyproject.toml", "tests/test_lion.py"]
    assert '[project.entry-points.expsvc]\nlion = "expsvc_lion"' in (folder / "pyproject.toml").read_text()
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    for args, words in [(["plugin", "new", "lion", "--kind", "optimizer"], "not empty"),
                        (["plugin", "new", "lion", "--dir", "expsvc-lion/README.md"], "is a file"),
                        (["plugin", "new", "Bad-Name"], "plugin name 'Bad-Name' is not allowed"),
                        (["plugin", "new", "x", "--kind", "bogus"], "--kind 'bogus' is not a kind"),
                        (["plugin", "new", "tanh", "--kind", "activation"], "already registered")]:
        again = run_cli(*args, cwd=tmp_path)
        assert again.returncode == 2 and words in again.stderr, again.stderr
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["expsvc-lion"]


@pytest.mark.parametrize("kind", SCAFFOLD_KINDS)
def test_each_scaffold_example_passes_its_checks_in_process(kind: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "pkg", f"demo_{kind}", kind)
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    import importlib

    module = importlib.import_module(f"expsvc_demo_{kind}")
    try:
        cls = next(v for v in vars(module).values() if isinstance(v, type) and v.__module__ == module.__name__)
        findings = run_checks(kind, cls)
        assert all(f.passed for f in findings), [f.message() for f in findings if not f.passed]
        assert pickle.loads(pickle.dumps(cls()))
    finally:
        sys.modules.pop(module.__name__, None)


@pytest.mark.slow
def test_every_scaffold_installs_into_a_fresh_venv_passes_its_tests_and_is_listed(tmp_path: Path) -> None:
    """Done-when 1: one fresh venv sees this environment's packages (expsvc from this tree, numpy, pytest...)
    through a ``.pth`` file, so nothing but the build backend is fetched; all seven scaffolds are pip-installed
    into it; each passes its own tests unchanged; ``expsvc plugins`` lists each with version 0.1.0."""
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    outer = sysconfig.get_paths()["purelib"]  # added as a site dir: its own .pth files (expsvc editable) apply
    (Path(site) / "outer-environment.pth").write_text(f"import site; site.addsitedir({outer!r})\n")
    folders = []
    for kind in SCAFFOLD_KINDS:
        folder = tmp_path / f"expsvc-v{kind}"
        write(folder, f"v{kind}", kind)
        folders.append(folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPSVC_", "PYTHON"))}
    pip = [py, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "setuptools>=68", "wheel"], check=True, env=env, cwd=tmp_path, timeout=600)
    subprocess.run([*pip, "--no-deps", "--no-build-isolation", *[str(f) for f in folders]], check=True, env=env,
                   cwd=tmp_path, timeout=600)
    tests = subprocess.run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *[str(f / "tests") for f in folders]],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert f"{2 * len(SCAFFOLD_KINDS)} passed" in tests.stdout
    listed = subprocess.run([py, "-m", "expsvc", "plugins", "--json"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    import json

    infos = {p["name"]: p for p in json.loads(listed.stdout)}
    for kind in SCAFFOLD_KINDS:
        info = infos[f"v{kind}"]
        assert (info["status"], info["version"], info["package"]) == ("ok", "0.1.0", f"expsvc-v{kind}")
        assert info["components"] == {kind: [f"v{kind}"]}


def test_scaffold_files_are_complete_for_every_kind() -> None:
    for kind in SCAFFOLD_KINDS:
        files = files_for("demo", kind)
        assert set(files) == {"pyproject.toml", "expsvc_demo.py", "tests/test_demo.py", "README.md"}
        assert "$" not in "".join(files.values())  # every placeholder substituted
