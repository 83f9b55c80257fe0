"""Datasets that grow: one dataset across runs, recipe changes and tree changes, and no
paid sample thrown away (scripted backend; the flow, the CLI and the Hub in their own tests)."""

from __future__ import annotations

import json
from collections import Counter

import duckdb
import pytest

from storage.catalog.catalog import Catalog
from storage.tables.datasets import Scope, members_per_leaf, summary
from storage.tables.snapshots import snapshot_rows
from storage.tables.versions import changelog
from synth.backends.scripted import ScriptedBackend, asked, reply
from synth.config.recipe import load_recipe
from synth.tree import tree_from_yaml
from tests.conftest import GSM8K_SLICE, write_recipe
from tests.harness import run_dataset

TOPICS = "task: math-test\nroot:\n  split: topic\n  children: [{value: money}, {value: time}]\n"
TOPICS_3 = ("task: math-test\nroot:\n  split: topic\n  children: [{value: money}, {value: time}, "
            "{value: shapes}]\n")


def accepted(cat) -> int:
    return cat.count("samples", status="accepted")


def requests_of(cat, run_id) -> int:
    return cat.count("requests", run_id=run_id)


def test_raising_the_target_generates_only_the_difference(tmp_path):
    path = write_recipe(tmp_path, generation={"target": 10, "budget": 80, "chunk_size": 4})
    recipe = load_recipe(path)
    with Catalog(recipe.catalog) as cat:
        first, s1 = run_dataset(recipe, catalog=cat)
        assert s1["status"] == "finished" and accepted(cat) == 10
        second, s2 = run_dataset(recipe.with_target(15), catalog=cat)
        assert s2["status"] == "finished" and s2["generated"] == 5 and s2["reused"] == 10
        assert accepted(cat) == 15 and requests_of(cat, second.run_id) == 10  # 5 samples, two stages each
        # a new sampling seed: a new contribution that finds nothing missing
        reseeded = recipe.with_target(15).model_copy(update={"backend": recipe.backend.model_copy(
            update={"sampling": recipe.backend.sampling.model_copy(update={"seed": 99})})})
        third, s3 = run_dataset(reseeded, catalog=cat)
        assert third.run_id not in {first.run_id, second.run_id}
        assert s3["generated"] == 0 and requests_of(cat, third.run_id) == 0 and accepted(cat) == 15
        state = summary(cat, recipe.dataset_name)
        assert state.total == 15 and [c.accepted for c in state.contributions] == [10, 5, 0]
        assert cat.integrity_problems() == []


def test_grow_by_adds_exactly_n_and_a_crashed_step_resumes_instead_of_growing_twice(tmp_path):
    path = write_recipe(tmp_path, generation={"target": 6, "budget": 60, "chunk_size": 2})
    recipe = load_recipe(path)
    with Catalog(recipe.catalog) as cat:
        _, first = run_dataset(recipe, catalog=cat, grow_by=4)  # a new dataset: its target first
        assert "new" in first["growth"] and accepted(cat) == 6
        run, grown = run_dataset(recipe, catalog=cat, grow_by=4)
        assert grown["target"] == 10 and grown["generated"] == 4 and accepted(cat) == 10
        # a growth step killed after one chunk: the rerun resumes it (target 14), it does not grow to 18
        from storage.runs.growth import plan_growth
        from tests.harness import RunHarness

        step = plan_growth(cat, recipe, 4)
        assert step.target == 14
        killed = RunHarness(step.recipe, cat)
        killed.start()
        killed.plan()
        killed.generate(max_chunks=1)
        cat.update_run(killed.run_id, status="failed", message="killed")
        again = plan_growth(cat, recipe, 4)
        assert again.target == 14 and "resuming" in again.note
        resumed, done = run_dataset(recipe, catalog=cat, grow_by=4)
        assert resumed.run_id == killed.run_id and done["target"] == 14 and accepted(cat) == 14
        assert cat.integrity_problems() == []  # no sample id written twice


