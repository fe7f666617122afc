"""What a report shows, read from the store and computed once, as one JSON-ready dict (:func:`build`).

Everything comes through the read API (:mod:`expsvc.store.read`) and the comparison through
:func:`expsvc.analysis.compare.compare_experiments` — the very call ``expsvc compare`` makes, so the page's
numbers are ``compare --format json``'s.  Curves are the groups' means with their 95 % t band computed by
:func:`expsvc.analysis.plots.mean_curve` (finished runs hold their final level, so each point says how many
runs it averages), then downsampled for the page with a stated method (:func:`downsample`).
"""

from __future__ import annotations

import itertools
import math
import platform
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from expsvc.errors import ExpsvcError

MAX_POINTS = 400
"""A group's mean curve and band keep at most this many points per chart (200 buckets, min and max each)."""
MAX_RUN_POINTS = 160
"""An individual run's line keeps at most this many points (80 buckets, min and max each)."""
DIGITS = 5
"""Significant digits of the curves' values in the page (the tables keep full precision)."""
COMPARED_PARAMS = ("seed",)
"""Run columns shown in the runs table besides the parameters that differ."""
RUN_FLAGS = {"optimizer_spec": "--opt", "lr": "--lr", "epochs": "--epochs", "batch_size": "--batch-size",
             "model": "--model", "loss": "--loss", "dataset": "--dataset", "schedule": "--schedule", "tol": "--tol",
             "dtype": "--dtype", "val_split": "--val-split", "eval_every": "--eval-every"}
"""The ``expsvc run`` flag of each stored parameter (the reproducing command is built from them)."""


class ReportError(ExpsvcError):
    """A report that cannot be made (no runs match, unknown experiment...)."""


@dataclass
class Selection:
    """Which runs a report shows and how it compares them (the CLI's options, the UI's query)."""

    experiment: str | None = None
    where: str | None = None
    by: list[str] | None = None
    pool: bool = False
    metrics: list[str] | None = None
    baseline: str | None = None


def _round(values: np.ndarray) -> list[float | None]:
    """Values rounded to :data:`DIGITS` significant digits, NaN/±inf as None (JSON null: uPlot's gap)."""
    out: list[float | None] = []
    for v in values.tolist():
        if v is None or not math.isfinite(v):
            out.append(None)
        elif v == 0:
            out.append(0.0)
        else:
            out.append(float(f"{v:.{DIGITS}g}"))
    return out


def downsample(xs: np.ndarray, ys: Sequence[np.ndarray], max_points: int,
               how: Sequence[str] | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Min/max per bucket: split the x range into ``max_points // 2`` buckets of consecutive points and keep,
    per bucket, the points where the first series is smallest and largest (in x order), so spikes and
    dips survive; the other series take, at those two points, the bucket's ``how`` (``"min"``, ``"max"`` or
    ``"at"``, the value at that point), so a band's lower edge never rises and its upper edge never falls.

    Fewer points than ``max_points``: returned as they are.
    """
    n = xs.size
    how = list(how or ["at"] * len(ys))
    if n <= max_points:
        return xs, list(ys)
    buckets = max_points // 2
    edges = np.linspace(0, n, buckets + 1).astype(int)
    keep_x: list[float] = []
    keep: list[list[float]] = [[] for _ in ys]
    first = ys[0]
    for a, b in itertools.pairwise(edges):
        if b <= a:
            continue
        seg = first[a:b]
        finite = np.isfinite(seg)
        if finite.any():
            lo = a + int(np.nanargmin(np.where(finite, seg, np.nan)))
            hi = a + int(np.nanargmax(np.where(finite, seg, np.nan)))
        else:
            lo, hi = a, b - 1
        for idx in sorted({lo, hi}):
            keep_x.append(float(xs[idx]))
            for k, (series, rule) in enumerate(zip(ys, how, strict=True)):
                part = series[a:b]
                ok = np.isfinite(part)
                if rule == "min" and ok.any():
                    keep[k].append(float(part[ok].min()))
                elif rule == "max" and ok.any():
                    keep[k].append(float(part[ok].max()))
                else:
                    keep[k].append(float(series[idx]))
    return np.array(keep_x), [np.array(k) for k in keep]


def _series(store: Any, groups: Sequence[Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every run's histories ``{run: {key: (steps, values)}}`` and the history keys, loss first."""
    from expsvc.store import read

    hist = read.histories(store, [r.id for g in groups for r in g.runs])
    keys = sorted({k for h in hist.values() for k in h}, key=lambda k: (k != "loss", k))
    return hist, keys


