"""The leaderboard's statistics against hand-computed values, direct enumeration and scipy's exact Wilcoxon test."""

import itertools
import math

import numpy as np
import pytest
from scipy.stats import pearsonr, wilcoxon

from ibsr_nnunet.evaluation import statistics
from ibsr_nnunet.evaluation.statistics import (
    agreement,
    bootstrap,
    bootstrap_from,
    holm,
    p_vs_best,
    pairwise,
    smallest_p,
    smallest_p_text,
    wilcoxon_greater,
)


def test_exact_wilcoxon_by_hand():
    # every one of 5 differences favours x: only 1 of the 2^5 equally likely sign patterns is as extreme
    assert wilcoxon_greater(np.ones(5), np.zeros(5)) == 1 / 32
    assert wilcoxon_greater(np.zeros(5), np.ones(5)) == 1.0
    assert wilcoxon_greater(np.arange(5.0) + 1, np.zeros(5)) == 1 / 32
    # zero differences are dropped: one tie and 5 wins is a test on 5 cases
    assert wilcoxon_greater([0, 1, 2, 3, 4, 5], [0, 0, 0, 0, 0, 0]) == 1 / 32
    assert wilcoxon_greater([1, 2], [1, 2]) == 1.0  # nothing differs: no evidence
    # d = (3, -1, 2): ranks 3, 1, 2, W+ = 5; sign patterns with W+ >= 5: {1,2,3}=6, {2,3}=5 -> 2/8
    assert wilcoxon_greater([3, 0, 2], [0, 1, 0]) == 2 / 8
    # tied |d| = (1, 1, 2): average ranks 1.5, 1.5, 3; W+ of d = (1, 1, -2) is 3; subsets of {1.5, 1.5, 3}
    # with sum >= 3: {3}, {1.5,1.5}, {1.5,3} twice, {all} -> 5/8
    assert wilcoxon_greater([1, 1, -2], [0, 0, 0]) == 5 / 8


@pytest.mark.parametrize("n", range(1, 13))
def test_exact_wilcoxon_equals_scipy(n):
    rng = np.random.default_rng(n)
    for _ in range(25):
        x, y = rng.normal(size=n), rng.normal(size=n)
        expected = wilcoxon(x, y, alternative="greater", method="exact").pvalue
        assert wilcoxon_greater(x, y) == pytest.approx(expected, abs=1e-12)


def test_holm_on_known_lists():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone: 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02], atol=1e-15)
    np.testing.assert_allclose(holm([0.5, 0.4]), [0.8, 0.8], atol=1e-15)
    # sorted 0.3, 0.6, 0.9 -> 3·0.3 = 0.9, 2·0.6 = 1.2 capped at 1, 1·0.9 raised to the running 1
    np.testing.assert_allclose(holm([0.3, 0.9, 0.6]), [0.9, 1.0, 1.0], atol=1e-15)
    np.testing.assert_allclose(holm([0.7, 0.8]), [1.0, 1.0])
    adjusted = holm([math.nan, 0.01, 0.02])  # NaN is not part of the family: 2 hypotheses
    assert math.isnan(adjusted[0]) and adjusted[1:].tolist() == pytest.approx([0.02, 0.02])


def test_p_vs_best_and_pairwise_map():
    best, second, third = np.full(5, 0.9), np.full(5, 0.8), np.array([0.5, 0.95, 0.6, 0.7, 0.4])
    scores = np.stack([best, second, third])
    p = p_vs_best(scores, 0)
    # best beats second on every case: raw 1/32; vs third: d = (.4, -.05, .3, .2, .5), ranks 4,1,3,2,5 -> W+ = 14:
    # patterns with W+ >= 14 of 15: {all} and all-but-rank-1 -> 2/32; Holm over 2: 2/32 then max(2/32, 2/32)
    assert math.isnan(p[0]) and p[1:].tolist() == pytest.approx([2 / 32, 2 / 32])
    pair = pairwise(scores)
    assert np.isnan(np.diag(pair)).all()
    # 6 ordered pairs. Raw: (0,1) 1/32; (0,2) 2/32; (1,2): d = (.3, -.15, .2, .1, .4), W+ = 13 of 15 -> 3/32;
    # the reverses 1, 31/32, 30/32. Holm: 6·1/32, max(6/32, 5·2/32), max(10/32, 4·3/32), then 1
    assert pair[0, 1] == pytest.approx(6 / 32)
    assert pair[0, 2] == pytest.approx(10 / 32)
    assert pair[1, 2] == pytest.approx(12 / 32)
    assert pair[1, 0] == pair[2, 0] == pair[2, 1] == 1.0
    assert smallest_p(3, 5, comparisons=6) == 6 / 32


