"""``expsvc compare``: group the runs of an experiment and compare every group with a baseline.

Statistics are computed over the *finished* runs of each group; diverged, failed and unfinished runs are
counted and shown next to them, never folded into the numbers.  See :data:`METHOD` for the printed method.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from expsvc.analysis import keys as _keys
from expsvc.analysis import stats
from expsvc.analysis.grammar import RUN_FIELDS, Field, GrammarError, metric_key, parse_field
from expsvc.analysis.keys import (  # noqa: F401 (LABEL_ORDER, NOT_LABELS: re-exported, they used to live here)
    LABEL_ORDER,
    NOT_LABELS,
    SUMMARY_COLS,
    fmt_value,
    label_keys,
    param_value,
)
from expsvc.errors import ExpsvcError, did_you_mean
from expsvc.store.models import MetricSummary, Run, RunParam

COMPLETED = "finished"
LOWER_WORDS = ("loss", "mse", "mae", "rmse", "error", "updates", "epochs", "duration", "time", "nll")
HIGHER_WORDS = ("accuracy", "precision", "recall", "f1", "auc", "r2", "score")


class CompareError(ExpsvcError):
    """A bad ``compare`` request (unknown metric, unknown baseline, no runs...)."""


# ---------------------------------------------------------------------------------------------- data
@dataclass
class RunRecord:
    """What the analysis needs of one run: its columns, parameters and summaries (never its history)."""

    id: str
    experiment_id: int
    seed: int
    status: str
    group_key: str
    created_at: datetime | None = None
    started_at: datetime | None = None
    error: str | None = None
    updates: int | None = None
    epochs: int | None = None
    duration: float | None = None
    converged: bool | None = None
    steps_per_epoch: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def display_status(self) -> str:
        """``failed (stale)`` for runs failed by the stale-run sweep, the status otherwise."""
        if self.status == "failed" and (self.error or "").startswith("stale:"):
            return "failed (stale)"
        return self.status


_SUMMARY_COLS = SUMMARY_COLS


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def load_records(
    session: Session, *, experiment_id: int | None = None, run_ids: Sequence[str] | None = None,
    summary_keys: Iterable[str] | None = None,
) -> list[RunRecord]:
    """Runs of an experiment (or the given ids) with params and summaries: three queries, oldest first."""
    q = select(Run).order_by(Run.created_at, Run.id)
    if experiment_id is not None:
        q = q.where(Run.experiment_id == experiment_id)
    if run_ids is not None:
        runs: list[Run] = []
        for chunk in _chunks(list(run_ids)):
            runs.extend(session.scalars(q.where(Run.id.in_(chunk))))
        runs.sort(key=lambda r: (r.created_at or datetime.min, r.id))
    else:
        runs = list(session.scalars(q))
    records = {
        r.id: RunRecord(
            id=r.id, experiment_id=r.experiment_id, seed=r.seed, status=r.status, group_key=r.group_key,
            created_at=r.created_at, started_at=r.started_at, error=r.error, updates=r.updates, epochs=r.epochs,
            duration=r.duration, converged=r.converged, steps_per_epoch=r.steps_per_epoch,
            config=dict(r.config or {}),
        )
        for r in runs
    }
    ids = list(records)
    keys = None if summary_keys is None else sorted(set(summary_keys))
    for chunk in _chunks(ids):
        pq = select(RunParam.run_id, RunParam.key, RunParam.value_num, RunParam.value_text).where(
            RunParam.run_id.in_(chunk))
        for run_id, key, num, text in session.execute(pq):
            records[run_id].params[key] = param_value(text, num)
        cols = [getattr(MetricSummary, c) for c in _SUMMARY_COLS]
        sq = select(MetricSummary.run_id, MetricSummary.key, *cols).where(MetricSummary.run_id.in_(chunk))
        if keys is not None:
            if not keys:
                continue
            sq = sq.where(MetricSummary.key.in_(keys))
        for row in session.execute(sq):
            records[row[0]].summaries[row[1]] = dict(zip(_SUMMARY_COLS, row[2:], strict=True))
    return list(records.values())


#: re-exported from :mod:`expsvc.analysis.keys` (defined here before ``runs`` stopped importing this module)
summary_keys = _keys.summary_keys
param_keys = _keys.param_keys


# ------------------------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class Metric:
    """A quantity compared across groups: a summary statistic or a numeric run column."""

    label: str
    field: Field
    lower_is_better: bool
    verb: str = "reached a"
    better: str = ""
    worse: str = ""

    def value(self, run: RunRecord) -> float | None:
        """This metric of ``run``; ``None`` when missing or not finite."""
        if self.field.kind == "summary":
            raw = run.summaries.get(self.field.key, {}).get(self.field.stat)
        else:
            raw = getattr(run, self.field.key, None)
        if raw is None:
            return None
        v = float(raw)
        return v if math.isfinite(v) else None

    @property
    def spec(self) -> str:
        return str(self.field)


def _direction(key: str) -> bool:
    """Lower is better for losses, errors, updates and time; higher for accuracy-like scores."""
    k = key.lower()
    return not any(w in k for w in HIGHER_WORDS)


def make_metric(field_: Field, label: str | None = None, lower_is_better: bool | None = None) -> Metric:
    """A :class:`Metric` for ``field_`` with its label, direction and the words of its sentence."""
    lower = _direction(field_.key) if lower_is_better is None else lower_is_better
    if label is None:
        if field_.kind == "summary" and field_.key == "loss" and field_.stat in ("last", "min"):
            label = "final loss" if field_.stat == "last" else "min loss"
        elif field_.kind == "summary" and field_.stat == "last":
            label = field_.key.replace("_", " ")
        else:
            label = str(field_)
    words = ("lower", "higher") if lower else ("higher", "lower")
    verb = "reached a"
    if field_.kind == "run" and field_.key in ("updates", "epochs"):
        verb, words = "needed", (("fewer", "more") if lower else ("more", "fewer"))
    elif field_.kind == "run" and field_.key == "duration":
        verb, words = "took", (("less", "more") if lower else ("more", "less"))
    return Metric(label, field_, lower, verb, *words)


DEFAULT_METRICS: tuple[Metric, ...] = (
    make_metric(Field("summary", "loss", "last"), "final loss"),
    make_metric(Field("summary", "loss", "min"), "min loss"),
    make_metric(Field("summary", "test_accuracy", "last"), "test accuracy"),
    make_metric(Field("run", "updates"), "updates to converge"),
    make_metric(Field("run", "duration"), "time"),
)
_ALIASES = {"final_loss": Field("summary", "loss", "last"), "min_loss": Field("summary", "loss", "min")}


def parse_metric(text: str) -> Metric:
    """Parse ``--metric``: a summary key (``test_f1``, ``accuracy`` = test accuracy), ``min(loss)``,
    ``metrics.KEY``, ``final_loss``/``min_loss``, ``updates``/``epochs``/``duration``; an optional
    ``:lower``/``:higher`` suffix overrides the direction."""
    spec, _, direction = text.strip().partition(":")
    lower: bool | None = None
    if direction:
        if direction not in ("lower", "higher"):
            raise CompareError(f"metric direction {direction!r} in {text!r}: use ':lower' or ':higher'")
        lower = direction == "lower"
    if spec in _ALIASES:
        return make_metric(_ALIASES[spec], lower_is_better=lower)
    try:
        f = parse_field(spec)
    except GrammarError as err:
        if spec.isidentifier() and spec.lower() not in RUN_FIELDS:
            f = Field("summary", metric_key(spec), "last")
        else:
            raise CompareError(f"bad metric {text!r}: {err.message}") from err
    if f.kind == "param":
        raise CompareError(f"--metric {text!r} is a parameter; compare metrics (e.g. test_accuracy, min(loss))")
    if f.kind == "run" and (RUN_FIELDS[f.key][1] != "num" or f.key == "seed"):
        raise CompareError(f"--metric {text!r} is not a numeric result; use updates, epochs, duration or a metric")
    return make_metric(f, lower_is_better=lower)


# -------------------------------------------------------------------------------------------- groups
@dataclass
class Group:
    """Runs sharing a configuration (without the seed) or the values of the ``--by`` parameters."""

    label: str
    short: str
    values: dict[str, Any]
    runs: list[RunRecord]

    @property
    def completed(self) -> list[RunRecord]:
        return [r for r in self.runs if r.status == COMPLETED]

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.runs)


def _label(values: dict[str, Any]) -> tuple[str, str]:
    label = ", ".join(f"{k}={fmt_value(v)}" for k, v in values.items())
    short = fmt_value(next(iter(values.values()))) if len(values) == 1 else label
    return label, short


def group_runs(runs: Sequence[RunRecord], by: Sequence[str] | None = None) -> list[Group]:
    """Group runs by ``group_key`` (labelled by the parameters that vary between groups) or by ``by``."""
    if not runs:
        return []
    if by:
        known = sorted({k for r in runs for k in r.params})
        for key in by:
            if key not in known:
                raise CompareError(
                    f"--by {key!r} is not a parameter of these runs{did_you_mean(key, known)}; "
                    f"known: {', '.join(known)}")
        buckets: dict[tuple[Any, ...], list[RunRecord]] = {}
        for r in runs:
            buckets.setdefault(tuple(r.params.get(k) for k in by), []).append(r)
        groups = []
        for values, members in buckets.items():
            vals = dict(zip(by, values, strict=True))
            groups.append(Group(*_label(vals), vals, members))
        return groups
    buckets_k: dict[str, list[RunRecord]] = {}
    for r in runs:
        buckets_k.setdefault(r.group_key, []).append(r)
    firsts = {k: v[0].params for k, v in buckets_k.items()}
    varying = label_keys(list(firsts.values()))
    groups = []
    for gk, members in buckets_k.items():
        params = firsts[gk]
        if varying:
            vals = {k: params.get(k) for k in varying}
        elif len(buckets_k) == 1 and "optimizer" in params:
            vals = {"optimizer": params["optimizer"]}
        else:
            vals = {"group": gk}
        groups.append(Group(*_label(vals), vals, members))
    return groups


def find_baseline(groups: Sequence[Group], ref: str | None) -> int:
    """Index of the baseline group: ``ref`` matches a label, a short name or a ``key=value`` in a label."""
    if ref is None:
        return 0
    ref = ref.strip()
    for test in (
        lambda g: g.label == ref or g.short == ref,
        lambda g: ref in [fmt_value(v) for v in g.values.values()] or ref in g.label.split(", "),
    ):
        hits = [i for i, g in enumerate(groups) if test(g)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise CompareError(f"--baseline {ref!r} matches several groups: "
                               f"{'; '.join(groups[i].label for i in hits)}; give the full label")
    labels = [g.label for g in groups]
    shorts = [g.short for g in groups]
    raise CompareError(f"--baseline {ref!r} matches no group{did_you_mean(ref, labels + shorts)}; "
                       f"groups: {'; '.join(labels)}")


# ------------------------------------------------------------------------------------------- compare
@dataclass
class GroupResult:
    """One group's counts, per-metric summaries and comparison with the baseline."""

    label: str
    short: str
    n_expected: int
    n_completed: int
    n_diverged: int
    n_failed: int
    n_unfinished: int  # queued, running or interrupted
    seeds: list[int]
    is_baseline: bool
    summaries: dict[str, stats.Summary]
    comparisons: dict[str, stats.Comparison | None]
    sentences: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the same numbers the table shows, at full precision."""
        return {
            "label": self.label, "name": self.short, "baseline": self.is_baseline,
            "n_expected": self.n_expected, "n_completed": self.n_completed, "n_diverged": self.n_diverged,
            "n_failed": self.n_failed, "n_unfinished": self.n_unfinished, "seeds": self.seeds,
            "metrics": {
                k: {**s.to_dict(), "vs_baseline": (None if self.comparisons.get(k) is None
                                                   else self.comparisons[k].to_dict()),  # type: ignore[union-attr]
                    "sentence": self.sentences.get(k)}
                for k, s in self.summaries.items()
            },
        }


@dataclass
class CompareResult:
    """Everything ``compare`` prints, in every format."""

    experiment: str
    baseline: str
    metrics: list[Metric]
    groups: list[GroupResult]
    bootstrap_seed: int
    confidence: float = stats.CONFIDENCE

    @property
    def method(self) -> list[str]:
        return method_lines(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the whole comparison."""
        return {
            "experiment": self.experiment, "baseline": self.baseline, "confidence": self.confidence,
            "bootstrap_seed": self.bootstrap_seed,
            "metrics": [{"label": m.label, "field": m.spec,
                         "better": "lower" if m.lower_is_better else "higher"} for m in self.metrics],
            "groups": [g.to_dict() for g in self.groups],
            "method": self.method,
        }


