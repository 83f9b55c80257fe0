"""The tree across time: earlier samples of a dataset placed on its current tree.

The same path hashes to the same leaf id in every tree, so a sample whose leaf still
exists keeps it without a request. The others (made under a tree since rebuilt or
edited, or before the dataset had a tree) are classified onto the current tree with
the existing classifier (synth/tree/classify.py: one batched call per level), and where each
landed is recorded in `leaf_moves` with its classify request, once per (tree, sample):
a rerun asks nothing again. A sample the classifier cannot place is recorded with no
leaf and its reason; it stays in the dataset and counts on no leaf.

The classify requests are this run's (they spend its budget, and the report shows them).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import pyarrow as pa

from storage.catalog.catalog import Catalog, now
from storage.tables.datasets import Scope, fields_of, unplaced
from synth.prompting.render import Renderer
from synth.tree.classify import classify_rows

Progress = Callable[[int, int], None]


def place_on_tree(catalog: Catalog, scope: Scope, tree: Any, task: Any, backend: Any, sampling: Any, run_id: str,
                  renderer: Renderer | None = None, chunk_size: int = 256,
                  on_progress: Progress | None = None) -> dict[str, Any]:
    """Classify every unplaced member of `scope` onto `tree`; returns what moved where."""
    todo = unplaced(catalog, scope, tree)
    labels = {leaf.node_id: leaf.label for leaf in tree.leaves()}
    moved: Counter[tuple[str, str]] = Counter()
    unassigned = 0
    carried = [row for row in todo if row["carried_leaf"]]  # placed on an earlier tree, on a leaf this one has
    if carried:
        _record(catalog, [{"tree_id": tree.tree_id, "sample_id": row["sample_id"], "leaf_id": row["carried_leaf"],
                           "from_leaf": row["native_leaf"], "request_id": None, "run_id": run_id,
                           "reason": "kept the leaf an earlier tree gave it", "created_at": now()} for row in carried], [])
    todo = [row for row in todo if not row["carried_leaf"]]
    for start in range(0, len(todo), chunk_size):
        part = todo[start:start + chunk_size]
        texts = [str(fields_of(row).get(task.question, "")) for row in part]
        requests: list[dict[str, Any]] = []
        assignments = classify_rows(tree, task, texts, backend, sampling, on_requests=requests.extend,
                                    row_keys=[row["sample_id"] for row in part], namespace=f"place/{run_id}",
                                    renderer=renderer)
        for request in requests:
            request["run_id"] = run_id
        stamp = now()
        moves = []
        for row, a in zip(part, assignments):
            moves.append({"tree_id": tree.tree_id, "sample_id": row["sample_id"], "leaf_id": a.leaf_id,
                          "from_leaf": row["native_leaf"], "request_id": a.request_id, "run_id": run_id,
                          "reason": a.reason, "created_at": stamp})
            origin = _origin(row)
            if a.leaf_id is None:
                unassigned += 1
            moved[(origin, labels.get(a.leaf_id, "(nowhere)") if a.leaf_id else "(nowhere)")] += 1
        _record(catalog, moves, requests)
        if on_progress:
            on_progress(min(start + chunk_size, len(todo)), len(todo))
    return {"placed": len(todo) - unassigned, "unassigned": unassigned, "kept": len(carried),
            "moves": [{"from": a, "to": b, "samples": n} for (a, b), n in sorted(moved.items())]}


def _record(catalog: Catalog, moves: list[dict[str, Any]], requests: list[dict[str, Any]]) -> None:
    """The moves and the requests that made them, in one transaction."""
    with catalog.transaction() as con:
        if requests:
            catalog.commit_requests(con, requests)
        con.register("incoming_moves", pa.Table.from_pylist(moves, schema=_MOVES))
        con.execute("INSERT OR IGNORE INTO leaf_moves BY NAME SELECT * FROM incoming_moves")
        con.unregister("incoming_moves")


_MOVES = pa.schema([("tree_id", pa.string()), ("sample_id", pa.string()), ("leaf_id", pa.string()),
                    ("from_leaf", pa.string()), ("request_id", pa.string()), ("run_id", pa.string()),
                    ("reason", pa.string()),
                    ("created_at", pa.timestamp("us"))])


def _origin(row: dict[str, Any]) -> str:
    import json

    path = row.get("leaf_path")
    path = json.loads(path) if isinstance(path, str) else (path or [])
    return " / ".join(f"{d}={v}" for d, v in path) or "(no tree)"
