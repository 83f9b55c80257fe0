"""The junk gates' false positives on real data, and what they catch in a catalog.

False positives: every gate of synth/curation/filters.py (`scaffold_echo`, `leading_punctuation`,
`degenerate_ending`, and the older filters beside them) run on GSM8K train (7,473 rows) and
HumanEval (164 problems) with the shipped recipes' field specs, prompts and seeds: the
share of real rows each would refuse (target: at most 0.5 % for the new gates).

Catch: with `--catalog PATH`, every candidate a run parsed (accepted and filtered rows) is
run through the gates again, and the table says how many each gate refuses, so a person can
read the rows it let through.

    python benchmarks/gates.py
    python benchmarks/gates.py --catalog data/catalog.duckdb --show 5
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synth.execution.pipeline import prompt_markers, prompt_scaffold  # noqa: E402
from synth.prompting.render import Renderer  # noqa: E402
from synth.curation.filters import FILTERS, FilterContext, prose_fields  # noqa: E402
from synth.config.recipe import load_recipe  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
NEW_GATES = ("scaffold_echo", "leading_punctuation", "degenerate_ending", "arithmetic")


def context(recipe_name: str, seeds: list[dict]) -> FilterContext:
    recipe = load_recipe(ROOT / "recipes" / recipe_name)
    return FilterContext(question_field=recipe.task.question, formats=tuple(recipe.task.output_fields.items()),
                         prompt_markers=prompt_markers(Renderer()),
                         scaffold_labels=prompt_scaffold(Renderer(), recipe.task),
                         prose_fields=prose_fields(seeds, recipe.task.output_fields),
                         task_markers=(recipe.task.description,))


def refusals(rows: list[dict], ctx: FilterContext) -> Counter:
    counts: Counter = Counter()
    for row in rows:
        for name, gate in FILTERS.items():
            if gate().check(row, ctx) is not None:
                counts[name] += 1
    return counts


def false_positives() -> None:
    gsm = [json.loads(line) for line in (DATA / "gsm8k" / "train.jsonl").open()]
    he = [json.loads(line) for line in gzip.open(DATA / "humaneval" / "HumanEval.jsonl.gz", "rt")]
    he_rows = [{k: r[k] for k in ("prompt", "test", "entry_point", "canonical_solution")} for r in he]
    sets = [("GSM8K train", [{"question": r["question"], "answer": r["answer"]} for r in gsm],
             context("gsm8k.yaml", gsm[:100])),
            ("HumanEval", he_rows, context("humaneval.yaml", he[:40]))]
    print("| gate | " + " | ".join(f"{name} ({len(rows)})" for name, rows, _ in sets) + " |")
    print("|---|" + "---:|" * len(sets))
    counted = [(rows, refusals(rows, ctx)) for _, rows, ctx in sets]
    for gate in FILTERS:
        mark = " (new)" if gate in NEW_GATES else ""
        print(f"| {gate}{mark} | " + " | ".join(f"{c[gate]} ({c[gate] / len(rows):.2%})" for rows, c in counted) + " |")


def catch(catalog: str, show: int) -> None:
    from storage.catalog.catalog import Catalog

    with Catalog(catalog, read_only=True) as cat:
        run = cat.query("SELECT recipe FROM runs WHERE kind = 'generate' ORDER BY started_at DESC LIMIT 1")[0]
        rows = cat.query("SELECT status, reason, fields FROM samples_text WHERE status IN ('accepted', 'filtered', "
                         "'duplicate') AND fields IS NOT NULL")
    recipe = json.loads(run["recipe"]) if isinstance(run["recipe"], str) else run["recipe"]
    fields = [json.loads(r["fields"]) for r in rows]
    from synth.task.formats import OutputField

    specs = {k: OutputField(**v) for k, v in recipe["task"]["output_fields"].items()}
    question = recipe["task"].get("question_field") or next(iter(specs))
    ctx = FilterContext(question_field=question, formats=tuple(specs.items()),
                        prompt_markers=prompt_markers(Renderer()),  # as the run's filters saw them
                        scaffold_labels=prompt_scaffold(Renderer(), _task(recipe)),
                        prose_fields=tuple(specs),  # the seeds of the demo's fields are prose
                        task_markers=(recipe["task"]["description"],))
    print(f"{len(fields)} parsed candidates in {catalog} ({Counter(r['status'] for r in rows)})")
    first: Counter = Counter()
    gates = {name: gate() for name, gate in FILTERS.items()}
    for f in fields:
        hit = next((name for name, gate in gates.items() if gate.check(f, ctx) is not None), "passes")
        first[hit] += 1
    for name, n in first.most_common():
        print(f"- {name}: {n}")
    for f in [f for f in fields if all(g.check(f, ctx) is None for g in gates.values())][:show]:
        print("---\n" + "\n".join(f"{k}: {v}" for k, v in f.items()))


def _task(recipe: dict):
    from synth.task.task import Task

    return Task(**recipe["task"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog")
    parser.add_argument("--show", type=int, default=0, help="print this many candidates every gate lets through")
    args = parser.parse_args()
    if args.catalog:
        catch(args.catalog, args.show)
    else:
        false_positives()


if __name__ == "__main__":
    main()
