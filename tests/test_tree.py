"""TreeSynth construction on a scripted backend (tests/tree_llm.py plays the LLM),
parsing corners, rendering, YAML round trips."""

from __future__ import annotations

import json
import re

import pytest

from synth.backends.scripted import ScriptedBackend
from synth.config.recipe import TreeSettings
from synth.reject import Rejected
from synth.tree import (
    ANY, Tree, TreeError, TreeNode, build_tree, leaf_constraints, leaf_label, node_id_for, render_tree,
    tree_from_yaml, tree_id_for, tree_to_yaml,
)
from synth.tree.answers import parse_dimension, parse_expansion, parse_pivots
from synth.backends.base import GenerationResult
from tests.tree_llm import LLM, SAMPLING, TASK, path_of, stage_of


def settings(**kw) -> TreeSettings:
    base = dict(max_depth=2, pivots_per_node=4, max_values=3, infinite_threshold=10, max_leaves=50, max_retries=2)
    return TreeSettings(**{**base, **kw})


def build(llm, rows=None, **kw) -> tuple[Tree, ScriptedBackend]:
    backend = ScriptedBackend(script=llm)
    tree = build_tree(TASK, settings(**kw), backend, SAMPLING, on_requests=rows.extend if rows is not None else None)
    return tree, backend


def labels(tree: Tree) -> list[str]:
    return [leaf_label(leaf) for leaf in tree.leaves()]


# -- construction ---------------------------------------------------------------------


def test_full_tree_is_built_breadth_first_three_rounds_a_level():
    rows: list = []
    tree, backend = build(LLM(), rows)
    assert len(tree.leaves()) == 9
    assert "setting=city / operation=percent" in labels(tree)
    assert all(leaf.depth == 2 and leaf.reason == "max_depth" for leaf in tree.leaves())
    # one batched call a stage a level: 1 node at depth 0, then the 3 nodes of depth 1 together
    assert [len(batch) for batch in backend.calls] == [1, 1, 1, 3, 3, 3]
    assert tree.rounds == 6 and tree.requests == 12 == len(rows)
    assert [n.node_id for n in tree.nodes] == [n.node_id for n in sorted(
        tree.nodes, key=lambda n: (n.depth, [p[1] for p in n.path]))]  # BFS, children by value
    assert len({n.node_id for n in tree.nodes}) == len(tree.nodes)
    city = next(n for n in tree.nodes if n.path == [("setting", "city")])
    assert [c.value for c in tree.children(city.node_id)] == ["percent", "ratios", "sums"]
    assert tree.root.status == "split" and not tree.root.is_leaf and tree.root.dimension is None
    assert tree.prompt_tokens > 0 and tree.completion_tokens > 0


def test_rounds_grow_with_depth_not_width():
    tree, backend = build(LLM(), max_depth=3)
    assert len(tree.leaves()) == 27
    assert tree.rounds == 9 == len(backend.calls)  # 3 per level, whatever the width
    assert tree.requests == 3 * (1 + 3 + 9)


def test_request_rows_are_deterministic_and_complete():
    rows_a, rows_b, rows_c = [], [], []
    build(LLM(), rows_a)
    build(LLM(), rows_b)
    build(LLM(), rows_c, seed=1)
    keys = {"request_id", "tree_id", "stage", "template", "template_hash", "prompt_hash", "sampling", "raw_text",
            "finish_reason", "prompt_tokens", "completion_tokens", "latency_s", "error"}
    assert all(keys <= set(row) and row["run_id"] is None for row in rows_a)
    assert [r["request_id"] for r in rows_a] == [r["request_id"] for r in rows_b]
    assert [r["sampling"]["seed"] for r in rows_a] == [r["sampling"]["seed"] for r in rows_b]
    assert len({r["request_id"] for r in rows_a}) == len(rows_a)
    assert {r["request_id"] for r in rows_a}.isdisjoint({r["request_id"] for r in rows_c})  # seed is in the id
    assert {r["stage"] for r in rows_a} == {"pivots", "dimension", "expand"}
    assert {r["template"] for r in rows_a} == {"tree/pivots.jinja2", "tree/dimension.jinja2", "tree/expand.jinja2"}


