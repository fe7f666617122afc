"""Statistics for comparing groups of seeds: t intervals, IQM with a bootstrap interval, paired/Welch tests.

The Student-t distribution comes from scipy: ``scipy.special.stdtrit`` (quantile) and ``scipy.special.stdtr``
(CDF) are the functions behind ``scipy.stats.t.ppf`` / ``.cdf``.  ``scipy.stats`` itself is not imported: it
takes ~0.6-0.9 s to import on a small machine, more than all of ``expsvc compare``'s work on 1,000 runs.
The test statistics (paired t, Welch t with Welch–Satterthwaite df, the Mann–Whitney U count, the 25 %
trimmed mean) are their textbook definitions; ``tests/test_stats.py`` checks every one against
``scipy.stats.ttest_rel``, ``ttest_ind(equal_var=False)``, ``mannwhitneyu`` and ``trim_mean``.
Every function takes plain sequences of finite floats and returns plain dataclasses of floats (``nan`` where
a quantity is undefined, e.g. an interval from one value).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
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


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (``scipy.stats.t.ppf``)."""
    from scipy.special import stdtrit

    return float(stdtrit(df, q))


def t_two_sided_p(t: float, df: float) -> float:
    """Two-sided p-value of a t statistic: ``2·P(T ≤ −|t|)`` (``scipy.stats.t.cdf``)."""
    from scipy.special import stdtr

    return float(2.0 * stdtr(df, -abs(t)))


def t_halfwidth(values: Sequence[float], confidence: float = CONFIDENCE) -> float:
    """Half-width of the Student-t confidence interval of the mean (``nan`` for fewer than two values)."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return NAN
    return t_quantile(0.5 + confidence / 2, x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)


def trimmed_mean(x: np.ndarray, cut: float = 0.25, axis: int = -1) -> np.ndarray:
    """Mean after dropping ``int(cut·n)`` values at each end of the sorted data (``scipy.stats.trim_mean``)."""
    n = x.shape[axis]
    low = int(cut * n)
    return np.sort(x, axis=axis).take(range(low, n - low), axis=axis).mean(axis=axis)


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50 % (25 % trimmed from each side)."""
    x = np.asarray(values, dtype=float)
    return float(trimmed_mean(x)) if x.size else NAN


def bootstrap_iqm(
    values: Sequence[float], seed: int = BOOTSTRAP_SEED, resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the IQM, reproducible through ``seed`` (``nan`` for n < 2)."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return NAN, NAN
    rng = np.random.default_rng(seed)
    samples = x[rng.integers(0, x.size, size=(resamples, x.size))]
    boot = trimmed_mean(samples, 0.25, axis=1)
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
    x, y = np.asarray(candidate, dtype=float), np.asarray(baseline, dtype=float)
    if x.size == 0 or y.size == 0:
        return NAN
    greater = x[:, None] > y[None, :]
    ties = x[:, None] == y[None, :]
    u = float(greater.sum() + 0.5 * ties.sum())  # U of x: #(x > y) + ties / 2 (scipy.stats.mannwhitneyu)
    p_greater = u / (x.size * y.size)
    return 1.0 - p_greater if lower_is_better else p_greater


def compare(
    candidate: dict[Hashable, float], baseline: dict[Hashable, float], lower_is_better: bool,
    confidence: float = CONFIDENCE,
) -> Comparison:
    """Compare two groups given as ``{seed: value}`` (or any keys: a pooled group's are (configuration, seed)):
    paired over the shared keys when there are at least two, Welch's unequal-variance t otherwise; plus the
    probability of improvement."""
    shared = sorted(set(candidate) & set(baseline))  # type: ignore[type-var]
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
        half = t_quantile(q, n - 1) * sd / math.sqrt(n)
        p = t_two_sided_p(diff / (sd / math.sqrt(n)), n - 1) if sd > 0 else NAN  # paired t (ttest_rel)
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
    half = t_quantile(q, df) * se
    p = t_two_sided_p(diff / se, df)  # Welch's t (ttest_ind, equal_var=False)
    return Comparison("welch", n, m, n, diff, half, diff - half, diff + half, p, pb)


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact sign test: ``P`` of a split at least as uneven as ``wins : losses`` under a fair coin
    (``scipy.stats.binomtest(wins, wins + losses).pvalue``); NaN without a determined pair."""
    n = wins + losses
    if n == 0:
        return NAN
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def compare_censored(
    candidate: dict[Hashable, float], baseline: dict[Hashable, float],
    candidate_censored: dict[Hashable, bool], baseline_censored: dict[Hashable, bool], lower_is_better: bool,
) -> Comparison:
    """Compare two groups where some values are right-censored (the true value is *at least* the one given,
    e.g. the updates of a run that never converged): no mean difference exists, so only the direction of
    each shared seed is used where it is certain (an observed value below a censored one; never two
    censored values), and the exact sign test gives the p-value.  Seeds whose order is unknown are counted
    in ``note``; ``n`` is the number of determined pairs."""
    shared = sorted(set(candidate) & set(baseline))  # type: ignore[type-var]
    wins = losses = unknown = 0
    for key in shared:
        x, y = candidate[key], baseline[key]
        cx, cy = candidate_censored.get(key, False), baseline_censored.get(key, False)
        # x < y is certain when x is observed (a censored y is only larger still); likewise y < x
        if not cx and x < y:
            lower = True
        elif not cy and y < x:
            lower = False
        else:
            unknown += cx or cy  # two equal observed values are a tie, counted nowhere
            continue
        if lower == lower_is_better:
            wins += 1
        else:
            losses += 1
    note = "exact sign test; censored values (runs that never converged) count only where the order is certain"
    if unknown:
        note += f"; {unknown} seed(s) undetermined"
    if len(shared) < 2:
        note = "censored values and fewer than two shared seeds: no test is possible"
    return Comparison("sign", wins + losses, len(baseline), len(candidate), p=sign_test_p(wins, losses),
                      wins=wins, losses=losses, note=note)
