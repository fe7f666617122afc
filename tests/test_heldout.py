"""Issue 11 (part a): held-out data, per-epoch evaluation and time to target.

The run options ``val_split`` and ``eval_every``: typed, validated, structural, and invisible when off.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from expsvc.cli import build_app
from expsvc.core import SplitEvaluator, Trainer, TrainHooks, evaluate
from expsvc.core.data import DataSplit, hold_out
from expsvc.core.train import Evaluation
from expsvc.errors import ExpsvcError
from expsvc.plugins import PluginSystem, get_system
from expsvc.report.data import reproduce
from expsvc.runner.api import run
from expsvc.runner.build import build, load_dataset
from expsvc.runner.plan import from_spec, structure
from expsvc.runner.spec import ExperimentSpec, RunConfig, SpecValidationError
from expsvc.specs import parse
from expsvc.store import RunStore
from expsvc.store.read import histories


def test_options_are_typed_and_off_by_default() -> None:
    base = ExperimentSpec.from_dict({"optimizer": "adamw"}).configs()[0]
    assert (base.val_split, base.eval_every) == (0.0, 0)
    assert "val_split" not in base.as_dict() and "eval_every" not in base.as_dict()  # stored configs unchanged
    on = ExperimentSpec.from_dict({"optimizer": "adamw", "val_split": 0.2, "eval_every": 3}).configs()[0]
    assert on.as_dict()["val_split"] == 0.2 and on.as_dict()["eval_every"] == 3
    assert RunConfig.from_dict(on.as_dict()) == on and RunConfig.from_dict(base.as_dict()) == base
    assert structure(on) != structure(base) and on.group_key != base.group_key  # they split groups


def test_options_in_a_toml_file_and_the_reproducing_command(tmp_path: Path) -> None:
    path = tmp_path / "e.toml"
    path.write_text('optimizer = "adamw"\nval_split = 0.25\neval_every = 2\n')
    config = ExperimentSpec.from_file(path).configs()[0]
    assert (config.val_split, config.eval_every) == (0.25, 2)
    run_ = type("Run", (), {"params": config.params(), "seed": 0})()
    assert "--val-split 0.25 --eval-every 2" in reproduce([run_], "e")


@pytest.mark.parametrize("values", [{"val_split": 1}, {"val_split": -0.1}, {"val_split": "0.2"},
                                    {"val_split": float("nan")}, {"eval_every": -1}, {"eval_every": 1.5},
                                    {"eval_every": True}])
def test_bad_values_are_one_line(values: dict[str, object]) -> None:
    with pytest.raises(SpecValidationError, match=next(iter(values))):
        ExperimentSpec.from_dict(values)


# ------------------------------------------------------------------------------------------- held-out data


def _system() -> PluginSystem:
    return get_system(None)


def _rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in np.ascontiguousarray(x)}


def test_splits_are_disjoint_and_the_same_for_every_configuration_seed_and_rerun() -> None:
    spec = ExperimentSpec.from_dict({"optimizer": ["mini_bgd", "adamw"], "lr": [0.01, 0.1], "val_split": 0.2,
                                     "dataset": "moons(n_train=100)"})
    system = _system()
    seen = []
    for config in spec.configs():
        for seeds in ([0, 1], [7]):
            data = build(system, config, seeds).data
            seen.append(data)
    first = seen[0]
    assert first.x_val is not None and first.y_val is not None
    assert (len(first.x_train), len(first.x_val), len(first.x_test)) == (80, 20, 100)
    train, val, test = _rows(first.x_train), _rows(first.x_val), _rows(first.x_test)
    assert not (train & val) and not (train & test) and not (val & test)
    whole = load_dataset(system, spec.configs()[0].dataset)[0]  # no split: the training rows, in order
    assert train | val == _rows(whole.x_train)
    kept = np.isin([r.tobytes() for r in whole.x_train], [r.tobytes() for r in first.x_train])
    np.testing.assert_array_equal(whole.x_train[kept], first.x_train)  # order kept
    for other in [*seen[1:], load_dataset(system, spec.configs()[0].dataset, 0.2)[0]]:  # ... and a re-load
        for a, b in zip(_split_arrays(first), _split_arrays(other), strict=True):
            np.testing.assert_array_equal(a, b)
    assert hold_out(whole, 0.0, 0) is whole  # --val-split 0: the data itself


def _split_arrays(data: DataSplit) -> list[np.ndarray]:
    return [a for a in (data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test)
            if a is not None]


def test_validation_rows_come_from_their_own_stream() -> None:
    """The held-out rows depend on the dataset's seed only: the data seed moves them, run seeds never do."""
    data = load_dataset(_system(), parse("points", "dataset"))[0]
    a, b = hold_out(data, 0.25, 0), hold_out(data, 0.25, 1)
    assert _rows(a.x_val) != _rows(b.x_val)  # type: ignore[arg-type]
    assert len(a.x_val) == len(b.x_val) == round(0.25 * len(data.x_train))  # type: ignore[arg-type]


