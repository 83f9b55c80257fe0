"""`synth run RECIPE`: tree, generation, curation and export, in a Prefect flow.

Bad input exits 2 before Prefect starts (the pre-flight); a stop by Ctrl-C / SIGTERM ends
the run after its chunk in flight (130 / 143).
"""

from __future__ import annotations

import argparse
import json
import sys


def add_command(sub) -> None:
    run = sub.add_parser("run", help="run a recipe: tree, generation, curation, export")
    run.add_argument("recipe", help="path of the recipe YAML")
    run.add_argument("--catalog", help="catalog DuckDB file (default: the recipe's `catalog`)")
    run.add_argument("--out", help="export folder (default: the recipe's `export.dir`)")
    run.add_argument("--target", type=int, help="accepted samples wanted (overrides generation.target)")
    run.add_argument("--grow-by", type=int, metavar="N",
                     help="grow the dataset by N accepted samples (its target so far + N, thinnest leaves first)")
    run.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                     help="if another run holds the catalog, wait this long for it (default: fail at once)")
    run.add_argument("--model", help="backend.model: e.g. embedded, embedded-1.5b (make model-1.5b), a GGUF path")
    run.add_argument("--no-export", action="store_true", help="stop after generation")
    run.add_argument("--ray-address", metavar="HOST:PORT",
                     help="run the model in replicas on this Ray cluster (cluster.kind: ray; `local`: a Ray instance "
                          "on this machine). A recipe with `cluster.kind: ray` and no address uses $RAY_ADDRESS")
    run.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from flows.preflight import check_run, drop_handed_over, hand_over

    # bad input: exit 2 before Prefect starts; an unreachable cluster or a busy catalog: exit 1
    checks = (args.recipe, args.catalog, args.out, args.target, args.wait, args.ray_address, args.model)
    checked = check_run(*checks)
    args.catalog_path = checked.recipe.catalog
    hand_over(checks, checked)  # the flow runs in this process: it takes the check over, not repeats it
    try:
        return run_checked(args)
    finally:
        drop_handed_over()


def run_checked(args: argparse.Namespace) -> int:
    from flows.server import prefect_api_for_run

    prefect_api_for_run()  # an API that does not answer: one line now, not a traceback after retries
    from prefect.exceptions import CancelledRun

    from flows.errors import EXIT_SIGINT, EXIT_SIGTERM, debug_enabled, quiet_prefect_console
    from flows.run import run_recipe
    from flows.stopping import last_stop

    quiet = not debug_enabled(args.debug)
    if quiet:
        quiet_prefect_console()
    try:
        summary = run_recipe(args.recipe, catalog=args.catalog, out=args.out, target=args.target,
                             export=not args.no_export, grow_by=args.grow_by, catalog_wait_s=args.wait,
                             ray_address=args.ray_address, model=args.model)
    except CancelledRun as exc:
        import signal

        print(f"stopped: {exc}", file=sys.stderr)
        return EXIT_SIGTERM if last_stop.get("signal") == signal.SIGTERM else EXIT_SIGINT
    finally:
        if quiet:
            quiet_prefect_console(after_flow=True)  # shutdown chatter would bury the command's last line
    print_summary(summary)
    return 0 if summary["status"] in {"finished", "short"} else 1


def print_summary(summary: dict) -> None:
    print(json.dumps({k: summary[k] for k in ("run_id", "dataset", "status", "message", "growth", "catalog")},
                     indent=2))
    if summary.get("decontamination"):  # seeds that copy a test item (flows/preflight.py)
        print(summary["decontamination"])
    reused = [c for c in summary.get("contributions", []) if not c["this_run"] and c["counted"]]
    if reused:
        print("reused: " + ", ".join(f"{c['counted']} from {c['run_id']} ({c['model']}, {c['strategy']})"
                                     for c in reused))
    placed = summary.get("placed") or {}
    if placed.get("placed") or placed.get("unassigned"):
        print(f"placed on the tree: {placed['placed']} earlier samples ({placed['unassigned']} nowhere): "
              + ", ".join(f"{m['samples']} {m['from']} -> {m['to']}" for m in placed["moves"]))
    version = (summary.get("export") or {}).get("version")
    if version:
        change = f"new: +{version['added']} -{version['removed']}" if version["new"] else "unchanged"
        print(f"version: {version['name']} ({change}, {version['rows']} rows)")
    exported = summary.get("export") or {}
    for kind, path in exported.get("paths", {}).items():
        print(f"{kind}: {path}")
    if summary.get("export_skipped"):  # a run that accepted nothing: no files, and why
        print(f"export: {summary['export_skipped']}")
