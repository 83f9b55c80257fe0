"""Snapshots: immutable, named selections of a run's accepted samples, split train/test.

A snapshot freezes *which* samples make the dataset (their ids and each one's split) at
the moment it is taken, so an export made today and one made next month from the same
snapshot hold the same rows, whatever the run did in between (more rounds, rebalancing,
new rejects). Sample rows themselves are never rewritten once committed, so ids suffice.

The split is stratified by leaf and deterministic: inside each leaf, samples are ordered
by DuckDB's `hash(sample_id, seed)` (never `random()`), and the first
round(n * test_fraction) go to test, clamped so that a leaf with >= 2 samples has rows in
both splits and a leaf with one sample stays in train. The same catalog, seed and
fraction always give the same split.

Left out: editing a snapshot (make a new one), snapshots across several runs, and
anything about files (storage.publish.export writes them).
"""

from __future__ import annotations

import json
from typing import Any

from storage.catalog.catalog import Catalog, now
from synth.errors import SynthError
from synth.ids import stable_id

# Lineage columns carried next to the task's fields, in this order.
LINEAGE_COLUMNS = ("sample_id", "run_id", "leaf_id", "leaf_path", "strategy", "seed_row", "request_id",
                   "agreement", "n_solutions")
SPLITS = ("train", "test")


class SnapshotError(SynthError, ValueError):
    """A snapshot that cannot be made or found; the message says what to do."""


# The split of every accepted sample of one run, computed in SQL so that it scales to
# millions of rows without a Python loop. `n_test` is clamped to [1, n - 1] for leaves
# with >= 2 samples, and 0 for single-sample leaves or test_fraction = 0.
_SPLIT_SQL = """
    WITH accepted AS (
        SELECT sample_id, leaf_id FROM samples WHERE run_id = ? AND status = 'accepted'
    ), ranked AS (
        SELECT sample_id,
               row_number() OVER (PARTITION BY leaf_id ORDER BY hash(sample_id, ?::BIGINT), sample_id) AS rank,
               count(*) OVER (PARTITION BY leaf_id) AS n
        FROM accepted
    )
    SELECT sample_id,
           CASE WHEN ?::DOUBLE > 0 AND n >= 2
                     AND rank <= least(n - 1, greatest(1, CAST(floor(n * ?::DOUBLE + 0.5) AS BIGINT)))
                THEN 'test' ELSE 'train' END AS split
    FROM ranked
"""


def _check_args(test_fraction: float, name: str | None) -> None:
    if not 0.0 <= test_fraction < 1.0:
        raise SnapshotError(f"test_fraction must be in [0, 1), got {test_fraction}: write e.g. 0.1 for 10% test")
    if name is not None and not name.strip():
        raise SnapshotError("a snapshot name cannot be empty: pass a name such as 'v1', or none for a default")


