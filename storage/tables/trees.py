"""Partitioning trees in the catalog: the `trees` and `tree_nodes` tables.

A tree is written once under its id (a hash of what made it), with `INSERT OR IGNORE`,
so saving a tree again, or a rerun that rebuilt the same tree, writes nothing twice.
The requests that built it go to the `requests` table through `save_tree_requests`
(run_id NULL, tree_id set), usually as `build_tree(..., on_requests=...)` returns them.

Leaves out: building trees (synth/tree/) and sample counts per leaf (the catalog).
"""

from __future__ import annotations

import json
from typing import Any, Callable

import pyarrow as pa

from storage.catalog.catalog import Catalog, now
from synth.tree import Tree, TreeNode, assemble

_NODE_COLUMNS: dict[str, pa.DataType] = {
    "tree_id": pa.string(), "node_id": pa.string(), "parent_id": pa.string(), "depth": pa.int32(),
    "dimension": pa.string(), "value": pa.string(), "value_list": pa.string(), "path": pa.string(),
    "is_leaf": pa.bool_(), "infinite": pa.bool_(), "status": pa.string(), "reason": pa.string(),
}


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def save_tree(catalog: Catalog, tree: Tree) -> None:
    """Write the tree and its nodes in one transaction; a tree id already there is kept as is."""
    rows = [{
        "tree_id": tree.tree_id, "node_id": n.node_id, "parent_id": n.parent_id, "depth": n.depth,
        "dimension": n.dimension, "value": n.value, "value_list": _dump(n.value_list),
        "path": _dump([list(p) for p in n.path]), "is_leaf": n.is_leaf, "infinite": n.infinite,
        "status": n.status, "reason": n.reason,
    } for n in tree.nodes]
    nodes = pa.table({name: pa.array([r[name] for r in rows], type=kind) for name, kind in _NODE_COLUMNS.items()})
    with catalog.transaction() as con:
        con.execute(
            """INSERT OR IGNORE INTO trees (tree_id, task_name, model, settings, source, status, rounds, requests,
                                            prompt_tokens, completion_tokens, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [tree.tree_id, tree.task_name, tree.model, json.dumps(tree.settings, ensure_ascii=False, sort_keys=True),
             tree.source, tree.status, tree.rounds, tree.requests, tree.prompt_tokens, tree.completion_tokens, now()],
        )
        con.register("incoming_tree_nodes", nodes)
        con.execute("INSERT OR IGNORE INTO tree_nodes BY NAME SELECT * FROM incoming_tree_nodes")
        con.unregister("incoming_tree_nodes")


def save_tree_requests(catalog: Catalog, rows: list[dict[str, Any]]) -> None:
    """Record the requests a tree build made (rows from `build_tree`'s `on_requests`)."""
    catalog.commit_chunk(rows, [])


def request_writer(catalog: Catalog) -> Callable[[list[dict[str, Any]]], None]:
    """An `on_requests` callback for `build_tree` that commits every batch as it returns."""
    return lambda rows: save_tree_requests(catalog, rows)


def load_tree(catalog: Catalog, tree_id: str) -> Tree | None:
    head = catalog.query("SELECT * FROM trees WHERE tree_id = ?", [tree_id])
    if not head:
        return None
    row = head[0]
    nodes = [
        TreeNode(
            node_id=r["node_id"], parent_id=r["parent_id"], depth=int(r["depth"]), dimension=r["dimension"],
            value=r["value"], value_list=json.loads(r["value_list"]) if r["value_list"] else None,
            path=[(d, v) for d, v in json.loads(r["path"])], is_leaf=bool(r["is_leaf"]),
            infinite=bool(r["infinite"]), status=r["status"], reason=r["reason"],
        )
        for r in catalog.query("SELECT * FROM tree_nodes WHERE tree_id = ? ORDER BY depth, node_id", [tree_id])
    ]
    settings = row["settings"]
    return assemble(
        tree_id, nodes, settings=json.loads(settings) if isinstance(settings, str) else settings,
        model=row["model"], rounds=int(row["rounds"]), requests=int(row["requests"]),
        prompt_tokens=int(row["prompt_tokens"]), completion_tokens=int(row["completion_tokens"]),
        source=row["source"], task_name=row["task_name"], status=row["status"],
    )


def list_trees(catalog: Catalog) -> list[dict[str, Any]]:
    """One dict a tree, newest first: id, task, model, source, size and what it cost."""
    return catalog.query(
        """SELECT t.tree_id, t.task_name, t.model, t.source, t.status, t.rounds, t.requests,
                  t.prompt_tokens, t.completion_tokens, t.created_at,
                  count(n.node_id) AS nodes, count(n.node_id) FILTER (n.is_leaf) AS leaves,
                  coalesce(max(n.depth), 0) AS depth
           FROM trees t LEFT JOIN tree_nodes n USING (tree_id)
           GROUP BY ALL ORDER BY t.created_at DESC, t.tree_id"""
    )
