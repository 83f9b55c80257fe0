"""`synth report`: the dataset report of a run, as markdown or JSON, with the leaf plot."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flows.cli.common import CATALOG_HELP, fail, find_catalog


def add_command(sub) -> None:
    report = sub.add_parser("report", help="the dataset report of a run (markdown or JSON), with a plot")
    report.add_argument("--catalog", help=CATALOG_HELP)
    report.add_argument("--run", help="run id (default: the latest run)")
    report.add_argument("--plot", help="write the leaf-distribution PNG here")
    report.add_argument("--json", action="store_true")
    report.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from storage.catalog.catalog import Catalog
    from storage.reports.report import build_report, plot_report_leaves, render_markdown

    args.catalog = find_catalog(args.catalog)
    with Catalog(args.catalog, read_only=True) as cat:
        run_id = args.run or cat.latest_run_id()
        if run_id is None:
            return fail(f"the catalog {args.catalog} holds no run yet", 1)
        report = build_report(cat, run_id)
    if args.plot:
        print(f"plot: {plot_report_leaves(report, Path(args.plot))}", file=sys.stderr)
    print(json.dumps(report, indent=2, default=str) if args.json else render_markdown(report))
    return 0
