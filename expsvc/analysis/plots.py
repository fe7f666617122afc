"""``expsvc plot``: loss curves per group (mean, 95 % t band, faint seeds) — or any stored history's, such
as the held-out ``val_loss`` per epoch — and a run's predictions.

matplotlib is imported inside the drawing functions, with the Agg backend, so the CLI starts fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from expsvc.errors import ExpsvcError
from expsvc.store.vocab import LOSS_KEY, is_epoch_key

X_AXES = ("update", "epoch")
KINDS = ("loss", "predictions")

History = tuple[np.ndarray, np.ndarray]


class PlotError(ExpsvcError):
    """A plot that cannot be drawn (bad option, non-2-D dataset, nothing to draw)."""


@dataclass
class CurveGroup:
    """The loss histories of one group: ``{run_id: (steps, values)}``, each run's steps per epoch and status."""

    label: str
    histories: dict[str, History]
    steps_per_epoch: dict[str, int | None] = field(default_factory=dict)
    diverged: int = 0
    statuses: dict[str, str] = field(default_factory=dict)


@dataclass
class PlotInfo:
    """What was drawn (for the CLI message and the tests)."""

    path: Path
    lines: int = 0
    bands: int = 0
    points: int = 0
    wrong: int = 0
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # matplotlib/numpy warnings caught while drawing
    title: str = ""
    legend_clear: bool = True  # the legend covers no part of the axes' curves area (or is outside them)


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
    keys, inverse = np.unique((steps // spe).astype(int), return_inverse=True)
    present = ~np.isnan(values)  # NaN steps are skipped; ±inf ones count (an epoch holding both has a NaN mean)
    with np.errstate(all="ignore"):  # one pass over all steps (the report reads 1,000 runs × 1,000 steps)
        sums = np.bincount(inverse, weights=np.where(present, values, 0.0), minlength=keys.size)
        counts = np.bincount(inverse, weights=present, minlength=keys.size)
        finite = np.bincount(inverse, weights=np.isfinite(values), minlength=keys.size)
        means = np.where(finite > 0, sums / counts, np.nan)
    return (keys + 1).astype(float), means


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average with weight ``weight`` in [0, 1), debiased so
    the first points are not pulled towards 0; non-finite values are kept and skipped by the average."""
    if weight <= 0:
        return values
    out = np.full(values.shape, np.nan)
    last, steps = 0.0, 0
    for i, v in enumerate(values):
        if not np.isfinite(v):
            out[i] = v
            continue
        last = last * weight + (1 - weight) * v
        steps += 1
        out[i] = last / (1 - weight**steps)
    return out


HELD = ("finished",)
"""Statuses whose final level is held after the run stopped (converged or ran all its epochs); a diverged,
failed or interrupted run's curve just ends.  The level held is the run's last value per epoch, and per
update the mean of its last epoch's steps (in-order batches make single steps a sawtooth)."""
MANY = 6  # more groups than this: the legend goes outside the axes


def _group_matrix(g: CurveGroup, series: dict[str, History],
                  hold: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The x values, a runs × x matrix (NaN where a run has no value) and a mask of held (carried) cells:
    after its last point, a run whose status is in :data:`HELD` holds ``hold[run]``."""
    xs = np.unique(np.concatenate([s for s, _ in series.values()]))
    col = {float(k): j for j, k in enumerate(xs)}
    matrix = np.full((len(series), xs.size), np.nan)
    held = np.zeros(matrix.shape, dtype=bool)
    for r, (rid, (s, v)) in enumerate(series.items()):
        idx = np.array([col[float(k)] for k in s], dtype=int)
        matrix[r, idx] = v
        finite = np.isfinite(v)
        if g.statuses.get(rid, "finished") in HELD and finite.any() and idx.size and idx[-1] + 1 < xs.size:
            matrix[r, idx[-1] + 1:] = hold[rid]
            held[r, idx[-1] + 1:] = True
    return xs, matrix, held


@dataclass
class MeanCurve:
    """A group's centre line and 95 % band over x, and how many runs each point averages."""

    xs: np.ndarray
    centre: np.ndarray
    low: np.ndarray
    high: np.ndarray
    count: np.ndarray
    runs: int
    stopped: int  # runs that stopped early and hold their final level


def mean_curve(g: CurveGroup, series: dict[str, History], *, per_update: bool = False, log_y: bool = False,
               smooth: float = 0.0) -> MeanCurve:
    """The mean (geometric on a log scale) of ``series`` with its 95 % t band, stopped runs held
    (:data:`HELD`), each run smoothed by :func:`ema` first when ``smooth``."""
    hold = {}
    for rid, (_s, v) in series.items():
        spe = g.steps_per_epoch.get(rid) if per_update else None
        tail = v[np.isfinite(v)][-(spe or 1):]
        hold[rid] = float(tail.mean()) if tail.size else float("nan")
    xs, raw, held = _group_matrix(g, series, hold)
    smoothed = np.array([ema(row, smooth) for row in raw]) if smooth else raw
    values = np.where(smoothed > 0, np.log(smoothed), np.nan) if log_y else smoothed
    mean, half, count = band(values)
    if log_y:
        return MeanCurve(xs, np.exp(mean), np.exp(mean - half), np.exp(mean + half), count, len(series),
                         int(held.any(axis=1).sum()))
    return MeanCurve(xs, mean, mean - half, mean + half, count, len(series), int(held.any(axis=1).sum()))


def _style(i: int, n: int) -> tuple[Any, str]:
    """Colour and line style of group ``i`` of ``n``: tab10, or tab20 × four dash styles for many groups."""
    import matplotlib

    if n <= 10:
        return matplotlib.colormaps["tab10"](i % 10), "-"
    return matplotlib.colormaps["tab20"](i % 20), ("-", "--", "-.", ":")[(i // 20) % 4]


def plot_loss_curves(groups: Sequence[CurveGroup], out: str | Path, *, x: str = "update", log_y: bool = False,
                     smooth: float = 0.0, title: str | None = None, metric: str = LOSS_KEY) -> PlotInfo:
    """One curve per group: the mean over its runs with a 95 % t band, and a faint line per run.

    Honest when runs stop early: a finished run (converged, or all epochs done) holds its last value, so every
    point averages all the group's runs; a diverged, failed or interrupted run's curve ends, and the mean is
    dashed where it averages fewer runs (the legend says how many).  On a log scale the centre line is the
    geometric mean and the band the 95 % t interval of the mean log loss (never ≤ 0, so never dropped).
    ``smooth`` in [0, 1) applies TensorBoard's debiased EMA to each run before averaging, the raw mean drawn
    faint.  ``x="epoch"`` plots each run's loss averaged over the steps of each epoch.  Warnings raised while
    drawing are caught (listed in ``PlotInfo.warnings``), never printed.

    ``metric`` names the history drawn: ``loss`` (per update) or an evaluation history (``val_loss``,
    ``test_accuracy``..., stored by epoch with ``--eval-every``): those are drawn as stored on an epoch axis
    (``x="update"``: at epoch × updates per epoch), a stopped run holding its final evaluation.
    """
    import warnings

    if x not in X_AXES:
        raise PlotError(f"--x {x!r}: allowed: {', '.join(X_AXES)}")
    if not 0 <= smooth < 1:
        raise PlotError(f"--smooth {smooth!r}: allowed: a weight from 0 (none) up to, not including, 1 (e.g. 0.9)")
    if not any(g.histories for g in groups):
        raise PlotError(f"nothing to plot: no run of these groups has a {metric} history")
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        info = _draw_curves(groups, Path(out), x, log_y, smooth, title, metric)
    info.warnings = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    return info


def _series(g: CurveGroup, x: str, by_epoch: bool, notes: list[str]) -> dict[str, History]:
    """Each run's points on the x axis: the per-step loss per update or averaged per epoch; an evaluation
    history (``by_epoch``) as stored by epoch, or at epoch × updates per epoch on the update axis."""
    series: dict[str, History] = {}
    for rid, (s, v) in g.histories.items():
        spe = g.steps_per_epoch.get(rid)
        if by_epoch:
            series[rid] = ((s * spe).astype(float) if x == "update" and spe else s.astype(float), v)
        elif x == "epoch" and spe:
            series[rid] = per_epoch(s, v, spe)
        else:
            if x == "epoch":
                notes.append(f"{g.label}: run {rid[:8]} has no steps per epoch; drawn per update")
            series[rid] = (s.astype(float), v)
    return series


def _draw_curves(groups: Sequence[CurveGroup], out: Path, x: str, log_y: bool, smooth: float,
                 title: str | None, metric: str = LOSS_KEY) -> PlotInfo:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    info = PlotInfo(out)
    drawn = [g for g in groups if g.histories]
    outside = len(drawn) > MANY
    ncol = 1 if not outside else 2 if len(drawn) <= 40 else 3
    rows = -(-len(drawn) // ncol) if outside else 0
    width = 8.0 if not outside else 10.0 + 2.0 * (ncol - 2)
    height = 5.2 + 0.17 * rows
    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    for g in groups:
        if not g.histories:
            info.notes.append(f"{g.label}: no history")
    by_epoch = is_epoch_key(metric)
    for i, g in enumerate(drawn):
        color, dash = _style(i, len(drawn))
        series = _series(g, x, by_epoch, info.notes)
        for s, v in series.values():
            shown = ema(v, smooth)
            ax.plot(s, np.where(shown > 0, shown, np.nan) if log_y else shown, color=color, alpha=0.15,
                    linewidth=0.7, linestyle=dash)
            info.lines += 1
        per_update = x == "update" and not by_epoch
        curve = mean_curve(g, series, per_update=per_update, log_y=log_y, smooth=smooth)
        xs, centre, n = curve.xs, curve.centre, curve.runs
        if smooth:
            raw = mean_curve(g, series, per_update=per_update, log_y=log_y).centre
            ax.plot(xs, raw, color=color, alpha=0.35, linewidth=0.9, linestyle=dash)
        full = curve.count == n
        ax.plot(xs, np.where(full, centre, np.nan), color=color, linewidth=2, linestyle=dash,
                label=_legend_label(g, curve))
        if not full.all():  # fewer runs (one diverged or failed): dashed, and joined to the solid part
            partial = ~full
            starts = np.flatnonzero(partial[1:] & ~partial[:-1])  # the full point before each dashed stretch
            partial[starts] = True
            ax.plot(xs, np.where(partial, centre, np.nan), color=color, linewidth=1.6, linestyle=(0, (4, 2)))
        if np.isfinite(curve.high - curve.low).any():
            ax.fill_between(xs, curve.low, curve.high, color=color, alpha=0.22, linewidth=0)
            info.bands += 1
        stops = [(s[-1], v[np.isfinite(v)][-1]) for rid, (s, v) in series.items()
                 if g.statuses.get(rid, "finished") in HELD and np.isfinite(v).any() and s.size and s[-1] < xs[-1]]
        if stops:
            sx, sy = zip(*stops, strict=True)
            ax.plot(sx, sy, linestyle="none", marker="o", markersize=2.5, color=color, alpha=0.6)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("epoch" if x == "epoch" else "update (optimizer step)")
    if by_epoch:
        what = f"{metric}, evaluated at the end of epochs"
    else:
        what = "training loss, mean over each epoch's steps" if x == "epoch" else "training loss (per step)"
    ax.set_ylabel(what + (" (log scale)" if log_y else ""))
    ax.set_title(title or f"{'Training loss' if not by_epoch else metric}: mean and 95 % t interval over seeds",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    if outside:  # below the axes, in columns: never over the curves
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(0.0, -0.13), borderaxespad=0, ncol=ncol,
                  frameon=False)
    else:
        ax.legend(fontsize="small", loc="best")
    centre_text = ("geometric mean; band: 95 % Student-t interval of the mean log loss" if log_y else
                   "mean; band: 95 % Student-t interval of the mean")
    level = "its last epoch's mean" if x == "update" and not by_epoch else "its last value"
    caption = (f"Line: {centre_text} over the group's runs. A run that stopped early (converged, dot) holds {level}, "
               f"so each point averages all the runs in the legend; dashed: fewer runs (diverged or failed ones "
               f"end). Faint: single runs" + (f"; every curve smoothed by a debiased EMA of weight {smooth:g} (as "
                                             f"TensorBoard), the raw mean faint." if smooth else "."))
    import textwrap

    fig.text(0.01, 0.01, "\n".join(textwrap.wrap(caption, int(19 * width))), fontsize=7, alpha=0.75, va="bottom")
    fig.tight_layout(rect=(0, 0.35 / height, 1, 1))
    info.title = ax.get_title()
    info.legend_clear = _legend_clear(fig, ax, outside)
    _save(fig, info.path, whole=outside)
    plt.close(fig)
    return info


def _legend_clear(fig: Any, ax: Any, outside: bool) -> bool:
    """Whether the legend leaves the axes alone: outside them (many groups) or placed by matplotlib's "best"."""
    legend = ax.get_legend()
    if legend is None or not outside:
        return True
    renderer = fig.canvas.get_renderer()
    return not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))


def _legend_label(g: CurveGroup, curve: MeanCurve) -> str:
    """``adamw: 5 runs, 3 stopped early; dashed: 4 (1 diverged or failed)``: how many runs each point averages."""
    n = curve.runs
    text = f"{g.label}: {n} run{'s' if n != 1 else ''}" + (f", {curve.stopped} stopped early" if curve.stopped else "")
    fewest = int(curve.count.min()) if curve.count.size else n
    if fewest < n:
        text += f"; dashed: {fewest} ({n - fewest} diverged or failed)"
    return text


def _save(fig: Any, path: Path, *, whole: bool = False) -> None:
    """Write the PNG atomically (beside the target, then renamed); ``whole`` grows the canvas to take in
    artists outside the axes (a legend below them)."""
    from expsvc.files import atomic_path

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", **({"bbox_inches": "tight", "pad_inches": 0.15} if whole else {}))
    except OSError as err:
        raise PlotError(f"cannot write {str(path)!r}: {err.strerror or err}") from None


def _labels(y: np.ndarray, task: str) -> np.ndarray:
    """Class labels as a flat int array (binary ``(N, 1)`` → ``(N,)``)."""
    y = np.asarray(y)
    if y.ndim > 1:
        y = y[:, 0] if y.shape[1] == 1 else y.argmax(axis=1)
    return np.rint(y).astype(int) if task in ("binary", "multiclass") else y


def run_title(loaded: Any) -> str:
    """``run 3f2a9c1d: adamw, lr 0.001, seed 3, on points`` (what the run is, from its stored config)."""
    cfg = getattr(loaded, "config", None) or {}
    parts = [f"{k} {cfg[k]}" if k != "optimizer" else str(cfg[k]) for k in ("optimizer", "lr", "seed")
             if k in cfg]
    where = f", on {cfg['dataset']}" if "dataset" in cfg else ""
    return f"run {str(getattr(loaded, 'run_id', '?'))[:8]}" + (f": {', '.join(parts)}" if parts else "") + where


def plot_predictions(loaded: Any, out: str | Path, *, resolution: int = 200, title: str | None = None) -> PlotInfo:
    """Training and test points coloured by predicted class, wrong ones marked, and the decision boundary.

    The title names the run (id, optimizer, lr, seed, dataset); warnings are caught as in
    :func:`plot_loss_curves`."""
    import warnings

    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        info = _draw_predictions(loaded, Path(out), resolution, title)
    info.warnings = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    return info


def _draw_predictions(loaded: Any, out: Path, resolution: int, title: str | None) -> PlotInfo:
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
    what = "line: decision boundary" if classify else "shading: predicted value"
    ax.set_title(title or f"{run_title(loaded)}\npredictions ({task}): colour = predicted "
                          f"{'class' if classify else 'value'}, {what}", fontsize=10)
    info.title = ax.get_title()
    ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    _save(fig, info.path)
    plt.close(fig)
    return info
