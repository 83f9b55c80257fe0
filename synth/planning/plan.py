"""Plan a run: each leaf's target, which strategy fills each sample, and the slots.

Pure and deterministic: the same recipe, tree, seeds and counts always give the same
plan, which is what lets a rerun find the samples it already made. The catalog side
(what each leaf already holds, which attempts were made) is passed in as plain
counts by the run ledger (storage/runs/runs.py); `synth plan` calls this directly.

- targets: synth/planning/balance.py (uniform, `tree.leaf_weights`, or shares over a dimension,
  within min/max per leaf);
- strategy: fixed, mixed by `strategy_weights`, or `auto` from the budget ratio
  (synth/planning/budget.py);
- slots: one per sample to generate (each leaf's target minus what it holds), ordered
  thinnest leaf first (so a budget that runs out leaves the dataset as even as it can),
  the strategies shuffled over them reproducibly, a seed row for strategies that need
  one (the rows the dataset has used least first: rows added to the seed file come
  before rows already augmented), example rows for every slot, and the leaf's
  constraints with infinite values drawn;
- attempts: which (slot, attempt) pairs to run now, within the rounds per slot and the
  request budget (`pending_attempts`).
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from synth.ids import stable_seed
from synth.planning.allocate import allocate
from synth.planning.balance import BalanceError, LeafSpec, bounded_allocation, leaf_weights
from synth.slot import Slot
from synth.strategies import STRATEGIES

if TYPE_CHECKING:
    from synth.config.recipe import Recipe
    from synth.tree import Tree

MAX_PARALLEL_ATTEMPTS = 3


@dataclass(frozen=True)
class StrategyDecision:
    counts: dict[str, int]
    label: str
    reason: str


@dataclass(frozen=True)
class Plan:
    targets: dict[str | None, int]  # accepted samples each leaf should end with
    have: dict[str | None, int]  # what each leaf holds already (not made by this run)
    decision: StrategyDecision
    slots: list[Slot]

    @property
    def deficits(self) -> dict[str | None, int]:
        return {leaf: max(0, target - self.have.get(leaf, 0)) for leaf, target in self.targets.items()}


def decide_strategy(recipe: "Recipe", n_seeds: int, n: int | None = None) -> StrategyDecision:
    """How the `n` samples to generate (default: the target) split over strategies."""
    gen = recipe.generation
    n = gen.target if n is None else n
    if gen.strategy_weights:
        counts = allocate(gen.strategy_weights, n)
        label = "mix(" + ", ".join(f"{k}={v:g}" for k, v in gen.strategy_weights.items()) + ")"
        return StrategyDecision(counts, label, "mixed by the recipe's strategy_weights")
    if gen.strategy == "auto":
        from synth.planning.budget import choose_strategy

        choice = choose_strategy(gen.request_budget, n_seeds)
        return StrategyDecision({choice.strategy: n}, choice.strategy, choice.reason)
    return StrategyDecision({gen.strategy: n}, gen.strategy, "fixed by the recipe")


def leaf_specs(tree: "Tree | None") -> list[LeafSpec]:
    """The leaves samples go to, with the dimension values their paths fix."""
    if tree is None:
        return [LeafSpec(None, "(all)", ())]
    return [LeafSpec(leaf.node_id, leaf.label, tuple((d, v) for d, v in leaf.path if d not in leaf.any_of))
            for leaf in tree.leaves()]


def leaf_targets(recipe: "Recipe", tree: "Tree | None") -> dict[str | None, int]:
    """How many accepted samples each leaf should end with (generated and existing together)."""
    bal, tree_settings = recipe.balance, recipe.tree
    if tree is None and tree_settings is not None and tree_settings.enabled:
        return {None: recipe.generation.target}  # `synth plan` before the tree exists: one bucket
    if bal.dimension is not None and tree is None:
        raise BalanceError("balance.dimension needs a tree: add a `tree:` section or remove balance.dimension")
    weights = leaf_weights(leaf_specs(tree), tree_settings.leaf_weights if tree_settings else None,
                           bal.dimension, bal.weights)
    return bounded_allocation(weights, recipe.generation.target, bal.min_per_leaf, bal.max_per_leaf)


def make_plan(recipe: "Recipe", tree: "Tree | None", n_seeds: int, run_id: str,
              have: Mapping[str | None, int] | None = None, seed_keys: Sequence[str] | None = None,
              seed_usage: Mapping[str, int] | None = None) -> Plan:
    """The run's plan: slots for each leaf's deficit against what it holds (`have`);
    `seed_keys` name the seed rows by content and `seed_usage` says how often the dataset
    used each already."""
    targets = leaf_targets(recipe, tree)
    have = {leaf: int((have or {}).get(leaf, 0)) for leaf in targets}
    deficits = {leaf: max(0, target - have[leaf]) for leaf, target in targets.items()}
    decision = decide_strategy(recipe, n_seeds, sum(deficits.values()))
    usage = [int((seed_usage or {}).get(key, 0)) for key in seed_keys] if seed_keys else None
    constraints_for = None
    if tree is not None:
        from synth.tree import leaf_constraints

        leaves_by_id = {leaf.node_id: leaf for leaf in tree.leaves()}

        def constraints_for(leaf_id: str | None, index: int) -> tuple[tuple[str, str], ...]:
            leaf = leaves_by_id[leaf_id]
            if not leaf.any_of:  # nothing to draw: no seed to derive (most of a large plan's cost)
                return tuple(tuple(pair) for pair in leaf.path)
            return tuple(tuple(pair) for pair in leaf_constraints(leaf, stable_seed(run_id, index)))
    slots = plan_slots(per_leaf=deficits, strategy_counts=decision.counts, n_seeds=n_seeds,
                       examples_per_prompt=recipe.generation.examples_per_prompt, seed=recipe.backend.sampling.seed,
                       constraints_for=constraints_for, have=have, targets=targets, seed_usage=usage,
                       seed_keys=seed_keys)
    return Plan(targets, have, decision, slots)


def thinnest_first(per_leaf: Mapping[str | None, int], have: Mapping[str | None, int] | None = None,
                   targets: Mapping[str | None, int] | None = None) -> list[str | None]:
    """The leaf of each slot, in order: always the leaf furthest below its target so far
    (have + slots given / target), ties in leaf order. Without `have`/`targets` the leaves
    are filled one after the other, as given.

    >>> thinnest_first({"a": 2, "b": 1}, have={"a": 0, "b": 3}, targets={"a": 2, "b": 4})
    ['a', 'a', 'b']
    """
    if have is None or targets is None:
        return [leaf for leaf, count in per_leaf.items() for _ in range(count)]
    order = {leaf: i for i, leaf in enumerate(per_leaf)}
    heap = [(have.get(leaf, 0) / max(targets.get(leaf, 1), 1), order[leaf], leaf)
            for leaf, count in per_leaf.items() if count > 0]
    heapq.heapify(heap)
    given = {leaf: 0 for leaf in per_leaf}
    out: list[str | None] = []
    while heap:
        _, i, leaf = heapq.heappop(heap)
        out.append(leaf)
        given[leaf] += 1
        if given[leaf] < per_leaf[leaf]:
            fill = (have.get(leaf, 0) + given[leaf]) / max(targets.get(leaf, 1), 1)
            heapq.heappush(heap, (fill, i, leaf))
    return out


def plan_slots(
    per_leaf: Mapping[str | None, int],
    strategy_counts: Mapping[str, int],
    n_seeds: int,
    examples_per_prompt: int,
    seed: int,
    constraints_for: Callable[[str | None, int], tuple[tuple[str, str], ...]] | None = None,
    have: Mapping[str | None, int] | None = None,
    targets: Mapping[str | None, int] | None = None,
    seed_usage: Sequence[int] | None = None,
    seed_keys: Sequence[str] | None = None,
) -> list[Slot]:
    """One slot per sample to generate: `per_leaf` says how many each leaf gets
    (synth/planning/balance.py decides), `strategy_counts` how they split over strategies; with
    `have`/`targets`, the thinnest leaves come first; with `seed_usage` (per seed row), the
    least-used seed rows are rewritten first."""
    total = sum(per_leaf.values())
    if sum(strategy_counts.values()) != total:
        raise ValueError(f"strategy counts {dict(strategy_counts)} do not add up to the {total} samples planned")
    rng = random.Random(seed)
    leaf_of_slot = thinnest_first(per_leaf, have, targets)
    strategies = [name for name, count in strategy_counts.items() for _ in range(count)]
    rng.shuffle(strategies)  # mix strategies across leaves, reproducibly
    seed_order = list(range(n_seeds))
    rng.shuffle(seed_order)
    if seed_usage is not None:
        seed_order.sort(key=lambda row: seed_usage[row])  # stable: ties keep the shuffled order
    slots, seeded = [], 0
    for index, (leaf_id, strategy) in enumerate(zip(leaf_of_slot, strategies)):
        leaf_id = leaf_id or None
        examples = tuple(random.Random(f"{seed}/{index}").sample(range(n_seeds), min(examples_per_prompt, n_seeds))
                         ) if n_seeds and examples_per_prompt else ()
        seed_row = None
        if n_seeds and STRATEGIES[strategy].needs_seed:
            seed_row, seeded = seed_order[seeded % n_seeds], seeded + 1
        constraints = constraints_for(leaf_id, index) if constraints_for else ()
        slots.append(Slot(index=index, strategy=strategy, leaf_id=leaf_id, constraints=constraints,
                          seed_row=seed_row, example_rows=examples,
                          seed_key=seed_keys[seed_row] if seed_keys is not None and seed_row is not None else None))
    return slots


def attempt_cost(slot: Slot, answer_copies: int, judged: bool) -> int:
    """Requests one attempt at `slot` makes: each stage once, the answer stage k times, the judge once."""
    strategy = STRATEGIES[slot.strategy]
    return int(judged) + sum(answer_copies if stage.writes == "answer" else 1 for stage in strategy.stages)


def pending_attempts(slots: Sequence[Slot], states: Mapping[int, tuple[bool, int, int]],
                     yields: Mapping[str | None, tuple[int, int]], budget_left: int, max_rounds: int,
                     cost: Callable[[Slot], int]) -> list[tuple[Slot, int]]:
    """(slot, attempt) pairs to generate now, within the round limit and the request budget.

    `states`: slot -> (done, attempts so far, next attempt number); `yields`: leaf ->
    (accepted, attempts) so far. An open slot in a leaf that has rejected much so far gets
    several attempts at once (about 1 / acceptance rate, at most MAX_PARALLEL_ATTEMPTS), so
    a weak leaf catches up in one round instead of many; a slot that ends with two
    accepted samples keeps one (the ledger drops the surplus).
    """
    work = []
    for slot in slots:
        done, attempts, next_attempt = states.get(slot.index, (False, 0, 0))
        remaining = max_rounds - attempts
        if done or remaining <= 0:
            continue
        ok, tried = yields.get(slot.leaf_id, (0, 0))
        rate = (ok + 1) / (tried + 1)  # smoothed: 1 before anything is measured
        wanted = min(remaining, MAX_PARALLEL_ATTEMPTS, math.ceil(1 / rate))
        price = cost(slot)
        for attempt in range(next_attempt, next_attempt + wanted):
            if price > budget_left:
                return work
            budget_left -= price
            work.append((slot, attempt))
    return work


def chunks(work: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(work[i:i + size]) for i in range(0, len(work), size)]
