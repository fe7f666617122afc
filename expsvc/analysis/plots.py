"""``expsvc plot``: loss curves per group (mean, 95 % t band, faint seeds) and a run's predictions.

matplotlib is imported inside the drawing functions, with the Agg backend, so the CLI starts fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from expsvc.errors import ExpsvcError

X_AXES = ("update", "epoch")
KINDS = ("loss", "predictions")

History = tuple[np.ndarray, np.ndarray]


class PlotError(ExpsvcError):
    """A plot that cannot be drawn (bad option, non-2-D dataset, nothing to draw)."""


@dataclass
class CurveGroup:
    """The loss histories of one group: ``{run_id: (steps, values)}`` and each run's steps per epoch."""

    label: str
    histories: dict[str, History]
    steps_per_epoch: dict[str, int | None] = field(default_factory=dict)
    diverged: int = 0


@dataclass
class PlotInfo:
    """What was drawn (for the CLI message and the tests)."""

    path: Path
    lines: int = 0
    bands: int = 0
    points: int = 0
    wrong: int = 0
    notes: list[str] = field(default_factory=list)


def band(matrix: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column-wise mean, t-interval half-width (NaN where fewer than two finite values) and count."""
    from scipy.special import stdtrit

    finite = np.isfinite(matrix)
    count = finite.sum(axis=0)
    safe = np.where(finite, matrix, 0.0)
    with np.errstate(all="ignore"):  # huge finite losses just before a divergence overflow the squares
        mean = safe.sum(axis=0) / count
        dev = np.where(finite, matrix - mean, 0.0)
        var = (dev**2).sum(axis=0) / (count - 1)
        half = stdtrit(np.maximum(count - 1, 1), 0.5 + confidence / 2) * np.sqrt(var / count)
    mean = np.where(count > 0, mean, np.nan)
    half = np.where(count > 1, half, np.nan)
    return mean, half, count


def per_epoch(steps: np.ndarray, values: np.ndarray, spe: int) -> History:
    """Mean loss of each epoch (over its finite steps): epochs 1, 2, ... and their means."""
    epoch = (steps // spe).astype(int)
    keys = np.unique(epoch)
    with np.errstate(all="ignore"):  # an epoch holding +inf and -inf (a divergence) has a NaN mean, silently
        means = np.array([np.nanmean(values[epoch == k]) if np.isfinite(values[epoch == k]).any() else np.nan
                          for k in keys])
    return (keys + 1).astype(float), means


def plot_loss_curves(groups: Sequence[CurveGroup], out: str | Path, *, x: str = "update", log_y: bool = False,
                     title: str | None = None) -> PlotInfo:
    """One curve per group: mean with its 95 % t band over the seeds and a faint line per seed.

    ``x="epoch"`` plots each run's loss averaged over the steps of each epoch (runs without a known
    ``steps_per_epoch`` are drawn per update and noted).
    """
    if x not in X_AXES:
        raise PlotError(f"--x {x!r}: allowed: {', '.join(X_AXES)}")
    if not any(g.histories for g in groups):
        raise PlotError("nothing to plot: no run of these groups has a loss history")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    info = PlotInfo(Path(out))
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, g in enumerate(groups):
        if not g.histories:
            info.notes.append(f"{g.label}: no history")
            continue
        color = colors[i % len(colors)]
        series: dict[str, History] = {}
        for rid, (s, v) in g.histories.items():
            spe = g.steps_per_epoch.get(rid)
            if x == "epoch" and spe:
                series[rid] = per_epoch(s, v, spe)
            else:
                if x == "epoch":
                    info.notes.append(f"{g.label}: run {rid[:8]} has no steps per epoch; drawn per update")
                series[rid] = (s.astype(float), v)
        xs = np.unique(np.concatenate([s for s, _ in series.values()]))
        col = {float(k): j for j, k in enumerate(xs)}
        matrix = np.full((len(series), xs.size), np.nan)
        for r, (s, v) in enumerate(series.values()):
            matrix[r, [col[float(k)] for k in s]] = v
            ax.plot(s, np.where(v > 0, v, np.nan) if log_y else v, color=color, alpha=0.18, linewidth=0.8)
            info.lines += 1
        mean, half, _ = band(matrix)
        n = len(series)
        label = f"{g.label} (mean of {n} run{'s' if n != 1 else ''}" + (
            f", {g.diverged} diverged" if g.diverged else "") + ")"
        ax.plot(xs, np.where(mean > 0, mean, np.nan) if log_y else mean, color=color, linewidth=2, label=label)
        if np.isfinite(half).any():
            lo, hi = mean - half, mean + half
            if log_y:
                lo = np.where(lo > 0, lo, np.nan)
                hi = np.where(hi > 0, hi, np.nan)
            ax.fill_between(xs, lo, hi, color=color, alpha=0.25, linewidth=0)
            info.bands += 1
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("epoch" if x == "epoch" else "update (optimizer step)")
    what = "training loss, mean over each epoch's steps" if x == "epoch" else "training loss (per step)"
    ax.set_ylabel(what + (" (log scale)" if log_y else ""))
    ax.set_title(title or "Training loss: mean and 95 % t interval over seeds")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.text(0.01, 0.01, "band: 95 % Student-t interval of the mean over the seeds with a finite value at that "
             "step; faint lines: single seeds", fontsize=7, alpha=0.7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    _save(fig, info.path)
    plt.close(fig)
    return info


def _save(fig: Any, path: Path) -> None:
    from expsvc.files import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _labels(y: np.ndarray, task: str) -> np.ndarray:
    """Class labels as a flat int array (binary ``(N, 1)`` → ``(N,)``)."""
    y = np.asarray(y)
    if y.ndim > 1:
        y = y[:, 0] if y.shape[1] == 1 else y.argmax(axis=1)
    return np.rint(y).astype(int) if task in ("binary", "multiclass") else y


def plot_predictions(loaded: Any, out: str | Path, *, resolution: int = 200, title: str | None = None) -> PlotInfo:
    """Training and test points coloured by predicted class, wrong ones marked, and the decision boundary."""
    data = loaded.data
    shape = np.asarray(data.x_train).shape[1:]
    if shape != (2,):
        has = f"inputs of shape {shape}" if len(shape) > 1 else f"{shape[0]} input features"
        raise PlotError(f"--kind predictions needs a dataset with 2 input features to draw; run "
                        f"{str(getattr(loaded, 'run_id', ''))[:8]} has {has}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = data.task
    classify = task in ("binary", "multiclass")
    x_all = np.concatenate([data.x_train, data.x_test])
    lo, hi = x_all.min(axis=0), x_all.max(axis=0)
    pad = (hi - lo) * 0.08 + 1e-9
    gx, gy = np.meshgrid(np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution),
                         np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    info = PlotInfo(Path(out))
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    if classify:
        z = _labels(loaded.predict(grid), task).reshape(gx.shape)
        classes = int(max(z.max(), _labels(data.y_train, task).max(), _labels(data.y_test, task).max())) + 1
        cmap = plt.get_cmap("tab10", max(classes, 2))
        levels = np.arange(-0.5, max(classes, 2) + 0.5)
        ax.contourf(gx, gy, z, levels=levels, cmap=cmap, alpha=0.2, vmin=-0.5, vmax=max(classes, 2) - 0.5)
        if len(np.unique(z)) > 1:
            ax.contour(gx, gy, z, levels=levels[1:-1], colors="k", linewidths=1.2)
        norm = dict(cmap=cmap, vmin=-0.5, vmax=max(classes, 2) - 0.5)
    else:
        out_grid = np.asarray(loaded.predict(grid), dtype=float)
        z = out_grid.reshape(len(grid), -1)[:, 0].reshape(gx.shape)
        cs = ax.contourf(gx, gy, z, levels=20, cmap="viridis", alpha=0.5)
        fig.colorbar(cs, ax=ax, label="predicted value")
        norm = dict(cmap="viridis", vmin=float(np.nanmin(z)), vmax=float(np.nanmax(z)))
    for name, xs, ys, marker in (("train", data.x_train, data.y_train, "o"), ("test", data.x_test, data.y_test, "^")):
        if len(xs) == 0:
            continue
        pred = loaded.predict(xs)
        if classify:
            p, t = _labels(pred, task), _labels(ys, task)
            wrong = p != t
            c = p
        else:
            c = np.asarray(pred, dtype=float).reshape(len(xs), -1)[:, 0]
            wrong = np.zeros(len(xs), dtype=bool)
        ax.scatter(xs[:, 0], xs[:, 1], c=c, marker=marker, s=22 if name == "train" else 36,
                   edgecolors="k", linewidths=0.4, label=f"{name} ({len(xs)})", **norm)
        info.points += len(xs)
        if wrong.any():
            ax.scatter(xs[wrong, 0], xs[wrong, 1], marker="x", s=60, c="red", linewidths=1.5,
                       label=f"{name} wrong ({int(wrong.sum())})")
            info.wrong += int(wrong.sum())
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    what = "decision boundary" if classify else "predicted value"
    ax.set_title(title or f"Predictions ({task}): colour = predicted {'class' if classify else 'value'}, {what}")
    ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    _save(fig, info.path)
    plt.close(fig)
    return info
