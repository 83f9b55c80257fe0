"""new_question: a new question inside the leaf's constraints (seeds shown as examples), then its answer."""

from __future__ import annotations

from typing import Any

from synth.prompting.render import prompt_example
from synth.strategies.base import ANSWER, EXAMPLE_CONSTRAINTS, QUESTION, Stage, Strategy

TEMPLATE = "generate/new_question.jinja2"


class NewQuestion(Strategy):
    name = "new_question"
    stages = (Stage(QUESTION, TEMPLATE), Stage(ANSWER, "generate/answer.jinja2"))


@prompt_example(TEMPLATE)
def _example() -> dict[str, Any]:
    return {"question_field": "question", "fields": ["question"], "constraints": EXAMPLE_CONSTRAINTS,
            "examples": ["Tom has 3 apples and buys 2 more. How many does he have?"], "json_reply": False}
