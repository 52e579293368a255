"""How sure a ranking is: paired bootstrap intervals, rank stability, exact one-sided Wilcoxon, Holm, volume agreement.

Every function takes scores as a (models × cases) array, the cases in the same order for every model, so resamples
and tests are paired. Conventions, as challengeR uses them:

* bootstrap: `resamples` draws of n cases with replacement (one seeded generator, the same draw for every model);
  the 95 % interval is the percentile interval of the resampled means; `rank1_share` is the fraction of draws in
  which a model has the highest mean (a tie for first splits that draw equally among the tied models).
* wilcoxon_greater: the exact one-sided paired signed-rank test that x beats y. Zero differences are dropped
  (Wilcoxon's convention, as scipy's default); tied |differences| get their average rank, and the p-value is the
  exact permutation probability over all 2^n sign flips (equal to scipy's exact test when no |difference| ties).
* holm: Holm's step-down adjustment of one family of p-values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

MIN_CASES = 5  # fewer held-out cases than this: no interval, rank share, p-value or correlation is reported
RESAMPLES = 2000
SEED = 20240601  # fixed: the same workspace gives the same intervals on every run
ALPHA = 0.05


@dataclass
class Bootstrap:
    low: np.ndarray  # per model: 2.5th percentile of the resampled mean
    high: np.ndarray  # per model: 97.5th percentile
    rank1_share: np.ndarray  # per model: fraction of resamples in which it ranks first


def bootstrap(scores: np.ndarray, *, resamples: int = RESAMPLES, seed: int = SEED) -> Bootstrap:
    """Paired percentile bootstrap of each model's mean over the cases, and how often each model ranks first."""
    scores = np.asarray(scores, dtype=float)
    n = scores.shape[1]
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    return bootstrap_from(scores, draws)


def bootstrap_from(scores: np.ndarray, draws: np.ndarray) -> Bootstrap:
    """The bootstrap of `bootstrap` over given draws (resamples × n case indices), e.g. every possible one."""
    means = np.asarray(scores, dtype=float)[:, draws].mean(axis=2)  # models × resamples
    best = means.max(axis=0)
    first = np.isclose(means, best, rtol=0, atol=1e-12)
    share = (first / first.sum(axis=0)).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5], axis=1)
    return Bootstrap(low, high, share)


def wilcoxon_greater(x: np.ndarray, y: np.ndarray) -> float:
    """Exact one-sided p-value of the paired signed-rank test with the alternative 'x is larger than y'."""
    d = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    weights = np.rint(2 * rankdata(np.abs(d))).astype(int)  # average ranks are halves: doubled, they are integers
    observed = int(weights[d > 0].sum())
    # the null distribution of the positive-rank sum: each sign +/- with probability 1/2, independently
    distribution = np.zeros(int(weights.sum()) + 1)
    distribution[0] = 1.0
    for w in weights:
        shifted = np.zeros_like(distribution)
        shifted[w:] = distribution[:-w]
        distribution = 0.5 * (distribution + shifted)
    return float(min(1.0, distribution[observed:].sum()))


def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values of one family, in the given order (NaN entries are not part of the family)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, math.nan)
    present = np.flatnonzero(~np.isnan(p))
    order = present[np.argsort(p[present], kind="stable")]
    k, running = len(order), 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (k - i) * p[index]))
        adjusted[index] = running
    return adjusted


def p_vs_best(scores: np.ndarray, best: int) -> np.ndarray:
    """Per model: Holm-adjusted (over the other models) exact one-sided p that model `best` beats it; NaN for `best`."""
    raw = np.array([math.nan if i == best else wilcoxon_greater(scores[best], scores[i]) for i in range(len(scores))])
    return holm(raw)


def pairwise(scores: np.ndarray) -> np.ndarray:
    """p[i, j]: exact one-sided p that model i beats model j, Holm-adjusted over all m(m−1) ordered pairs; NaN on
    the diagonal."""
    m = len(scores)
    raw = np.full((m, m), math.nan)
    for i in range(m):
        for j in range(m):
            if i != j:
                raw[i, j] = wilcoxon_greater(scores[i], scores[j])
    return holm(raw.ravel()).reshape(m, m)


def smallest_p(models: int, cases: int, *, comparisons: int | None = None) -> float:
    """The smallest Holm-adjusted p any model can reach against rank 1: (m−1)·2⁻ⁿ (one-sided exact test, n cases,
    no zero differences), or `comparisons`·2⁻ⁿ for another family size; at most 1."""
    family = models - 1 if comparisons is None else comparisons
    return min(1.0, max(1, family) * 2.0 ** -cases)


def smallest_p_text(models: int, cases: int, *, comparisons: int | None = None) -> str:
    """'(m−1)·2⁻ⁿ = 6·2⁻⁵ = 0.188': the formula of `smallest_p`, its numbers and its value."""
    family = models - 1 if comparisons is None else comparisons
    formula = "(m−1)·2⁻ⁿ" if comparisons is None else "m(m−1)·2⁻ⁿ"
    exponent = str(cases).translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))
    return f"{formula} = {family}·2⁻{exponent} = {smallest_p(models, cases, comparisons=comparisons):.3g}"


@dataclass
class Agreement:
    bias: float  # mean of prediction minus reference
    loa_low: float  # bias − 1.96 SD of the differences (Bland–Altman 95 % limits of agreement)
    loa_high: float
    r: float  # Pearson correlation of prediction and reference


def agreement(reference: np.ndarray, prediction: np.ndarray) -> Agreement:
    """Bland–Altman bias and 95 % limits of agreement (SD with n−1), and Pearson r; NaN where undefined."""
    reference, prediction = np.asarray(reference, dtype=float), np.asarray(prediction, dtype=float)
    diff = prediction - reference
    bias = float(diff.mean()) if diff.size else math.nan
    sd = float(diff.std(ddof=1)) if diff.size > 1 else math.nan
    r = math.nan
    if diff.size > 1 and reference.std() > 0 and prediction.std() > 0:
        r = float(np.corrcoef(reference, prediction)[0, 1])
    return Agreement(bias, bias - 1.96 * sd, bias + 1.96 * sd, r)