def _curves(groups: Sequence[Any], hist: dict[str, dict[str, Any]], key: str) -> dict[str, Any]:
    """One chart: per group the mean and band (linear and log), the runs each point averages, and each run's
    own line, all per epoch when the runs know their steps per epoch (else per update)."""
    from expsvc.analysis.plots import CurveGroup, mean_curve, per_epoch

    per_epochs = all(r.steps_per_epoch for g in groups for r in g.runs if r.id in hist and key in hist[r.id])
    out_groups = []
    runs: dict[str, Any] = {}
    reduced = False
    for gi, g in enumerate(groups):
        series = {}
        for r in g.runs:
            if r.id in hist and key in hist[r.id]:
                steps, values = hist[r.id][key]
                series[r.id] = per_epoch(steps, values, r.steps_per_epoch) if per_epochs else (
                    steps.astype(float) + 1, values)
        if not series:
            continue
        cg = CurveGroup(g.short, series, {r.id: r.steps_per_epoch for r in g.runs}, g.count("diverged"),
                        {r.id: r.status for r in g.runs})
        with np.errstate(all="ignore"):
            lin = mean_curve(cg, series)
            log = mean_curve(cg, series, log_y=True)
        xs, (centre, low, high, gc, gl, gh, count) = downsample(
            lin.xs, [lin.centre, lin.low, lin.high, log.centre, log.low, log.high, lin.count.astype(float)],
            MAX_POINTS, ["at", "min", "max", "at", "min", "max", "min"])
        reduced |= xs.size < lin.xs.size
        out_groups.append({
            "group": gi, "x": _round(xs), "mean": _round(centre), "low": _round(low), "high": _round(high),
            "gmean": _round(gc), "glow": _round(gl), "ghigh": _round(gh),
            "count": [int(c) for c in count], "runs": lin.runs, "stopped": lin.stopped,
        })
        for rid, (s, v) in series.items():
            rx, (ry,) = downsample(np.asarray(s, dtype=float), [np.asarray(v, dtype=float)], MAX_RUN_POINTS)
            reduced |= rx.size < len(s)
            runs[rid] = {"group": gi, "x": _round(rx), "y": _round(ry)}
    return {"key": key, "x": "epoch" if per_epochs else "update", "groups": out_groups, "runs": runs,
            "downsampled": reduced}


def _caution(result: dict[str, Any]) -> list[str]:
    """The comparisons whose interval cannot separate a group from the baseline (or that have no test)."""
    out = []
    for g in result["groups"]:
        for label, m in g["metrics"].items():
            c = m.get("vs_baseline")
            if c is None:
                continue
            low, high, p = c.get("low"), c.get("high"), c.get("p")
            if c.get("method") == "none" or low is None or high is None:
                why = c.get("note") or "too few shared values"
                out.append(f"{g['name']} vs {result['baseline']} on {label}: no interval ({why})")
            elif low <= 0 <= high or (p is not None and p >= 1 - result["confidence"]):
                out.append(f"{g['name']} vs {result['baseline']} on {label}: the {result['confidence'] * 100:g} % "
                           f"interval of the difference [{low:.4g}, {high:.4g}] includes 0 — these runs cannot "
                           f"tell the two apart")
    return out


def _value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v if isinstance(v, str | int | float | bool) or v is None else str(v)


def _runs_table(runs: Sequence[Any], groups: Sequence[Any]) -> dict[str, Any]:
    """Rows of the runs table: the parameters that differ between runs, status, group and summaries."""
    from expsvc.analysis.compare import differing

    group_of = {r.id: gi for gi, g in enumerate(groups) for r in g.runs}
    found = [k for k in differing([r.params for r in runs], absent_differs=True) if k != "seed"]
    params = [k for k in found if k != "optimizer_spec" or "optimizer" not in found]
    summary_keys = sorted({k for r in runs for k in r.summaries}, key=lambda k: (k != "loss", k))
    rows = []
    for r in runs:
        rows.append({
            "id": r.id, "seed": r.seed, "status": r.display_status, "group": group_of.get(r.id),
            "params": {k: _value(r.params.get(k)) for k in params},
            "summaries": {k: {f: _value(s.get(f)) for f in ("first", "last", "min", "max", "min_step", "max_step")}
                          for k, s in r.summaries.items()},
            "updates": r.updates, "duration": _value(r.duration),
        })
    return {"params": params, "summaries": summary_keys, "rows": rows}


