"""Versions of a growing dataset: immutable snapshots v1, v2, ... with a changelog.

`create_version` selects what the dataset holds now, balanced to the run's leaf targets
(per leaf at most its target, the first by hash(sample_id, seed), so a lowered target
deletes nothing from the catalog and always selects the same rows), compares it with
the dataset's latest version, and either returns that version (nothing changed) or
freezes a new one. Rows keep the split they had in the version before; rows new in
this version are split among themselves, stratified by leaf (as storage/tables/snapshots.py
does for a whole run). Each row remembers the version that first held it
(`snapshot_samples.first_version`), which names its Parquet shard
(`data/train-v0002-00000-of-00001.parquet`): a version that only adds rows adds only
new shards, and a Hub push of it uploads only those (storage/publish/hub.py tags the commit
`v<N>`); a version that drops rows (a lowered target, a rebalanced leaf) rewrites the
shards of the versions it dropped them from.

`changelog` lists every version: rows added and removed, and by which runs, models and
strategies, for the dataset card.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from storage.catalog.catalog import Catalog, now
from storage.tables.datasets import Scope, members_sql
from synth.errors import SynthError
from synth.ids import stable_id


class NothingToVersion(SynthError, ValueError):
    """The dataset has no accepted member on its leaves: there is no version to make or export."""



def _targets_table(targets: dict[str | None, int]) -> pa.Table:
    return pa.table({"leaf": pa.array([k if k is not None else "" for k in targets], pa.string()),
                     "target": pa.array(list(targets.values()), pa.int64())})


def latest_version(catalog: Catalog, dataset: str) -> dict[str, Any] | None:
    rows = catalog.query("SELECT * FROM snapshots WHERE dataset = ? ORDER BY version DESC LIMIT 1", [dataset])
    return rows[0] if rows else None


def version_name(dataset: str, version: int) -> str:
    return f"{dataset}-v{version}"


def create_version(catalog: Catalog, scope: Scope, tree: Any | None, targets: dict[str | None, int], run_id: str,
                   seed: int = 0, test_fraction: float = 0.0) -> dict[str, Any]:
    """The dataset's version for what it holds now: {snapshot_id, name, version, new, added, removed}."""
    dataset = scope.dataset
    leaf_ids = [leaf.node_id for leaf in tree.leaves()] if tree is not None else []
    previous = latest_version(catalog, dataset)
    with catalog._lock:
        con = catalog.con
        con.register("scope_leaves", pa.table({"leaf_id": pa.array(leaf_ids, pa.string())}))
        con.register("version_targets", _targets_table(targets))
        try:
            sql, params = members_sql(scope, tree.tree_id if tree is not None else None, "scope_leaves")
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(
                    f"""CREATE OR REPLACE TEMP TABLE pending_version AS
                        WITH m AS ({sql}), ranked AS (
                            SELECT m.sample_id, coalesce(m.leaf, '') AS leaf, t.target, row_number() OVER (
                                PARTITION BY coalesce(m.leaf, '') ORDER BY hash(m.sample_id, ?::BIGINT), m.sample_id) AS rank
                            FROM m JOIN version_targets t ON t.leaf = coalesce(m.leaf, ''))
                        SELECT sample_id, leaf FROM ranked WHERE rank <= target""", [*params, int(seed)])
                result = _freeze(con, dataset, previous, run_id, seed, test_fraction)
                con.execute("DROP TABLE pending_version")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.unregister("scope_leaves")
            con.unregister("version_targets")
    return result


