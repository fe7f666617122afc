"""Shaped layers (issue 12): the shape contract, conv/pool/flatten/dropout/batch norm/glu/bce, per-replica
randomness, eval mode, image data, and shape errors caught before training."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import expsvc
from expsvc.builtins.activations import GLU, ReLU, Tanh
from expsvc.builtins.datasets import Digits, FileDataset
from expsvc.builtins.layers import AvgPool2d, BatchNorm, Conv2d, Dropout, Flatten, Linear, MaxPool2d
from expsvc.builtins.losses import BCE, CrossEntropy
from expsvc.builtins.optimizers import AdamW
from expsvc.core import DataSplit, Layer, ReplicaRandom, Sequential, ShapeError, Trainer, gradcheck, replica_streams
from expsvc.core.rng import RUN_DOMAIN, component_roots
from expsvc.core.train import evaluate
from tests.conftest import run_cli

TOL = 1e-7

SHAPED_CASES = [
    pytest.param(Conv2d(3, 3), None, id="conv2d"),
    pytest.param(Conv2d(3, 3, padding=1), (2, 4, 5), id="conv2d_padding"),
    pytest.param(Conv2d(2, (3, 2), stride=2, padding=1, bias=False), (2, 7, 6), id="conv2d_stride_pad_nobias"),
    pytest.param(Conv2d(2, 2, stride=(1, 2)), (1, 4, 5), id="conv2d_stride_pair"),
    pytest.param(MaxPool2d(2), None, id="max_pool2d"),
    pytest.param(MaxPool2d(3, stride=2, padding=1), (2, 5, 5), id="max_pool2d_overlap_pad"),
    pytest.param(MaxPool2d(2), (1, 5, 5), id="max_pool2d_odd"),
    pytest.param(AvgPool2d(2), None, id="avg_pool2d"),
    pytest.param(AvgPool2d(3, 2, 1), (2, 5, 5), id="avg_pool2d_overlap_pad"),
    pytest.param(Flatten(), None, id="flatten"),
    pytest.param(Dropout(0.3), None, id="dropout"),
    pytest.param(Dropout(0.5), (2, 3, 3), id="dropout_image"),
    pytest.param(BatchNorm(), None, id="batch_norm_1d"),
    pytest.param(BatchNorm(), (3, 4), id="batch_norm_1d_length"),
    pytest.param(BatchNorm(momentum=0.3, eps=1e-3), (2, 3, 3), id="batch_norm_2d"),
    pytest.param(BatchNorm(affine=False), (2, 3, 3), id="batch_norm_2d_no_affine"),
    pytest.param(GLU(), None, id="glu"),
    pytest.param(GLU(), (2, 3, 4), id="glu_image"),
]


@pytest.mark.parametrize("layer, shape", SHAPED_CASES)
def test_shaped_layers_pass_gradcheck(layer: Layer, shape: tuple[int, ...] | None) -> None:
    """Input and parameter gradients (training mode) agree with central differences."""
    result = gradcheck(layer, in_shape=shape, replicas=2, batch=3)
    assert result.passed, result
    assert set(result.errors) == {"input"} | {p.name for p in layer.parameters()}


@pytest.mark.parametrize("loss", [BCE(), BCE(weight=[1.0, 2.0, 0.5], reduction="sum")], ids=["bce", "bce_weight_sum"])
def test_bce_passes_gradcheck(loss: BCE) -> None:
    assert gradcheck(loss).passed


def test_dropout_masks_come_from_each_replicas_own_stream() -> None:
    """Replica r's mask depends on replica r's seed only; eval mode is the identity; p is the drop rate."""
    x = np.ones((3, 200, 50))

    def masks(seeds: list[int]) -> np.ndarray:
        layer = Dropout(0.25)
        Sequential([layer]).build(50, replica_streams(seeds)[0], random_roots=component_roots(seeds))
        return layer.forward(x)

    together = masks([7, 8, 9])
    for r, seed in enumerate([7, 8, 9]):
        np.testing.assert_array_equal(together[r], masks([seed])[0])
    assert not np.array_equal(together[0], together[1])
    assert set(np.unique(together)) == {0.0, 1 / 0.75}
    assert abs((together == 0).mean() - 0.25) < 0.01
    layer = Dropout(0.25)
    Sequential([layer]).build(50, [np.random.default_rng(0)])
    assert layer.forward(x[:1], train=False) is x[:1] or np.array_equal(layer.forward(x[:1], train=False), x[:1])


def test_component_streams_leave_init_and_order_streams_unchanged() -> None:
    """The init and batch-order streams are the run seed's children 0 and 1, exactly as before components had
    streams; component streams are child 2, one grandchild per layer."""
    init, order = replica_streams([5])
    a, b = np.random.SeedSequence(5, spawn_key=(RUN_DOMAIN,)).spawn(2)
    assert init[0].random() == np.random.default_rng(a).random()
    assert order[0].random() == np.random.default_rng(b).random()
    layer3 = ReplicaRandom.for_component(component_roots([5]), 3).generators[0].random()
    expected = np.random.default_rng(np.random.SeedSequence(5, spawn_key=(RUN_DOMAIN, 2, 3))).random()
    assert layer3 == expected


def cnn(dropout: bool = True) -> list[Layer]:
    layers: list[Layer] = [Conv2d(4, 3, padding=1), BatchNorm(), ReLU(), MaxPool2d(2), Flatten()]
    return [*layers, *([Dropout(0.3)] if dropout else []), Linear(10)]


def small_digits(n_train: int = 160, n_test: int = 40) -> DataSplit:
    d = Digits().load()
    return DataSplit(d.x_train[:n_train], d.y_train[:n_train], d.x_test[:n_test], d.y_test[:n_test], "multiclass", 10)


def train_cnn(seeds: list[int], data: DataSplit, dtype: str = "float64", epochs: int = 2) -> tuple[Any, Sequential]:
    init, order = replica_streams(seeds)
    model = Sequential(cnn()).build(data.input_shape, init, dtype=dtype, random_roots=component_roots(seeds))
    trainer = Trainer(model, CrossEntropy(), AdamW(lr=0.01), data, order, epochs=epochs, batch_size=32, shuffle=True)
    return trainer.run(), model


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_vectorised_cnn_with_dropout_and_batch_norm_equals_runs_one_by_one(dtype: str) -> None:
    """5 seeds as one R = 5 computation give every replica's losses, parameters and running statistics bit
    for bit as 5 single runs (conv, batch norm, max pool, dropout, linear; shuffled batches; last batch short)."""
    data, seeds = small_digits(150), [3, 1, 4, 1 + 4, 9]
    together, model = train_cnn(seeds, data, dtype)
    for r, seed in enumerate(seeds):
        alone, single = train_cnn([seed], data, dtype)
        np.testing.assert_array_equal(together.history[r], alone.history[0])
        np.testing.assert_array_equal(model.buffer.value[r], single.buffer.value[0])  # type: ignore[union-attr]
        np.testing.assert_array_equal(model.buffer.state[r], single.buffer.state[0])  # type: ignore[union-attr]
    assert model.buffer.state.shape == (5, 8)  # type: ignore[union-attr]  # running mean and var of 4 channels


def test_evaluation_runs_in_eval_mode() -> None:
    """evaluate() uses the running statistics and no dropout: the same inputs give the same loss twice, and it
    equals a hand-made eval forward; train-mode outputs differ."""
    data = small_digits()
    _, model = train_cnn([0], data)
    first = evaluate(model, CrossEntropy(), data.x_test, data.y_test, {})
    again = evaluate(model, CrossEntropy(), data.x_test, data.y_test, {})
    assert first["loss"][0] == again["loss"][0]
    x = data.x_test[None]
    assert np.array_equal(model.forward(x, train=False), model.forward(x, train=False))
    assert not np.array_equal(model.forward(x, train=True), model.forward(x, train=False))


def test_batch_norm_running_statistics_follow_torch_update_rule() -> None:
    """momentum 0.1, unbiased running variance; eval normalises with them."""
    layer = BatchNorm()
    Sequential([layer]).build((2, 2, 2), [np.random.default_rng(0)])
    x = np.random.default_rng(1).normal(3.0, 2.0, (1, 5, 2, 2, 2))
    layer.forward(x)
    values = x[0].transpose(1, 0, 2, 3).reshape(2, -1)
    np.testing.assert_allclose(layer.running_mean.value[0], 0.1 * values.mean(1), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var.value[0], 0.9 + 0.1 * values.var(1, ddof=1), rtol=1e-12)
    y = layer.forward(x, train=False)
    mean, var = layer.running_mean.value[0][:, None, None], layer.running_var.value[0][:, None, None]
    expected = (x - mean) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-12)


class WidthOnly(Layer):
    """A third-party layer written against the width contract: ``build(in_features) -> int``."""

    name = "width_only"

    def build(self, in_features: int) -> int:
        self.w = self.param("w", (in_features,), lambda rng, shape: np.ones(shape))
        return in_features

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        return x * self.w.value[:, None, :]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * self.w.value[:, None, :]


def test_width_contract_layers_keep_working_and_refuse_images_in_one_line() -> None:
    model = Sequential([WidthOnly(), Linear(3), Tanh()]).build(4, [np.random.default_rng(0)])
    assert model.shapes == [(4,), (4,), (3,), (3,)] and model.out_features == 3
    with pytest.raises(ShapeError) as err:
        Sequential([Conv2d(2, 3), WidthOnly()]).build((1, 5, 5), [np.random.default_rng(0)])
    text = str(err.value)
    assert "layer 2" in text and "(2, 3, 3)" in text and "flatten" in text and "build_shape" in text
    assert "\n" not in text


def spec_toml(tmp_path: Path, model: str, dataset: str = "digits") -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(f'dataset = "{dataset}"\nmodel = "{model}"\nloss = "cross_entropy"\noptimizer = "adamw"\n'
                    "seeds = 1\nepochs = 1\n")
    return path


@pytest.mark.parametrize(
    "model, words",
    [
        pytest.param("flatten, linear(10), conv2d(4, 3)", ["layer 3", "'conv2d(4, 3)'", "(10,)", "image"],
                     id="conv_after_flat"),
        pytest.param("conv2d(4, 3, padding=1), relu, linear(10)", ["layer 3", "'linear(10)'", "(4, 8, 8)",
                                                                  "flatten"], id="linear_on_image"),
        pytest.param("conv2d(4, 9)", ["layer 1", "'conv2d(4, 9)'", "(1, 8, 8)", "9×9", "larger"],
                     id="kernel_larger_than_input"),
        pytest.param("max_pool2d(2), max_pool2d(2), max_pool2d(2), max_pool2d(2), flatten, linear(10)",
                     ["layer 4", "'max_pool2d(2)'", "(1, 1, 1)", "size 0"], id="pool_to_size_0"),
        pytest.param("flatten, linear(9), glu, linear(10)", ["layer 3", "'glu'", "(9,)", "even"], id="glu_odd"),
    ],
)
def test_shape_errors_are_one_line_before_training(tmp_path: Path, model: str, words: list[str]) -> None:
    """One line naming the layer, its position and both shapes, raised by validation (before any store)."""
    db = tmp_path / "x.db"
    with pytest.raises(expsvc.errors.ExpsvcError) as err:
        expsvc.run(spec_toml(tmp_path, model), db=f"sqlite:///{db}", jobs=1)
    line = str(err.value)
    assert "\n" not in line
    for word in words:
        assert word in line, (word, line)
    assert not db.exists()


def test_shape_error_on_the_command_line_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    proc = run_cli("run", str(spec_toml(tmp_path, "conv2d(4, 3), relu, linear(10)")), "--db", f"sqlite:///{db}",
                   cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "layer 3 'linear(10)'" in lines[0] and "(4, 6, 6)" in lines[0] and "flatten" in lines[0]
    assert not db.exists() and not (tmp_path / "experiments.db").exists()


def test_npz_images_load_with_their_shape_and_train(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((40, 2, 5, 5))
    y = (x[:, 0].mean(axis=(1, 2)) > 0.5).astype(np.int64) + 2 * (x[:, 1].mean(axis=(1, 2)) > 0.5)
    path = tmp_path / "img.npz"
    np.savez(path, x=x, y=y)
    data = FileDataset(str(path)).load()
    assert data.input_shape == (2, 5, 5) and data.task == "multiclass" and len(data.x_test) == 8
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 2, 3)), y=np.zeros(4))
    with pytest.raises(expsvc.errors.ExpsvcError, match=r"\(N, C, H, W\)"):
        FileDataset(str(bad)).load()
    result = expsvc.run(dataset=f"file({str(path)!r})", model="conv2d(3, 3), relu, flatten, linear(4)",
                        loss="cross_entropy", optimizer="adamw", seeds=2, epochs=2,
                        db=f"sqlite:///{tmp_path / 'r.db'}", jobs=1)
    assert result.statuses() == {"finished": 2}


def test_digits_dataset_shapes_and_stratified_fixed_split() -> None:
    images, flat = Digits().load(), Digits(images=False).load()
    assert images.x_train.shape == (1438, 1, 8, 8) and flat.x_train.shape == (1438, 64)
    assert images.x_test.shape == (359, 1, 8, 8) and images.classes == 10
    np.testing.assert_array_equal(images.x_train.reshape(1438, -1), flat.x_train)
    assert images.x_train.min() == 0.0 and images.x_train.max() == 1.0
    counts = np.bincount(images.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 20 % of each class
    np.testing.assert_array_equal(Digits().load().y_train, images.y_train)  # fixed
    assert not np.array_equal(Digits(seed=1).load().y_test, images.y_test)


def test_digits_without_scikit_learn_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real = builtins.__import__

    def no_sklearn(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("sklearn"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(expsvc.errors.ExpsvcError, match=r"pip install 'expsvc\[datasets\]'"):
        Digits().load()


def test_running_statistics_are_saved_and_loaded_with_the_run(tmp_path: Path) -> None:
    """load_model restores batch norm's running statistics, so its predictions equal the run's own eval."""
    url = f"sqlite:///{tmp_path / 'bn.db'}"
    result = expsvc.run(dataset="digits(images=False)", model="linear(16), batch_norm, relu, dropout(0.2), linear(10)",
                        loss="cross_entropy", optimizer="adamw", lr=0.01, seeds=1, epochs=2, batch_size=64,
                        shuffle=True, tol=0, db=url, jobs=1)
    (outcome,) = result.groups[0].outcomes
    loaded = expsvc.load_model(outcome.run_id, db=url)
    stats = [p for p in loaded.model.states()]
    assert [p.name for p in stats] == ["1.batch_norm.running_mean", "1.batch_norm.running_var"]
    assert not np.allclose(stats[0].value[0], 0.0) and not np.allclose(stats[1].value[0], 1.0)
    accuracy = float((loaded.predict(loaded.data.x_test) == loaded.data.y_test).mean())
    assert accuracy == pytest.approx(outcome.metrics["test_accuracy"], abs=1e-12)
    with sqlite3.connect(tmp_path / "bn.db") as con:
        assert con.execute("select count(*) from runs").fetchone()[0] == 1


def test_prediction_in_chunks_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """predict() splits large inputs into chunks (eval mode treats samples independently): same outputs."""
    from expsvc.core import train as train_module

    data = small_digits(64, 40)
    _, model = train_cnn([1, 2], data, epochs=1)
    whole = train_module.predict(model, CrossEntropy(), data.x_test)[0]
    monkeypatch.setattr(train_module, "PREDICT_CHUNK", 16)
    chunked = train_module.predict(model, CrossEntropy(), data.x_test)[0]
    np.testing.assert_allclose(chunked, whole, rtol=1e-12, atol=1e-12)


def test_bce_refuses_non_probabilities_but_lets_nan_diverge() -> None:
    loss = BCE()
    with pytest.raises(ValueError, match="probabilities"):
        loss.forward(np.array([[[1.5]]]), np.array([[[1.0]]]))
    assert np.isnan(loss.forward(np.array([[[np.nan]]]), np.array([[[1.0]]]))[0])