def _sensitivity(runs: Sequence[Any], metric: Any, chosen: dict[str, dict[str, Any]] | None) -> dict[str, Any] | None:
    """For a sweep (a numeric hyper-parameter taking several values per optimizer): the metric's mean and
    95 % t interval over the seeds at each value, per optimizer; other settings that vary are pooled (said).

    ``chosen`` (optimizer → {parameter: value}) marks the value a study chose (:func:`build_study`).
    """
    from expsvc.analysis import stats
    from expsvc.analysis.compare import COMPLETED, differing

    diff = differing([r.params for r in runs], absent_differs=False)
    hypers = [k for k, vals in diff.items() if k not in ("seed", "optimizer", "optimizer_spec")
              and all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals if v is not None)]
    if not hypers:
        return None
    optimizers = sorted({str(r.params.get("optimizer")) for r in runs})
    views = []
    for h in hypers:
        per_opt = []
        for opt in optimizers:
            cells: dict[float, list[float]] = {}
            for r in runs:
                v = metric.value(r) if r.status == COMPLETED else None
                x = r.params.get(h)
                if str(r.params.get("optimizer")) == opt and x is not None and v is not None:
                    cells.setdefault(float(x), []).append(v)
            if len(cells) < 2:
                continue
            xs = sorted(cells)
            summaries = [stats.summarize(cells[x]) for x in xs]
            per_opt.append({
                "optimizer": opt, "x": xs, "mean": [_value(s.mean) for s in summaries],
                "low": [_value(s.mean - s.ci) if math.isfinite(s.ci) else _value(s.mean) for s in summaries],
                "high": [_value(s.mean + s.ci) if math.isfinite(s.ci) else _value(s.mean) for s in summaries],
                "n": [s.n for s in summaries],
                "chosen": _value((chosen or {}).get(opt, {}).get(h)),
            })
        if per_opt:
            pooled = [k for k in hypers if k != h]
            views.append({"param": h, "optimizers": per_opt, "pooled": pooled,
                          "log_x": all(x > 0 for p in per_opt for x in p["x"])
                          and max(x for p in per_opt for x in p["x"]) / min(x for p in per_opt for x in p["x"]) > 20})
    if not views:
        return None
    return {"metric": metric.label, "better": "lower" if metric.lower_is_better else "higher", "views": views}


def _parallel(runs: Sequence[Any], metrics: Sequence[Any], groups: Sequence[Any]) -> dict[str, Any] | None:
    """Parallel coordinates: each differing parameter (categories as positions) and each compared metric."""
    from expsvc.analysis.compare import COMPLETED, differing

    group_of = {r.id: gi for gi, g in enumerate(groups) for r in g.runs}
    params = [k for k in differing([r.params for r in runs], absent_differs=True) if k not in ("optimizer_spec",)]
    dims = []
    for k in params:
        vals = [r.params.get(k) for r in runs]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals if v is not None)
        cats = None if numeric else sorted({str(v) for v in vals})
        dims.append({"name": k, "kind": "param", "categories": cats,
                     "values": [_value(v) if numeric else (None if v is None else cats.index(str(v)))  # type: ignore[union-attr]
                                for v in vals]})
    for m in metrics:
        dims.append({"name": m.label, "kind": "metric", "categories": None,
                     "values": [_value(m.value(r)) if r.status == COMPLETED else None for r in runs]})
    if len(dims) < 2:
        return None
    return {"dims": dims, "runs": [r.id for r in runs], "groups": [group_of.get(r.id) for r in runs]}


def _provenance(store: Any, runs: Sequence[Any], groups: Sequence[Any], name: str) -> dict[str, Any]:
    """Versions that produced the runs, every component with its plugin and version, and the command."""
    import expsvc
    from expsvc.store import read

    versions: dict[str, list[str]] = {}
    for r in runs:
        for k, v in r.versions.items():
            if v not in versions.setdefault(k, []):
                versions[k].append(v)
    components: dict[tuple[Any, ...], dict[str, Any]] = {}
    for g in groups:  # one run per configuration: the components are the configuration's
        for rid in {r.group_key: r.id for r in g.runs}.values():
            for c in read.details(store, rid).components:
                components.setdefault(tuple(c.get(k) for k in ("kind", "name", "spec", "plugin", "version")), c)
    return {
        "versions": versions,
        "report": {"expsvc": expsvc.__version__, "python": platform.python_version(), "numpy": np.__version__},
        "components": list(components.values()),
        "command": reproduce(runs, name),
    }


def reproduce(runs: Sequence[Any], name: str) -> str:
    """An ``expsvc run`` command over every stored setting's values (a grid: the experiment's configurations
    are among its cells) and the seeds run."""
    parts = ["expsvc", "run", "--name", shlex.quote(name)]
    for key, flag in RUN_FLAGS.items():
        values = list(dict.fromkeys(r.params[key] for r in runs if key in r.params))
        for v in values:
            parts += [flag, shlex.quote(str(v))]
    shuffles = {r.params.get("shuffle") for r in runs if "shuffle" in r.params}
    if shuffles == {True}:
        parts.append("--shuffle")
    for seed in sorted({r.seed for r in runs}):
        parts += ["--seed", str(seed)]
    return " ".join(parts)


