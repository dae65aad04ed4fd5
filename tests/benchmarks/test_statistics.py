"""Bootstrap intervals and paired tests over benchmark items, on hand-built data with known answers."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from contrastive_decoding.benchmarks.statistics import (
    holm,
    mcnemar_exact,
    mean_interval,
    paired_mean_test,
    paired_resampled_tests,
    resampled_intervals,
)
from contrastive_decoding.benchmarks.tasks.vision import pope_aggregate

# ----------------------------------------------------------------------------------------------- McNemar


def test_mcnemar_exact_on_hand_computed_tables() -> None:
    # 3 items only a gets right, none only b: two-sided exact binomial p = 2 * 0.5**3
    assert mcnemar_exact([1, 1, 1, 0, 1, 1], [0, 0, 0, 0, 1, 1]) == (3, 0, 0.25)
    # 8 vs 2 discordant: p = 2 * (C(10,0) + C(10,1) + C(10,2)) / 2**10 = 112 / 1024
    a = [1] * 8 + [0] * 2 + [1] * 5 + [0] * 5
    b = [0] * 8 + [1] * 2 + [1] * 5 + [0] * 5
    only_a, only_b, p = mcnemar_exact(a, b)
    assert (only_a, only_b) == (8, 2) and p == pytest.approx(112 / 1024)
    # concordant items carry no information: adding 100 of them leaves the test as it is
    assert mcnemar_exact(a + [1] * 50 + [0] * 50, b + [1] * 50 + [0] * 50)[2] == pytest.approx(112 / 1024)
    assert mcnemar_exact([1, 0, 1], [1, 0, 1]) == (0, 0, 1.0)  # no discordant item


def test_mcnemar_refuses_non_binary_or_unpaired_values() -> None:
    with pytest.raises(ValueError, match="0/1"):
        mcnemar_exact([0.5, 1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="paired"):
        mcnemar_exact([1, 0, 1], [1, 0])


# ----------------------------------------------------------------------------------------------- intervals


def test_mean_interval_covers_the_mean_narrows_with_n_and_is_reproducible() -> None:
    widths = []
    for repeats in (4, 40, 400):
        values = [1.0, 0.0, 1.0, 1.0, 0.0] * repeats  # mean 0.6 at every n
        interval = mean_interval(values, seed=0)
        assert interval.estimate == pytest.approx(0.6) and interval.n == 5 * repeats
        assert interval.low < 0.6 < interval.high and interval.method == "BCa"
        widths.append(interval.high - interval.low)
    assert widths[0] > widths[1] > widths[2]
    # the standard error of a proportion shrinks as 1 / sqrt(n): 10x the items, ~1/sqrt(10) the width
    assert widths[2] / widths[1] == pytest.approx(1 / math.sqrt(10), rel=0.2)
    values = [1.0, 0.0, 1.0, 1.0, 0.0] * 40
    assert mean_interval(values, seed=3) == mean_interval(values, seed=3)


def test_mean_interval_of_a_normal_sample_matches_the_t_interval() -> None:
    values = np.random.default_rng(0).normal(10.0, 2.0, size=400)
    interval = mean_interval(values, seed=0)
    half_width = 1.966 * values.std(ddof=1) / math.sqrt(len(values))
    assert interval.low == pytest.approx(values.mean() - half_width, abs=0.05)
    assert interval.high == pytest.approx(values.mean() + half_width, abs=0.05)


def test_mean_interval_degenerate_and_tiny_samples() -> None:
    same = mean_interval([1.0] * 6)  # BCa is undefined here: the percentile interval is the point
    assert (same.low, same.high, same.method) == (1.0, 1.0, "percentile")
    one = mean_interval([0.3])
    assert one.estimate == 0.3 and one.n == 1 and not one.has_interval
    assert mean_interval([]).n == 0
    with pytest.raises(ValueError, match="finite"):
        mean_interval([1.0, math.nan])
    with pytest.raises(ValueError, match="confidence"):
        mean_interval([1.0, 0.0], confidence=95)


def _pope_rows(correct: list[bool], seed: int = 0) -> list[dict[str, float]]:
    """POPE cells for items alternating truth yes / no, answered right where ``correct``."""
    rows = []
    for index, right in enumerate(correct):
        truth = index % 2 == 0
        predicted = truth if right else not truth
        rows.append(
            {
                "tp": float(predicted and truth),
                "fp": float(predicted and not truth),
                "tn": float(not predicted and not truth),
                "fn": float(not predicted and truth),
            }
        )
    return rows


def test_resampled_intervals_recompute_a_ratio_metric() -> None:
    generator = random.Random(0)
    widths = []
    for n in (40, 400):
        rows = _pope_rows([generator.random() < 0.8 for _ in range(n)])
        intervals = resampled_intervals(rows, pope_aggregate, ["f1", "precision"], seed=0)
        full = pope_aggregate(rows)
        for name in ("f1", "precision"):
            assert intervals[name].estimate == full[name] and intervals[name].n == n
            assert intervals[name].low < full[name] < intervals[name].high
        widths.append(intervals["f1"].high - intervals["f1"].low)
    assert widths[0] > 2 * widths[1]
    assert resampled_intervals(rows, pope_aggregate, ["f1"], seed=1) == resampled_intervals(
        rows, pope_aggregate, ["f1"], seed=1
    )


# ----------------------------------------------------------------------------------------------- paired tests


def test_paired_test_of_accuracies_is_mcnemar() -> None:
    generator = random.Random(0)
    baseline = [float(generator.random() < 0.5) for _ in range(200)]
    better = [1.0 if value else float(generator.random() < 0.4) for value in baseline]  # fixes ~40 items
    test = paired_mean_test(better, baseline)
    assert test.test.startswith("McNemar exact")
    assert test.p_value < 1e-6 and 0 < test.low < test.difference < test.high
    assert test.difference == pytest.approx(np.mean(better) - np.mean(baseline)) and test.n == 200
    # one item apart: 1 vs 0 discordant, p = 1, the interval holds 0
    one_off = list(baseline)
    one_off[baseline.index(0.0)] = 1.0
    test = paired_mean_test(one_off, baseline)
    assert test.p_value == 1.0 and test.difference == pytest.approx(1 / 200)
    assert test.low <= 0.0 <= test.high


def test_paired_test_of_continuous_scores_is_a_permutation_test() -> None:
    generator = np.random.default_rng(0)
    baseline = generator.normal(0.5, 0.2, size=60)
    shifted = baseline + 0.1 + generator.normal(0, 0.05, size=60)
    test = paired_mean_test(shifted, baseline, seed=0)
    assert test.test.startswith("paired permutation")
    assert test.p_value < 0.001 and 0 < test.low < test.difference < test.high
    one_item = baseline.copy()
    one_item[7] += 0.3  # a single item differs
    test = paired_mean_test(one_item, baseline, seed=0)
    assert test.p_value > 0.05 and test.difference == pytest.approx(0.3 / 60)
    # three items: the sign-flip test is exact (2**3 assignments), two of 8 as extreme as observed
    test = paired_mean_test([1.0, 2.0, 3.5], [0.0, 0.0, 0.0], seed=0)
    assert test.p_value == pytest.approx(2 / 8) and "exact" in test.test
    assert paired_mean_test([0.2, 0.4], [0.2, 0.4]).p_value == 1.0


def test_paired_resampled_tests_recompute_both_runs() -> None:
    generator = random.Random(1)
    truth = [generator.random() < 0.7 for _ in range(300)]
    baseline = _pope_rows(truth)
    improved = _pope_rows([right or generator.random() < 0.6 for right in truth])
    tests = paired_resampled_tests(improved, baseline, pope_aggregate, ["f1", "precision"], seed=0)
    expected = pope_aggregate(improved)["f1"] - pope_aggregate(baseline)["f1"]
    assert tests["f1"].difference == pytest.approx(expected) and tests["f1"].n == 300
    assert tests["f1"].p_value < 0.01 and 0 < tests["f1"].low < tests["f1"].high
    one_off = list(truth)
    one_off[one_off.index(False)] = True
    tests = paired_resampled_tests(_pope_rows(one_off), baseline, pope_aggregate, ["f1"], seed=0)
    assert tests["f1"].p_value > 0.05 and tests["f1"].low <= 0.0 <= tests["f1"].high


def test_holm_adjustment() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    adjusted = holm([0.02, math.nan, 0.2])
    assert (
        adjusted[0] == pytest.approx(0.04) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.2)
    )
    assert holm([]) == []
