"""answer_augmentation: a new answer (a new reasoning path) to a seed question.

The question is the seed's, so near-duplicates are looked for among answers, and the
seed's answer is the reference for verification."""

from __future__ import annotations

from typing import Any

from synth.slot import Slot
from synth.strategies.base import ANSWER, GenerationContext, Stage, Strategy


class AnswerAugmentation(Strategy):
    name = "answer_augmentation"
    stages = (Stage(ANSWER, "generate/answer.jinja2"),)
    needs_seed = True
    keeps_seed_question = True
    has_reference = True

    def seeded_fields(self, slot: Slot, ctx: GenerationContext) -> dict[str, Any]:
        row = ctx.seed(slot.seed_row)
        if row is None:
            return {}
        return {n: row[n] for n in ctx.question_fields if row.get(n) not in (None, "")}