def test_max_target_caps_growth(tmp_path):
    path = write_recipe(tmp_path, generation={"target": 4, "budget": 40, "chunk_size": 4, "max_target": 6})
    recipe = load_recipe(path)
    with Catalog(recipe.catalog) as cat:
        run_dataset(recipe, catalog=cat)
        _, s = run_dataset(recipe, catalog=cat, grow_by=5)
        assert s["target"] == 6 and "capped" in s["growth"] and accepted(cat) == 6
        requests = cat.count("requests")
        _, s = run_dataset(recipe, catalog=cat, grow_by=5)
        assert "max_target" in s["growth"] and accepted(cat) == 6
        assert cat.count("requests") == requests


def test_grown_export_has_every_sample_once_and_a_lowered_target_deletes_nothing(tmp_path):
    path = write_recipe(tmp_path, generation={"target": 8, "budget": 80, "chunk_size": 4},
                        export={"dir": str(tmp_path / "out"), "formats": ["parquet"], "test_fraction": 0.25})
    recipe = load_recipe(path)
    tree = tree_from_yaml(TOPICS)
    with Catalog(recipe.catalog) as cat:
        _, s1 = run_dataset(recipe, catalog=cat, tree=tree, export=True)
        _, s2 = run_dataset(recipe, catalog=cat, tree=tree, export=True, grow_by=4)
        v1, v2 = s1["export"]["version"], s2["export"]["version"]
        assert (v1["version"], v1["rows"], v2["version"], v2["rows"], v2["added"]) == (1, 8, 2, 12, 4)
        rows = snapshot_rows(cat, v2["snapshot_id"])
        assert len(rows) == len({r["sample_id"] for r in rows}) == 12
        kept = {r["sample_id"]: r["split"] for r in snapshot_rows(cat, v1["snapshot_id"])}
        assert all(r["split"] == kept[r["sample_id"]] for r in rows if r["sample_id"] in kept)  # splits stay
        shards = sorted(p.name for p in (tmp_path / "out" / "data").iterdir())
        assert any("-v0001-" in n for n in shards) and any("-v0002-" in n for n in shards)
        # an unchanged rerun: the same version
        _, again = run_dataset(recipe.with_target(12), catalog=cat, tree=tree, export=True)
        assert again["export"]["version"]["version"] == 2 and not again["export"]["version"]["new"]
        # a lowered target: nothing deleted; the export selects a balanced subset, always the same
        before = accepted(cat)
        _, low = run_dataset(recipe.with_target(6), catalog=cat, tree=tree, export=True)
        v3 = low["export"]["version"]
        assert accepted(cat) == before and (v3["version"], v3["rows"], v3["removed"]) == (3, 6, 6)
        per_leaf = Counter(r["leaf_id"] for r in snapshot_rows(cat, v3["snapshot_id"]))
        assert sorted(per_leaf.values()) == [3, 3]
        log = changelog(cat, recipe.dataset_name)
        assert [(v["version"], v["added"], v["removed"]) for v in log] == [(1, 8, 0), (2, 4, 0), (3, 0, 6)]
        assert log[1]["by"][0]["strategy"] == "new_question"


def test_reuse_can_exclude_a_model_or_start_fresh(tmp_path):
    path = write_recipe(tmp_path, generation={"target": 4, "budget": 40, "chunk_size": 4})
    recipe = load_recipe(path)
    with Catalog(recipe.catalog) as cat:
        run_dataset(recipe, ScriptedBackend(model="weak-model"), catalog=cat)
        from synth.config.recipe import Reuse

        strong = recipe.model_copy(update={"reuse": Reuse(exclude_models=["weak-model"])})
        run, s = run_dataset(strong, ScriptedBackend(model="strong-model"), catalog=cat)
        assert s["generated"] == 4 and s["reused"] == 0 and accepted(cat) == 8
        counted = {c["model"]: c["counted"] for c in run.ledger.reuse_report()}
        assert counted == {"weak-model": 0, "strong-model": 4}  # the weak run's samples stay, uncounted
        fresh = recipe.model_copy(update={"reuse": Reuse(fresh=True)})
        _, s = run_dataset(fresh, ScriptedBackend(model="third"), catalog=cat)
        assert s["generated"] == 4 and s["reused"] == 0 and accepted(cat) == 12


