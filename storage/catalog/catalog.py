"""The DuckDB catalog: one file that holds every run, request, sample and tree.

Writes go in batches through Arrow (never row-by-row `executemany`) inside one
transaction per chunk, skipping ids that exist, so a chunk is committed whole or not
at all and a retried chunk writes nothing twice. Values always travel as bound
parameters or registered Arrow tables, never pasted into SQL.

DuckDB allows one read-write process per file: a second run on the same catalog gets
`CatalogBusy` with a message saying so, instead of waiting forever or corrupting it.
A damaged file, a file that is not a catalog, a folder that cannot be written, a full
disk or a lost text segment raise `CatalogError` with one line that names the file and
says what to do (storage/catalog/faults.py words them).
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import duckdb
import pyarrow as pa

from storage.catalog import faults, schema
from synth.errors import SynthError


class CatalogBusy(SynthError, RuntimeError):
    """Another process holds the catalog for writing."""


class CatalogError(SynthError, RuntimeError):
    """The catalog cannot be used as asked; the message names the file and says what to do."""



def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


# Column order and Arrow types for the batch-inserted tables.
_REQUEST_COLUMNS: dict[str, pa.DataType] = {
    "request_id": pa.string(), "run_id": pa.string(), "tree_id": pa.string(), "stage": pa.string(),
    "strategy": pa.string(), "leaf_id": pa.string(), "template": pa.string(), "template_hash": pa.string(),
    "prompt_hash": pa.string(), "sampling": pa.string(), "raw_text": pa.string(), "finish_reason": pa.string(),
    "prompt_tokens": pa.int32(), "completion_tokens": pa.int32(), "latency_s": pa.float64(),
    "error": pa.string(), "created_at": pa.timestamp("us"), "sample_id": pa.string(),
    "worker": pa.string(), "node": pa.string(),
}
_SAMPLE_COLUMNS: dict[str, pa.DataType] = {
    "sample_id": pa.string(), "run_id": pa.string(), "slot": pa.int32(), "attempt": pa.int32(),
    "leaf_id": pa.string(), "leaf_path": pa.string(), "strategy": pa.string(), "seed_row": pa.int32(),
    "request_id": pa.string(), "fields": pa.string(), "raw_text": pa.string(), "content_hash": pa.string(),
    "status": pa.string(), "reason": pa.string(), "duplicate_of": pa.string(), "quality": pa.float64(),
    "judge_rationale": pa.string(), "verified": pa.bool_(), "created_at": pa.timestamp("us"),
    "segment": pa.string(), "seed_key": pa.string(), "agreement": pa.float64(), "n_solutions": pa.int32(),
}
# The text columns a bulk-ingested row keeps in its Parquet segment (see `samples_text`).
SEGMENT_COLUMNS = ("fields", "raw_text", "leaf_path")
# why a sample that passed every check was dropped: another attempt filled its slot first.
# A later run of the dataset fills its fresh slots from these before it generates.
SURPLUS = "surplus: its slot is already filled"
_JSON_COLUMNS = {"sampling", "leaf_path", "fields"}


def _clean_text(value: Any) -> Any:
    # Lone surrogates cannot be stored as UTF-8: keep the text, spell the bad code points out.
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_clean_text(k): _clean_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_text(v) for v in value]
    return value


def _arrow(rows: list[dict[str, Any]], columns: dict[str, pa.DataType]) -> pa.Table:
    stamp = now()
    arrays = {}
    for name, kind in columns.items():
        values = []
        for row in rows:
            value = row.get(name)
            if name == "created_at" and value is None:
                value = stamp
            elif name in _JSON_COLUMNS and value is not None and not isinstance(value, str):
                value = _json(_clean_text(value))
            values.append(_clean_text(value))
        arrays[name] = pa.array(values, type=kind)
    return pa.table(arrays)


class Catalog:
    def __init__(self, path: str | Path, read_only: bool = False, wait_s: float = 0.0,
                 allow_missing_segments: bool = False) -> None:
        """Open (or create) the catalog. Another process writing it: `CatalogBusy` at once, or
        after waiting up to `wait_s` seconds for it to finish (a scheduled run that overlaps
        another waits its turn instead of failing). A registered text segment missing from
        the segments folder: `CatalogError`, unless `allow_missing_segments` (the integrity
        check opens it that way, to list them)."""
        import time

        self.path = Path(path)
        self.read_only = read_only
        if not read_only:
            with faults.raising(CatalogError, self.path, "the catalog"):
                self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise CatalogError(f"no catalog at {self.path}: run `synth run RECIPE` first, or pass --catalog PATH")
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            try:
                self.con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.Error as exc:
                if not any(word in str(exc).lower() for word in ("could not set lock", "conflicting lock")):
                    raise faults.as_error(exc, CatalogError, self.path, "the catalog") from None
                if time.monotonic() >= deadline:
                    waited = f" after waiting {wait_s:g} s" if wait_s > 0 else ""
                    raise CatalogBusy(
                        f"the catalog {self.path} is in use by another process{waited} ({exc}); wait for that run "
                        "to finish (or pass a longer wait) or give this run its own catalog with --catalog PATH"
                    ) from None
                time.sleep(min(2.0, max(0.05, deadline - time.monotonic())))
        self._lock = threading.RLock()  # one connection, used from the flow's task threads in turn
        self._column_types: dict[str, dict[str, str]] = {}  # table -> column -> type, read once (see _columns)
        self.missing_segments: list[str] = []
        try:
            with faults.raising(CatalogError, self.path, "the catalog"):
                if not read_only:
                    schema.create_all(self.con)
                self.refresh_text_view()
            if self.missing_segments and not allow_missing_segments:
                shown = ", ".join(self.missing_segments[:3]) + (" ..." if len(self.missing_segments) > 3 else "")
                raise CatalogError(
                    f"the catalog {self.path} has lost {len(self.missing_segments)} text segment file(s) from "
                    f"{self.segment_dir} ({shown}): put the folder back from a backup (`synth catalog backup`), "
                    "or see README > Reliability; `synth stats --check` lists them")
        except BaseException:
            self.con.close()
            raise

    @property
    def segment_dir(self) -> Path:
        """Where bulk ingest puts the Parquet segments of this catalog (beside its file)."""
        return self.path.with_name(self.path.name + ".segments")

    def refresh_text_view(self) -> None:
        """(Re)define the temp view `samples_text`: `samples` with the text columns of
        bulk-ingested rows read from their segments. Readers of fields, raw_text or
        leaf_path use it; everything else reads `samples`. Only segments registered in
        the catalog are read: a file left by a crash before its commit is ignored."""
        with self._lock:
            files = [str(self.segment_dir / row[0]) for row in self.con.execute(
                "SELECT segment FROM segments ORDER BY segment").fetchall()] if self._has_segments_table() else []
            # a lost file would fail every read of the view: it is left out here, and the
            # catalog refuses to open with it missing unless asked to (see __init__)
            self.missing_segments = [Path(f).name for f in files if not Path(f).exists()]
            files = [f for f in files if Path(f).exists()]
            if not files:
                sql = "SELECT * FROM samples"
            else:
                # a view cannot take bound parameters: the paths are ours, quoted as SQL strings
                listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                replaced = ", ".join(f"g.{c} AS {c}" for c in SEGMENT_COLUMNS)
                sql = (f"SELECT * FROM samples WHERE segment IS NULL UNION ALL BY NAME "
                       f"SELECT s.* REPLACE ({replaced}) FROM samples s "
                       f"JOIN read_parquet([{listed}]) g ON s.sample_id = g.sample_id WHERE s.segment IS NOT NULL")
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW samples_text AS {sql}")

    def _has_segments_table(self) -> bool:
        # a read-only catalog of an older schema has no segments table (nor segments)
        return bool(self.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'segments' AND NOT temporary").fetchall()[0][0])

    @staticmethod
    def insert_samples(con: duckdb.DuckDBPyConnection, source: str, checked: bool = False) -> int:
        """Insert the rows of the registered relation `source` into samples, skipping an id
        that exists in the catalog (of rows repeating an id within `source`, one is
        written; bulk ingest keeps the first); returns rows written. Every insert
        into samples goes through here: it is what keeps sample ids unique (the table has
        no key, see storage/catalog/schema.py). Call it inside a transaction, under the lock.
        `checked`: the caller has already dropped such rows, under the same lock (bulk
        ingest does it in Arrow, where it costs a fraction of this query)."""
        # `source` is one of our own registered names, never user input
        if checked:
            return int(con.execute(f"INSERT INTO samples BY NAME SELECT * FROM {source}").fetchall()[0][0])
        return int(con.execute(
            f"""INSERT INTO samples BY NAME
                SELECT * EXCLUDE (first_of_id) FROM (
                    SELECT *, row_number() OVER (PARTITION BY sample_id) = 1 AS first_of_id FROM {source} i
                    WHERE NOT EXISTS (SELECT 1 FROM samples s WHERE s.sample_id = i.sample_id))
                WHERE first_of_id""").fetchall()[0][0])

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction; a COMMIT that fails (a full disk) leaves nothing of it behind."""
        with self._lock, faults.raising(CatalogError, self.path, "the catalog"):
            self.con.execute("BEGIN TRANSACTION")
            try:
                yield self.con
            except BaseException:
                try:
                    self.con.execute("ROLLBACK")
                except duckdb.Error:
                    pass  # DuckDB already ended it (a failed statement on a damaged file): keep the first error
                raise
            self.con.execute("COMMIT")

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        with self._lock, faults.raising(CatalogError, self.path, "the catalog"):
            cursor = self.con.execute(sql, list(params))
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def scalar(self, sql: str, params: Iterable[Any] = ()) -> Any:
        with self._lock, faults.raising(CatalogError, self.path, "the catalog"):
            rows = self.con.execute(sql, list(params)).fetchall()  # fetchone would leave the result open
        return rows[0][0] if rows else None

    # -- reading rows by what the caller wants: names checked against the file, values bound ------------

    def samples(self, columns: Sequence[str] | None = None, *,
                order_by: str | Sequence[str] = ("slot", "attempt", "sample_id"), **equals: Any) -> list[dict[str, Any]]:
        """The samples whose columns equal `equals` (a list, tuple or set: any of its values; None:
        NULL), e.g. `samples(("slot",), run_id=r, status="accepted")`; all columns unless
        `columns`; in slot order unless `order_by`. The text columns (fields, raw_text,
        leaf_path) are read through `samples_text`, so bulk-ingested rows have theirs; JSON
        columns (fields, leaf_path) come back decoded."""
        columns = [columns] if isinstance(columns, str) else columns
        text = columns is None or not set(SEGMENT_COLUMNS).isdisjoint(columns)
        return self._select("samples", columns, order_by, equals, source="samples_text" if text else "samples")

    def requests(self, columns: Sequence[str] | None = None, *,
                 order_by: str | Sequence[str] = ("created_at", "request_id"), **equals: Any) -> list[dict[str, Any]]:
        """The requests whose columns equal `equals` (as `samples`), e.g. `requests(stage="judge")`;
        in the order they were made unless `order_by`; `sampling` decoded."""
        return self._select("requests", columns, order_by, equals)

    def runs(self, columns: Sequence[str] | None = None, *,
             order_by: str | Sequence[str] = ("started_at", "run_id"), **equals: Any) -> list[dict[str, Any]]:
        """The runs whose columns equal `equals` (as `samples`), e.g. `runs(dataset=d)`, first
        started first; `recipe` decoded. One run by id: `run(run_id)`."""
        return self._select("runs", columns, order_by, equals)

    def failed_chunks(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Chunks an executor gave up on (of `run_id`, or every run's), with their `attempts`
        ([[slot, attempt], ...]) and `workers` decoded; [] in a catalog older than schema 5."""
        return self._select("failed_chunks", None, ("created_at", "chunk_id"),
                            {} if run_id is None else {"run_id": run_id})

    def count(self, table: str, *, distinct: str | None = None, **equals: Any) -> int:
        """Rows of `table` whose columns equal `equals` (as `samples`), or the distinct values of
        `distinct` among them: `count("samples", distinct="slot", status="accepted")` is the
        slots filled. A table of the schema that this (older, read-only) file lacks holds 0."""
        known = self._columns(table)
        if not known:
            return 0
        self._check(table, [*equals, *([distinct] if distinct else [])], known)
        where, params = self._where(equals)
        return int(self.scalar(f"SELECT count({f'DISTINCT {distinct}' if distinct else '*'}) FROM {table}{where}",
                               params) or 0)

    def _select(self, table: str, columns: Sequence[str] | None, order_by: str | Sequence[str],
                equals: dict[str, Any], source: str | None = None) -> list[dict[str, Any]]:
        known = self._columns(table)
        if not known:
            return []  # a table of the schema that this (older, read-only) file lacks
        names = list(known) if columns is None else [columns] if isinstance(columns, str) else list(columns)
        order = [order_by] if isinstance(order_by, str) else list(order_by)
        self._check(table, [*names, *order, *equals], known)
        where, params = self._where(equals)
        # every name is a column of the table in this file (checked above): no caller text reaches the SQL
        rows = self.query(f"SELECT {', '.join(names)} FROM {source or table}{where}"
                          + (f" ORDER BY {', '.join(order)}" if order else ""), params)
        decoded = [name for name in names if known[name] == "JSON"]
        for row in rows:
            for name in decoded:
                if isinstance(row[name], str):
                    row[name] = json.loads(row[name])
        return rows

    def _columns(self, table: str) -> dict[str, str]:
        """column -> type of one of the schema's tables as this file has it ({} if it lacks the table)."""
        if table not in schema.TABLES:
            raise CatalogError(f"no table {table!r} in the catalog's schema (storage/catalog/schema.py)")
        if table not in self._column_types:
            self._column_types[table] = {r["column_name"]: r["data_type"] for r in self.query(
                """SELECT column_name, data_type FROM information_schema.columns
                   WHERE table_catalog = current_database() AND table_schema = 'main' AND table_name = ?
                   ORDER BY ordinal_position""", [table])}
        return self._column_types[table]

    @staticmethod
    def _check(table: str, names: Iterable[str], known: dict[str, str]) -> None:
        unknown = sorted({name for name in names if name not in known})
        if unknown:
            raise CatalogError(f"table {table} has no column(s) {unknown}")

    @staticmethod
    def _where(equals: dict[str, Any]) -> tuple[str, list[Any]]:
        """` WHERE a = ? AND b IN (?, ?) AND c IS NULL` for checked column names, and its values."""
        clauses, params = [], []
        for name, value in equals.items():
            if value is None:
                clauses.append(f"{name} IS NULL")
            elif isinstance(value, (list, tuple, set, frozenset)):
                values = list(value)
                clauses.append(f"{name} IN ({', '.join('?' * len(values))})" if values else "false")
                params += values
            else:
                clauses.append(f"{name} = ?")
                params.append(value)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def physical_problems(self) -> list[str]:
        """Damaged blocks of the file, each as a sentence (storage/catalog/faults.py); [] when every table
        and key index reads back."""
        with self._lock:
            return faults.physical_problems(self.con)

    # -- runs -------------------------------------------------------------------------

    def start_run(self, run_id: str, name: str, recipe: dict[str, Any], recipe_hash: str,
                  backend: str, model: str, *, dataset: str | None = None, kind: str = "generate",
                  target: int | None = None, base_hash: str | None = None) -> int:
        """Create the run, or mark a rerun of it; returns how many times it has started.
        A run with a `dataset` is a contribution to it (the dataset is created if new)."""
        import os
        import socket

        stamp = now()
        with self.transaction() as con:
            con.execute(
                """INSERT INTO runs (run_id, name, recipe, recipe_hash, backend, model, status, attempts,
                                     started_at, updated_at, dataset, kind, target, base_hash, pid, host)
                   VALUES (?, ?, ?, ?, ?, ?, 'running', 1, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (run_id) DO UPDATE SET attempts = runs.attempts + 1, status = 'running',
                       updated_at = excluded.updated_at, finished_at = NULL, message = NULL,
                       pid = excluded.pid, host = excluded.host""",
                [run_id, name, _json(recipe), recipe_hash, backend, model, stamp, stamp, dataset, kind, target,
                 base_hash, os.getpid(), socket.gethostname()],
            )
            if dataset is not None:
                con.execute(
                    """INSERT INTO datasets (dataset, task_name, target, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
                       ON CONFLICT (dataset) DO UPDATE SET target = greatest(datasets.target, excluded.target),
                           updated_at = excluded.updated_at""",
                    [dataset, name, int(target or 0), stamp, stamp])
            return con.execute("SELECT attempts FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]

    def update_run(self, run_id: str, **fields: Any) -> None:
        allowed = {"status", "strategy", "strategy_reason", "tree_id", "message", "finished_at", "target"}
        unknown = set(fields) - allowed
        if unknown:
            raise CatalogError(f"cannot update run columns {sorted(unknown)}")
        sets = ", ".join(f"{name} = ?" for name in fields)  # names from the allow-list above
        with self._lock, faults.raising(CatalogError, self.path, "the catalog"):
            self.con.execute(f"UPDATE runs SET {sets}, updated_at = ? WHERE run_id = ?",
                             [*fields.values(), now(), run_id])

    def run(self, run_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM runs WHERE run_id = ?", [run_id])
        return rows[0] if rows else None

    def latest_run_id(self) -> str | None:
        return self.scalar("SELECT run_id FROM runs ORDER BY updated_at DESC LIMIT 1")

    # -- requests and samples -----------------------------------------------------------

    @staticmethod
    def commit_requests(con: duckdb.DuckDBPyConnection, requests: list[dict[str, Any]]) -> None:
        """Insert request rows inside the caller's transaction; existing ids are skipped."""
        con.register("incoming_requests", _arrow(requests, _REQUEST_COLUMNS))
        con.execute("INSERT OR IGNORE INTO requests BY NAME SELECT * FROM incoming_requests")
        con.unregister("incoming_requests")

    def commit_chunk(self, requests: list[dict[str, Any]], samples: list[dict[str, Any]]) -> None:
        """Write one chunk's requests and samples in one transaction; existing ids are skipped."""
        with self.transaction() as con:
            if requests:
                self.commit_requests(con, requests)
            if samples:
                con.register("incoming_samples", _arrow(samples, _SAMPLE_COLUMNS))
                self.insert_samples(con, "incoming_samples")
                con.unregister("incoming_samples")

    def record_failed_chunk(self, run_id: str, chunk_id: str, attempts: list[list[int]], tries: int,
                            workers: list[str], error: str) -> None:
        """A chunk an executor gave up on (one row per chunk; a later start's failure replaces it)."""
        with self.transaction() as con:
            con.execute("INSERT OR REPLACE INTO failed_chunks (run_id, chunk_id, attempts, tries, workers, error, "
                        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [run_id, chunk_id, _json(attempts), tries, _json(workers), error[:2000], now()])

    def slot_states(self, run_id: str) -> dict[int, tuple[bool, int, int]]:
        """slot -> (has an accepted sample, attempts made so far, next attempt number)."""
        rows = self.query(
            """SELECT slot, bool_or(status = 'accepted') AS done, count(*) AS attempts, max(attempt) + 1 AS next
               FROM samples WHERE run_id = ? GROUP BY slot""",
            [run_id],
        )
        return {r["slot"]: (bool(r["done"]), int(r["attempts"]), int(r["next"])) for r in rows}

    def leaf_yield(self, run_id: str) -> dict[str | None, tuple[int, int]]:
        """leaf -> (accepted, attempts) so far: the measured acceptance rate of each leaf's generation."""
        rows = self.query(
            """SELECT leaf_id, count(*) FILTER (status IN ('accepted', 'dropped')) AS ok, count(*) AS n
               FROM samples WHERE run_id = ? AND strategy <> 'existing' GROUP BY leaf_id""", [run_id])
        return {r["leaf_id"]: (int(r["ok"]), int(r["n"])) for r in rows}

    def drop_surplus(self, run_id: str, seed: int) -> int:
        """Keep one accepted sample per slot, chosen by hash(id, seed); mark the rest dropped."""
        with self.transaction() as con:
            before = con.execute("SELECT count(*) FROM samples WHERE run_id = ? AND status = 'dropped'",
                                 [run_id]).fetchone()[0]
            con.execute(
                """UPDATE samples SET status = 'dropped', reason = ?
                   WHERE sample_id IN (
                       SELECT sample_id FROM (
                           SELECT sample_id, row_number() OVER (
                               PARTITION BY slot ORDER BY hash(sample_id, ?), sample_id) AS rank
                           FROM samples WHERE run_id = ? AND status = 'accepted')
                       WHERE rank > 1)""",
                [SURPLUS, seed, run_id])
            after = con.execute("SELECT count(*) FROM samples WHERE run_id = ? AND status = 'dropped'",
                                [run_id]).fetchone()[0]
        return int(after - before)

    def reuse_surplus(self, run_id: str, picks: Sequence[tuple[str, int]]) -> int:
        """Copy each surplus sample of `picks` (sample_id, slot) into `run_id` as the accepted
        sample of that slot (id from the run and the original; its request stays the lineage),
        and mark the original `reused` so that no other run takes it. One transaction: a
        crash leaves both or neither. Returns the copies written."""
        if not picks:
            return 0
        with self.transaction() as con:
            con.register("reuse_picks", pa.table({"original": [p[0] for p in picks], "to_slot": [p[1] for p in picks]}))
            try:
                copies = con.sql(
                    """SELECT 's' || substr(sha256(? || '/' || t.sample_id), 1, 24) AS sample_id, ? AS run_id,
                              p.to_slot AS slot, 0 AS attempt, t.leaf_id, t.leaf_path, t.strategy, t.seed_row,
                              t.request_id, t.fields, t.raw_text, t.content_hash, 'accepted' AS status,
                              t.quality, t.verified, now()::TIMESTAMP AS created_at, t.judge_rationale,
                              t.seed_key, t.agreement, t.n_solutions
                       FROM samples_text t JOIN reuse_picks p ON p.original = t.sample_id
                       WHERE t.status = 'dropped' AND t.reason = ?""",
                    params=[run_id, run_id, SURPLUS]).to_arrow_table()
                con.register("reused_samples", copies)
                written = self.insert_samples(con, "reused_samples")
                con.execute("""UPDATE samples SET reason = 'reused: copied into run ' || ?
                               WHERE sample_id IN (SELECT original FROM reuse_picks) AND status = 'dropped'
                                 AND reason = ?""", [run_id, SURPLUS])
            finally:
                con.unregister("reuse_picks")
                con.unregister("reused_samples")
        return written

    def adopt_existing(self, run_id: str, import_run_id: str) -> int:
        """Copy an import's accepted rows into `run_id` as strategy 'existing' (slot -1 - row,
        seed_row = row, the classify request kept as lineage); copies that exist are skipped."""
        with self.transaction() as con:
            # the copies carry their text inline: a copy's id is not the one its segment knows
            copies = con.sql(
                """SELECT 's' || substr(sha256(? || '/' || sample_id), 1, 24) AS sample_id, ? AS run_id,
                          -1 - slot AS slot, 0 AS attempt, leaf_id, leaf_path, 'existing' AS strategy,
                          slot AS seed_row, request_id, fields, content_hash, 'accepted' AS status,
                          now()::TIMESTAMP AS created_at
                   FROM samples_text WHERE run_id = ? AND status = 'accepted'""",
                params=[run_id, run_id, import_run_id]).to_arrow_table()
            con.register("adopted_samples", copies)
            try:
                return self.insert_samples(con, "adopted_samples")
            finally:
                con.unregister("adopted_samples")

    def save_leaf_targets(self, run_id: str, rows: list[dict[str, Any]]) -> None:
        """The plan's target per leaf (and what the rebalanced dataset held), for reports."""
        with self.transaction() as con:
            con.execute("DELETE FROM leaf_targets WHERE run_id = ?", [run_id])
            con.executemany(
                "INSERT INTO leaf_targets (run_id, leaf_id, label, target, existing) VALUES (?, ?, ?, ?, ?)",
                [[run_id, r["leaf_id"] or "", r["label"], r["target"], r["existing"]] for r in rows])

    def leaf_targets(self, run_id: str) -> dict[str, dict[str, Any]]:
        return {r["leaf_id"]: r for r in self.query(
            "SELECT leaf_id, label, target, existing FROM leaf_targets WHERE run_id = ? ORDER BY label", [run_id])}

    def accepted_samples(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.query(
            """SELECT sample_id, slot, leaf_id, leaf_path, strategy, seed_row, request_id, fields, quality, verified
               FROM samples_text WHERE run_id = ? AND status = 'accepted' ORDER BY slot, sample_id""",
            [run_id],
        )
        for row in rows:
            row["fields"] = json.loads(row["fields"]) if row["fields"] else {}
            row["leaf_path"] = json.loads(row["leaf_path"]) if row["leaf_path"] else []
        return rows

    def stats(self, run_id: str | None = None) -> dict[str, Any]:
        where, params = ("WHERE run_id = ?", [run_id]) if run_id else ("", [])
        by_status = {r["status"]: int(r["n"]) for r in self.query(
            f"SELECT status, count(*) AS n FROM samples {where} GROUP BY status", params)}
        reasons = {r["reason"]: int(r["n"]) for r in self.query(
            f"SELECT split_part(reason, ':', 1) AS reason, count(*) AS n FROM samples {where} "
            f"{'AND' if where else 'WHERE'} status <> 'accepted' AND reason IS NOT NULL "
            "GROUP BY 1 ORDER BY n DESC, 1", params)}
        req = self.query(
            f"""SELECT count(*) AS n, coalesce(sum(prompt_tokens), 0) AS pt, coalesce(sum(completion_tokens), 0) AS ct,
                       count(error) AS errors FROM requests {where}""", params)[0]
        verified = self.query(
            f"SELECT count(*) FILTER (verified) AS ok, count(*) FILTER (NOT verified) AS failed FROM samples {where}",
            params)[0]
        return {
            "run_id": run_id,
            "samples": {status: by_status.get(status, 0)
                        for status in ("accepted", "rejected", "duplicate", "filtered", "dropped")},
            "reject_reasons": reasons,
            "verified": {"passed": int(verified["ok"]), "failed": int(verified["failed"])},
            "requests": int(req["n"]),
            "request_errors": int(req["errors"]),
            "tokens": {"prompt": int(req["pt"]), "completion": int(req["ct"])},
            # chunks a Ray cluster gave up on (0 in a catalog older than schema 5, opened read-only)
            "failed_chunks": self.count("failed_chunks", **({"run_id": run_id} if run_id else {})),
        }

    def integrity_problems(self) -> list[str]:
        """What would make the catalog untrustworthy, each as a sentence; [] when sound.
        Run after a crash, a kill or a refused second writer (the tests do)."""
        checks = [
            ("SELECT count(*) - count(DISTINCT sample_id) FROM samples", "sample ids written twice"),
            ("SELECT count(*) - count(DISTINCT request_id) FROM requests", "request ids written twice"),
            # the factory's runs keep full lineage; rows bulk-ingested from elsewhere may not
            ("""SELECT count(*) FROM samples s JOIN runs USING (run_id) WHERE s.request_id IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM requests q WHERE q.request_id = s.request_id)""",
             "samples whose request is missing"),
            ("""SELECT count(*) FROM (SELECT run_id, slot FROM samples WHERE status = 'accepted' AND slot >= 0
                   GROUP BY ALL HAVING count(*) > 1)""", "slots with more than one accepted sample"),
        ]
        segmented = self._has_segments_table()  # a catalog of schema < 3 opened read-only has no segments
        if segmented:
            checks.append((
                "SELECT count(*) FROM samples WHERE segment IS NOT NULL AND segment NOT IN (SELECT segment FROM segments)",
                "bulk rows whose text segment is not registered"))
        problems = [f"{n} {what}" for sql, what in checks if (n := self.scalar(sql))]
        registered = [r["segment"] for r in self.query("SELECT segment FROM segments")] if segmented else []
        missing = [name for name in registered if not (self.segment_dir / name).exists()]
        if missing:
            problems.append(f"{len(missing)} registered text segments missing from {self.segment_dir}: {missing[:3]}")
        return problems

