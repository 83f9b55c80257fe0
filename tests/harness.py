"""The run life cycle for tests (storage/runs/lifecycle.py) with the scripted backend by default, and
helpers that start, run and grow a recipe's dataset without Prefect."""

from __future__ import annotations

from pathlib import Path

from storage.runs.lifecycle import RunHooks, RunLifecycle


class RunHarness(RunLifecycle):
    """A run's life cycle (storage/runs/lifecycle.py) for tests: the scripted backend unless told
    otherwise, the seeds read from the recipe. The run's bookkeeping is its `ledger` (slots, tree,
    seeds, requests_used(), ...), named as such: the harness forwards nothing to it."""

    def __init__(self, recipe, catalog, backend=None, seeds=None, **kwargs) -> None:
        from synth.backends.scripted import ScriptedBackend
        from synth.config.seeds import load_seeds

        super().__init__(recipe, catalog, backend or ScriptedBackend(), load_seeds(recipe) if seeds is None else seeds,
                         **kwargs)

    def generate_and_commit(self, work):
        return self.ledger.generate_and_commit(work, self.backend)


class OnChunk(RunHooks):
    """Hooks that call `on_progress(accepted, total)` after each committed chunk."""

    def __init__(self, on_progress=None) -> None:
        self.on_progress = on_progress

    def chunk_committed(self, accepted: int, total: int) -> None:
        if self.on_progress:
            self.on_progress(accepted, total)


def start_run(recipe_or_path, backend=None, catalog=None, tree=None, plan: bool = True, hooks=None):
    """Load the recipe, open its catalog, start the run, set the tree, plan: ready to generate."""
    from storage.catalog.catalog import Catalog
    from synth.config.recipe import load_recipe

    recipe = load_recipe(recipe_or_path) if isinstance(recipe_or_path, (str, Path)) else recipe_or_path
    run = RunHarness(recipe, catalog or Catalog(recipe.catalog), backend, hooks=hooks)
    run.start()
    if tree is not None:
        run.ledger.set_tree(tree)
    if plan:
        run.plan()
    return run


def run_to_end(recipe_or_path, backend=None, catalog=None, tree=None):
    """start_run, generate every round, finish: (the run, its summary)."""
    run = start_run(recipe_or_path, backend, catalog, tree)
    run.generate()
    return run, run.finish()


def run_dataset(recipe_or_path, backend=None, catalog=None, tree=None, grow_by=None, export: bool = False,
                **recipe_update):
    """One contribution to the recipe's dataset, as the flow makes it without Prefect
    (`RunLifecycle.run`): growth, start, tree (and placing earlier samples on it), plan,
    generate, finish, and optionally a new version exported. `recipe_update` replaces
    top-level recipe keys."""
    from storage.catalog.catalog import Catalog
    from synth.config.recipe import load_recipe

    recipe = load_recipe(recipe_or_path) if isinstance(recipe_or_path, (str, Path)) else recipe_or_path
    if recipe_update:
        recipe = recipe.model_copy(update=recipe_update)
    run = RunHarness.grown(recipe, catalog or Catalog(recipe.catalog), backend, None, grow_by)
    summary = run.run(export=export, tree=tree, close=False)
    return run, summary
