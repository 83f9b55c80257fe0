"""The browser check: headless Chromium opens the Prefect UI's page for a finished run,
its Artifacts tab and its run report, through scripts/ui_screenshot.py, and the PNGs
show the run (not a blank page) with every image on them loaded.

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

from flows.server import ensure_server, stop_server
from tests.conftest import ROOT, write_recipe
from tests.prefect_live import free_port

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
def test_prefect_ui_shows_the_finished_run_and_its_report(tmp_path):
    from PIL import Image  # comes with matplotlib
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deployments import RunParameters, run_recipe_deployment

    timings = {}
    started = time.monotonic()
    chromium = ensure_chromium()
    timings["chromium"] = time.monotonic() - started
    state_dir = tmp_path / "prefect"
    try:
        started = time.monotonic()
        api = ensure_server(port=free_port(), timeout=300, state_dir=state_dir)
        timings["server"] = time.monotonic() - started
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
    finally:
        stop_server(state_dir)
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
