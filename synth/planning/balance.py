"""Target distributions over a tree's leaves: how many samples each leaf should end with.

A target is built from the recipe's `balance` section and the tree:

- weights: uniform over leaves by default; `tree.leaf_weights` by leaf label; or, with
  `balance.dimension`, shares over the values of one tree dimension (`balance.weights`,
  uniform over the values by default), split evenly among the leaves that carry each value
  (leaves whose path never fixed that dimension form the group "(other)");
- bounds: `min_per_leaf` / `max_per_leaf`, honoured exactly (water-filling: leaves that
  would fall outside their bounds are pinned to them and the rest is shared again);
- a leaf is "within tolerance" when it holds at least (1 - tolerance) x its target.

Pure: the storage layer counts what each leaf already has and asks for the deficits.

>>> bounded_allocation({"a": 1, "b": 1, "c": 2}, 8, minimum=0, maximum=3)
{'a': 3, 'b': 2, 'c': 3}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Mapping, Sequence

from synth.errors import BadInput
from synth.planning.allocate import largest_remainder


OTHER = "(other)"


class BalanceError(BadInput, ValueError):
    """The target cannot be met as written; the message says what to change."""


@dataclass(frozen=True)
class LeafSpec:
    leaf_id: str | None
    label: str
    path: tuple[tuple[str, str], ...]  # fixed (dimension, value) pairs from the root


def dimension_value(leaf: LeafSpec, dimension: str) -> str:
    return dict(leaf.path).get(dimension, OTHER)


def leaf_weights(leaves: Sequence[LeafSpec], by_label: Mapping[str, float] | None = None,
                 dimension: str | None = None, by_value: Mapping[str, float] | None = None
                 ) -> dict[str | None, Fraction]:
    """One weight per leaf, normalised to sum to 1."""
    base = {leaf.leaf_id: Fraction((by_label or {}).get(leaf.label, 1.0)) for leaf in leaves}
    if dimension is None:
        if by_value:
            raise BalanceError("balance.weights are shares over a dimension's values: also write "
                               "balance.dimension (or use tree.leaf_weights for per-leaf weights)")
        return _normalised(base)
    groups: dict[str, list[LeafSpec]] = {}
    for leaf in leaves:
        groups.setdefault(dimension_value(leaf, dimension), []).append(leaf)
    if set(groups) == {OTHER}:
        seen = sorted({d for leaf in leaves for d, _ in leaf.path})
        raise BalanceError(f"balance.dimension: the tree has no dimension {dimension!r}; "
                           f"write one of: {', '.join(seen) or '(the tree never split)'}")
    unknown = sorted(set(by_value or {}) - set(groups))
    if unknown:
        raise BalanceError(f"balance.weights: {', '.join(map(repr, unknown))} is not a value of {dimension!r} in "
                           f"this tree; write weights for: {', '.join(sorted(groups))}")
    weights: dict[str | None, Fraction] = {}
    for value, members in groups.items():
        share = Fraction((by_value or {}).get(value, 1.0 if not by_value else 0.0))
        inside = _normalised({leaf.leaf_id: base[leaf.leaf_id] for leaf in members})
        for leaf_id, w in inside.items():
            weights[leaf_id] = share * w
    if sum(weights.values()) <= 0:
        raise BalanceError("balance.weights: at least one value must have a weight > 0")
    return _normalised(weights)


def _normalised(weights: Mapping[str | None, Fraction]) -> dict[str | None, Fraction]:
    total = sum(weights.values())
    if total <= 0:
        return {k: Fraction(1, len(weights)) for k in weights}
    return {k: w / total for k, w in weights.items()}


def bounded_allocation(weights: Mapping[str | None, float | Fraction], total: int, minimum: int = 0,
                       maximum: int | None = None) -> dict[str | None, int]:
    """Whole counts summing to `total`, proportional to weights, each in [minimum, maximum]."""
    keys = list(weights)
    if not keys:
        raise BalanceError("no leaves to allocate samples to")
    if minimum * len(keys) > total:
        raise BalanceError(f"balance.min_per_leaf: {minimum} x {len(keys)} leaves = {minimum * len(keys)} is more "
                           f"than the target {total}; lower min_per_leaf or raise generation.target")
    if maximum is not None and maximum * len(keys) < total:
        raise BalanceError(f"balance.max_per_leaf: {maximum} x {len(keys)} leaves = {maximum * len(keys)} is less "
                           f"than the target {total}; raise max_per_leaf or lower generation.target")
    w = {k: Fraction(weights[k]) for k in keys}
    pinned: dict[str | None, int] = {}
    while True:
        free = [k for k in keys if k not in pinned]
        left = total - sum(pinned.values())
        mass = sum(w[k] for k in free)
        share = {k: (left * w[k] / mass if mass > 0 else Fraction(left, len(free))) for k in free}
        over = [k for k in free if maximum is not None and share[k] > maximum]
        under = [k for k in free if share[k] < minimum]
        if not over and not under:
            break
        # pin the worst offenders on one side only, then share again (converges in <= n passes)
        for k in (over or under):
            pinned[k] = maximum if over else minimum
    counts = dict(pinned)
    # largest remainder over the free leaves: floor or ceil of a share that is within bounds
    counts.update(largest_remainder({k: share[k] for k in free}, left))
    return {k: counts[k] for k in keys}


def within_tolerance(have: int, target: int, tolerance: float) -> bool:
    """At least (1 - tolerance) x target, as documented: 1 of 2 is not "within 10 %"
    (rounding the bound down made it so, and a run said so while 5 of 24 were missing)."""
    return have >= math.ceil(target * (1 - tolerance) - 1e-9)
