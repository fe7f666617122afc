"""The reference experiments in experiments/ reach the outcomes the README documents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import expsvc
from expsvc.runner.api import ExperimentResult
from expsvc.store import RunStore
from tests.conftest import REPO

EXPERIMENTS = REPO / "experiments"


def run(name: str, tmp_path: Path, **overrides: object) -> tuple[ExperimentResult, str]:
    url = f"sqlite:///{tmp_path / 'ref.db'}"
    return expsvc.run(EXPERIMENTS / f"{name}.toml", db=url, jobs=1, **overrides), url


def loss_history(url: str, run_id: str) -> np.ndarray:
    with RunStore.open(url) as store:
        return store.history(run_id)[1]


def test_seed_points_adamw_converges_and_beats_mini_bgd(tmp_path: Path) -> None:
    result, url = run("seed_points", tmp_path)
    groups = {g.config.optimizer.name: g for g in result.groups}
    adamw, bgd = groups["adamw"].outcomes, groups["mini_bgd"].outcomes
    assert len(adamw) == len(bgd) == 5
    for o in adamw:  # every AdamW seed converges by the tolerance rule, like the seed article's run
        assert o.status == "finished" and 600 <= o.updates <= 1100
        assert 0.27 <= loss_history(url, o.run_id)[-1] <= 0.31  # the article's figure: the last batch's loss
        assert 0.21 <= o.final_loss <= 0.23  # the full training set's (what compare calls "final loss")
        assert 0.93 <= o.metrics["train_accuracy"] <= 0.95 and o.metrics["test_accuracy"] == 1.0
        assert abs(o.metrics["train_precision"] - 0.94) <= 0.015 and abs(o.metrics["train_recall"] - 0.94) <= 0.015
    for o in bgd:  # plain gradient descent at lr 1e-3 runs out of epochs
        assert o.status == "finished" and o.updates == 1200
    paired = np.array([b.final_loss - a.final_loss for a, b in zip(adamw, bgd, strict=True)])
    assert (paired > 0).all()  # AdamW lower in 5 of 5 seeds


def test_seed_two_layer_relu_loss_falls_by_orders_of_magnitude(tmp_path: Path) -> None:
    result, url = run("seed_two_layer_relu", tmp_path)
    (o,) = result.groups[0].outcomes
    assert o.status == "finished" and o.updates == 500
    losses = loss_history(url, o.run_id)
    assert losses[0] > 1e6 and losses[-1] < 1e-2
    assert losses[-1] / losses[0] < 1e-8


def test_seed_linear_predicts_8_at_4(tmp_path: Path) -> None:
    result, url = run("seed_linear", tmp_path)
    (o,) = result.groups[0].outcomes
    model = expsvc.load_model(o.run_id, db=url)
    assert model.data.x_test.tolist() == [[4.0]]
    assert o.updates == 300  # 3 samples x 100 epochs, one update each
    assert model.outputs(np.array([[4.0]]))[0, 0] == pytest.approx(8.0, abs=1e-6)
    before = expsvc.load_model(o.run_id, db=url)  # the initial weight was 1.0: predict(4) = 4 before
    before.model.parameters()[0].value[0] = 1.0
    assert before.outputs(np.array([[4.0]]))[0, 0] == 4.0


def test_seed_quadratic_moves_from_21_towards_8(tmp_path: Path) -> None:
    result, url = run("seed_quadratic", tmp_path)
    (o,) = result.groups[0].outcomes
    model = expsvc.load_model(o.run_id, db=url)
    x4 = model.data.x_test  # features [x^2, x] at x = 4
    assert x4.tolist() == [[16.0, 4.0]]
    assert 16 + 4 + 1 == 21  # w1 = w2 = b = 1 before training
    after = model.outputs(x4)[0, 0]
    assert abs(after - 8.0) < 1.0 and o.status == "finished"
    train_pred = model.outputs(model.data.x_train)[:, 0]
    np.testing.assert_allclose(train_pred, [2.0, 4.0, 6.0], atol=0.25)  # measured 2.16, 3.81, 5.93


def test_digits_cnn_test_accuracies_hold(tmp_path: Path) -> None:
    """The README's digits CNN row: SGD with momentum ≈ 0.980, Adam ≈ AdamW ≈ 0.966 test accuracy (5 seeds,
    359 test images), every run finished, SGD ahead of both in every seed."""
    result, _ = run("digits_cnn", tmp_path)
    acc = {g.config.optimizer.name: g.values("test_accuracy") for g in result.groups}
    assert set(acc) == {"sgd", "adam", "adamw"} and all(v.size == 5 for v in acc.values())
    assert result.statuses() == {"finished": 15}
    documented = {"sgd": (0.980, 0.975, 0.992), "adam": (0.966, 0.961, 0.970), "adamw": (0.966, 0.961, 0.970)}
    for name, (mean, low, high) in documented.items():
        assert abs(acc[name].mean() - mean) <= 0.004, (name, acc[name])
        assert low - 0.003 <= acc[name].min() and acc[name].max() <= high + 0.003, (name, acc[name])
    assert (acc["sgd"] > acc["adam"]).all() and (acc["sgd"] > acc["adamw"]).all()


def test_seed_points_tuned_study_outcome(tmp_path: Path) -> None:
    """experiments/seed_points_tuned.toml (the README's figures): each lr tuned on validation data, then 10 fresh
    seeds on test data.  Tuned, Mini-BGD and AdamW no longer differ in test loss."""
    from typer.testing import CliRunner

    from expsvc.analysis.compare import compare_experiments
    from expsvc.cli import build_app
    from expsvc.store.studies import get_study

    url = f"sqlite:///{tmp_path / 'tuned.db'}"
    res = CliRunner().invoke(build_app(), ["tune", str(EXPERIMENTS / "seed_points_tuned.toml"), "--db", url, "-q",
                                           "-j", "1"])
    assert res.exit_code == 0, res.output
    with RunStore.open(url) as store:
        study = get_study(store, "seed_points_tuned")
        choices = {k: c["settings"]["lr"] for k, c in study.selection["choices"].items()}  # type: ignore[index]
        assert choices == {"mini_bgd": pytest.approx(0.1), "adamw": pytest.approx(1.0)}
        exp = store.resolve_experiment("seed_points_tuned-confirmation")
        result, _ = compare_experiments(store, {exp.id: exp.name}, metrics=["test_loss", "test_accuracy"])
    groups = {g.label.split(",")[0].removeprefix("optimizer="): g for g in result.groups}
    bgd, adamw = groups["mini_bgd"], groups["adamw"]
    assert bgd.seeds == adamw.seeds == list(range(3, 13))
    assert 0.07 <= bgd.summaries["test loss"].mean <= 0.085 and 0.07 <= adamw.summaries["test loss"].mean <= 0.09
    loss = adamw.comparisons["test loss"]
    assert loss is not None and loss.low < 0 < loss.high and loss.p > 0.5  # no difference in test loss
    assert bgd.summaries["test accuracy"].mean == 1.0 and 0.99 <= adamw.summaries["test accuracy"].mean < 1.0
