"""Datasets in the catalog: what a dataset holds now, counted on its current tree.

A dataset is what a user keeps; each run is one contribution to it (`runs.dataset`).
Its members are the accepted samples of its contributions, minus the ones a recipe
excludes on purpose (`reuse:` by model, template hash or run, or `fresh: true`). A
member's leaf on a tree is its own leaf when that tree has it (the same path hashes to
the same leaf id in every tree), else where `leaf_moves` put it when it was classified
onto that tree (see `storage/runs/placement.py`); a member nobody has placed yet counts on
no leaf. Without a tree every member counts in the one bucket `None`.

Every query is one grouped scan over `samples` joined to the (small) runs and moves
tables, with values as bound parameters or registered Arrow tables, so planning a
growth step stays fast on catalogs of millions of rows (BENCHMARKS.md).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import pyarrow as pa

from storage.catalog.catalog import SURPLUS, Catalog


@dataclass(frozen=True)
class Scope:
    """Which samples of a dataset count: its accepted members, minus the excluded ones."""

    dataset: str
    exclude_runs: tuple[str, ...] = ()
    exclude_models: tuple[str, ...] = ()
    exclude_templates: tuple[str, ...] = ()
    only_runs: tuple[str, ...] | None = None  # `fresh: true`: only these runs count

    @classmethod
    def of(cls, recipe: Any, run_id: str) -> "Scope":
        reuse = recipe.reuse
        return cls(recipe.dataset_name, tuple(reuse.exclude_runs), tuple(reuse.exclude_models),
                   tuple(reuse.exclude_templates), (run_id,) if reuse.fresh else None)

    def without(self, run_id: str) -> "Scope":
        return Scope(self.dataset, (*self.exclude_runs, run_id), self.exclude_models, self.exclude_templates,
                     tuple(r for r in self.only_runs if r != run_id) if self.only_runs is not None else None)

    def where(self, alias: str = "s", status: str = "accepted") -> tuple[str, list[Any]]:
        """SQL (over samples `alias` joined to runs `r`) and its parameters: the samples of
        `status` (members: accepted) that this scope counts."""
        sql = [f"r.dataset = ?", f"{alias}.status = ?",
               f"NOT list_contains(?::VARCHAR[], r.run_id)", f"NOT list_contains(?::VARCHAR[], r.model)"]
        params: list[Any] = [self.dataset, status, list(self.exclude_runs), list(self.exclude_models)]
        if self.only_runs is not None:
            sql.append("list_contains(?::VARCHAR[], r.run_id)")
            params.append(list(self.only_runs))
        if self.exclude_templates:
            # a sample made with an excluded template: its lineage request, or any request made for it
            sql.append(f"""NOT EXISTS (SELECT 1 FROM requests q WHERE list_contains(?::VARCHAR[], q.template_hash)
                              AND (q.request_id = {alias}.request_id OR q.sample_id = {alias}.sample_id))""")
            params.append(list(self.exclude_templates))
        return " AND ".join(sql), params


@contextmanager
def _leaves(catalog: Catalog, leaf_ids: Sequence[str]) -> Iterator[str]:
    name = "scope_leaves"
    catalog.con.register(name, pa.table({"leaf_id": pa.array(list(leaf_ids), pa.string())}))
    try:
        yield name
    finally:
        catalog.con.unregister(name)


def members_sql(scope: Scope, tree_id: str | None, leaves_table: str | None) -> tuple[str, list[Any]]:
    """SELECT sample_id, run_id, leaf (on the tree), native_leaf, strategy, seed_key, seed_row, created_at."""
    where, params = scope.where("s")
    if tree_id is None:
        leaf = "NULL::VARCHAR"
        moves = ""
    else:
        leaf = (f"CASE WHEN s.leaf_id IN (SELECT leaf_id FROM {leaves_table}) THEN s.leaf_id "
                "ELSE m.leaf_id END")
        moves = "LEFT JOIN leaf_moves m ON m.tree_id = ? AND m.sample_id = s.sample_id"
        params = [tree_id, *params]
    sql = (f"SELECT s.sample_id, s.run_id, {leaf} AS leaf, s.leaf_id AS native_leaf, s.strategy, s.seed_key, "
           f"s.seed_row, s.created_at, s.content_hash FROM samples s JOIN runs r USING (run_id) {moves} WHERE {where}")
    return sql, params


def members_per_leaf(catalog: Catalog, scope: Scope, tree: Any | None) -> dict[str | None, int]:
    """Members per leaf of `tree` (None: every member in one bucket). Unplaced members are
    counted under the key '' so a caller can see them."""
    leaf_ids = [leaf.node_id for leaf in tree.leaves()] if tree is not None else []
    with catalog._lock, _leaves(catalog, leaf_ids) as table:
        sql, params = members_sql(scope, tree.tree_id if tree is not None else None, table)
        rows = catalog.con.execute(f"SELECT coalesce(leaf, CASE WHEN ? THEN '' END) AS leaf, count(*) AS n "
                                   f"FROM ({sql}) GROUP BY 1", [tree is not None, *params]).fetchall()
    return {leaf: int(n) for leaf, n in rows}


def unplaced(catalog: Catalog, scope: Scope, tree: Any) -> list[dict[str, Any]]:
    """Members that have no leaf on `tree` yet: made under another tree, or without one.
    `carried_leaf`: a leaf of `tree` that an earlier placement (on another tree) gave the
    sample, which it keeps without being classified again."""
    leaf_ids = [leaf.node_id for leaf in tree.leaves()]
    with catalog._lock, _leaves(catalog, leaf_ids) as table:
        sql, params = members_sql(scope, tree.tree_id, table)
        cursor = catalog.con.execute(
            f"""SELECT u.sample_id, u.native_leaf, t.fields, t.leaf_path,
                       (SELECT arg_max(o.leaf_id, o.created_at) FROM leaf_moves o
                        WHERE o.sample_id = u.sample_id AND o.leaf_id IN (SELECT leaf_id FROM {table})) AS carried_leaf
                FROM ({sql}) u JOIN samples_text t USING (sample_id)
                WHERE u.leaf IS NULL AND NOT EXISTS (
                    SELECT 1 FROM leaf_moves m WHERE m.tree_id = ? AND m.sample_id = u.sample_id)
                ORDER BY u.created_at, u.sample_id""", [*params, tree.tree_id])
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def surplus_reserve(catalog: Catalog, scope: Scope) -> list[dict[str, Any]]:
    """Rows the scope's runs paid for, that passed every check, and that were dropped only
    because their slot had been filled by another attempt (`SURPLUS`), oldest first: a run
    fills its fresh slots from them before it generates (RunLedger.reuse_surplus)."""
    where, params = scope.where("s", status="dropped")
    return catalog.query(
        f"""SELECT s.sample_id, s.run_id, s.leaf_id, s.strategy, s.content_hash, t.fields
            FROM samples s JOIN runs r USING (run_id) JOIN samples_text t USING (sample_id)
            WHERE {where} AND s.reason = ? ORDER BY s.created_at, s.sample_id""", [*params, SURPLUS])


def seed_usage(catalog: Catalog, scope: Scope) -> dict[str, int]:
    """seed_key -> members made from that seed row (any strategy)."""
    where, params = scope.where("s")
    rows = catalog.query(f"SELECT s.seed_key, count(*) AS n FROM samples s JOIN runs r USING (run_id) "
                         f"WHERE {where} AND s.seed_key IS NOT NULL GROUP BY 1", params)
    return {r["seed_key"]: int(r["n"]) for r in rows}


def dedup_rows(catalog: Catalog, scope: Scope) -> list[dict[str, Any]]:
    """(sample_id, content_hash, strategy, fields) of every member, oldest first: the dedup index."""
    where, params = scope.where("s")
    return catalog.query(
        f"""SELECT s.sample_id, s.content_hash, s.strategy, s.fields FROM samples_text s JOIN runs r USING (run_id)
            WHERE {where} ORDER BY s.created_at, s.sample_id""", params)


def dataset_row(catalog: Catalog, dataset: str) -> dict[str, Any] | None:
    rows = catalog.query("SELECT * FROM datasets WHERE dataset = ?", [dataset])
    return rows[0] if rows else None


def list_datasets(catalog: Catalog) -> list[dict[str, Any]]:
    return catalog.query("SELECT * FROM datasets ORDER BY updated_at DESC, dataset")


def set_tree(catalog: Catalog, dataset: str, tree_id: str | None) -> None:
    with catalog._lock:
        catalog.con.execute("UPDATE datasets SET tree_id = ?, updated_at = now()::TIMESTAMP WHERE dataset = ?",
                            [tree_id, dataset])


def set_target(catalog: Catalog, dataset: str, target: int) -> None:
    with catalog._lock:
        catalog.con.execute("UPDATE datasets SET target = ?, updated_at = now()::TIMESTAMP WHERE dataset = ?",
                            [int(target), dataset])


@dataclass
class Contribution:
    run_id: str
    model: str
    backend: str
    strategy: str | None
    status: str
    target: int | None
    accepted: int  # accepted samples it made
    kept: int  # of those, the ones that count for the asking recipe (not excluded by `reuse:`)
    started_at: Any = None


@dataclass
class DatasetSummary:
    dataset: str
    target: int
    tree_id: str | None
    total: int
    per_leaf: dict[str | None, int]
    contributions: list[Contribution] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "target": self.target, "tree_id": self.tree_id, "total": self.total,
                "per_leaf": {k if k is not None else "(all)": v for k, v in self.per_leaf.items()},
                "contributions": [c.__dict__ | {"started_at": str(c.started_at)} for c in self.contributions]}


def summary(catalog: Catalog, dataset: str, tree: Any | None = None, scope: Scope | None = None) -> DatasetSummary:
    """What the dataset holds: total, per leaf of its tree, per contribution."""
    row = dataset_row(catalog, dataset) or {"target": 0, "tree_id": None}
    scope = scope or Scope(dataset)
    per_leaf = members_per_leaf(catalog, scope, tree)
    counted_where, counted_params = scope.where("s")
    runs = catalog.query(
        f"""SELECT r.run_id, r.model, r.backend, r.strategy, r.status, r.target, r.started_at,
                   count(s.sample_id) FILTER (s.status = 'accepted') AS accepted,
                   count(s.sample_id) FILTER ({counted_where}) AS counted
            FROM runs r LEFT JOIN samples s USING (run_id) WHERE r.dataset = ?
            GROUP BY ALL ORDER BY r.started_at, r.run_id""", [*counted_params, dataset])
    contributions = [Contribution(r["run_id"], r["model"], r["backend"], r["strategy"], r["status"], r["target"],
                                  int(r["accepted"]), int(r["counted"]), r["started_at"]) for r in runs]
    return DatasetSummary(dataset, int(row["target"] or 0), row["tree_id"], sum(per_leaf.values()), per_leaf,
                          contributions)


def leaf_labels(tree: Any | None) -> dict[str | None, str]:
    if tree is None:
        return {None: "(all)"}
    return {leaf.node_id: leaf.label for leaf in tree.leaves()} | {"": "(not placed on this tree)"}


def fields_of(row: dict[str, Any]) -> dict[str, Any]:
    value = row.get("fields")
    return json.loads(value) if isinstance(value, str) else (value or {})
