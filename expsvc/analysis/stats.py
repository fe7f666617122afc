"""Statistics for comparing groups of seeds: t intervals, IQM with a bootstrap interval, paired/Welch tests.

All distributions come from :mod:`scipy.stats` (imported inside the functions so that the CLI starts fast).
Every function takes plain sequences of finite floats and returns plain dataclasses of floats (``nan`` where
a quantity is undefined, e.g. an interval from one value).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_SEED = 20240601
BOOTSTRAP_RESAMPLES = 2000
NAN = float("nan")


@dataclass(frozen=True)
class Summary:
    """Descriptive statistics of one metric in one group (over its completed runs)."""

    n: int
    mean: float = NAN
    ci: float = NAN  # half-width of the Student-t interval of the mean
    std: float = NAN  # ddof = 1
    median: float = NAN
    iqm: float = NAN  # interquartile mean: mean of the middle 50 %
    iqm_low: float = NAN  # percentile-bootstrap interval of the IQM
    iqm_high: float = NAN
    min: float = NAN
    max: float = NAN

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``nan`` → ``None``)."""
        return {k: _clean(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Comparison:
    """A candidate group against the baseline on one metric (difference = candidate − baseline)."""

    method: str  # "paired" | "welch" | "none"
    n: int  # pairs (paired) or candidate values (welch)
    n_baseline: int  # baseline values
    n_candidate: int  # candidate values
    diff: float = NAN
    ci: float = NAN  # half-width of the interval of ``diff``
    low: float = NAN
    high: float = NAN
    p: float = NAN
    prob_better: float = NAN  # P(candidate better than baseline) = U / (n·m), ties count one half
    wins: int | None = None  # paired: seeds where the candidate is better
    losses: int | None = None  # paired: seeds where it is worse
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``nan`` → ``None``)."""
        return {k: _clean(v) for k, v in asdict(self).items()}


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def t_halfwidth(values: Sequence[float], confidence: float = CONFIDENCE) -> float:
    """Half-width of the Student-t confidence interval of the mean (``nan`` for fewer than two values)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return NAN
    return float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50 % (``scipy.stats.trim_mean`` with 25 % cut each side)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    return float(stats.trim_mean(x, 0.25)) if x.size else NAN


def bootstrap_iqm(
    values: Sequence[float], seed: int = BOOTSTRAP_SEED, resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the IQM, reproducible through ``seed`` (``nan`` for n < 2)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return NAN, NAN
    rng = np.random.default_rng(seed)
    samples = x[rng.integers(0, x.size, size=(resamples, x.size))]
    boot = stats.trim_mean(samples, 0.25, axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return float(low), float(high)


def summarize(values: Sequence[float], seed: int = BOOTSTRAP_SEED) -> Summary:
    """Describe ``values`` (finite floats); n = 1 gives the value with no interval, n = 0 only ``n``."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Summary(0)
    if x.size == 1:
        v = float(x[0])
        return Summary(1, mean=v, median=v, iqm=v, min=v, max=v)
    low, high = bootstrap_iqm(x, seed)
    return Summary(
        n=int(x.size), mean=float(x.mean()), ci=t_halfwidth(x), std=float(x.std(ddof=1)),
        median=float(np.median(x)), iqm=iqm(x), iqm_low=low, iqm_high=high,
        min=float(x.min()), max=float(x.max()),
    )


def prob_better(candidate: Sequence[float], baseline: Sequence[float], lower_is_better: bool) -> float:
    """P(a candidate run beats a baseline run) from the Mann–Whitney U statistic, ``U / (n·m)``."""
    from scipy import stats

    x, y = np.asarray(candidate, dtype=float), np.asarray(baseline, dtype=float)
    if x.size == 0 or y.size == 0:
        return NAN
    u = float(stats.mannwhitneyu(x, y, alternative="two-sided").statistic)  # #(x > y) + ties / 2
    p_greater = u / (x.size * y.size)
    return 1.0 - p_greater if lower_is_better else p_greater


def compare(
    candidate: dict[int, float], baseline: dict[int, float], lower_is_better: bool,
    confidence: float = CONFIDENCE,
) -> Comparison:
    """Compare two groups given as ``{seed: value}``: paired by seed over the shared seeds when there are
    at least two, Welch's unequal-variance t otherwise; plus the probability of improvement."""
    from scipy import stats

    shared = sorted(set(candidate) & set(baseline))
    x_all = np.array(list(candidate.values()), dtype=float)
    y_all = np.array(list(baseline.values()), dtype=float)
    pb = prob_better(x_all, y_all, lower_is_better)
    q = 0.5 + confidence / 2
    if len(shared) >= 2:
        x = np.array([candidate[s] for s in shared])
        y = np.array([baseline[s] for s in shared])
        d = x - y
        n = d.size
        diff = float(d.mean())
        sd = float(d.std(ddof=1))
        half = float(stats.t.ppf(q, n - 1) * sd / math.sqrt(n))
        p = float(stats.ttest_rel(x, y).pvalue) if sd > 0 else NAN
        better = d < 0 if lower_is_better else d > 0
        worse = d > 0 if lower_is_better else d < 0
        note = "" if sd > 0 else "all paired differences are equal: no interval or test is possible"
        return Comparison("paired", n, y_all.size, x_all.size, diff, half, diff - half, diff + half, p, pb,
                          int(better.sum()), int(worse.sum()), note)
    n, m = x_all.size, y_all.size
    if n == 0 or m == 0:
        return Comparison("none", n, m, n, note="no completed runs with a value in "
                          + ("this group" if n == 0 else "the baseline"))
    diff = float(x_all.mean() - y_all.mean())
    if n < 2 or m < 2:
        return Comparison("none", n, m, n, diff, prob_better=pb,
                          note="no interval is possible with a single run in a group")
    vx, vy = x_all.var(ddof=1) / n, y_all.var(ddof=1) / m
    se = math.sqrt(vx + vy)
    if se == 0:
        return Comparison("welch", n, m, n, diff, 0.0, diff, diff, NAN, pb,
                          note="neither group has any spread: no interval or test is possible")
    df = (vx + vy) ** 2 / (vx**2 / (n - 1) + vy**2 / (m - 1))
    half = float(stats.t.ppf(q, df) * se)
    p = float(stats.ttest_ind(x_all, y_all, equal_var=False).pvalue)
    return Comparison("welch", n, m, n, diff, half, diff - half, diff + half, p, pb)
