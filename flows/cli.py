"""The `synth` command line.

Bad input (a broken recipe, missing seeds, a malformed tree file) exits with code 2
and a message that names the field; it is checked before anything is written. A broken
environment (a damaged or busy catalog, a full disk, a server that does not answer)
exits with code 1 and one line; Ctrl-C / SIGTERM stop a run after its chunk in flight
(130 / 143). flows/errors.py maps every known fault to its line and code; `--debug` or
`SYNTH_DEBUG=1` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2
DEFAULT_CATALOG = "data/catalog.duckdb"


def find_catalog(given: str | None) -> str:
    """--catalog, else $SYNTH_CATALOG, else data/catalog.duckdb, else the one catalog under
    data/ (what `make demo` made); several there: the caller is asked to choose."""
    if given:
        return given
    if os.environ.get("SYNTH_CATALOG"):
        return os.environ["SYNTH_CATALOG"]
    if Path(DEFAULT_CATALOG).exists():
        return DEFAULT_CATALOG
    found = sorted(str(p) for p in Path("data").glob("*.duckdb")) if Path("data").is_dir() else []
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        from storage.catalog import CatalogError

        raise CatalogError(f"several catalogs under data/ ({', '.join(found)}): pass --catalog PATH "
                           "or set SYNTH_CATALOG")
    return DEFAULT_CATALOG


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _load(path: str):
    from synth.recipe import load_recipe

    return load_recipe(path)


def cmd_run(args: argparse.Namespace) -> int:
    from flows.lifecycle import last_stop
    from flows.preflight import preflight

    # bad input: exit 2 before Prefect starts; an unreachable cluster or a busy catalog: exit 1
    recipe = preflight(args.recipe, args.catalog, args.out, args.target, catalog_wait_s=args.wait,
                       ray_address=args.ray_address, model=args.model)
    args.catalog_path = recipe.catalog
    from flows.server import prefect_api_for_run

    prefect_api_for_run()  # an API that does not answer: one line now, not a traceback after retries
    from prefect.exceptions import CancelledRun

    from flows.errors import EXIT_SIGINT, EXIT_SIGTERM, debug_enabled, quiet_prefect_console
    from flows.run import run_recipe

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
    print(json.dumps({k: summary[k] for k in ("run_id", "dataset", "status", "message", "growth", "catalog")},
                     indent=2))
    reused = [c for c in summary.get("reused", []) if not c["this_run"] and c["counted"]]
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
    return 0 if summary["status"] in {"finished", "short"} else 1


def _dataset_views(cat) -> list[dict]:
    """Every dataset: target, total and per leaf on its current tree, per contribution."""
    from storage.datasets import leaf_labels, list_datasets, summary
    from storage.trees import load_tree

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
    from storage.catalog import Catalog

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
        stats["runs"] = cat.query("SELECT run_id, name, dataset, status, strategy, message FROM runs "
                                  "ORDER BY started_at")
        stats["datasets"] = _dataset_views(cat)
        if args.check:
            stats["integrity_problems"] = cat.integrity_problems()
    if args.check and not args.json:
        for problem in stats["integrity_problems"]:
            print(f"integrity: {problem}", file=sys.stderr)
        print("integrity: " + ("PROBLEMS FOUND" if stats["integrity_problems"] else "ok"))
    if args.json:
        print(json.dumps(stats, indent=2, default=str))
    else:
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
    return 1 if stats.get("integrity_problems") else 0


def _open_if_exists(path):
    from storage.catalog import Catalog

    return Catalog(path, read_only=True) if Path(path).exists() else None


def cmd_plan(args: argparse.Namespace) -> int:
    from flows.preflight import apply_overrides
    from storage.projection import project, render_projection

    recipe = apply_overrides(_load(args.recipe), args.catalog, None, args.target)
    catalog = _open_if_exists(recipe.catalog)
    tree = None
    try:
        if recipe.tree is not None and recipe.tree.enabled:
            from storage.recipe_tree import find_tree_for, tree_from_file

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


def cmd_report(args: argparse.Namespace) -> int:
    from storage.catalog import Catalog
    from storage.report import build_report, plot_leaf_distribution, render_markdown

    args.catalog = find_catalog(args.catalog)
    with Catalog(args.catalog, read_only=True) as cat:
        run_id = args.run or cat.latest_run_id()
        if run_id is None:
            return _fail(f"the catalog {args.catalog} holds no run yet", 1)
        report = build_report(cat, run_id)
    if args.plot:
        print(f"plot: {plot_leaf_distribution(report, Path(args.plot))}", file=sys.stderr)
    print(json.dumps(report, indent=2, default=str) if args.json else render_markdown(report))
    return 0


def _pick_tree(cat, args):
    from storage.trees import list_trees, load_tree

    if args.recipe:
        from storage.recipe_tree import find_tree_for

        tree = find_tree_for(cat, _load(args.recipe))
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


def _tree_counts(cat, tree) -> dict[str, int]:
    """Samples per leaf: of the datasets counted on this tree, else of the runs that used it."""
    from storage.datasets import Scope, leaf_counts

    counts: dict[str, int] = {}
    for row in cat.query("SELECT dataset FROM datasets WHERE tree_id = ?", [tree.tree_id]):
        for leaf, n in leaf_counts(cat, Scope(row["dataset"]), tree).items():
            if leaf:
                counts[leaf] = counts.get(leaf, 0) + n
    if counts:
        return counts
    return {r["leaf_id"]: int(r["n"]) for r in cat.query(
        """SELECT s.leaf_id, count(*) AS n FROM samples s JOIN runs r USING (run_id)
           WHERE r.tree_id = ? AND s.status = 'accepted' GROUP BY 1""", [tree.tree_id])}


def cmd_tree(args: argparse.Namespace) -> int:
    from storage.catalog import Catalog
    from synth.tree import render_tree, tree_to_yaml

    args.catalog = find_catalog(args.catalog)
    if args.action == "import":
        from storage.trees import save_tree
        from synth.tree import tree_from_yaml

        tree = tree_from_yaml(Path(args.file).read_text(encoding="utf-8"))
        with Catalog(args.catalog) as cat:
            save_tree(cat, tree)
        print(f"imported tree {tree.tree_id}: {len(tree.leaves())} leaves; name it in a recipe with "
              f"`tree: {{file: {args.file}}}`")
        return 0
    with Catalog(args.catalog, read_only=True) as cat:
        try:
            tree = _pick_tree(cat, args)
        except LookupError as exc:
            return _fail(str(exc), 1)
        counts = _tree_counts(cat, tree)
    if args.action == "show":
        print(render_tree(tree, counts))
    else:
        text = tree_to_yaml(tree)
        if args.out:
            Path(args.out).write_text(text, encoding="utf-8")
            print(f"wrote {args.out}", file=sys.stderr)
        else:
            print(text)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from storage.catalog import Catalog
    from storage.export import export_snapshot, prepare_out_dir
    from storage.publish import tree_text_of_run
    from storage.snapshots import SnapshotError, create_snapshot, get_snapshot

    args.catalog = find_catalog(args.catalog)
    prepare_out_dir(Path(args.out))  # a folder that cannot be written: say so before a snapshot is taken
    with Catalog(args.catalog) as cat:
        existing = None
        if args.snapshot:
            try:
                existing = get_snapshot(cat, args.snapshot)["snapshot_id"]
            except SnapshotError:
                pass  # a new name: take the snapshot below
        if existing is None and args.dataset:
            from storage.versions import latest_version

            version = latest_version(cat, args.dataset)
            if version is None:
                return _fail(f"dataset {args.dataset!r} has no version yet: `synth run` its recipe first", 1)
            existing = version["snapshot_id"]
        if existing is not None:
            snapshot_id = existing
        else:
            run_id = args.run or cat.latest_run_id()
            if run_id is None:
                return _fail(f"the catalog {args.catalog} holds no run yet", 1)
            snapshot_id = create_snapshot(cat, run_id, args.snapshot, args.test_fraction, args.seed)
        snapshot = get_snapshot(cat, snapshot_id)
        tree_text = tree_text_of_run(cat, snapshot["run_id"])
        result = export_snapshot(cat, snapshot_id, Path(args.out), formats=args.format or ("parquet", "jsonl"),
                                 lineage=not args.no_lineage, tree_text=tree_text)
        print(f"snapshot {snapshot['name']} ({snapshot_id}): {result.n_rows} rows -> {result.out_dir}")
        if args.push:
            from storage.hub import push_to_hub

            # the token comes from HF_TOKEN (or a Prefect Secret block in the flows); it is never printed
            commit = push_to_hub(cat, snapshot_id, args.push, private=args.private, export_dir=Path(args.out),
                                 tree_text=tree_text)
            print(f"pushed to {args.push} at commit {commit}")
    return 0


def cmd_catalog(args: argparse.Namespace) -> int:
    from storage.backup import backup_catalog

    args.catalog = find_catalog(args.catalog)
    done = backup_catalog(args.catalog, args.path)
    print(f"backup of {args.catalog}: {done['path']} ({done['bytes']} bytes, {done['segments']} segments, "
          f"{done['runs']} runs, {done['samples']} samples; checked)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synth", description="The synthetic data factory.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (anywhere on the line; or SYNTH_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

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

    plan = sub.add_parser("plan", help="projected requests and tokens per stage, strategy and leaf")
    plan.add_argument("recipe")
    plan.add_argument("--catalog", help="catalog to read observed token counts and rates from")
    plan.add_argument("--target", type=int)
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=cmd_plan)

    report = sub.add_parser("report", help="the dataset report of a run (markdown or JSON), with a plot")
    report.add_argument("--catalog", help="catalog (default: data/catalog.duckdb, or the one catalog under data/)")
    report.add_argument("--run", help="run id (default: the latest run)")
    report.add_argument("--plot", help="write the leaf-distribution PNG here")
    report.add_argument("--json", action="store_true")
    report.set_defaults(func=cmd_report)

    tree = sub.add_parser("tree", help="show, export or import a TreeSynth tree")
    tree.add_argument("action", choices=["show", "export", "import"])
    tree.add_argument("file", nargs="?", help="import: the tree YAML to import")
    tree.add_argument("--catalog", help="catalog (default: data/catalog.duckdb, or the one catalog under data/)")
    tree.add_argument("--tree", help="tree id (default: the newest tree)")
    tree.add_argument("--recipe", help="the tree this recipe uses")
    tree.add_argument("--out", help="export: write the YAML here (default: print it)")
    tree.set_defaults(func=cmd_tree)

    export = sub.add_parser("export", help="snapshot a run and export it (Parquet, JSONL, save_to_disk, the Hub)")
    export.add_argument("--catalog", help="catalog (default: data/catalog.duckdb, or the one catalog under data/)")
    export.add_argument("--run", help="run id (default: the latest run)")
    export.add_argument("--snapshot", help="snapshot name: reuse it, or give a new snapshot this name")
    export.add_argument("--dataset", help="export this dataset's latest version (v1, v2, ...)")
    export.add_argument("--test-fraction", type=float, default=0.0)
    export.add_argument("--seed", type=int, default=0, help="seed of the stratified split")
    export.add_argument("--out", default="out/export")
    export.add_argument("--format", action="append", choices=["parquet", "jsonl", "save_to_disk"])
    export.add_argument("--no-lineage", action="store_true", help="leave out the lineage columns")
    export.add_argument("--push", metavar="OWNER/NAME", help="also upload to this Hub dataset repo (token: HF_TOKEN)")
    export.add_argument("--private", action="store_true")
    export.set_defaults(func=cmd_export)

    stats = sub.add_parser("stats", help="counts from the catalog")
    stats.add_argument("--catalog", help="catalog (default: data/catalog.duckdb, or the one catalog under data/)")
    stats.add_argument("--run", help="one run id (default: every run in the catalog)")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.add_argument("--check", action="store_true",
                       help="also run the integrity checks (exit 1 if any fails): after a crash or a kill")
    stats.set_defaults(func=cmd_stats)

    catalog = sub.add_parser("catalog", help="catalog upkeep: `synth catalog backup PATH`")
    catalog.add_argument("action", choices=["backup"])
    catalog.add_argument("path", help="backup: where the copy goes (a new file; its segments go beside it)")
    catalog.add_argument("--catalog", help="catalog (default: data/catalog.duckdb, or the one catalog under data/)")
    catalog.set_defaults(func=cmd_catalog)

    from flows.server import add_server_commands

    add_server_commands(sub)  # synth server [start|stop|status], synth serve
    from flows.eval_cmd import add_eval_command

    add_eval_command(sub)  # synth eval
    from flows.probe_cmd import add_probe_command

    add_probe_command(sub)  # synth probe
    return parser


# Set before prefect reads its settings: no network for telemetry here, and a busy
# 2-core machine can take longer than Prefect's default 20 s to start its ephemeral API.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    # heartbeats let the server mark a killed run Crashed (flows/server.py adds the automation)
    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
}


def main(argv: list[str] | None = None) -> int:
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    from flows.errors import debug_enabled, explain

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted after the command too: `synth run r.yaml --debug`
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    try:
        return args.func(args)
    except (SystemExit, GeneratorExit):
        raise
    except BrokenPipeError:  # `synth stats | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except BaseException as exc:
        explained = explain(exc, catalog=getattr(args, "catalog_path", None) or getattr(args, "catalog", None),
                            out=getattr(args, "out", None))
        if explained is None:
            raise  # not a known fault: a bug, whose traceback is what a report needs
        code, message = explained
        if debug_enabled(args.debug):
            import traceback

            traceback.print_exception(exc)
        return _fail(message, code)


if __name__ == "__main__":
    sys.exit(main())