def test_a_rebuilt_tree_keeps_leaves_that_still_exist_and_places_the_rest(tmp_path):
    path = write_recipe(tmp_path, generation={"target": 8, "budget": 80, "chunk_size": 8})
    recipe = load_recipe(path)
    two, three = tree_from_yaml(TOPICS), tree_from_yaml(TOPICS_3)
    with Catalog(recipe.catalog) as cat:
        run_dataset(recipe, catalog=cat)  # no tree yet: 8 samples on no leaf
        classify = ScriptedBackend(lambda r: json.dumps({"value": "money"}) if "value" in (r.json_schema or {}).get(
            "properties", {}) else reply(r, {k: f"text {r.key} {k} words" for k in asked(r)}))
        run, s = run_dataset(recipe.with_target(12), classify, catalog=cat, tree=two)
        assert s["placed"]["placed"] == 8 and s["placed"]["moves"] == [
            {"from": "(no tree)", "to": "topic=money", "samples": 8}]
        counts = members_per_leaf(cat, Scope(recipe.dataset_name), two)
        money, time = (leaf.node_id for leaf in two.leaves())
        assert counts == {money: 8, time: 6}  # 6 a leaf wanted: money already holds 8, time gets 6
        # the third leaf is new; money and time keep their ids: nothing to classify again
        _, s3 = run_dataset(recipe.with_target(15), classify, catalog=cat, tree=three)
        assert (s3["placed"]["placed"], s3["placed"]["kept"], s3["generated"]) == (0, 8, 5)
        placed_requests = cat.count("requests", stage="classify")
        assert placed_requests == 8  # one per placed sample, and never again
        from storage.reports.report import build_report, render_markdown

        report = build_report(cat, run.run_id)  # the run that placed them says what moved where
        assert report["dataset"]["placed"] == [
            {"from": "(no tree)", "to": "topic=money", "how": "classified", "samples": 8}]
        assert "8 earlier samples were placed on this run's tree" in render_markdown(report)


