"""`synth export`: snapshot a run (or reuse a snapshot or a dataset's version) and write it
as Parquet, JSONL or a `datasets` folder, and upload it to the Hub with `--push`."""

from __future__ import annotations

import argparse
from pathlib import Path

from flows.cli.common import CATALOG_HELP, fail, find_catalog


def add_command(sub) -> None:
    export = sub.add_parser("export", help="snapshot a run and export it (Parquet, JSONL, save_to_disk, the Hub)")
    export.add_argument("--catalog", help=CATALOG_HELP)
    export.add_argument("--run", help="run id (default: the latest run)")
    export.add_argument("--snapshot", help="snapshot name: reuse it, or give a new snapshot this name")
    export.add_argument("--dataset", help="export this dataset's latest version (v1, v2, ...)")
    export.add_argument("--test-fraction", type=float, default=0.0)
    export.add_argument("--seed", type=int, default=0, help="seed of the stratified split")
    export.add_argument("--out", default="out/export")
    export.add_argument("--format", action="append", type=exporter_name,
                        help="an exporter of storage/publish/exporters.py (parquet, jsonl, save_to_disk, ...); "
                             "repeat it for several (default: parquet and jsonl)")
    export.add_argument("--no-lineage", action="store_true", help="leave out the lineage columns")
    export.add_argument("--push", metavar="OWNER/NAME", help="also upload to this Hub dataset repo (token: HF_TOKEN)")
    export.add_argument("--private", action="store_true")
    export.set_defaults(func=cmd_export)


def exporter_name(value: str) -> str:
    """--format's check, against the exporters' registry (imported only when --format is given)."""
    from storage.publish.exporters import EXPORTERS

    if value not in EXPORTERS:
        raise argparse.ArgumentTypeError(f"no exporter {value!r}: write one of {', '.join(EXPORTERS)}")
    return value


def cmd_export(args: argparse.Namespace) -> int:
    from storage.catalog.catalog import Catalog
    from storage.publish.export import prepare_out_dir
    from storage.publish.publish import publish_snapshot, tree_text_of_run
    from storage.tables.snapshots import SnapshotError, create_snapshot, get_snapshot

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
            from storage.tables.versions import latest_version

            version = latest_version(cat, args.dataset)
            if version is None:
                return fail(f"dataset {args.dataset!r} has no version yet: `synth run` its recipe first", 1)
            existing = version["snapshot_id"]
        if existing is not None:
            snapshot_id = existing
        else:
            run_id = args.run or cat.latest_run_id()
            if run_id is None:
                return fail(f"the catalog {args.catalog} holds no run yet", 1)
            snapshot_id = create_snapshot(cat, run_id, args.snapshot, args.test_fraction, args.seed)
        snapshot = get_snapshot(cat, snapshot_id)
        tree_text = tree_text_of_run(cat, snapshot["run_id"])
        # the Hub token comes from HF_TOKEN (or a Prefect Secret block in the flows); it is never printed
        result, pushed = publish_snapshot(cat, snapshot_id, Path(args.out), args.format or ("parquet", "jsonl"),
                                          lineage=not args.no_lineage, tree_text=tree_text, hub_repo=args.push,
                                          private=args.private)
    print(f"snapshot {snapshot['name']} ({snapshot_id}): {result.n_rows} rows -> {result.out_dir}")
    if pushed:
        print(f"pushed to {pushed['repo']} at commit {pushed['commit']}")
    return 0
