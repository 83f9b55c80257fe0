"""The browser checks, in headless Chromium driven over the DevTools protocol
(scripts/ui_screenshot.py):

- the Prefect UI's page for a finished run, its Artifacts tab and its run report: the
  PNGs show the run (not a blank page) with every image on them loaded;
- a person's way to grow a dataset: open the `on-demand` deployment's run form, fill the
  recipe and `grow_by`, press Submit, see the run complete in the UI, and find the
  dataset grown in the catalog.

Needs Chromium: installed here with apt-get when running as root (as CI does), else
the test fails saying what to install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, write_recipe
from tests.prefect_live import wait_final

SCRIPT = ROOT / "scripts" / "ui_screenshot.py"


def ensure_chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                pytest.fail(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        path = shutil.which("chromium")
    if not path:
        pytest.fail("the browser check needs Chromium: `sudo apt-get install -y chromium` (Debian/Ubuntu), "
                    "or put a chromium executable on PATH")
    return path


@pytest.mark.slow
def test_prefect_ui_shows_the_finished_run_and_its_report(prefect_server, tmp_path):
    from PIL import Image  # comes with matplotlib
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deployments import RunParameters, run_recipe_deployment

    timings = {}
    started = time.monotonic()
    chromium = ensure_chromium()
    timings["chromium"] = time.monotonic() - started
    api = prefect_server[0]
    started = time.monotonic()
    with temporary_settings(updates={PREFECT_API_URL: api}):
        state = run_recipe_deployment(RunParameters(recipe_path=str(write_recipe(tmp_path)), target=4),
                                      return_state=True)
    timings["run"] = time.monotonic() - started
    assert state.is_completed(), state.message
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--api", api, "--flow-run", str(state.state_details.flow_run_id),
         "--out", str(tmp_path / "shots"), "--chromium", chromium],
        capture_output=True, text=True, timeout=400)
    timings["screenshots"] = time.monotonic() - started
    print("timings (s):", {k: round(v, 1) for k, v in timings.items()})
    assert done.returncode == 0, done.stderr[-3000:]

    shots = {s["path"].rsplit("/", 1)[-1]: s for s in json.loads(done.stdout)}
    assert set(shots) == {"flow-run.png", "flow-run-artifacts.png", "report-artifact.png"}
    for name, shot in shots.items():
        with Image.open(shot["path"]) as image:
            assert image.format == "PNG" and image.size == (1440, 1400), (name, image.size)
            colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        # An unpainted capture is one or two colours; these pages (text, graph, cards) have over a thousand.
        assert len(colours) > 500, f"{name} looks blank ({len(colours)} colours)"
        assert shot["waited_for"] and all(shot["waited_for"]), shot
        assert shot["broken_images"] == [], f"{name}: the page could not load {shot['broken_images']}"


def assert_not_blank(path) -> None:
    from PIL import Image

    with Image.open(path) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert len(colours) > 500, f"{path} looks blank ({len(colours)} colours)"


@pytest.mark.slow
def test_a_run_started_from_the_ui_form_grows_the_dataset(prefect_server, prefect_served, tmp_path):
    """As a person would: the dataset exists (a first run of 4); in the browser, open the
    on-demand deployment's run form, type the recipe path, choose `int` for Grow By and type
    3, press Submit; the UI goes to the new run's page and shows it Completed; the catalog
    then holds 7 accepted samples in two contributions, and the run kept the form's values."""
    from uuid import UUID

    from storage.catalog.catalog import Catalog
    from storage.tables.datasets import summary

    sys.path.insert(0, str(ROOT / "scripts"))
    from ui_screenshot import run_from_form

    chromium = ensure_chromium()
    api = prefect_server[0]
    client, deployments, _ = prefect_served
    on_demand = deployments["on-demand"]
    recipe = write_recipe(tmp_path, generation={"target": 4, "budget": 40, "chunk_size": 4})
    first = client.create_flow_run_from_deployment(on_demand.id, parameters={"params": {"recipe_path": str(recipe)}})
    assert wait_final(client, first.id, timeout=300).state.is_completed()

    started = time.monotonic()
    shown = run_from_form(api, str(on_demand.id), [("Recipe Path", None, "textarea", str(recipe)),
                                                   ("Grow By", "int", "input", "3")],
                          tmp_path / "shots", chromium, timeout=60)
    print(f"form to completed run: {time.monotonic() - started:.1f} s")
    run = wait_final(client, UUID(shown["flow_run_id"]), timeout=300)
    assert run.state.is_completed(), f"{run.state.name}: {run.state.message}"
    assert shown["shown_state"] == "Completed" and run.deployment_id == on_demand.id
    assert run.parameters["params"]["recipe_path"] == str(recipe) and run.parameters["params"]["grow_by"] == 3
    for path in shown["shots"]:
        assert_not_blank(path)
    with Catalog(tmp_path / "catalog.duckdb", read_only=True) as cat:
        state = summary(cat, "math-test")
        assert state.total == 7 and state.target == 7
        assert [c.accepted for c in state.contributions] == [4, 3]
        assert cat.integrity_problems() == []
