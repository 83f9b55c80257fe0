"""One run of a recipe against the catalog: plan, generate what is missing, commit.

`Job` is the factory's engine without any scheduler: the Prefect flows call its steps
as tasks, the tests call them directly. Everything it decides is derived from the
recipe and the catalog, so a run that was killed and started again picks up exactly
the slots that have no accepted sample yet and writes nothing twice:

- a slot is one planned sample; attempt n at slot s has id hash(run, s, n);
- a chunk of attempts is generated (one backend batch per stage) and committed in one
  transaction, requests and samples together;
- a slot is done when it has an accepted sample; a rejected, filtered or duplicate
  attempt leaves it open for the next round, up to `generation.max_rounds` attempts,
  and never past the request budget.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from storage import bulk
from storage.catalog import Catalog
from storage.imports import STRATEGY as EXISTING
from synth.backends.base import Backend
from synth.dedup import NearDupIndex
from synth.ids import stable_id, stable_seed, text_hash
from synth.parsing import ParseFailure
from synth.balance import BalanceError, LeafSpec, bounded_allocation, leaf_weights, within_tolerance
from synth.plan import allocate, plan_slots
from synth.quality import FilterContext, first_problem, normalize_for_hash
from synth.recipe import Recipe
from synth.seeds import load_seeds
from synth.strategies import STAGES, Slot, Stage, StageContext, parse_stage, render_stage, seeded_fields, stage_template_hash
from synth.types import GenerationRequest, GenerationResult, Sampling

Progress = Callable[[int, int], None]
MAX_PARALLEL_ATTEMPTS = 3


@dataclass
class ChunkOutcome:
    attempted: int = 0
    accepted: int = 0
    rejected: int = 0
    filtered: int = 0
    duplicate: int = 0
    requests: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def add_reason(self, reason: str) -> None:
        key = reason.split(":", 1)[0]
        self.reasons[key] = self.reasons.get(key, 0) + 1


@dataclass(frozen=True)
class StrategyDecision:
    counts: dict[str, int]
    label: str
    reason: str


def decide_strategy(recipe: Recipe, n_seeds: int, n: int | None = None) -> StrategyDecision:
    """How the `n` samples to generate (default: the target) split over strategies."""
    gen = recipe.generation
    n = gen.target if n is None else n
    if gen.strategy_weights:
        counts = allocate(gen.strategy_weights, n)
        label = "mix(" + ", ".join(f"{k}={v:g}" for k, v in gen.strategy_weights.items()) + ")"
        return StrategyDecision(counts, label, "mixed by the recipe's strategy_weights")
    if gen.strategy == "auto":
        from synth.budget import choose_strategy

        choice = choose_strategy(gen.request_budget, n_seeds)
        return StrategyDecision({choice.strategy: n}, choice.strategy, choice.reason)
    return StrategyDecision({gen.strategy: n}, gen.strategy, "fixed by the recipe")


class Job:
    def __init__(self, recipe: Recipe, catalog: Catalog, backend: Backend) -> None:
        self.recipe = recipe
        self.catalog = catalog
        self.backend = backend
        self.run_id = recipe.hash()
        self.seeds: list[dict[str, Any]] = []
        self.ctx: StageContext | None = None
        self.slots: list[Slot] = []
        self.decision: StrategyDecision | None = None
        self.tree: Any = None  # synth.tree.Tree when the recipe has a tree
        gen_sampling = recipe.backend.sampling
        self._sampling = gen_sampling
        self._filters = FilterContext(
            min_chars=recipe.quality.min_chars,
            max_chars=recipe.quality.max_chars,
            question_field=recipe.task.question,
            prompt_markers=("Reply as JSON with the key", "Here are examples of the kind"),
            max_repetition=recipe.quality.max_repetition,
        )
        from synth.verify import make_verifier

        self.verifier = make_verifier(recipe.verify.kind)
        self._hashes: dict[str, str] = {}
        self._near = NearDupIndex(recipe.quality.near_dup_threshold)

    # -- set-up -----------------------------------------------------------------------

    def start(self) -> int:
        """Record the run (or its restart) and load the seeds; returns the attempt number."""
        attempts = self.catalog.start_run(
            self.run_id, self.recipe.task.name, self.recipe.model_dump(mode="json", exclude={"base_dir"}),
            self.recipe.hash(), self.backend.name, self.backend.model,
        )
        self.load_inputs()
        self._load_dedup_index()
        return attempts

    def load_inputs(self) -> None:
        self.seeds = load_seeds(self.recipe)
        self.ctx = StageContext(self.recipe.task, self.seeds, self.recipe.template_overrides())

    def _load_dedup_index(self) -> None:
        """Exact and near-duplicate checks cover this run and earlier runs of the same dataset."""
        rows = self.catalog.query(
            """SELECT s.sample_id, s.content_hash, s.strategy, s.fields FROM samples_text s JOIN runs r USING (run_id)
               WHERE r.name = ? AND s.status = 'accepted' ORDER BY s.created_at, s.sample_id""",
            [self.recipe.task.name])
        for row in rows:
            if row["content_hash"]:
                self._hashes.setdefault(row["content_hash"], row["sample_id"])
            self._near.add(row["sample_id"], self._dedup_text(row["strategy"], json.loads(row["fields"])))

    def _dedup_text(self, strategy: str, fields: dict[str, Any]) -> str:
        # Answer augmentation repeats the seed question by design: compare its answers instead.
        name = self.recipe.task.answer if strategy == "answer_augmentation" else self.recipe.task.question
        return str(fields.get(name, ""))

    def set_tree(self, tree: Any) -> None:
        self.tree = tree
        self.catalog.update_run(self.run_id, tree_id=tree.tree_id)

    def leaf_specs(self) -> list[LeafSpec]:
        """The leaves samples go to, with the dimension values their paths fix."""
        if self.tree is None:
            return [LeafSpec(None, "(all)", ())]
        from synth.tree import leaf_label

        return [LeafSpec(leaf.node_id, leaf_label(leaf),
                         tuple((d, v) for d, v in leaf.path if d not in leaf.any_of))
                for leaf in self.tree.leaves()]

    def leaf_targets(self) -> dict[str | None, int]:
        """How many accepted samples each leaf should end with (generated and existing together)."""
        bal, tree_settings = self.recipe.balance, self.recipe.tree
        if self.tree is None and tree_settings is not None and tree_settings.enabled:
            return {None: self.recipe.generation.target}  # `synth plan` before the tree exists: one bucket
        specs = self.leaf_specs()
        if bal.dimension is not None and self.tree is None:
            raise BalanceError("balance.dimension needs a tree: add a `tree:` section or remove balance.dimension")
        weights = leaf_weights(specs, tree_settings.leaf_weights if tree_settings else None,
                               bal.dimension, bal.weights)
        return bounded_allocation(weights, self.recipe.generation.target, bal.min_per_leaf, bal.max_per_leaf)

    def existing_counts(self) -> dict[str | None, int]:
        """Accepted rows of the rebalanced dataset per leaf (none without `balance.dataset`)."""
        return bulk.leaf_counts(self.catalog, [self.run_id], EXISTING) if self.catalog is not None else {}

    def plan(self, record: bool = True) -> list[Slot]:
        """The run's slots: each leaf's deficit against its target; `record=False` plans
        without writing (for `synth plan`)."""
        gen = self.recipe.generation
        self.targets = self.leaf_targets()
        rebalancing = self.recipe.balance.dataset is not None and self.catalog is not None
        if record and rebalancing and self.recipe.balance.max_per_leaf is not None:
            self.downsample_existing()
        # deficits against the dataset's rows only: generated rows fill the planned slots
        if rebalancing:
            planned = bulk.rebalance_plan(self.catalog, [self.run_id], self.targets, strategy=EXISTING)["leaves"]
        else:
            planned = {leaf_id: {"have": 0, "deficit": target} for leaf_id, target in self.targets.items()}
        have = {leaf_id: planned[leaf_id]["have"] for leaf_id in self.targets}
        deficits = {leaf_id: planned[leaf_id]["deficit"] for leaf_id in self.targets}
        self.decision = decide_strategy(self.recipe, len(self.seeds), sum(deficits.values()))
        if record:
            self.catalog.update_run(self.run_id, strategy=self.decision.label,
                                    strategy_reason=self.decision.reason)
            self.catalog.save_leaf_targets(self.run_id, [
                {"leaf_id": spec.leaf_id, "label": spec.label, "target": self.targets[spec.leaf_id],
                 "existing": have.get(spec.leaf_id, 0)} for spec in self.leaf_specs()])
        constraints_for = None
        if self.tree is not None:
            from synth.tree import leaf_constraints

            leaves_by_id = {leaf.node_id: leaf for leaf in self.tree.leaves()}

            def constraints_for(leaf_id: str | None, index: int) -> tuple[tuple[str, str], ...]:
                leaf = leaves_by_id[leaf_id]
                return tuple(tuple(pair) for pair in leaf_constraints(leaf, stable_seed(self.run_id, index)))
        self.slots = plan_slots(
            per_leaf=deficits,
            strategy_counts=self.decision.counts,
            n_seeds=len(self.seeds),
            examples_per_prompt=gen.examples_per_prompt,
            seed=self.recipe.backend.sampling.seed,
            constraints_for=constraints_for,
        )
        return self.slots

    def import_existing(self, on_progress: Progress | None = None) -> dict[str, Any]:
        """Classify the rows of `balance.dataset` onto the tree (an import run of its own,
        reused by any recipe with the same dataset and tree) and copy them into this run."""
        from storage.imports import import_existing
        from synth.recipe import SamplingSettings
        from synth.seeds import load_dataset_rows

        if self.tree is None:
            raise BalanceError("balance.dataset: rebalancing classifies rows onto a tree; add a `tree:` section")
        spec = self.recipe.balance.dataset
        rows = load_dataset_rows(self.recipe)
        # classification is a lookup, not writing: greedy, short answers
        sampling = SamplingSettings(temperature=0.0, top_p=1.0, max_tokens=48, seed=self._sampling.seed)
        result = import_existing(self.catalog, self.recipe.task, self.tree, rows, self.backend, sampling,
                                 source=f"{self.recipe.resolve_input(spec.path)}#limit={spec.limit}",
                                 question_field=self.recipe.task.question, on_progress=on_progress,
                                 chunk_size=self.recipe.generation.chunk_size)
        copied = self.adopt_existing(result.run_id)
        self._load_dedup_index()  # generated samples must not repeat the existing rows either
        return {"import_run_id": result.run_id, "rows": result.rows, "per_leaf": result.counts,
                "unassigned": result.unassigned, "unassigned_reasons": result.reasons,
                "classify_requests": result.requests, "copied": copied}

    def adopt_existing(self, import_run_id: str) -> int:
        """Copy the classified rows of an import (storage/imports.py) into this run, so the
        dataset, its report and its export hold them beside what is generated; the import
        itself stays untouched for other recipes to reuse. Returns rows copied."""
        return self.catalog.adopt_existing(self.run_id, import_run_id)

    def downsample_existing(self) -> int:
        """Rows of the rebalanced dataset over max_per_leaf are dropped, by hash(id, seed).

        Only existing rows: generated ones never exceed a leaf's target, which is <= max."""
        cap = self.recipe.balance.max_per_leaf
        return bulk.downsample(self.catalog, [self.run_id], {leaf_id: cap for leaf_id in self.targets},
                               self.recipe.backend.sampling.seed, strategy=EXISTING)

    # -- generation -----------------------------------------------------------------------

    def requests_used(self) -> int:
        return int(self.catalog.scalar("SELECT count(*) FROM requests WHERE run_id = ?", [self.run_id]) or 0)

    def pending(self) -> list[tuple[Slot, int]]:
        """(slot, attempt) pairs to generate now, within the round limit and the request budget.

        An open slot in a leaf that has rejected much so far gets several attempts at once
        (about 1 / acceptance rate, at most MAX_PARALLEL_ATTEMPTS), so a weak leaf catches up
        in one round instead of many; a slot that ends with two accepted samples keeps one
        (`drop_surplus`).
        """
        gen = self.recipe.generation
        states = self.catalog.slot_states(self.run_id)
        yields = self.catalog.leaf_yield(self.run_id)
        budget_left = gen.request_budget - self.requests_used()
        work = []
        for slot in self.slots:
            done, attempts, next_attempt = states.get(slot.index, (False, 0, 0))
            remaining = gen.max_rounds - attempts
            if done or remaining <= 0:
                continue
            ok, tried = yields.get(slot.leaf_id, (0, 0))
            rate = (ok + 1) / (tried + 1)  # smoothed: 1 before anything is measured
            wanted = min(remaining, MAX_PARALLEL_ATTEMPTS, math.ceil(1 / rate))
            cost = self.attempt_cost(slot)
            for attempt in range(next_attempt, next_attempt + wanted):
                if cost > budget_left:
                    return work
                budget_left -= cost
                work.append((slot, attempt))
        return work

    def answer_copies(self, slot: Slot, stage_name: str) -> int:
        """Math self-consistency samples k answers for a new question; one otherwise."""
        verify = self.recipe.verify
        if stage_name == "answer" and verify.kind == "math" and slot.strategy == "new_question":
            return verify.samples
        return 1

    def attempt_cost(self, slot: Slot) -> int:
        judge = 1 if self.recipe.quality.judge is not None else 0
        return judge + sum(self.answer_copies(slot, stage.name) for stage in STAGES[slot.strategy])

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

    def _request(self, sample_id: str, stage, slot: Slot, known: dict[str, Any], copy: int = 0
                 ) -> GenerationRequest:
        s = self._sampling
        parts = (sample_id, stage.name) if copy == 0 else (sample_id, stage.name, copy)
        return GenerationRequest(
            key=stable_id(*parts),
            messages=render_stage(stage, slot, self.ctx, known),
            sampling=Sampling(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
                              seed=stable_seed(s.seed, *parts)),
            json_schema=self.ctx.schema_for(stage),
        )

    def _request_row(self, request: GenerationRequest, result: GenerationResult, stage, slot: Slot) -> dict[str, Any]:
        s = request.sampling
        return {
            "request_id": request.key, "run_id": self.run_id, "stage": stage.name, "strategy": slot.strategy,
            "leaf_id": slot.leaf_id, "template": stage.template, "template_hash": stage_template_hash(stage, self.ctx),
            "prompt_hash": text_hash(json.dumps(request.messages, sort_keys=True)),
            "sampling": {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens, "seed": s.seed},
            "raw_text": result.text, "finish_reason": result.finish_reason, "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens, "latency_s": result.latency_s, "error": result.error,
        }

    def run_chunk(self, work: list[tuple[Slot, int]]) -> ChunkOutcome:
        """Generate one chunk of attempts, stage by stage in batches, and commit it whole."""
        outcome = ChunkOutcome(attempted=len(work))
        live: dict[str, dict[str, Any]] = {}
        for slot, attempt in work:
            sample_id = stable_id(self.run_id, slot.index, attempt)
            live[sample_id] = {"slot": slot, "attempt": attempt, "known": seeded_fields(slot, self.ctx),
                               "failure": None, "raw": None, "request_id": None}
        request_rows: list[dict[str, Any]] = []
        for stage_name in ("question", "answer"):
            batch = []
            for sample_id, item in live.items():
                if item["failure"] is not None:
                    continue
                stage = next((st for st in STAGES[item["slot"].strategy] if st.name == stage_name), None)
                if stage is None:
                    continue
                for copy in range(self.answer_copies(item["slot"], stage_name)):
                    request = self._request(sample_id, stage, item["slot"], item["known"], copy)
                    batch.append((sample_id, stage, request))
            if not batch:
                continue
            results = self.backend.generate([request for _, _, request in batch])
            outputs: dict[str, list[tuple[str, str, Any]]] = {}  # sample -> (request id, raw text, parsed)
            for (sample_id, stage, request), result in zip(batch, results, strict=True):
                request_rows.append(self._request_row(request, result, stage, live[sample_id]["slot"]))
                parsed = (ParseFailure("backend_error", result.error[:500]) if result.error is not None
                          else parse_stage(stage, result.text, result.finish_reason, self.ctx))
                outputs.setdefault(sample_id, []).append((request.key, result.text, parsed))
            for sample_id, tried in outputs.items():
                item = live[sample_id]
                good = [entry for entry in tried if not isinstance(entry[2], ParseFailure)]
                # lineage points at the request whose text became the sample, or that failed it
                item["request_id"], item["raw"], first = (good or tried)[0]
                if not good:
                    item["failure"] = str(first)
                    continue
                item["known"].update(first)
                if stage_name == "answer":
                    item["answers"] = [parsed[self.recipe.task.answer] for _, _, parsed in good]
        self._verify(live)
        self._llm_judge(live, request_rows)
        outcome.requests = len(request_rows)
        sample_rows = [self._settle(sample_id, item, outcome) for sample_id, item in live.items()]
        self.catalog.commit_chunk(request_rows, sample_rows)
        return outcome

    def _verify(self, live: dict[str, dict[str, Any]]) -> None:
        """Run the recipe's verifier on every parsed sample; math may pick another of its k answers."""
        if self.recipe.verify.kind == "none":
            return
        from synth.verify import context_from_settings

        task, items = self.recipe.task, []
        for item in live.values():
            if item["failure"] is not None:
                continue
            slot: Slot = item["slot"]
            seed = self.seeds[slot.seed_row] if slot.seed_row is not None else {}
            extra: dict[str, Any] = {"answer_field": task.answer}
            if self.recipe.verify.kind == "math":
                if slot.strategy in ("answer_augmentation", "question_rephrase") and seed.get(task.answer):
                    extra["reference"] = str(seed[task.answer])
                else:
                    extra["solutions"] = tuple(str(a) for a in item.get("answers", ()))
            else:
                extra["test"] = seed.get("test")
                extra["entry_point"] = seed.get("entry_point")
            for answer in item.get("answers", [item["known"].get(task.answer)])[:8]:
                fields = {**item["known"], task.answer: answer}
                items.append((item, fields, context_from_settings(self.recipe.verify, **extra)))
        verdicts = self.verifier.verify_many([(fields, ctx) for _, fields, ctx in items])
        for (item, fields, _), verdict in zip(items, verdicts, strict=True):
            if item.get("verified"):
                continue  # an earlier answer of this sample already passed
            if verdict.ok:
                item["verified"] = True
                item["known"] = fields
                item.pop("verdict", None)
            elif "verdict" not in item:
                item["verdict"] = verdict.reason or "verification failed"
        for item in live.values():
            if item["failure"] is None and not item.get("verified") and "verdict" in item:
                item["failure"] = item["verdict"]
                item["verified"] = False

    def _output_fields(self, item: dict[str, Any]) -> dict[str, Any]:
        return {name: item["known"][name] for name in self.recipe.task.output_fields if name in item["known"]}

    def _llm_judge(self, live: dict[str, dict[str, Any]], request_rows: list[dict[str, Any]]) -> None:
        """Score every candidate that passed parsing, verification and the heuristic filters,
        in one batch; the score and rationale go on the sample, the request into the catalog."""
        settings = self.recipe.quality.judge
        if settings is None:
            return
        from synth.judge import SCHEMA, TEMPLATE, judge_messages, parse_judgement

        stage = Stage("judge", TEMPLATE)
        batch = []
        for sample_id, item in live.items():
            if item["failure"] is not None:
                continue
            fields = self._output_fields(item)
            if first_problem(fields, self._filters):
                continue  # filtered anyway: not worth a judge request
            key = stable_id(sample_id, "judge")
            batch.append((item, GenerationRequest(
                key=key,
                messages=judge_messages(self.ctx.render, self.recipe.task.description, fields,
                                        item["slot"].constraints),
                sampling=Sampling(temperature=settings.temperature, top_p=1.0, max_tokens=settings.max_tokens,
                                  seed=stable_seed(self._sampling.seed, key)),
                json_schema=SCHEMA)))
        if not batch:
            return
        results = self.backend.generate([request for _, request in batch])
        for (item, request), result in zip(batch, results, strict=True):
            request_rows.append(self._request_row(request, result, stage, item["slot"]))
            verdict = (ParseFailure("judge_error", result.error[:500]) if result.error is not None
                       else parse_judgement(result.text, result.finish_reason))
            if isinstance(verdict, ParseFailure):
                item["judge_rationale"] = f"judge failed: {verdict}"
                if settings.on_failure == "filter":
                    item["judged_out"] = str(verdict)
                continue
            score, rationale = verdict
            item["quality"], item["judge_rationale"] = float(score), rationale
            if score < settings.min_score:
                item["judged_out"] = f"judge_score: {score} < {settings.min_score}: {rationale[:200]}"

    def _settle(self, sample_id: str, item: dict[str, Any], outcome: ChunkOutcome) -> dict[str, Any]:
        """The sample row: rejected, filtered, duplicate or accepted, with its reason."""
        slot: Slot = item["slot"]
        row = {
            "sample_id": sample_id, "run_id": self.run_id, "slot": slot.index, "attempt": item["attempt"],
            "leaf_id": slot.leaf_id, "leaf_path": [list(pair) for pair in slot.constraints],
            "strategy": slot.strategy, "seed_row": slot.seed_row, "request_id": item["request_id"],
            "verified": item.get("verified"), "quality": item.get("quality"),
            "judge_rationale": item.get("judge_rationale"),
        }
        if item["failure"] is not None:
            outcome.rejected += 1
            outcome.add_reason(item["failure"])
            return {**row, "status": "rejected", "reason": item["failure"], "raw_text": item["raw"],
                    "fields": item["known"] or None}
        fields = self._output_fields(item)
        row["fields"] = fields
        problem = first_problem(fields, self._filters) or item.get("judged_out")
        if problem:
            outcome.filtered += 1
            outcome.add_reason(problem)
            return {**row, "status": "filtered", "reason": problem, "raw_text": item["raw"]}
        digest = text_hash(normalize_for_hash("\n".join(str(fields[n]) for n in sorted(fields))))
        row["content_hash"] = digest
        if digest in self._hashes:
            outcome.duplicate += 1
            outcome.add_reason("exact_duplicate")
            return {**row, "status": "duplicate", "reason": "exact_duplicate", "duplicate_of": self._hashes[digest]}
        near = self._near.find(self._dedup_text(slot.strategy, fields))
        if near is not None:
            outcome.duplicate += 1
            outcome.add_reason("near_duplicate")
            return {**row, "status": "duplicate", "reason": f"near_duplicate: Jaccard >= {self._near.threshold}",
                    "duplicate_of": near}
        self._hashes[digest] = sample_id
        self._near.add(sample_id, self._dedup_text(slot.strategy, fields))
        outcome.accepted += 1
        return {**row, "status": "accepted"}

    def generate(self, run_chunk: Callable[[list[tuple[Slot, int]]], Any] | None = None,
                 on_progress: Progress | None = None, max_chunks: int | None = None) -> int:
        """Rounds of generate-what-is-missing until every slot is done, out of rounds, or out
        of budget; then keep one sample per slot. `run_chunk` lets a scheduler wrap each chunk
        (the flow makes it a retried Prefect task). Returns the number of chunks run."""
        run_chunk = run_chunk or self.run_chunk
        target = self.goal()
        done = 0
        while True:
            work = self.pending()
            if not work:
                break
            used = self.requests_used()
            for chunk in chunks(work, self.recipe.generation.chunk_size):
                if max_chunks is not None and done >= max_chunks:
                    return done
                run_chunk(chunk)
                done += 1
                if on_progress:
                    on_progress(min(self.accepted_count(), target), target)
            if self.requests_used() == used:  # a round that made nothing new would repeat forever
                raise RuntimeError(f"a round made no new requests for {len(work)} pending attempts; "
                                   "check the catalog with `synth stats`")
        self.drop_surplus()
        return done

    def leaf_balance(self) -> list[dict[str, Any]]:
        """Per leaf: target, accepted now (existing kept + generated), within tolerance or not."""
        have = bulk.leaf_counts(self.catalog, [self.run_id])
        tolerance = self.recipe.balance.tolerance
        return [{"leaf_id": spec.leaf_id, "label": spec.label, "target": self.targets[spec.leaf_id],
                 "have": have.get(spec.leaf_id, 0),
                 "ok": within_tolerance(have.get(spec.leaf_id, 0), self.targets[spec.leaf_id], tolerance)}
                for spec in self.leaf_specs()]

    def finish(self) -> dict[str, Any]:
        """Done when every leaf holds at least (1 - tolerance) x its target; else say which
        leaves fell short and why (budget or rounds)."""
        generated, goal = self.accepted_count(), self.goal()
        leaves = self.leaf_balance()
        short = [leaf for leaf in leaves if not leaf["ok"]]
        total = sum(leaf["have"] for leaf in leaves)
        target = self.recipe.generation.target
        existing = total - generated
        made = f"{total} accepted samples" + (f" ({existing} existing + {generated} generated)" if existing else "")
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
            message = f"{made} of {target}: {why}; leaves below target: {named}{more}"
        from storage.catalog import now

        self.catalog.update_run(self.run_id, status=status, message=message, finished_at=now())
        return {"status": status, "message": message, "accepted": total, "generated": generated,
                "target": target, "short_leaves": [leaf["label"] for leaf in short]}


def chunks(work: list[tuple[Slot, int]], size: int) -> list[list[tuple[Slot, int]]]:
    return [work[i:i + size] for i in range(0, len(work), size)]
