"""Embedding leaf assignment (`balance.assign: embedding`): rows go to the leaf whose path
reads closest, with no request; the import records them like the LLM classifier's; the
real model routes clear GSM8K rows to their topic."""

from __future__ import annotations

import numpy as np
import pytest

from storage.catalog.catalog import Catalog
from synth.config.recipe import load_recipe
from synth.tree import tree_from_yaml
from synth.tree.embed_assign import assign_by_embedding, leaf_description
from tests.conftest import ROOT, write_recipe
from tests.harness import RunHarness
from tests.test_balance import ONE_LEVEL, classifier_then_generator, existing_rows

TOPICS = tree_from_yaml((ROOT / "recipes" / "trees" / "gsm8k_topics.yaml").read_text())


def toy_embed(texts):
    words = ("money", "time", "dollars", "minutes")
    v = np.array([[w in t.lower() for w in words] + [0.1] for t in texts], dtype=np.float32)
    v[:, 0] += v[:, 2]
    v[:, 1] += v[:, 3]
    v[:, 2:4] = 0
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_rows_go_to_the_closest_leaf_description_without_requests():
    tree = tree_from_yaml(ONE_LEVEL)
    rows = ["How many dollars did the shop earn?", "How many minutes does the trip take?", ""]
    got = assign_by_embedding(tree, rows, toy_embed)
    value = {leaf.node_id: leaf.value for leaf in tree.leaves()}
    assert [value.get(a.leaf_id) for a in got] == ["money", "time", None]
    assert got[2].status == "unassigned" and got[0].reason.startswith("embedding: cosine")
    assert leaf_description([("topic", "money")], {}) == "topic: money"


def test_the_import_by_embedding_makes_no_classify_request(tmp_path, monkeypatch):
    import synth.similarity.embedder as embed

    class Toy:
        encode = staticmethod(toy_embed)

    monkeypatch.setattr(embed, "get_embedder", lambda: Toy())
    existing_rows(tmp_path, money=5, time=2)
    recipe = load_recipe(write_recipe(
        tmp_path, tree={"max_depth": 1}, generation={"target": 8, "budget": 40, "chunk_size": 4},
        balance={"max_per_leaf": 4, "assign": "embedding", "dataset": {"path": "existing.jsonl"}}))
    from synth.backends.scripted import ScriptedBackend

    backend = ScriptedBackend(classifier_then_generator)
    with Catalog(recipe.catalog) as cat:
        job = RunHarness(recipe, cat, backend)
        job.start()
        job.ledger.set_tree(tree_from_yaml(ONE_LEVEL))
        imported = job.import_existing()
        assert imported["classify_requests"] == 0 and backend.calls == []
        assert sorted(imported["per_leaf"].values()) == [2, 5] and imported["copied"] == 7


@pytest.mark.slow
def test_the_real_model_routes_clear_rows_to_their_topic():
    from synth.similarity.embedder import get_embedder

    rows = ["Ann buys 3 shirts at $12 each and pays with a $50 bill. How much change does she get?",
            "A train travels 180 miles in 3 hours. What is its average speed in miles per hour?",
            "A rectangle is 8 meters long and 5 meters wide. What is its area in square meters?",
            "There are 4 boxes with 6 marbles in each box. How many marbles are there in all?"]
    value = {leaf.node_id: leaf.value for leaf in TOPICS.leaves()}
    got = [value[a.leaf_id] for a in assign_by_embedding(TOPICS, rows, get_embedder().encode)]
    assert got == ["money and shopping", "time and rates", "measurement and geometry", "counting and groups"]