def test_json_schema_is_sent_on_every_call():
    _, backend = build(LLM())
    requests = [r for batch in backend.calls for r in batch]
    assert all(r.json_schema and r.json_schema["type"] == "object" for r in requests)
    pivots = [r for r in requests if stage_of(r) == "pivots"]
    assert all(r.json_schema["properties"]["samples"]["minItems"] == 4 for r in pivots)
    dimensions = [r for r in requests if stage_of(r) == "dimension"]
    for r in dimensions:  # one label per pivot, exactly: the grammar cannot let a pivot go unlabelled
        n_pivots = len(re.findall(r"^\d+\. ", r.messages[0]["content"], re.M))
        labels = r.json_schema["properties"]["labels"]
        assert labels["minItems"] == labels["maxItems"] == n_pivots == 4
    assert all(r.sampling.max_tokens == 64 and r.sampling.seed is not None for r in requests)


def test_retries_ask_again_only_for_failed_nodes():
    def bad(stage, path, attempt):
        if stage == "dimension" and path == (("setting", "farm"),) and attempt == 0:
            return '{"dimension": "operation", "labels": ["sums"'  # cut short
        return None

    rows: list = []
    tree, backend = build(LLM(bad), rows)
    assert [len(batch) for batch in backend.calls] == [1, 1, 1, 3, 3, 1, 3]  # the retry holds one request
    assert tree.rounds == 7
    assert len(tree.leaves()) == 9  # the retry succeeded
    assert tree.stats["dimension"] == {"nodes": 4, "requests": 5, "invalid": 1, "retries": 1, "failed_nodes": 0}
    invalid = [r for r in rows if r["error"]]
    assert len(invalid) == 1 and invalid[0]["error"].startswith("invalid: malformed JSON")
    assert invalid[0]["raw_text"].startswith('{"dimension"')  # the raw answer is kept


@pytest.mark.parametrize("stage, answer, reason", [
    ("pivots", "", "pivots: empty output"),
    ("pivots", "{not json", "pivots: malformed JSON"),
    ("pivots", '{"samples": "one string"}', 'pivots: expected {"samples"'),
    ("pivots", '{"samples": ["same", "same", "  "]}', "pivots: 1 distinct non-empty samples"),
    ("pivots", RuntimeError("server gone"), "pivots: backend error: RuntimeError: server gone"),
    ("dimension", '{"dimension": "setting", "labels": ["a", "b"]}', "dimension: 2 labels for 4 pivots"),
    ("dimension", '{"dimension": "setting", "labels": ["a", "a", "a", "a"]}', "1 distinct values; need 2 to 3"),
    ("dimension", '{"dimension": "setting", "labels": ["a", "b", "c", "d"]}', "4 distinct values; need 2 to 3"),
    ("dimension", '{"dimension": 7, "labels": ["a", "b", "a", "b"]}', "dimension is int, not a string"),
    ("dimension", '{"dimension": "42", "labels": ["a", "b", "a", "b"]}', "names nothing"),
    ("dimension", '{"dimension": "setting", "attributes": {"a": [1, 2], "b": [2, 3, 4]}}',
     "pivot 2 is under both 'a' and 'b'"),
    ("dimension", '{"dimension": "setting", "attributes": {"a": [1], "b": [4]}}', "pivots 2, 3 are under no value"),
    ("dimension", '{"dimension": "setting", "attributes": {"a": [1, 2], "b": [3, 9]}}', "pivot 9 does not exist"),
    ("dimension", '{"dimension": "setting", "attributes": {"a": [1, 2], "b": ["3", 4]}}', "list of whole numbers"),
    ("dimension", '{"dimension": "setting"}', 'expected {"dimension": string, "labels"'),
    ("dimension", "[1, 2]", 'expected {"dimension"'),
])
def test_a_node_that_never_answers_well_becomes_a_leaf_with_the_reason(stage, answer, reason):
    def bad(st, path, attempt):
        return answer if st == stage and not path else None

    tree, backend = build(LLM(bad), max_retries=2)
    assert len(tree.nodes) == 1 and tree.root.is_leaf and tree.root.status == "leaf"
    assert reason in tree.root.reason and tree.root.reason.startswith(f"unsplittable: {stage}: ")
    assert tree.root.reason.endswith("(after 3 tries)")
    assert tree.stats[stage]["requests"] == 3 and tree.stats[stage]["failed_nodes"] == 1
    assert len(backend.calls) == (3 if stage == "pivots" else 4)  # 1 + 2 retries, nothing after


