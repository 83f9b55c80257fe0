"""Bulk paths for catalogs of millions of samples: each is one set-based statement (or a
few) over Arrow tables, never a Python loop over rows, so the 10 M-row figures of
`benchmarks/catalog_scale.py` hold. Values travel as bound parameters or registered
Arrow tables, like the rest of the catalog.
"""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.catalog.catalog import _SAMPLE_COLUMNS, SEGMENT_COLUMNS, Catalog, CatalogError, now

SAMPLE_SCHEMA = pa.schema(list(_SAMPLE_COLUMNS.items()))
DROP_REASON = "over the leaf maximum (balance.max_per_leaf)"
_RUNS = "run_id IN (SELECT unnest(?::VARCHAR[]))"  # a semi-join on the bound list of runs
# `strategy` narrows to one kind of row (the ledger rebalances only a dataset's existing rows); NULL = all
_STRATEGY = "(?::VARCHAR IS NULL OR strategy = ?::VARCHAR)"


def conform(table: pa.Table) -> pa.Table:
    """Cast the columns a table has to the catalog's types (missing ones stay NULL in the
    insert, `created_at` defaults to now); an unknown column is an error, not a silent drop."""
    unknown = set(table.column_names) - set(SAMPLE_SCHEMA.names)
    if unknown:
        raise CatalogError(f"not columns of samples: {sorted(unknown)}")
    if "created_at" not in table.column_names:
        table = table.append_column("created_at", pa.repeat(pa.scalar(now(), pa.timestamp("us")), len(table)))
    return table.cast(pa.schema([SAMPLE_SCHEMA.field(name) for name in table.column_names]))


def ingest_samples(catalog: Catalog, table: pa.Table, segments: bool | None = None) -> int:
    """Append sample rows in one transaction; an id that exists, in the catalog or earlier
    in `table`, is skipped (as in `Catalog.commit_chunk`). Returns rows written.

    With `segments` (the default for a catalog on disk), the text columns (`fields`,
    `raw_text`, `leaf_path`) go into LZ4 Parquet files in `catalog.segment_dir`, one per
    core, written while DuckDB checks the ids and inserts the other columns; the rows point
    at their file (`samples.segment`) and the `samples_text` view reads the text back. A
    file becomes part of the catalog only when the transaction that registers it commits:
    a crash in between leaves a stray file that nothing reads.

    Why, measured on the 2-core machine (GSM8K-like rows, ~480 characters of `fields`):
    DuckDB's own storage spent most of an insert compressing that text and its key on
    `sample_id` more than half of the rest (153 k rows/s; the table has no key since schema
    version 3). pyarrow writes the text about 3x faster on a core, beside DuckDB's threads:
    ~620 k rows/s with LZ4, ~550 k (too close to the 500 k target) with zstd, whose files
    are a third smaller. `segments=False` keeps the text inline.
    """
    table = conform(table)
    if not len(table):
        return 0
    text = [name for name in SEGMENT_COLUMNS if name in table.column_names]
    if segments is None:
        segments = bool(text) and str(catalog.path) != ":memory:"
    with catalog._lock, _unordered_inserts(catalog.con):  # the lock: no writer between lookup and insert
        # the files are written while DuckDB looks for ids to skip; usually there are none
        writer = _SegmentWriter(catalog.segment_dir, table, text) if segments and text else None
        try:
            keep = _rows_to_keep(catalog.con, table)
            if keep is not None:  # rewrite the files without the skipped rows
                table = keep
                if writer:
                    writer.discard()
                    writer = _SegmentWriter(catalog.segment_dir, table, text) if len(table) else None
            if not len(table):
                return 0
            rows = writer.narrow(table) if writer else table
            with _registered(catalog.con, "bulk_incoming", rows), catalog.transaction() as con:
                inserted = Catalog.insert_samples(con, "bulk_incoming", checked=True)
                if writer:  # a failed write raises here and rolls the insert back
                    with _registered(con, "bulk_segments", writer.registry()):
                        con.execute("INSERT INTO segments BY NAME SELECT * FROM bulk_segments")
        except BaseException:
            if writer:
                writer.discard()  # nothing refers to its files: the transaction rolled back
            raise
    if writer:
        catalog.refresh_text_view()
    return inserted


