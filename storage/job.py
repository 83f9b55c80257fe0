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
from dataclasses import dataclass, field
from typing import Any, Callable

from storage.catalog import Catalog
from synth.backends.base import Backend
from synth.ids import stable_id, stable_seed, text_hash
from synth.parsing import ParseFailure
from synth.plan import Leaf, allocate, plan_slots, requests_per_attempt
from synth.quality import FilterContext, first_problem, normalize_for_hash
from synth.recipe import Recipe
from synth.seeds import load_seeds
from synth.strategies import STAGES, Slot, StageContext, parse_stage, render_stage, seeded_fields, stage_template_hash
from synth.types import GenerationRequest, GenerationResult, Sampling

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

    def add_reason(self, reason: str) -> None:
        key = reason.split(":", 1)[0]
        self.reasons[key] = self.reasons.get(key, 0) + 1


@dataclass(frozen=True)
class StrategyDecision:
    counts: dict[str, int]
    label: str
    reason: str


def decide_strategy(recipe: Recipe, n_seeds: int) -> StrategyDecision:
    gen = recipe.generation
    if gen.strategy_weights:
        counts = allocate(gen.strategy_weights, gen.target)
        label = "mix(" + ", ".join(f"{k}={v:g}" for k, v in gen.strategy_weights.items()) + ")"
        return StrategyDecision(counts, label, "mixed by the recipe's strategy_weights")
    if gen.strategy == "auto":
        from synth.budget import choose_strategy

        choice = choose_strategy(gen.request_budget, n_seeds)
        return StrategyDecision({choice.strategy: gen.target}, choice.strategy, choice.reason)
    return StrategyDecision({gen.strategy: gen.target}, gen.strategy, "fixed by the recipe")


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
        )
        self._hashes: dict[str, str] = {}

    # -- set-up -----------------------------------------------------------------------

    def start(self) -> int:
        """Record the run (or its restart) and load the seeds; returns the attempt number."""
        attempts = self.catalog.start_run(
            self.run_id, self.recipe.task.name, self.recipe.model_dump(mode="json", exclude={"base_dir"}),
            self.recipe.hash(), self.backend.name, self.backend.model,
        )
        self.seeds = load_seeds(self.recipe)
        self.ctx = StageContext(self.recipe.task, self.seeds)
        self._hashes = self.catalog.accepted_hashes(self.run_id)
        return attempts

    def set_tree(self, tree: Any) -> None:
        self.tree = tree
        self.catalog.update_run(self.run_id, tree_id=tree.tree_id)

    def plan(self) -> list[Slot]:
        self.decision = decide_strategy(self.recipe, len(self.seeds))
        self.catalog.update_run(self.run_id, strategy=self.decision.label, strategy_reason=self.decision.reason)
        gen = self.recipe.generation
        tree_settings = self.recipe.tree
        if self.tree is not None:
            from synth.tree import leaf_constraints, leaf_label

            leaves_by_id = {leaf.node_id: leaf for leaf in self.tree.leaves()}
            leaves = [Leaf(leaf.node_id, leaf_label(leaf)) for leaf in leaves_by_id.values()]

            def constraints_for(leaf_id: str | None, index: int) -> tuple[tuple[str, str], ...]:
                leaf = leaves_by_id[leaf_id]
                return tuple(tuple(pair) for pair in leaf_constraints(leaf, stable_seed(self.run_id, index)))
        else:
            leaves, constraints_for = [Leaf(None, "all")], None
        self.slots = plan_slots(
            target=gen.target,
            leaves=leaves,
            strategy_counts=self.decision.counts,
            n_seeds=len(self.seeds),
            examples_per_prompt=gen.examples_per_prompt,
            seed=self.recipe.backend.sampling.seed,
            leaf_weights=tree_settings.leaf_weights if tree_settings else None,
            constraints_for=constraints_for,
        )
        return self.slots

    # -- generation -----------------------------------------------------------------------

    def requests_used(self) -> int:
        return int(self.catalog.scalar("SELECT count(*) FROM requests WHERE run_id = ?", [self.run_id]) or 0)

    def pending(self) -> list[tuple[Slot, int]]:
        """(slot, attempt) pairs to generate now, within the round limit and the request budget."""
        states = self.catalog.slot_states(self.run_id)
        budget_left = self.recipe.generation.request_budget - self.requests_used()
        work = []
        for slot in self.slots:
            done, attempts = states.get(slot.index, (False, 0))
            if done or attempts >= self.recipe.generation.max_rounds:
                continue
            cost = requests_per_attempt(slot.strategy)
            if cost > budget_left:
                break
            budget_left -= cost
            work.append((slot, attempts))
        return work

    def accepted_count(self) -> int:
        return int(self.catalog.scalar(
            "SELECT count(DISTINCT slot) FROM samples WHERE run_id = ? AND status = 'accepted'", [self.run_id]) or 0)

    def _request(self, sample_id: str, stage, slot: Slot, known: dict[str, Any]) -> GenerationRequest:
        s = self._sampling
        return GenerationRequest(
            key=stable_id(sample_id, stage.name),
            messages=render_stage(stage, slot, self.ctx, known),
            sampling=Sampling(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
                              seed=stable_seed(s.seed, sample_id, stage.name)),
            json_schema=self.ctx.schema_for(stage),
        )

    def _request_row(self, request: GenerationRequest, result: GenerationResult, stage, slot: Slot) -> dict[str, Any]:
        s = request.sampling
        return {
            "request_id": request.key, "run_id": self.run_id, "stage": stage.name, "strategy": slot.strategy,
            "leaf_id": slot.leaf_id, "template": stage.template, "template_hash": stage_template_hash(stage),
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
                if stage is not None:
                    batch.append((sample_id, stage, self._request(sample_id, stage, item["slot"], item["known"])))
            if not batch:
                continue
            results = self.backend.generate([request for _, _, request in batch])
            for (sample_id, stage, request), result in zip(batch, results, strict=True):
                item = live[sample_id]
                request_rows.append(self._request_row(request, result, stage, item["slot"]))
                item["request_id"], item["raw"] = request.key, result.text
                if result.error is not None:
                    item["failure"] = f"backend_error: {result.error[:500]}"
                    continue
                parsed = parse_stage(stage, result.text, result.finish_reason, self.ctx)
                if isinstance(parsed, ParseFailure):
                    item["failure"] = str(parsed)
                else:
                    item["known"].update(parsed)
        outcome.requests = len(request_rows)
        sample_rows = [self._judge(sample_id, item, outcome) for sample_id, item in live.items()]
        self.catalog.commit_chunk(request_rows, sample_rows)
        return outcome

    def _judge(self, sample_id: str, item: dict[str, Any], outcome: ChunkOutcome) -> dict[str, Any]:
        slot: Slot = item["slot"]
        row = {
            "sample_id": sample_id, "run_id": self.run_id, "slot": slot.index, "attempt": item["attempt"],
            "leaf_id": slot.leaf_id, "leaf_path": [list(pair) for pair in slot.constraints],
            "strategy": slot.strategy, "seed_row": slot.seed_row, "request_id": item["request_id"],
        }
        if item["failure"] is not None:
            outcome.rejected += 1
            outcome.add_reason(item["failure"])
            return {**row, "status": "rejected", "reason": item["failure"], "raw_text": item["raw"],
                    "fields": item["known"] or None}
        fields = {name: item["known"][name] for name in self.recipe.task.output_fields if name in item["known"]}
        row["fields"] = fields
        problem = first_problem(fields, self._filters)
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
        self._hashes[digest] = sample_id
        outcome.accepted += 1
        return {**row, "status": "accepted"}

    def finish(self) -> dict[str, Any]:
        accepted = self.accepted_count()
        target = self.recipe.generation.target
        if accepted >= target:
            status, message = "finished", f"{accepted} accepted samples, target {target} met"
        else:
            left = self.recipe.generation.request_budget - self.requests_used()
            why = "the request budget is spent" if left < 2 else "the rounds per slot are used up"
            status, message = "short", f"{accepted} of {target} accepted samples: {why}"
        from storage.catalog import now

        self.catalog.update_run(self.run_id, status=status, message=message, finished_at=now())
        return {"status": status, "message": message, "accepted": accepted, "target": target}


def chunks(work: list[tuple[Slot, int]], size: int) -> list[list[tuple[Slot, int]]]:
    return [work[i:i + size] for i in range(0, len(work), size)]
