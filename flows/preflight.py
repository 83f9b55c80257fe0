"""The pre-flight every run goes through, from the command line or the Prefect UI alike:
the recipe and its overrides are valid, its input files read (seeds, the test sets to
decontaminate against: indexed here, once), every overridden prompt
renders in the sandbox, a tree file parses, and the catalog is not busy, before
anything is written or any request is made. Bad input raises the error the command
line turns into exit code 2 (RecipeError, SeedError, PromptError, TreeError); Ray missing
for a `cluster.kind: ray` run raises ClusterError (exit 1); then the catalog is opened
(created if new), so that a busy, damaged or unwritable one raises CatalogBusy /
CatalogError (exit 1) before the flow starts.

`check_run` is that pre-flight for a run, done once: it hands the run the recipe, the
seeds it read and the catalog it opened (`synth run` checks before Prefect starts and
hands them to the flow through `hand_over` / `take_over`; a run from the Prefect UI
checks inside the flow).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import storage.publish.card  # noqa: F401  (registers the card template's example variables)
import synth.curation.judge  # noqa: F401  (the judge's)
import synth.tree  # noqa: F401  (the tree prompts')
import synth.tree.classify  # noqa: F401  (the classification prompt's)
from synth.config.decontam_sets import index_for, seed_report
from synth.config.seeds import load_seeds
from synth.prompting.render import Renderer, check_overrides
from synth.config.recipe import Recipe, RecipeError, load_recipe


def apply_overrides(recipe: Recipe, catalog: str | None = None, out: str | None = None,
                    target: int | None = None, ray_address: str | None = None, model: str | None = None) -> Recipe:
    update: dict[str, Any] = {}
    if ray_address:
        update["cluster"] = recipe.cluster.with_address(ray_address)
    if model:  # backend.model: a different model is a different run of the same dataset
        update["backend"] = recipe.backend.model_copy(update={"model": model})
    if catalog:
        update["catalog"] = Path(catalog)
    if out:
        update["export"] = recipe.export.model_copy(update={"dir": Path(out)})
    if target:
        update["generation"] = recipe.generation.model_copy(update={"target": target})
    return recipe.model_copy(update=update) if update else recipe


@dataclass
class CheckedRun:
    """What the pre-flight read, for the run to use as is: the recipe with its overrides, the
    seeds, the line on seeds that copy a test item, and the open catalog (None when another
    run holds it and this one waits its turn: the run opens it then)."""

    recipe: Recipe
    seeds: list[dict[str, Any]]
    contamination: str | None
    catalog: Any = None

    def open_catalog(self, wait_s: float = 0.0) -> Any:
        """The catalog the check opened, or opened now (waiting up to `wait_s` for its holder)."""
        from storage.catalog.catalog import Catalog

        catalog, self.catalog = self.catalog, None
        return catalog if catalog is not None else Catalog(self.recipe.catalog, wait_s=wait_s)


def check_run(recipe_path: str | Path, catalog: str | None = None, out: str | None = None,
              target: int | None = None, catalog_wait_s: float = 0.0, ray_address: str | None = None,
              model: str | None = None) -> CheckedRun:
    """The recipe as it will run, checked; nothing is written but a new, empty catalog, which
    is kept open for the run. A busy catalog is an error here only when the run would not
    wait for it (`catalog_wait_s`)."""
    recipe = apply_overrides(load_recipe(recipe_path), catalog, out, target, ray_address=ray_address, model=model)
    if recipe.cluster.kind == "ray":
        check_cluster(recipe)
    seeds = load_seeds(recipe)  # unreadable seeds are bad input: refuse before the catalog is created
    wants = [name for name, on in (("quality.semantic_dup_threshold", recipe.quality.semantic_dup_threshold
                                     is not None), ("balance.assign", recipe.balance.assign == "embedding"),
                                   ("quality.decontaminate_cosine", recipe.quality.decontaminate_cosine is not None))
             if on]
    if wants:
        from synth.similarity.embedder import embedding_status

        missing = embedding_status()
        if missing:
            raise RecipeError(f"{wants[0]}: this needs the embedding model; {missing}")
    if recipe.backend.kind == "llamacpp":  # a missing model file or part package: say so before anything runs
        from synth.backends.embedded import resolve_gguf

        resolve_gguf(recipe.backend.model)  # the 1.5B tier is joined and checked here on first use
        if recipe.backend.parallel > 1:  # several sequences at once: llama.cpp's server must be built
            from synth.backends.llama_server import server_binary

            server_binary()
    index_for(recipe)  # so are unreadable test sets; the run's chunk context reuses this index
    from storage.publish.exporters import EXPORTERS

    unknown = [name for name in recipe.export.formats if name not in EXPORTERS]
    if unknown:
        raise RecipeError(f"export.formats: no exporter {unknown[0]!r}; write any of: {', '.join(EXPORTERS)}")
    if "hub" in recipe.export.formats and not recipe.export.hub_repo:
        raise RecipeError("export.formats: hub needs the repo to push to: write export.hub_repo: owner/name")
    check_overrides(Renderer(recipe.template_overrides()))
    if recipe.tree is not None and recipe.tree.file is not None:
        from storage.runs.recipe_tree import tree_from_file

        tree_from_file(recipe)  # so is a malformed tree file
    from storage.catalog.catalog import Catalog, CatalogBusy

    # busy, damaged, not a catalog, not writable? say so now, not after the flow has started
    opened = None
    try:
        opened = Catalog(recipe.catalog)
    except CatalogBusy:
        if catalog_wait_s <= 0:
            raise  # else the run waits its turn when it opens the catalog
    return CheckedRun(recipe, seeds, seed_contamination(recipe, seeds), opened)


def preflight(recipe_path: str | Path, catalog: str | None = None, out: str | None = None,
              target: int | None = None, catalog_wait_s: float = 0.0, ray_address: str | None = None,
              model: str | None = None) -> Recipe:
    """`check_run`, for a caller that only wants the recipe: the catalog is closed again."""
    checked = check_run(recipe_path, catalog, out, target, catalog_wait_s, ray_address, model)
    if checked.catalog is not None:
        checked.catalog.close()
    return checked.recipe


_handed_over: dict[tuple, CheckedRun] = {}


def hand_over(key: tuple, checked: CheckedRun) -> None:
    """Keep a check for the run of the same arguments in this process (`synth run` -> the flow)."""
    _handed_over[key] = checked


def take_over(key: tuple) -> CheckedRun | None:
    """The check `hand_over` kept for these arguments, once; None when there is none."""
    return _handed_over.pop(key, None)


def drop_handed_over() -> None:
    """A check nobody took (the run did not start): its catalog closed."""
    while _handed_over:
        checked = _handed_over.popitem()[1]
        if checked.catalog is not None:
            checked.catalog.close()


def seed_contamination(recipe: Recipe, seeds: list[dict[str, Any]] | None = None) -> str | None:
    """The run's line on its seeds against its test sets (`quality.decontaminate`): how many
    seed rows copy a test item, and which; None without test sets or seeds."""
    index = index_for(recipe)
    if index is None:
        return None
    seeds = load_seeds(recipe) if seeds is None else seeds
    return seed_report(index, seeds, recipe.task.question) if seeds else None


def check_cluster(recipe: Recipe) -> None:
    """A Ray run names its cluster (bad input: RecipeError), has Ray installed and its
    cluster answers (environment faults: ClusterError), before anything is written."""
    from synth.config.cluster import ClusterError
    from synth.execution.ray import import_ray, reachable

    try:
        address = recipe.cluster.resolved_address()
    except ClusterError as exc:
        raise RecipeError(str(exc)) from None
    import_ray()
    reachable(address)
