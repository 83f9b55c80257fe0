"""What a recipe will cost before it runs: requests and tokens per stage, strategy and leaf.

Uses the plan (synth/planning/plan.py: slots, stages, answer copies) directly, calling no backend,
and, where the catalog already holds
requests of this dataset, the observed tokens per request and acceptance rate; without
them, prompt tokens are estimated from the rendered prompts (4 characters a token) and
completions at half of max_tokens. Stops at the request budget and says so.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from storage.catalog import bulk
from storage.catalog.catalog import Catalog
from storage.runs.existing import STRATEGY as EXISTING
from synth.config.seeds import load_seeds
from synth.curation.judge import judge_messages
from synth.planning.plan import leaf_specs, make_plan
from synth.prompting.render import Renderer
from synth.strategies import ANSWER, STRATEGIES, GenerationContext

CHARS_PER_TOKEN = 4


def observed(catalog: Catalog | None, task_name: str) -> dict[str, Any]:
    if catalog is None:
        return {}
    rows = catalog.query(
        """SELECT q.stage, avg(q.prompt_tokens) AS pt, avg(q.completion_tokens) AS ct, count(*) AS n
           FROM requests q JOIN runs r USING (run_id) WHERE r.name = ? GROUP BY q.stage""", [task_name])
    rate = catalog.query(
        """SELECT count(*) FILTER (s.status IN ('accepted', 'dropped')) AS ok, count(*) AS n
           FROM samples s JOIN runs r USING (run_id) WHERE r.name = ?""", [task_name])[0]
    return {
        "tokens": {r["stage"]: (float(r["pt"]), float(r["ct"])) for r in rows},
        "acceptance": (rate["ok"] / rate["n"]) if rate["n"] else None,
        "requests_seen": sum(int(r["n"]) for r in rows),
    }


def project(recipe, catalog: Catalog | None = None, tree: Any = None) -> dict[str, Any]:
    """Projected cost of running `recipe` from scratch (tree not included unless unbuilt)."""
    seen = observed(catalog, recipe.task.name)
    seeds = load_seeds(recipe)
    run_id = recipe.hash()
    rebalancing = recipe.balance.dataset is not None and catalog is not None
    have = bulk.accepted_per_leaf(catalog, [run_id], EXISTING) if rebalancing else {}
    plan = make_plan(recipe, tree, len(seeds), run_id, have)
    decision_slots = plan.slots
    renderer = Renderer(recipe.template_overrides())
    ctx = GenerationContext(recipe.task, seeds, renderer)
    verifier = recipe.verify.build()
    acceptance = seen.get("acceptance") or 1.0
    expected_attempts = 1 / max(acceptance, 0.05)
    max_tokens = recipe.backend.sampling.max_tokens
    per_stage: dict[str, dict[str, float]] = defaultdict(lambda: {"requests": 0, "prompt_tokens": 0,
                                                                   "completion_tokens": 0})
    per_strategy: dict[str, float] = defaultdict(float)
    per_leaf: dict[str, float] = defaultdict(float)
    judge = recipe.quality.judge
    labels = {spec.leaf_id: spec.label for spec in leaf_specs(tree)}
    for slot in decision_slots:
        strategy = STRATEGIES[slot.strategy]
        known = dict(seeds[slot.seed_row]) if slot.seed_row is not None else {}
        stages = [*strategy.stages, *(["judge"] if judge else [])]
        for stage in stages:
            name = stage if stage == "judge" else stage.name
            answers = verifier.answer_copies(strategy.has_reference) if name == ANSWER else 1
            copies = answers * expected_attempts
            if name in seen.get("tokens", {}):
                prompt, completion = seen["tokens"][name]
            elif name == "judge":
                messages = judge_messages(renderer, recipe.task.description, _placeholder(recipe), slot.constraints)
                prompt = sum(len(m["content"]) for m in messages) / CHARS_PER_TOKEN
                completion = judge.max_tokens / 2
            else:
                messages = strategy.render(stage, slot, ctx, {**known, **_placeholder(recipe)})
                prompt = sum(len(m["content"]) for m in messages) / CHARS_PER_TOKEN
                completion = max_tokens / 2
            bucket = per_stage[name]
            bucket["requests"] += copies
            bucket["prompt_tokens"] += copies * prompt
            bucket["completion_tokens"] += copies * completion
            per_strategy[slot.strategy] += copies
            per_leaf[labels.get(slot.leaf_id, "(all)")] += copies
    total = sum(b["requests"] for b in per_stage.values())
    budget = recipe.generation.request_budget
    fits = int(len(decision_slots) * min(1.0, budget / total)) if total else 0
    return {
        "target": recipe.generation.target,
        "strategy": plan.decision.label,
        "strategy_reason": plan.decision.reason,
        "acceptance_rate": round(acceptance, 3),
        "source": "observed in the catalog" if seen.get("requests_seen") else "estimated from the prompts",
        "budget": budget,
        "projected_requests": round(total),
        "within_budget": total <= budget,
        "samples_within_budget": min(fits, len(decision_slots)),
        "per_stage": {k: {m: round(v) for m, v in b.items()} for k, b in per_stage.items()},
        "per_strategy": {k: round(v) for k, v in per_strategy.items()},
        "per_leaf": {k: round(v, 1) for k, v in per_leaf.items()},
        "tree": None if tree is None else {"tree_id": tree.tree_id, "leaves": len(tree.leaves())},
        "existing_rows": sum(have.values()) if recipe.balance.dataset is not None else None,
    }


def _placeholder(recipe) -> dict[str, str]:
    return {name: f"<{name}>" for name in recipe.task.output_fields}


def render_projection(p: dict[str, Any]) -> str:
    lines = [
        f"target {p['target']} samples, strategy {p['strategy']} ({p['strategy_reason']})",
        f"acceptance rate {p['acceptance_rate']} ({p['source']})",
        f"projected requests {p['projected_requests']} against a budget of {p['budget']}"
        + ("" if p["within_budget"] else
           f": OVER BUDGET, about {p['samples_within_budget']} samples fit; raise generation.budget or lower the target"),
        "",
        f"{'stage':<10} {'requests':>9} {'prompt tok':>11} {'completion tok':>15}",
    ]
    for stage, b in p["per_stage"].items():
        lines.append(f"{stage:<10} {b['requests']:>9} {b['prompt_tokens']:>11} {b['completion_tokens']:>15}")
    lines += ["", "per strategy: " + json.dumps(p["per_strategy"])]
    lines.append(f"per leaf ({len(p['per_leaf'])} leaves): " + ", ".join(
        f"{k}: {v:g}" for k, v in list(p["per_leaf"].items())[:20]))
    if p.get("existing_rows") == 0:
        lines.append("balance.dataset: its rows are not classified yet, so this assumes every sample is generated; "
                     "the run classifies them first and generates only the leaves' deficits")
    if p["tree"] is None:
        lines.append("tree: not built yet (its requests come on top; `synth tree show` after a run)")
    return "\n".join(lines)
