"""Which tree a recipe's run uses: the recipe's tree file, a tree already in the catalog,
or a new one built now (and stored, so the next run reuses it instead of paying again).
"""

from __future__ import annotations

from storage.catalog.catalog import Catalog
from storage.tables.trees import load_tree, request_writer, save_tree
from synth.backends.base import Backend
from synth.prompting.render import Renderer
from synth.config.recipe import Recipe
from synth.tree import Tree, build_tree, tree_from_yaml, tree_id_for


def tree_from_file(recipe: Recipe) -> Tree:
    path = recipe.resolve_input(recipe.tree.file)
    return tree_from_yaml(path.read_text(encoding="utf-8"))


def find_tree_for(catalog: Catalog, recipe: Recipe, model: str | None = None) -> Tree | None:
    """The recipe's tree if it exists already (file or catalog), without building anything."""
    if recipe.tree is None or not recipe.tree.enabled:
        return None
    if recipe.tree.file is not None:
        return tree_from_file(recipe)
    model = model or recipe.backend.build().model  # constructors are cheap: no model is loaded
    return load_tree(catalog, tree_id_for(recipe.task, recipe.tree, model, Renderer(recipe.template_overrides())))


def ensure_tree(catalog: Catalog, recipe: Recipe, backend: Backend, renderer: Renderer | None = None) -> Tree:
    if recipe.tree.file is not None:
        tree = tree_from_file(recipe)
        save_tree(catalog, tree)
        return tree
    renderer = renderer or Renderer(recipe.template_overrides())
    existing = load_tree(catalog, tree_id_for(recipe.task, recipe.tree, backend.model, renderer))
    if existing is not None:
        return existing
    tree = build_tree(recipe.task, recipe.tree, backend, recipe.backend.sampling,
                      on_requests=request_writer(catalog), renderer=renderer)
    save_tree(catalog, tree)
    return tree