def build(store: Any, selection: Selection, *, strict: bool = True,
          chosen: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The whole report of one experiment (``selection.experiment``, else the latest) as a JSON-ready dict.

    ``strict``: a comparison that ``compare`` refuses (merged configurations without ``pool``...) raises,
    as ``compare`` does; otherwise (the UI) the page says why and still shows the curves and the runs.
    """
    from expsvc.analysis import compare as cmp
    from expsvc.store import read

    exp = store.resolve_experiment(selection.experiment)
    ids = None
    if selection.where is not None:
        ids = read.run_ids(store, where=selection.where, experiment_ids=[exp.id])
        if not ids:
            raise ReportError(f"no run of experiment {exp.name!r} matches --where {selection.where!r}")
    refusal = None
    result: dict[str, Any] | None = None
    try:
        res, groups = cmp.compare_experiments(store, {exp.id: exp.name}, by=selection.by, pool=selection.pool,
                                              metrics=selection.metrics, baseline=selection.baseline, run_ids=ids)
        result = res.to_dict()
        metrics = res.metrics
        runs = [r for g in groups for r in g.runs]
    except cmp.CompareError as err:
        if strict:
            raise
        refusal = str(err)
        runs = read.records(store, experiment_ids=[exp.id], run_ids=ids, versions=True)
        if not runs:
            raise
        cmp.resolve_params(runs)
        groups = cmp.group_runs(runs)
        metrics = cmp.choose_metrics(None, runs, read.summary_keys(store, [exp.id]))
    runs.sort(key=lambda r: (r.created_at or datetime.min.replace(tzinfo=UTC), r.id))
    hist, keys = _series(store, groups)
    return {
        "experiment": exp.name,
        "where": selection.where,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "compare": result, "refusal": refusal, "caution": _caution(result) if result else [],
        "groups": [{"label": g.label, "name": g.short, "n": len(g.runs),
                    "statuses": {s: g.count(s) for s in sorted({r.status for r in g.runs})}} for g in groups],
        "running": sum(r.status in ("queued", "running") for r in runs),
        "curves": [_curves(groups, hist, k) for k in keys],
        "downsample": {"group_points": MAX_POINTS, "run_points": MAX_RUN_POINTS, "digits": DIGITS},
        "table": _runs_table(runs, groups),
        "sensitivity": _sensitivity(runs, metrics[0], chosen) if metrics else None,
        "parallel": _parallel(runs, metrics, groups),
        "provenance": _provenance(store, runs, groups, exp.name),
    }


def build_study(store: Any, name: str, *, strict: bool = True) -> dict[str, Any]:
    """The report of an ``expsvc tune`` study: the answer, curves and runs of its confirmation experiment (test
    data), and the sensitivity of its tuning experiment on the selection metric (validation data), each
    optimizer's chosen value marked; ``study`` holds the rule, the choices and the selection's warnings."""
    from expsvc.analysis.compare import parse_metric, resolve_params
    from expsvc.specs import parse
    from expsvc.store import read
    from expsvc.store.studies import get_study

    record = get_study(store, name)
    if record.confirmation_experiment is None or record.selection is None:
        raise ReportError(f"study {name!r} is not complete (status {record.status}); finish it with "
                          f"expsvc tune --resume {name}")
    report = build(store, Selection(experiment=record.confirmation_experiment), strict=strict)
    metric = parse_metric(record.spec["select"])
    choices = record.selection.get("choices", {})
    chosen: dict[str, dict[str, Any]] = {}
    for choice in choices.values():
        optimizer = parse(choice["config"]["optimizer"], "optimizer").name
        chosen[optimizer] = {k if k == "lr" else f"optimizer.{k}": v for k, v in choice["settings"].items()}
    if record.tuning_experiment is not None:
        tuning = read.records(store, experiment_ids=[store.resolve_experiment(record.tuning_experiment).id],
                              summary_keys=[metric.field.key])
        resolve_params(tuning)
        report["sensitivity"] = _sensitivity(tuning, metric, chosen)
    report["study"] = {"name": record.name, "rule": record.rule, "status": record.status,
                       "tuning": record.tuning_experiment, "confirmation": record.confirmation_experiment,
                       "choices": {k: c["settings"] for k, c in choices.items()},
                       "warnings": record.selection.get("warnings", [])}
    return report
