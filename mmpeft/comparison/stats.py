"""Spread over seeds and the intervals of the comparison table.

Every method runs with the same seeds, so a method and a reference row
(Full, Fixed) are compared seed by seed: the difference at each shared
seed, then a t-interval over those differences (n - 1 degrees of freedom).
Pairing removes what the seed does to both runs alike (data order, the
fresh neck and heads); with n = 3 seeds t(0.975, 2) = 4.30, so only
differences well above the seed-to-seed spread are resolved.
"""
import math
import statistics
from typing import Dict, Optional, Sequence, Tuple

CONFIDENCE = 0.95
INTERVAL = 'paired t over seeds'


def mean_std(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    """Mean and sample standard deviation (n - 1); no std for one value."""
    values = list(values)
    return (statistics.fmean(values),
            statistics.stdev(values) if len(values) > 1 else None)


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided ``confidence`` quantile of Student's t with ``df``
    degrees of freedom."""
    from scipy.stats import t
    return float(t.ppf(0.5 + confidence / 2, df))


def paired_difference(values: Dict[int, float], reference: Dict[int, float],
                      confidence: float = CONFIDENCE) -> Optional[dict]:
    """``values - reference`` over the seeds both have: the mean difference,
    its ``confidence`` t-interval (none for a single seed) and whether the
    interval excludes zero. None when they share no seed."""
    seeds = sorted(set(values) & set(reference))
    if not seeds:
        return None
    diffs = [values[s] - reference[s] for s in seeds]
    diff, std = mean_std(diffs)
    low = high = None
    if std is not None:
        half = t_quantile(len(diffs) - 1, confidence) * std / math.sqrt(
            len(diffs))
        low, high = diff - half, diff + half
    return dict(diff=diff, low=low, high=high, n=len(seeds), seeds=seeds,
                excludes_zero=None if low is None else (low > 0 or high < 0),
                confidence=confidence, interval=INTERVAL)


def pareto_front(points: Sequence[Tuple[float, float]]) -> list:
    """Indices of the points that no other point beats: ``(cost, metric)``,
    lower cost and higher metric better; one at least as good on both and
    strictly better on one dominates."""
    front = []
    for i, (cost, metric) in enumerate(points):
        if not any(c <= cost and m >= metric and (c < cost or m > metric)
                   for j, (c, m) in enumerate(points) if j != i):
            front.append(i)
    return front