def create_snapshot(catalog: Catalog, run_id: str, name: str | None = None,
                    test_fraction: float = 0.0, seed: int = 0) -> str:
    """Freeze the run's accepted samples now; returns the snapshot id.

    Taking a snapshot again with the same name and the same content returns the existing
    id; the same name over different content is an error (snapshots never change). With
    no name, the name is derived from the run and the content, so retaking an unchanged
    snapshot is idempotent too.
    """
    _check_args(test_fraction, name)
    run = catalog.run(run_id)
    if run is None:
        raise SnapshotError(f"no run {run_id!r} in {catalog.path}: see the runs with `synth stats`, "
                            "or run the recipe first")
    params = [run_id, int(seed), float(test_fraction), float(test_fraction)]
    with catalog.transaction() as con:
        con.execute("CREATE OR REPLACE TEMP TABLE pending_snapshot AS " + _SPLIT_SQL, params)
        n, digest = con.execute(
            "SELECT count(*), coalesce(bit_xor(hash(sample_id, split)), 0) "
            "FROM pending_snapshot").fetchone()
        if n == 0:
            con.execute("DROP TABLE pending_snapshot")
            raise SnapshotError(f"run {run_id} has no accepted samples yet: nothing to snapshot; "
                                "run or resume the recipe first")
        # The content tag names an unnamed snapshot; equality is checked exactly below.
        content_tag = f"{n}-{int(digest):016x}"
        name = name or f"{run['name']}-{content_tag}"
        existing = con.execute("SELECT snapshot_id, run_id FROM snapshots WHERE name = ?", [name]).fetchone()
        if existing is not None:
            same = existing[1] == run_id and con.execute(
                """SELECT count(*) = 0 FROM (
                       (SELECT sample_id, split FROM pending_snapshot
                        EXCEPT SELECT sample_id, split FROM snapshot_samples WHERE snapshot_id = ?)
                       UNION ALL
                       (SELECT sample_id, split FROM snapshot_samples WHERE snapshot_id = ?
                        EXCEPT SELECT sample_id, split FROM pending_snapshot))""",
                [existing[0], existing[0]]).fetchone()[0]
            con.execute("DROP TABLE pending_snapshot")
            if same:
                return existing[0]
            raise SnapshotError(
                f"a snapshot named {name!r} already exists with different content (snapshots are immutable): "
                "pick a new name, e.g. with a version suffix, or export the existing one as it is")
        snapshot_id = stable_id("snapshot", run_id, name, content_tag)
        con.execute("INSERT INTO snapshots (snapshot_id, name, run_id, n_samples, test_fraction, seed, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [snapshot_id, name, run_id, int(n), float(test_fraction), int(seed), now()])
        con.execute("INSERT INTO snapshot_samples (snapshot_id, sample_id, split) "
                    "SELECT ?, sample_id, split FROM pending_snapshot", [snapshot_id])
        con.execute("DROP TABLE pending_snapshot")
    return snapshot_id


def get_snapshot(catalog: Catalog, ref: str) -> dict[str, Any]:
    """A snapshot by id or by name, with its per-split counts."""
    rows = catalog.query(
        """SELECT s.snapshot_id, s.name, s.run_id, s.n_samples, s.test_fraction, s.seed, s.created_at,
                  count(*) FILTER (ss.split = 'train') AS n_train, count(*) FILTER (ss.split = 'test') AS n_test
           FROM snapshots s LEFT JOIN snapshot_samples ss USING (snapshot_id)
           WHERE s.snapshot_id = ? OR s.name = ?
           GROUP BY ALL""",
        [ref, ref])
    if not rows:
        raise SnapshotError(f"no snapshot {ref!r} in {catalog.path}: take one with "
                            "`synth export --snapshot NAME`")
    return rows[0]


def list_snapshots(catalog: Catalog) -> list[dict[str, Any]]:
    """Every snapshot, newest first, with its per-split counts."""
    return catalog.query(
        """SELECT s.snapshot_id, s.name, s.run_id, s.n_samples, s.test_fraction, s.seed, s.created_at,
                  count(*) FILTER (ss.split = 'train') AS n_train, count(*) FILTER (ss.split = 'test') AS n_test
           FROM snapshots s LEFT JOIN snapshot_samples ss USING (snapshot_id)
           GROUP BY ALL ORDER BY s.created_at DESC, s.name""")


def snapshot_rows(catalog: Catalog, snapshot_id: str) -> list[dict[str, Any]]:
    """The snapshot's rows, ordered by split then sample id: task fields flattened,
    then the lineage columns and `split`.

    `leaf_path` stays JSON text ('[["dimension", "value"], ...]'): one string column reads
    the same in Parquet, JSONL and every dataframe library. A task field that shares a
    lineage column's name keeps its name; the lineage column becomes `lineage_<name>`.
    """
    snapshot = get_snapshot(catalog, snapshot_id)
    rows = catalog.query(
        """SELECT s.fields, s.sample_id, s.run_id, s.leaf_id, s.leaf_path, s.strategy, s.seed_row, s.request_id,
                  s.agreement, s.n_solutions, ss.split
           FROM snapshot_samples ss JOIN samples_text s USING (sample_id)
           WHERE ss.snapshot_id = ?
           ORDER BY CASE ss.split WHEN 'train' THEN 0 WHEN 'test' THEN 1 ELSE 2 END, s.sample_id""",
        [snapshot["snapshot_id"]])
    if len(rows) != snapshot["n_samples"]:
        raise SnapshotError(f"snapshot {snapshot['name']} lists {snapshot['n_samples']} samples but "
                            f"{len(rows)} are in the catalog: the catalog was altered outside the factory")
    out = []
    for row in rows:
        fields = json.loads(row.pop("fields") or "{}")
        flat = dict(fields)
        for column in (*LINEAGE_COLUMNS, "split"):
            flat[f"lineage_{column}" if column in fields else column] = row[column]
        out.append(flat)
    return out
