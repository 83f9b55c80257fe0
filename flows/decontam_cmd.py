"""`synth eval EXPORT --decontaminate FILE`: the share of an export that copies a test set.

    synth eval out/gsm8k --decontaminate gsm8k_test.jsonl            # rate, per rule, worst matches
    synth eval out/a --snapshot v2 --decontaminate he.jsonl --json   # `contaminated_rate` per set

With `--decontaminate` the command reports contamination only (the other figures of
`synth eval` come without it). Logic: storage/decontam_report.py. Bad input (a test file
that is not there or has no text column): exit 2, the option named.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_decontaminate_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--decontaminate", action="append", default=[], metavar="FILE",
                        help="report how many rows copy an item of this test set (JSONL, Parquet, CSV, "
                             "`datasets` folder); repeatable")


def cmd_decontaminate(args: argparse.Namespace) -> int:
    from flows.cli import _fail, find_catalog
    from flows.eval_cmd import _catalog
    from storage.decontam_report import contamination, render, test_index
    from storage.evaluation import EvalError, read_source, recipe_from_card, snapshot_source

    if not args.paths and not args.snapshot:
        return _fail("name what to check: an export folder (e.g. out/gsm8k), a data file, or --snapshot NAME")
    recipe = None
    if args.recipe:
        from synth.recipe import load_recipe

        recipe = load_recipe(args.recipe).model_dump(mode="json")
    catalog = _catalog(find_catalog(args.catalog), required=bool(args.snapshot)) if args.snapshot else None
    try:
        sources = [read_source(Path(p), recipe) for p in args.paths]
        sources += [snapshot_source(catalog, name) for name in args.snapshot]
        if args.fields:
            for source in sources:
                source.text_fields = [f.strip() for f in args.fields.split(",") if f.strip()]
        first = Path(args.paths[0]) if args.paths else None
        known = recipe or (recipe_from_card(first / "README.md") if first is not None and first.is_dir() else None)
        question = sources[0].text_fields[0] if sources and sources[0].text_fields else None
        index = test_index([Path(p) for p in args.decontaminate], known, question)
        results = [contamination(source, index) for source in sources]
    except EvalError as exc:
        return _fail(str(exc))
    finally:
        if catalog is not None:
            catalog.close()
    print(json.dumps(results, indent=2, default=str) if args.json else render(results))
    return 0
