"""Growth steps: what target a run of a growing dataset aims at.

`synth run RECIPE --grow-by N` (or `generation.grow_by`, or the nightly deployment)
raises the dataset's target by N: the new target is the larger of the dataset's target
so far and the recipe's own, plus N, capped at `generation.max_target`. A dataset that
does not exist yet gets the recipe's target first (there is nothing to grow yet). The
run then plans against the dataset as any run does, so exactly N more are made (plus
retries for rejects), thinnest leaves first.

A growth step is idempotent across a crash: a step whose run did not finish (killed,
failed, interrupted) is resumed with the target it had, instead of growing again.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.catalog.catalog import Catalog
from storage.tables.datasets import dataset_row
from synth.config.recipe import Recipe


@dataclass(frozen=True)
class Growth:
    recipe: Recipe  # the recipe with the target this run aims at
    target: int
    note: str  # what was decided, for the log and the report


def plan_growth(catalog: Catalog, recipe: Recipe, grow_by: int | None = None) -> Growth:
    grow_by = grow_by if grow_by is not None else recipe.generation.grow_by
    target = recipe.generation.target
    if not grow_by:
        return Growth(recipe, target, f"target {target}")  # the recipe's, or --target's
    dataset = recipe.dataset_name
    unfinished = catalog.query(
        """SELECT run_id, target FROM runs WHERE dataset = ? AND base_hash = ? AND target IS NOT NULL
               AND status NOT IN ('finished', 'short') ORDER BY updated_at DESC LIMIT 1""",
        [dataset, recipe.base_hash()])
    if unfinished:
        previous = int(unfinished[0]["target"])
        return Growth(recipe.with_target(previous), previous,
                      f"resuming the unfinished growth step {unfinished[0]['run_id']} to {previous}")
    row = dataset_row(catalog, dataset)
    if row is None or not catalog.count("runs", dataset=dataset):
        return Growth(recipe, target, f"dataset {dataset} is new: its first {target} samples (nothing to grow yet)")
    base = max(int(row["target"] or 0), target)
    grown = base + grow_by
    cap = recipe.generation.max_target
    if cap is not None and base >= cap:
        return Growth(recipe.with_target(base), base, f"dataset {dataset} is at generation.max_target ({cap}): "
                                                      "not growing; raise max_target to grow it further")
    capped = cap is not None and grown > cap
    grown = min(grown, cap) if cap is not None else grown
    return Growth(recipe.with_target(grown), grown, f"dataset {dataset} grows by {grown - base}: {base} -> {grown}"
                  + (f" (capped at max_target {cap})" if capped else ""))
