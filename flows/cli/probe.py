"""`synth probe`: does this data make a small student better at the task?

    synth probe out/gsm8k --heldout heldout.jsonl                  # an export folder
    synth probe out/tree out/flat --heldout h.jsonl --steps 60 --json
    synth probe --snapshot gsm8k-synth-v2 --heldout h.jsonl --student path/to/hf-model

For each set: a fresh LoRA fine-tune of the student for the same steps, seed and settings,
scored on the held-out questions beside the untrained student (synth/measures/probe.py). Results
go into the catalog (table `probes`, storage/tables/probes.py) and into the card of each probed
export folder. Bad input (a missing held-out file, a column that is not there, a student
folder without config.json): exit 2, one line, nothing written; a missing `probe` extra
or unconverted default student: exit 1, one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from flows.cli.common import fail, find_catalog


def add_command(sub) -> None:
    p = sub.add_parser("probe", help="fine-tune a small student on each set (LoRA) and score it on held-out questions")
    p.add_argument("paths", nargs="*", help="export folders, Parquet/JSONL/CSV files or saved `datasets` folders")
    p.add_argument("--snapshot", action="append", default=[], help="a snapshot (name or id) in the catalog")
    p.add_argument("--heldout", help="held-out questions with reference answers (JSONL, Parquet, CSV, `datasets`)")
    p.add_argument("--heldout-fields", metavar="Q,A",
                   help="the held-out file's question and answer columns (default: the sets' fields, else the "
                        "recipe's seeds.fields mapping)")
    p.add_argument("--student", help="a local transformers model folder (default: the embedded SmolLM2-135M, "
                                     "converted once by scripts/gguf_to_hf.py)")
    p.add_argument("--steps", type=int, default=20, help="fine-tuning steps per set (default 20)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of the LoRA adapters (default 1e-3)")
    p.add_argument("--max-length", type=int, default=256, help="tokens of question + answer (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout-rows", type=int, default=64, help="held-out rows scored for the loss (the first N)")
    p.add_argument("--accuracy-rows", type=int, default=16,
                   help="held-out questions answered greedily for accuracy, where the task has a verifier (0: none)")
    p.add_argument("--max-new-tokens", type=int, default=192)
    p.add_argument("--recipe", help="take the question and answer fields (and seeds.fields) from this recipe")
    p.add_argument("--fields", help="the sets' question and answer fields, e.g. question,answer")
    p.add_argument("--catalog", help="where results are recorded (default as `synth stats`)")
    p.add_argument("--no-card", action="store_true", help="leave the export folders' cards as they are")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_probe)


def _pairs(rows, question: str, answer: str):
    from synth.measures.student import Pair

    return [Pair(str(r.get(question) or ""), str(r.get(answer) or "")) for r in rows
            if r.get(question) and r.get(answer)]


def _heldout(args, fields: list[str], recipe: dict | None):
    """The held-out pairs, read with the sets' fields, else the recipe's seed mapping."""
    from synth.config.seeds import SeedError, read_rows

    try:
        rows = read_rows(Path(args.heldout), "auto", "heldout")
    except SeedError as exc:
        raise ValueError(str(exc).replace("heldout.path: ", "--heldout: ")) from None
    if args.heldout_fields:
        columns = [c.strip() for c in args.heldout_fields.split(",")]
    else:
        mapping = ((recipe or {}).get("seeds") or {}).get("fields") or {}
        columns = [c if rows and c in rows[0] else mapping.get(c, c) for c in fields]
    missing = [c for c in columns if not rows or c not in rows[0]]
    if len(columns) != 2 or missing:
        shown = ", ".join(rows[0]) if rows else "none: the file is empty"
        raise ValueError(f"--heldout: {args.heldout} has no column {(missing or columns)[0]!r} (columns: {shown}); "
                         "name its question and answer columns with --heldout-fields Q,A")
    return _pairs(rows, *columns)


def _sources(args, recipe: dict | None, catalog_path: str) -> list[Any]:
    from storage.reports.evaluation import read_source, snapshot_source
    from storage.tables.probes import card_snapshot

    sources = []
    for p in args.paths:
        source = read_source(Path(p), recipe)
        known = card_snapshot(Path(p)) if Path(p).is_dir() else None
        sources.append((source, {"source": str(p), "snapshot_id": known[0] if known else None,
                                 "run_id": known[1] if known else None, "dir": Path(p) if known else None}))
    if args.snapshot:
        from storage.catalog.catalog import Catalog
        from storage.tables.snapshots import get_snapshot

        with Catalog(catalog_path, read_only=True) as cat:
            for name in args.snapshot:
                snap = get_snapshot(cat, name)
                sources.append((snapshot_source(cat, name), {"source": f"snapshot {snap['name']}",
                                                              "snapshot_id": snap["snapshot_id"],
                                                              "run_id": snap["run_id"], "dir": None}))
    for source, meta in sources:
        if meta["run_id"] is None and source.run_ids:
            meta["run_id"] = Counter(str(r.get("run_id")) for r in source.rows if r.get("run_id")).most_common(1)[0][0]
    return sources


def _settings(args, verifier: str | None):
    from synth.measures.probe import ProbeSettings

    for name in ("steps", "batch_size", "max_length", "heldout_rows"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.accuracy_rows < 0 or args.lr <= 0:
        raise ValueError("--accuracy-rows must be 0 or more and --lr above 0")
    return ProbeSettings(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                         max_length=args.max_length, seed=args.seed, heldout_rows=args.heldout_rows,
                         accuracy_rows=args.accuracy_rows, max_new_tokens=args.max_new_tokens, verifier=verifier)


def cmd_probe(args: argparse.Namespace) -> int:
    from storage.reports.evaluation import EvalError, recipe_from_card

    if not args.paths and not args.snapshot:
        return fail("name what to probe: an export folder (e.g. out/gsm8k), a data file, or --snapshot NAME")
    if not args.heldout:
        return fail("--heldout FILE is required: held-out questions with reference answers (e.g. a JSONL file)")
    if not Path(args.heldout).exists():
        return fail(f"--heldout: no file or folder at {args.heldout}; pass held-out questions with reference "
                     "answers (JSONL, Parquet, CSV or a saved `datasets` folder)")
    recipe = None
    if args.recipe:
        from synth.config.recipe import load_recipe

        recipe = load_recipe(args.recipe).model_dump(mode="json")
    args.catalog = find_catalog(args.catalog)
    try:
        sources = _sources(args, recipe, args.catalog)
        recipe = recipe or next((recipe_from_card(m["dir"] / "README.md") for _, m in sources if m["dir"]), None)
        fields = [f.strip() for f in args.fields.split(",")] if args.fields else sources[0][0].text_fields[:2]
        if len(fields) != 2:
            raise ValueError(f"{sources[0][1]['source']}: needs a question and an answer field; name them with "
                             "--fields question,answer")
        train_sets = {m["source"]: _pairs(s.rows, *fields) for s, m in sources}
        empty = [label for label, pairs in train_sets.items() if not pairs]
        if empty:
            raise ValueError(f"{empty[0]}: no row has both {fields[0]!r} and {fields[1]!r}; name the fields with "
                             "--fields")
        heldout = _heldout(args, fields, recipe)
        if not heldout:
            raise ValueError(f"--heldout: {args.heldout} holds no row with a question and an answer")
        verifier = ((recipe or {}).get("verify") or {}).get("kind")
        if verifier != "math" and all("####" in p.answer for p in heldout[:args.heldout_rows]):
            verifier = "math"  # GSM8K-style references: the math verifier reads `#### N`
        settings = _settings(args, verifier if verifier == "math" else None)
        from synth.measures.student import check_student_dir, default_student, require

        student = check_student_dir(Path(args.student)) if args.student else None
    except (EvalError, ValueError) as exc:
        return fail(str(exc))
    from synth.measures.student import StudentUnavailable

    try:
        require()
        student = student or default_student()
    except StudentUnavailable as exc:  # a broken environment: one line, exit 1
        return fail(str(exc), 1)
    report = _run(student, train_sets, heldout, settings)
    _record(args, report, [m for _, m in sources], heldout)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(render_report(report, args.heldout))
    return 0


def _run(student: Path, train_sets, heldout, settings) -> dict[str, Any]:
    from tqdm import tqdm

    from synth.measures.probe import progress_total, run_probe

    total = progress_total(len(train_sets), len(heldout), settings)
    with tqdm(total=total, desc="probe", unit="step", file=sys.stderr, disable=None) as bar:
        return run_probe(student, train_sets, heldout, settings, progress=bar.update).as_dict()


def _record(args, report: dict[str, Any], sources: list[dict[str, Any]], heldout) -> None:
    from storage.catalog.catalog import Catalog
    from storage.tables.probes import probe_rows, probe_section, probes_of, record_probes, update_card
    from synth.ids import text_hash

    digest = text_hash(json.dumps([[p.question, p.answer] for p in heldout[:report["heldout_rows"]]]), 16)
    rows = probe_rows(report, sources, str(args.heldout), digest)
    with Catalog(args.catalog) as cat:
        record_probes(cat, rows)
        for meta in sources:
            if meta["dir"] is not None and not args.no_card:
                shown = probes_of(cat, snapshot_id=meta["snapshot_id"], source=meta["source"], limit=5)
                card = update_card(meta["dir"], probe_section(shown))
                if card is not None:
                    print(f"card: {card}", file=sys.stderr)
    print(f"recorded {len(rows)} probe(s) in {args.catalog} (table probes)", file=sys.stderr)


def render_report(report: dict[str, Any], heldout: str) -> str:
    s, base = report["settings"], report["baseline"]
    lines = [f"student: {report['student']} ({report['device']}); held-out: {heldout} ({base['rows']} rows, "
             f"{base['tokens']} answer tokens); {s['steps']} steps x {s['batch_size']} rows, lr {s['learning_rate']}, "
             f"LoRA r={s['lora']['rank']}, seed {s['seed']}", "",
             "| set | train rows | held-out loss | vs untrained | accuracy | train loss first -> last | train s |",
             "|---|---:|---:|---:|---:|---:|---:|",
             f"| (untrained) | - | {base['loss']:.4f} | - | {_acc(base)} | - | - |"]
    for r in report["results"]:
        sc = r["score"]
        lines.append(f"| {r['label']} | {r['train_rows']} | {sc['loss']:.4f} | {sc['loss'] - base['loss']:+.4f} | "
                     f"{_acc(sc)} | {r['first_loss']} -> {r['last_loss']} | {r['train_seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def _acc(score: dict[str, Any]) -> str:
    return "-" if score["accuracy"] is None else f"{score['accuracy']:.1%} of {score['accuracy_rows']}"
