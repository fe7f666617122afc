"""Plots: valid, non-trivial PNGs with the 95 % band drawn; predictions with a decision boundary; clear errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from sqlalchemy import event
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from expsvc.analysis import fixtures, plots
from expsvc.cli.analysis import register
from expsvc.core import DataSplit
from expsvc.store.models import MetricChunk

PNG = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path) -> np.ndarray:
    import matplotlib.pyplot as plt

    data = path.read_bytes()
    assert data[:8] == PNG
    assert len(data) > 10_000
    image = plt.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert image[..., :3].std() > 0.05  # not a blank canvas
    return image


@pytest.fixture
def db(tmp_path: Path) -> tuple[str, Any]:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    engine = fixtures.create_db(url)
    with Session(engine) as s:
        exp = fixtures.add_experiment(s, "curves")
        t = 0
        for g, (opt, rate) in enumerate((("mini_bgd", 0.01), ("adamw", 0.04))):
            for seed in range(4):
                t += 1
                curve = fixtures.loss_curve(100 * g + seed, 200, rate=rate, noise=0.05)
                status = "finished"
                if opt == "adamw" and seed == 3:
                    curve = [*curve[:50], float("nan")]
                    status = "diverged"
                fixtures.add_run(s, exp, seed=seed, status=status, params={"optimizer": opt},
                                 history={"loss": curve}, steps_per_epoch=20,
                                 created_at=fixtures.T0 + timedelta(seconds=t))
        s.commit()
    return url, engine


def _curves(engine: Any, queries: list[str] | None = None) -> list[plots.CurveGroup]:
    from expsvc.analysis.compare import group_runs
    from expsvc.store import RunStore, read

    with RunStore.open(str(engine.url)) as store:
        if queries is not None:
            @event.listens_for(store.engine, "before_cursor_execute")
            def _count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                if MetricChunk.__tablename__ in statement:
                    queries.append(statement)

        groups = group_runs(read.records(store, experiment_ids=[1]))
        hist = read.histories(store, [r.id for g in groups for r in g.runs], "loss")
    return [plots.CurveGroup(g.label, {r.id: hist[r.id]["loss"] for r in g.runs},
                             {r.id: r.steps_per_epoch for r in g.runs}, g.count("diverged")) for g in groups]


def test_loss_curves_png_with_bands(db: tuple[str, Any], tmp_path: Path) -> None:
    queries: list[str] = []
    curves = _curves(db[1], queries)
    assert len(queries) == 1  # one history query for the whole experiment
    info = plots.plot_loss_curves(curves, tmp_path / "loss.png")
    assert info.bands == 2 and info.lines == 8
    _check_png(info.path)
    log = plots.plot_loss_curves(curves, tmp_path / "log.png", x="epoch", log_y=True)
    assert log.bands == 2
    _check_png(log.path)


def test_band_is_a_t_interval() -> None:
    from scipy import stats

    m = np.array([[1.0, 2.0, np.nan], [3.0, 2.0, 5.0], [2.0, 2.0, np.nan]])
    mean, half, count = plots.band(m)
    assert list(count) == [3, 3, 1]
    assert mean[0] == pytest.approx(2.0) and mean[2] == pytest.approx(5.0)
    assert half[0] == pytest.approx(stats.t.ppf(0.975, 2) * 1.0 / np.sqrt(3))
    assert half[1] == 0 and np.isnan(half[2])


def test_loss_plot_errors(tmp_path: Path) -> None:
    with pytest.raises(plots.PlotError, match="--x"):
        plots.plot_loss_curves([], tmp_path / "x.png", x="time")
    with pytest.raises(plots.PlotError, match="nothing to plot"):
        plots.plot_loss_curves([plots.CurveGroup("a", {})], tmp_path / "x.png")


class FakeLoaded:
    """The shape of ``expsvc.runner.api.LoadedModel``: a linear classifier on 2-D points."""

    def __init__(self, features: int = 2, task: str = "binary", classes: int = 2) -> None:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(120, features))
        self.task = task
        self.classes = classes
        if task == "multiclass":
            y = (np.arctan2(x[:, 1], x[:, 0]) + np.pi) // (2 * np.pi / classes)
            y = y.astype(int)
        elif task == "binary":
            y = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * rng.normal(size=120) > 0).astype(float)[:, None]
        else:
            y = (x[:, 0] ** 2 + x[:, 1])[:, None]
        self.data = DataSplit(x[:90], y[:90], x[90:], y[90:], task, classes if task != "regression" else None)
        self.run_id = "abcdef0123456789"

    def outputs(self, x: np.ndarray) -> np.ndarray:
        return (x[:, :1] + 0.5 * x[:, 1:2])

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.task == "binary":
            return (self.outputs(x) > 0).astype(float)
        if self.task == "multiclass":
            return ((np.arctan2(x[:, 1], x[:, 0]) + np.pi) // (2 * np.pi / self.classes)).astype(int)
        return x[:, :1] ** 2 + x[:, 1:2]


@pytest.mark.parametrize(("task", "classes"), [("binary", 2), ("multiclass", 3), ("regression", 0)])
def test_predictions_png(task: str, classes: int, tmp_path: Path) -> None:
    info = plots.plot_predictions(FakeLoaded(task=task, classes=classes), tmp_path / "pred.png", resolution=80)
    assert info.points == 120
    if task == "binary":
        assert info.wrong > 0  # the noisy labels disagree with the linear boundary somewhere
    _check_png(info.path)


def test_predictions_need_two_features(tmp_path: Path) -> None:
    with pytest.raises(plots.PlotError, match="2 input features"):
        plots.plot_predictions(FakeLoaded(features=3), tmp_path / "pred.png")


def test_cli_plot(db: tuple[str, Any], tmp_path: Path) -> None:
    app = typer.Typer(pretty_exceptions_enable=False)
    register(app)
    out = tmp_path / "cli.png"
    res = CliRunner().invoke(app, ["plot", "--db", db[0], "--out", str(out), "--x", "epoch", "--log-y"])
    assert res.exit_code == 0, res.output
    assert "2 bands" in res.output
    _check_png(out)
    for args, needle in ((["--kind", "bars"], "--kind"), (["--x", "time"], "--x"),
                         (["--kind", "predictions"], "needs a RUN"), (["--experiment", "nope"], "nope")):
        res = CliRunner().invoke(app, ["plot", "--db", db[0], *args])
        assert res.exit_code == 2 and needle in res.output, res.output
