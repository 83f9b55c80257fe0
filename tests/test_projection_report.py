"""`synth plan` projects cost before spending it; the report measures what a run made."""

from __future__ import annotations

from statistics import mean

from storage.catalog.catalog import Catalog
from storage.runs.projection import project, render_projection
from storage.reports.report import build_report, distinct_n, imbalance, plot_report_leaves, render_markdown
from synth.backends.scripted import ScriptedBackend
from synth.config.recipe import load_recipe
from tests.conftest import write_recipe
from tests.harness import run_to_end, start_run


def test_projection_counts_stages_and_flags_the_budget(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, generation={"target": 10, "budget": 12},
                                      verify={"kind": "math", "samples": 3}))
    p = project(recipe)
    assert p["per_stage"]["question"]["requests"] == 10 and p["per_stage"]["answer"]["requests"] == 30
    assert p["projected_requests"] == 40 and not p["within_budget"] and p["samples_within_budget"] == 3
    assert "OVER BUDGET" in render_projection(p)
    assert not (tmp_path / "catalog.duckdb").exists()  # planning writes nothing


def test_projection_counts_the_judge(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, generation={"target": 5, "budget": 100},
                                      quality={"judge": {"max_tokens": 100}}))
    p = project(recipe)
    assert p["per_stage"]["judge"]["requests"] == 5 and p["per_stage"]["judge"]["completion_tokens"] == 250
    assert p["projected_requests"] == 15


def test_projection_uses_observed_tokens(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path))
    with Catalog(recipe.catalog) as cat:
        job = start_run(recipe, ScriptedBackend(), cat)
        job.generate()
        p = project(recipe, cat)
        assert p["source"] == "observed in the catalog" and p["acceptance_rate"] == 1.0
        observed = mean(r["completion_tokens"] for r in cat.requests(("completion_tokens",), stage="answer"))
        assert p["per_stage"]["answer"]["completion_tokens"] == round(6 * observed)


def test_report_and_plot(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path))
    with Catalog(recipe.catalog) as cat:
        job, _ = run_to_end(recipe, ScriptedBackend(), cat)
        report = build_report(cat, job.run_id)
    assert report["stats"]["samples"]["accepted"] == 6 and report["leaves"][0]["accepted"] == 6
    assert report["diversity"]["distinct_1"] is not None
    assert "| (all) | 6 | 0 | 6 | 6 | 0 | 0 | 0 | 0 |" in render_markdown(report)  # target, before, accepted, generated
    png = plot_report_leaves(report, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_measures():
    assert imbalance([5, 5, 5]) == {"normalized_entropy": 1.0, "max_min_ratio": 1.0}
    skewed = imbalance([20, 1, 1])
    assert skewed["normalized_entropy"] < 0.5 and skewed["max_min_ratio"] == 20.0
    assert distinct_n(["a b a b"], 2) == round(2 / 3, 4)
