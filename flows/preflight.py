"""The pre-flight every run goes through, from the command line or the Prefect UI alike:
the recipe and its overrides are valid, its input files read, every overridden prompt
renders in the sandbox, a tree file parses, and the catalog is not busy, before
anything is written or any request is made. Bad input raises the error the command
line turns into exit code 2 (RecipeError, SeedError, PromptError, TreeError); a busy
catalog raises CatalogBusy (exit 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import storage.card  # noqa: F401  (registers the card template's example variables)
import synth.classify  # noqa: F401  (the classification prompt's)
import synth.judge  # noqa: F401  (the judge's)
import synth.tree  # noqa: F401  (the tree prompts')
from synth.recipe import Recipe, RecipeError, load_recipe
from synth.render import Renderer, check_overrides
from synth.seeds import load_seeds


def apply_overrides(recipe: Recipe, catalog: str | None = None, out: str | None = None,
                    target: int | None = None, model: str | None = None) -> Recipe:
    update: dict[str, Any] = {}
    if model:  # backend.model: a different model is a different run of the same dataset
        update["backend"] = recipe.backend.model_copy(update={"model": model})
    if catalog:
        update["catalog"] = Path(catalog)
    if out:
        update["export"] = recipe.export.model_copy(update={"dir": Path(out)})
    if target:
        update["generation"] = recipe.generation.model_copy(update={"target": target})
    return recipe.model_copy(update=update) if update else recipe


def preflight(recipe_path: str | Path, catalog: str | None = None, out: str | None = None,
              target: int | None = None, model: str | None = None) -> Recipe:
    """The recipe as it will run, checked; nothing is written."""
    recipe = apply_overrides(load_recipe(recipe_path), catalog, out, target, model)
    load_seeds(recipe)  # unreadable seeds are bad input: refuse before the catalog is created
    wants = [name for name, on in (("quality.semantic_dup_threshold", recipe.quality.semantic_dup_threshold
                                     is not None), ("balance.assign", recipe.balance.assign == "embedding")) if on]
    if wants:
        from synth.embed import embedding_status

        missing = embedding_status()
        if missing:
            raise RecipeError(f"{wants[0]}: this needs the embedding model; {missing}")
    if recipe.backend.kind == "llamacpp":  # a missing model file or part package: say so before anything runs
        from synth.backends.embedded import resolve_gguf

        resolve_gguf(recipe.backend.model)  # the 1.5B tier is joined and checked here on first use
    check_overrides(Renderer(recipe.template_overrides()))
    if recipe.tree is not None and recipe.tree.file is not None:
        from storage.recipe_tree import tree_from_file

        tree_from_file(recipe)  # so is a malformed tree file
    if Path(recipe.catalog).exists():
        from storage.catalog import Catalog

        Catalog(recipe.catalog).close()  # busy? say so now, not after the flow has started
    return recipe
