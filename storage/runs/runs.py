"""The run ledger: what a run has done, what is left, and the one writer of its rows.

A run is one contribution to a dataset (storage/tables/datasets.py). It plans against the
dataset: per leaf, the target minus the accepted samples the dataset already holds
there from any other run (whatever model, sampling or prompts made them, unless the
recipe's `reuse:` excludes them), so raising a target generates only the difference
and a changed parameter reuses what was paid for.

Everything here is derived from the recipe and the catalog, so a run that was killed
and started again picks up exactly the slots that have no accepted sample yet and
writes nothing twice:

- a slot is one planned sample (synth/planning/plan.py); attempt n at slot s has id hash(run, s, n);
- `pending()` lists the attempts to make now, within `generation.max_rounds` attempts a
  slot and the request budget;
- an executor (synth/execution/) turns chunks of attempts into `ChunkResult`s (in
  process, or on Ray replicas); `commit()` deduplicates each result against the dataset and writes its
  requests and samples in ONE transaction;
- a slot is done when it has an accepted sample; a rejected, filtered or duplicate
  attempt leaves it open for the next round;
- a chunk the executor gave up on (a Ray cluster, after `cluster.max_chunk_tries`) is
  recorded in `failed_chunks` (which holds the latest start's) and its slots are left
  alone for the rest of this start, so it is not retried forever; a rerun tries them again. Every chunk failing is the
  run failing (a broken backend on the replicas), not a short run.

Leaves out: rendering, calling, parsing, verifying (the pipeline), where chunks run (the
executors), and the order of a run's steps (storage/runs/lifecycle.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from storage.catalog import bulk
from storage.catalog.catalog import Catalog, now
from storage.runs.existing import STRATEGY as EXISTING
from storage.tables import datasets
from storage.tables.datasets import Scope
from synth.curation.dedup import Candidate, Deduper
from synth.execution.base import Executor, Work
from synth.ids import stable_id
from synth.execution.pipeline import ChunkContext, ChunkFailed, ChunkResult, dedup_text, run_work
from synth.planning.balance import within_tolerance
from synth.planning.plan import Plan, attempt_cost, chunks, leaf_specs, make_plan, pending_attempts
from synth.config.recipe import Recipe
from synth.reject import reason_of
from synth.slot import Slot
from synth.strategies import STRATEGIES

Progress = Callable[[int, int], None]


@dataclass
class ChunkOutcome:
    attempted: int = 0
    accepted: int = 0
    rejected: int = 0
    filtered: int = 0
    duplicate: int = 0
    requests: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, result: ChunkResult) -> "ChunkOutcome":
        out = cls(attempted=len(result.samples), requests=len(result.requests))
        for row in result.samples:
            setattr(out, row["status"], getattr(out, row["status"]) + 1)
            if row.get("reason"):
                key = reason_of(row["reason"])
                out.reasons[key] = out.reasons.get(key, 0) + 1
        return out


def make_deduper(quality: Any, catalog: Catalog | None = None) -> Deduper:
    """Exact and MinHash dedup, and by meaning where `semantic_dup_threshold` is set; with a
    catalog, vectors are kept in it (an embedder that names its `cache_key`), so each text is
    embedded once across runs."""
    semantic = None
    if quality.semantic_dup_threshold is not None:
        from synth.similarity.embedder import get_embedder
        from synth.similarity.semantic import SemanticIndex

        embedder = get_embedder()
        encode = embedder.encode
        if catalog is not None and getattr(embedder, "cache_key", None):
            from storage.tables.embeddings import CachedEmbedder

            encode = CachedEmbedder(catalog, embedder.encode, embedder.cache_key)
        semantic = SemanticIndex(quality.semantic_dup_threshold, encode)
    return Deduper(quality.near_dup_threshold, semantic)


class RunLedger:
    def __init__(self, recipe: Recipe, catalog: Catalog, backend_name: str, model: str,
                 seeds: Sequence[dict[str, Any]] = ()) -> None:
        self.recipe, self.catalog = recipe, catalog
        self.backend_name, self.model = backend_name, model
        self.run_id = recipe.hash()
        self.dataset = recipe.dataset_name
        self.scope = Scope.of(recipe, self.run_id)  # the members this run counts, its own included
        self.seeds = list(seeds)
        self.tree: Any = None
        self.plan: Plan | None = None
        self.others: dict[str | None, int] = {}  # what other contributions hold, per leaf
        self.deduper = make_deduper(recipe.quality)
        self.ctx = ChunkContext.from_recipe(recipe, self.seeds, self.run_id)
        self.superseded: dict[str, Any] | None = None  # the earlier start this one replaced, left 'running'
        self.given_up: set[int] = set()  # slots of chunks the executor gave up on, this start
        self.failures: list[ChunkFailed] = []

    # -- set-up -----------------------------------------------------------------------

    def start(self) -> int:
        """Record the run (or its restart) and load the dedup index; returns the start number.
        An earlier start still marked 'running' was killed or crashed (this process holds the
        catalog, so no other writes it): it is kept in `superseded` for the log."""
        self.superseded = stale_start(self.catalog.run(self.run_id))
        attempts = self.catalog.start_run(self.run_id, self.recipe.task.name,
                                          self.recipe.model_dump(mode="json", exclude={"base_dir"}),
                                          self.recipe.hash(), self.backend_name, self.model, dataset=self.dataset,
                                          target=self.recipe.generation.target, base_hash=self.recipe.base_hash())
        with self.catalog.transaction() as con:  # failed_chunks: what the latest start gave up on
            con.execute("DELETE FROM failed_chunks WHERE run_id = ?", [self.run_id])
        self.load_dedup_index()
        return attempts

    def load_dedup_index(self) -> None:
        """Exact and near-duplicate checks cover the whole dataset (the members this run counts)."""
        self.deduper = make_deduper(self.recipe.quality, self.catalog)
        rows = datasets.dedup_rows(self.catalog, self.scope)
        task = self.recipe.task
        self.deduper.load((row["sample_id"], row["content_hash"],
                           dedup_text({"strategy": row["strategy"], "fields": json.loads(row["fields"] or "{}")}, task))
                          for row in rows)

    def embedding_note(self) -> str | None:
        """What dedup by meaning embedded this start and what it read back from the catalog."""
        from storage.tables.embeddings import CachedEmbedder

        embed = getattr(self.deduper.semantic, "embed", None)
        return embed.note() if isinstance(embed, CachedEmbedder) else None

    def set_tree(self, tree: Any) -> None:
        self.tree = tree
        self.catalog.update_run(self.run_id, tree_id=tree.tree_id)
        datasets.set_tree(self.catalog, self.dataset, tree.tree_id)

    def place_on_tree(self, backend: Any, on_progress: Progress | None = None) -> dict[str, Any]:
        """Earlier members of the dataset whose leaf this tree lacks are classified onto it
        (storage/runs/placement.py); the report says how many moved and where."""
        from storage.runs.placement import place_on_tree
        from synth.backends.base import SamplingSettings

        if self.tree is None:
            return {"placed": 0, "unassigned": 0, "kept": 0, "moves": []}
        # classification is a lookup, not writing: greedy, short answers
        sampling = SamplingSettings(temperature=0.0, top_p=1.0, max_tokens=48, seed=self.recipe.backend.sampling.seed)
        return place_on_tree(self.catalog, self.scope, self.tree, self.recipe.task, backend, sampling, self.run_id,
                             self.ctx.renderer, self.recipe.generation.chunk_size, on_progress)

    def make_plan(self, record: bool = True) -> Plan:
        """Each leaf's deficit against what the dataset holds there, as slots; recorded on the run."""
        from synth.config.seeds import seed_key

        rebalancing = self.recipe.balance.dataset is not None
        others = datasets.members_per_leaf(self.catalog, self.scope.without(self.run_id), self.tree)
        others.pop("", None)  # members no leaf of this tree holds (yet): they count nowhere
        self.others = others
        have = dict(others)
        if rebalancing:
            if record and self.recipe.balance.max_per_leaf is not None:
                self.downsample_existing()
            for leaf, n in bulk.accepted_per_leaf(self.catalog, [self.run_id], EXISTING).items():
                have[leaf] = have.get(leaf, 0) + n
        keys = [seed_key(row) for row in self.seeds]
        usage = datasets.seed_usage(self.catalog, self.scope.without(self.run_id))
        plan = make_plan(self.recipe, self.tree, len(self.seeds), self.run_id, have, keys, usage)
        self.plan = plan
        if record:
            self.catalog.update_run(self.run_id, strategy=plan.decision.label, strategy_reason=plan.decision.reason)
            self.catalog.save_leaf_targets(self.run_id, [
                {"leaf_id": spec.leaf_id, "label": spec.label, "target": plan.targets[spec.leaf_id],
                 "existing": plan.have.get(spec.leaf_id, 0)} for spec in leaf_specs(self.tree)])
        return plan

    def import_existing(self, backend: Any, on_progress: Progress | None = None) -> dict[str, Any]:
        """Classify `balance.dataset` onto the tree and copy its rows into this run; generated
        samples must not repeat them either, so the dedup index is reloaded."""
        from storage.runs.existing import import_for_run

        imported = import_for_run(self.catalog, self.recipe, self.tree, backend, self.run_id, self.ctx.renderer,
                                  on_progress)
        self.load_dedup_index()
        return imported

    def downsample_existing(self) -> int:
        """Rows of the rebalanced dataset over max_per_leaf are dropped, by hash(id, seed).
        Only existing rows: generated ones never exceed a leaf's target, which is <= max."""
        from synth.planning.plan import leaf_targets

        cap = self.recipe.balance.max_per_leaf
        return bulk.downsample(self.catalog, [self.run_id], {leaf: cap for leaf in leaf_targets(self.recipe, self.tree)},
                               self.recipe.backend.sampling.seed, strategy=EXISTING)

    def reuse_surplus(self) -> int:
        """Fill this run's fresh slots (no attempt yet) from the dataset's surplus rows: rows an
        earlier run paid for, that passed every check, and that it dropped only because another
        attempt had filled their slot. Same leaf and strategy, oldest first; each is checked
        against the dataset for duplicates again. Returns the rows reused now (a rerun finds
        its slots filled and reuses nothing twice)."""
        states = self.catalog.slot_states(self.run_id)
        fresh = [slot for slot in self.slots if slot.index not in states]
        reserve = datasets.surplus_reserve(self.catalog, self.scope.without(self.run_id)) if fresh else []
        waiting: dict[tuple[str | None, str], list[dict[str, Any]]] = {}
        for row in reserve:
            row["fields"] = json.loads(row["fields"]) if row["fields"] else {}
            waiting.setdefault((row["leaf_id"], row["strategy"]), []).append(row)
        picks = [(rows.pop(0), slot.index) for slot in fresh
                 if (rows := waiting.get((slot.leaf_id, slot.strategy)))]
        if not picks:
            return 0
        verdicts = self.deduper.check([Candidate(row["sample_id"], row["content_hash"], dedup_text(row, self.recipe.task))
                                       for row, _ in picks])
        return self.catalog.reuse_surplus(self.run_id, [(row["sample_id"], slot) for (row, slot), verdict
                                                        in zip(picks, verdicts) if verdict.duplicate_of is None])

    def surplus_reused(self) -> int:
        """Generated samples of this run that an earlier run paid for (their request is its);
        rows of a rebalanced dataset (strategy `existing`, their classify request another
        run's too) are not surplus."""
        return int(self.catalog.scalar(
            """SELECT count(*) FROM samples s JOIN requests q USING (request_id)
               WHERE s.run_id = ? AND s.status = 'accepted' AND s.slot >= 0 AND s.strategy <> ?
                 AND q.run_id <> s.run_id""", [self.run_id, EXISTING]) or 0)

    # -- generation -----------------------------------------------------------------------

    @property
    def slots(self) -> list[Slot]:
        return self.plan.slots if self.plan is not None else []

    def requests_used(self) -> int:
        return self.catalog.count("requests", run_id=self.run_id)

    def attempt_cost(self, slot: Slot) -> int:
        return attempt_cost(slot, self.ctx.answer_copies(STRATEGIES[slot.strategy]),
                            self.recipe.quality.judge is not None)

    def pending(self) -> Work:
        gen = self.recipe.generation
        slots = [slot for slot in self.slots if slot.index not in self.given_up]
        return pending_attempts(slots, self.catalog.slot_states(self.run_id), self.catalog.leaf_yield(self.run_id),
                                gen.request_budget - self.requests_used(), gen.max_rounds, self.attempt_cost)

    def record_failure(self, failed: ChunkFailed) -> None:
        """A chunk the executor gave up on: into `failed_chunks`; its slots wait for a rerun."""
        pairs = [[slot.index, attempt] for slot, attempt in failed.work]
        self.catalog.record_failed_chunk(self.run_id, stable_id(self.run_id, pairs), pairs, failed.tries,
                                         failed.workers, failed.error)
        self.given_up.update(slot.index for slot, _ in failed.work)
        self.failures.append(failed)

    def commit(self, result: ChunkResult) -> ChunkOutcome:
        """Deduplicate the chunk's accepted candidates against the dataset, then write the
        chunk's requests and samples in one transaction."""
        task = self.recipe.task
        accepted = [row for row in result.samples if row["status"] == "accepted"]
        verdicts = self.deduper.check([Candidate(row["sample_id"], row["content_hash"], dedup_text(row, task))
                                       for row in accepted])
        for row, verdict in zip(accepted, verdicts):
            if verdict.duplicate_of is not None:
                row.update(status="duplicate", reason=verdict.reason, duplicate_of=verdict.duplicate_of)
        self.catalog.commit_chunk(result.requests, result.samples)
        return ChunkOutcome.of(result)

    def generate_and_commit(self, work: Work, backend: Any) -> ChunkOutcome:
        """Generate and commit one chunk in process (tests, tools)."""
        return self.commit(run_work(work, backend, self.ctx))

    def generate(self, executor: Executor, on_progress: Progress | None = None,
                 max_chunks: int | None = None, stop: Callable[[], bool] | None = None) -> int:
        """Rounds of generate-what-is-missing until every slot is done, out of rounds, or out
        of budget; then keep one sample per slot. Returns the number of chunks run.
        `stop` is asked after each committed chunk: True ends generation there (a signal, a
        cancel), `stopped` is set, and the run is left to `interrupt()`, to be resumed."""
        target, done, committed = self.goal(), 0, 0
        self.stopped = False
        while True:
            work = self.pending()
            if not work:
                break
            used, failed = self.requests_used(), len(self.failures)
            batch = chunks(work, self.recipe.generation.chunk_size)
            if max_chunks is not None:
                batch = batch[:max_chunks - done]
            for result in executor.map(batch):
                done += 1
                if isinstance(result, ChunkFailed):
                    self.record_failure(result)
                    continue
                self.commit(result)
                committed += 1
                if on_progress:
                    on_progress(min(self.accepted_count(), target), target)
                if stop is not None and stop():
                    self.stopped = True
                    return done
            if max_chunks is not None and done >= max_chunks:
                return done
            if self.requests_used() == used and len(self.failures) == failed:
                # a round that made nothing new would repeat forever
                raise RuntimeError(f"a round made no new requests for {len(work)} pending attempts; "
                                   "check the catalog with `synth stats`")
        if self.failures and not committed:
            raise RuntimeError(f"every chunk failed ({len(self.failures)}, {self.failures[-1].tries} tries each); "
                               f"the last error: {self.failures[-1].error}")
        self.drop_surplus()
        return done

    def drop_surplus(self) -> int:
        return self.catalog.drop_surplus(self.run_id, self.recipe.backend.sampling.seed)

    def accepted_count(self) -> int:
        """Generated slots filled so far (rows of a rebalanced dataset have negative slots)."""
        return int(self.catalog.scalar(
            "SELECT count(DISTINCT slot) FROM samples WHERE run_id = ? AND status = 'accepted' AND slot >= 0",
            [self.run_id]) or 0)

    def goal(self) -> int:
        """Samples this run generates: the sum of the leaves' deficits."""
        return len(self.slots)

    # -- the end -------------------------------------------------------------------------

    def leaf_balance(self) -> list[dict[str, Any]]:
        """Per leaf: target, accepted now in the dataset (other contributions, existing rows
        kept, generated), within tolerance or not."""
        have = dict(self.others)
        for leaf, n in bulk.accepted_per_leaf(self.catalog, [self.run_id]).items():
            have[leaf] = have.get(leaf, 0) + n
        tolerance, targets = self.recipe.balance.tolerance, self.plan.targets
        return [{"leaf_id": spec.leaf_id, "label": spec.label, "target": targets[spec.leaf_id],
                 "have": have.get(spec.leaf_id, 0),
                 "ok": within_tolerance(have.get(spec.leaf_id, 0), targets[spec.leaf_id], tolerance)}
                for spec in leaf_specs(self.tree)]

    def finish(self) -> dict[str, Any]:
        """Done when every leaf holds at least (1 - tolerance) x its target; else say which
        leaves fell short and why (budget or rounds)."""
        generated, goal = self.accepted_count(), self.goal()
        leaves = self.leaf_balance()
        short = [leaf for leaf in leaves if not leaf["ok"]]
        total = sum(leaf["have"] for leaf in leaves)
        target = self.recipe.generation.target
        reused = sum(self.others.values())
        existing = total - generated - reused
        parts = [f"{reused} reused" if reused else "", f"{existing} existing" if existing else "",
                 f"{generated} generated" if reused or existing else ""]
        made = f"{total} accepted samples" + (f" ({' + '.join(p for p in parts if p)})" if reused or existing else "")
        surplus = self.surplus_reused()
        if surplus:
            made += f" ({surplus} taken from earlier runs' surplus rows, not generated again)"
        if not short:
            status = "finished"
            message = f"{made}, target {target} met" if generated >= goal else (
                f"{made} of {target}: every leaf within {self.recipe.balance.tolerance:.0%} of its target")
        else:
            left = self.recipe.generation.request_budget - self.requests_used()
            why = "the request budget is spent" if left < 2 else "the rounds per slot are used up"
            named = ", ".join(f"{leaf['label']} ({leaf['have']}/{leaf['target']})" for leaf in short[:10])
            more = f" and {len(short) - 10} more" if len(short) > 10 else ""
            status = "short"
            if self.failures:
                why = f"{len(self.failures)} chunks failed on the cluster (table failed_chunks; rerun to retry them)"
            message = f"{made} of {target}: {why}; leaves below target: {named}{more}"
        if self.failures and status == "finished":
            message += f"; {len(self.failures)} chunks failed on the cluster (table failed_chunks)"
        self.catalog.update_run(self.run_id, status=status, message=message, finished_at=now())
        return {"status": status, "message": message, "accepted": total, "generated": generated, "reused": reused,
                "surplus_reused": surplus,
                "target": target, "dataset": self.dataset, "short_leaves": [leaf["label"] for leaf in short]}

    def interrupt(self, why: str) -> str:
        """Mark the run 'interrupted' (stopped between chunks, everything committed kept)."""
        message = (f"interrupted by {why} with {self.accepted_count()} of {self.goal()} samples generated; "
                   "run the same recipe again to resume")
        self.catalog.update_run(self.run_id, status="interrupted", message=message, finished_at=now())
        return message

    def reuse_report(self) -> list[dict[str, Any]]:
        """Every contribution to the dataset with the rows it holds and the rows this run counted."""
        summary = datasets.summary(self.catalog, self.dataset, self.tree, self.scope)
        return [{"run_id": c.run_id, "model": c.model, "strategy": c.strategy, "status": c.status,
                 "accepted": c.accepted, "counted": c.kept, "this_run": c.run_id == self.run_id}
                for c in summary.contributions]


def stale_start(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run's earlier start, if the catalog still marks it 'running': its process was killed
    or crashed (a live one would hold the catalog). `alive` says whether its pid still runs
    on this host (a reused pid, or another process); None when it ran on another host."""
    import os
    import socket

    if row is None or row.get("status") != "running":
        return None
    pid, host = row.get("pid"), row.get("host")
    alive = None
    if pid and host == socket.gethostname():
        try:
            os.kill(int(pid), 0)
            alive = int(pid) != os.getpid()
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
    return {"run_id": row["run_id"], "pid": pid, "host": host, "since": row.get("updated_at"), "alive": alive,
            "attempts": row.get("attempts")}


def superseded_note(old: dict[str, Any]) -> str:
    """What the log says about a superseded start."""
    where = f"pid {old['pid']} on {old['host']}" if old.get("pid") else "an unknown process"
    state = {False: "is gone", True: "still runs but no longer holds the catalog",
             None: "ran on another host"}[old["alive"]]
    return (f"found run {old['run_id']} left 'running' by {where} (last update {old['since']}; that process {state}: "
            "killed or crashed); superseded it and resuming from what it committed")