def test_a_dimension_already_on_the_path_is_refused_case_insensitively():
    def bad(stage, path, attempt):
        if stage == "dimension" and path == (("setting", "farm"),):
            return json.dumps({"dimension": "Setting", "labels": ["x", "y", "x", "y"]})
        return None

    tree, _ = build(LLM(bad), max_retries=1)
    farm = next(n for n in tree.nodes if n.path == [("setting", "farm")])
    assert farm.is_leaf and "dimension 'Setting' is already on the path" in farm.reason
    assert len(tree.leaves()) == 7  # farm stays a leaf, city and school split in 3


def test_a_node_that_never_splits_does_not_stop_its_siblings():
    def bad(stage, path, attempt):
        return "" if stage == "pivots" and path == (("setting", "city"),) else None

    tree, _ = build(LLM(bad), max_retries=1)
    city = next(n for n in tree.nodes if n.path == [("setting", "city")])
    assert city.is_leaf and city.reason == "unsplittable: pivots: empty output (after 2 tries)"
    assert sum(1 for leaf in tree.leaves() if leaf.depth == 2) == 6


def test_infinite_dimension_becomes_one_child_with_the_whole_list():
    many = [f"crop {i}" for i in range(12)]
    tree, backend = build(LLM(extra={"setting": many}), infinite_threshold=10, max_leaves=50)
    (child,) = tree.children(tree.root.node_id)
    assert child.infinite and child.value is None and child.path == [("setting", ANY)]
    assert child.value_list == ["farm", "city", "school"] + many  # classified, then expansion
    assert child.status == "split" and child.any_of == {"setting": child.value_list}
    # the infinite child was split in turn; its prompts carried one drawn value, never "*"
    level_1 = [r for r in backend.calls[3]]
    assert all("setting: *" not in r.messages[0]["content"] for r in level_1)
    assert path_of(level_1[0])[0][1] in child.value_list
    leaf = tree.leaves()[0]
    assert leaf.any_of["setting"] == child.value_list and leaf_label(leaf).startswith("setting=* / operation=")
    drawn = [leaf_constraints(leaf, seed)[0][1] for seed in range(40)]
    assert set(drawn) <= set(child.value_list) and len(set(drawn)) > 5
    assert drawn == [leaf_constraints(leaf, seed)[0][1] for seed in range(40)]  # deterministic
    assert leaf_constraints(leaf, 3)[1] == leaf.path[1]  # finite values pass through


def test_more_values_than_max_values_keeps_the_best_supported_ones():
    def bad(stage, path, attempt):
        if stage == "dimension" and not path:
            return json.dumps({"dimension": "setting", "labels": ["farm", "city", "farm", "farm"]})
        if stage == "expand" and not path:
            return json.dumps({"new_values": ["school", "park", "shop"], "answer": "more_complete"})
        return None

    tree, _ = build(LLM(bad), max_values=3, max_depth=1, infinite_threshold=6)
    assert [c.value for c in tree.children(tree.root.node_id)] == ["city", "farm", "school"]
    assert tree.root.reason == "kept 3 of 5 values (max_values)"


