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

from expsvc.analysis import plots
from expsvc.cli.analysis import register
from expsvc.core import DataSplit
from expsvc.store.models import MetricChunk
from tests import store_fixtures as fixtures

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


# ------------------------------------------------------------------- issue 15, finding 10: honest curves
def _group(curves: dict[str, list[float]], statuses: dict[str, str] | None = None, spe: int = 1) -> plots.CurveGroup:
    hist = {rid: (np.arange(len(v), dtype=float), np.asarray(v, dtype=float)) for rid, v in curves.items()}
    return plots.CurveGroup("g", hist, {rid: spe for rid in curves}, 0, statuses or {})


def test_stopped_runs_hold_their_level_so_the_mean_never_jumps() -> None:
    """Two runs converge early: the mean was taken over the survivor alone (a kink, no band, "mean of 3")."""
    g = _group({"a": [1.0, 0.5, 0.4], "b": [1.0, 0.6, 0.5], "c": [1.0, 0.7, 0.6, 0.55, 0.5]})
    curve = plots.mean_curve(g, g.histories)
    assert list(curve.count) == [3] * 5 and curve.stopped == 2
    assert curve.centre[4] == pytest.approx((0.4 + 0.5 + 0.5) / 3)  # a and b hold their last value
    assert np.isfinite(curve.high - curve.low).all()  # the band goes on
    # a diverged run is not held: its curve ends and the points after it average fewer runs
    g = _group({"a": [1.0, 0.5, np.nan], "b": [1.0, 0.6, 0.5, 0.45]}, {"a": "diverged", "b": "finished"})
    assert list(plots.mean_curve(g, g.histories).count) == [2, 2, 1, 1]
    # per update, a stopped run holds the mean of its last epoch (single steps of in-order batches saw-tooth)
    g = _group({"a": [1.0, 0.2, 0.8, 0.4], "b": [1.0, 0.2, 0.8, 0.4, 0.9, 0.3]}, spe=2)
    assert plots.mean_curve(g, g.histories, per_update=True).centre[5] == pytest.approx((0.6 + 0.3) / 2)


def test_log_band_is_never_dropped() -> None:
    """With --log-y the band vanished where the t interval's lower bound was <= 0."""
    g = _group({"a": [1.0, 0.01, 1e-4], "b": [1.0, 0.5, 0.3], "c": [1.0, 0.02, 1e-3]})
    linear = plots.mean_curve(g, g.histories)
    assert (linear.low[1:] <= 0).all()  # the arithmetic interval crosses zero...
    log = plots.mean_curve(g, g.histories, log_y=True)
    assert (log.low[1:] > 0).all() and np.isfinite(log.high).all()  # ...the log-space one never does
    assert log.centre[2] == pytest.approx(np.exp(np.mean(np.log([1e-4, 0.3, 1e-3]))))  # geometric mean


def test_smoothing_is_tensorboards_debiased_ema(tmp_path: Path) -> None:
    v = np.array([1.0, 0.0, 1.0, np.nan, 0.0])
    out = plots.ema(v, 0.5)
    assert out[0] == 1.0 and out[1] == pytest.approx(0.25 / 0.75) and np.isnan(out[3])  # (0.5·0.5 + 0.5·0)
    assert out[4] == pytest.approx(0.5 * (0.5 * 0.25 + 0.5 * 1.0) / (1 - 0.5**4))  # the NaN is skipped
    assert plots.ema(v, 0.0) is v
    g = _group({"a": list(np.linspace(1, 0.1, 50) + 0.2 * (np.arange(50) % 2)), "b": list(np.linspace(1, 0.2, 50))})
    info = plots.plot_loss_curves([g], tmp_path / "smooth.png", smooth=0.9)
    _check_png(info.path)
    with pytest.raises(plots.PlotError, match="--smooth"):
        plots.plot_loss_curves([g], tmp_path / "x.png", smooth=1.0)


def test_many_groups_keep_the_legend_off_the_curves(tmp_path: Path) -> None:
    """A 54-entry legend covered the axes."""
    rng = np.random.default_rng(0)
    groups = [plots.CurveGroup(f"optimizer=opt{i}, lr={10.0 ** -(i % 4):g}, batch_size={2 ** (i % 6)}",
                               {f"r{i}{s}": (np.arange(40.0), np.exp(-np.arange(40) / (5 + i)) + rng.random(40) * 0.05)
                                for s in range(3)}) for i in range(54)]
    info = plots.plot_loss_curves(groups, tmp_path / "many.png", log_y=True)
    assert info.legend_clear and info.bands == 54 and info.warnings == []
    _check_png(info.path)


def test_no_warning_reaches_the_terminal(db: tuple[str, Any], tmp_path: Path) -> None:
    """A matplotlib UserWarning leaked to the terminal; every plot here is drawn with warnings as errors."""
    import subprocess
    import sys
    import warnings

    nasty = _group({"a": [1.0, 0.0, np.nan, np.inf], "b": [0.0, 0.0], "c": [np.nan, np.nan, np.nan]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for kw in ({}, {"log_y": True}, {"log_y": True, "smooth": 0.5}, {"x": "epoch"}):
            assert plots.plot_loss_curves([nasty], tmp_path / "n.png", **kw).warnings == []
        one_class = FakeLoaded()
        one_class.predict = lambda x: np.zeros((len(x), 1))  # type: ignore[method-assign]
        assert plots.plot_predictions(one_class, tmp_path / "p.png", resolution=40).warnings == []
    proc = subprocess.run([sys.executable, "-W", "default", "-m", "expsvc", "plot", "--db", db[0], "--log-y",
                           "--smooth", "0.6", "--out", str(tmp_path / "cli.png")], capture_output=True, text=True)
    assert proc.returncode == 0 and "Warning" not in proc.stderr, proc.stderr


def test_predictions_title_names_the_run(tmp_path: Path) -> None:
    loaded = FakeLoaded()
    loaded.config = {"optimizer": "adamw", "lr": 0.001, "seed": 3, "dataset": "moons"}  # type: ignore[attr-defined]
    info = plots.plot_predictions(loaded, tmp_path / "pred.png", resolution=40)
    assert info.title.startswith("run abcdef01: adamw, lr 0.001, seed 3, on moons")
