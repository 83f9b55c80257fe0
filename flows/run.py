"""The Prefect flow that runs a recipe end to end: tree -> plan -> generate -> export.

Wiring only: the run's steps, in order, are `storage.runs.lifecycle.RunLifecycle`; this module
adds, through its hooks, what is a task and what retries (each step a task, each chunk a
retried task), what a person sees (progress bars in the terminal, progress, dataset and
report artifacts in the Prefect UI) and how a run stops (flows/stopping.py).

Tasks are coarse (one per chunk of requests), and caching across runs is the
catalog's job, not Prefect's: a chunk's samples have deterministic ids, so a retried
or rerun chunk regenerates only what is missing and writes nothing twice.
"""

from __future__ import annotations

import base64
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

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

from flows.preflight import check_run, take_over
from flows.stopping import stop_between_chunks, supersede
from storage.runs.lifecycle import RunHooks, RunLifecycle
from synth.execution import backend_for


def _run_step(work: Callable[[], Any]) -> Any:
    return work()


# each step of the life cycle is a task of its own name; `work` takes no argument here
STEP_TASKS = {name: task(_run_step, name=name, cache_policy=NO_CACHE)
              for name in ("build-or-load-tree", "place-on-tree", "import-existing-dataset", "export")}
# the steps that show a terminal progress bar while they classify
STEP_BARS = {"place-on-tree": ("placing earlier samples on the tree", "sample"),
             "import-existing-dataset": ("classifying existing rows", "row")}


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


def chunk_task(run: Callable[..., Any]) -> Callable[..., Any]:
    """The chunk function as a retried Prefect task (the life cycle's `wrap_chunk`)."""
    return task(run, name="generate-chunk", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)


def dataset_artifact(run: RunLifecycle, when: str, state: Any) -> None:
    """The dataset as a table artifact: per leaf, what it holds (`when`: before / after)."""
    from storage.tables.datasets import leaf_labels

    labels = leaf_labels(run.ledger.tree)
    rows = [{"leaf": labels.get(leaf, leaf or "(all)"), "samples": n} for leaf, n in sorted(
        state.per_leaf.items(), key=lambda kv: labels.get(kv[0], kv[0] or ""))]
    create_table_artifact(table=rows or [{"leaf": "(none yet)", "samples": 0}], key=f"dataset-{when}-{run.run_id}",
                          description=f"dataset {run.ledger.dataset} {when} this run: {state.total} samples")


@task(name="report", cache_policy=NO_CACHE)
def report_task(run: RunLifecycle, exported: dict[str, Any] | None) -> dict[str, Any]:
    """The run report, the leaf table and the distribution plot as artifacts a person reads in the UI."""
    from storage.reports.report import build_report, plot_report_leaves, render_markdown

    report = build_report(run.catalog, run.run_id)
    key = f"run-{run.run_id}"
    markdown = render_markdown(report)
    plot_dir = Path(run.recipe.export.dir) if exported else run.recipe.catalog.parent / "reports"
    plot = plot_report_leaves(report, plot_dir / f"leaf_distribution-{run.run_id}.png")
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


class PrefectHooks(RunHooks):
    """The flow's part of the life cycle: tasks, artifacts, bars, stopping and taking over."""

    signals = (KeyboardInterrupt, ExternalSignal)

    def __init__(self, logger: Any) -> None:
        self.logger = logger
        self.bar: Any = None
        self.progress_id: Any = None

    def step(self, name: str, work: Callable[[Any], Any]) -> Any:
        bar = STEP_BARS.get(name)
        return STEP_TASKS[name](lambda: with_bar(*bar, work) if bar else work(None))

    def wrap_chunk(self, run: Callable[..., Any]) -> Callable[..., Any]:
        return chunk_task(run)

    def started(self, run: RunLifecycle, attempt: int) -> None:
        supersede(run.run_id, self.logger)

    def dataset_state(self, run: RunLifecycle, when: str, state: Any) -> None:
        dataset_artifact(run, when, state)

    @contextmanager
    def generating(self, run: RunLifecycle) -> Iterator[Any]:
        """A progress artifact in the UI, a bar in the terminal, and a stop between chunks
        on a signal or a cancel from the UI."""
        target = run.ledger.goal()
        self.progress_id = create_progress_artifact(
            progress=0.0, key=f"progress-{run.run_id}", description="accepted samples / samples to generate")
        self.bar = tqdm(total=target, initial=min(run.ledger.accepted_count(), target), desc="accepted samples",
                        unit="sample", disable=None, file=sys.stderr)
        try:
            with stop_between_chunks() as stop:
                yield stop
        finally:
            self.bar.close()

    def chunk_committed(self, accepted: int, total: int) -> None:
        self.bar.update(accepted - self.bar.n)
        update_progress_artifact(self.progress_id, progress=100.0 * min(accepted, total) / max(total, 1))

    def finished(self, run: RunLifecycle, summary: dict[str, Any]) -> None:
        report_task(run, summary.get("export"))


@flow(name="synth-run")
def run_recipe(recipe_path: str, catalog: str | None = None, out: str | None = None,
               target: int | None = None, export: bool = True, grow_by: int | None = None,
               catalog_wait_s: float = 0.0, ray_address: str | None = None,
               model: str | None = None) -> dict[str, Any]:
    """Run a recipe: build or reuse its tree, generate what the dataset lacks, version and export it.
    With `cluster.kind: ray` (or a `ray_address`) the model runs in replicas on that Ray cluster
    and this process stays the catalog's one writer (docs/scaling.md)."""
    logger = get_run_logger()
    checks = (str(recipe_path), catalog, out, target, catalog_wait_s, ray_address, model)
    checked = take_over(checks) or check_run(*checks)  # the pre-flight, once per run (synth run did it already)
    if checked.contamination:  # seeds that copy a test item: said, not silently used
        logger.info(checked.contamination)
    # on a cluster the pool is the backend: tree, classification and chunks all go to its replicas
    backend = backend_for(checked.recipe)
    with checked.open_catalog(catalog_wait_s) as cat:
        run = RunLifecycle.grown(checked.recipe, cat, backend, checked.seeds, grow_by, hooks=PrefectHooks(logger),
                                 logger=logger)
        summary = run.run(export=export)
    if summary["status"] == "interrupted":
        return Cancelled(message=summary["message"])
    summary["decontamination"] = checked.contamination
    return summary
