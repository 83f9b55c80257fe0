"""What `synth eval` reads and what only the catalog knows: exports, snapshots and
reference datasets as rows, their format constraints and text fields, the verifier pass
rate of the runs that made them, and the side-by-side table.

The figures themselves are synth/measures/figures.py's (pure). An export folder carries its
recipe in its dataset card (README.md, the JSON block under "## Recipe"): from it come
the question and answer fields and the format constraints. A reference dataset
(Parquet, JSONL, CSV or a saved `datasets` folder) is read the same way, without them.

Left out: computing embeddings (synth/similarity/embedder.py) and printing (flows/cli/eval.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from storage.catalog.catalog import Catalog
from synth.errors import BadInput
from synth.measures.figures import FIGURES, OPTIONAL_FIGURES, evaluate, figure_text, figure_value
from synth.task.formats import OutputField

LINEAGE = {"sample_id", "run_id", "leaf_id", "leaf_path", "strategy", "seed_row", "request_id", "split"}
CARD_EMBED_SAMPLE = 200  # rows embedded for a card or a run report (about 10 s here); `synth eval` does more


class EvalError(BadInput, ValueError):
    """An input `synth eval` cannot read; the message names it and says what to pass."""


@dataclass
class Source:
    label: str
    rows: list[dict[str, Any]]
    specs: dict[str, OutputField] = field(default_factory=dict)
    text_fields: list[str] = field(default_factory=list)
    run_ids: set[str] = field(default_factory=set)


def recipe_from_card(card: Path) -> dict[str, Any] | None:
    """The recipe JSON an exported dataset card holds, or None."""
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8")
    match = re.search(r"^## Recipe\s*$.*?^(`{3,})json\s*$\n(.*?)^\1\s*$", text, re.S | re.M)
    if not match:
        return None
    try:
        return json.loads(match.group(2))
    except json.JSONDecodeError:
        return None


def task_parts(recipe: dict[str, Any] | None, columns: Sequence[str] = ()) -> tuple[dict[str, OutputField], list[str]]:
    """(format specs, [question field, answer field]) of a recipe mapping; empty without one.
    The card stores the recipe with sorted keys: the data's `columns` give the fields' order."""
    task = (recipe or {}).get("task") or {}
    try:
        specs = {name: OutputField.model_validate(spec) for name, spec in (task.get("output_fields") or {}).items()}
    except Exception:  # an older or hand-edited card: figures without format checks
        return {}, []
    names = [c for c in columns if c in specs] + [n for n in specs if n not in columns]
    if not names:
        return {}, []
    question = task.get("question_field") or names[0]
    answer = task.get("answer_field") or (names[1] if len(names) > 1 else names[0])
    return specs, list(dict.fromkeys([question, answer]))


def guess_text_fields(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Without a recipe: the usual names if present, else every text column but lineage."""
    if not rows:
        return []
    columns = [c for c in rows[0] if c not in LINEAGE and not c.startswith("lineage_")]
    for pair in (("question", "answer"), ("prompt", "canonical_solution"), ("instruction", "output"),
                 ("prompt", "completion"), ("input", "output")):
        if all(c in columns for c in pair):
            return list(pair)
    return [c for c in columns if isinstance(rows[0].get(c), str)]


def _read_path(path: Path) -> list[dict[str, Any]]:
    from synth.config.seeds import SeedError, read_rows

    try:
        if path.is_dir() and (path / "data").is_dir():
            files = sorted((path / "data").glob("*.parquet"))
            if files:
                return [row for f in files for row in read_rows(f, "parquet", "eval")]
        if path.is_dir() and (path / "jsonl").is_dir():
            files = sorted((path / "jsonl").glob("*.jsonl"))
            if files:
                return [row for f in files for row in read_rows(f, "jsonl", "eval")]
        if path.is_dir() and (path / "save_to_disk").is_dir():
            return read_rows(path / "save_to_disk", "datasets", "eval")
        return read_rows(path, "auto", "eval")
    except SeedError as exc:
        raise EvalError(str(exc).replace("eval.path: ", f"{path}: ").replace("eval.format: ", "")) from None


def read_source(path: Path, recipe: dict[str, Any] | None = None, label: str | None = None) -> Source:
    """An export folder, a data file, or a saved `datasets` folder, as a Source."""
    path = Path(path)
    if not path.exists():
        raise EvalError(f"{path}: no file or folder here; pass an export folder (out/<name>), a Parquet, JSONL "
                        "or CSV file, or a saved `datasets` folder")
    rows = _read_path(path)
    recipe = recipe or (recipe_from_card(path / "README.md") if path.is_dir() else None)
    specs, fields = task_parts(recipe, list(rows[0]) if rows else ())
    fields = [f for f in fields if rows and f in rows[0]] or guess_text_fields(rows)
    if rows and not fields:
        raise EvalError(f"{path}: no text columns to evaluate; name them with --fields question,answer")
    return Source(label or str(path), rows, specs, fields, {str(r["run_id"]) for r in rows if r.get("run_id")})


def snapshot_source(catalog: Catalog, name: str) -> Source:
    from storage.tables.snapshots import get_snapshot, snapshot_rows

    snapshot = get_snapshot(catalog, name)
    rows = snapshot_rows(catalog, snapshot["snapshot_id"])
    run = catalog.run(snapshot["run_id"]) or {}
    recipe = json.loads(run["recipe"]) if isinstance(run.get("recipe"), str) else run.get("recipe")
    specs, fields = task_parts(recipe, list(rows[0]) if rows else ())
    fields = [f for f in fields if rows and f in rows[0]] or guess_text_fields(rows)
    return Source(f"snapshot {snapshot['name']}", rows, specs, fields,
                  {str(r["run_id"]) for r in rows if r.get("run_id")})