def _pm(diff: float, ci: float) -> str:
    """``0.031 ± 0.012``: the interval to two significant digits and the difference to the same decimals."""
    if not math.isfinite(ci) or ci <= 0:
        return f"{abs(diff):.4g}"
    decimals = max(0, 1 - math.floor(math.log10(ci)))
    return f"{abs(diff):.{decimals}f} ± {ci:.{decimals}f}"


def fmt_p(p: float) -> str:
    """``p = 0.002``, ``p < 0.001``."""
    if not math.isfinite(p):
        return "p undefined"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def sentence(metric: Metric, cand: str, base: str, c: stats.Comparison, conf: float = stats.CONFIDENCE) -> str:
    """The plain-language result, e.g. ``adamw reached a lower final loss than mini_bgd in 5 of 5 seeds...``."""
    pct = f"{conf * 100:g} %"
    if c.method == "none":
        extra = f" (difference of means {c.diff:+.4g})" if math.isfinite(c.diff) else ""
        return f"{cand} vs {base} on {metric.label}: {c.note}{extra}."
    if c.diff == 0:
        return f"{cand} and {base} had the same mean {metric.label} ({c.method}, n = {c.n})."
    is_better = (c.diff < 0) == metric.lower_is_better
    word = metric.better if is_better else metric.worse
    head = f"{cand} {metric.verb} {word} {metric.label} than {base}"
    if c.note and c.ci == 0:
        return f"{head} by {abs(c.diff):.4g} ({c.method}, n = {c.n}); {c.note}."
    if c.method == "paired":
        count = c.wins if is_better else c.losses
        shared_only = c.n < max(c.n_candidate, c.n_baseline)
        how = f"paired by seed over the {c.n} shared seeds" if shared_only else "paired by seed"
        text = f"{head} in {count} of {c.n} seeds, by {_pm(c.diff, c.ci)} ({pct} CI, {how}), {fmt_p(c.p)}"
    else:
        text = (f"{head} on average, by {_pm(c.diff, c.ci)} ({pct} CI, Welch's t, {c.n} vs {c.n_baseline} runs), "
                f"{fmt_p(c.p)}")
    if math.isfinite(c.p) and c.p >= 1 - conf:
        text += f"; not significant at the {100 - conf * 100:g} % level"
    return text + "."


