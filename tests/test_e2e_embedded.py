"""End to end with the real embedded model (SmolLM2-135M through llama.cpp): the Prefect
flow builds a small tree, generates into its leaves, catalogs, exports, and `datasets`
loads the Parquet export back. Tiny on purpose: a handful of short samples."""

from __future__ import annotations

import datasets
import pytest
from prefect.testing.utilities import prefect_test_harness

from storage.catalog.catalog import Catalog
from storage.tables.trees import list_trees, load_tree
from tests.conftest import write_recipe


@pytest.mark.slow
def test_embedded_model_through_the_flow_to_parquet(tmp_path):
    from flows.run import run_recipe

    path = write_recipe(
        tmp_path,
        tree={"max_depth": 1, "pivots_per_node": 3, "max_values": 3, "max_leaves": 3, "max_retries": 1},
        generation={"target": 4, "budget": 40, "chunk_size": 4, "max_rounds": 3, "examples_per_prompt": 1},
        # This test is the flow's plumbing with a real model; the gates are tested on their own and by the
        # demo's 1.5B rows. Measured here: with every gate on, the 135M model's free-text rows pass about 1
        # in 12 (0 of 12 for some seeds and thread counts, which failed CI), and at 64 tokens 9 in 10
        # replies are cut short. So: room for a worked answer, and only the length and format filters.
        quality={"filters": [{"kind": "length", "min_chars": 1}, "format"]},
        backend={"kind": "llamacpp", "n_ctx": 1024, "sampling": {"max_tokens": 256, "temperature": 0.7, "seed": 5}},
        export={"dir": str(tmp_path / "out"), "formats": ["parquet", "jsonl"]},
    )
    with prefect_test_harness(server_startup_timeout=180):
        summary = run_recipe(str(path))
    with Catalog(tmp_path / "catalog.duckdb", read_only=True) as cat:
        tree_rows = list_trees(cat)
        requests = cat.requests(("stage", "prompt_tokens", "completion_tokens", "raw_text"))
        accepted = cat.samples(("leaf_id", "fields"), status="accepted")
        leaves = {leaf.node_id for leaf in load_tree(cat, tree_rows[0]["tree_id"]).leaves()}
    assert len(tree_rows) == 1 and tree_rows[0]["requests"] >= 2  # pivots + dimension at least
    assert {"pivots", "question", "answer"} <= {r["stage"] for r in requests}
    assert all(r["prompt_tokens"] > 0 for r in requests)
    assert sum(r["completion_tokens"] for r in requests) > 0
    assert accepted, f"no accepted sample: {summary['stats']}"
    assert all(a["leaf_id"] in leaves for a in accepted)  # every sample carries its leaf
    loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / "data" / "*.parquet"))["train"]
    assert loaded.num_rows == len(accepted)
    assert sorted(loaded["question"]) == sorted(a["fields"]["question"] for a in accepted)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["answer_augmentation", "question_rephrase"])
def test_each_seeded_strategy_with_the_embedded_model(tmp_path, strategy):
    """A seed-based strategy, for real (new_question runs in the flow test above)."""
    from tests.harness import start_run
    from synth.backends.llamacpp import LlamaCppBackend
    from synth.config.recipe import load_recipe

    recipe = load_recipe(write_recipe(
        tmp_path, generation={"target": 2, "budget": 12, "chunk_size": 4, "max_rounds": 3, "strategy": strategy,
                              "examples_per_prompt": 1},
        quality={"min_chars": 1},
        backend={"kind": "llamacpp", "n_ctx": 1024, "sampling": {"max_tokens": 64, "temperature": 0.7, "seed": 9}}))
    backend = LlamaCppBackend(n_ctx=1024)
    with Catalog(recipe.catalog) as cat:
        start_run(recipe, backend, cat).generate()
        backend.close()
        requests = cat.requests(("stage", "completion_tokens"))
        stages = {r["stage"] for r in requests}
        rows = cat.samples(("strategy", "seed_row", "status", "raw_text"))
        tokens = sum(r["completion_tokens"] for r in requests)
    assert stages == ({"answer"} if strategy == "answer_augmentation" else {"question", "answer"})
    assert rows and all(r["strategy"] == strategy and r["seed_row"] is not None for r in rows)
    assert tokens > 0
    assert all(r["raw_text"] is not None for r in rows if r["status"] == "rejected")  # rejects keep the raw text
