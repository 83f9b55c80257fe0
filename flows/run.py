"""The Prefect flow that runs a recipe end to end: tree -> plan -> generate -> export.

Wiring only: the run's bookkeeping is `storage.runs.RunLedger`, the generation of a
chunk is `synth.pipeline.run_chunk`; this module decides what is a task, what retries,
and what a person sees (progress bar in the terminal, progress and report artifacts in
the Prefect UI).

Tasks are coarse (one per chunk of requests), and caching across runs is the
catalog's job, not Prefect's: a chunk's samples have deterministic ids, so a retried
or rerun chunk regenerates only what is missing and writes nothing twice.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any, Callable

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import ExternalSignal
from prefect.states import Cancelled
from tqdm import tqdm

from flows.lifecycle import stop_between_chunks, supersede
from flows.preflight import preflight, seed_contamination
from storage.catalog import Catalog
from storage.runs import LocalExecutor, RunLedger, superseded_note
from synth.pipeline import ChunkResult, run_work
from synth.ray_replicas import RayExecutor, ReplicaPool
from synth.seeds import load_seeds


@task(name="build-or-load-tree", cache_policy=NO_CACHE)
def tree_task(ledger: RunLedger, backend):
    from storage.recipe_tree import ensure_tree

    tree = ensure_tree(ledger.catalog, ledger.recipe, backend, ledger.ctx.renderer)
    ledger.set_tree(tree)
    return tree


def with_bar(desc: str, unit: str, work: Callable[[Callable[[int, int], None]], Any]) -> Any:
    """`work(on_progress)` with a terminal progress bar whose total the work reports as it goes."""
    bar = tqdm(desc=desc, unit=unit, disable=None, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        return work(progress)
    finally:
        bar.close()


@task(name="import-existing-dataset", cache_policy=NO_CACHE)
def import_task(ledger: RunLedger, backend) -> dict[str, Any]:
    """Classify the dataset being rebalanced onto the tree, with a progress bar."""
    return with_bar("classifying existing rows", "row", lambda on: ledger.import_existing(backend, on_progress=on))


@task(name="generate-chunk", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def generate_chunk(work, backend, ctx) -> ChunkResult:
    return run_work(work, backend, ctx)


@task(name="place-on-tree", cache_policy=NO_CACHE)
def place_task(ledger: RunLedger, backend) -> dict[str, Any]:
    """Earlier samples of the dataset made under another tree: classified onto this one."""
    return with_bar("placing earlier samples on the tree", "sample",
                    lambda on: ledger.place_on_tree(backend, on_progress=on))


@task(name="export", cache_policy=NO_CACHE)
def export_task(ledger: RunLedger) -> dict[str, Any]:
    """A new version of the dataset (when it changed), exported, and pushed when configured."""
    from storage.publish import export_run

    return export_run(ledger.catalog, ledger.recipe, ledger.run_id, ledger.scope, ledger.tree, ledger.plan.targets)


def dataset_artifact(ledger: RunLedger, when: str) -> dict[str, Any]:
    """The dataset as a table artifact: per leaf, what it holds (`when`: before / after)."""
    from storage.datasets import leaf_labels, summary

    state = summary(ledger.catalog, ledger.dataset, ledger.tree, ledger.scope)
    labels = leaf_labels(ledger.tree)
    rows = [{"leaf": labels.get(leaf, leaf or "(all)"), "samples": n} for leaf, n in sorted(
        state.per_leaf.items(), key=lambda kv: labels.get(kv[0], kv[0] or ""))]
    create_table_artifact(table=rows or [{"leaf": "(none yet)", "samples": 0}], key=f"dataset-{when}-{ledger.run_id}",
                          description=f"dataset {ledger.dataset} {when} this run: {state.total} samples")
    return state.as_dict()


@task(name="report", cache_policy=NO_CACHE)
def report_task(ledger: RunLedger, exported: dict[str, Any] | None) -> dict[str, Any]:
    """The run report, the leaf table and the distribution plot as artifacts a person reads in the UI."""
    from storage.report import build_report, plot_leaf_distribution, render_markdown

    report = build_report(ledger.catalog, ledger.run_id)
    key = f"run-{ledger.run_id}"
    markdown = render_markdown(report)
    plot_dir = Path(ledger.recipe.export.dir) if exported else ledger.recipe.catalog.parent / "reports"
    plot = plot_leaf_distribution(report, plot_dir / f"leaf_distribution-{ledger.run_id}.png")
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


def executor_for(ledger: RunLedger, backend):
    """Chunks on the cluster's replicas (ray.wait, re-queued when a replica dies), or here,
    each chunk a retried Prefect task."""
    if isinstance(backend, ReplicaPool):
        return RayExecutor(backend, ledger.ctx)
    return LocalExecutor(backend, ledger.ctx, run=generate_chunk)


def generate_all(ledger: RunLedger, backend, on_chunk=None, stop=None) -> None:
    """The ledger's rounds on the run's executor, with a progress bar in the terminal;
    `stop` is asked after each committed chunk (flows/lifecycle.py)."""
    target = ledger.goal()
    bar = tqdm(total=target, initial=min(ledger.accepted_count(), target), desc="accepted samples",
               unit="sample", disable=None, file=sys.stderr)

    def progress(accepted: int, total: int) -> None:
        bar.update(accepted - bar.n)
        if on_chunk:
            on_chunk(accepted, total)

    try:
        ledger.generate(executor_for(ledger, backend), on_progress=progress, stop=stop)
    finally:
        bar.close()


def record_failure(cat: Catalog, run_id: str, exc: BaseException, logger) -> None:
    """Mark the run failed (or interrupted, for a signal), unless the catalog itself is what failed."""
    stopped = isinstance(exc, (KeyboardInterrupt, ExternalSignal))
    status = "interrupted" if stopped else "failed"
    message = (f"interrupted by {type(exc).__name__} at once (the chunk in flight is lost); run the same recipe "
               "again to resume") if stopped else f"{type(exc).__name__}: {exc}"[:2000]
    try:
        cat.update_run(run_id, status=status, message=message)
    except Exception as second:  # noqa: BLE001 - a full disk or a damaged file: the first error is the one to show
        logger.warning("could not record the run as %s in the catalog: %s", status, second)


@flow(name="synth-run")
def run_recipe(recipe_path: str, catalog: str | None = None, out: str | None = None,
               target: int | None = None, export: bool = True, grow_by: int | None = None,
               catalog_wait_s: float = 0.0, ray_address: str | None = None,
               model: str | None = None) -> dict[str, Any]:
    """Run a recipe: build or reuse its tree, generate what the dataset lacks, version and export it.
    With `cluster.kind: ray` (or a `ray_address`) the model runs in replicas on that Ray cluster
    and this process stays the catalog's one writer (docs/scaling.md)."""
    from storage.growth import plan_growth

    logger = get_run_logger()
    recipe = preflight(recipe_path, catalog, out, target, catalog_wait_s=catalog_wait_s, ray_address=ray_address,
                       model=model)
    contamination = seed_contamination(recipe)  # seeds that copy a test item: said, not silently used
    if contamination:
        logger.info(contamination)
    # on a cluster the pool is the backend: tree, classification and chunks all go to its replicas
    backend = ReplicaPool(recipe.cluster, recipe.backend) if recipe.cluster.kind == "ray" else recipe.backend.build()
    with Catalog(recipe.catalog, wait_s=catalog_wait_s) as cat:
        growth = plan_growth(cat, recipe, grow_by)
        recipe = growth.recipe
        ledger = RunLedger(recipe, cat, backend.name, backend.model, load_seeds(recipe))
        attempt = ledger.start()
        logger.info("run %s (start #%d) of dataset %s on %s/%s; %s", ledger.run_id, attempt, ledger.dataset,
                    backend.name, backend.model, growth.note)
        if ledger.superseded:
            logger.warning(superseded_note(ledger.superseded))
        supersede(ledger.run_id, logger)
        try:
            backend.load()
            placed = None
            if isinstance(backend, ReplicaPool):
                logger.info("%d replicas on the Ray cluster at %s: %s", len(backend.replicas),
                            recipe.cluster.resolved_address(),
                            ", ".join(f"{h.name} on node {h.info['node'][:12]}" for h in backend.replicas))
            if recipe.tree is not None and recipe.tree.enabled:
                tree_task(ledger, backend)
                placed = place_task(ledger, backend)
                if placed["placed"] or placed["unassigned"]:
                    logger.info("placed %d earlier samples on the tree (%d nowhere): %s", placed["placed"],
                                placed["unassigned"], placed["moves"])
            before = dataset_artifact(ledger, "before")
            if recipe.balance.dataset is not None:
                imported = import_task(ledger, backend)
                logger.info("existing dataset: %d rows, %d unassigned, per leaf %s", imported["rows"],
                            imported["unassigned"], imported["per_leaf"])
            plan = ledger.make_plan()
            logger.info("strategy %s: %s; %d samples to generate", plan.decision.label, plan.decision.reason,
                        ledger.goal())
            progress_id = create_progress_artifact(
                progress=0.0, key=f"progress-{ledger.run_id}", description="accepted samples / samples to generate")

            def on_chunk(accepted: int, total: int) -> None:
                update_progress_artifact(progress_id, progress=100.0 * min(accepted, total) / max(total, 1))

            with stop_between_chunks() as stop:
                generate_all(ledger, backend, on_chunk, stop)
            for failed in ledger.failures:
                logger.warning("chunk of %d attempts given up after %d tries on %s: %s", len(failed.work),
                               failed.tries, ", ".join(failed.workers), failed.error)
            if isinstance(backend, ReplicaPool) and any(e[1] == "down" for e in backend.events):
                logger.warning("replica events: %s", "; ".join(f"{name} {kind} {detail}"[:200]
                                                              for _, kind, name, detail in backend.events))
            if ledger.stopped:
                message = ledger.interrupt(stop.why)
                logger.warning(message)
                return Cancelled(message=message)
            summary = ledger.finish()
            logger.info(summary["message"])
            embeddings = ledger.embedding_note()
            if embeddings:
                summary["embeddings"] = embeddings
                logger.info(embeddings)
            summary["growth"] = growth.note
            summary["dataset_before"], summary["dataset_after"] = before, dataset_artifact(ledger, "after")
            summary["reused"], summary["placed"] = ledger.reuse_report(), placed
            if export:
                summary["export"] = export_task(ledger)
                if summary["export"].get("skipped"):
                    reasons = cat.stats(ledger.run_id).get("reject_reasons", {})
                    why = ", ".join(f"{reason} {n}" for reason, n in list(reasons.items())[:4]) or "no attempt"
                    summary["export_skipped"] = f"{summary.pop('export')['skipped']} (this run's rejects: {why})"
                    logger.warning(summary["export_skipped"])
            report_task(ledger, summary.get("export"))
        except BaseException as exc:
            record_failure(cat, ledger.run_id, exc, logger)
            raise
        finally:
            backend.close()
        summary["run_id"] = ledger.run_id
        summary["catalog"] = str(recipe.catalog)
        summary["decontamination"] = contamination
        summary["stats"] = cat.stats(ledger.run_id)
        return summary
