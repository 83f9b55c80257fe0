"""How much of an export copies a benchmark's test set: `synth eval --decontaminate FILE`.

The test file is read like a recipe's test set (synth/config/decontam_sets.py): its items are
matched by their question column, which is the column the export's recipe maps its
question field to (`seeds.fields`), else a column of the question field's own name, else
the first of the usual names (question, prompt, instruction, input). Every text field of
the export is checked (synth/curation/decontam.py: 13-gram, 8-gram span, whole text; the embedding
rule is the run's, not the report's). The report: rows, contaminated rows and their rate,
counts per rule, and the worst matches (highest share of a test item covered first).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from storage.reports.evaluation import EvalError, Source, guess_text_fields
from synth.config.decontam_sets import ID_COLUMNS
from synth.curation.decontam import DecontamIndex, TestItem

SNIPPET = 160  # characters of the contaminated row shown beside its match


def question_column(rows: Sequence[dict[str, Any]], recipe: dict[str, Any] | None, question: str | None) -> str | None:
    columns = list(rows[0]) if rows else []
    mapped = (((recipe or {}).get("seeds") or {}).get("fields") or {}).get(question or "")
    for name in (mapped, question):
        if name and name in columns:
            return name
    guessed = guess_text_fields(rows)
    return guessed[0] if guessed else None


def test_index(paths: Sequence[Path], recipe: dict[str, Any] | None = None,
               question: str | None = None) -> DecontamIndex:
    from storage.reports.evaluation import _read_path

    items: list[TestItem] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise EvalError(f"--decontaminate: no file or folder at {path}; pass a test set as JSONL, Parquet, CSV "
                            "or a saved `datasets` folder")
        rows = _read_path(path)
        if not rows:
            raise EvalError(f"--decontaminate: {path} holds no rows")
        column = question_column(rows, recipe, question)
        if column is None:
            raise EvalError(f"--decontaminate: {path} has no text column to match (columns: "
                            f"{', '.join(rows[0])}); name it `question` or `prompt`")
        id_column = next((c for c in ID_COLUMNS if c in rows[0]), None)
        items += [TestItem(f"{path.name}#{row.get(id_column) if id_column else n}", {column: row.get(column)})
                  for n, row in enumerate(rows, 1)]
    return DecontamIndex.build(items)


def contamination(source: Source, index: DecontamIndex, worst: int = 10) -> dict[str, Any]:
    """The figures of one export against the index."""
    fields = source.text_fields
    matches = index.check_many([{f: row.get(f) for f in fields} for row in source.rows])
    found = [(i, m) for i, m in enumerate(matches) if m is not None]
    by_rule: dict[str, int] = {}
    for _, m in found:
        by_rule[m.rule] = by_rule.get(m.rule, 0) + 1
    found.sort(key=lambda im: (-im[1].score, im[0]))
    rate = round(len(found) / len(source.rows), 4) if source.rows else None
    return {
        "label": source.label, "rows": len(source.rows), "fields": fields, "test_items": len(index),
        "contaminated": len(found), "contaminated_rate": rate,
        "by_rule": by_rule, "test_items_unmatchable": index.too_short,
        "worst": [{"row": i, "test_item": m.item_id, "rule": m.rule, "field": m.field, "score": round(m.score, 3),
                   "evidence": m.evidence, "text": str(source.rows[i].get(m.field, ""))[:SNIPPET]}
                  for i, m in found[:worst]],
    }


def render(results: Sequence[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        rate = "n/a" if r["contaminated_rate"] is None else f"{r['contaminated_rate']:.2%}"
        rules = ", ".join(f"{n} by {rule}" for rule, n in sorted(r["by_rule"].items())) or "none"
        lines.append(f"{r['label']}: {r['contaminated']} of {r['rows']} rows contaminated ({rate}) against "
                     f"{r['test_items']} test items; {rules}")
        for w in r["worst"]:
            lines.append(f"  row {w['row']} ~ {w['test_item']} ({w['rule']}, {w['field']}, {w['score']:.0%}): "
                         f"{w['evidence']}"[:300])
    return "\n".join(lines)
