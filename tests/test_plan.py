"""Planning is deterministic and allocates exactly the target."""

from __future__ import annotations

import pytest

from synth.plan import Leaf, allocate, plan_slots


def test_allocate_sums_and_is_proportional():
    assert allocate({"a": 1, "b": 1, "c": 1}, 10) == {"a": 4, "b": 3, "c": 3}
    assert allocate({"a": 3, "b": 1}, 8) == {"a": 6, "b": 2}
    assert allocate({"a": 0, "b": 1}, 5) == {"a": 0, "b": 5}
    assert sum(allocate({str(i): i + 1 for i in range(7)}, 101).values()) == 101


def test_plan_is_deterministic_and_balanced():
    leaves = [Leaf(f"l{i}", f"x={i}") for i in range(4)]
    a = plan_slots(10, leaves, {"new_question": 6, "question_rephrase": 4}, n_seeds=5,
                   examples_per_prompt=2, seed=3)
    b = plan_slots(10, leaves, {"new_question": 6, "question_rephrase": 4}, n_seeds=5,
                   examples_per_prompt=2, seed=3)
    assert a == b
    per_leaf = {}
    for slot in a:
        per_leaf[slot.leaf_id] = per_leaf.get(slot.leaf_id, 0) + 1
    assert sorted(per_leaf.values()) == [2, 2, 3, 3]
    assert sum(s.strategy == "question_rephrase" for s in a) == 4
    assert all(s.seed_row is not None for s in a if s.strategy == "question_rephrase")
    assert all(len(s.example_rows) == 2 for s in a)


def test_leaf_weights():
    leaves = [Leaf("a", "x=a"), Leaf("b", "x=b")]
    slots = plan_slots(8, leaves, {"new_question": 8}, 0, 0, 0, leaf_weights={"x=a": 3, "x=b": 1})
    assert sum(s.leaf_id == "a" for s in slots) == 6


def test_counts_must_match_target():
    with pytest.raises(ValueError):
        plan_slots(5, [Leaf(None, "all")], {"new_question": 4}, 0, 0, 0)
