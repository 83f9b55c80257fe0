"""The budget rule (strategy from budget ratio and seed count) and the mix allocation."""

from __future__ import annotations

import math

import pytest

from synth.planning.allocate import AllocationError, allocate
from synth.planning.budget import SWITCH_POINTS, BudgetError, choose_strategy, switch_point
from synth.strategies import STRATEGIES


# --- the switch point table and its interpolation -------------------------------------

def test_table_is_the_papers_points_sorted_and_falling():
    assert [(p.n_seeds, p.ratio) for p in SWITCH_POINTS] == [(100, 39.0), (1_000, 17.6), (7_000, 16.4)]
    assert all(a.n_seeds < b.n_seeds and a.ratio > b.ratio for a, b in zip(SWITCH_POINTS, SWITCH_POINTS[1:]))
    assert all(p.source.startswith("§") for p in SWITCH_POINTS)


@pytest.mark.parametrize("n, expected", [(1, 39.0), (50, 39.0), (100, 39.0), (1_000, 17.6), (7_000, 16.4),
                                         (1_000_000, 16.4)])
def test_switch_point_at_table_points_and_flat_outside(n, expected):
    assert switch_point(n) == pytest.approx(expected)


def test_switch_point_is_linear_in_log_seeds_between_points():
    # sqrt(100 * 1000) = 316.2 is halfway in log10: halfway between 39 and 17.6
    assert switch_point(round(math.sqrt(100 * 1000))) == pytest.approx((39.0 + 17.6) / 2, abs=0.05)
    values = [switch_point(n) for n in (100, 200, 400, 800, 1000, 2000, 5000, 7000)]
    assert values == sorted(values, reverse=True)


# --- choose_strategy: both ends and the middle -------------------------------------------

def test_low_ratio_picks_answer_augmentation_and_says_why():
    choice = choose_strategy(2_000, 100)  # BR 20 < 39
    assert choice.strategy == "answer_augmentation"
    assert choice.ratio == 20.0 and choice.threshold == 39.0
    assert "budget ratio 20 (2,000 requests / 100 seeds)" in choice.reason
    assert "below the switch point 39 for 100 seeds" in choice.reason
    assert "2409.19759" in choice.reason


def test_high_ratio_picks_new_question():
    choice = choose_strategy(100_000, 1_000)  # BR 100 > 17.6
    assert choice.strategy == "new_question"
    assert "switch point 17.6" in choice.reason and "budget ratio 100" in choice.reason


def test_middle_the_same_ratio_flips_with_seed_count():
    # BR 25: below the switch for 100 seeds (39), above it for 1,000 seeds (17.6)
    assert choose_strategy(2_500, 100).strategy == "answer_augmentation"
    assert choose_strategy(25_000, 1_000).strategy == "new_question"
    # right at the switch point new questions win; just below, answers do
    assert choose_strategy(17_600, 1_000).strategy == "new_question"
    assert choose_strategy(17_599, 1_000).strategy == "answer_augmentation"


def test_full_seed_set_uses_the_lowest_switch_point():
    assert choose_strategy(7_000 * 16, 7_000).strategy == "answer_augmentation"
    assert choose_strategy(7_000 * 17, 7_000).strategy == "new_question"


def test_no_seeds_means_new_questions_from_the_tree():
    choice = choose_strategy(500, 0)
    assert choice.strategy == "new_question" and choice.ratio is None
    assert "no seed rows" in choice.reason and "tree" in choice.reason


def test_every_choice_is_a_known_strategy():
    for budget in (1, 10, 1_000, 10**6):
        for seeds in (0, 1, 10, 100, 5_000, 10**5):
            assert choose_strategy(budget, seeds).strategy in STRATEGIES


@pytest.mark.parametrize("budget, seeds, words", [(0, 10, "at least 1 request"), (-5, 10, "at least 1 request"),
                                                  (10, -1, "cannot be negative")])
def test_bad_inputs_raise_a_typed_error_that_says_what_to_change(budget, seeds, words):
    with pytest.raises(BudgetError, match=words):
        choose_strategy(budget, seeds)


# --- allocate (synth/planning/allocate.py, the one allocator) ---------------------------------------------------------

def test_allocate_largest_remainder_example():
    # quotas 6.67 / 3.33: floors 6 + 3, the extra goes to the larger remainder
    assert allocate({"new_question": 2, "answer_augmentation": 1}, 10) == {
        "new_question": 7, "answer_augmentation": 3}


def test_allocate_ties_are_deterministic_and_keep_key_order():
    assert allocate({"a": 1, "b": 1, "c": 1}, 10) == {"a": 4, "b": 3, "c": 3}
    assert list(allocate({"c": 1, "a": 1}, 3)) == ["c", "a"]
    assert allocate({"c": 1, "a": 1}, 3) == {"c": 2, "a": 1}


def test_allocate_floats_without_drift():
    # 0.1 + 0.2 + 0.7 in floats is not 1.0; the split must still be exact
    assert allocate({"a": 0.1, "b": 0.2, "c": 0.7}, 10) == {"a": 1, "b": 2, "c": 7}


@pytest.mark.parametrize("n", [0, 1, 2, 7, 99, 1000, 12345])
def test_allocate_sums_to_n_and_stays_within_one_of_the_quota(n):
    weights = {"new_question": 0.5, "answer_augmentation": 0.3, "question_rephrase": 0.2}
    counts = allocate(weights, n)
    assert sum(counts.values()) == n
    for name, weight in weights.items():
        assert abs(counts[name] - n * weight) < 1


def test_allocate_zero_weight_gets_nothing():
    assert allocate({"a": 1, "b": 0, "c": 1}, 5) == {"a": 3, "b": 0, "c": 2}


@pytest.mark.parametrize("weights, n, words", [
    ({}, 5, "no weights to allocate by"),
    ({"a": 0, "b": 0}, 5, "must be > 0"),
    ({"a": -1, "b": 2}, 5, "finite number >= 0"),
    ({"a": float("nan")}, 5, "finite number >= 0"),
    ({"a": 1}, -1, "negative"),
])
def test_allocate_rejects_bad_input(weights, n, words):
    with pytest.raises(AllocationError, match=words):
        allocate(weights, n)
