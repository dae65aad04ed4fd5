"""Uncertainty over benchmark items: bootstrap intervals for a run's metrics, paired tests between two runs.

A benchmark cell is a statistic over a few hundred (or a few) items; these functions say how far it could move
if other items had been drawn, and whether a method-vs-baseline difference on the same items is more than
item-sampling noise. Everything is seeded (``seed``), so a report is the same every time it is written.

Intervals (:class:`Interval`):

- :func:`mean_interval`: the metric is the mean of per-item values (accuracy, MC1, rep-n, CHAIR_s, ...):
  ``scipy.stats.bootstrap`` over the items, BCa by default (percentile when BCa is undefined, e.g. every value
  the same);
- :func:`resampled_intervals`: any other metric computed from the items' rows (POPE precision / recall / F1,
  CHAIR_i, diversity = prod(1 - rep-n), ...): resample item indices, recompute the metric with the task's own
  ``aggregate`` on the resampled rows (the generic "resample items, recompute" bootstrap). Percentile by
  default, and 999 resamples: each resample runs ``aggregate`` (BCa's jackknife would run it n more times).

Paired tests (:class:`PairedTest`, the difference is always ``a - b`` on items present in both runs):

- :func:`mcnemar_exact`: 0/1 per-item values: the two-sided exact binomial test on the discordant pairs
  (``scipy.stats.binomtest(k, k + l, 0.5)``, k = items only ``a`` gets right, l = items only ``b`` does);
- :func:`paired_mean_test`: per-item values: McNemar when both are 0/1, else a paired permutation test of the
  mean difference (``scipy.stats.permutation_test``, ``permutation_type="samples"``: each item's two values
  are swapped or not, i.e. a sign-flip test; exact when 2**n <= n_resamples), with a paired bootstrap interval
  of the mean difference;
- :func:`paired_resampled_tests`: metrics recomputed from rows: a paired permutation test that swaps the two
  runs' rows of an item and recomputes both metrics, and a paired bootstrap interval (resample items,
  recompute both).

:func:`holm` adjusts a family of p-values (Holm's step-down method, which controls the family-wise error rate).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Rows of per-item scores -> metrics (a task's ``aggregate``).
Aggregate = Callable[[list[dict[str, float]]], Mapping[str, float]]

CONFIDENCE = 0.95
N_RESAMPLES = 9999  # resamples of the vectorized paths (means of per-item values)
N_RESAMPLES_RECOMPUTED = (
    999  # resamples where each one recomputes the metric with the task's aggregate (slow)
)
BOOTSTRAP_METHODS = ("BCa", "percentile", "basic")
# Elements of one resampled batch (batch x items): bounds the memory of the vectorized paths (~16 MB).
_BATCH_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class Interval:
    """A metric's value on all items and its bootstrap interval over the items.

    ``low`` / ``high`` are NaN when no interval exists (fewer than two items); ``n`` is the number of items
    the value is computed from; ``method`` names the bootstrap interval actually used.
    """

    estimate: float
    low: float
    high: float
    n: int
    method: str
    confidence: float = CONFIDENCE

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)


@dataclass(frozen=True)
class PairedTest:
    """Run ``a`` against run ``b`` on the same ``n`` items: ``difference = a_value - b_value`` (metric values
    on those items), its paired bootstrap interval ``[low, high]``, the test's name and two-sided p-value."""

    difference: float
    low: float
    high: float
    n: int
    test: str
    p_value: float
    a_value: float
    b_value: float
    confidence: float = CONFIDENCE


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class _Resampling:
    """The resampling settings every interval and test takes (validated): the interval's confidence and
    bootstrap method, the number of resamples (bootstrap and permutation) and the seed of their draws."""

    confidence: float
    n_resamples: int
    method: str
    seed: int

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence!r}")
        n_resamples = self.n_resamples
        if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
            raise ValueError(f"n_resamples must be an integer >= 1, got {n_resamples!r}")
        if self.method not in BOOTSTRAP_METHODS:
            raise ValueError(f"method must be one of {', '.join(BOOTSTRAP_METHODS)}, got {self.method!r}")

    def permutations(self, n: int) -> str:
        """How many permutations a paired test of ``n`` items runs: "exact" (all 2**n) or ``n_resamples``."""
        return "exact" if 2**n <= self.n_resamples else str(self.n_resamples)


