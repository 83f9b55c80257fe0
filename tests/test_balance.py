"""Target distributions over leaves and closed-loop rebalancing: targets by weight, by a
tree dimension, within min/max; deficits generated until every leaf is within tolerance
or the budget is spent (and the short leaves named); an existing dataset classified onto
the tree, over-full leaves downsampled, under-filled ones generated."""

from __future__ import annotations

import json
import re
from collections import Counter
from fractions import Fraction

import pytest

from storage.catalog.catalog import Catalog
from storage.reports.report import build_report, plot_report_leaves, render_markdown
from synth.backends.scripted import ScriptedBackend, asked, fill_schema, reply
from synth.planning.balance import BalanceError, LeafSpec, bounded_allocation, leaf_weights, within_tolerance
from synth.config.recipe import load_recipe
from synth.tree import tree_from_yaml
from tests.conftest import write_recipe
from tests.harness import RunHarness, start_run

TOPICS = """
task: math-test
root:
  split: topic
  children:
    - value: money
      split: difficulty
      children: [{value: easy}, {value: hard}]
    - value: time
"""


# -- pure target arithmetic -------------------------------------------------------------------

def test_bounded_allocation_respects_bounds_and_sums():
    weights = {"a": 10, "b": 1, "c": 1, "d": 1}
    counts = bounded_allocation(weights, 20, minimum=3, maximum=8)
    assert sum(counts.values()) == 20 and all(3 <= n <= 8 for n in counts.values())
    assert counts["a"] == 8  # pinned at the max; the rest shared evenly
    assert sorted(counts.values()) == [4, 4, 4, 8]
    assert bounded_allocation({"a": 1, "b": 1, "c": 1}, 10) == {"a": 4, "b": 3, "c": 3}
    with pytest.raises(BalanceError, match="min_per_leaf"):
        bounded_allocation(weights, 5, minimum=2)
    with pytest.raises(BalanceError, match="max_per_leaf"):
        bounded_allocation(weights, 50, maximum=5)


def test_weights_over_a_dimension_split_evenly_inside_each_value():
    leaves = [LeafSpec("e", "money/easy", (("topic", "money"), ("difficulty", "easy"))),
              LeafSpec("h", "money/hard", (("topic", "money"), ("difficulty", "hard"))),
              LeafSpec("t", "time", (("topic", "time"),))]
    w = leaf_weights(leaves, dimension="topic", by_value={"money": 3, "time": 1})
    assert w == {"e": Fraction(3, 8), "h": Fraction(3, 8), "t": Fraction(1, 4)}
    by_difficulty = leaf_weights(leaves, dimension="difficulty")  # 'time' never split on it: "(other)"
    assert by_difficulty == {"e": Fraction(1, 3), "h": Fraction(1, 3), "t": Fraction(1, 3)}
    with pytest.raises(BalanceError, match="no dimension 'colour'.*difficulty, topic"):
        leaf_weights(leaves, dimension="colour")
    with pytest.raises(BalanceError, match="'space' is not a value of 'topic'"):
        leaf_weights(leaves, dimension="topic", by_value={"space": 1})


def test_tolerance():
    assert within_tolerance(9, 10, 0.1) and not within_tolerance(8, 10, 0.1) and within_tolerance(0, 0, 0.0)
    # the bound is rounded up: 1 of 2 is half short, 21 of 24 is 12.5 % short
    assert not within_tolerance(1, 2, 0.1) and not within_tolerance(21, 24, 0.1) and within_tolerance(22, 24, 0.1)


# -- the closed loop on a scripted backend ----------------------------------------------------

def make_job(tmp_path, script=None, **overrides):
    overrides.setdefault("tree", {"max_depth": 2})
    return start_run(write_recipe(tmp_path, **overrides), ScriptedBackend(script), tree=tree_from_yaml(TOPICS),
                     plan=False)


def accepted_by_label(job):
    return {leaf["label"]: leaf["have"] for leaf in job.ledger.leaf_balance()}


def test_targets_over_a_dimension_are_met(tmp_path):
    job = make_job(tmp_path, generation={"target": 8, "budget": 60, "chunk_size": 8},
                   balance={"dimension": "topic", "weights": {"money": 3, "time": 1}})
    job.plan()
    job.generate()
    summary = job.finish()
    assert summary["status"] == "finished", summary
    assert accepted_by_label(job) == {"topic=money / difficulty=easy": 3, "topic=money / difficulty=hard": 3,
                                      "topic=time": 2}
    report = build_report(job.catalog, job.run_id)
    assert [r["target"] for r in report["leaves"]] and report["within_tolerance"]["all_within"]
    assert report["by_dimension"]["topic"] == {"money": 6, "time": 2}


def weak_leaf_script(fail_every: int):
    """Question requests for the 'time' leaf fail (invalid JSON) except one in `fail_every`."""
    seen = {"n": 0}

    def script(request):
        prompt = request.messages[-1]["content"]
        if "question" in asked(request) and re.search(r"topic\W+time", prompt):
            seen["n"] += 1
            if seen["n"] % fail_every:
                return "{broken" if request.json_schema else ""
        return reply(request, {name: fill_schema({"type": "string"}, f"{request.key}/{name}")
                               for name in asked(request)})
    return script


