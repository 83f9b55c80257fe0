"""Export a snapshot as a Hugging Face dataset: Parquet shards, JSONL, `save_to_disk`, a card.

One snapshot becomes a `datasets.DatasetDict` ("train", and "test" when the snapshot has
test rows) with typed features: each task field as string / int64 / float64 from the
recipe, and, unless `lineage=False`, the lineage columns (sample, run, leaf, leaf path,
strategy, seed row, request). It is written by the exporters named (storage/publish/exporters.py):

    <out>/data/train-00000-of-00002.parquet ...   the Hub's layout; `load_dataset("parquet", ...)`
    <out>/jsonl/train.jsonl, jsonl/test.jsonl     one JSON object a line, UTF-8
    <out>/hf/                                     `DatasetDict.save_to_disk`
    <out>/README.md, leaf_distribution.png        the dataset card (storage.publish.card)

and one row per target goes into the catalog's `exports` table. Files are written to a
temporary name and renamed, shards left over from an earlier export with another shard
count are removed, and the export id is a hash of snapshot, target and place, so
exporting the same snapshot to the same place again gives the same files and the same
catalog rows. Rows are ordered by split and sample id, so the bytes are the same too
(which lets a Hub upload skip shards it already sent).

The table is built inside DuckDB (`snapshot_table`): the JSON fields are extracted and
cast there, not in a Python loop over rows. A value that does not fit its column (7.5 or
"seven" for an integer, true for a number) stops the export with the sample's id: it is
never written as NULL or rounded. Numeric text ("7") and whole floats (7.0) do fit.
The whole snapshot is held in memory as one Arrow table (about 2 GB at 1 M rows of
short text): streaming shard by shard is left for larger exports.

Left out: choosing what goes into the snapshot (storage.tables.snapshots).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from storage.catalog import faults
from storage.catalog.catalog import Catalog, now
from storage.publish.contract import SHARD_NAME, ExportError, ExportJob, Written
from storage.publish.exporters import EXPORTERS
from storage.tables.snapshots import SPLITS, get_snapshot
from synth.ids import stable_id

DEFAULT_SHARD_ROWS = 100_000  # rows per Parquet shard: a few tens of MB of text, easy to resume
_VALUE_TYPES = {"string": "string", "integer": "int64", "number": "float64"}
_LINEAGE_TYPES = {"sample_id": "string", "run_id": "string", "leaf_id": "string", "leaf_path": "string",
                  "strategy": "string", "seed_row": "int64", "request_id": "string",
                  # of the n_solutions sampled for the row, the share its verifier accepted (majority votes / n)
                  "agreement": "float64", "n_solutions": "int64"}


@dataclass(frozen=True)
class ExportResult:
    snapshot_id: str
    out_dir: Path
    paths: dict[str, list[Path]]  # target ("parquet", "jsonl", "save_to_disk", "card") -> files or folders
    n_rows: dict[str, int]  # split -> rows
    export_ids: dict[str, str] = field(default_factory=dict)  # target -> export id
    revisions: dict[str, str] = field(default_factory=dict)  # remote target -> what it made (a Hub commit)

    @property
    def data_files(self) -> dict[str, list[Path]]:
        """split -> Parquet shards, ready for `load_dataset("parquet", data_files=...)`."""
        out: dict[str, list[Path]] = {}
        for path in self.paths.get("parquet", []):
            out.setdefault(SHARD_NAME.match(path.name)["split"], []).append(path)
        return out


def output_fields_of_run(catalog: Catalog, run_id: str) -> dict[str, str]:
    """name -> type ("string" / "integer" / "number") of the task's output fields, from the run's recipe."""
    run = catalog.run(run_id)
    if run is None:
        raise ExportError(f"no run {run_id!r} in {catalog.path}")
    recipe = json.loads(run["recipe"]) if isinstance(run["recipe"], str) else run["recipe"]
    try:
        return {name: spec.get("type", "string") for name, spec in recipe["task"]["output_fields"].items()}
    except (KeyError, TypeError, AttributeError):
        raise ExportError(f"run {run_id}'s recipe has no task.output_fields: pass output_fields= explicitly") from None


# How a JSON value becomes each column type, in SQL. `t` is the value's json_type, `s` its
# text. A value that does not fit (7.5 for an integer, true for a number) gives NULL here
# and is then reported as an error: never a silent NULL or a rounded number.
_CAST_SQL = {
    "string": "CASE WHEN {t} = 'NULL' THEN NULL ELSE {s} END",
    "int64": "CASE WHEN {t} IN ('BOOLEAN', 'ARRAY', 'OBJECT') THEN NULL "
             "WHEN TRY_CAST({s} AS DOUBLE) = floor(TRY_CAST({s} AS DOUBLE)) THEN TRY_CAST({s} AS BIGINT) END",
    "float64": "CASE WHEN {t} IN ('BOOLEAN', 'ARRAY', 'OBJECT') THEN NULL ELSE TRY_CAST({s} AS DOUBLE) END",
}
_LINEAGE_SQL = {"sample_id": "s.sample_id", "run_id": "s.run_id", "leaf_id": "s.leaf_id",
                "leaf_path": "CAST(s.leaf_path AS VARCHAR)", "strategy": "s.strategy",
                "seed_row": "CAST(s.seed_row AS BIGINT)", "request_id": "s.request_id",
                "agreement": "s.agreement", "n_solutions": "CAST(s.n_solutions AS BIGINT)"}


def _columns(output_fields: dict[str, str], lineage: bool) -> dict[str, str]:
    """column -> datasets value type, in output order."""
    columns: dict[str, str] = {}
    for name, kind in output_fields.items():
        if not name.isidentifier():
            raise ExportError(f"field name {name!r} must be a plain identifier (letters, digits, _)")
        if kind not in _VALUE_TYPES:
            raise ExportError(f"field {name!r} has type {kind!r}; write one of {', '.join(_VALUE_TYPES)}")
        columns[name] = _VALUE_TYPES[kind]
    if lineage:
        for name, kind in _LINEAGE_TYPES.items():
            columns[f"lineage_{name}" if name in output_fields else name] = kind
    return columns


def snapshot_table(catalog: Catalog, snapshot_id: str, output_fields: dict[str, str], lineage: bool = True):
    """The snapshot as one typed Arrow table plus a `__split` column, built inside DuckDB.

    Same rows, order and column names as `snapshot_rows`, without a Python loop over rows,
    so it scales to millions of samples. Field names are identifiers (checked in
    `_columns`), so quoting them as SQL column names is safe; JSON paths are bound parameters.
    """
    import pyarrow as pa

    columns = _columns(output_fields, lineage)
    fields = list(output_fields.items())
    # Internal names start with "__" so no task field can collide with them.
    raw = "".join(f", json_type(s.fields, ?) AS __t{i}, json_extract_string(s.fields, ?) AS __s{i}"
                  for i in range(len(fields)))
    params = [f'$."{name}"' for name, _ in fields for _twice in (0, 1)]
    typed = "".join(f', {_CAST_SQL[_VALUE_TYPES[kind]].format(t=f"__t{i}", s=f"__s{i}")} AS __v{i}'
                    for i, (_, kind) in enumerate(fields))
    checks = " ".join(f"WHEN __t{i} IS NOT NULL AND __t{i} <> 'NULL' AND __v{i} IS NULL THEN {i}"
                      for i in range(len(fields)))
    lineage_sql = "".join(f", {expr} AS __l_{name}" for name, expr in _LINEAGE_SQL.items())
    out = [f'__v{i} AS "{name}"' for i, (name, _) in enumerate(fields)]
    if lineage:
        out += [f'__l_{name} AS "{column}"' for name, column in zip(_LINEAGE_SQL, list(columns)[len(fields):])]
    sql = f"""
        WITH base AS (
            SELECT ss.split AS __split, ss.first_version AS __version{lineage_sql}{raw}
            FROM snapshot_samples ss JOIN samples_text s USING (sample_id)
            WHERE ss.snapshot_id = ?
        ), typed AS (
            SELECT *{typed} FROM base
        )
        SELECT __split, __version, __l_sample_id AS __sample_id,
               {f"CASE {checks} END" if checks else "NULL"} AS __bad, {', '.join(out)}
        FROM typed
        ORDER BY CASE __split WHEN 'train' THEN 0 WHEN 'test' THEN 1 ELSE 2 END, __split, __version, __l_sample_id"""
    with catalog.transaction() as con:  # the catalog's lock, and one consistent read
        table = con.sql(sql, params=[*params, snapshot_id]).to_arrow_table()
    bad = table.filter(table["__bad"].is_valid())
    if bad.num_rows:
        column, sample_id = fields[bad["__bad"][0].as_py()][0], bad["__sample_id"][0].as_py()
        value = catalog.scalar("SELECT json_extract_string(fields, ?) FROM samples_text WHERE sample_id = ?",
                               [f'$."{column}"', sample_id])
        raise ExportError(
            f"sample {sample_id}: column {column!r} holds {str(value)[:60]!r}, which is not "
            f"{_VALUE_TYPES[output_fields[column]]}; fix the recipe's field type or mark the sample rejected, "
            "then take a new snapshot")
    schema = pa.schema([pa.field("__split", pa.string()), pa.field("__version", pa.int32()),
                        *[pa.field(name, pa.string() if kind == "string" else pa.from_numpy_dtype(kind))
                          for name, kind in columns.items()]])
    return table.drop_columns(["__sample_id", "__bad"]).cast(schema)


def build_dataset_dict(table) -> Any:
    """`snapshot_table`'s table as a typed `datasets.DatasetDict`: train, and test when it has rows.
    Each split's dataset carries `versions`: the `first_version` of each row (None outside
    a growing dataset's versions), in row order, for the version shards."""
    import pyarrow.compute as pc
    from datasets import Dataset, DatasetDict, DatasetInfo, Features  # heavy: only when exporting

    data = table.drop_columns(["__split", "__version"])
    features = Features.from_arrow_schema(data.schema)
    splits = table["__split"].unique().to_pylist()
    ordered = [s for s in SPLITS if s in splits] + sorted(set(splits) - set(SPLITS))
    out = DatasetDict({split: Dataset(data.filter(pc.equal(table["__split"], split)),
                                      info=DatasetInfo(features=features))
                       for split in ordered})
    out.versions = {split: table["__version"].filter(pc.equal(table["__split"], split)).to_pylist()
                    for split in ordered}  # type: ignore[attr-defined]
    return out