@pytest.mark.parametrize(("fraction", "empty"), [(0.001, "validation"), (0.999, "training")])
def test_a_split_leaving_an_empty_set_is_one_line(fraction: float, empty: str) -> None:
    spec = ExperimentSpec.from_dict({"optimizer": "adamw", "val_split": fraction})
    with pytest.raises(ExpsvcError, match=f"leaves the {empty} set empty"):
        from_spec(spec, db="sqlite://")


def test_file_datasets_take_their_own_validation_set(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    x, xv = rng.normal(size=(40, 3)), rng.normal(size=(7, 3))
    np.savez(path, x=x, y=(x[:, 0] > 0).astype(float), x_val=xv, y_val=(xv[:, 0] > 0).astype(float))
    data = load_dataset(_system(), parse(f"file('{path}')", "dataset"))[0]
    assert data.task == "binary" and data.x_val is not None and data.y_val is not None
    np.testing.assert_array_equal(data.x_val, xv)
    assert data.y_val.shape == (7, 1) and len(data.x_train) + len(data.x_test) == 40
    with pytest.raises(ExpsvcError, match="own validation set"):
        load_dataset(_system(), parse(f"file('{path}')", "dataset"), 0.2)
    np.savez(path, x=x, y=(x[:, 0] > 0).astype(float), x_val=xv)
    with pytest.raises(ExpsvcError, match="'y_val' missing"):
        load_dataset(_system(), parse(f"file('{path}')", "dataset"))


# ---------------------------------------------------------------------------------------- per-epoch evaluation


class _Recorder(TrainHooks):
    def __init__(self) -> None:
        self.points: list[tuple[int, Evaluation, np.ndarray]] = []

    def evaluated(self, epoch: int, values: Evaluation, rows: np.ndarray, seconds: float) -> None:
        self.points.append((epoch, values, rows.copy()))


def _train(seeds: list[int], eval_every: int) -> _Recorder:
    config = ExperimentSpec.from_dict({"optimizer": "adamw", "lr": 0.05, "epochs": 7, "val_split": 0.2,
                                       "dataset": "spirals(n_train=60, n_test=30)", "loss": "cross_entropy",
                                       "model": "linear(8), tanh, dropout(0.2), linear(3)", "shuffle": True,
                                       "eval_every": eval_every}).configs()[0]
    comps = build(_system(), config, seeds)
    hooks = _Recorder()
    Trainer(comps.model, comps.loss, comps.optimizer, comps.data, comps.order_rngs, epochs=7, batch_size=16,
            shuffle=True, eval_every=eval_every,
            evaluator=SplitEvaluator(comps.model, comps.loss, comps.data, comps.metrics)).run(hooks)
    return hooks


def test_vectorised_evaluation_equals_each_replica_alone() -> None:
    """Three seeds evaluated together every 2 epochs give, row for row, what each seed gives alone (eval mode:
    dropout off, so two evaluations of the same parameters agree); the last epoch (7) is left to the final
    evaluation."""
    together = _train([0, 1, 2], eval_every=2)
    assert [e for e, *_ in together.points] == [2, 4, 6]
    assert set(together.points[0][1]) == {"train", "val", "test"}
    assert {"loss", "accuracy"} <= set(together.points[0][1]["val"])
    for r, seed in enumerate([0, 1, 2]):
        alone = _train([seed], eval_every=2)
        for (epoch, values, rows), (epoch1, values1, _) in zip(together.points, alone.points, strict=True):
            assert epoch == epoch1 and rows[r]
            for split, metrics in values.items():
                for name, v in metrics.items():
                    np.testing.assert_allclose(v[r], values1[split][name][0], rtol=1e-12, atol=1e-14,
                                               err_msg=f"{split}_{name} at epoch {epoch}")


@pytest.fixture(scope="module")
def evaluated_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, list[str]]]:
    """One small experiment with per-epoch evaluation (every 3 epochs of 7: epochs 3, 6 and the final 7), one
    with validation but no evaluation, and one with neither; the store and each one's run ids (same order)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('heldout') / 'runs.db'}"
    common = {"optimizer": ["mini_bgd", "adamw"], "lr": 0.05, "seeds": 2, "epochs": 7, "dataset": "moons",
              "tol": 0}
    ids = {name: run(common, db=url, name=name, **extra).run_ids for name, extra in (
        ("eval", {"val_split": 0.25, "eval_every": 3}), ("val-only", {"val_split": 0.25}), ("plain", {}))}
    return url, ids


def test_evaluation_histories_are_stored_by_epoch(evaluated_store: tuple[str, dict[str, list[str]]]) -> None:
    url, ids = evaluated_store
    store = RunStore.open(url, create=False)
    try:
        summaries = store.summaries(ids["eval"])
        stored = histories(store, ids["eval"])
        for run_id in ids["eval"]:
            for key in ("val_loss", "val_accuracy", "test_loss", "test_accuracy", "train_loss", "train_accuracy",
                        "eval_seconds"):
                steps, values = stored[run_id][key]
                assert steps.tolist() == [3, 6, 7], key  # epochs; the final evaluation ends the history
                summary = summaries[run_id][key]
                assert summary["last"] == pytest.approx(values[-1]) and summary["count"] == 3
                assert summary["min_step"] == steps[np.argmin(values)] and summary["max_step"] == steps[
                    np.argmax(values)]
            assert stored[run_id]["loss"][0].size == 7 * 3  # the per-step loss as before (150 train rows, batch 50)
        plain = store.summaries(ids["plain"])[ids["plain"][0]]
        assert set(plain) == {"loss", *(f"{s}_{m}" for s in ("train", "test")
                                        for m in ("loss", "accuracy", "precision", "recall", "f1"))}
        val_only = store.summaries(ids["val-only"])
        for a, b in zip(ids["eval"], ids["val-only"], strict=True):  # same configs, seeds and data
            assert val_only[b]["val_loss"]["count"] == 1 and "eval_seconds" not in val_only[b]  # final values only
            for key in ("val_loss", "test_accuracy", "train_loss"):
                assert summaries[a][key]["last"] == pytest.approx(val_only[b][key]["last"], rel=1e-12)
    finally:
        store.close()


# ------------------------------------------------------------------------------------------ time to target


def _cli(*args: str) -> Any:
    return CliRunner().invoke(build_app(), list(args))


def test_time_to_target_counts_runs_that_never_reach_it(evaluated_store: tuple[str, dict[str, list[str]]]) -> None:
    """A threshold between the runs' best validation losses: the runs above it are censored, counted in n
    and in "k of n reached", and the comparison turns to the sign test; an unreachable one: 0 of n."""
    url, ids = evaluated_store
    store = RunStore.open(url, create=False)
    try:
        best = {r: store.summaries([r])[r]["val_loss"]["min"] for r in ids["eval"]}
        epochs = {r: histories(store, [r])[r]["val_loss"] for r in ids["eval"]}
    finally:
        store.close()
    threshold = sorted(best.values())[1] + 1e-9  # two of the four runs reach it
    res = _cli("compare", "--db", url, "-e", "eval", "--target", f"val_loss <= {threshold!r}", "-f", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["target"] == f"val_loss <= {threshold:g}"
    label = f"epochs to val_loss <= {threshold:g}"
    assert {m["label"] for m in data["metrics"]} == {label, label.replace("epochs", "updates"),
                                                    label.replace("epochs", "seconds")}
    groups = {g["name"]: g["metrics"][label] for g in data["groups"]}
    assert sum(g["n"] for g in groups.values()) == 4  # every finished run counted
    assert sum(g["n_reached"] for g in groups.values()) == 2
    assert all(g["n_reached"] + g["n_censored"] == g["n"] for g in groups.values())
    censored = [g for g in groups.values() if g["n_censored"]]
    assert censored and all(g["mean"] is None for g in censored)  # a lower bound gets no mean
    compared = [g["vs_baseline"] for g in groups.values() if g["vs_baseline"]]
    assert compared[0]["method"] == "sign"
    reached = sorted(int(steps[np.argmax(values <= threshold)]) for steps, values in epochs.values()
                     if (values <= threshold).any())
    assert len(reached) == 2 and min(reached) >= 3
    table = _cli("compare", "--db", url, "-e", "eval", "--target", "val_loss <= -1", "--wide")
    assert table.exit_code == 0 and table.stdout.count("0 of 2 reached (rest censored)") == 6
    assert "Time to target (val_loss <= -1)" in table.stdout and "never reached val_loss <= -1" in table.stdout


@pytest.mark.parametrize(("target", "message"), [
    ("val_loss < 0.3", "is not a target"), ("val_loss <= abc", "is not a target"),
    ("no_such <= 1", "no run of this experiment has the metric 'no_such'"),
    ("test_accuracy >= 0.5", "stored only as a final value")])
def test_bad_targets_are_one_line(evaluated_store: tuple[str, dict[str, list[str]]], target: str,
                                  message: str) -> None:
    res = _cli("compare", "--db", evaluated_store[0], "-e", "plain", "--target", target)
    assert res.exit_code == 2 and message in res.stderr and len(res.stderr.splitlines()) == 1


def test_held_out_metrics_in_show_runs_plot(evaluated_store: tuple[str, dict[str, list[str]]],
                                            tmp_path: Path) -> None:
    url, ids = evaluated_store
    shown = _cli("show", ids["eval"][0][:8], "--db", url)
    assert shown.exit_code == 0 and "val_loss" in shown.stdout
    assert "min (step/epoch)" in shown.stdout and "(epoch=" in shown.stdout
    where = _cli("runs", "--db", url, "--where", "min(val_loss) > -1 and metrics.val_accuracy >= 0", "--json")
    assert where.exit_code == 0 and {r["id"] for r in json.loads(where.stdout)} == set(ids["eval"] + ids["val-only"])
    png = tmp_path / "val.png"
    drawn = _cli("plot", "--db", url, "-e", "eval", "--metric", "val_accuracy", "--out", str(png))
    assert drawn.exit_code == 0 and png.stat().st_size > 10_000 and "2 groups, 4 runs" in drawn.stdout
    refused = _cli("plot", "--db", url, "-e", "plain", "--metric", "test_accuracy", "--out", str(tmp_path / "x.png"))
    assert refused.exit_code == 2 and "stored only as a final value" in refused.stderr
    assert not (tmp_path / "x.png").exists()
    best = _cli("compare", "--db", url, "-e", "eval", "-m", "min(val_loss)", "-m", "val_loss", "-f", "json")
    labels = [m["label"] for m in json.loads(best.stdout)["metrics"]]
    assert labels == ["best-epoch (min) val loss", "final val loss"]


def test_split_evaluation_is_bit_for_bit_a_one_off_evaluation() -> None:
    """The evaluator forwards each split on its own (a layer's kernels may round differently for another batch
    size): its numbers are exactly :func:`evaluate`'s on that split, scored alone or stacked with others."""
    config = ExperimentSpec.from_dict({"optimizer": "adamw", "val_split": 0.3, "dataset": "moons"}).configs()[0]
    comps = build(_system(), dataclasses.replace(config, lr=0.01), [0, 1])
    evaluator = SplitEvaluator(comps.model, comps.loss, comps.data, comps.metrics)
    once = evaluator()
    twice = evaluator.score([evaluator.outputs(), evaluator.outputs()])
    for split, (x, y) in comps.data.splits().items():
        alone = evaluate(comps.model, comps.loss, x, y, comps.metrics)
        for name, values in alone.items():
            np.testing.assert_array_equal(once[split][name], values)
            np.testing.assert_array_equal(twice[split][name], np.concatenate([values, values]))
