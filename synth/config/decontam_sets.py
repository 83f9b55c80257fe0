"""The recipe's test sets (`quality.decontaminate`) read as test items, and the run's index.

Each entry is a path (JSONL, Parquet, CSV or a saved `datasets` folder, relative to the
recipe like seeds, read with the seeds' field mapping) or a mapping `{path, fields,
format, limit}` of its own, for a test set whose columns differ from the seeds'. A test
item is matched by its question field (GSM8K `question`, HumanEval `prompt`): the text a
benchmark poses. Its answer is not indexed: worked answers are formulaic ("... costs 0 so
the total is 0"), and indexing GSM8K answers doubled the false positives between distinct
GSM8K problems (BENCHMARKS.md). A test item's id is its `id` / `task_id` / `idx` column, or
its row number, after the file's name: `gsm8k_test.jsonl#12`.

`index_for(recipe)` builds the index once per process and set of files (pre-flight and the
run's chunk context share it); a Ray replica receives it pickled with the chunk context.
A missing, unreadable or wrongly mapped file is a `SeedError` naming
`quality.decontaminate[i]` (exit 2 at pre-flight, nothing written).
"""

from __future__ import annotations

from typing import Any, Sequence

from synth.config.seeds import SeedError, map_rows, read_rows
from synth.curation.decontam import DecontamIndex, Match, TestItem
from synth.config.recipe import Recipe, Seeds

ID_COLUMNS = ("id", "task_id", "idx", "problem_id", "uid")
_CACHE: dict[tuple, DecontamIndex] = {}


def test_specs(recipe: Recipe) -> list[tuple[str, Seeds]]:
    """(field name for errors, the entry as a `Seeds` spec) for each test set."""
    fields = recipe.seeds.fields if recipe.seeds is not None else {}
    return [(f"quality.decontaminate[{i}]", entry if isinstance(entry, Seeds) else Seeds(path=entry, fields=fields))
            for i, entry in enumerate(recipe.quality.decontaminate)]


def load_test_items(recipe: Recipe) -> list[TestItem]:
    question = recipe.task.question
    items: list[TestItem] = []
    for where, spec in test_specs(recipe):
        unknown = sorted(set(spec.fields) - set(recipe.task.output_fields))
        if unknown:
            raise SeedError(f"{where}.fields maps {unknown[0]!r}, which is not one of task.output_fields "
                            f"({', '.join(recipe.task.output_fields)})")
        # only the question is matched: a test file need not have the other mapped columns
        spec = spec.model_copy(update={"fields": {k: v for k, v in spec.fields.items() if k == question}})
        path = recipe.resolve_input(spec.path)
        try:
            rows = read_rows(path, spec.format, where)
            mapped = map_rows(recipe, spec, rows, where)
        except SeedError as exc:  # a bad line's message names the file; the field is named too
            raise exc if str(exc).startswith(where) else SeedError(f"{where}: {exc}") from None
        id_column = next((c for c in ID_COLUMNS if rows and c in rows[0]), None)
        for number, (raw, row) in enumerate(zip(rows, mapped), 1):
            item_id = raw.get(id_column) if id_column else number
            items.append(TestItem(f"{path.name}#{item_id}", {question: row.get(question)}))
    return items


def _key(recipe: Recipe) -> tuple:
    parts: list[Any] = [recipe.task.question, recipe.quality.decontaminate_cosine]
    for _, spec in test_specs(recipe):
        path = recipe.resolve_input(spec.path)
        stat = path.stat() if path.exists() else None
        parts.append((str(path.resolve()), spec.model_dump_json(), stat and (stat.st_size, stat.st_mtime_ns)))
    return tuple(parts)


def index_for(recipe: Recipe) -> DecontamIndex | None:
    """The run's index of its test sets (None without any), built once per process."""
    if not recipe.quality.decontaminate:
        return None
    key = _key(recipe)
    if key not in _CACHE:
        cosine, embed = recipe.quality.decontaminate_cosine, None
        if cosine is not None:
            from synth.similarity.embedder import get_embedder

            embed = get_embedder().encode
        _CACHE.clear()  # one run's sets at a time: an index of 10 k items holds ~15 MB
        _CACHE[key] = DecontamIndex.build(load_test_items(recipe), cosine, recipe.task.question, embed)
    return _CACHE[key]


def seed_matches(index: DecontamIndex, seeds: Sequence[dict[str, Any]], question: str) -> list[tuple[int, Match]]:
    """(seed row, its match) for each seed row that copies a test item."""
    return [(i, m) for i, m in enumerate(index.check_many(list(seeds), question)) if m is not None]


def seed_report(index: DecontamIndex, seeds: Sequence[dict[str, Any]], question: str, shown: int = 5) -> str:
    """One line for the run's output: how many seed rows match a test item, and which."""
    found = seed_matches(index, seeds, question)
    head = f"decontamination: {len(found)} of {len(seeds)} seed rows match a test item ({len(index)} indexed)"
    if not found:
        return head
    listed = "; ".join(f"seed row {i} ~ {m.item_id} ({m.rule})" for i, m in found[:shown])
    more = f"; and {len(found) - shown} more" if len(found) > shown else ""
    return f"{head}: {listed}{more}"