def test_smallest_attainable_p():
    assert smallest_p(7, 5) == pytest.approx(6 / 32)  # ~0.19, as the README says
    assert smallest_p(2, 2) == 0.25  # 2 cases: 2^-2 one-sided, before any correction
    assert smallest_p(7, 2) == 1.0
    assert smallest_p_text(7, 5) == "(m−1)·2⁻ⁿ = 6·2⁻⁵ = 0.188"
    # the floor is attained: rank 1 beating every other model on every case
    scores = np.stack([np.full(6, 0.9)] + [np.full(6, 0.5 + 0.01 * k) for k in range(6)])
    assert np.nanmin(p_vs_best(scores, 0)) == pytest.approx(smallest_p(7, 6))


def test_bootstrap_matches_direct_enumeration():
    scores = np.array([[0.70, 0.90, 0.80], [0.75, 0.72, 0.85], [0.60, 0.95, 0.70]])
    n = scores.shape[1]
    every = np.array(list(itertools.product(range(n), repeat=n)))  # all 27 equally likely resamples
    exact = bootstrap_from(scores, every)
    drawn = bootstrap(scores, resamples=20000)
    assert exact.rank1_share.sum() == pytest.approx(1.0)
    # 20000 draws: a share's standard error is at most 0.0036
    np.testing.assert_allclose(drawn.rank1_share, exact.rank1_share, atol=0.012)
    # two cases 0 and 1: the resampled mean is 0 (1/4), 0.5 (1/2) or 1 (1/4): the 95 % interval is [0, 1]
    two = bootstrap(np.array([[0.0, 1.0], [0.5, 0.5]]))
    assert two.low.tolist() == [0.0, 0.5] and two.high.tolist() == [1.0, 0.5]


def test_bootstrap_is_paired_seeded_and_large_enough():
    rng = np.random.default_rng(3)
    b = rng.uniform(0.5, 0.9, size=8)
    # a beats b by 0.01 on every case: paired resamples always rank a first (unpaired ones would not)
    result = bootstrap(np.stack([b + 0.01, b]))
    assert result.rank1_share.tolist() == [1.0, 0.0]
    assert statistics.RESAMPLES >= 2000
    again = bootstrap(np.stack([b + 0.01, b]))
    assert again.low.tolist() == result.low.tolist() and again.high.tolist() == result.high.tolist()
    # a model equal on every case: its interval is that value
    flat = bootstrap(np.stack([np.full(8, 0.7), b]))
    assert flat.low[0] == pytest.approx(0.7) and flat.high[0] == pytest.approx(0.7)


def test_volume_agreement_by_hand():
    reference = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    prediction = np.array([12.0, 19.0, 33.0, 41.0, 50.0])  # differences 2, -1, 3, 1, 0: mean 1, SD sqrt(10/4)
    found = agreement(reference, prediction)
    assert found.bias == pytest.approx(1.0)
    assert found.loa_low == pytest.approx(1 - 1.96 * math.sqrt(2.5))
    assert found.loa_high == pytest.approx(1 + 1.96 * math.sqrt(2.5))
    assert found.r == pytest.approx(pearsonr(reference, prediction).statistic)
    single = agreement(np.array([10.0]), np.array([12.0]))
    assert single.bias == 2 and math.isnan(single.loa_low) and math.isnan(single.r)
