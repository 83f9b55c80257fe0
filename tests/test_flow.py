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
