"""Statistics: interval coverage by simulation, paired vs Welch choice, known answers against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as ss

from expsvc.analysis import stats


def test_t_interval_covers_the_true_mean_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(12345)
    true_mean = 3.0
    samples = rng.normal(true_mean, 2.0, size=(2000, 5))
    covered = 0
    for x in samples:  # t_halfwidth is exactly what summarize() prints as "mean ± ci"
        covered += abs(x.mean() - true_mean) <= stats.t_halfwidth(x)
    for x in samples[:5]:
        assert stats.summarize(x).ci == stats.t_halfwidth(x)
        assert stats.summarize(x).mean == pytest.approx(x.mean())
    rate = covered / len(samples)
    assert 0.94 <= rate <= 0.96, rate


def test_summary_matches_numpy_and_scipy() -> None:
    x = [0.31, 0.29, 0.35, 0.30, 0.41, 0.28, 0.33]
    s = stats.summarize(x)
    a = np.array(x)
    assert s.n == 7
    assert s.mean == pytest.approx(a.mean())
    assert s.std == pytest.approx(a.std(ddof=1))
    assert s.median == pytest.approx(np.median(a))
    assert s.min == min(x) and s.max == max(x)
    assert s.ci == pytest.approx(ss.t.ppf(0.975, 6) * a.std(ddof=1) / math.sqrt(7))
    lo, hi = ss.t.interval(0.95, 6, loc=a.mean(), scale=ss.sem(a))
    assert s.mean - s.ci == pytest.approx(lo) and s.mean + s.ci == pytest.approx(hi)
    assert s.iqm == pytest.approx(ss.trim_mean(a, 0.25))
    assert s.iqm_low <= s.iqm <= s.iqm_high


def test_iqm_is_the_mean_of_the_middle_half() -> None:
    assert stats.iqm([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx(np.mean([3, 4, 5, 6]))


def test_bootstrap_is_reproducible_with_its_seed() -> None:
    x = np.random.default_rng(0).normal(size=9)
    assert stats.bootstrap_iqm(x) == stats.bootstrap_iqm(x)
    assert stats.bootstrap_iqm(x, seed=1) != stats.bootstrap_iqm(x, seed=2)


def test_one_and_zero_values() -> None:
    one = stats.summarize([0.5])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.ci) and math.isnan(one.std)
    zero = stats.summarize([])
    assert zero.n == 0 and math.isnan(zero.mean)
    assert zero.to_dict()["mean"] is None


def test_paired_when_seeds_are_shared_and_known_answer() -> None:
    x = {0: 0.30, 1: 0.28, 2: 0.35, 3: 0.31, 4: 0.29}
    y = {0: 0.33, 1: 0.30, 2: 0.36, 3: 0.35, 4: 0.33}
    c = stats.compare(x, y, lower_is_better=True)
    assert c.method == "paired" and c.n == 5
    xa, ya = np.array(list(x.values())), np.array(list(y.values()))
    ref = ss.ttest_rel(xa, ya)
    assert c.p == pytest.approx(ref.pvalue)
    lo, hi = ref.confidence_interval(0.95)
    assert c.low == pytest.approx(lo) and c.high == pytest.approx(hi)
    assert c.diff == pytest.approx((xa - ya).mean())
    assert c.wins == 5 and c.losses == 0
    u = ss.mannwhitneyu(xa, ya).statistic
    assert c.prob_better == pytest.approx(1 - u / 25)


def test_paired_uses_only_the_shared_seeds() -> None:
    x = {0: 1.0, 1: 2.0, 2: 3.5, 7: 9.0}
    y = {0: 1.5, 1: 2.1, 2: 3.0, 9: 0.0}
    c = stats.compare(x, y, lower_is_better=True)
    assert c.method == "paired" and c.n == 3 and c.n_candidate == 4 and c.n_baseline == 4
    assert c.p == pytest.approx(ss.ttest_rel([1.0, 2.0, 3.5], [1.5, 2.1, 3.0]).pvalue)


def test_welch_when_seeds_differ_and_known_answer() -> None:
    x = {0: 1.0, 1: 1.2, 2: 0.9, 3: 1.1}
    y = {10: 1.5, 11: 1.9, 12: 1.4, 13: 2.2, 14: 1.6}
    c = stats.compare(x, y, lower_is_better=True)
    assert c.method == "welch"
    xa, ya = np.array(list(x.values())), np.array(list(y.values()))
    ref = ss.ttest_ind(xa, ya, equal_var=False)
    assert c.p == pytest.approx(ref.pvalue)
    lo, hi = ref.confidence_interval(0.95)
    assert c.low == pytest.approx(lo) and c.high == pytest.approx(hi)
    assert c.prob_better == pytest.approx(1.0)  # every candidate value is lower
    assert c.wins is None


def test_one_shared_seed_is_not_enough_to_pair() -> None:
    c = stats.compare({0: 1.0, 1: 2.0, 2: 1.5}, {0: 1.1, 5: 2.5, 6: 1.0}, lower_is_better=True)
    assert c.method == "welch"


def test_higher_is_better_flips_probability_and_wins() -> None:
    x = {0: 0.9, 1: 0.95, 2: 0.92}
    y = {0: 0.8, 1: 0.85, 2: 0.99}
    c = stats.compare(x, y, lower_is_better=False)
    assert c.wins == 2 and c.losses == 1
    assert c.prob_better == pytest.approx(ss.mannwhitneyu(list(x.values()), list(y.values())).statistic / 9)


def test_degenerate_groups() -> None:
    single = stats.compare({0: 1.0}, {0: 2.0, 1: 3.0}, lower_is_better=True)
    assert single.method == "none" and "single run" in single.note and single.diff == pytest.approx(-1.5)
    empty = stats.compare({}, {0: 2.0, 1: 3.0}, lower_is_better=True)
    assert empty.method == "none" and math.isnan(empty.diff)
    same = stats.compare({0: 1.0, 1: 2.0}, {0: 1.5, 1: 2.5}, lower_is_better=True)
    assert same.method == "paired" and same.ci == 0 and math.isnan(same.p) and "equal" in same.note
    flat = stats.compare({0: 1.0, 1: 1.0}, {5: 2.0, 6: 2.0}, lower_is_better=True)
    assert flat.method == "welch" and math.isnan(flat.p)
    assert flat.to_dict()["p"] is None


@pytest.mark.parametrize("seed", range(30))
def test_textbook_statistics_equal_scipy_stats(seed: int) -> None:
    """The statistics are written from their definitions on scipy.special's t distribution; each must equal
    scipy.stats' own function on random samples of random sizes (ties included)."""
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(2, 12)), int(rng.integers(2, 12))
    x = np.round(rng.normal(0.3, 1.0, n), 1)  # rounding makes ties
    y = np.round(rng.normal(0.0, 2.0, m), 1)
    assert stats.iqm(x) == pytest.approx(ss.trim_mean(x, 0.25), rel=1e-12, abs=1e-12)
    assert stats.t_quantile(0.975, n - 1) == pytest.approx(ss.t.ppf(0.975, n - 1), rel=1e-12)
    u = ss.mannwhitneyu(x, y, alternative="two-sided").statistic / (n * m)
    assert stats.prob_better(x, y, lower_is_better=False) == pytest.approx(u, rel=1e-12)
    welch = stats.compare(dict(enumerate(x)), {100 + i: v for i, v in enumerate(y)}, lower_is_better=True)
    assert welch.method == "welch"
    assert welch.p == pytest.approx(ss.ttest_ind(x, y, equal_var=False).pvalue, rel=1e-9)
    ci = ss.ttest_ind(x, y, equal_var=False).confidence_interval(0.95)
    assert (welch.low, welch.high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    k = min(n, m)
    if np.std(x[:k] - y[:k]) > 0:
        paired = stats.compare(dict(enumerate(x[:k])), dict(enumerate(y[:k])), lower_is_better=True)
        assert paired.method == "paired"
        assert paired.p == pytest.approx(ss.ttest_rel(x[:k], y[:k]).pvalue, rel=1e-9)
        ci = ss.ttest_rel(x[:k], y[:k]).confidence_interval(0.95)
        assert (paired.low, paired.high) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_compare_does_not_import_scipy_stats() -> None:
    """scipy.stats costs most of a second to import; the comparison must not need it."""
    import subprocess
    import sys

    code = ("import sys; from expsvc.analysis import stats as st; "
            "st.compare({0: 1.0, 1: 2.0, 2: 2.5}, {0: 0.5, 1: 1.0, 2: 1.2}, True); st.summarize([1.0, 2.0, 4.0]); "
            "print('scipy.stats' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_sign_test_matches_scipy_binomtest() -> None:
    from scipy.stats import binomtest

    for wins in range(8):
        for losses in range(8):
            if wins + losses:
                assert stats.sign_test_p(wins, losses) == pytest.approx(binomtest(wins, wins + losses).pvalue)


def test_censored_comparison_uses_only_certain_orders() -> None:
    cand = {0: 10.0, 1: 30.0, 2: 50.0, 3: 40.0}
    base = {0: 40.0, 1: 40.0, 2: 40.0, 3: 40.0}
    c = stats.compare_censored(cand, base, {3: True}, {0: True, 1: True, 2: True, 3: True}, lower_is_better=True)
    # 10 < ≥40 and 30 < ≥40: better; 50 vs ≥40 and ≥40 vs ≥40: unknown
    assert (c.method, c.wins, c.losses, c.n) == ("sign", 2, 0, 2) and "2 seed(s) undetermined" in c.note
    assert math.isnan(c.diff) and c.p == pytest.approx(0.5)