def _as_values(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite numbers (drop the items without a value first)")
    return array


def _paired_values(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    a_values, b_values = _as_values(a, "a"), _as_values(b, "b")
    if a_values.shape != b_values.shape:
        raise ValueError(f"a and b must be paired (same length), got {len(a_values)} and {len(b_values)}")
    return a_values, b_values


def _batch(n: int) -> int:
    return max(1, _BATCH_ELEMENTS // max(n, 1))


def _bootstrap(
    data: tuple[np.ndarray, ...],
    statistic: Callable[..., Any],
    settings: _Resampling,
    *,
    paired: bool,
    vectorized: bool,
) -> tuple[float, float, str]:
    """``scipy.stats.bootstrap``'s interval; BCa falls back to percentile where it is undefined (a degenerate
    bootstrap distribution, e.g. every item the same). The same seed draws the same resamples every call."""
    from scipy import stats

    def run(name: str) -> tuple[float, float]:
        with warnings.catch_warnings():  # DegenerateDataWarning and 0/0 in BCa's acceleration: handled below
            warnings.simplefilter("ignore")
            result = stats.bootstrap(
                data,
                statistic,
                n_resamples=settings.n_resamples,
                batch=_batch(len(data[0])) if vectorized else None,
                vectorized=vectorized,
                paired=paired,
                confidence_level=settings.confidence,
                method=name,
                rng=np.random.default_rng(settings.seed),
            )
        return float(result.confidence_interval.low), float(result.confidence_interval.high)

    method = settings.method
    low, high = run(method)
    if method == "BCa" and not (math.isfinite(low) and math.isfinite(high)):
        method = "percentile"
        low, high = run(method)
    return low, high, method


def _paired_permutation_p_value(
    data: tuple[np.ndarray, np.ndarray],
    statistic: Callable[..., Any],
    settings: _Resampling,
    *,
    vectorized: bool,
) -> float:
    """The two-sided p-value of ``scipy.stats.permutation_test`` over paired samples (each item's two values
    swapped or not: a sign-flip test), seeded like :func:`_bootstrap`."""
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.permutation_test(
            data,
            statistic,
            permutation_type="samples",
            vectorized=vectorized,
            n_resamples=settings.n_resamples,
            batch=_batch(len(data[0])) if vectorized else None,
            alternative="two-sided",
            rng=np.random.default_rng(settings.seed),
        )
    return float(result.pvalue)


# What a paired test returns when the two runs have no item in common.
_NO_COMMON_ITEM = PairedTest(
    math.nan, math.nan, math.nan, 0, "none (no common item)", math.nan, math.nan, math.nan
)


class _MemoAggregate:
    """``aggregate`` over the rows at given indices, memoized by the indices: the bootstrap of each metric
    draws the same resamples (same seed), so every metric after the first reuses the recomputed rows.

    A resample is a multiset of items, so the indices are sorted first (``aggregate`` must not depend on the
    order of its rows; a task's metrics over items do not): rows read in memory order are several times faster
    to aggregate than rows picked at random, and the same multiset drawn twice is computed once."""

    def __init__(self, rows: Sequence[dict[str, float]], aggregate: Aggregate) -> None:
        self.rows = list(rows)
        self.aggregate = aggregate
        self.cache: dict[bytes, Mapping[str, float]] = {}

    def __call__(self, indices: np.ndarray) -> Mapping[str, float]:
        indices = np.sort(np.asarray(indices).astype(np.int64))
        key = hashlib.blake2b(indices.tobytes(), digest_size=16).digest()
        if key not in self.cache:
            self.cache[key] = self.aggregate([self.rows[index] for index in indices.tolist()])
        return self.cache[key]


def _value(metrics: Mapping[str, float], name: str) -> float:
    value = metrics.get(name)
    return float(value) if value is not None else math.nan


# --------------------------------------------------------------------------- intervals


def mean_interval(
    values: Sequence[float] | np.ndarray,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    method: str = "BCa",
    seed: int = 0,
) -> Interval:
    """The mean of per-item ``values`` with its bootstrap interval over the items.

    >>> interval = mean_interval([1, 0, 1, 1, 0, 1, 1, 1], seed=0)
    >>> interval.estimate, interval.n, interval.low < 0.75 < interval.high
    (0.75, 8, True)
    """
    settings = _Resampling(confidence, n_resamples, method, seed)
    array = _as_values(values, "values")
    n = len(array)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "none", confidence)
    estimate = float(array.mean())
    if n < 2:
        return Interval(estimate, math.nan, math.nan, n, "none (one item)", confidence)
    low, high, used = _bootstrap((array,), np.mean, settings, paired=False, vectorized=True)
    return Interval(estimate, low, high, n, used, confidence)


def resampled_intervals(
    rows: Sequence[dict[str, float]],
    aggregate: Aggregate,
    names: Sequence[str],
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES_RECOMPUTED,
    method: str = "percentile",
    seed: int = 0,
) -> dict[str, Interval]:
    """Bootstrap intervals of metrics that are not means of per-item values: resample the items (``rows``, one
    dict of per-item scores each) with replacement, recompute ``aggregate`` on the resampled rows, take the
    interval of each of ``names`` (the metrics ``aggregate`` returns that the caller wants). ``aggregate`` must
    not depend on the order of the rows.

    The estimate is ``aggregate(rows)``. A resample where ``aggregate`` gives no value for a name counts as NaN
    (and makes that interval NaN).
    """
    settings = _Resampling(confidence, n_resamples, method, seed)
    rows = list(rows)
    n = len(rows)
    full = aggregate(rows) if rows else {}
    if n < 2:
        reason = "none" if n == 0 else "none (one item)"
        return {
            name: Interval(_value(full, name), math.nan, math.nan, n, reason, confidence) for name in names
        }
    memo = _MemoAggregate(rows, aggregate)
    indices = np.arange(n, dtype=float)
    intervals: dict[str, Interval] = {}
    for name in names:
        low, high, used = _bootstrap(
            (indices,),
            lambda sample, name=name: _value(memo(sample), name),
            settings,
            paired=False,
            vectorized=False,
        )
        intervals[name] = Interval(_value(full, name), low, high, n, used, confidence)
    return intervals


# --------------------------------------------------------------------------- paired tests


def is_binary(values: np.ndarray) -> bool:
    """Every value is 0 or 1 (per-item correctness)."""
    return bool(np.all((values == 0.0) | (values == 1.0)))


def mcnemar_exact(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[int, int, float]:
    """McNemar's exact test of paired 0/1 outcomes: ``(k, l, p)`` with k = items where only ``a`` is 1, l =
    items where only ``b`` is 1, and the two-sided p-value of ``binomtest(k, k + l, 0.5)`` (1.0 when no item
    is discordant). Concordant items carry no information about the difference and do not enter the test.

    >>> mcnemar_exact([1, 1, 1, 0, 1, 1], [0, 0, 1, 0, 0, 1])
    (3, 0, 0.25)
    """
    from scipy import stats

    a_values, b_values = _paired_values(a, b)
    if not (is_binary(a_values) and is_binary(b_values)):
        raise ValueError("McNemar's test needs 0/1 values")
    only_a = int(np.sum((a_values == 1.0) & (b_values == 0.0)))
    only_b = int(np.sum((a_values == 0.0) & (b_values == 1.0)))
    if only_a + only_b == 0:
        return only_a, only_b, 1.0
    return only_a, only_b, float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def paired_mean_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    method: str = "BCa",
    seed: int = 0,
) -> PairedTest:
    """Paired test of ``mean(a) - mean(b)`` for per-item values of two runs on the same items (``a[i]`` and
    ``b[i]`` belong to one item). 0/1 values: McNemar's exact test; otherwise a paired permutation (sign-flip)
    test of the mean difference. The interval is a paired bootstrap of the mean difference.
    """
    settings = _Resampling(confidence, n_resamples, method, seed)
    a_values, b_values = _paired_values(a, b)
    n = len(a_values)
    if n == 0:
        return _NO_COMMON_ITEM
    a_mean, b_mean = float(a_values.mean()), float(b_values.mean())
    difference = a_mean - b_mean
    low = high = math.nan
    if n >= 2:
        low, high, _ = _bootstrap(
            (a_values, b_values), _mean_difference, settings, paired=True, vectorized=True
        )
    if is_binary(a_values) and is_binary(b_values):
        only_a, only_b, p_value = mcnemar_exact(a_values, b_values)
        test = f"McNemar exact ({only_a} vs {only_b} discordant)"
    elif np.all(a_values == b_values):
        test, p_value = "paired permutation", 1.0
    else:
        test = f"paired permutation ({settings.permutations(n)})"
        p_value = _paired_permutation_p_value(
            (a_values, b_values), _mean_difference, settings, vectorized=True
        )
    return PairedTest(difference, low, high, n, test, p_value, a_mean, b_mean, confidence)


def paired_resampled_tests(
    rows_a: Sequence[dict[str, float]],
    rows_b: Sequence[dict[str, float]],
    aggregate: Aggregate,
    names: Sequence[str],
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES_RECOMPUTED,
    method: str = "percentile",
    seed: int = 0,
) -> dict[str, PairedTest]:
    """Paired tests of metrics recomputed from rows (``rows_a[i]`` and ``rows_b[i]`` are one item's rows in
    the two runs): ``difference = aggregate(rows_a)[name] - aggregate(rows_b)[name]``; the p-value of a
    paired permutation test (each item's two rows swapped between the runs or not, both metrics recomputed),
    the interval of a paired bootstrap (the same resampled items for both runs, both recomputed).
    """
    settings = _Resampling(confidence, n_resamples, method, seed)
    rows_a, rows_b = list(rows_a), list(rows_b)
    if len(rows_a) != len(rows_b):
        raise ValueError(
            f"rows_a and rows_b must be paired (same length), got {len(rows_a)} and {len(rows_b)}"
        )
    n = len(rows_a)
    if n == 0:
        return dict.fromkeys(names, _NO_COMMON_ITEM)
    full_a, full_b = aggregate(rows_a), aggregate(rows_b)
    memo = _MemoAggregate(rows_a + rows_b, aggregate)  # rows_a at 0..n-1, rows_b at n..2n-1
    indices_a, indices_b = np.arange(n, dtype=float), np.arange(n, 2 * n, dtype=float)
    tests: dict[str, PairedTest] = {}
    for name in names:
        a_value, b_value = _value(full_a, name), _value(full_b, name)

        def difference(x: np.ndarray, y: np.ndarray, name: str = name) -> float:
            return _value(memo(x), name) - _value(memo(y), name)

        low = high = math.nan
        if n >= 2:
            low, high, _ = _bootstrap(
                (indices_a, indices_b), difference, settings, paired=True, vectorized=False
            )
        tests[name] = PairedTest(
            a_value - b_value,
            low,
            high,
            n,
            f"paired permutation, recomputed ({settings.permutations(n)})",
            _paired_permutation_p_value((indices_a, indices_b), difference, settings, vectorized=False),
            a_value,
            b_value,
            confidence,
        )
    return tests


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order; NaN stays NaN and
    does not count in the family.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    indexed = sorted((p, index) for index, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    family, running = len(indexed), 0.0
    for rank, (p, index) in enumerate(indexed):
        running = max(running, min(1.0, (family - rank) * p))
        adjusted[index] = running
    return adjusted


__all__ = [
    "CONFIDENCE",
    "N_RESAMPLES",
    "N_RESAMPLES_RECOMPUTED",
    "Aggregate",
    "Interval",
    "PairedTest",
    "holm",
    "is_binary",
    "mcnemar_exact",
    "mean_interval",
    "paired_mean_test",
    "paired_resampled_tests",
    "resampled_intervals",
]
