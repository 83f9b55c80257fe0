"""The Prefect flow on a scripted backend, under prefect_test_harness."""

from __future__ import annotations

import pytest
from prefect.testing.utilities import prefect_test_harness

from storage.catalog import Catalog
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
        assert cat.scalar("SELECT attempts FROM runs") == 2


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
        kinds = {r["strategy"]: r["n"] for r in cat.query(
            "SELECT strategy, count(*) AS n FROM samples WHERE status = 'accepted' AND run_id = ? GROUP BY 1",
            [summary["run_id"]])}
        classify = cat.scalar("SELECT count(*) FROM requests WHERE stage = 'classify'")
    assert classify >= 10 and kinds.get("existing", 0) + kinds.get("new_question", 0) == 16
    assert 2 <= kinds["existing"] <= 10  # the scripted classifier may overfill one topic: capped at 8
    loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / "data" / "*.parquet"))["train"]
    assert loaded.num_rows == 16
