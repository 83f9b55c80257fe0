"""The Prefect flow that runs a recipe end to end: tree -> plan -> generate -> export.

Wiring only: every step is a method of `storage.job.Job` or a function of `storage`;
this module decides what is a task, what retries, and what a person sees (progress
bar in the terminal, progress and report artifacts in the Prefect UI).

Tasks are coarse (one per chunk of requests), and caching across runs is the
catalog's job, not Prefect's: a chunk's samples have deterministic ids, so a retried
or rerun chunk regenerates only what is missing and writes nothing twice.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

from storage.catalog import Catalog
from storage.job import ChunkOutcome, Job
from synth.backends import make_backend
from synth.recipe import Recipe, load_recipe


def apply_overrides(recipe: Recipe, catalog: str | None = None, out: str | None = None,
                    target: int | None = None) -> Recipe:
    update: dict[str, Any] = {}
    if catalog:
        update["catalog"] = Path(catalog)
    if out:
        update["export"] = recipe.export.model_copy(update={"dir": Path(out)})
    if target:
        update["generation"] = recipe.generation.model_copy(update={"target": target})
    return recipe.model_copy(update=update) if update else recipe


@task(name="build-or-load-tree", cache_policy=NO_CACHE)
def tree_task(job: Job):
    from storage.recipe_tree import ensure_tree

    tree = ensure_tree(job.catalog, job.recipe, job.backend)
    job.set_tree(tree)
    return tree


@task(name="import-existing-dataset", cache_policy=NO_CACHE)
def import_task(job: Job) -> dict[str, Any]:
    """Classify the dataset being rebalanced onto the tree, with a progress bar."""
    bar = tqdm(desc="classifying existing rows", unit="row", disable=None, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        return job.import_existing(on_progress=progress)
    finally:
        bar.close()


@task(name="generate-chunk", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def generate_chunk(job: Job, work) -> ChunkOutcome:
    return job.run_chunk(work)


@task(name="export", cache_policy=NO_CACHE)
def export_task(job: Job) -> dict[str, Any]:
    from storage.publish import export_run

    return export_run(job.catalog, job.recipe, job.run_id)


@task(name="report", cache_policy=NO_CACHE)
def report_task(job: Job, exported: dict[str, Any] | None) -> dict[str, Any]:
    """The run report, the leaf table and the distribution plot as artifacts a person reads in the UI."""
    from storage.report import build_report, plot_leaf_distribution, render_markdown

    report = build_report(job.catalog, job.run_id)
    key = f"run-{job.run_id}"
    markdown = render_markdown(report)
    plot_dir = Path(job.recipe.export.dir) if exported else job.recipe.catalog.parent / "reports"
    plot = plot_leaf_distribution(report, plot_dir / f"leaf_distribution-{job.run_id}.png")
    # inline: the UI is an http page and will not load a file:// image
    inline = base64.b64encode(plot.read_bytes()).decode()
    markdown += f"\n![leaf distribution](data:image/png;base64,{inline})\n\nPlot file: `{plot}`\n"
    if exported:
        markdown += "\n## Export\n\n" + "\n".join(f"- {k}: `{v}`" for k, v in exported.get("paths", {}).items())
    create_markdown_artifact(markdown=markdown, key=f"{key}-report", description="run report")
    create_table_artifact(
        table=[{k: r[k] for k in ("label", "target", "before", "accepted", "generated", "rejected", "filtered", "duplicate")}
               for r in report["leaves"]],
        key=f"{key}-leaves", description="samples per leaf")
    report["plot"] = str(plot)
    return report


def generate_all(job: Job, on_chunk=None) -> None:
    """The job's rounds, each chunk a retried Prefect task, with a progress bar in the terminal."""
    target = job.goal()
    bar = tqdm(total=target, initial=min(job.accepted_count(), target), desc="accepted samples",
               unit="sample", disable=None, file=sys.stderr)

    def progress(accepted: int, total: int) -> None:
        bar.update(accepted - bar.n)
        if on_chunk:
            on_chunk(accepted, total)

    try:
        job.generate(run_chunk=lambda work: generate_chunk(job, work), on_progress=progress)
    finally:
        bar.close()


@flow(name="synth-run")
def run_recipe(recipe_path: str, catalog: str | None = None, out: str | None = None,
               target: int | None = None, export: bool = True) -> dict[str, Any]:
    """Run a recipe: build or reuse its tree, generate the missing samples, export."""
    logger = get_run_logger()
    recipe = apply_overrides(load_recipe(recipe_path), catalog, out, target)
    backend = make_backend(recipe.backend)
    with Catalog(recipe.catalog) as cat:
        job = Job(recipe, cat, backend)
        attempt = job.start()
        logger.info("run %s (start #%d) of %s on %s/%s", job.run_id, attempt, recipe.task.name,
                    backend.name, backend.model)
        try:
            backend.load()
            if recipe.tree is not None and recipe.tree.enabled:
                tree_task(job)
            if recipe.balance.dataset is not None:
                imported = import_task(job)
                logger.info("existing dataset: %d rows, %d unassigned, per leaf %s", imported["rows"],
                            imported["unassigned"], imported["per_leaf"])
            job.plan()
            logger.info("strategy %s: %s; %d samples to generate", job.decision.label, job.decision.reason,
                        job.goal())
            progress_id = create_progress_artifact(
                progress=0.0, key=f"progress-{job.run_id}", description="accepted samples / samples to generate")

            def on_chunk(accepted: int, total: int) -> None:
                update_progress_artifact(progress_id, progress=100.0 * min(accepted, total) / max(total, 1))

            generate_all(job, on_chunk)
            summary = job.finish()
            logger.info(summary["message"])
            if export:
                summary["export"] = export_task(job)
            report_task(job, summary.get("export"))
        except BaseException as exc:
            cat.update_run(job.run_id, status="failed", message=f"{type(exc).__name__}: {exc}"[:2000])
            raise
        finally:
            backend.close()
        summary["run_id"] = job.run_id
        summary["catalog"] = str(recipe.catalog)
        summary["stats"] = cat.stats(job.run_id)
        return summary
