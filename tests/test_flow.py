"""The Prefect flow on a scripted backend, under prefect_test_harness."""

from __future__ import annotations

from collections import Counter

import pytest
from prefect.testing.utilities import prefect_test_harness

from storage.catalog.catalog import Catalog
from tests.conftest import write_recipe


@pytest.fixture(scope="module", autouse=True)
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_flow_runs_recipe_and_resumes(tmp_path):
    from flows.run import run_recipe

    path = write_recipe(tmp_path)
    summary = run_recipe(str(path), export=False)
    assert summary["status"] == "finished"
    assert summary["stats"]["samples"]["accepted"] == 6
    again = run_recipe(str(path), export=False)  # nothing missing: no new requests
    assert again["stats"]["requests"] == summary["stats"]["requests"]
    with Catalog(tmp_path / "catalog.duckdb", read_only=True) as cat:
        assert [r["attempts"] for r in cat.runs(("attempts",))] == [2]


def test_flow_exports_and_reports(tmp_path):
    import datasets

    from flows.run import run_recipe

    path = write_recipe(tmp_path, generation={"target": 8, "budget": 40, "chunk_size": 4},
                        export={"dir": str(tmp_path / "out"), "test_fraction": 0.25})
    summary = run_recipe(str(path))
    out = tmp_path / "out"
    loaded = datasets.load_dataset("parquet", data_files={"train": str(out / "data" / "train-*.parquet")})
    assert loaded["train"].num_rows == summary["export"]["rows"]["train"]
    assert sum(summary["export"]["rows"].values()) == 8
    assert (out / "README.md").is_file() and (out / "jsonl" / "train.jsonl").is_file()


def test_flow_rebalances_an_existing_dataset(tmp_path):
    """balance.dataset through the flow: import task, deficits only, export holds both."""
    import datasets

    from flows.run import run_recipe

    (tmp_path / "tree.yaml").write_text(
        "task: math-test\nroot:\n  split: topic\n  children: [{value: money}, {value: time}]\n")
    path = write_recipe(tmp_path, tree={"file": "tree.yaml"},
                        generation={"target": 16, "budget": 80, "chunk_size": 8},
                        balance={"dataset": {"path": "seeds.jsonl", "limit": 10}, "max_per_leaf": 8})
    summary = run_recipe(str(path))
    assert summary["status"] == "finished", summary["message"]
    with Catalog(tmp_path / "catalog.duckdb", read_only=True) as cat:
        kinds = Counter(r["strategy"] for r in cat.samples(("strategy",), status="accepted", run_id=summary["run_id"]))
        classify = cat.count("requests", stage="classify")
    assert classify >= 10 and kinds.get("existing", 0) + kinds.get("new_question", 0) == 16
    assert 2 <= kinds["existing"] <= 10  # the scripted classifier may overfill one topic: capped at 8
    loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / "data" / "*.parquet"))["train"]
    assert loaded.num_rows == 16