def verifier_pass(catalog: Catalog, run_ids: Sequence[str]) -> dict[str, Any] | None:
    """Verdicts of the runs' verifier over every attempt that reached it (not only the kept)."""
    if not run_ids:
        return None
    marks = ", ".join("?" for _ in run_ids)
    row = catalog.query(f"""SELECT count(*) FILTER (verified) AS passed, count(*) FILTER (NOT verified) AS failed
                            FROM samples WHERE run_id IN ({marks})""", list(run_ids))[0]
    passed, failed = int(row["passed"] or 0), int(row["failed"] or 0)
    if passed + failed == 0:
        return None
    return {"rate": round(passed / (passed + failed), 4), "passed": passed, "failed": failed}


def embedder_or_reason(enabled: bool = True):
    """(embed function, None) where the pinned model is installed, else (None, why not)."""
    if not enabled:
        return None, "turned off (--no-embed)"
    from synth.similarity.embedder import EmbeddingUnavailable, embedding_status, get_embedder

    reason = embedding_status()
    if reason is not None:
        return None, reason
    try:
        return get_embedder().encode, None
    except EmbeddingUnavailable as exc:
        return None, str(exc)


def evaluate_source(source: Source, catalog: Catalog | None = None, embed=None, embed_missing: str | None = None,
                    embed_sample: int = 1000, text_fields: Sequence[str] | None = None) -> dict[str, Any]:
    fields = list(text_fields or source.text_fields)
    missing = [f for f in fields if source.rows and f not in source.rows[0]]
    if missing:
        raise EvalError(f"{source.label}: no column {missing[0]!r}; columns: {', '.join(source.rows[0])}")
    figures = evaluate(source.rows, fields, specs=source.specs, embed=embed, embed_sample=embed_sample,
                       embed_missing=embed_missing)
    figures["label"] = source.label
    figures["verifier_pass"] = verifier_pass(catalog, sorted(source.run_ids)) if catalog is not None else None
    if figures["verifier_pass"] is None:
        figures["left_out"]["verifier_pass"] = ("no verifier verdicts in the catalog for these rows"
                                                if catalog is not None else "needs the catalog that made the rows")
    return figures


def catalog_figures(catalog: Catalog, rows: list[dict[str, Any]], recipe: dict[str, Any] | None,
                    run_ids: Sequence[str], label: str, embed_sample: int = CARD_EMBED_SAMPLE) -> dict[str, Any]:
    """The figures a run report and a dataset card show, for rows the catalog holds
    (task fields flat, `leaf_id` beside them); embeddings on a fixed sample of rows."""
    specs, fields = task_parts(recipe, list(rows[0]) if rows else ())
    fields = [f for f in fields if rows and f in rows[0]] or guess_text_fields(rows)
    source = Source(label, rows, specs, fields, set(run_ids))
    embed, why = embedder_or_reason()
    return evaluate_source(source, catalog, embed, why, embed_sample)


def snapshot_figures(catalog: Catalog, snapshot_id: str, recipe: dict[str, Any] | None) -> dict[str, Any]:
    """The card's figures: the snapshot's rows, as `synth eval --snapshot` reads them."""
    from storage.tables.snapshots import snapshot_rows

    rows = snapshot_rows(catalog, snapshot_id)
    return catalog_figures(catalog, rows, recipe, sorted({str(r["run_id"]) for r in rows if r.get("run_id")}),
                           "this dataset")


def render_table(results: Sequence[dict[str, Any]], ratio_to: int | None = None) -> str:
    """A markdown table, one column per evaluated set; with `ratio_to`, a ratio column of
    the others against that one (e.g. tree / flat)."""
    header = "| figure | " + " | ".join(r["label"] for r in results) + " |"
    ratio = ratio_to is not None and len(results) == 2
    if ratio:
        other = results[1 - ratio_to]
        header += f" {other['label']} / {results[ratio_to]['label']} |"
    lines = [header, "|---|" + "---:|" * (len(results) + (1 if ratio else 0))]
    for key, name in FIGURES:
        if key in OPTIONAL_FIGURES and all(r.get(key) is None for r in results):
            continue
        cells = [figure_text(key, r.get(key)) for r in results]
        row = f"| {name} | " + " | ".join(cells) + " |"
        if ratio:
            a, b = figure_value(key, results[1 - ratio_to].get(key)), figure_value(key, results[ratio_to].get(key))
            row += f" {a / b:.3f} |" if a is not None and b else " - |"
        lines.append(row)
    lines += ["", "| words per row | field | mean | median | p10 | p90 | min | max |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['label']} | {name} | {st['mean']} | {st['median']:g} | {st['p10']:g} | {st['p90']:g} | "
              f"{st['min']} | {st['max']} |" for r in results for name, st in (r.get("lengths") or {}).items() if st]
    notes = []
    for r in results:
        by_reason: dict[str, list[str]] = {}
        for what, why in r["left_out"].items():
            by_reason.setdefault(why, []).append(what)
        notes += [f"- {r['label']}: left out {', '.join(whats)}: {why}" for why, whats in by_reason.items()]
    embedded = [f"- {r['label']}: embedding figures over {r['embedded_rows']} of {r['rows']} rows"
                for r in results if r.get("embedded_rows") and r["embedded_rows"] < r["rows"]]
    return "\n".join(lines + ([""] + notes + embedded if notes or embedded else [])) + "\n"