def compare_groups(
    groups: Sequence[Group], metrics: Sequence[Metric] = DEFAULT_METRICS, baseline: int = 0,
    experiment: str = "", bootstrap_seed: int = stats.BOOTSTRAP_SEED,
) -> CompareResult:
    """Summarise every metric of every group and compare each group with ``groups[baseline]``."""
    if groups and not 0 <= baseline < len(groups):
        raise CompareError(f"baseline index {baseline} out of range")
    values: list[dict[str, dict[int, float]]] = []
    for g in groups:
        per_metric: dict[str, dict[int, float]] = {}
        for m in metrics:
            vals: dict[int, float] = {}
            for r in g.completed:
                v = m.value(r)
                if v is not None:
                    vals.setdefault(r.seed, v)  # one value per seed (duplicate seeds: the first)
            per_metric[m.label] = vals
        values.append(per_metric)
    results = []
    for i, g in enumerate(groups):
        # values in seed order: the bootstrap resamples by position, so its interval must not depend on the
        # order the database returned the runs in
        summaries = {m.label: stats.summarize([v for _, v in sorted(values[i][m.label].items())], bootstrap_seed)
                     for m in metrics}
        comparisons: dict[str, stats.Comparison | None] = {}
        sentences: dict[str, str] = {}
        for m in metrics:
            if i == baseline:
                comparisons[m.label] = None
                continue
            c = stats.compare(values[i][m.label], values[baseline][m.label], m.lower_is_better)
            comparisons[m.label] = c
            sentences[m.label] = sentence(m, g.short, groups[baseline].short, c)
        done = g.count(COMPLETED)
        results.append(GroupResult(
            label=g.label, short=g.short, n_expected=len(g.runs), n_completed=done,
            n_diverged=g.count("diverged"), n_failed=g.count("failed"),
            n_unfinished=len(g.runs) - done - g.count("diverged") - g.count("failed"),
            seeds=sorted(r.seed for r in g.runs), is_baseline=i == baseline,
            summaries=summaries, comparisons=comparisons, sentences=sentences,
        ))
    return CompareResult(experiment, groups[baseline].label if groups else "", list(metrics), results,
                         bootstrap_seed)


