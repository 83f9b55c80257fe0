"""Publish a run: freeze its accepted samples in a snapshot and export that snapshot.

The step the flow calls after generation. A rerun of an unchanged run finds the same
snapshot (its name is derived from the content) and rewrites the same files.
"""

from __future__ import annotations

from typing import Any

from storage.bulk import leaf_counts
from storage.catalog import Catalog
from storage.export import export_snapshot
from storage.snapshots import create_snapshot
from synth.recipe import Recipe
from synth.render import Renderer


def tree_text_of_run(catalog: Catalog, run_id: str) -> str | None:
    tree_id = (catalog.run(run_id) or {}).get("tree_id")
    if not tree_id:
        return None
    from storage.trees import load_tree
    from synth.tree import render_tree

    tree = load_tree(catalog, tree_id)
    return render_tree(tree, leaf_counts(catalog, [run_id])) if tree is not None else None


def export_run(catalog: Catalog, recipe: Recipe, run_id: str) -> dict[str, Any]:
    snapshot_id = create_snapshot(catalog, run_id, test_fraction=recipe.export.test_fraction,
                                  seed=recipe.backend.sampling.seed)
    result = export_snapshot(catalog, snapshot_id, recipe.export.dir, formats=recipe.export.formats,
                             lineage=recipe.export.lineage, tree_text=tree_text_of_run(catalog, run_id),
                             renderer=Renderer(recipe.template_overrides()))
    return {
        "snapshot_id": snapshot_id,
        "out_dir": str(result.out_dir),
        "rows": result.n_rows,
        "paths": {target: str(paths[0].parent if target == "parquet" else paths[0])
                  for target, paths in result.paths.items() if paths},
    }