def _rows_to_keep(con: Any, table: pa.Table) -> pa.Table | None:
    """`table` without ids that exist in the catalog and without later repeats of an id,
    or None when it has neither (one parallel scan of the catalog's ids)."""
    with _registered(con, "bulk_ids", table.select(["sample_id"])):
        repeated, existing = con.execute(
            """SELECT (SELECT count(*) FROM (SELECT sample_id FROM bulk_ids GROUP BY ALL HAVING count(*) > 1)),
                      (SELECT list(sample_id) FROM samples WHERE sample_id IN (SELECT sample_id FROM bulk_ids))"""
        ).fetchall()[0]
    if not repeated and not existing:
        return None
    if repeated:
        table = _first_of_each_id(table)
    if existing:
        table = table.filter(pc.invert(pc.is_in(table["sample_id"], value_set=pa.array(existing, pa.string()))))
    return table


class _SegmentWriter:
    """Writes the text columns of `table` into Parquet files in `folder`, one per core, in
    threads (pyarrow writes without the GIL), from the moment it is made."""

    def __init__(self, folder: Path, table: pa.Table, text: list[str]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.text, self.stamp = folder, text, now()
        parts = max(1, min(os.cpu_count() or 1, len(table) // 100_000 + 1))  # no tiny files
        self.bounds = np.linspace(0, len(table), parts + 1).astype(int)
        self.names = [f"seg-{self.stamp:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}.parquet" for _ in range(parts)]
        self._pool = ThreadPoolExecutor(max_workers=parts, thread_name_prefix="segment-writer")
        self._futures = [self._pool.submit(self._write, table, i) for i in range(parts)]
        self._pool.shutdown(wait=False)

    def _write(self, table: pa.Table, index: int) -> int:
        part = table.slice(self.bounds[index], self.bounds[index + 1] - self.bounds[index])
        # every segment has every text column, so that one read_parquet reads them all
        part = pa.table({"sample_id": part["sample_id"], **{
            name: part[name] if name in self.text else pa.nulls(len(part), pa.string()) for name in SEGMENT_COLUMNS}})
        staging = self.folder / f".{self.names[index]}.tmp"
        pq.write_table(part, staging, compression="lz4", use_dictionary=["leaf_path"])
        staging.replace(self.folder / self.names[index])
        return (self.folder / self.names[index]).stat().st_size

    def narrow(self, table: pa.Table) -> pa.Table:
        """The rows without their text, each naming its file in `segment`."""
        part_of_row = pa.array(np.repeat(np.arange(len(self.names), dtype=np.int32), np.diff(self.bounds)))
        names = pa.DictionaryArray.from_arrays(part_of_row, pa.array(self.names)).cast(pa.string())
        narrow = table.drop_columns(self.text)
        if "segment" in narrow.column_names:
            return narrow.set_column(narrow.column_names.index("segment"), "segment", names)
        return narrow.append_column("segment", names)

    def registry(self) -> pa.Table:
        """Rows for the `segments` table, once every file is written (raises if one failed)."""
        sizes = [future.result() for future in self._futures]
        return pa.table({"segment": self.names, "n_rows": np.diff(self.bounds).astype(np.int64), "bytes": sizes,
                         "created_at": pa.array([self.stamp] * len(self.names), pa.timestamp("us"))})

    def discard(self) -> None:
        """Wait for the writers, then remove whatever they wrote."""
        for future in self._futures:
            future.exception()  # waits; the error, if any, is the caller's to report
        for name in self.names:
            (self.folder / name).unlink(missing_ok=True)
            (self.folder / f".{name}.tmp").unlink(missing_ok=True)


def _first_of_each_id(table: pa.Table) -> pa.Table:
    ids = table["sample_id"]
    rows = pa.table({"sample_id": ids, "row": np.arange(len(table), dtype=np.int64)})
    first = rows.group_by("sample_id", use_threads=False).aggregate([("row", "min")])["row_min"]
    return table.take(np.sort(first.to_numpy()))


@contextmanager
def _registered(con: Any, name: str, table: pa.Table) -> Iterator[Any]:
    """An Arrow table visible to SQL as `name` (unregistered after any transaction inside ends)."""
    con.register(name, table)
    try:
        yield con
    finally:
        con.unregister(name)


@contextmanager
def _unordered_inserts(con: Any) -> Iterator[None]:
    """Let DuckDB insert on every thread (a database-wide setting, put back after)."""
    kept = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
    con.execute("SET preserve_insertion_order = false")
    try:
        yield
    finally:
        con.execute("SET preserve_insertion_order = ?", [bool(kept)])


def mark_exact_duplicates(catalog: Catalog, run_ids: list[str]) -> int:
    """Among the accepted samples of `run_ids`, mark every row whose content_hash an earlier
    row (by created_at, sample_id) has as a duplicate of that first row. Returns rows marked;
    a second call marks nothing, the first rows stay accepted."""
    with catalog.transaction() as con:
        marked = con.execute(
            f"""WITH accepted AS (
                    SELECT sample_id, content_hash, created_at FROM samples
                    WHERE {_RUNS} AND status = 'accepted' AND content_hash IS NOT NULL),
                 firsts AS (
                    SELECT content_hash, arg_min(sample_id, (created_at, sample_id)) AS first_id
                    FROM accepted GROUP BY content_hash HAVING count(*) > 1),
                 later AS (
                    SELECT a.sample_id, f.first_id FROM accepted a JOIN firsts f USING (content_hash)
                    WHERE a.sample_id <> f.first_id)
                UPDATE samples SET status = 'duplicate', reason = 'exact_duplicate', duplicate_of = later.first_id
                FROM later WHERE samples.sample_id = later.sample_id""",
            [run_ids]).fetchall()[0][0]
    return int(marked)


def accepted_per_leaf(catalog: Catalog, run_ids: list[str], strategy: str | None = None) -> dict[str | None, int]:
    """Accepted samples per leaf over `run_ids` (of one strategy, if given)."""
    rows = catalog.query(
        f"SELECT leaf_id, count(*) AS n FROM samples WHERE {_RUNS} AND status = 'accepted' AND {_STRATEGY} "
        "GROUP BY leaf_id", [run_ids, strategy, strategy])
    return {row["leaf_id"]: int(row["n"]) for row in rows}


def _leaf_table(values: dict[str | None, int], column: str) -> pa.Table:
    return pa.table({"leaf_id": pa.array(list(values), pa.string()),
                     column: pa.array(list(values.values()), pa.int64())})


def downsample(catalog: Catalog, run_ids: list[str], caps: dict[str | None, int], seed: int,
               strategy: str | None = None) -> int:
    """Mark accepted rows above each leaf's cap 'dropped', keeping the first by
    hash(sample_id, seed), sample_id (as `Catalog.drop_surplus`): the same seed keeps the
    same rows. Leaves without a cap are left alone. Returns rows dropped."""
    if not caps:
        return 0
    with catalog._lock, _registered(catalog.con, "bulk_caps", _leaf_table(caps, "cap")), \
            catalog.transaction() as con:
        dropped = con.execute(
            f"""WITH ranked AS (
                    SELECT s.sample_id, c.cap, row_number() OVER (
                        PARTITION BY s.leaf_id ORDER BY hash(s.sample_id, ?), s.sample_id) AS rank
                    FROM samples s JOIN bulk_caps c ON s.leaf_id IS NOT DISTINCT FROM c.leaf_id
                    WHERE s.{_RUNS} AND s.status = 'accepted'
                          AND (?::VARCHAR IS NULL OR s.strategy = ?::VARCHAR))
                UPDATE samples SET status = 'dropped', reason = ?
                FROM ranked WHERE samples.sample_id = ranked.sample_id AND ranked.rank > ranked.cap""",
            [seed, run_ids, strategy, strategy, DROP_REASON]).fetchall()[0][0]
    return int(dropped)


def rebalance_plan(catalog: Catalog, run_ids: list[str], targets: dict[str | None, int],
                   caps: dict[str | None, int] | None = None, seed: int = 0,
                   strategy: str | None = None) -> dict[str, Any]:
    """What rebalancing `run_ids` would take, changing nothing: per leaf (every leaf with
    accepted rows, a target or a cap) have, target (0 if none), deficit = max(0, target -
    have) to generate, surplus = max(0, have - cap) for `downsample(..., seed)` to drop;
    and the totals. One grouped scan of the samples."""
    have = accepted_per_leaf(catalog, run_ids, strategy)
    caps = caps or {}
    leaves: dict[str | None, dict[str, int]] = {}
    for leaf in sorted(set(have) | set(targets) | set(caps), key=lambda x: (x is not None, x or "")):
        n, target = have.get(leaf, 0), targets.get(leaf, 0)
        surplus = max(0, n - caps[leaf]) if leaf in caps else 0
        leaves[leaf] = {"have": n, "target": target, "deficit": max(0, target - n), "surplus": surplus}
    totals = {name: sum(row[name] for row in leaves.values()) for name in ("have", "target", "deficit", "surplus")}
    return {"run_ids": list(run_ids), "seed": seed, "leaves": leaves, **totals}
