"""`synth tree show|export|import`: a TreeSynth tree with its samples per leaf, as YAML out
of the catalog, or a YAML file into it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.cli.common import CATALOG_HELP, fail, find_catalog


def add_command(sub) -> None:
    tree = sub.add_parser("tree", help="show, export or import a TreeSynth tree")
    tree.add_argument("action", choices=["show", "export", "import"])
    tree.add_argument("file", nargs="?", help="import: the tree YAML to import")
    tree.add_argument("--catalog", help=CATALOG_HELP)
    tree.add_argument("--tree", help="tree id (default: the newest tree)")
    tree.add_argument("--recipe", help="the tree this recipe uses")
    tree.add_argument("--out", help="export: write the YAML here (default: print it)")
    tree.set_defaults(func=cmd_tree)


def pick_tree(cat, args):
    """The tree of --recipe, else --tree, else the newest; LookupError says what is missing."""
    from storage.tables.trees import list_trees, load_tree

    if args.recipe:
        from storage.runs.recipe_tree import find_tree_for
        from synth.config.recipe import load_recipe

        tree = find_tree_for(cat, load_recipe(args.recipe))
        if tree is None:
            raise LookupError("this recipe's tree is not built yet: run `synth run RECIPE` first")
        return tree
    trees = list_trees(cat)
    if not trees:
        raise LookupError(f"the catalog {args.catalog} holds no tree yet")
    tree_id = args.tree or trees[0]["tree_id"]
    tree = load_tree(cat, tree_id)
    if tree is None:
        raise LookupError(f"no tree {tree_id!r}; trees here: {', '.join(t['tree_id'] for t in trees)}")
    return tree


def tree_counts(cat, tree) -> dict[str, int]:
    """Samples per leaf: of the datasets counted on this tree, else of the runs that used it."""
    from storage.tables.datasets import Scope, members_per_leaf

    counts: dict[str, int] = {}
    for row in cat.query("SELECT dataset FROM datasets WHERE tree_id = ?", [tree.tree_id]):
        for leaf, n in members_per_leaf(cat, Scope(row["dataset"]), tree).items():
            if leaf:
                counts[leaf] = counts.get(leaf, 0) + n
    if counts:
        return counts
    return {r["leaf_id"]: int(r["n"]) for r in cat.query(
        """SELECT s.leaf_id, count(*) AS n FROM samples s JOIN runs r USING (run_id)
           WHERE r.tree_id = ? AND s.status = 'accepted' GROUP BY 1""", [tree.tree_id])}


def cmd_tree(args: argparse.Namespace) -> int:
    from storage.catalog.catalog import Catalog
    from synth.tree import render_tree, tree_to_yaml

    args.catalog = find_catalog(args.catalog)
    if args.action == "import":
        from storage.tables.trees import save_tree
        from synth.tree import tree_from_yaml

        from storage.catalog import faults

        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return fail(faults.describe(exc, args.file, "the tree file") or f"cannot read {args.file}: {exc}", 2)
        tree = tree_from_yaml(text)
        with Catalog(args.catalog) as cat:
            save_tree(cat, tree)
        print(f"imported tree {tree.tree_id}: {len(tree.leaves())} leaves; name it in a recipe with "
              f"`tree: {{file: {args.file}}}`")
        return 0
    with Catalog(args.catalog, read_only=True) as cat:
        try:
            tree = pick_tree(cat, args)
        except LookupError as exc:
            return fail(str(exc), 1)
        counts = tree_counts(cat, tree)
    if args.action == "show":
        print(render_tree(tree, counts))
    else:
        text = tree_to_yaml(tree)
        if args.out:
            from storage.catalog import faults

            try:
                Path(args.out).write_text(text, encoding="utf-8")
            except OSError as exc:
                return fail(faults.describe(exc, args.out, "the tree file") or f"cannot write {args.out}: {exc}", 1)
            print(f"wrote {args.out}", file=sys.stderr)
        else:
            print(text)
    return 0
