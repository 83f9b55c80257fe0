"""Load seed rows from JSONL, Parquet, CSV or a saved `datasets` folder.

Rows come back as dicts keyed by the task's output field names, through the recipe's
field mapping (`seeds.fields`: output field -> column in the file). A missing file,
an unreadable file or a mapped column that is not there is a `SeedError` that says
which and what to write.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from synth.errors import BadInput
from synth.ids import content_hash
from synth.config.recipe import Recipe, Seeds


class SeedError(BadInput, ValueError):
    pass


def _detect(path: Path) -> str:
    if path.is_dir():
        return "datasets"
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    return {".jsonl": "jsonl", ".json": "jsonl", ".jsonl.gz": "jsonl", ".parquet": "parquet", ".csv": "csv"}.get(
        suffix.lower(), "")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SeedError(f"{path}: line {number} is not JSON ({exc.msg}); fix or remove that line") from None
            if not isinstance(row, dict):
                raise SeedError(f"{path}: line {number} is not a JSON object")
            rows.append(row)
    return rows


def read_rows(path: Path, fmt: str = "auto", where: str = "seeds") -> list[dict[str, Any]]:
    if not path.exists():
        raise SeedError(f"{where}.path: no file or folder at {path}")
    fmt = _detect(path) if fmt == "auto" else fmt
    try:
        if fmt == "jsonl":
            return _read_jsonl(path)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        if fmt == "csv":
            with open(path, newline="", encoding="utf-8") as handle:
                return list(csv.DictReader(handle))
        if fmt == "datasets":
            import datasets

            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                split = "train" if "train" in loaded else next(iter(loaded))
                loaded = loaded[split]
            return loaded.to_list()
    except SeedError:
        raise
    except Exception as exc:  # unreadable file: say which and why
        raise SeedError(f"{where}.path: cannot read {path} as {fmt}: {type(exc).__name__}: {exc}") from None
    raise SeedError(f"{where}.format: cannot tell the format of {path}; write format: jsonl, parquet, csv or datasets")


def load_seeds(recipe: Recipe) -> list[dict[str, Any]]:
    if recipe.seeds is None:
        return []
    return load_rows(recipe, recipe.seeds, "seeds")


def load_dataset_rows(recipe: Recipe) -> list[dict[str, Any]]:
    """The existing dataset a recipe rebalances (`balance.dataset`), mapped to the task's fields."""
    if recipe.balance.dataset is None:
        return []
    return load_rows(recipe, recipe.balance.dataset, "balance.dataset")


def load_rows(recipe: Recipe, spec: Seeds, where: str) -> list[dict[str, Any]]:
    return map_rows(recipe, spec, read_rows(recipe.resolve_input(spec.path), spec.format, where), where)


def map_rows(recipe: Recipe, spec: Seeds, rows: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Rows as read from `spec.path`, limited and mapped to the task's fields (in order)."""
    if spec.limit is not None:
        rows = rows[: spec.limit]
    if not rows:
        raise SeedError(f"{where}.path: {spec.path} holds no rows")
    mapping = {name: spec.fields.get(name, name) for name in recipe.task.output_fields}
    columns = set(rows[0])
    missing = {name: col for name, col in mapping.items() if col not in columns}
    # Fields the seed file does not have are fine only if they were not mapped explicitly.
    explicit = {name: col for name, col in missing.items() if name in spec.fields}
    if explicit:
        name, col = next(iter(explicit.items()))
        raise SeedError(f"{where}.fields.{name}: column {col!r} is not in {spec.path} "
                        f"(columns: {', '.join(sorted(columns))})")
    if recipe.task.question not in mapping or mapping[recipe.task.question] in missing.values():
        raise SeedError(f"{where}.fields: the file has no column for the question field "
                        f"{recipe.task.question!r}; map it, e.g. `fields: {{{recipe.task.question}: <column>}}` "
                        f"(columns: {', '.join(sorted(columns))})")
    out = []
    for row in rows:
        out.append({name: row.get(col) for name, col in mapping.items() if col in columns})
    return out


def seed_key(row: dict[str, Any]) -> str:
    """A seed row by content (its task fields, normalised): rows added to a seed file, or
    moved within it, are told apart from the rows a dataset has already used."""
    return content_hash({k: v for k, v in row.items() if v is not None})
