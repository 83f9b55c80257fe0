"""Plan the slots of a run: how many samples each leaf gets and which strategy fills each.

Pure and deterministic: the same recipe, tree and seeds always give the same slots,
which is what lets a rerun find the samples it already made.

>>> allocate({"a": 1.0, "b": 1.0, "c": 1.0}, 10)
{'a': 4, 'b': 3, 'c': 3}
"""

from __future__ import annotations

import random
from typing import Callable

from synth.budget import allocate_mix
from synth.strategies import STAGES, Slot


def allocate(weights: dict[str, float], n: int) -> dict[str, int]:
    """Split n into whole counts proportional to weights (largest remainder, exact fractions)."""
    return allocate_mix(weights, n)


def plan_slots(
    per_leaf: dict[str | None, int],
    strategy_counts: dict[str, int],
    n_seeds: int,
    examples_per_prompt: int,
    seed: int,
    constraints_for: Callable[[str | None, int], tuple[tuple[str, str], ...]] | None = None,
) -> list[Slot]:
    """One slot per sample to generate: `per_leaf` says how many each leaf gets
    (synth/balance.py decides), `strategy_counts` how they split over strategies."""
    total = sum(per_leaf.values())
    if sum(strategy_counts.values()) != total:
        raise ValueError(f"strategy counts {strategy_counts} do not add up to the {total} samples planned")
    rng = random.Random(seed)
    leaf_of_slot = [lid for lid, count in per_leaf.items() for _ in range(count)]
    strategies = [name for name, count in strategy_counts.items() for _ in range(count)]
    rng.shuffle(strategies)  # mix strategies across leaves, reproducibly
    seed_order = list(range(n_seeds))
    rng.shuffle(seed_order)
    slots = []
    for index, (leaf_id, strategy) in enumerate(zip(leaf_of_slot, strategies)):
        leaf_id = leaf_id or None
        slot_rng = random.Random(f"{seed}/{index}")
        examples = tuple(slot_rng.sample(range(n_seeds), min(examples_per_prompt, n_seeds))) if n_seeds else ()
        seed_row = seed_order[index % n_seeds] if n_seeds and strategy != "new_question" else None
        constraints = constraints_for(leaf_id, index) if constraints_for else ()
        slots.append(Slot(index=index, strategy=strategy, leaf_id=leaf_id, constraints=constraints,
                          seed_row=seed_row, example_rows=examples))
    return slots


def requests_per_attempt(strategy: str) -> int:
    return len(STAGES[strategy])
