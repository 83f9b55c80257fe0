"""Snapshots, local exports and the dataset card, over a small hand-filled catalog."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import yaml

from catalog_fill import OUTPUT_FIELDS, RECIPE_SECRET, RUN_ID, add_accepted, fill_catalog
from storage.publish.card import card_context, collapsed_tree, is_secret_key, redact_recipe, render_card, size_category
from storage.publish.export import ExportError, export_snapshot, list_exports
from storage.tables.snapshots import SnapshotError, create_snapshot, get_snapshot, list_snapshots, snapshot_rows


@pytest.fixture
def catalog(tmp_path):
    cat = fill_catalog(tmp_path / "catalog.duckdb")
    yield cat
    cat.close()


def split_of(catalog, snapshot_id) -> dict[str, str]:
    return {r["sample_id"]: r["split"] for r in snapshot_rows(catalog, snapshot_id)}


def leaf_splits(rows) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        out.setdefault(row["leaf_id"], {"train": 0, "test": 0})[row["split"]] += 1
    return out


# -- snapshots ------------------------------------------------------------------------------


def test_split_is_stratified_by_leaf(catalog):
    snap = create_snapshot(catalog, RUN_ID, "v1", test_fraction=0.3, seed=7)
    rows = snapshot_rows(catalog, snap)
    assert len(rows) == 11  # accepted only: rejected and duplicate attempts stay out
    by_leaf = leaf_splits(rows)
    # round-half-up of n * 0.3, clamped to [1, n - 1]; a single sample stays in train
    assert by_leaf == {"n-farm-ratios": {"train": 3, "test": 2}, "n-farm-percent": {"train": 2, "test": 1},
                       "n-city-ratios": {"train": 1, "test": 1}, "n-city-percent": {"train": 1, "test": 0}}
    for leaf_id, counts in by_leaf.items():
        if counts["train"] + counts["test"] >= 2:
            assert counts["train"] >= 1 and counts["test"] >= 1, leaf_id
    info = get_snapshot(catalog, "v1")
    assert (info["n_train"], info["n_test"], info["test_fraction"], info["seed"]) == (7, 4, 0.3, 7)


def test_split_is_deterministic_and_follows_the_seed(tmp_path, catalog):
    first = split_of(catalog, create_snapshot(catalog, RUN_ID, "a", test_fraction=0.3, seed=7))
    # the same catalog contents in another file: the split depends on ids and seed only
    other = fill_catalog(tmp_path / "other.duckdb")
    try:
        assert split_of(other, create_snapshot(other, RUN_ID, "b", test_fraction=0.3, seed=7)) == first
    finally:
        other.close()
    assignments = {json.dumps(split_of(catalog, create_snapshot(catalog, RUN_ID, f"s{seed}", 0.3, seed)),
                              sort_keys=True) for seed in range(5)}
    assert len(assignments) > 1  # the seed moves rows between splits
    no_test = snapshot_rows(catalog, create_snapshot(catalog, RUN_ID, "all-train", test_fraction=0.0))
    assert {r["split"] for r in no_test} == {"train"}


def test_snapshot_is_immutable(catalog):
    snap = create_snapshot(catalog, RUN_ID, "v1", test_fraction=0.3, seed=7)
    before = snapshot_rows(catalog, snap)
    assert create_snapshot(catalog, RUN_ID, "v1", test_fraction=0.3, seed=7) == snap  # same content: same id

    add_accepted(catalog, "n-city-time", slot=500)  # the run goes on after the snapshot
    # SQL: a sample re-marked after the snapshot, which no public write does to an accepted row
    catalog.con.execute("UPDATE samples SET status = 'duplicate' WHERE sample_id = ?", [before[0]["sample_id"]])
    with pytest.raises(SnapshotError, match="already exists with different content"):
        create_snapshot(catalog, RUN_ID, "v1", test_fraction=0.3, seed=7)
    with pytest.raises(SnapshotError, match="already exists with different content"):
        create_snapshot(catalog, RUN_ID, "v1", test_fraction=0.5, seed=7)  # another split is other content
    assert snapshot_rows(catalog, snap) == before  # neither the new sample nor the re-marked one moved it

    later = create_snapshot(catalog, RUN_ID)
    assert later != snap and get_snapshot(catalog, later)["n_samples"] == 11  # +1 new, -1 now duplicate
    assert create_snapshot(catalog, RUN_ID) == later  # unnamed and unchanged: idempotent
    assert [s["snapshot_id"] for s in list_snapshots(catalog)] == [later, snap]


def test_snapshot_refuses_what_it_cannot_do(catalog):
    with pytest.raises(SnapshotError, match="no run"):
        create_snapshot(catalog, "nope")
    with pytest.raises(SnapshotError, match=r"test_fraction must be in \[0, 1\)"):
        create_snapshot(catalog, RUN_ID, test_fraction=1.0)
    catalog.con.execute("UPDATE samples SET status = 'rejected'")  # SQL: a run with nothing accepted, made cheaply
    with pytest.raises(SnapshotError, match="no accepted samples"):
        create_snapshot(catalog, RUN_ID)
    with pytest.raises(SnapshotError, match="no snapshot 'missing'"):
        get_snapshot(catalog, "missing")


# -- local export ---------------------------------------------------------------------------


def _expected(rows, split):
    return [{k: v for k, v in r.items() if k != "split"} for r in rows if r["split"] == split]


def test_export_loads_back_row_for_row(tmp_path, catalog):
    from datasets import load_dataset, load_from_disk

    snap = create_snapshot(catalog, RUN_ID, "v1", test_fraction=0.3, seed=7)
    out = tmp_path / "out"
    result = export_snapshot(catalog, snap, out, formats=("parquet", "jsonl", "save_to_disk"),
                             output_fields=OUTPUT_FIELDS, shard_rows=3)
    assert result.n_rows == {"train": 7, "test": 4}
    assert [p.name for p in result.data_files["train"]] == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    assert [p.name for p in result.data_files["test"]] == ["test-00000-of-00002.parquet", "test-00001-of-00002.parquet"]
    rows = snapshot_rows(catalog, snap)
    cache = tmp_path / "hf-cache"

    parquet = load_dataset("parquet", data_files={k: [str(p) for p in v] for k, v in result.data_files.items()},
                           cache_dir=str(cache))
    jsonl = load_dataset("json", data_files={s: str(out / "jsonl" / f"{s}.jsonl") for s in ("train", "test")},
                         cache_dir=str(cache))
    saved = load_from_disk(str(out / "hf"))
    for loaded in (parquet, saved):
        assert sorted(loaded) == ["test", "train"]
        features = loaded["train"].features
        assert {k: features[k].dtype for k in ("question", "final", "score", "seed_row", "leaf_path")} == {
            "question": "string", "final": "int64", "score": "float64", "seed_row": "int64", "leaf_path": "string"}
        assert list(features) == [*OUTPUT_FIELDS, "sample_id", "run_id", "leaf_id", "leaf_path", "strategy",
                                  "seed_row", "request_id", "agreement", "n_solutions"]
    for loaded in (parquet, jsonl, saved):
        for split in ("train", "test"):
            assert loaded[split].to_list() == _expected(rows, split), split
    assert json.loads(parquet["train"][0]["leaf_path"])[0][0] == "setting"


def test_bulk_ingested_rows_export_the_same_as_committed_ones(tmp_path, catalog):
    """Rows whose text lives in Parquet segments (storage.catalog.bulk) export exactly like rows
    committed by a run: the snapshot and export read text through `samples_text`."""
    from datasets import load_dataset

    bulk_catalog = fill_catalog(tmp_path / "bulk" / "catalog.duckdb", bulk=True)
    try:
        # SQL: where the text lives is storage's layout, not something a reader asks
        assert bulk_catalog.scalar("SELECT count(fields) FROM samples") == 0  # the text is in the segments
        loaded = []
        for name, cat in (("inline", catalog), ("bulk", bulk_catalog)):
            snap = create_snapshot(cat, RUN_ID, "v1", test_fraction=0.3, seed=7)
            result = export_snapshot(cat, snap, tmp_path / name, formats=("parquet",), output_fields=OUTPUT_FIELDS)
            loaded.append(load_dataset("parquet", data_files={k: [str(p) for p in v]
                                                              for k, v in result.data_files.items()},
                                       cache_dir=str(tmp_path / "hf-cache")))
        for split in ("train", "test"):
            assert loaded[1][split].to_list() == loaded[0][split].to_list() != []
        # the hand-filled catalog has no request rows (both variants); its segments are sound
        assert not [p for p in bulk_catalog.integrity_problems() if "segment" in p]
    finally:
        bulk_catalog.close()


def test_reexport_is_idempotent_and_drops_stale_shards(tmp_path, catalog):
    snap = create_snapshot(catalog, RUN_ID, "v1", test_fraction=0.3, seed=7)
    out = tmp_path / "out"

    def digests() -> dict[str, str]:
        return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(out.rglob("*")) if p.is_file()}

    first = export_snapshot(catalog, snap, out, shard_rows=3)
    files = digests()
    second = export_snapshot(catalog, snap, out, shard_rows=3)
    assert digests() == files  # same bytes, card and plot included
    assert second.export_ids == first.export_ids
    assert len(list_exports(catalog, snap)) == 2  # parquet + jsonl, not four

    export_snapshot(catalog, snap, out, shard_rows=100)  # fewer, larger shards into the same folder
    assert sorted(p.name for p in (out / "data").iterdir()) == ["test-00000-of-00001.parquet",
                                                                "train-00000-of-00001.parquet"]
    export_snapshot(catalog, create_snapshot(catalog, RUN_ID, "no-test"), out)
    assert sorted(p.name for p in (out / "jsonl").iterdir()) == ["train.jsonl"]  # the old test split is gone


def test_export_without_lineage_and_with_fields_from_the_recipe(tmp_path, catalog):
    from datasets import load_dataset

    snap = create_snapshot(catalog, RUN_ID, "v1")
    result = export_snapshot(catalog, snap, tmp_path / "out", formats=("parquet",), lineage=False)
    ds = load_dataset("parquet", data_files={"train": [str(p) for p in result.data_files["train"]]},
                      cache_dir=str(tmp_path / "cache"))["train"]
    assert sorted(ds.features) == sorted(OUTPUT_FIELDS)  # types read from the run's recipe
    assert ds.features["final"].dtype == "int64" and ds.num_rows == 11


def set_fields(catalog, sample_id, **fields):
    """A sample's fields rewritten (SQL: no public write changes a committed sample's text)."""
    catalog.con.execute("UPDATE samples SET fields = ? WHERE sample_id = ?", [json.dumps(fields), sample_id])


@pytest.mark.parametrize("final, score", [("about seven", 1.0), (7.5, 1.0), (True, 1.0), (7, True), (7, [1])])
def test_a_value_of_the_wrong_type_is_an_error_not_a_null(tmp_path, catalog, final, score):
    set_fields(catalog, "s0003a0", question="q", answer="a", final=final, score=score)
    snap = create_snapshot(catalog, RUN_ID, "v1")
    column = "final" if final != 7 else "score"
    with pytest.raises(ExportError, match=rf"sample s0003a0: column '{column}' holds .* which is not"):
        export_snapshot(catalog, snap, tmp_path / "out", output_fields=OUTPUT_FIELDS)


def test_values_that_fit_their_type_are_converted(tmp_path, catalog):
    from datasets import load_dataset

    set_fields(catalog, "s0003a0", question=12, answer={"steps": [1, 2]}, final="7", score="2.5")
    set_fields(catalog, "s0004a0", question="only a question", final=8.0, score=3)  # answer missing: null
    snap = create_snapshot(catalog, RUN_ID, "v1")
    result = export_snapshot(catalog, snap, tmp_path / "out", formats=("parquet",), output_fields=OUTPUT_FIELDS)
    ds = load_dataset("parquet", data_files=[str(p) for p in result.data_files["train"]],
                      cache_dir=str(tmp_path / "cache"))["train"]
    rows = {r["sample_id"]: r for r in ds}
    assert {k: rows["s0003a0"][k] for k in OUTPUT_FIELDS} == {
        "question": "12", "answer": '{"steps":[1,2]}', "final": 7, "score": 2.5}
    assert {k: rows["s0004a0"][k] for k in OUTPUT_FIELDS} == {
        "question": "only a question", "answer": None, "final": 8, "score": 3.0}
    with pytest.raises(ExportError, match="unknown export format"):
        export_snapshot(catalog, snap, tmp_path / "out", formats=("csv",))


def test_a_field_named_like_a_lineage_or_catalog_column(tmp_path, catalog):
    for row in snapshot_rows(catalog, create_snapshot(catalog, RUN_ID, "probe")):
        set_fields(catalog, row["sample_id"], strategy="think first", status="fine", question=row["question"])
    snap = create_snapshot(catalog, RUN_ID, "v1")
    fields = {"question": "string", "strategy": "string", "status": "string"}
    result = export_snapshot(catalog, snap, tmp_path / "out", formats=("jsonl",), output_fields=fields)
    first = json.loads((result.out_dir / "jsonl" / "train.jsonl").read_text().splitlines()[0])
    assert first["strategy"] == "think first" and first["status"] == "fine"
    assert first["lineage_strategy"] in ("new_question", "answer_augmentation")
    assert snapshot_rows(catalog, snap)[0]["lineage_strategy"] == first["lineage_strategy"]


# -- the card -------------------------------------------------------------------------------


def front_matter(card: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", card, re.DOTALL)
    assert match, "the card must open with YAML front matter"
    return yaml.safe_load(match.group(1))


def test_card_has_metadata_sections_plot_and_no_secrets(tmp_path, catalog):
    snap = create_snapshot(catalog, RUN_ID, "v1", test_fraction=0.3, seed=7)
    out = tmp_path / "out"
    export_snapshot(catalog, snap, out, output_fields=OUTPUT_FIELDS, license="apache-2.0")
    card = (out / "README.md").read_text(encoding="utf-8")

    meta = front_matter(card)
    assert meta["license"] == "apache-2.0"
    assert meta["task_categories"] == ["text-generation"] and meta["size_categories"] == ["n<1K"]
    assert meta["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/train-*"}, {"split": "test", "path": "data/test-*"}]}]
    for heading in ("## Task", "## Dataset structure", "## Tree", "## Leaf distribution", "## Strategies",
                    "## Model and sampling", "## Curation", "## Recipe", "## How to reproduce"):
        assert heading in card, heading
    assert "![Samples per leaf](leaf_distribution.png)" in card
    assert (out / "leaf_distribution.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "5 leaves over 2 dimension(s)" in card
    assert "operation = time  [0]" in card  # the empty leaf shows in the tree view
    assert "| setting=city / operation=percent \\| share | 1 |" in card  # a pipe in a label stays in its cell
    assert "| rejected | 11 |" in card and "| duplicate | 1 |" in card
    assert "recipehash000001" in card and "--test-fraction 0.3 --seed 7" in card
    recipe = json.loads(re.search(r"```json\n(.*?)\n```", card, re.DOTALL).group(1))
    assert recipe["backend"]["api_key_env"] == "OPENAI_API_KEY"  # a variable's name is kept
    assert recipe["backend"]["sampling"]["max_tokens"] == 64
    assert "hf_token" not in recipe["backend"] and "password" not in recipe["backend"]["extra"]
    assert RECIPE_SECRET not in card and "hunter2" not in card


def test_card_takes_a_prerendered_tree_and_leaf_counts(catalog):
    snap = create_snapshot(catalog, RUN_ID, "v1")
    context = card_context(catalog, snap, output_fields=OUTPUT_FIELDS, n_rows={"train": 11},
                           data_files={"train": "jsonl/train.jsonl"}, tree_text="root\n  a=1\n  a=2 ```",
                           leaf_counts={"a=1": 7, "a=2": 4}, plot=None)
    card = render_card(context)
    assert "````text\nroot\n  a=1\n  a=2 ```\n````" in card  # a fence longer than the text's own backticks
    assert "| a=1 | 7 | 63.6% |" in card and "Samples per leaf" not in card
    assert front_matter(card)["configs"][0]["data_files"] == [{"split": "train", "path": "jsonl/train.jsonl"}]


def test_redaction_rules():
    assert [is_secret_key(k) for k in ("api_key", "HF_TOKEN", "client-secret", "db_password", "auth",
                                       "api_key_env", "max_tokens", "keyword", "tokenizer")] == [
        True, True, True, True, True, False, False, False, False]
    assert redact_recipe({"a": [{"token": "x", "b": "see hf_abcdefghijkl"}]}) == {"a": [{"b": "see [redacted]"}]}
    assert [size_category(n) for n in (0, 999, 1000, 99_999, 10**7)] == ["n<1K", "n<1K", "1K<n<10K",
                                                                         "10K<n<100K", "10M<n<100M"]


def test_collapsed_tree_folds_wide_and_deep_levels():
    nodes = [{"node_id": "r", "parent_id": None, "dimension": None, "value": None, "value_list": None}]
    nodes += [{"node_id": f"c{i}", "parent_id": "r", "dimension": "topic", "value": f"v{i}", "value_list": None}
              for i in range(10)]
    nodes += [{"node_id": "g", "parent_id": "c1", "dimension": "steps", "value": None,
               "value_list": [str(i) for i in range(11)]},
              {"node_id": "h", "parent_id": "g", "dimension": "x", "value": "y", "value_list": None}]
    counts = {f"c{i}": i for i in range(10)} | {"h": 20}
    assert collapsed_tree(nodes, counts, max_children=3, max_depth=2).splitlines() == [
        "(root)  [65]",
        "├── topic = v1  [21]",  # largest subtree first
        "│   └── steps = one of 11 values  [20]",  # an infinite node: one value drawn per sample
        "│       ... 1 leaf/leaves below",
        "├── topic = v9  [9]",
        "├── topic = v8  [8]",
        "└── ... 7 more  [27]",
    ]


def test_a_run_without_a_tree_exports_with_one_stratum(tmp_path, catalog):
    catalog.con.execute("UPDATE runs SET tree_id = NULL")  # SQL: the filled catalog made tree-less in place
    catalog.con.execute("UPDATE samples SET leaf_id = NULL, leaf_path = '[]'")
    snap = create_snapshot(catalog, RUN_ID, "flat", test_fraction=0.25, seed=1)
    assert get_snapshot(catalog, snap)["n_test"] == 3  # round(11 * 0.25) over the whole run
    export_snapshot(catalog, snap, tmp_path / "out", output_fields=OUTPUT_FIELDS)
    card = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    assert "No tree: the run generated over the whole task" in card
    assert "| (whole task) | 11 | 100.0% | 3 |" in card


def test_the_export_folder_loads_by_its_card_like_a_hub_repo(tmp_path, catalog):
    """`load_dataset(folder)` reads the card's `configs` the way the Hub does."""
    from datasets import load_dataset

    snap = create_snapshot(catalog, RUN_ID, "v1", test_fraction=0.3, seed=7)
    out = tmp_path / "out"
    export_snapshot(catalog, snap, out, formats=("parquet", "jsonl"), output_fields=OUTPUT_FIELDS, shard_rows=3)
    loaded = load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert {split: ds.num_rows for split, ds in loaded.items()} == {"train": 7, "test": 4}
    assert loaded["test"].to_list() == _expected(snapshot_rows(catalog, snap), "test")