def test_failed_expansion_keeps_the_classified_values():
    tree, _ = build(LLM(lambda stage, path, attempt: "nope" if stage == "expand" else None), max_depth=1)
    assert [c.value for c in tree.children(tree.root.node_id)] == ["city", "farm"]
    assert tree.root.reason.startswith("kept the classified values; expand: malformed JSON")


@pytest.mark.parametrize("max_leaves", [1, 2, 3, 4, 5, 7, 8, 9])
def test_max_leaves_is_never_exceeded(max_leaves):
    tree, _ = build(LLM(), max_leaves=max_leaves, max_depth=3)
    leaves = tree.leaves()
    assert len(leaves) <= max_leaves
    if max_leaves < 27:
        assert any(leaf.reason == "max_leaves" or leaf.depth < 3 for leaf in leaves)
    again, _ = build(LLM(), max_leaves=max_leaves, max_depth=3)
    assert labels(again) == labels(tree)  # the same nodes are chosen every time


def test_max_leaves_splits_in_frontier_order_and_trims_the_last_fit():
    tree, backend = build(LLM(), max_leaves=6, max_depth=2)
    # root -> 3 nodes; room for 3 more leaves: only the first 3 frontier nodes are even asked,
    # city splits in 3 (room then 1 more), farm keeps 2 of 3 values, school stays a leaf
    assert [len(b) for b in backend.calls][3:] == [3, 3, 3]
    assert len(tree.leaves()) == 6
    farm = next(n for n in tree.nodes if n.path == [("setting", "farm")])
    school = next(n for n in tree.nodes if n.path == [("setting", "school")])
    assert "kept 2 of 3 values (max_leaves)" in farm.reason
    assert school.is_leaf and school.reason == "max_leaves"


def test_max_leaves_one_asks_nothing():
    tree, backend = build(LLM(), max_leaves=1)
    assert backend.calls == [] and tree.rounds == 0
    assert tree.root.is_leaf and tree.root.reason == "max_leaves"


def test_default_scripted_backend_builds_a_tree():
    # the dry-run backend (schema-filling answers) must give a usable tree too
    tree = build_tree(TASK, settings(pivots_per_node=3, max_values=3), ScriptedBackend(), SAMPLING)
    assert len(tree.leaves()) > 1 and tree.depth >= 1


# -- parsing corners -------------------------------------------------------------------


def _r(text, **kw):
    return GenerationResult(key="k", text=text, **kw)


def test_parsers_tolerate_fences_prose_and_numbering():
    assert parse_pivots(_r('```json\n{"samples": ["1. a b", "2) c d"]}\n```'), 5) == ["a b", "c d"]
    dim, values = parse_dimension(_r('Sure! {"dimension": "topic", "labels": ["Farm", "farm", "city", "x"]} ok'),
                                  ["p1", "p2", "p3", "p4"], [], 4)
    assert (dim, values) == ("topic", ["Farm", "city", "x"])  # "farm" is "Farm"; most pivots first
    assert parse_expansion(_r('{"new_values": ["city", "shop", "", 3, "more_complete"], "answer": "more_complete"}'),
                           ["City"]) == ("more_complete", ["shop"])
    assert parse_expansion(_r('{"new_values": ["shop"], "answer": "nothing_to_add"}'), []) == ("nothing_to_add", [])


HOSTILE = ["null", "[]", "0", '"str"', "{}", '{"samples": null}', '{"samples": [null, 1, {}, []]}',
           '{"dimension": null, "labels": null}', '{"dimension": "d", "labels": [null, 1, [], {}]}',
           '{"dimension": "d", "attributes": {"a": null, "b": {}}}', '{"dimension": ["d"], "attributes": []}',
           '{"new_values": null, "answer": "more_complete"}', '{"new_values": [null], "answer": ["x"]}',
           "[" * 5000, '{"a": ' * 3000, "\x00\ud800", "{" + "}" * 10, "```", "```json\n```"]


