"""One run's life cycle, in order, without Prefect: every caller runs a recipe through here.

    growth -> ledger -> start -> tree -> place -> import -> plan -> generate -> finish -> export -> report

`RunLifecycle.run()` is the whole sequence; its steps are methods of their own, so a test
can stop after any of them (tests/conftest.py) and a benchmark can time one. The run's
bookkeeping is the ledger (storage/runs/runs.py); the chunks run on the executor that the
recipe's `cluster:` names (synth/execution/). What a caller adds comes in through
`RunHooks`, whose methods do nothing here: the Prefect flow (flows/run.py) makes each step
a task, each chunk a retried task (`wrap_chunk`), shows artifacts and a progress bar, and
stops between chunks on a signal or a cancel from the UI (`generating`).

Leaves out: the pre-flight (the caller checks the recipe and reads the seeds once, and
hands both here with the open catalog) and anything the Prefect UI shows.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from functools import cached_property
from typing import Any, Callable, ContextManager, Iterator, Sequence, TypeVar

from storage.tables import datasets
from storage.catalog.catalog import Catalog
from storage.runs.runs import RunLedger, superseded_note
from synth.execution import executor_for
from synth.execution.base import Executor, RunChunk
from synth.config.recipe import Recipe

T = TypeVar("T")
Progress = Callable[[int, int], None]
log = logging.getLogger("synth.run")


class RunHooks:
    """What a caller adds to the life cycle. Every hook is called once per run or per step,
    except `chunk_committed` (once per chunk: keep it cheap)."""

    # exceptions that mean "stopped at once" (the run is marked interrupted, not failed)
    signals: tuple[type[BaseException], ...] = (KeyboardInterrupt,)

    def step(self, name: str, work: Callable[[Progress | None], T]) -> T:
        """Runs one step of the cycle (build-or-load-tree, place-on-tree, import-existing-dataset,
        export): `work(on_progress)`, where `on_progress(done, total)` may be None."""
        return work(None)

    def wrap_chunk(self, run: RunChunk) -> RunChunk:
        """What runs a chunk in this process, made once per run (a Ray replica runs its own)."""
        return run

    def started(self, run: "RunLifecycle", attempt: int) -> None:
        """The run is recorded in the catalog (its `attempt`-th start)."""

    def tree_built(self, run: "RunLifecycle", tree: Any) -> None:
        """The run's tree is built or loaded, and set on the run."""

    def dataset_state(self, run: "RunLifecycle", when: str, state: datasets.DatasetSummary) -> None:
        """What the dataset holds `before` generation and `after` it."""

    def generating(self, run: "RunLifecycle") -> ContextManager[Callable[[], bool] | None]:
        """Around generation; yields what is asked after each committed chunk whether to stop
        (True: stop there; its `why` attribute says who asked), or None."""
        return _nothing()

    def chunk_committed(self, accepted: int, total: int) -> None:
        """A chunk is in the catalog: `accepted` of the `total` samples to generate."""

    def finished(self, run: "RunLifecycle", summary: dict[str, Any]) -> None:
        """The run is finished (or short) and exported: the place for its report."""


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


