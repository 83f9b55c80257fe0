"""The deployments a person runs from the Prefect UI, and `serve`, which serves them.

`RunParameters` is the form the UI shows (a pydantic model, so the fields are typed,
described and checked before a run starts); `run_recipe_deployment` maps it onto
`flows.run.run_recipe`. Two deployments of it: `on-demand` (no schedule: triggered from
the UI, the API or `prefect deployment run`) and `nightly` (cron `0 2 * * *`, UTC;
`synth serve --pause-schedule` registers it with the schedule off).

An inline recipe, or a backend/model override, becomes a derived recipe file under
`data/recipes/` named by the hash of its content. It is validated first, so a broken
one fails the flow run with the `RecipeError` message that names the field. Its input
paths (seeds, tree file, templates, the dataset to rebalance) are made absolute
against the folder of `recipe_path`, so an inline recipe can use the files that live
beside the recipes. `run_recipe` then puts it through the same pre-flight as the
command line (flows/preflight.py).

`run_recipe` runs through `.fn`, inside this deployment's own flow run: its tasks, logs
and artifacts land on the run page the person opened, not on a nested subflow page.
`log_prints` is off: library prints (dill, run by `datasets` while exporting, prints
bytecode disassembly) would otherwise flood the run's logs in the UI.

Leaves out: `prefect.yaml` and work pools (`serve` is one process and needs neither).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import yaml
from prefect import flow, get_run_logger, serve
from prefect.schedules import Cron
from prefect.types.entrypoint import EntrypointType
from pydantic import BaseModel, ConfigDict, Field

from flows.run import run_recipe
from synth.backends import backend_kinds
from synth.config.recipe import RecipeError, absolute_inputs, load_recipe, parse_recipe

DERIVED_DIR = Path("data/recipes")
NIGHTLY_CRON = "0 2 * * *"
NIGHTLY_GROW_BY = 8  # the nightly run's default growth step (the form shows it; a person may change it)
BackendKind = Literal[backend_kinds()]  # type: ignore[valid-type]  # the form's choices: the backend registry


class RunParameters(BaseModel):
    """What a run from the UI may set; empty fields keep the recipe's own values."""

    model_config = ConfigDict(extra="forbid")

    recipe_path: str = Field(
        default="recipes/gsm8k.yaml", min_length=1,
        description="Recipe YAML, relative to the folder `synth serve` runs in. With an inline recipe, "
                    "its relative seed and tree paths resolve against this file's folder.")
    inline_recipe: str | None = Field(
        default=None, description="A whole recipe as YAML text; when given it is run instead of recipe_path's file.")
    target: int | None = Field(default=None, gt=0, description="Accepted samples wanted (generation.target).")
    grow_by: int | None = Field(
        default=None, gt=0,
        description="Grow the dataset by this many accepted samples: its target so far plus this "
                    "(generation.grow_by; capped at generation.max_target). Empty: the recipe's own.")
    backend: BackendKind | None = Field(default=None, description="Backend kind (backend.kind).")
    model: str | None = Field(default=None, min_length=1,
                              description="Model (backend.model): 'embedded', a GGUF path, or a served model name.")
    catalog: str | None = Field(default=None, description="Catalog DuckDB file (default: the recipe's).")
    out: str | None = Field(default=None, description="Export folder (default: the recipe's export.dir).")
    export: bool = Field(default=True, description="Export a new version of the dataset when generation ends "
                                                   "(and push it to export.hub_repo, tagged, when the recipe names one).")
    catalog_wait_s: float = Field(default=900, ge=0, le=86400,
                                  description="If another run holds the catalog, wait this long for it, then fail.")
    ray_address: str | None = Field(
        default=None, min_length=1,
        description="Ray cluster (HOST:6379): run the model in replicas there (cluster.kind: ray, docs/scaling.md). "
                    "Empty: the recipe's `cluster` section (its address, else $RAY_ADDRESS of the serving process).")


def resolve_recipe(params: RunParameters, derived_dir: Path = DERIVED_DIR) -> str:
    """The recipe file to run: `recipe_path` itself, or a validated derived file when overridden."""
    base = Path(params.recipe_path)
    if params.inline_recipe is None and params.backend is None and params.model is None:
        return params.recipe_path
    if params.inline_recipe is not None:
        source, base_dir = "inline_recipe", (base.parent if base.parent.is_dir() else Path("."))
        try:
            data = yaml.safe_load(params.inline_recipe)
        except yaml.YAMLError as exc:
            raise RecipeError(f"inline_recipe: not readable YAML: {exc}") from None
    else:
        load_recipe(base)  # the file itself must be valid before it is overridden
        source, base_dir = str(base), base.resolve().parent
        data = yaml.safe_load(base.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a YAML mapping (key: value lines), got {type(data).__name__}")
    backend = data.get("backend") or {}
    if isinstance(backend, dict):  # anything else is left for parse_recipe to name
        overrides = {"kind": params.backend, "model": params.model}
        data["backend"] = {**backend, **{k: v for k, v in overrides.items() if v is not None}}
    data = absolute_inputs(data, base_dir.resolve())
    parse_recipe(data, source, base_dir=base_dir)  # raises RecipeError naming the bad field
    text = yaml.safe_dump(data, sort_keys=False)
    derived_dir.mkdir(parents=True, exist_ok=True)
    path = derived_dir / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


@flow(name="synth-deployment", log_prints=False)
def run_recipe_deployment(params: RunParameters = RunParameters()) -> dict[str, Any]:
    """Run a recipe with the UI's parameters: tree, generation, curation, export."""
    recipe_path = resolve_recipe(params)
    get_run_logger().info("recipe: %s", recipe_path)
    return run_recipe.fn(recipe_path, catalog=params.catalog, out=params.out, target=params.target,
                         export=params.export, grow_by=params.grow_by, catalog_wait_s=params.catalog_wait_s,
                         ray_address=params.ray_address)


def build_deployments(schedule_paused: bool = False) -> list:
    common = dict(tags=["synth"], entrypoint_type=EntrypointType.MODULE_PATH)
    return [
        run_recipe_deployment.to_deployment(
            "on-demand", description="Run a recipe now, with the parameters from the form.", **common),
        # An inactive schedule, not a paused deployment: a paused schedule still lets a person run it by hand.
        run_recipe_deployment.to_deployment(
            "nightly", schedules=[Cron(NIGHTLY_CRON, timezone="UTC", active=not schedule_paused)],
            parameters={"params": RunParameters(grow_by=NIGHTLY_GROW_BY).model_dump()},
            description=f"Grow the demo recipe's dataset by {NIGHTLY_GROW_BY} every night ({NIGHTLY_CRON} UTC) and "
                        "export a new version, while `synth serve` runs.", **common),
    ]


def serve_deployments(api: str, limit: int = 1, schedule_paused: bool = False) -> None:
    """Register the deployments with the server at `api` and run their flow runs until interrupted."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}):
        serve(*build_deployments(schedule_paused), limit=limit)
