import math

import pytest

from llava_ckd.study.stats import describe, paired


def test_describe_against_hand_computed_values():
    # mean 3, deviations -2..2: sample variance 10 / 4 = 2.5; t(0.975, 4) = 2.776445
    stats = describe([1.0, 2.0, 3.0, 4.0, 5.0])
    assert stats["n"] == 5 and stats["mean"] == 3.0
    assert stats["std"] == pytest.approx(math.sqrt(2.5))
    assert stats["se"] == pytest.approx(math.sqrt(2.5 / 5))
    half = 2.776445 * math.sqrt(2.5 / 5)
    assert stats["ci95"] == pytest.approx([3.0 - half, 3.0 + half], rel=1e-6)


def test_one_value_has_no_spread():
    stats = describe([7.0])
    assert stats["mean"] == 7.0 and math.isnan(stats["std"]) and math.isnan(stats["ci95"][0])


def test_paired_differences_use_only_the_seeds_both_have():
    plan = {0: 40.0, 1: 42.0, 2: 45.0, 3: 50.0}
    none = {0: 38.0, 1: 41.0, 2: 41.0}
    result = paired(plan, none)
    assert result["per_seed"] == {0: 2.0, 1: 1.0, 2: 4.0}
    # differences 2, 1, 4: mean 7/3, sample variance ((1/3)^2 + (4/3)^2 + (5/3)^2) / 2 = 7/3; t(0.975, 2) = 4.302653
    assert result["mean"] == pytest.approx(7 / 3)
    assert result["se"] == pytest.approx(math.sqrt(7 / 3 / 3))
    assert result["ci95"][1] - result["mean"] == pytest.approx(4.302653 * math.sqrt(7 / 9), rel=1e-6)


def test_paired_differences_differ_from_the_difference_of_unpaired_spreads():
    """A plan that is one point better on every seed is clearly better, though the seeds' spread is wide."""
    none = {seed: 30.0 + 5 * seed for seed in range(5)}
    plan = {seed: value + 1.0 for seed, value in none.items()}
    assert paired(plan, none)["se"] == 0.0
    assert describe(list(none.values()))["std"] > 7


def test_no_common_seed_gives_no_difference():
    assert paired({0: 1.0}, {1: 2.0}) == {"per_seed": {}, "n": 0}