class RunLifecycle:
    """One run of `recipe` against `catalog` on `backend`, with the `seeds` read once by the caller."""

    def __init__(self, recipe: Recipe, catalog: Catalog, backend: Any, seeds: Sequence[dict[str, Any]] = (),
                 hooks: RunHooks | None = None, logger: Any = None, growth: Any = None) -> None:
        self.recipe, self.catalog, self.backend = recipe, catalog, backend
        self.hooks = hooks or RunHooks()
        self.log = logger or log
        self.growth = growth  # storage.runs.growth.Growth: how this run's target was set, when grown
        self.ledger = RunLedger(recipe, catalog, backend.name, backend.model, seeds)
        self.placed: dict[str, Any] | None = None
        self.before: dict[str, Any] | None = None
        self.interrupted: str | None = None  # the message of a stop asked between chunks

    @classmethod
    def grown(cls, recipe: Recipe, catalog: Catalog, backend: Any, seeds: Sequence[dict[str, Any]] = (),
              grow_by: int | None = None, **kwargs: Any) -> "RunLifecycle":
        """The growth step first (storage/runs/growth.py): the target this run makes the dataset reach."""
        from storage.runs.growth import plan_growth

        growth = plan_growth(catalog, recipe, grow_by)
        return cls(growth.recipe, catalog, backend, seeds, growth=growth, **kwargs)

    @property
    def run_id(self) -> str:
        return self.ledger.run_id

    # -- the whole sequence --------------------------------------------------------------------

    def run(self, export: bool = True, tree: Any = None, close: bool = True) -> dict[str, Any]:
        """Every step in order; the summary (`status` "interrupted" when a stop was asked between
        chunks). A failure marks the run failed (or interrupted, for a signal) and is raised.
        `tree`: this tree instead of the recipe's; `close`: the backend too, at the end."""
        self.start()
        try:
            self.load()
            self.build_tree(tree)
            self.place()
            self.dataset_state("before")
            self.import_existing()
            self.plan()
            self.generate()
            if self.interrupted is not None:
                return {"status": "interrupted", "message": self.interrupted, "run_id": self.run_id}
            summary = self.finish()
            if export:
                self.export(summary)
            self.hooks.finished(self, summary)
        except BaseException as exc:
            self.record_failure(exc)
            raise
        finally:
            if close:
                self.backend.close()
        summary["run_id"] = self.run_id
        summary["catalog"] = str(self.recipe.catalog)
        summary["stats"] = self.catalog.stats(self.run_id)
        return summary

    # -- the steps -------------------------------------------------------------------------------

    def start(self) -> int:
        attempt = self.ledger.start()
        note = f"; {self.growth.note}" if self.growth is not None else ""
        self.log.info("run %s (start #%d) of dataset %s on %s/%s%s", self.run_id, attempt, self.ledger.dataset,
                      self.backend.name, self.backend.model, note)
        if self.ledger.superseded:
            self.log.warning(superseded_note(self.ledger.superseded))
        self.hooks.started(self, attempt)
        return attempt

    @cached_property
    def executor(self) -> Executor:
        """The executor `cluster.kind` names, with the hooks' chunk wrapper (made once)."""
        return executor_for(self.recipe.cluster, self.backend, self.ledger.ctx, self.hooks.wrap_chunk)

    def load(self) -> None:
        """The backend loaded (a Ray run: its replicas started), and where the chunks will run."""
        self.backend.load()
        note = self.executor.started_note()
        if note:
            self.log.info(note)

    def build_tree(self, tree: Any = None) -> Any:
        """The recipe's tree, built or loaded (or `tree`, saved as given), set on the run."""
        if tree is None and (self.recipe.tree is None or not self.recipe.tree.enabled):
            return None

        def work(on_progress: Progress | None) -> Any:
            from storage.runs.recipe_tree import ensure_tree
            from storage.tables.trees import save_tree

            if tree is not None:
                save_tree(self.catalog, tree)  # reports and cards read it back
                built = tree
            else:
                built = ensure_tree(self.catalog, self.recipe, self.backend, self.ledger.ctx.renderer)
            self.ledger.set_tree(built)
            return built

        built = self.hooks.step("build-or-load-tree", work)
        self.hooks.tree_built(self, built)
        return built

    def place(self) -> dict[str, Any] | None:
        """Earlier samples of the dataset made under another tree, classified onto this one."""
        if self.ledger.tree is None:
            return None
        placed = self.placed = self.hooks.step(
            "place-on-tree", lambda on_progress: self.ledger.place_on_tree(self.backend, on_progress=on_progress))
        if placed["placed"] or placed["unassigned"]:
            self.log.info("placed %d earlier samples on the tree (%d nowhere): %s", placed["placed"],
                          placed["unassigned"], placed["moves"])
        return placed

    def dataset_state(self, when: str) -> dict[str, Any]:
        state = datasets.summary(self.catalog, self.ledger.dataset, self.ledger.tree, self.ledger.scope)
        self.hooks.dataset_state(self, when, state)
        if when == "before":
            self.before = state.as_dict()
        return state.as_dict()

    def import_existing(self) -> dict[str, Any] | None:
        """The dataset being rebalanced (`balance.dataset`), classified onto the tree."""
        if self.recipe.balance.dataset is None:
            return None
        imported = self.hooks.step("import-existing-dataset", lambda on_progress: self.ledger.import_existing(
            self.backend, on_progress=on_progress))
        self.log.info("existing dataset: %d rows, %d unassigned, per leaf %s", imported["rows"],
                      imported["unassigned"], imported["per_leaf"])
        return imported

    def plan(self) -> Any:
        plan = self.ledger.make_plan()
        self.log.info("strategy %s: %s; %d samples to generate", plan.decision.label, plan.decision.reason,
                      self.ledger.goal())
        reused = self.ledger.reuse_surplus()
        if reused:
            self.log.info("%d of them filled from earlier runs' surplus rows (paid and checked, dropped only "
                          "because another attempt filled their slot): not generated again", reused)
        return plan

    def generate(self, max_chunks: int | None = None) -> int:
        """Chunks on the run's executor until the plan is done (or `max_chunks` ran); returns the
        chunks run. A stop asked between chunks marks the run interrupted, to be resumed, and
        leaves its message in `interrupted`."""
        with self.hooks.generating(self) as stop:
            done = self.ledger.generate(self.executor, on_progress=self.hooks.chunk_committed,
                                        max_chunks=max_chunks, stop=stop)
        for failed in self.ledger.failures:
            self.log.warning("chunk of %d attempts given up after %d tries on %s: %s", len(failed.work),
                             failed.tries, ", ".join(failed.workers), failed.error)
        events = self.executor.events_note()
        if events:
            self.log.warning(events)
        if self.ledger.stopped:
            self.interrupted = self.ledger.interrupt(stop.why)
            self.log.warning(self.interrupted)
        return done

    def finish(self) -> dict[str, Any]:
        summary = self.ledger.finish()
        self.log.info(summary["message"])
        embeddings = self.ledger.embedding_note()
        if embeddings:
            summary["embeddings"] = embeddings
            self.log.info(embeddings)
        summary["growth"] = self.growth.note if self.growth is not None else None
        summary["dataset_before"], summary["dataset_after"] = self.before, self.dataset_state("after")
        # `reused` (a count) stays what the ledger says; every contribution, with what this run counted:
        summary["contributions"], summary["placed"] = self.ledger.reuse_report(), self.placed
        return summary

    def export(self, summary: dict[str, Any]) -> dict[str, Any]:
        """A new version of the dataset (when it changed), exported, and pushed when configured;
        a run that accepted nothing exports nothing, and `export_skipped` says why."""
        from storage.publish.publish import export_run

        ledger = self.ledger
        exported = self.hooks.step("export", lambda _: export_run(
            self.catalog, self.recipe, self.run_id, ledger.scope, ledger.tree, ledger.plan.targets))
        summary["export"] = exported
        if exported.get("skipped"):
            reasons = self.catalog.stats(self.run_id).get("reject_reasons", {})
            why = ", ".join(f"{reason} {n}" for reason, n in list(reasons.items())[:4]) or "no attempt"
            summary["export_skipped"] = f"{summary.pop('export')['skipped']} (this run's rejects: {why})"
            self.log.warning(summary["export_skipped"])
        return exported

    def record_failure(self, exc: BaseException) -> None:
        """Mark the run failed (or interrupted, for a signal), unless the catalog itself is what failed."""
        stopped = isinstance(exc, self.hooks.signals)
        status = "interrupted" if stopped else "failed"
        message = (f"interrupted by {type(exc).__name__} at once (the chunk in flight is lost); run the same recipe "
                   "again to resume") if stopped else f"{type(exc).__name__}: {exc}"[:2000]
        try:
            self.catalog.update_run(self.run_id, status=status, message=message)
        except Exception as second:  # noqa: BLE001 - a full disk or a damaged file: the first error is the one to show
            self.log.warning("could not record the run as %s in the catalog: %s", status, second)
