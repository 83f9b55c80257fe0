"""The one allocator: split a whole number by weights, largest remainder, exactly.

Used to split samples over strategies (`generation.strategy_weights`) and over leaves
(synth/planning/balance.py, inside its bounds). Exact (fractions, no float drift),
deterministic, sums to `n`, and a zero weight gets zero. Ties go to the larger weight,
then to the earlier key; keys keep their order.

>>> allocate({"new_question": 2, "answer_augmentation": 1}, 10)
{'new_question': 7, 'answer_augmentation': 3}
>>> allocate({"a": 1, "b": 1, "c": 1}, 10)
{'a': 4, 'b': 3, 'c': 3}
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Hashable, Mapping, TypeVar

from synth.errors import BadInput

K = TypeVar("K", bound=Hashable)


class AllocationError(BadInput, ValueError):
    """Weights or a count that cannot be allocated; the message says what to change."""


def largest_remainder(quotas: Mapping[K, Fraction], n: int, weights: Mapping[K, Fraction] | None = None) -> dict[K, int]:
    """Whole counts from exact quotas summing to `n`: floors, then one more for the largest
    remainders (ties: larger weight, then earlier key)."""
    order = list(quotas)
    counts = {k: math.floor(q) for k, q in quotas.items()}
    left = n - sum(counts.values())
    w = weights or {}
    ranked = sorted(order, key=lambda k: (-(quotas[k] - counts[k]), -w.get(k, 0), order.index(k)))
    for k in ranked[:left]:
        counts[k] += 1
    return counts


def allocate(weights: Mapping[K, float | Fraction], n: int) -> dict[K, int]:
    """Split `n` by `weights` (largest remainder)."""
    if n < 0:
        raise AllocationError(f"cannot allocate a negative number of samples ({n})")
    if not weights:
        raise AllocationError("no weights to allocate by: give at least one strategy a weight > 0")
    exact: dict[K, Fraction] = {}
    for name, weight in weights.items():
        if not isinstance(weight, (int, float, Fraction)) or (isinstance(weight, float) and
                                                               (math.isnan(weight) or math.isinf(weight))) or weight < 0:
            raise AllocationError(f"weight of {name!r} must be a finite number >= 0, got {weight!r}")
        exact[name] = Fraction(weight)
    total = sum(exact.values())
    if total <= 0:
        raise AllocationError("at least one weight must be > 0")
    return largest_remainder({k: n * w / total for k, w in exact.items()}, n, exact)
