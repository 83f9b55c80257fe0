"""A real run of the engine with the embedded model, for the kill/resume soak test.

    python tests/soak_worker.py RECIPE

Runs the recipe's generation without Prefect (the soak is about the catalog's resume,
and a Prefect API start per rerun would only slow it down) and prints DONE at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage.catalog.catalog import Catalog  # noqa: E402
from tests.harness import start_run
from synth.backends import make_backend  # noqa: E402
from synth.config.recipe import load_recipe  # noqa: E402

if __name__ == "__main__":
    recipe = load_recipe(sys.argv[1])
    backend = make_backend(recipe.backend)
    backend.load()
    with Catalog(recipe.catalog) as catalog:
        job = start_run(recipe, backend, catalog)
        print("STARTED", flush=True)
        job.generate()
        print("DONE", job.finish()["status"], flush=True)