@pytest.mark.parametrize("text", HOSTILE)
def test_parsers_never_crash_on_hostile_output(text):
    for parse in (lambda r: parse_pivots(r, 4), lambda r: parse_dimension(r, ["a", "b", "c", "d"], [], 4),
                  lambda r: parse_expansion(r, ["a"])):
        try:
            parse(_r(text))
        except Rejected as exc:
            assert str(exc)  # a reason to record


def test_parse_reports_truncation():
    with pytest.raises(Exception, match="cut at max_tokens"):
        parse_pivots(_r('{"samples": ["a', finish_reason="length"), 3)


def test_a_label_that_copies_its_pivot_is_refused():
    pivots = ["Tom has three apples and buys five more", "A train goes 60 km/h"]
    with pytest.raises(Exception, match="label 1 copies its pivot"):
        parse_dimension(_r(json.dumps({"dimension": "topic", "labels": ["Tom has three apples and", "speed"]})),
                        pivots, [], 3)


# -- identity -----------------------------------------------------------------------------


def test_tree_id_depends_on_what_makes_the_tree():
    base = tree_id_for(TASK, settings(), "m")
    assert base == tree_id_for(TASK, settings(), "m")
    assert base != tree_id_for(TASK, settings(seed=1), "m")
    assert base != tree_id_for(TASK, settings(max_depth=3), "m")
    assert base != tree_id_for(TASK, settings(), "other-model")
    assert base != tree_id_for(TASK.model_copy(update={"description": "Something else entirely."}), settings(), "m")
    assert base == tree_id_for(TASK, settings(leaf_weights={"a": 1.0}, enabled=True), "m")


# -- rendering ------------------------------------------------------------------------------


def test_render_shows_paths_counts_and_reasons():
    def bad(stage, path, attempt):
        return "" if stage == "pivots" and path == (("setting", "city"),) else None

    tree, _ = build(LLM(bad), max_retries=0)
    counts = {leaf.node_id: i for i, leaf in enumerate(tree.leaves())}
    text = render_tree(tree, counts)
    lines = text.splitlines()
    assert lines[0].startswith(f"tree {tree.tree_id} (built") and "7 leaves" in lines[0]
    assert lines[1] == "root"
    assert "├─ setting=city  [0]  (unsplittable: pivots: empty output (after 1 tries))" in lines
    assert any(line.endswith("└─ operation=sums  [6]") for line in lines)
    assert lines[-1] == f"{sum(counts.values())} samples over 7 leaves"
    assert "[" not in render_tree(tree).split("\n", 1)[1]  # no counts asked, none shown


def test_render_shows_infinite_nodes():
    tree, _ = build(LLM(extra={"setting": [f"c{i}" for i in range(12)]}), max_depth=1)
    assert "setting=* (any of 15: farm, city, school, c0, ...)" in render_tree(tree)


# -- YAML ---------------------------------------------------------------------------------


def _structure(tree: Tree):
    return [(n.node_id, n.parent_id, n.depth, n.dimension, n.value, n.value_list, n.path, n.is_leaf, n.infinite,
             n.any_of) for n in tree.nodes]


def test_yaml_round_trip_keeps_the_structure():
    tree, _ = build(LLM(extra={"operation": [f"op{i}" for i in range(11)]}), max_depth=3, max_leaves=20)
    assert any(n.infinite for n in tree.nodes)
    text = tree_to_yaml(tree)
    back = tree_from_yaml(text)
    assert _structure(back) == _structure(tree)
    assert [n.reason for n in back.nodes] == [None if n.reason == "max_depth" else n.reason for n in tree.nodes]
    assert "any_of: [sums, ratios, percent, op0," in text and "reason: max_depth" not in text
    assert back.source == "imported" and back.tree_id != tree.tree_id
    assert back.settings["imported_from"] == tree.tree_id and back.task_name == "gsm"
    assert tree_from_yaml(text).tree_id == back.tree_id  # the id is a hash of the content
    assert tree_from_yaml(tree_to_yaml(back)).tree_id == back.tree_id


