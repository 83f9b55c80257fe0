"""`synth catalog backup PATH`: a checked copy of the catalog and its segments."""

from __future__ import annotations

import argparse

from flows.cli.common import CATALOG_HELP, find_catalog


def add_command(sub) -> None:
    catalog = sub.add_parser("catalog", help="catalog upkeep: `synth catalog backup PATH`")
    catalog.add_argument("action", choices=["backup"])
    catalog.add_argument("path", help="backup: where the copy goes (a new file; its segments go beside it)")
    catalog.add_argument("--catalog", help=CATALOG_HELP)
    catalog.set_defaults(func=cmd_catalog)


def cmd_catalog(args: argparse.Namespace) -> int:
    from storage.catalog.backup import backup_catalog

    args.catalog = find_catalog(args.catalog)
    done = backup_catalog(args.catalog, args.path)
    print(f"backup of {args.catalog}: {done['path']} ({done['bytes']} bytes, {done['segments']} segments, "
          f"{done['runs']} runs, {done['samples']} samples; checked)")
    return 0
