"""`synth eval`: how diverse and how clean exported data is, side by side.

    synth eval out/gsm8k                              # an export folder (its card gives the recipe)
    synth eval out/a out/b --reference train.jsonl    # several sets and a reference dataset
    synth eval --snapshot gsm8k-synth-v2 --json       # a snapshot in the catalog

Figures (synth/measures/figures.py): rows, distinct-1/2/3, gzip ratio, repeated 8-gram share, exact
and near-duplicate rates, mean nearest-neighbour cosine and Vendi score (embeddings, when
the pinned model is installed; otherwise said), leaves and their normalized entropy, words
per field, format-constraint pass rate, verifier pass rate (from the catalog that made the
rows, when it is there). Bad input: exit 2 with the path named; nothing is written.
"""

from __future__ import annotations

import argparse
import sys
import json
from pathlib import Path

from flows.cli.common import fail, find_catalog


def add_command(sub) -> None:
    ev = sub.add_parser("eval", help="diversity and quality figures of exports, snapshots and a reference dataset")
    ev.add_argument("paths", nargs="*", help="export folders, Parquet/JSONL/CSV files or saved `datasets` folders")
    ev.add_argument("--snapshot", action="append", default=[], help="a snapshot (name or id) in the catalog")
    ev.add_argument("--catalog", help="the catalog (verifier pass rates, snapshots); default as `synth stats`")
    ev.add_argument("--reference", help="a reference dataset to compare with (Parquet, JSONL, CSV, `datasets` folder)")
    ev.add_argument("--recipe", help="take the text fields and format constraints from this recipe")
    ev.add_argument("--fields", help="comma-separated text fields to evaluate (default: question and answer)")
    ev.add_argument("--no-embed", action="store_true", help="lexical figures only")
    ev.add_argument("--embed-sample", type=int, default=1000, metavar="N",
                    help="embed at most N rows per set, a fixed sample (default 1000; ~18 rows/s on 2 cores)")
    ev.add_argument("--proxy", nargs="?", const="embedded", metavar="MODEL",
                    help="add G-Vendi, the Vendi score of a student's per-sample gradients (docs/probe.md): the "
                         "embedded SmolLM2-135M, or a local transformers folder; needs the `probe` extra")
    ev.add_argument("--proxy-rows", type=int, default=200, metavar="N",
                    help="rows per set for G-Vendi, a fixed sample (default 200; one backward pass a row)")
    ev.add_argument("--json", action="store_true")
    add_decontaminate_option(ev)
    ev.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from storage.reports.evaluation import (EvalError, embedder_or_reason, evaluate_source, read_source, render_table,
                                    snapshot_source)

    if args.decontaminate:  # contamination only (below)
        return cmd_decontaminate(args)
    if not args.paths and not args.snapshot:
        return fail("name what to evaluate: an export folder (e.g. out/gsm8k), a data file, or --snapshot NAME")
    if args.embed_sample < 2:
        return fail("--embed-sample must be at least 2")
    if args.proxy_rows < 2:
        return fail("--proxy-rows must be at least 2")
    recipe = None
    if args.recipe:
        from synth.config.recipe import load_recipe

        recipe = load_recipe(args.recipe).model_dump(mode="json")
    fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields else None
    try:
        sources = [read_source(Path(p), recipe) for p in args.paths]
        reference = read_source(Path(args.reference), None, f"reference {Path(args.reference).name}") \
            if args.reference else None
    except EvalError as exc:
        return fail(str(exc))
    catalog = _catalog(find_catalog(args.catalog), required=bool(args.snapshot))
    try:
        sources += [snapshot_source(catalog, name) for name in args.snapshot]
        embed, why = embedder_or_reason(not args.no_embed)
        results = [evaluate_source(s, catalog, embed, why, args.embed_sample, fields) for s in sources]
        if reference is not None:
            columns = reference.rows[0] if reference.rows else {}
            same = bool(sources) and all(f in columns for f in sources[0].text_fields)
            ref_fields = fields or (sources[0].text_fields if same else None)
            if sources and not reference.specs:  # the same constraints, to compare pass rates
                reference.specs = {n: spec for n, spec in sources[0].specs.items()
                                   if reference.rows and n in reference.rows[0]}
            results.append(evaluate_source(reference, None, embed, why, args.embed_sample, ref_fields))
    except EvalError as exc:
        return fail(str(exc))
    finally:
        if catalog is not None:
            catalog.close()
    if args.proxy:
        from synth.measures.student import StudentUnavailable

        try:
            _add_gradient_diversity(args, results, sources + ([reference] if reference is not None else []), fields)
        except ValueError as exc:
            return fail(str(exc))
        except StudentUnavailable as exc:  # the `probe` extra or the converted student is missing
            return fail(str(exc), 1)
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        print(render_table(results, ratio_to=len(results) - 1 if reference is not None and len(results) == 2 else None))
    return 0


def _add_gradient_diversity(args, results, sources, fields) -> None:
    """G-Vendi of every set (synth/measures/gvendi.py), into its results."""
    from tqdm import tqdm

    from synth.measures.gvendi import GradientSketcher, GVendiSettings, g_vendi
    from synth.measures.student import Pair, check_student_dir, default_student, require

    student = None if args.proxy == "embedded" else check_student_dir(Path(args.proxy))
    require()
    sketcher = GradientSketcher(student or default_student(), GVendiSettings(max_rows=args.proxy_rows))
    for result, source in zip(results, sources):
        question, answer = (fields or source.text_fields)[:2] if len(fields or source.text_fields) > 1 else (None, None)
        if question is None:
            result["g_vendi"] = None
            result["left_out"]["g_vendi"] = "needs a question and an answer field (--fields question,answer)"
            continue
        pairs = [Pair(str(r.get(question) or ""), str(r.get(answer) or "")) for r in source.rows if r.get(question)]
        with tqdm(total=min(len(pairs), args.proxy_rows), desc=f"G-Vendi {source.label}", unit="row",
                  file=sys.stderr, disable=None) as bar:
            result.update(g_vendi(sketcher, pairs, bar.update))


def _catalog(path: str, required: bool):
    from storage.catalog.catalog import Catalog, CatalogError

    if not Path(path).exists():
        if required:
            raise CatalogError(f"no catalog at {path}: pass --catalog PATH to read snapshots")
        return None
    return Catalog(path, read_only=True)


# -- `--decontaminate FILE`: the share of an export that copies a test set --------------------
# With it the command reports contamination only (rate, per rule, worst matches; `contaminated_rate`
# in the JSON). Logic: storage/reports/decontam_report.py. A test file that is not there: exit 2.

def add_decontaminate_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--decontaminate", action="append", default=[], metavar="FILE",
                        help="report how many rows copy an item of this test set (JSONL, Parquet, CSV, "
                             "`datasets` folder); repeatable")


def cmd_decontaminate(args: argparse.Namespace) -> int:
    from storage.reports.decontam_report import contamination, render, test_index
    from storage.reports.evaluation import EvalError, read_source, recipe_from_card, snapshot_source

    if not args.paths and not args.snapshot:
        return fail("name what to check: an export folder (e.g. out/gsm8k), a data file, or --snapshot NAME")
    recipe = None
    if args.recipe:
        from synth.config.recipe import load_recipe

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
        return fail(str(exc))
    finally:
        if catalog is not None:
            catalog.close()
    print(json.dumps(results, indent=2, default=str) if args.json else render(results))
    return 0