def test_a_weak_leaf_gets_more_attempts_until_within_tolerance(tmp_path):
    job = make_job(tmp_path, weak_leaf_script(3), generation={"target": 12, "budget": 400, "chunk_size": 16,
                                                              "max_rounds": 12})
    job.plan()
    job.generate()
    summary = job.finish()
    assert summary["status"] == "finished", summary["message"]
    attempts = Counter(json.dumps(r["leaf_path"]) for r in job.catalog.samples(("leaf_path",)))
    time_attempts = next(n for path, n in attempts.items() if "time" in path)
    assert time_attempts >= 3 * 4 - 1  # a third succeed: about 3 attempts per sample
    assert accepted_by_label(job)["topic=time"] == 4


def test_when_the_budget_runs_out_the_short_leaves_are_named(tmp_path):
    job = make_job(tmp_path, weak_leaf_script(10), generation={"target": 12, "budget": 30, "chunk_size": 16,
                                                               "max_rounds": 12})
    job.plan()
    job.generate()
    summary = job.finish()
    assert summary["status"] == "short"
    assert summary["short_leaves"] == ["topic=time"]
    assert "request budget is spent" in summary["message"] and "topic=time (" in summary["message"]
    assert job.ledger.requests_used() <= 30


def test_min_and_max_per_leaf(tmp_path):
    job = make_job(tmp_path, generation={"target": 10, "budget": 80, "chunk_size": 8},
                   tree={"max_depth": 2, "leaf_weights": {"topic=time": 10}},
                   balance={"min_per_leaf": 2, "max_per_leaf": 5})
    job.plan()
    job.generate()
    assert job.finish()["status"] == "finished"
    counts = accepted_by_label(job)
    assert counts["topic=time"] == 5 and all(2 <= n <= 5 for n in counts.values()) and sum(counts.values()) == 10


def test_an_impossible_target_is_a_clear_error(tmp_path):
    job = make_job(tmp_path, generation={"target": 4}, balance={"min_per_leaf": 2})
    with pytest.raises(BalanceError, match=r"min_per_leaf: 2 x 3 leaves = 6 is more than the target 4"):
        job.plan()


# -- rebalancing an existing dataset ----------------------------------------------------------

ONE_LEVEL = """
task: math-test
root:
  split: topic
  children: [{value: money}, {value: time}]
"""


def existing_rows(tmp_path, money: int, time: int):
    rows = [{"question": f"How many dollars did shop {i} earn after selling {i + 3} items?",
             "answer": f"It earned {i * 5} dollars. #### {i * 5}"} for i in range(money)]
    rows += [{"question": f"How many minutes does trip {i} take at {i + 2} stops?",
              "answer": f"It takes {i * 7} minutes. #### {i * 7}"} for i in range(time)]
    path = tmp_path / "existing.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def classifier_then_generator(request):
    props = (request.json_schema or {}).get("properties", {})
    if set(props) == {"value"}:  # a classify request: route by the row's words
        text = request.messages[-1]["content"]
        return json.dumps({"value": "money" if "dollars" in text else "time"})
    return json.dumps(fill_schema(request.json_schema, request.key))


def test_an_existing_dataset_is_rebalanced(tmp_path):
    existing_rows(tmp_path, money=9, time=2)
    recipe = load_recipe(write_recipe(
        tmp_path, tree={"max_depth": 1}, generation={"target": 12, "budget": 60, "chunk_size": 4},
        balance={"max_per_leaf": 6, "dataset": {"path": "existing.jsonl"}}))
    backend = ScriptedBackend(classifier_then_generator)
    with Catalog(recipe.catalog) as cat:
        job = RunHarness(recipe, cat, backend)
        job.start()
        job.ledger.set_tree(tree_from_yaml(ONE_LEVEL))
        imported = job.import_existing()
        assert imported["rows"] == 11 and imported["copied"] == 11 and imported["unassigned"] == 0
        assert sorted(imported["per_leaf"].values()) == [2, 9]  # before: 9 money, 2 time
        job.plan()
        assert len(job.ledger.slots) == 4 and {s.leaf_id for s in job.ledger.slots} == {
            leaf.node_id for leaf in job.ledger.tree.leaves() if leaf.value == "time"}  # only the deficit
        job.generate()
        summary = job.finish()
        assert summary["status"] == "finished", summary["message"]
        assert summary["surplus_reused"] == 0 and "surplus" not in summary["message"]  # imported rows are not surplus
        assert accepted_by_label(job) == {"topic=money": 6, "topic=time": 6}
        dropped = cat.samples(("reason",), run_id=job.run_id, status="dropped")
        assert len(dropped) == 3 and {r["reason"] for r in dropped} == {"over the leaf maximum (balance.max_per_leaf)"}
        report = build_report(cat, job.run_id)
        rows = {r["label"]: r for r in report["leaves"]}
        assert (rows["topic=money"]["before"], rows["topic=money"]["accepted"]) == (9, 6)
        assert (rows["topic=time"]["before"], rows["topic=time"]["generated"], rows["topic=time"]["accepted"]) == (2, 4, 6)
        assert report["imbalance"]["normalized_entropy"] == 1.0 and report["imbalance_before"]["max_min_ratio"] == 4.5
        assert "Before rebalancing" in render_markdown(report)
        assert plot_report_leaves(report, tmp_path / "plot.png").stat().st_size > 5000
        calls = len(backend.calls)

        # a rerun classifies nothing again and generates nothing more
        again = RunHarness(recipe, cat, backend)
        again.start()
        again.ledger.set_tree(job.ledger.tree)
        assert again.import_existing()["copied"] == 0
        again.plan()
        again.generate()
        assert len(backend.calls) == calls
        assert cat.count("samples", run_id=job.run_id, status="accepted") == 12
