"""`synth plan RECIPE`: the projected requests and tokens per stage, strategy and leaf,
before anything runs (from the catalog's observed token counts and rates, where there is one)."""

from __future__ import annotations

import argparse
import json

from flows.cli.common import open_if_exists


def add_command(sub) -> None:
    plan = sub.add_parser("plan", help="projected requests and tokens per stage, strategy and leaf")
    plan.add_argument("recipe")
    plan.add_argument("--catalog", help="catalog to read observed token counts and rates from")
    plan.add_argument("--target", type=int)
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    from flows.preflight import apply_overrides
    from storage.runs.projection import project, render_projection
    from synth.config.recipe import load_recipe

    recipe = apply_overrides(load_recipe(args.recipe), args.catalog, None, args.target)
    catalog = open_if_exists(recipe.catalog)
    tree = None
    try:
        if recipe.tree is not None and recipe.tree.enabled:
            from storage.runs.recipe_tree import find_tree_for, tree_from_file

            if catalog is not None:
                tree = find_tree_for(catalog, recipe)
            elif recipe.tree.file is not None:
                tree = tree_from_file(recipe)
        projection = project(recipe, catalog, tree)
    finally:
        if catalog is not None:
            catalog.close()
    print(json.dumps(projection, indent=2) if args.json else render_projection(projection))
    return 0
