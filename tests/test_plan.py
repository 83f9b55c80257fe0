"""Planning is deterministic and allocates exactly the target."""

from __future__ import annotations

import pytest

from synth.planning.allocate import allocate
from synth.planning.plan import plan_slots


def test_allocate_sums_and_is_proportional():
    assert allocate({"a": 1, "b": 1, "c": 1}, 10) == {"a": 4, "b": 3, "c": 3}
    assert allocate({"a": 3, "b": 1}, 8) == {"a": 6, "b": 2}
    assert allocate({"a": 0, "b": 1}, 5) == {"a": 0, "b": 5}
    assert sum(allocate({str(i): i + 1 for i in range(7)}, 101).values()) == 101


def test_plan_is_deterministic_and_balanced():
    per_leaf = {"l0": 3, "l1": 3, "l2": 2, "l3": 2}
    a = plan_slots(per_leaf, {"new_question": 6, "question_rephrase": 4}, n_seeds=5,
                   examples_per_prompt=2, seed=3)
    b = plan_slots(per_leaf, {"new_question": 6, "question_rephrase": 4}, n_seeds=5,
                   examples_per_prompt=2, seed=3)
    assert a == b
    per_leaf = {}
    for slot in a:
        per_leaf[slot.leaf_id] = per_leaf.get(slot.leaf_id, 0) + 1
    assert sorted(per_leaf.values()) == [2, 2, 3, 3]
    assert sum(s.strategy == "question_rephrase" for s in a) == 4
    assert all(s.seed_row is not None for s in a if s.strategy == "question_rephrase")
    assert all(len(s.example_rows) == 2 for s in a)


def test_counts_must_match_the_leaves():
    with pytest.raises(ValueError):
        plan_slots({None: 5}, {"new_question": 4}, 0, 0, 0)