@contextmanager
def _quiet_progress():
    """No per-shard progress bars: in a flow's log they are noise; the caller reports counts."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def prepare_out_dir(out_dir: Path) -> Path:
    """The export folder, created; one line naming it when it cannot be (a file on its path,
    no permission, a full disk)."""
    out_dir = Path(out_dir).resolve()
    with faults.raising(ExportError, out_dir, "the export folder"):
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")  # root-owned or read-only: find out now, not after the snapshot is built
        probe.unlink()
    return out_dir


def record_export(catalog: Catalog, snapshot_id: str, target: str, location: str, n_rows: int,
                  revision: str | None = None) -> str:
    """Write (or refresh) the export row for one target; returns its id, a hash of snapshot,
    target, place and revision: the same export twice is one row, a new Hub commit a new one."""
    export_id = stable_id("export", snapshot_id, target, location, revision)
    with catalog.transaction() as con:
        con.execute(
            """INSERT INTO exports (export_id, snapshot_id, target, location, revision, n_rows, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (export_id) DO UPDATE SET n_rows = excluded.n_rows, created_at = excluded.created_at""",
            [export_id, snapshot_id, target, location, revision, n_rows, now()])
    return export_id


def list_exports(catalog: Catalog, snapshot_id: str | None = None) -> list[dict[str, Any]]:
    where, params = ("WHERE snapshot_id = ?", [snapshot_id]) if snapshot_id else ("", [])
    return catalog.query(f"SELECT * FROM exports {where} ORDER BY created_at DESC, target", params)


def export_snapshot(catalog: Catalog, snapshot_id: str, out_dir: Path,
                    formats: Iterable[str] = ("parquet", "jsonl"), lineage: bool = True,
                    output_fields: dict[str, str] | None = None, *,
                    shard_rows: int = DEFAULT_SHARD_ROWS, card: bool = True,
                    tree_text: str | None = None, license: str = "other", renderer: Any = None,
                    options: dict[str, Any] | None = None) -> ExportResult:
    """Write the snapshot (id or name) under `out_dir` in `formats`, with a card; record each target.

    `output_fields` maps field name -> "string" / "integer" / "number"; by default it is
    read from the run's recipe. `renderer` (a synth.prompting.render.Renderer) renders the card, so
    a recipe's override of the card template applies; default: the built-in template.
    `options` gives an exporter its settings by name (the Hub's: a `HubTarget`). An exporter
    another one needs (the Hub: parquet) runs first; only those asked for get an `exports` row.
    """
    asked = tuple(dict.fromkeys(formats))
    unknown = [f for f in asked if f not in EXPORTERS]
    if unknown or not asked:
        raise ExportError(f"unknown export format(s) {unknown or '(none)'}: write any of {', '.join(EXPORTERS)}")
    if shard_rows <= 0:
        raise ExportError(f"shard_rows must be > 0, got {shard_rows}")
    options = options or {}
    runs = tuple(dict.fromkeys(need for name in asked for need in (*EXPORTERS[name].needs, name)))
    for name in runs:
        EXPORTERS[name].check(options.get(name))  # a missing repo or token: before anything is written
    late = [name for name in runs if EXPORTERS[name].publishes_card]
    if late and not card:
        raise ExportError(f"{late[0]} publishes the dataset card: export with the card")
    snapshot = get_snapshot(catalog, snapshot_id)
    snapshot_id = snapshot["snapshot_id"]
    if output_fields is None:
        output_fields = output_fields_of_run(catalog, snapshot["run_id"])
    out_dir = prepare_out_dir(out_dir)

    dataset_dict = build_dataset_dict(snapshot_table(catalog, snapshot_id, output_fields, lineage))
    n_rows = {split: len(ds) for split, ds in dataset_dict.items()}
    job = ExportJob(snapshot_id, snapshot["name"], dataset_dict, out_dir, shard_rows, options=options)
    written: dict[str, Written] = {}
    # a full disk or a folder that turns read-only half way: one line naming the folder
    with _quiet_progress(), faults.raising(ExportError, out_dir, "the export folder"):
        for name in runs:
            if name not in late:
                written[name] = EXPORTERS[name].write(job)
                job.written[name] = written[name].paths
        if card:
            from storage.publish.card import write_card  # matplotlib and the card template: only when asked

            files = [name for name in runs if name not in late]  # the formats the card lists
            job.written["card"] = write_card(
                catalog, snapshot_id, out_dir, renderer, output_fields=output_fields, n_rows=n_rows,
                data_files=_card_data_files(job.written, n_rows), formats=files, lineage=lineage,
                tree_text=tree_text, license=license)
    for name in late:  # outside the folder's fault handler: a remote target's errors are its own
        written[name] = EXPORTERS[name].write(job)
        job.written[name] = written[name].paths

    total = sum(n_rows.values())
    export_ids = {name: record_export(catalog, snapshot_id, name, written[name].location, total,
                                      revision=written[name].revision) for name in asked}
    revisions = {name: w.revision for name, w in written.items() if w.revision is not None}
    return ExportResult(snapshot_id, out_dir, dict(job.written), n_rows, export_ids, revisions)


def _card_data_files(paths: dict[str, list[Path]], n_rows: dict[str, int]) -> dict[str, str]:
    """split -> the glob the card's `configs` section gives the Hub (Parquet first, else JSONL)."""
    if "parquet" in paths:
        return {split: f"data/{split}-*" for split in n_rows}
    if "jsonl" in paths:
        return {split: f"jsonl/{split}.jsonl" for split in n_rows}
    return {}
