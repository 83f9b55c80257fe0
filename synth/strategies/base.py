"""What a strategy is: its stages, whether it needs a seed row, which field is checked
for near-duplicates, where its reference answer comes from, and its prompts.

A stage renders one prompt per attempt from its template and is parsed into some of
the task's output fields: a `question` stage writes every field but the answer, an
`answer` stage writes the answer. The pipeline runs stage k of every attempt in a chunk
as one batch, k = 0, 1, ..., so a strategy may have any number of stages.

"Question" fields are every output field except the answer field; for a coding task
that is the prompt, the tests and the entry point, and the answer is the solution.

Adding a strategy: one module with a `Strategy` subclass (name, stages, and what
differs) plus its templates, and one line in synth/strategies/__init__.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from synth.prompting.parsing import json_schema_for, parse_fields, parse_text
from synth.prompting.render import Renderer, prompt_example
from synth.reject import Reject
from synth.slot import Slot

if TYPE_CHECKING:
    from synth.task.task import Task

SYSTEM_TEMPLATE = "generate/system.jinja2"
EXTRACT_TEMPLATE = "generate/extract.jinja2"  # the follow-up turn that asks for a missing ending
QUESTION, ANSWER = "question", "answer"  # what a stage writes
# How a stage's reply is asked for: free text (the reply is the field; its format is checked
# after) or one JSON object (constrained by a schema where the backend can). AUTO: free text
# for a stage that writes one field, JSON for several (benchmarks/answers.py measured why:
# asked for JSON, the 1.5B tier answered 0 of 12 held-out GSM8K problems, in free text 4).
TEXT, JSON, AUTO = "text", "json", "auto"
OUTPUT_MODES = (AUTO, TEXT, JSON)


@dataclass(frozen=True)
class Stage:
    writes: str  # QUESTION (the question fields) or ANSWER (the answer field)
    template: str

    @property
    def name(self) -> str:  # the requests table's `stage`
        return self.writes


@dataclass
class GenerationContext:
    """What rendering and parsing a stage needs: the task, the seed rows, the renderer."""

    task: "Task"
    seeds: Sequence[Mapping[str, Any]]
    renderer: Renderer = field(default_factory=Renderer)
    output: Mapping[str, str] = field(default_factory=dict)  # stage name -> TEXT / JSON / AUTO (missing: AUTO)
    question_fields: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        answer = self.task.answer
        names = tuple(n for n in self.task.output_fields if n != answer)
        self.question_fields = names or (answer,)

    def fields_for(self, stage: Stage) -> dict[str, Any]:
        names = self.question_fields if stage.writes == QUESTION else (self.task.answer,)
        return {n: self.task.output_fields[n] for n in names}

    def output_mode(self, stage: Stage) -> str:
        """TEXT or JSON for this stage (AUTO resolved: free text where it writes one field)."""
        mode = self.output.get(stage.name, AUTO)
        if mode == AUTO:
            return TEXT if len(self.fields_for(stage)) == 1 else JSON
        return mode

    def schema_for(self, stage: Stage) -> dict[str, Any] | None:
        """The structured-output schema, or None for a free-text stage."""
        return json_schema_for(self.fields_for(stage)) if self.output_mode(stage) == JSON else None

    def parse(self, stage: Stage, text: str, finish_reason: str | None) -> dict[str, Any] | Reject:
        fields = self.fields_for(stage)
        if self.output_mode(stage) == TEXT:
            return parse_text(text, fields, finish_reason)
        return parse_fields(text, fields, finish_reason)

    def seed(self, row: int | None) -> Mapping[str, Any] | None:
        return self.seeds[row] if row is not None and 0 <= row < len(self.seeds) else None


class Strategy:
    name: ClassVar[str]
    stages: ClassVar[tuple[Stage, ...]]
    needs_seed: ClassVar[bool] = False  # it rewrites or answers one seed row
    keeps_seed_question: ClassVar[bool] = False  # the question is the seed's: dedup on the answer
    has_reference: ClassVar[bool] = False  # the seed's answer is the right answer (verification)

    # -- what differs between strategies -------------------------------------------------

    def seeded_fields(self, slot: Slot, ctx: GenerationContext) -> dict[str, Any]:
        """Fields that come from the seed row rather than the model."""
        return {}

    def reference_answer(self, slot: Slot, ctx: GenerationContext) -> str | None:
        """The answer the sample must reach, when the strategy knows it."""
        if not self.has_reference:
            return None
        seed = ctx.seed(slot.seed_row) or {}
        answer = seed.get(ctx.task.answer)
        return str(answer) if answer not in (None, "") else None

    def dedup_field(self, task: "Task") -> str:
        """The field near-duplicates are looked for in."""
        return task.answer if self.keeps_seed_question else task.question

    def stage_variables(self, stage: Stage, slot: Slot, ctx: GenerationContext,
                        known: Mapping[str, Any]) -> dict[str, Any]:
        return (question_variables(slot, ctx) if stage.writes == QUESTION
                else answer_variables(slot, ctx, known))

    # -- shared -----------------------------------------------------------------------------

    def render(self, stage: Stage, slot: Slot, ctx: GenerationContext,
               known: Mapping[str, Any]) -> tuple[dict[str, str], ...]:
        """Messages for one attempt at one stage. `known` holds fields already produced or seeded."""
        json_reply = ctx.output_mode(stage) == JSON
        system = ctx.renderer.render(SYSTEM_TEMPLATE, {"task_description": ctx.task.description,
                                                       "json_reply": json_reply})
        user = ctx.renderer.render(stage.template,
                                   {**self.stage_variables(stage, slot, ctx, known), "json_reply": json_reply})
        return ({"role": "system", "content": system}, {"role": "user", "content": user})


def question_variables(slot: Slot, ctx: GenerationContext) -> dict[str, Any]:
    q = ctx.task.question
    return {"question_field": q, "fields": list(ctx.question_fields), "constraints": list(slot.constraints),
            "examples": [ctx.seeds[i].get(q, "") for i in slot.example_rows]}


def answer_rows(slot: Slot, ctx: GenerationContext) -> list[int]:
    """The seed rows shown as worked answers: the first seed rows with an answer, never the
    seed being answered (its answer is the reference), as many as the slot has examples (one
    at least, two at most). At least one, because the format is learnt from the example
    (Qwen2.5-Coder-1.5B ended 1 of 5 GSM8K answers in `#### N` without one, 5 of 5 with one).
    The same rows for every slot, because then every answer prompt opens with the same
    system message and examples, which a server reads once per slot and keeps (llama-server's
    prompt cache, vLLM's prefix cache): with a new pair per slot the 1.5B tier spent most of
    its time reading prompts (BENCHMARKS.md, "The answer prompt's shared prefix": 1.42x the
    answer stage's tokens/s, the same answers right)."""
    def usable(i: int) -> bool:
        return i != slot.seed_row and ctx.seeds[i].get(ctx.task.answer) not in (None, "")

    wanted = max(1, min(2, len(slot.example_rows)))
    return list(islice((i for i in range(len(ctx.seeds)) if usable(i)), wanted))


def answer_variables(slot: Slot, ctx: GenerationContext, known: Mapping[str, Any]) -> dict[str, Any]:
    q, a = ctx.task.question, ctx.task.answer
    examples = [{"question": ctx.seeds[i].get(q, ""), "answer": ctx.seeds[i].get(a, "")}
                for i in answer_rows(slot, ctx)]
    spec = ctx.task.output_fields.get(a)
    return {"question_field": q, "answer_field": a,
            "examples": examples,  # worked examples show the format; more only costs tokens
            "given": [(name, known[name]) for name in ctx.question_fields if name in known],
            "ending": spec.ending if spec is not None else None}  # the required last line, as a person writes it


# Example variables for trial renders of user overrides and for the golden prompts.
EXAMPLE_CONSTRAINTS = [("setting", "a farm"), ("operation", "ratios")]


@prompt_example(SYSTEM_TEMPLATE)
def _system_example() -> dict[str, Any]:
    return {"task_description": "Grade-school math word problems with worked solutions.", "json_reply": False}


@prompt_example(EXTRACT_TEMPLATE)
def _extract_example() -> dict[str, Any]:
    return {"field": "answer", "ending": "#### <number>"}


@prompt_example("generate/answer.jinja2")
def _answer_example() -> dict[str, Any]:
    return {"question_field": "question", "answer_field": "answer",
            "examples": [{"question": "Tom has 3 apples and buys 2 more. How many does he have?",
                          "answer": "3 + 2 = 5. #### 5"}],
            "given": [("question", "A farmer has 12 cows and sells a third of them. How many are left?")],
            "json_reply": False, "ending": "#### <number>"}