def test_values_that_yaml_would_misread_survive_the_round_trip():
    node = TreeNode(node_id_for([]), None, 0, None, None, None, [], is_leaf=False, status="split")
    kids = [TreeNode(node_id_for([("flag", v)]), node.node_id, 1, "flag", v, None, [("flag", v)], is_leaf=True)
            for v in ["yes", "no", "3", "null", "a: b"]]
    tree = Tree("t1", [node, *kids], settings={}, model="m")
    assert sorted(n.value for n in tree_from_yaml(tree_to_yaml(tree)).leaves()) == ["3", "a: b", "no", "null", "yes"]
    odd = ["yes", "3", "a, b", "[x]", "#c"]
    infinite = TreeNode(node_id_for([("k", ANY)]), node.node_id, 1, "k", None, odd, [("k", ANY)], is_leaf=True,
                        infinite=True)
    back = tree_from_yaml(tree_to_yaml(Tree("t2", [node, infinite], settings={}, model="m")))
    assert back.leaves()[0].value_list == odd


EDITABLE = """
task: gsm
root:
  split: setting
  children:
  - value: farm
    split: operation
    children:
    - value: sums
    - value: ratios
  - value: city
  - value: 7
"""


def test_a_person_can_prune_rename_and_add():
    tree = tree_from_yaml(EDITABLE)
    assert labels(tree) == ["setting=7", "setting=city", "setting=farm / operation=ratios",
                            "setting=farm / operation=sums"]
    edited = tree_from_yaml(EDITABLE.replace("value: city", "value: town").replace("    - value: ratios\n", ""))
    assert labels(edited) == ["setting=7", "setting=town", "setting=farm / operation=sums"]
    assert edited.tree_id != tree.tree_id
    # unchanged leaves keep their ids, so samples already made still point at them
    assert {n.node_id for n in edited.leaves()} & {n.node_id for n in tree.leaves()}


@pytest.mark.parametrize("text, message", [
    ("root: [", "not readable YAML at line"),
    ("- 1\n- 2", "a mapping with a `root:` node"),
    ("root: {}\nextra: 1", "unknown top-level key(s) extra"),
    ("root: {value: x}", "root: the root fixes no value"),
    ("root: {split: s}", "root: a split node needs both"),
    ("root: {split: s, children: []}", "root: children must be a non-empty list"),
    ("root: {split: s, children: [{value: a}, {value: A}]}", "root > children[2]: value 'A' is given twice"),
    ("root: {split: s, children: [{value: a}, {nmae: b}]}", "root > children[2]: unknown key(s) nmae"),
    ("root: {split: s, children: [{value: yes}]}", "root > children[1]: value is True"),
    ("root: {split: s, children: [{value: a, any_of: [b, c]}]}", "exactly one of `value: TEXT` or `any_of"),
    ("root: {split: s, children: [{value: a}, {any_of: [b, c]}]}", "an `any_of` child must be the only child"),
    ("root: {split: s, children: [{any_of: [b]}]}", "any_of needs at least 2 distinct values"),
    ("root: {split: s, children: [{value: a, split: S, children: [{value: b}]}]}",
     "root > s=a: dimension 'S' is already on the path"),
    ("root: {split: s, children: [{value: a, split: t, children: [{value: '*'}]}]}",
     "root > s=a > children[1]: value must be a non-empty text"),
])
def test_bad_tree_files_are_refused_naming_the_node(text, message):
    with pytest.raises(TreeError) as err:
        tree_from_yaml(text)
    assert message in str(err.value)
