"""Numbers over seeds, as every study table writes them: a mean with its
range, and the difference between two arms with Welch's 95% interval."""
import math
import statistics
from typing import Optional, Sequence


def mean_and_range(values: Sequence[float], digits: int = 1) -> str:
    """``18.8 (18.4–19.4)``: the mean and, with several values, the range."""
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f'{mean:.{digits}f}'
    return (f'{mean:.{digits}f} ({min(values):.{digits}f}–'
            f'{max(values):.{digits}f})')


def welch_interval(a: Sequence[float], b: Sequence[float],
                   confidence: float = 0.95) -> Optional[dict]:
    """Mean of ``a`` minus mean of ``b`` with Welch's t interval; ``None``
    with fewer than 2 values on a side.

    Also ``seeds_to_resolve``: the seeds per arm with which a true
    difference of the observed size, at the observed spread, would make the
    interval exclude 0 four times in five (80% power, t quantiles with
    ``2n - 2`` degrees of freedom, so with very unequal spreads it can be
    fewer than the interval needs); ``None`` when the difference or the
    spread is 0, or more than 1,000 would be needed."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats
    va, vb = statistics.variance(a), statistics.variance(b)
    na, nb = len(a), len(b)
    difference = statistics.fmean(a) - statistics.fmean(b)
    se2 = va / na + vb / nb
    if se2 == 0:
        return dict(difference=difference, low=difference, high=difference,
                    seeds_to_resolve=None)
    dof = se2**2 / ((va / na)**2 / (na - 1) + (vb / nb)**2 / (nb - 1))
    half = stats.t.ppf(0.5 + confidence / 2, dof) * math.sqrt(se2)
    seeds = None
    if difference != 0:
        for n in range(2, 1001):
            needed = (stats.t.ppf(0.5 + confidence / 2, 2 * n - 2) +
                      stats.t.ppf(0.8, 2 * n - 2)) * math.sqrt((va + vb) / n)
            if needed <= abs(difference):
                seeds = n
                break
    return dict(difference=difference, low=float(difference - half),
                high=float(difference + half), seeds_to_resolve=seeds)


def difference_text(a: Sequence[float], b: Sequence[float]) -> str:
    """``+0.77 (3 vs 3 seeds; 95% Welch interval -0.90 to +2.43: includes
    0; about 14 seeds a side would ...)``: mean of ``a`` minus mean of
    ``b``, as the study tables report it."""
    text = (f'{statistics.fmean(a) - statistics.fmean(b):+.2f} '
            f'({len(a)} vs {len(b)} seeds')
    interval = welch_interval(a, b)
    if interval is None:
        return text + '; an interval needs 2 seeds a side)'
    text += (f'; 95% Welch interval {interval["low"]:+.2f} to '
             f'{interval["high"]:+.2f}')
    if interval['low'] <= 0 <= interval['high']:
        text += ': includes 0'
        if interval['seeds_to_resolve']:
            text += (f'; about {interval["seeds_to_resolve"]} seeds a side '
                     'would resolve a difference this size at this spread '
                     '(80% power)')
    return text + ')'