def test_seed_rows_added_to_the_file_are_used_first(tmp_path):
    rows = [json.loads(line) for line in GSM8K_SLICE.read_text().splitlines()[:12]]
    (tmp_path / "seeds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:6]))
    path = write_recipe(tmp_path, generation={"target": 6, "budget": 40, "chunk_size": 6,
                                              "strategy": "answer_augmentation"})
    recipe = load_recipe(path)
    with Catalog(recipe.catalog) as cat:
        run_dataset(recipe, catalog=cat)
        (tmp_path / "seeds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3] + rows[6:9] + rows[3:6]))
        run, _ = run_dataset(load_recipe(path).with_target(9), catalog=cat)
        used = [r["seed_row"] for r in cat.samples(("seed_row",), run_id=run.run_id, status="accepted")]
        assert sorted(used) == [3, 4, 5]  # the new rows (in the middle of the file now), by content


def test_an_old_catalog_becomes_datasets_in_place(tmp_path):
    path = write_recipe(tmp_path, generation={"target": 4, "budget": 40})
    recipe = load_recipe(path)
    with Catalog(recipe.catalog) as cat:
        first, _ = run_dataset(recipe, catalog=cat)
        ids = {r["sample_id"] for r in cat.samples(("sample_id",))}
    # a migration test, so SQL: the file is set back to what schema 3 had, and read as the migration left it
    con = duckdb.connect(str(recipe.catalog))
    con.execute("UPDATE runs SET dataset = NULL, target = NULL")
    con.execute("DELETE FROM datasets")
    con.execute("DELETE FROM schema_version")
    con.execute("INSERT INTO schema_version (version) VALUES (3)")
    con.close()
    with Catalog(recipe.catalog) as cat:
        assert cat.scalar("SELECT dataset FROM runs") == "math-test"
        assert cat.query("SELECT dataset, target FROM datasets") == [{"dataset": "math-test", "target": 4}]
        assert {r["sample_id"] for r in cat.samples(("sample_id",))} == ids
        _, s = run_dataset(recipe.with_target(6), catalog=cat)
        assert s["reused"] == 4 and s["generated"] == 2


def test_a_second_writer_waits_for_the_catalog_then_fails_clearly(tmp_path):
    import subprocess
    import sys
    import time

    from storage.catalog.catalog import CatalogBusy

    catalog = tmp_path / "busy.duckdb"
    Catalog(catalog).close()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, duckdb; con = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(3)"),
        str(catalog)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    with pytest.raises(CatalogBusy, match="after waiting 0.5 s"):
        Catalog(catalog, wait_s=0.5)
    assert time.monotonic() - started >= 0.5
    with Catalog(catalog, wait_s=30) as cat:  # the holder lets go after ~3 s: this one gets its turn
        assert cat.integrity_problems() == []
    holder.wait(10)


def test_the_report_shows_each_leaf_grown_by_version(tmp_path):
    from storage.reports.report import build_report, plot_report_leaves, render_markdown

    path = write_recipe(tmp_path, generation={"target": 4, "budget": 40, "chunk_size": 4},
                        export={"dir": str(tmp_path / "out"), "formats": ["parquet"]})
    recipe = load_recipe(path)
    tree = tree_from_yaml(TOPICS)
    with Catalog(recipe.catalog) as cat:
        run_dataset(recipe, catalog=cat, tree=tree, export=True)
        second, _ = run_dataset(recipe, catalog=cat, tree=tree, export=True, grow_by=2)
        report = build_report(cat, second.run_id)
    by_version = [leaf["by_version"] for leaf in report["leaves"]]
    assert by_version == [{1: 2, 2: 1}, {1: 2, 2: 1}]  # 2 a leaf in v1, one more each in v2
    assert "| v2 | 6 | 2 | 0 |" in render_markdown(report)
    png = plot_report_leaves(report, tmp_path / "leaf.png")
    from PIL import Image

    with Image.open(png) as image:
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 50


def test_surplus_rows_fill_the_next_growth_instead_of_new_requests(tmp_path):
    """A slot that got two good samples keeps one and drops the other (`surplus`); the next
    run of the dataset takes the dropped one for a fresh slot of its leaf and strategy
    instead of paying for it again, once."""
    path = write_recipe(tmp_path, generation={"target": 4, "budget": 200, "chunk_size": 4, "max_rounds": 5})
    recipe = load_recipe(path)
    state = {"n": 0}

    def first_round_fails(request):
        state["n"] += 1
        if state["n"] <= 8:  # round one's questions all fail: round two tries each slot several times
            return ""
        field = "answer" if "answer" in asked(request) else "question"
        return reply(request, {field: f"unique text {request.key} with words"})

    with Catalog(recipe.catalog) as cat:
        first, s1 = run_dataset(recipe, ScriptedBackend(first_round_fails), catalog=cat)
        surplus = cat.samples(("sample_id", "strategy"), status="dropped")
        assert s1["accepted"] == 4 and len(surplus) >= 1

        backend = ScriptedBackend()
        second, s2 = run_dataset(recipe.with_target(4 + len(surplus)), backend, catalog=cat)
        assert s2["status"] == "finished" and accepted(cat) == 4 + len(surplus)
        assert s2["surplus_reused"] == len(surplus) and "not generated again" in s2["message"]
        assert requests_of(cat, second.run_id) == 0 and backend.calls == []
        copies = cat.samples(("request_id", "fields"), status="accepted", run_id=second.run_id)
        originals = cat.samples(("request_id", "fields", "reason"), status="dropped")
        assert sorted(c["request_id"] for c in copies) == sorted(o["request_id"] for o in originals)  # lineage kept
        assert all(o["reason"] == f"reused: copied into run {second.run_id}" for o in originals)
        assert sum(members_per_leaf(cat, Scope(recipe.dataset_name), None).values()) == 4 + len(surplus)

        # the same recipe again: nothing left to reuse, nothing generated, nothing written twice
        third, s3 = run_dataset(recipe.with_target(4 + len(surplus)), ScriptedBackend(), catalog=cat)
        assert third.run_id == second.run_id and s3["generated"] == len(surplus) and accepted(cat) == 4 + len(surplus)
        assert cat.integrity_problems() == []
