"""The `synth` command line.

Bad input (a broken recipe, missing seeds, a malformed tree file) exits with code 2
and a message that names the field; it is checked before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2
DEFAULT_CATALOG = "data/catalog.duckdb"


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _load(path: str):
    from synth.recipe import load_recipe

    return load_recipe(path)


def cmd_run(args: argparse.Namespace) -> int:
    from flows.run import apply_overrides
    from synth.seeds import load_seeds

    recipe = apply_overrides(_load(args.recipe), args.catalog, args.out, args.target)
    load_seeds(recipe)  # unreadable seeds are bad input: refuse before the catalog is created
    from flows.run import run_recipe

    summary = run_recipe(args.recipe, catalog=args.catalog, out=args.out, target=args.target,
                         export=not args.no_export)
    print(json.dumps({k: summary[k] for k in ("run_id", "status", "message", "catalog")}, indent=2))
    exported = summary.get("export") or {}
    for kind, path in exported.get("paths", {}).items():
        print(f"{kind}: {path}")
    return 0 if summary["status"] in {"finished", "short"} else 1


def cmd_stats(args: argparse.Namespace) -> int:
    from storage.catalog import Catalog

    with Catalog(args.catalog, read_only=True) as cat:
        stats = cat.stats(args.run)
        stats["runs"] = cat.query("SELECT run_id, name, status, strategy, message FROM runs ORDER BY started_at")
    if args.json:
        print(json.dumps(stats, indent=2, default=str))
    else:
        s = stats["samples"]
        print(f"samples: {s['accepted']} accepted, {s['rejected']} rejected, {s['duplicate']} duplicate, "
              f"{s['filtered']} filtered; requests: {stats['requests']} "
              f"({stats['tokens']['prompt']} prompt + {stats['tokens']['completion']} completion tokens)")
        for reason, n in stats["reject_reasons"].items():
            print(f"  {n:6d}  {reason}")
    return 0


def _open_if_exists(path):
    from storage.catalog import Catalog

    return Catalog(path, read_only=True) if Path(path).exists() else None


def cmd_plan(args: argparse.Namespace) -> int:
    from flows.run import apply_overrides
    from storage.projection import project, render_projection

    recipe = apply_overrides(_load(args.recipe), args.catalog, None, args.target)
    catalog = _open_if_exists(recipe.catalog)
    tree = None
    try:
        if catalog is not None and recipe.tree is not None and recipe.tree.enabled:
            from storage.trees import find_tree_for

            tree = find_tree_for(catalog, recipe)
        projection = project(recipe, catalog, tree)
    finally:
        if catalog is not None:
            catalog.close()
    print(json.dumps(projection, indent=2) if args.json else render_projection(projection))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from storage.catalog import Catalog
    from storage.report import build_report, plot_leaf_distribution, render_markdown

    with Catalog(args.catalog, read_only=True) as cat:
        run_id = args.run or cat.latest_run_id()
        if run_id is None:
            return _fail(f"the catalog {args.catalog} holds no run yet", 1)
        report = build_report(cat, run_id)
    if args.plot:
        print(f"plot: {plot_leaf_distribution(report, Path(args.plot))}", file=sys.stderr)
    print(json.dumps(report, indent=2, default=str) if args.json else render_markdown(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synth", description="The synthetic data factory.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a recipe: tree, generation, curation, export")
    run.add_argument("recipe", help="path of the recipe YAML")
    run.add_argument("--catalog", help="catalog DuckDB file (default: the recipe's `catalog`)")
    run.add_argument("--out", help="export folder (default: the recipe's `export.dir`)")
    run.add_argument("--target", type=int, help="accepted samples wanted (overrides generation.target)")
    run.add_argument("--no-export", action="store_true", help="stop after generation")
    run.set_defaults(func=cmd_run)

    plan = sub.add_parser("plan", help="projected requests and tokens per stage, strategy and leaf")
    plan.add_argument("recipe")
    plan.add_argument("--catalog", help="catalog to read observed token counts and rates from")
    plan.add_argument("--target", type=int)
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=cmd_plan)

    report = sub.add_parser("report", help="the dataset report of a run (markdown or JSON), with a plot")
    report.add_argument("--catalog", default=DEFAULT_CATALOG)
    report.add_argument("--run", help="run id (default: the latest run)")
    report.add_argument("--plot", help="write the leaf-distribution PNG here")
    report.add_argument("--json", action="store_true")
    report.set_defaults(func=cmd_report)

    stats = sub.add_parser("stats", help="counts from the catalog")
    stats.add_argument("--catalog", default=DEFAULT_CATALOG)
    stats.add_argument("--run", help="one run id (default: every run in the catalog)")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(func=cmd_stats)
    return parser


# Set before prefect reads its settings: no network for telemetry here, and a busy
# 2-core machine can take longer than Prefect's default 20 s to start its ephemeral API.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}


def main(argv: list[str] | None = None) -> int:
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    from storage.catalog import CatalogBusy, CatalogError
    from synth.prompts import PromptError
    from synth.recipe import RecipeError
    from synth.seeds import SeedError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (RecipeError, SeedError, PromptError) as exc:
        return _fail(str(exc))
    except (CatalogBusy, CatalogError) as exc:
        return _fail(str(exc), 1)


if __name__ == "__main__":
    sys.exit(main())
