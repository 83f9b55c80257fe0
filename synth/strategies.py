"""The three augmentation strategies as render/parse pairs over stages.

A strategy is a short list of stages; each stage renders one prompt per slot from a
template in `prompts/generate/` and parses the reply into some of the task's output
fields. The pipeline runs each stage as one batch for a whole chunk of slots.

- new_question:        question stage (examples + the leaf's constraints) -> answer stage
- question_rephrase:   question stage (rewrite one seed question)         -> answer stage
- answer_augmentation: answer stage only, for a seed question (a new reasoning path)

"Question" fields are every output field except the answer field; for a coding task
that is the prompt, the tests and the entry point, and the answer is the solution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from synth.ids import text_hash
from synth.judge import TEMPLATE as JUDGE_TEMPLATE, judge_messages
from synth.parsing import ParseFailure, json_schema_for, parse_fields
from synth.prompts import render, render_string, template_hash
from synth.recipe import Task

SYSTEM_TEMPLATE = "generate/system.jinja2"


@dataclass(frozen=True)
class Stage:
    name: str  # "question" or "answer"
    template: str


STAGES: dict[str, tuple[Stage, ...]] = {
    "new_question": (Stage("question", "generate/new_question.jinja2"), Stage("answer", "generate/answer.jinja2")),
    "question_rephrase": (Stage("question", "generate/rephrase.jinja2"), Stage("answer", "generate/answer.jinja2")),
    "answer_augmentation": (Stage("answer", "generate/answer.jinja2"),),
}


@dataclass(frozen=True)
class Slot:
    """One planned sample: what it is for. Attempts at it are numbered from 0."""

    index: int
    strategy: str
    leaf_id: str | None = None
    constraints: tuple[tuple[str, str], ...] = ()  # the leaf's path, infinite values drawn
    seed_row: int | None = None  # the seed it rewrites or answers (rephrase, answer augmentation)
    example_rows: tuple[int, ...] = ()  # seeds shown as examples


@dataclass
class StageContext:
    task: Task
    seeds: list[dict[str, Any]]
    overrides: dict[str, str] = field(default_factory=dict)  # template name -> user template source
    question_fields: tuple[str, ...] = field(init=False)

    def render(self, name: str, variables: dict[str, Any]) -> str:
        if name in self.overrides:
            return render_string(self.overrides[name], variables, label=f"user template for {name}")
        return render(name, variables)

    def __post_init__(self) -> None:
        answer = self.task.answer
        names = tuple(n for n in self.task.output_fields if n != answer)
        self.question_fields = names or (answer,)

    def fields_for(self, stage: Stage) -> dict[str, Any]:
        names = self.question_fields if stage.name == "question" else (self.task.answer,)
        return {n: self.task.output_fields[n] for n in names}

    def schema_for(self, stage: Stage) -> dict[str, Any]:
        return json_schema_for(self.fields_for(stage))


def _system(ctx: StageContext) -> dict[str, str]:
    return {"role": "system", "content": ctx.render(SYSTEM_TEMPLATE, {"task_description": ctx.task.description})}


def render_stage(stage: Stage, slot: Slot, ctx: StageContext, known: dict[str, Any]) -> tuple[dict[str, str], ...]:
    """Messages for one slot at one stage. `known` holds fields already produced or seeded."""
    task = ctx.task
    q, a = task.question, task.answer
    if stage.name == "question":
        variables: dict[str, Any] = {
            "question_field": q,
            "fields": list(ctx.question_fields),
            "constraints": list(slot.constraints),
            "examples": [ctx.seeds[i].get(q, "") for i in slot.example_rows],
        }
        if slot.strategy == "question_rephrase":
            variables["original"] = ctx.seeds[slot.seed_row].get(q, "") if slot.seed_row is not None else ""
    else:
        examples = [{"question": ctx.seeds[i].get(q, ""), "answer": ctx.seeds[i].get(a, "")}
                    for i in slot.example_rows if ctx.seeds[i].get(a)]
        variables = {
            "question_field": q,
            "answer_field": a,
            "examples": examples[:2],  # worked examples show the format; more only costs tokens
            "given": [(name, known[name]) for name in ctx.question_fields if name in known],
        }
    user = ctx.render(stage.template, variables)
    return (_system(ctx), {"role": "user", "content": user})


def seeded_fields(slot: Slot, ctx: StageContext) -> dict[str, Any]:
    """Fields that come from the seed row rather than the model (answer augmentation)."""
    if slot.strategy == "answer_augmentation" and slot.seed_row is not None:
        row = ctx.seeds[slot.seed_row]
        return {n: row[n] for n in ctx.question_fields if row.get(n) not in (None, "")}
    return {}


def parse_stage(stage: Stage, text: str, finish_reason: str | None, ctx: StageContext) -> dict[str, Any] | ParseFailure:
    return parse_fields(text, ctx.fields_for(stage), finish_reason)


def stage_template_hash(stage: Stage, ctx: StageContext) -> str:
    """The hash of the template a stage actually rendered: the user's override, if any."""
    if stage.template in ctx.overrides:
        return "user-" + text_hash(ctx.overrides[stage.template])[:12]
    return template_hash(stage.template)


def check_templates(ctx: StageContext) -> None:
    """Render every user-overridden template once with a stand-in slot, so a template the
    sandbox refuses (or that names an unknown variable) fails before any request is made."""
    names = {stage.template: stage for stages in STAGES.values() for stage in stages}
    placeholder = {name: f"<{name}>" for name in ctx.task.output_fields}
    for name in ctx.overrides:
        if name == SYSTEM_TEMPLATE:
            _system(ctx)
            continue
        if name == JUDGE_TEMPLATE:
            judge_messages(ctx.render, ctx.task.description, placeholder, (("dimension", "value"),))
            continue
        stage = names[name]
        strategy = next(s for s, stages in STAGES.items() if stage in stages)
        seeds = ctx.seeds or [placeholder]
        slot = Slot(index=0, strategy=strategy, constraints=(("dimension", "value"),), seed_row=0,
                    example_rows=(0,))
        render_stage(stage, slot, StageContext(ctx.task, seeds, ctx.overrides), placeholder)
