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
