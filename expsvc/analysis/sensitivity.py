"""A study's learning-rate sensitivity: per optimizer and grid value, the selection metric's mean ± 95 % t
interval over the tuning seeds (the chosen value marked), as rows, a text table and a PNG.

Works on :class:`~expsvc.runner.study.Selection` (its grid points and choices); draws with matplotlib's Agg
backend like :mod:`expsvc.analysis.plots` (imported only to draw).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expsvc.analysis import stats
from expsvc.analysis.plots import PlotInfo, _save, _style
from expsvc.analysis.render import fit_table, fmt


@dataclass
class Row:
    """One grid point of one optimizer."""

    optimizer: str
    settings: dict[str, Any]
    mean: float
    ci: float
    n: int
    expected: int
    lost: str  # "" or why the point lost (diverged, failed, no value)
    chosen: bool

    def to_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "settings": self.settings, "mean": _finite(self.mean),
                "ci": _finite(self.ci), "n": self.n, "expected": self.expected, "lost": self.lost,
                "chosen": self.chosen}


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def rows(selection: Any) -> list[Row]:
    """The sensitivity rows of a selection, in grid order."""
    from expsvc.runner.study import _bad_text

    chosen = {c.optimizer: c.config for c in selection.choices}
    out = []
    for p in selection.points:
        values = [p.values[s] for s in sorted(p.values)]
        ci = stats.t_halfwidth(values) if len(values) > 1 else math.nan
        out.append(Row(p.optimizer, p.settings(selection.varying[p.optimizer]), p.mean if values else math.nan,
                       ci, len(values), p.expected, "" if p.valid else _bad_text(p),
                       chosen.get(p.optimizer) == p.config.as_dict()))
    return out


def _value(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def table(selection: Any, metric_label: str, width: int | None = None) -> str:
    """The sensitivity table as text (``*`` marks each optimizer's chosen point)."""
    keys = sorted({k for r in rows(selection) for k in r.settings}, key=lambda k: (k != "lr", k))
    header = ["optimizer", *keys, f"{metric_label} mean ± 95 % CI", "n", "note"]
    body = []
    for r in rows(selection):
        cell = (f"{fmt(r.mean)} ± {fmt(r.ci)}" if math.isfinite(r.ci) else fmt(r.mean)) if r.n else "-"
        body.append([r.optimizer, *(_value(r.settings.get(k, "")) for k in keys), cell, f"{r.n}/{r.expected}",
                     "* chosen" if r.chosen else r.lost])
    lines, hidden = fit_table(header, body, right={"n", *keys}, width=width, wrap={"note": None})
    return "\n".join(lines + ([f"(left out to fit: {', '.join(hidden)})"] if hidden else []))


def plot(selection: Any, out: str | Path, metric_label: str, *, title: str | None = None,
         lower_is_better: bool = True) -> PlotInfo:
    """One line per optimizer (and setting of its other grid arguments): the selection metric's mean ± 95 % t
    interval over the tuning seeds against the learning rate (log axis; a loss on a log y axis too), lost
    points as crosses at the axis, the chosen value a star."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    info = PlotInfo(Path(out), title=title or "")
    data = rows(selection)
    # one line per optimizer and setting of its other grid arguments (momentum...), the lr on the x axis
    lines: dict[str, list[Row]] = {}
    for r in data:
        others = ", ".join(f"{k}={_value(v)}" for k, v in r.settings.items() if k != "lr")
        lines.setdefault(f"{r.optimizer} ({others})" if others else r.optimizer, []).append(r)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
        for i, (name, mine) in enumerate(lines.items()):
            color, style = _style(i, len(lines))
            mine = sorted(mine, key=lambda r: r.settings.get("lr") or 0.0)
            good = [r for r in mine if r.n and not r.lost]
            xs = [r.settings.get("lr") for r in good]
            ys = [r.mean for r in good]
            err = [r.ci if math.isfinite(r.ci) else 0.0 for r in good]
            ax.errorbar(xs, ys, yerr=err, color=color, ls=style, marker="o", ms=4, capsize=3, label=name)
            info.lines += 1
            info.points += len(good)
            lost = [r for r in mine if r.lost]
            if lost:
                ax.plot([r.settings.get("lr") for r in lost], [0.0] * len(lost), "x", color=color,
                        transform=ax.get_xaxis_transform(), clip_on=False, ms=7,
                        label=f"{name}: lost (diverged/failed)")
            for r in good:
                if r.chosen:
                    ax.plot([r.settings.get("lr")], [r.mean], "*", color=color, ms=16, mec="black",
                            label=f"{name}: chosen lr={_value(r.settings.get('lr'))}")
        ax.set_xscale("log")
        means = [r.mean for r in data if r.n and not r.lost]
        if lower_is_better and means and min(means) > 0:
            # a loss: a log axis shows the differences near the optimum (an interval reaching below 0 is clipped)
            ax.set_yscale("log", nonpositive="clip")
            ax.set_ylim(min(means) / 1.5, max(r.mean + (r.ci if math.isfinite(r.ci) else 0) for r in data
                                                if r.n and not r.lost) * 1.5)
        ax.set_xlabel("learning rate")
        better = "lower is better" if lower_is_better else "higher is better"
        ax.set_ylabel(f"{metric_label} (validation; {better})")
        ax.set_title(title or "learning-rate sensitivity: mean ± 95 % t over tuning seeds", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        _save(fig, info.path)
        plt.close(fig)
    info.warnings = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    return info


def to_dicts(selection: Any) -> list[dict[str, Any]]:
    """JSON-ready rows."""
    return [r.to_dict() for r in rows(selection)]


__all__ = ["Row", "plot", "rows", "table", "to_dicts"]

