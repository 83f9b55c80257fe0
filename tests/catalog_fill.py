"""A small, hand-filled catalog for snapshot, export and Hub tests.

One run with a two-level tree (5 leaves, one of them empty), accepted samples spread
unevenly over the leaves (5, 3, 2, 1, 0), plus rejected and duplicate attempts that a
snapshot must leave out. Written with the catalog's own `commit_chunk`, the way a run
writes them; the tree rows are inserted directly (the tree builder is not under test).
"""

from __future__ import annotations

import json
from pathlib import Path

from storage.catalog.catalog import Catalog, now

RUN_ID = "run0000000000000001"
TREE_ID = "tree000000000000001"
SECRET = "hf_secretTOKEN123"  # the Hub token of the push tests
RECIPE_SECRET = "hf_recipeSECRET999"  # planted in the stored recipe: the card must drop it

OUTPUT_FIELDS = {"question": "string", "answer": "string", "final": "integer", "score": "number"}

RECIPE = {
    "task": {
        "name": "math-test",
        "description": "Grade-school math word problems with worked solutions.",
        "output_fields": {
            "question": {"description": "a math word problem", "type": "string"},
            "answer": {"description": "worked solution | with a pipe", "type": "string"},
            "final": {"description": "the final number", "type": "integer"},
            "score": {"description": "self-rated difficulty", "type": "number"},
        },
    },
    "backend": {"kind": "scripted", "model": "embedded", "api_key_env": "OPENAI_API_KEY",
                "sampling": {"temperature": 0.8, "top_p": 0.95, "max_tokens": 64, "seed": 1},
                # a hand-edited catalog row with a secret in it: the card must never show it
                "hf_token": RECIPE_SECRET, "extra": {"password": "hunter2", "note": f"uses {RECIPE_SECRET}"}},
    "generation": {"target": 11, "strategy": "new_question"},
    "quality": {"min_chars": 8, "max_chars": 8000, "near_dup_threshold": 0.85},
    "verify": {"kind": "math", "samples": 3},
}

# leaf node id -> (path, accepted samples)
LEAVES = {
    "n-farm-ratios": ([["setting", "farm"], ["operation", "ratios"]], 5),
    "n-farm-percent": ([["setting", "farm"], ["operation", "percent"]], 3),
    "n-city-ratios": ([["setting", "city"], ["operation", "ratios"]], 2),
    "n-city-percent": ([["setting", "city"], ["operation", "percent | share"]], 1),
    "n-city-time": ([["setting", "city"], ["operation", "time"]], 0),
}


def _tree(catalog: Catalog) -> None:
    nodes = [("n-root", None, 0, None, None, [], False),
             ("n-farm", "n-root", 1, "setting", "farm", [["setting", "farm"]], False),
             ("n-city", "n-root", 1, "setting", "city", [["setting", "city"]], False)]
    for leaf_id, (path, _) in LEAVES.items():
        parent = "n-farm" if path[0][1] == "farm" else "n-city"
        nodes.append((leaf_id, parent, 2, "operation", path[1][1], path, True))
    with catalog.transaction() as con:
        con.execute("INSERT INTO trees (tree_id, task_name, model, settings, source, status, created_at) "
                    "VALUES (?, 'math-test', 'scripted', '{}', 'built', 'complete', ?)", [TREE_ID, now()])
        for node_id, parent, depth, dim, value, path, leaf in nodes:
            con.execute("INSERT INTO tree_nodes (tree_id, node_id, parent_id, depth, dimension, value, path, "
                        "is_leaf, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [TREE_ID, node_id, parent, depth, dim, value, json.dumps(path), leaf,
                         "leaf" if leaf else "split"])


def sample_row(slot: int, leaf_id: str, status: str = "accepted", attempt: int = 0) -> dict:
    path = LEAVES[leaf_id][0]
    return {
        "sample_id": f"s{slot:04d}a{attempt}", "run_id": RUN_ID, "slot": slot, "attempt": attempt,
        "leaf_id": leaf_id, "leaf_path": path,
        "strategy": "new_question" if slot % 3 else "answer_augmentation",
        "seed_row": slot % 4 if slot % 3 == 0 else None, "request_id": f"r{slot:04d}a{attempt}",
        "fields": {"question": f"Q{slot}: a {path[0][1]} has {slot} cows; ünïcode ✓?",
                   "answer": f"line one\nline two | {slot}", "final": slot, "score": slot / 4},
        "raw_text": "{}", "content_hash": f"h{slot}-{attempt}", "status": status,
        "reason": None if status == "accepted" else f"{status}_reason",
    }


def fill_catalog(path: Path, bulk: bool = False) -> Catalog:
    """`bulk`: the rows go in through storage.catalog.bulk.ingest_samples (text in Parquet segments)."""
    catalog = Catalog(path)
    catalog.start_run(RUN_ID, "math-test", RECIPE, "recipehash000001", "scripted", "scripted-model")
    catalog.update_run(RUN_ID, strategy="new_question", strategy_reason="fixed by the recipe", tree_id=TREE_ID,
                       status="finished")
    _tree(catalog)
    rows, slot = [], 0
    for leaf_id, (_, count) in LEAVES.items():
        for _ in range(count):
            rows.append(sample_row(slot, leaf_id))
            rows.append(sample_row(slot, leaf_id, "rejected", attempt=1))
            slot += 1
    rows.append(sample_row(slot, "n-farm-ratios", "duplicate"))
    if bulk:
        from storage.catalog import bulk as bulk_paths
        from storage.catalog.catalog import _SAMPLE_COLUMNS, _arrow

        bulk_paths.ingest_samples(catalog, _arrow(rows, _SAMPLE_COLUMNS).drop_columns(["segment"]), segments=True)
    else:
        catalog.commit_chunk([], rows)
    return catalog


def add_accepted(catalog: Catalog, leaf_id: str, slot: int) -> None:
    catalog.commit_chunk([], [sample_row(slot, leaf_id)])