def method_lines(result: CompareResult) -> list[str]:
    """The method, printed under the table."""
    pct = f"{result.confidence * 100:g} %"
    lower = [m.label for m in result.metrics if m.lower_is_better]
    higher = [m.label for m in result.metrics if not m.lower_is_better]
    direction = "; ".join(x for x in (
        f"lower is better for {', '.join(lower)}" if lower else "",
        f"higher is better for {', '.join(higher)}" if higher else "") if x)
    return [
        "Statistics over finished runs only; diverged, failed and unfinished runs are counted in their columns "
        "and excluded from every metric (a finished run without a value for a metric is left out of that "
        "metric's n).",
        f"mean ± half-width of the {pct} Student-t interval (scipy.special.stdtrit, n−1 df); std with ddof = 1; "
        f"IQM = mean of the middle 50 % (25 % trimmed each side) with a {pct} percentile-bootstrap "
        f"interval ({stats.BOOTSTRAP_RESAMPLES} resamples, seed {result.bootstrap_seed}).",
        f"Δ = group − baseline ({result.baseline}) with its {pct} interval: paired t over the shared seeds when "
        f"the two groups share at least two seeds, Welch's t (Welch–Satterthwaite df) otherwise; two-sided "
        f"p-values from Student's t (scipy.special.stdtr).",
        "P(better) = probability that a run of the group beats a run of the baseline, "
        "Mann–Whitney U / (n·m) with ties counted one half.",
        f"Direction: {direction}." if direction else "",
    ]
