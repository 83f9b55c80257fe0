"""Trees in a real DuckDB catalog: save, load, list, the requests that built them;
and one real build with the embedded model, persisted and read back."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from storage.catalog.catalog import Catalog
from storage.tables.trees import list_trees, load_tree, request_writer, save_tree
from synth.backends.scripted import ScriptedBackend
from synth.backends.base import SamplingSettings
from synth.config.recipe import TreeSettings
from synth.tree import Tree, build_tree, leaf_constraints, render_tree, tree_from_yaml, tree_to_yaml
from tests.tree_llm import LLM, SAMPLING, TASK


def _build(catalog: Catalog, **kw) -> Tree:
    settings = TreeSettings(**{**dict(max_depth=2, pivots_per_node=4, max_values=3, max_leaves=50), **kw})
    return build_tree(TASK, settings, ScriptedBackend(script=LLM()), SAMPLING, on_requests=request_writer(catalog))


def test_save_and_load_round_trip(tmp_path):
    with Catalog(tmp_path / "c.duckdb") as catalog:
        tree = _build(catalog)
        save_tree(catalog, tree)
    with Catalog(tmp_path / "c.duckdb", read_only=True) as catalog:  # a fresh process reading the file
        back = load_tree(catalog, tree.tree_id)
    assert back == dataclasses.replace(tree, stats={})  # stats are build-time only
    assert back.nodes[0].node_id == tree.root.node_id and len(back.leaves()) == 9


def test_infinite_nodes_come_back_with_their_lists(tmp_path):
    many = [f"crop {i}" for i in range(12)]
    with Catalog(tmp_path / "c.duckdb") as catalog:
        tree = build_tree(TASK, TreeSettings(max_depth=2, pivots_per_node=4, max_values=3, infinite_threshold=10),
                          ScriptedBackend(script=LLM(extra={"setting": many})), SAMPLING)
        save_tree(catalog, tree)
        back = load_tree(catalog, tree.tree_id)
    leaf = back.leaves()[0]
    assert leaf.any_of == tree.leaves()[0].any_of and len(leaf.any_of["setting"]) == 15
    assert leaf_constraints(leaf, 5) == leaf_constraints(tree.leaves()[0], 5)


def test_saving_twice_writes_nothing_twice(tmp_path):
    with Catalog(tmp_path / "c.duckdb") as catalog:
        tree = _build(catalog)
        save_tree(catalog, tree)
        save_tree(catalog, tree)
        _build(catalog)  # a rebuild sends the same request ids
        assert catalog.count("trees") == 1
        assert catalog.count("tree_nodes") == len(tree.nodes) == 13
        assert catalog.count("requests") == tree.requests == 12


def test_build_requests_are_cataloged_with_the_tree(tmp_path):
    def bad(stage, path, attempt):
        return "{broken" if stage == "expand" and attempt == 0 and not path else None

    with Catalog(tmp_path / "c.duckdb") as catalog:
        tree = build_tree(TASK, TreeSettings(max_depth=1, pivots_per_node=4, max_values=3),
                          ScriptedBackend(script=LLM(bad)), SAMPLING, on_requests=request_writer(catalog))
        rows = catalog.requests()
    assert len(rows) == tree.requests == 4
    assert {r["tree_id"] for r in rows} == {tree.tree_id} and {r["run_id"] for r in rows} == {None}
    assert sorted(r["stage"] for r in rows) == ["dimension", "expand", "expand", "pivots"]
    (failed,) = [r for r in rows if r["error"]]
    assert failed["stage"] == "expand" and failed["error"].startswith("invalid: malformed JSON")
    assert failed["raw_text"] == "{broken"
    assert all(r["sampling"]["seed"] is not None for r in rows)
    assert sum(r["prompt_tokens"] for r in rows) == tree.prompt_tokens


def test_list_trees_and_unknown_id(tmp_path):
    with Catalog(tmp_path / "c.duckdb") as catalog:
        built = _build(catalog)
        save_tree(catalog, built)
        imported = tree_from_yaml(tree_to_yaml(built))
        save_tree(catalog, imported)
        listed = {t["tree_id"]: t for t in list_trees(catalog)}
        assert load_tree(catalog, "t-nope") is None
        assert load_tree(catalog, imported.tree_id).source == "imported"
    assert set(listed) == {built.tree_id, imported.tree_id}
    row = listed[built.tree_id]
    assert (row["leaves"], row["nodes"], row["depth"], row["rounds"], row["source"]) == (9, 13, 2, 6, "built")
    assert listed[imported.tree_id]["requests"] == 0


@pytest.mark.slow
def test_real_build_with_the_embedded_model(tmp_path):
    """SmolLM2-135M may or may not manage a split: check structure and persistence, not luck."""
    from synth.backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend()
    settings = TreeSettings(max_depth=2, pivots_per_node=4, max_values=4, infinite_threshold=8, max_leaves=6,
                            max_retries=1)
    try:
        with Catalog(tmp_path / "c.duckdb") as catalog:
            tree = build_tree(TASK, settings, backend, SamplingSettings(max_tokens=200, temperature=0.7),
                              on_requests=request_writer(catalog))
            save_tree(catalog, tree)
            back = load_tree(catalog, tree.tree_id)
            requests = catalog.requests(("stage", "completion_tokens"), tree_id=tree.tree_id)
            stages = Counter(r["stage"] for r in requests)
            tokens = sum(r["completion_tokens"] for r in requests)
    finally:
        backend.close()
    print(render_tree(tree))
    assert back == dataclasses.replace(tree, stats={})
    assert tree.model == "SmolLM2-135M-Instruct-Q4_1" and tree.source == "built"
    assert tree.rounds >= 1 and stages.get("pivots", 0) >= 1  # at least the root was attempted
    assert sum(stages.values()) == tree.requests and tokens == tree.completion_tokens > 0
    assert 1 <= len(tree.leaves()) <= 6
    for leaf in tree.leaves():  # every leaf says why it is one
        assert leaf.reason == "max_depth" or leaf.reason == "max_leaves" or leaf.reason.startswith("unsplittable: ")
    for node in tree.nodes:
        if not node.is_leaf:
            kids = tree.children(node.node_id)
            assert kids and len({k.dimension for k in kids}) == 1
            assert kids[0].dimension.casefold() not in {d.casefold() for d, _ in node.path}
            assert (len(kids) == 1 and kids[0].infinite) or 2 <= len(kids) <= settings.max_values
