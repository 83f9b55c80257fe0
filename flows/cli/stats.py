"""`synth stats`: counts from the catalog, per run and per dataset; `--check` adds the
integrity checks (exit 1 when one fails: after a crash or a kill)."""

from __future__ import annotations

import argparse
import json
import sys

from flows.cli.common import CATALOG_HELP, find_catalog


def add_command(sub) -> None:
    stats = sub.add_parser("stats", help="counts from the catalog")
    stats.add_argument("--catalog", help=CATALOG_HELP)
    stats.add_argument("--run", help="one run id (default: every run in the catalog)")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.add_argument("--check", action="store_true",
                       help="also run the integrity checks (exit 1 if any fails): after a crash or a kill")
    stats.set_defaults(func=cmd_stats)


def dataset_views(cat) -> list[dict]:
    """Every dataset: target, total and per leaf on its current tree, per contribution."""
    from storage.tables.datasets import leaf_labels, list_datasets, summary
    from storage.tables.trees import load_tree

    views = []
    for row in list_datasets(cat):
        tree = load_tree(cat, row["tree_id"]) if row["tree_id"] else None
        state = summary(cat, row["dataset"], tree)
        labels = leaf_labels(tree)
        view = state.as_dict()
        view["per_leaf"] = {labels.get(leaf, leaf or "(all)"): n for leaf, n in sorted(
            state.per_leaf.items(), key=lambda kv: labels.get(kv[0], kv[0] or ""))}
        views.append(view)
    return views


def cmd_stats(args: argparse.Namespace) -> int:
    from storage.catalog.catalog import Catalog

    args.catalog = find_catalog(args.catalog)
    with Catalog(args.catalog, read_only=True, allow_missing_segments=args.check) as cat:
        if args.check:  # damaged blocks first: every other check reads the same tables
            physical = cat.physical_problems()
            if physical:
                for problem in physical:
                    print(f"integrity: {problem}", file=sys.stderr)
                print(f"integrity: PROBLEMS FOUND: the catalog {args.catalog} is damaged; see README > Reliability "
                      "to recover it")
                return 1
        stats = cat.stats(args.run)
        stats["runs"] = cat.runs(("run_id", "name", "dataset", "status", "strategy", "message"))
        stats["datasets"] = dataset_views(cat)
        if args.check:
            stats["integrity_problems"] = cat.integrity_problems()
    if args.check and not args.json:
        for problem in stats["integrity_problems"]:
            print(f"integrity: {problem}", file=sys.stderr)
        print("integrity: " + ("PROBLEMS FOUND" if stats["integrity_problems"] else "ok"))
    if args.json:
        print(json.dumps(stats, indent=2, default=str))
    else:
        print_stats(stats)
    return 1 if stats.get("integrity_problems") else 0


def print_stats(stats: dict) -> None:
    s = stats["samples"]
    print(f"samples: {s['accepted']} accepted, {s['rejected']} rejected, {s['duplicate']} duplicate, "
          f"{s['filtered']} filtered; requests: {stats['requests']} "
          f"({stats['tokens']['prompt']} prompt + {stats['tokens']['completion']} completion tokens)")
    for reason, n in stats["reject_reasons"].items():
        print(f"  {n:6d}  {reason}")
    if stats["failed_chunks"]:
        print(f"failed chunks: {stats['failed_chunks']} (given up on by a Ray cluster; table failed_chunks; "
              "rerun the recipe to try them again)")
    for view in stats["datasets"]:
        print(f"\ndataset {view['dataset']}: {view['total']} samples (target {view['target']})")
        for label, n in view["per_leaf"].items():
            print(f"  {n:6d}  {label}")
        for c in view["contributions"]:
            print(f"  run {c['run_id']}  {c['model']}  {c['strategy'] or '-'}  {c['status']}: "
                  f"{c['accepted']} accepted")