def _freeze(con: Any, dataset: str, previous: dict[str, Any] | None, run_id: str, seed: int,
            test_fraction: float) -> dict[str, Any]:
    n = con.execute("SELECT count(*) FROM pending_version").fetchone()[0]
    if n == 0:
        raise NothingToVersion(f"dataset {dataset} holds no accepted sample yet: nothing exported")
    prev_id = previous["snapshot_id"] if previous else None
    added, removed = con.execute(
        """SELECT (SELECT count(*) FROM pending_version WHERE sample_id NOT IN
                       (SELECT sample_id FROM snapshot_samples WHERE snapshot_id = ?)),
                  (SELECT count(*) FROM snapshot_samples WHERE snapshot_id = ? AND sample_id NOT IN
                       (SELECT sample_id FROM pending_version))""", [prev_id, prev_id]).fetchone()
    if previous is not None and added == 0 and removed == 0:
        return {"snapshot_id": prev_id, "name": previous["name"], "version": previous["version"], "new": False,
                "added": 0, "removed": 0, "rows": int(n)}
    version = (previous["version"] if previous else 0) + 1
    name = version_name(dataset, version)
    snapshot_id = stable_id("version", dataset, version, run_id)
    con.execute("INSERT INTO snapshots (snapshot_id, name, run_id, n_samples, test_fraction, seed, created_at, "
                "dataset, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [snapshot_id, name, run_id, int(n), float(test_fraction), int(seed), now(), dataset, version])
    # carried rows keep their split and first version; new rows: a stratified split of their own
    con.execute(
        """INSERT INTO snapshot_samples (snapshot_id, sample_id, split, first_version)
           SELECT ?, p.sample_id, o.split, coalesce(o.first_version, ?)
           FROM pending_version p JOIN snapshot_samples o ON o.snapshot_id = ? AND o.sample_id = p.sample_id""",
        [snapshot_id, version, prev_id])
    con.execute(
        """INSERT INTO snapshot_samples (snapshot_id, sample_id, split, first_version)
           WITH fresh AS (
               SELECT p.sample_id, p.leaf, row_number() OVER (
                          PARTITION BY p.leaf ORDER BY hash(p.sample_id, ?::BIGINT), p.sample_id) AS rank,
                      count(*) OVER (PARTITION BY p.leaf) AS n
               FROM pending_version p WHERE p.sample_id NOT IN (
                   SELECT sample_id FROM snapshot_samples WHERE snapshot_id = ?))
           SELECT ?, sample_id,
                  CASE WHEN ?::DOUBLE > 0 AND n >= 2
                            AND rank <= least(n - 1, greatest(1, CAST(floor(n * ?::DOUBLE + 0.5) AS BIGINT)))
                       THEN 'test' ELSE 'train' END, ?
           FROM fresh""",
        [int(seed), prev_id, snapshot_id, float(test_fraction), float(test_fraction), version])
    return {"snapshot_id": snapshot_id, "name": name, "version": version, "new": True, "added": int(added),
            "removed": int(removed), "rows": int(n)}


def changelog(catalog: Catalog, dataset: str, up_to: int | None = None) -> list[dict[str, Any]]:
    """Per version, oldest first: rows, added, removed, and the added rows by run, model, strategy."""
    versions = catalog.query(
        "SELECT snapshot_id, name, version, n_samples, run_id, created_at FROM snapshots "
        "WHERE dataset = ? AND (? IS NULL OR version <= ?) ORDER BY version", [dataset, up_to, up_to])
    out, prev = [], None
    for v in versions:
        added = catalog.query(
            """SELECT s.run_id, r.model, s.strategy, count(*) AS n
               FROM snapshot_samples ss JOIN samples s USING (sample_id) JOIN runs r ON r.run_id = s.run_id
               WHERE ss.snapshot_id = ? AND (?::VARCHAR IS NULL OR ss.sample_id NOT IN
                   (SELECT sample_id FROM snapshot_samples WHERE snapshot_id = ?))
               GROUP BY ALL ORDER BY n DESC, s.run_id, s.strategy""", [v["snapshot_id"], prev, prev])
        removed = 0 if prev is None else int(catalog.scalar(
            """SELECT count(*) FROM snapshot_samples WHERE snapshot_id = ? AND sample_id NOT IN
                   (SELECT sample_id FROM snapshot_samples WHERE snapshot_id = ?)""", [prev, v["snapshot_id"]]))
        out.append({"version": int(v["version"]), "name": v["name"], "rows": int(v["n_samples"]),
                    "added": sum(int(a["n"]) for a in added), "removed": removed,
                    "created_at": str(v["created_at"]), "run_id": v["run_id"],
                    "by": [{"run_id": a["run_id"], "model": a["model"], "strategy": a["strategy"], "rows": int(a["n"])}
                           for a in added]})
        prev = v["snapshot_id"]
    return out