def test_two_nightly_runs_give_two_versions_and_two_hub_tags(tmp_path, monkeypatch):
    """The nightly deployment's flow twice, against the offline Hub stand-in: each night
    grows the dataset, exports a new version and pushes it as a commit tagged v1, v2;
    the second commit adds only the new version's shards (v1's are left as they were)."""
    import io

    import huggingface_hub.constants
    import pyarrow.parquet as pq

    from flows.deployments import RunParameters, run_recipe_deployment
    from hub_stub import HubStub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)  # the stub speaks LFS
    repo = "synth-org/nightly"
    path = write_recipe(tmp_path, generation={"target": 6, "budget": 60, "chunk_size": 6},
                        export={"dir": str(tmp_path / "out"), "formats": ["parquet"], "hub_repo": repo})
    with HubStub(token="hf_test_token_0123456789") as hub:
        monkeypatch.setenv("HF_TOKEN", hub.token)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        nights = [run_recipe_deployment(RunParameters(recipe_path=str(path), grow_by=3)) for _ in range(2)]
        stored = hub.repos[repo]
        assert [n["export"]["version"]["version"] for n in nights] == [1, 2]
        assert [n["export"]["hub"]["tag"] for n in nights] == ["v1", "v2"]
        assert set(stored.tags) == {"v1", "v2"} and stored.tags["v2"] == stored.head

        def rows_at(tag: str) -> int:
            files = stored.files_at(tag)
            return sum(pq.read_table(io.BytesIO(hub.lfs[f.lfs_oid])).num_rows
                       for name, f in files.items() if name.endswith(".parquet"))

        assert (rows_at("v1"), rows_at("v2")) == (6, 9)
        v1_files, v2_files = stored.files_at("v1"), stored.files_at("v2")
        v1_shards = {n for n in v1_files if n.endswith(".parquet")}
        assert v1_shards and all(v2_files[n].lfs_oid == v1_files[n].lfs_oid for n in v1_shards)  # untouched
        night_two = [c for c in stored.commits if c["oid"] != stored.tags["v1"]][-2:]
        added = {p for c in night_two for p in c["paths"] if p.endswith(".parquet")}
        assert added and all("-v0002-" in p for p in added)  # only the new version's shards went up
        card = hub.file_bytes(repo, "README.md").decode()
        assert "## Versions" in card and "| v2 | 9 | 3 | 0 |" in card


def test_a_run_reads_its_recipe_seeds_and_catalog_once(tmp_path, monkeypatch):
    """As `synth run` drives it (flows/cli/run.py): its check, handed to the flow in the same
    process, is the run's only pre-flight, seed read and catalog opened."""
    import flows.preflight as preflight
    import synth.config.seeds
    from flows.run import run_recipe

    seen = {"preflight": 0, "seeds": 0, "catalog": 0}
    apply_overrides, read_rows, catalog_init = preflight.apply_overrides, synth.config.seeds.read_rows, Catalog.__init__

    def checked(*args, **kwargs):
        seen["preflight"] += 1
        return apply_overrides(*args, **kwargs)

    def read(path, fmt="auto", where="seeds"):
        seen["seeds"] += where == "seeds"
        return read_rows(path, fmt, where)

    def opened(self, *args, **kwargs):
        seen["catalog"] += 1
        catalog_init(self, *args, **kwargs)

    monkeypatch.setattr(preflight, "apply_overrides", checked)
    monkeypatch.setattr(synth.config.seeds, "read_rows", read)
    monkeypatch.setattr(Catalog, "__init__", opened)
    path = str(write_recipe(tmp_path))
    checks = (path, None, None, None, 0.0, None, None)  # synth run RECIPE, as cmd_run passes them
    preflight.hand_over(checks, preflight.check_run(*checks))
    summary = run_recipe(path, export=False)
    assert summary["status"] == "finished" and summary["stats"]["samples"]["accepted"] == 6
    assert seen == {"preflight": 1, "seeds": 1, "catalog": 1}
    run_recipe(path, export=False)  # from the Prefect UI: nothing handed over, the flow checks itself
    assert seen == {"preflight": 2, "seeds": 2, "catalog": 2}


def test_a_run_that_accepts_nothing_ends_short_and_exports_nothing(tmp_path):
    """Every answer misses its format: the run ends `short` with one line saying why, the
    export step writes nothing and says so, and the flow run is not Failed (issue 22)."""
    from flows.run import run_recipe

    task = {"name": "math-test", "description": "Grade-school math word problems with worked solutions.",
            "output_fields": {"question": {"description": "a problem"},
                              "answer": {"description": "a solution", "pattern": "####[ ]*[0-9]+$"}}}
    path = write_recipe(tmp_path, task=task, generation={"target": 2, "budget": 8, "chunk_size": 4,
                                                         "max_rounds": 1, "extract": False},
                        export={"dir": str(tmp_path / "out")})
    summary = run_recipe(str(path))
    assert summary["status"] == "short" and summary["stats"]["samples"].get("accepted", 0) == 0
    assert "export" not in summary
    assert summary["export_skipped"].startswith("dataset math-test holds no accepted sample yet: nothing exported")
    assert "pattern_mismatch" in summary["export_skipped"]  # why: this run's rejects
    assert not (tmp_path / "out" / "data").exists()
