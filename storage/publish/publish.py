"""Publish a run's dataset: freeze what it holds as a version and export that version.

The step the flow calls after generation. The dataset's version (storage/tables/versions.py)
holds, per leaf, at most the run's target of the dataset's members; a rerun that changed
nothing finds the same version and rewrites the same files. When the recipe names a Hub
repo (`export.hub_repo`), the `hub` exporter runs too: a new version is pushed as a new
commit tagged `v<N>`. `publish_snapshot` is the export step both the flow and `synth export`
call; `push_to_hub` is the export to the Hub alone.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Iterable

from storage.catalog.bulk import accepted_per_leaf
from storage.catalog.catalog import Catalog
from storage.publish.export import DEFAULT_SHARD_ROWS, ExportResult, export_snapshot
from storage.publish.hub import DEFAULT_SHARDS_PER_COMMIT, HubTarget
from storage.tables.snapshots import create_snapshot
from synth.prompting.render import Renderer
from synth.config.recipe import Recipe


def tree_text_of_run(catalog: Catalog, run_id: str, snapshot_id: str | None = None) -> str | None:
    """The run's tree as text, with the samples per leaf of `snapshot_id` (else of the run)."""
    tree_id = (catalog.run(run_id) or {}).get("tree_id")
    if not tree_id:
        return None
    from storage.tables.trees import load_tree
    from synth.tree import render_tree

    tree = load_tree(catalog, tree_id)
    if tree is None:
        return None
    if snapshot_id is None:
        return render_tree(tree, accepted_per_leaf(catalog, [run_id]))
    from storage.publish.card import snapshot_leaf_counts

    counts = {r["leaf_id"]: r["n"] for r in snapshot_leaf_counts(catalog, snapshot_id, tree.tree_id) if r["leaf_id"]}
    return render_tree(tree, counts)


def export_run(catalog: Catalog, recipe: Recipe, run_id: str, scope: Any = None, tree: Any = None,
               targets: dict[str | None, int] | None = None, token: str | None = None) -> dict[str, Any]:
    """Version the dataset (or, without `scope`, snapshot the run alone) and export it."""
    renderer = Renderer(recipe.template_overrides())
    version: dict[str, Any] | None = None
    if scope is not None and targets is not None:
        from storage.tables.versions import NothingToVersion, create_version

        try:
            version = create_version(catalog, scope, tree, targets, run_id, seed=recipe.backend.sampling.seed,
                                     test_fraction=recipe.export.test_fraction)
        except NothingToVersion as exc:  # a run that accepted nothing: no files, said in one line
            return {"skipped": str(exc), "rows": 0, "paths": {}}
        snapshot_id = version["snapshot_id"]
    else:
        snapshot_id = create_snapshot(catalog, run_id, test_fraction=recipe.export.test_fraction,
                                      seed=recipe.backend.sampling.seed)
    tree_text = tree_text_of_run(catalog, run_id, snapshot_id)
    tag = f"v{version['version']}" if version is not None else None
    result, pushed = publish_snapshot(catalog, snapshot_id, recipe.export.dir, recipe.export.formats,
                                      lineage=recipe.export.lineage, tree_text=tree_text, renderer=renderer,
                                      hub_repo=recipe.export.hub_repo, private=recipe.export.private, token=token,
                                      tag=tag)
    return {
        "snapshot_id": snapshot_id,
        "version": version,
        "hub": pushed,
        "out_dir": str(result.out_dir),
        "rows": result.n_rows,
        "paths": {target: str(paths[0].parent if target == "parquet" else paths[0])
                  for target, paths in result.paths.items() if paths},
    }


def publish_snapshot(catalog: Catalog, snapshot_id: str, out_dir: Path, formats: Iterable[str], *,
                     lineage: bool = True, tree_text: str | None = None, renderer: Any = None,
                     hub_repo: str | None = None, private: bool = False, token: str | None = None,
                     tag: str | None = None) -> tuple[ExportResult, dict[str, Any] | None]:
    """The one export path of `synth run` and `synth export`: the snapshot written by the
    exporters `formats` names (storage/publish/exporters.py) under `out_dir`; with `hub_repo`,
    the `hub` exporter among them (tagged `tag`). Returns the export and {"repo", "tag",
    "commit"} or None."""
    formats = list(formats)
    options: dict[str, Any] = {}
    if hub_repo:
        options["hub"] = HubTarget(hub_repo, private=private, token=token, tag=tag)
        formats = [*formats, "hub"] if "hub" not in formats else formats
    result = export_snapshot(catalog, snapshot_id, out_dir, formats=formats, lineage=lineage,
                             tree_text=tree_text, renderer=renderer, options=options)
    if "hub" not in result.revisions:
        return result, None
    return result, {"repo": hub_repo, "tag": tag, "commit": result.revisions["hub"]}


def push_to_hub(catalog: Catalog, snapshot_id: str, repo_id: str, private: bool = False,
                token: str | None = None, export_dir: Path | None = None, *,
                endpoint: str | None = None, shards_per_commit: int = DEFAULT_SHARDS_PER_COMMIT,
                shard_rows: int = DEFAULT_SHARD_ROWS, output_fields: dict[str, str] | None = None,
                license: str = "other", tree_text: str | None = None, tag: str | None = None,
                renderer: Any = None) -> str:
    """The snapshot (id or name) to the dataset repo `owner/name` through the `hub` exporter alone
    (its parquet shards and card written under `export_dir`, else a scratch folder); returns
    the commit the repo's main branch is at afterwards, recorded as the 'hub' export."""
    target = HubTarget(repo_id, private=private, token=token, tag=tag, endpoint=endpoint,
                       shards_per_commit=shards_per_commit)
    with tempfile.TemporaryDirectory(prefix="synth-push-") as scratch:
        result = export_snapshot(catalog, snapshot_id, Path(export_dir) if export_dir is not None else Path(scratch),
                                 formats=("hub",), output_fields=output_fields, shard_rows=shard_rows,
                                 license=license, tree_text=tree_text, renderer=renderer, options={"hub": target})
    return result.revisions["hub"]
