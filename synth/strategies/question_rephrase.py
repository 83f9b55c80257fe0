"""question_rephrase: one seed question rewritten in other words (same facts, same answer), then answered.

The seed's answer stays the right one, so math verification compares with it."""

from __future__ import annotations

from typing import Any, Mapping

from synth.prompting.render import prompt_example
from synth.slot import Slot
from synth.strategies.base import (ANSWER, EXAMPLE_CONSTRAINTS, QUESTION, GenerationContext, Stage, Strategy,
                                   question_variables)

TEMPLATE = "generate/rephrase.jinja2"


class QuestionRephrase(Strategy):
    name = "question_rephrase"
    stages = (Stage(QUESTION, TEMPLATE), Stage(ANSWER, "generate/answer.jinja2"))
    needs_seed = True
    has_reference = True

    def stage_variables(self, stage: Stage, slot: Slot, ctx: GenerationContext,
                        known: Mapping[str, Any]) -> dict[str, Any]:
        if stage.writes != QUESTION:
            return super().stage_variables(stage, slot, ctx, known)
        seed = ctx.seed(slot.seed_row) or {}
        return {**question_variables(slot, ctx), "original": seed.get(ctx.task.question, "")}


@prompt_example(TEMPLATE)
def _example() -> dict[str, Any]:
    return {"question_field": "question", "fields": ["question"], "constraints": EXAMPLE_CONSTRAINTS,
            "examples": ["Tom has 3 apples and buys 2 more. How many does he have?"], "json_reply": False,
            "original": "A farmer has 12 cows and sells a third of them. How many are left?"}
